//! Which authorization server a gateway call goes to, and what the forwarded call looks like.
//!
//! Precedence (never a guess): an explicit selector — the issuer in the path, the
//! `selector_param` (query or form), the `selector_header` — then the client id (the issuers'
//! `client_ids` / `client_id_prefixes`, or a routing tag a client registered before tags came
//! off client ids still sends; from Basic credentials, the form or the query), then, for calls
//! that carry a token (introspect, revoke, userinfo, and a logout's `id_token_hint`), the
//! token's issuer by the same rules as API validation, then the configured `default_issuer`.
//! Nothing matches: an OAuth error.
//!
//! Forwarding keeps the query string and the body byte-for-byte, except for what Tollgate owns:
//! its selector parameter is removed and routing tags are stripped from client ids and tokens
//! (`token`, `refresh_token`, a userinfo bearer token).

use url::Url;

use super::form;
use crate::basic_auth;
use crate::config::{FilterConfig, Gateway};
use crate::endpoint::Endpoint;
use crate::issuer;
use crate::outcome::GatewayError;
use crate::token::{self, is_jws};

/// What a gateway call carries that can name its authorization server.
#[derive(Debug, Default, Clone, Copy)]
pub struct Call<'a> {
    pub path_issuer: Option<&'a str>,
    /// The raw query string (without '?').
    pub query: Option<&'a str>,
    /// The decoded form body (token, introspect, revoke).
    pub form: Option<&'a [(String, String)]>,
    /// Value of the configured `selector_header`.
    pub selector_header: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The client id in an RFC 7592 client configuration path (`register/{id}`), decoded.
    pub path_client_id: Option<&'a str>,
}

/// The decoded pairs of a raw query (empty when absent or malformed).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| form::parse(q.as_bytes()))
        .unwrap_or_default()
}

/// The issuer behind the gateway named `name`.
pub fn index_of(cfg: &FilterConfig, name: &str) -> Option<usize> {
    cfg.issuers
        .iter()
        .position(|i| i.name == name && i.gateway.is_some())
}

/// The client id a call presents: Basic credentials, else the form, else the query.
pub fn client_id<'c>(call: &'c Call<'_>, query: &'c [(String, String)]) -> Option<String> {
    if let Some(id) = call.path_client_id {
        return Some(id.to_owned());
    }
    if let Some((id, _)) = call.authorization.and_then(basic_auth::decode) {
        return Some(id);
    }
    call.form
        .and_then(|f| form::get(f, "client_id"))
        .or_else(|| form::get(query, "client_id"))
        .map(str::to_owned)
}

/// The token a call carries: the form's `token` (introspect, revoke), the bearer token
/// (userinfo), or a logout's `id_token_hint` (form or query; an ID token, so its `iss` routes).
fn token<'c>(
    endpoint: Endpoint,
    call: &'c Call<'_>,
    query: &'c [(String, String)],
) -> Option<&'c str> {
    match endpoint {
        Endpoint::Introspect | Endpoint::Revoke => call.form.and_then(|f| form::get(f, "token")),
        Endpoint::EndSession => call
            .form
            .and_then(|f| form::get(f, "id_token_hint"))
            .or_else(|| form::get(query, "id_token_hint")),
        Endpoint::Userinfo => call.authorization.and_then(|a| {
            let (scheme, rest) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        }),
        _ => None,
    }
}

