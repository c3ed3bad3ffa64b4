//! Plugin configuration: JSON in, a validated and indexed [`FilterConfig`] out.
//!
//! Parse, compile, swap: `on_configure` calls [`FilterConfig::parse`]; any problem becomes one
//! [`ConfigError`] naming the JSON path of the offending field, and the plugin refuses to start.
//! The rules here are mirrored by `plugin-config/schema.json` (a test keeps the two in step).

mod access;
mod authorize;
mod gateway;
/// The configuration as written (JSON): a crate of its own, optimised for size (issue 18).
use tollgate_config_raw as raw;
mod resource;
mod sender;
pub mod upstream;

use std::collections::HashSet;

use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::UrlError;
use crate::introspect::{AuthMethod, ClientAuth, Ttl};
use crate::jwks::KeySet;
use crate::key::{Alg, AlgSet};
use crate::policy::{ClaimRule, Matcher, Policy, Requirement, Route};
use crate::refresh::{Plan, RemoteKeys, Timing};

pub use crate::refresh::DocumentSource;
pub use gateway::{Gateway, IssuerGateway};
pub use raw::RawConfig;
pub use sender::{ClientCertificate, DpopSettings, SenderConstraint};

/// A configuration problem: where (JSON path such as `issuers[1].jwks.uri`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "."
        } else {
            &self.path
        };
        write!(f, "invalid configuration at {path}: {}", self.message)
    }
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        path: path.into(),
        message: message.into(),
    })
}

/// The validated configuration the filter runs on.
#[derive(Debug)]
pub struct FilterConfig {
    pub issuers: Vec<Issuer>,
    pub routes: Vec<Route>,
    /// Policy for requests that match no route; `None` denies them.
    pub default_policy: Option<Policy>,
    pub identity: Identity,
    pub realm: String,
    /// Slots of the shared verified-token cache; 0 = off.
    pub cache_slots: u32,
    /// SHA-256 of the configuration text: mixed into cache keys so that a changed
    /// configuration never trusts results verified under the old one.
    pub fingerprint: [u8; 32],
    /// The OAuth endpoint gateway, when configured.
    pub gateway: Option<Gateway>,
    /// `callouts: per_request`: every request makes the callouts it needs itself, whatever
    /// the host offers (see [`crate::flow::CalloutMode`]).
    pub per_request_callouts: bool,
    /// Where the request's origin and client certificate come from (sender-constrained
    /// tokens).
    pub sender_constraint: SenderConstraint,
    /// Policy decision points, by index (`pdps`, in name order).
    pub pdps: Vec<crate::authz::Pdp>,
    /// Routes' AuthZEN rules, by index ([`Requirement::authorize`]).
    pub rules: Vec<crate::authz::Rule>,
    /// Slots of the shared policy-decision cache; 0 = off.
    pub decision_slots: u32,
    /// Slots of the shared exchanged-token cache; 0 = off.
    pub exchange_slots: u32,
    /// RFC 9728 protected resources ([`crate::resource`]); routes' challenges point in here.
    pub resources: Vec<crate::resource::ProtectedResource>,
    /// The gateway's own issuer of backend tokens (`backend_token`).
    pub backend: Option<crate::upstream::BackendIssuer>,
    /// Routes' `upstream_token` rules, by index ([`Requirement::upstream`]).
    pub upstream_rules: Vec<crate::upstream::UpstreamRule>,
}

/// One trusted authorization server.
#[derive(Debug)]
pub struct Issuer {
    /// Operator's short name: used in routes, metrics and logs.
    pub name: String,
    /// The exact `iss` value its tokens carry.
    pub issuer: String,
    /// Keys for JWTs; `None` for an issuer whose tokens are only introspected.
    pub keys: Option<KeySource>,
    pub introspection: Option<Introspection>,
    /// Which opaque tokens this issuer minted.
    pub opaque: OpaqueTokens,
    /// This issuer behind the gateway's OAuth endpoints.
    pub gateway: Option<IssuerGateway>,
    pub audiences: Vec<String>,
    pub algorithms: AlgSet,
    pub clock_skew_s: u64,
    pub require_at_jwt: bool,
    pub timing: Timing,
    /// DPoP (RFC 9449) for this issuer's tokens.
    pub dpop: DpopSettings,
    /// mTLS certificate-bound tokens (RFC 8705) for this issuer's tokens.
    pub mtls: crate::binding::Mode,
    /// This issuer's token endpoint for token exchange (RFC 8693), and Tollgate's client.
    pub token_exchange: Option<crate::upstream::ExchangeClient>,
}

#[derive(Debug)]
pub enum KeySource {
    Inline(KeySet),
    Remote {
        /// The host's name for the upstream that serves the URLs (checked by `upstream_name`).
        upstream: String,
        source: RemoteKeys,
    },
}

