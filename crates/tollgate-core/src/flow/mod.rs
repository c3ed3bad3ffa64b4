//! The request flow: per-VM (per Envoy worker) state shared by the root context and its HTTP
//! contexts, and the steps both use: decide a request, carry a decision out, pause requests
//! and wake them. Host-free: every host call goes through a [`Host`], and every callback
//! passes the clock reading (`now`, ms) in.
//!
//! A request pauses for one of three things: its issuer's keys (`keys`: the background
//! refresh job), an introspection answer (`introspection`: single-flight callouts), or
//! another worker's verification of the same JWT (the claim in the shared token cache, see
//! [`SharedTokenCache`]). It is decided again when the thing arrives, fails, or its deadline
//! passes: after keys or an answer without waiting a second time, after a peer's verification
//! at most once more for keys or an answer.
//!
//! **Callout modes** ([`CalloutMode`]). Envoy and Kong give every worker a tick and run
//! callouts apart from requests: the root context makes them all, and a paused request is
//! resumed from any context ([`CalloutMode::Background`]). APISIX has no tick, makes a callout
//! only inside the request that dispatched it (after that request's callback returns),
//! delivers the answer to it, and lets a request that paused with no callout of its own
//! through to the upstream. There ([`CalloutMode::PerRequest`]) a request that must wait makes
//! its own callouts — the key fetch or introspection it needs, even if another request's is
//! under way — and is decided again, in its own context, when its last callout has answered.
//! A request makes one callout at a time, none after a local reply; refresh jobs that fall due
//! start from the next request that is let through; nothing waits for a peer.
//! `"callouts": "per_request"` in the configuration selects this on any host.
//!
//! **Nothing continues before the decision** ([`Stage`]): a request paused by its headers
//! callback holds its body and trailers until it is allowed and resumed.
//!
//! - [`host`]: the [`Host`] trait and the [`Metric`] events
//! - [`shared`]: shared-data records (fetch state, key sets, token cache slots, leases)
//! - [`store`]: shared data kept in the VM (hosts without it, and the tests' host)
//! - [`replay`]: the DPoP replay store (proofs already used), in shared data
//! - `keys`, `introspection`: the two kinds of callout
//! - `mode`: the callout modes, and the turn of one callback

mod authorize;
mod grants;
pub mod host;
mod introspection;
mod keys;
mod mode;
pub mod replay;
pub mod shared;
pub mod store;
#[cfg(test)]
pub(crate) mod testhost;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use host::{AuthzEvent, Host, IntrospectionEvent, IntrospectionFailure, Metric, UpstreamEvent};
pub use mode::CalloutMode;
use mode::Turn;
pub use shared::{IssuerKeys, Lease, SharedTokenCache};
pub use store::{CasMismatch, LocalStore};

use crate::authn::{self, Deciding, Decision, MayWait, Request, Upstream, Verdict, Wait};
use crate::cache::{CacheKey, Cached};
use crate::config::{FilterConfig, KeySource};
use crate::jwks::{Held, KeyRing};
use crate::outcome::{self, Challenge, Denial};
use crate::policy::{Policy, RequestFacts};
use crate::refresh::Step;

/// Tick period while nothing waits: how quickly refresh deadlines are noticed.
pub const IDLE_TICK: Duration = Duration::from_millis(200);
/// Tick period while requests wait for something another worker may be fetching.
pub const WAITING_TICK: Duration = Duration::from_millis(10);
/// Asked for when a request starts waiting: run the tick (and start the call) right away. Also
/// the period while a request waits for another worker's verification (a fraction of a ms to a
/// few ms of work), so that it resumes about as soon as the entry lands.
pub const NOW_TICK: Duration = Duration::from_millis(1);
/// Backstop for a request waiting on another worker's verification: the claim lapses after
/// [`crate::cache::CLAIM_MS`], and the slot is checked on every tick, so this is never reached
/// unless ticks stall.
pub const PEER_WAIT_MS: u64 = 2 * crate::cache::CLAIM_MS;

