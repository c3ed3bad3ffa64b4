//! Requests that wait for another worker's verification of the same JWT (its claim on the
//! token's cache slot), and decide themselves when the claim goes without an entry.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::cache::{self, Cached, TokenCache, Verified, CLAIM_MS};
use crate::flow::{Metric, SharedTokenCache};

/// `as2`'s issuer index (inline keys: nothing to fetch).
const AS2: usize = 1;

/// Another worker's claim on `token`'s slot, as it takes it when it starts verifying.
fn claim_elsewhere(vm: &Vm, token: &str, now: u64) -> SharedTokenCache<TestHost> {
    let cfg = &vm.flow.cfg;
    let mut peer = SharedTokenCache::new(vm.host.peer(), cfg.cache_slots);
    let key = cache::key_for(&cfg.fingerprint, token);
    assert_eq!(peer.get(&key, now), None);
    assert_eq!(peer.claim(&key, now), cache::Claim::Verify);
    peer
}

#[test]
fn a_peers_verification_claim_lapses_and_the_waiter_verifies() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_B, TestKey::RsaB);
    // Another worker started verifying this token, and dies before it finishes.
    let _dead = claim_elsewhere(&vm, &token, T0);
    assert_eq!(vm.request(10, "/api", Some(&token), T0), Flow::Pause);
    assert_eq!(vm.host.count(Metric::VerifyCoalesced { issuer: AS2 }), 1);
    vm.tick(T0 + CLAIM_MS - 1);
    assert_eq!(vm.outcome(10), Outcome::Waiting, "the claim is live");
    // The claim lapses: the waiting request verifies the token itself.
    vm.tick(T0 + CLAIM_MS);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(
        vm.host.count(Metric::Allowed {
            issuer: AS2,
            cache_hit: false
        }),
        1
    );
}

#[test]
fn a_peers_entry_replaces_its_claim_and_the_waiter_uses_it() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_B, TestKey::RsaB);
    let mut peer = claim_elsewhere(&vm, &token, T0);
    assert_eq!(vm.request(10, "/api", Some(&token), T0), Flow::Pause);
    // The peer finishes: its entry replaces the claim.
    let entry = Cached::Valid(Verified {
        issuer: AS2,
        exp_ms: T0 + 3_600_000,
        claims: Default::default(),
        key: None,
        rendered: Default::default(),
    });
    let key = cache::key_for(&vm.flow.cfg.fingerprint, &token);
    peer.put(&key, &entry, T0 + 1);
    vm.tick(T0 + 2);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(
        vm.host.count(Metric::Allowed {
            issuer: AS2,
            cache_hit: true
        }),
        1,
        "decided from the peer's entry"
    );
}

#[test]
fn with_per_request_callouts_nothing_waits_for_a_peer() {
    let cfg = config(json!({"callouts": "per_request"}));
    let mut vm = Vm::new(cfg, CalloutMode::PerRequest);
    let token = jwt(ISS_B, TestKey::RsaB);
    let _claim = claim_elsewhere(&vm, &token, T0);
    assert_eq!(vm.request(10, "/api", Some(&token), T0), Flow::Continue);
    assert_eq!(vm.host.count(Metric::VerifyCoalesced { issuer: AS2 }), 0);
}
