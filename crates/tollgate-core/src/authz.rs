//! Authorization beyond scopes: the OpenID AuthZEN 1.0 evaluation request a route's
//! `authorize` rule asks a policy decision point (PDP), and what its answer means.
//!
//! Tollgate is the policy enforcement point. After a token is valid and the route's scope and
//! claim checks pass, [`query`] builds the evaluation request from the verified claims and the
//! request (subject, resource, action, context), as a value; the flow sends it with
//! [`request`], reads the answer with [`read`], and keeps the decision in a shared cache
//! ([`encode`] / [`decode`]) keyed by [`Query::key`]: SHA-256 of the configuration and the
//! request body, which holds exactly the subject, resource, action and context fields used.
//!
//! Fail closed: a request the rule cannot describe (no subject id, a path outside the
//! resource template, a method without an action) is refused with 403 and never asks the PDP;
//! any PDP failure (no answer, timeout, a status other than 200, a body without a boolean
//! `decision`) is 503. Nothing here reads the clock or talks to a host.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::{HttpRequest, HttpResponse};
use crate::introspect::Secret;
use crate::outcome::Denial;
use crate::policy::{claim_at, granted_scopes, RequestFacts};

/// A policy decision point: where its AuthZEN evaluation API is and how Tollgate calls it.
#[derive(Debug)]
pub struct Pdp {
    /// The operator's name for it (configuration, logs, metrics).
    pub name: String,
    /// The evaluation endpoint (`…/access/v1/evaluation`).
    pub url: Url,
    /// The host's upstream the call goes through (an Envoy cluster).
    pub upstream: String,
    pub auth: PdpAuth,
    pub timeout_ms: u64,
}

/// How Tollgate authenticates to a PDP.
#[derive(Debug)]
pub enum PdpAuth {
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer(Secret),
    /// `Authorization: Basic base64(user:password)` (RFC 7617; nothing form-encoded).
    Basic {
        user: String,
        password: Secret,
    },
}

/// A route's `authorize` rule: which PDP, and how each request is described to it.
#[derive(Debug)]
pub struct Rule {
    /// Index into the configuration's PDPs.
    pub pdp: usize,
    /// The route's name in counters (`route.<label>.authz.*`).
    pub label: String,
    pub subject: Subject,
    pub resource: Resource,
    /// Request method -> action name; a method not listed is refused (403).
    pub actions: Vec<(String, String)>,
    pub context: ContextFields,
    /// How long a `true` decision is reused (ms, at least 1 s).
    pub ttl_ms: u64,
    /// How long a `false` decision is reused (ms, at least 1 s).
    pub negative_ttl_ms: u64,
    /// Pass the PDP's `context.reason_user` on to the client in a refusal.
    pub expose_reason: bool,
}

/// The AuthZEN subject: the token's principal.
#[derive(Debug)]
pub struct Subject {
    pub kind: String,
    /// Claim path of the id (e.g. `sub`).
    pub id: Vec<String>,
    /// Property name -> claim path; a claim the token lacks is left out.
    pub properties: Vec<(String, Vec<String>)>,
}

/// The AuthZEN resource: from the request path (a template) or a header.
#[derive(Debug)]
pub struct Resource {
    pub kind: String,
    /// The path the request must have, with `{name}` segments captured.
    pub template: Option<Template>,
    pub id: Source,
    /// Property name -> where its value comes from.
    pub properties: Vec<(String, Source)>,
}

/// Where a resource value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `{name}` segment of the path template.
    Param(String),
    /// A request header (lower-case name), present exactly once.
    Header(String),
    /// A fixed value.
    Fixed(String),
}

/// A path template such as `/api/docs/{owner}/{id}`: literal segments must be equal, each
/// `{name}` takes one whole non-empty segment. The query is not part of the match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

