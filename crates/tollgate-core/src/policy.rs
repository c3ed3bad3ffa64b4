//! Per-route requirements: which route a request is on, and whether a verified identity
//! satisfies that route.
//!
//! Routes are tried in order and the first match wins (as in Envoy's route table). A route
//! either lets requests through anonymously or requires a token from one of its issuers, with
//! scopes (all-of and any-of) and claim values. This module never looks at tokens, only at
//! claims that were already verified.

mod client;
mod stepup;

pub use client::{token_client, ClientRule, CLIENT_HEADER_TWICE, NO_CLIENT_HEADER};
pub use stepup::{StepUp, ACR_NOT_ACCEPTED, AUTH_TOO_OLD, NO_AUTH_TIME};

use serde_json::{Map, Value};

use crate::outcome::Denial;

/// The parts of a request routes match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// `:path` as received (the query is ignored for matching).
    pub path: &'a str,
    /// `:authority`.
    pub authority: &'a str,
    /// The host's own route name (Envoy `xds.route_name`), when it has one.
    pub route_name: Option<&'a str>,
    /// The request headers the configuration reads besides these (the routes'
    /// `issuer_header`s and `client_id_header`s), lower-case names: one entry per occurrence,
    /// in the order the host gave them, so a repeated header is seen as repeated.
    pub headers: &'a [(String, String)],
}

impl RequestFacts<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: Option<String>,
    pub matcher: Matcher,
    pub policy: Policy,
}

/// All given conditions must hold; no condition matches every request.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Plain string prefix of the path, as Envoy's `prefix` route match.
    pub prefix: Option<String>,
    pub exact: Option<String>,
    pub methods: Vec<String>,
    /// Lower-case host; `*.example.com` matches any subdomain. The port is ignored.
    pub host: Option<String>,
    pub route_name: Option<String>,
}

// Policies are built once per configuration and never moved per request: the size of the
// `Require` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Policy {
    /// No token needed; nothing is verified and no identity is forwarded.
    Anonymous,
    Require(Requirement),
}

#[derive(Debug, Default)]
pub struct Requirement {
    /// Indexes into `FilterConfig::issuers`; empty = any configured issuer.
    pub issuers: Vec<usize>,
    pub scopes_all: Vec<String>,
    pub scopes_any: Vec<String>,
    pub claims: Vec<ClaimRule>,
    /// Issuer to introspect opaque tokens at when no issuer's `opaque_tokens` rule matches.
    pub opaque_issuer: Option<usize>,
    /// Request header naming the issuer of an opaque token (this route's issuers only).
    pub issuer_header: Option<String>,
    /// This route's DPoP mode, overriding each issuer's `dpop.mode`; `None`: the issuer's.
    pub dpop: Option<crate::binding::Mode>,
    /// This route's mTLS mode, overriding each issuer's `mtls.mode`; `None`: the issuer's.
    pub mtls: Option<crate::binding::Mode>,
    /// The challenges a refusal on this route carries: the schemes its issuers take here.
    pub challenge: crate::outcome::Challenge,
    /// Which clients may call, and the header that must name the token's client.
    pub client: ClientRule,
    /// RFC 9470: how strongly and how recently the user must have authenticated.
    pub step_up: StepUp,
    /// The route's AuthZEN rule (an index into `FilterConfig::rules`): asked once every other
    /// check passed.
    pub authorize: Option<usize>,
    /// The route's `upstream_token` rule (an index into `FilterConfig::upstream_rules`).
    pub upstream: Option<usize>,
}

/// A claim (path into nested objects) and the values it may have. When the claim is an array,
/// it passes if any element is accepted.
#[derive(Debug)]
pub struct ClaimRule {
    pub path: Vec<String>,
    pub accepted: Vec<Value>,
}

/// Whether a route's conditions hold for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    /// Everything else matches, but the route has a `host` rule and the request's
    /// `:authority` is not a plain host name Tollgate can compare (see [`request_host`]): the
    /// request is refused rather than let fall through to a later, laxer route.
    BadHost,
}

impl Matcher {
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        self.check(req) == Match::Yes
    }

    /// Like [`Matcher::matches`], telling a host rule that cannot be judged apart.
    pub fn check(&self, req: &RequestFacts<'_>) -> Match {
        let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
        let rest = self.prefix.as_deref().is_none_or(|p| path.starts_with(p))
            && self.exact.as_deref().is_none_or(|e| path == e)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && self
                .route_name
                .as_deref()
                .is_none_or(|n| req.route_name == Some(n));
        if !rest {
            return Match::No;
        }
        let Some(pattern) = self.host.as_deref() else {
            return Match::Yes;
        };
        match request_host(req.authority) {
            Some(host) if host_matches(pattern, host) => Match::Yes,
            Some(_) => Match::No,
            None => Match::BadHost,
        }
    }
}

