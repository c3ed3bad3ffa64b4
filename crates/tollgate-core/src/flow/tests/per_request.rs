//! Per-request callouts (APISIX, or `"callouts": "per_request"`): a request makes the
//! callouts it needs itself, one at a time, none after a local reply, and is decided in its
//! own context when its last one has answered; answers for a request that is gone are dropped.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

fn per_request() -> Vm {
    Vm::new(
        config(json!({"callouts": "per_request"})),
        CalloutMode::PerRequest,
    )
}

#[test]
fn a_request_makes_one_callout_at_a_time_and_continues_after_the_last() {
    let mut vm = per_request();
    // op2's introspection endpoint comes from discovery: the request fetches the metadata
    // first, and only then introspects.
    assert_eq!(vm.request(10, "/api", Some("op2_abc"), T0), Flow::Pause);
    let (call, request) = vm.one_callout_to("op2");
    assert_eq!(request.path, "/.well-known/openid-configuration");
    assert_eq!(vm.host.tick(), None, "no tick in this mode");
    let metadata = json!({
        "issuer": OP2_ISS,
        "introspection_endpoint": format!("{OP2_ISS}/introspect"),
    });
    vm.answer(10, call, answer(200, &metadata), T0 + 5);
    let (call, request) = vm.one_callout_to("op2");
    assert_eq!(request.path, "/introspect");
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    // Its last callout answered: it is resumed in its own context.
    vm.answer(10, call, introspected(true), T0 + 10);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert!(vm.callouts().is_empty());
}

#[test]
fn each_request_makes_its_own_callout_even_for_the_same_token() {
    let mut vm = per_request();
    assert_eq!(vm.request(10, "/api", Some("op1_abc"), T0), Flow::Pause);
    assert_eq!(vm.request(11, "/api", Some("op1_abc"), T0), Flow::Pause);
    let calls = vm.callouts();
    assert_eq!(
        calls.len(),
        2,
        "an answer goes only to the request that asked"
    );
    vm.answer(11, calls[1].0, introspected(true), T0 + 5);
    assert_eq!(vm.outcome(11), Outcome::Resumed);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    vm.answer(10, calls[0].0, introspected(true), T0 + 6);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
}

#[test]
fn refresh_jobs_start_from_a_request_let_through_and_never_after_a_local_reply() {
    let mut vm = per_request();
    // A refused request (no token) makes no callout, though as1's first fetch is due.
    assert_eq!(vm.request(10, "/api", None, T0), Flow::Pause);
    assert_eq!(vm.outcome(10), Outcome::Replied(401));
    assert!(vm.callouts().is_empty());
    // A request let through starts the refresh jobs that are due.
    assert_eq!(vm.request(11, "/public", None, T0 + 1), Flow::Continue);
    let paths: Vec<String> = vm.callouts().into_iter().map(|(_, r)| r.path).collect();
    assert!(paths.contains(&"/jwks".to_owned()), "{paths:?}");
}

#[test]
fn a_request_refused_after_its_key_fetch_makes_no_further_callout() {
    let mut vm = per_request();
    let token = jwt(ISS_A, TestKey::RsaA);
    assert_eq!(vm.request(10, "/api", Some(&token), T0), Flow::Pause);
    let (call, request) = vm.one_callout_to("as1");
    assert_eq!(request.path, "/jwks");
    vm.answer(10, call, answer(500, &json!({})), T0 + 5);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
    assert!(vm.callouts().is_empty());
}

#[test]
fn an_answer_for_a_request_that_is_gone_is_dropped() {
    let mut vm = per_request();
    assert_eq!(vm.request(10, "/api", Some("op1_abc"), T0), Flow::Pause);
    let (call, _) = vm.one_callout_to("op1");
    // The client went away: the host ends the request (and cancels its callout) — an answer
    // that still arrives finds nothing to decide, and nothing is cached from it.
    vm.flow.forget(10);
    vm.host.end(10);
    vm.answer(10, call, introspected(true), T0 + 5);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    assert_eq!(vm.request(11, "/api", Some("op1_abc"), T0 + 6), Flow::Pause);
    assert_eq!(vm.callouts().len(), 1, "asked again");
}

#[test]
fn an_answer_for_a_request_already_answered_is_dropped() {
    let mut vm = per_request();
    // A second answer to the same callout token (a host retry) after the request was decided.
    assert_eq!(vm.request(10, "/api", Some("op1_abc"), T0), Flow::Pause);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(10, call, introspected(false), T0 + 5);
    assert_eq!(vm.outcome(10), Outcome::Replied(401));
    vm.answer(10, call, introspected(true), T0 + 6);
    assert_eq!(vm.outcome(10), Outcome::Replied(401), "decided once");
    assert!(vm.callouts().is_empty());
}
