//! RFC 7662 request building and answer checks, with a fixed clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

const NOW_S: i64 = 1_700_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

fn endpoint() -> Url {
    Url::parse("https://as.example:8443/oauth/introspect?realm=x").unwrap()
}

fn client(id: &str, secret: &str, method: AuthMethod) -> ClientAuth {
    ClientAuth {
        id: id.into(),
        secret: Secret::new(secret.into()),
        method,
    }
}

fn header<'r>(r: &'r HttpRequest, name: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn body(r: &HttpRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(r.body.as_deref().unwrap())
        .into_owned()
        .collect()
}

#[test]
fn basic_auth_form_encodes_id_and_secret_before_base64() {
    // RFC 6749 §2.3.1 + Appendix B: ':' '@' '+' '/' '=' '%' '&' and space are encoded.
    let r = request(
        &endpoint(),
        "as1",
        &client(
            "rs:client@2",
            "s3cr3t+/=%& x",
            AuthMethod::ClientSecretBasic,
        ),
        "opaque-token",
        1500,
    );
    let basic = header(&r, "authorization")
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap();
    let decoded = String::from_utf8(STANDARD.decode(basic).unwrap()).unwrap();
    assert_eq!(decoded, "rs%3Aclient%402:s3cr3t%2B%2F%3D%25%26+x");
    assert_eq!(
        body(&r),
        vec![
            ("token".into(), "opaque-token".into()),
            ("token_type_hint".into(), "access_token".into())
        ]
    );
    assert_eq!(r.method, "POST");
    assert_eq!(r.authority, "as.example:8443");
    assert_eq!(r.path, "/oauth/introspect?realm=x");
    assert_eq!(r.upstream, "as1");
    assert_eq!(r.timeout_ms, 1500);
    assert_eq!(
        header(&r, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[test]
fn post_auth_puts_credentials_in_the_body_only() {
    let r = request(
        &endpoint(),
        "as1",
        &client("rs", "p&ss=1", AuthMethod::ClientSecretPost),
        "tok&en=",
        1000,
    );
    assert_eq!(header(&r, "authorization"), None);
    let form = body(&r);
    assert!(form.contains(&("token".into(), "tok&en=".into())));
    assert!(form.contains(&("client_id".into(), "rs".into())));
    assert!(form.contains(&("client_secret".into(), "p&ss=1".into())));
}

#[test]
fn secrets_do_not_print() {
    let c = client("rs", "hunter2", AuthMethod::ClientSecretBasic);
    assert!(!format!("{c:?}").contains("hunter2"));
}

fn answer(status: u16, body: serde_json::Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![],
        body: body.to_string().into_bytes(),
    }
}

fn expect<'a>(audiences: &'a [String]) -> Expect<'a> {
    Expect {
        issuer: "https://as.example",
        audiences,
        clock_skew_s: 30,
        now_s: NOW_S,
        require_token_type: false,
    }
}

fn read_json(body: serde_json::Value) -> Result<Answer, IntrospectError> {
    read(Some(&answer(200, body)), &expect(&[]))
}

#[test]
fn active_answer_feeds_claims_without_active() {
    let a = read_json(
        json!({"active": true, "scope": "read", "client_id": "c", "exp": NOW_S + 60,
                             "username": "alice"}),
    )
    .unwrap();
    let Answer::Active { claims, exp_s } = a else {
        panic!("not active")
    };
    assert_eq!(exp_s, Some(NOW_S + 60));
    assert!(!claims.contains_key("active"));
    assert_eq!(
        claims["sub"], "alice",
        "username stands in for a missing sub"
    );
    assert_eq!(claims["scope"], "read");
}

#[test]
fn inactive_and_unacceptable_answers() {
    assert!(matches!(
        read_json(json!({"active": false})),
        Ok(Answer::Inactive(_))
    ));
    let expired = json!({"active": true, "exp": NOW_S - 31});
    assert_eq!(
        read_json(expired),
        Ok(Answer::Inactive("the token has expired"))
    );
    let within_skew = json!({"active": true, "exp": NOW_S - 29});
    assert!(matches!(read_json(within_skew), Ok(Answer::Active { .. })));
    let early = json!({"active": true, "nbf": NOW_S + 31});
    assert_eq!(
        read_json(early),
        Ok(Answer::Inactive("the token is not valid yet"))
    );
    let other_iss = json!({"active": true, "iss": "https://evil.example"});
    assert!(matches!(read_json(other_iss), Ok(Answer::Inactive(_))));
    let refresh = json!({"active": true, "token_type": "refresh_token"});
    assert_eq!(
        read_json(refresh),
        Ok(Answer::Inactive("the token is not an access token"))
    );
    assert!(matches!(
        read_json(json!({"active": true, "token_type": "Bearer"})),
        Ok(Answer::Active { .. })
    ));
}

#[test]
fn token_type_can_be_required() {
    let mut e = expect(&[]);
    e.require_token_type = true;
    let untyped = answer(200, json!({"active": true}));
    assert!(matches!(read(Some(&untyped), &e), Ok(Answer::Inactive(_))));
    let typed = answer(200, json!({"active": true, "token_type": "Bearer"}));
    assert!(matches!(read(Some(&typed), &e), Ok(Answer::Active { .. })));
    // RFC 9449 §6.2: a DPoP-bound token's answer says `DPoP` (its `cnf.jkt` is checked later).
    let dpop = answer(
        200,
        json!({"active": true, "token_type": "DPoP", "cnf": {"jkt": "k"}}),
    );
    assert!(matches!(read(Some(&dpop), &e), Ok(Answer::Active { .. })));
}