/// The host of an `:authority` as `host` rules compare it (case-insensitively): without the
/// port (also an empty one, `admin.test:`) and without one trailing dot (the absolute form
/// `admin.test.` names the same host). A bracketed IPv6 literal keeps its brackets
/// (`[::1]:8080` -> `[::1]`). Borrowed from `authority`: nothing is allocated per request.
///
/// `None` for anything that is not a plain host name, so that no spelling another component
/// might read as the same host can slip past a rule: an empty host, an empty label
/// (`admin..test`, `admin.test..`, `.admin.test`), a port that is not digits, and any byte
/// outside letters, digits, `-`, `_` and `.` (percent-encoding, userinfo `@`, non-ASCII
/// letters that IDNA could map onto ASCII, spaces).
pub fn request_host(authority: &str) -> Option<&str> {
    host_and_port(authority).map(|(host, _)| host)
}

/// [`request_host`] and the port, if one is given (`None` for none and for an empty one).
pub fn host_and_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let digits = |port: &str| port.bytes().all(|b| b.is_ascii_digit());
    fn given(port: &str) -> Option<&str> {
        (!port.is_empty()).then_some(port)
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').filter(|p| digits(p))?),
        };
        let literal_ok = !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        // `[` + inner + `]`, as written.
        let host = authority.get(..inner.len() + 2).filter(|_| literal_ok)?;
        return Some((host, port.and_then(given)));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) if digits(port) => (host, given(port)),
        Some(_) => return None,
        None => (authority, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let plain = host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    plain.then_some((host, port))
}

/// `host` (from [`request_host`]) against a lower-case pattern, case-insensitively; `*.suffix`
/// matches subdomains.
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && {
                let (head, tail) = host.split_at(host.len() - suffix.len());
                head.ends_with('.') && tail.eq_ignore_ascii_case(suffix)
            }
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// The policy for a request: the first matching route's, else the default (`Ok(None)` =
/// deny). `Err` when the first route that would match hinges on a host rule the request's
/// `:authority` cannot be judged against ([`Match::BadHost`]).
pub fn select<'c>(
    routes: &'c [Route],
    default: Option<&'c Policy>,
    req: &RequestFacts<'_>,
) -> Result<Option<&'c Policy>, Denial> {
    for route in routes {
        match route.matcher.check(req) {
            Match::Yes => return Ok(Some(&route.policy)),
            Match::No => {}
            Match::BadHost => return Err(Denial::InvalidRequest(BAD_HOST)),
        }
    }
    Ok(default)
}

/// Why a request with an unusable `:authority` is refused (a fixed text: nothing echoed).
pub const BAD_HOST: &str = "the request's host is not a plain host name";

impl Requirement {
    /// Whether this route accepts tokens from the issuer at `issuer` (checked before verifying).
    pub fn accepts_issuer(&self, issuer: usize) -> bool {
        self.issuers.is_empty() || self.issuers.contains(&issuer)
    }

    /// Checks scopes and claims of verified `claims`.
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), Denial> {
        // The token's scopes are gathered only for a route that names some.
        let scoped = !self.scopes_all.is_empty() || !self.scopes_any.is_empty();
        let granted = if scoped {
            granted_scopes(claims)
        } else {
            Vec::new()
        };
        let has = |s: &String| granted.iter().any(|g| g == s);
        if !self.scopes_all.iter().all(has) {
            return Err(Denial::InsufficientScope {
                scope: self.scopes_all.join(" "),
            });
        }
        if !self.scopes_any.is_empty() && !self.scopes_any.iter().any(has) {
            return Err(Denial::InsufficientScope {
                scope: self.scopes_any.join(" "),
            });
        }
        for rule in &self.claims {
            if !rule.satisfied_by(claims) {
                return Err(Denial::ClaimNotSatisfied);
            }
        }
        Ok(())
    }
}

impl ClaimRule {
    fn satisfied_by(&self, claims: &Map<String, Value>) -> bool {
        match claim_at(claims, &self.path) {
            Some(Value::Array(items)) => items.iter().any(|v| self.accepted.contains(v)),
            Some(value) => self.accepted.contains(value),
            None => false,
        }
    }
}

