//! Upstream tokens ([`crate::upstream`]): the step after the policy decision, before an
//! allowed request goes on. A verdict that carries [`Work`] gets its upstream token here:
//! - **sign**: from this worker's memo of tokens it signed ([`Memo`]), or signed now;
//! - **exchange**: from that memo, the shared exchanged-token cache, or by a call to the token
//!   endpoint that the request waits for.
//!
//! Exchanges have single flight as introspection and PDP calls do: one call per (token,
//! rule) at a time in this worker (later requests wait for it) and, through a lease in shared
//! data, one per Envoy process (other workers wait for the answer to land in the cache). A
//! token is cached until shortly before it expires ([`upstream::read`]); a refusal for
//! [`upstream::REFUSAL_TTL_MS`]; a failure is never cached, and every request waiting for that
//! call is refused with 503. Nothing of a waiting request (headers, body, trailers) goes on
//! before the answer: it stays paused with its verdict held ([`Waiter::held`]).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{
    Callout, Flow, Host, InFlight, Lease, Metric, OwnedFacts, Turn, UpstreamEvent, WaitFor, Waiter,
    Worker,
};
use crate::authn::{Upstream, Verdict};
use crate::http::HttpResponse;
use crate::outcome::{Challenge, Denial};
use crate::upstream::{self, Exchanged, Placement, UpstreamRule, Work};

/// Slack past the call's own timeout before a waiting request gives up (queueing, tick).
const DEADLINE_MARGIN_MS: u64 = 1_000;

/// Most upstream tokens a worker keeps per rule for reuse ([`Memo`]); when full, expired ones
/// go, then all.
const MEMO_ENTRIES: usize = 1024;

/// A token exchange this worker makes.
#[derive(Debug)]
pub(super) struct Job {
    rule: usize,
    /// The issuer whose token endpoint is called.
    at: usize,
    /// The caller's token.
    subject: String,
    /// Whether the callout is in flight (else queued).
    sent: bool,
    /// The cross-worker lease: [`Lease::Taken`] if this worker holds it.
    lease: Lease,
}

/// A job is per (token, rule), and with per-request callouts also per request.
pub(super) type JobKey = ([u8; 32], u32);

/// Upstream tokens this worker handed out, per rule and caller token, until they are due for
/// renewal: backend tokens it signed, and exchanged tokens (or refusals) it received or found
/// in the shared cache. A warm request finds its token here by a plain hash-map lookup on the
/// token text: no SHA-256 of it, no shared-data read, no claims mapped.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// By rule index: caller token -> (what the upstream gets, until when).
    rules: Vec<HashMap<String, (Exchanged, u64)>>,
    /// Tokens signed: with the key and time, the `jti` when the host gives no randomness.
    signed: u64,
}

impl Memo {
    fn get(&self, rule: usize, token: &str, now: u64) -> Option<&Exchanged> {
        match self.rules.get(rule)?.get(token) {
            Some((answer, until)) if *until > now => Some(answer),
            _ => None,
        }
    }

    fn put(&mut self, rule: usize, token: &str, answer: Exchanged, until: u64, now: u64) {
        if until <= now {
            return;
        }
        if self.rules.len() <= rule {
            self.rules.resize_with(rule + 1, HashMap::new);
        }
        let Some(map) = self.rules.get_mut(rule) else {
            return;
        };
        if map.len() >= MEMO_ENTRIES {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= MEMO_ENTRIES {
                map.clear();
            }
        }
        map.insert(token.to_owned(), (answer, until));
    }
}

