//! Allowed requests: identity headers and the token cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
            proof: None,
            authorization: Upstream::Keep,
            authorize: None,
            upstream: None,
            issuer: Some(AS1),
            headers: expected.into(),
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
        challenge: route_challenge(),
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
        claims: json!({"sub": "root"}).as_object().cloned().unwrap().into(),
        key: None,
        rendered: Default::default(),
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
            challenge: route_challenge(),
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
