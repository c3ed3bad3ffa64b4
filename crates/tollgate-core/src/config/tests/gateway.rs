//! The OAuth endpoint gateway (`config/gateway.rs`): the top-level section and each issuer's
//! part, client-id ownership, routing tags and the one metadata document.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
    assert_eq!(ig.upstream.as_deref(), Some("as1"));
    // `metadata: true`: both documents at their standard places, each optional.
    let [oidc, oauth] = &ig.documents;
    let oidc = oidc.as_ref().unwrap();
    assert_eq!(
        oidc.url.as_str(),
        "https://as1.example.com/.well-known/openid-configuration"
    );
    let oauth = oauth.as_ref().unwrap();
    assert_eq!(
        oauth.url.as_str(),
        "https://as1.example.com/.well-known/oauth-authorization-server"
    );
    assert!(oidc.optional && oauth.optional);
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
    assert_eq!(a.upstream.as_deref(), Some("as1_cluster"));
    // One URL: its kind from its path, required.
    assert!(a.documents[0].is_none());
    let doc = a.documents[1].as_ref().unwrap();
    assert_eq!(
        doc.url.as_str(),
        "https://as1.example.com/.well-known/oauth-authorization-server"
    );
    assert!(!doc.optional);
    assert_eq!(
        a.endpoints.keys().collect::<Vec<_>>(),
        vec!["userinfo_endpoint"]
    );
    assert!(a.owns_client("web") && a.owns_client("cli") && !a.owns_client("we"));

    let b = cfg.issuers[2].gateway.as_ref().unwrap();
    assert!(!b.wants_documents() && b.upstream.is_none());
    let names: Vec<&str> = b.endpoints.keys().map(String::as_str).collect();
    for name in &names {
        assert!(
            crate::endpoint::Endpoint::for_field(name).is_some(),
            "{name}"
        );
    }
    assert_eq!(names.len(), 6);
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
fn keys_and_introspection_learn_from_one_discovery_document() {
    let top = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    let rfc8414 = "https://as1.example.com/.well-known/oauth-authorization-server";
    // The keys' and introspection's discovery documents differ.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["jwks"] = json!({"discovery": true, "upstream": "as1"});
    issuer["introspection"] = json!({
        "discovery": rfc8414, "upstream": "as1", "client_id": "c", "client_secret": "s",
    });
    let e = error_at(&json!({"issuers": [issuer], "gateway": top}));
    assert_eq!(e.path, "issuers[0].introspection.discovery");
    assert!(e.message.contains("jwks.discovery"), "{}", e.message);
    // The same document, once written as true and once as its URL.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["jwks"] = json!({
        "discovery": "https://as1.example.com/.well-known/openid-configuration",
        "upstream": "as1",
    });
    issuer["introspection"] =
        json!({"discovery": true, "upstream": "as1", "client_id": "c", "client_secret": "s"});
    assert!(parse(&json!({"issuers": [issuer], "gateway": top})).is_ok());
    // The gateway's documents may be any: both kinds are served.
    let mut issuer = gateway_issuer("as1", json!({"metadata": rfc8414, "upstream": "as1"}));
    issuer["jwks"] = json!({"discovery": true, "upstream": "as1"});
    assert!(parse(&json!({"issuers": [issuer], "gateway": top})).is_ok());
}

