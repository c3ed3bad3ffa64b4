//! The exchange request and what its answers mean (RFC 8693 §2.1, §2.2), the cache records,
//! the backend token's claims, lifetime and signature, and the JWKS answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::introspect::Secret;
use crate::sign::SigningKey;
use crate::testdata::{b64, verify_with_published_jwks, TestKey, NOW_MS, NOW_S};

const GATEWAY: &str = "https://gateway.example.com";

fn client(method: AuthMethod) -> ExchangeClient {
    ExchangeClient {
        endpoint: Url::parse("https://as1.example.com:8443/oauth/token?x=1").unwrap(),
        upstream: "as1".to_owned(),
        client: ClientAuth {
            id: "gate way".to_owned(),
            secret: Secret::new("s3cr:et".to_owned()),
            method,
        },
        timeout_ms: 1500,
    }
}

fn rule() -> ExchangeRule {
    ExchangeRule {
        at: None,
        audience: vec!["https://next.test".to_owned(), "orders".to_owned()],
        resource: vec!["https://next.test/api".to_owned()],
        scope: Some("read write".to_owned()),
        margin_ms: 10_000,
        max_ttl_ms: 300_000,
    }
}

fn form(request: &HttpRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(request.body.as_deref().unwrap())
        .into_owned()
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_exchange_request_is_rfc_8693_with_client_secret_basic() {
    let r = request(
        &client(AuthMethod::ClientSecretBasic),
        &rule(),
        "the.subject.token",
    );
    assert_eq!(
        (r.method, r.scheme, r.upstream.as_str()),
        ("POST", "https", "as1")
    );
    assert_eq!(r.authority, "as1.example.com:8443");
    assert_eq!(r.path, "/oauth/token?x=1");
    assert_eq!(r.timeout_ms, 1500);
    assert_eq!(
        form(&r),
        pairs(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", "the.subject.token"),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", "https://next.test"),
            ("audience", "orders"),
            ("resource", "https://next.test/api"),
            ("scope", "read write"),
        ])
    );
    // RFC 6749 §2.3.1: id and secret form-encoded, then Basic.
    let basic = r
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(basic, Some("Basic Z2F0ZSt3YXk6czNjciUzQWV0"));
    assert!(r.headers.contains(&(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded".to_owned()
    )));
}

#[test]
fn client_secret_post_puts_the_credentials_in_the_form() {
    let mut only_resource = rule();
    only_resource.audience.clear();
    only_resource.scope = None;
    let r = request(&client(AuthMethod::ClientSecretPost), &only_resource, "t");
    assert!(r.headers.iter().all(|(n, _)| n != "authorization"));
    let f = form(&r);
    assert!(f.contains(&("client_id".to_owned(), "gate way".to_owned())));
    assert!(f.contains(&("client_secret".to_owned(), "s3cr:et".to_owned())));
    assert!(f.iter().all(|(n, _)| n != "audience" && n != "scope"));
}

#[test]
fn the_client_secret_is_never_in_debug_output() {
    let text = format!("{:?}", client(AuthMethod::ClientSecretBasic));
    assert!(!text.contains("s3cr"), "{text}");
}

fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn ok(body: Value) -> HttpResponse {
    response(200, &body.to_string())
}

