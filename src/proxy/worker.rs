//! Per-VM (per Envoy worker) state shared by the root context and its HTTP contexts, and the
//! steps both use: decide a request, carry a decision out, pause and wake requests waiting for
//! keys, fetch keys.

use std::collections::HashMap;
use std::time::Duration;

use super::host;
use super::metrics::Metrics;
use super::shared::{IssuerKeys, SharedTokenCache};
use crate::authn::{self, Decision, MayWait};
use crate::config::{FilterConfig, KeySource};
use crate::http::HttpResponse;
use crate::jwks::fetch::{self, FetchError, RemoteKeys, Step};
use crate::jwks::{Held, KeyRing, KeySet};
use crate::outcome;
use crate::policy::RequestFacts;

/// Tick period while nothing waits: how quickly refresh deadlines are noticed.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Tick period while requests wait for keys another worker may be fetching.
const WAITING_TICK: Duration = Duration::from_millis(10);
/// Asked for when a request starts waiting: run the tick (and start the fetch) right away.
const NOW_TICK: Duration = Duration::from_millis(1);

/// The request facts a paused request needs to be decided again later.
#[derive(Debug, Clone, Default)]
pub struct OwnedFacts {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub route_name: Option<String>,
    pub authorization: Vec<String>,
}

impl OwnedFacts {
    fn view(&self) -> (RequestFacts<'_>, Vec<&str>) {
        (
            RequestFacts {
                method: &self.method,
                path: &self.path,
                authority: &self.authority,
                route_name: self.route_name.as_deref(),
            },
            self.authorization.iter().map(String::as_str).collect(),
        )
    }
}

/// A request paused until its issuer's keys arrive (or the attempt fails, or time runs out).
#[derive(Debug)]
struct Waiter {
    context_id: u32,
    issuer: usize,
    since: u64,
    /// Generation of the keys held when it paused; new keys wake it.
    generation: u64,
    deadline: u64,
    facts: OwnedFacts,
}

/// What the HTTP context returns to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

pub struct Worker {
    pub cfg: FilterConfig,
    root_id: u32,
    ring: KeyRing,
    metrics: Metrics,
    /// Shared-data records of issuers with remote keys (`None` for inline keys).
    records: Vec<Option<IssuerKeys>>,
    cache: SharedTokenCache,
    waiters: Vec<Waiter>,
    /// Outstanding key fetches: callout token -> (issuer, which document).
    inflight: HashMap<u32, (usize, Step)>,
    /// Whether any route matches on the host's route name (read only if so).
    pub needs_route_name: bool,
    tick: Duration,
}

impl Worker {
    pub fn new(cfg: FilterConfig, root_id: u32) -> Worker {
        let mut ring = KeyRing::new(cfg.issuers.len());
        let mut records = Vec::with_capacity(cfg.issuers.len());
        for (idx, issuer) in cfg.issuers.iter().enumerate() {
            match &issuer.keys {
                KeySource::Inline(keys) => {
                    ring.set(
                        idx,
                        Held {
                            keys: keys.clone(),
                            fetched_at: None,
                            generation: 0,
                        },
                    );
                    records.push(None);
                }
                KeySource::Remote { .. } => {
                    let rec = IssuerKeys::new(&cfg.fingerprint, &issuer.name);
                    rec.ensure_state();
                    records.push(Some(rec));
                }
            }
        }
        let metrics = Metrics::define(cfg.issuers.iter().map(|i| i.name.as_str()));
        let needs_route_name = cfg.routes.iter().any(|r| r.matcher.route_name.is_some());
        let cache = SharedTokenCache {
            slots: cfg.cache_slots,
        };
        host::set_tick_period(NOW_TICK);
        Worker {
            cfg,
            root_id,
            ring,
            metrics,
            records,
            cache,
            waiters: Vec::new(),
            inflight: HashMap::new(),
            needs_route_name,
            tick: NOW_TICK,
        }
    }

    fn decide(&mut self, facts: &OwnedFacts, now: u64, may_wait: MayWait) -> Decision {
        let (req, authorization) = facts.view();
        authn::authenticate(
            &self.cfg,
            &req,
            &authorization,
            &self.ring,
            &mut self.cache,
            now,
            may_wait,
        )
    }

