//! The HTTP context: one per request. Removes inbound identity headers, gathers the request
//! facts, and hands them to the worker to decide.
//!
//! **Nothing continues before the decision, on any callback.** Envoy runs this filter with
//! `allow_on_headers_stop_iteration` (the gateway reads form bodies), so a body or trailers
//! callback that returned `Continue` would resume a request the headers callback paused. A
//! request paused for its decision is therefore [`Stage::Held`]: its body and trailers stop
//! (the host buffers the body, up to its buffer limit) until the flow allows and resumes it;
//! after a refusal they stay stopped ([`Worker::later_callback`], core logic). See
//! docs/security.md, "The request path".

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::gateway::{self, GatewayCall, Start};
use super::host;
use super::{OwnedFacts, Worker};
use crate::client_cert;
use crate::config::ClientCertificate;
use crate::flow::Flow;
use crate::outcome::Denial;

/// Why a request carrying a copy of a header only Tollgate sets is refused where routes are
/// matched by the host's route name.
const SPOOFED: &str = "the request carries a header only the gateway may set";

pub struct Filter {
    context_id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
    stage: Stage,
}

/// Where the request stands for the callbacks after its headers (a gateway call keeps its own
/// state).
type Stage = crate::flow::Stage<Box<GatewayCall>>;

impl Filter {
    pub fn new(context_id: u32, worker: Option<Rc<RefCell<Worker>>>) -> Filter {
        Filter {
            context_id,
            worker,
            stage: Stage::Open,
        }
    }

