//! Route requirements: scopes and claim values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

#[test]
fn insufficient_scope_all_of() {
    let mut env = Env::new();
    assert_eq!(
        env.bearer("/rw", &as1_read_token()),
        Decision::Done(Verdict::Deny {
            challenge: route_challenge(),
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
            challenge: route_challenge(),
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
        challenge: route_challenge(),
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
