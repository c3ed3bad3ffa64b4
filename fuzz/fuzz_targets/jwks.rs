//! JWKS parsing (`jwks::KeySet::parse`): arbitrary documents, seeded with the fixture keys and
//! variants (weak RSA, wrong curves, `oct`, encryption keys). Checks: never panics; a parsed set
//! is non-empty and its keys can be looked up by every algorithm and by `kid`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::jwks::KeySet;
use tollgate_core::key::Alg;

fuzz_target!(|data: &[u8]| {
    if let Ok((set, _skipped)) = KeySet::parse(data) {
        assert!(!set.is_empty());
        let mut found = 0;
        for alg in Alg::ALL {
            for key in set.candidates(None, alg) {
                assert_eq!(key.material.family(), alg.family());
                if let Some(kid) = &key.kid {
                    assert!(set.has_kid(kid));
                }
                found += 1;
            }
        }
        assert!(found >= set.len());
    }
});
