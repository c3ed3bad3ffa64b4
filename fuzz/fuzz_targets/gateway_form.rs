//! OAuth gateway request parsing (`gateway::form`): `application/x-www-form-urlencoded` bodies
//! (`form::parse`) and RFC 6749 §2.3.1 client credentials from `Authorization: Basic`
//! (`basic_auth::decode`). The input is a form body, then a NUL byte, then a header value.
//! Checks: never panics; parsed forms have no repeated name and survive `encode` -> `parse`
//! unchanged; every parsed pair survives `basic_auth::encode` -> `basic_auth::decode` as
//! (id, secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::basic_auth;
use tollgate_core::gateway::form;

fuzz_target!(|data: &[u8]| {
    let (body, header) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Some(pairs) = form::parse(body) {
        for (i, (name, _)) in pairs.iter().enumerate() {
            assert!(pairs[..i].iter().all(|(n, _)| n != name), "repeated name");
        }
        let encoded = form::encode(&pairs);
        assert_eq!(form::parse(encoded.as_bytes()).as_ref(), Some(&pairs));
        for (id, secret) in &pairs {
            let basic = basic_auth::encode(id, secret);
            let back = basic_auth::decode(&basic);
            assert_eq!(back, Some((id.clone(), secret.clone())));
        }
    }
    if let Ok(header) = std::str::from_utf8(header) {
        if let Some((id, secret)) = basic_auth::decode(header) {
            assert!(!id.contains('\u{fffd}') && !secret.contains('\u{fffd}'));
        }
    }
});
