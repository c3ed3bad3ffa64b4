//! Protected-resource metadata (RFC 9728): the configuration, the documents, the well-known
//! paths, and the challenges of the routes under a resource. Host-free: the answers are
//! values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use super::*;
use crate::binding::Scheme;
use crate::config::{ConfigError, FilterConfig};
use crate::outcome::{reply, Challenge, Denial};
use crate::policy::Policy;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const API: &str = "https://api.example.com";

fn issuer(name: &str, extra: Value) -> Value {
    let mut i = json!({
        "name": name,
        "issuer": format!("https://{name}.example"),
        "jwks": {"uri": format!("https://{name}.example/jwks"), "upstream": name},
    });
    if let (Some(i), Some(extra)) = (i.as_object_mut(), extra.as_object()) {
        i.extend(extra.clone());
    }
    i
}

/// Two issuers (as2 without DPoP, as1 certificate-bound tokens allowed), routes like the
/// rig's, and the given resources.
fn config(resources: Value) -> Value {
    json!({
        "issuers": [issuer("as1", json!({"mtls": {"mode": "allowed"}})),
                    issuer("as2", json!({"dpop": {"mode": "off"}}))],
        "routes": [
            {"name": "public", "match": {"prefix": "/public"}, "anonymous": true},
            {"name": "dpop", "match": {"prefix": "/api/dpop"}, "require": {"dpop": "required", "issuers": ["as1"]}},
            {"name": "as2", "match": {"prefix": "/api/as2"}, "require": {"issuers": ["as2"], "scopes": ["orders:read"]}},
            {"name": "admin", "match": {"prefix": "/api/admin"}, "require": {"scopes": ["admin"]}},
            {"name": "api", "match": {"prefix": "/api"}, "require": {"scopes_any": ["read", "admin"]}},
            {"name": "other-host", "match": {"prefix": "/api", "host": "other.example.com"}, "require": {}},
        ],
        "protected_resources": resources,
    })
}

fn parse(v: &Value) -> Result<FilterConfig, ConfigError> {
    FilterConfig::parse(v.to_string().as_bytes())
}

fn refused(v: &Value) -> (String, String) {
    match parse(v) {
        Ok(_) => panic!("accepted: {v}"),
        Err(e) => (e.path, e.message),
    }
}

fn document(cfg: &FilterConfig, i: usize) -> Value {
    serde_json::from_str(&cfg.resources[i].document).unwrap()
}

/// The challenge of route `name`.
fn challenge(cfg: &FilterConfig, name: &str) -> Challenge {
    let route = cfg
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .unwrap();
    match &route.policy {
        Policy::Require(r) => r.challenge,
        Policy::Anonymous => panic!("{name} is anonymous"),
    }
}

