//! The `gateway` section (OAuth endpoint gateway) and each issuer's `gateway` part, validated.

use std::collections::BTreeMap;

use url::Url;

use serde_json::Value;

use super::raw::{RawGateway, RawIssuerGateway};
use super::{
    err, http_url, is_header_name, upstream_name, ConfigError, Issuer, RESERVED_HEADERS,
    UPSTREAM_IS,
};
use crate::endpoint::{DocumentKind, Endpoint};
use crate::origin::PublicOrigin;
use crate::refresh::DocumentSource;

/// The gateway's own settings.
#[derive(Debug)]
pub struct Gateway {
    /// Without a trailing '/'.
    pub base_path: String,
    /// The origins the gateway is reached at; its documents name these, never the `Host`.
    pub public_origins: Vec<PublicOrigin>,
    pub route_header: String,
    pub selector_param: Option<String>,
    pub selector_header: Option<String>,
    pub default_issuer: Option<usize>,
    pub max_body_bytes: usize,
    pub tagging: bool,
}

/// OAuth request parameters (RFC 6749, 7636, 7662, 7009, 8707, OIDC Core) a selector must not
/// shadow: the selector parameter is removed from forwarded calls.
const OAUTH_PARAMETERS: [&str; 22] = [
    "client_id",
    "client_secret",
    "grant_type",
    "code",
    "redirect_uri",
    "scope",
    "state",
    "response_type",
    "refresh_token",
    "code_verifier",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "token",
    "token_type_hint",
    "resource",
    "username",
    "password",
    "audience",
    "prompt",
    "request",
    "request_uri",
];

/// One issuer behind the gateway.
#[derive(Debug, Default)]
pub struct IssuerGateway {
    /// The host's name for the upstream that serves the metadata documents.
    pub upstream: Option<String>,
    /// The server's metadata documents, by [`DocumentKind::index`]: what the gateway's
    /// documents of each kind are made from, and where endpoints come from.
    pub documents: [Option<DocumentSource>; 2],
    /// Configured endpoints by metadata name (`token_endpoint`, ...); they win over metadata.
    pub endpoints: BTreeMap<String, Url>,
    pub client_ids: Vec<String>,
    pub client_id_prefixes: Vec<String>,
}

impl IssuerGateway {
    /// Whether `client_id` is one of this issuer's clients by the configured map or prefixes.
    pub fn owns_client(&self, client_id: &str) -> bool {
        self.client_ids.iter().any(|c| c == client_id)
            || self
                .client_id_prefixes
                .iter()
                .any(|p| client_id.starts_with(p.as_str()))
    }

    /// Whether any endpoint comes from a metadata document (which may not be known yet).
    pub fn wants_documents(&self) -> bool {
        self.documents.iter().any(Option::is_some)
    }
}

/// The accepted `endpoints` keys, for the error message.
const ENDPOINT_KEYS: &str = "authorization, token, introspection, revocation, userinfo, registration, pushed_authorization_request, device_authorization, backchannel_authentication, end_session";

pub(super) fn compile_issuer_gateway(
    at: &str,
    issuer: &str,
    r: RawIssuerGateway,
) -> Result<IssuerGateway, ConfigError> {
    let mut endpoints = BTreeMap::new();
    for (name, url) in r.endpoints {
        let key = format!("{name}_endpoint");
        if Endpoint::for_field(&key).is_none() {
            return err(
                format!("{at}.endpoints.{name}"),
                format!("unknown endpoint ({ENDPOINT_KEYS})"),
            );
        }
        endpoints.insert(key, http_url(&format!("{at}.endpoints.{name}"), &url)?);
    }
    let documents = match r.metadata {
        None => [None, None],
        Some(value) => metadata_documents(&format!("{at}.metadata"), issuer, value)?,
    };
    let wants_documents = documents.iter().any(Option::is_some);
    let upstream = match r.upstream {
        Some(u) => Some(upstream_name(&format!("{at}.upstream"), u)?),
        None if wants_documents => {
            return err(
                format!("{at}.upstream"),
                format!("required with metadata: {UPSTREAM_IS}, that serves it"),
            )
        }
        None => None,
    };
    if !wants_documents && endpoints.is_empty() {
        return err(at, "give metadata, endpoints, or both");
    }
    for (field, list) in [
        ("client_ids", &r.client_ids),
        ("client_id_prefixes", &r.client_id_prefixes),
    ] {
        for (j, c) in list.iter().enumerate() {
            if c.is_empty() {
                return err(format!("{at}.{field}[{j}]"), "must not be empty");
            }
        }
    }
    Ok(IssuerGateway {
        upstream,
        documents,
        endpoints,
        client_ids: r.client_ids,
        client_id_prefixes: r.client_id_prefixes,
    })
}

