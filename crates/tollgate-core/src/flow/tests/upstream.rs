//! Upstream tokens: on an `exchange` route a request waits for its token exchange unless the
//! exchanged token is cached; one call per token in a worker and across workers; a refusal is
//! a 403 (remembered briefly), any failure a 503 (never cached); the upstream gets the new
//! token as `Authorization`. On a `sign` route the backend token is signed once per token and
//! reused. The gateway's JWKS is its own answer.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::flow::testhost::Effect;
use crate::flow::{Metric, Stage, UpstreamEvent};

/// `as2` (inline key: a JWT is decided at once) and `op1` (opaque tokens) exchange at their
/// token endpoints (upstreams `as2x`, `op1x`, timeout 500 ms: a request waits 1.5 s).
/// `/x`: exchange for `https://next.test/api`, reused until 10 s before the token expires.
/// `/s`: the gateway signs a backend token (Ed25519, 60 s) into `x-tollgate-jwt`; `/sa`: the
/// same into `Authorization`.
pub(super) fn upstream_json(extra: Value) -> Value {
    let mut cfg = config_json(extra);
    for (i, name) in [(1, "as2"), (2, "op1")] {
        cfg["issuers"][i]["token_exchange"] = json!({
            "endpoint": format!("https://{name}.example.com/token"),
            "upstream": format!("{name}x"),
            "client_id": "tollgate-exchanger",
            "client_secret": "exchange-secret",
            "timeout_ms": 500,
        });
    }
    cfg["backend_token"] = json!({
        "issuer": "https://gateway.example.com",
        "keys": [Value::Object(TestKey::Ed25519.private_jwk())],
    });
    let routes = cfg["routes"].as_array_mut().unwrap();
    for (at, route) in [
        json!({"match": {"prefix": "/x"}, "require": {"issuers": ["as2", "op1"],
               "upstream_token": {"exchange": {"resource": "https://next.test/api"}}}}),
        json!({"match": {"prefix": "/sa"}, "require": {"upstream_token": {"sign": {
               "audience": "orders", "header": "authorization"}}}}),
        json!({"match": {"prefix": "/s"}, "require": {"upstream_token": {"sign": {
               "audience": "orders"}}}}),
    ]
    .into_iter()
    .enumerate()
    {
        routes.insert(at, route);
    }
    cfg
}

fn upstream_config() -> FilterConfig {
    FilterConfig::parse(upstream_json(json!({})).to_string().as_bytes()).unwrap()
}

/// How long a request waits for its exchange: the 500 ms timeout plus the 1 s margin.
const EXCHANGE_WAIT_MS: u64 = 1_500;

fn exchanged(token: &str, expires_in: u64) -> Option<HttpResponse> {
    answer(
        200,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
    )
}

fn event(event: UpstreamEvent) -> Metric {
    Metric::UpstreamToken(event)
}

/// The value request `ctx`'s header `name` was last set to.
fn header_set(vm: &Vm, ctx: u32, name: &str) -> Option<String> {
    vm.host
        .effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::HeaderSet {
                context,
                name: n,
                value,
            } if context == ctx && n == name => Some(value),
            _ => None,
        })
        .next_back()
}

fn as2_token() -> String {
    jwt(ISS_B, TestKey::RsaB)
}

#[test]
fn requests_with_one_token_share_one_exchange_and_the_token_is_reused() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    let token = as2_token();
    assert_eq!(vm.request(10, "/x", Some(&token), T0), Flow::Pause);
    assert_eq!(vm.request(11, "/x", Some(&token), T0), Flow::Pause);
    assert_eq!(vm.host.count(event(UpstreamEvent::ExchangeCoalesced)), 1);
    vm.tick(T0 + 1);
    let (call, request) = vm.one_callout_to("as2x");
    assert_eq!(request.path, "/token");
    let form = String::from_utf8(request.body.unwrap()).unwrap();
    assert!(form.contains(&format!("subject_token={token}")), "{form}");
    assert!(
        form.contains("resource=https%3A%2F%2Fnext.test%2Fapi"),
        "{form}"
    );
    vm.answer(ROOT, call, exchanged("next-1", 60), T0 + 20);
    for ctx in [10, 11] {
        assert_eq!(vm.outcome(ctx), Outcome::Resumed);
        assert_eq!(
            header_set(&vm, ctx, "authorization").as_deref(),
            Some("Bearer next-1")
        );
        // The identity headers are the caller's.
        assert_eq!(
            header_set(&vm, ctx, "x-tollgate-sub").as_deref(),
            Some("alice")
        );
    }
    // Reused from the shared cache until 10 s before it expires.
    assert_eq!(
        vm.request(12, "/x", Some(&token), T0 + 49_000),
        Flow::Continue
    );
    assert_eq!(
        header_set(&vm, 12, "authorization").as_deref(),
        Some("Bearer next-1")
    );
    assert_eq!(vm.host.count(event(UpstreamEvent::ExchangeCacheHit)), 1);
    assert_eq!(vm.request(13, "/x", Some(&token), T0 + 50_021), Flow::Pause);
    vm.tick(T0 + 50_022);
    assert_eq!(vm.callouts_to("as2x").len(), 1, "exchanged again");
    assert_eq!(vm.host.count(event(UpstreamEvent::ExchangeCall)), 2);
}

