//! Stateless routing tags ("authorization server proxy" mode): client ids and opaque tokens
//! handed out through the gateway carry the issuing server's name, `<issuer>.<value>`, so later
//! calls can be routed (and opaque tokens introspected) without any per-client state.
//! Issuer names cannot contain '.', so the first '.' always ends the tag.

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
}
