//! Introspection single flight, in one worker (one call per token, later requests join it)
//! and across workers (a lease in shared data; the others wait for the answer in the cache),
//! and the revocation epoch: an `active` answer a revocation overtook is not cached.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::cache;
use crate::flow::{IntrospectionEvent, IntrospectionFailure, Metric};

fn event(event: IntrospectionEvent) -> Metric {
    Metric::Introspection { issuer: OP1, event }
}

#[test]
fn requests_with_the_same_token_share_one_call_in_a_worker() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    assert_eq!(vm.request(10, "/api", Some("op1_abc"), T0), Flow::Pause);
    assert_eq!(vm.request(11, "/api", Some("op1_abc"), T0), Flow::Pause);
    assert_eq!(vm.host.count(event(IntrospectionEvent::Coalesced)), 1);
    vm.tick(T0 + 1);
    let (call, request) = vm.one_callout_to("op1");
    assert_eq!(request.upstream, "op1");
    assert_eq!(request.path, "/introspect");
    let body = String::from_utf8(request.body.unwrap_or_default()).unwrap();
    assert!(body.contains("token=op1_abc"), "{body}");
    vm.answer(ROOT, call, introspected(true), T0 + 30);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(vm.outcome(11), Outcome::Resumed);
    assert_eq!(
        vm.host.count(Metric::IntrospectionLatency {
            issuer: OP1,
            ms: 29
        }),
        1
    );
    // The answer is cached: the next request is decided at once.
    assert_eq!(
        vm.request(12, "/api", Some("op1_abc"), T0 + 40),
        Flow::Continue
    );
    vm.tick(T0 + 41);
    assert!(vm.callouts_to("op1").is_empty());
}

#[test]
fn an_inactive_answer_refuses_every_waiting_request_and_is_remembered() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    vm.request(10, "/api", Some("op1_junk"), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(false), T0 + 2);
    assert_eq!(vm.outcome(10), Outcome::Replied(401));
    assert_eq!(vm.host.count(event(IntrospectionEvent::Inactive)), 1);
    // Asked again: refused from the cache, a negative cache hit, no call.
    vm.request(11, "/api", Some("op1_junk"), T0 + 3);
    assert_eq!(vm.outcome(11), Outcome::Replied(401));
    assert_eq!(
        vm.host.count(event(IntrospectionEvent::NegativeCacheHit)),
        1
    );
}

#[test]
fn a_call_the_host_refuses_fails_closed() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    vm.request(10, "/api", Some("op1_abc"), T0);
    vm.host.refuse_dispatch(true);
    vm.tick(T0 + 1);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
    let failed = IntrospectionEvent::Failed(IntrospectionFailure::Transport);
    assert_eq!(vm.host.count(event(failed)), 1);
}

#[test]
fn an_answer_that_never_comes_gives_503_at_the_deadline() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    vm.request(10, "/api", Some("op1_abc"), T0);
    vm.tick(T0 + 1);
    let _lost = vm.one_callout_to("op1");
    vm.tick(T0 + OP1_WAIT_MS - 1);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    vm.tick(T0 + OP1_WAIT_MS);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
}

#[test]
fn workers_share_one_call_through_the_lease() {
    let cfg = || config(json!({}));
    let mut a = Vm::new(cfg(), CalloutMode::Background);
    let mut b = a.peer(cfg(), CalloutMode::Background);
    // Worker A takes the lease; worker B, asked about the same token, waits for A's answer.
    assert_eq!(a.request(10, "/api", Some("op1_abc"), T0), Flow::Pause);
    assert_eq!(b.request(20, "/api", Some("op1_abc"), T0), Flow::Pause);
    assert_eq!(b.host.count(event(IntrospectionEvent::Coalesced)), 1);
    a.tick(T0 + 1);
    b.tick(T0 + 1);
    let (call, _) = a.one_callout_to("op1");
    assert!(b.callouts_to("op1").is_empty(), "one call per process");
    b.tick(T0 + 10);
    assert_eq!(b.outcome(20), Outcome::Waiting, "the lease is held");
    // A's answer lands in the shared cache and frees the lease; B picks it up on its tick.
    a.answer(ROOT, call, introspected(true), T0 + 20);
    assert_eq!(a.outcome(10), Outcome::Resumed);
    b.tick(T0 + 21);
    assert_eq!(b.outcome(20), Outcome::Resumed);
    assert!(b.callouts_to("op1").is_empty());
}

#[test]
fn a_worker_whose_peer_failed_refuses_with_503_once_the_lease_is_freed() {
    let cfg = || config(json!({}));
    let mut a = Vm::new(cfg(), CalloutMode::Background);
    let mut b = a.peer(cfg(), CalloutMode::Background);
    a.request(10, "/api", Some("op1_abc"), T0);
    b.request(20, "/api", Some("op1_abc"), T0);
    a.tick(T0 + 1);
    let (call, _) = a.one_callout_to("op1");
    a.answer(ROOT, call, answer(500, &json!({})), T0 + 5);
    assert_eq!(a.outcome(10), Outcome::Replied(503));
    b.tick(T0 + 6);
    assert_eq!(
        b.outcome(20),
        Outcome::Replied(503),
        "freed lease, no entry"
    );
}