/// RFC 7662 introspection at one issuer.
#[derive(Debug)]
pub struct Introspection {
    pub endpoint: IntrospectionEndpoint,
    /// The host's name for the upstream that serves the endpoint (checked by `upstream_name`).
    pub upstream: String,
    pub client: ClientAuth,
    pub timeout_ms: u64,
    pub ttl: Ttl,
    /// Introspect this issuer's JWTs too, after local verification.
    pub introspect_jwts: bool,
    pub require_token_type: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionEndpoint {
    Fixed(Url),
    /// `introspection_endpoint` of this metadata document.
    Discovered(Url),
}

/// Rules that recognise an issuer's opaque tokens.
#[derive(Debug, Default)]
pub struct OpaqueTokens {
    pub prefixes: Vec<String>,
    /// Anchored: matches the whole token.
    pub pattern: Option<regex_lite::Regex>,
}

impl OpaqueTokens {
    pub fn matches(&self, token: &str) -> bool {
        self.prefixes.iter().any(|p| token.starts_with(p.as_str()))
            || self.pattern.as_ref().is_some_and(|re| re.is_match(token))
    }
}

impl Issuer {
    /// What the background refresh job of this issuer fetches (nothing for inline keys and a
    /// fixed introspection endpoint).
    pub fn fetch_plan(&self) -> Plan<'_> {
        let mut plan = Plan::default();
        if let Some(KeySource::Remote { upstream, source }) = &self.keys {
            match source {
                RemoteKeys::Jwks(url) => plan.jwks = Some((upstream, Some(url))),
                RemoteKeys::Discovery(url) => {
                    plan.jwks = Some((upstream, None));
                    plan.discovery = Some((upstream, url));
                }
            }
        }
        if let Some(intro) = &self.introspection {
            if let IntrospectionEndpoint::Discovered(url) = &intro.endpoint {
                plan.introspection_endpoint_wanted = true;
                plan.discovery.get_or_insert((&intro.upstream, url));
            }
        }
        if let Some(g) = &self.gateway {
            if let Some(upstream) = &g.upstream {
                for (slot, doc) in plan.documents.iter_mut().zip(&g.documents) {
                    *slot = doc.as_ref().map(|d| (upstream.as_str(), d));
                }
            }
        }
        plan
    }
}

/// How verified identity travels upstream.
#[derive(Debug, Clone)]
pub struct Identity {
    /// (claim path, header name) pairs.
    pub headers: Vec<(Vec<String>, String)>,
    pub payload_header: Option<String>,
    pub issuer_name_header: Option<String>,
    /// The header that says how the token was bound and to what (`dpop;jkt=…`,
    /// `mtls;x5t=…`); absent for an unbound token.
    pub binding_header: Option<String>,
    /// What the upstream receives as `Authorization`.
    pub authorization: ForwardAuthorization,
}

/// What the upstream receives as `Authorization` (and the `DPoP` proof) of an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardAuthorization {
    /// As the client sent them.
    #[default]
    Unchanged,
    /// A `DPoP` token as `Bearer`, without its proof (for upstreams that only know Bearer).
    Bearer,
    /// Neither.
    Drop,
}

impl Identity {
    /// Every header Tollgate may set: inbound copies of these are always removed.
    pub fn owned_headers(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .map(|(_, h)| h.as_str())
            .chain(self.payload_header.as_deref())
            .chain(self.issuer_name_header.as_deref())
            .chain(self.binding_header.as_deref())
    }
}

impl FilterConfig {
    /// Whether some issuer or route takes certificate-bound tokens (mTLS not `off`): only
    /// then is the client certificate read.
    pub fn reads_client_certificate(&self) -> bool {
        let route_mtls = self
            .routes
            .iter()
            .map(|r| &r.policy)
            .chain(self.default_policy.as_ref())
            .any(|p| match p {
                Policy::Require(r) => r.mtls.is_some_and(|m| m != crate::binding::Mode::Off),
                Policy::Anonymous => false,
            });
        route_mtls
            || self
                .issuers
                .iter()
                .any(|i| i.mtls != crate::binding::Mode::Off)
    }

    /// Parses and validates the plugin configuration text.
    pub fn parse(text: &[u8]) -> Result<FilterConfig, ConfigError> {
        let raw = raw::parse(text).map_err(|e| ConfigError {
            path: e.path,
            message: e.message,
        })?;
        let fingerprint = Sha256::digest(text).into();
        compile(raw, fingerprint)
    }

    /// The metadata URL a refusal with `challenge` names (RFC 9728 §5.1), if its route is
    /// under a protected resource.
    pub fn resource_metadata(&self, challenge: crate::outcome::Challenge) -> Option<&str> {
        let r = self.resources.get(usize::from(challenge.resource?))?;
        Some(&r.metadata_url)
    }

    pub fn issuer_by_iss(&self, iss: &str) -> Option<usize> {
        self.issuers.iter().position(|i| i.issuer == iss)
    }
}

