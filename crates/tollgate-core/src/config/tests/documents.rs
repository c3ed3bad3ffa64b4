//! The configuration document as a whole: defaults, explicit settings, unknown fields and
//! type errors at their JSON path, one JSON document, nesting depth, identity headers and
//! realm, and the fingerprint.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
    assert_eq!(
        cfg.identity.authorization,
        crate::config::ForwardAuthorization::Unchanged
    );
    assert_eq!(
        cfg.identity.binding_header.as_deref(),
        Some("x-tollgate-cnf")
    );
    assert_eq!(cfg.identity.owned_headers().count(), 6);
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
    assert_eq!(
        cfg.identity.authorization,
        crate::config::ForwardAuthorization::Drop
    );
    assert_eq!(cfg.realm, "orders api");
    assert_eq!(cfg.cache_slots, 0);
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