impl Template {
    /// Parses `/a/{b}/c`; `None` unless it starts with `/`, every `{…}` is a whole segment
    /// with a name of `[A-Za-z0-9_]`, and no name repeats.
    pub fn parse(text: &str) -> Option<Template> {
        let rest = text.strip_prefix('/')?;
        let mut segments = Vec::new();
        for part in rest.split('/') {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid || segments.contains(&Segment::Param(name.to_owned())) {
                    return None;
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if part.contains(['{', '}']) {
                return None;
            } else {
                segments.push(Segment::Literal(part.to_owned()));
            }
        }
        Some(Template { segments })
    }

    /// Whether the template names `{name}`.
    pub fn has(&self, name: &str) -> bool {
        self.segments.contains(&Segment::Param(name.to_owned()))
    }

    /// The captured segments of `path` (query dropped), percent-decoded; `None` when the path
    /// does not fit, or a captured segment decodes to something that is not one plain segment
    /// (`/`, `\`, a control character, or not UTF-8).
    pub fn capture(&self, path: &str) -> Option<Vec<(&str, String)>> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut out = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    if value.is_empty()
                        || value
                            .chars()
                            .any(|c| c == '/' || c == '\\' || c.is_control())
                    {
                        return None;
                    }
                    out.push((name.as_str(), value));
                }
            }
        }
        Some(out)
    }
}

/// Which facts about the token go into the evaluation's `context`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextFields {
    /// `issuer`: the issuer's configured name.
    pub issuer: bool,
    /// `scopes`: the granted scopes, as a list.
    pub scopes: bool,
    /// `acr`: the token's `acr` claim, when it has one.
    pub acr: bool,
    /// `client_id`: the token's `client_id`, else its `azp`.
    pub client_id: bool,
}

/// One evaluation to ask (or find in the decision cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Index of the rule (configuration order) that asked.
    pub rule: usize,
    /// SHA-256 over the configuration fingerprint, the PDP and the body.
    pub key: [u8; 32],
    /// The AuthZEN evaluation request, JSON.
    pub body: Vec<u8>,
}

/// Why a request cannot be described to the PDP: refused with 403, the PDP never asked.
const NO_SUBJECT: &str = "the token names no subject the policy can evaluate";
const NO_RESOURCE: &str = "the request names no resource the policy covers";
const NO_ACTION: &str = "the request method is not an action the policy covers";