/// The whole configuration: issuers first (routes and the gateway name them), then routes,
/// the gateway, callouts, identity headers and realm, with the rules that span sections.
fn compile(raw: RawConfig, fingerprint: [u8; 32]) -> Result<FilterConfig, ConfigError> {
    let issuers = compile_issuers(raw.issuers)?;
    let pdps = authorize::compile_pdps(&raw.pdps)?;
    let backend = upstream::compile_backend(&raw.backend_token)?;
    let mut rules = Vec::new();
    let mut upstream_rules = Vec::new();
    let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
    for (i, rr) in raw.routes.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        let matcher = compile_match(&format!("{at}.match"), rr.matcher)?;
        let ctx = Compiling {
            issuers: &issuers,
            pdps: &pdps,
            backend: backend.as_ref(),
            label: authorize::label(rr.name.as_deref(), Some(i)),
        };
        let policy = compile_policy(
            &at,
            rr.anonymous,
            rr.require,
            &ctx,
            &mut rules,
            &mut upstream_rules,
        )?;
        routes.push(Route {
            name: rr.name,
            matcher,
            policy,
        });
    }
    let mut default_policy = match raw.default_route {
        Some(p) => {
            let ctx = Compiling {
                issuers: &issuers,
                pdps: &pdps,
                backend: backend.as_ref(),
                label: authorize::label(None, None),
            };
            Some(compile_policy(
                "default_route",
                p.anonymous,
                p.require,
                &ctx,
                &mut rules,
                &mut upstream_rules,
            )?)
        }
        None => None,
    };

    let gateway = match raw.gateway {
        Some(g) => Some(gateway::compile_gateway(g, &issuers)?),
        None => match issuers.iter().position(|i| i.gateway.is_some()) {
            Some(i) => {
                return err(
                    format!("issuers[{i}].gateway"),
                    "needs the top-level gateway section",
                )
            }
            None => None,
        },
    };
    let per_request_callouts = raw.callouts == raw::RawCallouts::PerRequest;
    if per_request_callouts && gateway.is_some() {
        return err(
            "callouts",
            "per_request cannot serve the gateway: its metadata documents are refreshed in the background",
        );
    }
    let identity = compile_identity(raw.identity)?;
    if let Some(gw) = &gateway {
        // The route header is removed from every request and set only on gateway calls; an
        // identity header of the same name (as the host may read it) would be both.
        if let Some(h) = identity
            .owned_headers()
            .find(|h| same_header_name(h, &gw.route_header))
        {
            return err(
                "gateway.route_header",
                format!("names the same header as the identity header {h:?}"),
            );
        }
    }
    let sender_constraint = sender::compile_sender_constraint(
        raw.sender_constraint,
        &identity,
        gateway.as_ref().map(|g| g.route_header.as_str()),
    )?;
    let consumed = sender_constraint.client_certificate.header();
    let backend_headers = crate::upstream::headers(&upstream_rules).collect::<Vec<_>>();
    if let Some(h) = backend_headers.iter().find(|b| {
        identity
            .owned_headers()
            .chain(gateway.as_ref().map(|g| g.route_header.as_str()))
            .chain(consumed)
            .any(|o| same_header_name(o, b))
    }) {
        return err(
            "routes",
            format!("upstream_token.sign.header {h:?} is also an identity, gateway or client-certificate header"),
        );
    }
    let owned = identity
        .owned_headers()
        .chain(gateway.as_ref().map(|g| g.route_header.as_str()))
        .chain(consumed)
        .chain(backend_headers.iter().copied())
        .collect::<Vec<_>>();
    access::check_client_headers(&routes, default_policy.as_ref(), &owned)?;
    let resources = resource::compile_resources(
        raw.protected_resources,
        gateway.as_ref(),
        &issuers,
        &mut routes,
        default_policy.as_mut(),
    )?;
    if raw.realm.is_empty() || !raw.realm.chars().all(is_quoted_string_safe) {
        return err(
            "realm",
            "must be non-empty printable ASCII without '\"' or '\\'",
        );
    }
    Ok(FilterConfig {
        issuers,
        routes,
        default_policy,
        identity,
        realm: raw.realm,
        cache_slots: raw.cache.max_entries,
        fingerprint,
        gateway,
        per_request_callouts,
        sender_constraint,
        pdps,
        rules,
        decision_slots: raw.cache.decision_entries,
        exchange_slots: raw.cache.exchange_entries,
        resources,
        backend,
        upstream_rules,
    })
}

/// What a route's policy is compiled against.
struct Compiling<'a> {
    issuers: &'a [Issuer],
    pdps: &'a [crate::authz::Pdp],
    /// The gateway's signing keys (`sign` rules need them).
    backend: Option<&'a crate::upstream::BackendIssuer>,
    /// The route's name in counters.
    label: String,
}