#[test]
fn an_opaque_token_is_introspected_then_exchanged_at_its_own_issuer() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    assert_eq!(vm.request(10, "/x", Some("op1_abc"), T0), Flow::Pause);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(true), T0 + 2);
    assert_eq!(vm.outcome(10), Outcome::Waiting, "waits for its exchange");
    vm.tick(T0 + 3);
    assert!(vm.callouts_to("as2x").is_empty(), "never to another issuer");
    let (call, request) = vm.one_callout_to("op1x");
    assert_eq!(request.authority, "op1.example.com");
    vm.answer(ROOT, call, exchanged("next-op", 60), T0 + 4);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(
        header_set(&vm, 10, "authorization").as_deref(),
        Some("Bearer next-op")
    );
}

#[test]
fn workers_of_one_process_share_one_exchange() {
    let mut a = Vm::new(upstream_config(), CalloutMode::Background);
    let mut b = a.peer(upstream_config(), CalloutMode::Background);
    let token = as2_token();
    a.request(10, "/x", Some(&token), T0);
    a.tick(T0 + 1);
    let (call, _) = a.one_callout_to("as2x");
    // Worker b: the lease is a's, so b waits for the answer to land in the shared cache.
    assert_eq!(b.request(20, "/x", Some(&token), T0 + 2), Flow::Pause);
    b.tick(T0 + 3);
    assert!(b.callouts_to("as2x").is_empty());
    assert_eq!(b.host.count(event(UpstreamEvent::ExchangeCoalesced)), 1);
    a.answer(ROOT, call, exchanged("next-1", 60), T0 + 10);
    b.tick(T0 + 11);
    assert_eq!(b.outcome(20), Outcome::Resumed);
    assert_eq!(
        header_set(&b, 20, "authorization").as_deref(),
        Some("Bearer next-1")
    );
}

#[test]
fn a_refusal_is_403_for_everyone_waiting_and_is_remembered_for_five_seconds() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    let token = as2_token();
    vm.request(10, "/x", Some(&token), T0);
    vm.request(11, "/x", Some(&token), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("as2x");
    vm.answer(
        ROOT,
        call,
        answer(400, &json!({"error": "invalid_target"})),
        T0 + 2,
    );
    assert_eq!(vm.outcome(10), Outcome::Replied(403));
    assert_eq!(vm.outcome(11), Outcome::Replied(403));
    assert_eq!(vm.host.count(event(UpstreamEvent::ExchangeRefused)), 1);
    assert_eq!(vm.request(12, "/x", Some(&token), T0 + 4_000), Flow::Pause);
    assert_eq!(vm.outcome(12), Outcome::Replied(403));
    vm.tick(T0 + 4_001);
    assert!(vm.callouts_to("as2x").is_empty());
    assert_eq!(vm.request(13, "/x", Some(&token), T0 + 5_003), Flow::Pause);
    vm.tick(T0 + 5_004);
    assert_eq!(vm.callouts_to("as2x").len(), 1, "asked again");
}

#[test]
fn no_answer_is_503_and_is_never_cached() {
    for response in [
        None,
        answer(500, &json!({})),
        answer(401, &json!({"error": "invalid_client"})),
        answer(200, &json!({"token_type": "Bearer"})),
    ] {
        let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
        let token = as2_token();
        vm.request(10, "/x", Some(&token), T0);
        vm.tick(T0 + 1);
        let (call, _) = vm.one_callout_to("as2x");
        vm.answer(ROOT, call, response.clone(), T0 + 2);
        assert_eq!(vm.outcome(10), Outcome::Replied(503), "{response:?}");
        assert_eq!(vm.host.count(event(UpstreamEvent::ExchangeError)), 1);
        vm.request(11, "/x", Some(&token), T0 + 3);
        vm.tick(T0 + 4);
        assert_eq!(vm.callouts_to("as2x").len(), 1, "not cached: {response:?}");
    }
}

#[test]
fn a_request_gives_up_at_its_deadline_and_a_refused_dispatch_is_503() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    let token = as2_token();
    vm.request(10, "/x", Some(&token), T0);
    vm.tick(T0 + 1);
    let _ = vm.one_callout_to("as2x");
    vm.tick(T0 + EXCHANGE_WAIT_MS - 1);
    assert_eq!(vm.outcome(10), Outcome::Waiting);
    vm.tick(T0 + EXCHANGE_WAIT_MS);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));

    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    vm.host.refuse_dispatch(true);
    vm.request(10, "/x", Some(&token), T0);
    vm.tick(T0 + 1);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
}

