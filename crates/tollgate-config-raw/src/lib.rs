//! The plugin configuration exactly as operators write it (JSON), before validation: used by
//! tollgate-core as `config::raw`.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored setting.
//! Defaults live here; cross-field rules live in tollgate-core's `config`, which compiles this
//! into a `FilterConfig`.
//!
//! A crate of its own (issue 18) so that serde's deserialisers for these types, which are most
//! of the configuration reader's code, are compiled here ([`parse`] is their only
//! instantiation) and the release profile can optimise them for size (`opt-level = "z"`) while
//! tollgate-core's request path stays optimised for speed. Nothing here runs per request.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A configuration error found while reading the JSON: where, and what.
#[derive(Debug)]
pub struct SyntaxError {
    /// The JSON path of the offending value (`issuers[0].jwks`; empty for the document).
    pub path: String,
    pub message: String,
}

/// Reads the configuration text into [`RawConfig`]. Errors name the JSON path of the bad
/// field (issue 2): serde_json alone gives only line and column, so serde_path_to_error
/// (dtolnay) tracks the path through the derived deserialisers.
pub fn parse(text: &[u8]) -> Result<RawConfig, SyntaxError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| SyntaxError {
        path: e.path().to_string().trim_start_matches('.').to_owned(),
        message: e.inner().to_string(),
    })?;
    de.end().map_err(|e| SyntaxError {
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok(raw)
}

/// A secret (client secret): never printed, never part of an error. Here because the
/// configuration holds one; tollgate-core uses it as `introspect::Secret`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Secret {
        Secret(secret)
    }
    /// The secret itself, for building the one request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// What applies to a request that matches no route. Absent: deny.
    #[serde(default)]
    pub default_route: Option<RawPolicy>,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default)]
    pub cache: RawCache,
    /// The OAuth endpoint gateway (authorization server replacement); absent: off.
    #[serde(default)]
    pub gateway: Option<RawGateway>,
    /// How callouts are scheduled: `auto` or `per_request` (`RawCallouts`).
    #[serde(default)]
    pub callouts: RawCallouts,
    /// Where the request's origin and client certificate come from, for sender-constrained
    /// tokens (DPoP `htu`, mTLS `x5t#S256`).
    #[serde(default)]
    pub sender_constraint: RawSenderConstraint,
    /// Policy decision points (OpenID AuthZEN 1.0) that routes' `authorize` rules name; read
    /// by hand (tollgate-core's `config::authorize`): serde's derived code for these nested sections would cost
    /// tens of KB of .wasm.
    #[serde(default)]
    pub pdps: Value,
    /// RFC 9728 protected resources: each one's metadata document, and the `resource_metadata`
    /// its routes' challenges name.
    #[serde(default)]
    pub protected_resources: Vec<RawProtectedResource>,
    /// The gateway's own issuer for backend tokens (name, signing keys, JWKS path); read by
    /// hand (tollgate-core's `config::upstream`).
    #[serde(default)]
    pub backend_token: Value,
}

/// One protected resource (RFC 9728), as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtectedResource {
    /// Path prefix of the resource (`/` for a whole origin).
    pub path: String,
    /// The public origin clients reach it at; absent: the gateway's first public origin.
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub resource_documentation: Option<String>,
    /// Absent or empty: the scopes the resource's routes require.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// `auto`: from the background (the tick) where the host has one and shared data, else per
/// request (detected at start). `per_request`: always per request, for a host that has both
/// but cannot resume a paused request from the background.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawCallouts {
    #[default]
    Auto,
    PerRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Path prefix of the gateway's OAuth endpoints, e.g. `/oauth2`.
    pub base_path: String,
    /// The gateway's public origins (`https://api.example.com`): the base URLs its documents
    /// name. Required (an empty list is refused with the reason).
    #[serde(default)]
    pub public_origins: Vec<String>,
    /// Header Tollgate sets to the chosen issuer's name on forwarded calls; the host's route
    /// table sends requests carrying it to that authorization server.
    #[serde(default = "default_route_header")]
    pub route_header: String,
    /// Query or form parameter that names the issuer explicitly.
    #[serde(default)]
    pub selector_param: Option<String>,
    /// Request header that names the issuer explicitly.
    #[serde(default)]
    pub selector_header: Option<String>,
    /// Issuer for calls nothing else routes, and the one the top-level metadata describes.
    #[serde(default)]
    pub default_issuer: Option<String>,
    /// Largest request body read to route a call (bigger: 413).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Stateless "authorization server proxy": tag client ids and opaque tokens handed out
    /// through the gateway as `<issuer>.<value>`.
    #[serde(default)]
    pub tagging: bool,
}

