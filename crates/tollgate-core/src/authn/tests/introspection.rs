//! Introspection answers: what a fresh answer decides, what is cached and for how long, and
//! JWTs introspected after verification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

#[test]
fn introspect_decision_carries_the_tokens_cache_key() {
    let mut env = opaque_env();
    let d = env.opaque("/any", "op1_abc", None);
    let Decision::Wait(Wait::Introspect {
        issuer,
        key,
        token,
        verified,
    }) = d
    else {
        panic!("{d:?}");
    };
    assert_eq!(issuer, OP1);
    assert_eq!(key, cache::key_for(&env.cfg.fingerprint, "op1_abc"));
    assert_eq!(token, "op1_abc", "the token to send");
    assert_ne!(key, cache::key_for(&env.cfg.fingerprint, "op1_abd"));
    assert_eq!(verified, None);
}

#[test]
fn introspection_is_unavailable_when_the_request_may_not_wait() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque_full("/any", "op2_abc", None, MayWait::No, None),
        denied(Denial::IntrospectionUnavailable, Some(OP2))
    );
    assert_eq!(
        env.opaque_full("/hint", "zzz", Some("op3"), MayWait::No, None),
        denied(Denial::IntrospectionUnavailable, Some(OP3))
    );
    // Refusals that need no answer stay what they are.
    assert_eq!(
        env.opaque_full("/any", "zzz", None, MayWait::No, None),
        invalid_token(issuer::NO_RULE, None)
    );
}

#[test]
fn a_fresh_active_answer_allows_with_the_answers_identity() {
    let mut env = opaque_env();
    let fresh = active_entry(OP3, "read");
    for may_wait in [MayWait::Yes, MayWait::No] {
        let d = env.opaque_full("/scoped", "zzz", None, may_wait, Some(&fresh));
        let expected: Vec<(String, String)> = [
            ("x-tollgate-client-id", "mobile"),
            ("x-tollgate-scope", "read"),
            ("x-tollgate-sub", "dana"),
            ("x-tollgate-issuer", "op3"),
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
                issuer: Some(OP3),
                headers: expected.into(),
                cache_hit: false,
            })
        );
    }
    assert_eq!(
        (env.cache.gets, env.cache.puts),
        (0, 0),
        "the answer, not the cache"
    );
}

#[test]
fn a_fresh_active_answer_still_meets_the_routes_requirements() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque_full(
            "/scoped",
            "zzz",
            None,
            MayWait::Yes,
            Some(&active_entry(OP3, "write"))
        ),
        denied(
            Denial::InsufficientScope {
                scope: "read".into()
            },
            Some(OP3)
        )
    );
    // An answer from an issuer the route does not accept.
    assert_eq!(
        env.opaque_full(
            "/jwt1",
            "zzz",
            None,
            MayWait::Yes,
            Some(&active_entry(OP3, "read"))
        ),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP3))
    );
}

#[test]
fn a_fresh_inactive_answer_denies() {
    let mut env = opaque_env();
    for may_wait in [MayWait::Yes, MayWait::No] {
        assert_eq!(
            env.opaque_full(
                "/any",
                "op1_abc",
                None,
                may_wait,
                Some(&inactive_entry(OP1))
            ),
            denied(Denial::InactiveToken, Some(OP1))
        );
    }
    assert_eq!(
        env.cache.remembered,
        vec![inactive_entry(OP1), inactive_entry(OP1)],
        "remembered by the worker too (the shared slot may keep another token's entry)"
    );
}

#[test]
fn a_fresh_active_answer_is_not_remembered_by_the_worker() {
    let mut env = opaque_env();
    let d = env.opaque_full(
        "/any",
        "op1_abc",
        None,
        MayWait::No,
        Some(&active_entry(OP1, "read")),
    );
    assert!(matches!(d, Decision::Done(Verdict::Allow { .. })));
    assert!(
        env.cache.remembered.is_empty(),
        "only the shared cache, under the revocation epoch rule"
    );
}

#[test]
fn a_cached_negative_answer_denies_without_asking_again() {
    let mut env = opaque_env();
    let token = "op1_revoked";
    assert_eq!(
        env.opaque("/any", token, None),
        env.introspect_at(OP1, token)
    );
    // The adapter caches the answer.
    let key = env.key(token);
    env.cache.put(&key, &inactive_entry(OP1), NOW_MS);
    for path in ["/any", "/op1only", "/hint"] {
        assert_eq!(
            env.opaque(path, token, None),
            denied(Denial::InactiveToken, Some(OP1)),
            "{path}"
        );
    }
    assert_eq!(env.cache.hits, 3);
    // Until the negative TTL is over; then the issuer is asked again.
    let value = format!("Bearer {token}");
    let at = |env: &mut Env, now| env.decide_full("/any", &[&value], &[], now, MayWait::Yes, None);
    assert_eq!(
        at(&mut env, NOW_MS + NEGATIVE_TTL_MS - 1),
        denied(Denial::InactiveToken, Some(OP1))
    );
    assert_eq!(
        at(&mut env, NOW_MS + NEGATIVE_TTL_MS),
        env.introspect_at(OP1, token)
    );
}

#[test]
fn a_cached_positive_answer_is_a_cache_hit_that_still_checks_the_route() {
    let mut env = opaque_env();
    let token = "op2_good";
    let key = env.key(token);
    env.cache.put(&key, &active_entry(OP2, "write"), NOW_MS);
    assert!(allowed(OP2, true)(&env.opaque("/any", token, None)));
    assert_eq!(
        env.opaque("/op1only", token, None),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP2))
    );
    assert_eq!(
        env.opaque("/scoped", token, None),
        denied(
            Denial::InsufficientScope {
                scope: "read".into()
            },
            Some(OP2)
        )
    );
    // Dead after the max TTL: introspected again.
    let value = format!("Bearer {token}");
    assert_eq!(
        env.decide_full(
            "/any",
            &[&value],
            &[],
            NOW_MS + MAX_TTL_MS,
            MayWait::Yes,
            None
        ),
        env.introspect_at(OP2, token)
    );
}

