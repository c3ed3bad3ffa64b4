//! What the flow needs from the proxy: the [`Host`] trait, and the [`Metric`] events it
//! reports. The plugin's adapter implements it over proxy-wasm; the tests implement it over
//! a [`super::LocalStore`] with recorded effects (see `flow/testhost.rs`).

use std::time::Duration;

use crate::gateway::Endpoint;
use crate::http::HttpRequest;
use crate::introspect::IntrospectError;
use crate::outcome::DenialKind;

/// The host calls the flow makes. Every call may fail; failures come back as `None` or
/// `false` and the flow handles them. The clock is not here: every callback passes `now` in.
pub trait Host {
    /// Shared data: (value, CAS stamp), `(None, None)` for a key never written or a failed read.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes shared data; with `cas`, only if nobody wrote since that read. `false` on
    /// mismatch. The host skips the check for a key that does not exist (yet), so `None` from
    /// a read makes this an unconditional write; [`Host::shared_swap`] closes that hole.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// Starts an outbound call; the callout token its answer comes back with, or `None` when
    /// the host refuses (e.g. unknown upstream).
    fn dispatch(&self, request: &HttpRequest) -> Option<u32>;
    /// Makes `context_id` the context later calls act on; `false` if it is gone.
    fn set_effective_context(&self, context_id: u32) -> bool;
    /// Resumes the effective (paused) request.
    fn resume_request(&self) -> bool;
    /// Answers the effective request locally; `false` if the host refused.
    fn send_response(&self, status: u32, headers: &[(String, String)], body: &str) -> bool;
    /// Sets a header of the effective request.
    fn set_request_header(&self, name: &str, value: &str);
    /// Removes a header of the effective request.
    fn remove_request_header(&self, name: &str);
    /// Sets the tick period; `false` if the host has no tick.
    fn set_tick_period(&self, period: Duration) -> bool;
    /// Counts an event (the adapter's metrics sink).
    fn record(&self, metric: Metric);
    /// Fills `buf` with cryptographically secure random bytes; `false` if the host has none.
    fn random(&self, buf: &mut [u8]) -> bool;

    /// Compare-and-swap: writes `key` only if nobody wrote it since the read that returned
    /// `read_cas`, including when that read found no key (`None`): then only if it still does
    /// not exist, so two workers cannot both "create" it ([`crate::cache::swap_cas`]).
    fn shared_swap(&self, key: &str, value: &[u8], read_cas: Option<u32>) -> bool {
        self.shared_set(key, value, Some(crate::cache::swap_cas(read_cas)))
    }
}

/// An event worth a counter or a histogram sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A request was let through (`cache_hit`: decided from the token cache).
    Allowed { issuer: usize, cache_hit: bool },
    /// A request was refused; `issuer` when Tollgate got that far.
    Denied {
        issuer: Option<usize>,
        kind: DenialKind,
    },
    /// A request waits for another worker's verification of its token.
    VerifyCoalesced { issuer: usize },
    /// A key or metadata fetch ended.
    Fetched { issuer: usize, ok: bool },
    /// Something happened to an introspection.
    Introspection {
        issuer: usize,
        event: IntrospectionEvent,
    },
    /// An introspection call took `ms`.
    IntrospectionLatency { issuer: usize, ms: u64 },
    /// A gateway call was routed to `issuer`.
    GatewayForwarded { issuer: usize, endpoint: Endpoint },
    /// A gateway call was answered with an OAuth error before reaching any server.
    GatewayRefused,
    /// A revocation the authorization server confirmed: the token left the cache.
    CacheRevocation,
    /// Something happened to a route's policy decision (`rule`: its index in
    /// `FilterConfig::rules`).
    Authz { rule: usize, event: AuthzEvent },
    /// A call to the policy decision point `pdp` took `ms`.
    AuthzLatency { pdp: usize, ms: u64 },
    /// Something happened to an upstream token (`upstream_token`: exchange or sign).
    UpstreamToken(UpstreamEvent),
}

/// Upstream-token events worth a counter: `tollgate.upstream_token.<code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// A token exchange call was made.
    ExchangeCall,
    /// The exchanged token (or a refusal) came from the shared cache.
    ExchangeCacheHit,
    /// The request joined an exchange already under way (this worker's or another's).
    ExchangeCoalesced,
    /// The authorization server refused an exchange.
    ExchangeRefused,
    /// An exchange gave no answer (the request was refused with 503).
    ExchangeError,
    /// A backend token was signed.
    Signed,
    /// A backend token signed before was reused.
    SignedReused,
}

