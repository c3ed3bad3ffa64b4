//! Issue 16: RFC 9470 step-up and the key-manager client checks through the whole decision,
//! for JWTs and for introspected tokens, and where they sit among the other checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::policy::{ACR_NOT_ACCEPTED, AUTH_TOO_OLD, CLIENT_HEADER_TWICE, NO_CLIENT_HEADER};

const LOA1: &str = "urn:tollgate:loa:1";
const LOA2: &str = "urn:tollgate:loa:2";
const CLIENT_HEADER: &str = "x-ibm-client-id";

/// The routes of these tests (issuer `as1` of the standard configuration).
fn routes() -> Value {
    json!([
        {"match": {"prefix": "/high"}, "require": {"acr_values": [LOA2, "urn:tollgate:loa:3"]}},
        {"match": {"prefix": "/fresh"}, "require": {"max_age_s": 300}},
        {"match": {"prefix": "/strict"},
         "require": {"scopes": ["admin"], "acr_values": [LOA2], "max_age_s": 60}},
        {"match": {"prefix": "/subscribed"},
         "require": {"clients": ["orders-cli", "spa"], "scopes": ["admin"]}},
        {"match": {"prefix": "/bound"}, "require": {"client_id_header": CLIENT_HEADER}},
        {"match": {"prefix": "/both"},
         "require": {"clients": ["spa"], "client_id_header": CLIENT_HEADER}},
    ])
}

fn env() -> Env {
    Env::with(json!({ "routes": routes() }))
}

/// `as1_token("read")`'s payload plus `extra` (e.g. `acr`, `auth_time`, `azp`).
fn user_token(extra: Value) -> String {
    let mut p = as1_payload("read");
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            p.as_object_mut().unwrap().remove(k);
        } else {
            p[k] = v.clone();
        }
    }
    sign("RS256", TestKey::RsaA, &header(Some("rsa-a"), None), &p)
}

fn step_up(why: &'static str, acr: Option<&str>, max_age: Option<u64>) -> Decision {
    denied(
        Denial::InsufficientUserAuthentication {
            why,
            acr_values: acr.map(str::to_owned),
            max_age,
        },
        Some(AS1),
    )
}

impl Env {
    fn with_client_header(&mut self, path: &str, token: &str, values: &[&str]) -> Decision {
        let headers: Vec<(String, String)> = values
            .iter()
            .map(|v| (CLIENT_HEADER.to_owned(), (*v).to_owned()))
            .collect();
        let value = format!("Bearer {token}");
        self.decide_full(path, &[&value], &headers, NOW_MS, MayWait::Yes, None)
    }
}

#[test]
fn acr_any_of_and_missing_acr() {
    let mut env = env();
    let wanted = Some("urn:tollgate:loa:2 urn:tollgate:loa:3");
    assert_eq!(
        env.bearer("/high", &user_token(json!({ "acr": LOA1 }))),
        step_up(ACR_NOT_ACCEPTED, wanted, None)
    );
    assert_eq!(
        env.bearer("/high", &user_token(json!({}))),
        step_up(ACR_NOT_ACCEPTED, wanted, None),
        "a token without acr"
    );
    for acr in [LOA2, "urn:tollgate:loa:3"] {
        assert!(allowed(AS1, false)(
            &env.bearer("/high", &user_token(json!({ "acr": acr })))
        ));
    }
}

#[test]
fn max_age_uses_the_clock_handed_in() {
    let mut env = env();
    let at = |t: i64| user_token(json!({ "auth_time": t }));
    assert!(allowed(AS1, false)(&env.bearer("/fresh", &at(NOW_S - 300))));
    assert_eq!(
        env.bearer("/fresh", &at(NOW_S - 301)),
        step_up(AUTH_TOO_OLD, None, Some(300))
    );
    // The same (cached) token, later: too old now.
    let token = at(NOW_S - 200);
    assert!(allowed(AS1, false)(&env.bearer("/fresh", &token)));
    assert!(allowed(AS1, true)(&env.bearer_at(
        "/fresh",
        &token,
        NOW_MS + 100_000,
        MayWait::Yes
    )));
    assert_eq!(
        env.bearer_at("/fresh", &token, NOW_MS + 101_000, MayWait::Yes),
        step_up(AUTH_TOO_OLD, None, Some(300))
    );
    assert_eq!(
        env.bearer("/fresh", &user_token(json!({}))),
        step_up(crate::policy::NO_AUTH_TIME, None, Some(300))
    );
}

#[test]
fn scopes_are_refused_before_step_up_and_step_up_states_the_whole_requirement() {
    let mut env = env();
    let weak = user_token(json!({ "acr": LOA1, "auth_time": NOW_S }));
    assert_eq!(
        env.bearer("/strict", &weak),
        denied(
            Denial::InsufficientScope {
                scope: "admin".into()
            },
            Some(AS1)
        ),
        "no new login would fix the scope"
    );
    let admin_weak = user_token(json!({"scope": "admin", "acr": LOA1, "auth_time": NOW_S}));
    assert_eq!(
        env.bearer("/strict", &admin_weak),
        step_up(ACR_NOT_ACCEPTED, Some(LOA2), Some(60))
    );
    let admin_old = user_token(json!({"scope": "admin", "acr": LOA2, "auth_time": NOW_S - 61}));
    assert_eq!(
        env.bearer("/strict", &admin_old),
        step_up(AUTH_TOO_OLD, Some(LOA2), Some(60))
    );
    let admin_strong = user_token(json!({"scope": "admin", "acr": LOA2, "auth_time": NOW_S - 60}));
    assert!(allowed(AS1, false)(&env.bearer("/strict", &admin_strong)));
}