/// An `aud` in the answer meets [`crate::audience::accepts`], the JWT rule; an answer without
/// one is not judged by it (RFC 7662 makes `aud` optional).
#[test]
fn audience_is_checked_when_the_answer_has_one() {
    let auds = ["https://api.test".to_owned()];
    let e = expect(&auds);
    let ok = answer(
        200,
        json!({"active": true, "aud": ["x", "https://api.test"]}),
    );
    assert!(matches!(read(Some(&ok), &e), Ok(Answer::Active { .. })));
    let wrong = answer(200, json!({"active": true, "aud": "https://other.test"}));
    assert!(matches!(read(Some(&wrong), &e), Ok(Answer::Inactive(_))));
    let absent = answer(200, json!({"active": true}));
    assert!(matches!(read(Some(&absent), &e), Ok(Answer::Active { .. })));
    for refused in [json!([]), json!(null), json!(7), json!([1, null])] {
        let a = answer(200, json!({"active": true, "aud": refused}));
        assert_eq!(
            read(Some(&a), &e),
            Ok(Answer::Inactive("the token's audience is not accepted")),
            "{refused}"
        );
    }
    let unchecked = expect(&[]);
    assert!(matches!(
        read(Some(&wrong), &unchecked),
        Ok(Answer::Active { .. })
    ));
}

#[test]
fn unusable_answers_fail_closed() {
    let e = expect(&[]);
    assert_eq!(read(None, &e), Err(IntrospectError::Transport));
    assert_eq!(
        read(Some(&answer(401, json!({}))), &e),
        Err(IntrospectError::ClientRejected(401))
    );
    assert_eq!(
        read(Some(&answer(403, json!({}))), &e),
        Err(IntrospectError::ClientRejected(403))
    );
    assert_eq!(
        read(Some(&answer(503, json!({}))), &e),
        Err(IntrospectError::Status(503))
    );
    assert_eq!(
        crate::flow::IntrospectionFailure::from(IntrospectError::Status(504)).code(),
        "timeout"
    );
    let not_json = HttpResponse {
        status: 200,
        headers: vec![],
        body: b"<html>".to_vec(),
    };
    assert_eq!(read(Some(&not_json), &e), Err(IntrospectError::BadResponse));
    assert_eq!(
        read_json(json!(["active"])),
        Err(IntrospectError::BadResponse)
    );
    assert_eq!(
        read_json(json!({"active": "true"})),
        Err(IntrospectError::BadResponse)
    );
    assert_eq!(
        read_json(json!({"scope": "read"})),
        Err(IntrospectError::BadResponse)
    );
}

#[test]
fn entries_never_outlive_exp_or_the_max_ttl() {
    let ttl = Ttl {
        max_ms: 60_000,
        negative_ms: 5_000,
    };
    let active = |exp_s| Answer::Active {
        claims: Map::new(),
        exp_s,
    };
    let until = |c: Cached| match c {
        Cached::Valid(v) => v.exp_ms,
        Cached::Invalid { until_ms, .. } => until_ms,
    };
    assert_eq!(
        until(entry(0, active(Some(NOW_S + 10)), None, ttl, NOW_MS)),
        NOW_MS + 10_000
    );
    assert_eq!(
        until(entry(0, active(Some(NOW_S + 999)), None, ttl, NOW_MS)),
        NOW_MS + 60_000
    );
    assert_eq!(
        until(entry(0, active(None), None, ttl, NOW_MS)),
        NOW_MS + 60_000
    );
    let neg = entry(1, Answer::Inactive("x"), None, ttl, NOW_MS);
    assert_eq!(
        neg,
        Cached::Invalid {
            issuer: 1,
            until_ms: NOW_MS + 5_000
        }
    );
    let jwt = Verified {
        issuer: 0,
        exp_ms: NOW_MS + 30_000,
        claims: json!({"sub": "from-jwt"})
            .as_object()
            .cloned()
            .unwrap()
            .into(),
        key: Some(42),
        rendered: Default::default(),
    };
    let Cached::Valid(v) = entry(0, active(Some(NOW_S + 999)), Some(jwt), ttl, NOW_MS) else {
        panic!("not valid")
    };
    assert_eq!(v.exp_ms, NOW_MS + 30_000);
    assert_eq!(
        v.claims["sub"], "from-jwt",
        "a JWT keeps its own verified claims"
    );
    assert_eq!(v.key, Some(42), "and the key that verified it");
    let Cached::Valid(opaque) = entry(0, active(Some(NOW_S + 999)), None, ttl, NOW_MS) else {
        panic!("not valid")
    };
    assert_eq!(opaque.key, None, "an opaque token has no key");
}

/// Deeply nested answers (the wasm stack is 1 MiB; scripts/test-wasm runs this in V8): a claim
/// just under serde_json's limit is kept, deeper answers are a bad response, never a crash.
#[test]
fn deeply_nested_answers() {
    use crate::testdata::{nested_json, JSON_MAX_DEPTH};
    let raw = |deep: &str| HttpResponse {
        status: 200,
        headers: vec![],
        body: format!(r#"{{"active":true,"sub":"alice","deep":{deep}}}"#).into_bytes(),
    };
    let within = raw(&nested_json(JSON_MAX_DEPTH - 1));
    match read(Some(&within), &expect(&[])) {
        Ok(Answer::Active { claims, .. }) => assert!(claims["deep"].is_array()),
        other => panic!("within the limit: {other:?}"),
    }
    for depth in [JSON_MAX_DEPTH, 100_000] {
        assert_eq!(
            read(Some(&raw(&nested_json(depth))), &expect(&[])),
            Err(IntrospectError::BadResponse),
            "depth {depth}"
        );
    }
    let bare = HttpResponse {
        status: 200,
        headers: vec![],
        body: nested_json(100_000).into_bytes(),
    };
    assert_eq!(
        read(Some(&bare), &expect(&[])),
        Err(IntrospectError::BadResponse)
    );
}