/// At least one issuer; names and `issuer` URLs unique.
fn compile_issuers(written: Vec<raw::RawIssuer>) -> Result<Vec<Issuer>, ConfigError> {
    if written.is_empty() {
        return err("issuers", "at least one issuer is required");
    }
    let mut names = HashSet::new();
    let mut isses = HashSet::new();
    let mut issuers = Vec::with_capacity(written.len());
    for (i, ri) in written.into_iter().enumerate() {
        let at = format!("issuers[{i}]");
        if !names.insert(ri.name.clone()) {
            return err(
                format!("{at}.name"),
                format!("duplicate issuer name {:?}", ri.name),
            );
        }
        if !isses.insert(ri.issuer.clone()) {
            return err(
                format!("{at}.issuer"),
                "two issuers with the same issuer URL",
            );
        }
        issuers.push(compile_issuer(&at, ri)?);
    }
    Ok(issuers)
}

fn is_quoted_string_safe(c: char) -> bool {
    (c == ' ' || c.is_ascii_graphic()) && c != '"' && c != '\\'
}

/// One issuer, in named steps: identity (name, `issuer`, algorithms, audiences), timing, where
/// its keys and introspection come from, its opaque-token rules and gateway section, and the
/// one metadata document they may share.
fn compile_issuer(at: &str, ri: raw::RawIssuer) -> Result<Issuer, ConfigError> {
    check_issuer_name(at, &ri.name)?;
    if ri.issuer.is_empty() {
        return err(format!("{at}.issuer"), "must not be empty");
    }
    let algorithms = compile_algorithms(at, &ri.algorithms)?;
    for (j, aud) in ri.audiences.iter().enumerate() {
        if aud.is_empty() {
            return err(format!("{at}.audiences[{j}]"), "must not be empty");
        }
    }
    let timing = compile_timing(at, &ri)?;
    let keys = match ri.jwks {
        Some(rj) => Some(compile_jwks(&format!("{at}.jwks"), &ri.issuer, rj)?),
        None => None,
    };
    let introspection = match ri.introspection {
        Some(r) => Some(compile_introspection(
            &format!("{at}.introspection"),
            &ri.issuer,
            r,
        )?),
        None => None,
    };
    check_token_sources(at, keys.as_ref(), introspection.as_ref())?;
    let opaque = match ri.opaque_tokens {
        Some(_) if introspection.is_none() => {
            return err(
                format!("{at}.opaque_tokens"),
                "opaque tokens can only be checked by introspection: configure introspection",
            );
        }
        Some(rules) => compile_opaque(&format!("{at}.opaque_tokens"), rules)?,
        None => OpaqueTokens::default(),
    };
    let gateway = match ri.gateway {
        Some(g) => Some(gateway::compile_issuer_gateway(
            &format!("{at}.gateway"),
            &ri.issuer,
            g,
        )?),
        None => None,
    };
    check_one_discovery_document(at, keys.as_ref(), introspection.as_ref())?;
    let dpop = sender::compile_dpop(&format!("{at}.dpop"), ri.dpop)?;
    let mtls = sender::mode(ri.mtls.mode);
    let token_exchange =
        upstream::compile_client(&format!("{at}.token_exchange"), &ri.token_exchange)?;
    Ok(Issuer {
        name: ri.name,
        issuer: ri.issuer,
        keys,
        introspection,
        opaque,
        gateway,
        audiences: ri.audiences,
        algorithms,
        clock_skew_s: ri.clock_skew_s,
        require_at_jwt: ri.require_at_jwt,
        timing,
        dpop,
        mtls,
        token_exchange,
    })
}

/// An issuer's name appears in metric names, paths and tags: 1-64 of `[A-Za-z0-9_-]`.
fn check_issuer_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return err(
            format!("{at}.name"),
            "must be 1-64 characters of [A-Za-z0-9_-] (it appears in metric names)",
        );
    }
    Ok(())
}

/// The issuer's allowed algorithms: at least one, each one Tollgate verifies; `none` and HMAC
/// get their own explanation.
fn compile_algorithms(at: &str, names: &[String]) -> Result<AlgSet, ConfigError> {
    let mut algorithms = AlgSet::default();
    for (j, name) in names.iter().enumerate() {
        let path = format!("{at}.algorithms[{j}]");
        match Alg::from_name(name) {
            Some(alg) => algorithms.insert(alg),
            None if name.eq_ignore_ascii_case("none") => {
                return err(path, "\"none\" is never accepted: tokens must be signed")
            }
            None if name.to_ascii_uppercase().starts_with("HS") => {
                return err(
                    path,
                    format!("{name:?} is refused: HMAC keys cannot come from a public JWKS"),
                )
            }
            None => {
                return err(
                    path,
                    format!("unsupported algorithm {name:?} (supported: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"),
                )
            }
        }
    }
    if algorithms.is_empty() {
        return err(
            format!("{at}.algorithms"),
            "at least one algorithm is required",
        );
    }
    Ok(algorithms)
}

