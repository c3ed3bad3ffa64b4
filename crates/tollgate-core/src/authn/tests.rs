//! The per-request decision, end to end through the host-free core: a real configuration
//! (parsed from JSON, inline JWKS), a key ring, a map-backed token cache and a fixed clock.
//!
//! Issuers: `as1` (`https://as1.example.com`, audience `api://orders`, keys `rsa-a`,
//! `ec-p256`, `ec-p384`, `ed-25519`), `as2` (`https://as2.example.com`, RS256 only, key
//! `rsa-b`), `as3` (`https://as3.example.com`, remote JWKS, `max_stale_s` 600: its keys are
//! whatever a test puts in the ring).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::*;
use crate::cache::{CacheKey, Cached, Claim, Verified};
use crate::config::KeySource;
use crate::jwks::{Held, KeySet};
use crate::jwt::JwtError;
use crate::testdata::{
    compact, header, jwks, sign, sign_hs256, TestKey, AUD, ISS_A, ISS_B, NOW_MS, NOW_S,
    RSA_A_PUBLIC_PEM,
};

const ISS_C: &str = "https://as3.example.com";
const AS1: usize = 0;
const AS2: usize = 1;
const AS3: usize = 2;
const AS3_MAX_STALE_MS: u64 = 600_000;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The token cache as the adapter keeps it (encoded slot values), in a map.
/// `claim` answers `peer` (what another worker is doing with the token; default: nothing, so
/// verify) and counts claims and unclaims.
#[derive(Default)]
struct MapCache {
    slots: HashMap<CacheKey, Vec<u8>>,
    gets: usize,
    hits: usize,
    puts: usize,
    peer: Option<Claim>,
    claims: usize,
    unclaims: usize,
    /// What was offered to the worker's local memo.
    remembered: Vec<Cached>,
}

impl TokenCache for MapCache {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached> {
        self.gets += 1;
        let hit = cache::decode(key, self.slots.get(key)?, now_ms);
        self.hits += usize::from(hit.is_some());
        hit
    }
    fn put(&mut self, key: &CacheKey, entry: &Cached, _now_ms: u64) {
        self.puts += 1;
        self.slots.insert(*key, cache::encode(key, entry));
    }
    fn claim(&mut self, _key: &CacheKey, _now_ms: u64) -> Claim {
        self.claims += 1;
        self.peer.clone().unwrap_or(Claim::Verify)
    }
    fn unclaim(&mut self, _key: &CacheKey) {
        self.unclaims += 1;
    }
    fn remember(&mut self, _token: &str, entry: &Cached) {
        self.remembered.push(entry.clone());
    }
}

fn config_json(extra: Value) -> String {
    let mut cfg = json!({
        "issuers": [
            {
                "name": "as1",
                "issuer": ISS_A,
                "audiences": [AUD],
                "jwks": {"inline": jwks(&[
                    TestKey::RsaA.public_jwk(),
                    TestKey::P256.public_jwk(),
                    TestKey::P384.public_jwk(),
                    TestKey::Ed25519.public_jwk(),
                ])},
            },
            {
                "name": "as2",
                "issuer": ISS_B,
                "algorithms": ["RS256"],
                "jwks": {"inline": jwks(&[TestKey::RsaB.public_jwk()])},
            },
            {
                "name": "as3",
                "issuer": ISS_C,
                "max_stale_s": AS3_MAX_STALE_MS / 1000,
                "jwks": {"uri": "https://as3.example.com/jwks", "upstream": "as3"},
            },
        ],
        "routes": [
            {"name": "public", "match": {"prefix": "/public"}, "anonymous": true},
            {"name": "as1-only", "match": {"prefix": "/as1"}, "require": {"issuers": ["as1"]}},
            {"name": "read", "match": {"prefix": "/read"}, "require": {"scopes": ["read"]}},
            {"name": "admin", "match": {"prefix": "/admin"}, "require": {"scopes": ["admin"]}},
            {"name": "rw", "match": {"prefix": "/rw"}, "require": {"scopes": ["read", "write"]}},
            {"name": "ops", "match": {"prefix": "/ops"}, "require": {"scopes_any": ["ops", "admin"]}},
            {"name": "tenant", "match": {"prefix": "/tenant"},
             "require": {"claims": {"tenant": ["acme", "globex"]}}},
            {"name": "api", "match": {"prefix": "/api"}, "require": {}},
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

struct Env {
    cfg: FilterConfig,
    ring: KeyRing,
    cache: MapCache,
}

impl Env {
    /// The standard configuration with top-level members of `extra` replaced.
    fn with(extra: Value) -> Env {
        Env::from_text(&config_json(extra))
    }

    /// Any configuration (inline keys go into the ring).
    fn from_text(text: &str) -> Env {
        let cfg = FilterConfig::parse(text.as_bytes()).expect("test config parses");
        let mut ring = KeyRing::new(cfg.issuers.len());
        for (i, issuer) in cfg.issuers.iter().enumerate() {
            if let Some(KeySource::Inline(keys)) = &issuer.keys {
                ring.set(
                    i,
                    Held {
                        keys: keys.clone(),
                        fetched_at: None,
                        generation: 0,
                    },
                );
            }
        }
        Env {
            cfg,
            ring,
            cache: MapCache::default(),
        }
    }

    fn new() -> Env {
        Env::with(json!({}))
    }

    /// Gives `as3` the key `rsa-b` under kid `as3-rsa`, fetched at `fetched_at`.
    fn fetch_as3(&mut self, fetched_at: u64) {
        let (keys, _) =
            KeySet::from_value(&jwks(&[TestKey::RsaB.public_jwk_as("as3-rsa", None)])).unwrap();
        self.ring.set(
            AS3,
            Held {
                keys,
                fetched_at: Some(fetched_at),
                generation: 1,
            },
        );
    }

    fn decide(
        &mut self,
        path: &str,
        authorization: &[&str],
        now_ms: u64,
        may_wait: MayWait,
    ) -> Decision {
        self.decide_full(path, authorization, &[], now_ms, may_wait, None)
    }

    /// `GET path` with other request headers (for `issuer_header`) and an introspection
    /// answer that just arrived (`fresh`).
    fn decide_full(
        &mut self,
        path: &str,
        authorization: &[&str],
        headers: &[(String, String)],
        now_ms: u64,
        may_wait: MayWait,
        fresh: Option<&Cached>,
    ) -> Decision {
        let req = RequestFacts {
            method: "GET",
            path,
            authority: "api.example.com",
            route_name: None,
            headers,
        };
        let mut deciding = Deciding {
            cfg: &self.cfg,
            ring: &self.ring,
            cache: &mut self.cache,
            now_ms,
        };
        let request = Request {
            facts: &req,
            authorization,
        };
        authenticate(&mut deciding, &request, may_wait, fresh)
    }

    /// `GET path` with `Authorization: Bearer <token>` at the fixed clock, may wait.
    fn bearer(&mut self, path: &str, token: &str) -> Decision {
        self.bearer_at(path, token, NOW_MS, MayWait::Yes)
    }

    fn bearer_at(&mut self, path: &str, token: &str, now_ms: u64, may_wait: MayWait) -> Decision {
        let value = format!("Bearer {token}");
        self.decide(path, &[&value], now_ms, may_wait)
    }
}

fn allowed(issuer: usize, cache_hit: bool) -> impl Fn(&Decision) -> bool {
    move |d| matches!(d, Decision::Done(Verdict::Allow { issuer: Some(i), cache_hit: c, .. }) if *i == issuer && *c == cache_hit)
}

fn invalid_token(why: &'static str, issuer: Option<usize>) -> Decision {
    Decision::Done(Verdict::Deny {
        denial: Denial::InvalidToken(why),
        issuer,
    })
}

fn headers_of(d: &Decision) -> &[(String, String)] {
    match d {
        Decision::Done(Verdict::Allow { headers, .. }) => headers,
        other => panic!("not allowed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Token fixtures, named by scenario
// ---------------------------------------------------------------------------------------------

/// An `as1` access token with the given `scope`.
/// Header: `{"alg":"RS256","kid":"rsa-a"}`;
/// payload: `{"iss":"https://as1.example.com","sub":"alice","aud":"api://orders",
///   "client_id":"orders-cli","scope":<scope>,"iat":NOW-60,"exp":NOW+3600}`.
fn as1_token(scope: &str) -> String {
    sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-a"), None),
        &as1_payload(scope),
    )
}

fn as1_payload(scope: &str) -> Value {
    json!({
        "iss": ISS_A,
        "sub": "alice",
        "aud": AUD,
        "client_id": "orders-cli",
        "scope": scope,
        "iat": NOW_S - 60,
        "exp": NOW_S + 3600,
    })
}

/// `as1_token("read write")`.
fn as1_read_write_token() -> String {
    as1_token("read write")
}

/// `as1_token("read")`.
fn as1_read_token() -> String {
    as1_token("read")
}

/// Header: `{"alg":"RS256","kid":"rsa-b"}`;
/// payload: `{"iss":"https://as2.example.com","sub":"bob","client_id":"billing",
///   "scope":"read write admin","exp":NOW+3600}`.
fn as2_token() -> String {
    sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &as2_payload(),
    )
}

fn as2_payload() -> Value {
    json!({
        "iss": ISS_B,
        "sub": "bob",
        "client_id": "billing",
        "scope": "read write admin",
        "exp": NOW_S + 3600,
    })
}

/// Header: `{"alg":"PS256","kid":"rsa-b"}`; payload as [`as2_token`]. `as2` allows RS256 only.
fn as2_ps256_token() -> String {
    sign(
        "PS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &as2_payload(),
    )
}

/// Claims to be from `as1` but is signed by `as2`'s key and names it.
/// Header: `{"alg":"RS256","kid":"rsa-b"}`; payload: `as1_token("read write")`'s.
fn kid_from_other_issuer_token() -> String {
    sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &as1_payload("read write"),
    )
}

/// Header: `{"alg":"RS256","kid":"rsa-a"}`;
/// payload: `{"iss":"https://evil.example.com","sub":"alice","exp":NOW+3600}`.
fn unknown_issuer_token() -> String {
    let p = json!({"iss": "https://evil.example.com", "sub": "alice", "exp": NOW_S + 3600});
    sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p)
}

/// Header: `{"alg":"RS256","kid":"as3-rsa"}` (signed with `rsa-b`);
/// payload: `{"iss":"https://as3.example.com","sub":"carol","scope":"read","exp":NOW+3600}`.
fn as3_token() -> String {
    let p = json!({"iss": ISS_C, "sub": "carol", "scope": "read", "exp": NOW_S + 3600});
    sign("RS256", TestKey::RsaB, &header(Some("as3-rsa"), None), &p)
}

/// `as1_token("read")` but `"exp": NOW+100`.
fn short_lived_token() -> String {
    let mut p = as1_payload("read");
    p["exp"] = json!(NOW_S + 100);
    sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p)
}

/// `as1_token("read")` but `"exp": NOW-3600`.
fn expired_token() -> String {
    let mut p = as1_payload("read");
    p["exp"] = json!(NOW_S - 3600);
    sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p)
}

/// `as1_token("read")` plus `"tenant": <tenant>` (or no tenant).
fn tenant_token(tenant: Option<&str>) -> String {
    let mut p = as1_payload("read");
    if let Some(t) = tenant {
        p["tenant"] = json!(t);
    }
    sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p)
}

