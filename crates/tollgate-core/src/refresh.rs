//! The schedule of everything an issuer publishes: when to fetch its metadata (OIDC Discovery
//! or RFC 8414 document) and its JWKS, what to ask, and what each answer means.
//!
//! [`FetchState`] is the one record per issuer that every Envoy worker shares (through the
//! host's shared data), so that one process fetches each JWKS once per refresh: a worker that
//! finds a fetch [`FetchState::due`] takes the lease with a compare-and-swap, and the others see
//! the lease and wait. Rules, as in Envoy's jwt_authn: refresh every `refresh_interval`; after a
//! failure retry every `retry_interval`; an unknown `kid` asks for an early refetch at most once
//! per `refetch_min_interval` (so tokens with made-up `kid`s cannot make Tollgate hammer an AS);
//! keys already held are used up to `max_stale` after their last successful fetch (the check is
//! [`crate::jwks::KeyRing::get`]'s).

use serde::{Deserialize, Serialize};
use url::Url;

use crate::endpoint::DocumentKind;
use crate::http::{parse_url, HttpRequest, HttpResponse, UrlError};
use crate::jwks::{JwksError, KeySet};

/// Timing rules for one issuer, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub refresh_ms: u64,
    pub retry_ms: u64,
    pub refetch_min_ms: u64,
    pub timeout_ms: u64,
    pub max_stale_ms: u64,
}

impl Timing {
    /// How long one fetch may hold the lease: two requests (discovery plus JWKS), each up to
    /// the timeout, plus a margin for the host; every answer of an attempt that goes on renews
    /// it ([`FetchState::renew`]). A worker that dies mid-fetch frees the lease this way.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_ms.saturating_mul(2).saturating_add(1_000)
    }
}

/// Where remote keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKeys {
    /// The JWKS URL itself.
    Jwks(Url),
    /// An OIDC Discovery / RFC 8414 metadata URL whose `jwks_uri` names the JWKS.
    Discovery(Url),
}

/// Where the gateway gets one of an issuer's metadata documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSource {
    pub url: Url,
    /// The server may not publish it (`metadata: true`): a 404 means "none of this kind", and
    /// the gateway answers 404 for it too. Otherwise a 404 is a failed fetch, retried.
    pub optional: bool,
}

/// Fetch bookkeeping for one issuer, shared by all workers. Times are ms since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchState {
    /// Last successful fetch.
    #[serde(default)]
    pub fetched_at: Option<u64>,
    /// Start of the latest attempt.
    #[serde(default)]
    pub attempt_at: Option<u64>,
    /// End of the latest attempt, successful or not.
    #[serde(default)]
    pub done_at: Option<u64>,
    /// The latest attempt failed.
    #[serde(default)]
    pub last_failed: bool,
    /// A worker is fetching until this time; 0 when nobody is.
    #[serde(default)]
    pub lease_until: u64,
    /// A token named a `kid` the held keys lack: fetch early (rate-limited).
    #[serde(default)]
    pub refetch_wanted: bool,
    /// `jwks_uri` learned from discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// `introspection_endpoint` learned from discovery.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// The gateway's metadata documents, by [`DocumentKind::index`]: in shared data, known
    /// to be absent, or not fetched yet.
    #[serde(default)]
    pub documents: [DocState; 2],
    /// The attempt (its `attempt_at`) that last fetched each document: every attempt fetches
    /// them again, so they follow the server's changes at the refresh interval.
    #[serde(default)]
    pub documents_attempt: [Option<u64>; 2],
    /// The attempt that fetched the JWKS, when documents follow it in the same attempt.
    #[serde(default)]
    pub keys_attempt: Option<u64>,
    /// A part of the current attempt (the JWKS, a gateway document) failed; the attempt goes
    /// on with the others and then counts as failed.
    #[serde(default)]
    pub part_failed: bool,
    /// Incremented by every JWKS fetched: the shared key set's version.
    #[serde(default)]
    pub generation: u64,
}

/// What is known of one of the gateway's metadata documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocState {
    /// Not fetched yet.
    #[default]
    Unknown,
    /// In shared data.
    Stored,
    /// The server has none (an optional document answered 404).
    Absent,
}