/// An issuer's `gateway.metadata`, by [`DocumentKind::index`]:
/// - `true`: both documents at their standard places, each optional: OpenID Connect Discovery
///   §4 (`<issuer>/.well-known/openid-configuration`) and RFC 8414 §3.1 (the well-known part
///   inserted between the issuer's host and path);
/// - a URL: that one document, whose kind its path tells (`.../.well-known/openid-configuration`
///   or `.../.well-known/oauth-authorization-server...`);
/// - `{"openid_configuration": true | URL, "oauth_authorization_server": true | URL}`: the
///   named ones, each required.
fn metadata_documents(
    at: &str,
    issuer: &str,
    value: Value,
) -> Result<[Option<DocumentSource>; 2], ConfigError> {
    let mut docs = [None, None];
    match value {
        Value::Bool(true) => {
            for kind in DocumentKind::ALL {
                let url = standard_location(at, issuer, kind)?;
                docs[kind.index()] = Some(DocumentSource {
                    url,
                    optional: true,
                });
            }
        }
        Value::String(text) => {
            let url = http_url(at, &text)?;
            let Some(kind) = kind_of(&url) else {
                return err(
                    at,
                    "cannot tell whether this URL is an openid-configuration or an oauth-authorization-server document: name it, {\"openid_configuration\": URL} or {\"oauth_authorization_server\": URL}",
                );
            };
            docs[kind.index()] = Some(DocumentSource {
                url,
                optional: false,
            });
        }
        Value::Object(map) => {
            for (name, v) in map {
                let kind = match name.as_str() {
                    "openid_configuration" => DocumentKind::OpenId,
                    "oauth_authorization_server" => DocumentKind::OAuth,
                    _ => {
                        return err(
                            format!("{at}.{name}"),
                            "unknown document (openid_configuration, oauth_authorization_server)",
                        )
                    }
                };
                let path = format!("{at}.{name}");
                let url = match v {
                    Value::Bool(true) => standard_location(&path, issuer, kind)?,
                    Value::String(text) => http_url(&path, &text)?,
                    _ => return err(path, "must be true or the document's URL"),
                };
                docs[kind.index()] = Some(DocumentSource {
                    url,
                    optional: false,
                });
            }
            if docs.iter().all(Option::is_none) {
                return err(at, "name at least one document");
            }
        }
        _ => {
            return err(
                at,
                "must be true, a metadata document URL, or {\"openid_configuration\": .., \"oauth_authorization_server\": ..}",
            )
        }
    }
    Ok(docs)
}

/// Where an issuer publishes a document of `kind` by the specifications.
fn standard_location(at: &str, issuer: &str, kind: DocumentKind) -> Result<Url, ConfigError> {
    let text = match kind {
        DocumentKind::OpenId => format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
        DocumentKind::OAuth => {
            let url = crate::http::parse_url(issuer).ok();
            let Some(url) = url.filter(|u| u.host_str().is_some()) else {
                return err(
                    at,
                    "true needs an http(s) issuer URL; give the document URLs instead",
                );
            };
            let origin = url.origin().ascii_serialization();
            let path = url.path().trim_end_matches('/');
            format!("{origin}/.well-known/oauth-authorization-server{path}")
        }
    };
    http_url(at, &text).or_else(|_| {
        err(
            at,
            "true needs an http(s) issuer URL; give the document URLs instead",
        )
    })
}

