//! Introspection callouts, single-flight: one call per token at a time in this worker (later
//! requests with the same token wait for it), and — through a lease in shared data — one per
//! Envoy process while the token cache is on (other workers wait for the answer to land in
//! the shared cache).

use super::{
    Callout, Host, InFlight, IntrospectionEvent, IntrospectionFailure, JobKey, Lease, Metric, Turn,
    WaitFor, Worker,
};
use crate::cache::{CacheKey, Cached, Verified};
use crate::config::IntrospectionEndpoint;
use crate::http::HttpResponse;
use crate::introspect::{self, Answer, Expect};

/// Slack past the call's own timeout before a waiting request gives up (queueing, tick).
const DEADLINE_MARGIN_MS: u64 = 1_000;

/// An introspection this worker makes.
#[derive(Debug)]
pub(super) struct Job {
    issuer: usize,
    token: String,
    /// The JWT's verified claims, when a JWT is also introspected.
    verified: Option<Verified>,
    state: JobState,
    /// The cross-worker lease for the token: [`Lease::Taken`] if this worker holds it.
    lease: Lease,
    /// A job still queued at this time (endpoint never found) is given up.
    deadline: u64,
    /// The revocation epoch when the job began: an `active` answer is not cached if a
    /// revocation landed meanwhile ([`crate::cache::cacheable_after`]).
    epoch: u64,
}

/// Where an introspection job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// Waiting to be sent (on the next tick, or by its request), or for its endpoint.
    Queued,
    /// Per-request callouts: the endpoint was unknown, and the job's request is fetching the
    /// issuer's metadata for it (once: if that finds none, the job fails).
    Discovering,
    /// The callout is in flight.
    Sent,
}

impl<H: Host + Clone> Worker<H> {
    /// Arranges for the introspection of the request's token at `issuer`: joins a call in this
    /// worker or another one, or queues a new call. Returns the waiting request's deadline.
    pub(super) fn introspect(
        &mut self,
        turn: &Turn,
        issuer: usize,
        key: CacheKey,
        token: String,
        verified: Option<Verified>,
        now: u64,
    ) -> u64 {
        let timeout = self.cfg.issuers[issuer]
            .introspection
            .as_ref()
            .map_or(0, |i| i.timeout_ms);
        let deadline = now.saturating_add(timeout + DEADLINE_MARGIN_MS);
        let job_key = (key, self.owner(turn));
        if self.jobs.contains_key(&job_key) {
            self.host.record(Metric::Introspection {
                issuer,
                event: IntrospectionEvent::Coalesced,
            });
            return deadline;
        }
        // Across workers the answer travels through the shared cache, so only with it on (and
        // not with per-request callouts, where a request cannot wait for another one's call).
        let lease = if self.cfg.cache_slots > 0 && self.mode.shares_introspection() {
            self.cache.take_lease(&key, now, deadline)
        } else {
            Lease::Unavailable
        };
        if lease == Lease::HeldElsewhere {
            self.host.record(Metric::Introspection {
                issuer,
                event: IntrospectionEvent::Coalesced,
            });
            return deadline;
        }
        self.jobs.insert(
            job_key,
            Job {
                issuer,
                token,
                verified,
                state: JobState::Queued,
                lease,
                deadline,
                epoch: self.cache.epoch(),
            },
        );
        deadline
    }

    /// Sends the queued introspections: from the root context, so the answer comes back to it
    /// even if the request that asked has gone; with per-request callouts, the current request's.
    pub(super) fn send_introspections(&mut self, turn: &mut Turn, now: u64) {
        let owner = self.owner(turn);
        if self.mode.one_callout_per_request() && self.busy(owner) {
            return; // one callout at a time: sent when the one in flight has answered
        }
        let queued: Vec<JobKey> = self
            .jobs
            .iter()
            .filter(|(&(_, o), job)| o == owner && job.state != JobState::Sent)
            .map(|(key, _)| *key)
            .collect();
        let mut discover = Vec::new();
        for key in queued {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            let issuer = &self.cfg.issuers[job.issuer];
            let Some(intro) = &issuer.introspection else {
                continue;
            };
            let endpoint = match &intro.endpoint {
                IntrospectionEndpoint::Fixed(url) => Some(url.clone()),
                IntrospectionEndpoint::Discovered(_) => self
                    .records
                    .get(job.issuer)
                    .and_then(Option::as_ref)
                    .and_then(|r| r.read_state(&self.host).0.introspection_endpoint)
                    .and_then(|u| crate::http::parse_url(&u).ok()),
            };
            let Some(endpoint) = endpoint else {
                // Discovery has not (yet) found the endpoint: keep the job queued for the
                // refresh job to find it, up to the waiting requests' deadline. With per-request
                // callouts the request fetches the metadata itself, once.
                let discovers = self.mode.job_discovers_its_endpoint();
                if discovers && job.state == JobState::Queued {
                    job.state = JobState::Discovering;
                    discover.push(key);
                    continue;
                }
                if discovers || now >= job.deadline {
                    let idx = job.issuer;
                    log::warn!(
                        "tollgate: issuer {}: introspection endpoint not known (metadata not fetched)",
                        issuer.name
                    );
                    self.host.record(Metric::Introspection {
                        issuer: idx,
                        event: IntrospectionEvent::Failed(IntrospectionFailure::NoEndpoint),
                    });
                    self.finish_job(turn, key, None, now);
                }
                continue;
            };
            let request = introspect::request(
                &endpoint,
                &intro.upstream,
                &intro.client,
                &job.token,
                intro.timeout_ms,
            );
            let idx = job.issuer;
            match self.host.dispatch(&request) {
                Some(token) => {
                    job.state = JobState::Sent;
                    let callout = Callout::Introspection {
                        key: key.0,
                        started: now,
                    };
                    self.inflight.insert(token, InFlight { callout, owner });
                    self.host.record(Metric::Introspection {
                        issuer: idx,
                        event: IntrospectionEvent::Call,
                    });
                }
                None => {
                    log::warn!(
                        "tollgate: issuer {}: the host refused the introspection call through upstream {:?} (is it defined: an Envoy cluster, or host:port on Kong and APISIX?)",
                        issuer.name,
                        intro.upstream
                    );
                    self.host.record(Metric::Introspection {
                        issuer: idx,
                        event: IntrospectionEvent::Failed(IntrospectionFailure::Transport),
                    });
                    self.finish_job(turn, key, None, now);
                }
            }
        }
        for key in discover {
            self.discover_for(turn, key, now);
        }
    }