/// Header: `{"alg":"none","kid":"rsa-a"}`; payload: `as1_token("read write admin")`'s; no
/// signature.
fn alg_none_token() -> String {
    compact(
        r#"{"alg":"none","kid":"rsa-a"}"#,
        &as1_payload("read write admin").to_string(),
        b"",
    )
}

/// Header: `{"alg":"HS256","kid":"rsa-a"}`; payload: `as1_token("read write admin")`'s;
/// HMAC keyed with the PEM of `rsa-a`'s public key (RS256 -> HS256 key confusion).
fn hs256_signed_with_public_key_token() -> String {
    sign_hs256(
        RSA_A_PUBLIC_PEM.as_bytes(),
        &header(Some("rsa-a"), None),
        &as1_payload("read write admin"),
    )
}

/// Header: `{"alg":<alg>}` (no kid), signed by `key`; payload: `as1_token("read")`'s.
fn kidless_token(alg: &str, key: TestKey) -> String {
    sign(alg, key, &header(None, None), &as1_payload("read"))
}

// ---------------------------------------------------------------------------------------------
// Allow, identity, cache
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_token_is_allowed_with_identity_headers() {
    let mut env = Env::new();
    let d = env.bearer("/api/orders", &as1_read_write_token());
    let expected: Vec<(String, String)> = [
        ("x-tollgate-client-id", "orders-cli"),
        ("x-tollgate-iss", ISS_A),
        ("x-tollgate-scope", "read write"),
        ("x-tollgate-sub", "alice"),
        ("x-tollgate-issuer", "as1"),
    ]
    .iter()
    .map(|(h, v)| ((*h).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(
        d,
        Decision::Done(Verdict::Allow {
            issuer: Some(AS1),
            headers: expected,
            cache_hit: false,
        })
    );
}

#[test]
fn every_key_of_the_issuer_verifies() {
    let mut env = Env::new();
    for (alg, key) in [
        ("RS512", TestKey::RsaA),
        ("PS384", TestKey::RsaA),
        ("ES256", TestKey::P256),
        ("ES384", TestKey::P384),
        ("EdDSA", TestKey::Ed25519),
    ] {
        let token = sign(
            alg,
            key,
            &header(Some(&key.kid()), None),
            &as1_payload("read"),
        );
        assert!(allowed(AS1, false)(&env.bearer("/api", &token)), "{alg}");
    }
    assert!(allowed(AS2, false)(&env.bearer("/api", &as2_token())));
}

#[test]
fn second_request_is_a_cache_hit() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    let first = env.bearer("/api", &token);
    assert!(allowed(AS1, false)(&first));
    let second = env.bearer("/api", &token);
    assert!(allowed(AS1, true)(&second));
    assert_eq!(
        headers_of(&first),
        headers_of(&second),
        "same identity from the cache"
    );
    assert_eq!((env.cache.gets, env.cache.hits, env.cache.puts), (2, 1, 1));
}

#[test]
fn without_a_clock_no_token_is_accepted_and_anonymous_routes_still_work() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    assert!(allowed(AS1, false)(&env.bearer("/api", &token)), "cached");
    let unavailable = Decision::Done(Verdict::Deny {
        denial: Denial::ClockUnavailable,
        issuer: None,
    });
    // A cached entry would look alive forever at 0; a fresh token's exp far away.
    assert_eq!(
        env.bearer_at("/api", &token, NO_CLOCK, MayWait::Yes),
        unavailable
    );
    let (gets, puts) = (env.cache.gets, env.cache.puts);
    assert_eq!(
        env.bearer_at("/read", &as1_read_token(), NO_CLOCK, MayWait::Yes),
        unavailable
    );
    assert_eq!(
        env.bearer_at("/api", &expired_token(), NO_CLOCK, MayWait::No),
        unavailable
    );
    assert_eq!(env.decide("/api", &[], NO_CLOCK, MayWait::Yes), unavailable);
    assert_eq!(
        (env.cache.gets, env.cache.puts),
        (gets, puts),
        "the cache is not even read"
    );
    assert!(matches!(
        env.decide("/public/x", &[], NO_CLOCK, MayWait::Yes),
        Decision::Done(Verdict::Allow { issuer: None, .. })
    ));
    // An opaque token is not sent to be introspected either.
    let mut env = opaque_env();
    let value = "Bearer op1_abcdefghijklmnopqrstuvwxyz0123".to_owned();
    assert!(matches!(
        env.decide("/any", &[&value], NO_CLOCK, MayWait::Yes),
        Decision::Done(Verdict::Deny {
            denial: Denial::ClockUnavailable,
            ..
        })
    ));
    // The clock is back: tokens pass again.
    let mut env = Env::new();
    assert!(allowed(AS1, false)(&env.bearer("/api", &token)));
}

#[test]
fn no_cache_use_when_max_entries_is_zero() {
    let mut env = Env::with(json!({"cache": {"max_entries": 0}}));
    assert_eq!(env.cfg.cache_slots, 0);
    let token = as1_read_write_token();
    for _ in 0..2 {
        assert!(allowed(AS1, false)(&env.bearer("/api", &token)));
    }
    assert_eq!((env.cache.gets, env.cache.puts), (0, 0));
}