/// The kind of document a metadata URL names, by its well-known path.
fn kind_of(url: &Url) -> Option<DocumentKind> {
    let path = url.path().trim_end_matches('/');
    if path.ends_with("/.well-known/openid-configuration") {
        Some(DocumentKind::OpenId)
    } else if path.contains("/.well-known/oauth-authorization-server") {
        Some(DocumentKind::OAuth)
    } else {
        None
    }
}

/// The top-level `gateway` section, in named steps: where it is reached (base path, public
/// origins), the headers and parameter it reads or sets, the default issuer and body limit,
/// then the issuers' client ids (each client id belongs to one issuer, tags included).
pub(super) fn compile_gateway(r: RawGateway, issuers: &[Issuer]) -> Result<Gateway, ConfigError> {
    let base_path = compile_base_path(&r.base_path)?;
    let public_origins = compile_public_origins(&r.public_origins)?;
    check_selectors(&r)?;
    let default_issuer = match &r.default_issuer {
        None => None,
        Some(name) => Some(default_issuer(name, issuers)?),
    };
    if r.max_body_bytes == 0 || r.max_body_bytes > 1 << 20 {
        return err(
            "gateway.max_body_bytes",
            "must be between 1 and 1048576 (Envoy's default buffer limit)",
        );
    }
    if !issuers.iter().any(|i| i.gateway.is_some()) {
        return err(
            "gateway",
            "no issuer has a gateway section to route calls to",
        );
    }
    check_client_ownership(issuers)?;
    if r.tagging {
        check_tag_collisions(issuers)?;
    }
    Ok(Gateway {
        base_path,
        public_origins,
        route_header: r.route_header,
        selector_param: r.selector_param,
        selector_header: r.selector_header,
        default_issuer,
        max_body_bytes: usize::try_from(r.max_body_bytes).unwrap_or(usize::MAX),
        tagging: r.tagging,
    })
}

/// `base_path` without its trailing '/': a path, not '/' alone, no query or fragment.
fn compile_base_path(base_path: &str) -> Result<String, ConfigError> {
    let base = base_path.trim_end_matches('/');
    if !base_path.starts_with('/') || base.is_empty() || base.contains(['?', '#']) {
        return err(
            "gateway.base_path",
            "must be a path such as /oauth2 (starting with '/', not '/' alone, no query)",
        );
    }
    Ok(base.to_owned())
}

/// 1 to 16 distinct origins (see [`PublicOrigin::from_url`]).
fn compile_public_origins(texts: &[String]) -> Result<Vec<PublicOrigin>, ConfigError> {
    if texts.is_empty() || texts.len() > 16 {
        return err(
            "gateway.public_origins",
            "give the gateway's public origins, e.g. [\"https://api.example.com\"] (1 to 16): its metadata documents name these URLs, never the request's Host",
        );
    }
    let mut public_origins = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let at = format!("gateway.public_origins[{i}]");
        let origin = PublicOrigin::from_url(&http_url(&at, text)?).or_else(|why| err(&at, why))?;
        if public_origins.contains(&origin) {
            return err(at, "listed twice");
        }
        public_origins.push(origin);
    }
    Ok(public_origins)
}

/// The route header and selector header are headers Tollgate may set or strip; the selector
/// parameter is removed from forwarded calls, so it must not be an OAuth parameter.
fn check_selectors(r: &RawGateway) -> Result<(), ConfigError> {
    let header = |path: &str, name: &str| -> Result<(), ConfigError> {
        if !is_header_name(name) || RESERVED_HEADERS.contains(&name) {
            return err(
                path,
                "must be a lower-case HTTP header name Tollgate may set",
            );
        }
        Ok(())
    };
    header("gateway.route_header", &r.route_header)?;
    if let Some(h) = &r.selector_header {
        header("gateway.selector_header", h)?;
    }
    if r.selector_param.as_deref().is_some_and(str::is_empty) {
        return err("gateway.selector_param", "must not be empty");
    }
    if r.selector_param
        .as_deref()
        .is_some_and(|p| OAUTH_PARAMETERS.contains(&p))
    {
        return err(
            "gateway.selector_param",
            "must not be an OAuth parameter: the selector is removed from forwarded calls",
        );
    }
    Ok(())
}

