//! Routes and credentials: which policy applies, and what a request must carry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

#[test]
fn anonymous_route_needs_and_checks_nothing() {
    let mut env = Env::new();
    let anonymous = Decision::Done(Verdict::Allow {
        proof: None,
        authorization: Upstream::Keep,
        authorize: None,
        upstream: None,
        issuer: None,
        headers: Default::default(),
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
            challenge: Challenge::BEARER,
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
            challenge: route_challenge(),
            denial: Denial::InsufficientScope {
                scope: "write".into()
            },
            issuer: Some(AS1),
        })
    );
    assert_eq!(
        env.decide("/elsewhere", &[], NOW_MS, MayWait::Yes),
        Decision::Done(Verdict::Deny {
            challenge: route_challenge(),
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
        challenge: route_challenge(),
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
                issuer: None,
                ..
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