/// An unsigned JWT-shaped token with `exp` (read only to bound the cache).
fn jwt_expiring(exp_s: i64) -> String {
    format!(
        "{}.{}.sig",
        b64(br#"{"alg":"ES256"}"#),
        b64(json!({"exp": exp_s}).to_string().as_bytes())
    )
}

#[test]
fn a_token_is_reused_until_expires_in_minus_the_margin() {
    let r = ok(
        json!({"access_token": "opaque-1", "token_type": "Bearer", "expires_in": 60,
                      "issued_token_type": ACCESS_TOKEN_TYPE}),
    );
    assert_eq!(
        read(Some(&r), &rule(), NOW_MS),
        Ok(Exchanged::Token {
            token: "opaque-1".to_owned(),
            until_ms: NOW_MS + 50_000
        })
    );
}

#[test]
fn a_jwt_is_reused_no_longer_than_its_exp_and_never_past_max_ttl() {
    let token = jwt_expiring(NOW_S + 30);
    let r = ok(json!({"access_token": token, "token_type": "bearer", "expires_in": 3600}));
    let Ok(Exchanged::Token { until_ms, .. }) = read(Some(&r), &rule(), NOW_MS) else {
        panic!()
    };
    assert_eq!(until_ms, NOW_MS + 20_000);
    // No expires_in, no exp: max_ttl.
    let r = ok(json!({"access_token": "opaque", "token_type": "Bearer"}));
    let Ok(Exchanged::Token { until_ms, .. }) = read(Some(&r), &rule(), NOW_MS) else {
        panic!()
    };
    assert_eq!(until_ms, NOW_MS + 290_000);
    // Shorter than the margin: not reusable at all (the record is dead on arrival).
    let r = ok(json!({"access_token": "short", "token_type": "Bearer", "expires_in": 2}));
    let Ok(Exchanged::Token { until_ms, .. }) = read(Some(&r), &rule(), NOW_MS) else {
        panic!()
    };
    assert_eq!(until_ms, NOW_MS);
}

#[test]
fn the_callers_refusals_are_refusals_and_the_rest_is_no_answer() {
    for code in REFUSALS {
        for status in [400, 401, 403] {
            let r = response(status, &json!({"error": code}).to_string());
            assert_eq!(
                read(Some(&r), &rule(), NOW_MS),
                Ok(Exchanged::Refused(code.to_owned())),
                "{status} {code}"
            );
        }
    }
    let cases = [
        (
            response(401, r#"{"error":"invalid_client"}"#),
            ExchangeError::Misconfigured("invalid_client".to_owned()),
        ),
        (
            response(400, r#"{"error":"unsupported_grant_type"}"#),
            ExchangeError::Misconfigured("unsupported_grant_type".to_owned()),
        ),
        (response(400, "not json"), ExchangeError::Status(400)),
        (
            response(500, r#"{"error":"invalid_grant"}"#),
            ExchangeError::Status(500),
        ),
        (response(503, ""), ExchangeError::Status(503)),
        (
            response(200, "<html>"),
            ExchangeError::BadResponse("not a JSON object"),
        ),
        (
            ok(json!({"token_type": "Bearer"})),
            ExchangeError::BadResponse("no access_token"),
        ),
        (
            ok(json!({"access_token": "", "token_type": "Bearer"})),
            ExchangeError::BadResponse("no access_token"),
        ),
        (
            ok(json!({"access_token": "a b", "token_type": "Bearer"})),
            ExchangeError::BadResponse("no access_token"),
        ),
        (
            ok(json!({"access_token": "t", "token_type": "N_A"})),
            ExchangeError::BadResponse("token_type is not Bearer"),
        ),
        (
            ok(json!({"access_token": "t", "token_type": "DPoP"})),
            ExchangeError::BadResponse("token_type is not Bearer"),
        ),
        (
            ok(json!({"access_token": "t"})),
            ExchangeError::BadResponse("token_type is not Bearer"),
        ),
    ];
    for (r, expected) in cases {
        assert_eq!(read(Some(&r), &rule(), NOW_MS), Err(expected));
    }
    assert_eq!(read(None, &rule(), NOW_MS), Err(ExchangeError::Transport));
    // An error code that could smuggle text into a log line is not read as one.
    let r = response(400, &json!({"error": "invalid_grant\nforged"}).to_string());
    assert_eq!(
        read(Some(&r), &rule(), NOW_MS),
        Err(ExchangeError::Status(400))
    );
}

#[test]
fn records_name_their_key_and_die_at_their_time() {
    let key = [7u8; 32];
    let token = Exchanged::Token {
        token: "abc.def.ghi".to_owned(),
        until_ms: NOW_MS + 5,
    };
    let record = encode(&key, &token, NOW_MS + 5);
    assert_eq!(decode(&key, &record, NOW_MS + 4), Some((token, NOW_MS + 5)));
    assert_eq!(decode(&key, &record, NOW_MS + 5), None);
    assert_eq!(decode(&[8u8; 32], &record, NOW_MS), None);
    let refused = Exchanged::Refused("invalid_target".to_owned());
    let record = encode(&key, &refused, NOW_MS + 5);
    assert_eq!(decode(&key, &record, NOW_MS), Some((refused, NOW_MS + 5)));
    for cut in 0..41 {
        assert_eq!(decode(&key, &record[..cut], NOW_MS), None);
    }
    let mut bad_tag = record.clone();
    bad_tag[40] = 2;
    assert_eq!(decode(&key, &bad_tag, NOW_MS), None);
}

#[test]
fn keys_differ_by_token_rule_and_configuration() {
    let fp = [1u8; 32];
    let k = key(&fp, 0, "t");
    assert_ne!(k, key(&fp, 1, "t"));
    assert_ne!(k, key(&fp, 0, "u"));
    assert_ne!(k, key(&[2u8; 32], 0, "t"));
    assert_eq!(k, key(&fp, 0, "t"));
}

fn backend(keys: &[TestKey], active: &str) -> BackendIssuer {
    let keys = keys
        .iter()
        .map(|k| SigningKey::from_jwk(&Value::Object(k.private_jwk())).unwrap())
        .collect();
    BackendIssuer {
        issuer: GATEWAY.to_owned(),
        keys: SigningKeys::new(keys, active).unwrap(),
        jwks_path: "/.well-known/tollgate/jwks.json".to_owned(),
        jwks_max_age_s: 120,
    }
}

fn sign_rule(lifetime_s: u64) -> SignRule {
    SignRule {
        audience: "orders".to_owned(),
        lifetime_s,
        placement: Placement::Header(DEFAULT_HEADER.to_owned()),
        claims: vec![
            ("sub".to_owned(), vec!["sub".to_owned()]),
            ("client_id".to_owned(), vec!["client_id".to_owned()]),
            ("scope".to_owned(), vec!["scope".to_owned()]),
            ("acr".to_owned(), vec!["acr".to_owned()]),
            ("dept".to_owned(), vec!["org".to_owned(), "dept".to_owned()]),
        ],
    }
}

#[test]
fn backend_claims_map_the_callers_claims_and_name_the_issuer() {
    let caller = json!({"sub": "alice", "client_id": "app", "scope": "read", "aud": "x",
                        "org": {"dept": "sales"}, "acr": null, "iss": "https://ignored"});
    let claims = backend_claims(
        &sign_rule(60),
        "https://as1.test",
        caller.as_object().unwrap(),
    );
    assert_eq!(
        Value::Object(claims),
        json!({"sub": "alice", "client_id": "app", "scope": "read", "dept": "sales",
               "orig_iss": "https://as1.test"})
    );
}

/// Verifies `token` as an upstream would: the gateway's published JWKS, its issuer, the
/// route's audience.
fn verify(token: &str, jwks: &str, now_s: i64) -> Map<String, Value> {
    verify_with_published_jwks(token, jwks, GATEWAY, "orders", now_s)
        .unwrap()
        .claims
}

#[test]
fn a_minted_token_verifies_against_the_published_jwks() {
    let b = backend(&[TestKey::Ed25519, TestKey::P256], "ec-p256");
    let claims = json!({"sub": "alice", "orig_iss": "https://as1.test"});
    let minted = mint(
        &b,
        &sign_rule(60),
        claims.as_object().unwrap().clone(),
        Some(NOW_S + 3600),
        NOW_MS,
        &[9u8; 16],
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(minted.token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header,
        json!({"alg": "ES256", "kid": "ec-p256", "typ": "JWT"})
    );
    let got = verify(&minted.token, b.keys.public_jwks(), NOW_S);
    assert_eq!(got["iss"], json!(GATEWAY));
    assert_eq!(got["aud"], json!("orders"));
    assert_eq!(got["sub"], json!("alice"));
    assert_eq!(got["orig_iss"], json!("https://as1.test"));
    assert_eq!(got["iat"], json!(NOW_S));
    assert_eq!(got["exp"], json!(NOW_S + 60));
    assert_eq!(got["jti"], json!(URL_SAFE_NO_PAD.encode([9u8; 16])));
    // Reused until a quarter of its life is left.
    assert_eq!(minted.reuse_until_ms, NOW_MS + 45_000);
}

#[test]
fn a_minted_token_never_outlives_the_callers() {
    let b = backend(&[TestKey::Ed25519], "ed-25519");
    let minted = mint(
        &b,
        &sign_rule(600),
        Map::new(),
        Some(NOW_S + 8),
        NOW_MS,
        &[0u8; 16],
    );
    let got = verify(&minted.token, b.keys.public_jwks(), NOW_S);
    assert_eq!(got["exp"], json!(NOW_S + 8));
    // At least 1 s before its exp it is no longer handed out.
    assert_eq!(minted.reuse_until_ms, NOW_MS + 6_000);
}

#[test]
fn the_jwks_is_served_at_its_path_only_for_get_and_head() {
    let b = backend(&[TestKey::Ed25519, TestKey::P256], "ed-25519");
    let path = "/.well-known/tollgate/jwks.json";
    for method in ["GET", "HEAD"] {
        for asked in [path.to_owned(), format!("{path}?v=2")] {
            let reply = jwks_answer(Some(&b), method, &asked).unwrap();
            assert_eq!(reply.status, 200);
            assert!(reply
                .headers
                .contains(&("cache-control".to_owned(), "public, max-age=120".to_owned())));
            let jwks: Value = serde_json::from_str(&reply.body).unwrap();
            let kids: Vec<&str> = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap())
                .collect();
            assert_eq!(kids, ["ed-25519", "ec-p256"]);
            assert!(!reply.body.contains("\"d\""));
        }
    }
    assert!(jwks_answer(Some(&b), "POST", path).is_none());
    assert!(jwks_answer(Some(&b), "GET", "/.well-known/tollgate/jwks.json/x").is_none());
    assert!(jwks_answer(Some(&b), "GET", "/.WELL-KNOWN/tollgate/jwks.json").is_none());
    assert!(jwks_answer(None, "GET", path).is_none());
}
