//! What the upstream receives in place of the caller's token (issue 17), per route
//! (`require.upstream_token`):
//! - **exchange**: the caller's validated token is exchanged (RFC 8693) at a token endpoint
//!   the configuration names, and the upstream gets the new token as `Authorization: Bearer`;
//! - **sign**: the gateway mints a short-lived JWT of the caller's verified identity, signed
//!   with its own key ([`crate::sign`]), which the upstream verifies against the JWKS the
//!   gateway serves.
//!
//! Decides: the exchange request (form, client authentication) and what its answer means (a
//! token and how long it may be reused, a refusal, or no answer); the backend token's claims
//! and lifetime; the cache records of both. Never decides *whether* a request is allowed (that
//! is done before), never reads a clock (`now` comes in), and never logs a token or a secret.
//!
//! The subject token only ever goes to the exchange endpoint of the issuer the route names
//! (by default the issuer that minted it): the endpoint is configuration, never derived from
//! the token or the request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::form_urlencoded;
use url::Url;

use crate::basic_auth;
use crate::http::{HttpRequest, HttpResponse};
use crate::introspect::{AuthMethod, ClientAuth};
use crate::policy::claim_at;
use crate::sign::SigningKeys;

/// RFC 8693 §2.1's grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: the subject token is an OAuth access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The backend token's header when the route names none.
pub const DEFAULT_HEADER: &str = "x-tollgate-jwt";
/// How long an exchange the authorization server refused is remembered: a burst of requests
/// with that token makes one call, and a changed grant at the server is seen soon.
pub const REFUSAL_TTL_MS: u64 = 5_000;

/// An issuer's token endpoint for exchanges, and Tollgate's client there.
#[derive(Debug)]
pub struct ExchangeClient {
    pub endpoint: Url,
    /// The host's name for the upstream that serves the endpoint.
    pub upstream: String,
    pub client: ClientAuth,
    pub timeout_ms: u64,
}

/// A route's `upstream_token`.
#[derive(Debug)]
pub enum UpstreamRule {
    Exchange(ExchangeRule),
    Sign(SignRule),
}

/// `upstream_token.exchange`: what to ask for.
#[derive(Debug)]
pub struct ExchangeRule {
    /// The issuer whose `token_exchange` is used; `None`: the token's own issuer.
    pub at: Option<usize>,
    pub audience: Vec<String>,
    pub resource: Vec<String>,
    pub scope: Option<String>,
    /// Reuse stops this long before the exchanged token expires.
    pub margin_ms: u64,
    /// Never reused longer than this.
    pub max_ttl_ms: u64,
}

/// Where the backend token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In this header (lower case), the caller's `Authorization` left as the identity
    /// settings say.
    Header(String),
    /// As `Authorization: Bearer …`, replacing the caller's token (and `DPoP` removed).
    Authorization,
}

/// `upstream_token.sign`: the backend token a route's upstream receives.
#[derive(Debug)]
pub struct SignRule {
    pub audience: String,
    pub lifetime_s: u64,
    pub placement: Placement,
    /// Output claim -> the caller's claim (path into nested objects).
    pub claims: Vec<(String, Vec<String>)>,
}

/// The gateway's own issuer (`backend_token`): its name, keys and published key set.
#[derive(Debug)]
pub struct BackendIssuer {
    pub issuer: String,
    pub keys: SigningKeys,
    /// Where the gateway answers with its public JWKS (GET and HEAD).
    pub jwks_path: String,
    pub jwks_max_age_s: u64,
}

/// Tollgate's own answer to a `GET` or `HEAD` of the gateway's JWKS path (any query): the
/// public keys of every configured signing key, with `Cache-Control`. `None` for any other
/// request, which goes on as usual.
pub fn jwks_answer(
    backend: Option<&BackendIssuer>,
    method: &str,
    path: &str,
) -> Option<crate::outcome::LocalReply> {
    let backend = backend?;
    if !matches!(method, "GET" | "HEAD") {
        return None;
    }
    let asked = path.split_once('?').map_or(path, |(p, _)| p);
    if asked != backend.jwks_path {
        return None;
    }
    Some(crate::outcome::LocalReply {
        status: 200,
        headers: vec![
            (
                "content-type".to_owned(),
                "application/jwk-set+json".to_owned(),
            ),
            (
                "cache-control".to_owned(),
                format!("public, max-age={}", backend.jwks_max_age_s),
            ),
        ],
        body: backend.keys.public_jwks().to_owned(),
    })
}

/// The headers backend tokens are written to (other than `Authorization`): only the gateway
/// sets them, so inbound copies are removed from every request.
pub fn headers(rules: &[UpstreamRule]) -> impl Iterator<Item = &str> {
    rules.iter().filter_map(|r| match r {
        UpstreamRule::Sign(SignRule {
            placement: Placement::Header(h),
            ..
        }) => Some(h.as_str()),
        _ => None,
    })
}

