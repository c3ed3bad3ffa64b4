//! Cached verifications and the key that made them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
            nonce_secret: None,
        };
        let request = Request {
            facts: &req,
            authorization: &[&value],
            sender: Sender::default(),
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
