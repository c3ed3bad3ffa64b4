//! The per-request decision: route -> bearer token -> cache or issuer keys -> verified claims
//! -> route requirement -> allow with identity, deny, or wait for keys.
//!
//! Host-free: the flow hands in the request ([`Request`]) and what it is decided with
//! ([`Deciding`]: configuration, the worker's keys, a cache, `now`), and carries out the
//! [`Decision`]: a [`Verdict`] now, or a [`Wait`]. The steps: the route's policy, the token,
//! the cache (`look_up`), and on a miss verification or introspection (`on_miss`). The issuer
//! is chosen from the unverified `iss` only to pick whose keys to use; a token is never tried
//! against another issuer's keys.

mod sender;

pub use sender::ProofUse;

use std::rc::Rc;

use crate::binding::Scheme;
use crate::cache::{self, CacheKey, Cached, Claim, TokenCache, Verified};
use crate::config::{FilterConfig, ForwardAuthorization};
use crate::extract::{self, Bearer, Credentials};
use crate::identity;
use crate::issuer;
use crate::jwks::{KeyRing, KeySet, KeysFor};
use crate::jwt::{self, Expectations, JwtError, Peeked};
use crate::key::Alg;
use crate::outcome::{Challenge, Denial};
use crate::policy::{self, Policy, RequestFacts, Requirement};
use crate::token::is_jws;
use crate::upstream::{UpstreamRule, Work};

/// What the adapter must do with the request: carry out a verdict now, or pause it.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Forward or answer now.
    Done(Verdict),
    /// Pause the request and decide it again when the wait is over.
    Wait(Wait),
}

/// A final decision.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Forward. `headers` are the identity headers to add (none for anonymous routes).
    Allow {
        issuer: Option<usize>,
        headers: identity::Headers,
        cache_hit: bool,
        /// A DPoP proof to record in the replay store first: a replay is refused instead.
        proof: Option<Box<ProofUse>>,
        /// What becomes of `Authorization` and `DPoP`.
        authorization: Upstream,
        /// The route's policy decision point must say yes first (the flow asks it, or finds
        /// its decision in the cache).
        authorize: Option<Box<crate::authz::Query>>,
        /// What the upstream receives instead of the caller's token, once the request is
        /// allowed: a token exchange or a backend token to mint (the flow does it).
        upstream: Option<Box<crate::upstream::Work>>,
    },
    Deny {
        denial: Denial,
        /// The issuer the token named, when Tollgate got that far (for per-issuer counters).
        issuer: Option<usize>,
        /// The route's challenges, for the request's scheme.
        challenge: Challenge,
    },
}

/// What the upstream receives as `Authorization` and `DPoP` (`identity.authorization`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upstream {
    /// Both as sent.
    #[default]
    Keep,
    /// Both removed.
    Drop,
    /// `Authorization` set to this value (a `DPoP` token as `Bearer`), `DPoP` removed.
    Bearer(String),
}

impl Verdict {
    /// Forward, with nothing to add (an anonymous route).
    fn open() -> Verdict {
        Verdict::Allow {
            issuer: None,
            headers: identity::Headers::default(),
            cache_hit: false,
            proof: None,
            authorization: Upstream::Keep,
            authorize: None,
            upstream: None,
        }
    }
}

/// What a paused request waits for.
#[derive(Debug, PartialEq)]
pub enum Wait {
    /// The issuer's keys (`unknown_kid`: the token names a key the held set lacks, so an
    /// early refetch is wanted).
    Keys { issuer: usize, unknown_kid: bool },
    /// An answer from `issuer` about `token` (RFC 7662; a gateway-tagged token as the issuer
    /// minted it, untagged): turn it into a cache entry with [`crate::introspect::entry`]
    /// (passing `verified`, the JWT's own verified claims when the token is a JWT) and decide
    /// again with that entry as `fresh`.
    Introspect {
        issuer: usize,
        key: CacheKey,
        token: String,
        verified: Option<Verified>,
    },
    /// Another worker is verifying this very token (its claim on the token's cache slot lapses
    /// within [`cache::CLAIM_MS`]). Decide again with [`MayWait::NotForPeer`] once the slot
    /// holds the entry or no longer holds the claim.
    Peer { issuer: usize, key: CacheKey },
}

