//! Grants remembered through the gateway, in shared data: a revocation the server confirmed
//! evicts every cached access token of the revoked token's grant, on every worker; records end
//! with their tokens, keep at most their newest keys, and a grant whose slot another grant took
//! is forgotten (its tokens then age out of the cache as before).
//!
//! The tokens are `op1`'s (introspected, answers cached for an hour from [`T0`]); the token
//! answers are written by the test as the server would send them.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::cache;
use crate::flow::{Host, Metric};
use crate::gateway::grants::{self, GrantCall};

/// A token call to `op1`, presenting `refresh` (the refresh grant) or not (a code exchange).
fn call(vm: &Vm, refresh: Option<&str>) -> GrantCall {
    let form = refresh.map(|r| vec![("refresh_token".to_owned(), r.to_owned())]);
    GrantCall::of(&vm.flow.cfg, OP1, form.as_deref()).unwrap()
}

/// The server's answer to a token call.
fn issued(access: &str, refresh: Option<&str>) -> Vec<u8> {
    let mut body = json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600});
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    body.to_string().into_bytes()
}

/// A revocation of `token` that the server confirmed, through worker `vm`.
fn revoke(vm: &Vm, token: &str, now: u64) {
    let key = cache::key_for(&vm.flow.cfg.fingerprint, token);
    vm.flow.revoked(&[key], now);
}

/// `token` is introspected (active) through request `ctx` and so cached: the next request with
/// it is decided at once.
fn cache_it(vm: &mut Vm, ctx: u32, token: &str, now: u64) {
    assert_eq!(vm.request(ctx, "/api", Some(token), now), Flow::Pause);
    vm.tick(now + 1);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(true), now + 2);
    assert_eq!(vm.outcome(ctx), Outcome::Resumed);
    assert!(is_cached(vm, ctx + 1, token, now + 3), "cached");
}

/// Whether request `ctx` with `token` is decided from the cache (else it waits for the issuer,
/// whose call is answered inactive, as after a revocation).
fn is_cached(vm: &mut Vm, ctx: u32, token: &str, now: u64) -> bool {
    if vm.request(ctx, "/api", Some(token), now) == Flow::Continue {
        return true;
    }
    vm.tick(now + 1);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(false), now + 2);
    assert_eq!(vm.outcome(ctx), Outcome::Replied(401));
    false
}

/// Every grant record and link in shared data.
fn records(vm: &Vm) -> Vec<Vec<u8>> {
    let slots = vm.flow.cfg.cache_slots.min(grants::MAX_SLOTS);
    ["tollgate.gr.", "tollgate.gl."]
        .iter()
        .flat_map(|space| (0..slots).map(move |slot| format!("{space}{slot}")))
        .filter_map(|name| vm.host.shared_get(&name).0)
        .collect()
}

fn vm() -> Vm {
    Vm::new(config_with_gateway(json!({})), CalloutMode::Background)
}

#[test]
fn revoking_the_refresh_token_evicts_its_access_tokens_and_no_others() {
    let mut vm = vm();
    let code = call(&vm, None);
    vm.flow
        .remember_grant(&code, &issued("op1_a1", Some("op1_r1")), T0);
    vm.flow
        .remember_grant(&code, &issued("op1_b1", Some("op1_rb")), T0);
    cache_it(&mut vm, 10, "op1_a1", T0);
    cache_it(&mut vm, 20, "op1_b1", T0);
    cache_it(&mut vm, 30, "op1_lone", T0); // never seen through the gateway

    revoke(&vm, "op1_r1", T0 + 10);
    assert_eq!(vm.host.count(Metric::CacheRevocation), 1);
    assert!(
        !is_cached(&mut vm, 40, "op1_a1", T0 + 20),
        "the grant's token was evicted"
    );
    assert!(
        is_cached(&mut vm, 50, "op1_b1", T0 + 20),
        "another grant's stays"
    );
    assert!(is_cached(&mut vm, 60, "op1_lone", T0 + 20));
}

#[test]
fn a_refreshed_grant_is_revoked_whole_by_any_of_its_tokens_on_any_worker() {
    // Rotated refresh tokens (op1_r2, op1_r3) and every access token lead to the grant.
    for revoked in ["op1_r1", "op1_r2", "op1_r3", "op1_a1", "op1_a3"] {
        let mut a = vm();
        let b = a.peer(config_with_gateway(json!({})), CalloutMode::Background);
        let code = call(&a, None);
        a.flow
            .remember_grant(&code, &issued("op1_a1", Some("op1_r1")), T0);
        // Two refreshes through another worker, each rotating the refresh token.
        b.flow.remember_grant(
            &call(&b, Some("op1_r1")),
            &issued("op1_a2", Some("op1_r2")),
            T0 + 1,
        );
        b.flow.remember_grant(
            &call(&b, Some("op1_r2")),
            &issued("op1_a3", Some("op1_r3")),
            T0 + 2,
        );
        cache_it(&mut a, 10, "op1_a1", T0 + 10);
        cache_it(&mut a, 20, "op1_a2", T0 + 10);
        cache_it(&mut a, 30, "op1_a3", T0 + 10);

        revoke(&b, revoked, T0 + 20);
        for (ctx, token) in [(40, "op1_a1"), (50, "op1_a2"), (60, "op1_a3")] {
            assert!(
                !is_cached(&mut a, ctx, token, T0 + 30),
                "{revoked}: {token}"
            );
        }
    }
}