/// The work a verdict leaves for the flow once the request is allowed: the upstream token of
/// route rule `rule` for the caller's `token`.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The index of the route's rule in `FilterConfig::upstream_rules`.
    pub rule: usize,
    /// The issuer that authenticated the caller.
    pub issuer: usize,
    /// The caller's token: what is exchanged, and what the flow's memos are keyed by.
    pub token: String,
    /// `sign` rules: the caller's verified claims, mapped into a backend token only when one is
    /// signed (a warm request reuses one and maps nothing).
    pub claims: Option<std::rc::Rc<Map<String, Value>>>,
}

/// The cache key of a token's upstream token under rule `rule`: the configuration (so a
/// changed rule never reuses an old answer), the rule and the caller's token.
pub fn key(fingerprint: &[u8; 32], rule: usize, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tollgate upstream token\0");
    h.update(fingerprint);
    h.update((rule as u64).to_le_bytes());
    h.update(token.as_bytes());
    h.finalize().into()
}

/// The backend token's claims from the caller's verified claims: the rule's mapping (claims
/// the caller's token lacks are left out) and `orig_iss`, the issuer that authenticated the
/// caller (its configured `issuer`, the same for a JWT and an introspected token).
pub fn backend_claims(
    rule: &SignRule,
    iss: &str,
    caller: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::with_capacity(rule.claims.len() + 1);
    for (name, path) in &rule.claims {
        if let Some(v) = claim_at(caller, path).filter(|v| !v.is_null()) {
            out.insert(name.clone(), v.clone());
        }
    }
    out.insert("orig_iss".to_owned(), Value::from(iss));
    out
}

/// A minted backend token and until when it may be reused (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub reuse_until_ms: u64,
}

/// Mints the backend token: `iss` the gateway, `aud` the route's, `iat` now, `exp` the
/// earlier of now + lifetime and the caller's `exp`, and `jti` (from `jti`, 16 random bytes).
/// It is reused until a quarter of its lifetime is left (at least 1 s before `exp`).
pub fn mint(
    issuer: &BackendIssuer,
    rule: &SignRule,
    mut claims: Map<String, Value>,
    caller_exp_s: Option<i64>,
    now_ms: u64,
    jti: &[u8; 16],
) -> Minted {
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let lifetime = i64::try_from(rule.lifetime_s).unwrap_or(i64::MAX);
    let mut exp = now_s.saturating_add(lifetime);
    if let Some(caller) = caller_exp_s {
        exp = exp.min(caller);
    }
    claims.insert("iss".to_owned(), Value::from(issuer.issuer.as_str()));
    claims.insert("aud".to_owned(), Value::from(rule.audience.as_str()));
    claims.insert("iat".to_owned(), Value::from(now_s));
    claims.insert("exp".to_owned(), Value::from(exp));
    claims.insert("jti".to_owned(), Value::from(URL_SAFE_NO_PAD.encode(jti)));
    let token = issuer.keys.sign(&claims);
    let left_ms = u64::try_from(exp.saturating_sub(now_s)).unwrap_or(0) * 1000;
    let keep = (left_ms / 4).max(1000);
    Minted {
        token,
        reuse_until_ms: now_ms.saturating_add(left_ms.saturating_sub(keep)),
    }
}

/// The exchange request (RFC 8693 §2.1): `POST` to the issuer's token endpoint with the
/// subject token, the rule's `audience`/`resource`/`scope`, and Tollgate's client
/// authentication (RFC 6749 §2.3.1).
pub fn request(client: &ExchangeClient, rule: &ExchangeRule, subject: &str) -> HttpRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", TOKEN_EXCHANGE);
    form.append_pair("subject_token", subject);
    form.append_pair("subject_token_type", ACCESS_TOKEN_TYPE);
    form.append_pair("requested_token_type", ACCESS_TOKEN_TYPE);
    for a in &rule.audience {
        form.append_pair("audience", a);
    }
    for r in &rule.resource {
        form.append_pair("resource", r);
    }
    if let Some(scope) = &rule.scope {
        form.append_pair("scope", scope);
    }
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    let auth = &client.client;
    match auth.method {
        AuthMethod::ClientSecretBasic => headers.push((
            "authorization".to_owned(),
            basic_auth::encode(&auth.id, auth.secret.expose()),
        )),
        AuthMethod::ClientSecretPost => {
            form.append_pair("client_id", &auth.id);
            form.append_pair("client_secret", auth.secret.expose());
        }
    }
    HttpRequest {
        upstream: client.upstream.clone(),
        method: "POST",
        scheme: crate::http::scheme(&client.endpoint),
        authority: crate::http::authority(&client.endpoint),
        path: crate::http::path_and_query(&client.endpoint),
        headers,
        body: Some(form.finish().into_bytes()),
        timeout_ms: client.timeout_ms,
    }
}