/// Why a DPoP proof the replay store has seen is refused.
const REPLAYED: &str = "the DPoP proof was used before";

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
    /// The headers routes name as `issuer_header` or `client_id_header`: one entry per
    /// occurrence (a repeated header is seen as repeated).
    pub headers: Vec<(String, String)>,
    /// `:scheme`.
    pub scheme: String,
    /// Values of the `DPoP` headers.
    pub dpop: Vec<String>,
    /// The client certificate's `x5t#S256`, from the configured source.
    pub cert_x5t: Option<String>,
}

impl OwnedFacts {
    /// The facts, and the `Authorization` and `DPoP` values, as [`authn::Request`] takes them.
    fn view(&self) -> (RequestFacts<'_>, Vec<&str>, Vec<&str>) {
        (
            RequestFacts {
                method: &self.method,
                path: &self.path,
                authority: &self.authority,
                route_name: self.route_name.as_deref(),
                headers: &self.headers,
            },
            self.authorization.iter().map(String::as_str).collect(),
            self.dpop.iter().map(String::as_str).collect(),
        )
    }

    fn sender<'a>(&'a self, dpop: &'a [&'a str]) -> authn::Sender<'a> {
        authn::Sender {
            scheme: &self.scheme,
            dpop,
            cert_x5t: self.cert_x5t.as_deref(),
        }
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
    /// The policy decision on this question ([`crate::authz::Query::key`]) of this rule.
    Decision { key: [u8; 32], rule: usize },
    /// The token exchange for this token and rule ([`crate::upstream::key`]).
    Exchange { key: [u8; 32] },
}

#[derive(Debug)]
struct Waiter {
    context_id: u32,
    wait: WaitFor,
    since: u64,
    deadline: u64,
    facts: OwnedFacts,
    /// A request waiting for its policy decision or its token exchange: its verdict, applied
    /// once the answer is in.
    held: Option<Box<Verdict>>,
}

/// What the HTTP context returns to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Where a request stands for the callbacks after its headers. `G` is the adapter's state of
/// a call to the OAuth endpoint gateway, which has its own body rules.
#[derive(Debug)]
pub enum Stage<G> {
    /// Let through (allowed, or no decision of Tollgate's applies): later callbacks continue.
    Open,
    /// Paused by the headers callback: waiting for its decision, or answered locally. Its body
    /// and trailers stop until the worker resumes it.
    Held,
    /// A call to the OAuth endpoint gateway.
    Gateway(G),
}

impl<G> Stage<G> {
    /// The stage a request's headers callback leaves it in, from what that callback returns.
    pub fn after_headers(flow: Flow) -> Stage<G> {
        match flow {
            Flow::Continue => Stage::Open,
            Flow::Pause => Stage::Held,
        }
    }
}

/// An outstanding callout of this worker.
#[derive(Debug, Clone, Copy)]
enum Callout {
    Fetch { issuer: usize, step: Step },
    Introspection { key: CacheKey, started: u64 },
    Decision { key: [u8; 32], started: u64 },
    Exchange { key: [u8; 32] },
}

/// A callout in flight and the context it answers to (the root context, or with per-request
/// callouts the request that made it).
#[derive(Debug, Clone, Copy)]
struct InFlight {
    callout: Callout,
    owner: u32,
}

/// An introspection job is per token, and with per-request callouts also per request.
type JobKey = (CacheKey, u32);

/// The jobs of `owner` among `jobs` (PDP calls, token exchanges: keyed by question or token,
/// and owner) that are queued, not yet sent.
fn queued_jobs<J>(
    jobs: &HashMap<([u8; 32], u32), J>,
    owner: u32,
    sent: impl Fn(&J) -> bool,
) -> Vec<([u8; 32], u32)> {
    jobs.iter()
        .filter(|(&(_, o), job)| o == owner && !sent(job))
        .map(|(key, _)| *key)
        .collect()
}

