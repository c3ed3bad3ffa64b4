//! DPoP through the flow (issue 15): a proof the decision accepted is recorded in the replay
//! store before the request goes on, so it passes once in the process — on the worker that
//! saw it first and on every other — and a store that cannot record it refuses it.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::dpop::ath;
use crate::flow::replay;
use crate::flow::{Host, Metric};
use crate::outcome::DenialKind;
use crate::testdata::dpop_proof;

/// `as2`'s issuer index (inline keys: nothing to fetch).
const AS2: usize = 1;
/// jwcrypto's RFC 7638 thumbprint of the P-256 test key.
const JKT_P256: &str = "zZ6ymYfEhw-Kq92WnU_42d3zpQus2lvi5S2lpIYtDKI";
const URI: &str = "https://api.example.com/api/orders";

/// An `as2` token bound to the P-256 test key.
fn bound_token() -> String {
    let claims = json!({"iss": ISS_B, "aud": AUD, "sub": "alice", "exp": NOW_S + 3600,
                        "cnf": {"jkt": JKT_P256}});
    sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &claims,
    )
}

fn proof(token: &str, jti: &str) -> String {
    let claims = json!({"jti": jti, "htm": "GET", "htu": URI, "iat": NOW_S, "ath": ath(token)});
    dpop_proof("ES256", TestKey::P256, None, "dpop+jwt", &claims)
}

/// The headers callback of `GET https://api.example.com/api/orders` with the DPoP token and
/// proof.
fn request(vm: &mut Vm, ctx: u32, token: &str, proof: &str, now: u64) -> Flow {
    vm.host.enter(ctx);
    let facts = OwnedFacts {
        method: "GET".to_owned(),
        path: "/api/orders".to_owned(),
        authority: "api.example.com".to_owned(),
        scheme: "https".to_owned(),
        authorization: vec![format!("DPoP {token}")],
        dpop: vec![proof.to_owned()],
        ..OwnedFacts::default()
    };
    vm.flow.on_request(ctx, facts, now)
}

fn replays(vm: &Vm) -> usize {
    vm.host.count(Metric::Denied {
        issuer: Some(AS2),
        kind: DenialKind::InvalidDpopProof,
    })
}

#[test]
fn a_proof_passes_once_on_this_worker_and_on_every_other() {
    let cfg = || config(json!({}));
    let mut one = Vm::new(cfg(), CalloutMode::Background);
    let mut two = one.peer(cfg(), CalloutMode::Background);
    let token = bound_token();
    let first = proof(&token, "jti-1");
    assert_eq!(request(&mut one, 10, &token, &first, T0), Flow::Continue);
    // Again on the same worker, then on another one, within the window: refused.
    assert_eq!(
        request(&mut one, 11, &token, &first, T0 + 1_000),
        Flow::Pause
    );
    assert_eq!(
        request(&mut two, 20, &token, &first, T0 + 2_000),
        Flow::Pause
    );
    assert_eq!(one.outcome(11), Outcome::Replied(401));
    assert_eq!(two.outcome(20), Outcome::Replied(401));
    assert_eq!((replays(&one), replays(&two)), (1, 1));
    // A fresh proof of the same key is its own proof.
    let second = proof(&token, "jti-2");
    assert_eq!(
        request(&mut two, 21, &token, &second, T0 + 3_000),
        Flow::Continue
    );
}

#[test]
fn a_full_replay_store_refuses_with_503_rather_than_accept_unrecorded() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    let token = bound_token();
    let p = proof(&token, "jti-full");
    // Fill the proof's bucket with live entries of other proofs.
    let id = replay::proof_id(JKT_P256, "jti-full");
    let bucket = u64::from_le_bytes(id[..8].try_into().unwrap()) % u64::from(replay::BUCKETS);
    let name = format!("tollgate.dp.{bucket}");
    let mut full = Vec::new();
    for i in 0..replay::BUCKET_ENTRIES {
        full.extend_from_slice(&[i as u8 + 1; 16]);
        full.extend_from_slice(&(T0 + 60_000).to_le_bytes());
    }
    assert!(vm.host.shared_set(&name, &full, None));
    assert_eq!(request(&mut vm, 10, &token, &p, T0), Flow::Pause);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
    assert_eq!(
        vm.host.count(Metric::Denied {
            issuer: Some(AS2),
            kind: DenialKind::DpopUnavailable
        }),
        1
    );
    // Once those entries are past their window, the bucket has room again.
    assert_eq!(
        request(&mut vm, 11, &token, &p, T0 + 60_000),
        Flow::Continue
    );
}
