//! One issuer (`compile_issuer`): its name, `issuer`, algorithms, JWKS and URL hosts.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
