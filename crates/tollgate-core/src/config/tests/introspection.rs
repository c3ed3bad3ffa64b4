//! Introspection (RFC 7662) and opaque-token rules of an issuer, and the client secret that
//! must never be shown.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

/// `opaque_issuer("as1")` with the given `opaque_tokens`.
fn with_opaque_rules(rules: Value) -> Value {
    let mut issuer = opaque_issuer("as1");
    issuer["opaque_tokens"] = rules;
    json!({"issuers": [issuer]})
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
