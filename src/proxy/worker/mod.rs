//! Per-VM (per Envoy worker) state shared by the root context and its HTTP contexts, and the
//! steps both use: decide a request, carry a decision out, pause requests and wake them.
//!
//! A request pauses for one of three things: its issuer's keys ([`keys`]: the background
//! refresh job), an introspection answer ([`introspection`]: single-flight callouts), or
//! another worker's verification of the same JWT (the claim in the shared token cache, see
//! [`SharedTokenCache`]). It is decided again when the thing arrives, fails, or its deadline
//! passes: after keys or an answer without waiting a second time, after a peer's verification
//! at most once more for keys or an answer.
//!
//! **Request-driven hosts.** Envoy and Kong give every worker a tick and run callouts apart
//! from requests; the root context makes them all, and a paused request is resumed from any
//! context. APISIX has no tick, makes a callout only inside the request that dispatched it
//! (after that request's callback returns), delivers the answer to it, and lets a request that
//! paused with no callout of its own through to the upstream. There ([`Worker::request_driven`],
//! see [`super::host::Capabilities`]) a request that must wait makes its own callouts — the
//! key fetch or introspection it needs, even if another request's is under way — and is
//! decided again, in its own context, when its last callout has answered. A request makes one
//! callout at a time, none after a local reply; refresh jobs that fall due start from the next
//! request that is let through; nothing waits for a peer. `"callouts": "per_request"` in the
//! configuration selects this on any host.

mod introspection;
mod keys;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::host;
use super::metrics::{IntrospectionEvent, Metrics};
use super::shared::{IssuerKeys, SharedTokenCache};
use crate::authn::{self, Decision, MayWait};
use crate::cache::{CacheKey, Cached};
use crate::config::{FilterConfig, KeySource};
use crate::jwks::{Held, KeyRing};
use crate::outcome::{self, Denial};
use crate::policy::{Policy, RequestFacts};
use crate::refresh::Step;

/// Tick period while nothing waits: how quickly refresh deadlines are noticed.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Tick period while requests wait for something another worker may be fetching.
const WAITING_TICK: Duration = Duration::from_millis(10);
/// Asked for when a request starts waiting: run the tick (and start the call) right away. Also
/// the period while a request waits for another worker's verification (a fraction of a ms to a
/// few ms of work), so that it resumes about as soon as the entry lands.
const NOW_TICK: Duration = Duration::from_millis(1);
/// Backstop for a request waiting on another worker's verification: the claim lapses after
/// [`crate::cache::CLAIM_MS`], and the slot is checked on every tick, so this is never reached
/// unless ticks stall.
const PEER_WAIT_MS: u64 = 2 * crate::cache::CLAIM_MS;

/// Whether this VM logged that it has no clock (once: every such request is counted).
static CLOCK_LOGGED: AtomicBool = AtomicBool::new(false);

/// The request facts a paused request needs to be decided again later.
#[derive(Debug, Clone, Default)]
pub struct OwnedFacts {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub route_name: Option<String>,
    pub authorization: Vec<String>,
    /// Values of the headers routes name as `issuer_header`.
    pub headers: Vec<(String, String)>,
}

impl OwnedFacts {
    fn view(&self) -> (RequestFacts<'_>, Vec<&str>) {
        (
            RequestFacts {
                method: &self.method,
                path: &self.path,
                authority: &self.authority,
                route_name: self.route_name.as_deref(),
                headers: &self.headers,
            },
            self.authorization.iter().map(String::as_str).collect(),
        )
    }
}

/// What a paused request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// Keys newer than `generation` (or the end of the fetch attempt under way).
    Keys { issuer: usize, generation: u64 },
    /// The introspection answer for this token.
    Answer { key: CacheKey },
    /// Another worker's verification of this token (its entry in the shared cache).
    Peer { key: CacheKey },
}

#[derive(Debug)]
struct Waiter {
    context_id: u32,
    wait: WaitFor,
    since: u64,
    deadline: u64,
    facts: OwnedFacts,
}