/// The evaluation request for a request on `rule`'s route, from the verified claims.
/// `issuer` is the configured name of the token's issuer.
pub fn query(
    index: usize,
    rule: &Rule,
    fingerprint: &[u8; 32],
    issuer: &str,
    claims: &Map<String, Value>,
    facts: &RequestFacts<'_>,
) -> Result<Query, Denial> {
    let forbidden = |d: &'static str| Denial::Forbidden {
        description: d,
        reason: None,
    };
    let subject_id = claim_at(claims, &rule.subject.id)
        .and_then(scalar)
        .ok_or_else(|| forbidden(NO_SUBJECT))?;
    let mut subject = Map::new();
    subject.insert("type".into(), Value::String(rule.subject.kind.clone()));
    subject.insert("id".into(), Value::String(subject_id));
    let mut props = Map::new();
    for (name, path) in &rule.subject.properties {
        if let Some(v) = claim_at(claims, path) {
            props.insert(name.clone(), v.clone());
        }
    }
    if !props.is_empty() {
        subject.insert("properties".into(), Value::Object(props));
    }

    let captured = match &rule.resource.template {
        Some(t) => t
            .capture(facts.path)
            .ok_or_else(|| forbidden(NO_RESOURCE))?,
        None => Vec::new(),
    };
    let value_of = |source: &Source| -> Option<String> {
        match source {
            Source::Param(name) => captured
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
            Source::Header(name) => {
                let mut values = facts.headers.iter().filter(|(n, _)| n == name);
                match (values.next(), values.next()) {
                    (Some((_, v)), None) if !v.is_empty() => Some(v.clone()),
                    _ => None,
                }
            }
            Source::Fixed(v) => Some(v.clone()),
        }
    };
    let mut resource = Map::new();
    resource.insert("type".into(), Value::String(rule.resource.kind.clone()));
    let id = value_of(&rule.resource.id).ok_or_else(|| forbidden(NO_RESOURCE))?;
    resource.insert("id".into(), Value::String(id));
    let mut props = Map::new();
    for (name, source) in &rule.resource.properties {
        let v = value_of(source).ok_or_else(|| forbidden(NO_RESOURCE))?;
        props.insert(name.clone(), Value::String(v));
    }
    if !props.is_empty() {
        resource.insert("properties".into(), Value::Object(props));
    }

    let action = rule
        .actions
        .iter()
        .find(|(m, _)| m == facts.method)
        .map(|(_, a)| a.clone())
        .ok_or_else(|| forbidden(NO_ACTION))?;
    let mut action_obj = Map::new();
    action_obj.insert("name".into(), Value::String(action));

    let mut context = Map::new();
    let c = rule.context;
    if c.issuer {
        context.insert("issuer".into(), Value::String(issuer.to_owned()));
    }
    if c.scopes {
        // Sorted and without repeats, so the order in the token does not make a new question
        // (a handful of scopes: insertion into a sorted list, no sort routine of its own).
        let mut scopes: Vec<&str> = Vec::new();
        for s in granted_scopes(claims) {
            if let Err(at) = scopes.binary_search(&s) {
                scopes.insert(at, s);
            }
        }
        let list = scopes.into_iter().map(|s| Value::String(s.to_owned()));
        context.insert("scopes".into(), Value::Array(list.collect()));
    }
    if c.acr {
        if let Some(acr) = claims.get("acr").and_then(scalar) {
            context.insert("acr".into(), Value::String(acr));
        }
    }
    if c.client_id {
        let client = ["client_id", "azp"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str));
        if let Some(client) = client {
            context.insert("client_id".into(), Value::String(client.to_owned()));
        }
    }

    let mut body = Map::new();
    body.insert("subject".into(), Value::Object(subject));
    body.insert("resource".into(), Value::Object(resource));
    body.insert("action".into(), Value::Object(action_obj));
    if !context.is_empty() {
        body.insert("context".into(), Value::Object(context));
    }
    // serde_json's map is ordered by key (no `preserve_order`): one body, one key per question.
    let body = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(fingerprint);
    h.update((rule.pdp as u64).to_le_bytes());
    h.update(&body);
    Ok(Query {
        rule: index,
        key: h.finalize().into(),
        body,
    })
}

/// A string or number claim as text (ids are strings in AuthZEN).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The evaluation call for `query` to `pdp`.
pub fn request(pdp: &Pdp, query: &Query) -> HttpRequest {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    match &pdp.auth {
        PdpAuth::None => {}
        PdpAuth::Bearer(secret) => {
            headers.push((
                "authorization".to_owned(),
                format!("Bearer {}", secret.expose()),
            ));
        }
        PdpAuth::Basic { user, password } => {
            use base64::Engine as _;
            let pair = format!("{user}:{}", password.expose());
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            headers.push(("authorization".to_owned(), format!("Basic {encoded}")));
        }
    }
    HttpRequest {
        upstream: pdp.upstream.clone(),
        method: "POST",
        scheme: crate::http::scheme(&pdp.url),
        authority: crate::http::authority(&pdp.url),
        path: crate::http::path_and_query(&pdp.url),
        headers,
        body: Some(query.body.clone()),
        timeout_ms: pdp.timeout_ms,
    }
}

/// A PDP's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow,
    /// `reason`: the PDP's `context.reason_user`, kept only when the rule exposes reasons and
    /// the text is safe to show (short printable ASCII).
    Deny {
        reason: Option<String>,
    },
}

