//! Configuration parsing: defaults, the JSON path of every error, and the fingerprint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

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