    /// A body or trailers callback: a gateway call by `gateway`'s rules; open and held
    /// requests as the flow says ([`Worker::later_callback`]; a held one without its worker
    /// stays held).
    fn later(&mut self, gateway: impl FnOnce(&Worker, &mut GatewayCall) -> Action) -> Action {
        if let Stage::Gateway(call) = &mut self.stage {
            return with_worker(&self.worker, Action::Pause, |w| gateway(w, call));
        }
        match self.worker.as_ref().map(|w| w.try_borrow_mut()) {
            Some(Ok(mut w)) => w
                .later_callback(self.context_id, &mut self.stage)
                .map_or(Action::Pause, action),
            _ if matches!(self.stage, Stage::Open) => Action::Continue,
            _ => Action::Pause,
        }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for Filter {
    /// Callouts made by this request: only with per-request callouts (see
    /// [`crate::flow::CalloutMode`]); on Envoy the root context makes them all.
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
            self.stage = Stage::Held;
            return Action::Pause;
        };
        let now = host::now_ms();

        // Read what we need first: Authorization may be removed below.
        let mut facts = OwnedFacts::default();
        let mut spoofed: Vec<String> = Vec::new();
        let source = &worker.cfg.sender_constraint.client_certificate;
        let cert_header = source.header();
        let mut cert_values: Vec<String> = Vec::new();
        // Borrowed from the host's encoding: only the values kept are copied (once).
        let encoded = host::request_headers();
        for (name, value) in host::request_header_pairs(&encoded) {
            // A value that is not UTF-8 is read with replacement characters (from_utf8 first:
            // its check takes a word at a time, the lossy reader a byte at a time).
            let value = || {
                std::str::from_utf8(value).map_or_else(
                    |_| String::from_utf8_lossy(value).into_owned(),
                    str::to_owned,
                )
            };
            match name {
                ":method" => facts.method = value(),
                ":path" => facts.path = value(),
                ":authority" => facts.authority = value(),
                ":scheme" => facts.scheme = value(),
                // Hosts that pass HTTP/1's Host as a plain header (APISIX) have no :authority.
                "host" if facts.authority.is_empty() => facts.authority = value(),
                "authorization" => facts.authorization.push(value()),
                "dpop" => facts.dpop.push(value()),
                other if cert_header == Some(other) => cert_values.push(value()),
                other => {
                    if worker.is_guarded(other) {
                        spoofed.push(name.to_owned());
                    }
                    if worker.hint_headers.iter().any(|h| h == other) {
                        facts.headers.push((name.to_owned(), value()));
                    }
                }
            }
        }
        // Whatever happens next, no inbound copy of a header only Tollgate may set (identity
        // headers, the gateway's route header) reaches the upstream. Only the ones present need
        // a host call.
        for header in &spoofed {
            host::remove_request_header(header);
        }
        if worker.needs_route_name {
            if !spoofed.is_empty() {
                // Envoy picked the route with the copy in place (a route may match on it, as
                // the gateway's routes match on the route header), and picks it again without
                // the copy once it is removed; the route name readable now is the first pick.
                // A policy chosen for it would not be the policy of the route the request is
                // sent on, so the request is refused (no legitimate client sends these).
                worker.refuse_request(self.context_id, &Denial::InvalidRequest(SPOOFED));
                self.stage = Stage::Held;
                return Action::Pause;
            }
            facts.route_name = host::route_name();
        }
        match gateway::start(&worker, &facts, end_of_stream) {
            Start::Call(action, call) => {
                self.stage = Stage::Gateway(call);
                if action == Action::Continue {
                    worker.continuing(self.context_id, now);
                }
                action
            }
            Start::Answered => {
                self.stage = Stage::Held;
                Action::Pause
            }
            Start::NotGateway => {
                if worker.reads_client_certificate {
                    facts.cert_x5t = client_certificate(source, &cert_values);
                }
                if let Some(header) = cert_header.filter(|_| !cert_values.is_empty()) {
                    // Read (where some route takes certificate-bound tokens), and never passed
                    // on: the upstream learns the binding from the identity header. (Gateway
                    // calls keep it: the authorization server reads it to bind tokens.)
                    host::remove_request_header(header);
                }
                let flow = worker.on_request(self.context_id, facts, now);
                self.stage = Stage::after_headers(flow);
                action(flow)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.later(|w, call| gateway::on_body(w, call, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.later(gateway::on_trailers)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &mut self.stage {
            Stage::Gateway(call) => with_worker(&self.worker, Action::Continue, |w| {
                gateway::on_response_headers(w, call)
            }),
            _ => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.stage {
            Stage::Gateway(call) => {
                let worker = self.worker.as_ref().and_then(|w| w.try_borrow().ok());
                gateway::on_response_body(worker.as_deref(), call, body_size, end_of_stream)
            }
            _ => Action::Continue,
        }
    }
}

/// The client certificate's `x5t#S256`: from the host's TLS connection
/// ([`connection_certificate`]), or from the one value of the trusted proxy's header (two
/// values: none, as a proxy sets exactly one).
fn client_certificate(source: &ClientCertificate, header_values: &[String]) -> Option<String> {
    match (source, header_values) {
        (ClientCertificate::Connection, _) => connection_certificate(),
        (_, [one]) => source.x5t_of_header(one),
        _ => None,
    }
}

/// The client certificate of the host's own TLS connection, where each host offers it:
/// - Envoy (since 1.38): `connection.sha256_peer_certificate_digest`, lower-case hex SHA-256
///   of the leaf's DER — no parsing;
/// - Kong (ngx_wasm_module, which lacks that attribute): nginx's `$ssl_client_escaped_cert`
///   (URL-encoded PEM) through its `ngx.*` properties;
/// - APISIX (wasm-nginx-module): the same variable, whose name is the property path there.
///
/// A connection without a certificate costs one call per source; once one source has given
/// a certificate, this VM asks only that one.
fn connection_certificate() -> Option<String> {
    const ENVOY: &[&str] = &["connection", "sha256_peer_certificate_digest"];
    const KONG: &[&str] = &["ngx", "ssl_client_escaped_cert"];
    const APISIX: &[&str] = &["ssl_client_escaped_cert"];
    const SOURCES: [&[&str]; 3] = [ENVOY, KONG, APISIX];
    thread_local! {
        static ANSWERED: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }
    let read = |i: usize| {
        let path = SOURCES.get(i)?;
        let text = host::property(path)?;
        ANSWERED.set(Some(i));
        if i == 0 {
            client_cert::x5t_of_hex_digest(&text)
        } else {
            client_cert::x5t_of_url_encoded_pem(&text)
        }
    };
    match ANSWERED.get() {
        Some(i) => read(i),
        None => (0..SOURCES.len()).find_map(read),
    }
}

/// Runs a gateway step with the worker; `without` when there is none (never configured, or
/// re-entered): `Pause` on the request path, where a gateway call must not continue unrouted.
fn with_worker(
    worker: &Option<Rc<RefCell<Worker>>>,
    without: Action,
    f: impl FnOnce(&Worker) -> Action,
) -> Action {
    match worker.as_ref().map(|w| w.try_borrow()) {
        Some(Ok(w)) => f(&w),
        _ => without,
    }
}
