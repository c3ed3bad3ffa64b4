//! `pdps` and routes' `require.authorize`: the policy decision points and the AuthZEN rules
//! that ask them ([`crate::authz`]).
//!
//! Both sections are read from JSON values by hand rather than through serde's derived code,
//! which for these nested objects cost ~30 KB of .wasm; errors still name the JSON path.

use serde_json::{Map, Value};

use super::{err, http_url, is_header_name, upstream_name, ConfigError};
use crate::authz::{ContextFields, Pdp, PdpAuth, Resource, Rule, Source, Subject, Template};
use crate::introspect::Secret;

/// `v` as an object whose members are all among `known`.
pub(super) fn object<'v>(
    at: &str,
    v: &'v Value,
    known: &[&str],
) -> Result<&'v Map<String, Value>, ConfigError> {
    let Value::Object(m) = v else {
        return err(at, "must be an object");
    };
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return err(
            format!("{at}.{k}"),
            format!("unknown field, expected one of {}", known.join(", ")),
        );
    }
    Ok(m)
}

/// A string member; `None` when absent or null.
pub(super) fn string(
    at: &str,
    m: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => err(format!("{at}.{key}"), "must be a string"),
    }
}

/// A required string member.
pub(super) fn required(at: &str, m: &Map<String, Value>, key: &str) -> Result<String, ConfigError> {
    string(at, m, key)?.ok_or_else(|| ConfigError {
        path: format!("{at}.{key}"),
        message: "is required".to_owned(),
    })
}

/// A whole number member in `range`, `default` when absent.
pub(super) fn number(
    at: &str,
    m: &Map<String, Value>,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let n = match m.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => v.as_u64().ok_or_else(|| ConfigError {
            path: format!("{at}.{key}"),
            message: "must be a whole number".to_owned(),
        })?,
    };
    if !range.contains(&n) {
        return err(
            format!("{at}.{key}"),
            format!("must be {}..={}", range.start(), range.end()),
        );
    }
    Ok(n)
}

/// A map of strings (`{name: text}`), empty when absent.
pub(super) fn strings(
    at: &str,
    m: &Map<String, Value>,
    key: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let at = format!("{at}.{key}");
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => err(format!("{at}.{k}"), "must be a string"),
            })
            .collect(),
        Some(_) => err(at, "must be an object"),
    }
}

/// A secret: a string, never echoed in the error.
pub(super) fn secret(at: String, v: Option<&Value>) -> Result<Secret, ConfigError> {
    match v {
        Some(Value::String(s)) => Ok(Secret::new(s.clone())),
        _ => err(
            at,
            "must be a string (the value is not shown: it is a secret)",
        ),
    }
}

