//! Policy decisions (AuthZEN): a request on an `authorize` route waits for its PDP's decision
//! unless the decision is cached; one call per question in a worker and across workers; a
//! `false` is a 403 (cached for the negative TTL), any failure a 503 (never cached); nothing
//! continues before the decision.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::flow::{AuthzEvent, Metric, Stage};

/// `/docs/{owner}/{id}` asks PDP `cerbos` (upstream `pdp`, timeout 500 ms: a request waits
/// 1.5 s); decisions are reused 10 s (`true`) and 2 s (`false`).
fn authz_config(extra: serde_json::Value) -> FilterConfig {
    let mut cfg = config_json(extra);
    cfg["pdps"] = json!({"cerbos": {
        "url": "http://pdp.internal:3592/access/v1/evaluation",
        "upstream": "pdp",
        "timeout_ms": 500,
        "auth": {"bearer": "pdp-secret"},
    }});
    let routes = cfg["routes"].as_array_mut().unwrap();
    routes.insert(
        0,
        json!({
            "name": "docs",
            "match": {"prefix": "/docs/"},
            "require": {"authorize": {
                "pdp": "cerbos",
                "subject": {"type": "user", "properties": {"roles": "roles"}},
                "resource": {"type": "document", "path": "/docs/{owner}/{id}", "id": "{id}",
                             "properties": {"owner": "{owner}"}},
                "context": ["issuer"],
                "ttl_s": 10,
                "negative_ttl_s": 2,
            }},
        }),
    );
    FilterConfig::parse(cfg.to_string().as_bytes()).unwrap()
}

/// How long a request waits for its decision: the PDP's 500 ms timeout plus the 1 s margin.
const PDP_WAIT_MS: u64 = 1_500;

fn decision(allow: bool) -> Option<HttpResponse> {
    answer(200, &json!({"decision": allow}))
}

fn event(event: AuthzEvent) -> Metric {
    Metric::Authz { rule: 0, event }
}

/// A worker whose process has `as1`'s keys already (a JWT is decided at once).
fn vm_with_keys(cfg: impl Fn() -> FilterConfig, mode: CalloutMode) -> Vm {
    let mut vm = Vm::new(cfg(), CalloutMode::Background);
    vm.request(1, "/api", Some(&jwt(ISS_A, TestKey::RsaA)), T0);
    vm.tick(T0);
    let (call, _) = vm.one_callout_to("as1");
    vm.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0);
    assert_eq!(vm.outcome(1), Outcome::Resumed);
    if mode == CalloutMode::Background {
        vm
    } else {
        vm.peer(cfg(), mode)
    }
}

#[test]
fn the_pdp_is_asked_once_for_requests_with_the_same_question_and_the_yes_is_cached() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    assert_eq!(
        vm.request(10, "/docs/alice/1", Some(&token), T0),
        Flow::Pause
    );
    assert_eq!(
        vm.request(11, "/docs/alice/1", Some(&token), T0),
        Flow::Pause
    );
    assert_eq!(vm.host.count(event(AuthzEvent::Coalesced)), 1);
    vm.tick(T0 + 1);
    let (call, request) = vm.one_callout_to("pdp");
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/access/v1/evaluation");
    assert_eq!(request.authority, "pdp.internal:3592");
    assert!(request
        .headers
        .contains(&("authorization".to_owned(), "Bearer pdp-secret".to_owned())));
    let body: serde_json::Value = serde_json::from_slice(&request.body.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "subject": {"type": "user", "id": "alice"},
            "resource": {"type": "document", "id": "1", "properties": {"owner": "alice"}},
            "action": {"name": "read"},
            "context": {"issuer": "as1"},
        })
    );
    vm.answer(ROOT, call, decision(true), T0 + 20);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(vm.outcome(11), Outcome::Resumed);
    assert_eq!(vm.host.count(event(AuthzEvent::Allow)), 2);
    assert_eq!(vm.host.count(Metric::AuthzLatency { pdp: 0, ms: 19 }), 1);
    // Cached: decided at once, no call, until the TTL passes.
    assert_eq!(
        vm.request(12, "/docs/alice/1", Some(&token), T0 + 9_000),
        Flow::Continue
    );
    assert_eq!(vm.host.count(event(AuthzEvent::CacheHit)), 1);
    assert_eq!(
        vm.request(13, "/docs/alice/1", Some(&token), T0 + 10_020),
        Flow::Pause
    );
    vm.tick(T0 + 10_021);
    assert_eq!(vm.callouts_to("pdp").len(), 1, "asked again after the TTL");
}

