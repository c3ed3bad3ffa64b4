//! RFC 7662 token introspection as values: the request Tollgate sends to the one issuer that
//! minted a token, and what the answer means.
//!
//! Decides: how the resource server authenticates (`client_secret_basic` with the RFC 6749
//! §2.3.1 encoding, or `client_secret_post`), whether an answer is usable at all (HTTP 200, a
//! JSON object with a boolean `active`) and whether it vouches for the token here (`exp`,
//! `nbf`, `iss`, `aud`, `token_type`). Never decides which issuer to ask (see `issuer`), and
//! never logs: the token and the client secret travel only in the request body / header.

use serde_json::{Map, Value};
use url::form_urlencoded;
use url::Url;

use crate::audience;
use crate::basic_auth;
use crate::cache::{Cached, Verified};
use crate::http::{HttpRequest, HttpResponse};

/// A secret (client secret): never printed, never part of an error. Defined with the
/// configuration's JSON types (crates/tollgate-config-raw), which hold one.
pub use tollgate_config_raw::Secret;

/// How Tollgate authenticates to the introspection endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub fn from_name(name: &str) -> Option<AuthMethod> {
        match name {
            "client_secret_basic" => Some(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(AuthMethod::ClientSecretPost),
            _ => None,
        }
    }
}

/// The resource server's credentials at one issuer.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub id: String,
    pub secret: Secret,
    pub method: AuthMethod,
}

/// `POST` `token=…&token_type_hint=access_token` to `endpoint` through `upstream`.
pub fn request(
    endpoint: &Url,
    upstream: &str,
    client: &ClientAuth,
    token: &str,
    timeout_ms: u64,
) -> HttpRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token);
    form.append_pair("token_type_hint", "access_token");
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    match client.method {
        AuthMethod::ClientSecretBasic => headers.push((
            "authorization".to_owned(),
            basic_auth::encode(&client.id, client.secret.expose()),
        )),
        AuthMethod::ClientSecretPost => {
            form.append_pair("client_id", &client.id);
            form.append_pair("client_secret", client.secret.expose());
        }
    }
    HttpRequest {
        upstream: upstream.to_owned(),
        method: "POST",
        scheme: crate::http::scheme(endpoint),
        authority: crate::http::authority(endpoint),
        path: crate::http::path_and_query(endpoint),
        headers,
        body: Some(form.finish().into_bytes()),
        timeout_ms,
    }
}

/// What an issuer said about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Active and acceptable here: the response members (without `active`) and `exp`.
    Active {
        claims: Map<String, Value>,
        exp_s: Option<i64>,
    },
    /// Not active, or active but not for this resource (expired, wrong audience, ...).
    Inactive(&'static str),
}

/// Why an introspection call gave no usable answer. Every kind fails closed (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectError {
    /// No HTTP answer.
    Transport,
    /// Our client credentials were refused (401 / 403).
    ClientRejected(u16),
    /// Any other non-200 status (Envoy reports timeouts as 504 and refused connections as 503).
    Status(u16),
    /// 200 but not a JSON object with a boolean `active`.
    BadResponse,
}

impl std::fmt::Display for IntrospectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntrospectError::Transport => write!(f, "no HTTP answer"),
            IntrospectError::ClientRejected(s) => write!(
                f,
                "HTTP {s}: the issuer refused Tollgate's client credentials (check introspection.client_id / client_secret)"
            ),
            IntrospectError::Status(s) => write!(f, "HTTP status {s}"),
            IntrospectError::BadResponse => {
                write!(f, "the answer is not a JSON object with a boolean \"active\"")
            }
        }
    }
}

/// What a usable answer must agree with.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub clock_skew_s: u64,
    pub now_s: i64,
    /// An answer without `token_type` is refused too.
    pub require_token_type: bool,
}

/// RFC 7662 §2.2 `token_type` values that denote an access token: a bearer token, or a
/// DPoP-bound one (RFC 9449 §6.2), whose binding the decision then checks.
fn is_access_token_type(t: &str) -> bool {
    t.eq_ignore_ascii_case("bearer")
        || t.eq_ignore_ascii_case("dpop")
        || t.eq_ignore_ascii_case("access_token")
        || t == "urn:ietf:params:oauth:token-type:access_token"
}

