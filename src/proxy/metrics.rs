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
//!
//! Per route with an `authorize` rule `<label>` (its name, or its position):
//! `tollgate.route.<label>.authz.<event>`: `allow`, `deny`, `error` (no decision: 503),
//! `cache_hit`, `coalesced` (joined a call under way) and `call` (PDP calls made); per PDP
//! `<name>` the histogram `tollgate.pdp.<name>.latency_ms`.

use super::host;
use crate::config::FilterConfig;
use crate::endpoint::{self, Endpoint};
use crate::flow::{AuthzEvent, IntrospectionEvent, IntrospectionFailure, Metric, UpstreamEvent};
use crate::outcome::DenialKind;

/// One counter per denial kind, indexed by [`DenialKind::index`].
#[derive(Debug, Default)]
struct Denials([Option<u32>; DenialKind::ALL.len()]);

impl Denials {
    fn define(prefix: &str) -> Denials {
        Denials(
            DenialKind::ALL
                .map(|kind| host::define_counter(&format!("{prefix}.denied.{}", kind.code()))),
        )
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
    /// Indexed by [`IntrospectionFailure::index`].
    failed: [Option<u32>; IntrospectionFailure::ALL.len()],
    latency_ms: Option<u32>,
}

impl IntrospectionCounters {
    fn define(prefix: &str) -> IntrospectionCounters {
        let p = format!("{prefix}.introspection");
        let failed = IntrospectionFailure::ALL
            .map(|kind| host::define_counter(&format!("{p}.failed.{}", kind.code())));
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

#[derive(Debug, Default)]
pub struct Metrics {
    issuers: Vec<IssuerCounters>,
    unattributed: Denials,
    gateway_refused: Option<u32>,
    cache_revocations: Option<u32>,
    /// Per `authorize` rule, indexed by [`AuthzEvent::index`].
    rules: Vec<[Option<u32>; AuthzEvent::ALL.len()]>,
    /// Per PDP: the latency histogram.
    pdps: Vec<Option<u32>>,
    /// Upstream tokens (exchange, sign), by [`UpstreamEvent::index`]; only when a route has
    /// `upstream_token`.
    upstream: [Option<u32>; UpstreamEvent::ALL.len()],
}

impl Metrics {
    /// Defines the counters of `cfg`'s issuers (in configuration order) with the host.
    pub fn define(cfg: &FilterConfig) -> Metrics {
        let mut any_gateway = false;
        let issuers = cfg
            .issuers
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.introspection.is_some(),
                    i.gateway.is_some(),
                )
            })
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
            rules: cfg
                .rules
                .iter()
                .map(|r| {
                    let p = format!("tollgate.route.{}.authz", r.label);
                    AuthzEvent::ALL.map(|e| host::define_counter(&format!("{p}.{}", e.code())))
                })
                .collect(),
            pdps: cfg
                .pdps
                .iter()
                .map(|p| host::define_histogram(&format!("tollgate.pdp.{}.latency_ms", p.name)))
                .collect(),
            upstream: if cfg.upstream_rules.is_empty() {
                [None; UpstreamEvent::ALL.len()]
            } else {
                UpstreamEvent::ALL
                    .map(|e| host::define_counter(&format!("tollgate.upstream_token.{}", e.code())))
            },
        }
    }

    /// Counts what the flow reports.
    pub fn record(&self, metric: Metric) {
        match metric {
            Metric::Allowed { issuer, cache_hit } => self.allowed(issuer, cache_hit),
            Metric::Denied { issuer, kind } => self.denied(issuer, kind),
            Metric::VerifyCoalesced { issuer } => {
                host::increment(self.issuers.get(issuer).and_then(|c| c.verify_coalesced));
            }
            Metric::Fetched { issuer, ok } => self.fetched(issuer, ok),
            Metric::Introspection { issuer, event } => self.introspection(issuer, event),
            Metric::IntrospectionLatency { issuer, ms } => self.introspection_latency(issuer, ms),
            Metric::GatewayForwarded { issuer, endpoint } => self.gateway(issuer, endpoint),
            Metric::GatewayRefused => host::increment(self.gateway_refused),
            Metric::CacheRevocation => host::increment(self.cache_revocations),
            Metric::Authz { rule, event } => {
                let counter = self.rules.get(rule).and_then(|c| c.get(event.index()));
                host::increment(counter.copied().flatten());
            }
            Metric::AuthzLatency { pdp, ms } => {
                if let Some(h) = self.pdps.get(pdp) {
                    host::record(*h, ms);
                }
            }
            Metric::UpstreamToken(event) => {
                host::increment(self.upstream.get(event.index()).copied().flatten());
            }
        }
    }

    /// A gateway call routed to `issuer`.
    fn gateway(&self, issuer: usize, endpoint: Endpoint) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(c.gateway.get(endpoint.counter_slot()).copied().flatten());
        }
    }

    fn allowed(&self, issuer: usize, cache_hit: bool) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(c.allowed);
            if cache_hit {
                host::increment(c.cache_hit);
            }
        }
    }

    fn denied(&self, issuer: Option<usize>, kind: DenialKind) {
        let counters = match issuer.and_then(|i| self.issuers.get(i)) {
            Some(c) => &c.denied,
            None => &self.unattributed,
        };
        host::increment(counters.0.get(kind.index()).copied().flatten());
    }

    fn introspection(&self, issuer: usize, event: IntrospectionEvent) {
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
            IntrospectionEvent::Failed(kind) => c.failed.get(kind.index()).copied().flatten(),
        });
    }

    fn introspection_latency(&self, issuer: usize, ms: u64) {
        if let Some(c) = self
            .issuers
            .get(issuer)
            .and_then(|c| c.introspection.as_ref())
        {
            host::record(c.latency_ms, ms);
        }
    }

    fn fetched(&self, issuer: usize, ok: bool) {
        if let Some(c) = self.issuers.get(issuer) {
            host::increment(if ok { c.fetch_ok } else { c.fetch_failed });
        }
    }
}
