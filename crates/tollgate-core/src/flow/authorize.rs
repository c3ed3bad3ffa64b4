//! Policy decisions (AuthZEN, [`crate::authz`]): the last step before an allowed request goes
//! on. A verdict that carries a query is settled here: from the shared decision cache, or by
//! a call to the route's PDP that the request waits for.
//!
//! Single flight as for introspection: one call per question at a time in this worker (later
//! requests asking the same wait for it) and, through a lease in shared data, one per Envoy
//! process (other workers wait for the decision to land in the cache). Decisions are cached
//! for every worker for the rule's TTL (`true`) or negative TTL (`false`); a failure is never
//! cached, and every request waiting for that call is refused with 503.
//!
//! The request waits with its verdict held ([`Waiter::held`]): after the decision it is not
//! decided again (the token may have been an introspection answer nothing cached), only the
//! decision is applied.

use super::{
    Callout, Flow, Host, InFlight, Lease, Metric, OwnedFacts, Turn, WaitFor, Waiter, Worker,
};
use crate::authn::Verdict;
use crate::authz::{self, Answer, Query};
use crate::flow::host::AuthzEvent;
use crate::http::HttpResponse;
use crate::outcome::{Challenge, Denial};

/// Slack past the call's own timeout before a waiting request gives up (queueing, tick).
const DEADLINE_MARGIN_MS: u64 = 1_000;

/// The fixed description of a PDP's `false`.
const DENIED: &str = "the policy decision point denied this request";

/// A question this worker asks a PDP.
#[derive(Debug)]
pub(super) struct Job {
    query: Query,
    /// Whether the callout is in flight (else queued).
    sent: bool,
    /// The cross-worker lease for the question: [`Lease::Taken`] if this worker holds it.
    lease: Lease,
}

/// A job is per question, and with per-request callouts also per request.
pub(super) type JobKey = ([u8; 32], u32);

impl<H: Host + Clone> Worker<H> {
    /// Carries out a verdict for the request `context_id`: at once, or — when its route's PDP
    /// must decide and the decision is not cached — after pausing it for that decision.
    pub(super) fn conclude(
        &mut self,
        turn: &mut Turn,
        context_id: u32,
        mut verdict: Verdict,
        facts: OwnedFacts,
        fresh: bool,
        now: u64,
    ) -> Flow {
        let query = match &mut verdict {
            Verdict::Allow { authorize, .. } => authorize.take(),
            Verdict::Deny { .. } => None,
        };
        let Some(query) = query else {
            return self.proceed(turn, context_id, verdict, facts, fresh, now);
        };
        let rule = query.rule;
        if let Some(answer) = self.decision(&query.key, now) {
            self.count(rule, AuthzEvent::CacheHit);
            let verdict = self.decided(verdict, rule, Some(&answer));
            return self.proceed(turn, context_id, verdict, facts, fresh, now);
        }
        let key = query.key;
        let deadline = self.ask(turn, *query, now);
        self.waiters.push(Waiter {
            context_id,
            wait: WaitFor::Decision { key, rule },
            since: now,
            deadline,
            facts,
            held: Some(Box::new(verdict)),
        });
        if self.mode.ticks() {
            self.set_tick(super::NOW_TICK);
        }
        Flow::Pause
    }

    /// The verdict once the PDP answered (`None`: it did not): unchanged for a yes, a 403
    /// for a no, a 503 for no decision. Counts the outcome.
    fn decided(&self, verdict: Verdict, rule: usize, answer: Option<&Answer>) -> Verdict {
        let issuer = match &verdict {
            Verdict::Allow { issuer, .. } | Verdict::Deny { issuer, .. } => *issuer,
        };
        let denial = match answer {
            Some(Answer::Allow) => {
                self.count(rule, AuthzEvent::Allow);
                return verdict;
            }
            Some(Answer::Deny { reason }) => {
                self.count(rule, AuthzEvent::Deny);
                Denial::Forbidden {
                    description: DENIED,
                    reason: reason.clone(),
                }
            }
            None => {
                self.count(rule, AuthzEvent::Error);
                Denial::PdpUnavailable
            }
        };
        Verdict::Deny {
            denial,
            issuer,
            challenge: Challenge::BEARER,
        }
    }

    fn count(&self, rule: usize, event: AuthzEvent) {
        self.host.record(Metric::Authz { rule, event });
    }

    /// Arranges for `query` to be answered: joins a call in this worker or another one, or
    /// queues a new call. Returns the waiting request's deadline.
    fn ask(&mut self, turn: &Turn, query: Query, now: u64) -> u64 {
        let rule = query.rule;
        let timeout = self
            .cfg
            .rules
            .get(rule)
            .and_then(|r| self.cfg.pdps.get(r.pdp))
            .map_or(0, |p| p.timeout_ms);
        let deadline = now.saturating_add(timeout + DEADLINE_MARGIN_MS);
        let job_key = (query.key, self.owner(turn));
        let has_job = self.pdp_jobs.contains_key(&job_key);
        let decisions = &self.decisions;
        let Some(lease) = self.lease_for_job(has_job, decisions, &query.key, now, deadline) else {
            self.count(rule, AuthzEvent::Coalesced);
            return deadline;
        };
        let job = Job {
            query,
            sent: false,
            lease,
        };
        self.pdp_jobs.insert(job_key, job);
        deadline
    }