/// Reads an introspection answer.
pub fn read(
    response: Option<&HttpResponse>,
    expect: &Expect<'_>,
) -> Result<Answer, IntrospectError> {
    let response = response.ok_or(IntrospectError::Transport)?;
    match response.status {
        200 => {}
        s @ (401 | 403) => return Err(IntrospectError::ClientRejected(s)),
        s => return Err(IntrospectError::Status(s)),
    }
    let Ok(Value::Object(mut claims)) = serde_json::from_slice::<Value>(&response.body) else {
        return Err(IntrospectError::BadResponse);
    };
    match claims.remove("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Answer::Inactive("the token is not active")),
        _ => return Err(IntrospectError::BadResponse),
    }
    let skew = i64::try_from(expect.clock_skew_s).unwrap_or(i64::MAX);
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp_s = time("exp");
    if exp_s.is_some_and(|exp| expect.now_s > exp.saturating_add(skew)) {
        return Ok(Answer::Inactive("the token has expired"));
    }
    if time("nbf").is_some_and(|nbf| nbf > expect.now_s.saturating_add(skew)) {
        return Ok(Answer::Inactive("the token is not valid yet"));
    }
    if claims
        .get("iss")
        .is_some_and(|iss| iss.as_str() != Some(expect.issuer))
    {
        return Ok(Answer::Inactive("the token's issuer does not match"));
    }
    // RFC 7662 §2.2 makes `aud` optional, and servers such as django-oauth-toolkit (and
    // oidc-provider, for a token minted without a resource indicator) never send it: the
    // server vouching for its own token stands in for it. An `aud` it does send must pass the
    // same rule as a JWT's.
    let aud = claims.get("aud");
    if aud.is_some() && !audience::accepts(aud, expect.audiences) {
        return Ok(Answer::Inactive("the token's audience is not accepted"));
    }
    let access_type = claims
        .get("token_type")
        .map(|t| t.as_str().is_some_and(is_access_token_type));
    if access_type == Some(false) || (expect.require_token_type && access_type.is_none()) {
        return Ok(Answer::Inactive("the token is not an access token"));
    }
    // RFC 7662 `username` is the human-readable identifier; forward it as `sub` when the
    // issuer gives no `sub`, so routes and identity headers see one subject claim.
    if !claims.contains_key("sub") {
        if let Some(username) = claims.get("username").cloned() {
            claims.insert("sub".to_owned(), username);
        }
    }
    Ok(Answer::Active { claims, exp_s })
}

/// TTLs of introspection results, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    pub max_ms: u64,
    pub negative_ms: u64,
}

/// The cache entry for an answer. Positive answers live until `min(exp, now + max TTL)`;
/// `verified_jwt` (for JWTs that are also introspected) supplies the claims and its own `exp`.
pub fn entry(
    issuer: usize,
    answer: Answer,
    verified_jwt: Option<Verified>,
    ttl: Ttl,
    now_ms: u64,
) -> Cached {
    let ceiling = now_ms.saturating_add(ttl.max_ms);
    match (answer, verified_jwt) {
        (Answer::Inactive(_), _) => Cached::Invalid {
            issuer,
            until_ms: now_ms.saturating_add(ttl.negative_ms),
        },
        (Answer::Active { .. }, Some(v)) => Cached::Valid(Verified {
            issuer,
            exp_ms: v.exp_ms.min(ceiling),
            claims: v.claims,
            key: v.key,
            rendered: Default::default(),
        }),
        (Answer::Active { claims, exp_s }, None) => {
            let exp_ms = exp_s.map_or(u64::MAX, |s| {
                u64::try_from(s).unwrap_or(0).saturating_mul(1000)
            });
            Cached::Valid(Verified {
                issuer,
                exp_ms: exp_ms.min(ceiling),
                claims: std::rc::Rc::new(claims),
                key: None,
                rendered: Default::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests;