/// `gateway.metadata`: true, a URL whose path tells its kind, or the two named.
#[test]
fn gateway_metadata_names_each_kind_of_document() {
    let top = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    let docs = |metadata: Value| -> Result<[Option<(String, bool)>; 2], String> {
        let mut issuer = gateway_issuer("as1", json!({"metadata": metadata, "upstream": "as1"}));
        issuer["issuer"] = json!("https://login.example.com/realms/a/");
        match parse(&json!({"issuers": [issuer], "gateway": top})) {
            Ok(cfg) => Ok(cfg.issuers[0]
                .gateway
                .as_ref()
                .unwrap()
                .documents
                .clone()
                .map(|d| d.map(|d| (d.url.to_string(), d.optional)))),
            Err(e) => Err(format!("{}: {}", e.path, e.message)),
        }
    };
    // RFC 8414 §3.1: the well-known part goes between the host and the issuer's path.
    assert_eq!(
        docs(json!(true)).unwrap(),
        [
            Some((
                "https://login.example.com/realms/a/.well-known/openid-configuration".into(),
                true
            )),
            Some((
                "https://login.example.com/.well-known/oauth-authorization-server/realms/a".into(),
                true
            )),
        ]
    );
    assert_eq!(
        docs(json!(
            "https://login.example.com/.well-known/oauth-authorization-server/realms/a"
        ))
        .unwrap(),
        [
            None,
            Some((
                "https://login.example.com/.well-known/oauth-authorization-server/realms/a".into(),
                false
            )),
        ]
    );
    assert_eq!(
        docs(json!({"openid_configuration": true,
                    "oauth_authorization_server": "https://meta.example.com/as"}))
        .unwrap(),
        [
            Some((
                "https://login.example.com/realms/a/.well-known/openid-configuration".into(),
                false
            )),
            Some(("https://meta.example.com/as".into(), false)),
        ]
    );
    for (bad, words) in [
        (json!("https://login.example.com/meta.json"), "cannot tell"),
        (json!({}), "at least one"),
        (json!({"openid": true}), "unknown document"),
        (json!({"openid_configuration": false}), "must be true"),
        (json!(false), "must be true"),
        (
            json!("ftp://login.example.com/.well-known/openid-configuration"),
            "http",
        ),
    ] {
        let e = docs(bad.clone()).unwrap_err();
        assert!(e.starts_with("issuers[0].gateway.metadata"), "{bad}: {e}");
        assert!(e.contains(words), "{bad}: {e}");
    }
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
    assert!(!plan.introspection_endpoint_wanted && plan.discovery.is_none());
    let [Some((upstream, oidc)), Some((_, oauth))] = plan.documents else {
        panic!("both documents: {:?}", plan.documents);
    };
    assert_eq!(upstream, "as1_meta");
    assert_eq!(
        oidc.url.as_str(),
        "https://as1.example.com/.well-known/openid-configuration"
    );
    assert_eq!(
        oauth.url.as_str(),
        "https://as1.example.com/.well-known/oauth-authorization-server"
    );
    let (upstream, jwks_uri) = plan.jwks.unwrap();
    assert_eq!(upstream, "as1");
    assert_eq!(jwks_uri.unwrap().as_str(), "https://as1.example.com/jwks");
    // One document for keys and endpoints: fetched once, through the jwks upstream.
    let mut issuer = gateway_issuer("as1", json!({"metadata": true, "upstream": "as1_meta"}));
    issuer["jwks"] = json!({"discovery": true, "upstream": "as1"});
    let cfg = parse(&json!({"issuers": [issuer], "gateway": top})).unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    let (upstream, url) = plan.discovery.unwrap();
    assert_eq!(upstream, "as1");
    assert_eq!(
        plan.documents_at(url).count(),
        1,
        "the OpenID document is also served"
    );
    assert_eq!(plan.jwks, Some(("as1", None)));
    // Inline keys: the metadata document alone.
    let mut issuer = gateway_issuer("as1", metadata("as1"));
    issuer["jwks"] = json!({"inline": jwks(&[TestKey::RsaA.public_jwk()])});
    let cfg = parse(&json!({"issuers": [issuer], "gateway": top})).unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(!plan.is_empty() && plan.jwks.is_none() && plan.discovery.is_none());
    assert!(plan.documents.iter().any(Option::is_some));
    // Configured endpoints only: no metadata to fetch.
    let cfg = parse(&with_gateway(
        json!({"endpoints": {"token": "https://as1.example.com/token"}}),
        top,
    ))
    .unwrap();
    let plan = cfg.issuers[0].fetch_plan();
    assert!(plan.discovery.is_none() && plan.documents == [None, None]);
}