/// The claim at a path of nested object keys.
pub fn claim_at<'v>(claims: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, key| v.as_object()?.get(key))
}

/// Scopes granted by a token: RFC 9068 / RFC 7662 `scope` (space-separated string) and the
/// `scp` array some authorization servers use instead.
pub fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut scopes: Vec<&str> = match claims.get("scope") {
        Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if let Some(Value::Array(items)) = claims.get("scp") {
        scopes.extend(items.iter().filter_map(Value::as_str));
    } else if let Some(Value::String(s)) = claims.get("scp") {
        scopes.extend(s.split(' ').filter(|s| !s.is_empty()));
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn facts<'a>(method: &'a str, path: &'a str, authority: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            method,
            path,
            authority,
            route_name: None,
            headers: &[],
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn prefix_exact_method_host_and_route_name_all_must_hold() {
        let m = Matcher {
            prefix: Some("/api".into()),
            methods: vec!["GET".into()],
            host: Some("*.example.com".into()),
            ..Matcher::default()
        };
        assert!(m.matches(&facts("GET", "/api/x?y=1", "a.example.com:8000")));
        assert!(!m.matches(&facts("POST", "/api/x", "a.example.com")));
        assert!(!m.matches(&facts("GET", "/public", "a.example.com")));
        assert!(!m.matches(&facts("GET", "/api", "example.com")));
        assert!(!m.matches(&facts("GET", "/api", "evilexample.com")));
        let exact = Matcher {
            exact: Some("/health".into()),
            ..Matcher::default()
        };
        assert!(exact.matches(&facts("GET", "/health?full=1", "h")));
        assert!(!exact.matches(&facts("GET", "/health/x", "h")));
        let named = Matcher {
            route_name: Some("orders".into()),
            ..Matcher::default()
        };
        let mut req = facts("GET", "/", "h");
        assert!(!named.matches(&req));
        req.route_name = Some("orders");
        assert!(named.matches(&req));
    }

    #[test]
    fn first_matching_route_wins_and_default_applies_otherwise() {
        let routes = vec![
            Route {
                name: None,
                matcher: Matcher {
                    prefix: Some("/public".into()),
                    ..Matcher::default()
                },
                policy: Policy::Anonymous,
            },
            Route {
                name: None,
                matcher: Matcher {
                    prefix: Some("/".into()),
                    methods: vec!["DELETE".into()],
                    ..Matcher::default()
                },
                policy: Policy::Require(Requirement::default()),
            },
        ];
        let req = facts("GET", "/public/x", "h");
        assert!(matches!(
            select(&routes, None, &req),
            Ok(Some(Policy::Anonymous))
        ));
        assert!(matches!(
            select(&routes, None, &facts("GET", "/other", "h")),
            Ok(None)
        ));
        let dflt = Policy::Anonymous;
        assert!(matches!(
            select(&routes, Some(&dflt), &facts("GET", "/other", "h")),
            Ok(Some(_))
        ));
    }

    #[test]
    fn scopes_all_of_and_any_of() {
        let r = Requirement {
            scopes_all: vec!["read".into(), "write".into()],
            ..Requirement::default()
        };
        assert!(r
            .check(&claims(json!({"scope": "read write admin"})))
            .is_ok());
        assert_eq!(
            r.check(&claims(json!({"scope": "read"}))),
            Err(Denial::InsufficientScope {
                scope: "read write".into()
            })
        );
        assert!(r.check(&claims(json!({"scp": ["write", "read"]}))).is_ok());
        let any = Requirement {
            scopes_any: vec!["admin".into(), "ops".into()],
            ..Requirement::default()
        };
        assert!(any.check(&claims(json!({"scope": "ops"}))).is_ok());
        assert!(any.check(&claims(json!({"scope": "read"}))).is_err());
        assert!(any.check(&claims(json!({}))).is_err());
    }

    #[test]
    fn scope_strings_are_whole_words() {
        let r = Requirement {
            scopes_all: vec!["read".into()],
            ..Requirement::default()
        };
        assert!(r.check(&claims(json!({"scope": "readonly"}))).is_err());
    }

    #[test]
    fn claim_values_nested_paths_and_arrays() {
        let r = Requirement {
            claims: vec![
                ClaimRule {
                    path: vec!["tenant".into()],
                    accepted: vec![json!("acme"), json!("globex")],
                },
                ClaimRule {
                    path: vec!["realm_access".into(), "roles".into()],
                    accepted: vec![json!("admin")],
                },
            ],
            ..Requirement::default()
        };
        let ok = json!({"tenant": "globex", "realm_access": {"roles": ["user", "admin"]}});
        assert!(r.check(&claims(ok)).is_ok());
        let wrong = json!({"tenant": "initech", "realm_access": {"roles": ["admin"]}});
        assert_eq!(r.check(&claims(wrong)), Err(Denial::ClaimNotSatisfied));
        let missing = json!({"tenant": "acme"});
        assert_eq!(r.check(&claims(missing)), Err(Denial::ClaimNotSatisfied));
        let typed = Requirement {
            claims: vec![ClaimRule {
                path: vec!["level".into()],
                accepted: vec![json!(3)],
            }],
            ..Requirement::default()
        };
        assert!(typed.check(&claims(json!({"level": 3}))).is_ok());
        assert!(typed.check(&claims(json!({"level": "3"}))).is_err());
    }

    fn admin_host() -> Matcher {
        Matcher {
            host: Some("admin.test".into()),
            ..Matcher::default()
        }
    }

    #[test]
    fn host_rules_see_through_case_port_and_one_trailing_dot() {
        let m = admin_host();
        for authority in [
            "admin.test",
            "ADMIN.TEST",
            "Admin.Test:8443",
            "admin.test.",
            "admin.test:",
            "admin.test.:443",
            "ADMIN.TEST.:",
        ] {
            assert_eq!(
                m.check(&facts("GET", "/", authority)),
                Match::Yes,
                "{authority}"
            );
        }
        for authority in ["other.test", "admin.test.evil", "xadmin.test", "admin.tes"] {
            assert_eq!(
                m.check(&facts("GET", "/", authority)),
                Match::No,
                "{authority}"
            );
        }
        let wild = Matcher {
            host: Some("*.example.com".into()),
            ..Matcher::default()
        };
        assert!(wild.matches(&facts("GET", "/", "A.Example.Com.:80")));
        assert!(!wild.matches(&facts("GET", "/", "example.com.")));
    }

    #[test]
    fn hosts_that_are_not_plain_names_are_refused_not_skipped() {
        let m = admin_host();
        for authority in [
            "admin.test..",
            "admin..test",
            ".admin.test",
            "",
            ".",
            "admin.test:abc",
            "admin.test:443:443",
            "admin%2etest",
            "user@admin.test",
            "admin.test ",
            "adm\u{131}n.test",
            "admİn.test",
            "[::1",
            "[::1]x",
            "[]",
        ] {
            assert_eq!(
                m.check(&facts("GET", "/", authority)),
                Match::BadHost,
                "{authority:?}"
            );
        }
        // Only a route that would otherwise match refuses: elsewhere the host is irrelevant.
        let on_admin = Matcher {
            prefix: Some("/admin".into()),
            host: Some("admin.test".into()),
            ..Matcher::default()
        };
        assert_eq!(
            on_admin.check(&facts("GET", "/public", "admin.test..")),
            Match::No
        );
        let routes = vec![
            Route {
                name: None,
                matcher: on_admin,
                policy: Policy::Require(Requirement::default()),
            },
            Route {
                name: None,
                matcher: Matcher::default(),
                policy: Policy::Anonymous,
            },
        ];
        assert_eq!(
            select(&routes, None, &facts("GET", "/admin/x", "admin.test..")).err(),
            Some(Denial::InvalidRequest(BAD_HOST)),
            "never falls through to the anonymous route"
        );
        assert!(matches!(
            select(&routes, None, &facts("GET", "/public", "admin.test..")),
            Ok(Some(Policy::Anonymous))
        ));
    }

    #[test]
    fn bracketed_ipv6_hosts_keep_working() {
        let m = Matcher {
            host: Some("[::1]".into()),
            ..Matcher::default()
        };
        for authority in ["[::1]", "[::1]:8080", "[::1]:"] {
            assert!(m.matches(&facts("GET", "/", authority)), "{authority}");
        }
        assert_eq!(request_host("[FE80::1]:80"), Some("[FE80::1]"));
        assert_eq!(request_host("Admin.Test.:443"), Some("Admin.Test"));
        assert!(Matcher {
            host: Some("[fe80::1]".into()),
            ..Matcher::default()
        }
        .matches(&facts("GET", "/", "[FE80::1]:80")));
        assert!(!m.matches(&facts("GET", "/", "[::2]")));
    }
}
