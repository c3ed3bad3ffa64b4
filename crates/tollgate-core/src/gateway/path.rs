//! Gateway paths: which OAuth endpoint a request under the base path asks for, and the issuer
//! named in the path, if any (`{base}/{issuer}/{endpoint}`). The paths themselves are
//! [`Endpoint::segments`].

use crate::endpoint::{Endpoint, CLIENT_ID};

/// A parsed gateway path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'p> {
    /// The issuer name in the path (`{base}/{issuer}/...`).
    pub issuer: Option<&'p str>,
    pub endpoint: Endpoint,
    /// For [`Endpoint::ClientConfiguration`]: the client id segment (still percent-encoded;
    /// [`super::route::path_client_id`] decodes it).
    pub client_id: Option<&'p str>,
}

/// Parses `path` (without query) under `base` (e.g. `/oauth2`). `is_issuer` tells configured
/// issuer names. `None`: not a gateway path (or an unknown endpoint under it).
pub fn parse<'p>(
    base: &str,
    path: &'p str,
    is_issuer: impl Fn(&str) -> bool,
) -> Option<Target<'p>> {
    let rest = path.strip_prefix(base.trim_end_matches('/'))?;
    let rest = rest.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    let with_issuer = || {
        let (first, tail) = segments.split_first()?;
        endpoint(tail).map(|(endpoint, client_id)| Target {
            issuer: Some(*first),
            endpoint,
            client_id,
        })
    };
    let without_issuer = || {
        endpoint(&segments).map(|(endpoint, client_id)| Target {
            issuer: None,
            endpoint,
            client_id,
        })
    };
    // A known issuer name in front wins; an unknown name in front of an endpoint is still a
    // selector (so that the caller answers "unknown authorization server", not 404).
    match segments.first() {
        Some(first) if is_issuer(first) => with_issuer().or_else(without_issuer),
        _ => without_issuer().or_else(with_issuer),
    }
}

/// The endpoint whose [`Endpoint::segments`] `segments` are, and the client id segment if its
/// path has one.
fn endpoint<'p>(segments: &[&'p str]) -> Option<(Endpoint, Option<&'p str>)> {
    Endpoint::ALL.into_iter().find_map(|e| {
        let pattern = e.segments();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut client_id = None;
        for (want, got) in pattern.iter().zip(segments) {
            if *want == CLIENT_ID && !got.is_empty() {
                client_id = Some(*got);
            } else if want != got {
                return None;
            }
        }
        Some((e, client_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn known(name: &str) -> bool {
        matches!(name, "as1" | "as2")
    }

    #[test]
    fn endpoints_with_and_without_an_issuer_segment() {
        let t = parse("/oauth2", "/oauth2/token", known).unwrap();
        assert_eq!((t.issuer, t.endpoint), (None, Endpoint::Token));
        let t = parse("/oauth2/", "/oauth2/as2/authorize", known).unwrap();
        assert_eq!((t.issuer, t.endpoint), (Some("as2"), Endpoint::Authorize));
        let t = parse("/oauth2", "/oauth2/as1/register/abc%2F1", known).unwrap();
        assert_eq!(t.endpoint, Endpoint::ClientConfiguration);
        assert_eq!(t.client_id, Some("abc%2F1"));
        let t = parse(
            "/oauth2",
            "/oauth2/as1/.well-known/openid-configuration",
            known,
        )
        .unwrap();
        assert_eq!(
            (t.issuer, t.endpoint),
            (Some("as1"), Endpoint::OidcDiscovery)
        );
        let t = parse(
            "/oauth2",
            "/oauth2/.well-known/oauth-authorization-server",
            known,
        )
        .unwrap();
        assert_eq!((t.issuer, t.endpoint), (None, Endpoint::AsMetadata));
    }

    #[test]
    fn unknown_paths_are_not_gateway_calls() {
        assert_eq!(parse("/oauth2", "/oauth2", known), None);
        assert_eq!(parse("/oauth2", "/oauth2x/token", known), None);
        assert_eq!(parse("/oauth2", "/oauth2/as3/token/x", known), None);
        assert_eq!(parse("/oauth2", "/oauth2/token/extra", known), None);
        assert_eq!(parse("/oauth2", "/api/token", known), None);
        assert_eq!(parse("/oauth2", "/oauth2/register/", known), None);
    }

    #[test]
    fn an_unknown_issuer_segment_is_still_a_selector() {
        let t = parse("/oauth2", "/oauth2/as3/token", known).unwrap();
        assert_eq!((t.issuer, t.endpoint), (Some("as3"), Endpoint::Token));
        let t = parse("/oauth2", "/oauth2/register/abc", known).unwrap();
        assert_eq!(
            (t.issuer, t.endpoint),
            (None, Endpoint::ClientConfiguration)
        );
    }

    #[test]
    fn an_issuer_named_like_an_endpoint_is_only_a_selector_before_one() {
        let is_token = |n: &str| n == "token";
        let t = parse("/oauth2", "/oauth2/token", is_token).unwrap();
        assert_eq!((t.issuer, t.endpoint), (None, Endpoint::Token));
        let t = parse("/oauth2", "/oauth2/token/token", is_token).unwrap();
        assert_eq!((t.issuer, t.endpoint), (Some("token"), Endpoint::Token));
    }
}
