//! Single flight across workers: the claim on a token's cache slot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
            issuer: Some(AS1),
            ..
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
                issuer: Some(AS1),
                ..
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
