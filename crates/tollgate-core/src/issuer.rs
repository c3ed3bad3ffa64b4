//! Which configured issuer a token belongs to — decided without sending the token anywhere.
//!
//! A JWS names its issuer (`iss`, read unverified only to pick whose keys to use). An opaque
//! token does not, so configured rules decide, in this order: the first issuer whose
//! `opaque_tokens` rule (prefix or whole-token regular expression) matches — or, with the
//! gateway's tagging on, the issuer named by a `<issuer>.<token>` tag; else the route's
//! `opaque_issuer`; else the route's `issuer_header`, naming one of the route's issuers. No
//! match means the token is refused. There is deliberately no "try every issuer" mode: that
//! would hand one authorization server's tokens to the others.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::config::FilterConfig;
use crate::policy::{RequestFacts, Requirement};

/// Whether a token is a compact JWS (three segments, the first a base64url JSON object).
/// Anything else is treated as opaque.
pub fn is_jws(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v.is_object())
}

/// Why no issuer could be chosen for an opaque token (constant texts for the client).
pub const NO_RULE: &str = "no configured issuer recognises this token";
pub const BAD_HINT: &str = "the issuer named by the request is not accepted here";

/// The first issuer (in configuration order) whose `opaque_tokens` rule matches the token,
/// or, with gateway tagging on, the issuer a `<issuer>.<token>` tag names.
pub fn by_rule(cfg: &FilterConfig, token: &str) -> Option<usize> {
    if let Some((idx, _)) = tagged(cfg, token) {
        return Some(idx);
    }
    cfg.issuers
        .iter()
        .position(|i| i.introspection.is_some() && i.opaque.matches(token))
}

/// With gateway tagging on: the issuer a tagged opaque token names, and the token as that
/// issuer minted it (what must be sent to its introspection endpoint).
pub fn tagged<'t>(cfg: &FilterConfig, token: &'t str) -> Option<(usize, &'t str)> {
    if !cfg.gateway.as_ref().is_some_and(|g| g.tagging) || is_jws(token) {
        return None;
    }
    crate::gateway::tag::untag(token, |name| {
        cfg.issuers
            .iter()
            .position(|i| i.name == name && i.introspection.is_some())
    })
}

/// The issuer to introspect an opaque token at, by the rules in the module comment.
pub fn for_opaque(
    cfg: &FilterConfig,
    requirement: &Requirement,
    req: &RequestFacts<'_>,
    token: &str,
) -> Result<usize, &'static str> {
    if let Some(idx) = by_rule(cfg, token).or(requirement.opaque_issuer) {
        return Ok(idx);
    }
    let Some(header) = &requirement.issuer_header else {
        return Err(NO_RULE);
    };
    let Some(name) = req.header(header) else {
        return Err(NO_RULE);
    };
    cfg.issuers
        .iter()
        .position(|i| i.name == name)
        .filter(|&idx| cfg.issuers[idx].introspection.is_some() && requirement.accepts_issuer(idx))
        .ok_or(BAD_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn jws_shape() {
        assert!(is_jws("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"));
        assert!(!is_jws("eyJhbGciOiJSUzI1NiJ9.e30"), "two segments");
        assert!(!is_jws("a.b.c"), "header is not JSON");
        assert!(!is_jws("WyJhIl0.e30.c2ln"), "header is a JSON array");
        assert!(!is_jws("dot_abcdef"));
        assert!(!is_jws("as1.abc.def.ghi"));
    }
}