#[test]
fn a_refresh_with_a_refresh_token_the_gateway_never_saw_starts_its_grant() {
    let mut vm = vm();
    // The code exchange did not go through the gateway; the refreshes do, keeping the token.
    for (i, access) in ["op1_a2", "op1_a3"].into_iter().enumerate() {
        let at = T0 + i as u64;
        vm.flow
            .remember_grant(&call(&vm, Some("op1_r1")), &issued(access, None), at);
    }
    cache_it(&mut vm, 10, "op1_a2", T0 + 10);
    cache_it(&mut vm, 20, "op1_a3", T0 + 10);
    revoke(&vm, "op1_r1", T0 + 20);
    assert!(!is_cached(&mut vm, 30, "op1_a2", T0 + 30));
    assert!(!is_cached(&mut vm, 40, "op1_a3", T0 + 30));
}

#[test]
fn answers_without_a_refresh_token_or_of_failed_calls_leave_nothing() {
    let vm = vm();
    let code = call(&vm, None);
    vm.flow.remember_grant(&code, &issued("op1_cc", None), T0); // client_credentials
    vm.flow
        .remember_grant(&code, b"{\"error\":\"invalid_grant\"}", T0);
    vm.flow.remember_grant(&code, b"", T0);
    assert!(records(&vm).is_empty());
    // Nothing is kept when the cache is off: nothing of the grant could be cached.
    let off = Vm::new(
        config(json!({"cache": {"max_entries": 0}})),
        CalloutMode::Background,
    );
    assert_eq!(GrantCall::of(&off.flow.cfg, OP1, None), None);
}

#[test]
fn records_keep_no_token_only_hashes() {
    let vm = vm();
    vm.flow.remember_grant(
        &call(&vm, None),
        &issued("op1_secretaccess", Some("op1_secretrefresh")),
        T0,
    );
    let written = records(&vm);
    assert_eq!(
        written.len(),
        2,
        "the grant's record, the access token's link"
    );
    for v in written {
        assert!(!String::from_utf8_lossy(&v).contains("secret"));
        assert!(!v.windows(6).any(|w| w == b"op1_se"));
    }
}

#[test]
fn a_record_ends_with_the_last_token_it_was_written_for() {
    let mut vm = vm();
    // Answers cached for an hour; the access token lives 60 s.
    let short = |access: &str, refresh: &str| {
        json!({"access_token": access, "refresh_token": refresh, "expires_in": 60})
            .to_string()
            .into_bytes()
    };
    vm.flow
        .remember_grant(&call(&vm, None), &short("op1_a1", "op1_r1"), T0);
    cache_it(&mut vm, 10, "op1_a1", T0 + 10);
    // Past the token's end the record is dead: a revocation evicts only the token it names (the
    // cache entry of op1_a1 outlives the record here only because the test's introspection
    // answers claim an hour; a server's answer ends with the token).
    revoke(&vm, "op1_r1", T0 + 60_000);
    assert!(is_cached(&mut vm, 20, "op1_a1", T0 + 60_010));
    // Written again by a refresh, it lives on from then.
    vm.flow.remember_grant(
        &call(&vm, Some("op1_r1")),
        &short("op1_a2", "op1_r1"),
        T0 + 70_000,
    );
    cache_it(&mut vm, 30, "op1_a2", T0 + 70_010);
    revoke(&vm, "op1_r1", T0 + 129_999);
    assert!(!is_cached(&mut vm, 40, "op1_a2", T0 + 130_000));
}

#[test]
fn a_grant_keeps_its_newest_access_tokens() {
    let mut vm = vm();
    let r1 = Some("op1_r1");
    vm.flow
        .remember_grant(&call(&vm, None), &issued("op1_a0", r1), T0);
    let refresh = call(&vm, r1);
    let last = grants::MAX_KEYS;
    for i in 1..=last {
        vm.flow
            .remember_grant(&refresh, &issued(&format!("op1_a{i}"), None), T0 + i as u64);
    }
    cache_it(&mut vm, 10, "op1_a0", T0 + 100);
    cache_it(&mut vm, 20, "op1_a1", T0 + 100);
    cache_it(&mut vm, 30, &format!("op1_a{last}"), T0 + 100);
    revoke(&vm, "op1_r1", T0 + 200);
    assert!(
        is_cached(&mut vm, 40, "op1_a0", T0 + 300),
        "the oldest was dropped"
    );
    assert!(!is_cached(&mut vm, 50, "op1_a1", T0 + 300));
    assert!(!is_cached(&mut vm, 60, &format!("op1_a{last}"), T0 + 300));
}

#[test]
fn a_grant_whose_slot_another_grant_took_is_forgotten() {
    // One slot: the newest grant takes it, as the newest token takes a cache slot.
    let vm = Vm::new(
        config_with_gateway(json!({"cache": {"max_entries": 1}})),
        CalloutMode::Background,
    );
    let code = call(&vm, None);
    vm.flow
        .remember_grant(&code, &issued("op1_a1", Some("op1_r1")), T0);
    vm.flow
        .remember_grant(&code, &issued("op1_b1", Some("op1_rb")), T0 + 1);
    let fp = vm.flow.cfg.fingerprint;
    let read = |id: &str| {
        let (v, _) = vm.host.shared_get("tollgate.gr.0");
        grants::decode(&cache::key_for(&fp, id), v.unwrap(), T0 + 2)
    };
    assert_eq!(read("op1_r1"), None);
    assert_eq!(
        read("op1_rb"),
        Some((T0 + 1 + 3_600_000, cache::key_for(&fp, "op1_b1").to_vec()))
    );
}
