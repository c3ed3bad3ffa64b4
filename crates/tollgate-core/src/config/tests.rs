//! Configuration parsing: defaults, the JSON path of every error, and the fingerprint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::testdata::{jwks, TestKey};

/// A remote-JWKS issuer with only the required members.
fn remote_issuer(name: &str) -> Value {
    json!({
        "name": name,
        "issuer": format!("https://{name}.example.com"),
        "jwks": {"uri": format!("https://{name}.example.com/jwks"), "upstream": name},
    })
}

fn parse(v: &Value) -> Result<FilterConfig, ConfigError> {
    FilterConfig::parse(v.to_string().as_bytes())
}

/// The error's JSON path (panics if the configuration is accepted).
fn error_at(v: &Value) -> ConfigError {
    match parse(v) {
        Ok(_) => panic!("accepted: {v}"),
        Err(e) => e,
    }
}

fn path_of(v: &Value) -> String {
    error_at(v).path
}

/// The minimal configuration with one member of `issuers[0]` replaced.
fn with_issuer_member(key: &str, value: Value) -> Value {
    let mut issuer = remote_issuer("as1");
    issuer[key] = value;
    json!({"issuers": [issuer]})
}

/// Two issuers and one route with the given requirement.
fn with_route(route: Value) -> Value {
    json!({"issuers": [remote_issuer("as1"), remote_issuer("as2")], "routes": [route]})
}

