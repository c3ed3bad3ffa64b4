//! Host-free HTTP values: the core says "send this request" and is handed the response; the
//! host adapter (`proxy`) does the sending. Also the one way the core turns text into a [`Url`]
//! ([`parse_url`]).

use url::Url;

/// Why [`parse_url`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// A URL, but not `http:` or `https:`.
    NotHttp,
    /// The host is not ASCII letters, digits, `-`, `_` and `.` (with `xn--` labels that decode
    /// to letters, digits and `-`), an IPv4 address or a bracketed IPv6 address: a percent
    /// sign, a non-ASCII character, an `xn--` label for a control or format character, ...
    Host,
    /// `url` refused it (no scheme, empty host, bad port, bad IPv6 address, ...).
    Parse(url::ParseError),
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlError::NotHttp => f.write_str("not an http:// or https:// URL"),
            UrlError::Host => f.write_str(
                "its host must be ASCII letters, digits, '-', '_' and '.' (a Unicode name in its \
                 xn-- form, each xn-- label standing for lowercase letters, digits and '-'; \
                 nothing percent-encoded), an IPv4 address or a bracketed IPv6 address",
            ),
            UrlError::Parse(e) => write!(f, "{e}"),
        }
    }
}

/// Parses an `http://` or `https://` URL from configuration or from an authorization server's
/// answer: the only place the core calls `Url::parse`.
///
/// The host is checked before `url` sees the text: ASCII letters, digits, `-`, `_` and `.`
/// (names and IPv4 addresses, in any of the forms `url` reads), or `[`, hex digits, `:`, `.`,
/// `]` (IPv6). Anything else is refused, notably `%` and non-ASCII characters: `url`'s IDNA
/// backend is the ASCII-only adapter (Cargo.toml), and a percent-encoded or non-ASCII host with
/// an uppercase letter reaches a `debug_assert` in it (`https://login.exampleDD%DD.com` panics
/// in a debug build). Such a host is not one Tollgate could use anyway: a Unicode name must be
/// written in its `xn--` form.
///
/// The adapter cannot validate what an `xn--` label stands for either (the Unicode tables are
/// what it leaves out), and `idna` asserts on some of it (`xn--jsgxmbc6foz5swvnya`, a label
/// holding U+200F RIGHT-TO-LEFT MARK, panics in a debug build). So each `xn--` label is decoded
/// here (Punycode, RFC 3492) and must stand for letters, digits (Unicode Alphabetic, Numeric)
/// and `-`, none uppercase: no control, format, bidi, combining-only or replacement character.
/// (A label with combining marks that are not Alphabetic, such as a Devanagari virama, is
/// refused too.)
///
/// The check reads the text as `url` does for `http`/`https` (WHATWG URL): leading and trailing
/// C0 controls and spaces are ignored, tabs and newlines anywhere are dropped, any run of `/`
/// and `\` follows the scheme, the authority ends at `/`, `\`, `?` or `#`, user information
/// ends at its last `@`, and the host at the first `:` outside brackets.
pub fn parse_url(text: &str) -> Result<Url, UrlError> {
    let text: String = text
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some((scheme, rest)) = text.split_once(':') else {
        // No scheme: `url` refuses it without parsing a host.
        return Url::parse(&text).map_err(UrlError::Parse);
    };
    let mut scheme_chars = scheme.chars();
    let is_scheme = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        // Not a scheme: `url` refuses the text as a relative URL without a base.
        return Url::parse(&text).map_err(UrlError::Parse);
    }
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(UrlError::NotHttp);
    }
    let rest = rest.trim_start_matches(['/', '\\']);
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host_port)| host_port);
    let host_ok = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(addr, port)| {
            addr.chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
                && (port.is_empty() || port.starts_with(':'))
        }),
        None => {
            let host = host_port.split(':').next().unwrap_or_default();
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && host.split('.').all(punycode_label_ok)
        }
    };
    if !host_ok {
        return Err(UrlError::Host);
    }
    Url::parse(&text).map_err(UrlError::Parse)
}

