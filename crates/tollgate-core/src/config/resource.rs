//! The `protected_resources` section (RFC 9728), validated: each resource's public URL, the
//! routes under it (whose challenges then name its metadata URL) and its document.
//!
//! - `resource` is the configured public origin (else the gateway's first public origin) and
//!   the resource's path: never anything from a request.
//! - A route is under the resource whose path its `match.prefix` or `match.exact` is, or lies
//!   below (at a `/`), and whose origin's host its `match.host` (if any) matches; the longest
//!   such path wins. A route without a path condition is under a root resource (`/`) only, and
//!   so is `default_route`. A route without a host condition may be under one resource per
//!   origin: every such document lists it, and its challenges name the first one listed.
//! - The document lists what those routes accept: `authorization_servers` are the `issuer`
//!   identifiers of their issuers (never the gateway's per-issuer URLs: the gateway's documents
//!   keep each server's own `issuer`, which RFC 8414 §3.3 makes clients compare with the
//!   identifier they started from), `scopes_supported` the scopes they require (unless
//!   configured; left out when there are none), and DPoP / mTLS support from their modes.

use serde_json::{Map, Value};

use super::raw::RawProtectedResource;
use super::{check_scopes, err, http_url, ConfigError, Gateway, Issuer};
use crate::binding::Mode;
use crate::key::{Alg, AlgSet};
use crate::origin::PublicOrigin;
use crate::policy::{Matcher, Policy, Requirement, Route};
use crate::resource::{well_known_path, ProtectedResource};

/// A resource before its document: where it is, and what is configured for it.
struct Placed {
    origin: PublicOrigin,
    path: String,
    written: RawProtectedResource,
}

/// Compiles the section, points each route's challenge at the resource it is under, and
/// builds the documents.
pub(super) fn compile_resources(
    written: Vec<RawProtectedResource>,
    gateway: Option<&Gateway>,
    issuers: &[Issuer],
    routes: &mut [Route],
    default_policy: Option<&mut Policy>,
) -> Result<Vec<ProtectedResource>, ConfigError> {
    if written.is_empty() {
        return Ok(Vec::new());
    }
    if u16::try_from(written.len()).is_err() {
        return err("protected_resources", "too many resources");
    }
    let mut placed: Vec<Placed> = Vec::with_capacity(written.len());
    for (i, w) in written.into_iter().enumerate() {
        let at = format!("protected_resources[{i}]");
        let p = place(&at, w, gateway)?;
        if let Some(j) = placed
            .iter()
            .position(|q| q.path == p.path && q.origin.same_authority(&p.origin))
        {
            return err(
                format!("{at}.path"),
                format!("protected_resources[{j}] has the same host and path: both documents would be at one URL"),
            );
        }
        placed.push(p);
    }
    // Each route's challenge names the (first) resource it is under.
    let mut default = default_policy;
    let all = routes.iter_mut().map(|r| (Some(&r.matcher), &mut r.policy));
    for (matcher, policy) in all.chain(default.as_deref_mut().map(|p| (None, p))) {
        if let Policy::Require(req) = policy {
            req.challenge.resource = resources_of(&placed, matcher)
                .first()
                .and_then(|&k| u16::try_from(k).ok());
        }
    }
    // Each document describes every route under it (a route for every host is under the
    // resource of that path at each origin).
    let mut under: Vec<Vec<&Requirement>> = placed.iter().map(|_| Vec::new()).collect();
    let all = routes.iter().map(|r| (Some(&r.matcher), &r.policy));
    for (matcher, policy) in all.chain(default.as_deref().map(|p| (None, p))) {
        if let Policy::Require(req) = policy {
            for k in resources_of(&placed, matcher) {
                if let Some(list) = under.get_mut(k) {
                    list.push(req);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(placed.len());
    for (i, (p, reqs)) in placed.into_iter().zip(under).enumerate() {
        if reqs.is_empty() {
            return err(
                format!("protected_resources[{i}].path"),
                "no route that requires a token is under this path (a route is under the resource whose path its match.prefix or match.exact is or lies below; a route without one, and default_route, only under \"/\")",
            );
        }
        out.push(finish(p, &reqs, issuers));
    }
    Ok(out)
}

/// The resource's origin and path, and its other settings checked.
fn place(
    at: &str,
    w: RawProtectedResource,
    gateway: Option<&Gateway>,
) -> Result<Placed, ConfigError> {
    let origin = match &w.origin {
        Some(text) => {
            let path = format!("{at}.origin");
            PublicOrigin::from_url(&http_url(&path, text)?).or_else(|why| err(path, why))?
        }
        None => match gateway.and_then(|g| g.public_origins.first()) {
            Some(o) => o.clone(),
            None => {
                return err(
                    format!("{at}.origin"),
                    "required without a gateway section (whose first public origin is the default): the origin clients reach the resource at, e.g. https://api.example.com",
                )
            }
        },
    };
    if !is_resource_path(&w.path) {
        return err(
            format!("{at}.path"),
            "must be \"/\" or a path such as /api/orders: no trailing '/', no empty, '.' or '..' segment, only letters, digits and -._~!$&'()*+,;=:@ (it is part of the resource's URL)",
        );
    }
    if w.resource_name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty() || n.chars().any(char::is_control))
    {
        return err(
            format!("{at}.resource_name"),
            "must be non-empty text without control characters",
        );
    }
    if let Some(doc) = &w.resource_documentation {
        http_url(&format!("{at}.resource_documentation"), doc)?;
    }
    check_scopes(&format!("{at}.scopes_supported"), &w.scopes_supported)?;
    Ok(Placed {
        origin,
        path: w.path.clone(),
        written: w,
    })
}

/// `/`, or `/`-separated segments of URL path characters that need no encoding, none empty,
/// `.` or `..`: one spelling per resource, so two paths never name one document.
fn is_resource_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.split('/').all(|segment| {
        !matches!(segment, "" | "." | "..")
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b))
    })
}

