//! The per-issuer refresh job: discovery metadata and JWKS, fetched by one worker for the
//! whole process (a compare-and-swap lease on the shared fetch state), and picked up by the
//! other workers from shared data.

use super::{Callout, Host, InFlight, Metric, Turn, Worker};
use crate::config::KeySource;
use crate::http::HttpResponse;
use crate::jwks::{Held, KeySet};
use crate::refresh::{self, DocState, DocumentAnswer, FetchError, FetchState, RemoteKeys, Step};

impl<H: Host + Clone> Worker<H> {
    /// Whether a fetch is under way or will start now that can bring the keys this request
    /// needs. For an unknown `kid` this also asks for the (rate-limited) early refetch.
    pub(super) fn worth_waiting(&self, issuer: usize, unknown_kid: bool, now: u64) -> bool {
        let Some(Some(rec)) = self.records.get(issuer) else {
            return false;
        };
        let t = self.cfg.issuers[issuer].timing;
        if unknown_kid {
            rec.update(
                &self.host,
                |s| s.leased(now) || s.refetch_wanted || s.may_refetch(now, &t),
                |s| s.refetch_wanted = true,
            )
            .is_some()
        } else {
            let (state, _) = rec.read_state(&self.host);
            state.leased(now) || state.due(now, &t)
        }
    }

