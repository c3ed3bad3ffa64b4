//! Access token extraction from the `Authorization` header: RFC 6750 §2.1 `Bearer` and RFC
//! 9449 §7.1 `DPoP` credentials, and the request's one `DPoP` proof header.
//!
//! Decides: no token credentials (-> the route's challenge), exactly one well-formed token
//! under one of the two schemes, or a malformed request (two `Authorization` headers with
//! token credentials, in any mix of schemes; characters outside the `b64token` grammar; more
//! than one `DPoP` proof). Never logs or echoes the token.

use crate::binding::Scheme;

/// What the request's `Authorization` headers hold, `Bearer` only ([`credentials`] with the
/// `DPoP` scheme counted as none, as for a route that does not take DPoP).
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization: Bearer ...` at all (another scheme such as Basic counts as none).
    Missing,
    Token(&'a str),
    /// Present but unusable; the text is a constant description for the client.
    Malformed(&'static str),
}

/// Examines every `Authorization` header value of a request for `Bearer` credentials.
pub fn bearer<'a>(authorization: &[&'a str]) -> Bearer<'a> {
    bearer_known(authorization, |_| false)
}

/// [`bearer`], where a token `known` says was seen well-formed before skips the `b64token`
/// check ([`credentials_known`]).
pub fn bearer_known<'a>(
    authorization: &[&'a str],
    known: impl FnMut(&'a str) -> bool,
) -> Bearer<'a> {
    match credentials_known(authorization, known) {
        Credentials::Token {
            scheme: Scheme::Bearer,
            token,
        } => Bearer::Token(token),
        Credentials::Token { .. } | Credentials::Missing => Bearer::Missing,
        Credentials::Malformed(why) => Bearer::Malformed(why),
    }
}

/// What the request's `Authorization` headers hold, under either token scheme.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No `Bearer` or `DPoP` credentials (Basic and others count as none).
    Missing,
    Token {
        scheme: Scheme,
        token: &'a str,
    },
    /// Present but unusable; the text is a constant description for the client.
    Malformed(&'static str),
}

/// Examines every `Authorization` header value of a request.
pub fn credentials<'a>(authorization: &[&'a str]) -> Credentials<'a> {
    credentials_known(authorization, |_| false)
}

/// [`credentials`], where a token for which `known` says yes is taken as well-formed without
/// the `b64token` check: the caller's memo of tokens that passed it before (the check walks
/// the whole token, on every warm request otherwise). `known` is asked at most once per
/// header value with token credentials, in order, only for a non-empty token.
pub fn credentials_known<'a>(
    authorization: &[&'a str],
    mut known: impl FnMut(&'a str) -> bool,
) -> Credentials<'a> {
    let mut found = None;
    for value in authorization {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let (scheme_text, rest) = value.split_once(' ').unwrap_or((value, ""));
        let scheme = if scheme_text.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else if scheme_text.eq_ignore_ascii_case("dpop") {
            Scheme::Dpop
        } else {
            continue;
        };
        let token = rest.trim_start_matches(' ');
        if token.is_empty() {
            return Credentials::Malformed("the token credentials are empty");
        }
        if !known(token) && !is_b64token(token) {
            return Credentials::Malformed("the token credentials are not a single b64token");
        }
        if found.is_some() {
            return Credentials::Malformed("the request carries more than one access token");
        }
        found = Some((scheme, token));
    }
    match found {
        Some((scheme, token)) => Credentials::Token { scheme, token },
        None => Credentials::Missing,
    }
}

/// The request's DPoP proof (RFC 9449 §4.3: exactly one `DPoP` header, holding one compact
/// JWS): `None` when there is none; an error text for two headers or a value that is not one
/// JWS (a list folded into one header has commas, which no JWS has).
pub fn dpop_proof<'a>(values: &[&'a str]) -> Result<Option<&'a str>, &'static str> {
    match values {
        [] => Ok(None),
        [one] => {
            let proof = one.trim_matches(|c| c == ' ' || c == '\t');
            let parts = proof.split('.').count();
            let jws_chars = proof
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if parts == 3 && jws_chars {
                Ok(Some(proof))
            } else {
                Err("the DPoP header is not one compact JWS")
            }
        }
        _ => Err("the request carries more than one DPoP header"),
    }
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=').as_bytes();
    let mut words = body.chunks_exact(8);
    !body.is_empty()
        && words
            .by_ref()
            .all(|w| <[u8; 8]>::try_from(w).is_ok_and(|w| b64token_word(u64::from_le_bytes(w))))
        && words.remainder().iter().all(|&b| B64TOKEN[usize::from(b)])
}

/// Whether all eight bytes of `w` are b64token characters, checked at once (SWAR): a token is
/// checked on every request, and byte by byte that is most of a warm request's own work.
///
/// With no byte at or above 0x80, adding `0x80 - lo` to every byte sets its high bit exactly
/// when the byte is at least `lo`, and adding `0x7f - hi` when it is above `hi`; no sum
/// carries into the next byte. The characters are the ranges `+`, `-` to `9` (`-./` and the
/// digits), `A-Z`, `_`, `a-z` and `~`.
fn b64token_word(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if w & HIGH != 0 {
        return false;
    }
    let within = |lo: u64, hi: u64| (w + (0x80 - lo) * ONES) & !(w + (0x7f - hi) * ONES) & HIGH;
    let allowed = within(0x2b, 0x2b)
        | within(0x2d, 0x39)
        | within(0x41, 0x5a)
        | within(0x5f, 0x5f)
        | within(0x61, 0x7a)
        | within(0x7e, 0x7e);
    allowed == HIGH
}

/// RFC 6750's b64token characters (ALPHA, DIGIT, `-._~+/`), by byte: one lookup per byte of
/// a token that can be a few kilobytes, checked on every request.
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_memo_is_asked_once_per_token_value_in_order_and_a_token_it_does_not_know_is_checked() {
        let mut asked = Vec::new();
        let got = credentials_known(&["Basic eA==", "Bearer a.b.c", "Negotiate abc"], |t| {
            asked.push(t);
            false
        });
        assert_eq!(
            got,
            Credentials::Token {
                scheme: Scheme::Bearer,
                token: "a.b.c"
            }
        );
        // Not for another scheme, nor for empty credentials (those are refused first).
        assert_eq!(asked, ["a.b.c"]);
        let malformed = credentials_known(&["Bearer a,b"], |_| false);
        assert_eq!(
            malformed,
            Credentials::Malformed("the token credentials are not a single b64token")
        );
        // Two tokens stay two tokens, known or not.
        let two = credentials_known(&["Bearer a", "DPoP b"], |_| true);
        assert_eq!(
            two,
            Credentials::Malformed("the request carries more than one access token")
        );
    }

    #[test]
    fn a_token_the_memo_knows_skips_the_b64token_check_and_nothing_else() {
        // The memo only ever holds tokens that passed the check, so its yes stands for it.
        let mut asked = 0;
        let mut known = |_: &str| {
            asked += 1;
            true
        };
        assert_eq!(
            bearer_known(&["Bearer a.b.c"], &mut known),
            Bearer::Token("a.b.c")
        );
        assert_eq!(
            bearer_known(&["Bearer "], &mut known),
            Bearer::Malformed("the token credentials are empty")
        );
        assert_eq!(asked, 1);
    }

    #[test]
    fn every_byte_in_every_position_of_a_word_is_judged_as_the_table_does() {
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut word = *b"AbZz09-_";
                word[at] = b;
                let want = B64TOKEN[usize::from(b)];
                assert_eq!(
                    b64token_word(u64::from_le_bytes(word)),
                    want,
                    "{b:#x} at {at}"
                );
                // And through is_b64token, in a whole word and in the remainder after it.
                let text = [&word[..], b"~+/."].concat();
                if let Ok(text) = std::str::from_utf8(&text) {
                    assert_eq!(is_b64token(text), want, "{text:?}");
                }
                let text = [&b"~+/.AbZz"[..], &word[..at + 1]].concat();
                if let Ok(text) = std::str::from_utf8(&text) {
                    let padded = b == b'='; // trailing padding is trimmed
                    assert_eq!(is_b64token(text), want || padded, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_table_is_rfc_6750s_b64token() {
        let allowed: Vec<u8> = (0..=255u8).filter(|&b| B64TOKEN[usize::from(b)]).collect();
        let mut want: Vec<u8> = (b'0'..=b'9')
            .chain(b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .collect();
        want.extend_from_slice(b"-._~+/");
        want.sort_unstable();
        assert_eq!(allowed, want);
    }

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
    fn dpop_credentials_are_tokens_of_their_own_scheme() {
        assert_eq!(
            credentials(&["DPoP abc.def.ghi"]),
            Credentials::Token {
                scheme: Scheme::Dpop,
                token: "abc.def.ghi"
            }
        );
        assert_eq!(
            credentials(&["dpop abc"]),
            Credentials::Token {
                scheme: Scheme::Dpop,
                token: "abc"
            }
        );
        // A route that takes only Bearer sees none.
        assert_eq!(bearer(&["DPoP abc"]), Bearer::Missing);
        // One token per request, whatever the schemes.
        assert!(matches!(
            credentials(&["Bearer a", "DPoP a"]),
            Credentials::Malformed(_)
        ));
        assert!(matches!(
            bearer(&["DPoP a", "Bearer b"]),
            Bearer::Malformed(_)
        ));
        assert!(matches!(credentials(&["DPoP"]), Credentials::Malformed(_)));
    }

    #[test]
    fn one_dpop_header_with_one_jws() {
        assert_eq!(dpop_proof(&[]), Ok(None));
        assert_eq!(dpop_proof(&[" e30.e30.c2ln "]), Ok(Some("e30.e30.c2ln")));
        assert!(dpop_proof(&["e30.e30.c2ln", "e30.e30.c2ln"]).is_err());
        assert!(
            dpop_proof(&["e30.e30.c2ln, e30.e30.c2ln"]).is_err(),
            "folded list"
        );
        assert!(dpop_proof(&["e30.e30"]).is_err());
        assert!(dpop_proof(&["e30.e30.c2ln.x"]).is_err());
        assert!(dpop_proof(&["e30.e30.c2l="]).is_err());
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
