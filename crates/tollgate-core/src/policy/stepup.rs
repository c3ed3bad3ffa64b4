//! RFC 9470 step-up: how recently, and how strongly, the user behind a token must have
//! authenticated for a route.
//!
//! Reads `acr` and `auth_time` from the verified identity (a JWT's claims, or an RFC 7662
//! answer's members, which the cache keeps whole). Never reads a clock: `now_s` is handed in.

use serde_json::{Map, Value};

use crate::outcome::Denial;

/// A route's authentication requirements (RFC 9470 §3). The default requires nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// Acceptable `acr` values, any of (empty: `acr` is not checked), in configuration order.
    pub acr_values: Vec<String>,
    /// The most seconds that may have passed since `auth_time`.
    pub max_age_s: Option<u64>,
}

/// Why a step-up requirement is not met (fixed texts: no claim value is echoed).
pub const ACR_NOT_ACCEPTED: &str = "a stronger authentication of the user is required";
pub const AUTH_TOO_OLD: &str = "a more recent authentication of the user is required";
pub const NO_AUTH_TIME: &str = "the token does not say when the user authenticated";

impl StepUp {
    /// Whether the route requires anything.
    pub fn is_required(&self) -> bool {
        !self.acr_values.is_empty() || self.max_age_s.is_some()
    }

    /// Checks `acr` and `auth_time` at `now_s` (seconds since the epoch). A token without a
    /// (string) `acr` fails an `acr_values` route; one without a (numeric) `auth_time` fails a
    /// `max_age_s` route; an `auth_time` exactly `max_age_s` old still passes, one second
    /// more does not. An `auth_time` in the future counts as age 0 (the issuer's clock).
    ///
    /// The refusal always states the route's whole requirement (both `acr_values` and
    /// `max_age` when both are configured), so one new authentication can satisfy it.
    pub fn check(&self, claims: &Map<String, Value>, now_s: i64) -> Result<(), Denial> {
        let why = if !self.acr_values.is_empty()
            && !claims
                .get("acr")
                .and_then(Value::as_str)
                .is_some_and(|acr| self.acr_values.iter().any(|v| v == acr))
        {
            ACR_NOT_ACCEPTED
        } else if let Some(max_age) = self.max_age_s {
            let Some(auth_time) = claims.get("auth_time").and_then(numeric_date) else {
                return Err(self.refusal(NO_AUTH_TIME));
            };
            let age = now_s.saturating_sub(auth_time);
            if age <= i64::try_from(max_age).unwrap_or(i64::MAX) {
                return Ok(());
            }
            AUTH_TOO_OLD
        } else {
            return Ok(());
        };
        Err(self.refusal(why))
    }

    fn refusal(&self, why: &'static str) -> Denial {
        Denial::InsufficientUserAuthentication {
            why,
            acr_values: (!self.acr_values.is_empty()).then(|| self.acr_values.join(" ")),
            max_age: self.max_age_s,
        }
    }
}

/// An RFC 7519 NumericDate: seconds, possibly with a fraction (dropped).
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: i64 = 1_700_000_000;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn loa2() -> StepUp {
        StepUp {
            acr_values: vec!["urn:loa:2".into(), "urn:loa:3".into()],
            max_age_s: None,
        }
    }

    fn refused(why: &'static str, acr: Option<&str>, max_age: Option<u64>) -> Denial {
        Denial::InsufficientUserAuthentication {
            why,
            acr_values: acr.map(str::to_owned),
            max_age,
        }
    }

    #[test]
    fn nothing_required_passes_anything() {
        let none = StepUp::default();
        assert!(!none.is_required());
        assert_eq!(none.check(&claims(json!({})), NOW), Ok(()));
    }

    #[test]
    fn acr_is_any_of_the_configured_values() {
        let r = loa2();
        assert!(r.is_required());
        for acr in ["urn:loa:2", "urn:loa:3"] {
            assert_eq!(
                r.check(&claims(json!({ "acr": acr })), NOW),
                Ok(()),
                "{acr}"
            );
        }
        let no = refused(ACR_NOT_ACCEPTED, Some("urn:loa:2 urn:loa:3"), None);
        for c in [
            json!({"acr": "urn:loa:1"}),
            json!({"acr": "URN:LOA:2"}),
            json!({"acr": ["urn:loa:2"]}),
            json!({"acr": 2}),
            json!({}),
        ] {
            assert_eq!(r.check(&claims(c.clone()), NOW), Err(no.clone()), "{c}");
        }
    }

    #[test]
    fn max_age_boundary_and_missing_auth_time() {
        let r = StepUp {
            acr_values: Vec::new(),
            max_age_s: Some(300),
        };
        let at = |t: Value| r.check(&claims(json!({ "auth_time": t })), NOW);
        assert_eq!(at(json!(NOW - 300)), Ok(()), "exactly max_age old");
        assert_eq!(at(json!(NOW - 10)), Ok(()));
        assert_eq!(at(json!(NOW + 30)), Ok(()), "in the future: age 0");
        assert_eq!(at(json!((NOW - 300) as f64 + 0.5)), Ok(()));
        let old = refused(AUTH_TOO_OLD, None, Some(300));
        assert_eq!(at(json!(NOW - 301)), Err(old), "one second over");
        let missing = refused(NO_AUTH_TIME, None, Some(300));
        assert_eq!(r.check(&claims(json!({})), NOW), Err(missing.clone()));
        assert_eq!(at(json!("1700000000")), Err(missing));
    }

    #[test]
    fn a_refusal_states_the_whole_requirement() {
        let r = StepUp {
            max_age_s: Some(60),
            ..loa2()
        };
        let both = |why| refused(why, Some("urn:loa:2 urn:loa:3"), Some(60));
        let fresh = json!({"acr": "urn:loa:1", "auth_time": NOW});
        assert_eq!(r.check(&claims(fresh), NOW), Err(both(ACR_NOT_ACCEPTED)));
        let old = json!({"acr": "urn:loa:3", "auth_time": NOW - 61});
        assert_eq!(r.check(&claims(old), NOW), Err(both(AUTH_TOO_OLD)));
        let ok = json!({"acr": "urn:loa:3", "auth_time": NOW - 60});
        assert_eq!(r.check(&claims(ok), NOW), Ok(()));
    }
}