impl FetchState {
    /// Whether a worker holds the lease (is fetching) at `now`.
    pub fn leased(&self, now: u64) -> bool {
        self.lease_until > now
    }

    fn since_attempt(&self, now: u64) -> Option<u64> {
        self.attempt_at.map(|at| now.saturating_sub(at))
    }

    /// Whether a worker should start a fetch now.
    pub fn due(&self, now: u64, t: &Timing) -> bool {
        if self.leased(now) {
            return false;
        }
        let waited = |gap: u64| self.since_attempt(now).is_none_or(|d| d >= gap);
        let Some(fetched_at) = self.fetched_at else {
            // No keys yet: keep trying, at the retry interval after a failure.
            return !self.last_failed || waited(t.retry_ms);
        };
        if now.saturating_sub(fetched_at) >= t.refresh_ms {
            waited(if self.last_failed { t.retry_ms } else { 0 })
        } else {
            self.refetch_wanted && waited(t.refetch_min_ms)
        }
    }

    /// Whether a request holding a token with an unknown `kid` may ask for an early refetch.
    pub fn may_refetch(&self, now: u64, t: &Timing) -> bool {
        self.since_attempt(now)
            .is_none_or(|d| d >= t.refetch_min_ms)
    }

    /// Takes the lease for an attempt starting `now`.
    pub fn begin(&mut self, now: u64, t: &Timing) {
        self.lease_until = now.saturating_add(t.lease_ms());
        self.attempt_at = Some(now);
        self.part_failed = false;
    }

    /// An attempt that goes on at `now` (a metadata document answered) holds the lease for
    /// its next requests.
    pub fn renew(&mut self, now: u64, t: &Timing) {
        if self.lease_until != 0 {
            self.lease_until = now.saturating_add(t.lease_ms());
        }
    }

    /// Records a successful attempt ending `now`: frees the lease and starts a new generation.
    pub fn succeed(&mut self, now: u64) {
        self.fetched_at = Some(now);
        self.done_at = Some(now);
        self.last_failed = false;
        self.lease_until = 0;
        self.refetch_wanted = false;
    }

    /// Records a failed attempt ending `now`: frees the lease; the next try waits for the
    /// retry interval.
    pub fn fail(&mut self, now: u64) {
        self.done_at = Some(now);
        self.last_failed = true;
        self.lease_until = 0;
        self.refetch_wanted = false;
    }

    /// The shared-data value (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a shared-data value; anything unreadable counts as "nothing known yet".
    pub fn decode(bytes: &[u8]) -> FetchState {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// Why a fetch attempt failed (each has a metric and a log line naming the issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No HTTP answer at all. (Envoy reports most connection failures and timeouts as its own
    /// 503 / 504 replies instead, which arrive as [`FetchError::Status`].)
    Transport,
    /// An HTTP status other than 200.
    Status(u16),
    /// The discovery document is not JSON, lacks `jwks_uri`, or names another issuer.
    BadDiscovery(&'static str),
    Jwks(JwksError),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Transport => write!(f, "no HTTP response (connection failure or timeout)"),
            FetchError::Status(status) => write!(f, "HTTP status {status}"),
            FetchError::BadDiscovery(why) => write!(f, "discovery document: {why}"),
            FetchError::Jwks(err) => write!(f, "JWKS: {err}"),
        }
    }
}

/// What an issuer's refresh job fetches. Empty for inline keys and a fixed introspection
/// endpoint (then there is no job).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// (upstream, metadata document URL) when something is found through discovery.
    pub discovery: Option<(&'a str, &'a Url)>,
    /// (upstream, JWKS URL) for remote keys; the URL is `None` when discovery names it.
    pub jwks: Option<(&'a str, Option<&'a Url>)>,
    /// Discovery must also yield `introspection_endpoint`.
    pub introspection_endpoint_wanted: bool,
    /// The gateway's metadata documents (upstream, source), by [`DocumentKind::index`].
    pub documents: [Option<(&'a str, &'a DocumentSource)>; 2],
}

