//! The tests' [`Host`]: shared data in a [`LocalStore`] that several workers (several
//! [`super::Worker`]s, one per simulated Envoy worker) can share, and every other effect
//! recorded so a test can read what the flow did: callouts dispatched, requests resumed or
//! answered, headers set, tick periods, metrics.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::host::{Host, Metric};
use super::store::LocalStore;
use crate::http::HttpRequest;

/// What the flow did through a [`TestHost`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A callout (its token, upstream and path).
    Dispatched {
        token: u32,
        upstream: String,
        path: String,
    },
    /// `resume_request` on the effective context.
    Resumed { context: u32 },
    /// A local reply on the effective context.
    Replied { context: u32, status: u32 },
    /// A request header set on the effective context.
    HeaderSet {
        context: u32,
        name: String,
        value: String,
    },
}

#[derive(Debug, Default)]
struct State {
    effects: Vec<Effect>,
    metrics: Vec<Metric>,
    /// Feeds [`Host::random`].
    random_counter: u32,
    /// The requests dispatched, by token.
    requests: Vec<(u32, HttpRequest)>,
    tick: Option<Duration>,
    /// Contexts that ended (`set_effective_context` fails for them).
    gone: Vec<u32>,
    /// Dispatches fail while set (an upstream the host does not know).
    refuse_dispatch: bool,
}

/// One simulated worker's host over a store that may be shared with other workers.
#[derive(Debug, Clone)]
pub struct TestHost {
    store: Rc<RefCell<LocalStore>>,
    /// Callout tokens are unique across the workers sharing the store.
    tokens: Rc<Cell<u32>>,
    state: Rc<RefCell<State>>,
    /// The effective context (set by the flow, or by the test for a callback).
    effective: Rc<Cell<u32>>,
}

impl TestHost {
    /// A host with a store of its own.
    pub fn new() -> TestHost {
        TestHost {
            store: Rc::default(),
            tokens: Rc::new(Cell::new(100)),
            state: Rc::default(),
            effective: Rc::new(Cell::new(0)),
        }
    }

    /// Another worker's host in the same process: same store, own effects.
    pub fn peer(&self) -> TestHost {
        TestHost {
            store: Rc::clone(&self.store),
            tokens: Rc::clone(&self.tokens),
            state: Rc::default(),
            effective: Rc::new(Cell::new(0)),
        }
    }

    /// The host runs a callback of `context`.
    pub fn enter(&self, context: u32) {
        self.effective.set(context);
    }

    /// The request `context` ended.
    pub fn end(&self, context: u32) {
        self.state.borrow_mut().gone.push(context);
    }

    /// Makes every dispatch fail (`true`) or succeed again.
    pub fn refuse_dispatch(&self, refuse: bool) {
        self.state.borrow_mut().refuse_dispatch = refuse;
    }

    /// Every effect so far.
    pub fn effects(&self) -> Vec<Effect> {
        self.state.borrow().effects.clone()
    }

    /// The callouts dispatched since the last call: (token, request).
    pub fn take_requests(&self) -> Vec<(u32, HttpRequest)> {
        std::mem::take(&mut self.state.borrow_mut().requests)
    }

    /// How many times `metric` was recorded.
    pub fn count(&self, metric: Metric) -> usize {
        self.state
            .borrow()
            .metrics
            .iter()
            .filter(|m| **m == metric)
            .count()
    }

    /// The tick period last set.
    pub fn tick(&self) -> Option<Duration> {
        self.state.borrow().tick
    }

    fn push(&self, effect: Effect) {
        self.state.borrow_mut().effects.push(effect);
    }
}

impl Host for TestHost {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.store
            .borrow()
            .get(key)
            .map_or((None, None), |(v, cas)| (Some(v), Some(cas)))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.store
            .borrow_mut()
            .set(key, value, cas.unwrap_or(0))
            .is_ok()
    }

    fn dispatch(&self, request: &HttpRequest) -> Option<u32> {
        if self.state.borrow().refuse_dispatch {
            return None;
        }
        let token = self.tokens.get() + 1;
        self.tokens.set(token);
        let mut state = self.state.borrow_mut();
        state.effects.push(Effect::Dispatched {
            token,
            upstream: request.upstream.clone(),
            path: request.path.clone(),
        });
        state.requests.push((token, request.clone()));
        Some(token)
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        if self.state.borrow().gone.contains(&context_id) {
            return false;
        }
        self.effective.set(context_id);
        true
    }

    fn resume_request(&self) -> bool {
        self.push(Effect::Resumed {
            context: self.effective.get(),
        });
        true
    }

    fn send_response(&self, status: u32, _headers: &[(String, String)], _body: &str) -> bool {
        self.push(Effect::Replied {
            context: self.effective.get(),
            status,
        });
        true
    }

    fn set_request_header(&self, name: &str, value: &str) {
        self.push(Effect::HeaderSet {
            context: self.effective.get(),
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }

    fn remove_request_header(&self, _name: &str) {}

    fn set_tick_period(&self, period: Duration) -> bool {
        self.state.borrow_mut().tick = Some(period);
        true
    }

    fn record(&self, metric: Metric) {
        self.state.borrow_mut().metrics.push(metric);
    }

    /// Not random: bytes from a counter, so tests are repeatable; distinct per call.
    fn random(&self, buf: &mut [u8]) -> bool {
        let mut st = self.state.borrow_mut();
        for b in buf.iter_mut() {
            st.random_counter = st.random_counter.wrapping_add(1);
            *b = (st.random_counter as u8) ^ 0x5a;
        }
        true
    }
}