/// What the HTTP context returns to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// An outstanding callout of this worker.
#[derive(Debug, Clone, Copy)]
enum Callout {
    Fetch { issuer: usize, step: Step },
    Introspection { key: CacheKey, started: u64 },
}

/// A callout in flight and the context it answers to (the root context, or on request-driven
/// hosts the request that made it).
#[derive(Debug, Clone, Copy)]
struct InFlight {
    callout: Callout,
    owner: u32,
}

/// An introspection job is per token, and on request-driven hosts also per request.
type JobKey = (CacheKey, u32);

pub struct Worker {
    pub cfg: FilterConfig,
    root_id: u32,
    ring: KeyRing,
    metrics: Metrics,
    /// Shared-data records of issuers with a refresh job (`None`: nothing to fetch).
    records: Vec<Option<IssuerKeys>>,
    cache: SharedTokenCache,
    waiters: Vec<Waiter>,
    inflight: HashMap<u32, InFlight>,
    /// Introspections this worker makes (queued or in flight), by token cache key and owner.
    jobs: HashMap<JobKey, introspection::Job>,
    /// No tick or no shared data: see the module docs.
    request_driven: bool,
    /// The context the host is running now: callouts dispatched now answer to it.
    current: u32,
    /// Request-driven hosts: the current request was allowed while it was paused (the caller
    /// lets it continue).
    allowed_current: bool,
    /// The current request got a local reply in this callback: no callout may follow it.
    answered_current: std::cell::Cell<bool>,
    /// Request-driven hosts: key fetches (request, issuer) waiting for the request's callout in
    /// flight to answer.
    deferred: Vec<(u32, usize)>,
    /// Whether any route matches on the host's route name (read only if so).
    pub needs_route_name: bool,
    /// Request headers routes read (`issuer_header`), gathered into [`OwnedFacts::headers`].
    pub hint_headers: Vec<String>,
    /// Headers only Tollgate may set (identity headers, the gateway's route header): inbound
    /// copies are removed from every request ([`Worker::is_guarded`]).
    guarded_headers: Vec<String>,
    /// Requests that were paused for their decision, then allowed and resumed, whose body or
    /// trailer callbacks have not come since (see [`Worker::take_resumed`]).
    resumed: HashSet<u32>,
    tick: Duration,
}

impl Worker {
    pub fn new(cfg: FilterConfig, root_id: u32, request_driven: bool) -> Worker {
        let mut ring = KeyRing::new(cfg.issuers.len());
        let mut records = Vec::with_capacity(cfg.issuers.len());
        for (idx, issuer) in cfg.issuers.iter().enumerate() {
            if let Some(KeySource::Inline(keys)) = &issuer.keys {
                ring.set(
                    idx,
                    Held {
                        keys: keys.clone(),
                        fetched_at: None,
                        generation: 0,
                    },
                );
            }
            let record = (!issuer.fetch_plan().is_empty()).then(|| {
                let rec = IssuerKeys::new(&cfg.fingerprint, &issuer.name);
                rec.ensure_state();
                rec
            });
            records.push(record);
        }
        let metrics = Metrics::define(cfg.issuers.iter().map(|i| {
            (
                i.name.as_str(),
                i.introspection.is_some(),
                i.gateway.is_some(),
            )
        }));
        let needs_route_name = cfg.routes.iter().any(|r| r.matcher.route_name.is_some());
        let mut hint_headers: Vec<String> = cfg
            .routes
            .iter()
            .map(|r| &r.policy)
            .chain(cfg.default_policy.as_ref())
            .filter_map(|p| match p {
                Policy::Require(r) => r.issuer_header.clone(),
                Policy::Anonymous => None,
            })
            .collect();
        if let Some(gw) = &cfg.gateway {
            hint_headers.extend(gw.selector_header.clone());
            hint_headers.push("content-type".to_owned());
        }
        hint_headers.sort();
        hint_headers.dedup();
        let guarded_headers: Vec<String> = cfg
            .identity
            .owned_headers()
            .map(str::to_owned)
            .chain(cfg.gateway.as_ref().map(|g| g.route_header.clone()))
            .collect();
        let cache = SharedTokenCache::new(cfg.cache_slots);
        if !request_driven {
            host::set_tick_period(NOW_TICK);
        }
        Worker {
            cfg,
            root_id,
            ring,
            metrics,
            records,
            cache,
            waiters: Vec::new(),
            inflight: HashMap::new(),
            jobs: HashMap::new(),
            request_driven,
            current: root_id,
            allowed_current: false,
            answered_current: std::cell::Cell::new(false),
            deferred: Vec::new(),
            needs_route_name,
            hint_headers,
            guarded_headers,
            resumed: HashSet::new(),
            tick: NOW_TICK,
        }
    }

