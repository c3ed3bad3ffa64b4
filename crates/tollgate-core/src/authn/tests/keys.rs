//! Issuers and keys: whose keys verify a token, and what happens without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
            challenge: route_challenge(),
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
        challenge: route_challenge(),
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