impl Wait {
    /// The refusal of a request that may not wait (any more) for this.
    fn unavailable(&self) -> Verdict {
        let (denial, issuer) = match self {
            Wait::Keys { issuer, .. } | Wait::Peer { issuer, .. } => {
                (Denial::KeysUnavailable, *issuer)
            }
            Wait::Introspect { issuer, .. } => (Denial::IntrospectionUnavailable, *issuer),
        };
        Verdict::Deny {
            denial,
            issuer: Some(issuer),
            challenge: Challenge::BEARER,
        }
    }
}

/// Whether the request may still be paused. A request that already waited for keys or an
/// introspection is decided with what is there (no keys or no answer -> 503, unknown key ->
/// 401); one that waited for another worker's verification may still wait for keys or an
/// introspection, but not for a peer again (it verifies the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MayWait {
    Yes,
    NotForPeer,
    No,
}

/// The clock reading that means "no clock": neither the host nor WASI could tell the time.
pub const NO_CLOCK: u64 = 0;

/// The request being decided: its facts, the values of its `Authorization` headers, and what
/// proves a token's binding.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    pub facts: &'r RequestFacts<'r>,
    pub authorization: &'r [&'r str],
    pub sender: Sender<'r>,
}

/// What a request offers to prove a token's binding (issue 15).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender<'r> {
    /// `:scheme` (`http`, `https`): with `:authority` and `:path`, the URI a DPoP proof's
    /// `htu` must name (unless an external origin is configured).
    pub scheme: &'r str,
    /// The values of the request's `DPoP` headers.
    pub dpop: &'r [&'r str],
    /// base64url SHA-256 of the client certificate's DER, from the configured source.
    pub cert_x5t: Option<&'r str>,
}

/// What a decision reads besides the request: the configuration, this worker's keys, the
/// token cache, the clock (`now_ms`, read once by the adapter; [`NO_CLOCK`]: none, and
/// every request that needs a token is then refused with 503, anonymous routes work), and
/// the key of the DPoP server nonces (`None`: none could be had; issuers that require a nonce
/// then refuse DPoP with 503).
pub struct Deciding<'d> {
    pub cfg: &'d FilterConfig,
    pub ring: &'d KeyRing,
    pub cache: &'d mut dyn TokenCache,
    pub now_ms: u64,
    pub nonce_secret: Option<&'d [u8]>,
}

fn deny(denial: Denial, issuer: Option<usize>) -> Decision {
    Decision::Done(Verdict::Deny {
        denial,
        issuer,
        challenge: Challenge::BEARER,
    })
}

/// Decides one request. `fresh` is an introspection answer for this request's token that
/// just arrived (used instead of the cache). With [`MayWait::No`] the decision is always
/// [`Decision::Done`] (see [`authenticate_now`]).
pub fn authenticate(
    d: &mut Deciding<'_>,
    req: &Request<'_>,
    may_wait: MayWait,
    fresh: Option<&Cached>,
) -> Decision {
    let cfg = d.cfg;
    let requirement = match policy::select(&cfg.routes, cfg.default_policy.as_ref(), req.facts) {
        Err(denial) => return deny(denial, None),
        Ok(None) => return deny(Denial::NoRoute, None),
        Ok(Some(Policy::Anonymous)) => return Decision::Done(Verdict::open()),
        Ok(Some(Policy::Require(r))) => r,
    };
    let mut scheme = Scheme::Bearer;
    let mut decision = on_route(d, req, requirement, &mut scheme, may_wait, fresh);
    // Every refusal on this route carries its challenges, the error in the one of the scheme
    // the request used.
    if let Decision::Done(Verdict::Deny { challenge, .. }) = &mut decision {
        *challenge = requirement.challenge.used(scheme);
    }
    decision
}