fn default_route_header() -> String {
    "x-tollgate-as".to_owned()
}
fn default_max_body_bytes() -> u64 {
    65_536
}

/// Per issuer: how the gateway reaches it and which clients are its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuerGateway {
    /// The server's metadata documents, whose `*_endpoint` members give the endpoints
    /// (configured `endpoints` win) and from which the gateway's documents are made: `true`
    /// (both kinds at their standard places), one document's URL, or
    /// `{"openid_configuration": .., "oauth_authorization_server": ..}` (tollgate-core's `config::gateway`).
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The host's name for the upstream that serves the metadata documents (an Envoy cluster
    /// name; `host:port` on Kong and APISIX), passed to `dispatch_http_call` unchanged.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Endpoint URLs: authorization, token, introspection, revocation, userinfo, registration.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// Client ids registered at this issuer.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Client ids starting with one of these belong to this issuer.
    #[serde(default)]
    pub client_id_prefixes: Vec<String>,
}

fn default_realm() -> String {
    "tollgate".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    pub issuer: String,
    /// Keys for JWT access tokens; absent for an issuer whose tokens are only introspected.
    #[serde(default)]
    pub jwks: Option<RawJwks>,
    /// RFC 7662 introspection at this issuer (opaque tokens; optionally JWTs too).
    #[serde(default)]
    pub introspection: Option<RawIntrospection>,
    /// Which opaque tokens this issuer minted (checked in issuer order, first match wins).
    #[serde(default)]
    pub opaque_tokens: Option<RawOpaqueTokens>,
    /// This issuer behind the gateway's OAuth endpoints.
    #[serde(default)]
    pub gateway: Option<RawIssuerGateway>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    #[serde(default)]
    pub require_at_jwt: bool,
    #[serde(default = "default_refresh_interval_s")]
    pub refresh_interval_s: u64,
    #[serde(default = "default_refetch_min_interval_s")]
    pub refetch_min_interval_s: u64,
    #[serde(default = "default_retry_interval_s")]
    pub retry_interval_s: u64,
    #[serde(default = "default_max_stale_s")]
    pub max_stale_s: u64,
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
    /// DPoP (RFC 9449) for this issuer's tokens.
    #[serde(default)]
    pub dpop: RawDpop,
    /// mTLS certificate-bound tokens (RFC 8705) for this issuer's tokens.
    #[serde(default)]
    pub mtls: RawMtls,
    /// This issuer's token endpoint for RFC 8693 token exchange, and Tollgate's client there
    /// (read by hand, tollgate-core's `config::upstream`).
    #[serde(default)]
    pub token_exchange: Value,
}

pub fn default_algorithms() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
fn default_clock_skew_s() -> u64 {
    60
}
fn default_refresh_interval_s() -> u64 {
    300
}
fn default_refetch_min_interval_s() -> u64 {
    10
}
fn default_retry_interval_s() -> u64 {
    5
}
fn default_max_stale_s() -> u64 {
    86_400
}
fn default_fetch_timeout_ms() -> u64 {
    2_000
}

/// Where an issuer's keys come from: exactly one of `inline`, `uri`, `discovery`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    /// A JWKS document (`{"keys": [...]}`) written into the configuration.
    #[serde(default)]
    pub inline: Option<Value>,
    /// The JWKS URL, fetched through `upstream`.
    #[serde(default)]
    pub uri: Option<String>,
    /// `true` for `<issuer>/.well-known/openid-configuration`, or the discovery document URL
    /// (OIDC Discovery or RFC 8414); its `jwks_uri` is then fetched through `upstream`.
    #[serde(default)]
    pub discovery: Option<Value>,
    /// The host's name for the upstream that serves `uri` / `discovery` (an Envoy cluster
    /// name; `host:port` on Kong and APISIX), passed to `dispatch_http_call` unchanged.
    #[serde(default)]
    pub upstream: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// The introspection endpoint URL; or use `discovery`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `true` for `<issuer>/.well-known/openid-configuration`, or the metadata document URL
    /// (OIDC Discovery or RFC 8414) whose `introspection_endpoint` is used.
    #[serde(default)]
    pub discovery: Option<Value>,
    /// The host's name for the upstream that serves the endpoint (an Envoy cluster name;
    /// `host:port` on Kong and APISIX), passed to `dispatch_http_call` unchanged.
    pub upstream: String,
    pub client_id: String,
    /// Never printed, and never part of an error (see the private `secret` reader below).
    #[serde(deserialize_with = "secret")]
    pub client_secret: Secret,
    #[serde(default = "default_auth_method")]
    pub auth_method: String,
    #[serde(default = "default_fetch_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest time a positive answer is reused (never past the token's `exp`).
    #[serde(default = "default_max_ttl_s")]
    pub max_ttl_s: u64,
    /// How long an `active: false` answer is reused.
    #[serde(default = "default_negative_ttl_s")]
    pub negative_ttl_s: u64,
    /// Also introspect JWTs of this issuer after local verification (revocation before `exp`).
    #[serde(default)]
    pub introspect_jwts: bool,
    /// Refuse answers without an access-token `token_type` (for issuers that introspect refresh
    /// tokens as active and mark access tokens with `token_type`).
    #[serde(default)]
    pub require_token_type: bool,
}

