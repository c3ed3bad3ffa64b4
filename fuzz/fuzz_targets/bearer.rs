//! RFC 6750 §2.1 bearer extraction (`extract::bearer`). The input is the request's
//! `Authorization` header values, one per line. Checks: never panics; an accepted token is a
//! non-empty `b64token` taken verbatim from one of the values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::extract::{bearer, Bearer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = text.split('\n').collect();
    if let Bearer::Token(token) = bearer(&values) {
        let body = token.trim_end_matches('=');
        assert!(!body.is_empty());
        assert!(body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)));
        assert!(values.iter().any(|v| v.contains(token)));
    }
});
