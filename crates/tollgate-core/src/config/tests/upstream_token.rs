//! `backend_token`, issuers' `token_exchange` and routes' `upstream_token`: defaults, and the
//! path and reason of every refusal; secrets and private keys never in an error.

use crate::upstream::{Placement, UpstreamRule};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

fn exchange_client() -> Value {
    json!({"endpoint": "https://as1.example.com/token", "upstream": "as1",
           "client_id": "tollgate", "client_secret": "do-not-print-me"})
}

fn private(key: TestKey) -> Value {
    Value::Object(key.private_jwk())
}

/// as1 (with `token_exchange`) and as2 (without), the gateway's keys, and `route` first.
fn with_route(route: Value) -> Value {
    let mut as1 = remote_issuer("as1");
    as1["token_exchange"] = exchange_client();
    json!({
        "issuers": [as1, remote_issuer("as2")],
        "backend_token": {"issuer": "https://gw.example.com", "keys": [private(TestKey::Ed25519)]},
        "routes": [route],
    })
}

fn refused(v: &Value) -> (String, String) {
    let e = error_at(v);
    (e.path, e.message)
}

#[test]
fn defaults() {
    let cfg = parse(&with_route(
        json!({"require": {"issuers": ["as1"], "upstream_token": {
        "exchange": {"audience": "https://next.test"}}}}),
    ))
    .unwrap();
    let client = cfg.issuers[0].token_exchange.as_ref().unwrap();
    assert_eq!(client.timeout_ms, 2_000);
    assert_eq!(
        client.client.method,
        crate::introspect::AuthMethod::ClientSecretBasic
    );
    let Some(UpstreamRule::Exchange(x)) = cfg.upstream_rules.first() else {
        panic!()
    };
    assert_eq!((x.at, x.margin_ms, x.max_ttl_ms), (None, 10_000, 300_000));
    assert_eq!(x.audience, ["https://next.test"]);
    let backend = cfg.backend.as_ref().unwrap();
    assert_eq!(backend.jwks_path, "/.well-known/tollgate/jwks.json");
    assert_eq!(backend.jwks_max_age_s, 300);
    assert_eq!(backend.keys.active().kid(), "ed-25519");

    let cfg = parse(&with_route(json!({"require": {"upstream_token": {"sign": {
        "audience": "orders"}}}})))
    .unwrap();
    let Some(UpstreamRule::Sign(s)) = cfg.upstream_rules.first() else {
        panic!()
    };
    assert_eq!(s.lifetime_s, 60);
    assert_eq!(s.placement, Placement::Header("x-tollgate-jwt".to_owned()));
    let mapped: Vec<&str> = s.claims.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(mapped, ["sub", "client_id", "scope", "acr"]);
}

#[test]
fn every_refusal_names_its_path() {
    let route = |upstream_token: Value| {
        with_route(json!({"require": {"issuers": ["as1"], "upstream_token": upstream_token}}))
    };
    let cases = [
        (
            route(json!({})),
            "routes[0].require.upstream_token",
            "exactly one",
        ),
        (
            route(json!({"exchange": {"audience": "a"}, "sign": {"audience": "b"}})),
            "routes[0].require.upstream_token",
            "exactly one",
        ),
        (
            route(json!({"exchange": {}})),
            "routes[0].require.upstream_token.exchange",
            "audience, resource or both",
        ),
        (
            route(json!({"exchange": {"resource": "https://x.test/#frag"}})),
            "routes[0].require.upstream_token.exchange.resource[0]",
            "fragment",
        ),
        (
            route(json!({"exchange": {"resource": "relative/path"}})),
            "routes[0].require.upstream_token.exchange.resource[0]",
            "absolute",
        ),
        (
            route(json!({"exchange": {"audience": ["a", 1]}})),
            "routes[0].require.upstream_token.exchange.audience",
            "strings",
        ),
        (
            route(json!({"exchange": {"audience": "a", "scope": "a  b"}})),
            "routes[0].require.upstream_token.exchange.scope",
            "scope-tokens",
        ),
        (
            route(json!({"exchange": {"audience": "a", "issuer": "as2"}})),
            "routes[0].require.upstream_token.exchange.issuer",
            "no token_exchange",
        ),
        (
            route(json!({"exchange": {"audience": "a", "issuer": "nope"}})),
            "routes[0].require.upstream_token.exchange.issuer",
            "no issuer named",
        ),
        (
            route(json!({"exchange": {"audience": "a", "margin": 1}})),
            "routes[0].require.upstream_token.exchange.margin",
            "unknown field",
        ),
        (
            route(json!({"sign": {}})),
            "routes[0].require.upstream_token.sign.audience",
            "required",
        ),
        (
            route(json!({"sign": {"audience": "o", "lifetime_s": 0}})),
            "routes[0].require.upstream_token.sign.lifetime_s",
            "1..=3600",
        ),
        (
            route(json!({"sign": {"audience": "o", "header": "X-Upper"}})),
            "routes[0].require.upstream_token.sign.header",
            "lower-case",
        ),
        (
            route(json!({"sign": {"audience": "o", "header": "dpop"}})),
            "routes[0].require.upstream_token.sign.header",
            "lower-case",
        ),
        (
            route(json!({"sign": {"audience": "o", "claims": {"iss": "iss"}}})),
            "routes[0].require.upstream_token.sign.claims.iss",
            "set by the gateway",
        ),
        (
            route(json!({"sign": {"audience": "o", "claims": {"who": "a..b"}}})),
            "routes[0].require.upstream_token.sign.claims.who",
            "non-empty",
        ),
        (
            route(json!({"sign": {"audience": "o", "header": "x-tollgate-sub"}})),
            "routes",
            "identity",
        ),
    ];
    for (config, path, reason) in cases {
        let (at, message) = refused(&config);
        assert_eq!(at, path, "{config}");
        assert!(message.contains(reason), "{at}: {message}");
    }
}

