//! Tollgate's counters. Envoy shows them in `/stats` as `wasmcustom.tollgate.…`; every worker
//! defines the same names, and the host sums them into one counter per name.
//!
//! Per issuer `<name>`: `tollgate.issuer.<name>.allowed`, `.cache_hit`, `.denied.<reason>`,
//! `.jwks.fetch_ok`, `.jwks.fetch_failed`; for issuers with introspection also
//! `.introspection.calls`, `.introspection.inactive`, `.introspection.cache_hit_negative`,
//! `.introspection.coalesced`, `.introspection.failed.<kind>` and the histogram
//! `.introspection.latency_ms`. Refusals before an issuer is known (no route, no
//! token, unknown issuer, malformed request): `tollgate.denied.<reason>`.

use super::host;
use crate::outcome::Denial;

/// Every denial reason, in the order of [`reason_index`].
pub const REASONS: [&str; 9] = [
    "no_route",
    "missing_token",
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "claim_not_satisfied",
    "keys_unavailable",
    "inactive_token",
    "introspection_unavailable",
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
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    denied: Denials,
    introspection: Option<IntrospectionCounters>,
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
}

impl Metrics {
    /// `issuers`: (name, whether it has introspection) in configuration order.
    pub fn define<'a>(issuers: impl Iterator<Item = (&'a str, bool)>) -> Metrics {
        let issuers = issuers
            .map(|(name, introspects)| {
                let p = format!("tollgate.issuer.{name}");
                IssuerCounters {
                    allowed: host::define_counter(&format!("{p}.allowed")),
                    cache_hit: host::define_counter(&format!("{p}.cache_hit")),
                    fetch_ok: host::define_counter(&format!("{p}.jwks.fetch_ok")),
                    fetch_failed: host::define_counter(&format!("{p}.jwks.fetch_failed")),
                    denied: Denials::define(&p),
                    introspection: introspects.then(|| IntrospectionCounters::define(&p)),
                }
            })
            .collect();
        Metrics {
            issuers,
            unattributed: Denials::define("tollgate"),
        }
    }

    pub fn allowed(&self, issuer: usize, cache_hit: bool) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(c.allowed);
            if cache_hit {
                host::increment(c.cache_hit);
            }
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