#[test]
fn cache_entry_is_not_served_at_or_after_exp() {
    let mut env = Env::new();
    let token = short_lived_token();
    let exp_ms = (NOW_S as u64 + 100) * 1000;
    assert!(allowed(AS1, false)(&env.bearer("/api", &token)));
    assert!(allowed(AS1, true)(&env.bearer_at(
        "/api",
        &token,
        exp_ms - 1,
        MayWait::Yes
    )));
    // At exp the entry is dead; the token is verified again (still inside the 60 s skew).
    assert!(allowed(AS1, false)(&env.bearer_at(
        "/api",
        &token,
        exp_ms,
        MayWait::Yes
    )));
    assert!(allowed(AS1, false)(&env.bearer_at(
        "/api",
        &token,
        exp_ms + 60_000,
        MayWait::Yes
    )));
    assert_eq!(
        env.bearer_at("/api", &token, exp_ms + 61_000, MayWait::Yes),
        invalid_token(JwtError::Expired.describe(), Some(AS1))
    );
}

#[test]
fn refused_tokens_are_not_cached() {
    let mut env = Env::new();
    for _ in 0..2 {
        assert_eq!(
            env.bearer("/api", &expired_token()),
            invalid_token(JwtError::Expired.describe(), Some(AS1))
        );
    }
    assert_eq!(env.cache.puts, 0);
}

#[test]
fn cache_entries_of_another_configuration_are_not_trusted() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    assert!(allowed(AS1, false)(&env.bearer("/api", &token)));
    // Same cache, a configuration that differs only in its text (realm).
    let mut other = Env::with(json!({"realm": "other"}));
    assert_ne!(other.cfg.fingerprint, env.cfg.fingerprint);
    other.cache = std::mem::take(&mut env.cache);
    assert!(allowed(AS1, false)(&other.bearer("/api", &token)));
}

#[test]
fn cache_entry_naming_an_issuer_that_does_not_exist_is_ignored() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    let key = cache::key_for(&env.cfg.fingerprint, &token);
    let bogus = Verified {
        issuer: 9,
        exp_ms: NOW_MS + 1_000_000,
        claims: json!({"sub": "root"}).as_object().cloned().unwrap(),
        key: None,
    };
    env.cache.put(&key, &Cached::Valid(bogus), NOW_MS);
    let d = env.bearer("/api", &token);
    assert!(allowed(AS1, false)(&d));
    assert!(headers_of(&d).contains(&("x-tollgate-sub".into(), "alice".into())));
}

#[test]
fn cached_verification_still_checks_the_routes_scopes() {
    let mut env = Env::new();
    let token = as1_read_token();
    assert!(allowed(AS1, false)(&env.bearer("/read", &token)));
    assert_eq!(
        env.bearer("/admin", &token),
        Decision::Done(Verdict::Deny {
            denial: Denial::InsufficientScope {
                scope: "admin".into()
            },
            issuer: Some(AS1),
        })
    );
    assert_eq!(
        env.cache.hits, 1,
        "the refusal came from the cached verification"
    );
    assert!(allowed(AS1, true)(&env.bearer("/read", &token)));
}

#[test]
fn cached_verification_still_checks_the_routes_issuers() {
    let mut env = Env::new();
    let token = as2_token();
    assert!(allowed(AS2, false)(&env.bearer("/api", &token)));
    assert_eq!(
        env.bearer("/as1", &token),
        invalid_token(NOT_ACCEPTED_HERE, Some(AS2))
    );
    assert_eq!(env.cache.hits, 1);
}

// ---------------------------------------------------------------------------------------------
// Routes and credentials
// ---------------------------------------------------------------------------------------------

#[test]
fn anonymous_route_needs_and_checks_nothing() {
    let mut env = Env::new();
    let anonymous = Decision::Done(Verdict::Allow {
        issuer: None,
        headers: Vec::new(),
        cache_hit: false,
    });
    assert_eq!(
        env.decide("/public/x", &[], NOW_MS, MayWait::Yes),
        anonymous
    );
    assert_eq!(env.bearer("/public", &expired_token()), anonymous);
    assert_eq!(
        env.decide("/public", &["Bearer a", "Bearer b"], NOW_MS, MayWait::Yes),
        anonymous
    );
    assert_eq!((env.cache.gets, env.cache.puts), (0, 0));
}

#[test]
fn no_route_is_denied_without_a_default_route() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/elsewhere", &as1_read_write_token()),
        Decision::Done(Verdict::Deny {
            denial: Denial::NoRoute,
            issuer: None
        })
    );
}

#[test]
fn default_route_applies_to_unmatched_requests() {
    let mut env = Env::with(json!({"default_route": {"require": {"scopes": ["write"]}}}));
    assert!(allowed(AS1, false)(
        &env.bearer("/elsewhere", &as1_read_write_token())
    ));
    assert_eq!(
        env.bearer("/elsewhere", &as1_read_token()),
        Decision::Done(Verdict::Deny {
            denial: Denial::InsufficientScope {
                scope: "write".into()
            },
            issuer: Some(AS1),
        })
    );
    assert_eq!(
        env.decide("/elsewhere", &[], NOW_MS, MayWait::Yes),
        Decision::Done(Verdict::Deny {
            denial: Denial::MissingToken,
            issuer: None
        })
    );
    let mut open = Env::with(json!({"default_route": {"anonymous": true}}));
    assert!(matches!(
        open.decide("/elsewhere", &[], NOW_MS, MayWait::Yes),
        Decision::Done(Verdict::Allow { issuer: None, .. })
    ));
}

#[test]
fn missing_token() {
    let mut env = Env::new();
    let missing = Decision::Done(Verdict::Deny {
        denial: Denial::MissingToken,
        issuer: None,
    });
    assert_eq!(env.decide("/api", &[], NOW_MS, MayWait::Yes), missing);
    assert_eq!(
        env.decide("/api", &["Basic YWxpY2U6cHc="], NOW_MS, MayWait::Yes),
        missing
    );
}

#[test]
fn two_authorization_headers_are_an_invalid_request() {
    let mut env = Env::new();
    let a = format!("Bearer {}", as1_read_write_token());
    let b = format!("Bearer {}", as2_token());
    for headers in [[a.as_str(), b.as_str()], [a.as_str(), a.as_str()]] {
        assert!(matches!(
            env.decide("/api", &headers, NOW_MS, MayWait::Yes),
            Decision::Done(Verdict::Deny {
                denial: Denial::InvalidRequest(_),
                issuer: None
            })
        ));
    }
}

#[test]
fn forged_tokens_are_invalid_tokens_and_never_cached() {
    let mut env = Env::new();
    for token in [alg_none_token(), hs256_signed_with_public_key_token()] {
        for may_wait in [MayWait::Yes, MayWait::No] {
            assert_eq!(
                env.bearer_at("/api", &token, NOW_MS, may_wait),
                invalid_token(JwtError::UnsupportedAlg.describe(), Some(AS1))
            );
        }
    }
    assert_eq!(env.cache.puts, 0);
}

#[test]
fn malformed_token_is_an_invalid_token() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/api", "not.a-jwt"),
        invalid_token(JwtError::Malformed.describe(), None)
    );
}

// ---------------------------------------------------------------------------------------------
// Issuers and keys
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_issuer_is_untrusted() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/api", &unknown_issuer_token()),
        invalid_token(UNTRUSTED_ISSUER, None)
    );
}

#[test]
fn route_restricted_to_issuer_a_refuses_a_valid_token_from_b() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/as1", &as2_token()),
        invalid_token(NOT_ACCEPTED_HERE, Some(AS2))
    );
    assert_eq!(env.cache.puts, 0, "refused before verifying");
    assert!(allowed(AS1, false)(
        &env.bearer("/as1", &as1_read_write_token())
    ));
}

#[test]
fn kid_from_other_issuer_token_waits_for_keys_then_is_refused() {
    let mut env = Env::new();
    let token = kid_from_other_issuer_token();
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::Yes),
        Decision::Wait(Wait::Keys {
            issuer: AS1,
            unknown_kid: true
        })
    );
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::No),
        invalid_token(JwtError::UnknownKey.describe(), Some(AS1))
    );
}