/// The flow of one VM: see the module docs.
pub struct Worker<H: Host + Clone> {
    pub cfg: FilterConfig,
    host: H,
    root_id: u32,
    mode: CalloutMode,
    ring: KeyRing,
    /// Shared-data records of issuers with a refresh job (`None`: nothing to fetch).
    records: Vec<Option<IssuerKeys>>,
    cache: SharedTokenCache<H>,
    waiters: Vec<Waiter>,
    /// Callouts in flight, by callout token.
    inflight: HashMap<u32, InFlight>,
    /// Introspections this worker makes (queued or in flight), by token cache key and owner.
    jobs: HashMap<JobKey, introspection::Job>,
    /// PDP calls this worker makes (queued or in flight), by question and owner.
    pdp_jobs: HashMap<authorize::JobKey, authorize::Job>,
    /// The shared policy-decision cache.
    decisions: shared::Slots<H>,
    /// The shared exchanged-token cache (`upstream_token.exchange`).
    exchanges: shared::Slots<H>,
    /// Token exchanges this worker makes (queued or in flight), by cache key and owner.
    exchange_jobs: HashMap<upstream::JobKey, upstream::Job>,
    /// Upstream tokens this worker signed or received, by rule and caller token.
    memo: upstream::Memo,
    /// Per-request callouts: key fetches (request, issuer) waiting for the request's callout
    /// in flight to answer.
    deferred: Vec<(u32, usize)>,
    /// Whether any route matches on the host's route name (read only if so).
    pub needs_route_name: bool,
    /// Whether the client certificate is read ([`FilterConfig::reads_client_certificate`]).
    pub reads_client_certificate: bool,
    /// Request headers routes read (`issuer_header`, `client_id_header`), gathered into
    /// [`OwnedFacts::headers`], every occurrence.
    pub hint_headers: Vec<String>,
    /// Headers only Tollgate may set (identity headers, the gateway's route header): inbound
    /// copies are removed from every request ([`Worker::is_guarded`]). (Not the trusted
    /// proxy's client-certificate header: every request through that proxy carries it; what
    /// happens to it is decided when issue 15 reads it.)
    guarded_headers: Vec<String>,
    /// Requests that were paused for their decision, then allowed and resumed, whose body or
    /// trailer callbacks have not come since (see [`Worker::later_callback`]).
    resumed: HashSet<u32>,
    tick: Duration,
    /// The key of the DPoP server nonces, shared by every worker (only when an issuer
    /// requires nonces; `None` if the host could give no randomness or shared data).
    nonce_secret: Option<Vec<u8>>,
}