impl Plan<'_> {
    /// Whether there is nothing to fetch (no refresh job).
    pub fn is_empty(&self) -> bool {
        self.discovery.is_none()
            && self.jwks.is_none()
            && self.documents.iter().all(Option::is_none)
    }

    fn discovery_needed(&self, state: &FetchState) -> bool {
        let jwks_unknown = matches!(self.jwks, Some((_, None))) && state.jwks_uri.is_none();
        let endpoint_unknown =
            self.introspection_endpoint_wanted && state.introspection_endpoint.is_none();
        self.discovery.is_some() && (jwks_unknown || endpoint_unknown)
    }

    /// The gateway's documents at `url` (the discovery document is often one of them: its
    /// answer is stored as that document too).
    pub fn documents_at<'s>(&'s self, url: &'s Url) -> impl Iterator<Item = DocumentKind> + 's {
        DocumentKind::ALL
            .into_iter()
            .filter(move |k| self.documents[k.index()].is_some_and(|(_, d)| &d.url == url))
    }
}

/// The next request of an attempt: the discovery document while something it names is unknown,
/// then the JWKS, then the gateway's documents. `None` when nothing (more) needs fetching: the
/// attempt has succeeded.
pub fn next_request(
    plan: &Plan<'_>,
    state: &FetchState,
    timeout_ms: u64,
) -> Option<(Step, HttpRequest)> {
    if plan.discovery_needed(state) {
        let (upstream, doc) = plan.discovery?;
        return Some((Step::Discovery, HttpRequest::get(upstream, doc, timeout_ms)));
    }
    // Keys before the gateway's documents: a document that fails never holds keys back.
    let keys_done = plan.documents.iter().any(Option::is_some)
        && state.attempt_at.is_some()
        && state.keys_attempt == state.attempt_at;
    if let (Some((upstream, fixed)), false) = (plan.jwks, keys_done) {
        let learned = state.jwks_uri.as_deref().and_then(|u| parse_url(u).ok());
        if let Some(uri) = fixed.cloned().or(learned) {
            return Some((Step::Jwks, HttpRequest::get(upstream, &uri, timeout_ms)));
        }
    }
    for kind in DocumentKind::ALL {
        let i = kind.index();
        if let Some((upstream, doc)) = plan.documents[i] {
            if state.documents_attempt[i] != state.attempt_at {
                let request = HttpRequest::get(upstream, &doc.url, timeout_ms);
                return Some((Step::Document(kind), request));
            }
        }
    }
    None
}

/// Which document an outstanding fetch request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Discovery,
    /// One of the gateway's metadata documents.
    Document(DocumentKind),
    Jwks,
}

/// A gateway metadata document's answer: the document to store, or none of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentAnswer<'b> {
    Stored(&'b [u8]),
    Absent,
}

/// Reads an answer for one of the gateway's metadata documents: a JSON object whose `issuer`
/// is the configured issuer (OpenID Connect Discovery §4.3, RFC 8414 §3.3); an optional
/// document's 404 says the server has none.
pub fn read_document<'r>(
    issuer: &str,
    source: &DocumentSource,
    response: Option<&'r HttpResponse>,
) -> Result<DocumentAnswer<'r>, FetchError> {
    if source.optional && response.is_some_and(|r| r.status == 404) {
        return Ok(DocumentAnswer::Absent);
    }
    let body = ok_body(response)?;
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| FetchError::BadDiscovery("not a JSON object"))?;
    if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(FetchError::BadDiscovery(
            "its issuer is not the configured issuer",
        ));
    }
    Ok(DocumentAnswer::Stored(body))
}

/// What a metadata document told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub jwks_uri: Option<Url>,
    pub introspection_endpoint: Option<Url>,
}