#[test]
fn kidless_token_is_tried_with_the_issuers_keys_of_its_family() {
    let mut env = Env::new();
    assert!(allowed(AS1, false)(
        &env.bearer("/api", &kidless_token("RS256", TestKey::RsaA))
    ));
    assert!(allowed(AS1, false)(
        &env.bearer("/api", &kidless_token("ES384", TestKey::P384))
    ));
    // Signed by as2's key: as1's RSA keys do not verify it, and it never waits.
    assert_eq!(
        env.bearer_at(
            "/api",
            &kidless_token("RS256", TestKey::RsaB),
            NOW_MS,
            MayWait::Yes
        ),
        invalid_token(JwtError::BadSignature.describe(), Some(AS1))
    );
}

#[test]
fn alg_outside_the_issuers_list_is_refused_before_keys() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/api", &as2_ps256_token()),
        invalid_token(JwtError::AlgNotAllowed.describe(), Some(AS2))
    );
}

#[test]
fn issuer_without_keys_waits_then_is_unavailable() {
    let mut env = Env::new();
    let token = as3_token();
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::Yes),
        Decision::Wait(Wait::Keys {
            issuer: AS3,
            unknown_kid: false
        })
    );
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::No),
        Decision::Done(Verdict::Deny {
            denial: Denial::KeysUnavailable,
            issuer: Some(AS3)
        })
    );
    env.fetch_as3(NOW_MS);
    assert!(allowed(AS3, false)(&env.bearer("/api", &token)));
}

#[test]
fn too_stale_keys_are_unavailable_and_never_waited_for() {
    let mut env = Env::new();
    let token = as3_token();
    env.fetch_as3(NOW_MS - AS3_MAX_STALE_MS - 1);
    let unavailable = Decision::Done(Verdict::Deny {
        denial: Denial::KeysUnavailable,
        issuer: Some(AS3),
    });
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::Yes),
        unavailable
    );
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::No),
        unavailable
    );
    env.fetch_as3(NOW_MS - AS3_MAX_STALE_MS);
    assert!(allowed(AS3, false)(&env.bearer("/api", &token)));
}

// ---------------------------------------------------------------------------------------------
// Requirements
// ---------------------------------------------------------------------------------------------

#[test]
fn insufficient_scope_all_of() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/rw", &as1_read_token()),
        Decision::Done(Verdict::Deny {
            denial: Denial::InsufficientScope {
                scope: "read write".into()
            },
            issuer: Some(AS1),
        })
    );
    assert!(allowed(AS1, false)(
        &env.bearer("/rw", &as1_read_write_token())
    ));
}

#[test]
fn insufficient_scope_any_of() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/ops", &as1_read_write_token()),
        Decision::Done(Verdict::Deny {
            denial: Denial::InsufficientScope {
                scope: "ops admin".into()
            },
            issuer: Some(AS1),
        })
    );
    assert!(allowed(AS1, false)(
        &env.bearer("/ops", &as1_token("read ops"))
    ));
    assert!(
        allowed(AS2, false)(&env.bearer("/ops", &as2_token())),
        "admin is one of them"
    );
}

#[test]
fn claim_mismatch() {
    let mut env = Env::new();
    let unsatisfied = Decision::Done(Verdict::Deny {
        denial: Denial::ClaimNotSatisfied,
        issuer: Some(AS1),
    });
    assert_eq!(
        env.bearer("/tenant", &tenant_token(Some("initech"))),
        unsatisfied
    );
    assert_eq!(env.bearer("/tenant", &tenant_token(None)), unsatisfied);
    assert!(allowed(AS1, false)(
        &env.bearer("/tenant", &tenant_token(Some("acme")))
    ));
}

// ---------------------------------------------------------------------------------------------
// Opaque tokens and introspection (a second configuration)
// ---------------------------------------------------------------------------------------------
//
// Issuers, in this order:
// - `jwt1` (index 0): `https://as1.example.com`, the standard `as1` keys, no introspection;
// - `op1` (1): introspection only, `opaque_tokens.prefixes` ["op1_"];
// - `op2` (2): introspection only, `opaque_tokens.pattern` "op[0-9]_[a-z0-9]*" (so it also
//   matches `op1_…` tokens: `op1` comes first and wins those);
// - `op3` (3): introspection only, no rule (reached by a route's `opaque_issuer` or hint);
// - `jwt2` (4): `https://as2.example.com`, key `rsa-b`, introspection with `introspect_jwts`.

const JWT1: usize = 0;
const OP1: usize = 1;
const OP2: usize = 2;
const OP3: usize = 3;
const JWT2: usize = 4;
const HINT: &str = "x-issuer";
const NEGATIVE_TTL_MS: u64 = 10_000;
const MAX_TTL_MS: u64 = 300_000;

fn introspection_of(name: &str) -> Value {
    json!({
        "endpoint": format!("https://{name}.example.com/introspect"),
        "upstream": name,
        "client_id": "tollgate",
        "client_secret": "secret",
    })
}

