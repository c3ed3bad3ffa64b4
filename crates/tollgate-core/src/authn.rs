//! The per-request decision: route -> bearer token -> cache or issuer keys -> verified claims
//! -> route requirement -> allow with identity, deny, or wait for keys.
//!
//! Host-free: the adapter hands in the request facts, the worker's keys, a cache and `now`,
//! and carries out the [`Decision`]. The issuer is chosen from the unverified `iss` only to pick
//! whose keys to use; a token is never tried against another issuer's keys.

use crate::cache::{self, CacheKey, Cached, Claim, TokenCache, Verified};
use crate::config::FilterConfig;
use crate::extract::{self, Bearer};
use crate::identity;
use crate::issuer;
use crate::jwks::{KeyRing, KeySet, KeysFor};
use crate::jwt::{self, Expectations, JwtError, Peeked};
use crate::key::Alg;
use crate::outcome::Denial;
use crate::policy::{self, Policy, RequestFacts};
use crate::token::is_jws;

/// What the adapter must do with the request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Forward. `headers` are the identity headers to add (none for anonymous routes).
    Allow {
        issuer: Option<usize>,
        headers: Vec<(String, String)>,
        cache_hit: bool,
    },
    Deny {
        denial: Denial,
        /// The issuer the token named, when Tollgate got that far (for per-issuer counters).
        issuer: Option<usize>,
    },
    /// Pause the request until the issuer's keys are fetched (`unknown_kid`: the token names a
    /// key the held set lacks, so an early refetch is wanted), then decide again.
    WaitForKeys { issuer: usize, unknown_kid: bool },
    /// Pause the request, ask `issuer` about the token (RFC 7662), turn the answer into a cache
    /// entry with [`crate::introspect::entry`] (passing `verified`, the JWT's own verified
    /// claims when the token is a JWT) and decide again with that entry as `fresh`.
    Introspect {
        issuer: usize,
        key: CacheKey,
        verified: Option<Verified>,
    },
    /// Pause the request: another worker is verifying this very token (its claim on the
    /// token's cache slot lapses within [`cache::CLAIM_MS`]). Decide again with
    /// [`MayWait::NotForPeer`] once the slot holds the entry or no longer holds the claim.
    WaitForPeer { issuer: usize, key: CacheKey },
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

