//! Times tollgate's JWT verification (base64 + JSON + signature + claim checks) per algorithm,
//! and key-set loading, on fixtures written by `mint.py`. Prints µs per operation (median of
//! batches). Built for wasm32-wasip1 and run under Node's WASI by `bench/crypto/run`; also runs
//! natively for comparison.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_core::authn::{authenticate, Deciding, Decision, MayWait, Request, Sender, Verdict};
use tollgate_core::flow::host::{Host, Metric};
use tollgate_core::http::HttpRequest;
use tollgate_core::flow::replay;
use tollgate_core::cache::{self, CacheKey, Cached, TokenCache};
use tollgate_core::config::{FilterConfig, KeySource};
use tollgate_core::jwks::{Held, KeyRing, KeySet};
use tollgate_core::jwt::{self, Expectations};
use tollgate_core::key::{Alg, AlgSet};
use tollgate_core::policy::RequestFacts;

/// The shared token cache as the host keeps it (encoded slot values), in a map.
struct MapCache(HashMap<CacheKey, Vec<u8>>);

impl TokenCache for MapCache {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached> {
        cache::decode(key, self.0.get(key)?, now_ms)
    }
    fn put(&mut self, key: &CacheKey, entry: &Cached, _now_ms: u64) {
        self.0.insert(*key, cache::encode(key, entry));
    }
    fn get_local(&mut self, _token: &str, _now_ms: u64) -> Option<Cached> {
        None
    }
    fn remember(&mut self, _token: &str, _entry: &Cached) {}
}

/// Shared data as a host keeps it (value and compare-and-swap number per key), in a map: what
/// the DPoP replay store reads and writes. Everything else a host does is a no-op here.
#[derive(Default)]
struct MapHost {
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    cas: RefCell<u32>,
}

impl Host for MapHost {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.data.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut data = self.data.borrow_mut();
        if let (Some(want), Some((_, have))) = (cas, data.get(key)) {
            if want != *have {
                return false;
            }
        }
        let next = {
            let mut c = self.cas.borrow_mut();
            *c += 1;
            *c
        };
        data.insert(key.to_owned(), (value.to_vec(), next));
        true
    }
    fn dispatch(&self, _request: &HttpRequest) -> Option<u32> {
        None
    }
    fn set_effective_context(&self, _context_id: u32) -> bool {
        true
    }
    fn resume_request(&self) -> bool {
        true
    }
    fn send_response(&self, _status: u32, _headers: &[(String, String)], _body: &str) -> bool {
        true
    }
    fn set_request_header(&self, _name: &str, _value: &str) {}
    fn remove_request_header(&self, _name: &str) {}
    fn set_tick_period(&self, _period: Duration) -> bool {
        true
    }
    fn record(&self, _metric: Metric) {}
    fn random(&self, _buf: &mut [u8]) -> bool {
        false
    }
}

