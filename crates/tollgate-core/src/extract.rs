//! RFC 6750 §2.1 bearer token extraction from the `Authorization` header.
//!
//! Decides: no bearer credentials (-> the route's challenge), exactly one well-formed token,
//! or a malformed request (two `Authorization` headers, two Bearer credentials, characters
//! outside the `b64token` grammar). Never logs or echoes the token.

/// What the request's `Authorization` headers hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization: Bearer ...` at all (another scheme such as Basic counts as none).
    Missing,
    Token(&'a str),
    /// Present but unusable; the text is a constant description for the client.
    Malformed(&'static str),
}

/// Examines every `Authorization` header value of a request.
pub fn bearer<'a>(authorization: &[&'a str]) -> Bearer<'a> {
    let mut found = None;
    for value in authorization {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let Some((scheme, rest)) = value.split_once(' ') else {
            if value.eq_ignore_ascii_case("bearer") {
                return Bearer::Malformed("the Bearer credentials are empty");
            }
            continue;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let token = rest.trim_start_matches(' ');
        if token.is_empty() {
            return Bearer::Malformed("the Bearer credentials are empty");
        }
        if !is_b64token(token) {
            return Bearer::Malformed("the Bearer credentials are not a single b64token");
        }
        if found.is_some() {
            return Bearer::Malformed("the request carries more than one bearer token");
        }
        found = Some(token);
    }
    match found {
        Some(token) => Bearer::Token(token),
        None => Bearer::Missing,
    }
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn one_bearer_token() {
        assert_eq!(
            bearer(&["Bearer abc.def.ghi"]),
            Bearer::Token("abc.def.ghi")
        );
        assert_eq!(
            bearer(&["bearer abc"]),
            Bearer::Token("abc"),
            "scheme is case-insensitive"
        );
        assert_eq!(bearer(&["BEARER  abc=="]), Bearer::Token("abc=="));
    }

    #[test]
    fn no_bearer_credentials() {
        assert_eq!(bearer(&[]), Bearer::Missing);
        assert_eq!(bearer(&["Basic dXNlcjpwYXNz"]), Bearer::Missing);
        assert_eq!(bearer(&["Negotiate"]), Bearer::Missing);
    }

    #[test]
    fn two_tokens_are_an_invalid_request() {
        assert!(matches!(
            bearer(&["Bearer a", "Bearer b"]),
            Bearer::Malformed(_)
        ));
        assert!(matches!(
            bearer(&["Bearer a", "Bearer a"]),
            Bearer::Malformed(_)
        ));
    }

    #[test]
    fn broken_credentials_are_malformed() {
        assert!(matches!(bearer(&["Bearer"]), Bearer::Malformed(_)));
        assert!(matches!(bearer(&["Bearer "]), Bearer::Malformed(_)));
        assert!(matches!(bearer(&["Bearer a b"]), Bearer::Malformed(_)));
        assert!(matches!(bearer(&["Bearer a,b"]), Bearer::Malformed(_)));
        assert!(matches!(bearer(&["Bearer ==="]), Bearer::Malformed(_)));
        assert!(matches!(bearer(&["Bearer a\"b"]), Bearer::Malformed(_)));
    }
}