#[test]
fn clients_allow_list_by_client_id_or_azp_before_scopes() {
    let mut env = env();
    // as1_payload's client_id is orders-cli.
    assert!(allowed(AS1, false)(
        &env.bearer("/subscribed", &user_token(json!({"scope": "admin"})))
    ));
    let spa = user_token(json!({"scope": "admin", "client_id": null, "azp": "spa"}));
    assert!(allowed(AS1, false)(&env.bearer("/subscribed", &spa)));
    let billing = user_token(json!({"scope": "read", "client_id": "billing"}));
    assert_eq!(
        env.bearer("/subscribed", &billing),
        denied(Denial::ClientNotAllowed, Some(AS1)),
        "the client first: no scope would help"
    );
    let clientless = user_token(json!({"scope": "admin", "client_id": null}));
    assert_eq!(
        env.bearer("/subscribed", &clientless),
        denied(Denial::ClientNotAllowed, Some(AS1))
    );
}

#[test]
fn client_id_header_missing_twice_different_equal() {
    let mut env = env();
    let token = as1_read_token(); // client_id orders-cli
    assert_eq!(
        env.with_client_header("/bound", &token, &[]),
        denied(Denial::InvalidRequest(NO_CLIENT_HEADER), Some(AS1))
    );
    assert_eq!(
        env.with_client_header("/bound", &token, &["orders-cli", "orders-cli"]),
        denied(Denial::InvalidRequest(CLIENT_HEADER_TWICE), Some(AS1))
    );
    assert_eq!(
        env.with_client_header("/bound", &token, &["billing"]),
        denied(Denial::ClientMismatch, Some(AS1))
    );
    assert!(allowed(AS1, true)(&env.with_client_header(
        "/bound",
        &token,
        &["orders-cli"]
    )));
    // Checked after the token: a bad token is a bad token, header or not.
    assert_eq!(
        env.with_client_header("/bound", &expired_token(), &[]),
        invalid_token(JwtError::Expired.describe(), Some(AS1))
    );
    // Subscription first, then the header.
    let spa = user_token(json!({"client_id": "spa"}));
    assert_eq!(
        env.with_client_header("/both", &token, &["orders-cli"]),
        denied(Denial::ClientNotAllowed, Some(AS1))
    );
    assert!(allowed(AS1, false)(&env.with_client_header(
        "/both",
        &spa,
        &["spa"]
    )));
}

/// The opaque-token configuration with these tests' requirements on routes introspected at
/// `op3`.
fn opaque_step_up_env() -> Env {
    Env::from_text(&opaque_config_json(json!({
        "routes": [
            {"match": {"prefix": "/high"},
             "require": {"opaque_issuer": "op3", "acr_values": [LOA2], "max_age_s": 300}},
            {"match": {"prefix": "/subscribed"},
             "require": {"opaque_issuer": "op3", "clients": ["mobile"],
                         "client_id_header": CLIENT_HEADER}},
        ],
    })))
}

/// An `active: true` answer of `op3` with `extra` members besides [`answer_claims`]'s.
fn answer_with(extra: Value) -> Cached {
    let mut claims = answer_claims("read");
    for (k, v) in extra.as_object().unwrap() {
        claims.insert(k.clone(), v.clone());
    }
    let answer = crate::introspect::Answer::Active {
        claims,
        exp_s: Some(NOW_S + 3600),
    };
    crate::introspect::entry(OP3, answer, None, ttl(), NOW_MS)
}

#[test]
fn an_introspected_token_is_held_to_the_same_rules() {
    let mut env = opaque_step_up_env();
    let decide = |env: &mut Env, path: &str, fresh: &Cached, client: &[&str]| {
        let headers: Vec<(String, String)> = client
            .iter()
            .map(|v| (CLIENT_HEADER.to_owned(), (*v).to_owned()))
            .collect();
        env.decide_full(
            path,
            &["Bearer zzz"],
            &headers,
            NOW_MS,
            MayWait::Yes,
            Some(fresh),
        )
    };
    let refused = |why, issuer| {
        denied(
            Denial::InsufficientUserAuthentication {
                why,
                acr_values: Some(LOA2.into()),
                max_age: Some(300),
            },
            Some(issuer),
        )
    };
    let weak = answer_with(json!({"acr": LOA1, "auth_time": NOW_S}));
    assert_eq!(
        decide(&mut env, "/high", &weak, &[]),
        refused(ACR_NOT_ACCEPTED, OP3)
    );
    let old = answer_with(json!({"acr": LOA2, "auth_time": NOW_S - 301}));
    assert_eq!(
        decide(&mut env, "/high", &old, &[]),
        refused(AUTH_TOO_OLD, OP3)
    );
    let strong = answer_with(json!({"acr": LOA2, "auth_time": NOW_S - 300}));
    assert!(allowed(OP3, false)(&decide(
        &mut env,
        "/high",
        &strong,
        &[]
    )));

    // answer_claims' client_id is "mobile".
    let plain = answer_with(json!({}));
    assert!(allowed(OP3, false)(&decide(
        &mut env,
        "/subscribed",
        &plain,
        &["mobile"]
    )));
    assert_eq!(
        decide(&mut env, "/subscribed", &plain, &["web"]),
        denied(Denial::ClientMismatch, Some(OP3))
    );
    assert_eq!(
        decide(&mut env, "/subscribed", &plain, &[]),
        denied(Denial::InvalidRequest(NO_CLIENT_HEADER), Some(OP3))
    );
    let other = answer_with(json!({"client_id": "web"}));
    assert_eq!(
        decide(&mut env, "/subscribed", &other, &["web"]),
        denied(Denial::ClientNotAllowed, Some(OP3))
    );
}
