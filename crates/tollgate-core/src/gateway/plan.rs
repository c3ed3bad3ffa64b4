//! The gateway's decision for one call, as a value. [`plan`] reads the request, and its body
//! once the body is whole, and returns the [`Step`] the host adapter carries out: not a gateway
//! call, read the body first, refuse with an OAuth error, answer with a metadata document,
//! redirect the browser (`authorize`), or forward (where to, the route header, the rewritten
//! `Authorization` and body, and what to do with the response).
//!
//! It makes no host call and keeps no state between callbacks: the adapter calls it again with
//! the same request when more of the body has arrived, and passes the issuers' metadata
//! documents in through a lookup.
//!
//! A call is routed or answered before any of it continues: a call whose endpoint reads its
//! body gets [`Step::NeedBody`] until the body is complete, so it never goes on unrouted, where
//! the API upstream would get it with the client's credentials.

use super::grants::GrantCall;
use super::route::{self, Call};
use super::{form, metadata, path};
use crate::cache::{self, CacheKey};
use crate::config::{FilterConfig, Gateway, Issuer};
use crate::endpoint::Endpoint;
use crate::origin;
use crate::outcome::{GatewayError, LocalReply};

pub use super::metadata::{Document, Documents};

/// What the gateway reads of a request's headers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    /// `:method`.
    pub method: &'r str,
    /// `:path`, with its query.
    pub path: &'r str,
    /// `:authority` as the client sent it: it only picks one of the configured public origins.
    pub authority: &'r str,
    /// The first `Authorization` header.
    pub authorization: Option<&'r str>,
    /// Other headers (lower-case names): the gateway reads `content-type` and its
    /// `selector_header`.
    pub headers: &'r [(String, String)],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The request body, as far as it has arrived.
#[derive(Debug, Clone, Copy)]
pub enum Body<'b> {
    /// The request has none: its headers ended the stream.
    Absent,
    /// Still arriving: `size` bytes so far, held by the host.
    Partial(usize),
    /// The whole body.
    Complete(&'b [u8]),
}

/// The issuer a call was routed to, and the endpoint: what its counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub issuer: usize,
    pub endpoint: Endpoint,
}

/// What the adapter does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Not under the gateway's base path: API authentication applies.
    NotMine,
    /// Routing needs the whole body: hold the body and trailers, and plan again when it is
    /// complete (or has grown).
    NeedBody,
    /// Refused with an OAuth error ([`crate::outcome::gateway_reply`]): no server is reached.
    Refuse(GatewayError),
    /// Answered by the gateway itself: `to.issuer`'s metadata document.
    Reply { to: Routed, reply: LocalReply },
    /// A browser-facing endpoint (`authorize`, `end_session`): the browser is sent to the
    /// server itself, every parameter as sent (a 302; a 307 for a POST, which the browser
    /// sends again, body and all).
    Redirect { to: Routed, reply: LocalReply },
    /// Sent on to the server.
    Forward(Box<Forward>),
}

/// A call sent on to its authorization server.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub to: Routed,
    /// The server's `:authority`.
    pub authority: String,
    /// The server's `:path`: its endpoint's path and query, then the forwarded query.
    pub path: String,
    /// The route header and its value (the issuer's name), which the host's route table
    /// matches to send the call to the server's upstream.
    pub route_header: (String, String),
    /// A new `Authorization` value, when a routing tag came off the client id or the token.
    pub authorization: Option<String>,
    /// For a call whose body was read: how it is sent on.
    pub body: Option<ForwardBody>,
    /// What the server's response needs.
    pub response: OnResponse,
}

impl Forward {
    /// The request headers that route the call, in order: `:authority`, `:path`, the route
    /// header, and a new `Authorization` if there is one (`content-length` is the body's,
    /// [`ForwardBody::content_length`]).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        [
            (":authority", self.authority.as_str()),
            (":path", self.path.as_str()),
            (self.route_header.0.as_str(), self.route_header.1.as_str()),
        ]
        .into_iter()
        .chain(self.authorization.as_deref().map(|a| ("authorization", a)))
    }
}

