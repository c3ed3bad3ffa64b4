//! Sender-constrained tokens (issue 15, `super::sender`): each issuer's `dpop` and `mtls`, a
//! route's `require.dpop` / `require.mtls`, and the top-level `sender_constraint`.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::binding::Mode;

/// The names of the algorithms in `set`, in `Alg::ALL` order.
fn names(set: AlgSet) -> Vec<&'static str> {
    Alg::ALL
        .into_iter()
        .filter(|a| set.contains(*a))
        .map(Alg::name)
        .collect()
}

/// The minimal configuration with the top-level `sender_constraint` section.
fn with_sender_constraint(section: Value) -> Value {
    json!({"issuers": [remote_issuer("as1")], "sender_constraint": section})
}

/// The error's path and message (panics if the configuration is accepted).
fn refused(v: &Value) -> (String, String) {
    let e = error_at(v);
    (e.path, e.message)
}

#[test]
fn defaults() {
    let cfg = parse(&json!({"issuers": [remote_issuer("as1")], "routes": [{"require": {}}], "default_route": {"require": {}}})).unwrap();
    let issuer = &cfg.issuers[0];
    assert_eq!(issuer.dpop.mode, Mode::Allowed);
    assert_eq!(names(issuer.dpop.policy.algorithms), ["ES256", "EdDSA"]);
    assert_eq!(issuer.dpop.policy.iat_window_s, 60);
    assert!(!issuer.dpop.require_nonce);
    assert_eq!(issuer.mtls, Mode::Off);
    for policy in [&cfg.routes[0].policy, cfg.default_policy.as_ref().unwrap()] {
        let r = requirement_of(policy);
        assert_eq!((r.dpop, r.mtls), (None, None));
    }
    assert_eq!(cfg.sender_constraint.external_origin, None);
    assert_eq!(
        cfg.sender_constraint.client_certificate,
        ClientCertificate::Connection
    );
    assert_eq!(cfg.sender_constraint.client_certificate.header(), None);
    // An empty section is the same as none.
    let cfg = parse(&json!({"issuers": [remote_issuer("as1")], "sender_constraint": {}})).unwrap();
    assert_eq!(
        cfg.sender_constraint.client_certificate,
        ClientCertificate::Connection
    );
}

#[test]
fn every_setting_is_compiled() {
    let mut issuer = remote_issuer("as1");
    issuer["dpop"] = json!({
        "mode": "required",
        "algorithms": ["PS256", "ES256", "RS256", "ES384"],
        "iat_window_s": 3600,
        "require_nonce": true,
    });
    issuer["mtls"] = json!({"mode": "allowed"});
    let mut second = remote_issuer("as2");
    second["dpop"] = json!({"mode": "off", "iat_window_s": 1});
    second["mtls"] = json!({"mode": "required"});
    let cfg = parse(&json!({
        "issuers": [issuer, second],
        "routes": [
            {"require": {"dpop": "required", "mtls": "off"}},
            {"require": {"dpop": "off"}},
            {"require": {"mtls": "allowed"}},
        ],
        "default_route": {"require": {"dpop": "allowed", "mtls": "required"}},
        "sender_constraint": {
            "external_origin": "https://API.example.com:443/",
            "client_certificate": {"from": "xfcc", "header": "x-client-xfcc"},
        },
    }))
    .unwrap();
    let a = &cfg.issuers[0];
    assert_eq!(a.dpop.mode, Mode::Required);
    assert_eq!(
        names(a.dpop.policy.algorithms),
        ["RS256", "PS256", "ES256", "ES384"]
    );
    assert_eq!(a.dpop.policy.iat_window_s, 3600);
    assert!(a.dpop.require_nonce);
    assert_eq!(a.mtls, Mode::Allowed);
    let b = &cfg.issuers[1];
    assert_eq!(b.dpop.mode, Mode::Off);
    assert_eq!(names(b.dpop.policy.algorithms), ["ES256", "EdDSA"]);
    assert_eq!(b.dpop.policy.iat_window_s, 1);
    assert_eq!(b.mtls, Mode::Required);

    let modes: Vec<_> = cfg
        .routes
        .iter()
        .map(|r| &r.policy)
        .chain(cfg.default_policy.as_ref())
        .map(|p| {
            let r = requirement_of(p);
            (r.dpop, r.mtls)
        })
        .collect();
    assert_eq!(
        modes,
        [
            (Some(Mode::Required), Some(Mode::Off)),
            (Some(Mode::Off), None),
            (None, Some(Mode::Allowed)),
            (Some(Mode::Allowed), Some(Mode::Required)),
        ]
    );

    let sc = &cfg.sender_constraint;
    assert_eq!(
        sc.external_origin.as_ref().map(|o| o.origin.as_str()),
        Some("https://api.example.com")
    );
    assert_eq!(
        sc.client_certificate,
        ClientCertificate::Xfcc {
            header: "x-client-xfcc".into()
        }
    );
    assert_eq!(sc.client_certificate.header(), Some("x-client-xfcc"));
}