/// The fetch timing, in ms: every interval positive, and keys never stale before the next
/// scheduled refresh.
fn compile_timing(at: &str, ri: &raw::RawIssuer) -> Result<Timing, ConfigError> {
    let positive = |field: &str, value: u64| -> Result<u64, ConfigError> {
        if value == 0 {
            err(format!("{at}.{field}"), "must be greater than 0")
        } else {
            Ok(value)
        }
    };
    let timing = Timing {
        refresh_ms: positive("refresh_interval_s", ri.refresh_interval_s)?.saturating_mul(1000),
        retry_ms: positive("retry_interval_s", ri.retry_interval_s)?.saturating_mul(1000),
        refetch_min_ms: positive("refetch_min_interval_s", ri.refetch_min_interval_s)?
            .saturating_mul(1000),
        timeout_ms: positive("fetch_timeout_ms", ri.fetch_timeout_ms)?,
        max_stale_ms: positive("max_stale_s", ri.max_stale_s)?.saturating_mul(1000),
    };
    if ri.max_stale_s < ri.refresh_interval_s {
        // Keys would go stale before the next scheduled refresh: tokens refused every cycle.
        return err(
            format!("{at}.max_stale_s"),
            "must be at least refresh_interval_s",
        );
    }
    Ok(timing)
}

/// An issuer checks its tokens with keys, introspection or both; introspecting JWTs also
/// needs the keys (they are verified first).
fn check_token_sources(
    at: &str,
    keys: Option<&KeySource>,
    introspection: Option<&Introspection>,
) -> Result<(), ConfigError> {
    if keys.is_none() && introspection.is_none() {
        return err(
            at,
            "an issuer needs jwks (for JWTs), introspection (for opaque tokens), or both",
        );
    }
    if introspection.is_some_and(|i| i.introspect_jwts) && keys.is_none() {
        return err(
            format!("{at}.introspection.introspect_jwts"),
            "needs jwks: JWTs are verified locally before they are introspected",
        );
    }
    Ok(())
}

/// One discovery document per issuer for what is learned from it: the keys' and introspection's
/// discovery settings must name the same one. (The gateway's documents are fetched on their
/// own; one that is at the same URL is fetched once.)
fn check_one_discovery_document(
    at: &str,
    keys: Option<&KeySource>,
    introspection: Option<&Introspection>,
) -> Result<(), ConfigError> {
    let keys_doc = match keys {
        Some(KeySource::Remote {
            source: RemoteKeys::Discovery(u),
            ..
        }) => Some(u),
        _ => None,
    };
    let introspection_doc = match introspection {
        Some(Introspection {
            endpoint: IntrospectionEndpoint::Discovered(u),
            ..
        }) => Some(u),
        _ => None,
    };
    if let (Some(k), Some(i)) = (keys_doc, introspection_doc) {
        if k != i {
            return err(
                format!("{at}.introspection.discovery"),
                "must name the same metadata document as jwks.discovery",
            );
        }
    }
    Ok(())
}

pub(crate) fn http_url(path: &str, text: &str) -> Result<Url, ConfigError> {
    match crate::http::parse_url(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(url),
        Ok(_) | Err(UrlError::NotHttp) => {
            err(path, "must be an http:// or https:// URL with a host")
        }
        Err(e) => err(path, format!("not a URL: {e}")),
    }
}

/// What every `upstream` setting is, for error messages.
pub(crate) const UPSTREAM_IS: &str =
    "the host's name for the upstream (an Envoy cluster name; host:port on Kong and APISIX)";

