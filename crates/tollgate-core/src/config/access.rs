//! A route's client and user-authentication rules (issue 16): `require.clients`,
//! `require.client_id_header` ([`crate::policy::ClientRule`]), `require.acr_values` and
//! `require.max_age_s` ([`crate::policy::StepUp`]), validated.

use super::raw::RawRequirement;
use super::{err, is_header_name, same_header_name, ConfigError, RESERVED_HEADERS};
use crate::policy::{ClientRule, Policy, Route, StepUp};

/// `require.clients` and `require.client_id_header` at `at` (`...require`). Whether the
/// header is one Tollgate owns is checked later ([`check_client_headers`]).
pub(super) fn client_rule(at: &str, rr: &mut RawRequirement) -> Result<ClientRule, ConfigError> {
    if let Some(clients) = &rr.clients {
        if clients.is_empty() {
            return err(
                format!("{at}.clients"),
                "must list at least one client id (leave it out to allow every client)",
            );
        }
        if let Some(j) = clients.iter().position(String::is_empty) {
            return err(format!("{at}.clients[{j}]"), "a client id is not empty");
        }
    }
    if let Some(h) = &rr.client_id_header {
        let path = format!("{at}.client_id_header");
        if !is_header_name(h) {
            return err(path, "must be a lower-case HTTP header name");
        }
        if RESERVED_HEADERS.contains(&h.as_str()) {
            return err(path, format!("{h:?} cannot carry the client id"));
        }
    }
    Ok(ClientRule {
        allowed: rr.clients.take(),
        header: rr.client_id_header.take(),
    })
}

/// `require.acr_values` and `require.max_age_s` at `at` (`...require`).
pub(super) fn step_up(at: &str, rr: &mut RawRequirement) -> Result<StepUp, ConfigError> {
    if let Some(values) = &rr.acr_values {
        if values.is_empty() {
            return err(
                format!("{at}.acr_values"),
                "must list at least one acceptable acr value",
            );
        }
        // Each goes into the challenge's space-separated, quoted acr_values (RFC 9470 §3).
        if let Some(j) = values.iter().position(|v| {
            v.is_empty()
                || !v
                    .chars()
                    .all(|c| matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        }) {
            return err(
                format!("{at}.acr_values[{j}]"),
                "an acr value is one or more printable ASCII characters without space, '\"' or '\\'",
            );
        }
    }
    if rr.max_age_s == Some(0) {
        return err(
            format!("{at}.max_age_s"),
            "must be at least 1 (seconds since the user authenticated)",
        );
    }
    Ok(StepUp {
        acr_values: rr.acr_values.take().unwrap_or_default(),
        max_age_s: rr.max_age_s,
    })
}

/// No route's `client_id_header` is a header Tollgate removes or consumes before deciding
/// (`owned`: identity headers, the gateway's route header, the client-certificate header),
/// compared as hosts and backends read names: such a header would always be missing.
pub(super) fn check_client_headers(
    routes: &[Route],
    default_policy: Option<&Policy>,
    owned: &[&str],
) -> Result<(), ConfigError> {
    let policies = routes
        .iter()
        .enumerate()
        .map(|(i, r)| (Some(i), &r.policy))
        .chain(default_policy.map(|p| (None, p)));
    for (i, policy) in policies {
        let Policy::Require(r) = policy else { continue };
        let Some(h) = &r.client.header else { continue };
        if let Some(o) = owned.iter().find(|o| same_header_name(o, h)) {
            let at = i.map_or("default_route".to_owned(), |i| format!("routes[{i}]"));
            return err(
                format!("{at}.require.client_id_header"),
                format!("names the same header as {o:?}, which Tollgate sets or consumes itself"),
            );
        }
    }
    Ok(())
}