/// [`authenticate`] once the route is known: the token (its `scheme` is written as soon as it
/// is known), then the cache or the issuer.
fn on_route(
    d: &mut Deciding<'_>,
    req: &Request<'_>,
    requirement: &Requirement,
    scheme: &mut Scheme,
    may_wait: MayWait,
    fresh: Option<&Cached>,
) -> Decision {
    let cfg = d.cfg;
    if d.now_ms == NO_CLOCK {
        // Without a clock every `exp` would look far away and every cache entry alive.
        return deny(Denial::ClockUnavailable, None);
    }
    // The worker's memo is asked first, while the token is extracted: a token it remembers
    // passed the b64token check when it was remembered, so that pass over the whole token is
    // not made again on every warm request.
    let ask_memo = cfg.cache_slots > 0 && fresh.is_none();
    let mut remembered: Option<Cached> = None;
    let known = |token: &str| {
        remembered = if ask_memo {
            d.cache.get_local(token, d.now_ms)
        } else {
            None
        };
        remembered.is_some()
    };
    // The DPoP scheme is read only where some issuer of the route takes DPoP.
    let credentials = if requirement.challenge.dpop.is_some() {
        extract::credentials_known(req.authorization, known)
    } else {
        match extract::bearer_known(req.authorization, known) {
            Bearer::Missing => Credentials::Missing,
            Bearer::Malformed(why) => Credentials::Malformed(why),
            Bearer::Token(token) => Credentials::Token {
                scheme: Scheme::Bearer,
                token,
            },
        }
    };
    let how = match credentials {
        Credentials::Missing => return deny(Denial::MissingToken, None),
        Credentials::Malformed(why) => return deny(Denial::InvalidRequest(why), None),
        Credentials::Token { scheme, token } => sender::Presenting { token, scheme },
    };
    *scheme = how.scheme;
    let token = how.token;
    // The memo's answer is the extracted token's: any other token with credentials would have
    // made the request malformed.
    let seen = look_up(d, token, fresh, remembered);
    let verified = match seen.known {
        Some(Cached::Invalid { issuer, .. }) => return deny(Denial::InactiveToken, Some(issuer)),
        Some(Cached::Valid(v)) => v,
        None => {
            let key = seen
                .hashed
                .unwrap_or_else(|| cache::key_for(&cfg.fingerprint, token));
            let miss = Miss {
                how,
                key,
                requirement,
                may_wait,
            };
            return on_miss(d, req, &miss);
        }
    };
    let accept = Accept {
        req,
        requirement,
        how,
    };
    finish(d, &accept, verified, seen.cache_hit)
}

/// Decides a request that may not wait (any more): [`authenticate`] with [`MayWait::No`],
/// whose decision is always a verdict (what waiting would have ended in, else).
pub fn authenticate_now(
    d: &mut Deciding<'_>,
    req: &Request<'_>,
    fresh: Option<&Cached>,
) -> Verdict {
    match authenticate(d, req, MayWait::No, fresh) {
        Decision::Done(verdict) => verdict,
        Decision::Wait(wait) => wait.unavailable(),
    }
}

/// What the cache (or a fresh introspection answer) knows about a token.
struct Seen {
    known: Option<Cached>,
    cache_hit: bool,
    /// The token's cache key, if it was computed (SHA-256: at most once per decision).
    hashed: Option<CacheKey>,
}

/// Looks the token up: the fresh answer, else the worker's memo (`remembered`: what it gave
/// for the token, asked during extraction), else the shared cache.
fn look_up(
    d: &mut Deciding<'_>,
    token: &str,
    fresh: Option<&Cached>,
    remembered: Option<Cached>,
) -> Seen {
    let (cfg, ring) = (d.cfg, d.ring);
    // SHA-256 of the token: only when the local memo cannot answer, and at most once.
    let mut hashed: Option<CacheKey> = None;
    let (known, cache_hit) = match fresh {
        Some(entry) => {
            // A refusal is also remembered by this worker: the shared slot may keep another
            // token's entry instead (see `cache::put_slot`), and a repeated junk token should
            // not be asked about again. Never an `active` answer: a revocation may have
            // overtaken it (see `cache::cacheable_after`).
            if matches!(entry, Cached::Invalid { .. }) && cfg.cache_slots > 0 {
                d.cache.remember(token, entry);
            }
            (Some(entry.clone()), false)
        }
        None if cfg.cache_slots > 0 => match remembered {
            Some(entry) => (Some(entry), true),
            None => {
                let key = *hashed.insert(cache::key_for(&cfg.fingerprint, token));
                let entry = d.cache.get(&key, d.now_ms).filter(|e| usable(cfg, ring, e));
                if let Some(e) = &entry {
                    d.cache.remember(token, e);
                }
                (entry, true)
            }
        },
        None => (None, false),
    };
    // An entry naming no configured issuer cannot come from this configuration, and one whose
    // verifying key the issuer no longer publishes no longer counts: a miss.
    Seen {
        known: known.filter(|entry| usable(cfg, ring, entry)),
        cache_hit,
        hashed,
    }
}

