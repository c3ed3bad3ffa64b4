//! The HTTP context: one per request. Removes inbound identity headers, gathers the request
//! facts, and hands them to the worker to decide.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::gateway::{self, GatewayCall, Start};
use super::host;
use super::worker::{Flow, OwnedFacts, Worker};

pub struct Filter {
    context_id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
    /// A call to the OAuth endpoint gateway (not an API call), once recognised.
    gateway: Option<Box<GatewayCall>>,
}

impl Filter {
    pub fn new(context_id: u32, worker: Option<Rc<RefCell<Worker>>>) -> Filter {
        Filter {
            context_id,
            worker,
            gateway: None,
        }
    }
}

impl Context for Filter {
    /// Callouts made by this request: only on request-driven hosts (see [`Worker`]); on Envoy
    /// the root context makes them all.
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        super::callout_answered(
            self.worker.as_ref(),
            self.context_id,
            token_id,
            num_headers,
            body_size,
        );
    }

    fn on_done(&mut self) -> bool {
        if let Some(Ok(mut w)) = self.worker.as_ref().map(|w| w.try_borrow_mut()) {
            w.forget(self.context_id);
        }
        true
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(Ok(mut worker)) = self.worker.as_ref().map(|w| w.try_borrow_mut()) else {
            // Not configured (or re-entered): fail closed.
            host::send_response(500, &[], "");
            return Action::Pause;
        };
        let now = host::now_ms();

        // Read what we need first: Authorization may be removed below.
        let mut facts = OwnedFacts::default();
        let mut spoofed: Vec<String> = Vec::new();
        for (name, value) in host::request_headers() {
            let value = String::from_utf8_lossy(&value);
            match name.as_str() {
                ":method" => facts.method = value.into_owned(),
                ":path" => facts.path = value.into_owned(),
                ":authority" => facts.authority = value.into_owned(),
                // Hosts that pass HTTP/1's Host as a plain header (APISIX) have no :authority.
                "host" if facts.authority.is_empty() => facts.authority = value.into_owned(),
                "authorization" => facts.authorization.push(value.into_owned()),
                other => {
                    // Also `x_tollgate_sub` for `x-tollgate-sub`: a CGI-style backend reads both
                    // as the same header.
                    if worker
                        .guarded_headers
                        .iter()
                        .any(|h| crate::config::same_header_name(h, other))
                    {
                        spoofed.push(name.clone());
                    }
                    if worker.hint_headers.iter().any(|h| h == other) {
                        facts.headers.push((name.clone(), value.into_owned()));
                    }
                }
            }
        }
        if worker.needs_route_name {
            facts.route_name = host::property(&["xds", "route_name"]);
        }
        // Whatever happens next, no inbound copy of a header only Tollgate may set (identity
        // headers, the gateway's route header) reaches the upstream. Only the ones present need
        // a host call.
        for header in &spoofed {
            host::remove_request_header(header);
        }
        worker.begin_request(self.context_id);
        let action =
            if let Start::Handled(action, call) = gateway::start(&worker, &facts, end_of_stream) {
                self.gateway = call;
                action
            } else {
                match worker.on_request(self.context_id, facts, now) {
                    Flow::Continue => Action::Continue,
                    Flow::Pause => Action::Pause,
                }
            };
        if action == Action::Continue {
            worker.continuing(now);
        }
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with_gateway(|w, call| gateway::on_body(w, call, body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.with_gateway(gateway::on_response_headers)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with_gateway(|w, call| gateway::on_response_body(w, call, body_size, end_of_stream))
    }
}

impl Filter {
    fn with_gateway(&mut self, f: impl FnOnce(&Worker, &mut GatewayCall) -> Action) -> Action {
        let (Some(call), Some(worker)) = (self.gateway.as_mut(), self.worker.as_ref()) else {
            return Action::Continue;
        };
        match worker.try_borrow() {
            Ok(w) => f(&w, call),
            Err(_) => Action::Continue,
        }
    }
}