fn www(cfg: &FilterConfig, denial: &Denial, c: Challenge) -> Vec<String> {
    reply(denial, &cfg.realm, c, cfg.resource_metadata(c))
        .headers
        .into_iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn well_known_paths_insert_the_prefix_before_the_path() {
    assert_eq!(
        well_known_path("/"),
        "/.well-known/oauth-protected-resource"
    );
    assert_eq!(
        well_known_path("/api/orders"),
        "/.well-known/oauth-protected-resource/api/orders"
    );
    assert_eq!(
        asked_path("/.well-known/oauth-protected-resource"),
        Some("/")
    );
    assert_eq!(
        asked_path("/.well-known/oauth-protected-resource/api?x=1"),
        Some("/api")
    );
    assert_eq!(asked_path("/.well-known/oauth-protected-resourcex"), None);
    assert_eq!(
        asked_path("/api/.well-known/oauth-protected-resource"),
        None
    );
}

#[test]
fn the_document_lists_what_the_routes_under_the_resource_accept() {
    let cfg = parse(&config(json!([
        {"path": "/api", "origin": API, "resource_name": "Orders API",
         "resource_documentation": "https://docs.example.com/api"},
        {"path": "/api/as2", "origin": API},
        {"path": "/api/dpop", "origin": API, "scopes_supported": ["pay"]},
    ])))
    .unwrap();
    let api = &cfg.resources[0];
    assert_eq!(api.resource, "https://api.example.com/api");
    assert_eq!(
        api.metadata_url,
        "https://api.example.com/.well-known/oauth-protected-resource/api"
    );
    // /api takes the admin and api routes (other-host is for another host): both issuers,
    // DPoP where as1 takes it (as2's is off), certificate-bound tokens through as1.
    assert_eq!(
        document(&cfg, 0),
        json!({
            "resource": "https://api.example.com/api",
            "authorization_servers": ["https://as1.example", "https://as2.example"],
            "scopes_supported": ["admin", "read"],
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
            "dpop_bound_access_tokens_required": false,
            "tls_client_certificate_bound_access_tokens": true,
            "resource_name": "Orders API",
            "resource_documentation": "https://docs.example.com/api",
        })
    );
    // /api/as2: as2 only, no DPoP (its mode is off), no mTLS.
    assert_eq!(
        document(&cfg, 1),
        json!({
            "resource": "https://api.example.com/api/as2",
            "authorization_servers": ["https://as2.example"],
            "scopes_supported": ["orders:read"],
            "bearer_methods_supported": ["header"],
            "tls_client_certificate_bound_access_tokens": false,
        })
    );
    // /api/dpop: DPoP required; the configured scopes win.
    let d = document(&cfg, 2);
    assert_eq!(d["dpop_bound_access_tokens_required"], true);
    assert_eq!(d["authorization_servers"], json!(["https://as1.example"]));
    assert_eq!(d["scopes_supported"], json!(["pay"]));
}

#[test]
fn the_root_resource_is_the_origin_and_takes_routes_without_a_path_and_the_default_route() {
    let v = json!({
        "issuers": [issuer("as1", json!({}))],
        "routes": [{"name": "by-name", "match": {"route_name": "orders"}, "require": {"scopes": ["a"]}}],
        "default_route": {"require": {"scopes": ["b"]}},
        "protected_resources": [{"path": "/", "origin": "https://api.example.com:8443/"}],
    });
    let cfg = parse(&v).unwrap();
    let root = &cfg.resources[0];
    assert_eq!(root.resource, "https://api.example.com:8443");
    assert_eq!(
        root.metadata_url,
        "https://api.example.com:8443/.well-known/oauth-protected-resource"
    );
    assert_eq!(document(&cfg, 0)["scopes_supported"], json!(["a", "b"]));
    let Some(Policy::Require(default)) = &cfg.default_policy else {
        panic!("default route")
    };
    assert_eq!(default.challenge.resource, Some(0));
    let r = answer(
        &cfg.resources,
        "GET",
        "/.well-known/oauth-protected-resource",
        "api.example.com:8443",
    )
    .unwrap();
    assert_eq!(r.body, root.document);
}

#[test]
fn each_route_points_at_the_longest_resource_path_it_is_under() {
    let cfg = parse(&config(json!([
        {"path": "/api", "origin": API},
        {"path": "/api/admin", "origin": API},
    ])))
    .unwrap();
    assert_eq!(challenge(&cfg, "api").resource, Some(0));
    assert_eq!(challenge(&cfg, "as2").resource, Some(0));
    assert_eq!(challenge(&cfg, "admin").resource, Some(1));
    // A route for another host is under no resource of api.example.com.
    assert_eq!(challenge(&cfg, "other-host").resource, None);
    // A prefix that only starts like the resource's path is not below it.
    let v = json!({
        "issuers": [issuer("as1", json!({}))],
        "routes": [{"name": "apis", "match": {"prefix": "/apis"}, "require": {}},
                   {"name": "api", "match": {"exact": "/api"}, "require": {}}],
        "protected_resources": [{"path": "/api", "origin": API}],
    });
    let cfg = parse(&v).unwrap();
    assert_eq!(challenge(&cfg, "apis").resource, None);
    assert_eq!(challenge(&cfg, "api").resource, Some(0));
}

#[test]
fn every_challenge_names_the_metadata_url_and_routes_without_a_resource_are_unchanged() {
    let cfg = parse(&config(json!([{"path": "/api/as2", "origin": API},
                                   {"path": "/api/dpop", "origin": API}])))
    .unwrap();
    let meta = "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource";
    // Bearer only (as2 takes no DPoP).
    let as2 = challenge(&cfg, "as2");
    assert_eq!(
        www(&cfg, &Denial::MissingToken, as2),
        [format!("Bearer realm=\"tollgate\", {meta}/api/as2\"")]
    );
    assert_eq!(
        www(&cfg, &Denial::InsufficientScope { scope: "orders:read".into() }, as2),
        [format!("Bearer realm=\"tollgate\", error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"orders:read\", {meta}/api/as2\"")]
    );
    // DPoP only: the one challenge carries it, with and without an error.
    let dpop = challenge(&cfg, "dpop");
    assert_eq!(
        www(&cfg, &Denial::MissingToken, dpop),
        [format!("DPoP algs=\"ES256 EdDSA\", {meta}/api/dpop\"")]
    );
    assert_eq!(
        www(&cfg, &Denial::InvalidDpopProof("the request carries no DPoP proof"), dpop),
        [format!("DPoP algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"the request carries no DPoP proof\", {meta}/api/dpop\"")]
    );
    // Both schemes: each challenge carries it.
    let api = challenge(&cfg, "api");
    assert_eq!(api.resource, None);
    let under = Challenge {
        resource: challenge(&cfg, "as2").resource,
        ..api
    };
    let expired = Denial::InvalidToken("the token has expired");
    assert_eq!(
        www(&cfg, &expired, under.used(Scheme::Dpop)),
        [
            format!("Bearer realm=\"tollgate\", {meta}/api/as2\""),
            format!("DPoP algs=\"ES256 EdDSA\", error=\"invalid_token\", error_description=\"the token has expired\", {meta}/api/as2\""),
        ]
    );
    // A route under no resource: exactly the challenges without one.
    assert_eq!(
        www(&cfg, &expired, api),
        [
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"the token has expired\"",
            "DPoP algs=\"ES256 EdDSA\"",
        ]
    );
    assert_eq!(
        www(&cfg, &Denial::MissingToken, api),
        www(
            &cfg,
            &Denial::MissingToken,
            Challenge {
                resource: None,
                ..api
            }
        )
    );
}

/// The `Host` only selects a configured origin: another host gets no document, and nothing in a
/// document or a challenge comes from a request.
#[test]
fn documents_are_served_for_their_origin_only_and_never_name_the_host() {
    let cfg = parse(&config(json!([
        {"path": "/api", "origin": API},
        {"path": "/api", "origin": "http://internal.example:8080"},
    ])))
    .unwrap();
    let get = |method: &str, path: &str, host: &str| answer(&cfg.resources, method, path, host);
    let path = "/.well-known/oauth-protected-resource/api";
    let public = get("GET", path, "API.example.com").unwrap();
    assert_eq!(public.status, 200);
    assert_eq!(
        public.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );
    let body: Value = serde_json::from_str(&public.body).unwrap();
    assert_eq!(body["resource"], "https://api.example.com/api");
    let internal = get("GET", &format!("{path}?q=1"), "internal.example:8080").unwrap();
    let body: Value = serde_json::from_str(&internal.body).unwrap();
    assert_eq!(body["resource"], "http://internal.example:8080/api");
    for host in [
        "evil.example",
        "api.example.com:8443",
        "api.example.com.evil.example",
        "",
    ] {
        assert!(get("GET", path, host).is_none(), "{host}");
    }
    assert!(get("HEAD", path, "api.example.com").is_some());
    assert!(get("POST", path, "api.example.com").is_none());
    assert!(get("GET", "/.well-known/oauth-protected-resource", API).is_none());
    assert!(get(
        "GET",
        "/.well-known/oauth-protected-resource/api/x",
        "api.example.com"
    )
    .is_none());
    // The challenge of a route is fixed by the configuration: no request reaches it.
    assert_eq!(
        cfg.resource_metadata(challenge(&cfg, "api")),
        Some("https://api.example.com/.well-known/oauth-protected-resource/api")
    );
}

#[test]
fn the_origin_defaults_to_the_gateways_first_public_origin() {
    let mut v = config(json!([{"path": "/api"}]));
    v["issuers"][0]["gateway"] = json!({"endpoints": {"token": "https://as1.example/token"}});
    v["gateway"] = json!({"base_path": "/oauth2",
                          "public_origins": ["https://gw.example", "https://other.example"]});
    let cfg = parse(&v).unwrap();
    assert_eq!(cfg.resources[0].resource, "https://gw.example/api");
    // Still the issuers' own identifiers, not the gateway's per-issuer URLs.
    assert_eq!(
        document(&cfg, 0)["authorization_servers"],
        json!(["https://as1.example", "https://as2.example"])
    );
}

#[test]
fn refusals_name_the_field() {
    let cases: [(Value, &str, &str); 10] = [
        (
            json!([{"path": "/api", "origin": API, "scopes_supported": ["a b"]}]),
            "protected_resources[0].scopes_supported[0]",
            "scope",
        ),
        (
            json!([{"path": "/api"}]),
            "protected_resources[0].origin",
            "required without a gateway",
        ),
        (
            json!([{"path": "/api", "origin": "https://api.example.com/api"}]),
            "protected_resources[0].origin",
            "origin only",
        ),
        (
            json!([{"path": "/api/", "origin": API}]),
            "protected_resources[0].path",
            "no trailing",
        ),
        (
            json!([{"path": "api", "origin": API}]),
            "protected_resources[0].path",
            "such as",
        ),
        (
            json!([{"path": "/api/../admin", "origin": API}]),
            "protected_resources[0].path",
            "'..'",
        ),
        (
            json!([{"path": "/api/%61", "origin": API}]),
            "protected_resources[0].path",
            "letters",
        ),
        (
            json!([{"path": "/nothing", "origin": API}]),
            "protected_resources[0].path",
            "no route",
        ),
        (
            json!([{"path": "/api", "origin": API, "resource_documentation": "docs"}]),
            "protected_resources[0].resource_documentation",
            "URL",
        ),
        (
            json!([{"path": "/api", "origin": API, "resource_name": " "}]),
            "protected_resources[0].resource_name",
            "non-empty",
        ),
    ];
    for (resources, path, words) in cases {
        let (at, message) = refused(&config(resources));
        assert_eq!(at, path, "{message}");
        assert!(message.contains(words), "{at}: {message}");
    }
}

/// Envoy AI Gateway issues #1585 and #2690: two resources on different paths shared one
/// document. Here each path has its own, and two resources at one URL are refused.
#[test]
fn two_resources_never_share_a_document() {
    let cfg = parse(&config(json!([{"path": "/api", "origin": API},
                                   {"path": "/api/as2", "origin": API}])))
    .unwrap();
    let urls: Vec<&str> = cfg
        .resources
        .iter()
        .map(|r| r.metadata_url.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://api.example.com/.well-known/oauth-protected-resource/api",
            "https://api.example.com/.well-known/oauth-protected-resource/api/as2",
        ]
    );
    for (second, why) in [
        (API, "the same origin"),
        (
            "https://API.example.com.",
            "the same origin spelled otherwise",
        ),
        (
            "http://api.example.com:443",
            "another scheme, the same host and port",
        ),
    ] {
        let v =
            config(json!([{"path": "/api", "origin": API}, {"path": "/api", "origin": second}]));
        let (at, message) = refused(&v);
        assert_eq!(at, "protected_resources[1].path", "{why}");
        assert!(message.contains("protected_resources[0]"), "{message}");
    }
}
