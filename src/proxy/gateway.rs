//! The OAuth endpoint gateway on the host: carries out the [`Step`]s of [`gateway::plan()`] —
//! sends its local replies, sets the forwarded call's headers and body and clears the route
//! cache, evicts a revoked token (and its grant's), reads token answers for their grant,
//! rewrites answers — and counts them. Every decision is the
//! core's; this module keeps only where a call stands between callbacks (`Progress`).
//!
//! What it needs of the worker: the configuration, [`Worker::issuer_documents`], the gateway
//! counters ([`Worker::gateway_forwarded`], [`Worker::gateway_refused`]),
//! [`Worker::revoked`] and [`Worker::remember_grant`].
//!
//! A call that needs its body to be routed holds its body and trailers
//! (`Progress::ReadingBody`) until the body is complete — at its end, or at the trailers
//! (HTTP/2) — and is then forwarded or refused: it never continues unrouted.

use proxy_wasm::types::Action;

use super::host;
use super::{OwnedFacts, Worker};
use crate::gateway;
use crate::gateway::grants::GrantCall;
use crate::gateway::plan::{Body, Forward, OnResponse, Request, ResponseRewrite, Step};
use crate::outcome::{self, GatewayError, LocalReply};

/// A gateway call in progress (kept by the HTTP context between callbacks).
#[derive(Debug)]
pub struct GatewayCall {
    progress: Progress,
}

/// Where a gateway call stands.
#[derive(Debug)]
enum Progress {
    /// Routing needs the whole body: the body (`size` bytes so far) and trailers are held, and
    /// the request's headers kept to plan again.
    ReadingBody { facts: Box<OwnedFacts>, size: usize },
    /// Sent on to its server; its response may need an eviction or a rewrite.
    Forwarded(OnResponse),
    /// Sent on, and the server's answer is buffered to be rewritten and/or read for its grant.
    ReadingResponse(Option<ResponseRewrite>, Option<GrantCall>),
    /// Answered by the gateway itself (refused, redirected, a metadata document): nothing of
    /// the request continues.
    Answered,
}

impl Progress {
    /// The action for the request's later callbacks (body, trailers).
    fn action(&self) -> Action {
        match self {
            Progress::Forwarded(_) | Progress::ReadingResponse(..) => Action::Continue,
            Progress::ReadingBody { .. } | Progress::Answered => Action::Pause,
        }
    }
}

/// What the HTTP context does after the request headers.
pub enum Start {
    /// Not a gateway path: API authentication applies.
    NotGateway,
    /// Answered by the gateway itself (a refusal, a redirect, a metadata document): nothing of
    /// the request continues.
    Answered,
    /// A call to follow through its later callbacks, and the action for its headers.
    Call(Action, Box<GatewayCall>),
}

/// Plans the request with the worker's configuration and issuer metadata.
fn plan(worker: &Worker, facts: &OwnedFacts, body: Body<'_>) -> Step {
    let request = Request {
        method: &facts.method,
        path: &facts.path,
        authority: &facts.authority,
        authorization: facts.authorization.first().map(String::as_str),
        headers: &facts.headers,
    };
    gateway::plan(&worker.cfg, &request, body, |idx| {
        worker.issuer_documents(idx)
    })
}

/// Starts handling a request if its path is under the gateway's base path.
pub fn start(worker: &Worker, facts: &OwnedFacts, end_of_stream: bool) -> Start {
    let body = if end_of_stream {
        Body::Absent
    } else {
        Body::Partial(0)
    };
    let progress = match plan(worker, facts, body) {
        Step::NotMine => return Start::NotGateway,
        Step::NeedBody => Progress::ReadingBody {
            facts: Box::new(facts.clone()),
            size: 0,
        },
        step => carry_out(worker, step, 0),
    };
    match progress {
        Progress::Answered => Start::Answered,
        progress => Start::Call(progress.action(), Box::new(GatewayCall { progress })),
    }
}

/// Request body callback of a gateway call: a call reading its body is planned again with the
/// size so far (refused once over the limit), and with the body itself once it is complete.
pub fn on_body(
    worker: &Worker,
    call: &mut GatewayCall,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let Progress::ReadingBody { facts, .. } = &call.progress else {
        return call.progress.action();
    };
    let mut step = plan(worker, facts, Body::Partial(body_size));
    if end_of_stream && matches!(step, Step::NeedBody) {
        step = plan_whole(worker, facts, body_size);
    }
    call.follow(worker, step, body_size)
}