fn opaque_config_json(extra: Value) -> String {
    let mut jwt2_intro = introspection_of("jwt2");
    jwt2_intro["introspect_jwts"] = json!(true);
    let mut cfg = json!({
        "issuers": [
            {
                "name": "jwt1",
                "issuer": ISS_A,
                "audiences": [AUD],
                "jwks": {"inline": jwks(&[TestKey::RsaA.public_jwk()])},
            },
            {
                "name": "op1",
                "issuer": "https://op1.example.com",
                "introspection": introspection_of("op1"),
                "opaque_tokens": {"prefixes": ["op1_"]},
            },
            {
                "name": "op2",
                "issuer": "https://op2.example.com",
                "introspection": introspection_of("op2"),
                "opaque_tokens": {"pattern": "op[0-9]_[a-z0-9]*"},
            },
            {
                "name": "op3",
                "issuer": "https://op3.example.com",
                "introspection": introspection_of("op3"),
            },
            {
                "name": "jwt2",
                "issuer": ISS_B,
                "algorithms": ["RS256"],
                "jwks": {"inline": jwks(&[TestKey::RsaB.public_jwk()])},
                "introspection": jwt2_intro,
            },
        ],
        "routes": [
            {"match": {"prefix": "/any"}, "require": {}},
            {"match": {"prefix": "/dflt-hint"},
             "require": {"opaque_issuer": "op3", "issuer_header": HINT}},
            {"match": {"prefix": "/dflt"}, "require": {"opaque_issuer": "op3"}},
            {"match": {"prefix": "/hint-all"}, "require": {"issuer_header": HINT}},
            {"match": {"prefix": "/hint"},
             "require": {"issuers": ["jwt1", "op1", "op3"], "issuer_header": HINT}},
            {"match": {"prefix": "/op1only"},
             "require": {"issuers": ["op1"], "opaque_issuer": "op1"}},
            {"match": {"prefix": "/scoped"},
             "require": {"scopes": ["read"], "opaque_issuer": "op3"}},
            {"match": {"prefix": "/jwt1"}, "require": {"issuers": ["jwt1"]}},
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

fn opaque_env() -> Env {
    Env::from_text(&opaque_config_json(json!({})))
}

impl Env {
    /// `GET path` with the bearer `token` and, when given, `x-issuer: <hint>`.
    fn opaque(&mut self, path: &str, token: &str, hint: Option<&str>) -> Decision {
        self.opaque_full(path, token, hint, MayWait::Yes, None)
    }

    fn opaque_full(
        &mut self,
        path: &str,
        token: &str,
        hint: Option<&str>,
        may_wait: MayWait,
        fresh: Option<&Cached>,
    ) -> Decision {
        let value = format!("Bearer {token}");
        let headers: Vec<(String, String)> = hint
            .map(|h| (HINT.to_owned(), h.to_owned()))
            .into_iter()
            .collect();
        self.decide_full(path, &[&value], &headers, NOW_MS, may_wait, fresh)
    }

    fn key(&self, token: &str) -> CacheKey {
        cache::key_for(&self.cfg.fingerprint, token)
    }

    /// The decision to introspect `token` at `issuer` (an opaque token: no verified JWT).
    fn introspect_at(&self, issuer: usize, token: &str) -> Decision {
        Decision::Wait(Wait::Introspect {
            issuer,
            key: self.key(token),
            token: token.to_owned(),
            verified: None,
        })
    }
}

/// Claims an introspection answer carries (RFC 7662 members, `active` removed).
fn answer_claims(scope: &str) -> serde_json::Map<String, Value> {
    json!({"sub": "dana", "client_id": "mobile", "scope": scope, "exp": NOW_S + 3600})
        .as_object()
        .cloned()
        .unwrap()
}

/// The cache entry the adapter makes from an `active: true` answer of `issuer`.
fn active_entry(issuer: usize, scope: &str) -> Cached {
    let answer = crate::introspect::Answer::Active {
        claims: answer_claims(scope),
        exp_s: Some(NOW_S + 3600),
    };
    crate::introspect::entry(issuer, answer, None, ttl(), NOW_MS)
}

/// The cache entry the adapter makes from an `active: false` answer of `issuer`.
fn inactive_entry(issuer: usize) -> Cached {
    let answer = crate::introspect::Answer::Inactive("the token is not active");
    crate::introspect::entry(issuer, answer, None, ttl(), NOW_MS)
}

fn ttl() -> crate::introspect::Ttl {
    crate::introspect::Ttl {
        max_ms: MAX_TTL_MS,
        negative_ms: NEGATIVE_TTL_MS,
    }
}

fn denied(denial: Denial, issuer: Option<usize>) -> Decision {
    Decision::Done(Verdict::Deny { denial, issuer })
}

#[test]
fn introspection_config_is_as_documented() {
    let env = opaque_env();
    let names: Vec<&str> = env.cfg.issuers.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["jwt1", "op1", "op2", "op3", "jwt2"]);
    let intro = env.cfg.issuers[JWT2].introspection.as_ref().unwrap();
    assert!(intro.introspect_jwts);
    assert_eq!(
        intro.ttl,
        ttl(),
        "the defaults the entries here are built with"
    );
}

#[test]
fn opaque_token_rules_are_tried_in_issuer_order() {
    let mut env = opaque_env();
    // "op1_abc" matches op1's prefix and op2's pattern: op1 comes first.
    assert_eq!(
        env.opaque("/any", "op1_abc", None),
        env.introspect_at(OP1, "op1_abc")
    );
    assert_eq!(
        env.opaque("/any", "op2_abc", None),
        env.introspect_at(OP2, "op2_abc")
    );
    assert_eq!(
        env.opaque("/any", "op7_x", None),
        env.introspect_at(OP2, "op7_x")
    );
    // The pattern must match the whole token.
    assert_eq!(
        env.opaque("/any", "op2_ABC", None),
        invalid_token(issuer::NO_RULE, None)
    );
    assert_eq!(
        env.opaque("/any", "xop2_abc", None),
        invalid_token(issuer::NO_RULE, None)
    );
    assert_eq!(
        (env.cache.gets, env.cache.puts),
        (5, 0),
        "looked up, never stored"
    );
}

#[test]
fn a_matching_rule_wins_over_the_routes_default_and_the_hint() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque("/dflt", "op2_abc", None),
        env.introspect_at(OP2, "op2_abc")
    );
    assert_eq!(
        env.opaque("/hint", "op1_abc", Some("op3")),
        env.introspect_at(OP1, "op1_abc")
    );
    assert_eq!(
        env.opaque("/dflt-hint", "op1_abc", Some("op3")),
        env.introspect_at(OP1, "op1_abc")
    );
    // The rule names op2, which the route does not accept: refused, and the route's own
    // default (op1) is not asked about another issuer's token.
    assert_eq!(
        env.opaque("/op1only", "op2_abc", None),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP2))
    );
    assert_eq!(
        env.opaque("/hint", "op2_abc", Some("op1")),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP2))
    );
}

#[test]
fn the_routes_opaque_issuer_applies_when_no_rule_matches() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque("/dflt", "zzz", None),
        env.introspect_at(OP3, "zzz")
    );
    assert_eq!(
        env.opaque("/op1only", "zzz", None),
        env.introspect_at(OP1, "zzz")
    );
    // opaque_issuer comes before the hint.
    assert_eq!(
        env.opaque("/dflt-hint", "zzz", Some("op1")),
        env.introspect_at(OP3, "zzz")
    );
    assert_eq!(
        env.opaque("/dflt-hint", "zzz", Some("nope")),
        env.introspect_at(OP3, "zzz")
    );
}

#[test]
fn the_issuer_header_names_one_of_the_routes_introspecting_issuers() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque("/hint", "zzz", Some("op3")),
        env.introspect_at(OP3, "zzz")
    );
    assert_eq!(
        env.opaque("/hint", "zzz", Some("op1")),
        env.introspect_at(OP1, "zzz")
    );
    assert_eq!(
        env.opaque("/hint-all", "zzz", Some("op2")),
        env.introspect_at(OP2, "zzz")
    );
    let bad_hint = invalid_token(issuer::BAD_HINT, None);
    for hint in [
        "op2",  // not among the route's issuers
        "jwt1", // accepted, but has no introspection
        "jwt2", // introspects, but not accepted here
        "nope", // no such issuer
        "OP3",  // names are exact
        "",
    ] {
        assert_eq!(env.opaque("/hint", "zzz", Some(hint)), bad_hint, "{hint:?}");
    }
    assert_eq!(env.opaque("/hint-all", "zzz", Some("jwt1")), bad_hint);
    // No header: no rule.
    assert_eq!(
        env.opaque("/hint", "zzz", None),
        invalid_token(issuer::NO_RULE, None)
    );
    assert_eq!((env.cache.puts, env.cache.hits), (0, 0));
}

#[test]
fn no_rule_no_default_no_hint_refuses_the_token() {
    let mut env = opaque_env();
    let no_rule = invalid_token(issuer::NO_RULE, None);
    for token in ["zzz", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "a.b.c.d"] {
        assert_eq!(env.opaque("/any", token, None), no_rule, "{token}");
        // The hint header is ignored on a route that has no issuer_header.
        assert_eq!(env.opaque("/any", token, Some("op3")), no_rule, "{token}");
    }
}

/// Every combination of route, token and hint: a decision to introspect names exactly the
/// issuer the rules select (first matching `opaque_tokens` rule, then `opaque_issuer`, then an
/// accepted introspecting issuer named by the hint), and no other outcome is an introspection.
#[test]
fn introspection_is_only_ever_at_the_selected_issuer() {
    struct Rules {
        path: &'static str,
        /// Empty: every issuer.
        accepts: &'static [usize],
        opaque_issuer: Option<usize>,
        hint: bool,
    }
    let routes = [
        Rules {
            path: "/any",
            accepts: &[],
            opaque_issuer: None,
            hint: false,
        },
        Rules {
            path: "/dflt-hint",
            accepts: &[],
            opaque_issuer: Some(OP3),
            hint: true,
        },
        Rules {
            path: "/dflt",
            accepts: &[],
            opaque_issuer: Some(OP3),
            hint: false,
        },
        Rules {
            path: "/hint-all",
            accepts: &[],
            opaque_issuer: None,
            hint: true,
        },
        Rules {
            path: "/hint",
            accepts: &[JWT1, OP1, OP3],
            opaque_issuer: None,
            hint: true,
        },
        Rules {
            path: "/op1only",
            accepts: &[OP1],
            opaque_issuer: Some(OP1),
            hint: false,
        },
    ];
    let by_rule = |token: &str| {
        let b = token.as_bytes();
        if token.starts_with("op1_") {
            Some(OP1)
        } else if b.len() >= 4
            && b.starts_with(b"op")
            && b[2].is_ascii_digit()
            && b[3] == b'_'
            && b[4..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            Some(OP2)
        } else {
            None
        }
    };
    let index = |name: &str| {
        ["jwt1", "op1", "op2", "op3", "jwt2"]
            .iter()
            .position(|n| *n == name)
    };
    let introspects = [OP1, OP2, OP3, JWT2];
    let mut env = opaque_env();
    let mut introspections = 0;
    for route in &routes {
        let accepted = |i: usize| route.accepts.is_empty() || route.accepts.contains(&i);
        for token in [
            "op1_abc", "op1_", "op2_abc", "op9_0", "op2_ABC", "zzz", "a.b.c", "op3",
        ] {
            for hint in [
                None,
                Some("jwt1"),
                Some("op1"),
                Some("op2"),
                Some("op3"),
                Some("jwt2"),
                Some("x"),
            ] {
                let expected = match by_rule(token) {
                    Some(i) if accepted(i) => env.introspect_at(i, token),
                    Some(i) => invalid_token(NOT_ACCEPTED_HERE, Some(i)),
                    None => match (route.opaque_issuer, route.hint, hint) {
                        (Some(i), _, _) => env.introspect_at(i, token),
                        (None, true, Some(h)) => match index(h) {
                            Some(i) if accepted(i) && introspects.contains(&i) => {
                                env.introspect_at(i, token)
                            }
                            _ => invalid_token(issuer::BAD_HINT, None),
                        },
                        _ => invalid_token(issuer::NO_RULE, None),
                    },
                };
                let got = env.opaque(route.path, token, hint);
                assert_eq!(got, expected, "{} {token} {hint:?}", route.path);
                introspections +=
                    usize::from(matches!(got, Decision::Wait(Wait::Introspect { .. })));
            }
        }
    }
    assert!(introspections > 50, "{introspections}");
    assert_eq!(env.cache.puts, 0);
}