/// A token the cache could not decide.
struct Miss<'m> {
    how: sender::Presenting<'m>,
    key: CacheKey,
    requirement: &'m Requirement,
    may_wait: MayWait,
}

impl Miss<'_> {
    /// Introspect the token at `issuer` (`verified`: the JWT's own claims), if it may wait.
    fn introspect(
        &self,
        cfg: &FilterConfig,
        issuer: usize,
        verified: Option<Verified>,
    ) -> Decision {
        let wait = Wait::Introspect {
            issuer,
            key: self.key,
            token: issuer::tagged(cfg, self.how.token)
                .map_or(self.how.token, |(_, t)| t)
                .to_owned(),
            verified,
        };
        match self.may_wait {
            MayWait::Yes | MayWait::NotForPeer => Decision::Wait(wait),
            MayWait::No => Decision::Done(wait.unavailable()),
        }
    }
}

/// A cache miss: an opaque token goes to introspection; a JWT is verified (under a claim on
/// its cache slot, or after another worker's verification), and introspected too if its
/// issuer says so.
fn on_miss(d: &mut Deciding<'_>, req: &Request<'_>, miss: &Miss<'_>) -> Decision {
    let (cfg, ring, now_ms) = (d.cfg, d.ring, d.now_ms);
    let (token, key, requirement) = (miss.how.token, miss.key, miss.requirement);
    let accept = Accept {
        req,
        requirement,
        how: miss.how,
    };
    let introspects = cfg.issuers.iter().any(|i| i.introspection.is_some());
    if !is_jws(token) && introspects {
        let idx = match issuer::for_opaque(cfg, requirement, req.facts, token) {
            Ok(idx) => idx,
            Err(why) => return deny(Denial::InvalidToken(why), None),
        };
        if !requirement.accepts_issuer(idx) {
            return deny(Denial::InvalidToken(NOT_ACCEPTED_HERE), Some(idx));
        }
        return miss.introspect(cfg, idx, None);
    }
    let accepts = |idx| requirement.accepts_issuer(idx);
    let ready = match prepare(cfg, token, ring, now_ms, miss.may_wait, accepts) {
        Ok(ready) => ready,
        Err(decision) => return decision,
    };
    let also_introspect = cfg.issuers[ready.issuer]
        .introspection
        .as_ref()
        .is_some_and(|i| i.introspect_jwts);
    // Single flight across workers: only where the verification itself makes the cache entry
    // (with `introspect_jwts` the entry waits for the introspection, which has its own single
    // flight).
    let claimed = cfg.cache_slots > 0 && !also_introspect;
    if claimed {
        match d.cache.claim(&key, now_ms) {
            Claim::Wait if miss.may_wait == MayWait::Yes => {
                return Decision::Wait(Wait::Peer {
                    issuer: ready.issuer,
                    key,
                })
            }
            Claim::Found(entry) if usable(cfg, ring, &entry) => {
                d.cache.remember(token, &entry);
                return from_cache(d, &accept, entry);
            }
            // Verify here: holding the claim, or none to be had, or waited once already.
            _ => {}
        }
    }
    let v = match check(cfg, &ready, now_ms) {
        Ok(v) => v,
        Err(decision) => {
            if claimed {
                d.cache.unclaim(&key);
            }
            return decision;
        }
    };
    if also_introspect {
        return miss.introspect(cfg, v.issuer, Some(v));
    }
    if cfg.cache_slots > 0 {
        let entry = Cached::Valid(v.clone());
        d.cache.put(&key, &entry, now_ms);
        d.cache.remember(token, &entry);
    }
    finish(d, &accept, v, false)
}

/// Whether a cache entry may decide a request: it names a configured issuer and, if a key
/// verified it, that issuer's held key set still has that key (after the issuer dropped a key,
/// tokens it signed are verified again — and refused). A lookup in a short list of integers.
fn usable(cfg: &FilterConfig, ring: &KeyRing, entry: &Cached) -> bool {
    match entry {
        Cached::Valid(Verified {
            issuer,
            key: Some(id),
            ..
        }) => ring.held(*issuer).is_some_and(|h| h.keys.has_id(*id)),
        _ => entry.issuer() < cfg.issuers.len(),
    }
}

