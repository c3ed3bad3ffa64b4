//! Plugin configuration parsing and validation (`config::FilterConfig::parse`), seeded with
//! every example in `plugin-config/examples/` (valid and invalid). Checks: never panics; errors
//! render; an accepted configuration has issuers, each findable by its own `iss`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::config::FilterConfig;

fuzz_target!(|data: &[u8]| {
    match FilterConfig::parse(data) {
        Ok(cfg) => {
            assert!(!cfg.issuers.is_empty());
            for issuer in &cfg.issuers {
                assert!(cfg.issuer_by_iss(&issuer.issuer).is_some());
            }
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
