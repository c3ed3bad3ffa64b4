//! The audience rule (`aud`, RFC 7519 §4.1.3; RFC 7662 §2.2), one for both kinds of token: a
//! verified JWT ([`crate::jwt::verify`]) and an introspection answer ([`crate::introspect::read`]).
//!
//! An issuer that lists accepted audiences accepts a token only if its `aud` names one of
//! them: a string equal to one, or an array with at least one such string. A JWT without
//! `aud` (or with an `aud` of any other shape) is refused, as Envoy's jwt_authn and Kong's
//! openid-connect refuse it: a token that names no audience was not minted for this API.
//! An issuer with no accepted audiences does not look at `aud`.
//!
//! The one difference is the introspection answer's, and it is made there, in the open: RFC
//! 7662 makes `aud` optional in an answer and widely used servers leave it out, so an answer
//! without `aud` is not judged by this rule (see [`crate::introspect::read`]).

use serde_json::Value;

/// Whether a token with this `aud` member (absent: `None`) may be used where `accepted` lists
/// the audiences the issuer accepts. Comparison is exact (case-sensitive) on each string.
pub fn accepts(aud: Option<&Value>, accepted: &[String]) -> bool {
    if accepted.is_empty() {
        return true;
    }
    let is_accepted = |v: &Value| v.as_str().is_some_and(|s| accepted.iter().any(|a| a == s));
    match aud {
        Some(Value::Array(items)) => items.iter().any(is_accepted),
        Some(single) => is_accepted(single),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn api() -> Vec<String> {
        vec!["https://api.test".to_owned(), "api://orders".to_owned()]
    }

    #[test]
    fn a_missing_aud_is_refused_when_audiences_are_required() {
        assert!(!accepts(None, &api()));
    }

    #[test]
    fn a_string_aud_must_equal_an_accepted_audience() {
        assert!(accepts(Some(&json!("https://api.test")), &api()));
        assert!(accepts(Some(&json!("api://orders")), &api()));
        assert!(!accepts(Some(&json!("https://other.test")), &api()));
        assert!(!accepts(Some(&json!("HTTPS://API.TEST")), &api()), "exact");
        assert!(!accepts(Some(&json!("https://api.test/")), &api()), "exact");
        assert!(!accepts(Some(&json!("")), &api()));
    }

    #[test]
    fn an_array_aud_needs_one_accepted_member() {
        assert!(accepts(Some(&json!(["x", "https://api.test"])), &api()));
        assert!(!accepts(Some(&json!(["x", "y"])), &api()));
    }

    #[test]
    fn an_empty_array_names_no_audience() {
        assert!(!accepts(Some(&json!([])), &api()));
    }

    #[test]
    fn non_string_members_and_values_never_match() {
        assert!(!accepts(
            Some(&json!([1, null, {"aud": "https://api.test"}])),
            &api()
        ));
        assert!(
            !accepts(Some(&json!([["https://api.test"]])), &api()),
            "not flattened"
        );
        assert!(
            accepts(Some(&json!([7, "https://api.test"])), &api()),
            "one string suffices"
        );
        for other in [
            json!(null),
            json!(1),
            json!(true),
            json!({"https://api.test": 1}),
        ] {
            assert!(!accepts(Some(&other), &api()), "{other}");
        }
    }

    #[test]
    fn no_accepted_audiences_means_aud_is_not_checked() {
        for aud in [
            None,
            Some(json!("anything")),
            Some(json!([])),
            Some(json!(3)),
        ] {
            assert!(accepts(aud.as_ref(), &[]), "{aud:?}");
        }
    }
}