#[test]
fn another_question_is_another_call() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    vm.request(10, "/docs/alice/1", Some(&token), T0);
    vm.request(11, "/docs/alice/2", Some(&token), T0);
    vm.request(12, "/docs/bob/1", Some(&token), T0);
    vm.tick(T0 + 1);
    assert_eq!(vm.callouts_to("pdp").len(), 3);
}

#[test]
fn a_no_is_403_and_is_reused_for_the_negative_ttl() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    vm.request(10, "/docs/bob/1", Some(&token), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("pdp");
    vm.answer(ROOT, call, decision(false), T0 + 2);
    assert_eq!(vm.outcome(10), Outcome::Replied(403));
    assert_eq!(
        vm.request(11, "/docs/bob/1", Some(&token), T0 + 1_000),
        Flow::Pause
    );
    assert_eq!(vm.outcome(11), Outcome::Replied(403));
    vm.tick(T0 + 1_001);
    assert!(vm.callouts_to("pdp").is_empty());
    // After the negative TTL (2 s): asked again.
    vm.request(12, "/docs/bob/1", Some(&token), T0 + 2_003);
    vm.tick(T0 + 2_004);
    assert_eq!(vm.callouts_to("pdp").len(), 1);
}

#[test]
fn every_failure_is_503_for_every_waiting_request_and_is_not_cached() {
    for bad in [
        None,
        answer(500, &json!({"decision": true})),
        answer(200, &json!({"decision": "true"})),
        answer(200, &json!({"allowed": true})),
        Some(HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: b"not json".to_vec(),
        }),
    ] {
        let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
        let token = jwt(ISS_A, TestKey::RsaA);
        vm.request(10, "/docs/alice/1", Some(&token), T0);
        vm.request(11, "/docs/alice/1", Some(&token), T0);
        vm.tick(T0 + 1);
        let (call, _) = vm.one_callout_to("pdp");
        vm.answer(ROOT, call, bad.clone(), T0 + 2);
        assert_eq!(vm.outcome(10), Outcome::Replied(503), "{bad:?}");
        assert_eq!(vm.outcome(11), Outcome::Replied(503), "{bad:?}");
        assert_eq!(vm.host.count(event(AuthzEvent::Error)), 2);
        // Not cached: the next request asks again, and a yes lets it through.
        vm.request(12, "/docs/alice/1", Some(&token), T0 + 3);
        vm.tick(T0 + 4);
        let (call, _) = vm.one_callout_to("pdp");
        vm.answer(ROOT, call, decision(true), T0 + 5);
        assert_eq!(vm.outcome(12), Outcome::Resumed);
    }
}

#[test]
fn no_answer_by_the_deadline_is_503() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    vm.request(10, "/docs/alice/1", Some(&token), T0);
    vm.tick(T0 + 1);
    let (_call, _) = vm.one_callout_to("pdp");
    vm.tick(T0 + PDP_WAIT_MS - 1);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    vm.tick(T0 + PDP_WAIT_MS);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
}

#[test]
fn a_call_the_host_refuses_is_503() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    vm.request(10, "/docs/alice/1", Some(&token), T0);
    vm.host.refuse_dispatch(true);
    vm.tick(T0 + 1);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
}

