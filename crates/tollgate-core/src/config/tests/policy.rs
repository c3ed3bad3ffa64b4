//! Routes (`compile_policy`, `compile_match`): matches, requirements, and where a route
//! sends opaque tokens (`opaque_issuer`, `issuer_header`).

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