/// Chooses the authorization server for a call (see the module comment for the order).
pub fn choose(
    cfg: &FilterConfig,
    gw: &Gateway,
    endpoint: Endpoint,
    call: &Call<'_>,
) -> Result<usize, GatewayError> {
    let query = query_pairs(call.query);
    let named = |name: &str| index_of(cfg, name).ok_or(GatewayError::UnknownSelector);
    if let Some(name) = call.path_issuer {
        return named(name);
    }
    if let Some(param) = &gw.selector_param {
        let value = call
            .form
            .and_then(|f| form::get(f, param))
            .or_else(|| form::get(&query, param));
        if let Some(name) = value {
            return named(name);
        }
    }
    if let Some(name) = call.selector_header {
        return named(name);
    }
    let client = client_id(call, &query);
    if let Some(id) = &client {
        if gw.tagging {
            if let Some((idx, _)) = token::untag(id, |n| index_of(cfg, n)) {
                return Ok(idx);
            }
        }
        let owner = cfg
            .issuers
            .iter()
            .position(|i| i.gateway.as_ref().is_some_and(|g| g.owns_client(id)));
        if let Some(idx) = owner {
            return Ok(idx);
        }
    }
    if let Some(t) = token(endpoint, call, &query) {
        let by_token = if is_jws(t) {
            crate::jwt::peek(t)
                .ok()
                .and_then(|p| cfg.issuer_by_iss(p.iss()))
        } else {
            issuer::by_rule(cfg, t)
        };
        if let Some(idx) = by_token.filter(|&i| cfg.issuers[i].gateway.is_some()) {
            return Ok(idx);
        }
    }
    if let Some(idx) = gw.default_issuer {
        return Ok(idx);
    }
    Err(if client.is_some() {
        GatewayError::UnknownClient
    } else {
        GatewayError::NoRoute
    })
}

/// The forwarded form of a call: what changes before it goes to the chosen server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The query to forward (raw; `None` for none).
    pub query: Option<String>,
    /// The client id for an RFC 7592 path, without its tag.
    pub path_client_id: Option<String>,
    /// A new body, when the form had to change (else the body goes as it came).
    pub body: Option<String>,
    /// A new `Authorization` value, when a tag had to come off the client id or the token.
    pub authorization: Option<String>,
}