/// A string, kept as a [`Secret`]. Anything else is refused without serde's usual message,
/// which would quote a number or boolean written here (a secret that is all digits).
fn secret<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
    match Value::deserialize(de)? {
        Value::String(s) => Ok(Secret::new(s)),
        _ => Err(serde::de::Error::custom(
            "must be a string (the value is not shown: it is a secret)",
        )),
    }
}

fn default_auth_method() -> String {
    "client_secret_basic".to_owned()
}
fn default_max_ttl_s() -> u64 {
    300
}
fn default_negative_ttl_s() -> u64 {
    10
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpaqueTokens {
    /// Tokens starting with one of these were minted by this issuer.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Tokens matching this regular expression (whole token) were minted by this issuer.
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default)]
    pub require: Option<RawRequirement>,
}

/// The policy part of a route, used alone for `default_route`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default)]
    pub require: Option<RawRequirement>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub route_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    /// Names of issuers whose tokens this route accepts; empty means every configured issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Every one of these scopes must be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// At least one of these scopes must be granted.
    #[serde(default)]
    pub scopes_any: Vec<String>,
    /// Claim (dotted path for nested objects) -> accepted value or values.
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
    /// The issuer to introspect an opaque token at when no issuer's `opaque_tokens` rule
    /// matches it.
    #[serde(default)]
    pub opaque_issuer: Option<String>,
    /// A request header whose value names the issuer of an opaque token (only issuers this
    /// route accepts), used when no `opaque_tokens` rule matches and no `opaque_issuer` is set.
    #[serde(default)]
    pub issuer_header: Option<String>,
    /// This route's DPoP mode, instead of each issuer's `dpop.mode`.
    #[serde(default)]
    pub dpop: Option<RawMode>,
    /// This route's mTLS mode, instead of each issuer's `mtls.mode`.
    #[serde(default)]
    pub mtls: Option<RawMode>,
    /// Client ids allowed on this route (the token's `client_id`, else `azp`).
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// A request header that must carry the token's client id, exactly once.
    #[serde(default)]
    pub client_id_header: Option<String>,
    /// RFC 9470: acceptable `acr` values (any of).
    #[serde(default)]
    pub acr_values: Option<Vec<String>>,
    /// RFC 9470: the most seconds since the user authenticated (`auth_time`).
    #[serde(default)]
    pub max_age_s: Option<u64>,
    /// Ask a policy decision point (AuthZEN) once the token passed every other check (read by
    /// hand, tollgate-core's `config::authorize`).
    #[serde(default)]
    pub authorize: Value,
    /// What the upstream receives in place of the caller's token: `{"exchange": ..}` or
    /// `{"sign": ..}` (read by hand, tollgate-core's `config::upstream`).
    #[serde(default)]
    pub upstream_token: Value,
}

/// How a kind of token binding is treated (tollgate-core's `binding::Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawMode {
    Off,
    Allowed,
    Required,
}

/// An issuer's DPoP settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// `allowed`: the DPoP scheme is accepted; `off`: not advertised. A token with `cnf` is
    /// held to its binding whatever the mode.
    #[serde(default = "default_dpop_mode")]
    pub mode: RawMode,
    /// Proof algorithms accepted (asymmetric only).
    #[serde(default = "default_dpop_algorithms")]
    pub algorithms: Vec<String>,
    /// How far a proof's `iat` may be from now, either way.
    #[serde(default = "default_iat_window_s")]
    pub iat_window_s: u64,
    /// Proofs must carry a server nonce (`DPoP-Nonce`) Tollgate issued.
    #[serde(default)]
    pub require_nonce: bool,
}