#[test]
fn opaque_tokens_are_introspected_without_a_cache_too() {
    let mut env = Env::from_text(&opaque_config_json(json!({"cache": {"max_entries": 0}})));
    assert_eq!(
        env.opaque("/any", "op1_abc", None),
        env.introspect_at(OP1, "op1_abc")
    );
    let fresh = active_entry(OP1, "read");
    assert!(allowed(OP1, false)(&env.opaque_full(
        "/any",
        "op1_abc",
        None,
        MayWait::Yes,
        Some(&fresh)
    )));
    assert_eq!((env.cache.gets, env.cache.puts), (0, 0));
}

#[test]
fn introspect_jwts_verifies_first_then_asks_with_the_verified_claims() {
    let mut env = opaque_env();
    let token = as2_token();
    let d = env.opaque("/any", &token, None);
    let Decision::Wait(Wait::Introspect {
        issuer,
        key,
        verified: Some(v),
        ..
    }) = d
    else {
        panic!("{d:?}");
    };
    assert_eq!((issuer, key), (JWT2, env.key(&token)));
    assert_eq!(v.issuer, JWT2);
    assert_eq!(v.exp_ms, (NOW_S as u64 + 3600) * 1000);
    assert_eq!(&Value::Object((*v.claims).clone()), &as2_payload());
    assert_eq!(
        env.cache.puts, 0,
        "not cached before the issuer vouched for it"
    );
    assert_eq!(
        env.opaque_full("/any", &token, None, MayWait::No, None),
        denied(Denial::IntrospectionUnavailable, Some(JWT2))
    );
    // Active: the JWT's own claims are forwarded.
    let answer = crate::introspect::Answer::Active {
        claims: answer_claims("other"),
        exp_s: None,
    };
    let fresh = crate::introspect::entry(JWT2, answer, Some(v.clone()), ttl(), NOW_MS);
    let d = env.opaque_full("/any", &token, None, MayWait::Yes, Some(&fresh));
    assert!(allowed(JWT2, false)(&d));
    assert!(headers_of(&d).contains(&("x-tollgate-sub".into(), "bob".into())));
    // Revoked: refused.
    let revoked = crate::introspect::entry(
        JWT2,
        crate::introspect::Answer::Inactive("the token is not active"),
        Some(v),
        ttl(),
        NOW_MS,
    );
    assert_eq!(
        env.opaque_full("/any", &token, None, MayWait::Yes, Some(&revoked)),
        denied(Denial::InactiveToken, Some(JWT2))
    );
}

#[test]
fn introspect_jwts_refuses_a_bad_jwt_without_asking() {
    let mut env = opaque_env();
    let mut expired = as2_payload();
    expired["exp"] = json!(NOW_S - 3600);
    let expired = sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &expired,
    );
    // as2's claims signed with as1's key under as2's kid.
    let forged = sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-b"), None),
        &as2_payload(),
    );
    for (token, why) in [
        (expired, JwtError::Expired),
        (forged, JwtError::BadSignature),
        (as2_ps256_token(), JwtError::AlgNotAllowed),
    ] {
        assert_eq!(
            env.opaque("/any", &token, None),
            invalid_token(why.describe(), Some(JWT2))
        );
    }
    // A JWT of an issuer the route does not accept is refused before anything else.
    assert_eq!(
        env.opaque("/jwt1", &as2_token(), None),
        invalid_token(NOT_ACCEPTED_HERE, Some(JWT2))
    );
}

#[test]
fn jwts_of_an_issuer_without_introspect_jwts_are_not_introspected() {
    let mut env = opaque_env();
    let token = as1_read_token();
    assert!(allowed(JWT1, false)(&env.opaque("/any", &token, None)));
    assert!(allowed(JWT1, true)(&env.opaque("/any", &token, None)));
    assert_eq!(env.cache.puts, 1);
}

#[test]
fn a_jws_is_never_treated_as_opaque() {
    let mut env = opaque_env();
    // A JWT naming an introspection-only issuer: that issuer has no keys; no introspection.
    let p = json!({"iss": "https://op1.example.com", "sub": "x", "exp": NOW_S + 3600});
    let token = sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p);
    assert_eq!(
        env.opaque("/dflt", &token, Some("op3")),
        invalid_token(JwtError::UnknownKey.describe(), Some(OP1))
    );
    // A JWS from nobody is not sent to the route's opaque_issuer either.
    assert_eq!(
        env.opaque("/dflt", &unknown_issuer_token(), None),
        invalid_token(UNTRUSTED_ISSUER, None)
    );
    assert_eq!(env.cache.puts, 0);
}

#[test]
fn without_an_introspecting_issuer_every_token_must_be_a_jwt() {
    let mut env = Env::new();
    assert!(env.cfg.issuers.iter().all(|i| i.introspection.is_none()));
    for token in ["op1_abc", "zzz", "a.b.c", "not.a-jwt"] {
        for may_wait in [MayWait::Yes, MayWait::No] {
            assert_eq!(
                env.bearer_at("/api", token, NOW_MS, may_wait),
                invalid_token("the token is not a well-formed JWT", None),
                "{token}"
            );
        }
    }
}