    /// Whether the inbound request header `name` is a copy of one only Tollgate may set, in
    /// any spelling a backend reads as the same ([`crate::config::same_header_name`]).
    pub fn is_guarded(&self, name: &str) -> bool {
        self.guarded_headers
            .iter()
            .any(|h| crate::config::same_header_name(h, name))
    }

    /// Whether the request `context_id`, paused for its decision, has been allowed and resumed
    /// since its headers: then its later body and trailers continue. Until then (still waiting,
    /// or refused) they are held. Asked by the request's body and trailer callbacks.
    pub fn take_resumed(&mut self, context_id: u32) -> bool {
        self.resumed.remove(&context_id)
    }

    fn decide(
        &mut self,
        facts: &OwnedFacts,
        now: u64,
        may_wait: MayWait,
        fresh: Option<&Cached>,
    ) -> Decision {
        let (req, authorization) = facts.view();
        authn::authenticate(
            &self.cfg,
            &req,
            &authorization,
            &self.ring,
            &mut self.cache,
            now,
            may_wait,
            fresh,
        )
    }

    /// Decides a new request; pauses it if it must wait for keys, an introspection answer or
    /// another worker's verification of its token.
    pub fn on_request(&mut self, context_id: u32, facts: OwnedFacts, now: u64) -> Flow {
        if !self.request_driven {
            return self.start(context_id, facts, now, MayWait::Yes);
        }
        let flow = self.start(context_id, facts, now, MayWait::NotForPeer);
        // This request's introspection: now, from this request.
        self.send_introspections(now);
        match flow {
            Flow::Continue => Flow::Continue,
            // Still waiting for its own callouts, answered with a local reply, or — if its
            // callouts could not be made — decided now.
            Flow::Pause => self.settle(context_id, now),
        }
    }

    /// Every request (API or gateway call) starts here.
    pub fn begin_request(&mut self, context_id: u32) {
        self.current = context_id;
        self.answered_current.set(false);
    }

    /// Request-driven hosts: a request that goes on to the upstream starts the refresh jobs
    /// that are due (the tick does that elsewhere), so keys and the metadata the gateway serves
    /// stay fresh. Only such a request: APISIX drops a local reply when a callout is pending.
    pub fn continuing(&mut self, now: u64) {
        if self.request_driven && !self.answered_current.get() {
            self.run_refresh_jobs(now);
        }
    }

    /// Whether `context_id` has a callout in flight. On request-driven hosts a request makes one
    /// at a time (APISIX refuses a second one); the next one waits in [`Worker::deferred`].
    fn busy(&self, context_id: u32) -> bool {
        self.inflight.values().any(|c| c.owner == context_id)
    }

    /// Request-driven hosts, once the current request's callout has answered: its next one —
    /// its queued introspection, else a deferred key fetch. Never after a local reply.
    fn next_callout(&mut self, now: u64) {
        let me = self.current;
        if self.answered_current.get() {
            self.deferred.retain(|(c, _)| *c != me);
            return;
        }
        self.send_introspections(now);
        while !self.busy(me) {
            let Some(at) = self.deferred.iter().position(|(c, _)| *c == me) else {
                break;
            };
            let (_, idx) = self.deferred.remove(at);
            self.resume_fetch(idx, now);
        }
    }

    /// The owner a callout dispatched now answers to, and of an introspection job made now.
    fn owner(&self) -> u32 {
        if self.request_driven {
            self.current
        } else {
            self.root_id
        }
    }