    /// Decides a new request; pauses it if it must wait for keys.
    pub fn on_request(&mut self, context_id: u32, facts: OwnedFacts, now: u64) -> Flow {
        let mut decision = self.decide(&facts, now, MayWait::Yes);
        if let Decision::WaitForKeys { issuer, .. } = decision {
            // Another worker may have fetched already.
            if self.sync_keys(issuer) {
                decision = self.decide(&facts, now, MayWait::Yes);
            }
        }
        if let Decision::WaitForKeys {
            issuer,
            unknown_kid,
        } = decision
        {
            if self.worth_waiting(issuer, unknown_kid, now) {
                let timing = self.cfg.issuers[issuer].timing;
                self.waiters.push(Waiter {
                    context_id,
                    issuer,
                    since: now,
                    generation: self.ring.held(issuer).map_or(0, |h| h.generation),
                    deadline: now.saturating_add(timing.lease_ms()),
                    facts,
                });
                self.set_tick(NOW_TICK);
                return Flow::Pause;
            }
            decision = self.decide(&facts, now, MayWait::No);
        }
        self.apply(decision)
    }

    /// Whether a fetch is under way or will start now that can bring the keys this request
    /// needs. For an unknown `kid` this also asks for the (rate-limited) early refetch.
    fn worth_waiting(&self, issuer: usize, unknown_kid: bool, now: u64) -> bool {
        let Some(Some(rec)) = self.records.get(issuer) else {
            return false;
        };
        let t = self.cfg.issuers[issuer].timing;
        if unknown_kid {
            rec.update(
                |s| s.leased(now) || s.refetch_wanted || s.may_refetch(now, &t),
                |s| s.refetch_wanted = true,
            )
            .is_some()
        } else {
            let (state, _) = rec.read_state();
            state.leased(now) || state.due(now, &t)
        }
    }

    /// Carries a decision out on the current (effective) HTTP context.
    pub fn apply(&self, decision: Decision) -> Flow {
        match decision {
            Decision::Allow {
                issuer,
                headers,
                cache_hit,
            } => {
                if let Some(i) = issuer {
                    self.metrics.allowed(i, cache_hit);
                }
                for (name, value) in &headers {
                    host::set_request_header(name, value);
                }
                if self.cfg.identity.drop_authorization {
                    host::remove_request_header("authorization");
                }
                Flow::Continue
            }
            Decision::Deny { denial, issuer } => self.deny(&denial, issuer),
            Decision::WaitForKeys { issuer, .. } => {
                self.deny(&outcome::Denial::KeysUnavailable, Some(issuer))
            }
        }
    }

    fn deny(&self, denial: &outcome::Denial, issuer: Option<usize>) -> Flow {
        self.metrics.denied(issuer, denial);
        let name = issuer
            .and_then(|i| self.cfg.issuers.get(i))
            .map_or("-", |i| i.name.as_str());
        log::debug!("tollgate: denied ({}), issuer {name}", denial.code());
        let reply = outcome::reply(denial, &self.cfg.realm);
        if !host::send_response(reply.status, &reply.headers, &reply.body) {
            log::warn!("tollgate: the host refused the local reply");
        }
        Flow::Pause
    }

    /// Forgets a request that ended (client gone) while it waited.
    pub fn forget(&mut self, context_id: u32) {
        self.waiters.retain(|w| w.context_id != context_id);
    }

    /// Loads the shared key set of `issuer` if it is newer than the one held. `true` if the
    /// held keys changed.
    fn sync_keys(&mut self, issuer: usize) -> bool {
        let Some(Some(rec)) = self.records.get(issuer) else {
            return false;
        };
        let Some((generation, fetched_at, jwks)) = rec.read_keys() else {
            return false;
        };
        if self
            .ring
            .held(issuer)
            .is_some_and(|h| h.generation == generation)
        {
            return false;
        }
        match KeySet::parse(&jwks) {
            Ok((keys, _)) => {
                self.ring.set(
                    issuer,
                    Held {
                        keys,
                        fetched_at: Some(fetched_at),
                        generation,
                    },
                );
                true
            }
            Err(_) => false,
        }
    }

    /// The periodic step: pick up keys other workers fetched, start due fetches, wake waiters.
    pub fn on_tick(&mut self, now: u64) {
        for idx in 0..self.records.len() {
            let Some(Some(rec)) = self.records.get(idx) else {
                continue;
            };
            let (state, _) = rec.read_state();
            let t = self.cfg.issuers[idx].timing;
            let started = if state.due(now, &t) {
                rec.update(|s| s.due(now, &t), |s| s.begin(now, &t))
            } else {
                None
            };
            if state.generation > 0
                && self.ring.held(idx).map(|h| h.generation) != Some(state.generation)
            {
                self.sync_keys(idx);
            }
            if let Some(state) = started {
                self.send_fetch(idx, &state, now);
            }
        }
        self.wake(now);
        self.set_tick(if self.waiters.is_empty() {
            IDLE_TICK
        } else {
            WAITING_TICK
        });
    }

    fn set_tick(&mut self, period: Duration) {
        if self.tick != period {
            self.tick = period;
            host::set_tick_period(period);
        }
    }