#[test]
fn another_worker_waits_for_the_call_under_way_and_takes_its_decision_from_the_cache() {
    let cfg = || authz_config(json!({}));
    let mut a = vm_with_keys(cfg, CalloutMode::Background);
    let mut b = a.peer(cfg(), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    a.request(10, "/docs/alice/1", Some(&token), T0);
    a.tick(T0 + 1);
    let (call, _) = a.one_callout_to("pdp");
    // Worker b has the keys from shared data; its request joins a's call (the lease).
    b.request(20, "/docs/alice/1", Some(&token), T0 + 2);
    b.tick(T0 + 3);
    assert!(b.callouts_to("pdp").is_empty());
    assert_eq!(b.host.count(event(AuthzEvent::Coalesced)), 1);
    a.answer(ROOT, call, decision(true), T0 + 4);
    assert_eq!(a.outcome(10), Outcome::Resumed);
    b.tick(T0 + 5);
    assert_eq!(b.outcome(20), Outcome::Resumed);
    assert_eq!(b.host.count(event(AuthzEvent::CacheHit)), 0);
}

#[test]
fn a_request_denied_by_scopes_never_asks_the_pdp() {
    let cfg = || {
        let mut cfg = config_json(json!({}));
        cfg["pdps"] = json!({"p": {"url": "http://pdp/e", "upstream": "pdp"}});
        cfg["routes"].as_array_mut().unwrap().insert(
            0,
            json!({"match": {"prefix": "/docs/"}, "require": {
                "scopes": ["admin"],
                "authorize": {"pdp": "p", "resource": {"type": "doc", "id": "all"}},
            }}),
        );
        FilterConfig::parse(cfg.to_string().as_bytes()).unwrap()
    };
    let mut vm = vm_with_keys(cfg, CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    vm.request(10, "/docs/x", Some(&token), T0);
    vm.tick(T0 + 1);
    assert_eq!(vm.outcome(10), Outcome::Replied(403));
    assert!(vm.callouts_to("pdp").is_empty());
}

#[test]
fn a_path_outside_the_template_is_403_without_a_call() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    for (ctx, path) in [
        (10, "/docs/alice"),
        (11, "/docs/alice/1/x"),
        (12, "/docs/a%2Fb/1"),
        (13, "/docs//1"),
    ] {
        vm.request(ctx, path, Some(&token), T0);
        assert_eq!(vm.outcome(ctx), Outcome::Replied(403), "{path}");
    }
    vm.tick(T0 + 1);
    assert!(vm.callouts_to("pdp").is_empty());
}

#[test]
fn the_body_waits_for_the_decision() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    let flow = vm.request(10, "/docs/alice/1", Some(&token), T0);
    let mut stage: Stage<()> = Stage::after_headers(flow);
    assert_eq!(vm.flow.later_callback(10, &mut stage), Some(Flow::Pause));
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("pdp");
    assert_eq!(vm.flow.later_callback(10, &mut stage), Some(Flow::Pause));
    vm.answer(ROOT, call, decision(true), T0 + 2);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(vm.flow.later_callback(10, &mut stage), Some(Flow::Continue));

    // Refused: the body never continues.
    let flow = vm.request(11, "/docs/bob/1", Some(&token), T0 + 3);
    let mut stage: Stage<()> = Stage::after_headers(flow);
    vm.tick(T0 + 4);
    let (call, _) = vm.one_callout_to("pdp");
    vm.answer(ROOT, call, decision(false), T0 + 5);
    assert_eq!(vm.outcome(11), Outcome::Replied(403));
    assert_eq!(vm.flow.later_callback(11, &mut stage), Some(Flow::Pause));
}

#[test]
fn per_request_callouts_ask_from_the_request_and_resume_it_there() {
    let mut vm = vm_with_keys(|| authz_config(json!({})), CalloutMode::PerRequest);
    let token = jwt(ISS_A, TestKey::RsaA);
    assert_eq!(
        vm.request(10, "/docs/alice/1", Some(&token), T0),
        Flow::Pause
    );
    let (call, _) = vm.one_callout_to("pdp");
    vm.answer(10, call, decision(true), T0 + 2);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    // A second request with the same question: cached.
    assert_eq!(
        vm.request(11, "/docs/alice/1", Some(&token), T0 + 3),
        Flow::Continue
    );
}