#[test]
fn certificate_headers_and_their_defaults() {
    let cases = [
        (
            json!({"from": "xfcc"}),
            ClientCertificate::Xfcc {
                header: "x-forwarded-client-cert".into(),
            },
        ),
        (
            json!({"from": "client-cert"}),
            ClientCertificate::ClientCert {
                header: "client-cert".into(),
            },
        ),
        (
            json!({"from": "client-cert", "header": "x-ssl-client-cert"}),
            ClientCertificate::ClientCert {
                header: "x-ssl-client-cert".into(),
            },
        ),
        (json!({"from": "connection"}), ClientCertificate::Connection),
    ];
    for (section, want) in cases {
        let cfg = parse(&with_sender_constraint(
            json!({"client_certificate": section}),
        ))
        .unwrap();
        assert_eq!(cfg.sender_constraint.client_certificate, want, "{section}");
    }
    // The external origin keeps a non-default port, and http is allowed.
    let cfg = parse(&with_sender_constraint(
        json!({"external_origin": "http://edge.example.com:8443"}),
    ))
    .unwrap();
    assert_eq!(
        cfg.sender_constraint.external_origin.unwrap().origin,
        "http://edge.example.com:8443"
    );
}

#[test]
fn dpop_algorithm_refusals() {
    let cases = [
        (
            json!(["ES256", "none"]),
            "issuers[0].dpop.algorithms[1]",
            "never accepted",
        ),
        (
            json!(["HS256"]),
            "issuers[0].dpop.algorithms[0]",
            "shared secret",
        ),
        (
            json!(["hs512"]),
            "issuers[0].dpop.algorithms[0]",
            "shared secret",
        ),
        (
            json!(["ES512"]),
            "issuers[0].dpop.algorithms[0]",
            "unsupported algorithm \"ES512\"",
        ),
        (
            json!(["es256"]),
            "issuers[0].dpop.algorithms[0]",
            "unsupported algorithm",
        ),
        (
            json!([]),
            "issuers[0].dpop.algorithms",
            "at least one algorithm",
        ),
        (
            json!(["ES256", "EdDSA", "ES256"]),
            "issuers[0].dpop.algorithms[2]",
            "listed twice",
        ),
    ];
    for (algorithms, path, message) in cases {
        let v = with_issuer_member("dpop", json!({"algorithms": algorithms}));
        let (at, why) = refused(&v);
        assert_eq!(at, path, "{algorithms}");
        assert!(why.contains(message), "{algorithms}: {why}");
    }
}

#[test]
fn dpop_window_and_mode_refusals() {
    for window in [0, 3601] {
        let v = with_issuer_member("dpop", json!({"iat_window_s": window}));
        let (at, why) = refused(&v);
        assert_eq!(at, "issuers[0].dpop.iat_window_s", "{window}");
        assert!(why.contains("between 1 and 3600"), "{why}");
    }
    let (at, why) = refused(&with_issuer_member("dpop", json!({"mode": "on"})));
    assert_eq!(at, "issuers[0].dpop.mode");
    assert!(why.contains("unknown variant `on`"), "{why}");
    let (at, why) = refused(&with_issuer_member("mtls", json!({"mode": "Required"})));
    assert_eq!(at, "issuers[0].mtls.mode");
    assert!(why.contains("unknown variant"), "{why}");
    let (at, why) = refused(&with_issuer_member("dpop", json!({"nonce": true})));
    assert_eq!(at, "issuers[0].dpop.nonce");
    assert!(why.contains("unknown field"), "{why}");
    let (at, _) = refused(&with_issuer_member(
        "mtls",
        json!({"mode": "off", "header": "x"}),
    ));
    assert_eq!(at, "issuers[0].mtls.header");
    let (at, why) = refused(&with_route(json!({"require": {"dpop": "sometimes"}})));
    assert_eq!(at, "routes[0].require.dpop");
    assert!(why.contains("unknown variant"), "{why}");
    let v =
        json!({"issuers": [remote_issuer("as1")], "default_route": {"require": {"mtls": true}}});
    assert_eq!(path_of(&v), "default_route.require.mtls");
}

