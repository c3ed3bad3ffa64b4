//! Scenario tests of the flow: real configurations, one or more workers ([`Vm`]s, each a
//! [`Worker`] over a [`TestHost`]; workers of one process share its store), a fixed clock
//! ([`T0`] plus what a test adds), and callout answers written by the test. Each test is one
//! story, told in the order the host would run the callbacks.
//!
//! Issuers of [`config`]: `as1` (remote JWKS through upstream `as1`, fetch timeout 2 s:
//! lease and key wait 5 s), `as2` (inline key `rsa-b`), `op1` (opaque `op1_…` tokens,
//! introspection at a fixed endpoint, timeout 1 s: wait 2 s), `op2` (opaque `op2_…` tokens,
//! introspection endpoint from discovery). Routes: `/public` anonymous, `/api` any token.
//!
//! - [`keys`]: waiting for keys, shared fetches, failures and deadlines, refetch, leases
//! - [`peers`]: waiting for another worker's verification
//! - [`introspection`]: single flight in a worker and across workers, revocation epochs
//! - [`per_request`]: per-request callouts
//! - [`callbacks`]: nothing continues before it is decided, on any callback order
//! - [`documents`]: the gateway's metadata documents, fetched after the keys
//! - [`authorize`]: policy decisions (AuthZEN): waits, single flight, the decision cache
//! - [`upstream`]: token exchange (waits, single flight, the shared cache) and backend tokens

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod authorize;
mod callbacks;
mod documents;
mod dpop;
mod grants;
mod introspection;
mod keys;
mod peers;
mod per_request;
mod upstream;

use serde_json::{json, Value};

use super::testhost::{Effect, TestHost};
use super::{CalloutMode, Flow, OwnedFacts, Worker};
use crate::config::FilterConfig;
use crate::http::{HttpRequest, HttpResponse};
use crate::testdata::{header, jwks, sign, TestKey, AUD, ISS_A, ISS_B, NOW_MS, NOW_S};

/// The root context of every VM.
const ROOT: u32 = 1;
/// The clock when a story starts.
const T0: u64 = NOW_MS;
/// `as1`'s key wait and fetch lease: twice the 2 s fetch timeout plus 1 s.
const AS1_WAIT_MS: u64 = 5_000;
/// `as1`'s `refetch_min_interval_s`, in ms.
const AS1_REFETCH_MS: u64 = 10_000;
/// How long a request waits for `op1`'s (or `op2`'s) answer: its 1 s timeout plus a 1 s margin.
const OP1_WAIT_MS: u64 = 2_000;

const AS1: usize = 0;
const OP1: usize = 2;
const OP2: usize = 3;

const OP1_ISS: &str = "https://op1.example.com";
const OP2_ISS: &str = "https://op2.example.com";

fn client(name: &str) -> Value {
    json!({"upstream": name, "client_id": "tollgate", "client_secret": "secret", "timeout_ms": 1000})
}

/// The stories' configuration, with `extra` top-level members (e.g. `callouts`, `cache`).
fn config(extra: Value) -> FilterConfig {
    FilterConfig::parse(config_json(extra).to_string().as_bytes()).unwrap()
}

/// [`config`] with the gateway on: a revocation through it is what evicts cached tokens, so
/// tests of revocation run with it (a configuration without the gateway never reads the
/// revocation epoch, see [`SharedTokenCache::without_revocation`]).
fn config_with_gateway(extra: Value) -> FilterConfig {
    let mut cfg = config_json(extra);
    cfg["gateway"] = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"]});
    cfg["issuers"][0]["gateway"] =
        json!({"upstream": "as1", "endpoints": {"revocation": format!("{ISS_A}/revoke")}});
    FilterConfig::parse(cfg.to_string().as_bytes()).unwrap()
}