/// Reads a metadata answer (OIDC Discovery or RFC 8414). Its `issuer` must be the configured
/// issuer (OpenID Connect Discovery §4.3, RFC 8414 §3.3), and it must name what `plan` needs.
pub fn read_discovery(
    issuer: &str,
    plan: &Plan<'_>,
    response: Option<&HttpResponse>,
) -> Result<Metadata, FetchError> {
    let body = ok_body(response)?;
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| FetchError::BadDiscovery("not JSON"))?;
    if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(FetchError::BadDiscovery(
            "its issuer is not the configured issuer",
        ));
    }
    let url = |name: &str| -> Result<Option<Url>, FetchError> {
        match doc.get(name).and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(text) => match parse_url(text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(url)),
                Err(UrlError::Host) => Err(FetchError::BadDiscovery(
                    "a URL in it has a host Tollgate refuses (percent-encoded or not ASCII)",
                )),
                _ => Err(FetchError::BadDiscovery("a URL in it is not http(s)")),
            },
        }
    };
    let meta = Metadata {
        jwks_uri: url("jwks_uri")?,
        introspection_endpoint: url("introspection_endpoint")?,
    };
    if matches!(plan.jwks, Some((_, None))) && meta.jwks_uri.is_none() {
        return Err(FetchError::BadDiscovery("no jwks_uri"));
    }
    if plan.introspection_endpoint_wanted && meta.introspection_endpoint.is_none() {
        return Err(FetchError::BadDiscovery("no introspection_endpoint"));
    }
    Ok(meta)
}

/// Parses a JWKS answer into keys.
pub fn read_jwks(response: Option<&HttpResponse>) -> Result<(KeySet, usize), FetchError> {
    KeySet::parse(ok_body(response)?).map_err(FetchError::Jwks)
}