/// An `upstream` setting: the host's name for an upstream, handed to `dispatch_http_call`
/// unchanged. Envoy looks it up as a cluster name; Kong (ngx_wasm_module) and APISIX
/// (wasm-nginx-module) connect to it as `host:port` (`[v6]:port` for an IPv6 address). The
/// `:authority` of a call always comes from the URL, never from here.
///
/// Refused, because no host could use them: empty; any whitespace or control character (not
/// part of a cluster name or an authority, and invisible in a log); and a URL (`://`), a
/// likely slip on hosts that take `host:port`.
pub(crate) fn upstream_name(path: &str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() {
        return err(path, format!("must not be empty: it is {UPSTREAM_IS}"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err(
            path,
            format!("must not contain whitespace or control characters: it is {UPSTREAM_IS}"),
        );
    }
    if value.contains("://") {
        return err(
            path,
            format!("is not a URL but {UPSTREAM_IS}; the URL goes in its own setting"),
        );
    }
    Ok(value)
}

pub(crate) fn discovery_url(
    path: &str,
    issuer: &str,
    value: Option<Value>,
) -> Result<Url, ConfigError> {
    match value {
        Some(Value::Bool(true)) => {
            let text = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            http_url(path, &text).or_else(|_| err(
                path,
                "true needs an http(s) issuer URL to find <issuer>/.well-known/openid-configuration; give the discovery document URL instead",
            ))
        }
        Some(Value::String(text)) => http_url(path, &text),
        _ => err(path, "must be true or the discovery document URL"),
    }
}

fn compile_introspection(
    at: &str,
    issuer: &str,
    r: raw::RawIntrospection,
) -> Result<Introspection, ConfigError> {
    let endpoint = match (r.endpoint, r.discovery) {
        (Some(url), None) => {
            IntrospectionEndpoint::Fixed(http_url(&format!("{at}.endpoint"), &url)?)
        }
        (None, Some(d)) => IntrospectionEndpoint::Discovered(discovery_url(
            &format!("{at}.discovery"),
            issuer,
            Some(d),
        )?),
        _ => return err(at, "exactly one of endpoint, discovery is required"),
    };
    let upstream = upstream_name(&format!("{at}.upstream"), r.upstream)?;
    if r.client_id.is_empty() {
        return err(format!("{at}.client_id"), "must not be empty");
    }
    let Some(method) = AuthMethod::from_name(&r.auth_method) else {
        return err(
            format!("{at}.auth_method"),
            "must be client_secret_basic or client_secret_post",
        );
    };
    if r.timeout_ms == 0 {
        return err(format!("{at}.timeout_ms"), "must be greater than 0");
    }
    Ok(Introspection {
        endpoint,
        upstream,
        client: ClientAuth {
            id: r.client_id,
            secret: r.client_secret,
            method,
        },
        timeout_ms: r.timeout_ms,
        ttl: Ttl {
            max_ms: r.max_ttl_s.saturating_mul(1000),
            negative_ms: r.negative_ttl_s.saturating_mul(1000),
        },
        introspect_jwts: r.introspect_jwts,
        require_token_type: r.require_token_type,
    })
}

fn compile_opaque(at: &str, r: raw::RawOpaqueTokens) -> Result<OpaqueTokens, ConfigError> {
    if r.prefixes.is_empty() && r.pattern.is_none() {
        return err(at, "give prefixes, a pattern, or both");
    }
    for (j, p) in r.prefixes.iter().enumerate() {
        if p.is_empty() {
            return err(format!("{at}.prefixes[{j}]"), "must not be empty");
        }
    }
    let pattern = match r.pattern {
        // Checked alone first: unchecked, "a)|(.*" would compile once wrapped, as an
        // unanchored alternative that matches every token.
        Some(p) => match regex_lite::Regex::new(&p)
            .and_then(|_| regex_lite::Regex::new(&format!("^(?:{p})$")))
        {
            Ok(re) => Some(re),
            Err(e) => {
                return err(
                    format!("{at}.pattern"),
                    format!("not a regular expression: {e}"),
                )
            }
        },
        None => None,
    };
    Ok(OpaqueTokens {
        prefixes: r.prefixes,
        pattern,
    })
}

fn compile_jwks(at: &str, issuer: &str, rj: raw::RawJwks) -> Result<KeySource, ConfigError> {
    let given = [
        rj.inline.is_some(),
        rj.uri.is_some(),
        rj.discovery.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return err(at, "exactly one of inline, uri, discovery is required");
    }
    if let Some(doc) = rj.inline {
        if rj.upstream.is_some() {
            return err(format!("{at}.upstream"), "not used with inline keys");
        }
        return match KeySet::from_value(&doc) {
            Ok((keys, _skipped)) => Ok(KeySource::Inline(keys)),
            Err(e) => err(format!("{at}.inline"), e.to_string()),
        };
    }
    let upstream = match rj.upstream {
        Some(u) => upstream_name(&format!("{at}.upstream"), u)?,
        None => {
            return err(
                format!("{at}.upstream"),
                format!("required with uri or discovery: {UPSTREAM_IS}, to fetch through"),
            )
        }
    };
    let source = if let Some(uri) = rj.uri {
        RemoteKeys::Jwks(http_url(&format!("{at}.uri"), &uri)?)
    } else {
        let path = format!("{at}.discovery");
        match rj.discovery {
            Some(Value::Bool(true)) => {
                let text = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                match http_url(&path, &text) {
                    Ok(url) => RemoteKeys::Discovery(url),
                    // The bad part is the issuer, not the `true` the operator wrote here.
                    Err(_) => return err(
                        path,
                        "true needs an http(s) issuer URL to find <issuer>/.well-known/openid-configuration; give the discovery document URL instead",
                    ),
                }
            }
            Some(Value::String(text)) => RemoteKeys::Discovery(http_url(&path, &text)?),
            _ => return err(path, "must be true or the discovery document URL"),
        }
    };
    Ok(KeySource::Remote { upstream, source })
}

fn compile_match(at: &str, rm: raw::RawMatch) -> Result<Matcher, ConfigError> {
    if rm.prefix.is_some() && rm.exact.is_some() {
        return err(at, "prefix and exact cannot both be set");
    }
    for (field, value) in [("prefix", &rm.prefix), ("exact", &rm.exact)] {
        // The query is not matched, so a '?' (or '#') here would never match any request.
        if value
            .as_deref()
            .is_some_and(|p| !p.starts_with('/') || p.contains(['?', '#']))
        {
            return err(
                format!("{at}.{field}"),
                "must start with '/' and contain no '?' or '#' (only the path is matched)",
            );
        }
    }
    if rm.host.as_deref().is_some_and(|h| !is_host_pattern(h)) {
        return err(
            format!("{at}.host"),
            "must be a host name or *.domain, without a port (the port is not matched)",
        );
    }
    let mut methods = Vec::with_capacity(rm.methods.len());
    for (j, m) in rm.methods.into_iter().enumerate() {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
            return err(
                format!("{at}.methods[{j}]"),
                "must be an upper-case HTTP method such as GET",
            );
        }
        methods.push(m);
    }
    Ok(Matcher {
        prefix: rm.prefix,
        exact: rm.exact,
        methods,
        // As requests' hosts are compared: lower-case, without one trailing dot.
        host: rm.host.map(|h| {
            let h = h.to_ascii_lowercase();
            h.strip_suffix('.').unwrap_or(&h).to_owned()
        }),
        route_name: rm.route_name,
    })
}

/// A host pattern that can match some request: `*` only as a leading `*.` label and no port
/// (the request's port is removed before matching, so a pattern with one would never match).
fn is_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let has_port = name
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    !name.is_empty() && !name.contains('*') && !has_port
}