    /// Per-request callouts: the metadata fetch a queued job needs for its endpoint, made by
    /// the job's request; the job fails at once if none can be made.
    fn discover_for(&mut self, turn: &mut Turn, key: JobKey, now: u64) {
        let Some(idx) = self.jobs.get(&key).map(|j| j.issuer) else {
            return;
        };
        if !self.fetch_for_request(turn, idx, now) {
            self.host.record(Metric::Introspection {
                issuer: idx,
                event: IntrospectionEvent::Failed(IntrospectionFailure::NoEndpoint),
            });
            self.finish_job(turn, key, None, now);
        }
    }

    pub(super) fn on_introspection_response(
        &mut self,
        turn: &mut Turn,
        key: JobKey,
        started: u64,
        response: Option<HttpResponse>,
        now: u64,
    ) {
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        let idx = job.issuer;
        let issuer = &self.cfg.issuers[idx];
        let Some(intro) = &issuer.introspection else {
            return;
        };
        self.host.record(Metric::IntrospectionLatency {
            issuer: idx,
            ms: now.saturating_sub(started),
        });
        let expect = Expect {
            issuer: &issuer.issuer,
            audiences: &issuer.audiences,
            clock_skew_s: issuer.clock_skew_s,
            now_s: i64::try_from(now / 1000).unwrap_or(i64::MAX),
            require_token_type: intro.require_token_type,
        };
        let entry = match introspect::read(response.as_ref(), &expect) {
            Ok(answer) => {
                if matches!(answer, Answer::Inactive(_)) {
                    self.host.record(Metric::Introspection {
                        issuer: idx,
                        event: IntrospectionEvent::Inactive,
                    });
                }
                let verified = self.jobs.get_mut(&key).and_then(|j| j.verified.take());
                Some(introspect::entry(idx, answer, verified, intro.ttl, now))
            }
            Err(e) => {
                log::warn!(
                    "tollgate: issuer {}: introspection failed: {e}",
                    issuer.name
                );
                self.host.record(Metric::Introspection {
                    issuer: idx,
                    event: IntrospectionEvent::Failed(e.into()),
                });
                None
            }
        };
        self.finish_job(turn, key, entry, now);
    }

    /// Ends a job: caches the entry (if any, and unless it is an `active` answer a revocation
    /// may have overtaken) for every worker, frees the lease, and decides this worker's waiting
    /// requests with the answer (none: 503) — with per-request callouts only the job's own
    /// request.
    pub(super) fn finish_job(
        &mut self,
        turn: &mut Turn,
        job_key: JobKey,
        entry: Option<Cached>,
        now: u64,
    ) {
        let Some(job) = self.jobs.remove(&job_key) else {
            return;
        };
        let (key, owner) = job_key;
        if let Some(entry) = &entry {
            if self.cfg.cache_slots > 0
                && crate::cache::cacheable_after(entry, job.epoch, self.cache.epoch())
            {
                use crate::cache::TokenCache as _;
                self.cache.put(&key, entry, now);
            }
        }
        if job.lease == Lease::Taken {
            self.cache.release_lease(&key);
        }
        let own_context = self.mode.resumes_in_own_context();
        for w in self.take_answered(owner, |wait| wait == WaitFor::Answer { key }) {
            self.resume(turn, w, now, entry.as_ref());
        }
        if !own_context {
            self.host.set_effective_context(self.root_id);
        }
    }
}
