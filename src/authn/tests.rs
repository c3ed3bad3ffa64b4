//! The per-request decision, end to end through the host-free core: a real configuration
//! (parsed from JSON, inline JWKS), a key ring, a map-backed token cache and a fixed clock.
//!
//! Issuers: `as1` (`https://as1.example.com`, audience `api://orders`, keys `rsa-a`,
//! `ec-p256`, `ec-p384`, `ed-25519`), `as2` (`https://as2.example.com`, RS256 only, key
//! `rsa-b`), `as3` (`https://as3.example.com`, remote JWKS, `max_stale_s` 600: its keys are
//! whatever a test puts in the ring).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use serde_json::{json, Value};

use super::*;
use crate::cache::{CacheKey, Cached, Verified};
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
#[derive(Default)]
struct MapCache {
    slots: HashMap<CacheKey, Vec<u8>>,
    gets: usize,
    hits: usize,
    puts: usize,
}

impl TokenCache for MapCache {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached> {
        self.gets += 1;
        let hit = cache::decode(key, self.slots.get(key)?, now_ms);
        self.hits += usize::from(hit.is_some());
        hit
    }
    fn put(&mut self, key: &CacheKey, entry: &Cached) {
        self.puts += 1;
        self.slots.insert(*key, cache::encode(key, entry));
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
        let cfg = FilterConfig::parse(config_json(extra).as_bytes()).expect("test config parses");
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
        let req = RequestFacts {
            method: "GET",
            path,
            authority: "api.example.com",
            route_name: None,
            headers: &[],
        };
        authenticate(
            &self.cfg,
            &req,
            authorization,
            &self.ring,
            &mut self.cache,
            now_ms,
            may_wait,
            None,
        )
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
    move |d| matches!(d, Decision::Allow { issuer: Some(i), cache_hit: c, .. } if *i == issuer && *c == cache_hit)
}

fn invalid_token(why: &'static str, issuer: Option<usize>) -> Decision {
    Decision::Deny {
        denial: Denial::InvalidToken(why),
        issuer,
    }
}

fn headers_of(d: &Decision) -> &[(String, String)] {
    match d {
        Decision::Allow { headers, .. } => headers,
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
        Decision::Allow {
            issuer: Some(AS1),
            headers: expected,
            cache_hit: false,
        }
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
    };
    env.cache.put(&key, &Cached::Valid(bogus));
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
        Decision::Deny {
            denial: Denial::InsufficientScope {
                scope: "admin".into()
            },
            issuer: Some(AS1),
        }
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
    let anonymous = Decision::Allow {
        issuer: None,
        headers: Vec::new(),
        cache_hit: false,
    };
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
        Decision::Deny {
            denial: Denial::NoRoute,
            issuer: None
        }
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
        Decision::Deny {
            denial: Denial::InsufficientScope {
                scope: "write".into()
            },
            issuer: Some(AS1),
        }
    );
    assert_eq!(
        env.decide("/elsewhere", &[], NOW_MS, MayWait::Yes),
        Decision::Deny {
            denial: Denial::MissingToken,
            issuer: None
        }
    );
    let mut open = Env::with(json!({"default_route": {"anonymous": true}}));
    assert!(matches!(
        open.decide("/elsewhere", &[], NOW_MS, MayWait::Yes),
        Decision::Allow { issuer: None, .. }
    ));
}

#[test]
fn missing_token() {
    let mut env = Env::new();
    let missing = Decision::Deny {
        denial: Denial::MissingToken,
        issuer: None,
    };
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
            Decision::Deny {
                denial: Denial::InvalidRequest(_),
                issuer: None
            }
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
        Decision::WaitForKeys {
            issuer: AS1,
            unknown_kid: true
        }
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
        Decision::WaitForKeys {
            issuer: AS3,
            unknown_kid: false
        }
    );
    assert_eq!(
        env.bearer_at("/api", &token, NOW_MS, MayWait::No),
        Decision::Deny {
            denial: Denial::KeysUnavailable,
            issuer: Some(AS3)
        }
    );
    env.fetch_as3(NOW_MS);
    assert!(allowed(AS3, false)(&env.bearer("/api", &token)));
}

#[test]
fn too_stale_keys_are_unavailable_and_never_waited_for() {
    let mut env = Env::new();
    let token = as3_token();
    env.fetch_as3(NOW_MS - AS3_MAX_STALE_MS - 1);
    let unavailable = Decision::Deny {
        denial: Denial::KeysUnavailable,
        issuer: Some(AS3),
    };
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
        Decision::Deny {
            denial: Denial::InsufficientScope {
                scope: "read write".into()
            },
            issuer: Some(AS1),
        }
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
        Decision::Deny {
            denial: Denial::InsufficientScope {
                scope: "ops admin".into()
            },
            issuer: Some(AS1),
        }
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
    let unsatisfied = Decision::Deny {
        denial: Denial::ClaimNotSatisfied,
        issuer: Some(AS1),
    };
    assert_eq!(
        env.bearer("/tenant", &tenant_token(Some("initech"))),
        unsatisfied
    );
    assert_eq!(env.bearer("/tenant", &tenant_token(None)), unsatisfied);
    assert!(allowed(AS1, false)(
        &env.bearer("/tenant", &tenant_token(Some("acme")))
    ));
}