#[test]
fn sender_constraint_refusals() {
    let cases = [
        (
            json!({"client_certificate": {"from": "header"}}),
            "sender_constraint.client_certificate.from",
            "unknown variant `header`",
        ),
        (
            json!({"client_certificate": {}}),
            "sender_constraint.client_certificate",
            "missing field `from`",
        ),
        (
            json!({"client_certificate": {"from": "connection", "header": "x-cert"}}),
            "sender_constraint.client_certificate",
            "a header is read only with",
        ),
        (
            json!({"client_certificate": {"from": "xfcc", "header": "X-Forwarded-Client-Cert"}}),
            "sender_constraint.client_certificate.header",
            "lower-case HTTP header name",
        ),
        (
            json!({"client_certificate": {"from": "client-cert", "header": "client cert"}}),
            "sender_constraint.client_certificate.header",
            "lower-case HTTP header name",
        ),
        (
            json!({"client_certificate": {"from": "xfcc", "header": "authorization"}}),
            "sender_constraint.client_certificate.header",
            "lower-case HTTP header name",
        ),
        (
            json!({"client_certificate": {"from": "xfcc", "header": "x-tollgate-sub"}}),
            "sender_constraint.client_certificate.header",
            "identity header \"x-tollgate-sub\"",
        ),
        (
            // As a backend reads it (`_` as `-`), this is the default issuer-name header.
            json!({"client_certificate": {"from": "client-cert", "header": "x_tollgate_issuer"}}),
            "sender_constraint.client_certificate.header",
            "identity header \"x-tollgate-issuer\"",
        ),
        (
            json!({"external_origin": "https://api.example.com/api"}),
            "sender_constraint.external_origin",
            "no path, query or fragment",
        ),
        (
            json!({"external_origin": "https://api.example.com/?a=b"}),
            "sender_constraint.external_origin",
            "no path, query or fragment",
        ),
        (
            json!({"external_origin": "ftp://api.example.com"}),
            "sender_constraint.external_origin",
            "http:// or https://",
        ),
        (
            json!({"external_origin": "https://user@api.example.com"}),
            "sender_constraint.external_origin",
            "user information",
        ),
        (
            json!({"trusted_proxy": true}),
            "sender_constraint.trusted_proxy",
            "unknown field",
        ),
    ];
    for (section, path, message) in cases {
        let (at, why) = refused(&with_sender_constraint(section.clone()));
        assert_eq!(at, path, "{section}");
        assert!(why.contains(message), "{section}: {why}");
    }
}

#[test]
fn the_certificate_header_is_not_the_gateway_route_header() {
    let mut v = with_gateway(
        metadata("as1"),
        json!({"base_path": "/oauth2", "public_origins": ["https://api.example.com"], "route_header": "x-route-to"}),
    );
    v["sender_constraint"] =
        json!({"client_certificate": {"from": "xfcc", "header": "x-route-to"}});
    let (at, why) = refused(&v);
    assert_eq!(at, "sender_constraint.client_certificate.header");
    assert!(why.contains("gateway.route_header"), "{why}");
    // An identity header of a configured map, not only the default one.
    let v = json!({
        "issuers": [remote_issuer("as1")],
        "identity": {"headers": {"sub": "x-user"}, "payload_header": "x-claims"},
        "sender_constraint": {"client_certificate": {"from": "xfcc", "header": "x-claims"}},
    });
    assert_eq!(path_of(&v), "sender_constraint.client_certificate.header");
}