impl<H: Host + Clone> Worker<H> {
    /// Carries out an allowed verdict whose policy decision (if any) is made: first its
    /// upstream token, when its route names one (possibly pausing the request for a token
    /// exchange), then [`Worker::apply`].
    pub(super) fn proceed(
        &mut self,
        turn: &mut Turn,
        context_id: u32,
        mut verdict: Verdict,
        facts: OwnedFacts,
        fresh: bool,
        now: u64,
    ) -> Flow {
        let (work, proof) = match &mut verdict {
            Verdict::Allow {
                upstream, proof, ..
            } => match upstream.take() {
                Some(work) => (*work, proof),
                None => return self.apply(turn, verdict, fresh, now),
            },
            Verdict::Deny { .. } => return self.apply(turn, verdict, fresh, now),
        };
        let Work {
            rule,
            issuer,
            token,
            claims,
        } = work;
        let at = match self.cfg.upstream_rules.get(rule) {
            Some(UpstreamRule::Sign(_)) => {
                let verdict = self.signed(verdict, rule, issuer, &token, claims, now);
                return self.apply(turn, verdict, fresh, now);
            }
            Some(UpstreamRule::Exchange(x)) => x.at.unwrap_or(issuer),
            None => {
                let verdict = refuse(verdict, Denial::ExchangeUnavailable);
                return self.apply(turn, verdict, fresh, now);
            }
        };
        if let Some(answer) = self.memo.get(rule, &token, now) {
            self.note(UpstreamEvent::ExchangeCacheHit);
            let verdict = self.with_exchanged(verdict, Some(answer));
            return self.apply(turn, verdict, fresh, now);
        }
        let key = upstream::key(&self.cfg.fingerprint, rule, &token);
        if let Some((answer, until)) = self.exchanged(&key, now) {
            self.note(UpstreamEvent::ExchangeCacheHit);
            let verdict = self.with_exchanged(verdict, Some(&answer));
            self.memo.put(rule, &token, answer, until, now);
            return self.apply(turn, verdict, fresh, now);
        }
        // The DPoP proof is used now, before the wait: a replay of it while this request
        // waits is refused.
        let proof = proof.take();
        if let Err(flow) = self.record_proof(turn, proof, Some(issuer), now) {
            return flow;
        }
        let deadline = self.start_exchange(turn, rule, at, key, token, now);
        self.waiters.push(Waiter {
            context_id,
            wait: WaitFor::Exchange { key },
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

    fn note(&self, event: UpstreamEvent) {
        self.host.record(Metric::UpstreamToken(event));
    }

    /// The verdict with the backend token of `rule` in place: one this worker signed for the
    /// same caller token and rule, or a new one from the caller's `claims`.
    fn signed(
        &mut self,
        mut verdict: Verdict,
        rule: usize,
        issuer: usize,
        token: &str,
        claims: Option<std::rc::Rc<serde_json::Map<String, serde_json::Value>>>,
        now: u64,
    ) -> Verdict {
        let (Some(UpstreamRule::Sign(sign)), Some(backend)) =
            (self.cfg.upstream_rules.get(rule), self.cfg.backend.as_ref())
        else {
            return refuse(verdict, Denial::ExchangeUnavailable);
        };
        let signed = match self.memo.get(rule, token, now) {
            Some(Exchanged::Token { token, .. }) => {
                self.note(UpstreamEvent::SignedReused);
                token.clone()
            }
            _ => {
                let claims = claims.unwrap_or_default();
                let caller_exp_s = claims.get("exp").and_then(serde_json::Value::as_i64);
                let iss = self
                    .cfg
                    .issuers
                    .get(issuer)
                    .map_or("", |i| i.issuer.as_str());
                let claims = upstream::backend_claims(sign, iss, &claims);
                let mut jti = [0u8; 16];
                self.memo.signed += 1;
                if !self.host.random(&mut jti) {
                    // Unique within the worker without randomness: the caller's token, the
                    // time and a counter.
                    let mut h = Sha256::new();
                    h.update(token.as_bytes());
                    h.update(now.to_le_bytes());
                    h.update(self.memo.signed.to_le_bytes());
                    jti.copy_from_slice(&h.finalize()[..16]);
                }
                let minted = upstream::mint(backend, sign, claims, caller_exp_s, now, &jti);
                self.note(UpstreamEvent::Signed);
                let until = minted.reuse_until_ms;
                let answer = Exchanged::Token {
                    token: minted.token.clone(),
                    until_ms: until,
                };
                self.memo.put(rule, token, answer, until, now);
                minted.token
            }
        };
        if let Verdict::Allow {
            headers,
            authorization,
            ..
        } = &mut verdict
        {
            match &sign.placement {
                Placement::Header(name) => headers.push(name.clone(), signed),
                Placement::Authorization => *authorization = Upstream::Bearer(bearer(&signed)),
            }
        }
        verdict
    }

    /// The live exchange answer for `key`, if cached, and until when.
    fn exchanged(&self, key: &[u8; 32], now: u64) -> Option<(Exchanged, u64)> {
        let value = self.exchanges.get(key)?;
        upstream::decode(key, &value, now)
    }

    /// The verdict once the exchange answered (`None`: it did not): the exchanged token as
    /// the upstream's `Authorization`, a 403 for a refusal, a 503 for no answer.
    fn with_exchanged(&self, mut verdict: Verdict, answer: Option<&Exchanged>) -> Verdict {
        match answer {
            Some(Exchanged::Token { token, .. }) => {
                if let Verdict::Allow { authorization, .. } = &mut verdict {
                    *authorization = Upstream::Bearer(bearer(token));
                }
                verdict
            }
            Some(Exchanged::Refused(_)) => refuse(verdict, Denial::ExchangeRefused),
            None => refuse(verdict, Denial::ExchangeUnavailable),
        }
    }

    /// Arranges for the exchange of `subject` under `rule` at issuer `at`: joins a call in
    /// this worker or another one, or queues a new call. Returns the waiting request's
    /// deadline.
    fn start_exchange(
        &mut self,
        turn: &Turn,
        rule: usize,
        at: usize,
        key: [u8; 32],
        subject: String,
        now: u64,
    ) -> u64 {
        let timeout = self
            .cfg
            .issuers
            .get(at)
            .and_then(|i| i.token_exchange.as_ref())
            .map_or(0, |c| c.timeout_ms);
        let deadline = now.saturating_add(timeout + DEADLINE_MARGIN_MS);
        let job_key = (key, self.owner(turn));
        let has_job = self.exchange_jobs.contains_key(&job_key);
        let Some(lease) = self.lease_for_job(has_job, &self.exchanges, &key, now, deadline) else {
            self.note(UpstreamEvent::ExchangeCoalesced);
            return deadline;
        };
        let job = Job {
            rule,
            at,
            subject,
            sent: false,
            lease,
        };
        self.exchange_jobs.insert(job_key, job);
        deadline
    }

    /// Sends the queued exchanges of the current owner (the root context; with per-request
    /// callouts the current request, one callout at a time).
    pub(super) fn send_exchanges(&mut self, turn: &mut Turn, now: u64) {
        let owner = self.owner(turn);
        let queued = super::queued_jobs(&self.exchange_jobs, owner, |job| job.sent);
        for key in queued {
            if self.mode.one_callout_per_request() && self.busy(owner) {
                return;
            }
            let Some(job) = self.exchange_jobs.get_mut(&key) else {
                continue;
            };
            let rule = match self.cfg.upstream_rules.get(job.rule) {
                Some(UpstreamRule::Exchange(rule)) => rule,
                _ => {
                    self.finish_exchange(turn, key, None, now);
                    continue;
                }
            };
            let at = self.cfg.issuers.get(job.at);
            let Some((issuer, client)) = at.and_then(|i| Some((i, i.token_exchange.as_ref()?)))
            else {
                self.finish_exchange(turn, key, None, now);
                continue;
            };
            match self
                .host
                .dispatch(&upstream::request(client, rule, &job.subject))
            {
                Some(token) => {
                    job.sent = true;
                    let callout = Callout::Exchange { key: key.0 };
                    self.inflight.insert(token, InFlight { callout, owner });
                    self.note(UpstreamEvent::ExchangeCall);
                }
                None => {
                    log::warn!(
                        "tollgate: issuer {}: the host refused the token exchange call through upstream {:?} (is it defined: an Envoy cluster, or host:port on Kong and APISIX?)",
                        issuer.name,
                        client.upstream
                    );
                    self.finish_exchange(turn, key, None, now);
                }
            }
        }
    }

    /// A token endpoint's answer came back.
    pub(super) fn on_exchange_response(
        &mut self,
        turn: &mut Turn,
        key: JobKey,
        response: Option<HttpResponse>,
        now: u64,
    ) {
        let Some(job) = self.exchange_jobs.get(&key) else {
            return;
        };
        let Some(UpstreamRule::Exchange(rule)) = self.cfg.upstream_rules.get(job.rule) else {
            return;
        };
        let name = self
            .cfg
            .issuers
            .get(job.at)
            .map_or("-", |i| i.name.as_str());
        let answer = match upstream::read(response.as_ref(), rule, now) {
            Ok(answer) => {
                if let Exchanged::Refused(code) = &answer {
                    log::debug!("tollgate: issuer {name}: token exchange refused ({code})");
                    self.note(UpstreamEvent::ExchangeRefused);
                }
                Some(answer)
            }
            Err(e) => {
                log::warn!("tollgate: issuer {name}: token exchange failed: {e}");
                None
            }
        };
        self.finish_exchange(turn, key, answer, now);
    }

    /// Ends a job: caches the answer (if any) for every worker, frees the lease, and carries
    /// out this worker's waiting requests with it (none: 503) — with per-request callouts only
    /// the job's own request.
    pub(super) fn finish_exchange(
        &mut self,
        turn: &mut Turn,
        job_key: JobKey,
        answer: Option<Exchanged>,
        now: u64,
    ) {
        let Some(job) = self.exchange_jobs.remove(&job_key) else {
            return;
        };
        let (key, owner) = job_key;
        let until = match &answer {
            Some(Exchanged::Token { until_ms, .. }) => *until_ms,
            Some(Exchanged::Refused(_)) => now.saturating_add(upstream::REFUSAL_TTL_MS),
            None => {
                self.note(UpstreamEvent::ExchangeError);
                0
            }
        };
        if let Some(a) = answer.as_ref().filter(|_| until > now) {
            self.exchanges.put(&key, &upstream::encode(&key, a, until));
            self.memo.put(job.rule, &job.subject, a.clone(), until, now);
        }
        if job.lease == Lease::Taken {
            self.exchanges.release_lease(&key);
        }
        let own_context = self.mode.resumes_in_own_context();
        let answered = self.take_answered(
            owner,
            |wait| matches!(wait, WaitFor::Exchange { key: k } if k == key),
        );
        for w in answered {
            self.resume_exchanged(turn, w, now, Some(answer.as_ref()));
        }
        if !own_context {
            self.host.set_effective_context(self.root_id);
        }
    }

    /// Whether a request waiting for the exchange of `key` need wait no longer: this worker
    /// has no call for it, and the answer is cached or nobody holds the lease.
    pub(super) fn exchange_over(&self, key: &[u8; 32], now: u64) -> bool {
        !self.exchange_jobs.contains_key(&(*key, self.root_id))
            && (self.exchanged(key, now).is_some() || !self.exchanges.lease_held(key, now))
    }

    /// Carries out a request that waited for an exchange. `answer`: `Some` with the outcome
    /// of the call it waited for; `None` to look in the cache (a deadline, another worker's
    /// call).
    pub(super) fn resume_exchanged(
        &mut self,
        turn: &mut Turn,
        w: Waiter,
        now: u64,
        answer: Option<Option<&Exchanged>>,
    ) {
        let own_context = self.mode.resumes_in_own_context();
        if !own_context && !self.host.set_effective_context(w.context_id) {
            return; // the request is gone
        }
        let (WaitFor::Exchange { key }, Some(held)) = (w.wait, w.held) else {
            return;
        };
        let cached;
        let answer = match answer {
            Some(a) => a,
            None => {
                cached = self.exchanged(&key, now).map(|(answer, _)| answer);
                if cached.is_none() {
                    self.note(UpstreamEvent::ExchangeError);
                }
                cached.as_ref()
            }
        };
        let verdict = self.with_exchanged(*held, answer);
        if self.apply(turn, verdict, false, now) == Flow::Continue {
            self.resumed.insert(w.context_id);
            if own_context {
                turn.allowed = true;
            } else {
                self.host.resume_request();
            }
        }
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The verdict turned into a refusal (keeping its issuer, for the counters).
fn refuse(verdict: Verdict, denial: Denial) -> Verdict {
    let issuer = match &verdict {
        Verdict::Allow { issuer, .. } | Verdict::Deny { issuer, .. } => *issuer,
    };
    Verdict::Deny {
        denial,
        issuer,
        challenge: Challenge::BEARER,
    }
}