/// The DPoP replay store's own work per accepted proof (flow/replay.rs: the proof's id, its
/// bucket read, decoded, checked, encoded and written back), with `live` proofs already in the
/// store, in a host map (so the host's side of shared data, Envoy's lock and map, is not in it).
fn replay_store(live: usize) {
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let now_ms = 1_800_000_000_000u64;
    let mut batches = Vec::new();
    for round in 0..10 {
        let host = MapHost::default();
        for i in 0..live {
            let id = replay::proof_id(jkt, &format!("filler-{round}-{i}"));
            replay::record(&host, replay::BUCKETS, &id, now_ms + 60_000, now_ms);
        }
        let n = 2000;
        let t = Instant::now();
        for i in 0..n {
            let id = replay::proof_id(jkt, &format!("measured-{round}-{i}-0123456789abcdef"));
            let seen = replay::record(&host, replay::BUCKETS, &id, now_ms + 60_000, now_ms);
            std::hint::black_box(seen);
        }
        if round > 0 {
            batches.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    println!("{:<8} {:>10.2} us  per proof recorded, {live} live proofs in the store (replay store, plugin side)",
             "replay", median(batches));
}

/// A DPoP proof's whole check (`dpop::check`: header, key, thumbprint, signature, claims, htu,
/// iat, ath), one client key for all proofs as a client sends them; and its parts.
fn dpop_proofs(fx: &Value, now: i64) {
    use tollgate_core::dpop;
    let d = &fx["dpop"];
    let proofs: Vec<&str> = d["proofs"].as_array().expect("proofs").iter().filter_map(Value::as_str).collect();
    let token = d["token"].as_str().expect("token");
    let uri = d["uri"].as_str().expect("uri");
    let mut algorithms = AlgSet::default();
    algorithms.insert(Alg::Es256);
    let policy = dpop::Policy { algorithms, iat_window_s: 60 };
    let expected = dpop::Expected { method: "GET", uri, access_token: token, nonce: None, bound_to: None };
    let time = |label: &str, f: &dyn Fn(&str)| {
        let mut batches = Vec::new();
        for round in 0..10 {
            let t = Instant::now();
            for p in &proofs {
                f(p);
            }
            if round > 0 {
                batches.push(t.elapsed().as_secs_f64() * 1e6 / proofs.len() as f64);
            }
        }
        println!("{label:<8} {:>10.1} us  per proof", median(batches));
    };
    time("dpop", &|p| {
        let got = dpop::check(p, &expected, &policy, now).expect("proof holds");
        assert_eq!(got.jkt, d["jkt"].as_str().expect("jkt"));
    });
    time("ath", &|_| {
        std::hint::black_box(dpop::ath(token));
    });
    time("htu", &|_| {
        std::hint::black_box(dpop::request_uri("https", "api.bench.example", "/api/orders", None));
    });
}

/// The gateway minting its backend token (issue 17, `tollgate_core::sign`): the whole compact
/// JWS (header and claims JSON, base64url, the signature) per algorithm, one active key, `n`
/// distinct claim sets (distinct `sub` and `jti`) as the request flow would mint them.
fn signing(fx: &Value, n: usize, now: i64) {
    use tollgate_core::sign::{SigningKey, SigningKeys};
    let kids: Vec<(String, Alg)> = fx["signing_keys"].as_array().expect("signing_keys").iter()
        .map(|jwk| SigningKey::from_jwk(jwk).expect("signing key"))
        .map(|k| (k.kid().to_owned(), k.alg())).collect();
    let ring_of = |active: &str| {
        let keys = fx["signing_keys"].as_array().expect("signing_keys").iter()
            .map(|jwk| SigningKey::from_jwk(jwk).expect("signing key")).collect();
        SigningKeys::new(keys, active).expect("signing keys")
    };
    // Key loading: one private JWK checked and loaded (the public key recomputed from `d`).
    for (i, (_, alg)) in kids.iter().enumerate() {
        let jwk = &fx["signing_keys"][i];
        let mut batches = Vec::new();
        for round in 0..10 {
            let t = Instant::now();
            for _ in 0..20 {
                std::hint::black_box(SigningKey::from_jwk(jwk).expect("signing key"));
            }
            if round > 0 {
                batches.push(t.elapsed().as_secs_f64() * 1e6 / 20.0);
            }
        }
        println!("{:<8} {:>10.1} us  per private JWK loaded (sign::SigningKey::from_jwk)", format!("load-{}", alg.name()), median(batches));
    }
    let claims: Vec<serde_json::Map<String, Value>> = (0..n).map(|i| json!({
        "iss": "https://gateway.bench.example", "aud": "orders-backend", "sub": format!("user-{i}"),
        "client_id": "bench-client", "scope": "read write", "acr": "urn:mace:incommon:iap:silver",
        "tollgate_issuer": "https://as1.bench.example", "jti": format!("{i:016x}{now:x}"),
        "iat": now, "exp": now + 300,
    }).as_object().expect("object").clone()).collect();
    for (kid, alg) in &kids {
        let ring = ring_of(kid);
        let mut batches = Vec::new();
        let mut last = String::new();
        for round in 0..10 {
            let t = Instant::now();
            for c in &claims {
                last = ring.sign(c);
            }
            if round > 0 {
                batches.push(t.elapsed().as_secs_f64() * 1e6 / claims.len() as f64);
            }
        }
        // The last token verifies against the published JWKS (the bench measures real tokens).
        let (set, _) = KeySet::parse(ring.public_jwks().as_bytes()).expect("published JWKS");
        let peeked = jwt::peek(&last).expect("peek");
        let key = set.candidates(peeked.kid(), *alg).next().expect("key");
        let mut algorithms = AlgSet::default();
        algorithms.insert(*alg);
        let audiences = vec!["orders-backend".to_owned()];
        let expect = Expectations { issuer: "https://gateway.bench.example", audiences: &audiences,
                                    algorithms, clock_skew_s: 0, require_at_jwt: false };
        jwt::verify(&peeked, key, &expect, now).expect("minted token verifies");
        let best = batches.iter().copied().fold(f64::INFINITY, f64::min);
        println!("{:<8} {:>10.1} us  per token signed (sign::SigningKeys::sign, {} B), best batch {best:.1} ({} tokens x 9 batches, median)",
                 format!("sign-{}", alg.name()), median(batches), last.len(), claims.len());
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "fixtures.json".into());
    let text = std::fs::read_to_string(&path).expect("fixtures file");
    let fx: Value = serde_json::from_str(&text).expect("fixtures JSON");
    let jwks = serde_json::to_vec(&fx["jwks"]).expect("jwks");
    let issuer = fx["issuer"].as_str().expect("issuer");
    let audiences = vec![fx["audience"].as_str().expect("audience").to_string()];
    let now = fx["now"].as_i64().expect("now");
    let filter = std::env::args().nth(2).unwrap_or_default();
    if filter == "replay" {
        for live in [0, 1_500, 10_000] {
            replay_store(live);
        }
        return;
    }
    if filter == "dpop" {
        dpop_proofs(&fx, now);
        return;
    }
    if let Some(alg) = filter.strip_prefix("fuel:sign-") {
        // bench/crypto/fuel.py: the gateway's key of ALG signs COUNT distinct claim sets.
        use tollgate_core::sign::{SigningKey, SigningKeys};
        let count: usize = std::env::args().nth(3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let keys: Vec<SigningKey> = fx["signing_keys"].as_array().expect("signing_keys").iter()
            .map(|jwk| SigningKey::from_jwk(jwk).expect("signing key"))
            .filter(|k| k.alg().name() == alg).collect();
        let kid = keys.first().expect("a signing key of that algorithm").kid().to_owned();
        let ring = SigningKeys::new(keys, &kid).expect("signing keys");
        for i in 0..count {
            let claims = json!({"iss": "https://gateway.bench.example", "sub": format!("user-{i}"),
                                "iat": now, "exp": now + 300});
            std::hint::black_box(ring.sign(claims.as_object().expect("object")));
        }
        return;
    }
    if let Some(alg) = filter.strip_prefix("fuel:") {
        // bench/crypto/fuel.py: verify the first COUNT tokens of ALG once each, nothing else
        // (runs under wasmtime with fuel; two counts give the instructions per verification).
        let count: usize = std::env::args().nth(3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (set, _) = KeySet::parse(&jwks).expect("keys");
        let mut algorithms = AlgSet::default();
        for alg in Alg::ALL {
            algorithms.insert(alg);
        }
        let expect = Expectations { issuer, audiences: &audiences, algorithms, clock_skew_s: 60, require_at_jwt: false };
        let tokens = fx["tokens"][alg].as_array().expect("tokens of that algorithm");
        for token in tokens.iter().filter_map(Value::as_str).take(count) {
            let peeked = jwt::peek(token).expect("peek");
            let key = set.candidates(peeked.kid(), peeked.alg().expect("alg")).next().expect("key");
            std::hint::black_box(jwt::verify(&peeked, key, &expect, now).expect("verify"));
        }
        return;
    }
    let per_alg = fx["tokens"]["ES256"].as_array().map_or(200, Vec::len);
    if filter == "sign" {
        signing(&fx, per_alg, now);
        return;
    }

    // Key loading (all keys of the set), nothing held before: a first load, or every key new.
    let mut loads = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let (set, _) = KeySet::parse(&jwks).expect("keys");
        loads.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(set);
    }
    println!("{:<8} {:>10.1} us  (whole key set)", "keyload", median(loads));

    // A refresh: the same document parsed again while the worker still holds the previous set
    // (unchanged keys may reuse what was precomputed for them).
    let (set, _) = KeySet::parse(&jwks).expect("keys");
    let mut refreshes = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let (again, _) = KeySet::parse(&jwks).expect("keys");
        refreshes.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(again);
    }
    println!("{:<8} {:>10.1} us  (whole key set, previous set held)", "refresh", median(refreshes));
    let mut algorithms = AlgSet::default();
    for alg in Alg::ALL {
        algorithms.insert(alg);
    }
    let expect = Expectations {
        issuer,
        audiences: &audiences,
        algorithms,
        clock_skew_s: 60,
        require_at_jwt: false,
    };
    // The whole cold decision (what the filter computes for an unseen token): cache lookup
    // miss, peek, verify, policy, identity headers, cache entry encoding.
    let cfg = FilterConfig::parse(
        json!({
            "issuers": [{"name": "bench", "issuer": issuer, "audiences": audiences,
                         "jwks": {"inline": fx["jwks"]}}],
            "routes": [{"match": {"prefix": "/api"}, "require": {"scopes": ["read"]}}]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("config");
    let mut ring = KeyRing::new(1);
    if let Some(KeySource::Inline(keys)) = &cfg.issuers[0].keys {
        ring.set(0, Held { keys: keys.clone(), fetched_at: None, generation: 0 });
    }
    let req = RequestFacts { method: "GET", path: "/api/x", authority: "api", route_name: None, headers: &[] };
    for (alg, tokens) in fx["tokens"].as_object().expect("tokens") {
        if !alg.contains(filter.as_str()) {
            continue;
        }
        let headers: Vec<String> = tokens.as_array().expect("list").iter()
            .filter_map(Value::as_str).map(|t| format!("Bearer {t}")).collect();
        let mut batches = Vec::new();
        for round in 0..10 {
            let mut store = MapCache(HashMap::new());
            let t = Instant::now();
            for h in &headers {
                let mut deciding = Deciding {
                    cfg: &cfg, ring: &ring, cache: &mut store, now_ms: now as u64 * 1000, nonce_secret: None,
                };
                let request = Request { facts: &req, authorization: &[h], sender: Sender::default() };
                let d = authenticate(&mut deciding, &request, MayWait::Yes, None);
                assert!(matches!(d, Decision::Done(Verdict::Allow { cache_hit: false, .. })), "{d:?}");
            }
            if round > 0 {
                batches.push(t.elapsed().as_secs_f64() * 1e6 / headers.len() as f64);
            }
        }
        println!("{alg:<8} {:>10.1} us  per cold decision (authenticate + cache entry)", median(batches));
    }

    for (alg, tokens) in fx["tokens"].as_object().expect("tokens") {
        if !alg.contains(filter.as_str()) {
            continue;
        }
        let tokens: Vec<&str> = tokens.as_array().expect("list").iter().filter_map(Value::as_str).collect();
        let mut batches = Vec::new();
        // Batch 0 is a warm-up (lets V8 tier the code up); batches 1..=9 are measured.
        for round in 0..10 {
            let t = Instant::now();
            for token in &tokens {
                let peeked = jwt::peek(token).expect("peek");
                let key = set.candidates(peeked.kid(), peeked.alg().expect("alg")).next().expect("key");
                let claims = jwt::verify(&peeked, key, &expect, now).expect("verify");
                std::hint::black_box(claims);
            }
            if round > 0 {
                batches.push(t.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64);
            }
        }
        let best = batches.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{alg:<8} {:>10.1} us  per verification, best batch {best:.1} ({} tokens x 9 batches, median)",
            median(batches),
            tokens.len()
        );
    }
    if filter.is_empty() {
        signing(&fx, per_alg, now);
    }
}
