//! The per-request work of a verified-token cache hit, on the host, for profiling:
//! `cargo build --release -p tollgate-core --example warm_path && valgrind --tool=callgrind target/release/examples/warm_path`
//! (instruction counts are repeatable, unlike wall-clock time on a shared machine). It also
//! prints the mean time per decision: with only the shared cache, and with a worker's local memo
//! in front of it (what the Envoy adapter does).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Instant;

use jwt_compact::alg::Ed25519;
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::json;
use tollgate_core::authn::{authenticate, Deciding, Decision, MayWait, Request, Verdict};
use tollgate_core::cache::{self, CacheKey, Cached, LocalMemo, TokenCache};
use tollgate_core::config::{FilterConfig, KeySource};
use tollgate_core::jwks::{Held, KeyRing};
use tollgate_core::policy::RequestFacts;

/// The cache as the host keeps it (encoded slot values), in a map; optionally with the local
/// memo in front.
struct MapCache(HashMap<CacheKey, Vec<u8>>, Option<LocalMemo>);

impl TokenCache for MapCache {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached> {
        cache::decode(key, self.0.get(key)?, now_ms)
    }
    fn put(&mut self, key: &CacheKey, entry: &Cached, _now_ms: u64) {
        self.0.insert(*key, cache::encode(key, entry));
    }
    fn get_local(&mut self, token: &str, now_ms: u64) -> Option<Cached> {
        self.1.as_ref()?.get(token, now_ms).cloned()
    }
    fn remember(&mut self, token: &str, entry: &Cached) {
        if let Some(memo) = &mut self.1 {
            memo.put(token, entry);
        }
    }
}

fn main() {
    let (secret, public) = Ed25519::generate(&mut rand_core::OsRng);
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "k1",
                     "x": base64_url(&public[..])});
    let cfg = FilterConfig::parse(
        json!({
            "issuers": [{"name": "bench", "issuer": "https://as.example", "audiences": ["https://api"],
                         "jwks": {"inline": {"keys": [jwk]}}}],
            "routes": [{"match": {"prefix": "/api"}, "require": {"scopes": ["read"]}}]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("config");
    let now_s: i64 = 1_800_000_000;
    // Time claims ride in the custom part, as an authorization server writes them.
    let payload = json!({"iss": "https://as.example", "aud": "https://api", "sub": "alice",
                         "client_id": "app", "scope": "read write", "jti": "x",
                         "iat": now_s, "nbf": now_s - 10, "exp": now_s + 3600});
    let claims = Claims::new(payload.as_object().cloned().expect("object"));
    let token = Ed25519
        .token(&Header::empty().with_key_id("k1"), &claims, &secret)
        .expect("token");
    let mut ring = KeyRing::new(1);
    if let Some(KeySource::Inline(keys)) = &cfg.issuers[0].keys {
        ring.set(
            0,
            Held {
                keys: keys.clone(),
                fetched_at: None,
                generation: 0,
            },
        );
    }
    let authorization = format!("Bearer {token}");
    let req = RequestFacts {
        method: "GET",
        path: "/api/orders",
        authority: "api",
        route_name: None,
        headers: &[],
    };
    let now_ms = now_s as u64 * 1000;
    for (label, memo) in [
        ("shared cache only", None),
        ("local memo in front", Some(LocalMemo::new(1024))),
    ] {
        let mut store = MapCache(HashMap::new(), memo);
        let mut decide = || {
            let mut deciding = Deciding {
                cfg: &cfg,
                ring: &ring,
                cache: &mut store,
                now_ms,
                nonce_secret: None,
            };
            let request = Request {
                facts: &req,
                authorization: &[&authorization],
                sender: Default::default(),
            };
            authenticate(&mut deciding, &request, MayWait::Yes, None)
        };
        let first = decide(); // verifies and caches
        assert!(
            matches!(
                first,
                Decision::Done(Verdict::Allow {
                    cache_hit: false,
                    ..
                })
            ),
            "{first:?}"
        );
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            let d = decide();
            assert!(matches!(
                d,
                Decision::Done(Verdict::Allow {
                    cache_hit: true,
                    ..
                })
            ));
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!("warm decision, {label}: {per:.2} µs");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
