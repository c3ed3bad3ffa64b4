//! A route's client rules (`clients`, `client_id_header`) and RFC 9470 step-up (`acr_values`,
//! `max_age_s`): compiled, and every error at its JSON path.

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::policy::{ClientRule, StepUp};

#[test]
fn client_and_step_up_rules_are_compiled() {
    let cfg = parse(&with_route(json!({"require": {
        "clients": ["spa", "orders-cli"],
        "client_id_header": "x-ibm-client-id",
        "acr_values": ["urn:tollgate:loa:2", "urn:tollgate:loa:3"],
        "max_age_s": 300,
    }})))
    .unwrap();
    let r = requirement_of(&cfg.routes[0].policy);
    assert_eq!(
        r.client,
        ClientRule {
            allowed: Some(vec!["spa".into(), "orders-cli".into()]),
            header: Some("x-ibm-client-id".into()),
        }
    );
    assert_eq!(
        r.step_up,
        StepUp {
            acr_values: vec!["urn:tollgate:loa:2".into(), "urn:tollgate:loa:3".into()],
            max_age_s: Some(300),
        }
    );
    let cfg = parse(&with_route(json!({"require": {}}))).unwrap();
    let r = requirement_of(&cfg.routes[0].policy);
    assert_eq!(
        (&r.client, &r.step_up),
        (&ClientRule::default(), &StepUp::default())
    );
    assert!(!r.step_up.is_required());
}

#[test]
fn client_and_step_up_errors_name_their_path() {
    let cases = [
        (
            json!({"clients": []}),
            "routes[0].require.clients",
            "at least one client id",
        ),
        (
            json!({"clients": ["a", ""]}),
            "routes[0].require.clients[1]",
            "not empty",
        ),
        (
            json!({"client_id_header": "X-Client"}),
            "routes[0].require.client_id_header",
            "lower-case",
        ),
        (
            json!({"client_id_header": "authorization"}),
            "routes[0].require.client_id_header",
            "cannot carry",
        ),
        (
            json!({"client_id_header": "x_tollgate_sub"}),
            "routes[0].require.client_id_header",
            "sets or consumes",
        ),
        (
            json!({"acr_values": []}),
            "routes[0].require.acr_values",
            "at least one",
        ),
        (
            json!({"acr_values": ["a", "b c"]}),
            "routes[0].require.acr_values[1]",
            "without space",
        ),
        (
            json!({"acr_values": ["a\"b"]}),
            "routes[0].require.acr_values[0]",
            "printable ASCII",
        ),
        (
            json!({"max_age_s": 0}),
            "routes[0].require.max_age_s",
            "at least 1",
        ),
        (json!({"max_age_s": -5}), "routes[0].require.max_age_s", ""),
        (json!({"max_age_s": 2.5}), "routes[0].require.max_age_s", ""),
    ];
    for (require, path, message) in cases {
        let e = error_at(&with_route(json!({ "require": require })));
        assert_eq!(e.path, path, "{require}");
        assert!(e.message.contains(message), "{require}: {}", e.message);
    }
    let anonymous = error_at(&with_route(
        json!({"anonymous": true, "require": {"max_age_s": 5}}),
    ));
    assert_eq!(anonymous.path, "routes[0].require");
    let mut v = with_route(json!({"require": {}}));
    v["default_route"] = json!({"require": {"client_id_header": "x-tollgate-claims"}});
    v["identity"] = json!({"payload_header": "x-tollgate-claims"});
    assert_eq!(path_of(&v), "default_route.require.client_id_header");
}
