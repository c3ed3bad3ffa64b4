//! Key-manager checks on the client a token was issued to: the route's subscription list
//! (WSO2-style `clients`) and the client-id header binding (IBM API Connect's
//! `X-IBM-Client-Id` style `client_id_header`).
//!
//! The token's client is its `client_id` (RFC 9068 §2.2, RFC 7662 §2.2), or, for OIDC-style
//! tokens without one, `azp` (OIDC Core §2). Both checks run on the verified identity (a JWT's
//! claims or an introspection answer); the header is read only after that, and its value is
//! never logged or echoed.
//!
//! Answers:
//! - the client is not in `clients`: **403 `access_denied`**. The token is valid (not 401,
//!   which would send a client to fetch a new token of the same kind, in a loop), and no scope
//!   can fix it (so not `insufficient_scope`): the API's owner refuses this client, as WSO2's
//!   "Resource forbidden" does. `access_denied` is OAuth's code for an owner's refusal
//!   (RFC 6749 §4.1.2.1), and Tollgate's 403 for "no route" already uses it.
//! - the header is missing, or sent more than once: **400 `invalid_request`** (RFC 6750
//!   §3.1: a required parameter is missing, or repeated), like two `Authorization` headers.
//! - the header names another client than the token's: **403 `access_denied`**. The token
//!   is valid, but it does not belong to the client the request says it comes from: the
//!   request is refused, not the token.
//!
//! Neither answer carries an error in `WWW-Authenticate` for the 403s (RFC 6750 registers no
//! code for them); the 400 does, as every `invalid_request`.

use serde_json::{Map, Value};

use crate::outcome::Denial;
use crate::policy::RequestFacts;

/// A route's client rules. The default checks nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientRule {
    /// Client ids allowed on the route (`None`: any).
    pub allowed: Option<Vec<String>>,
    /// A lower-case request header that must carry the token's client id, exactly once.
    pub header: Option<String>,
}

pub const NO_CLIENT_HEADER: &str = "the request lacks its client id header";
pub const CLIENT_HEADER_TWICE: &str = "the request repeats its client id header";

/// The client a token was issued to: `client_id`, else `azp` (strings only).
pub fn token_client(claims: &Map<String, Value>) -> Option<&str> {
    claims
        .get("client_id")
        .and_then(Value::as_str)
        .or_else(|| claims.get("azp").and_then(Value::as_str))
}

impl ClientRule {
    /// Checks the subscription list, then the header binding.
    pub fn check(&self, claims: &Map<String, Value>, req: &RequestFacts<'_>) -> Result<(), Denial> {
        if self.allowed.is_none() && self.header.is_none() {
            return Ok(()); // a route without client rules (most): no claim to look up
        }
        let client = token_client(claims);
        if let Some(allowed) = &self.allowed {
            if !client.is_some_and(|c| allowed.iter().any(|a| a == c)) {
                return Err(Denial::ClientNotAllowed);
            }
        }
        if let Some(name) = &self.header {
            let mut values = req.headers.iter().filter(|(n, _)| n == name);
            let value = match (values.next(), values.next()) {
                (None, _) => return Err(Denial::InvalidRequest(NO_CLIENT_HEADER)),
                (Some(_), Some(_)) => return Err(Denial::InvalidRequest(CLIENT_HEADER_TWICE)),
                (Some((_, v)), None) => v,
            };
            if client != Some(value.as_str()) {
                return Err(Denial::ClientMismatch);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn facts(headers: &[(String, String)]) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path: "/",
            authority: "api.test",
            route_name: None,
            headers,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_client_is_client_id_else_azp() {
        assert_eq!(
            token_client(&claims(json!({"client_id": "a", "azp": "b"}))),
            Some("a")
        );
        assert_eq!(token_client(&claims(json!({"azp": "b"}))), Some("b"));
        assert_eq!(
            token_client(&claims(json!({"client_id": 7, "azp": "b"}))),
            Some("b")
        );
        assert_eq!(token_client(&claims(json!({"sub": "alice"}))), None);
    }

    #[test]
    fn allow_list_by_client_id_or_azp() {
        let rule = ClientRule {
            allowed: Some(vec!["orders-cli".into(), "spa".into()]),
            header: None,
        };
        let none = h(&[]);
        let ok = |c: Value| rule.check(&claims(c), &facts(&none));
        assert_eq!(ok(json!({"client_id": "orders-cli"})), Ok(()));
        assert_eq!(ok(json!({"azp": "spa"})), Ok(()));
        let refused = Err(Denial::ClientNotAllowed);
        assert_eq!(ok(json!({"client_id": "billing"})), refused);
        assert_eq!(
            ok(json!({"client_id": "billing", "azp": "spa"})),
            refused,
            "client_id decides"
        );
        assert_eq!(ok(json!({"sub": "alice"})), refused, "no client at all");
        assert_eq!(ok(json!({"client_id": "Orders-Cli"})), refused, "exact");
    }

    #[test]
    fn the_header_must_be_there_once_and_name_the_tokens_client() {
        let rule = ClientRule {
            allowed: None,
            header: Some("x-ibm-client-id".into()),
        };
        let token = claims(json!({"client_id": "orders-cli"}));
        let with = |hs: &[(&str, &str)]| rule.check(&token, &facts(&h(hs)));
        assert_eq!(with(&[("x-ibm-client-id", "orders-cli")]), Ok(()));
        assert_eq!(
            with(&[("x-other", "orders-cli")]),
            Err(Denial::InvalidRequest(NO_CLIENT_HEADER))
        );
        assert_eq!(
            with(&[
                ("x-ibm-client-id", "orders-cli"),
                ("x-ibm-client-id", "orders-cli")
            ]),
            Err(Denial::InvalidRequest(CLIENT_HEADER_TWICE))
        );
        for other in ["billing", "", "orders-cli ", "ORDERS-CLI"] {
            assert_eq!(
                with(&[("x-ibm-client-id", other)]),
                Err(Denial::ClientMismatch),
                "{other:?}"
            );
        }
        let azp_only = claims(json!({"azp": "spa"}));
        let hs = h(&[("x-ibm-client-id", "spa")]);
        assert_eq!(rule.check(&azp_only, &facts(&hs)), Ok(()));
        let clientless = claims(json!({"sub": "alice"}));
        assert_eq!(
            rule.check(&clientless, &facts(&hs)),
            Err(Denial::ClientMismatch)
        );
    }

    #[test]
    fn the_list_is_checked_before_the_header() {
        let rule = ClientRule {
            allowed: Some(vec!["spa".into()]),
            header: Some("x-client".into()),
        };
        let token = claims(json!({"client_id": "billing"}));
        assert_eq!(
            rule.check(&token, &facts(&h(&[]))),
            Err(Denial::ClientNotAllowed)
        );
    }
}