impl<H: Host + Clone> Worker<H> {
    /// The flow for a new configuration, on the VM whose root context is `root_id`.
    pub fn new(cfg: FilterConfig, root_id: u32, mode: CalloutMode, host: H) -> Worker<H> {
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
                rec.ensure_state(&host);
                rec
            });
            records.push(record);
        }
        let needs_route_name = cfg.routes.iter().any(|r| r.matcher.route_name.is_some());
        let reads_client_certificate = cfg.reads_client_certificate();
        let mut hint_headers: Vec<String> = cfg
            .routes
            .iter()
            .map(|r| &r.policy)
            .chain(cfg.default_policy.as_ref())
            .flat_map(|p| match p {
                Policy::Require(r) => [r.issuer_header.clone(), r.client.header.clone()],
                Policy::Anonymous => [None, None],
            })
            .flatten()
            .collect();
        // Headers a policy decision's resource comes from.
        for rule in &cfg.rules {
            let r = &rule.resource;
            let sources = std::iter::once(&r.id).chain(r.properties.iter().map(|(_, s)| s));
            hint_headers.extend(sources.filter_map(|s| match s {
                crate::authz::Source::Header(h) => Some(h.clone()),
                _ => None,
            }));
        }
        if let Some(gw) = &cfg.gateway {
            hint_headers.extend(gw.selector_header.clone());
            hint_headers.push("content-type".to_owned());
        }
        hint_headers.sort();
        hint_headers.dedup();
        let guarded_headers: Vec<String> = cfg
            .identity
            .owned_headers()
            .chain(crate::upstream::headers(&cfg.upstream_rules))
            .map(str::to_owned)
            .chain(cfg.gateway.as_ref().map(|g| g.route_header.clone()))
            .collect();
        let mut cache = SharedTokenCache::new(host.clone(), cfg.cache_slots);
        if cfg.gateway.is_none() {
            cache = cache.without_revocation();
        }
        let decisions = shared::Slots::new(host.clone(), cfg.decision_slots, "dc", "dl");
        let exchanges = shared::Slots::new(host.clone(), cfg.exchange_slots, "xc", "xl");
        let nonce_secret = cfg
            .issuers
            .iter()
            .any(|i| i.dpop.require_nonce)
            .then(|| replay::nonce_secret(&host))
            .flatten();
        if mode.ticks() {
            host.set_tick_period(NOW_TICK);
        }
        Worker {
            cfg,
            host,
            root_id,
            mode,
            ring,
            records,
            cache,
            waiters: Vec::new(),
            inflight: HashMap::new(),
            jobs: HashMap::new(),
            pdp_jobs: HashMap::new(),
            decisions,
            exchanges,
            exchange_jobs: HashMap::new(),
            memo: upstream::Memo::default(),
            deferred: Vec::new(),
            needs_route_name,
            reads_client_certificate,
            hint_headers,
            guarded_headers,
            resumed: HashSet::new(),
            tick: NOW_TICK,
            nonce_secret,
        }
    }

    /// Whether the inbound request header `name` is a copy of one only Tollgate may set, in
    /// any spelling a backend reads as the same ([`crate::config::same_header_name`]).
    pub fn is_guarded(&self, name: &str) -> bool {
        self.guarded_headers
            .iter()
            .any(|h| crate::config::same_header_name(h, name))
    }

    /// A body or trailers callback of the request `context_id`, in `stage`: `Continue` if it
    /// is open, or held and allowed and resumed since its headers (it is then open); `Pause`
    /// while held (still waiting, or refused). `None` for a gateway call (its own rules).
    pub fn later_callback<G>(&mut self, context_id: u32, stage: &mut Stage<G>) -> Option<Flow> {
        match stage {
            Stage::Open => Some(Flow::Continue),
            Stage::Held if self.resumed.remove(&context_id) => {
                *stage = Stage::Open;
                Some(Flow::Continue)
            }
            Stage::Held => Some(Flow::Pause),
            Stage::Gateway(_) => None,
        }
    }

    /// Decides `facts` now: may it wait, and for what ([`authn::authenticate`]).
    fn decide(&mut self, facts: &OwnedFacts, now: u64, may_wait: MayWait) -> Decision {
        let (req, authorization, dpop) = facts.view();
        let request = Request {
            facts: &req,
            authorization: &authorization,
            sender: facts.sender(&dpop),
        };
        authn::authenticate(&mut self.deciding(now), &request, may_wait, None)
    }

    /// Decides `facts` for good ([`authn::authenticate_now`]), with an introspection answer
    /// that just arrived (`fresh`).
    fn verdict(&mut self, facts: &OwnedFacts, now: u64, fresh: Option<&Cached>) -> Verdict {
        let (req, authorization, dpop) = facts.view();
        let request = Request {
            facts: &req,
            authorization: &authorization,
            sender: facts.sender(&dpop),
        };
        authn::authenticate_now(&mut self.deciding(now), &request, fresh)
    }

    fn deciding(&mut self, now_ms: u64) -> Deciding<'_> {
        Deciding {
            cfg: &self.cfg,
            ring: &self.ring,
            cache: &mut self.cache,
            now_ms,
            nonce_secret: self.nonce_secret.as_deref(),
        }
    }

    /// Decides a new request (not a gateway call); pauses it if it must wait for keys, an
    /// introspection answer or another worker's verification of its token. A request let
    /// through also starts the refresh jobs due ([`Worker::continuing`]).
    pub fn on_request(&mut self, context_id: u32, facts: OwnedFacts, now: u64) -> Flow {
        let mut turn = Turn::of(context_id);
        // A protected resource's metadata (RFC 9728) is Tollgate's own answer: it never reaches
        // the upstream.
        let resources = &self.cfg.resources;
        let (method, path, authority) = (&facts.method, &facts.path, &facts.authority);
        let own = crate::resource::answer(resources, method, path, authority)
            .or_else(|| crate::upstream::jwks_answer(self.cfg.backend.as_ref(), method, path));
        if let Some(reply) = own {
            if !self
                .host
                .send_response(reply.status, &reply.headers, &reply.body)
            {
                log::warn!("tollgate: the host refused the local reply");
            }
            return Flow::Pause;
        }
        let may_wait = self.mode.new_request_may_wait();
        let first = self.start(&mut turn, context_id, facts, now, may_wait);
        let flow = if self.mode.resumes_in_own_context() {
            // This request's introspection: now, from this request.
            self.send_introspections(&mut turn, now);
            self.send_decisions(&mut turn, now);
            self.send_exchanges(&mut turn, now);
            match first {
                Flow::Continue => Flow::Continue,
                // Still waiting for its own callouts, answered with a local reply, or — if its
                // callouts could not be made — decided now.
                Flow::Pause => self.settle(&mut turn, now),
            }
        } else {
            first
        };
        if flow == Flow::Continue && !turn.answered {
            self.run_refresh_on_request(&mut turn, now);
        }
        flow
    }

    /// A request (`context_id`, a gateway call) goes on to the upstream: with per-request
    /// callouts it starts the refresh jobs that are due (the tick does that elsewhere), so keys
    /// and the metadata the gateway serves stay fresh. Only such a request: APISIX drops a
    /// local reply when a callout is pending.
    pub fn continuing(&mut self, context_id: u32, now: u64) {
        self.run_refresh_on_request(&mut Turn::of(context_id), now);
    }

    fn run_refresh_on_request(&mut self, turn: &mut Turn, now: u64) {
        if self.mode.refreshes_on_requests() {
            self.run_refresh_jobs(turn, now);
        }
    }

    /// Whether `context_id` has a callout in flight. With per-request callouts a request makes
    /// one at a time; the next one waits in `Worker::deferred`.
    fn busy(&self, context_id: u32) -> bool {
        self.inflight.values().any(|c| c.owner == context_id)
    }

    /// Per-request callouts, once the current request's callout has answered: its next one —
    /// its queued introspection, else a deferred key fetch. Never after a local reply.
    fn next_callout(&mut self, turn: &mut Turn, now: u64) {
        let me = turn.context;
        if turn.answered {
            self.deferred.retain(|(c, _)| *c != me);
            return;
        }
        self.send_introspections(turn, now);
        self.send_decisions(turn, now);
        self.send_exchanges(turn, now);
        while !self.busy(me) {
            let Some(at) = self.deferred.iter().position(|(c, _)| *c == me) else {
                break;
            };
            let (_, idx) = self.deferred.remove(at);
            self.resume_fetch(turn, idx, now);
        }
    }

    /// The owner a callout dispatched now answers to, and of an introspection job made now.
    fn owner(&self, turn: &Turn) -> u32 {
        self.mode.owner(self.root_id, turn)
    }

    /// Per-request callouts: once the current request has no callout in flight, decides it if
    /// it still waits (a queued introspection whose endpoint never became known fails).
    /// `Continue` if it was allowed, now or by an answer that just arrived; `Pause` while it
    /// waits, and after a local reply.
    fn settle(&mut self, turn: &mut Turn, now: u64) -> Flow {
        let context_id = turn.context;
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
            self.finish_job(turn, job, None, now);
        }
        let stuck: Vec<authorize::JobKey> = self
            .pdp_jobs
            .keys()
            .filter(|(_, owner)| *owner == context_id)
            .copied()
            .collect();
        for job in stuck {
            self.finish_decision(turn, job, None, now);
        }
        let stuck: Vec<upstream::JobKey> = self
            .exchange_jobs
            .keys()
            .filter(|(_, owner)| *owner == context_id)
            .copied()
            .collect();
        for job in stuck {
            self.finish_exchange(turn, job, None, now);
        }
        let (mine, rest): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.context_id == context_id);
        self.waiters = rest;
        for w in mine {
            if let WaitFor::Keys { issuer, .. } = w.wait {
                self.sync_keys(issuer);
            }
            self.resume(turn, w, now, None);
        }
        // Decided just now (after its keys or its introspection), the request may have to ask
        // its route's PDP: that call goes out now, so the request never waits without one.
        if !turn.answered && !turn.allowed {
            self.send_decisions(turn, now);
            self.send_exchanges(turn, now);
        }
        if std::mem::take(&mut turn.allowed) {
            Flow::Continue
        } else {
            Flow::Pause
        }
    }

    /// Decides the request `context_id` (new, or done waiting for a peer) on the effective
    /// HTTP context.
    fn start(
        &mut self,
        turn: &mut Turn,
        context_id: u32,
        facts: OwnedFacts,
        now: u64,
        may_wait: MayWait,
    ) -> Flow {
        let mut decision = self.decide(&facts, now, may_wait);
        if let Decision::Wait(Wait::Keys { issuer, .. }) = decision {
            // Another worker may have fetched already.
            if self.sync_keys(issuer) {
                decision = self.decide(&facts, now, may_wait);
            }
        }
        let wait = match decision {
            Decision::Done(verdict) => {
                return self.conclude(turn, context_id, verdict, facts, false, now)
            }
            Decision::Wait(wait) => wait,
        };
        match wait {
            Wait::Keys {
                issuer,
                unknown_kid,
            } => {
                if self.worth_waiting(issuer, unknown_kid, now)
                    && (!self.mode.request_fetches_its_keys()
                        || self.fetch_for_request(turn, issuer, now))
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
                let verdict = self.verdict(&facts, now, None);
                self.conclude(turn, context_id, verdict, facts, false, now)
            }
            Wait::Introspect {
                issuer,
                key,
                token,
                verified,
            } => {
                let deadline = self.introspect(turn, issuer, key, token, verified, now);
                self.pause(context_id, WaitFor::Answer { key }, now, deadline, facts);
                Flow::Pause
            }
            Wait::Peer { issuer, key } => {
                self.host.record(Metric::VerifyCoalesced { issuer });
                let deadline = now.saturating_add(PEER_WAIT_MS);
                self.pause(context_id, WaitFor::Peer { key }, now, deadline, facts);
                Flow::Pause
            }
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
            held: None,
        });
        if self.mode.ticks() {
            self.set_tick(NOW_TICK);
        }
    }

    /// Carries a verdict out on the current (effective) HTTP context. `fresh`: the verdict
    /// used an introspection answer that just arrived (so a refusal is not a cache hit).
    fn apply(&self, turn: &mut Turn, verdict: Verdict, fresh: bool, now: u64) -> Flow {
        match verdict {
            Verdict::Allow {
                issuer,
                headers,
                cache_hit,
                proof,
                authorization,
                authorize,
                upstream,
            } => {
                // Settled before (`Worker::conclude` and `Worker::proceed` take them out); one
                // still here was never done, so the request is not let through.
                if authorize.is_some() {
                    return self.deny(turn, &Denial::PdpUnavailable, issuer, Challenge::BEARER);
                }
                if upstream.is_some() {
                    let denial = Denial::ExchangeUnavailable;
                    return self.deny(turn, &denial, issuer, Challenge::BEARER);
                }
                if let Err(flow) = self.record_proof(turn, proof, issuer, now) {
                    return flow;
                }
                for (name, value) in headers.iter() {
                    self.host.set_request_header(name, value);
                }
                match authorization {
                    Upstream::Keep => {}
                    Upstream::Drop => {
                        self.host.remove_request_header("authorization");
                        self.host.remove_request_header("dpop");
                    }
                    Upstream::Bearer(value) => {
                        self.host.set_request_header("authorization", &value);
                        self.host.remove_request_header("dpop");
                    }
                }
                if let Some(issuer) = issuer {
                    self.host.record(Metric::Allowed { issuer, cache_hit });
                }
                Flow::Continue
            }
            Verdict::Deny {
                denial,
                issuer,
                challenge,
            } => {
                if let (Denial::InactiveToken, Some(i), false) = (&denial, issuer, fresh) {
                    self.host.record(Metric::Introspection {
                        issuer: i,
                        event: IntrospectionEvent::NegativeCacheHit,
                    });
                }
                self.deny(turn, &denial, issuer, challenge)
            }
        }
    }

    /// Records a DPoP proof in the replay store. Only a proof the store recorded now goes
    /// on: a second use anywhere in the process, or one the store cannot record, is refused
    /// (`Err`: the request was answered).
    fn record_proof(
        &self,
        turn: &mut Turn,
        proof: Option<Box<crate::authn::ProofUse>>,
        issuer: Option<usize>,
        now: u64,
    ) -> Result<(), Flow> {
        // `bench-skip-replay-store`: bench/run's measurement build only (the replay store's
        // cost per request, against the same row with it); never shipped.
        #[cfg(feature = "bench-skip-replay-store")]
        let proof: Option<Box<crate::authn::ProofUse>> = proof.and(None);
        let Some(proof) = proof else {
            return Ok(());
        };
        let id = replay::proof_id(&proof.jkt, &proof.jti);
        let refusal = match replay::record(&self.host, replay::BUCKETS, &id, proof.until_ms, now) {
            replay::Seen::Fresh => return Ok(()),
            replay::Seen::Replay => Denial::InvalidDpopProof(REPLAYED),
            replay::Seen::Full => Denial::DpopUnavailable,
        };
        Err(self.deny(turn, &refusal, issuer, proof.challenge))
    }

    /// Refuses the request `context_id` (the effective context) before any decision (see the
    /// HTTP context).
    pub fn refuse_request(&self, context_id: u32, denial: &Denial) {
        self.deny(&mut Turn::of(context_id), denial, None, Challenge::BEARER);
    }

    fn deny(
        &self,
        turn: &mut Turn,
        denial: &Denial,
        issuer: Option<usize>,
        challenge: Challenge,
    ) -> Flow {
        self.host.record(Metric::Denied {
            issuer,
            kind: denial.kind(),
        });
        let name = issuer
            .and_then(|i| self.cfg.issuers.get(i))
            .map_or("-", |i| i.name.as_str());
        log::debug!("tollgate: denied ({}), issuer {name}", denial.code());
        if *denial == Denial::ClockUnavailable && !CLOCK_LOGGED.swap(true, Ordering::Relaxed) {
            log::error!("tollgate: neither the host nor WASI tells the time: every request that needs a token is refused (503)");
        }
        let reply = outcome::reply(
            denial,
            &self.cfg.realm,
            challenge,
            self.cfg.resource_metadata(challenge),
        );
        if !self
            .host
            .send_response(reply.status, &reply.headers, &reply.body)
        {
            log::warn!("tollgate: the host refused the local reply");
        }
        turn.answered = true;
        Flow::Pause
    }

    /// The issuer's metadata documents, as far as the gateway holds them.
    pub fn issuer_documents(&self, idx: usize) -> crate::gateway::metadata::Documents {
        let wanted = self
            .cfg
            .issuers
            .get(idx)
            .and_then(|i| i.gateway.as_ref())
            .map_or([false; 2], |g| g.documents.each_ref().map(Option::is_some));
        match self.records.get(idx).and_then(Option::as_ref) {
            Some(rec) => rec.read_documents(&self.host, wanted),
            None => crate::gateway::metadata::Documents {
                ready: wanted == [false; 2],
                ..Default::default()
            },
        }
    }

    /// A gateway call was routed to `issuer`'s `endpoint`.
    pub fn gateway_forwarded(&self, issuer: usize, endpoint: crate::gateway::Endpoint) {
        self.host
            .record(Metric::GatewayForwarded { issuer, endpoint });
    }

    /// A gateway call was answered with an OAuth error.
    pub fn gateway_refused(&self) {
        self.host.record(Metric::GatewayRefused);
    }

    /// Revocation through the gateway, once the server confirmed it: the token (`keys`: its
    /// cache keys, tagged and untagged) leaves the shared cache and every worker's memo (the
    /// revocation epoch moves), so the next API call checks it again — an opaque token (or a
    /// JWT of an issuer with `introspect_jwts`) at its issuer, which then says it is not active.
    pub fn evict(&self, keys: &[CacheKey]) {
        self.host.record(Metric::CacheRevocation);
        for key in keys {
            self.cache.remove(key);
        }
    }

    /// Forgets a request that ended (client gone) while it waited, and with per-request
    /// callouts its callouts (the host cancels them with the request).
    pub fn forget(&mut self, context_id: u32) {
        self.waiters.retain(|w| w.context_id != context_id);
        self.resumed.remove(&context_id);
        if self.mode.callouts_end_with_request() {
            self.inflight.retain(|_, c| c.owner != context_id);
            self.jobs.retain(|(_, owner), _| *owner != context_id);
            self.pdp_jobs.retain(|(_, owner), _| *owner != context_id);
            self.exchange_jobs
                .retain(|(_, owner), _| *owner != context_id);
            self.deferred.retain(|(c, _)| *c != context_id);
        }
    }

    /// The periodic step: refresh jobs, queued introspections, then paused requests.
    pub fn on_tick(&mut self, now: u64) {
        let mut turn = Turn::of(self.root_id);
        self.run_refresh_jobs(&mut turn, now);
        self.send_introspections(&mut turn, now);
        self.send_decisions(&mut turn, now);
        self.send_exchanges(&mut turn, now);
        self.wake(&mut turn, now);
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
            self.host.set_tick_period(period);
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
        let mut turn = Turn::of(context_id);
        match self.inflight.remove(&token) {
            Some(InFlight {
                callout: Callout::Fetch { issuer, step },
                ..
            }) => self.on_fetch_response(&mut turn, issuer, step, response, now),
            Some(InFlight {
                callout: Callout::Introspection { key, started },
                owner,
            }) => self.on_introspection_response(&mut turn, (key, owner), started, response, now),
            Some(InFlight {
                callout: Callout::Decision { key, started },
                owner,
            }) => self.on_decision_response(&mut turn, (key, owner), started, response, now),
            Some(InFlight {
                callout: Callout::Exchange { key },
                owner,
            }) => self.on_exchange_response(&mut turn, (key, owner), response, now),
            None => {}
        }
        if self.mode.resumes_in_own_context() {
            // Discovery may have found the introspection endpoint a queued job waits for.
            self.next_callout(&mut turn, now);
            if self.settle(&mut turn, now) == Flow::Continue {
                self.host.resume_request();
            }
        } else {
            self.wake(&mut turn, now);
        }
    }

    /// Decides again every paused request whose wait is over; resumes the allowed ones.
    fn wake(&mut self, turn: &mut Turn, now: u64) {
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
                                .and_then(|r| r.read_state(&self.host).0.done_at)
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
                    WaitFor::Decision { key, .. } => self.decision_over(&key, now),
                    WaitFor::Exchange { key } => self.exchange_over(&key, now),
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
            self.resume(turn, w, now, None);
        }
        self.host.set_effective_context(self.root_id);
    }

    /// The lease a new PDP call or token exchange for `key` takes (its cache `slots` hold the
    /// leases); `None` when the request joins a call already under way: this worker's own job
    /// (`has_job`) or another worker's (its live lease).
    fn lease_for_job(
        &self,
        has_job: bool,
        slots: &shared::Slots<H>,
        key: &[u8; 32],
        now: u64,
        until: u64,
    ) -> Option<Lease> {
        if has_job {
            return None;
        }
        let lease = if slots.enabled() && self.mode.shares_introspection() {
            slots.take_lease(key, now, until)
        } else {
            Lease::Unavailable
        };
        (lease != Lease::HeldElsewhere).then_some(lease)
    }

    /// Takes out the paused requests a callout of `owner` answers (those whose wait `answers`
    /// matches; with per-request callouts only the owner itself).
    fn take_answered(&mut self, owner: u32, answers: impl Fn(WaitFor) -> bool) -> Vec<Waiter> {
        let own_context = self.mode.resumes_in_own_context();
        let (answered, rest): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| answers(w.wait) && (!own_context || w.context_id == owner));
        self.waiters = rest;
        answered
    }

    /// Decides a paused request again and carries the decision out. After keys or an answer
    /// it may not wait again; after a peer's verification it may still wait for keys or an
    /// answer (not for a peer: if the entry is not there, it verifies the token itself).
    /// With per-request callouts only the current request is ever resumed, and its caller lets
    /// it continue (`Worker::settle`).
    fn resume(&mut self, turn: &mut Turn, w: Waiter, now: u64, fresh: Option<&Cached>) {
        match w.wait {
            WaitFor::Decision { .. } => return self.resume_decided(turn, w, now, None),
            WaitFor::Exchange { .. } => return self.resume_exchanged(turn, w, now, None),
            _ => {}
        }
        let own_context = self.mode.resumes_in_own_context();
        if !own_context && !self.host.set_effective_context(w.context_id) {
            return; // the request is gone
        }
        let context_id = w.context_id;
        let flow = if let WaitFor::Peer { .. } = w.wait {
            self.start(turn, context_id, w.facts, now, MayWait::NotForPeer)
        } else {
            let verdict = self.verdict(&w.facts, now, fresh);
            self.conclude(turn, context_id, verdict, w.facts, fresh.is_some(), now)
        };
        if flow == Flow::Continue {
            self.resumed.insert(context_id);
            if own_context {
                turn.allowed = true;
            } else {
                self.host.resume_request();
            }
        }
    }
}
