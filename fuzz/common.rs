//! Shared by the JWT targets: the fixture keys as a public-only key set, and the fixed clock.
//!
//! The key set holds only the public halves of `crates/tollgate-core/src/testdata/*.jwk.json` (the private members
//! are dropped before parsing), so the fuzzer cannot sign anything: every token it makes up that
//! verifies would be a forgery. Only tokens minted by `fuzz/seed` (listed in
//! `fuzz/seeds/minted.txt`) or by the `jwt_signed` target itself may verify.
#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::Value;
use tollgate_core::jwks::KeySet;
use tollgate_core::jwt::Expectations;
use tollgate_core::key::{Alg, AlgSet};

/// The fixed "now" of the unit tests (2023-11-14T22:13:20Z); minted tokens are valid then.
pub const NOW_S: i64 = 1_700_000_000;
pub const ISS: &str = "https://as1.example.com";
pub const SKEW_S: u64 = 60;

const FIXTURES: [&str; 6] = [
    include_str!("../crates/tollgate-core/src/testdata/rsa_a.jwk.json"),
    include_str!("../crates/tollgate-core/src/testdata/rsa_b.jwk.json"),
    include_str!("../crates/tollgate-core/src/testdata/rsa_1024.jwk.json"),
    include_str!("../crates/tollgate-core/src/testdata/p256.jwk.json"),
    include_str!("../crates/tollgate-core/src/testdata/p384.jwk.json"),
    include_str!("../crates/tollgate-core/src/testdata/ed25519.jwk.json"),
];

/// The public JWKS of every fixture key (the 1024-bit RSA key is skipped by the parser).
pub fn public_jwks() -> Value {
    let keys: Vec<Value> = FIXTURES
        .iter()
        .filter_map(|text| {
            let mut jwk: serde_json::Map<String, Value> = serde_json::from_str(text).ok()?;
            for member in ["d", "p", "q", "dp", "dq", "qi"] {
                jwk.remove(member);
            }
            Some(Value::Object(jwk))
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

pub fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| match KeySet::from_value(&public_jwks()) {
        Ok((set, _skipped)) if set.len() == 5 => set,
        _ => unreachable!("the fixture JWKS has five usable public keys"),
    })
}

pub fn all_algs() -> AlgSet {
    let mut set = AlgSet::default();
    for alg in Alg::ALL {
        set.insert(alg);
    }
    set
}

pub fn expectations<'a>(
    issuer: &'a str,
    audiences: &'a [String],
    at_jwt: bool,
) -> Expectations<'a> {
    Expectations {
        issuer,
        audiences,
        algorithms: all_algs(),
        clock_skew_s: SKEW_S,
        require_at_jwt: at_jwt,
    }
}
