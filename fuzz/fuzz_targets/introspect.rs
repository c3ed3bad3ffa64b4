//! RFC 7662 introspection answers (`introspect::read`). Byte 0 picks the HTTP status (mostly
//! 200), byte 1 the expectations (audience list, `token_type` required); the rest is the body.
//! Checks: never panics; 401/403/5xx and non-object bodies are never active; an active answer
//! never carries `active`, and its `iss`, when present, is the issuer's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_core::http::HttpResponse;
use tollgate_core::introspect::{read, Answer, Expect};

const ISS: &str = "https://as1.example.com";

fuzz_target!(|data: &[u8]| {
    let [code, flags, body @ ..] = data else {
        return;
    };
    let status = match code % 8 {
        0..=4 => 200,
        5 => 401,
        6 => 403,
        _ => 500 + u16::from(*code),
    };
    let audiences = if flags & 1 == 1 {
        vec!["api://orders".to_owned()]
    } else {
        Vec::new()
    };
    let expect = Expect {
        issuer: ISS,
        audiences: &audiences,
        clock_skew_s: 30,
        now_s: 1_700_000_000,
        require_token_type: flags & 2 == 2,
    };
    let response = HttpResponse {
        status,
        headers: Vec::new(),
        body: body.to_vec(),
    };
    if let Ok(Answer::Active { claims, .. }) = read(Some(&response), &expect) {
        assert_eq!(status, 200);
        assert!(!claims.contains_key("active"));
        if let Some(iss) = claims.get("iss") {
            assert_eq!(iss, &Value::from(ISS));
        }
    }
});
