//! Tollgate's counters. Envoy shows them in `/stats` as `wasmcustom.tollgate.…`; every worker
//! defines the same names, and the host sums them into one counter per name.
//!
//! Per issuer `<name>`: `tollgate.issuer.<name>.allowed`, `.cache_hit`, `.verify_coalesced`
//! (requests that waited for another worker's verification of the same token instead of
//! verifying it too), `.denied.<reason>`, `.jwks.fetch_ok`, `.jwks.fetch_failed`; for issuers with introspection also
//! `.introspection.calls`, `.introspection.inactive`, `.introspection.cache_hit_negative`,
//! `.introspection.coalesced`, `.introspection.failed.<kind>` and the histogram
//! `.introspection.latency_ms`; for issuers behind the gateway `.gateway.<endpoint>` (calls
//! routed there), `tollgate.gateway.refused` (calls answered with an OAuth error) and
//! `tollgate.cache.revocations` (revocations through the gateway the server confirmed, whose
//! token then left the cache). Refusals before an issuer is known (no route, no token, unknown
//! issuer, malformed request, no clock): `tollgate.denied.<reason>`.

use super::host;
use crate::gateway::endpoint::{self, Endpoint};
use crate::outcome::Denial;

/// Every denial reason, in the order of [`reason_index`].
pub const REASONS: [&str; 10] = [
    "no_route",
    "missing_token",
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "claim_not_satisfied",
    "keys_unavailable",
    "inactive_token",
    "introspection_unavailable",
    "clock_unavailable",
];

/// Introspection failure kinds, in the order of `IntrospectionCounters::failed`.
pub const INTROSPECTION_FAILURES: [&str; 6] = [
    "transport",
    "client_rejected",
    "timeout",
    "status",
    "bad_response",
    "no_endpoint",
];

fn reason_index(denial: &Denial) -> usize {
    REASONS
        .iter()
        .position(|r| *r == denial.code())
        .unwrap_or(0)
}

#[derive(Debug, Default)]
struct Denials([Option<u32>; REASONS.len()]);

impl Denials {
    fn define(prefix: &str) -> Denials {
        let mut ids = [None; REASONS.len()];
        for (slot, reason) in ids.iter_mut().zip(REASONS) {
            *slot = host::define_counter(&format!("{prefix}.denied.{reason}"));
        }
        Denials(ids)
    }
}

#[derive(Debug, Default)]
struct IssuerCounters {
    allowed: Option<u32>,
    cache_hit: Option<u32>,
    verify_coalesced: Option<u32>,
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    denied: Denials,
    introspection: Option<IntrospectionCounters>,
    /// Gateway calls routed to this issuer, per [`Endpoint::counter_slot`].
    gateway: [Option<u32>; endpoint::COUNTERS.len()],
}

#[derive(Debug, Default)]
struct IntrospectionCounters {
    calls: Option<u32>,
    inactive: Option<u32>,
    negative_hits: Option<u32>,
    coalesced: Option<u32>,
    failed: [Option<u32>; INTROSPECTION_FAILURES.len()],
    latency_ms: Option<u32>,
}

impl IntrospectionCounters {
    fn define(prefix: &str) -> IntrospectionCounters {
        let p = format!("{prefix}.introspection");
        let mut failed = [None; INTROSPECTION_FAILURES.len()];
        for (slot, kind) in failed.iter_mut().zip(INTROSPECTION_FAILURES) {
            *slot = host::define_counter(&format!("{p}.failed.{kind}"));
        }
        IntrospectionCounters {
            calls: host::define_counter(&format!("{p}.calls")),
            inactive: host::define_counter(&format!("{p}.inactive")),
            negative_hits: host::define_counter(&format!("{p}.cache_hit_negative")),
            coalesced: host::define_counter(&format!("{p}.coalesced")),
            failed,
            latency_ms: host::define_histogram(&format!("{p}.latency_ms")),
        }
    }
}

/// Introspection events worth a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionEvent<'a> {
    Call,
    Inactive,
    NegativeCacheHit,
    Coalesced,
    Failed(&'a str),
}

