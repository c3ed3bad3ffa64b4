//! OAuth gateway request parsing (`gateway::form`): `application/x-www-form-urlencoded` bodies
//! (`form::parse`) and RFC 6749 §2.3.1 client credentials from `Authorization: Basic`
//! (`form::basic_credentials`). The input is a form body, then a NUL byte, then a header value.
//! Checks: never panics; parsed forms have no repeated name and survive `encode` -> `parse`
//! unchanged; every parsed pair survives `basic_header` -> `basic_credentials` as (id, secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
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
            let basic = form::basic_header(id, secret);
            let back = form::basic_credentials(&basic);
            assert_eq!(back, Some((id.clone(), secret.clone())));
        }
    }
    if let Ok(header) = std::str::from_utf8(header) {
        if let Some((id, secret)) = form::basic_credentials(header) {
            assert!(!id.contains('\u{fffd}') && !secret.contains('\u{fffd}'));
        }
    }
});