#[test]
fn defaults() {
    let cfg = parse(&json!({"issuers": [remote_issuer("as1")]})).unwrap();
    let i = &cfg.issuers[0];
    assert_eq!(i.name, "as1");
    assert_eq!(i.issuer, "https://as1.example.com");
    assert!(i.audiences.is_empty());
    for alg in Alg::ALL {
        assert!(i.algorithms.contains(alg), "{}", alg.name());
    }
    assert_eq!(i.clock_skew_s, 60);
    assert!(!i.require_at_jwt);
    assert_eq!(
        i.timing,
        Timing {
            refresh_ms: 300_000,
            retry_ms: 5_000,
            refetch_min_ms: 10_000,
            timeout_ms: 2_000,
            max_stale_ms: 86_400_000,
        }
    );
    match i.keys.as_ref().unwrap() {
        KeySource::Remote { upstream, source } => {
            assert_eq!(upstream, "as1");
            assert_eq!(
                source,
                &RemoteKeys::Jwks(Url::parse("https://as1.example.com/jwks").unwrap())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(cfg.routes.is_empty());
    assert!(cfg.default_policy.is_none());
    assert_eq!(cfg.realm, "tollgate");
    assert_eq!(cfg.cache_slots, 8192);
    let headers: Vec<(String, &str)> = cfg
        .identity
        .headers
        .iter()
        .map(|(path, h)| (path.join("."), h.as_str()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("client_id".to_owned(), "x-tollgate-client-id"),
            ("iss".to_owned(), "x-tollgate-iss"),
            ("scope".to_owned(), "x-tollgate-scope"),
            ("sub".to_owned(), "x-tollgate-sub"),
        ]
    );
    assert_eq!(
        cfg.identity.issuer_name_header.as_deref(),
        Some("x-tollgate-issuer")
    );
    assert_eq!(cfg.identity.payload_header, None);
    assert!(!cfg.identity.drop_authorization);
    assert_eq!(cfg.identity.owned_headers().count(), 5);
}

#[test]
fn explicit_settings_are_compiled() {
    let cfg = parse(&json!({
        "issuers": [{
            "name": "as1",
            "issuer": "https://as1.example.com/",
            "jwks": {"discovery": true, "upstream": "as1"},
            "audiences": ["api://a", "api://b"],
            "algorithms": ["ES256", "EdDSA"],
            "clock_skew_s": 0,
            "require_at_jwt": true,
            "refresh_interval_s": 60,
            "max_stale_s": 600,
        }, {
            "name": "as2",
            "issuer": "https://as2.example.com",
            "jwks": {"inline": jwks(&[TestKey::RsaA.public_jwk(), json!({"kty": "oct", "k": "AA"})])},
        }],
        "routes": [
            {"name": "r", "match": {"prefix": "/api", "methods": ["GET"], "host": "API.Example.com"},
             "require": {"issuers": ["as2"], "scopes": ["read"], "claims": {"org.id": 7, "tier": ["gold", true]}}},
            {"match": {"exact": "/health"}, "anonymous": true},
        ],
        "default_route": {"anonymous": true},
        "identity": {"headers": {"sub": "x-user"}, "payload_header": "x-claims",
                     "issuer_name_header": null, "drop_authorization": true},
        "realm": "orders api",
        "cache": {"max_entries": 0},
    }))
    .unwrap();
    let as1 = &cfg.issuers[0];
    assert_eq!(as1.audiences, ["api://a", "api://b"]);
    assert!(as1.algorithms.contains(Alg::Es256) && as1.algorithms.contains(Alg::EdDsa));
    assert!(!as1.algorithms.contains(Alg::Rs256));
    assert_eq!((as1.clock_skew_s, as1.require_at_jwt), (0, true));
    assert_eq!(
        (as1.timing.refresh_ms, as1.timing.max_stale_ms),
        (60_000, 600_000)
    );
    match as1.keys.as_ref().unwrap() {
        KeySource::Remote {
            source: RemoteKeys::Discovery(url),
            ..
        } => assert_eq!(
            url.as_str(),
            "https://as1.example.com/.well-known/openid-configuration"
        ),
        other => panic!("{other:?}"),
    }
    match cfg.issuers[1].keys.as_ref().unwrap() {
        KeySource::Inline(keys) => assert_eq!(keys.len(), 1, "the oct key is skipped"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cfg.issuer_by_iss("https://as2.example.com"), Some(1));
    assert_eq!(cfg.issuer_by_iss("https://as2.example.com/"), None);
    assert_eq!(cfg.routes.len(), 2);
    assert_eq!(
        cfg.routes[0].matcher.host.as_deref(),
        Some("api.example.com")
    );
    match &cfg.routes[0].policy {
        Policy::Require(r) => {
            assert_eq!(r.issuers, [1]);
            assert_eq!(r.scopes_all, ["read"]);
            let rules: Vec<_> = r
                .claims
                .iter()
                .map(|c| (c.path.join("/"), c.accepted.clone()))
                .collect();
            assert_eq!(
                rules,
                [
                    ("org/id".to_owned(), vec![json!(7)]),
                    ("tier".to_owned(), vec![json!("gold"), json!(true)]),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(cfg.routes[1].policy, Policy::Anonymous));
    assert!(matches!(cfg.default_policy, Some(Policy::Anonymous)));
    assert_eq!(cfg.identity.issuer_name_header, None);
    assert_eq!(cfg.identity.payload_header.as_deref(), Some("x-claims"));
    assert!(cfg.identity.drop_authorization);
    assert_eq!(cfg.realm, "orders api");
    assert_eq!(cfg.cache_slots, 0);
}

#[test]
fn alg_none_is_refused_with_its_path() {
    let mut second = remote_issuer("as2");
    second["algorithms"] = json!(["none"]);
    let e = error_at(&json!({"issuers": [remote_issuer("as1"), second]}));
    assert_eq!(e.path, "issuers[1].algorithms[0]");
    assert!(e.message.contains("none"), "{}", e.message);
    assert!(e
        .to_string()
        .starts_with("invalid configuration at issuers[1].algorithms[0]: "));
}

#[test]
fn hmac_and_unknown_algorithms_are_refused() {
    let e = error_at(&with_issuer_member("algorithms", json!(["RS256", "HS256"])));
    assert_eq!(e.path, "issuers[0].algorithms[1]");
    assert!(e.message.contains("HMAC"), "{}", e.message);
    let e = error_at(&with_issuer_member("algorithms", json!(["rs256"])));
    assert_eq!(e.path, "issuers[0].algorithms[0]");
    assert!(e.message.contains("unsupported"), "{}", e.message);
    assert_eq!(
        path_of(&with_issuer_member("algorithms", json!([]))),
        "issuers[0].algorithms"
    );
}

#[test]
fn unknown_fields_are_errors_at_their_path() {
    assert_eq!(
        path_of(&with_issuer_member("audience", json!("api://x"))),
        "issuers[0].audience"
    );
    let e = error_at(&json!({"issuers": [remote_issuer("as1")], "cache": {"size": 1}}));
    assert_eq!(e.path, "cache.size");
    assert!(e.message.contains("unknown field"), "{}", e.message);
    assert_eq!(
        path_of(&with_route(json!({"match": {"path": "/x"}}))),
        "routes[0].match.path"
    );
}

#[test]
fn type_errors_name_their_path() {
    assert_eq!(
        path_of(&with_issuer_member("clock_skew_s", json!(-1))),
        "issuers[0].clock_skew_s"
    );
    assert_eq!(
        path_of(&with_issuer_member("require_at_jwt", json!("yes"))),
        "issuers[0].require_at_jwt"
    );
    let e = error_at(&json!({"routes": []}));
    assert_eq!(e.path, "");
    assert!(e.message.contains("issuers"), "{}", e.message);
    assert_eq!(
        e.to_string(),
        format!("invalid configuration at .: {}", e.message)
    );
}

#[test]
fn text_that_is_not_one_json_document_is_refused() {
    let ok = json!({"issuers": [remote_issuer("as1")]}).to_string();
    assert!(FilterConfig::parse(format!("{ok} {{}}").as_bytes()).is_err());
    assert!(FilterConfig::parse(b"").is_err());
    assert!(FilterConfig::parse(b"issuers: []").is_err());
}

#[test]
fn issuer_errors() {
    assert_eq!(path_of(&json!({"issuers": []})), "issuers");
    assert_eq!(
        path_of(&json!({"issuers": [remote_issuer("as1"), remote_issuer("as1")]})),
        "issuers[1].name"
    );
    let mut same_iss = remote_issuer("as2");
    same_iss["issuer"] = json!("https://as1.example.com");
    assert_eq!(
        path_of(&json!({"issuers": [remote_issuer("as1"), same_iss]})),
        "issuers[1].issuer"
    );
    assert_eq!(
        path_of(&with_issuer_member("name", json!("as 1"))),
        "issuers[0].name"
    );
    assert_eq!(
        path_of(&with_issuer_member("name", json!(""))),
        "issuers[0].name"
    );
    assert_eq!(
        path_of(&with_issuer_member("issuer", json!(""))),
        "issuers[0].issuer"
    );
    assert_eq!(
        path_of(&with_issuer_member("audiences", json!(["a", ""]))),
        "issuers[0].audiences[1]"
    );
    for field in [
        "refresh_interval_s",
        "retry_interval_s",
        "refetch_min_interval_s",
        "fetch_timeout_ms",
        "max_stale_s",
    ] {
        assert_eq!(
            path_of(&with_issuer_member(field, json!(0))),
            format!("issuers[0].{field}")
        );
    }
}

#[test]
fn jwks_errors() {
    let both = json!({"uri": "https://as1.example.com/jwks", "discovery": true, "upstream": "as1"});
    assert_eq!(
        path_of(&with_issuer_member("jwks", both)),
        "issuers[0].jwks"
    );
    assert_eq!(
        path_of(&with_issuer_member("jwks", json!({}))),
        "issuers[0].jwks"
    );
    assert_eq!(
        path_of(&with_issuer_member(
            "jwks",
            json!({"uri": "https://as1.example.com/jwks"})
        )),
        "issuers[0].jwks.upstream"
    );
    assert_eq!(
        path_of(&with_issuer_member(
            "jwks",
            json!({"uri": "file:///etc/jwks", "upstream": "x"})
        )),
        "issuers[0].jwks.uri"
    );
    assert_eq!(
        path_of(&with_issuer_member(
            "jwks",
            json!({"discovery": false, "upstream": "x"})
        )),
        "issuers[0].jwks.discovery"
    );
    let e = error_at(&with_issuer_member(
        "jwks",
        json!({"inline": jwks(&[TestKey::Rsa1024.public_jwk()])}),
    ));
    assert_eq!(e.path, "issuers[0].jwks.inline");
    assert!(
        e.message.contains("no usable signature key (1 skipped)"),
        "{}",
        e.message
    );
    assert_eq!(
        path_of(&with_issuer_member(
            "jwks",
            json!({"inline": {"kty": "RSA"}})
        )),
        "issuers[0].jwks.inline"
    );
    assert_eq!(
        path_of(&with_issuer_member(
            "jwks",
            json!({"inline": jwks(&[TestKey::RsaA.public_jwk()]), "upstream": "as1"})
        )),
        "issuers[0].jwks.upstream"
    );
}

#[test]
fn route_errors() {
    let cases = [
        (
            json!({"require": {"issuers": ["as1", "as9"]}}),
            "routes[0].require.issuers[1]",
        ),
        (
            json!({"anonymous": true, "require": {}}),
            "routes[0].require",
        ),
        (
            json!({"require": {"scopes": ["read", "a b"]}}),
            "routes[0].require.scopes[1]",
        ),
        (
            json!({"require": {"scopes_any": [""]}}),
            "routes[0].require.scopes_any[0]",
        ),
        (
            json!({"require": {"claims": {"tenant": []}}}),
            "routes[0].require.claims.tenant",
        ),
        (
            json!({"require": {"claims": {"tenant": {"a": 1}}}}),
            "routes[0].require.claims.tenant",
        ),
        (
            json!({"require": {"claims": {"tenant": [null]}}}),
            "routes[0].require.claims.tenant",
        ),
        (
            json!({"require": {"claims": {"a..b": "x"}}}),
            "routes[0].require.claims.a..b",
        ),
        (
            json!({"match": {"prefix": "api"}}),
            "routes[0].match.prefix",
        ),
        (
            json!({"match": {"exact": "/a", "prefix": "/a"}}),
            "routes[0].match",
        ),
        (
            json!({"match": {"methods": ["get"]}}),
            "routes[0].match.methods[0]",
        ),
    ];
    for (route, path) in cases {
        assert_eq!(path_of(&with_route(route.clone())), path, "{route}");
    }
    let v = json!({"issuers": [remote_issuer("as1")], "default_route": {"require": {"issuers": ["nope"]}}});
    assert_eq!(path_of(&v), "default_route.require.issuers[0]");
}

#[test]
fn identity_and_realm_errors() {
    let with_identity =
        |identity: Value| json!({"issuers": [remote_issuer("as1")], "identity": identity});
    assert_eq!(
        path_of(&with_identity(json!({"headers": {"sub": "X-Sub"}}))),
        "identity.headers.sub"
    );
    assert_eq!(
        path_of(&with_identity(json!({"headers": {"sub": "authorization"}}))),
        "identity.headers.sub"
    );
    assert_eq!(
        path_of(&with_identity(
            json!({"headers": {"sub": "x-a", "tid": "x-a"}})
        )),
        "identity.headers.tid"
    );
    assert_eq!(
        path_of(&with_identity(
            json!({"headers": {"sub": "x-sub"}, "payload_header": "x-sub"})
        )),
        "identity.payload_header"
    );
    assert_eq!(
        path_of(&with_identity(json!({"issuer_name_header": "host"}))),
        "identity.issuer_name_header"
    );
    let realm = |r: &str| json!({"issuers": [remote_issuer("as1")], "realm": r});
    assert_eq!(path_of(&realm("a\"b")), "realm");
    assert_eq!(path_of(&realm("")), "realm");
    assert_eq!(path_of(&realm("line\nbreak")), "realm");
}

#[test]
fn fingerprint_is_the_hash_of_the_text() {
    let text = json!({"issuers": [remote_issuer("as1")]}).to_string();
    let a = FilterConfig::parse(text.as_bytes()).unwrap();
    let again = FilterConfig::parse(text.as_bytes()).unwrap();
    assert_eq!(a.fingerprint, again.fingerprint);
    let spaced = FilterConfig::parse(format!(" {text}\n").as_bytes()).unwrap();
    assert_ne!(
        a.fingerprint, spaced.fingerprint,
        "any change of text is a new configuration"
    );
    let other = json!({"issuers": [remote_issuer("as2")]}).to_string();
    assert_ne!(
        a.fingerprint,
        FilterConfig::parse(other.as_bytes()).unwrap().fingerprint
    );
}

// ---------------------------------------------------------------------------------------------
// Introspection (RFC 7662) and opaque tokens
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "s3cr3t-never-shown";

/// An introspection block with only the required members (fixed endpoint).
fn introspection(name: &str) -> Value {
    json!({
        "endpoint": format!("https://{name}.example.com/introspect"),
        "upstream": name,
        "client_id": "tollgate",
        "client_secret": SECRET,
    })
}

/// An issuer whose tokens are only introspected (no jwks).
fn opaque_issuer(name: &str) -> Value {
    json!({
        "name": name,
        "issuer": format!("https://{name}.example.com"),
        "introspection": introspection(name),
    })
}

/// `remote_issuer("as1")` with the members of `extra` added to its introspection block
/// (`null` removes one).
fn with_introspection(extra: Value) -> Value {
    let mut issuer = remote_issuer("as1");
    let mut intro = introspection("as1");
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            intro.as_object_mut().unwrap().remove(k);
        } else {
            intro[k] = v.clone();
        }
    }
    issuer["introspection"] = intro;
    json!({"issuers": [issuer]})
}

/// `opaque_issuer("as1")` with the given `opaque_tokens`.
fn with_opaque_rules(rules: Value) -> Value {
    let mut issuer = opaque_issuer("as1");
    issuer["opaque_tokens"] = rules;
    json!({"issuers": [issuer]})
}

/// `as1` (JWKS only), `as2` and `as3` (introspection only) and one route.
fn with_opaque_route(route: Value) -> Value {
    json!({
        "issuers": [remote_issuer("as1"), opaque_issuer("as2"), opaque_issuer("as3")],
        "routes": [route],
    })
}

fn requirement_of(policy: &Policy) -> &Requirement {
    match policy {
        Policy::Require(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn introspection_defaults() {
    let cfg = parse(&json!({"issuers": [opaque_issuer("as1")]})).unwrap();
    let i = &cfg.issuers[0];
    assert!(i.keys.is_none(), "jwks is optional with introspection");
    let intro = i.introspection.as_ref().unwrap();
    assert_eq!(
        intro.endpoint,
        IntrospectionEndpoint::Fixed(Url::parse("https://as1.example.com/introspect").unwrap())
    );
    assert_eq!(intro.upstream, "as1");
    assert_eq!(intro.client.id, "tollgate");
    assert_eq!(intro.client.secret.expose(), SECRET);
    assert_eq!(intro.client.method, AuthMethod::ClientSecretBasic);
    assert_eq!(intro.timeout_ms, 2_000);
    assert_eq!(
        intro.ttl,
        Ttl {
            max_ms: 300_000,
            negative_ms: 10_000,
        }
    );
    assert!(!intro.introspect_jwts);
    assert!(!intro.require_token_type);
    assert!(i.opaque.prefixes.is_empty() && i.opaque.pattern.is_none());
    assert!(!i.opaque.matches("anything"), "no rule matches nothing");
    let plan = i.fetch_plan();
    assert!(plan.is_empty(), "a fixed endpoint needs no fetch: {plan:?}");
    // An issuer with jwks only has no introspection and no opaque rules.
    let cfg = parse(&json!({"issuers": [remote_issuer("as1")]})).unwrap();
    assert!(cfg.issuers[0].introspection.is_none());
}

#[test]
fn introspection_explicit_settings_are_compiled() {
    let cfg = parse(&json!({"issuers": [{
        "name": "as1",
        "issuer": "https://as1.example.com/",
        "jwks": {"discovery": true, "upstream": "as1_jwks"},
        "introspection": {
            "discovery": "https://as1.example.com/.well-known/openid-configuration",
            "upstream": "as1_intro",
            "client_id": "rs:orders",
            "client_secret": SECRET,
            "auth_method": "client_secret_post",
            "timeout_ms": 750,
            "max_ttl_s": 0,
            "negative_ttl_s": 0,
            "introspect_jwts": true,
            "require_token_type": true,
        },
        "opaque_tokens": {"prefixes": ["at_", "rt."], "pattern": "[0-9a-f]{32}"},
    }]}))
    .unwrap();
    let i = &cfg.issuers[0];
    let intro = i.introspection.as_ref().unwrap();
    let doc = Url::parse("https://as1.example.com/.well-known/openid-configuration").unwrap();
    assert_eq!(
        intro.endpoint,
        IntrospectionEndpoint::Discovered(doc.clone())
    );
    assert_eq!(intro.upstream, "as1_intro");
    assert_eq!(intro.client.method, AuthMethod::ClientSecretPost);
    assert_eq!(intro.timeout_ms, 750);
    assert_eq!(
        intro.ttl,
        Ttl {
            max_ms: 0,
            negative_ms: 0
        }
    );
    assert!(intro.introspect_jwts && intro.require_token_type);
    // One discovery document serves both jwks_uri and introspection_endpoint.
    let plan = i.fetch_plan();
    assert!(plan.introspection_endpoint_wanted);
    assert_eq!(plan.discovery, Some(("as1_jwks", &doc)));
    assert_eq!(i.opaque.prefixes, ["at_", "rt."]);
    for token in ["at_x", "rt.", "0123456789abcdef0123456789abcdef"] {
        assert!(i.opaque.matches(token), "{token}");
    }
    for token in [
        "x_at_",
        "rt",
        "0123456789abcdef0123456789abcdef0",
        "g123456789abcdef0123456789abcdef",
    ] {
        assert!(!i.opaque.matches(token), "the pattern is anchored: {token}");
    }
}

#[test]
fn introspection_discovery_true_uses_the_issuer_url() {
    let mut issuer = opaque_issuer("as1");
    issuer["introspection"]["discovery"] = json!(true);
    issuer["introspection"]
        .as_object_mut()
        .unwrap()
        .remove("endpoint");
    let cfg = parse(&json!({"issuers": [issuer]})).unwrap();
    let i = &cfg.issuers[0];
    let doc = Url::parse("https://as1.example.com/.well-known/openid-configuration").unwrap();
    assert_eq!(
        i.introspection.as_ref().unwrap().endpoint,
        IntrospectionEndpoint::Discovered(doc.clone())
    );
    let plan = i.fetch_plan();
    assert!(plan.introspection_endpoint_wanted && plan.jwks.is_none());
    assert_eq!(plan.discovery, Some(("as1", &doc)));
    // Same document written both ways: accepted.
    let mut both = remote_issuer("as1");
    both["jwks"] = json!({"discovery": "https://as1.example.com/.well-known/openid-configuration", "upstream": "as1"});
    both["introspection"] =
        json!({"discovery": true, "upstream": "as1", "client_id": "c", "client_secret": ""});
    assert!(parse(&json!({"issuers": [both]})).is_ok());
}

#[test]
fn issuer_needs_jwks_or_introspection() {
    let mut bare = remote_issuer("as1");
    bare.as_object_mut().unwrap().remove("jwks");
    let e = error_at(&json!({"issuers": [bare]}));
    assert_eq!(e.path, "issuers[0]");
    assert!(e.message.contains("introspection"), "{}", e.message);
    let mut null_both = remote_issuer("as1");
    null_both["jwks"] = Value::Null;
    null_both["introspection"] = Value::Null;
    assert_eq!(path_of(&json!({"issuers": [null_both]})), "issuers[0]");
}

#[test]
fn introspection_errors() {
    let at = "issuers[0].introspection";
    let cases = [
        (json!({"discovery": true}), at.to_owned()),
        (json!({"endpoint": null}), at.to_owned()),
        (
            json!({"endpoint": "ftp://as1.example.com/x"}),
            format!("{at}.endpoint"),
        ),
        (json!({"endpoint": "not a url"}), format!("{at}.endpoint")),
        (
            json!({"endpoint": null, "discovery": false}),
            format!("{at}.discovery"),
        ),
        (
            json!({"endpoint": null, "discovery": "/relative"}),
            format!("{at}.discovery"),
        ),
        (json!({"upstream": ""}), format!("{at}.upstream")),
        (json!({"upstream": null}), at.to_owned()),
        (json!({"client_id": ""}), format!("{at}.client_id")),
        (json!({"client_id": null}), at.to_owned()),
        (json!({"client_secret": null}), at.to_owned()),
        (
            json!({"auth_method": "private_key_jwt"}),
            format!("{at}.auth_method"),
        ),
        (
            json!({"auth_method": "Client_Secret_Basic"}),
            format!("{at}.auth_method"),
        ),
        (json!({"timeout_ms": 0}), format!("{at}.timeout_ms")),
        (json!({"max_ttl_s": -1}), format!("{at}.max_ttl_s")),
        (
            json!({"negative_ttl_s": 1.5}),
            format!("{at}.negative_ttl_s"),
        ),
        (
            json!({"introspect_jwts": "yes"}),
            format!("{at}.introspect_jwts"),
        ),
        (
            json!({"client_secret_basic": true}),
            format!("{at}.client_secret_basic"),
        ),
    ];
    for (extra, path) in cases {
        assert_eq!(path_of(&with_introspection(extra.clone())), path, "{extra}");
    }
    let e = error_at(&with_introspection(json!({"auth_method": "none"})));
    assert!(e.message.contains("client_secret_basic"), "{}", e.message);
}

#[test]
fn introspection_discovery_true_needs_an_http_issuer() {
    let mut issuer = opaque_issuer("as1");
    issuer["issuer"] = json!("urn:example:as1");
    issuer["introspection"] =
        json!({"discovery": true, "upstream": "as1", "client_id": "c", "client_secret": "s"});
    let e = error_at(&json!({"issuers": [issuer]}));
    assert_eq!(e.path, "issuers[0].introspection.discovery");
    assert!(e.message.contains("issuer URL"), "{}", e.message);
}

#[test]
fn introspection_and_jwks_discovery_must_agree() {
    let mut issuer = remote_issuer("as1");
    issuer["jwks"] = json!({"discovery": true, "upstream": "as1"});
    issuer["introspection"] = json!({
        "discovery": "https://as1.example.com/.well-known/oauth-authorization-server",
        "upstream": "as1", "client_id": "c", "client_secret": "s",
    });
    let e = error_at(&json!({"issuers": [issuer]}));
    assert_eq!(e.path, "issuers[0].introspection.discovery");
    assert!(e.message.contains("jwks.discovery"), "{}", e.message);
    // A JWKS URL and a discovered introspection endpoint do not conflict.
    let mut ok = remote_issuer("as1");
    ok["introspection"] =
        json!({"discovery": true, "upstream": "as1", "client_id": "c", "client_secret": "s"});
    let cfg = parse(&json!({"issuers": [ok]})).unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(plan.jwks.is_some() && plan.discovery.is_some() && plan.introspection_endpoint_wanted);
}

#[test]
fn introspect_jwts_needs_jwks() {
    let mut issuer = opaque_issuer("as1");
    issuer["introspection"]["introspect_jwts"] = json!(true);
    let e = error_at(&json!({"issuers": [issuer]}));
    assert_eq!(e.path, "issuers[0].introspection.introspect_jwts");
    assert!(e.message.contains("jwks"), "{}", e.message);
    assert!(parse(&with_introspection(json!({"introspect_jwts": true}))).is_ok());
}

#[test]
fn opaque_token_rule_errors() {
    let at = "issuers[0].opaque_tokens";
    let cases = [
        (json!({}), at.to_owned()),
        (json!({"prefixes": []}), at.to_owned()),
        (json!({"prefixes": [], "pattern": null}), at.to_owned()),
        (
            json!({"prefixes": ["at_", ""]}),
            format!("{at}.prefixes[1]"),
        ),
        (json!({"pattern": "tok_[a-z"}), format!("{at}.pattern")),
        (json!({"pattern": "(unclosed"}), format!("{at}.pattern")),
        (json!({"pattern": 7}), format!("{at}.pattern")),
        (json!({"prefix": "at_"}), format!("{at}.prefix")),
    ];
    for (rules, path) in cases {
        assert_eq!(path_of(&with_opaque_rules(rules.clone())), path, "{rules}");
    }
    let e = error_at(&with_opaque_rules(json!({"pattern": "tok_[a-z"})));
    assert!(e.message.contains("regular expression"), "{}", e.message);
    assert!(parse(&with_opaque_rules(json!({"prefixes": [], "pattern": "x+"}))).is_ok());
}

/// A pattern that is not a regular expression on its own must not become one (matching every
/// token) once wrapped in the anchoring group.
#[test]
fn opaque_pattern_cannot_escape_its_anchors() {
    for pattern in ["tok_[a-z]+)|(.*", "a)|(?:.*", ")|("] {
        assert_eq!(
            path_of(&with_opaque_rules(json!({"pattern": pattern}))),
            "issuers[0].opaque_tokens.pattern",
            "{pattern}"
        );
    }
}

#[test]
fn opaque_tokens_need_introspection() {
    let mut issuer = remote_issuer("as1");
    issuer["opaque_tokens"] = json!({"prefixes": ["at_"]});
    let e = error_at(&json!({"issuers": [issuer]}));
    assert_eq!(e.path, "issuers[0].opaque_tokens");
    assert!(e.message.contains("introspection"), "{}", e.message);
}

#[test]
fn route_opaque_issuer_and_issuer_header_are_compiled() {
    let cfg = parse(&with_opaque_route(json!({
        "require": {"issuers": ["as1", "as3"], "opaque_issuer": "as3", "issuer_header": "x-issuer"}
    })))
    .unwrap();
    let r = requirement_of(&cfg.routes[0].policy);
    assert_eq!(r.issuers, [0, 2]);
    assert_eq!(r.opaque_issuer, Some(2));
    assert_eq!(r.issuer_header.as_deref(), Some("x-issuer"));
    // Without an issuer list every introspecting issuer may be the default.
    let cfg = parse(&with_opaque_route(
        json!({"require": {"opaque_issuer": "as2"}}),
    ))
    .unwrap();
    let r = requirement_of(&cfg.routes[0].policy);
    assert_eq!(
        (r.opaque_issuer, r.issuer_header.as_deref()),
        (Some(1), None)
    );
    // Absent: neither.
    let cfg = parse(&with_opaque_route(json!({"require": {}}))).unwrap();
    let r = requirement_of(&cfg.routes[0].policy);
    assert_eq!((r.opaque_issuer, r.issuer_header.as_deref()), (None, None));
    // default_route takes them too.
    let mut v = with_opaque_route(json!({"require": {}}));
    v["default_route"] = json!({"require": {"opaque_issuer": "as3", "issuer_header": "x-as"}});
    let cfg = parse(&v).unwrap();
    let r = requirement_of(cfg.default_policy.as_ref().unwrap());
    assert_eq!(
        (r.opaque_issuer, r.issuer_header.as_deref()),
        (Some(2), Some("x-as"))
    );
}

#[test]
fn route_opaque_issuer_and_issuer_header_errors() {
    let cases = [
        (
            json!({"require": {"opaque_issuer": "as9"}}),
            "routes[0].require.opaque_issuer",
            "no issuer named",
        ),
        (
            json!({"require": {"opaque_issuer": "as1"}}),
            "routes[0].require.opaque_issuer",
            "no introspection",
        ),
        (
            json!({"require": {"issuers": ["as1", "as2"], "opaque_issuer": "as3"}}),
            "routes[0].require.opaque_issuer",
            "not among",
        ),
        (
            json!({"require": {"opaque_issuer": ""}}),
            "routes[0].require.opaque_issuer",
            "no issuer named",
        ),
        (
            json!({"require": {"issuer_header": "X-Issuer"}}),
            "routes[0].require.issuer_header",
            "header name",
        ),
        (
            json!({"require": {"issuer_header": ""}}),
            "routes[0].require.issuer_header",
            "header name",
        ),
        (
            json!({"require": {"issuer_header": "x issuer"}}),
            "routes[0].require.issuer_header",
            "header name",
        ),
        (
            json!({"require": {"issuer_header": 1}}),
            "routes[0].require.issuer_header",
            "string",
        ),
    ];
    for (route, path, message) in cases {
        let e = error_at(&with_opaque_route(route.clone()));
        assert_eq!(e.path, path, "{route}");
        assert!(e.message.contains(message), "{route}: {}", e.message);
    }
    let mut v = with_opaque_route(json!({}));
    v["default_route"] = json!({"require": {"opaque_issuer": "as1"}});
    assert_eq!(path_of(&v), "default_route.require.opaque_issuer");
    let mut v = with_opaque_route(json!({}));
    v["default_route"] = json!({"anonymous": true, "require": {"opaque_issuer": "as2"}});
    assert_eq!(path_of(&v), "default_route.require");
}

/// The client secret is in no debug output of the configuration and in no error message.
#[test]
fn client_secret_is_never_shown() {
    let cfg = parse(&with_introspection(json!({}))).unwrap();
    let debug = format!("{cfg:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(!format!("{:#?}", cfg.issuers).contains(SECRET));

    // Every introspection error of a configuration that carries the secret.
    let broken = [
        json!({"discovery": true}),
        json!({"endpoint": "ftp://x"}),
        json!({"upstream": ""}),
        json!({"client_id": ""}),
        json!({"auth_method": SECRET}),
        json!({"timeout_ms": 0}),
        json!({"max_ttl_s": -1}),
        json!({"introspect_jwts": "yes"}),
        // A misspelt member carrying the secret: the error names the member only.
        json!({"client_secert": SECRET}),
    ];
    let mut errors: Vec<ConfigError> = broken
        .iter()
        .map(|extra| error_at(&with_introspection(extra.clone())))
        .collect();
    // The secret written as something other than a string.
    for secret in [
        json!(123_456_789),
        json!(-42),
        json!(1.5),
        json!(true),
        json!([SECRET]),
        json!({"v": SECRET}),
    ] {
        let e = error_at(&with_introspection(
            json!({"client_secret": secret.clone()}),
        ));
        assert_eq!(e.path, "issuers[0].introspection.client_secret", "{secret}");
        let shown = secret.to_string();
        assert!(
            !e.message.contains(shown.trim_matches('"')),
            "{secret}: {}",
            e.message
        );
        assert!(
            !e.to_string().contains("123456789") && !e.to_string().contains("42"),
            "{e}"
        );
        errors.push(e);
    }
    // Errors elsewhere in a configuration that carries the secret.
    let mut v = with_introspection(json!({}));
    v["realm"] = json!("");
    errors.push(error_at(&v));
    let mut v = with_introspection(json!({}));
    v["routes"] = json!([{"require": {"opaque_issuer": "nope"}}]);
    errors.push(error_at(&v));
    for e in &errors {
        assert!(!e.message.contains(SECRET), "{e:?}");
        assert!(!e.to_string().contains(SECRET), "{e}");
        assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
    }
    // A syntax error after the secret.
    let text = format!("{} trailing", with_introspection(json!({})));
    let e = FilterConfig::parse(text.as_bytes()).unwrap_err();
    assert!(!e.to_string().contains(SECRET), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The OAuth endpoint gateway
// ---------------------------------------------------------------------------------------------

/// `remote_issuer(name)` with the given `gateway` part.
fn gateway_issuer(name: &str, gateway: Value) -> Value {
    let mut issuer = remote_issuer(name);
    issuer["gateway"] = gateway;
    issuer
}

/// An issuer `gateway` part whose endpoints come from `<issuer>/.well-known/...` via `name`.
fn metadata(name: &str) -> Value {
    json!({"metadata": true, "upstream": name})
}

/// `as1` behind the gateway with the given part, and the top-level gateway `top`.
fn with_gateway(part: Value, top: Value) -> Value {
    json!({"issuers": [gateway_issuer("as1", part)], "gateway": top})
}

/// The minimal gateway with members of `extra` added (`null` removes one).
fn with_gateway_members(extra: Value) -> Value {
    let mut top = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            top.as_object_mut().unwrap().remove(k);
        } else {
            top[k] = v.clone();
        }
    }
    json!({
        "issuers": [gateway_issuer("as1", metadata("as1")), remote_issuer("as2")],
        "gateway": top,
    })
}

/// `as1` and `as2` behind the gateway with the given parts.
fn with_two_gateways(a: Value, b: Value) -> Value {
    json!({
        "issuers": [gateway_issuer("as1", a), gateway_issuer("as2", b)],
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"]},
    })
}

#[test]
fn gateway_defaults() {
    let cfg = parse(&with_gateway_members(json!({}))).unwrap();
    let gw = cfg.gateway.as_ref().unwrap();
    assert_eq!(gw.base_path, "/oauth2");
    assert_eq!(gw.route_header, "x-tollgate-as");
    assert_eq!(gw.selector_param, None);
    assert_eq!(gw.selector_header, None);
    assert_eq!(gw.default_issuer, None);
    assert_eq!(gw.max_body_bytes, 65_536);
    assert!(!gw.tagging);
    let ig = cfg.issuers[0].gateway.as_ref().unwrap();
    let (upstream, doc) = ig.metadata.as_ref().unwrap();
    assert_eq!(upstream, "as1");
    assert_eq!(
        doc.as_str(),
        "https://as1.example.com/.well-known/openid-configuration"
    );
    assert!(ig.endpoints.is_empty());
    assert!(ig.client_ids.is_empty() && ig.client_id_prefixes.is_empty());
    assert!(!ig.owns_client("anyone"));
    assert!(cfg.issuers[1].gateway.is_none());
    // No gateway section: no gateway.
    let cfg = parse(&json!({"issuers": [remote_issuer("as1")]})).unwrap();
    assert!(cfg.gateway.is_none() && cfg.issuers[0].gateway.is_none());
}

#[test]
fn gateway_explicit_settings_are_compiled() {
    let cfg = parse(&json!({
        "issuers": [
            remote_issuer("plain"),
            gateway_issuer("as1", json!({
                "metadata": "https://as1.example.com/.well-known/oauth-authorization-server",
                "upstream": "as1_cluster",
                "endpoints": {"userinfo": "https://as1.example.com/me"},
                "client_ids": ["web", "cli"],
            })),
            gateway_issuer("as2", json!({
                "endpoints": {
                    "authorization": "https://as2.example.com/authorize",
                    "token": "https://as2.example.com/token",
                    "introspection": "https://as2.example.com/introspect",
                    "revocation": "https://as2.example.com/revoke",
                    "userinfo": "https://as2.example.com/userinfo",
                    "registration": "http://as2.example.com:8080/register",
                },
                "client_id_prefixes": ["p-", "partner/"],
            })),
        ],
        "gateway": {
            "base_path": "/auth/oauth2//", "public_origins": ["https://gw.example"],
            "route_header": "x-as",
            "selector_param": "as",
            "selector_header": "x-oauth-as",
            "default_issuer": "as2",
            "max_body_bytes": 1_048_576,
            "tagging": true,
        },
    }))
    .unwrap();
    let gw = cfg.gateway.as_ref().unwrap();
    assert_eq!(gw.base_path, "/auth/oauth2", "trailing '/' removed");
    assert_eq!(gw.route_header, "x-as");
    assert_eq!(gw.selector_param.as_deref(), Some("as"));
    assert_eq!(gw.selector_header.as_deref(), Some("x-oauth-as"));
    assert_eq!(gw.default_issuer, Some(2));
    assert_eq!(gw.max_body_bytes, 1_048_576);
    assert!(gw.tagging);

    let a = cfg.issuers[1].gateway.as_ref().unwrap();
    let (upstream, doc) = a.metadata.as_ref().unwrap();
    assert_eq!(upstream, "as1_cluster");
    assert_eq!(
        doc.as_str(),
        "https://as1.example.com/.well-known/oauth-authorization-server"
    );
    assert_eq!(
        a.endpoints.keys().collect::<Vec<_>>(),
        vec!["userinfo_endpoint"]
    );
    assert!(a.owns_client("web") && a.owns_client("cli") && !a.owns_client("we"));

    let b = cfg.issuers[2].gateway.as_ref().unwrap();
    assert!(b.metadata.is_none());
    let mut names: Vec<&str> = b.endpoints.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut all = ENDPOINTS.to_vec();
    all.sort_unstable();
    assert_eq!(names, all, "every endpoint, by its metadata name");
    assert_eq!(
        b.endpoints["registration_endpoint"].as_str(),
        "http://as2.example.com:8080/register"
    );
    assert!(b.owns_client("p-1") && b.owns_client("partner/x") && !b.owns_client("p"));
    assert!(cfg.issuers[0].gateway.is_none());
    // Null means "not set" for the optional members.
    let cfg = parse(&with_gateway_members(json!({
        "selector_param": Value::Null, "selector_header": Value::Null,
    })))
    .unwrap();
    assert!(cfg.gateway.unwrap().selector_param.is_none());
}

#[test]
fn gateway_errors() {
    let at = |extra: Value| path_of(&with_gateway_members(extra));
    for base in [
        "/",
        "//",
        "",
        "oauth2",
        "oauth2/",
        "/oauth2?as=1",
        "/oauth2#x",
    ] {
        assert_eq!(
            at(json!({"base_path": base, "public_origins": ["https://gw.example"]})),
            "gateway.base_path",
            "{base:?}"
        );
    }
    for header in ["X-Tollgate-As", "", "x as", "host", "authorization", "te"] {
        assert_eq!(
            at(json!({"route_header": header})),
            "gateway.route_header",
            "{header:?}"
        );
        assert_eq!(
            at(json!({"selector_header": header})),
            "gateway.selector_header",
            "{header:?}"
        );
    }
    assert_eq!(at(json!({"selector_param": ""})), "gateway.selector_param");
    for size in [json!(0), json!(1_048_577), json!(u64::MAX)] {
        assert_eq!(
            at(json!({"max_body_bytes": size})),
            "gateway.max_body_bytes",
            "{size}"
        );
    }
    for size in [json!(-1), json!(1.5), json!("64k")] {
        assert_eq!(
            at(json!({"max_body_bytes": size})),
            "gateway.max_body_bytes",
            "{size}"
        );
    }
    for size in [1, 1_048_576] {
        assert!(parse(&with_gateway_members(json!({"max_body_bytes": size}))).is_ok());
    }
    let e = error_at(&with_gateway_members(json!({"default_issuer": "nope"})));
    assert_eq!(e.path, "gateway.default_issuer");
    assert!(e.message.contains("no issuer named"), "{}", e.message);
    let e = error_at(&with_gateway_members(json!({"default_issuer": "as2"})));
    assert_eq!(e.path, "gateway.default_issuer");
    assert!(e.message.contains("no gateway section"), "{}", e.message);
    assert!(parse(&with_gateway_members(json!({"default_issuer": "as1"}))).is_ok());
    // Shape errors.
    let e = error_at(&with_gateway_members(
        json!({"base_path": Value::Null, "public_origins": ["https://gw.example"]}),
    ));
    assert_eq!(e.path, "gateway");
    assert!(e.message.contains("base_path"), "{}", e.message);
    assert_eq!(at(json!({"tags": true})), "gateway.tags");
    assert_eq!(at(json!({"tagging": "yes"})), "gateway.tagging");
    // A gateway with no issuer behind it.
    let e = error_at(&json!({
        "issuers": [remote_issuer("as1")],
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"]},
    }));
    assert_eq!(e.path, "gateway");
    assert!(e.message.contains("no issuer"), "{}", e.message);
}

#[test]
fn the_route_header_is_no_identity_header_in_any_spelling() {
    let with = |identity: Value, route_header: &str| {
        let mut v = with_gateway_members(json!({"route_header": route_header}));
        v["identity"] = identity;
        v
    };
    // The default identity headers, the default issuer-name header, a configured payload
    // header and a configured map; `_` read as `-`.
    for (identity, header) in [
        (json!({}), "x-tollgate-sub"),
        (json!({}), "x_tollgate_sub"),
        (json!({}), "x-tollgate-issuer"),
        (json!({}), "x_tollgate-issuer"),
        (json!({"payload_header": "x-claims"}), "x-claims"),
        (json!({"payload_header": "x-claims"}), "x_claims"),
        (json!({"payload_header": "x_claims"}), "x-claims"),
        (json!({"issuer_name_header": "x-who"}), "x_who"),
        (json!({"headers": {"sub": "x-user"}}), "x-user"),
        (json!({"headers": {"sub": "x_user"}}), "x-user"),
    ] {
        let e = error_at(&with(identity.clone(), header));
        assert_eq!(e.path, "gateway.route_header", "{identity} {header}");
        assert!(e.message.contains("identity header"), "{}", e.message);
    }
    // No longer an identity header: accepted.
    assert!(parse(&with(
        json!({"issuer_name_header": null}),
        "x-tollgate-issuer"
    ))
    .is_ok());
    assert!(parse(&with(
        json!({"headers": {"sub": "x-user"}}),
        "x-tollgate-sub"
    ))
    .is_ok());
    assert!(parse(&with(json!({}), "x-tollgate-as")).is_ok());
}

#[test]
fn header_names_are_the_same_in_any_case_and_with_underscores() {
    for (a, b) in [
        ("x-tollgate-sub", "x-tollgate-sub"),
        ("x-tollgate-sub", "x_tollgate_sub"),
        ("x-tollgate-sub", "X_Tollgate-SUB"),
        ("x_claims", "x-claims"),
    ] {
        assert!(same_header_name(a, b), "{a} {b}");
        assert!(same_header_name(b, a), "{b} {a}");
    }
    for (a, b) in [
        ("x-tollgate-sub", "x-tollgate-subx"),
        ("x-tollgate-sub", "x-tollgate.sub"),
        ("x-tollgate-sub", "xtollgate-sub"),
        ("x-tollgate-sub", ""),
    ] {
        assert!(!same_header_name(a, b), "{a} {b}");
    }
}

#[test]
fn with_tagging_no_client_id_looks_like_a_routing_tag() {
    let cfg = |a: Value, b: Value, tagging: bool| {
        json!({
            "issuers": [gateway_issuer("as1", a), gateway_issuer("as2", b), remote_issuer("plain")],
            "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"], "tagging": tagging},
        })
    };
    let ids = |ids: &[&str]| json!({"metadata": true, "upstream": "x", "client_ids": ids});
    let prefixes = |p: &[&str]| json!({"metadata": true, "upstream": "x", "client_id_prefixes": p});
    let none = json!({"metadata": true, "upstream": "x"});
    for (a, b, path) in [
        (
            ids(&["web", "as2.web"]),
            none.clone(),
            "issuers[0].gateway.client_ids[1]",
        ),
        (
            ids(&["as1.own"]),
            none.clone(),
            "issuers[0].gateway.client_ids[0]",
        ),
        (
            none.clone(),
            ids(&["as1.x"]),
            "issuers[1].gateway.client_ids[0]",
        ),
        (
            prefixes(&["as2.p-"]),
            none.clone(),
            "issuers[0].gateway.client_id_prefixes[0]",
        ),
        (
            none.clone(),
            prefixes(&["q-", "as2."]),
            "issuers[1].gateway.client_id_prefixes[1]",
        ),
        // A prefix the tag starts with claims every tagged id of that issuer.
        (
            prefixes(&["as"]),
            none.clone(),
            "issuers[0].gateway.client_id_prefixes[0]",
        ),
        (
            none.clone(),
            prefixes(&["as1"]),
            "issuers[1].gateway.client_id_prefixes[0]",
        ),
    ] {
        let e = error_at(&cfg(a.clone(), b.clone(), true));
        assert_eq!(e.path, path, "{a} {b}");
        assert!(e.message.contains("routing tag"), "{}", e.message);
        // Without tagging there are no tags to mistake them for.
        assert!(parse(&cfg(a, b, false)).is_ok());
    }
    // Not a gateway issuer's name, or not followed by '.': no tag.
    let ok = cfg(
        ids(&["plain.x", "as1-x", "as2x"]),
        prefixes(&["as3.", "plain-"]),
        true,
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn issuer_gateway_errors() {
    let top = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    let at = |part: Value| path_of(&with_gateway(part, top.clone()));
    assert_eq!(
        at(json!({"endpoints": {"token_endpoint": "https://as1.example.com/token"}})),
        "issuers[0].gateway.endpoints.token_endpoint"
    );
    let e = error_at(&with_gateway(
        json!({"endpoints": {"jwks": "https://as1.example.com/jwks"}}),
        top.clone(),
    ));
    assert!(e.message.contains("unknown endpoint"), "{}", e.message);
    for url in [
        "as1.example.com/token",
        "ftp://as1.example.com/token",
        "https://",
        "",
    ] {
        assert_eq!(
            at(json!({"endpoints": {"token": url}})),
            "issuers[0].gateway.endpoints.token",
            "{url:?}"
        );
    }
    for value in [json!(false), json!(1), json!("not a url"), json!({})] {
        assert_eq!(
            at(json!({"metadata": value, "upstream": "as1"})),
            "issuers[0].gateway.metadata",
            "{value}"
        );
    }
    for (part, says) in [
        (json!({"metadata": true}), "required with metadata"),
        (
            json!({"metadata": true, "upstream": ""}),
            "must not be empty",
        ),
        (
            json!({"metadata": true, "upstream": Value::Null}),
            "required with metadata",
        ),
    ] {
        let e = error_at(&with_gateway(part.clone(), top.clone()));
        assert_eq!(e.path, "issuers[0].gateway.upstream", "{part}");
        assert!(e.message.contains(says), "{}", e.message);
    }
    for part in [
        json!({}),
        json!({"endpoints": {}}),
        json!({"metadata": Value::Null, "upstream": "as1", "client_ids": ["web"]}),
    ] {
        let e = error_at(&with_gateway(part.clone(), top.clone()));
        assert_eq!(e.path, "issuers[0].gateway", "{part}");
        assert!(e.message.contains("metadata, endpoints"), "{}", e.message);
    }
    // An upstream without metadata is not used, and not an error.
    assert!(parse(&with_gateway(
        json!({"upstream": "as1", "endpoints": {"token": "https://as1.example.com/token"}}),
        top.clone(),
    ))
    .is_ok());
    assert_eq!(
        at(json!({"metadata": true, "upstream": "as1", "client_ids": ["web", ""]})),
        "issuers[0].gateway.client_ids[1]"
    );
    assert_eq!(
        at(json!({"metadata": true, "upstream": "as1", "client_id_prefixes": [""]})),
        "issuers[0].gateway.client_id_prefixes[0]"
    );
    assert_eq!(
        at(json!({"metadata": true, "upstream": "as1", "client_ids": "web"})),
        "issuers[0].gateway.client_ids"
    );
    assert_eq!(
        at(json!({"metadata": true, "upstream": "as1", "client_id": "web"})),
        "issuers[0].gateway.client_id"
    );
    // metadata: true needs an http(s) issuer URL.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["issuer"] = json!("urn:example:as1");
    let e = error_at(&json!({"issuers": [issuer], "gateway": top}));
    assert_eq!(e.path, "issuers[0].gateway.metadata");
    assert!(e.message.contains("issuer URL"), "{}", e.message);
    // An issuer's gateway part needs the top-level section.
    let e = error_at(&json!({
        "issuers": [remote_issuer("as1"), gateway_issuer("as2", metadata("as2"))],
    }));
    assert_eq!(e.path, "issuers[1].gateway");
    assert!(e.message.contains("top-level gateway"), "{}", e.message);
}

#[test]
fn a_client_id_belongs_to_one_issuer() {
    let part = |extra: Value| {
        let mut p = json!({"endpoints": {"token": "https://x.example.com/token"}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let check = |a: Value, b: Value| parse(&with_two_gateways(part(a), part(b)));
    let fails = |a: Value, b: Value| match check(a.clone(), b.clone()) {
        Ok(_) => panic!("accepted: {a} {b}"),
        Err(e) => e,
    };
    // The same id in both lists.
    let e = fails(
        json!({"client_ids": ["web", "cli"]}),
        json!({"client_ids": ["cli"]}),
    );
    assert_eq!(e.path, "issuers[0].gateway.client_ids");
    assert!(
        e.message.contains("\"cli\"") && e.message.contains("\"as2\""),
        "{}",
        e.message
    );
    // An id of the first under a prefix of the second, and the other way round.
    let e = fails(
        json!({"client_ids": ["partner-1"]}),
        json!({"client_id_prefixes": ["partner-"]}),
    );
    assert_eq!(e.path, "issuers[0].gateway.client_ids");
    let e = fails(
        json!({"client_id_prefixes": ["partner-"]}),
        json!({"client_ids": ["web", "partner-1"]}),
    );
    assert_eq!(e.path, "issuers[1].gateway.client_ids");
    assert!(
        e.message.contains("\"partner-1\"") && e.message.contains("\"as1\""),
        "{}",
        e.message
    );
    // Overlapping prefixes, either one the longer.
    for (a, b) in [
        ("app-", "app-partner-"),
        ("app-partner-", "app-"),
        ("app-", "app-"),
    ] {
        let e = fails(
            json!({"client_id_prefixes": [a]}),
            json!({"client_id_prefixes": ["z", b]}),
        );
        assert_eq!(
            e.path, "issuers[1].gateway.client_id_prefixes[1]",
            "{a} {b}"
        );
        assert!(e.message.contains("\"as1\""), "{}", e.message);
    }
    // Disjoint claims; overlaps inside one issuer; an issuer outside the gateway.
    assert!(check(
        json!({"client_ids": ["web", "app"], "client_id_prefixes": ["app-", "app-x-"]}),
        json!({"client_ids": ["ap", "web2"], "client_id_prefixes": ["ap-", "partner-"]}),
    )
    .is_ok());
    let mut v = with_two_gateways(part(json!({"client_ids": ["web"]})), json!(null));
    v["issuers"][1].as_object_mut().unwrap().remove("gateway");
    v["issuers"].as_array_mut().unwrap().push(gateway_issuer(
        "as3",
        part(json!({"client_id_prefixes": ["we"]})),
    ));
    let e = error_at(&v);
    assert_eq!(
        e.path, "issuers[0].gateway.client_ids",
        "as3 claims web too"
    );
    assert!(e.message.contains("issuers[2]"), "{}", e.message);
}

#[test]
fn gateway_metadata_is_the_issuers_one_metadata_document() {
    let top = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    let rfc8414 = "https://as1.example.com/.well-known/oauth-authorization-server";
    // Differs from jwks.discovery.
    let mut issuer = gateway_issuer("as1", json!({"metadata": rfc8414, "upstream": "as1"}));
    issuer["jwks"] = json!({"discovery": true, "upstream": "as1"});
    let e = error_at(&json!({"issuers": [issuer], "gateway": top}));
    assert_eq!(e.path, "issuers[0].gateway.metadata");
    assert!(e.message.contains("jwks.discovery"), "{}", e.message);
    // Differs from introspection.discovery.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["introspection"] = json!({
        "discovery": rfc8414, "upstream": "as1", "client_id": "c", "client_secret": "s",
    });
    let e = error_at(&json!({"issuers": [issuer], "gateway": top}));
    assert_eq!(e.path, "issuers[0].gateway.metadata");
    assert!(
        e.message.contains("introspection.discovery"),
        "{}",
        e.message
    );
    // The same document, once written as true and once as its URL.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["jwks"] = json!({
        "discovery": "https://as1.example.com/.well-known/openid-configuration",
        "upstream": "as1",
    });
    issuer["introspection"] =
        json!({"discovery": true, "upstream": "as1", "client_id": "c", "client_secret": "s"});
    assert!(parse(&json!({"issuers": [issuer], "gateway": top})).is_ok());
}

#[test]
fn fetch_plan_wants_the_gateway_metadata() {
    let top = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    // JWKS by URL, endpoints from metadata: both are fetched.
    let cfg = parse(&with_gateway(
        json!({"metadata": true, "upstream": "as1_meta"}),
        top.clone(),
    ))
    .unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(plan.metadata_wanted && !plan.introspection_endpoint_wanted);
    let (upstream, doc) = plan.discovery.unwrap();
    assert_eq!(upstream, "as1_meta");
    assert_eq!(
        doc.as_str(),
        "https://as1.example.com/.well-known/openid-configuration"
    );
    let (upstream, jwks_uri) = plan.jwks.unwrap();
    assert_eq!(upstream, "as1");
    assert_eq!(jwks_uri.unwrap().as_str(), "https://as1.example.com/jwks");
    // One document for keys and endpoints: fetched once, through the jwks upstream.
    let mut issuer = gateway_issuer("as1", json!({"metadata": true, "upstream": "as1_meta"}));
    issuer["jwks"] = json!({"discovery": true, "upstream": "as1"});
    let cfg = parse(&json!({"issuers": [issuer], "gateway": top})).unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(plan.metadata_wanted);
    assert_eq!(plan.discovery.unwrap().0, "as1");
    assert_eq!(plan.jwks, Some(("as1", None)));
    // Inline keys: the metadata document alone.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["jwks"] = json!({"inline": jwks(&[TestKey::RsaA.public_jwk()])});
    let cfg = parse(&json!({"issuers": [issuer], "gateway": top})).unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(!plan.is_empty() && plan.metadata_wanted && plan.jwks.is_none());
    assert!(plan.discovery.is_some());
    // Configured endpoints only: no metadata to fetch.
    let cfg = parse(&with_gateway(
        json!({"endpoints": {"token": "https://as1.example.com/token"}}),
        top,
    ))
    .unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(!plan.metadata_wanted && plan.discovery.is_none());
}

/// url is built with the ASCII-only IDNA adapter (Cargo.toml: idna_adapter ~1.0, for .wasm
/// size): a Unicode host is refused with its path, while its punycode form is accepted.
#[test]
fn unicode_hosts_are_refused_punycode_accepted() {
    let mut issuer = remote_issuer("as1");
    issuer["jwks"]["uri"] = json!("https://bücher.example/jwks");
    let e = error_at(&json!({"issuers": [issuer.clone()]}));
    assert_eq!(e.path, "issuers[0].jwks.uri");
    assert!(e.message.contains("not a URL"), "{}", e.message);
    issuer["jwks"]["uri"] = json!("https://xn--bcher-kva.example/jwks");
    assert!(parse(&json!({"issuers": [issuer]})).is_ok());
}

/// `https://login.exampleDD%DD.com` made `url` panic in a debug build (a `debug_assert` in the
/// ASCII-only IDNA adapter; found by `scripts/fuzz config`, now fuzz/regressions/config/). Every
/// URL setting refuses a percent-encoded or non-ASCII host before `url` parses it, at its path.
#[test]
fn percent_encoded_hosts_are_refused_at_their_path() {
    let hosts = [
        "login.exampleDD%DD.com",
        "LOGIN.EXAMPLE%DD.COM:443",
        "as1.example%2Ecom",
        "user@AS1.EXAMPLÉ.com",
    ];
    for host in hosts {
        let url = format!("https://{host}/x");
        let mut discovery_issuer = remote_issuer("as1");
        discovery_issuer["jwks"] = json!({"discovery": url, "upstream": "as1"});
        let cases = [
            (
                with_issuer_member("jwks", json!({"uri": url, "upstream": "as1"})),
                "issuers[0].jwks.uri",
            ),
            (
                json!({"issuers": [discovery_issuer]}),
                "issuers[0].jwks.discovery",
            ),
            (
                with_introspection(json!({"endpoint": url})),
                "issuers[0].introspection.endpoint",
            ),
            (
                with_gateway(
                    json!({"endpoints": {"token": url}, "upstream": "as1"}),
                    json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]}),
                ),
                "issuers[0].gateway.endpoints.token",
            ),
            (
                with_gateway(
                    json!({"metadata": url, "upstream": "as1"}),
                    json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]}),
                ),
                "issuers[0].gateway.metadata",
            ),
        ];
        for (cfg, path) in cases {
            let e = error_at(&cfg);
            assert_eq!(e.path, path, "{host}");
            assert!(
                e.message.contains("not a URL: its host must be ASCII"),
                "{e}"
            );
            assert!(e.message.contains("xn--"), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams in the host's terms: an Envoy cluster name, or host:port on Kong and APISIX
// ---------------------------------------------------------------------------------------------

/// Upstream names as each host takes them: Envoy cluster names (Istio's included) and the
/// `host:port` forms ngx_wasm_module (Kong) and wasm-nginx-module (APISIX) connect to.
const HOST_UPSTREAMS: [&str; 6] = [
    "as1",
    "outbound|443||as.example.com",
    "127.0.0.1:8080",
    "[::1]:8443",
    "as.example.com:443",
    "as.example.com",
];

/// One issuer that names `upstream` everywhere an upstream is named: the JWKS (via discovery),
/// introspection, and the gateway's metadata. Its URLs use a different host and port, so a
/// test can tell the `:authority` (from the URL) from the upstream.
fn issuer_with_upstream_everywhere(upstream: &str) -> Value {
    json!({
        "issuers": [{
            "name": "as1",
            "issuer": "https://login.example.com:9443/realms/a",
            "jwks": {"discovery": true, "upstream": upstream},
            "introspection": {
                "discovery": true,
                "upstream": upstream,
                "client_id": "tollgate",
                "client_secret": SECRET,
            },
            "gateway": {"metadata": true, "upstream": upstream},
        }],
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"]},
    })
}

#[test]
fn every_upstream_accepts_host_names_unchanged() {
    for upstream in HOST_UPSTREAMS {
        let cfg = parse(&issuer_with_upstream_everywhere(upstream))
            .unwrap_or_else(|e| panic!("{upstream}: {e}"));
        let i = &cfg.issuers[0];
        match i.keys.as_ref().unwrap() {
            KeySource::Remote { upstream: u, .. } => assert_eq!(u, upstream),
            other => panic!("{other:?}"),
        }
        assert_eq!(i.introspection.as_ref().unwrap().upstream, upstream);
        let (u, _) = i.gateway.as_ref().unwrap().metadata.as_ref().unwrap();
        assert_eq!(u, upstream);
        // A JWKS by URL and a fixed introspection endpoint too.
        let mut issuer = remote_issuer("as2");
        issuer["jwks"]["upstream"] = json!(upstream);
        let mut intro = introspection("as2");
        intro["upstream"] = json!(upstream);
        issuer["introspection"] = intro;
        let cfg = parse(&json!({"issuers": [issuer]})).unwrap();
        let i = &cfg.issuers[0];
        assert!(
            matches!(i.keys.as_ref().unwrap(), KeySource::Remote { upstream: u, .. } if u == upstream)
        );
        assert_eq!(i.introspection.as_ref().unwrap().upstream, upstream);
    }
}

/// The requests Tollgate would dispatch: `upstream` is the configured name, byte for byte;
/// `:scheme`, `:authority` and `:path` come from the URL, whatever the upstream says.
#[test]
fn dispatched_requests_carry_the_upstream_as_given_and_the_url_authority() {
    use crate::refresh::{next_request, FetchState, Step};
    for upstream in HOST_UPSTREAMS {
        let cfg = parse(&issuer_with_upstream_everywhere(upstream)).unwrap();
        let issuer = &cfg.issuers[0];
        // The metadata document (keys, introspection endpoint and gateway endpoints).
        let plan = issuer.fetch_plan();
        let (step, req) = next_request(&plan, &FetchState::default(), 1_500).unwrap();
        assert_eq!(step, Step::Discovery);
        assert_eq!(req.upstream, upstream);
        assert_eq!(req.method, "GET");
        assert_eq!(req.authority, "login.example.com:9443");
        assert_eq!(req.scheme, "https");
        assert_eq!(req.path, "/realms/a/.well-known/openid-configuration");
        assert_eq!(req.timeout_ms, 1_500);
        // The JWKS, once the document named it (here on yet another host).
        let state = FetchState {
            jwks_uri: Some("http://keys.example.net/certs?v=2".to_owned()),
            introspection_endpoint: Some("https://login.example.com:9443/i".to_owned()),
            metadata_stored: true,
            ..FetchState::default()
        };
        let (step, req) = next_request(&plan, &state, 1_500).unwrap();
        assert_eq!(step, Step::Jwks);
        assert_eq!(req.upstream, upstream);
        assert_eq!(req.authority, "keys.example.net");
        assert_eq!(req.scheme, "http");
        assert_eq!(req.path, "/certs?v=2");
    }
    // Introspection at a fixed endpoint, IPv6 literal and default port in the URL.
    for (endpoint, authority, scheme) in [
        (
            "https://[2001:db8::1]:8443/oauth/introspect",
            "[2001:db8::1]:8443",
            "https",
        ),
        (
            "https://as.example.com:443/oauth/introspect",
            "as.example.com",
            "https",
        ),
        (
            "http://127.0.0.1:8080/oauth/introspect",
            "127.0.0.1:8080",
            "http",
        ),
    ] {
        for upstream in HOST_UPSTREAMS {
            let mut issuer = opaque_issuer("as1");
            issuer["introspection"]["endpoint"] = json!(endpoint);
            issuer["introspection"]["upstream"] = json!(upstream);
            let cfg = parse(&json!({"issuers": [issuer]})).unwrap();
            let intro = cfg.issuers[0].introspection.as_ref().unwrap();
            let IntrospectionEndpoint::Fixed(url) = &intro.endpoint else {
                panic!("{:?}", intro.endpoint)
            };
            let req = crate::introspect::request(url, &intro.upstream, &intro.client, "tok", 900);
            assert_eq!(req.upstream, upstream);
            assert_eq!(req.method, "POST");
            assert_eq!(req.authority, authority, "{endpoint}");
            assert_eq!(req.scheme, scheme, "{endpoint}");
            assert_eq!(req.path, "/oauth/introspect");
        }
    }
}

#[test]
fn upstream_names_no_host_could_use_are_refused_at_their_path() {
    let bad = [
        ("", "must not be empty"),
        (" as1", "whitespace"),
        ("as1 ", "whitespace"),
        ("as .example.com:443", "whitespace"),
        ("as1\t", "whitespace"),
        ("as1\n", "whitespace"),
        ("as1\u{7f}", "control"),
        ("as1\u{a0}", "whitespace"),
        ("https://as.example.com:443", "not a URL"),
        ("http://127.0.0.1:8080/", "not a URL"),
    ];
    for (value, says) in bad {
        let cases = [
            (
                with_issuer_member(
                    "jwks",
                    json!({"uri": "https://as1.example.com/jwks", "upstream": value}),
                ),
                "issuers[0].jwks.upstream",
            ),
            (
                with_issuer_member("jwks", json!({"discovery": true, "upstream": value})),
                "issuers[0].jwks.upstream",
            ),
            (
                with_introspection(json!({"upstream": value})),
                "issuers[0].introspection.upstream",
            ),
            (
                with_gateway(
                    json!({"metadata": true, "upstream": value}),
                    json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]}),
                ),
                "issuers[0].gateway.upstream",
            ),
        ];
        for (config, path) in cases {
            let e = error_at(&config);
            assert_eq!(e.path, path, "{value:?}");
            assert!(e.message.contains(says), "{value:?}: {}", e.message);
            // Every message says what an upstream is, in the host's terms.
            assert!(
                e.message
                    .contains("an Envoy cluster name; host:port on Kong and APISIX"),
                "{}",
                e.message
            );
        }
    }
}

#[test]
fn missing_upstreams_are_explained_in_the_hosts_terms() {
    for (config, path) in [
        (
            with_issuer_member("jwks", json!({"uri": "https://as1.example.com/jwks"})),
            "issuers[0].jwks.upstream",
        ),
        (
            with_gateway(
                json!({"metadata": true}),
                json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]}),
            ),
            "issuers[0].gateway.upstream",
        ),
    ] {
        let e = error_at(&config);
        assert_eq!(e.path, path);
        assert!(e.message.starts_with("required with"), "{}", e.message);
        assert!(
            e.message.contains("host:port on Kong and APISIX"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("(Envoy cluster)"), "{}", e.message);
    }
}

/// A deeply nested configuration is an error with a message, never a stack overflow (the
/// wasm stack is 1 MiB; scripts/test-wasm runs this in V8).
#[test]
fn deeply_nested_configuration_is_an_error() {
    use crate::testdata::nested_json;
    for depth in [1_000, 100_000] {
        let deep = nested_json(depth);
        assert!(FilterConfig::parse(deep.as_bytes()).is_err());
        let in_issuer = format!(r#"{{"issuers":[{{"name":"a","x":{deep}}}]}}"#);
        assert!(FilterConfig::parse(in_issuer.as_bytes()).is_err());
    }
}