/// A route's policy: anonymous, or the requirements a token must meet (issuers by name,
/// scopes, claims, and where opaque tokens go).
fn compile_policy(
    at: &str,
    anonymous: bool,
    require: Option<raw::RawRequirement>,
    ctx: &Compiling<'_>,
    rules: &mut Vec<crate::authz::Rule>,
    upstream_rules: &mut Vec<crate::upstream::UpstreamRule>,
) -> Result<Policy, ConfigError> {
    let all = ctx.issuers;
    if anonymous {
        if require.is_some() {
            return err(
                format!("{at}.require"),
                "an anonymous route has no requirement",
            );
        }
        return Ok(Policy::Anonymous);
    }
    let mut rr = require.unwrap_or_default();
    let at = format!("{at}.require");
    let client = access::client_rule(&at, &mut rr)?;
    let step_up = access::step_up(&at, &mut rr)?;
    let mut issuers = Vec::with_capacity(rr.issuers.len());
    for (j, name) in rr.issuers.iter().enumerate() {
        issuers.push(issuer_named(format!("{at}.issuers[{j}]"), name, all)?);
    }
    for (field, scopes) in [("scopes", &rr.scopes), ("scopes_any", &rr.scopes_any)] {
        check_scopes(&format!("{at}.{field}"), scopes)?;
    }
    let mut claims = Vec::with_capacity(rr.claims.len());
    for (name, value) in rr.claims {
        claims.push(compile_claim_rule(
            format!("{at}.claims.{name}"),
            name,
            value,
        )?);
    }
    let opaque_issuer = match &rr.opaque_issuer {
        None => None,
        Some(name) => Some(compile_opaque_issuer(&at, name, all, &issuers)?),
    };
    if let Some(h) = &rr.issuer_header {
        if !is_header_name(h) {
            return err(
                format!("{at}.issuer_header"),
                "must be a lower-case HTTP header name",
            );
        }
    }
    let dpop = rr.dpop.map(sender::mode);
    let mtls = rr.mtls.map(sender::mode);
    let challenge = sender::challenge(dpop, &issuers, all);
    let authorize = match &rr.authorize {
        Value::Null => None,
        ra => {
            let rule = authorize::compile_rule(
                &format!("{at}.authorize"),
                ra,
                ctx.label.clone(),
                ctx.pdps,
            )?;
            rules.push(rule);
            Some(rules.len() - 1)
        }
    };
    let upstream = match &rr.upstream_token {
        Value::Null => None,
        ru => {
            let rule = upstream::compile_rule(
                &format!("{at}.upstream_token"),
                ru,
                all,
                &issuers,
                ctx.backend,
            )?;
            upstream_rules.push(rule);
            Some(upstream_rules.len() - 1)
        }
    };
    Ok(Policy::Require(Requirement {
        issuers,
        scopes_all: rr.scopes,
        scopes_any: rr.scopes_any,
        claims,
        opaque_issuer,
        issuer_header: rr.issuer_header,
        dpop,
        mtls,
        challenge,
        client,
        step_up,
        authorize,
        upstream,
    }))
}

/// The index of the configured issuer called `name`; the error names `path`.
fn issuer_named(path: String, name: &str, all: &[Issuer]) -> Result<usize, ConfigError> {
    match all.iter().position(|i| i.name == name) {
        Some(idx) => Ok(idx),
        None => err(path, format!("no issuer named {name:?}")),
    }
}

