//! Requests that wait for their issuer's keys: one fetch for all of them, decided again when
//! it ends or at their deadline; the rate-limited refetch for an unknown `kid`; the fetch
//! lease of a worker that died.

use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::flow::{Metric, IDLE_TICK, NOW_TICK, WAITING_TICK};

fn background() -> Vm {
    Vm::new(config(json!({})), CalloutMode::Background)
}

#[test]
fn two_requests_share_one_key_fetch_the_as_answers_500_and_both_get_503() {
    let mut vm = background();
    let token = jwt(ISS_A, TestKey::RsaA);
    // No keys yet: both requests wait; the first asks for the tick right away.
    assert_eq!(vm.request(10, "/api/a", Some(&token), T0), Flow::Pause);
    assert_eq!(vm.request(11, "/api/b", Some(&token), T0), Flow::Pause);
    assert_eq!(vm.host.tick(), Some(NOW_TICK));
    assert!(
        vm.callouts_to("as1").is_empty(),
        "callouts start on the tick"
    );
    // One tick, one fetch for both.
    vm.tick(T0 + 1);
    let (call, request) = vm.one_callout_to("as1");
    assert_eq!(request.upstream, "as1");
    assert_eq!(request.path, "/jwks");
    assert_eq!(vm.host.tick(), Some(WAITING_TICK));
    vm.tick(T0 + 11);
    assert!(
        vm.callouts_to("as1").is_empty(),
        "the fetch under way is not repeated"
    );
    // The AS fails: the attempt is over, and both are refused with 503 together.
    vm.answer(ROOT, call, answer(500, &json!({})), T0 + 20);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
    assert_eq!(vm.outcome(11), Outcome::Replied(503));
    assert_eq!(
        vm.host.count(Metric::Fetched {
            issuer: AS1,
            ok: false
        }),
        1
    );
    vm.tick(T0 + 30);
    assert_eq!(vm.host.tick(), Some(IDLE_TICK), "nothing waits");
}

#[test]
fn requests_waiting_for_keys_that_never_come_get_503_at_their_deadline() {
    let mut vm = background();
    let token = jwt(ISS_A, TestKey::RsaA);
    assert_eq!(vm.request(10, "/api", Some(&token), T0), Flow::Pause);
    vm.tick(T0 + 1);
    let _lost = vm.one_callout_to("as1"); // the host never answers
    vm.tick(T0 + AS1_WAIT_MS - 1);
    assert_eq!(vm.outcome(10), Outcome::Waiting, "not before the deadline");
    vm.tick(T0 + AS1_WAIT_MS);
    assert_eq!(vm.outcome(10), Outcome::Replied(503));
}

#[test]
fn keys_that_arrive_allow_every_waiting_request() {
    let mut vm = background();
    let token = jwt(ISS_A, TestKey::RsaA);
    vm.request(10, "/api/a", Some(&token), T0);
    vm.request(11, "/api/b", Some(&token), T0);
    vm.tick(T0 + 1);
    let (call, _) = vm.one_callout_to("as1");
    vm.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0 + 20);
    assert_eq!(vm.outcome(10), Outcome::Resumed);
    assert_eq!(vm.outcome(11), Outcome::Resumed);
    // The next request needs no wait.
    assert_eq!(
        vm.request(12, "/api/c", Some(&token), T0 + 30),
        Flow::Continue
    );
}

#[test]
fn an_unknown_kid_refetch_is_rate_limited() {
    let mut vm = background();
    vm.tick(T0);
    let (call, _) = vm.one_callout_to("as1"); // the first refresh: only rsa-a
    vm.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0);
    // A token signed by a key the set lacks, right after the fetch: no early refetch yet,
    // so it is refused at once (401), and nothing is fetched.
    let rotated = jwt(ISS_A, TestKey::RsaB);
    let soon = T0 + AS1_REFETCH_MS - 1;
    assert_eq!(vm.request(10, "/api", Some(&rotated), soon), Flow::Pause);
    assert_eq!(vm.outcome(10), Outcome::Replied(401));
    vm.tick(soon);
    assert!(vm.callouts_to("as1").is_empty(), "rate-limited");
    // Once the interval has passed, it waits for one early refetch, which brings the key.
    let later = T0 + AS1_REFETCH_MS;
    assert_eq!(vm.request(11, "/api", Some(&rotated), later), Flow::Pause);
    assert_eq!(vm.request(12, "/api", Some(&rotated), later), Flow::Pause);
    vm.tick(later);
    let (call, _) = vm.one_callout_to("as1");
    vm.answer(
        ROOT,
        call,
        as1_keys(&[TestKey::RsaA, TestKey::RsaB]),
        later + 5,
    );
    assert_eq!(vm.outcome(11), Outcome::Resumed);
    assert_eq!(vm.outcome(12), Outcome::Resumed);
    // Another made-up kid right after: refused at once again.
    let forged = jwt(ISS_A, TestKey::Rsa1024);
    vm.request(13, "/api", Some(&forged), later + 10);
    assert_eq!(vm.outcome(13), Outcome::Replied(401));
    vm.tick(later + 10);
    assert!(vm.callouts_to("as1").is_empty());
}

#[test]
fn a_fetch_lease_held_by_a_dead_worker_lapses() {
    let cfg = || config(json!({}));
    let mut dead = Vm::new(cfg(), CalloutMode::Background);
    let mut live = dead.peer(cfg(), CalloutMode::Background);
    // The first worker takes the lease and fetches, then dies: no answer ever comes.
    dead.tick(T0);
    let _lost = dead.one_callout_to("as1");
    // The other worker sees the lease: its request waits, and it fetches nothing.
    let token = jwt(ISS_A, TestKey::RsaA);
    assert_eq!(live.request(10, "/api", Some(&token), T0 + 10), Flow::Pause);
    live.tick(T0 + 10);
    live.tick(T0 + AS1_WAIT_MS - 1);
    assert!(live.callouts_to("as1").is_empty(), "the lease is held");
    // The lease lapses: this worker takes over, and its fetch serves the waiting request.
    live.tick(T0 + AS1_WAIT_MS);
    let (call, request) = live.one_callout_to("as1");
    assert_eq!(request.upstream, "as1");
    assert_eq!(live.outcome(10), Outcome::Waiting);
    live.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0 + AS1_WAIT_MS + 5);
    assert_eq!(live.outcome(10), Outcome::Resumed);
}

#[test]
fn keys_another_worker_fetched_are_picked_up_from_shared_data() {
    let cfg = || config(json!({}));
    let mut fetcher = Vm::new(cfg(), CalloutMode::Background);
    let mut other = fetcher.peer(cfg(), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    fetcher.tick(T0);
    assert_eq!(other.request(10, "/api", Some(&token), T0 + 1), Flow::Pause);
    let (call, _) = fetcher.one_callout_to("as1");
    fetcher.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0 + 2);
    // The waiting request of the other worker is allowed on its next tick, without a fetch.
    other.tick(T0 + 3);
    assert!(other.callouts_to("as1").is_empty());
    assert_eq!(other.outcome(10), Outcome::Resumed);
}
