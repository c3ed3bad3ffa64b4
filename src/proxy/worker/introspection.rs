//! Introspection callouts, single-flight: one call per token at a time in this worker (later
//! requests with the same token wait for it), and — through a lease in shared data — one per
//! Envoy process while the token cache is on (other workers wait for the answer to land in
//! the shared cache).

use super::{Callout, InFlight, JobKey, WaitFor, Waiter, Worker};
use crate::cache::{CacheKey, Cached, Verified};
use crate::config::IntrospectionEndpoint;
use crate::extract::{self, Bearer};
use crate::http::HttpResponse;
use crate::introspect::{self, Answer, Expect};
use crate::proxy::host;
use crate::proxy::metrics::IntrospectionEvent;
use crate::proxy::shared::Lease;

/// Slack past the call's own timeout before a waiting request gives up (queueing, tick).
const DEADLINE_MARGIN_MS: u64 = 1_000;

/// An introspection this worker makes.
#[derive(Debug)]
pub(super) struct Job {
    issuer: usize,
    token: String,
    /// The JWT's verified claims, when a JWT is also introspected.
    verified: Option<Verified>,
    /// Sent (callout in flight) or still queued for the next tick.
    sent: bool,
    /// Request-driven hosts: this job's request has fetched the issuer's metadata for the
    /// endpoint once (it does not try twice).
    discovery_asked: bool,
    /// Whether this worker holds the cross-worker lease for the token.
    leased: bool,
    /// A job still queued at this time (endpoint never found) is given up.
    deadline: u64,
    /// The revocation epoch when the job began: an `active` answer is not cached if a
    /// revocation landed meanwhile ([`crate::cache::cacheable_after`]).
    epoch: u64,
}

impl Worker {
    /// Arranges for the introspection of the request's token at `issuer`: joins a call in this
    /// worker or another one, or queues a new call. Returns the waiting request's deadline.
    pub(super) fn introspect(
        &mut self,
        issuer: usize,
        key: CacheKey,
        verified: Option<Verified>,
        facts: &super::OwnedFacts,
        now: u64,
    ) -> u64 {
        let timeout = self.cfg.issuers[issuer]
            .introspection
            .as_ref()
            .map_or(0, |i| i.timeout_ms);
        let deadline = now.saturating_add(timeout + DEADLINE_MARGIN_MS);
        let job_key = (key, self.owner());
        if self.jobs.contains_key(&job_key) {
            self.metrics
                .introspection(issuer, IntrospectionEvent::Coalesced);
            return deadline;
        }
        // Across workers the answer travels through the shared cache, so only with it on (and
        // not on request-driven hosts, where a request cannot wait for another one's call).
        let lease = if self.cfg.cache_slots > 0 && !self.request_driven {
            self.cache.take_lease(&key, now, deadline)
        } else {
            Lease::Unavailable
        };
        if lease == Lease::HeldElsewhere {
            self.metrics
                .introspection(issuer, IntrospectionEvent::Coalesced);
            return deadline;
        }
        let authorization: Vec<&str> = facts.authorization.iter().map(String::as_str).collect();
        let Bearer::Token(token) = extract::bearer(&authorization) else {
            return now; // cannot happen: the decision came from this very token
        };
        // A gateway-tagged token goes to its issuer as the issuer minted it.
        let token = crate::issuer::tagged(&self.cfg, token).map_or(token, |(_, t)| t);
        self.jobs.insert(
            job_key,
            Job {
                issuer,
                token: token.to_owned(),
                verified,
                sent: false,
                discovery_asked: false,
                leased: lease == Lease::Taken,
                deadline,
                epoch: self.cache.epoch(),
            },
        );
        deadline
    }

