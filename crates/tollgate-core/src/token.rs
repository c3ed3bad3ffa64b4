//! What a token's text shows before anything about it is trusted: whether it is a compact JWS
//! ([`is_jws`]; anything else is opaque), and the gateway's routing tag.
//!
//! Stateless routing tags ("authorization server proxy" mode): client ids and opaque tokens
//! handed out through the gateway carry the issuing server's name, `<issuer>.<value>`, so later
//! calls can be routed (and opaque tokens introspected) without any per-client state.
//! Issuer names cannot contain '.', so the first '.' always ends the tag. JWSs are never tagged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

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

/// `<issuer>.<value>`
pub fn tag(issuer_name: &str, value: &str) -> String {
    format!("{issuer_name}.{value}")
}

/// The issuer a tagged value names (by `index_of` over configured issuer names) and the value
/// without its tag. `None` if the value carries no known tag.
pub fn untag(value: &str, index_of: impl Fn(&str) -> Option<usize>) -> Option<(usize, &str)> {
    let (name, rest) = value.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    Some((index_of(name)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn index_of(name: &str) -> Option<usize> {
        ["as1", "as2"].iter().position(|n| *n == name)
    }

    #[test]
    fn tags_round_trip() {
        let t = tag("as2", "dot_abc.def");
        assert_eq!(t, "as2.dot_abc.def");
        assert_eq!(untag(&t, index_of), Some((1, "dot_abc.def")));
    }

    #[test]
    fn untagged_values_and_unknown_tags() {
        assert_eq!(untag("plain", index_of), None);
        assert_eq!(untag("as3.x", index_of), None);
        assert_eq!(untag("as1.", index_of), None);
        assert_eq!(
            untag("eyJhbGciOiJSUzI1NiJ9.e30.sig", index_of),
            None,
            "JWTs are not tagged"
        );
    }

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