    /// Sends the queued PDP calls of the current owner (the root context; with per-request
    /// callouts the current request, one callout at a time).
    pub(super) fn send_decisions(&mut self, turn: &mut Turn, now: u64) {
        let owner = self.owner(turn);
        let queued = super::queued_jobs(&self.pdp_jobs, owner, |job| job.sent);
        for key in queued {
            if self.mode.one_callout_per_request() && self.busy(owner) {
                return;
            }
            let Some(job) = self.pdp_jobs.get_mut(&key) else {
                continue;
            };
            let rule = job.query.rule;
            let Some(pdp) = self
                .cfg
                .rules
                .get(rule)
                .and_then(|r| self.cfg.pdps.get(r.pdp))
            else {
                self.finish_decision(turn, key, None, now);
                continue;
            };
            match self.host.dispatch(&authz::request(pdp, &job.query)) {
                Some(token) => {
                    job.sent = true;
                    let callout = Callout::Decision {
                        key: key.0,
                        started: now,
                    };
                    self.inflight.insert(token, InFlight { callout, owner });
                    self.count(rule, AuthzEvent::Call);
                }
                None => {
                    log::warn!(
                        "tollgate: pdp {}: the host refused the call through upstream {:?} (is it defined: an Envoy cluster, or host:port on Kong and APISIX?)",
                        pdp.name,
                        pdp.upstream
                    );
                    self.finish_decision(turn, key, None, now);
                }
            }
        }
    }

    /// A PDP's answer came back.
    pub(super) fn on_decision_response(
        &mut self,
        turn: &mut Turn,
        key: JobKey,
        started: u64,
        response: Option<HttpResponse>,
        now: u64,
    ) {
        let Some(job) = self.pdp_jobs.get(&key) else {
            return;
        };
        let Some(rule) = self.cfg.rules.get(job.query.rule) else {
            return;
        };
        let pdp_name = self.cfg.pdps.get(rule.pdp).map_or("-", |p| p.name.as_str());
        self.host.record(Metric::AuthzLatency {
            pdp: rule.pdp,
            ms: now.saturating_sub(started),
        });
        let answer = match authz::read(response.as_ref(), rule.expose_reason) {
            Ok(answer) => Some(answer),
            Err(e) => {
                log::warn!("tollgate: pdp {pdp_name}: no decision: {e}");
                None
            }
        };
        self.finish_decision(turn, key, answer, now);
    }

    /// Ends a job: caches the decision (if any) for every worker, frees the lease, and carries
    /// out this worker's waiting requests with it (none: 503) — with per-request callouts only
    /// the job's own request.
    pub(super) fn finish_decision(
        &mut self,
        turn: &mut Turn,
        job_key: JobKey,
        answer: Option<Answer>,
        now: u64,
    ) {
        let Some(job) = self.pdp_jobs.remove(&job_key) else {
            return;
        };
        let (key, owner) = job_key;
        if let (Some(answer), Some(rule)) = (&answer, self.cfg.rules.get(job.query.rule)) {
            let until = now.saturating_add(authz::ttl_ms(rule, answer));
            self.decisions
                .put(&key, &authz::encode(&key, answer, until));
        }
        if job.lease == Lease::Taken {
            self.decisions.release_lease(&key);
        }
        let own_context = self.mode.resumes_in_own_context();
        let answered = self.take_answered(
            owner,
            |wait| matches!(wait, WaitFor::Decision { key: k, .. } if k == key),
        );
        for w in answered {
            self.resume_decided(turn, w, now, Some(answer.as_ref()));
        }
        if !own_context {
            self.host.set_effective_context(self.root_id);
        }
    }

    /// The live decision for `key`, if cached.
    fn decision(&self, key: &[u8; 32], now: u64) -> Option<Answer> {
        let value = self.decisions.get(key)?;
        authz::decode(key, &value, now)
    }

    /// Whether a request waiting for the decision on `key` need wait no longer: this worker
    /// has no call for it, and the decision is cached or nobody holds the lease.
    pub(super) fn decision_over(&self, key: &[u8; 32], now: u64) -> bool {
        !self.pdp_jobs.contains_key(&(*key, self.root_id))
            && (self.decision(key, now).is_some() || !self.decisions.lease_held(key, now))
    }

    /// Carries out a request that waited for a decision. `answer`: `Some` with the outcome of
    /// the call it waited for; `None` to look in the cache (a deadline, another worker's call).
    pub(super) fn resume_decided(
        &mut self,
        turn: &mut Turn,
        w: Waiter,
        now: u64,
        answer: Option<Option<&Answer>>,
    ) {
        let own_context = self.mode.resumes_in_own_context();
        if !own_context && !self.host.set_effective_context(w.context_id) {
            return; // the request is gone
        }
        let (WaitFor::Decision { key, rule }, Some(held)) = (w.wait, w.held) else {
            return;
        };
        let cached;
        let answer = match answer {
            Some(a) => a,
            None => {
                cached = self.decision(&key, now);
                cached.as_ref()
            }
        };
        let verdict = self.decided(*held, rule, answer);
        if self.proceed(turn, w.context_id, verdict, w.facts, false, now) == Flow::Continue {
            self.resumed.insert(w.context_id);
            if own_context {
                turn.allowed = true;
            } else {
                self.host.resume_request();
            }
        }
    }
}
