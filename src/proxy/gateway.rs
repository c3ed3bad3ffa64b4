//! The OAuth endpoint gateway on the host: answers metadata and `authorize` itself, forwards the
//! other calls to the chosen authorization server (rewritten `:authority` / `:path`, the route
//! header the host's route table matches, `clear_route_cache`), reads bodies it needs (up to
//! the limit) and, with tagging on, tags values in responses. The decisions are in
//! [`crate::gateway`]; this is the glue.
//!
//! A call is routed or answered before any of it continues: one that needs its body to be
//! routed holds its body and trailers ([`Progress::ReadingBody`]) until the body is complete —
//! at its end, or at the trailers (HTTP/2) — and is then forwarded or refused. It never
//! continues unrouted, where the API upstream would get it with the client's credentials.

use proxy_wasm::types::Action;

use super::host;
use super::{OwnedFacts, Worker};
use crate::cache;
use crate::gateway::path::{self, Endpoint};
use crate::gateway::route::{self, Call, GatewayError};
use crate::gateway::{form, metadata};
use crate::origin;

/// A gateway call in progress (kept by the HTTP context between callbacks).
#[derive(Debug)]
pub struct GatewayCall {
    endpoint: Endpoint,
    path_issuer: Option<String>,
    client_config_id: Option<String>,
    query: Option<String>,
    authorization: Option<String>,
    selector_header: Option<String>,
    content_type: Option<String>,
    /// `:authority` as the client sent it: only to pick one of the configured public origins.
    authority: String,
    progress: Progress,
    /// The token a revocation call revokes (evicted once the server says 200).
    revoked_token: Option<String>,
    /// The response body is being buffered for tagging.
    tagging_response: bool,
}

/// Where a gateway call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Routing needs the whole body: the body (`size` bytes so far) and trailers are held.
    ReadingBody { size: usize },
    /// Forwarded to the issuer at `issuer`; `rewrites`: its response body is rewritten.
    Forwarded { issuer: usize, rewrites: bool },
    /// Answered by the gateway itself (refused, redirected, a metadata document): nothing of
    /// the request continues.
    Answered,
}

/// Answers a gateway call with an OAuth error (counted as `tollgate.gateway.refused`): the call
/// reaches no authorization server.
fn reply_error(worker: &Worker, e: &GatewayError) -> Action {
    worker.gateway_refused();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    if e.status == 503 {
        headers.push(("retry-after".to_owned(), "1".to_owned()));
    }
    if e.error == "invalid_client" {
        // RFC 6749 §5.2: a 401 invalid_client names the scheme the client should use.
        headers.push((
            "www-authenticate".to_owned(),
            "Basic realm=\"oauth\"".to_owned(),
        ));
    }
    host::send_response(e.status, &headers, &e.body());
    Action::Pause
}

/// What the HTTP context does after the request headers.
pub enum Start {
    /// Not a gateway path: API authentication applies.
    NotGateway,
    /// Answered by the gateway itself (a metadata document, an unknown endpoint): nothing of
    /// the request continues.
    Answered,
    /// A call to follow through its later callbacks, and the action for its headers.
    Call(Action, Box<GatewayCall>),
}

