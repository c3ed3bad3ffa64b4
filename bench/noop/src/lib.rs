//! No-op proxy-wasm HTTP filter: reads `authorization` and lets the request through.
//! It measures what any wasm filter costs in Envoy (VM entry, context creation, one header read).
//!
//! Issue 18, the price of each host call: the plugin configuration may name extra host calls
//! that every request makes before it continues, the ones Tollgate's warm path makes
//! (bench/hostcalls.py counts them), so that a bench row prices each call in the same Envoy:
//! `{"calls": ["pairs", "clock", "shared", "metric", "metric", "replace", ...]}`, each name
//! once per call:
//! - `pairs`: read every request header (`proxy_get_header_map_pairs`) instead of one;
//! - `clock`: `proxy_get_current_time_nanoseconds`;
//! - `shared`: `proxy_get_shared_data` of a 16-byte value (Tollgate's revocation epoch);
//! - `metric`: `proxy_increment_metric` of a counter defined at start;
//! - `replace`: `proxy_replace_header_map_value` of a request header `x-bench-<n>` with a
//!   40-byte value (an identity header).
//!
//! An unknown name fails the configuration.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(NoopRoot { plan: Rc::new(RefCell::new(Plan::default())) })
    });
}}

#[derive(Debug, Clone, Copy)]
enum Call {
    Pairs,
    Clock,
    Shared,
    Metric,
    Replace,
}

#[derive(Default)]
struct Plan {
    calls: Vec<Call>,
    counter: u32,
}

const SHARED_KEY: &str = "bench-noop.epoch";
const VALUE: &str = "user-warm-0 client-bench scope-a scope-b";
const HEADERS: [&str; 8] = [
    "x-bench-0",
    "x-bench-1",
    "x-bench-2",
    "x-bench-3",
    "x-bench-4",
    "x-bench-5",
    "x-bench-6",
    "x-bench-7",
];

struct NoopRoot {
    plan: Rc<RefCell<Plan>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = self.get_plugin_configuration() else {
            return true;
        };
        let text = String::from_utf8_lossy(&config);
        let mut calls = Vec::new();
        // A deliberately small reader: `{"calls": ["a", "b"]}` or `{}`.
        if let Some(list) = text.split_once('[').and_then(|(_, rest)| rest.split_once(']')) {
            for name in list.0.split(',').map(|s| s.trim().trim_matches('"')) {
                calls.push(match name {
                    "" => continue,
                    "pairs" => Call::Pairs,
                    "clock" => Call::Clock,
                    "shared" => Call::Shared,
                    "metric" => Call::Metric,
                    "replace" => Call::Replace,
                    _ => return false,
                });
            }
        }
        let mut plan = self.plan.borrow_mut();
        plan.calls = calls;
        if plan.calls.iter().any(|c| matches!(c, Call::Metric)) {
            match hostcalls::define_metric(MetricType::Counter, "bench_noop.calls") {
                Ok(id) => plan.counter = id,
                Err(_) => return false,
            }
        }
        if plan.calls.iter().any(|c| matches!(c, Call::Shared)) {
            let _ = self.set_shared_data(SHARED_KEY, Some(b"0123456789abcdef"), None);
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            plan: Rc::clone(&self.plan),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    plan: Rc<RefCell<Plan>>,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plan = self.plan.borrow();
        if !plan.calls.iter().any(|c| matches!(c, Call::Pairs)) {
            // Read one header (what a token filter must do at least) and keep it opaque to the optimizer.
            let header = self.get_http_request_header("authorization");
            std::hint::black_box(header);
        }
        let mut replaced = 0;
        for call in &plan.calls {
            match call {
                Call::Pairs => {
                    std::hint::black_box(self.get_http_request_headers_bytes());
                }
                Call::Clock => {
                    std::hint::black_box(hostcalls::get_current_time().ok());
                }
                Call::Shared => {
                    std::hint::black_box(self.get_shared_data(SHARED_KEY));
                }
                Call::Metric => {
                    let _ = hostcalls::increment_metric(plan.counter, 1);
                }
                Call::Replace => {
                    let name = HEADERS[replaced % HEADERS.len()];
                    replaced += 1;
                    self.set_http_request_header(name, Some(VALUE));
                }
            }
        }
        Action::Continue
    }
}