/// A decision from a cache entry that landed while this worker was about to verify.
fn from_cache(d: &Deciding<'_>, accept: &Accept<'_>, entry: Cached) -> Decision {
    match entry {
        Cached::Valid(v) => finish(d, accept, v, true),
        Cached::Invalid { issuer, .. } => deny(Denial::InactiveToken, Some(issuer)),
    }
}

/// What an accepted token is finally checked against: the request, its route, and how the
/// token came.
struct Accept<'a> {
    req: &'a Request<'a>,
    requirement: &'a Requirement,
    how: sender::Presenting<'a>,
}

/// The route's requirements and the token's binding against an accepted token's claims.
///
/// The order of the checks, once the token is valid: its binding (a stolen token stops
/// here), the client (`clients`, `client_id_header`), scopes and claim values, the user's
/// authentication (RFC 9470 step-up), and the route's policy decision point (AuthZEN) last.
/// RFC 9470 leaves the order open; step-up comes after the other local checks (and before a
/// PDP is asked) because its 401 asks the user to authenticate again, which must be the one
/// thing missing:
/// a token refused for its client or its scopes would be refused as well after a new login,
/// so those answers (which no login fixes) come first, as a Kong or Envoy `jwt_authn` user
/// expects scope errors before anything else about the user.
fn finish(d: &Deciding<'_>, accept: &Accept<'_>, verified: Verified, cache_hit: bool) -> Decision {
    let (cfg, requirement, how) = (d.cfg, accept.requirement, accept.how);
    let issuer = verified.issuer;
    if !requirement.accepts_issuer(issuer) {
        return deny(Denial::InvalidToken(NOT_ACCEPTED_HERE), Some(issuer));
    }
    let bound = match sender::check(d, accept, issuer, &verified.claims) {
        Ok(bound) => bound,
        Err(denial) => return deny(denial, Some(issuer)),
    };
    let now_s = i64::try_from(d.now_ms / 1000).unwrap_or(i64::MAX);
    let checked = requirement
        .client
        .check(&verified.claims, accept.req.facts)
        .and_then(|()| requirement.check(&verified.claims))
        .and_then(|()| requirement.step_up.check(&verified.claims, now_s));
    if let Err(denial) = checked {
        return deny(denial, Some(issuer));
    }
    let name = cfg.issuers.get(issuer).map_or("", |i| i.name.as_str());
    // Last, once everything else holds: the question for the route's policy decision point.
    let authorize = match requirement
        .authorize
        .and_then(|i| Some((i, cfg.rules.get(i)?)))
    {
        None => None,
        Some((index, rule)) => {
            let facts = accept.req.facts;
            match crate::authz::query(index, rule, &cfg.fingerprint, name, &verified.claims, facts)
            {
                Ok(q) => Some(Box::new(q)),
                Err(denial) => return deny(denial, Some(issuer)),
            }
        }
    };
    let rendered = (verified.rendered)
        .get_or_render(|| identity::headers(&cfg.identity, name, &verified.claims));
    let mut headers = identity::Headers::new(rendered);
    if let (Some(header), Some(value)) = (&cfg.identity.binding_header, bound.header) {
        headers.push(header.clone(), value);
    }
    let authorization = match (cfg.identity.authorization, how.scheme) {
        (ForwardAuthorization::Unchanged, _) | (ForwardAuthorization::Bearer, Scheme::Bearer) => {
            Upstream::Keep
        }
        (ForwardAuthorization::Drop, _) => Upstream::Drop,
        (ForwardAuthorization::Bearer, Scheme::Dpop) => {
            Upstream::Bearer(format!("Bearer {}", how.token))
        }
    };
    // Last, so that the claims can move into it (a `sign` rule maps them only when it signs).
    let upstream = requirement
        .upstream
        .and_then(|i| Some((i, cfg.upstream_rules.get(i)?)))
        .map(|(rule, kind)| {
            Box::new(Work {
                rule,
                issuer,
                token: how.token.to_owned(),
                claims: matches!(kind, UpstreamRule::Sign(_)).then(|| verified.claims.clone()),
            })
        });
    Decision::Done(Verdict::Allow {
        issuer: Some(issuer),
        headers,
        cache_hit,
        proof: bound.proof,
        authorization,
        authorize,
        upstream,
    })
}

const NOT_ACCEPTED_HERE: &str = "the token's issuer is not accepted for this resource";
const UNTRUSTED_ISSUER: &str = "the token's issuer is not trusted";

