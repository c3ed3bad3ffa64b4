//! The OAuth endpoint gateway on the host: answers metadata and `authorize` itself, forwards the
//! other calls to the chosen authorization server (rewritten `:authority` / `:path`, the route
//! header the host's route table matches, `clear_route_cache`), reads bodies it needs (up to
//! the limit) and, with tagging on, tags values in responses. The decisions are in
//! [`crate::gateway`]; this is the glue.

use proxy_wasm::types::Action;

use super::host;
use super::worker::{OwnedFacts, Worker};
use crate::cache;
use crate::gateway::path::{self, Endpoint};
use crate::gateway::route::{self, Call, GatewayError};
use crate::gateway::{form, metadata};

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
    /// `scheme://authority` of the gateway as the client called it.
    origin: String,
    /// The issuer the call was forwarded to, and whether its response body is rewritten.
    forwarded: Option<(usize, bool)>,
    /// The token a revocation call revokes (evicted once the server says 200).
    revoked_token: Option<String>,
    /// The response body is being buffered for tagging.
    tagging_response: bool,
}

/// What the HTTP context does after the request headers.
pub enum Start {
    /// Not a gateway path: API authentication applies.
    NotGateway,
    /// Answered or forwarded; keep the call for the body / response callbacks.
    Handled(Action, Option<Box<GatewayCall>>),
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

/// Starts handling a request if its path is under the gateway's base path.
pub fn start(worker: &Worker, facts: &OwnedFacts, end_of_stream: bool) -> Start {
    let Some(gw) = &worker.cfg.gateway else {
        return Start::NotGateway;
    };
    let (path_only, query) = match facts.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (facts.path.as_str(), None),
    };
    let is_issuer = |n: &str| {
        worker
            .cfg
            .issuers
            .iter()
            .any(|i| i.name == n && i.gateway.is_some())
    };
    // Only paths below the base path: `/oauth2-docs` or `/oauth2` itself stay API paths.
    let below_base = path_only
        .strip_prefix(gw.base_path.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if !below_base {
        return Start::NotGateway;
    }
    let Some(target) = path::parse(&gw.base_path, path_only, is_issuer) else {
        let e = GatewayError {
            status: 404,
            error: "invalid_request",
            description: "no such OAuth endpoint",
        };
        return Start::Handled(reply_error(worker, &e), None);
    };
    let header = |name: &str| {
        facts
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let client_config_id = match target.client_id.map(route::path_client_id) {
        Some(Err(e)) => return Start::Handled(reply_error(worker, &e), None),
        Some(Ok(id)) => Some(id),
        None => None,
    };
    let mut call = GatewayCall {
        endpoint: target.endpoint,
        path_issuer: target.issuer.map(str::to_owned),
        client_config_id,
        query: query.map(str::to_owned),
        authorization: facts.authorization.first().cloned(),
        selector_header: gw.selector_header.as_deref().and_then(header),
        content_type: header("content-type"),
        origin: String::new(),
        forwarded: None,
        revoked_token: None,
        tagging_response: false,
    };
    let scheme = header("x-forwarded-proto")
        .or_else(|| header(":scheme"))
        .unwrap_or_else(|| "http".to_owned());
    call.origin = format!("{scheme}://{}", facts.authority);
    if matches!(
        target.endpoint,
        Endpoint::OidcDiscovery | Endpoint::AsMetadata
    ) {
        return Start::Handled(serve_metadata(worker, &call), None);
    }
    if target.endpoint.reads_body() && !end_of_stream {
        // Routing may depend on the form: wait for the whole body (on_body).
        return Start::Handled(Action::Pause, Some(Box::new(call)));
    }
    let action = forward(worker, &mut call, None);
    Start::Handled(action, Some(Box::new(call)))
}

/// Request body callback of a gateway call waiting for its body.
pub fn on_body(
    worker: &Worker,
    call: &mut GatewayCall,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    if call.forwarded.is_some() {
        return Action::Continue;
    }
    let limit = worker.cfg.gateway.as_ref().map_or(0, |g| g.max_body_bytes);
    if body_size > limit {
        return reply_error(worker, &route::BODY_TOO_LARGE);
    }
    if !end_of_stream {
        return Action::Pause;
    }
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
            None => return reply_error(worker, &route::MALFORMED_FORM),
        }
    } else {
        return reply_error(
            worker,
            &GatewayError {
                status: 400,
                error: "invalid_request",
                description: "the body must be application/x-www-form-urlencoded",
            },
        );
    };
    let action = forward(worker, call, pairs.as_deref());
    if let (Action::Continue, Some(new_body)) =
        (action, call_body_rewrite(worker, call, pairs.as_deref()))
    {
        host::replace_request_body(body_size, new_body.as_bytes());
        host::set_request_header("content-length", &new_body.len().to_string());
    }
    action
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

/// Chooses the server and forwards (or, for `authorize`, redirects).
fn forward(worker: &Worker, call: &mut GatewayCall, form: Option<&[(String, String)]>) -> Action {
    let Some(gw) = &worker.cfg.gateway else {
        return Action::Continue;
    };
    let view = as_call(call, form);
    let idx = match route::choose(&worker.cfg, gw, call.endpoint, &view) {
        Ok(idx) => idx,
        Err(e) => {
            return reply_error(worker, &e);
        }
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
        Endpoint::OidcDiscovery | Endpoint::AsMetadata => return Action::Continue,
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
    call.forwarded = Some((idx, rewrites));
    Action::Continue
}

fn serve_metadata(worker: &Worker, call: &GatewayCall) -> Action {
    let Some(gw) = &worker.cfg.gateway else {
        return Action::Continue;
    };
    let origin = format!("{}{}", call.origin, gw.base_path);
    let (idx, base) = match (&call.path_issuer, gw.default_issuer) {
        (Some(name), _) => match worker.cfg.issuers.iter().position(|i| &i.name == name) {
            Some(idx) => (idx, format!("{origin}/{name}")),
            None => return reply_error(worker, &route::UNKNOWN_SELECTOR),
        },
        (None, Some(idx)) => (idx, origin),
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
    worker.gateway_forwarded(idx, call.endpoint);
    let doc = metadata::document(issuer, as_doc.as_ref(), &base);
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    host::send_response(200, &headers, &doc.to_string());
    Action::Pause
}

/// Response headers of a forwarded call: a confirmed revocation evicts the token; a body to
/// rewrite is buffered.
pub fn on_response_headers(worker: &Worker, call: &mut GatewayCall) -> Action {
    let status = host::response_header(":status");
    if let (Some(token), Some("200")) = (&call.revoked_token, status.as_deref()) {
        worker.evict(token);
    }
    let Some((_, true)) = call.forwarded else {
        return Action::Continue;
    };
    if matches!(status.as_deref(), Some("200" | "201")) {
        call.tagging_response = true;
        host::remove_response_header("content-length");
    }
    Action::Continue
}

/// Response body of a forwarded call: tag client ids / opaque tokens once it is complete.
pub fn on_response_body(
    worker: &Worker,
    call: &GatewayCall,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let (true, Some((idx, _))) = (call.tagging_response, call.forwarded) else {
        return Action::Continue;
    };
    if !end_of_stream {
        return Action::Pause;
    }
    let body = host::response_body(body_size);
    let name = &worker.cfg.issuers[idx].name;
    let Some(gw) = &worker.cfg.gateway else {
        return Action::Continue;
    };
    let client_base = format!("{}{}/{name}/register", call.origin, gw.base_path);
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