/// Why a PDP gave no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdpError {
    /// No HTTP answer: reset, timeout, no upstream host.
    NoAnswer,
    /// An HTTP status other than 200.
    Status(u16),
    /// A 200 whose body is not a JSON object with a boolean `decision`.
    BadAnswer,
}

impl PdpError {
    /// Counter suffix (`authz.error.<code>`).
    pub fn code(self) -> &'static str {
        match self {
            PdpError::NoAnswer => "no_answer",
            PdpError::Status(_) => "status",
            PdpError::BadAnswer => "bad_answer",
        }
    }
}

impl std::fmt::Display for PdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PdpError::NoAnswer => f.write_str("no answer (timeout or connection failure)"),
            PdpError::Status(s) => write!(f, "HTTP status {s}"),
            PdpError::BadAnswer => f.write_str("the answer has no boolean \"decision\""),
        }
    }
}

/// Longest PDP reason passed on to a client.
const MAX_REASON: usize = 200;

/// The decision in a PDP's answer (AuthZEN 1.0 §6.2: `decision` is a boolean; `context` is
/// free-form, and `reason_user` is the part meant for the user).
pub fn read(response: Option<&HttpResponse>, expose_reason: bool) -> Result<Answer, PdpError> {
    let response = response.ok_or(PdpError::NoAnswer)?;
    if response.status != 200 {
        return Err(PdpError::Status(response.status));
    }
    let body: Value = serde_json::from_slice(&response.body).map_err(|_| PdpError::BadAnswer)?;
    match body.get("decision") {
        Some(Value::Bool(true)) => Ok(Answer::Allow),
        Some(Value::Bool(false)) => {
            let reason = expose_reason
                .then(|| body.pointer("/context/reason_user").and_then(user_reason))
                .flatten();
            Ok(Answer::Deny { reason })
        }
        _ => Err(PdpError::BadAnswer),
    }
}

/// `reason_user` as a string, or an object of language-tagged strings (the first one, in key
/// order); only printable ASCII without `"` or `\`, at most [`MAX_REASON`] bytes.
fn user_reason(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.as_str(),
        Value::Object(m) => m.values().find_map(Value::as_str)?,
        _ => return None,
    };
    let safe = !text.is_empty()
        && text.len() <= MAX_REASON
        && text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    safe.then(|| text.to_owned())
}

/// A decision as the cache keeps it: the key, until when (ms), then `1` (allow) or `0`
/// (deny) and the deny reason.
pub fn encode(key: &[u8; 32], answer: &Answer, until_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(41);
    out.extend_from_slice(key);
    out.extend_from_slice(&until_ms.to_le_bytes());
    match answer {
        Answer::Allow => out.push(1),
        Answer::Deny { reason } => {
            out.push(0);
            out.extend_from_slice(reason.as_deref().unwrap_or_default().as_bytes());
        }
    }
    out
}

/// The live decision for `key` in a cache value; `None` for another key's, an expired or a
/// malformed one.
pub fn decode(key: &[u8; 32], value: &[u8], now_ms: u64) -> Option<Answer> {
    let (stored, rest) = value.split_at_checked(32)?;
    let (until, rest) = rest.split_at_checked(8)?;
    if stored != key || u64::from_le_bytes(until.try_into().ok()?) <= now_ms {
        return None;
    }
    match rest.split_first()? {
        (1, []) => Some(Answer::Allow),
        (0, reason) => {
            let reason = std::str::from_utf8(reason).ok()?;
            Some(Answer::Deny {
                reason: (!reason.is_empty()).then(|| reason.to_owned()),
            })
        }
        _ => None,
    }
}

/// How long `answer` is reused under `rule`.
pub fn ttl_ms(rule: &Rule, answer: &Answer) -> u64 {
    match answer {
        Answer::Allow => rule.ttl_ms,
        Answer::Deny { .. } => rule.negative_ttl_ms,
    }
}

#[cfg(test)]
mod tests;