impl Default for RawDpop {
    fn default() -> Self {
        Self {
            mode: default_dpop_mode(),
            algorithms: default_dpop_algorithms(),
            iat_window_s: default_iat_window_s(),
            require_nonce: false,
        }
    }
}

fn default_dpop_mode() -> RawMode {
    RawMode::Allowed
}
pub fn default_dpop_algorithms() -> Vec<String> {
    vec!["ES256".to_owned(), "EdDSA".to_owned()]
}
fn default_iat_window_s() -> u64 {
    60
}

/// An issuer's mTLS settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    #[serde(default = "default_mtls_mode")]
    pub mode: RawMode,
}

impl Default for RawMtls {
    fn default() -> Self {
        Self {
            mode: default_mtls_mode(),
        }
    }
}

fn default_mtls_mode() -> RawMode {
    RawMode::Off
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSenderConstraint {
    /// The origin (`https://api.example.com`) a DPoP proof's `htu` names when TLS ends in
    /// front of Envoy; absent: the request's `:scheme` and `:authority`.
    #[serde(default)]
    pub external_origin: Option<String>,
    /// Where the client certificate comes from.
    #[serde(default)]
    pub client_certificate: RawClientCertificate,
}

/// `{"from": "connection"}` (the host's TLS connection), or a header a trusted proxy in
/// front of Envoy sets: `{"from": "xfcc", "header": ..}` (Envoy's
/// `x-forwarded-client-cert`), `{"from": "client-cert", "header": ..}` (RFC 9440). A plain
/// struct rather than an internally tagged enum: serde's tagged enums buffer the object and
/// cost ~12 KB of .wasm; the combinations are checked when the configuration compiles.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCertificate {
    pub from: RawCertificateSource,
    #[serde(default)]
    pub header: Option<String>,
}

/// `client_certificate.from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawCertificateSource {
    #[default]
    Connection,
    Xfcc,
    ClientCert,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Claim (dotted path) -> request header set on the upstream request.
    #[serde(default = "default_identity_headers")]
    pub headers: BTreeMap<String, String>,
    /// Header that carries the whole verified payload as base64url JSON.
    #[serde(default)]
    pub payload_header: Option<String>,
    /// Header that carries the configured name of the issuer that authenticated the request.
    #[serde(default = "default_issuer_name_header")]
    pub issuer_name_header: Option<String>,
    /// Header that says how the token was bound (DPoP, mTLS) and the thumbprint.
    #[serde(default = "default_binding_header")]
    pub binding_header: Option<String>,
    /// What the upstream receives as `Authorization`: `unchanged`, `bearer`, `drop`.
    #[serde(default)]
    pub authorization: Option<RawForward>,
    /// Remove `Authorization` before the request goes upstream (`authorization: "drop"`).
    #[serde(default)]
    pub drop_authorization: bool,
}

/// `identity.authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawForward {
    Unchanged,
    Bearer,
    Drop,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            headers: default_identity_headers(),
            payload_header: None,
            issuer_name_header: default_issuer_name_header(),
            binding_header: default_binding_header(),
            authorization: None,
            drop_authorization: false,
        }
    }
}

pub fn default_binding_header() -> Option<String> {
    Some("x-tollgate-cnf".to_owned())
}

pub fn default_identity_headers() -> BTreeMap<String, String> {
    [
        ("sub", "x-tollgate-sub"),
        ("client_id", "x-tollgate-client-id"),
        ("scope", "x-tollgate-scope"),
        ("iss", "x-tollgate-iss"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn default_issuer_name_header() -> Option<String> {
    Some("x-tollgate-issuer".to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Slots in the verified-token cache shared by all workers (per worker on a host without
    /// shared data); 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u32,
    /// Slots in the policy-decision cache shared by all workers; 0 turns it off.
    #[serde(default = "default_decision_entries")]
    pub decision_entries: u32,
    /// Slots in the exchanged-token cache shared by all workers (`upstream_token.exchange`);
    /// 0 turns it off.
    #[serde(default = "default_decision_entries")]
    pub exchange_entries: u32,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            decision_entries: default_decision_entries(),
            exchange_entries: default_decision_entries(),
        }
    }
}

fn default_decision_entries() -> u32 {
    4096
}

fn default_cache_entries() -> u32 {
    8192
}