#[test]
fn introspect_decision_carries_the_tokens_cache_key() {
    let mut env = opaque_env();
    let d = env.opaque("/any", "op1_abc", None);
    let Decision::Wait(Wait::Introspect {
        issuer,
        key,
        token,
        verified,
    }) = d
    else {
        panic!("{d:?}");
    };
    assert_eq!(issuer, OP1);
    assert_eq!(key, cache::key_for(&env.cfg.fingerprint, "op1_abc"));
    assert_eq!(token, "op1_abc", "the token to send");
    assert_ne!(key, cache::key_for(&env.cfg.fingerprint, "op1_abd"));
    assert_eq!(verified, None);
}

#[test]
fn introspection_is_unavailable_when_the_request_may_not_wait() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque_full("/any", "op2_abc", None, MayWait::No, None),
        denied(Denial::IntrospectionUnavailable, Some(OP2))
    );
    assert_eq!(
        env.opaque_full("/hint", "zzz", Some("op3"), MayWait::No, None),
        denied(Denial::IntrospectionUnavailable, Some(OP3))
    );
    // Refusals that need no answer stay what they are.
    assert_eq!(
        env.opaque_full("/any", "zzz", None, MayWait::No, None),
        invalid_token(issuer::NO_RULE, None)
    );
}

#[test]
fn a_fresh_active_answer_allows_with_the_answers_identity() {
    let mut env = opaque_env();
    let fresh = active_entry(OP3, "read");
    for may_wait in [MayWait::Yes, MayWait::No] {
        let d = env.opaque_full("/scoped", "zzz", None, may_wait, Some(&fresh));
        let expected: Vec<(String, String)> = [
            ("x-tollgate-client-id", "mobile"),
            ("x-tollgate-scope", "read"),
            ("x-tollgate-sub", "dana"),
            ("x-tollgate-issuer", "op3"),
        ]
        .iter()
        .map(|(h, v)| ((*h).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            d,
            Decision::Done(Verdict::Allow {
                issuer: Some(OP3),
                headers: expected,
                cache_hit: false,
            })
        );
    }
    assert_eq!(
        (env.cache.gets, env.cache.puts),
        (0, 0),
        "the answer, not the cache"
    );
}

#[test]
fn a_fresh_active_answer_still_meets_the_routes_requirements() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque_full(
            "/scoped",
            "zzz",
            None,
            MayWait::Yes,
            Some(&active_entry(OP3, "write"))
        ),
        denied(
            Denial::InsufficientScope {
                scope: "read".into()
            },
            Some(OP3)
        )
    );
    // An answer from an issuer the route does not accept.
    assert_eq!(
        env.opaque_full(
            "/jwt1",
            "zzz",
            None,
            MayWait::Yes,
            Some(&active_entry(OP3, "read"))
        ),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP3))
    );
}

#[test]
fn a_fresh_inactive_answer_denies() {
    let mut env = opaque_env();
    for may_wait in [MayWait::Yes, MayWait::No] {
        assert_eq!(
            env.opaque_full(
                "/any",
                "op1_abc",
                None,
                may_wait,
                Some(&inactive_entry(OP1))
            ),
            denied(Denial::InactiveToken, Some(OP1))
        );
    }
    assert_eq!(
        env.cache.remembered,
        vec![inactive_entry(OP1), inactive_entry(OP1)],
        "remembered by the worker too (the shared slot may keep another token's entry)"
    );
}

#[test]
fn a_fresh_active_answer_is_not_remembered_by_the_worker() {
    let mut env = opaque_env();
    let d = env.opaque_full(
        "/any",
        "op1_abc",
        None,
        MayWait::No,
        Some(&active_entry(OP1, "read")),
    );
    assert!(matches!(d, Decision::Done(Verdict::Allow { .. })));
    assert!(
        env.cache.remembered.is_empty(),
        "only the shared cache, under the revocation epoch rule"
    );
}

#[test]
fn a_cached_negative_answer_denies_without_asking_again() {
    let mut env = opaque_env();
    let token = "op1_revoked";
    assert_eq!(
        env.opaque("/any", token, None),
        env.introspect_at(OP1, token)
    );
    // The adapter caches the answer.
    let key = env.key(token);
    env.cache.put(&key, &inactive_entry(OP1), NOW_MS);
    for path in ["/any", "/op1only", "/hint"] {
        assert_eq!(
            env.opaque(path, token, None),
            denied(Denial::InactiveToken, Some(OP1)),
            "{path}"
        );
    }
    assert_eq!(env.cache.hits, 3);
    // Until the negative TTL is over; then the issuer is asked again.
    let value = format!("Bearer {token}");
    let at = |env: &mut Env, now| env.decide_full("/any", &[&value], &[], now, MayWait::Yes, None);
    assert_eq!(
        at(&mut env, NOW_MS + NEGATIVE_TTL_MS - 1),
        denied(Denial::InactiveToken, Some(OP1))
    );
    assert_eq!(
        at(&mut env, NOW_MS + NEGATIVE_TTL_MS),
        env.introspect_at(OP1, token)
    );
}

#[test]
fn a_cached_positive_answer_is_a_cache_hit_that_still_checks_the_route() {
    let mut env = opaque_env();
    let token = "op2_good";
    let key = env.key(token);
    env.cache.put(&key, &active_entry(OP2, "write"), NOW_MS);
    assert!(allowed(OP2, true)(&env.opaque("/any", token, None)));
    assert_eq!(
        env.opaque("/op1only", token, None),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP2))
    );
    assert_eq!(
        env.opaque("/scoped", token, None),
        denied(
            Denial::InsufficientScope {
                scope: "read".into()
            },
            Some(OP2)
        )
    );
    // Dead after the max TTL: introspected again.
    let value = format!("Bearer {token}");
    assert_eq!(
        env.decide_full(
            "/any",
            &[&value],
            &[],
            NOW_MS + MAX_TTL_MS,
            MayWait::Yes,
            None
        ),
        env.introspect_at(OP2, token)
    );
}

#[test]
fn opaque_tokens_are_introspected_without_a_cache_too() {
    let mut env = Env::from_text(&opaque_config_json(json!({"cache": {"max_entries": 0}})));
    assert_eq!(
        env.opaque("/any", "op1_abc", None),
        env.introspect_at(OP1, "op1_abc")
    );
    let fresh = active_entry(OP1, "read");
    assert!(allowed(OP1, false)(&env.opaque_full(
        "/any",
        "op1_abc",
        None,
        MayWait::Yes,
        Some(&fresh)
    )));
    assert_eq!((env.cache.gets, env.cache.puts), (0, 0));
}