    /// Request-driven hosts: once the current request (`context_id`) has no callout in flight,
    /// decides it if it still waits (a queued introspection whose endpoint never became known
    /// fails). `Continue` if it was allowed, now or by an answer that just arrived; `Pause`
    /// while it waits, and after a local reply.
    fn settle(&mut self, context_id: u32, now: u64) -> Flow {
        if self.busy(context_id) {
            return Flow::Pause;
        }
        let stuck: Vec<JobKey> = self
            .jobs
            .keys()
            .filter(|(_, owner)| *owner == context_id)
            .copied()
            .collect();
        for job in stuck {
            self.finish_job(job, None, now);
        }
        let (mine, rest): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.context_id == context_id);
        self.waiters = rest;
        for w in mine {
            if let WaitFor::Keys { issuer, .. } = w.wait {
                self.sync_keys(issuer);
            }
            self.resume(w, now, None);
        }
        if std::mem::take(&mut self.allowed_current) {
            Flow::Continue
        } else {
            Flow::Pause
        }
    }

    /// Decides a request (new, or done waiting for a peer) on the current HTTP context.
    fn start(&mut self, context_id: u32, facts: OwnedFacts, now: u64, may_wait: MayWait) -> Flow {
        let mut decision = self.decide(&facts, now, may_wait, None);
        if let Decision::WaitForKeys { issuer, .. } = decision {
            // Another worker may have fetched already.
            if self.sync_keys(issuer) {
                decision = self.decide(&facts, now, may_wait, None);
            }
        }
        match decision {
            Decision::WaitForKeys {
                issuer,
                unknown_kid,
            } => {
                if self.worth_waiting(issuer, unknown_kid, now)
                    && (!self.request_driven || self.fetch_for_request(issuer, now))
                {
                    let generation = self.ring.held(issuer).map_or(0, |h| h.generation);
                    let deadline = now.saturating_add(self.cfg.issuers[issuer].timing.lease_ms());
                    self.pause(
                        context_id,
                        WaitFor::Keys { issuer, generation },
                        now,
                        deadline,
                        facts,
                    );
                    return Flow::Pause;
                }
                let decision = self.decide(&facts, now, MayWait::No, None);
                self.apply(decision, false)
            }
            Decision::Introspect {
                issuer,
                key,
                verified,
            } => {
                let deadline = self.introspect(issuer, key, verified, &facts, now);
                self.pause(context_id, WaitFor::Answer { key }, now, deadline, facts);
                Flow::Pause
            }
            Decision::WaitForPeer { issuer, key } => {
                self.metrics.verify_coalesced(issuer);
                let deadline = now.saturating_add(PEER_WAIT_MS);
                self.pause(context_id, WaitFor::Peer { key }, now, deadline, facts);
                Flow::Pause
            }
            decision => self.apply(decision, false),
        }
    }

    fn pause(
        &mut self,
        context_id: u32,
        wait: WaitFor,
        now: u64,
        deadline: u64,
        facts: OwnedFacts,
    ) {
        self.waiters.push(Waiter {
            context_id,
            wait,
            since: now,
            deadline,
            facts,
        });
        if !self.request_driven {
            self.set_tick(NOW_TICK);
        }
    }

    /// Carries a decision out on the current (effective) HTTP context. `fresh`: the decision
    /// used an introspection answer that just arrived (so a refusal is not a cache hit).
    fn apply(&self, decision: Decision, fresh: bool) -> Flow {
        let Decision::Allow {
            issuer,
            headers,
            cache_hit,
        } = decision
        else {
            return self.refuse(decision, fresh);
        };
        for (name, value) in &headers {
            host::set_request_header(name, value);
        }
        if self.cfg.identity.drop_authorization {
            host::remove_request_header("authorization");
        }
        if let Some(i) = issuer {
            self.metrics.allowed(i, cache_hit);
        }
        Flow::Continue
    }

    /// Carries out a decision that is not an allow: a local reply.
    fn refuse(&self, decision: Decision, fresh: bool) -> Flow {
        match decision {
            Decision::Deny { denial, issuer } => {
                if let (Denial::InactiveToken, Some(i), false) = (&denial, issuer, fresh) {
                    self.metrics
                        .introspection(i, IntrospectionEvent::NegativeCacheHit);
                }
                self.deny(&denial, issuer)
            }
            Decision::WaitForKeys { issuer, .. } => {
                self.deny(&Denial::KeysUnavailable, Some(issuer))
            }
            Decision::Introspect { issuer, .. } => {
                self.deny(&Denial::IntrospectionUnavailable, Some(issuer))
            }
            // Not produced for a request that may not wait (see `authenticate`).
            Decision::WaitForPeer { issuer, .. } => {
                self.deny(&Denial::KeysUnavailable, Some(issuer))
            }
            Decision::Allow { .. } => Flow::Continue,
        }
    }

    /// Refuses the current request before any decision (see the HTTP context).
    pub fn refuse_request(&self, denial: &Denial) {
        self.deny(denial, None);
    }

    fn deny(&self, denial: &Denial, issuer: Option<usize>) -> Flow {
        self.metrics.denied(issuer, denial);
        let name = issuer
            .and_then(|i| self.cfg.issuers.get(i))
            .map_or("-", |i| i.name.as_str());
        log::debug!("tollgate: denied ({}), issuer {name}", denial.code());
        if *denial == Denial::ClockUnavailable && !CLOCK_LOGGED.swap(true, Ordering::Relaxed) {
            log::error!("tollgate: neither the host nor WASI tells the time: every request that needs a token is refused (503)");
        }
        let reply = outcome::reply(denial, &self.cfg.realm);
        if !host::send_response(reply.status, &reply.headers, &reply.body) {
            log::warn!("tollgate: the host refused the local reply");
        }
        self.answered_current.set(true);
        Flow::Pause
    }

    /// The issuer's metadata document, when the gateway keeps one for it.
    pub fn issuer_metadata(
        &self,
        idx: usize,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.records.get(idx)?.as_ref()?.read_metadata()
    }

    pub fn gateway_forwarded(&self, idx: usize, endpoint: crate::gateway::path::Endpoint) {
        use crate::gateway::path::Endpoint as E;
        let name = match endpoint {
            E::Authorize => "authorize",
            E::Token => "token",
            E::Introspect => "introspect",
            E::Revoke => "revoke",
            E::Userinfo => "userinfo",
            E::Register => "register",
            E::ClientConfiguration => "client_configuration",
            E::OidcDiscovery | E::AsMetadata => "metadata",
        };
        self.metrics.gateway(idx, name);
    }

    pub fn gateway_refused(&self) {
        self.metrics.gateway_refused();
    }

    /// Revocation through the gateway, once the server confirmed it: the token leaves the
    /// shared cache and every worker's memo (the revocation epoch moves), so the next API call
    /// checks it again — an opaque token (or a JWT of an issuer with `introspect_jwts`) at its
    /// issuer, which then says it is not active.
    pub fn evict(&self, token: &str) {
        self.metrics.cache_revocation();
        for key in super::gateway::token_keys(self, token) {
            self.cache.remove(&key);
        }
    }

    /// Forgets a request that ended (client gone) while it waited, and on request-driven hosts
    /// its callouts (the host cancels them with the request).
    pub fn forget(&mut self, context_id: u32) {
        self.waiters.retain(|w| w.context_id != context_id);
        self.resumed.remove(&context_id);
        if self.request_driven {
            self.inflight.retain(|_, c| c.owner != context_id);
            self.jobs.retain(|(_, owner), _| *owner != context_id);
            self.deferred.retain(|(c, _)| *c != context_id);
        }
    }

    /// The periodic step: refresh jobs, queued introspections, then paused requests.
    pub fn on_tick(&mut self, now: u64) {
        self.current = self.root_id;
        self.run_refresh_jobs(now);
        self.send_introspections(now);
        self.wake(now);
        let period = if self.waiters.is_empty() {
            IDLE_TICK
        } else if self
            .waiters
            .iter()
            .any(|w| matches!(w.wait, WaitFor::Peer { .. }))
        {
            NOW_TICK
        } else {
            WAITING_TICK
        };
        self.set_tick(period);
    }

    fn set_tick(&mut self, period: Duration) {
        if self.tick != period {
            self.tick = period;
            host::set_tick_period(period);
        }
    }

    /// A callout came back (`response` is `None` when there was no HTTP answer).
    /// `context_id`: the context the host delivered it to (the one that made the call).
    pub fn on_callout_response(
        &mut self,
        context_id: u32,
        token: u32,
        response: Option<crate::http::HttpResponse>,
        now: u64,
    ) {
        self.current = context_id;
        self.answered_current.set(false);
        match self.inflight.remove(&token) {
            Some(InFlight {
                callout: Callout::Fetch { issuer, step },
                ..
            }) => self.on_fetch_response(issuer, step, response, now),
            Some(InFlight {
                callout: Callout::Introspection { key, started },
                owner,
            }) => self.on_introspection_response((key, owner), started, response, now),
            None => {}
        }
        if self.request_driven {
            // Discovery may have found the introspection endpoint a queued job waits for.
            self.next_callout(now);
            if self.settle(context_id, now) == Flow::Continue {
                host::resume_request();
            }
        } else {
            self.wake(now);
        }
    }

    /// Decides again every paused request whose wait is over; resumes the allowed ones.
    fn wake(&mut self, now: u64) {
        if self.waiters.is_empty() {
            return;
        }
        let mut done_at: HashMap<usize, u64> = HashMap::new();
        let mut claimed: HashMap<CacheKey, bool> = HashMap::new();
        let mut ready = Vec::new();
        let mut waiting = Vec::with_capacity(self.waiters.len());
        for w in std::mem::take(&mut self.waiters) {
            let over = now >= w.deadline
                || match w.wait {
                    WaitFor::Keys { issuer, generation } => {
                        let attempt_ended = *done_at.entry(issuer).or_insert_with(|| {
                            self.records
                                .get(issuer)
                                .and_then(Option::as_ref)
                                .and_then(|r| r.read_state().0.done_at)
                                .unwrap_or(0)
                        });
                        self.ring.held(issuer).map_or(0, |h| h.generation) != generation
                            || attempt_ended > w.since
                    }
                    // Our own call answers through `finish_job`; another worker's lands in the
                    // cache before it frees its lease, so a freed lease with no entry means it failed.
                    WaitFor::Answer { key } => {
                        !self.jobs.contains_key(&(key, self.root_id))
                            && (self.cache.peek(&key, now) || !self.cache.lease_held(&key, now))
                    }
                    // The entry replaces the claim; a claim freed or lapsed without one means
                    // the peer refused the token or died: decide (verify) here.
                    WaitFor::Peer { key } => !*claimed
                        .entry(key)
                        .or_insert_with(|| self.cache.claimed_elsewhere(&key, now)),
                };
            if over {
                ready.push(w);
            } else {
                waiting.push(w);
            }
        }
        self.waiters = waiting;
        for w in ready {
            if let WaitFor::Keys { issuer, .. } = w.wait {
                // Keys another worker fetched are in shared data, not yet in this ring.
                self.sync_keys(issuer);
            }
            self.resume(w, now, None);
        }
        host::set_effective_context(self.root_id);
    }

    /// Decides a paused request again and carries the decision out. After keys or an answer
    /// it may not wait again; after a peer's verification it may still wait for keys or an
    /// answer (not for a peer: if the entry is not there, it verifies the token itself).
    /// On request-driven hosts only the current request is ever resumed, and its caller lets
    /// it continue ([`Worker::settle`]).
    fn resume(&mut self, w: Waiter, now: u64, fresh: Option<&Cached>) {
        if !self.request_driven && !host::set_effective_context(w.context_id) {
            return; // the request is gone
        }
        let flow = if let WaitFor::Peer { .. } = w.wait {
            self.start(w.context_id, w.facts, now, MayWait::NotForPeer)
        } else {
            let decision = self.decide(&w.facts, now, MayWait::No, fresh);
            self.apply(decision, fresh.is_some())
        };
        if flow == Flow::Continue {
            self.resumed.insert(w.context_id);
            if self.request_driven {
                self.allowed_current = true;
            } else {
                host::resume_request();
            }
        }
    }
}
