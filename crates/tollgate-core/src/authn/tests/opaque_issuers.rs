//! Opaque tokens: which issuer is asked about them (rules, the route's default, the issuer
//! header), and only that one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

#[test]
fn introspection_config_is_as_documented() {
    let env = opaque_env();
    let names: Vec<&str> = env.cfg.issuers.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["jwt1", "op1", "op2", "op3", "jwt2"]);
    let intro = env.cfg.issuers[JWT2].introspection.as_ref().unwrap();
    assert!(intro.introspect_jwts);
    assert_eq!(
        intro.ttl,
        ttl(),
        "the defaults the entries here are built with"
    );
}

#[test]
fn opaque_token_rules_are_tried_in_issuer_order() {
    let mut env = opaque_env();
    // "op1_abc" matches op1's prefix and op2's pattern: op1 comes first.
    assert_eq!(
        env.opaque("/any", "op1_abc", None),
        env.introspect_at(OP1, "op1_abc")
    );
    assert_eq!(
        env.opaque("/any", "op2_abc", None),
        env.introspect_at(OP2, "op2_abc")
    );
    assert_eq!(
        env.opaque("/any", "op7_x", None),
        env.introspect_at(OP2, "op7_x")
    );
    // The pattern must match the whole token.
    assert_eq!(
        env.opaque("/any", "op2_ABC", None),
        invalid_token(issuer::NO_RULE, None)
    );
    assert_eq!(
        env.opaque("/any", "xop2_abc", None),
        invalid_token(issuer::NO_RULE, None)
    );
    assert_eq!(
        (env.cache.gets, env.cache.puts),
        (5, 0),
        "looked up, never stored"
    );
}

#[test]
fn a_matching_rule_wins_over_the_routes_default_and_the_hint() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque("/dflt", "op2_abc", None),
        env.introspect_at(OP2, "op2_abc")
    );
    assert_eq!(
        env.opaque("/hint", "op1_abc", Some("op3")),
        env.introspect_at(OP1, "op1_abc")
    );
    assert_eq!(
        env.opaque("/dflt-hint", "op1_abc", Some("op3")),
        env.introspect_at(OP1, "op1_abc")
    );
    // The rule names op2, which the route does not accept: refused, and the route's own
    // default (op1) is not asked about another issuer's token.
    assert_eq!(
        env.opaque("/op1only", "op2_abc", None),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP2))
    );
    assert_eq!(
        env.opaque("/hint", "op2_abc", Some("op1")),
        invalid_token(NOT_ACCEPTED_HERE, Some(OP2))
    );
}

#[test]
fn the_routes_opaque_issuer_applies_when_no_rule_matches() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque("/dflt", "zzz", None),
        env.introspect_at(OP3, "zzz")
    );
    assert_eq!(
        env.opaque("/op1only", "zzz", None),
        env.introspect_at(OP1, "zzz")
    );
    // opaque_issuer comes before the hint.
    assert_eq!(
        env.opaque("/dflt-hint", "zzz", Some("op1")),
        env.introspect_at(OP3, "zzz")
    );
    assert_eq!(
        env.opaque("/dflt-hint", "zzz", Some("nope")),
        env.introspect_at(OP3, "zzz")
    );
}

#[test]
fn the_issuer_header_names_one_of_the_routes_introspecting_issuers() {
    let mut env = opaque_env();
    assert_eq!(
        env.opaque("/hint", "zzz", Some("op3")),
        env.introspect_at(OP3, "zzz")
    );
    assert_eq!(
        env.opaque("/hint", "zzz", Some("op1")),
        env.introspect_at(OP1, "zzz")
    );
    assert_eq!(
        env.opaque("/hint-all", "zzz", Some("op2")),
        env.introspect_at(OP2, "zzz")
    );
    let bad_hint = invalid_token(issuer::BAD_HINT, None);
    for hint in [
        "op2",  // not among the route's issuers
        "jwt1", // accepted, but has no introspection
        "jwt2", // introspects, but not accepted here
        "nope", // no such issuer
        "OP3",  // names are exact
        "",
    ] {
        assert_eq!(env.opaque("/hint", "zzz", Some(hint)), bad_hint, "{hint:?}");
    }
    assert_eq!(env.opaque("/hint-all", "zzz", Some("jwt1")), bad_hint);
    // No header: no rule.
    assert_eq!(
        env.opaque("/hint", "zzz", None),
        invalid_token(issuer::NO_RULE, None)
    );
    assert_eq!((env.cache.puts, env.cache.hits), (0, 0));
}