/// The body of a call that was read whole before it was forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardBody {
    /// A new body, when the form changed; `None`: the body goes as it came.
    pub replacement: Option<String>,
    /// The `content-length` to send: also when the client streamed the body (HTTP/2 without
    /// content-length, chunked), since many authorization servers (WSGI ones among them)
    /// cannot read a chunked request body.
    pub content_length: usize,
}

/// What a forwarded call's response needs, by its status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnResponse {
    /// A revocation's token, as API clients present it (tagged and untagged): its cache keys.
    pub evictions: Vec<CacheKey>,
    /// How a successful answer's body is rewritten.
    pub rewrite: Option<ResponseRewrite>,
    /// A token call: its successful answer is read to remember its grant
    /// ([`super::grants`]).
    pub grant: Option<GrantCall>,
}

impl OnResponse {
    /// The cache keys to evict after a response with `status`: a revocation's, once the server
    /// confirms it (200). An unauthenticated or refused revocation changes nothing; an
    /// introspection answered before the revocation and landing after it is not cached (see
    /// the introspection job's epoch).
    pub fn to_evict(&self, status: Option<&str>) -> &[CacheKey] {
        match status {
            Some("200") => &self.evictions,
            _ => &[],
        }
    }

    /// The rewrite a response with `status` gets: only a success (200, 201) is rewritten.
    pub fn rewrite_for(&self, status: Option<&str>) -> Option<&ResponseRewrite> {
        self.rewrite
            .as_ref()
            .filter(|_| matches!(status, Some("200" | "201")))
    }
}

/// How a forwarded call's successful answer is rewritten ([`route::rewrite_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRewrite {
    endpoint: Endpoint,
    issuer_name: String,
    tagging: bool,
    /// The gateway's `.../{issuer}/register` at the public origin the client reached, else
    /// the first configured one: never the `Host` itself.
    client_base: String,
}

impl ResponseRewrite {
    /// The body as the client must see it; `None` when nothing changes.
    pub fn apply(&self, body: &[u8]) -> Option<Vec<u8>> {
        route::rewrite_response(
            self.endpoint,
            &self.issuer_name,
            self.tagging,
            &self.client_base,
            body,
        )
    }
}

/// Decides a request: see the module docs. `metadata` gives an issuer's metadata documents as
/// far as the gateway holds them (the documents it serves, and where calls go).
pub fn plan(
    cfg: &FilterConfig,
    request: &Request<'_>,
    body: Body<'_>,
    metadata: impl Fn(usize) -> Documents,
) -> Step {
    let Some(gw) = &cfg.gateway else {
        return Step::NotMine;
    };
    let (path_only, query) = match request.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (request.path, None),
    };
    let planner = Planner {
        cfg,
        gw,
        request,
        metadata: &metadata,
    };
    // RFC 8414 §3.1: `/.well-known/oauth-authorization-server` inserted before the path of
    // the gateway's per-issuer base (`/oauth2/as1`), or of the base itself (default issuer).
    if let Some(rest) = path_only.strip_prefix(INSERTED_AS_METADATA) {
        if let Some(after_base) = rest.strip_prefix(gw.base_path.as_str()) {
            let issuer = match after_base.strip_prefix('/') {
                None if after_base.is_empty() => Some(None),
                Some(name) if !name.is_empty() && !name.contains('/') => Some(Some(name)),
                _ => None,
            };
            if let Some(issuer) = issuer {
                return planner
                    .document(Endpoint::AsMetadata, issuer)
                    .unwrap_or_else(Step::Refuse);
            }
        }
    }
    // Only paths below the base path: `/oauth2-docs` or `/oauth2` itself stay API paths.
    let below_base = path_only
        .strip_prefix(gw.base_path.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if !below_base {
        return Step::NotMine;
    }
    planner
        .plan(path_only, query, body)
        .unwrap_or_else(Step::Refuse)
}