/// Request trailers of a gateway call: a call still reading its body (HTTP/2 trailers end the
/// stream after the last DATA frame) is planned now, with the body it has.
pub fn on_trailers(worker: &Worker, call: &mut GatewayCall) -> Action {
    let Progress::ReadingBody { facts, size } = &call.progress else {
        return call.progress.action();
    };
    let size = *size;
    let step = plan_whole(worker, facts, size);
    call.follow(worker, step, size)
}

/// Plans a call with its whole body (`size` bytes, held by the host); refused if the host does
/// not hand all of it over.
fn plan_whole(worker: &Worker, facts: &OwnedFacts, size: usize) -> Step {
    let body = host::request_body(size);
    if body.len() != size {
        return Step::Refuse(GatewayError::BodyUnreadable);
    }
    plan(worker, facts, Body::Complete(&body))
}

impl GatewayCall {
    /// Carries out the step planned for a call reading its body (`body_size` bytes held).
    fn follow(&mut self, worker: &Worker, step: Step, body_size: usize) -> Action {
        match step {
            Step::NeedBody => {
                if let Progress::ReadingBody { size, .. } = &mut self.progress {
                    *size = body_size;
                }
            }
            // Not produced for a request planned before (its path is the same): held, never
            // continued unrouted.
            Step::NotMine => self.progress = Progress::Answered,
            step => self.progress = carry_out(worker, step, body_size),
        }
        self.progress.action()
    }
}

/// Carries out a step that answers or forwards the request (`body_size`: the body held, which a
/// forwarded call's new body replaces); returns where the call then stands.
fn carry_out(worker: &Worker, step: Step, body_size: usize) -> Progress {
    match step {
        Step::Forward(f) => forward(worker, *f, body_size),
        Step::Refuse(e) => {
            worker.gateway_refused();
            send(&outcome::gateway_reply(e));
            Progress::Answered
        }
        Step::Reply { to, reply } | Step::Redirect { to, reply } => {
            worker.gateway_forwarded(to.issuer, to.endpoint);
            send(&reply);
            Progress::Answered
        }
        // The callers' to handle (see `start` and `GatewayCall::follow`).
        Step::NotMine | Step::NeedBody => Progress::Answered,
    }
}

/// Sends a local reply; a host that refuses it leaves the request paused.
fn send(reply: &LocalReply) {
    if !host::send_response(reply.status, &reply.headers, &reply.body) {
        log::warn!("tollgate: the host refused the gateway's local reply");
    }
}

/// Rewrites the request into the call to the server and lets the host route it again.
fn forward(worker: &Worker, f: Forward, body_size: usize) -> Progress {
    worker.gateway_forwarded(f.to.issuer, f.to.endpoint);
    log::debug!(
        "tollgate: gateway {:?} -> issuer {}",
        f.to.endpoint,
        f.route_header.1
    );
    for (name, value) in f.headers() {
        host::set_request_header(name, value);
    }
    if let Some(body) = &f.body {
        if let Some(new_body) = &body.replacement {
            host::replace_request_body(body_size, new_body.as_bytes());
        }
        host::set_request_header("content-length", &body.content_length.to_string());
    }
    host::clear_route_cache();
    Progress::Forwarded(f.response)
}

/// Response headers of a forwarded call: a confirmed revocation evicts the token and its
/// grant's; a body to rewrite, or a token answer to remember, is buffered.
pub fn on_response_headers(worker: &Worker, call: &mut GatewayCall) -> Action {
    let Progress::Forwarded(response) = &call.progress else {
        return Action::Continue;
    };
    let status = host::response_header(":status");
    let evictions = response.to_evict(status.as_deref());
    if !evictions.is_empty() {
        worker.revoked(evictions, host::now_ms());
    }
    let rewrite = response.rewrite_for(status.as_deref()).cloned();
    let grant = response.grant.filter(|_| status.as_deref() == Some("200"));
    if rewrite.is_some() {
        host::remove_response_header("content-length");
    }
    if rewrite.is_some() || grant.is_some() {
        call.progress = Progress::ReadingResponse(rewrite, grant);
    }
    Action::Continue
}

/// Response body of a forwarded call, once it is complete: a token answer's grant is
/// remembered (with the worker), then the body is rewritten.
pub fn on_response_body(
    worker: Option<&Worker>,
    call: &GatewayCall,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let Progress::ReadingResponse(rewrite, grant) = &call.progress else {
        return Action::Continue;
    };
    if !end_of_stream {
        return Action::Pause;
    }
    let body = host::response_body(body_size);
    if let (Some(worker), Some(grant)) = (worker, grant) {
        worker.remember_grant(grant, &body, host::now_ms());
    }
    if let Some(new) = rewrite.as_ref().and_then(|r| r.apply(&body)) {
        host::replace_response_body(body_size, &new);
    }
    Action::Continue
}