fn ok_body(response: Option<&HttpResponse>) -> Result<&[u8], FetchError> {
    match response {
        None => Err(FetchError::Transport),
        Some(r) if r.status == 200 => Ok(&r.body),
        Some(r) => Err(FetchError::Status(r.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const T: Timing = Timing {
        refresh_ms: 300_000,
        retry_ms: 5_000,
        refetch_min_ms: 10_000,
        timeout_ms: 2_000,
        max_stale_ms: 86_400_000,
    };
    const NOW: u64 = 1_800_000_000_000;

    fn fetched_at(at: u64) -> FetchState {
        let mut s = FetchState::default();
        s.begin(at, &T);
        s.succeed(at);
        s
    }

    #[test]
    fn nothing_known_is_due_at_once() {
        assert!(FetchState::default().due(NOW, &T));
    }

    #[test]
    fn a_held_lease_blocks_other_workers_until_it_expires() {
        let mut s = FetchState::default();
        s.begin(NOW, &T);
        assert!(!s.due(NOW + 1, &T));
        assert!(!s.due(NOW + T.lease_ms() - 1, &T));
        assert!(
            s.due(NOW + T.lease_ms(), &T),
            "a dead worker's lease must lapse"
        );
    }

    #[test]
    fn fresh_keys_are_not_refetched_before_the_refresh_interval() {
        let s = fetched_at(NOW);
        assert!(!s.due(NOW + T.refresh_ms - 1, &T));
        assert!(s.due(NOW + T.refresh_ms, &T));
    }

    #[test]
    fn failures_are_retried_at_the_retry_interval() {
        let mut s = FetchState::default();
        s.begin(NOW, &T);
        s.fail(NOW + 100);
        assert!(!s.due(NOW + T.retry_ms - 1, &T));
        assert!(s.due(NOW + T.retry_ms, &T));
        assert!(s.last_failed);
    }

    #[test]
    fn failed_refresh_keeps_old_keys_and_retries() {
        let mut s = fetched_at(NOW);
        let later = NOW + T.refresh_ms;
        s.begin(later, &T);
        s.fail(later + 10);
        assert_eq!(s.fetched_at, Some(NOW));
        assert!(!s.due(later + 1_000, &T));
        assert!(s.due(later + T.retry_ms, &T));
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let mut s = fetched_at(NOW);
        assert!(!s.may_refetch(NOW + T.refetch_min_ms - 1, &T));
        let at = NOW + T.refetch_min_ms;
        assert!(s.may_refetch(at, &T));
        s.refetch_wanted = true;
        assert!(s.due(at, &T));
        s.begin(at, &T);
        s.succeed(at + 5);
        assert!(!s.refetch_wanted);
        assert!(!s.may_refetch(at + 1_000, &T));
    }

    /// An attempt of an issuer behind the gateway: the JWKS first, then each document, each
    /// once per attempt; a document that fails can never hold the keys back.
    #[test]
    fn keys_come_before_the_gateways_documents_once_per_attempt() {
        let jwks = parse_url("https://as1.example/jwks").unwrap();
        let oidc = DocumentSource {
            url: parse_url("https://as1.example/.well-known/openid-configuration").unwrap(),
            optional: true,
        };
        let oauth = DocumentSource {
            url: parse_url("https://as1.example/.well-known/oauth-authorization-server").unwrap(),
            optional: true,
        };
        let plan = Plan {
            discovery: None,
            jwks: Some(("as1", Some(&jwks))),
            introspection_endpoint_wanted: false,
            documents: [Some(("as1", &oidc)), Some(("as1", &oauth))],
        };
        let mut s = FetchState::default();
        s.begin(NOW, &T);
        let step = |s: &FetchState| next_request(&plan, s, 1_000).map(|(step, _)| step);
        assert_eq!(step(&s), Some(Step::Jwks));
        s.keys_attempt = s.attempt_at;
        assert_eq!(step(&s), Some(Step::Document(DocumentKind::OpenId)));
        s.documents_attempt[0] = s.attempt_at;
        assert_eq!(step(&s), Some(Step::Document(DocumentKind::OAuth)));
        s.documents_attempt[1] = s.attempt_at;
        assert_eq!(step(&s), None, "the attempt is complete");
        // The next attempt fetches all three again.
        s.succeed(NOW + 10);
        s.begin(NOW + T.refresh_ms, &T);
        assert_eq!(step(&s), Some(Step::Jwks));
    }

    #[test]
    fn a_failed_refetch_is_not_retried_in_a_loop() {
        let mut s = fetched_at(NOW);
        let at = NOW + T.refetch_min_ms;
        s.refetch_wanted = true;
        s.begin(at, &T);
        s.fail(at + 10);
        assert!(
            !s.due(at + T.retry_ms * 2, &T),
            "only the refresh interval brings it back"
        );
    }

    #[test]
    fn state_round_trips_and_garbage_decodes_to_default() {
        let s = fetched_at(NOW);
        assert_eq!(FetchState::decode(&s.encode()), s);
        assert_eq!(FetchState::decode(b"\xff not json"), FetchState::default());
        // A record written by an older build (with a failure count) still reads.
        let old = FetchState::decode(br#"{"fetched_at":5,"last_failed":true,"failures":3}"#);
        assert_eq!((old.fetched_at, old.last_failed), (Some(5), true));
    }

    /// The plan of an issuer whose JWKS is found through its discovery document `doc`.
    fn keys_by_discovery(doc: &Url) -> Plan<'_> {
        Plan {
            discovery: Some(("as1", doc)),
            jwks: Some(("as1", None)),
            introspection_endpoint_wanted: false,
            documents: [None, None],
        }
    }

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn discovery_must_name_the_configured_issuer() {
        let iss = "https://as.example";
        let doc = Url::parse("https://as.example/.well-known/openid-configuration").unwrap();
        let plan = keys_by_discovery(&doc);
        let good = r#"{"issuer":"https://as.example","jwks_uri":"https://as.example/jwks"}"#;
        let meta = read_discovery(iss, &plan, Some(&resp(200, good))).unwrap();
        assert_eq!(meta.jwks_uri.unwrap().as_str(), "https://as.example/jwks");
        let other = r#"{"issuer":"https://evil.example","jwks_uri":"https://as.example/jwks"}"#;
        assert!(matches!(
            read_discovery(iss, &plan, Some(&resp(200, other))),
            Err(FetchError::BadDiscovery(_))
        ));
        assert_eq!(read_discovery(iss, &plan, None), Err(FetchError::Transport));
        assert_eq!(
            read_discovery(iss, &plan, Some(&resp(503, ""))),
            Err(FetchError::Status(503))
        );
    }

    #[test]
    fn discovery_must_name_what_the_plan_needs() {
        let iss = "https://as.example";
        let doc = Url::parse("https://as.example/.well-known/oauth-authorization-server").unwrap();
        let plan = Plan {
            discovery: Some(("as1", &doc)),
            jwks: None,
            introspection_endpoint_wanted: true,
            documents: [None, None],
        };
        let without = r#"{"issuer":"https://as.example","jwks_uri":"https://as.example/jwks"}"#;
        assert_eq!(
            read_discovery(iss, &plan, Some(&resp(200, without))),
            Err(FetchError::BadDiscovery("no introspection_endpoint"))
        );
        let with =
            r#"{"issuer":"https://as.example","introspection_endpoint":"https://as.example/i"}"#;
        let meta = read_discovery(iss, &plan, Some(&resp(200, with))).unwrap();
        assert_eq!(
            meta.introspection_endpoint.unwrap().as_str(),
            "https://as.example/i"
        );
    }

    /// A metadata document is the authorization server's text: a host that would reach `url`'s
    /// IDNA adapter with an uppercase letter next to a non-ASCII byte (a `debug_assert` in a
    /// debug build) is refused like any other bad URL, without parsing it.
    #[test]
    fn discovery_urls_with_percent_encoded_or_non_ascii_hosts_are_refused() {
        let iss = "https://as.example";
        let doc = Url::parse("https://as.example/.well-known/openid-configuration").unwrap();
        let plan = keys_by_discovery(&doc);
        let refused = FetchError::BadDiscovery(
            "a URL in it has a host Tollgate refuses (percent-encoded or not ASCII)",
        );
        for host in ["login.exampleDD%DD.com", "AS%2Eexample", "BÜCHER.example"] {
            for member in ["jwks_uri", "introspection_endpoint"] {
                let mut body = serde_json::json!({
                    "issuer": iss,
                    "jwks_uri": "https://as.example/jwks",
                });
                body[member] = format!("https://{host}/x").into();
                let answer = resp(200, &body.to_string());
                assert_eq!(
                    read_discovery(iss, &plan, Some(&answer)),
                    Err(refused.clone()),
                    "{member}: {host}"
                );
            }
        }
        // The learned jwks_uri is read again through the same parser.
        let state = FetchState {
            jwks_uri: Some("https://login.exampleDD%DD.com".into()),
            ..FetchState::default()
        };
        let plan = Plan {
            discovery: None,
            ..plan
        };
        assert_eq!(next_request(&plan, &state, 1000), None);
    }

    #[test]
    fn discovery_source_asks_for_metadata_until_jwks_uri_is_known() {
        let doc = Url::parse("http://127.0.0.1:9/.well-known/openid-configuration").unwrap();
        let plan = Plan {
            discovery: Some(("as1", &doc)),
            jwks: Some(("as1", None)),
            introspection_endpoint_wanted: false,
            documents: [None, None],
        };
        let mut state = FetchState::default();
        let (step, req) = next_request(&plan, &state, 1000).unwrap();
        assert_eq!(step, Step::Discovery);
        assert_eq!(req.path, "/.well-known/openid-configuration");
        assert_eq!(req.authority, "127.0.0.1:9");
        state.jwks_uri = Some("http://127.0.0.1:9/keys?v=2".into());
        let (step, req) = next_request(&plan, &state, 1000).unwrap();
        assert_eq!(step, Step::Jwks);
        assert_eq!(req.path, "/keys?v=2");
        assert_eq!(req.upstream, "as1");
    }

    #[test]
    fn an_introspection_only_plan_ends_once_the_endpoint_is_known() {
        let doc = Url::parse("http://127.0.0.1:9/.well-known/oauth-authorization-server").unwrap();
        let plan = Plan {
            discovery: Some(("as2", &doc)),
            jwks: None,
            introspection_endpoint_wanted: true,
            documents: [None, None],
        };
        let mut state = FetchState::default();
        assert_eq!(
            next_request(&plan, &state, 1000).unwrap().0,
            Step::Discovery
        );
        state.introspection_endpoint = Some("http://127.0.0.1:9/introspect".into());
        assert!(next_request(&plan, &state, 1000).is_none());
    }
}