/// One [`plan`] call's inputs.
struct Planner<'a> {
    cfg: &'a FilterConfig,
    gw: &'a Gateway,
    request: &'a Request<'a>,
    metadata: &'a dyn Fn(usize) -> Documents,
}

/// The RFC 8414 §3.1 well-known prefix, inserted before an issuer's path.
const INSERTED_AS_METADATA: &str = "/.well-known/oauth-authorization-server";

impl Planner<'_> {
    fn plan(&self, path: &str, query: Option<&str>, body: Body<'_>) -> Result<Step, GatewayError> {
        let is_issuer = |n: &str| route::index_of(self.cfg, n).is_some();
        let target =
            path::parse(&self.gw.base_path, path, is_issuer).ok_or(GatewayError::NoSuchEndpoint)?;
        let endpoint = target.endpoint;
        if endpoint.is_metadata() {
            return self.document(endpoint, target.issuer);
        }
        let path_client_id = target.client_id.map(route::path_client_id).transpose()?;
        let (form, read) = match body {
            _ if !endpoint.reads_body(self.request.method) => (None, None),
            Body::Absent => (None, None),
            Body::Partial(size) if size > self.gw.max_body_bytes => {
                return Err(GatewayError::BodyTooLarge)
            }
            Body::Partial(_) => return Ok(Step::NeedBody),
            Body::Complete(b) if b.len() > self.gw.max_body_bytes => {
                return Err(GatewayError::BodyTooLarge)
            }
            Body::Complete(b) => (self.form(endpoint, b)?, Some(b)),
        };
        let call = Call {
            path_issuer: target.issuer,
            query,
            form: form.as_deref(),
            selector_header: self
                .gw
                .selector_header
                .as_deref()
                .and_then(|h| self.request.header(h)),
            authorization: self.request.authorization,
            path_client_id: path_client_id.as_deref(),
        };
        self.forward(endpoint, &call, read)
    }

    /// The decoded form of a body read whole (`None` for registration's JSON).
    fn form(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Option<Vec<(String, String)>>, GatewayError> {
        if !endpoint.takes_form() {
            return Ok(None);
        }
        let is_form = self.request.header("content-type").is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        if !is_form {
            return Err(GatewayError::NotAForm);
        }
        form::parse(body)
            .map(Some)
            .ok_or(GatewayError::MalformedForm)
    }

    /// Chooses the server and forwards the call (or, for `authorize`, redirects).
    fn forward(
        &self,
        endpoint: Endpoint,
        call: &Call<'_>,
        read: Option<&[u8]>,
    ) -> Result<Step, GatewayError> {
        let idx = route::choose(self.cfg, self.gw, endpoint, call)?;
        let issuer = self.cfg.issuers.get(idx).ok_or(GatewayError::NoRoute)?;
        let docs = (self.metadata)(idx);
        let field = endpoint
            .server_field()
            .ok_or(GatewayError::NoSuchEndpoint)?;
        let Some(mut url) = metadata::endpoint_url(issuer, &docs, field) else {
            return Err(if docs.ready {
                GatewayError::NoEndpoint
            } else {
                GatewayError::NotReady
            });
        };
        let rewrite = route::rewrite(self.cfg, self.gw, endpoint, call);
        if endpoint == Endpoint::ClientConfiguration {
            let id = rewrite.path_client_id.as_deref().unwrap_or_default();
            url = route::client_configuration_url(&url, id)?;
        }
        let to = Routed {
            issuer: idx,
            endpoint,
        };
        let (authority, path) = route::target(&url, rewrite.query.as_deref());
        if endpoint.redirects() {
            let location = format!("{}://{authority}{path}", url.scheme());
            // A form POST (logout) is sent again by the browser to the server: 307 keeps it.
            let status = if self.request.method == "POST" {
                307
            } else {
                302
            };
            return Ok(Step::Redirect {
                to,
                reply: redirect(status, location),
            });
        }
        let evictions = match (endpoint, call.form) {
            (Endpoint::Revoke, Some(f)) => form::get(f, "token")
                .map(|t| token_keys(self.cfg, t))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let body = read.map(|b| ForwardBody {
            content_length: rewrite.body.as_ref().map_or(b.len(), String::len),
            replacement: rewrite.body,
        });
        Ok(Step::Forward(Box::new(Forward {
            to,
            authority,
            path,
            route_header: (self.gw.route_header.clone(), issuer.name.clone()),
            authorization: rewrite.authorization,
            body,
            response: OnResponse {
                evictions,
                rewrite: self.response_rewrite(endpoint, issuer),
                grant: (endpoint == Endpoint::Token)
                    .then(|| GrantCall::of(self.cfg, idx, call.form))
                    .flatten(),
            },
        })))
    }

    /// How the answer to a call at `endpoint` of `issuer` is rewritten, if it is.
    fn response_rewrite(&self, endpoint: Endpoint, issuer: &Issuer) -> Option<ResponseRewrite> {
        if !endpoint.rewrites_response(self.gw.tagging) {
            return None;
        }
        let origin = origin::for_authority(&self.gw.public_origins, self.request.authority)
            .or(self.gw.public_origins.first())?;
        Some(ResponseRewrite {
            endpoint,
            issuer_name: issuer.name.clone(),
            tagging: self.gw.tagging,
            client_base: format!(
                "{}{}/{}/register",
                origin.origin, self.gw.base_path, issuer.name
            ),
        })
    }

    /// The gateway's metadata document for the issuer the path names (or the default issuer),
    /// at the public origin the request reached. A host that is none of the configured public
    /// origins gets no document, and neither does a server without a document of this kind.
    fn document(
        &self,
        endpoint: Endpoint,
        path_issuer: Option<&str>,
    ) -> Result<Step, GatewayError> {
        let kind = endpoint.document().ok_or(GatewayError::NoSuchEndpoint)?;
        let origin = origin::for_authority(&self.gw.public_origins, self.request.authority)
            .ok_or(GatewayError::UnknownHost)?;
        let base_path = format!("{}{}", origin.origin, self.gw.base_path);
        let (idx, base) = match (path_issuer, self.gw.default_issuer) {
            (Some(name), _) => {
                let idx = route::index_of(self.cfg, name).ok_or(GatewayError::UnknownSelector)?;
                (idx, format!("{base_path}/{name}"))
            }
            (None, Some(idx)) => (idx, base_path),
            (None, None) => return Err(GatewayError::NoDefaultIssuer),
        };
        let issuer = self
            .cfg
            .issuers
            .get(idx)
            .ok_or(GatewayError::UnknownSelector)?;
        let docs = (self.metadata)(idx);
        let Some(doc) = metadata::document(issuer, kind, &docs, &base) else {
            return Err(if docs.ready {
                GatewayError::NoDocument
            } else {
                GatewayError::NotReady
            });
        };
        Ok(Step::Reply {
            to: Routed {
                issuer: idx,
                endpoint,
            },
            reply: LocalReply {
                status: 200,
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body: doc.to_string(),
            },
        })
    }
}

/// The browser's way to the server: never stored.
fn redirect(status: u32, location: String) -> LocalReply {
    LocalReply {
        status,
        headers: vec![
            ("location".to_owned(), location),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ],
        body: String::new(),
    }
}

/// The cache keys of a token as API clients present it: as sent, and without its routing tag.
fn token_keys(cfg: &FilterConfig, token: &str) -> Vec<CacheKey> {
    let mut keys = vec![cache::key_for(&cfg.fingerprint, token)];
    if let Some((_, bare)) = crate::issuer::tagged(cfg, token) {
        keys.push(cache::key_for(&cfg.fingerprint, bare));
    }
    keys
}

#[cfg(test)]
mod tests;