/// The resources a route (`None`: `default_route`) is under, in configuration order: those
/// with the longest path it is under (one per origin, the collision rule makes sure). See the
/// module docs.
fn resources_of(placed: &[Placed], matcher: Option<&Matcher>) -> Vec<usize> {
    let route_path = matcher
        .and_then(|m| m.prefix.as_deref().or(m.exact.as_deref()))
        .unwrap_or("/");
    let route_host = matcher.and_then(|m| m.host.as_deref());
    let covers = |p: &Placed| {
        let path_under = p.path == "/"
            || route_path
                .strip_prefix(p.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        path_under && route_host.is_none_or(|h| crate::policy::host_matches(h, p.origin.host()))
    };
    let Some(longest) = placed
        .iter()
        .filter(|p| covers(p))
        .map(|p| p.path.len())
        .max()
    else {
        return Vec::new();
    };
    (0..placed.len())
        .filter(|&k| {
            placed
                .get(k)
                .is_some_and(|p| p.path.len() == longest && covers(p))
        })
        .collect()
}

/// The compiled resource: its URLs and its document, from the requirements of its routes.
fn finish(p: Placed, reqs: &[&Requirement], issuers: &[Issuer]) -> ProtectedResource {
    let resource = match p.path.as_str() {
        "/" => p.origin.origin.clone(),
        path => format!("{}{path}", p.origin.origin),
    };
    let metadata_url = format!("{}{}", p.origin.origin, well_known_path(&p.path));
    // The issuers a route accepts (none named: every one), by index.
    let accepts = |req: &Requirement, i: usize| req.issuers.is_empty() || req.issuers.contains(&i);
    // Issuers in configuration order, each once.
    let servers: Vec<String> = issuers
        .iter()
        .enumerate()
        .filter(|&(i, _)| reqs.iter().any(|r| accepts(r, i)))
        .map(|(_, issuer)| issuer.issuer.clone())
        .collect();
    // Configured, else every scope the routes require, each once.
    let mut scopes = p.written.scopes_supported;
    if scopes.is_empty() {
        for scope in reqs
            .iter()
            .flat_map(|r| r.scopes_all.iter().chain(&r.scopes_any))
        {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
    }
    let mut dpop: Option<AlgSet> = None;
    for algs in reqs.iter().filter_map(|r| r.challenge.dpop) {
        let set = dpop.get_or_insert_with(AlgSet::default);
        for alg in Alg::ALL.into_iter().filter(|a| algs.contains(*a)) {
            set.insert(alg);
        }
    }
    let mtls = reqs.iter().any(|r| {
        issuers
            .iter()
            .enumerate()
            .any(|(i, issuer)| accepts(r, i) && r.mtls.unwrap_or(issuer.mtls) != Mode::Off)
    });
    // Built by hand, not with `json!` (each value type would instantiate its own serializer).
    let strings = |list: Vec<String>| Value::Array(list.into_iter().map(Value::String).collect());
    let mut doc = Map::new();
    doc.insert("resource".into(), Value::String(resource.clone()));
    doc.insert("authorization_servers".into(), strings(servers));
    if !scopes.is_empty() {
        doc.insert("scopes_supported".into(), strings(scopes));
    }
    doc.insert(
        "bearer_methods_supported".into(),
        strings(vec!["header".into()]),
    );
    if let Some(algs) = dpop {
        let names = Alg::ALL
            .into_iter()
            .filter(|a| algs.contains(*a))
            .map(|a| a.name().to_owned())
            .collect();
        doc.insert("dpop_signing_alg_values_supported".into(), strings(names));
        let required = reqs.iter().all(|r| !r.challenge.bearer);
        doc.insert(
            "dpop_bound_access_tokens_required".into(),
            Value::Bool(required),
        );
    }
    doc.insert(
        "tls_client_certificate_bound_access_tokens".into(),
        Value::Bool(mtls),
    );
    if let Some(name) = p.written.resource_name {
        doc.insert("resource_name".into(), Value::String(name));
    }
    if let Some(url) = p.written.resource_documentation {
        doc.insert("resource_documentation".into(), Value::String(url));
    }
    ProtectedResource {
        origin: p.origin,
        path: p.path,
        resource,
        metadata_url,
        document: Value::Object(doc).to_string(),
    }
}
