//! HTTP Basic client credentials as OAuth defines them (RFC 6749 §2.3.1): the client id and
//! secret are each `application/x-www-form-urlencoded`, joined by `:`, then base64-encoded.
//! The one codec for both directions: the introspection request writes it
//! ([`crate::introspect::request`]); the gateway reads the client id a call carries and
//! rewrites it without its routing tag ([`crate::gateway::route`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use url::form_urlencoded;

/// The `Authorization` value `Basic <base64(id:secret)>`, id and secret form-urlencoded first.
pub fn encode(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

/// The client id and secret of an `Authorization: Basic` value (the scheme in any case),
/// form-decoded. `None` for another scheme, bad base64, no `:`, or text that is not UTF-8
/// once decoded.
pub fn decode(authorization: &str) -> Option<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn credentials_are_form_decoded() {
        let h = encode("rs:client@2", "s3cr3t+/=%&");
        assert_eq!(
            decode(&h),
            Some(("rs:client@2".to_owned(), "s3cr3t+/=%&".to_owned()))
        );
        assert_eq!(decode("Bearer abc"), None);
        assert_eq!(decode("Basic !!!"), None);
        assert_eq!(
            decode(&format!("basic {}", STANDARD.encode("id:pw"))),
            Some(("id".to_owned(), "pw".to_owned()))
        );
    }

    /// The exact bytes RFC 6749 §2.3.1 asks for: `:` in the id and `+ / = % &` in the secret
    /// are percent-encoded (a space as `+`) before base64.
    #[test]
    fn the_encoding_escapes_before_base64() {
        let h = encode("rs:client@2", "s3cr3t+/=%& x");
        let inner = h.strip_prefix("Basic ").unwrap();
        let plain = String::from_utf8(STANDARD.decode(inner).unwrap()).unwrap();
        assert_eq!(plain, "rs%3Aclient%402:s3cr3t%2B%2F%3D%25%26+x");
    }

    #[test]
    fn no_colon_bad_utf8_or_bad_escapes_are_refused() {
        assert_eq!(
            decode(&format!("Basic {}", STANDARD.encode("nocolon"))),
            None
        );
        assert_eq!(
            decode(&format!("Basic {}", STANDARD.encode(b"id:\xff"))),
            None
        );
        assert_eq!(
            decode(&format!("Basic {}", STANDARD.encode("id:%FF"))),
            None
        );
        assert_eq!(decode("Basic"), None);
    }
}
