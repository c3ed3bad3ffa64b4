//! Upstreams in the host's terms: an Envoy cluster name, or host:port on Kong and APISIX.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
        let g = i.gateway.as_ref().unwrap();
        assert_eq!(g.upstream.as_deref(), Some(upstream));
        assert!(g.wants_documents());
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