/// The configured PDPs, in name order (rules refer to them by index).
pub(super) fn compile_pdps(written: &Value) -> Result<Vec<Pdp>, ConfigError> {
    let all = match written {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m,
        _ => return err("pdps", "must be an object"),
    };
    let mut out = Vec::with_capacity(all.len());
    for (name, rp) in all {
        let at = format!("pdps.{name}");
        if !metric_safe(name) {
            return err(
                at,
                "a PDP's name is 1-64 characters of [A-Za-z0-9_-] (it appears in metric names)",
            );
        }
        let m = object(&at, rp, &["url", "upstream", "timeout_ms", "auth"])?;
        let url = http_url(&format!("{at}.url"), &required(&at, m, "url")?)?;
        let upstream = upstream_name(&format!("{at}.upstream"), required(&at, m, "upstream")?)?;
        let timeout_ms = number(&at, m, "timeout_ms", 1000, 1..=60_000)?;
        let auth = match m.get("auth") {
            None | Some(Value::Null) => PdpAuth::None,
            Some(a) => {
                let at = format!("{at}.auth");
                let am = object(&at, a, &["bearer", "basic"])?;
                match (am.get("bearer"), am.get("basic")) {
                    (Some(b), None) => PdpAuth::Bearer(secret(format!("{at}.bearer"), Some(b))?),
                    (None, Some(b)) => {
                        let at = format!("{at}.basic");
                        let bm = object(&at, b, &["user", "password"])?;
                        let user = required(&at, bm, "user")?;
                        if user.contains(':') || user.chars().any(char::is_control) {
                            return err(
                                format!("{at}.user"),
                                "must not contain ':' or control characters (RFC 7617)",
                            );
                        }
                        let password = secret(format!("{at}.password"), bm.get("password"))?;
                        PdpAuth::Basic { user, password }
                    }
                    _ => return err(at, "takes exactly one of \"bearer\" and \"basic\""),
                }
            }
        };
        out.push(Pdp {
            name: name.clone(),
            url,
            upstream,
            auth,
            timeout_ms,
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
    written: &Value,
    label: String,
    pdps: &[Pdp],
) -> Result<Rule, ConfigError> {
    const FIELDS: [&str; 8] = [
        "pdp",
        "subject",
        "resource",
        "actions",
        "context",
        "ttl_s",
        "negative_ttl_s",
        "expose_reason",
    ];
    let m = object(at, written, &FIELDS)?;
    let name = required(at, m, "pdp")?;
    let Some(pdp) = pdps.iter().position(|p| p.name == name) else {
        return err(
            format!("{at}.pdp"),
            format!("no PDP named {name:?} in pdps"),
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

    let sat = format!("{at}.subject");
    let empty = Value::Object(Map::new());
    let sm = object(
        &sat,
        m.get("subject").unwrap_or(&empty),
        &["type", "id_claim", "properties"],
    )?;
    let kind = string(&sat, sm, "type")?.unwrap_or_else(|| "user".to_owned());
    non_empty(format!("{sat}.type"), &kind)?;
    let id_claim = string(&sat, sm, "id_claim")?.unwrap_or_else(|| "sub".to_owned());
    let mut properties = Vec::new();
    for (name, claim) in strings(&sat, sm, "properties")? {
        let path = claim_path(format!("{sat}.properties.{name}"), &claim)?;
        properties.push((name, path));
    }
    let subject = Subject {
        id: claim_path(format!("{sat}.id_claim"), &id_claim)?,
        kind,
        properties,
    };

    let rat = format!("{at}.resource");
    let rm = match m.get("resource") {
        Some(v) => object(&rat, v, &["type", "path", "id", "id_header", "properties"])?,
        None => return err(rat, "is required"),
    };
    let kind = required(&rat, rm, "type")?;
    non_empty(format!("{rat}.type"), &kind)?;
    let template = match string(&rat, rm, "path")? {
        None => None,
        Some(text) => Some(Template::parse(&text).ok_or_else(|| ConfigError {
            path: format!("{rat}.path"),
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
    let id = match (string(&rat, rm, "id")?, string(&rat, rm, "id_header")?) {
        (Some(text), None) => source(format!("{rat}.id"), &text)?,
        (None, Some(h)) if is_header_name(&h) => Source::Header(h),
        (None, Some(_)) => {
            return err(
                format!("{rat}.id_header"),
                "must be a lower-case HTTP header name",
            )
        }
        _ => return err(rat, "takes exactly one of \"id\" and \"id_header\""),
    };
    let mut props = Vec::new();
    for (name, text) in strings(&rat, rm, "properties")? {
        let s = source(format!("{rat}.properties.{name}"), &text)?;
        props.push((name, s));
    }
    let resource = Resource {
        kind,
        template,
        id,
        properties: props,
    };

    let actions: Vec<(String, String)> = match m.get("actions") {
        None | Some(Value::Null) => DEFAULT_ACTIONS
            .iter()
            .map(|(m, a)| ((*m).to_owned(), (*a).to_owned()))
            .collect(),
        Some(_) => {
            let map = strings(at, m, "actions")?;
            for (method, action) in &map {
                let path = format!("{at}.actions.{method}");
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                    return err(path, "methods are upper-case, e.g. GET");
                }
                non_empty(path, action)?;
            }
            map
        }
    };

    let mut context = ContextFields::default();
    let listed = match m.get("context") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return err(format!("{at}.context"), "must be a list"),
    };
    for (j, field) in listed.iter().enumerate() {
        let flag = match field.as_str() {
            Some("issuer") => &mut context.issuer,
            Some("scopes") => &mut context.scopes,
            Some("acr") => &mut context.acr,
            Some("client_id") => &mut context.client_id,
            _ => {
                return err(
                    format!("{at}.context[{j}]"),
                    "must be one of issuer, scopes, acr, client_id",
                )
            }
        };
        *flag = true;
    }
    let ttl_s = number(at, m, "ttl_s", 60, 1..=86_400)?;
    let negative_ttl_s = number(at, m, "negative_ttl_s", 10, 1..=86_400)?;
    let expose_reason = match m.get("expose_reason") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err(format!("{at}.expose_reason"), "must be true or false"),
    };
    Ok(Rule {
        pdp,
        label,
        subject,
        resource,
        actions,
        context,
        ttl_ms: ttl_s * 1000,
        negative_ttl_ms: negative_ttl_s * 1000,
        expose_reason,
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
