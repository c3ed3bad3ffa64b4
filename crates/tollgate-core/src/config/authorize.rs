//! `pdps` and routes' `require.authorize`: the policy decision points and the AuthZEN rules
//! that ask them ([`crate::authz`]).

use std::collections::BTreeMap;

use super::{err, http_url, is_header_name, raw, upstream_name, ConfigError};
use crate::authz::{ContextFields, Pdp, PdpAuth, Resource, Rule, Source, Subject, Template};

/// The configured PDPs, in name order (rules refer to them by index).
pub(super) fn compile_pdps(
    written: BTreeMap<String, raw::RawPdp>,
) -> Result<Vec<Pdp>, ConfigError> {
    let mut out = Vec::with_capacity(written.len());
    for (name, rp) in written {
        let at = format!("pdps.{name}");
        if !metric_safe(&name) {
            return err(
                at,
                "a PDP's name is 1-64 characters of [A-Za-z0-9_-] (it appears in metric names)",
            );
        }
        let url = http_url(&format!("{at}.url"), &rp.url)?;
        let upstream = upstream_name(&format!("{at}.upstream"), rp.upstream)?;
        if !(1..=60_000).contains(&rp.timeout_ms) {
            return err(format!("{at}.timeout_ms"), "must be 1..=60000");
        }
        let auth = match rp.auth {
            None => PdpAuth::None,
            Some(raw::RawPdpAuth {
                bearer: Some(secret),
                basic: None,
            }) => PdpAuth::Bearer(secret),
            Some(raw::RawPdpAuth {
                bearer: None,
                basic: Some(b),
            }) => {
                if b.user.contains(':') || b.user.chars().any(char::is_control) {
                    return err(
                        format!("{at}.auth.basic.user"),
                        "must not contain ':' or control characters (RFC 7617)",
                    );
                }
                PdpAuth::Basic {
                    user: b.user,
                    password: b.password,
                }
            }
            Some(_) => {
                return err(
                    format!("{at}.auth"),
                    "takes exactly one of \"bearer\" and \"basic\"",
                )
            }
        };
        out.push(Pdp {
            name,
            url,
            upstream,
            auth,
            timeout_ms: rp.timeout_ms,
        });
    }
    Ok(out)
}

/// The default method -> action map.
const DEFAULT_ACTIONS: [(&str, &str); 6] = [
    ("GET", "read"),
    ("HEAD", "read"),
    ("POST", "create"),
    ("PUT", "update"),
    ("PATCH", "update"),
    ("DELETE", "delete"),
];

/// A route's `authorize` rule (`at` is its JSON path); `label` names the route in counters.
pub(super) fn compile_rule(
    at: &str,
    ra: raw::RawAuthorize,
    label: String,
    pdps: &[Pdp],
) -> Result<Rule, ConfigError> {
    let Some(pdp) = pdps.iter().position(|p| p.name == ra.pdp) else {
        return err(
            format!("{at}.pdp"),
            format!("no PDP named {:?} in pdps", ra.pdp),
        );
    };
    let claim_path = |path: String, name: &str| -> Result<Vec<String>, ConfigError> {
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return err(
                path,
                "claim names are non-empty; '.' separates nested claims",
            );
        }
        Ok(name.split('.').map(str::to_owned).collect())
    };
    let non_empty = |path: String, v: &str| -> Result<(), ConfigError> {
        if v.is_empty() {
            return err(path, "must not be empty");
        }
        Ok(())
    };

    let rs = ra.subject;
    non_empty(format!("{at}.subject.type"), &rs.kind)?;
    let mut properties = Vec::with_capacity(rs.properties.len());
    for (name, claim) in rs.properties {
        let path = claim_path(format!("{at}.subject.properties.{name}"), &claim)?;
        properties.push((name, path));
    }
    let subject = Subject {
        id: claim_path(format!("{at}.subject.id_claim"), &rs.id_claim)?,
        kind: rs.kind,
        properties,
    };

    let rr = ra.resource;
    non_empty(format!("{at}.resource.type"), &rr.kind)?;
    let template = match &rr.path {
        None => None,
        Some(text) => Some(Template::parse(text).ok_or_else(|| ConfigError {
            path: format!("{at}.resource.path"),
            message: "must start with '/'; each {name} ([A-Za-z0-9_]) is a whole segment and appears once".to_owned(),
        })?),
    };
    let source = |path: String, text: &str| -> Result<Source, ConfigError> {
        match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Some(name) if template.as_ref().is_some_and(|t| t.has(name)) => {
                Ok(Source::Param(name.to_owned()))
            }
            Some(name) => err(path, format!("resource.path has no {{{name}}}")),
            None if text.is_empty() || text.contains(['{', '}']) => {
                err(path, "must be {name} from resource.path, or a fixed value")
            }
            None => Ok(Source::Fixed(text.to_owned())),
        }
    };
    let id = match (&rr.id, &rr.id_header) {
        (Some(text), None) => source(format!("{at}.resource.id"), text)?,
        (None, Some(h)) if is_header_name(h) => Source::Header(h.clone()),
        (None, Some(_)) => {
            return err(
                format!("{at}.resource.id_header"),
                "must be a lower-case HTTP header name",
            )
        }
        _ => {
            return err(
                format!("{at}.resource"),
                "takes exactly one of \"id\" and \"id_header\"",
            )
        }
    };
    let mut props = Vec::with_capacity(rr.properties.len());
    for (name, text) in &rr.properties {
        let s = source(format!("{at}.resource.properties.{name}"), text)?;
        props.push((name.clone(), s));
    }
    let resource = Resource {
        kind: rr.kind,
        template,
        id,
        properties: props,
    };

    let actions: Vec<(String, String)> = match ra.actions {
        None => DEFAULT_ACTIONS
            .iter()
            .map(|(m, a)| ((*m).to_owned(), (*a).to_owned()))
            .collect(),
        Some(map) => {
            for (method, action) in &map {
                let path = format!("{at}.actions.{method}");
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                    return err(path, "methods are upper-case, e.g. GET");
                }
                non_empty(path, action)?;
            }
            map.into_iter().collect()
        }
    };

    let mut context = ContextFields::default();
    for (j, field) in ra.context.iter().enumerate() {
        let flag = match field.as_str() {
            "issuer" => &mut context.issuer,
            "scopes" => &mut context.scopes,
            "acr" => &mut context.acr,
            "client_id" => &mut context.client_id,
            _ => {
                return err(
                    format!("{at}.context[{j}]"),
                    "must be one of issuer, scopes, acr, client_id",
                )
            }
        };
        *flag = true;
    }
    for (field, value) in [("ttl_s", ra.ttl_s), ("negative_ttl_s", ra.negative_ttl_s)] {
        if !(1..=86_400).contains(&value) {
            return err(format!("{at}.{field}"), "must be 1..=86400");
        }
    }
    Ok(Rule {
        pdp,
        label,
        subject,
        resource,
        actions,
        context,
        ttl_ms: ra.ttl_s * 1000,
        negative_ttl_ms: ra.negative_ttl_s * 1000,
        expose_reason: ra.expose_reason,
    })
}

/// 1-64 of `[A-Za-z0-9_-]`: fit for a metric name.
fn metric_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A route's name in counters: its `name` when fit for a metric name, else its position
/// (`default` for the default route).
pub(super) fn label(name: Option<&str>, position: Option<usize>) -> String {
    match (name, position) {
        (Some(n), _) if metric_safe(n) => n.to_owned(),
        (_, Some(i)) => i.to_string(),
        (_, None) => "default".to_owned(),
    }
}
