//! **No request is continued before it is decided, on any sequence of callbacks.** A property
//! test over callback orders: for each kind of request (keys to fetch, a token to introspect,
//! a token decided at once, a bad token, no token) and each callout mode, every sequence of
//! [`STEPS`] events after the headers callback — body and trailers callbacks, ticks, callout
//! answers (good or failed), time passing — is played, enumerated exhaustively (no randomness).
//! After every event: a request continues (headers, body or trailers callback answering
//! `Continue`) only if it was allowed, and nothing continues after a local reply.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::flow::Stage;

/// Events after the headers callback in each sequence.
const STEPS: u32 = 4;
/// The request under test.
const CTX: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Body,
    Trailers,
    Tick,
    /// The oldest outstanding callout answers with what it asked for.
    AnswerOk,
    /// The oldest outstanding callout fails (HTTP 500).
    AnswerFail,
    /// Three seconds pass (waits end at their deadlines).
    Later,
}

const EVENTS: [Event; 6] = [
    Event::Body,
    Event::Trailers,
    Event::Tick,
    Event::AnswerOk,
    Event::AnswerFail,
    Event::Later,
];

/// The good answer to `request`.
fn good_answer(request: &HttpRequest) -> Option<HttpResponse> {
    match request.path.as_str() {
        "/jwks" => as1_keys(&[TestKey::RsaA]),
        "/introspect" => introspected(true),
        "/token" => answer(
            200,
            &json!({"access_token": "next", "token_type": "Bearer", "expires_in": 60}),
        ),
        _ => answer(
            200,
            &json!({"issuer": OP2_ISS, "introspection_endpoint": format!("{OP2_ISS}/introspect")}),
        ),
    }
}

/// What the request under test is allowed to do so far.
fn allowed(vm: &Vm, headers: Flow) -> bool {
    headers == Flow::Continue || vm.outcome(CTX) == Outcome::Resumed
}

/// Plays `events` for a request with `token` in `mode`; panics where the property fails.
/// On `/x` the request's token is exchanged once it is allowed ([`super::upstream`]).
fn play(mode: CalloutMode, path: &str, token: Option<&str>, events: &[Event]) {
    let extra = match mode {
        CalloutMode::Background => json!({}),
        CalloutMode::PerRequest => json!({"callouts": "per_request"}),
    };
    let cfg = super::upstream::upstream_json(extra).to_string();
    let mut vm = Vm::new(FilterConfig::parse(cfg.as_bytes()).unwrap(), mode);
    let mut now = T0;
    let owner = match mode {
        CalloutMode::Background => ROOT,
        CalloutMode::PerRequest => CTX,
    };
    let headers = vm.request(CTX, path, token, now);
    let mut stage: Stage<()> = Stage::after_headers(headers);
    let mut pending = vm.callouts();
    let mut replied = matches!(vm.outcome(CTX), Outcome::Replied(_));
    assert!(
        !(replied && headers == Flow::Continue),
        "continued after a reply"
    );
    for event in events {
        match event {
            Event::Body | Event::Trailers => {
                vm.host.enter(CTX);
                let flow = vm.flow.later_callback(CTX, &mut stage);
                if flow == Some(Flow::Continue) {
                    assert!(allowed(&vm, headers), "{event:?} continued undecided");
                    assert!(!replied, "{event:?} continued after a reply");
                }
            }
            // Hosts without a tick never run one.
            Event::Tick if mode == CalloutMode::Background => vm.tick(now),
            Event::Tick => {}
            Event::AnswerOk | Event::AnswerFail if !pending.is_empty() => {
                let (call, request) = pending.remove(0);
                let response = match event {
                    Event::AnswerOk => good_answer(&request),
                    _ => answer(500, &json!({})),
                };
                vm.answer(owner, call, response, now);
            }
            Event::AnswerOk | Event::AnswerFail => {}
            Event::Later => now += 3_000,
        }
        pending.extend(vm.callouts());
        let outcome = vm.outcome(CTX); // panics if decided twice
        if replied {
            assert!(matches!(outcome, Outcome::Replied(_)), "{outcome:?}");
        }
        replied = matches!(outcome, Outcome::Replied(_));
    }
}

/// Every sequence of `STEPS` events.
fn sequences() -> impl Iterator<Item = Vec<Event>> {
    let n = EVENTS.len() as u32;
    (0..n.pow(STEPS)).map(move |mut code| {
        (0..STEPS)
            .map(|_| {
                let e = EVENTS[(code % n) as usize];
                code /= n;
                e
            })
            .collect()
    })
}

fn every_order(token: Option<&str>) {
    every_order_at("/api", token);
}

fn every_order_at(path: &str, token: Option<&str>) {
    for mode in [CalloutMode::Background, CalloutMode::PerRequest] {
        for events in sequences() {
            play(mode, path, token, &events);
        }
    }
}

#[test]
fn nothing_continues_undecided_while_keys_are_fetched() {
    every_order(Some(&jwt(ISS_A, TestKey::RsaA)));
}

#[test]
fn nothing_continues_undecided_while_a_token_is_introspected() {
    every_order(Some("op1_abc"));
}

#[test]
fn nothing_continues_undecided_while_an_endpoint_is_discovered() {
    every_order(Some("op2_abc"));
}

#[test]
fn nothing_continues_undecided_while_a_token_is_exchanged() {
    every_order_at("/x", Some(&jwt(ISS_B, TestKey::RsaB)));
}

#[test]
fn nothing_continues_undecided_while_a_token_is_introspected_then_exchanged() {
    every_order_at("/x", Some("op1_abc"));
}

#[test]
fn a_refused_request_never_continues() {
    every_order(None);
    every_order(Some(&jwt(ISS_B, TestKey::RsaA)));
}

#[test]
fn an_allowed_request_continues_on_every_later_callback() {
    let token = jwt(ISS_B, TestKey::RsaB);
    for events in sequences() {
        let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
        let headers = vm.request(CTX, "/api", Some(&token), T0);
        assert_eq!(headers, Flow::Continue);
        let mut stage: Stage<()> = Stage::after_headers(headers);
        for event in events {
            if matches!(event, Event::Body | Event::Trailers) {
                assert_eq!(
                    vm.flow.later_callback(CTX, &mut stage),
                    Some(Flow::Continue)
                );
            }
        }
    }
}

#[test]
fn a_resumed_request_continues_on_its_next_callback() {
    let mut vm = Vm::new(config(json!({})), CalloutMode::Background);
    let headers = vm.request(CTX, "/api", Some("op1_abc"), T0);
    let mut stage: Stage<()> = Stage::after_headers(headers);
    assert_eq!(vm.flow.later_callback(CTX, &mut stage), Some(Flow::Pause));
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("op1");
    vm.answer(ROOT, call, introspected(true), T0 + 2);
    assert_eq!(vm.outcome(CTX), Outcome::Resumed);
    assert_eq!(
        vm.flow.later_callback(CTX, &mut stage),
        Some(Flow::Continue)
    );
    assert!(matches!(stage, Stage::Open));
    // A gateway call is not the flow's to hold.
    let mut gateway = Stage::Gateway(());
    assert_eq!(vm.flow.later_callback(CTX, &mut gateway), None);
}