    /// Loads the shared key set of `issuer` if it is newer than the one held. `true` if the
    /// held keys changed.
    pub(super) fn sync_keys(&mut self, issuer: usize) -> bool {
        let Some(Some(rec)) = self.records.get(issuer) else {
            return false;
        };
        let Some((generation, fetched_at, jwks)) = rec.read_keys(&self.host) else {
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

    /// Per-request callouts: starts a fetch of `issuer`'s keys from the current request — also
    /// when another request's fetch is under way, since its answer goes to that request only.
    /// `true` if a fetch of this request is now in flight.
    pub(super) fn fetch_for_request(&mut self, turn: &mut Turn, issuer: usize, now: u64) -> bool {
        let me = turn.context;
        let mine = |w: &Worker<H>| {
            w.inflight.values().any(|c| {
                c.owner == me
                    && matches!(c.callout, Callout::Fetch { issuer: i, .. } if i == issuer)
            })
        };
        if mine(self) {
            return true; // started by this request's refresh step
        }
        let Some(Some(rec)) = self.records.get(issuer) else {
            return false;
        };
        let t = self.cfg.issuers[issuer].timing;
        let state = rec
            .update(&self.host, |s| !s.leased(now), |s| s.begin(now, &t))
            .unwrap_or_else(|| rec.read_state(&self.host).0);
        self.send_fetch(turn, issuer, &state, now);
        mine(self)
    }

    /// Sends a deferred fetch: the next request of the attempt as the state now stands.
    pub(super) fn resume_fetch(&mut self, turn: &mut Turn, idx: usize, now: u64) {
        if let Some(Some(rec)) = self.records.get(idx) {
            let state = rec.read_state(&self.host).0;
            self.send_fetch(turn, idx, &state, now);
        }
    }

    /// Picks up keys other workers fetched and starts the refresh jobs that are due.
    pub(super) fn run_refresh_jobs(&mut self, turn: &mut Turn, now: u64) {
        for idx in 0..self.records.len() {
            let Some(Some(rec)) = self.records.get(idx) else {
                continue;
            };
            let (state, _) = rec.read_state(&self.host);
            let t = self.cfg.issuers[idx].timing;
            let started = if state.due(now, &t) {
                rec.update(&self.host, |s| s.due(now, &t), |s| s.begin(now, &t))
            } else {
                None
            };
            let remote_keys = matches!(self.cfg.issuers[idx].keys, Some(KeySource::Remote { .. }));
            if remote_keys
                && state.generation > 0
                && self.ring.held(idx).map(|h| h.generation) != Some(state.generation)
            {
                self.sync_keys(idx);
            }
            if let Some(state) = started {
                self.send_fetch(turn, idx, &state, now);
            }
        }
    }

    /// Sends the next request of a refresh attempt, or completes it when nothing is left.
    fn send_fetch(&mut self, turn: &mut Turn, idx: usize, state: &FetchState, now: u64) {
        if self.mode.one_callout_per_request() && self.busy(turn.context) {
            // One callout at a time per request: this one follows the one in flight.
            if !self.deferred.contains(&(turn.context, idx)) {
                self.deferred.push((turn.context, idx));
            }
            return;
        }
        let issuer = &self.cfg.issuers[idx];
        let plan = issuer.fetch_plan();
        let Some((step, request)) = refresh::next_request(&plan, state, issuer.timing.timeout_ms)
        else {
            self.fetch_succeeded(idx, now);
            return;
        };
        match self.host.dispatch(&request) {
            Some(token) => {
                let callout = Callout::Fetch { issuer: idx, step };
                let owner = self.owner(turn);
                self.inflight.insert(token, InFlight { callout, owner });
            }
            None => {
                log::warn!(
                    "tollgate: issuer {}: the host refused the fetch through upstream {:?} (is it defined: an Envoy cluster, or host:port on Kong and APISIX?)",
                    issuer.name,
                    request.upstream
                );
                self.fetch_failed(turn, idx, step, &FetchError::Transport, now);
            }
        }
    }

    pub(super) fn on_fetch_response(
        &mut self,
        turn: &mut Turn,
        idx: usize,
        step: Step,
        response: Option<HttpResponse>,
        now: u64,
    ) {
        let issuer = &self.cfg.issuers[idx];
        match step {
            Step::Discovery => {
                let plan = issuer.fetch_plan();
                match refresh::read_discovery(&issuer.issuer, &plan, response.as_ref()) {
                    Ok(meta) => {
                        let jwks_uri = meta.jwks_uri.map(String::from);
                        let endpoint = meta.introspection_endpoint.map(String::from);
                        let rec = self.records.get(idx).and_then(Option::as_ref);
                        // The same document may be one the gateway serves.
                        let same: Vec<_> = plan
                            .discovery
                            .map(|(_, url)| plan.documents_at(url).collect())
                            .unwrap_or_default();
                        if let (Some(r), Some(resp)) = (rec, &response) {
                            for kind in &same {
                                r.write_document(&self.host, *kind, &resp.body);
                            }
                        }
                        let updated = rec.and_then(|r| {
                            r.update(
                                &self.host,
                                |_| true,
                                |s| {
                                    s.jwks_uri.clone_from(&jwks_uri);
                                    s.introspection_endpoint.clone_from(&endpoint);
                                    for kind in &same {
                                        s.documents[kind.index()] = DocState::Stored;
                                        s.documents_attempt[kind.index()] = s.attempt_at;
                                    }
                                    s.renew(now, &issuer.timing);
                                },
                            )
                        });
                        if let Some(state) = updated {
                            self.send_fetch(turn, idx, &state, now);
                        }
                    }
                    Err(e) => self.fetch_failed(turn, idx, step, &e, now),
                }
            }
            Step::Document(kind) => {
                let plan = issuer.fetch_plan();
                let Some((_, source)) = plan.documents[kind.index()] else {
                    return;
                };
                match refresh::read_document(&issuer.issuer, source, response.as_ref()) {
                    Ok(answer) => {
                        let rec = self.records.get(idx).and_then(Option::as_ref);
                        let known = match answer {
                            DocumentAnswer::Stored(body) => {
                                if let Some(r) = rec {
                                    r.write_document(&self.host, kind, body);
                                }
                                DocState::Stored
                            }
                            DocumentAnswer::Absent => DocState::Absent,
                        };
                        let updated = rec.and_then(|r| {
                            r.update(
                                &self.host,
                                |_| true,
                                |s| {
                                    s.documents[kind.index()] = known;
                                    s.documents_attempt[kind.index()] = s.attempt_at;
                                    s.renew(now, &issuer.timing);
                                },
                            )
                        });
                        if let Some(state) = updated {
                            self.send_fetch(turn, idx, &state, now);
                        }
                    }
                    Err(e) => self.fetch_failed(turn, idx, step, &e, now),
                }
            }
            Step::Jwks => match refresh::read_jwks(response.as_ref()) {
                Ok((keys, skipped)) => {
                    let body = response.map(|r| r.body).unwrap_or_default();
                    // The gateway's documents follow the keys in the same attempt.
                    let goes_on = issuer.fetch_plan().documents.iter().any(Option::is_some);
                    let state = self.keys_fetched(idx, keys, skipped, &body, goes_on, now);
                    if let (true, Some(state)) = (goes_on, state) {
                        self.send_fetch(turn, idx, &state, now);
                    }
                }
                Err(e) => self.fetch_failed(turn, idx, step, &e, now),
            },
        }
    }

    /// Ends an attempt that has nothing left to fetch: a success, unless one of its parts
    /// failed (then it is retried at the retry interval).
    fn fetch_succeeded(&mut self, idx: usize, now: u64) {
        if let Some(Some(rec)) = self.records.get(idx) {
            rec.update(
                &self.host,
                |_| true,
                |s| {
                    if s.part_failed {
                        s.fail(now);
                    } else {
                        s.succeed(now);
                    }
                },
            );
        }
    }

    /// Keys fetched: stored for the other workers under a new generation and held here. The
    /// attempt ends, unless it `goes_on` (it then holds the lease for what follows). Returns
    /// the state written.
    fn keys_fetched(
        &mut self,
        idx: usize,
        keys: KeySet,
        skipped: usize,
        jwks: &[u8],
        goes_on: bool,
        now: u64,
    ) -> Option<FetchState> {
        let Some(Some(rec)) = self.records.get(idx) else {
            return None;
        };
        let timing = self.cfg.issuers[idx].timing;
        let generation = rec.read_state(&self.host).0.generation.wrapping_add(1);
        rec.write_keys(&self.host, generation, now, jwks);
        let state = rec.update(
            &self.host,
            |_| true,
            |s| {
                s.generation = generation;
                if goes_on {
                    s.keys_attempt = s.attempt_at;
                    s.renew(now, &timing);
                } else {
                    s.succeed(now);
                }
            },
        );
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
        self.host.record(Metric::Fetched {
            issuer: idx,
            ok: true,
        });
        state
    }

    /// A request of an attempt failed. The JWKS and the gateway's documents are independent
    /// parts: when one of them fails the attempt goes on with the others (so a failing
    /// document never holds keys back, nor keys the documents) and ends as a failure; any
    /// other failure ends it at once.
    fn fetch_failed(
        &mut self,
        turn: &mut Turn,
        idx: usize,
        step: Step,
        error: &FetchError,
        now: u64,
    ) {
        let issuer = &self.cfg.issuers[idx];
        // URLs learned from discovery that fail are looked up again next time.
        let rediscover = step == Step::Jwks
            && matches!(
                issuer.keys,
                Some(KeySource::Remote {
                    source: RemoteKeys::Discovery(_),
                    ..
                })
            );
        let goes_on = matches!(step, Step::Jwks | Step::Document(_))
            && issuer.fetch_plan().documents.iter().any(Option::is_some);
        let timing = issuer.timing;
        log::warn!(
            "tollgate: issuer {}: {} fetch failed: {error}; what is held stays in use",
            issuer.name,
            match step {
                Step::Discovery => "metadata",
                Step::Document(kind) => kind.well_known(),
                Step::Jwks => "key",
            }
        );
        self.host.record(Metric::Fetched {
            issuer: idx,
            ok: false,
        });
        let Some(Some(rec)) = self.records.get(idx) else {
            return;
        };
        let updated = rec.update(
            &self.host,
            |_| true,
            |s| {
                if rediscover {
                    s.jwks_uri = None;
                }
                if !goes_on {
                    s.fail(now);
                    return;
                }
                s.part_failed = true;
                match step {
                    Step::Jwks => s.keys_attempt = s.attempt_at,
                    Step::Document(kind) => s.documents_attempt[kind.index()] = s.attempt_at,
                    Step::Discovery => {}
                }
                s.renew(now, &timing);
            },
        );
        if let (true, Some(state)) = (goes_on, updated) {
            self.send_fetch(turn, idx, &state, now);
        }
    }
}
