//! `backend_token`, issuers' `token_exchange` and routes' `require.upstream_token`: what the
//! upstream receives in place of the caller's token ([`crate::upstream`]).
//!
//! Read from JSON values by hand, like `super::authorize` (serde's derived code for nested
//! sections costs .wasm size); errors name the JSON path, and never quote a secret or a key.

use serde_json::Value;

use super::authorize::{number, object, required, secret, string, strings};
use super::{err, http_url, is_header_name, upstream_name, ConfigError, Issuer};
use crate::introspect::{AuthMethod, ClientAuth};
use crate::sign::{SigningKey, SigningKeys};
use crate::upstream::{
    BackendIssuer, ExchangeClient, ExchangeRule, Placement, SignRule, UpstreamRule, DEFAULT_HEADER,
};

/// Where the gateway serves its JWKS when `backend_token.jwks_path` is not set.
pub const DEFAULT_JWKS_PATH: &str = "/.well-known/tollgate/jwks.json";

/// The top-level `backend_token`: the gateway's issuer name and signing keys.
pub(super) fn compile_backend(written: &Value) -> Result<Option<BackendIssuer>, ConfigError> {
    let at = "backend_token";
    if written.is_null() {
        return Ok(None);
    }
    let m = object(
        at,
        written,
        &[
            "issuer",
            "keys",
            "active_kid",
            "jwks_path",
            "jwks_max_age_s",
        ],
    )?;
    let issuer = required(at, m, "issuer")?;
    http_url(&format!("{at}.issuer"), &issuer)?;
    let written_keys = match m.get("keys") {
        Some(Value::Array(keys)) if !keys.is_empty() => keys,
        _ => {
            return err(
                format!("{at}.keys"),
                "must be a list of one or more private JWKs",
            )
        }
    };
    let mut keys = Vec::with_capacity(written_keys.len());
    for (j, jwk) in written_keys.iter().enumerate() {
        keys.push(SigningKey::from_jwk(jwk).map_err(|e| super::ConfigError {
            path: format!("{at}.keys[{j}]"),
            message: e.describe().to_owned(),
        })?);
    }
    let active_kid = match string(at, m, "active_kid")? {
        Some(kid) => kid,
        None if keys.len() == 1 => keys[0].kid().to_owned(),
        None => {
            return err(
                format!("{at}.active_kid"),
                "is required with more than one key",
            )
        }
    };
    let keys = SigningKeys::new(keys, &active_kid).map_err(|e| super::ConfigError {
        path: format!("{at}.keys"),
        message: e.describe().to_owned(),
    })?;
    let jwks_path = string(at, m, "jwks_path")?.unwrap_or_else(|| DEFAULT_JWKS_PATH.to_owned());
    if !jwks_path.starts_with('/') || jwks_path.contains(['?', '#']) {
        return err(
            format!("{at}.jwks_path"),
            "must be a path starting with '/', without query or fragment",
        );
    }
    let jwks_max_age_s = number(at, m, "jwks_max_age_s", 300, 0..=86_400)?;
    Ok(Some(BackendIssuer {
        issuer,
        keys,
        jwks_path,
        jwks_max_age_s,
    }))
}

/// An issuer's `token_exchange`: its token endpoint and Tollgate's client there.
pub(super) fn compile_client(
    at: &str,
    written: &Value,
) -> Result<Option<ExchangeClient>, ConfigError> {
    if written.is_null() {
        return Ok(None);
    }
    let m = object(
        at,
        written,
        &[
            "endpoint",
            "upstream",
            "client_id",
            "client_secret",
            "auth_method",
            "timeout_ms",
        ],
    )?;
    let endpoint = http_url(&format!("{at}.endpoint"), &required(at, m, "endpoint")?)?;
    let upstream = upstream_name(&format!("{at}.upstream"), required(at, m, "upstream")?)?;
    let id = required(at, m, "client_id")?;
    if id.is_empty() {
        return err(format!("{at}.client_id"), "must not be empty");
    }
    let secret = secret(format!("{at}.client_secret"), m.get("client_secret"))?;
    let method = string(at, m, "auth_method")?.unwrap_or_else(|| "client_secret_basic".into());
    let Some(method) = AuthMethod::from_name(&method) else {
        return err(
            format!("{at}.auth_method"),
            "must be client_secret_basic or client_secret_post",
        );
    };
    let timeout_ms = number(at, m, "timeout_ms", 2_000, 1..=60_000)?;
    Ok(Some(ExchangeClient {
        endpoint,
        upstream,
        client: ClientAuth { id, secret, method },
        timeout_ms,
    }))
}

/// One string or a list of strings (each non-empty), empty when absent.
fn one_or_many(at: &str, v: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ConfigError {
                path: at.to_owned(),
                message: "must be a string or a list of strings".to_owned(),
            })?,
        Some(_) => return err(at, "must be a string or a list of strings"),
    };
    if items.iter().any(String::is_empty) {
        return err(at, "must not be empty");
    }
    Ok(items)
}