#[test]
fn introspect_jwts_verifies_first_then_asks_with_the_verified_claims() {
    let mut env = opaque_env();
    let token = as2_token();
    let d = env.opaque("/any", &token, None);
    let Decision::Wait(Wait::Introspect {
        issuer,
        key,
        verified: Some(v),
        ..
    }) = d
    else {
        panic!("{d:?}");
    };
    assert_eq!((issuer, key), (JWT2, env.key(&token)));
    assert_eq!(v.issuer, JWT2);
    assert_eq!(v.exp_ms, (NOW_S as u64 + 3600) * 1000);
    assert_eq!(&Value::Object(v.claims.clone()), &as2_payload());
    assert_eq!(
        env.cache.puts, 0,
        "not cached before the issuer vouched for it"
    );
    assert_eq!(
        env.opaque_full("/any", &token, None, MayWait::No, None),
        denied(Denial::IntrospectionUnavailable, Some(JWT2))
    );
    // Active: the JWT's own claims are forwarded.
    let answer = crate::introspect::Answer::Active {
        claims: answer_claims("other"),
        exp_s: None,
    };
    let fresh = crate::introspect::entry(JWT2, answer, Some(v.clone()), ttl(), NOW_MS);
    let d = env.opaque_full("/any", &token, None, MayWait::Yes, Some(&fresh));
    assert!(allowed(JWT2, false)(&d));
    assert!(headers_of(&d).contains(&("x-tollgate-sub".into(), "bob".into())));
    // Revoked: refused.
    let revoked = crate::introspect::entry(
        JWT2,
        crate::introspect::Answer::Inactive("the token is not active"),
        Some(v),
        ttl(),
        NOW_MS,
    );
    assert_eq!(
        env.opaque_full("/any", &token, None, MayWait::Yes, Some(&revoked)),
        denied(Denial::InactiveToken, Some(JWT2))
    );
}

#[test]
fn introspect_jwts_refuses_a_bad_jwt_without_asking() {
    let mut env = opaque_env();
    let mut expired = as2_payload();
    expired["exp"] = json!(NOW_S - 3600);
    let expired = sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &expired,
    );
    // as2's claims signed with as1's key under as2's kid.
    let forged = sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-b"), None),
        &as2_payload(),
    );
    for (token, why) in [
        (expired, JwtError::Expired),
        (forged, JwtError::BadSignature),
        (as2_ps256_token(), JwtError::AlgNotAllowed),
    ] {
        assert_eq!(
            env.opaque("/any", &token, None),
            invalid_token(why.describe(), Some(JWT2))
        );
    }
    // A JWT of an issuer the route does not accept is refused before anything else.
    assert_eq!(
        env.opaque("/jwt1", &as2_token(), None),
        invalid_token(NOT_ACCEPTED_HERE, Some(JWT2))
    );
}

#[test]
fn jwts_of_an_issuer_without_introspect_jwts_are_not_introspected() {
    let mut env = opaque_env();
    let token = as1_read_token();
    assert!(allowed(JWT1, false)(&env.opaque("/any", &token, None)));
    assert!(allowed(JWT1, true)(&env.opaque("/any", &token, None)));
    assert_eq!(env.cache.puts, 1);
}

#[test]
fn a_jws_is_never_treated_as_opaque() {
    let mut env = opaque_env();
    // A JWT naming an introspection-only issuer: that issuer has no keys; no introspection.
    let p = json!({"iss": "https://op1.example.com", "sub": "x", "exp": NOW_S + 3600});
    let token = sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p);
    assert_eq!(
        env.opaque("/dflt", &token, Some("op3")),
        invalid_token(JwtError::UnknownKey.describe(), Some(OP1))
    );
    // A JWS from nobody is not sent to the route's opaque_issuer either.
    assert_eq!(
        env.opaque("/dflt", &unknown_issuer_token(), None),
        invalid_token(UNTRUSTED_ISSUER, None)
    );
    assert_eq!(env.cache.puts, 0);
}

#[test]
fn without_an_introspecting_issuer_every_token_must_be_a_jwt() {
    let mut env = Env::new();
    assert!(env.cfg.issuers.iter().all(|i| i.introspection.is_none()));
    for token in ["op1_abc", "zzz", "a.b.c", "not.a-jwt"] {
        for may_wait in [MayWait::Yes, MayWait::No] {
            assert_eq!(
                env.bearer_at("/api", token, NOW_MS, may_wait),
                invalid_token("the token is not a well-formed JWT", None),
                "{token}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Single flight across workers: the claim on a token's cache slot
// ---------------------------------------------------------------------------------------------

/// The entry a worker that verified `token` puts in the shared cache.
fn verified_entry(env: &Env, token: &str) -> Cached {
    let mut peer = Env::from_text(&config_json(json!({})));
    assert_eq!(peer.cfg.fingerprint, env.cfg.fingerprint);
    assert!(allowed(AS1, false)(&peer.bearer("/api", token)));
    let key = cache::key_for(&env.cfg.fingerprint, token);
    cache::decode(&key, &peer.cache.slots[&key], NOW_MS).unwrap()
}

#[test]
fn a_miss_claims_the_slot_right_before_verifying_and_the_entry_ends_the_claim() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    assert!(allowed(AS1, false)(&env.bearer("/api", &token)));
    let c = &env.cache;
    assert_eq!((c.claims, c.puts, c.unclaims), (1, 1, 0));
    // Warm: a cache hit touches no claim.
    assert!(allowed(AS1, true)(&env.bearer("/api", &token)));
    assert_eq!(env.cache.claims, 1);
}

#[test]
fn a_token_another_worker_is_verifying_waits_for_its_entry() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    env.cache.peer = Some(Claim::Wait);
    assert_eq!(
        env.bearer("/api", &token),
        Decision::Wait(Wait::Peer {
            issuer: AS1,
            key: cache::key_for(&env.cfg.fingerprint, &token),
        })
    );
    assert_eq!((env.cache.puts, env.cache.unclaims), (0, 0), "not verified");
    // The peer's entry lands: decided again, it is a cache hit (no verification here).
    let entry = verified_entry(&env, &token);
    let key = cache::key_for(&env.cfg.fingerprint, &token);
    env.cache.slots.insert(key, cache::encode(&key, &entry));
    let d = env.bearer_at("/api", &token, NOW_MS, MayWait::NotForPeer);
    assert!(allowed(AS1, true)(&d));
    assert_eq!((env.cache.claims, env.cache.puts), (1, 0));
}

#[test]
fn after_waiting_for_a_peer_in_vain_the_token_is_verified_here() {
    let token = as1_read_write_token();
    for may_wait in [MayWait::NotForPeer, MayWait::No] {
        let mut env = Env::new();
        // Still claimed (by a third worker): no second wait.
        env.cache.peer = Some(Claim::Wait);
        assert!(allowed(AS1, false)(
            &env.bearer_at("/api", &token, NOW_MS, may_wait)
        ));
        assert_eq!((env.cache.claims, env.cache.puts), (1, 1), "{may_wait:?}");
    }
}

#[test]
fn an_entry_that_landed_by_claim_time_is_a_cache_hit_and_still_meets_the_route() {
    let mut env = Env::new();
    let token = as1_read_token();
    env.cache.peer = Some(Claim::Found(verified_entry(&env, &token)));
    let d = env.bearer("/read", &token);
    assert!(allowed(AS1, true)(&d));
    assert!(headers_of(&d).contains(&("x-tollgate-sub".into(), "alice".into())));
    assert!(matches!(
        env.bearer("/admin", &token),
        Decision::Done(Verdict::Deny {
            denial: Denial::InsufficientScope { .. },
            issuer: Some(AS1)
        })
    ));
    assert_eq!(env.cache.puts, 0);
    // An entry naming no configured issuer is no answer: verified here.
    env.cache.peer = Some(Claim::Found(Cached::Invalid {
        issuer: 99,
        until_ms: NOW_MS + 1,
    }));
    assert!(allowed(AS1, false)(&env.bearer("/read", &token)));
    assert_eq!(env.cache.puts, 1);
}

#[test]
fn a_refused_token_frees_its_claim() {
    let mut env = Env::new();
    let forged = sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-a"), None),
        &as1_payload("read"),
    );
    for token in [expired_token(), forged] {
        assert!(matches!(
            env.bearer("/api", &token),
            Decision::Done(Verdict::Deny {
                denial: Denial::InvalidToken(_),
                issuer: Some(AS1)
            })
        ));
    }
    let c = &env.cache;
    assert_eq!((c.claims, c.unclaims, c.puts), (2, 2, 0));
}

#[test]
fn cheap_refusals_and_key_waits_claim_nothing() {
    let mut env = Env::new();
    for token in [
        unknown_issuer_token(),
        alg_none_token(),
        kid_from_other_issuer_token(), // unknown kid: waits for keys
        as3_token(),                   // no keys yet: waits for keys
        "not.a.jwt".to_owned(),
    ] {
        assert!(!matches!(
            env.bearer("/api", &token),
            Decision::Done(Verdict::Allow { .. })
        ));
    }
    assert_eq!(env.cache.claims, 0);
}

#[test]
fn after_a_peer_the_request_may_still_wait_for_keys() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer_at("/api", &as3_token(), NOW_MS, MayWait::NotForPeer),
        Decision::Wait(Wait::Keys {
            issuer: AS3,
            unknown_kid: false
        })
    );
    assert_eq!(
        env.bearer_at(
            "/api",
            &kid_from_other_issuer_token(),
            NOW_MS,
            MayWait::NotForPeer
        ),
        Decision::Wait(Wait::Keys {
            issuer: AS1,
            unknown_kid: true
        })
    );
}

