//! JWT peek and verification (`jwt::peek`, `jwt::verify`) of arbitrary token text against the
//! public fixture keys (RSA-2048 x2, P-256, P-384, Ed25519), as the filter does: the token's
//! `alg` and `kid` choose the candidate keys. Checks: never panics, and nothing verifies unless
//! its signed part (`header.payload`) is one the fixture keys' owners minted (`seeds/minted.txt`):
//! the fuzzer holds no private key, so any other success is a forgery.
#![no_main]

#[path = "../common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tollgate_core::jwt::{peek, verify};

const MINTED: &str = include_str!("../seeds/minted.txt");

fn was_minted(token: &str) -> bool {
    let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
    MINTED
        .lines()
        .filter_map(|t| t.rsplit_once('.'))
        .any(|(minted, _)| minted == signed)
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(peeked) = peek(token) else {
        return;
    };
    let _ = peeked.kid();
    let Ok(alg) = peeked.alg() else {
        return;
    };
    let keys = common::keys();
    // The issuer is whatever the token claims, so the `iss` check never stops it early.
    let iss = peeked.iss().to_owned();
    let expect = common::expectations(&iss, &[], false);
    let by_kid = keys.candidates(peeked.kid(), alg);
    let by_family = keys.candidates(None, alg);
    for key in by_kid.chain(by_family) {
        if let Ok(claims) = verify(&peeked, key, &expect, common::NOW_S) {
            assert!(was_minted(token), "forged token verified: {token}");
            assert!(common::NOW_S <= claims.exp_s.saturating_add(common::SKEW_S as i64));
        }
    }
});