#[derive(Debug, Default)]
pub struct Metrics {
    issuers: Vec<IssuerCounters>,
    unattributed: Denials,
    gateway_refused: Option<u32>,
    cache_revocations: Option<u32>,
}

impl Metrics {
    /// `issuers`: (name, has introspection, is behind the gateway) in configuration order.
    pub fn define<'a>(issuers: impl Iterator<Item = (&'a str, bool, bool)>) -> Metrics {
        let mut any_gateway = false;
        let issuers = issuers
            .map(|(name, introspects, gatewayed)| {
                let p = format!("tollgate.issuer.{name}");
                any_gateway |= gatewayed;
                let mut gateway = [None; endpoint::COUNTERS.len()];
                if gatewayed {
                    for (slot, ep) in gateway.iter_mut().zip(endpoint::COUNTERS) {
                        *slot = host::define_counter(&format!("{p}.gateway.{ep}"));
                    }
                }
                IssuerCounters {
                    allowed: host::define_counter(&format!("{p}.allowed")),
                    cache_hit: host::define_counter(&format!("{p}.cache_hit")),
                    verify_coalesced: host::define_counter(&format!("{p}.verify_coalesced")),
                    fetch_ok: host::define_counter(&format!("{p}.jwks.fetch_ok")),
                    fetch_failed: host::define_counter(&format!("{p}.jwks.fetch_failed")),
                    denied: Denials::define(&p),
                    introspection: introspects.then(|| IntrospectionCounters::define(&p)),
                    gateway,
                }
            })
            .collect();
        Metrics {
            issuers,
            unattributed: Denials::define("tollgate"),
            gateway_refused: if any_gateway {
                host::define_counter("tollgate.gateway.refused")
            } else {
                None
            },
            cache_revocations: if any_gateway {
                host::define_counter("tollgate.cache.revocations")
            } else {
                None
            },
        }
    }

    /// A gateway call routed to `issuer`.
    pub fn gateway(&self, issuer: usize, endpoint: Endpoint) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(c.gateway.get(endpoint.counter_slot()).copied().flatten());
        }
    }

    /// A gateway call answered with an OAuth error before reaching any server.
    pub fn gateway_refused(&self) {
        host::increment(self.gateway_refused);
    }

    /// A revocation the authorization server confirmed: the token left the cache.
    pub fn cache_revocation(&self) {
        host::increment(self.cache_revocations);
    }

    pub fn allowed(&self, issuer: usize, cache_hit: bool) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(c.allowed);
            if cache_hit {
                host::increment(c.cache_hit);
            }
        }
    }

    /// A request waits for another worker's verification of its token.
    pub fn verify_coalesced(&self, issuer: usize) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(c.verify_coalesced);
        }
    }

    pub fn denied(&self, issuer: Option<usize>, denial: &Denial) {
        let counters = match issuer.and_then(|i| self.issuers.get(i)) {
            Some(c) => &c.denied,
            None => &self.unattributed,
        };
        host::increment(counters.0.get(reason_index(denial)).copied().flatten());
    }

    pub fn introspection(&self, issuer: usize, event: IntrospectionEvent<'_>) {
        let Some(c) = self
            .issuers
            .get(issuer)
            .and_then(|c| c.introspection.as_ref())
        else {
            return;
        };
        host::increment(match event {
            IntrospectionEvent::Call => c.calls,
            IntrospectionEvent::Inactive => c.inactive,
            IntrospectionEvent::NegativeCacheHit => c.negative_hits,
            IntrospectionEvent::Coalesced => c.coalesced,
            IntrospectionEvent::Failed(kind) => INTROSPECTION_FAILURES
                .iter()
                .position(|k| *k == kind)
                .and_then(|i| c.failed[i]),
        });
    }

    pub fn introspection_latency(&self, issuer: usize, ms: u64) {
        if let Some(c) = self
            .issuers
            .get(issuer)
            .and_then(|c| c.introspection.as_ref())
        {
            host::record(c.latency_ms, ms);
        }
    }

    pub fn fetched(&self, issuer: usize, ok: bool) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(if ok { c.fetch_ok } else { c.fetch_failed });
        }
    }
}