#[test]
fn no_claims_without_a_cache_or_for_tokens_that_are_introspected_too() {
    let mut env = Env::with(json!({"cache": {"max_entries": 0}}));
    env.cache.peer = Some(Claim::Wait);
    assert!(allowed(AS1, false)(
        &env.bearer("/api", &as1_read_write_token())
    ));
    assert_eq!(env.cache.claims, 0);
    // introspect_jwts: the entry waits for the introspection (single flight of its own).
    let mut env = opaque_env();
    env.cache.peer = Some(Claim::Wait);
    assert!(matches!(
        env.opaque("/any", &as2_token(), None),
        Decision::Wait(Wait::Introspect {
            issuer: JWT2,
            verified: Some(_),
            ..
        })
    ));
    assert_eq!(env.cache.claims, 0);
    // A plain JWT issuer of the same configuration claims.
    env.cache.peer = None;
    assert!(allowed(JWT1, false)(&env.opaque(
        "/any",
        &as1_read_write_token(),
        None
    )));
    assert_eq!(env.cache.claims, 1);
}

// ---------------------------------------------------------------------------------------------
// Cached verifications and the key that made them
// ---------------------------------------------------------------------------------------------

/// `as3`'s held keys become `keys` (a refresh landed: a new generation).
fn refresh_as3(env: &mut Env, keys: &[Value], generation: u64) {
    let (keys, _) = KeySet::from_value(&jwks(keys)).unwrap();
    env.ring.set(
        AS3,
        Held {
            keys,
            fetched_at: Some(NOW_MS),
            generation,
        },
    );
}

#[test]
fn a_cached_verification_records_the_key_that_made_it() {
    let mut env = Env::new();
    env.fetch_as3(NOW_MS);
    let token = as3_token();
    assert!(allowed(AS3, false)(&env.bearer("/api", &token)));
    let key = env.key(&token);
    let Some(Cached::Valid(v)) = cache::decode(&key, &env.cache.slots[&key], NOW_MS) else {
        panic!("not cached")
    };
    let held = env.ring.held(AS3).unwrap();
    let id = v.key.expect("a key id");
    assert!(held.keys.has_id(id));
    assert_eq!(
        held.keys
            .candidates(Some("as3-rsa"), Alg::Rs256)
            .next()
            .unwrap()
            .id,
        id
    );
}

#[test]
fn a_cached_verification_stops_counting_once_its_key_leaves_the_issuers_set() {
    let mut env = Env::new();
    env.fetch_as3(NOW_MS);
    let token = as3_token();
    assert!(allowed(AS3, false)(&env.bearer("/api", &token)));
    assert!(allowed(AS3, true)(&env.bearer("/api", &token)));
    // The issuer rotates: the old key is still published (under another kid, too): still hits.
    refresh_as3(
        &mut env,
        &[
            TestKey::P256.public_jwk_as("as3-new", None),
            TestKey::RsaB.public_jwk_as("as3-renamed", None),
        ],
        2,
    );
    assert!(allowed(AS3, true)(&env.bearer("/api", &token)));
    // The old key is dropped: the entry is a miss; the token is checked again and refused.
    refresh_as3(&mut env, &[TestKey::P256.public_jwk_as("as3-new", None)], 3);
    let hits = env.cache.hits;
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::No),
        invalid_token(JwtError::UnknownKey.describe(), Some(AS3))
    );
    assert_eq!(
        env.bearer("/api", &token),
        Decision::Wait(Wait::Keys {
            issuer: AS3,
            unknown_kid: true
        }),
        "may wait: an early refetch, then refused"
    );
    assert_eq!(env.cache.hits, hits + 2, "the slot still holds the entry");
    // Keys missing altogether (not synced yet in this worker): no hit either.
    env.ring = KeyRing::new(env.cfg.issuers.len());
    assert!(matches!(
        env.bearer("/api", &token),
        Decision::Wait(Wait::Keys { issuer: AS3, .. })
    ));
}

#[test]
fn a_peers_entry_made_with_a_key_no_longer_held_is_not_used() {
    let mut env = Env::new();
    let token = as1_read_write_token();
    let Cached::Valid(mut v) = verified_entry(&env, &token) else {
        panic!("not valid")
    };
    v.key = Some(v.key.unwrap() ^ 1); // a key this worker does not hold
    env.cache.peer = Some(Claim::Found(Cached::Valid(v)));
    assert!(
        allowed(AS1, false)(&env.bearer("/api", &token)),
        "verified here"
    );
    assert_eq!(env.cache.puts, 1);
}

/// A per-worker memo only (what [`crate::cache::LocalMemo`] answers in the adapter).
struct MemoOnly(Option<Cached>);

impl TokenCache for MemoOnly {
    fn get(&mut self, _key: &CacheKey, _now_ms: u64) -> Option<Cached> {
        None
    }
    fn put(&mut self, _key: &CacheKey, _entry: &Cached, _now_ms: u64) {}
    fn get_local(&mut self, _token: &str, _now_ms: u64) -> Option<Cached> {
        self.0.clone()
    }
}

#[test]
fn a_remembered_verification_is_checked_against_the_held_keys_too() {
    let mut env = Env::new();
    env.fetch_as3(NOW_MS);
    let token = as3_token();
    assert!(allowed(AS3, false)(&env.bearer("/api", &token)));
    let key = env.key(&token);
    let entry = cache::decode(&key, &env.cache.slots[&key], NOW_MS).unwrap();
    let mut memo = MemoOnly(Some(entry));
    let value = format!("Bearer {token}");
    let req = RequestFacts {
        method: "GET",
        path: "/api",
        authority: "api.example.com",
        route_name: None,
        headers: &[],
    };
    let mut decide = |ring: &KeyRing| {
        let mut deciding = Deciding {
            cfg: &env.cfg,
            ring,
            cache: &mut memo,
            now_ms: NOW_MS,
        };
        let request = Request {
            facts: &req,
            authorization: &[&value],
        };
        authenticate(&mut deciding, &request, MayWait::No, None)
    };
    assert!(allowed(AS3, true)(&decide(&env.ring)));
    let mut dropped = KeyRing::new(env.cfg.issuers.len());
    let (keys, _) =
        KeySet::from_value(&jwks(&[TestKey::P256.public_jwk_as("as3-new", None)])).unwrap();
    dropped.set(
        AS3,
        Held {
            keys,
            fetched_at: Some(NOW_MS),
            generation: 2,
        },
    );
    assert_eq!(
        decide(&dropped),
        invalid_token(JwtError::UnknownKey.describe(), Some(AS3))
    );
}

#[test]
fn introspected_entries_have_no_key_and_stay_hits() {
    let mut env = opaque_env();
    let token = "op1_abcdef";
    let key = env.key(token);
    env.cache.put(&key, &active_entry(OP1, "read"), NOW_MS);
    env.ring = KeyRing::new(env.cfg.issuers.len()); // no keys held at all
    assert!(matches!(
        env.opaque("/any", token, None),
        Decision::Done(Verdict::Allow {
            cache_hit: true,
            ..
        })
    ));
}