/// A route's `upstream_token` (`at` is its JSON path): `route_issuers` are the issuers the
/// route accepts (empty: all), each of which must have a `token_exchange` when the exchange
/// goes to the token's own issuer.
pub(super) fn compile_rule(
    at: &str,
    written: &Value,
    issuers: &[Issuer],
    route_issuers: &[usize],
    backend: Option<&BackendIssuer>,
) -> Result<UpstreamRule, ConfigError> {
    let m = object(at, written, &["exchange", "sign"])?;
    match (m.get("exchange"), m.get("sign")) {
        (Some(x), None) => exchange_rule(&format!("{at}.exchange"), x, issuers, route_issuers)
            .map(UpstreamRule::Exchange),
        (None, Some(s)) => {
            let at = format!("{at}.sign");
            if backend.is_none() {
                return err(
                    at,
                    "needs the top-level backend_token section (the gateway's signing keys)",
                );
            }
            sign_rule(&at, s).map(UpstreamRule::Sign)
        }
        _ => err(at, "takes exactly one of \"exchange\" and \"sign\""),
    }
}

fn exchange_rule(
    at: &str,
    written: &Value,
    issuers: &[Issuer],
    route_issuers: &[usize],
) -> Result<ExchangeRule, ConfigError> {
    let m = object(
        at,
        written,
        &[
            "issuer",
            "audience",
            "resource",
            "scope",
            "margin_s",
            "max_ttl_s",
        ],
    )?;
    let exchanges = |i: usize| issuers.get(i).is_some_and(|i| i.token_exchange.is_some());
    let target = match string(at, m, "issuer")? {
        Some(name) => {
            let Some(idx) = issuers.iter().position(|i| i.name == name) else {
                return err(format!("{at}.issuer"), format!("no issuer named {name:?}"));
            };
            if !exchanges(idx) {
                return err(
                    format!("{at}.issuer"),
                    format!("issuer {name:?} has no token_exchange section"),
                );
            }
            Some(idx)
        }
        None => {
            let accepted: Vec<usize> = if route_issuers.is_empty() {
                (0..issuers.len()).collect()
            } else {
                route_issuers.to_vec()
            };
            if let Some(&i) = accepted.iter().find(|&&i| !exchanges(i)) {
                return err(
                    at,
                    format!(
                        "the route accepts tokens of issuer {:?}, which has no token_exchange section: limit the route's issuers, or name the exchanging issuer here",
                        issuers[i].name
                    ),
                );
            }
            None
        }
    };
    let audience = one_or_many(&format!("{at}.audience"), m.get("audience"))?;
    let resource = one_or_many(&format!("{at}.resource"), m.get("resource"))?;
    if audience.is_empty() && resource.is_empty() {
        return err(at, "names the target: audience, resource or both");
    }
    for (j, r) in resource.iter().enumerate() {
        // RFC 8707 §2: an absolute URI without a fragment.
        let url = url::Url::parse(r).ok();
        if url.is_none_or(|u| u.fragment().is_some()) {
            return err(
                format!("{at}.resource[{j}]"),
                "must be an absolute URI without a fragment (RFC 8707)",
            );
        }
    }
    let scope = string(at, m, "scope")?;
    if let Some(s) = &scope {
        if s.split(' ')
            .any(|t| t.is_empty() || !t.chars().all(super::is_scope_char))
        {
            return err(
                format!("{at}.scope"),
                "space-separated scope-tokens (RFC 6749 §3.3)",
            );
        }
    }
    let margin_s = number(at, m, "margin_s", 10, 0..=3_600)?;
    let max_ttl_s = number(at, m, "max_ttl_s", 300, 1..=86_400)?;
    Ok(ExchangeRule {
        at: target,
        audience,
        resource,
        scope,
        margin_ms: margin_s * 1000,
        max_ttl_ms: max_ttl_s * 1000,
    })
}

/// The claims a backend token carries by default: output claim = the caller's claim.
const DEFAULT_CLAIMS: [&str; 4] = ["sub", "client_id", "scope", "acr"];
/// Claims the gateway sets itself; a mapping may not name them.
const RESERVED: [&str; 6] = ["iss", "aud", "iat", "exp", "jti", "orig_iss"];

fn sign_rule(at: &str, written: &Value) -> Result<SignRule, ConfigError> {
    let m = object(at, written, &["audience", "lifetime_s", "header", "claims"])?;
    let audience = required(at, m, "audience")?;
    if audience.is_empty() {
        return err(format!("{at}.audience"), "must not be empty");
    }
    let lifetime_s = number(at, m, "lifetime_s", 60, 1..=3_600)?;
    let placement = match string(at, m, "header")? {
        None => Placement::Header(DEFAULT_HEADER.to_owned()),
        Some(h) if h == "authorization" => Placement::Authorization,
        Some(h) if is_header_name(&h) && !h.eq_ignore_ascii_case("dpop") => Placement::Header(h),
        Some(_) => return err(
            format!("{at}.header"),
            "must be a lower-case HTTP header name (\"authorization\" replaces the caller's token)",
        ),
    };
    let mapping = match m.get("claims") {
        None | Some(Value::Null) => DEFAULT_CLAIMS
            .iter()
            .map(|c| ((*c).to_owned(), (*c).to_owned()))
            .collect(),
        Some(_) => strings(at, m, "claims")?,
    };
    let mut claims = Vec::with_capacity(mapping.len());
    for (name, source) in mapping {
        let path = format!("{at}.claims.{name}");
        if name.is_empty() || RESERVED.contains(&name.as_str()) {
            return err(
                path,
                "iss, aud, iat, exp, jti and orig_iss are set by the gateway",
            );
        }
        if source.is_empty() || source.split('.').any(str::is_empty) {
            return err(
                path,
                "claim names are non-empty; '.' separates nested claims",
            );
        }
        claims.push((name, source.split('.').map(str::to_owned).collect()));
    }
    Ok(SignRule {
        audience,
        lifetime_s,
        placement,
        claims,
    })
}