#[test]
fn an_exchange_to_the_tokens_own_issuer_needs_every_accepted_issuer_to_exchange() {
    // The route accepts as1 and as2; as2 has no token endpoint for exchanges.
    let v = with_route(json!({"require": {"upstream_token": {"exchange": {"audience": "a"}}}}));
    let (at, message) = refused(&v);
    assert_eq!(at, "routes[0].require.upstream_token.exchange");
    assert!(message.contains("\"as2\""), "{message}");
    // Naming the exchanging issuer (the cross-domain case) is fine.
    let v = with_route(
        json!({"require": {"upstream_token": {"exchange": {"audience": "a", "issuer": "as1"}}}}),
    );
    let cfg = parse(&v).unwrap();
    let Some(UpstreamRule::Exchange(x)) = cfg.upstream_rules.first() else {
        panic!()
    };
    assert_eq!(x.at, Some(0));
}

#[test]
fn a_sign_route_needs_backend_token_and_its_keys_are_checked() {
    let mut v = with_route(json!({"require": {"upstream_token": {"sign": {"audience": "o"}}}}));
    v.as_object_mut().unwrap().remove("backend_token");
    assert_eq!(refused(&v).0, "routes[0].require.upstream_token.sign");

    let backend = |b: Value| {
        let mut v = with_route(json!({"anonymous": true}));
        v["backend_token"] = b;
        v
    };
    let mut public_only = private(TestKey::Ed25519);
    public_only.as_object_mut().unwrap().remove("d");
    let cases = [
        (
            json!({"keys": [private(TestKey::Ed25519)]}),
            "backend_token.issuer",
        ),
        (
            json!({"issuer": "not a url", "keys": [private(TestKey::Ed25519)]}),
            "backend_token.issuer",
        ),
        (
            json!({"issuer": "https://gw", "keys": []}),
            "backend_token.keys",
        ),
        (json!({"issuer": "https://gw"}), "backend_token.keys"),
        (
            json!({"issuer": "https://gw", "keys": [public_only]}),
            "backend_token.keys[0]",
        ),
        (
            json!({"issuer": "https://gw", "keys": [private(TestKey::RsaA)]}),
            "backend_token.keys[0]",
        ),
        (
            json!({"issuer": "https://gw", "keys": [private(TestKey::Ed25519), private(TestKey::P256)]}),
            "backend_token.active_kid",
        ),
        (
            json!({"issuer": "https://gw", "keys": [private(TestKey::Ed25519)], "active_kid": "nope"}),
            "backend_token.keys",
        ),
        (
            json!({"issuer": "https://gw", "keys": [private(TestKey::Ed25519)], "jwks_path": "jwks"}),
            "backend_token.jwks_path",
        ),
        (
            json!({"issuer": "https://gw", "keys": [private(TestKey::Ed25519)], "extra": 1}),
            "backend_token.extra",
        ),
    ];
    for (b, path) in cases {
        let e = error_at(&backend(b.clone()));
        assert_eq!(e.path, path, "{b}");
        for secret in [
            &TestKey::Ed25519.private_jwk()["d"],
            &TestKey::P256.private_jwk()["d"],
        ] {
            let secret = secret.as_str().unwrap();
            assert!(!e.message.contains(secret), "{e:?}");
        }
    }
    let cfg = parse(&backend(
        json!({"issuer": "https://gw", "active_kid": "ec-p256",
        "keys": [private(TestKey::Ed25519), private(TestKey::P256)]}),
    ))
    .unwrap();
    assert_eq!(cfg.backend.as_ref().unwrap().keys.active().kid(), "ec-p256");
    assert!(!format!("{cfg:?}").contains(TestKey::Ed25519.private_jwk()["d"].as_str().unwrap()));
}

#[test]
fn the_exchange_clients_secret_is_never_in_an_error_or_debug_output() {
    let mut v = with_route(json!({"anonymous": true}));
    v["issuers"][0]["token_exchange"]["auth_method"] = json!("private_key_jwt");
    let e = error_at(&v);
    assert_eq!(e.path, "issuers[0].token_exchange.auth_method");
    assert!(!e.message.contains("do-not-print-me"));
    v["issuers"][0]["token_exchange"]["auth_method"] = json!("client_secret_post");
    v["issuers"][0]["token_exchange"]["client_secret"] = json!(12345);
    let e = error_at(&v);
    assert_eq!(e.path, "issuers[0].token_exchange.client_secret");
    assert!(!e.message.contains("12345"));
    let mut v = with_route(json!({"anonymous": true}));
    v["issuers"][0]["token_exchange"]["upstream"] = json!("");
    assert_eq!(error_at(&v).path, "issuers[0].token_exchange.upstream");
    let cfg = parse(&with_route(json!({"anonymous": true}))).unwrap();
    assert!(!format!("{cfg:?}").contains("do-not-print-me"));
}