    /// Sends the queued introspections: from the root context, so the answer comes back to it
    /// even if the request that asked has gone; on request-driven hosts, the current request's.
    pub(super) fn send_introspections(&mut self, now: u64) {
        let owner = self.owner();
        if self.request_driven && self.busy(owner) {
            return; // one callout at a time: sent when the one in flight has answered
        }
        let queued: Vec<JobKey> = self
            .jobs
            .iter()
            .filter(|(&(_, o), job)| o == owner && !job.sent)
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
                    .and_then(|r| r.read_state().0.introspection_endpoint)
                    .and_then(|u| crate::http::parse_url(&u).ok()),
            };
            let Some(endpoint) = endpoint else {
                // Discovery has not (yet) found the endpoint: keep the job queued for the
                // refresh job to find it, up to the waiting requests' deadline. On
                // request-driven hosts the request fetches the metadata itself, once.
                if self.request_driven && !job.discovery_asked {
                    job.discovery_asked = true;
                    discover.push(key);
                    continue;
                }
                if self.request_driven || now >= job.deadline {
                    let idx = job.issuer;
                    log::warn!(
                        "tollgate: issuer {}: introspection endpoint not known (metadata not fetched)",
                        issuer.name
                    );
                    self.metrics
                        .introspection(idx, IntrospectionEvent::Failed("no_endpoint"));
                    self.finish_job(key, None, now);
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
            match host::dispatch(&request) {
                Some(token) => {
                    job.sent = true;
                    let callout = Callout::Introspection {
                        key: key.0,
                        started: now,
                    };
                    self.inflight.insert(token, InFlight { callout, owner });
                    self.metrics.introspection(idx, IntrospectionEvent::Call);
                }
                None => {
                    log::warn!(
                        "tollgate: issuer {}: the host refused the introspection call through upstream {:?} (is it defined: an Envoy cluster, or host:port on Kong and APISIX?)",
                        issuer.name,
                        intro.upstream
                    );
                    self.metrics
                        .introspection(idx, IntrospectionEvent::Failed("transport"));
                    self.finish_job(key, None, now);
                }
            }
        }
        for key in discover {
            self.discover_for(key, now);
        }
    }

    /// Request-driven hosts: the metadata fetch a queued job needs for its endpoint, made by
    /// the job's request; the job fails at once if none can be made.
    fn discover_for(&mut self, key: JobKey, now: u64) {
        let Some(idx) = self.jobs.get(&key).map(|j| j.issuer) else {
            return;
        };
        if !self.fetch_for_request(idx, now) {
            self.metrics
                .introspection(idx, IntrospectionEvent::Failed("no_endpoint"));
            self.finish_job(key, None, now);
        }
    }

    pub(super) fn on_introspection_response(
        &mut self,
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
        self.metrics
            .introspection_latency(idx, now.saturating_sub(started));
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
                    self.metrics
                        .introspection(idx, IntrospectionEvent::Inactive);
                }
                let verified = self.jobs.get_mut(&key).and_then(|j| j.verified.take());
                Some(introspect::entry(idx, answer, verified, intro.ttl, now))
            }
            Err(e) => {
                log::warn!(
                    "tollgate: issuer {}: introspection failed: {e}",
                    issuer.name
                );
                self.metrics
                    .introspection(idx, IntrospectionEvent::Failed(e.code()));
                None
            }
        };
        self.finish_job(key, entry, now);
    }

    /// Ends a job: caches the entry (if any, and unless it is an `active` answer a revocation
    /// may have overtaken) for every worker, frees the lease, and decides this worker's waiting
    /// requests with the answer (none: 503) — on request-driven hosts only the job's own
    /// request.
    pub(super) fn finish_job(&mut self, job_key: JobKey, entry: Option<Cached>, now: u64) {
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
        if job.leased {
            self.cache.release_lease(&key);
        }
        let (answered, rest): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| {
                w.wait == WaitFor::Answer { key } && (!self.request_driven || w.context_id == owner)
            });
        self.waiters = rest;
        for w in answered {
            self.resume(w, now, entry.as_ref());
        }
        if !self.request_driven {
            host::set_effective_context(self.root_id);
        }
    }
}
