//! Tollgate's counters. Envoy shows them in `/stats` as `wasmcustom.tollgate.…`; every worker
//! defines the same names, and the host sums them into one counter per name.
//!
//! Per issuer `<name>`: `tollgate.issuer.<name>.allowed`, `.cache_hit`, `.denied.<reason>`,
//! `.jwks.fetch_ok`, `.jwks.fetch_failed`. Refusals before an issuer is known (no route, no
//! token, unknown issuer, malformed request): `tollgate.denied.<reason>`.

use super::host;
use crate::outcome::Denial;

/// Every denial reason, in the order of [`reason_index`].
pub const REASONS: [&str; 7] = [
    "no_route",
    "missing_token",
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "claim_not_satisfied",
    "keys_unavailable",
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
}

#[derive(Debug, Default)]
pub struct Metrics {
    issuers: Vec<IssuerCounters>,
    unattributed: Denials,
}

impl Metrics {
    pub fn define<'a>(issuer_names: impl Iterator<Item = &'a str>) -> Metrics {
        let issuers = issuer_names
            .map(|name| {
                let p = format!("tollgate.issuer.{name}");
                IssuerCounters {
                    allowed: host::define_counter(&format!("{p}.allowed")),
                    cache_hit: host::define_counter(&format!("{p}.cache_hit")),
                    fetch_ok: host::define_counter(&format!("{p}.jwks.fetch_ok")),
                    fetch_failed: host::define_counter(&format!("{p}.jwks.fetch_failed")),
                    denied: Denials::define(&p),
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

    pub fn fetched(&self, issuer: usize, ok: bool) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(if ok { c.fetch_ok } else { c.fetch_failed });
        }
    }
}