    fn send_fetch(&mut self, idx: usize, state: &fetch::FetchState, now: u64) {
        let issuer = &self.cfg.issuers[idx];
        let KeySource::Remote { upstream, source } = &issuer.keys else {
            return;
        };
        let (step, request) =
            fetch::next_request(source, upstream, state, issuer.timing.timeout_ms);
        match host::dispatch(&request) {
            Some(token) => {
                self.inflight.insert(token, (idx, step));
            }
            None => {
                log::warn!(
                    "tollgate: issuer {}: the host refused the key fetch through upstream {upstream:?} (is the cluster defined?)",
                    issuer.name
                );
                self.fetch_failed(idx, step, &FetchError::Transport, now);
            }
        }
    }

    /// A key-fetch callout came back (`response` is `None` when there was no HTTP answer).
    pub fn on_fetch_response(&mut self, token: u32, response: Option<HttpResponse>, now: u64) {
        let Some((idx, step)) = self.inflight.remove(&token) else {
            return;
        };
        match step {
            Step::Discovery => {
                match fetch::read_discovery(&self.cfg.issuers[idx].issuer, response.as_ref()) {
                    Ok(uri) => {
                        let uri = uri.to_string();
                        let rec = self.records.get(idx).and_then(Option::as_ref);
                        if let Some(state) =
                            rec.and_then(|r| r.update(|_| true, |s| s.jwks_uri = Some(uri.clone())))
                        {
                            self.send_fetch(idx, &state, now);
                        }
                    }
                    Err(e) => self.fetch_failed(idx, step, &e, now),
                }
            }
            Step::Jwks => match fetch::read_jwks(response.as_ref()) {
                Ok((keys, skipped)) => {
                    let body = response.map(|r| r.body).unwrap_or_default();
                    self.fetch_succeeded(idx, keys, skipped, &body, now);
                }
                Err(e) => self.fetch_failed(idx, step, &e, now),
            },
        }
        self.wake(now);
    }

    fn fetch_succeeded(&mut self, idx: usize, keys: KeySet, skipped: usize, jwks: &[u8], now: u64) {
        let Some(Some(rec)) = self.records.get(idx) else {
            return;
        };
        let generation = rec.read_state().0.generation.wrapping_add(1);
        rec.write_keys(generation, now, jwks);
        rec.update(|_| true, |s| s.succeed(now));
        log::info!(
            "tollgate: issuer {}: loaded {} signing keys ({skipped} skipped)",
            self.cfg.issuers[idx].name,
            keys.len()
        );
        self.ring.set(
            idx,
            Held {
                keys,
                fetched_at: Some(now),
                generation,
            },
        );
        self.metrics.fetched(idx, true);
    }

    fn fetch_failed(&mut self, idx: usize, step: Step, error: &FetchError, now: u64) {
        let issuer = &self.cfg.issuers[idx];
        // A JWKS URL learned from discovery that fails is looked up again next time.
        let rediscover = step == Step::Jwks
            && matches!(
                issuer.keys,
                KeySource::Remote {
                    source: RemoteKeys::Discovery(_),
                    ..
                }
            );
        if let Some(Some(rec)) = self.records.get(idx) {
            rec.update(
                |_| true,
                |s| {
                    s.fail(now);
                    if rediscover {
                        s.jwks_uri = None;
                    }
                },
            );
        }
        log::warn!(
            "tollgate: issuer {}: key fetch failed: {error}; held keys stay in use",
            issuer.name
        );
        self.metrics.fetched(idx, false);
    }

    /// Decides again every paused request whose keys arrived, whose fetch ended, or whose
    /// time is up; resumes the allowed ones.
    fn wake(&mut self, now: u64) {
        if self.waiters.is_empty() {
            return;
        }
        let mut states: HashMap<usize, u64> = HashMap::new();
        let mut ready = Vec::new();
        let mut waiting = Vec::with_capacity(self.waiters.len());
        for w in std::mem::take(&mut self.waiters) {
            let done_at = *states.entry(w.issuer).or_insert_with(|| {
                self.records
                    .get(w.issuer)
                    .and_then(Option::as_ref)
                    .and_then(|r| r.read_state().0.done_at)
                    .unwrap_or(0)
            });
            let new_keys = self.ring.held(w.issuer).map_or(0, |h| h.generation) != w.generation;
            if new_keys || done_at > w.since || now >= w.deadline {
                ready.push(w);
            } else {
                waiting.push(w);
            }
        }
        self.waiters = waiting;
        for w in ready {
            // Keys another worker fetched are in shared data, not yet in this worker's ring.
            self.sync_keys(w.issuer);
            if !host::set_effective_context(w.context_id) {
                continue; // the request is gone
            }
            let decision = self.decide(&w.facts, now, MayWait::No);
            if self.apply(decision) == Flow::Continue {
                host::resume_request();
            }
        }
        host::set_effective_context(self.root_id);
    }
}