#[test]
fn no_rule_no_default_no_hint_refuses_the_token() {
    let mut env = opaque_env();
    let no_rule = invalid_token(issuer::NO_RULE, None);
    for token in ["zzz", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "a.b.c.d"] {
        assert_eq!(env.opaque("/any", token, None), no_rule, "{token}");
        // The hint header is ignored on a route that has no issuer_header.
        assert_eq!(env.opaque("/any", token, Some("op3")), no_rule, "{token}");
    }
}

/// Every combination of route, token and hint: a decision to introspect names exactly the
/// issuer the rules select (first matching `opaque_tokens` rule, then `opaque_issuer`, then an
/// accepted introspecting issuer named by the hint), and no other outcome is an introspection.
#[test]
fn introspection_is_only_ever_at_the_selected_issuer() {
    struct Rules {
        path: &'static str,
        /// Empty: every issuer.
        accepts: &'static [usize],
        opaque_issuer: Option<usize>,
        hint: bool,
    }
    let routes = [
        Rules {
            path: "/any",
            accepts: &[],
            opaque_issuer: None,
            hint: false,
        },
        Rules {
            path: "/dflt-hint",
            accepts: &[],
            opaque_issuer: Some(OP3),
            hint: true,
        },
        Rules {
            path: "/dflt",
            accepts: &[],
            opaque_issuer: Some(OP3),
            hint: false,
        },
        Rules {
            path: "/hint-all",
            accepts: &[],
            opaque_issuer: None,
            hint: true,
        },
        Rules {
            path: "/hint",
            accepts: &[JWT1, OP1, OP3],
            opaque_issuer: None,
            hint: true,
        },
        Rules {
            path: "/op1only",
            accepts: &[OP1],
            opaque_issuer: Some(OP1),
            hint: false,
        },
    ];
    let by_rule = |token: &str| {
        let b = token.as_bytes();
        if token.starts_with("op1_") {
            Some(OP1)
        } else if b.len() >= 4
            && b.starts_with(b"op")
            && b[2].is_ascii_digit()
            && b[3] == b'_'
            && b[4..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            Some(OP2)
        } else {
            None
        }
    };
    let index = |name: &str| {
        ["jwt1", "op1", "op2", "op3", "jwt2"]
            .iter()
            .position(|n| *n == name)
    };
    let introspects = [OP1, OP2, OP3, JWT2];
    let mut env = opaque_env();
    let mut introspections = 0;
    for route in &routes {
        let accepted = |i: usize| route.accepts.is_empty() || route.accepts.contains(&i);
        for token in [
            "op1_abc", "op1_", "op2_abc", "op9_0", "op2_ABC", "zzz", "a.b.c", "op3",
        ] {
            for hint in [
                None,
                Some("jwt1"),
                Some("op1"),
                Some("op2"),
                Some("op3"),
                Some("jwt2"),
                Some("x"),
            ] {
                let expected = match by_rule(token) {
                    Some(i) if accepted(i) => env.introspect_at(i, token),
                    Some(i) => invalid_token(NOT_ACCEPTED_HERE, Some(i)),
                    None => match (route.opaque_issuer, route.hint, hint) {
                        (Some(i), _, _) => env.introspect_at(i, token),
                        (None, true, Some(h)) => match index(h) {
                            Some(i) if accepted(i) && introspects.contains(&i) => {
                                env.introspect_at(i, token)
                            }
                            _ => invalid_token(issuer::BAD_HINT, None),
                        },
                        _ => invalid_token(issuer::NO_RULE, None),
                    },
                };
                let got = env.opaque(route.path, token, hint);
                assert_eq!(got, expected, "{} {token} {hint:?}", route.path);
                introspections +=
                    usize::from(matches!(got, Decision::Wait(Wait::Introspect { .. })));
            }
        }
    }
    assert!(introspections > 50, "{introspections}");
    assert_eq!(env.cache.puts, 0);
}
