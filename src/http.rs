//! Host-free HTTP values: the core says "send this request" and is handed the response; the
//! host adapter (`proxy`) does the sending.

use url::Url;

/// An outbound call the core wants made (JWKS, discovery, later introspection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The host's name for the upstream to send it through, exactly as configured: an Envoy
    /// cluster name; `host:port` on Kong and APISIX. Never derived from the URL.
    pub upstream: String,
    pub method: &'static str,
    /// `:scheme`, from the URL. Envoy takes TLS from the cluster; Kong and APISIX open TLS to
    /// `host:port` only when it says `https`.
    pub scheme: &'static str,
    /// `:authority`: host and, when not the scheme default, port, from the URL (whatever
    /// `upstream` says).
    pub authority: String,
    /// `:path`: path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl HttpRequest {
    /// A `GET` for `url` through `upstream`.
    pub fn get(upstream: &str, url: &Url, timeout_ms: u64) -> HttpRequest {
        HttpRequest {
            upstream: upstream.to_owned(),
            method: "GET",
            scheme: scheme(url),
            authority: authority(url),
            path: path_and_query(url),
            headers: vec![("accept".to_owned(), "application/json".to_owned())],
            body: None,
            timeout_ms,
        }
    }
}

/// `https` for an `https` URL, else `http` (configuration only admits those two).
pub fn scheme(url: &Url) -> &'static str {
    if url.scheme() == "https" {
        "https"
    } else {
        "http"
    }
}

/// Largest answer body Tollgate reads from a callout (JWKS, metadata, introspection). A bigger
/// one is not copied into the VM: it is read as an empty body, so the fetch or introspection
/// fails as a bad answer (held keys stay in use; a request that needs the answer gets 503).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What came back from an outbound call. `status` 0 is never used: a call that got no HTTP
/// answer (reset, timeout, no upstream host) is reported as `None` by the adapter instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

pub fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}