/// Removes Tollgate's own parameters and routing tags; everything else stays as sent.
pub fn rewrite(cfg: &FilterConfig, gw: &Gateway, endpoint: Endpoint, call: &Call<'_>) -> Rewrite {
    let strip = |value: &str| -> Option<String> {
        if !gw.tagging {
            return None;
        }
        token::untag(value, |n| index_of(cfg, n)).map(|(_, rest)| rest.to_owned())
    };
    let selector = gw.selector_param.as_deref();
    // Query: drop the selector pair; untag client_id; other pairs keep their exact bytes.
    let query = call.query.map(|raw| {
        raw.split('&')
            .filter_map(|pair| {
                let decoded = form::parse(pair.as_bytes()).and_then(|p| p.into_iter().next());
                match decoded {
                    Some((name, _)) if Some(name.as_str()) == selector => None,
                    Some((name, value)) if name == "client_id" => Some(match strip(&value) {
                        Some(v) => form::encode(&[(name, v)]),
                        None => pair.to_owned(),
                    }),
                    _ => Some(pair.to_owned()),
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    let query = query.filter(|q| !q.is_empty());
    // Form: re-encoded only when something in it changes.
    let body = call.form.and_then(|pairs| {
        let kept: Vec<&(String, String)> = pairs
            .iter()
            .filter(|(n, _)| Some(n.as_str()) != selector)
            .collect();
        let mut changed = kept.len() != pairs.len();
        let mut out = Vec::with_capacity(kept.len());
        for (n, v) in kept {
            let untagged = match n.as_str() {
                "client_id" => strip(v),
                // Tokens the gateway tagged on the way out come back in `token` (introspect,
                // revoke) and `refresh_token` (the refresh grant).
                "token" | "refresh_token" if !is_jws(v) => strip(v),
                _ => None,
            };
            changed |= untagged.is_some();
            out.push((n.clone(), untagged.unwrap_or_else(|| v.clone())));
        }
        changed.then(|| form::encode(&out))
    });
    let authorization = call.authorization.and_then(|a| {
        if let Some((id, secret)) = basic_auth::decode(a) {
            return strip(&id).map(|id| basic_auth::encode(&id, &secret));
        }
        if endpoint == Endpoint::Userinfo {
            let t = token(endpoint, call, &[])?;
            if !is_jws(t) {
                return strip(t).map(|t| format!("Bearer {t}"));
            }
        }
        None
    });
    let path_client_id = call
        .path_client_id
        .map(|id| strip(id).unwrap_or_else(|| id.to_owned()));
    Rewrite {
        query,
        path_client_id,
        body,
        authorization,
    }
}

/// `endpoint` of the chosen server with the forwarded query appended.
pub fn target(endpoint: &Url, query: Option<&str>) -> (String, String) {
    let authority = crate::http::authority(endpoint);
    let mut path = crate::http::path_and_query(endpoint);
    if let Some(q) = query {
        path.push(if endpoint.query().is_some() { '&' } else { '?' });
        path.push_str(q);
    }
    (authority, path)
}

/// The response body as clients of the gateway must see it, or `None` when nothing changes:
/// with `tagging`, the issuer's tag on the opaque tokens of a token response; and for
/// registration (RFC 7591/7592), `registration_client_uri` pointing at the gateway
/// (`client_base` = the gateway's `.../{issuer}/register`), so management goes through it too.
///
/// What is never tagged, because something signed binds it: a client id (the `aud` of the
/// client's ID tokens, OpenID Connect Core §3.1.3.7), and an access token that comes with an
/// ID token (its `at_hash`, §3.1.3.8 and §3.2.2.9). A refresh token is bound by nothing.
pub fn rewrite_response(
    endpoint: Endpoint,
    issuer_name: &str,
    tagging: bool,
    client_base: &str,
    body: &[u8],
) -> Option<Vec<u8>> {
    if !matches!(
        endpoint,
        Endpoint::Register | Endpoint::ClientConfiguration | Endpoint::Token
    ) {
        return None;
    }
    let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    let tagged_fields: &[&str] = match endpoint {
        Endpoint::Token if doc.contains_key("id_token") => &["refresh_token"],
        Endpoint::Token => &["access_token", "refresh_token"],
        _ => &[],
    };
    if tagging {
        for field in tagged_fields {
            if let Some(serde_json::Value::String(v)) = doc.get_mut(*field) {
                if !is_jws(v) && !v.starts_with(&format!("{issuer_name}.")) {
                    *v = token::tag(issuer_name, v);
                    changed = true;
                }
            }
        }
    }
    if doc.contains_key("registration_client_uri") {
        if let Some(id) = doc.get("client_id").and_then(|v| v.as_str()) {
            let uri = format!("{client_base}/{}", encode_segment(id));
            doc.insert(
                "registration_client_uri".into(),
                serde_json::Value::String(uri),
            );
            changed = true;
        }
    }
    changed.then(|| serde_json::to_vec(&doc).ok()).flatten()
}

/// The client id of an RFC 7592 client configuration path (`register/{segment}`): the segment
/// percent-decoded, once. Refused ([`GatewayError::BadClientId`]): not UTF-8 after decoding,
/// and ids that are path syntax rather than names — empty, `.` and `..` (also written `%2e`,
/// `%2E%2e`, ...), which would make the server's URL name its parent path.
pub fn path_client_id(segment: &str) -> Result<String, GatewayError> {
    let id = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| GatewayError::BadClientId)?;
    if is_dot_or_empty(&id) {
        return Err(GatewayError::BadClientId);
    }
    Ok(id.into_owned())
}

fn is_dot_or_empty(id: &str) -> bool {
    matches!(id, "" | "." | "..")
}

/// Everything but RFC 3986 unreserved characters is percent-encoded in a path segment: `/`,
/// `?`, `#`, `%`, `\`, spaces and controls can neither end the segment nor be read as one.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A client id as one path segment.
pub fn encode_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// RFC 7592 client configuration URL at the server: its registration endpoint plus the client
/// id (decoded; encoded here as one path segment), in the endpoint's own style (`/reg` ->
/// `/reg/{id}`, `/o/register/` -> `/o/register/{id}/`). An id that is empty, `.` or `..` (also
/// after a routing tag came off) is refused with [`GatewayError::BadClientId`].
pub fn client_configuration_url(registration: &Url, client_id: &str) -> Result<Url, GatewayError> {
    if is_dot_or_empty(client_id) {
        return Err(GatewayError::BadClientId);
    }
    let id = encode_segment(client_id);
    let base = registration.as_str();
    let text = match base.strip_suffix('/') {
        Some(stem) => format!("{stem}/{id}/"),
        None => format!("{base}/{id}"),
    };
    crate::http::parse_url(&text).map_err(|_| GatewayError::NoEndpoint)
}

#[cfg(test)]
mod tests;