/// A JWT whose issuer, keys and expectations are settled: only the signature and claims
/// checks remain (the expensive part, and the one single flight saves).
struct Ready<'t> {
    issuer: usize,
    peeked: Peeked<'t>,
    alg: Alg,
    keys: &'t KeySet,
}

/// Picks the issuer from the unverified `iss` and finds its keys. Everything here is cheap, so
/// tokens refused here never claim a cache slot.
fn prepare<'t>(
    cfg: &FilterConfig,
    token: &'t str,
    ring: &'t KeyRing,
    now_ms: u64,
    may_wait: MayWait,
    route_accepts: impl Fn(usize) -> bool,
) -> Result<Ready<'t>, Decision> {
    let invalid = |e: JwtError, issuer| deny(Denial::InvalidToken(e.describe()), issuer);
    let peeked = jwt::peek(token).map_err(|e| invalid(e, None))?;
    let Some(idx) = cfg.issuer_by_iss(peeked.iss()) else {
        return Err(deny(Denial::InvalidToken(UNTRUSTED_ISSUER), None));
    };
    if !route_accepts(idx) {
        return Err(deny(Denial::InvalidToken(NOT_ACCEPTED_HERE), Some(idx)));
    }
    let issuer = &cfg.issuers[idx];
    let alg = peeked.alg().map_err(|e| invalid(e, Some(idx)))?;
    if !issuer.algorithms.contains(alg) {
        return Err(invalid(JwtError::AlgNotAllowed, Some(idx)));
    }
    if issuer.keys.is_none() {
        // An introspection-only issuer publishes no keys: its tokens are never JWTs here.
        return Err(invalid(JwtError::UnknownKey, Some(idx)));
    }
    let keys = match ring.get(idx, now_ms, issuer.timing.max_stale_ms) {
        KeysFor::Usable(keys) => keys,
        KeysFor::Missing if may_wait != MayWait::No => {
            return Err(Decision::Wait(Wait::Keys {
                issuer: idx,
                unknown_kid: false,
            }))
        }
        KeysFor::Missing | KeysFor::TooStale => {
            return Err(deny(Denial::KeysUnavailable, Some(idx)))
        }
    };
    if keys.candidates(peeked.kid(), alg).next().is_none() {
        // No key to try: a `kid` the held set lacks (wait for a refetch), or none of the family.
        return Err(match peeked.kid() {
            Some(_) if may_wait != MayWait::No => Decision::Wait(Wait::Keys {
                issuer: idx,
                unknown_kid: true,
            }),
            _ => invalid(JwtError::UnknownKey, Some(idx)),
        });
    }
    Ok(Ready {
        issuer: idx,
        peeked,
        alg,
        keys,
    })
}

/// Verifies the token with the candidate keys of its issuer (there is at least one).
fn check(cfg: &FilterConfig, ready: &Ready<'_>, now_ms: u64) -> Result<Verified, Decision> {
    let idx = ready.issuer;
    let invalid = |e: JwtError| deny(Denial::InvalidToken(e.describe()), Some(idx));
    let issuer = &cfg.issuers[idx];
    let expect = Expectations {
        issuer: &issuer.issuer,
        audiences: &issuer.audiences,
        algorithms: issuer.algorithms,
        clock_skew_s: issuer.clock_skew_s,
        require_at_jwt: issuer.require_at_jwt,
    };
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let mut last_error = None;
    for key in ready.keys.candidates(ready.peeked.kid(), ready.alg) {
        match jwt::verify(&ready.peeked, key, &expect, now_s) {
            Ok(v) => {
                let exp_ms = u64::try_from(v.exp_s).unwrap_or(0).saturating_mul(1000);
                return Ok(Verified {
                    issuer: idx,
                    exp_ms,
                    claims: Rc::new(v.claims),
                    key: Some(key.id),
                    rendered: Default::default(),
                });
            }
            // Without a kid several keys may fit; only a bad signature moves on to the next.
            Err(e @ (JwtError::BadSignature | JwtError::KeyAlgMismatch)) => {
                last_error.get_or_insert(e);
            }
            Err(e) => return Err(invalid(e)),
        }
    }
    Err(invalid(last_error.unwrap_or(JwtError::UnknownKey)))
}

#[cfg(test)]
mod tests;
