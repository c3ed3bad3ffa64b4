//! Issuer selection for a token (`token::is_jws`, `issuer::by_rule`, `issuer::tagged`) under
//! two example configurations: opaque-token prefix/regex rules, and gateway tagging. Checks:
//! never panics; a chosen issuer exists and can introspect; a tagged token is the input minus
//! its `<issuer>.` tag.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate_core::config::FilterConfig;
use tollgate_core::{issuer, token};

const CONFIGS: [&[u8]; 2] = [
    include_bytes!("../../plugin-config/examples/valid/mixed-jwt-opaque-discovery.json"),
    include_bytes!("../../plugin-config/examples/valid/gateway-two-issuers-tagging.json"),
];

fn configs() -> &'static [FilterConfig] {
    static CFGS: OnceLock<Vec<FilterConfig>> = OnceLock::new();
    CFGS.get_or_init(|| {
        CONFIGS
            .iter()
            .filter_map(|text| FilterConfig::parse(text).ok())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(configs().len(), CONFIGS.len());
    let jws = token::is_jws(token);
    for cfg in configs() {
        if let Some(idx) = issuer::by_rule(cfg, token) {
            assert!(cfg.issuers[idx].introspection.is_some());
        }
        if let Some((idx, untagged)) = issuer::tagged(cfg, token) {
            assert!(!jws);
            assert_eq!(token, format!("{}.{untagged}", cfg.issuers[idx].name));
        }
    }
});