/// Whether an ASCII host label is usable: not `xn--` (any case), or `xn--` with Punycode that
/// decodes (letters in any case, as `url` reads them) to lowercase letters, digits and `-` only.
fn punycode_label_ok(label: &str) -> bool {
    let Some(prefix) = label.get(..4) else {
        return true;
    };
    if !prefix.eq_ignore_ascii_case("xn--") {
        return true;
    }
    let puny = label.get(4..).unwrap_or_default().to_ascii_lowercase();
    punycode_all(&puny, |c| {
        (c.is_alphanumeric() && !c.is_uppercase()) || c == '-'
    })
}

/// Whether `text` is Punycode (RFC 3492 §6.2, lowercase, without `xn--`) and every code point it
/// stands for passes `ok`. Only the code points are needed, not their order, so nothing is
/// built. Decodes as the `idna` crate does (its own decoder is generic and ~6 KB of .wasm), and
/// fails where it fails (a delimiter only at the start, a bad digit, a cut-off number, overflow,
/// no such code point) and also on an encoded ASCII code point (never valid Punycode).
fn punycode_all(text: &str, ok: impl Fn(char) -> bool) -> bool {
    const BASE: u32 = 36;
    const T_MIN: u32 = 1;
    const T_MAX: u32 = 26;
    let (basic, extended) = match text.rfind('-') {
        Some(0) | None => ("", text),
        Some(at) => (&text[..at], &text[at + 1..]),
    };
    if !basic.chars().all(|c| c.is_ascii() && ok(c)) {
        return false;
    }
    let mut length = basic.len() as u32;
    let (mut code_point, mut bias, mut i) = (0x80u32, 72u32, 0u32);
    let mut digits = extended.bytes().peekable();
    while digits.peek().is_some() {
        let previous_i = i;
        let mut weight = 1u32;
        let mut k = BASE;
        loop {
            let digit = match digits.next() {
                Some(b @ b'a'..=b'z') => u32::from(b - b'a'),
                Some(b @ b'0'..=b'9') => u32::from(b - b'0') + 26,
                _ => return false,
            };
            let Some(next) = digit.checked_mul(weight).and_then(|p| i.checked_add(p)) else {
                return false;
            };
            i = next;
            let t = k.saturating_sub(bias).clamp(T_MIN, T_MAX);
            if digit < t {
                break;
            }
            let Some(w) = weight.checked_mul(BASE - t) else {
                return false;
            };
            weight = w;
            k = k.saturating_add(BASE);
        }
        length = length.saturating_add(1);
        bias = punycode_adapt(i - previous_i, length, previous_i == 0);
        let Some(cp) = code_point.checked_add(i / length) else {
            return false;
        };
        code_point = cp;
        i = i % length + 1;
        match char::from_u32(code_point) {
            Some(c) if !c.is_ascii() && ok(c) => {}
            _ => return false,
        }
    }
    true
}

/// RFC 3492 §6.1.
fn punycode_adapt(delta: u32, points: u32, first: bool) -> u32 {
    let mut delta = if first { delta / 700 } else { delta / 2 };
    delta = delta.saturating_add(delta / points.max(1));
    let mut k = 0u32;
    while delta > (36 - 1) * 26 / 2 {
        delta /= 36 - 1;
        k += 36;
    }
    k + (36 - 1 + 1) * delta / (delta + 38)
}

/// An outbound call the core wants made (JWKS, discovery, later introspection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The host's name for the upstream to send it through, exactly as configured: an Envoy
    /// cluster name; `host:port` on Kong and APISIX. Never derived from the URL.
    pub upstream: String,
    pub method: &'static str,
    /// `:scheme`, from the URL. Envoy takes TLS from the cluster; Kong and APISIX open TLS to
    /// `host:port` only when it says `https`.
    pub scheme: &'static str,
    /// `:authority`: host and, when not the scheme default, port, from the URL (whatever
    /// `upstream` says).
    pub authority: String,
    /// `:path`: path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl HttpRequest {
    /// A `GET` for `url` through `upstream`.
    pub fn get(upstream: &str, url: &Url, timeout_ms: u64) -> HttpRequest {
        HttpRequest {
            upstream: upstream.to_owned(),
            method: "GET",
            scheme: scheme(url),
            authority: authority(url),
            path: path_and_query(url),
            headers: vec![("accept".to_owned(), "application/json".to_owned())],
            body: None,
            timeout_ms,
        }
    }
}