/// Starts handling a request if its path is under the gateway's base path.
pub fn start(worker: &Worker, facts: &OwnedFacts, end_of_stream: bool) -> Start {
    let Some(gw) = &worker.cfg.gateway else {
        return Start::NotGateway;
    };
    let (path_only, query) = match facts.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (facts.path.as_str(), None),
    };
    // Only paths below the base path: `/oauth2-docs` or `/oauth2` itself stay API paths.
    let below_base = path_only
        .strip_prefix(gw.base_path.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if !below_base {
        return Start::NotGateway;
    }
    let is_issuer = |n: &str| {
        worker
            .cfg
            .issuers
            .iter()
            .any(|i| i.name == n && i.gateway.is_some())
    };
    let Some(target) = path::parse(&gw.base_path, path_only, is_issuer) else {
        let e = GatewayError {
            status: 404,
            error: "invalid_request",
            description: "no such OAuth endpoint",
        };
        reply_error(worker, &e);
        return Start::Answered;
    };
    if matches!(
        target.endpoint,
        Endpoint::OidcDiscovery | Endpoint::AsMetadata
    ) {
        serve_metadata(worker, target.endpoint, target.issuer, &facts.authority);
        return Start::Answered;
    }
    let header = |name: &str| {
        facts
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let client_config_id = match target.client_id.map(route::path_client_id) {
        Some(Err(e)) => {
            reply_error(worker, &e);
            return Start::Answered;
        }
        Some(Ok(id)) => Some(id),
        None => None,
    };
    let mut call = Box::new(GatewayCall {
        endpoint: target.endpoint,
        path_issuer: target.issuer.map(str::to_owned),
        client_config_id,
        query: query.map(str::to_owned),
        authorization: facts.authorization.first().cloned(),
        selector_header: gw.selector_header.as_deref().and_then(header),
        content_type: header("content-type"),
        authority: facts.authority.clone(),
        progress: Progress::Answered,
        revoked_token: None,
        tagging_response: false,
    });
    let action = if target.endpoint.reads_body() && !end_of_stream {
        // Routing may depend on the form: hold everything until the body is complete.
        call.progress = Progress::ReadingBody { size: 0 };
        Action::Pause
    } else {
        forward(worker, &mut call, None)
    };
    Start::Call(action, call)
}

/// Request body callback of a gateway call.
pub fn on_body(
    worker: &Worker,
    call: &mut GatewayCall,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    match call.progress {
        Progress::Forwarded { .. } => return Action::Continue,
        Progress::Answered => return Action::Pause,
        Progress::ReadingBody { .. } => {}
    }
    call.progress = Progress::ReadingBody { size: body_size };
    let limit = worker.cfg.gateway.as_ref().map_or(0, |g| g.max_body_bytes);
    if body_size > limit {
        call.progress = Progress::Answered;
        return reply_error(worker, &route::BODY_TOO_LARGE);
    }
    if !end_of_stream {
        return Action::Pause;
    }
    route_with_body(worker, call, body_size)
}

/// Request trailers of a gateway call: a call still reading its body (HTTP/2 trailers end the
/// stream after the last DATA frame) is routed now, with the body it has.
pub fn on_trailers(worker: &Worker, call: &mut GatewayCall) -> Action {
    match call.progress {
        Progress::Forwarded { .. } => Action::Continue,
        Progress::Answered => Action::Pause,
        Progress::ReadingBody { size } => route_with_body(worker, call, size),
    }
}

/// Routes a call whose whole body (`body_size` bytes, held by the host) has arrived.
fn route_with_body(worker: &Worker, call: &mut GatewayCall, body_size: usize) -> Action {
    let body = host::request_body(body_size);
    let is_form = call.content_type.as_deref().is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let pairs = if call.endpoint == Endpoint::Register {
        None
    } else if is_form {
        match form::parse(&body) {
            Some(p) => Some(p),
            None => return answer(worker, call, &route::MALFORMED_FORM),
        }
    } else {
        let e = GatewayError {
            status: 400,
            error: "invalid_request",
            description: "the body must be application/x-www-form-urlencoded",
        };
        return answer(worker, call, &e);
    };
    let action = forward(worker, call, pairs.as_deref());
    if action == Action::Continue {
        // The whole body is known: forwarded with its length, also when the client streamed it
        // (HTTP/2 without content-length, chunked), since many authorization servers (WSGI
        // ones among them) cannot read a chunked request body.
        let length = match call_body_rewrite(worker, call, pairs.as_deref()) {
            Some(new_body) => {
                host::replace_request_body(body_size, new_body.as_bytes());
                new_body.len()
            }
            None => body.len(),
        };
        host::set_request_header("content-length", &length.to_string());
    }
    action
}

/// Refuses the call with an OAuth error; nothing of it continues.
fn answer(worker: &Worker, call: &mut GatewayCall, e: &GatewayError) -> Action {
    call.progress = Progress::Answered;
    reply_error(worker, e)
}

fn as_call<'c>(call: &'c GatewayCall, form: Option<&'c [(String, String)]>) -> Call<'c> {
    Call {
        path_issuer: call.path_issuer.as_deref(),
        query: call.query.as_deref(),
        form,
        selector_header: call.selector_header.as_deref(),
        authorization: call.authorization.as_deref(),
        path_client_id: call.client_config_id.as_deref(),
    }
}

fn call_body_rewrite(
    worker: &Worker,
    call: &GatewayCall,
    form: Option<&[(String, String)]>,
) -> Option<String> {
    let gw = worker.cfg.gateway.as_ref()?;
    route::rewrite(&worker.cfg, gw, call.endpoint, &as_call(call, form)).body
}

/// Chooses the server and forwards (or, for `authorize`, redirects). Sets the call's progress:
/// forwarded on `Continue`, answered otherwise.
fn forward(worker: &Worker, call: &mut GatewayCall, form: Option<&[(String, String)]>) -> Action {
    call.progress = Progress::Answered;
    let Some(gw) = &worker.cfg.gateway else {
        return Action::Pause;
    };
    let view = as_call(call, form);
    let idx = match route::choose(&worker.cfg, gw, call.endpoint, &view) {
        Ok(idx) => idx,
        Err(e) => return reply_error(worker, &e),
    };
    let issuer = &worker.cfg.issuers[idx];
    let as_doc = worker.issuer_metadata(idx);
    log::debug!(
        "tollgate: gateway {:?} -> issuer {} (metadata {})",
        call.endpoint,
        issuer.name,
        if as_doc.is_some() {
            "known"
        } else {
            "not known"
        }
    );
    let name = match call.endpoint {
        Endpoint::Authorize => "authorization_endpoint",
        Endpoint::Token => "token_endpoint",
        Endpoint::Introspect => "introspection_endpoint",
        Endpoint::Revoke => "revocation_endpoint",
        Endpoint::Userinfo => "userinfo_endpoint",
        Endpoint::Register | Endpoint::ClientConfiguration => "registration_endpoint",
        Endpoint::OidcDiscovery | Endpoint::AsMetadata => return Action::Pause,
    };
    let Some(mut url) = metadata::endpoint_url(issuer, as_doc.as_ref(), name) else {
        let wanted = issuer
            .gateway
            .as_ref()
            .is_some_and(|g| g.metadata.is_some());
        return reply_error(
            worker,
            if wanted && as_doc.is_none() {
                &route::NOT_READY
            } else {
                &route::NO_ENDPOINT
            },
        );
    };
    let rewrite = route::rewrite(&worker.cfg, gw, call.endpoint, &view);
    if call.endpoint == Endpoint::ClientConfiguration {
        let id = rewrite.path_client_id.as_deref().unwrap_or_default();
        match route::client_configuration_url(&url, id) {
            Ok(u) => url = u,
            Err(e) => return reply_error(worker, &e),
        }
    }
    worker.gateway_forwarded(idx, call.endpoint);
    let (authority, path) = route::target(&url, rewrite.query.as_deref());
    if call.endpoint == Endpoint::Authorize {
        // The browser goes to the server itself, every parameter as it sent them.
        let location = format!("{}://{authority}{path}", url.scheme());
        let headers = [
            ("location".to_owned(), location),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        host::send_response(302, &headers, "");
        return Action::Pause;
    }
    if call.endpoint == Endpoint::Revoke {
        // Evicted only when the server confirms (a 200): an unauthenticated or refused call
        // changes nothing. An introspection answered before the revocation and landing after
        // it is not cached (see the introspection job's epoch).
        call.revoked_token = form.and_then(|f| form::get(f, "token")).map(str::to_owned);
    }
    host::set_request_header(":authority", &authority);
    host::set_request_header(":path", &path);
    host::set_request_header(&gw.route_header, &issuer.name);
    if let Some(a) = &rewrite.authorization {
        host::set_request_header("authorization", a);
    }
    host::clear_route_cache();
    let rewrites = match call.endpoint {
        Endpoint::Token => gw.tagging,
        Endpoint::Register | Endpoint::ClientConfiguration => true,
        _ => false,
    };
    call.progress = Progress::Forwarded {
        issuer: idx,
        rewrites,
    };
    Action::Continue
}

/// The gateway's metadata document for the issuer the path names (or the default issuer),
/// with the public origin the request reached. A host that is none of the configured public
/// origins gets no document.
fn serve_metadata(
    worker: &Worker,
    endpoint: Endpoint,
    path_issuer: Option<&str>,
    authority: &str,
) -> Action {
    let Some(gw) = &worker.cfg.gateway else {
        return Action::Pause;
    };
    let Some(origin) = origin::for_authority(&gw.public_origins, authority) else {
        return reply_error(worker, &UNKNOWN_HOST);
    };
    let base_path = format!("{}{}", origin.origin, gw.base_path);
    let (idx, base) = match (path_issuer, gw.default_issuer) {
        (Some(name), _) => match worker.cfg.issuers.iter().position(|i| i.name == name) {
            Some(idx) => (idx, format!("{base_path}/{name}")),
            None => return reply_error(worker, &route::UNKNOWN_SELECTOR),
        },
        (None, Some(idx)) => (idx, base_path),
        (None, None) => {
            return reply_error(
                worker,
                &GatewayError {
                    status: 404,
                    error: "invalid_request",
                    description: "no default authorization server: use /{issuer}/.well-known/...",
                },
            )
        }
    };
    let issuer = &worker.cfg.issuers[idx];
    let as_doc = worker.issuer_metadata(idx);
    if issuer
        .gateway
        .as_ref()
        .is_some_and(|g| g.metadata.is_some())
        && as_doc.is_none()
    {
        return reply_error(worker, &route::NOT_READY);
    }
    worker.gateway_forwarded(idx, endpoint);
    let doc = metadata::document(issuer, as_doc.as_ref(), &base);
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    host::send_response(200, &headers, &doc.to_string());
    Action::Pause
}

/// A metadata document asked for under a host that is not one of the gateway's public origins.
const UNKNOWN_HOST: GatewayError = GatewayError {
    status: 404,
    error: "invalid_request",
    description: "no OAuth metadata is published for this host",
};

/// Response headers of a forwarded call: a confirmed revocation evicts the token; a body to
/// rewrite is buffered.
pub fn on_response_headers(worker: &Worker, call: &mut GatewayCall) -> Action {
    let status = host::response_header(":status");
    if let (Some(token), Some("200")) = (&call.revoked_token, status.as_deref()) {
        worker.evict(&token_keys(worker, token));
    }
    let Progress::Forwarded { rewrites: true, .. } = call.progress else {
        return Action::Continue;
    };
    if matches!(status.as_deref(), Some("200" | "201")) {
        call.tagging_response = true;
        host::remove_response_header("content-length");
    }
    Action::Continue
}

/// Response body of a forwarded call: tag client ids / opaque tokens and point client
/// configuration URIs at the gateway once it is complete.
pub fn on_response_body(
    worker: &Worker,
    call: &GatewayCall,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let (true, Progress::Forwarded { issuer: idx, .. }) = (call.tagging_response, call.progress)
    else {
        return Action::Continue;
    };
    if !end_of_stream {
        return Action::Pause;
    }
    let Some(gw) = &worker.cfg.gateway else {
        return Action::Continue;
    };
    // The origin the client reached, else the first configured one: never the Host itself.
    let Some(origin) =
        origin::for_authority(&gw.public_origins, &call.authority).or(gw.public_origins.first())
    else {
        return Action::Continue;
    };
    let body = host::response_body(body_size);
    let name = &worker.cfg.issuers[idx].name;
    let client_base = format!("{}{}/{name}/register", origin.origin, gw.base_path);
    if let Some(new) = route::rewrite_response(call.endpoint, name, gw.tagging, &client_base, &body)
    {
        host::replace_response_body(body_size, &new);
    }
    Action::Continue
}

/// The cache key(s) of a token as API clients present it (tagged and untagged).
pub fn token_keys(worker: &Worker, token: &str) -> Vec<cache::CacheKey> {
    let mut keys = vec![cache::key_for(&worker.cfg.fingerprint, token)];
    if let Some((_, bare)) = crate::issuer::tagged(&worker.cfg, token) {
        keys.push(cache::key_for(&worker.cfg.fingerprint, bare));
    }
    keys
}
