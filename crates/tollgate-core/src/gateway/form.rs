//! Reading what OAuth clients send: `application/x-www-form-urlencoded` bodies and queries.
//! Their HTTP Basic client credentials are [`crate::basic_auth`]'s.

use url::form_urlencoded;

/// Decoded `name=value` pairs, in order. `None` when the text is not a well-formed form (a
/// pair that is not valid UTF-8 after decoding, or a name that appears twice: RFC 6749 §3.1
/// and §3.2 forbid repeated parameters).
pub fn parse(text: &[u8]) -> Option<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in text.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = form_urlencoded::parse(part).next()?;
        if pairs.iter().any(|(n, _)| *n == name) {
            return None;
        }
        pairs.push((name.into_owned(), value.into_owned()));
    }
    // form_urlencoded replaces invalid UTF-8 with U+FFFD; refuse instead of guessing.
    if pairs
        .iter()
        .any(|(n, v)| n.contains('\u{fffd}') || v.contains('\u{fffd}'))
    {
        return None;
    }
    Some(pairs)
}

pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Re-encodes pairs (used when a value changes, e.g. a client id loses its tag).
pub fn encode(pairs: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (n, v) in pairs {
        out.append_pair(n, v);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn forms_decode_and_refuse_repeats() {
        let pairs =
            parse(b"grant_type=authorization_code&code=a%2Bb&redirect_uri=http%3A%2F%2Fx%2Fcb")
                .unwrap();
        assert_eq!(get(&pairs, "code"), Some("a+b"));
        assert_eq!(get(&pairs, "redirect_uri"), Some("http://x/cb"));
        assert_eq!(
            parse(b"a=1&a=2"),
            None,
            "RFC 6749 §3.1: no repeated parameters"
        );
        assert_eq!(parse(b"a=%FF"), None, "not UTF-8");
        assert_eq!(parse(b""), Some(vec![]));
        assert_eq!(parse(b"x=1&&y=2").map(|p| p.len()), Some(2));
    }

    #[test]
    fn encode_round_trips() {
        let pairs = vec![("client_id".to_owned(), "a b&c".to_owned())];
        assert_eq!(parse(encode(&pairs).as_bytes()), Some(pairs));
    }
}