#[test]
fn a_worker_that_dies_holding_the_lease_delays_the_others_only_until_it_lapses() {
    let a = Vm::new(upstream_config(), CalloutMode::Background);
    let mut b = a.peer(upstream_config(), CalloutMode::Background);
    let mut a = a;
    let token = as2_token();
    a.request(10, "/x", Some(&token), T0);
    a.tick(T0 + 1);
    let _ = a.one_callout_to("as2x");
    drop(a); // never answers
    b.request(20, "/x", Some(&token), T0 + 2);
    b.tick(T0 + 3);
    assert!(b.callouts_to("as2x").is_empty());
    b.tick(T0 + 2 + EXCHANGE_WAIT_MS);
    assert_eq!(b.outcome(20), Outcome::Replied(503));
    // The lease lapsed with it: the next request exchanges itself.
    b.request(21, "/x", Some(&token), T0 + 3 + EXCHANGE_WAIT_MS);
    b.tick(T0 + 4 + EXCHANGE_WAIT_MS);
    assert_eq!(b.callouts_to("as2x").len(), 1);
}

#[test]
fn the_body_of_a_request_waiting_for_its_exchange_stays_held() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    let token = as2_token();
    let headers = vm.request(10, "/x", Some(&token), T0);
    let mut stage: Stage<()> = Stage::after_headers(headers);
    assert_eq!(vm.flow.later_callback(10, &mut stage), Some(Flow::Pause));
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("as2x");
    assert_eq!(vm.flow.later_callback(10, &mut stage), Some(Flow::Pause));
    vm.answer(ROOT, call, exchanged("next-1", 60), T0 + 2);
    assert_eq!(vm.flow.later_callback(10, &mut stage), Some(Flow::Continue));
}

#[test]
fn per_request_callouts_each_request_exchanges_in_its_own_context() {
    let cfg = || {
        FilterConfig::parse(
            upstream_json(json!({"callouts": "per_request"}))
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    };
    let mut vm = Vm::new(cfg(), CalloutMode::PerRequest);
    let token = as2_token();
    assert_eq!(vm.request(10, "/x", Some(&token), T0), Flow::Pause);
    let (call, _) = vm.one_callout_to("as2x");
    vm.answer(10, call, exchanged("next-1", 60), T0 + 5);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(
        header_set(&vm, 10, "authorization").as_deref(),
        Some("Bearer next-1")
    );
    // An opaque token: introspection, then the exchange, one callout at a time.
    assert_eq!(vm.request(11, "/x", Some("op1_abc"), T0), Flow::Pause);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(11, call, introspected(true), T0 + 6);
    assert_eq!(vm.outcome(11), Outcome::Waiting);
    let (call, _) = vm.one_callout_to("op1x");
    vm.answer(11, call, None, T0 + 7);
    assert_eq!(vm.outcome(11), Outcome::Replied(503));
}

#[test]
fn a_backend_token_is_signed_once_per_token_and_reused() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    let token = as2_token();
    assert_eq!(vm.request(10, "/s", Some(&token), T0), Flow::Continue);
    assert_eq!(
        vm.request(11, "/s", Some(&token), T0 + 1_000),
        Flow::Continue
    );
    let first = header_set(&vm, 10, "x-tollgate-jwt").unwrap();
    assert_eq!(header_set(&vm, 11, "x-tollgate-jwt"), Some(first.clone()));
    assert_eq!(vm.host.count(event(UpstreamEvent::Signed)), 1);
    assert_eq!(vm.host.count(event(UpstreamEvent::SignedReused)), 1);
    // The caller's Authorization is left as it was on this route.
    assert_eq!(header_set(&vm, 10, "authorization"), None);
    // Another caller's token: another backend token.
    vm.request(13, "/s", Some("op1_abc"), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(true), T0 + 2);
    assert_eq!(vm.outcome(13), Outcome::Resumed);
    assert_ne!(header_set(&vm, 13, "x-tollgate-jwt"), Some(first.clone()));
    // 60 s tokens are reused for 45 s.
    vm.request(14, "/s", Some(&token), T0 + 45_001);
    assert_ne!(header_set(&vm, 14, "x-tollgate-jwt"), Some(first));
    assert_eq!(vm.host.count(event(UpstreamEvent::Signed)), 3);
}

#[test]
fn a_backend_token_can_replace_authorization() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    assert_eq!(
        vm.request(10, "/sa", Some(&as2_token()), T0),
        Flow::Continue
    );
    let auth = header_set(&vm, 10, "authorization").unwrap();
    let jws = auth.strip_prefix("Bearer ").unwrap();
    assert_eq!(jws.split('.').count(), 3);
    assert_eq!(header_set(&vm, 10, "x-tollgate-jwt"), None);
}

#[test]
fn inbound_copies_of_the_backend_token_header_are_removed_in_any_spelling() {
    let vm = Vm::new(upstream_config(), CalloutMode::Background);
    for name in ["x-tollgate-jwt", "X-Tollgate-JWT", "x_tollgate_jwt"] {
        assert!(vm.flow.is_guarded(name), "{name}");
    }
}

#[test]
fn the_gateway_serves_its_jwks_itself() {
    let mut vm = Vm::new(upstream_config(), CalloutMode::Background);
    assert_eq!(
        vm.request(10, "/.well-known/tollgate/jwks.json", None, T0),
        Flow::Pause
    );
    assert_eq!(vm.outcome(10), Outcome::Replied(200));
}