/// `https` for an `https` URL, else `http` (configuration only admits those two).
pub fn scheme(url: &Url) -> &'static str {
    if url.scheme() == "https" {
        "https"
    } else {
        "http"
    }
}

/// Largest answer body Tollgate reads from a callout (JWKS, metadata, introspection). A bigger
/// one is not copied into the VM: it is read as an empty body, so the fetch or introspection
/// fails as a bad answer (held keys stay in use; a request that needs the answer gets 503).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What came back from an outbound call. `status` 0 is never used: a call that got no HTTP
/// answer (reset, timeout, no upstream host) is reported as `None` by the adapter instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

pub fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The input that made `url` panic in a debug build (idna_adapter 1.0's `debug_assert`, an
    /// uppercase letter next to a non-ASCII byte), found by `scripts/fuzz config`; and variants.
    #[test]
    fn percent_encoded_and_non_ascii_hosts_are_refused_before_url_sees_them() {
        let refused = [
            "https://login.exampleDD%DD.com",
            "https://login.exampleDD%DD.com/jwks",
            "https://LOGIN.EXAMPLE%DD.COM",
            "https://login.example%DD.com",
            "https://login.example%41.com",
            "https://%4C%4F%47%49%4E.example.com",
            "https://login.exampleD%C3%A9.com",
            "HTTPS://LOGIN.EXAMPLED%dd.com:443/x",
            "https://user:pw@login.exampleDD%DD.com/",
            "https://login.exampleD\tD%DD.com",
            "https:login.exampleDD%DD.com",
            "https:\\\\login.exampleDD%DD.com",
            "  https://login.exampleDD%DD.com  ",
            "https://login.exampleDé.com",
            "https://bücher.example/jwks",
            "https://BÜCHER.example",
            "https://例え.テスト/",
            "https://login.example.com\u{3002}com",
            "https://exa mple.com",
            "https://example.com[::1]",
            "https://[::1%25eth0]/",
            "https://[::1]x/",
            // xn-- labels the ASCII-only adapter cannot validate: U+200F RIGHT-TO-LEFT MARK
            // (found by a debug-build stress run; idna's debug_assert_ne in is_bidi), "a" and
            // U+200F, "a" and U+200B ZERO WIDTH SPACE, U+FFFD, an uppercase letter (Ü, "aÜ"),
            // a Devanagari word with a virama (a combining mark, not Alphabetic: refused too);
            // and Punycode that does not decode.
            "https://a.xn--jSgxMbC6FoZ5SwVNya/",
            "https://XN--JSGXMBC6FOZ5SWVNYA/",
            "https://xn--a-ygn.example/",
            "https://xn--a-qgn.example/",
            "https://xn--zn7c.example/",
            "https://xn--wca.example/",
            "https://as.xn--a-kfa/",
            "https://xn--h2bhs4b8d8a.example/",
            "https://xn--99999999999999999.example/",
        ];
        for text in refused {
            assert_eq!(parse_url(text), Err(UrlError::Host), "{text:?}");
        }
    }

    /// RFC 3492 §7.1 samples (lowercased): the decoder finds exactly their code points (in some
    /// order), and refuses what is not Punycode.
    #[test]
    fn punycode_decoding_matches_rfc_3492_samples() {
        let samples = [
            ("egbpdaj6bu4bxfgehfvwxn", "ليهمابتكلموشعربي؟"),
            ("ihqwcrb4cv8a8dqg056pqjye", "他们为什么不说中文"),
            ("4dbcagdahymbxekheh6e0a7fei0b", "למההםפשוטלאמדבריםעברית"),
            (
                "b1abfaaepdrnnbgefbadotcwatmq2g4l",
                "почемужеонинеговорятпорусски",
            ),
            ("3b-ww4c5e180e575a65lsy2b", "3年b組金八先生"),
            ("bcher-kva", "bücher"),
        ];
        for (puny, text) in samples {
            let seen = std::cell::RefCell::new(Vec::new());
            assert!(punycode_all(puny, |c| {
                seen.borrow_mut().push(c);
                true
            }));
            let mut seen = seen.into_inner();
            let mut want: Vec<char> = text.chars().collect();
            seen.sort_unstable();
            want.sort_unstable();
            assert_eq!(seen, want, "{puny}");
        }
        for bad in ["-abc", "99999999999999999", "ab!", "a-B", "bcher-kv"] {
            assert!(!punycode_all(bad, |_| true), "{bad}");
        }
        assert!(!punycode_all("bcher-kva", |c| c != 'ü'));
        assert!(punycode_all("", |_| false));
    }

    #[test]
    fn names_ipv4_ipv6_and_ports_are_accepted() {
        let accepted = [
            ("https://login.example.com", "login.example.com", None),
            ("https://Login.Example.COM/jwks", "login.example.com", None),
            (
                "http://as1.example:8080/o/token/",
                "as1.example",
                Some(8080),
            ),
            (
                "https://xn--bcher-kva.example/jwks",
                "xn--bcher-kva.example",
                None,
            ),
            (
                "https://XN--BCHER-KVA.example/",
                "xn--bcher-kva.example",
                None,
            ),
            (
                "https://xn--Bcher-kva.example/",
                "xn--bcher-kva.example",
                None,
            ),
            (
                "https://xn--wgv71a.xn--hxargifdar/",
                "xn--wgv71a.xn--hxargifdar",
                None,
            ),
            ("http://my_service:9000/", "my_service", Some(9000)),
            ("http://127.0.0.1:9200/jwks", "127.0.0.1", Some(9200)),
            ("http://[::1]:8443/", "[::1]", Some(8443)),
            ("https://[2001:DB8::1]/", "[2001:db8::1]", None),
            ("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]", None),
            (
                "https://user:p%41ss@as.example.com/",
                "as.example.com",
                None,
            ),
            (
                "https://as.example.com/p%DDth?q=%DD#%DD",
                "as.example.com",
                None,
            ),
            ("https://as.example.com/bücher", "as.example.com", None),
            (" https://as.example.com:443/x ", "as.example.com", None),
        ];
        for (text, host, port) in accepted {
            let url = parse_url(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(url.host_str(), Some(host), "{text:?}");
            assert_eq!(url.port(), port, "{text:?}");
        }
    }

    #[test]
    fn other_schemes_and_non_urls_are_refused_as_before() {
        assert_eq!(parse_url("ftp://as.example.com/"), Err(UrlError::NotHttp));
        assert_eq!(parse_url("wss://exampleDD%DD.com/"), Err(UrlError::NotHttp));
        assert_eq!(parse_url("mailto:a@example.com"), Err(UrlError::NotHttp));
        assert_eq!(
            parse_url("as.example.com/jwks"),
            Err(UrlError::Parse(url::ParseError::RelativeUrlWithoutBase))
        );
        assert_eq!(
            parse_url("https://"),
            Err(UrlError::Parse(url::ParseError::EmptyHost))
        );
        assert_eq!(
            parse_url("https://as.example.com:99999/"),
            Err(UrlError::Parse(url::ParseError::InvalidPort))
        );
        assert_eq!(
            parse_url("https://xn--ab-.example/"),
            Err(UrlError::Parse(url::ParseError::IdnaError))
        );
        assert_eq!(
            parse_url("https://[::1::2]/"),
            Err(UrlError::Parse(url::ParseError::InvalidIpv6Address))
        );
        assert!(UrlError::Host.to_string().contains("xn--"));
    }
}