impl UpstreamEvent {
    /// Every event, in the order of [`UpstreamEvent::index`].
    pub const ALL: [UpstreamEvent; 7] = [
        UpstreamEvent::ExchangeCall,
        UpstreamEvent::ExchangeCacheHit,
        UpstreamEvent::ExchangeCoalesced,
        UpstreamEvent::ExchangeRefused,
        UpstreamEvent::ExchangeError,
        UpstreamEvent::Signed,
        UpstreamEvent::SignedReused,
    ];

    /// The event's position in [`UpstreamEvent::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Counter suffix.
    pub fn code(self) -> &'static str {
        match self {
            UpstreamEvent::ExchangeCall => "exchange.call",
            UpstreamEvent::ExchangeCacheHit => "exchange.cache_hit",
            UpstreamEvent::ExchangeCoalesced => "exchange.coalesced",
            UpstreamEvent::ExchangeRefused => "exchange.refused",
            UpstreamEvent::ExchangeError => "exchange.error",
            UpstreamEvent::Signed => "sign.signed",
            UpstreamEvent::SignedReused => "sign.reused",
        }
    }
}

/// Policy-decision events worth a counter: `route.<label>.authz.<code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzEvent {
    /// The PDP (or the cache) said yes.
    Allow,
    /// The PDP (or the cache) said no.
    Deny,
    /// No decision: the request was refused with 503.
    Error,
    /// The decision came from the shared decision cache.
    CacheHit,
    /// The request joined a call already under way (this worker's or another's).
    Coalesced,
    /// A call to the PDP was made.
    Call,
}

impl AuthzEvent {
    /// Every event, in the order of [`AuthzEvent::index`].
    pub const ALL: [AuthzEvent; 6] = [
        AuthzEvent::Allow,
        AuthzEvent::Deny,
        AuthzEvent::Error,
        AuthzEvent::CacheHit,
        AuthzEvent::Coalesced,
        AuthzEvent::Call,
    ];

    /// The event's position in [`AuthzEvent::ALL`] (for a table of counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric-name suffix.
    pub fn code(self) -> &'static str {
        match self {
            AuthzEvent::Allow => "allow",
            AuthzEvent::Deny => "deny",
            AuthzEvent::Error => "error",
            AuthzEvent::CacheHit => "cache_hit",
            AuthzEvent::Coalesced => "coalesced",
            AuthzEvent::Call => "call",
        }
    }
}

/// Introspection events worth a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionEvent {
    Call,
    Inactive,
    NegativeCacheHit,
    Coalesced,
    Failed(IntrospectionFailure),
}

/// Why an introspection gave no usable answer: the `introspection.failed.<code>` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionFailure {
    Transport,
    ClientRejected,
    Timeout,
    Status,
    BadResponse,
    /// The endpoint is to be discovered and discovery has not found it.
    NoEndpoint,
}

impl IntrospectionFailure {
    /// Every kind, in the order of [`IntrospectionFailure::index`].
    pub const ALL: [IntrospectionFailure; 6] = [
        IntrospectionFailure::Transport,
        IntrospectionFailure::ClientRejected,
        IntrospectionFailure::Timeout,
        IntrospectionFailure::Status,
        IntrospectionFailure::BadResponse,
        IntrospectionFailure::NoEndpoint,
    ];

    /// The kind's position in [`IntrospectionFailure::ALL`] (for a table of counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric-name suffix.
    pub fn code(self) -> &'static str {
        match self {
            IntrospectionFailure::Transport => "transport",
            IntrospectionFailure::ClientRejected => "client_rejected",
            IntrospectionFailure::Timeout => "timeout",
            IntrospectionFailure::Status => "status",
            IntrospectionFailure::BadResponse => "bad_response",
            IntrospectionFailure::NoEndpoint => "no_endpoint",
        }
    }
}

impl From<IntrospectError> for IntrospectionFailure {
    fn from(e: IntrospectError) -> IntrospectionFailure {
        match e {
            IntrospectError::Transport => IntrospectionFailure::Transport,
            IntrospectError::ClientRejected(_) => IntrospectionFailure::ClientRejected,
            IntrospectError::Status(504) => IntrospectionFailure::Timeout,
            IntrospectError::Status(_) => IntrospectionFailure::Status,
            IntrospectError::BadResponse => IntrospectionFailure::BadResponse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn failure_kinds_are_listed_in_index_order_and_named_after_the_errors() {
        for (i, kind) in IntrospectionFailure::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{}", kind.code());
        }
        for (e, code) in [
            (IntrospectError::Transport, "transport"),
            (IntrospectError::ClientRejected(401), "client_rejected"),
            (IntrospectError::Status(504), "timeout"),
            (IntrospectError::Status(500), "status"),
            (IntrospectError::BadResponse, "bad_response"),
        ] {
            assert_eq!(IntrospectionFailure::from(e).code(), code);
        }
    }
}
