//! Which configured issuer a token belongs to — decided without sending the token anywhere.
//!
//! A JWS names its issuer (`iss`, read unverified only to pick whose keys to use). An opaque
//! token does not, so configured rules decide, in this order: the first issuer whose
//! `opaque_tokens` rule (prefix or whole-token regular expression) matches — or, with the
//! gateway's tagging on, the issuer named by a `<issuer>.<token>` tag; else the route's
//! `opaque_issuer`; else the route's `issuer_header`, naming one of the route's issuers. No
//! match means the token is refused. There is deliberately no "try every issuer" mode: that
//! would hand one authorization server's tokens to the others.

use crate::config::FilterConfig;
use crate::policy::{RequestFacts, Requirement};
use crate::token::{is_jws, untag};

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
    untag(token, |name| {
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