#[test]
fn an_active_answer_overtaken_by_a_revocation_is_used_once_but_not_cached() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    vm.request(10, "/api", Some("op1_abc"), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("op1");
    // While the call is out, the token is revoked through the gateway (another worker).
    let revoker = Vm::on(vm.host.peer(), config(json!({})), CalloutMode::Background);
    let key = cache::key_for(&vm.flow.cfg.fingerprint, "op1_abc");
    revoker.flow.evict(&[key]);
    assert_eq!(revoker.host.count(Metric::CacheRevocation), 1);
    // The answer (sent before the revocation) still decides the request that asked...
    vm.answer(ROOT, call, introspected(true), T0 + 5);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    // ...but is not cached: the next request asks the issuer again.
    assert_eq!(vm.request(11, "/api", Some("op1_abc"), T0 + 6), Flow::Pause);
    vm.tick(T0 + 7);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(false), T0 + 8);
    assert_eq!(vm.outcome(11), Outcome::Replied(401));
}

#[test]
fn a_revocation_makes_every_worker_forget_the_token() {
    let cfg = || config_with_gateway(json!({}));
    let mut a = Vm::new(cfg(), CalloutMode::Background);
    let b = a.peer(cfg(), CalloutMode::Background);
    a.request(10, "/api", Some("op1_abc"), T0);
    a.tick(T0 + 1);
    let (call, _) = a.one_callout_to("op1");
    a.answer(ROOT, call, introspected(true), T0 + 2);
    // Cached in the shared slot and in A's memo: the next request is decided at once.
    assert_eq!(
        a.request(11, "/api", Some("op1_abc"), T0 + 3),
        Flow::Continue
    );
    // Revoked through worker B: A's memo is dropped with the epoch, the slot is emptied.
    let key = cache::key_for(&a.flow.cfg.fingerprint, "op1_abc");
    b.flow.evict(&[key]);
    assert_eq!(a.request(12, "/api", Some("op1_abc"), T0 + 4), Flow::Pause);
    a.tick(T0 + 5);
    assert_eq!(a.callouts_to("op1").len(), 1, "asked again");
}

#[test]
fn without_the_gateway_nothing_is_revoked_and_the_memo_reads_no_epoch() {
    // The token is introspected, then remembered by the worker's memo; then another worker of
    // the process removes its shared entry and moves the revocation epoch, as a revocation
    // through the gateway does.
    let after_a_removal = |cfg: FilterConfig| {
        let mut vm = Vm::new(cfg, CalloutMode::Background);
        vm.request(10, "/api", Some("op1_abc"), T0);
        vm.tick(T0 + 1);
        let (call, _) = vm.one_callout_to("op1");
        vm.answer(ROOT, call, introspected(true), T0 + 2);
        assert_eq!(
            vm.request(11, "/api", Some("op1_abc"), T0 + 3),
            Flow::Continue
        );
        let key = cache::key_for(&vm.flow.cfg.fingerprint, "op1_abc");
        let slots = vm.flow.cfg.cache_slots;
        crate::flow::SharedTokenCache::new(vm.host.peer(), slots).remove(&key);
        vm.request(12, "/api", Some("op1_abc"), T0 + 4)
    };
    // Without the gateway only another configuration could move the epoch, and its keys are
    // not this one's: the memo is not asked to read it, and decides at once.
    assert_eq!(after_a_removal(config(json!({}))), Flow::Continue);
    // With the gateway the memo reads the epoch, forgets the token, and the issuer is asked.
    assert_eq!(after_a_removal(config_with_gateway(json!({}))), Flow::Pause);
}

/// `op2`'s metadata, naming its introspection endpoint.
fn op2_metadata() -> Option<HttpResponse> {
    answer(
        200,
        &json!({"issuer": OP2_ISS, "introspection_endpoint": format!("{OP2_ISS}/introspect")}),
    )
}

#[test]
fn a_job_waits_for_the_refresh_job_to_discover_its_endpoint() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    assert_eq!(vm.request(10, "/api", Some("op2_abc"), T0), Flow::Pause);
    // The first tick: the refresh job asks for op2's metadata; the job stays queued.
    vm.tick(T0 + 1);
    let (call, request) = vm.one_callout_to("op2");
    assert_eq!(request.path, "/.well-known/openid-configuration");
    vm.answer(ROOT, call, op2_metadata(), T0 + 5);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    // The next tick sends the introspection to the endpoint discovered.
    vm.tick(T0 + 10);
    let (call, request) = vm.one_callout_to("op2");
    assert_eq!(request.path, "/introspect");
    vm.answer(ROOT, call, introspected(true), T0 + 15);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
}

#[test]
fn a_job_whose_endpoint_is_never_discovered_fails_at_its_deadline() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    vm.request(10, "/api", Some("op2_abc"), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("op2");
    vm.answer(ROOT, call, answer(500, &json!({})), T0 + 5);
    vm.tick(T0 + OP1_WAIT_MS - 1);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    vm.tick(T0 + OP1_WAIT_MS);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
    let metric = Metric::Introspection {
        issuer: OP2,
        event: IntrospectionEvent::Failed(IntrospectionFailure::NoEndpoint),
    };
    assert_eq!(vm.host.count(metric), 1);
}