/// What an exchange came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchanged {
    /// The new access token, reusable until `until_ms`.
    Token { token: String, until_ms: u64 },
    /// The authorization server refused this exchange (its `error` code): 403, remembered for
    /// [`REFUSAL_TTL_MS`].
    Refused(String),
}

/// Why an exchange gave no answer to act on: 503, never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    Transport,
    /// A status other than 200 that is not one of the refusals.
    Status(u16),
    /// 200 without a usable token (`access_token`, `token_type` Bearer or N_A).
    BadResponse(&'static str),
    /// A refusal of Tollgate's own request or credentials (`invalid_client`,
    /// `unsupported_grant_type`, …): a configuration problem, not the caller's.
    Misconfigured(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Transport => write!(f, "no HTTP answer"),
            ExchangeError::Status(s) => write!(f, "HTTP status {s}"),
            ExchangeError::BadResponse(why) => write!(f, "unusable answer: {why}"),
            ExchangeError::Misconfigured(code) => write!(
                f,
                "the server refused Tollgate's request ({code}): check the issuer's token_exchange client and grant"
            ),
        }
    }
}

/// Error codes that refuse this caller's token or target (RFC 8693 §2.2.2, RFC 6749 §5.2),
/// not Tollgate's request as such: the request is refused with 403.
const REFUSALS: [&str; 5] = [
    "invalid_grant",
    "invalid_target",
    "unauthorized_client",
    "invalid_request",
    "invalid_scope",
];

/// Reads the token endpoint's answer (`None`: no HTTP answer) at `now_ms`.
pub fn read(
    response: Option<&HttpResponse>,
    rule: &ExchangeRule,
    now_ms: u64,
) -> Result<Exchanged, ExchangeError> {
    let r = response.ok_or(ExchangeError::Transport)?;
    let body: Option<Map<String, Value>> = serde_json::from_slice(&r.body).ok();
    if r.status != 200 {
        let code = body
            .as_ref()
            .and_then(|b| b.get("error"))
            .and_then(Value::as_str)
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()));
        return match (r.status, code) {
            (400 | 401 | 403, Some(c)) if REFUSALS.contains(&c) => {
                Ok(Exchanged::Refused(c.to_owned()))
            }
            (400 | 401 | 403, Some(c)) => Err(ExchangeError::Misconfigured(c.to_owned())),
            (s, _) => Err(ExchangeError::Status(s)),
        };
    }
    let body = body.ok_or(ExchangeError::BadResponse("not a JSON object"))?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(ExchangeError::BadResponse("no access_token"))?;
    // §2.2.1: `Bearer` for an access token usable as one; `N_A` when it is not an access
    // token. Tollgate asked for an access token and sends it as a bearer token.
    let bearer = body
        .get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
    if !bearer {
        return Err(ExchangeError::BadResponse("token_type is not Bearer"));
    }
    let mut life_ms = rule.max_ttl_ms;
    if let Some(s) = body.get("expires_in").and_then(Value::as_u64) {
        life_ms = life_ms.min(s.saturating_mul(1000));
    }
    if let Some(exp_s) = jwt_exp(token) {
        life_ms = life_ms.min(exp_s.saturating_mul(1000).saturating_sub(now_ms));
    }
    Ok(Exchanged::Token {
        token: token.to_owned(),
        until_ms: now_ms.saturating_add(life_ms.saturating_sub(rule.margin_ms)),
    })
}

/// A JWT's `exp` (seconds), read without verifying it: only to cache the token no longer
/// than it lives (the upstream verifies it). `None` for an opaque token.
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// A cache record, live until `until_ms`: the key, `until_ms`, then `1` and the token, or `0`
/// and the refusal's code.
pub fn encode(key: &[u8; 32], answer: &Exchanged, until_ms: u64) -> Vec<u8> {
    let (tag, text) = match answer {
        Exchanged::Token { token, .. } => (1u8, token.as_str()),
        Exchanged::Refused(code) => (0, code.as_str()),
    };
    let mut out = Vec::with_capacity(41 + text.len());
    out.extend_from_slice(key);
    out.extend_from_slice(&until_ms.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(text.as_bytes());
    out
}

/// The live answer for `key` in a record, and until when it lives; `None` for another key's,
/// an expired or a malformed one.
pub fn decode(key: &[u8; 32], value: &[u8], now_ms: u64) -> Option<(Exchanged, u64)> {
    let (stored, rest) = value.split_at_checked(32)?;
    let (until, rest) = rest.split_at_checked(8)?;
    let until_ms = u64::from_le_bytes(until.try_into().ok()?);
    if stored != key || until_ms <= now_ms {
        return None;
    }
    let (tag, text) = rest.split_first()?;
    let text = std::str::from_utf8(text).ok()?.to_owned();
    let answer = match tag {
        1 => Exchanged::Token {
            token: text,
            until_ms,
        },
        0 => Exchanged::Refused(text),
        _ => return None,
    };
    Some((answer, until_ms))
}

#[cfg(test)]
mod tests;