/// Decides one request. `now_ms` is the host clock, read once by the adapter ([`NO_CLOCK`]:
/// none; every request that needs a token is then refused with 503, anonymous routes work). `fresh` is an
/// introspection answer for this request's token that just arrived (used instead of the cache).
#[allow(clippy::too_many_arguments)]
pub fn authenticate(
    cfg: &FilterConfig,
    req: &RequestFacts<'_>,
    authorization: &[&str],
    ring: &KeyRing,
    cache: &mut dyn TokenCache,
    now_ms: u64,
    may_wait: MayWait,
    fresh: Option<&Cached>,
) -> Decision {
    let deny = |denial, issuer| Decision::Deny { denial, issuer };
    let requirement = match policy::select(&cfg.routes, cfg.default_policy.as_ref(), req) {
        Err(denial) => return deny(denial, None),
        Ok(None) => return deny(Denial::NoRoute, None),
        Ok(Some(Policy::Anonymous)) => {
            return Decision::Allow {
                issuer: None,
                headers: Vec::new(),
                cache_hit: false,
            }
        }
        Ok(Some(Policy::Require(r))) => r,
    };
    if now_ms == NO_CLOCK {
        // Without a clock every `exp` would look far away and every cache entry alive.
        return deny(Denial::ClockUnavailable, None);
    }
    let token = match extract::bearer(authorization) {
        Bearer::Missing => return deny(Denial::MissingToken, None),
        Bearer::Malformed(why) => return deny(Denial::InvalidRequest(why), None),
        Bearer::Token(t) => t,
    };

    // SHA-256 of the token: only when the local memo cannot answer, and at most once.
    let mut hashed: Option<CacheKey> = None;
    let (known, cache_hit) = match fresh {
        Some(entry) => {
            // A refusal is also remembered by this worker: the shared slot may keep another
            // token's entry instead (see `cache::put_slot`), and a repeated junk token should
            // not be asked about again. Never an `active` answer: a revocation may have
            // overtaken it (see `cache::cacheable_after`).
            if matches!(entry, Cached::Invalid { .. }) && cfg.cache_slots > 0 {
                cache.remember(token, entry);
            }
            (Some(entry.clone()), false)
        }
        None if cfg.cache_slots > 0 => match cache.get_local(token, now_ms) {
            Some(entry) => (Some(entry), true),
            None => {
                let key = *hashed.insert(cache::key_for(&cfg.fingerprint, token));
                let entry = cache.get(&key, now_ms).filter(|e| usable(cfg, ring, e));
                if let Some(e) = &entry {
                    cache.remember(token, e);
                }
                (entry, true)
            }
        },
        None => (None, false),
    };
    // An entry naming no configured issuer cannot come from this configuration, and one whose
    // verifying key the issuer no longer publishes no longer counts: a miss.
    let known = known.filter(|entry| usable(cfg, ring, entry));
    let verified = match known {
        Some(Cached::Invalid { issuer, .. }) => return deny(Denial::InactiveToken, Some(issuer)),
        Some(Cached::Valid(v)) => v,
        None => {
            let key = hashed.unwrap_or_else(|| cache::key_for(&cfg.fingerprint, token));
            let introspect = |issuer, verified| match may_wait {
                MayWait::Yes | MayWait::NotForPeer => Decision::Introspect {
                    issuer,
                    key,
                    verified,
                },
                MayWait::No => Decision::Deny {
                    denial: Denial::IntrospectionUnavailable,
                    issuer: Some(issuer),
                },
            };
            let introspects = cfg.issuers.iter().any(|i| i.introspection.is_some());
            if !is_jws(token) && introspects {
                let idx = match issuer::for_opaque(cfg, requirement, req, token) {
                    Ok(idx) => idx,
                    Err(why) => return deny(Denial::InvalidToken(why), None),
                };
                if !requirement.accepts_issuer(idx) {
                    return deny(Denial::InvalidToken(NOT_ACCEPTED_HERE), Some(idx));
                }
                return introspect(idx, None);
            }
            let accepts = |idx| requirement.accepts_issuer(idx);
            let ready = match prepare(cfg, token, ring, now_ms, may_wait, accepts) {
                Ok(ready) => ready,
                Err(decision) => return decision,
            };
            let also_introspect = cfg.issuers[ready.issuer]
                .introspection
                .as_ref()
                .is_some_and(|i| i.introspect_jwts);
            // Single flight across workers: only where the verification itself makes the
            // cache entry (with `introspect_jwts` the entry waits for the introspection, which
            // has its own single flight).
            let claimed = cfg.cache_slots > 0 && !also_introspect;
            if claimed {
                match cache.claim(&key, now_ms) {
                    Claim::Wait if may_wait == MayWait::Yes => {
                        return Decision::WaitForPeer {
                            issuer: ready.issuer,
                            key,
                        }
                    }
                    Claim::Found(entry) if usable(cfg, ring, &entry) => {
                        cache.remember(token, &entry);
                        return from_cache(cfg, requirement, entry);
                    }
                    // Verify here: holding the claim, or none to be had, or waited once already.
                    _ => {}
                }
            }
            let v = match check(cfg, &ready, now_ms) {
                Ok(v) => v,
                Err(decision) => {
                    if claimed {
                        cache.unclaim(&key);
                    }
                    return decision;
                }
            };
            if also_introspect {
                return introspect(v.issuer, Some(v));
            }
            if cfg.cache_slots > 0 {
                let entry = Cached::Valid(v.clone());
                cache.put(&key, &entry, now_ms);
                cache.remember(token, &entry);
            }
            return finish(cfg, requirement, v, false);
        }
    };
    finish(cfg, requirement, verified, cache_hit)
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
fn from_cache(
    cfg: &FilterConfig,
    requirement: &crate::policy::Requirement,
    entry: Cached,
) -> Decision {
    match entry {
        Cached::Valid(v) => finish(cfg, requirement, v, true),
        Cached::Invalid { issuer, .. } => Decision::Deny {
            denial: Denial::InactiveToken,
            issuer: Some(issuer),
        },
    }
}

/// The route's requirements against an accepted token's claims.
fn finish(
    cfg: &FilterConfig,
    requirement: &crate::policy::Requirement,
    verified: Verified,
    cache_hit: bool,
) -> Decision {
    let issuer = verified.issuer;
    if !requirement.accepts_issuer(issuer) {
        return Decision::Deny {
            denial: Denial::InvalidToken(NOT_ACCEPTED_HERE),
            issuer: Some(issuer),
        };
    }
    if let Err(denial) = requirement.check(&verified.claims) {
        return Decision::Deny {
            denial,
            issuer: Some(issuer),
        };
    }
    let name = cfg.issuers.get(issuer).map_or("", |i| i.name.as_str());
    Decision::Allow {
        issuer: Some(issuer),
        headers: identity::headers(&cfg.identity, name, &verified.claims),
        cache_hit,
    }
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
    let invalid = |e: JwtError, issuer| Decision::Deny {
        denial: Denial::InvalidToken(e.describe()),
        issuer,
    };
    let peeked = jwt::peek(token).map_err(|e| invalid(e, None))?;
    let Some(idx) = cfg.issuer_by_iss(peeked.iss()) else {
        return Err(Decision::Deny {
            denial: Denial::InvalidToken(UNTRUSTED_ISSUER),
            issuer: None,
        });
    };
    if !route_accepts(idx) {
        return Err(Decision::Deny {
            denial: Denial::InvalidToken(NOT_ACCEPTED_HERE),
            issuer: Some(idx),
        });
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
            return Err(Decision::WaitForKeys {
                issuer: idx,
                unknown_kid: false,
            })
        }
        KeysFor::Missing | KeysFor::TooStale => {
            return Err(Decision::Deny {
                denial: Denial::KeysUnavailable,
                issuer: Some(idx),
            })
        }
    };
    if keys.candidates(peeked.kid(), alg).next().is_none() {
        // No key to try: a `kid` the held set lacks (wait for a refetch), or none of the family.
        return Err(match peeked.kid() {
            Some(_) if may_wait != MayWait::No => Decision::WaitForKeys {
                issuer: idx,
                unknown_kid: true,
            },
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
    let invalid = |e: JwtError| Decision::Deny {
        denial: Denial::InvalidToken(e.describe()),
        issuer: Some(idx),
    };
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
                    claims: v.claims,
                    key: Some(key.id),
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