/// [`config`]'s text, to change further.
fn config_json(extra: Value) -> Value {
    let mut op1 = client("op1");
    op1["endpoint"] = json!(format!("{OP1_ISS}/introspect"));
    let mut op2 = client("op2");
    op2["discovery"] = json!(true);
    let mut cfg = json!({
        "issuers": [
            {
                "name": "as1",
                "issuer": ISS_A,
                "audiences": [AUD],
                "jwks": {"uri": "https://as1.example.com/jwks", "upstream": "as1"},
                "fetch_timeout_ms": 2000,
                "refetch_min_interval_s": AS1_REFETCH_MS / 1000,
            },
            {
                "name": "as2",
                "issuer": ISS_B,
                "jwks": {"inline": jwks(&[TestKey::RsaB.public_jwk()])},
            },
            {
                "name": "op1",
                "issuer": OP1_ISS,
                "introspection": op1,
                "opaque_tokens": {"prefixes": ["op1_"]},
            },
            {
                "name": "op2",
                "issuer": OP2_ISS,
                "introspection": op2,
                "opaque_tokens": {"prefixes": ["op2_"]},
            },
        ],
        "routes": [
            {"match": {"prefix": "/public"}, "anonymous": true},
            {"match": {"prefix": "/api"}, "require": {}},
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg
}

/// A JWT `iss` signs with `key` (as its `kid`), valid for an hour from [`T0`].
fn jwt(iss: &str, key: TestKey) -> String {
    let kid = key.kid();
    let claims = json!({"iss": iss, "aud": AUD, "sub": "alice", "exp": NOW_S + 3600});
    sign("RS256", key, &header(Some(&kid), None), &claims)
}

/// A JSON answer.
fn answer(status: u16, body: &Value) -> Option<HttpResponse> {
    Some(HttpResponse {
        status,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.to_string().into_bytes(),
    })
}

/// `as1`'s JWKS with these keys.
fn as1_keys(keys: &[TestKey]) -> Option<HttpResponse> {
    let keys: Vec<Value> = keys.iter().map(|k| k.public_jwk()).collect();
    answer(200, &jwks(&keys))
}

/// An introspection answer: active for an hour, or not active.
fn introspected(active: bool) -> Option<HttpResponse> {
    if active {
        answer(
            200,
            &json!({"active": true, "sub": "bob", "exp": NOW_S + 3600}),
        )
    } else {
        answer(200, &json!({"active": false}))
    }
}

/// One worker VM: its flow over its host.
struct Vm {
    host: TestHost,
    flow: Worker<TestHost>,
    /// Callouts made and not yet taken by the test.
    untaken: std::cell::RefCell<Vec<(u32, HttpRequest)>>,
}

impl Vm {
    /// A worker with a process (store) of its own.
    fn new(cfg: FilterConfig, mode: CalloutMode) -> Vm {
        Vm::on(TestHost::new(), cfg, mode)
    }

    /// A worker on `host` (e.g. [`TestHost::peer`] of another worker's: same process).
    fn on(host: TestHost, cfg: FilterConfig, mode: CalloutMode) -> Vm {
        let flow = Worker::new(cfg, ROOT, mode, host.clone());
        let untaken = std::cell::RefCell::default();
        Vm {
            host,
            flow,
            untaken,
        }
    }

    /// Another worker of the same process, same configuration and mode.
    fn peer(&self, cfg: FilterConfig, mode: CalloutMode) -> Vm {
        Vm::on(self.host.peer(), cfg, mode)
    }

    /// The headers callback of request `ctx` for `path` with a bearer `token` (if any).
    fn request(&mut self, ctx: u32, path: &str, token: Option<&str>, now: u64) -> Flow {
        self.host.enter(ctx);
        let facts = OwnedFacts {
            method: "GET".to_owned(),
            path: path.to_owned(),
            authority: "api.example.com".to_owned(),
            authorization: token.map(|t| format!("Bearer {t}")).into_iter().collect(),
            ..OwnedFacts::default()
        };
        self.flow.on_request(ctx, facts, now)
    }

    fn tick(&mut self, now: u64) {
        self.host.enter(ROOT);
        self.flow.on_tick(now);
    }

    /// The answer to callout `token`, delivered to `ctx` (the context that made it).
    fn answer(&mut self, ctx: u32, token: u32, response: Option<HttpResponse>, now: u64) {
        self.host.enter(ctx);
        self.flow.on_callout_response(ctx, token, response, now);
    }

    /// The callouts made and not yet taken: (token, request).
    fn callouts(&self) -> Vec<(u32, HttpRequest)> {
        let mut untaken = self.untaken.take();
        untaken.extend(self.host.take_requests());
        untaken
    }

    /// The callouts through `upstream` made and not yet taken (the others stay).
    fn callouts_to(&self, upstream: &str) -> Vec<(u32, HttpRequest)> {
        let (to, others) = self
            .callouts()
            .into_iter()
            .partition(|(_, r)| r.upstream == upstream);
        *self.untaken.borrow_mut() = others;
        to
    }

    /// The one callout through `upstream` made and not yet taken.
    fn one_callout_to(&self, upstream: &str) -> (u32, HttpRequest) {
        let mut calls = self.callouts_to(upstream);
        assert_eq!(calls.len(), 1, "{calls:?}");
        calls.remove(0)
    }

    /// What happened to request `ctx` so far: resumed, or answered with a status.
    fn outcome(&self, ctx: u32) -> Outcome {
        let mut outcome = Outcome::Waiting;
        for e in self.host.effects() {
            match e {
                Effect::Resumed { context } if context == ctx => {
                    assert_eq!(outcome, Outcome::Waiting, "decided twice");
                    outcome = Outcome::Resumed;
                }
                Effect::Replied { context, status } if context == ctx => {
                    assert_eq!(outcome, Outcome::Waiting, "decided twice");
                    outcome = Outcome::Replied(status);
                }
                _ => {}
            }
        }
        outcome
    }
}

/// What happened to a paused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Resumed,
    Replied(u32),
}
