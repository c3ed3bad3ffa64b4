//! The per-request decision, end to end through the host-free core: a real configuration
//! (parsed from JSON, inline JWKS), a key ring, a map-backed token cache and a fixed clock.
//!
//! Issuers: `as1` (`https://as1.example.com`, audience `api://orders`, keys `rsa-a`,
//! `ec-p256`, `ec-p384`, `ed-25519`), `as2` (`https://as2.example.com`, RS256 only, key
//! `rsa-b`), `as3` (`https://as3.example.com`, remote JWKS, `max_stale_s` 600: its keys are
//! whatever a test puts in the ring).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod allow;
mod cached_keys;
mod introspection;
mod keys;
mod opaque_issuers;
mod requirements;
mod routes;
mod sender;
mod single_flight;
mod step_up;

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
use crate::key::Alg;
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
            nonce_secret: None,
        };
        let request = Request {
            facts: &req,
            authorization,
            sender: Sender::default(),
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
        challenge: route_challenge(),
        denial: Denial::InvalidToken(why),
        issuer,
    })
}

fn headers_of(d: &Decision) -> Vec<(String, String)> {
    match d {
        Decision::Done(Verdict::Allow { headers, .. }) => headers.to_vec(),
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

/// The entry a worker that verified `token` puts in the shared cache.
fn verified_entry(env: &Env, token: &str) -> Cached {
    let mut peer = Env::from_text(&config_json(json!({})));
    assert_eq!(peer.cfg.fingerprint, env.cfg.fingerprint);
    assert!(allowed(AS1, false)(&peer.bearer("/api", token)));
    let key = cache::key_for(&env.cfg.fingerprint, token);
    cache::decode(&key, &peer.cache.slots[&key], NOW_MS).unwrap()
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
    Decision::Done(Verdict::Deny {
        denial,
        issuer,
        challenge: route_challenge(),
    })
}

/// The challenges of the test routes: every issuer takes Bearer, and DPoP with the default
/// proof algorithms (`dpop.mode` is `allowed` unless configured).
pub(super) fn route_challenge() -> Challenge {
    let mut algs = crate::key::AlgSet::default();
    algs.insert(Alg::Es256);
    algs.insert(Alg::EdDsa);
    Challenge {
        bearer: true,
        dpop: Some(algs),
        used: Scheme::Bearer,
        resource: None,
    }
}
