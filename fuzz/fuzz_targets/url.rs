//! URL parsing (`http::parse_url`), the one way Tollgate turns configuration or an authorization
//! server's answer into a URL. Checks: never panics (`url` with the ASCII-only IDNA adapter has
//! `debug_assert`s a percent-encoded, non-ASCII or odd `xn--` host can reach; targets build with
//! debug assertions on); an accepted URL is http(s) with an ASCII host, and its serialization is
//! accepted again as the same URL (the fetch state stores `jwks_uri` and the introspection
//! endpoint as text and parses them again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::http::parse_url;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = parse_url(text) {
        assert!(matches!(url.scheme(), "http" | "https"));
        let host = url.host_str().unwrap_or_default();
        assert!(!host.is_empty() && host.is_ascii(), "host {host:?}");
        assert_eq!(parse_url(url.as_str()).as_ref(), Ok(&url), "{url}");
    }
});
