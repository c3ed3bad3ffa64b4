//! Reading what OAuth clients send: `application/x-www-form-urlencoded` bodies and queries,
//! and HTTP Basic client credentials (RFC 6749 §2.3.1: id and secret are form-urlencoded
//! before base64).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
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

/// The client id and secret of an `Authorization: Basic` header, decoded per RFC 6749 §2.3.1.
pub fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| -> Option<String> {
        let v: String = form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
        (!v.contains('\u{fffd}')).then_some(v)
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// An `Authorization: Basic` value for id and secret, encoded per RFC 6749 §2.3.1.
pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
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

    #[test]
    fn basic_credentials_are_form_decoded() {
        let h = basic_header("rs:client@2", "s3cr3t+/=%&");
        assert_eq!(
            basic_credentials(&h),
            Some(("rs:client@2".to_owned(), "s3cr3t+/=%&".to_owned()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(
            basic_credentials(&format!("basic {}", STANDARD.encode("id:pw"))),
            Some(("id".to_owned(), "pw".to_owned()))
        );
    }
}