/// The issuer called `name`, which must have a gateway section.
fn default_issuer(name: &str, issuers: &[Issuer]) -> Result<usize, ConfigError> {
    match issuers.iter().position(|i| i.name == name) {
        Some(idx) if issuers[idx].gateway.is_some() => Ok(idx),
        Some(_) => err(
            "gateway.default_issuer",
            format!("issuer {name:?} has no gateway section"),
        ),
        None => err(
            "gateway.default_issuer",
            format!("no issuer named {name:?}"),
        ),
    }
}

/// A client id two issuers claim (by id or prefix) could not be routed without guessing.
fn check_client_ownership(issuers: &[Issuer]) -> Result<(), ConfigError> {
    for (i, a) in issuers.iter().enumerate() {
        let Some(ga) = &a.gateway else { continue };
        for (j, b) in issuers.iter().enumerate().skip(i + 1) {
            let Some(gb) = &b.gateway else { continue };
            if let Some(c) = ga.client_ids.iter().find(|c| gb.owns_client(c)) {
                return err(
                    format!("issuers[{i}].gateway.client_ids"),
                    format!(
                        "client id {c:?} is also claimed by issuer {:?} (issuers[{j}])",
                        b.name
                    ),
                );
            }
            // The other way round: b's id under one of a's prefixes.
            if let Some(c) = gb.client_ids.iter().find(|c| ga.owns_client(c)) {
                return err(
                    format!("issuers[{j}].gateway.client_ids"),
                    format!(
                        "client id {c:?} is also claimed by issuer {:?} (issuers[{i}])",
                        a.name
                    ),
                );
            }
            // Overlapping prefixes claim every client id that starts with the longer one.
            for (k, q) in gb.client_id_prefixes.iter().enumerate() {
                if let Some(p) = ga
                    .client_id_prefixes
                    .iter()
                    .find(|p| p.starts_with(q.as_str()) || q.starts_with(p.as_str()))
                {
                    return err(
                        format!("issuers[{j}].gateway.client_id_prefixes[{k}]"),
                        format!(
                            "overlaps prefix {p:?} of issuer {:?} (issuers[{i}]): a client id could belong to both",
                            a.name
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// With tagging on, a client id `<issuer name>.<rest>` is read as a routing tag: a configured
/// client id (or prefix) that starts with the tag of a gateway issuer — or, for a prefix, that
/// the tag starts with — would be routed to that issuer and lose its first part.
fn check_tag_collisions(issuers: &[Issuer]) -> Result<(), ConfigError> {
    let tags: Vec<(String, &str)> = issuers
        .iter()
        .filter(|i| i.gateway.is_some())
        .map(|i| (format!("{}.", i.name), i.name.as_str()))
        .collect();
    for (i, issuer) in issuers.iter().enumerate() {
        let Some(g) = &issuer.gateway else { continue };
        for (j, c) in g.client_ids.iter().enumerate() {
            if let Some((tag, name)) = tags.iter().find(|(t, _)| c.starts_with(t.as_str())) {
                return err(
                    format!("issuers[{i}].gateway.client_ids[{j}]"),
                    format!("starts with {tag:?}, the routing tag of issuer {name:?}: with gateway.tagging on it would be read as a tag"),
                );
            }
        }
        for (k, p) in g.client_id_prefixes.iter().enumerate() {
            let overlaps = |t: &str| p.starts_with(t) || t.starts_with(p.as_str());
            if let Some((tag, name)) = tags.iter().find(|(t, _)| overlaps(t)) {
                return err(
                    format!("issuers[{i}].gateway.client_id_prefixes[{k}]"),
                    format!("overlaps {tag:?}, the routing tag of issuer {name:?}: with gateway.tagging on such client ids would be read as tags"),
                );
            }
        }
    }
    Ok(())
}