/// Each scope a route requires is an RFC 6749 §3.3 scope-token.
fn check_scopes(at: &str, scopes: &[String]) -> Result<(), ConfigError> {
    for (j, s) in scopes.iter().enumerate() {
        if s.is_empty() || !s.chars().all(is_scope_char) {
            return err(
                format!("{at}[{j}]"),
                "a scope is one or more printable ASCII characters without space, '\"' or '\\' (RFC 6749 §3.3)",
            );
        }
    }
    Ok(())
}

/// A required claim: a (possibly dotted, nested) name and one or more accepted scalar values.
fn compile_claim_rule(path: String, name: String, value: Value) -> Result<ClaimRule, ConfigError> {
    let accepted = match value {
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => return err(path, "must list at least one accepted value"),
        Value::Object(_) | Value::Null => {
            return err(path, "must be a string, number, boolean, or a list of them")
        }
        single => vec![single],
    };
    if accepted
        .iter()
        .any(|v| v.is_object() || v.is_array() || v.is_null())
    {
        return err(path, "accepted values must be strings, numbers or booleans");
    }
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return err(
            path,
            "claim names are non-empty; '.' separates nested claims",
        );
    }
    Ok(ClaimRule {
        path: name.split('.').map(str::to_owned).collect(),
        accepted,
    })
}

/// The issuer a route's opaque tokens go to: one that introspects, and one of the route's
/// issuers when it names any.
fn compile_opaque_issuer(
    at: &str,
    name: &str,
    all: &[Issuer],
    route_issuers: &[usize],
) -> Result<usize, ConfigError> {
    let path = format!("{at}.opaque_issuer");
    let idx = issuer_named(path.clone(), name, all)?;
    if all[idx].introspection.is_none() {
        return err(path, format!("issuer {name:?} has no introspection"));
    }
    if !route_issuers.is_empty() && !route_issuers.contains(&idx) {
        return err(
            path,
            format!("issuer {name:?} is not among this route's issuers"),
        );
    }
    Ok(idx)
}

/// RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
pub(crate) fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
}

/// RFC 7230 header field name (token), lower-case as HTTP/2 requires.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Whether two header names are the same header as hosts and backends may read them:
/// case-insensitively, and with `_` read as `-` (CGI-style servers — WSGI, PHP, ... — map both
/// `X-User` and `X_User` to `HTTP_X_USER`). No allocation: it runs for every request header.
pub fn same_header_name(a: &str, b: &str) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

pub(crate) const RESERVED_HEADERS: [&str; 7] = [
    "authorization",
    "dpop",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
];

fn compile_identity(ri: raw::RawIdentity) -> Result<Identity, ConfigError> {
    let mut seen = HashSet::new();
    let mut check = |path: String, header: &str| -> Result<(), ConfigError> {
        if !is_header_name(header) {
            return err(path, "must be a lower-case HTTP header name");
        }
        if RESERVED_HEADERS.contains(&header) {
            return err(path, format!("{header:?} cannot carry identity"));
        }
        if !seen.insert(header.to_owned()) {
            return err(path, format!("header {header:?} is used twice"));
        }
        Ok(())
    };
    let mut headers = Vec::with_capacity(ri.headers.len());
    for (claim, header) in ri.headers {
        check(format!("identity.headers.{claim}"), &header)?;
        if claim.is_empty() || claim.split('.').any(str::is_empty) {
            return err(
                format!("identity.headers.{claim}"),
                "claim names are non-empty; '.' separates nested claims",
            );
        }
        headers.push((claim.split('.').map(str::to_owned).collect(), header));
    }
    if let Some(h) = &ri.payload_header {
        check("identity.payload_header".into(), h)?;
    }
    if let Some(h) = &ri.issuer_name_header {
        check("identity.issuer_name_header".into(), h)?;
    }
    if let Some(h) = &ri.binding_header {
        check("identity.binding_header".into(), h)?;
    }
    let authorization = match (ri.authorization, ri.drop_authorization) {
        (None, false) => ForwardAuthorization::Unchanged,
        (None, true) | (Some(raw::RawForward::Drop), _) => ForwardAuthorization::Drop,
        (Some(_), true) => {
            return err(
                "identity.drop_authorization",
                "drop_authorization is the old spelling of authorization: \"drop\"; give one",
            )
        }
        (Some(raw::RawForward::Unchanged), false) => ForwardAuthorization::Unchanged,
        (Some(raw::RawForward::Bearer), false) => ForwardAuthorization::Bearer,
    };
    Ok(Identity {
        headers,
        payload_header: ri.payload_header,
        issuer_name_header: ri.issuer_name_header,
        binding_header: ri.binding_header,
        authorization,
    })
}

#[cfg(test)]
mod tests;
