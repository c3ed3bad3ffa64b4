//! Sender-constrained tokens (issue 15): each issuer's `dpop` and `mtls` sections, a route's
//! `require.dpop` / `require.mtls`, and the top-level `sender_constraint` section, validated.
//!
//! The request path applies them in [`crate::authn`]; a route's challenges are worked out
//! here, once ([`challenge`]).

use super::raw::{
    RawCertificateSource, RawClientCertificate, RawDpop, RawMode, RawSenderConstraint,
};
use super::{
    err, http_url, is_header_name, same_header_name, ConfigError, Identity, RESERVED_HEADERS,
};
use crate::binding::{Mode, Scheme};
use crate::dpop;
use crate::key::{Alg, AlgSet};
use crate::origin::PublicOrigin;
use crate::outcome::Challenge;

/// An issuer's DPoP settings.
#[derive(Debug, Clone, Copy)]
pub struct DpopSettings {
    /// `Allowed` by default; `Off` does not advertise DPoP. A token with `cnf` is held to its
    /// binding whatever the mode ([`crate::binding`]).
    pub mode: Mode,
    /// The proof algorithms and the `iat` window ([`dpop::check`]).
    pub policy: dpop::Policy,
    /// Proofs must carry a server nonce Tollgate issued.
    pub require_nonce: bool,
}

/// The top-level `sender_constraint` section.
#[derive(Debug, Clone, Default)]
pub struct SenderConstraint {
    /// The origin a proof's `htu` names when TLS ends in front of Envoy; `None`: the request's
    /// `:scheme` and `:authority` ([`dpop::request_uri`]).
    pub external_origin: Option<PublicOrigin>,
    pub client_certificate: ClientCertificate,
}

/// Where the client certificate comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientCertificate {
    /// The host's own TLS connection (Envoy's `connection.*` properties).
    #[default]
    Connection,
    /// A trusted proxy's `x-forwarded-client-cert` (`Hash=` / `Cert=`), in this header.
    Xfcc { header: String },
    /// A trusted proxy's RFC 9440 `Client-Cert`, in this header.
    ClientCert { header: String },
}

impl ClientCertificate {
    /// The thumbprint in a value of this source's header (`None` for the connection source,
    /// or a value without a usable certificate).
    pub fn x5t_of_header(&self, value: &str) -> Option<String> {
        match self {
            ClientCertificate::Connection => None,
            ClientCertificate::Xfcc { .. } => crate::client_cert::x5t_of_xfcc(value),
            ClientCertificate::ClientCert { .. } => crate::client_cert::x5t_of_client_cert(value),
        }
    }

    /// The request header the certificate is read from, when it comes from one.
    pub fn header(&self) -> Option<&str> {
        match self {
            ClientCertificate::Connection => None,
            ClientCertificate::Xfcc { header } | ClientCertificate::ClientCert { header } => {
                Some(header)
            }
        }
    }
}

/// The challenges of a route whose `require.dpop` is `route_dpop` and that accepts `issuers`
/// (indexes into `all`; empty: every issuer): `Bearer` unless every issuer requires DPoP
/// there, `DPoP` (with the algorithms of the issuers that take it) unless none does.
pub(super) fn challenge(
    route_dpop: Option<Mode>,
    issuers: &[usize],
    all: &[super::Issuer],
) -> Challenge {
    let accepted: Vec<&super::Issuer> = if issuers.is_empty() {
        all.iter().collect()
    } else {
        issuers.iter().filter_map(|&i| all.get(i)).collect()
    };
    let mut bearer = false;
    let mut algs: Option<AlgSet> = None;
    for issuer in accepted {
        let mode = route_dpop.unwrap_or(issuer.dpop.mode);
        bearer |= mode != Mode::Required;
        if mode != Mode::Off {
            let set = algs.get_or_insert_with(AlgSet::default);
            for alg in Alg::ALL {
                if issuer.dpop.policy.algorithms.contains(alg) {
                    set.insert(alg);
                }
            }
        }
    }
    Challenge {
        bearer: bearer || algs.is_none(),
        dpop: algs,
        used: Scheme::Bearer,
        resource: None,
    }
}

pub(super) fn mode(raw: RawMode) -> Mode {
    match raw {
        RawMode::Off => Mode::Off,
        RawMode::Allowed => Mode::Allowed,
        RawMode::Required => Mode::Required,
    }
}

/// The longest `iat_window_s`: an hour (proofs are meant to be fresh, and the replay store
/// keeps each `jti` for the window).
const MAX_IAT_WINDOW_S: u64 = 3600;

/// An issuer's `dpop` section (`at` is `issuers[i].dpop`).
pub(super) fn compile_dpop(at: &str, r: RawDpop) -> Result<DpopSettings, ConfigError> {
    let algorithms = compile_proof_algorithms(&format!("{at}.algorithms"), &r.algorithms)?;
    if r.iat_window_s == 0 || r.iat_window_s > MAX_IAT_WINDOW_S {
        return err(
            format!("{at}.iat_window_s"),
            format!("must be between 1 and {MAX_IAT_WINDOW_S} seconds"),
        );
    }
    Ok(DpopSettings {
        mode: mode(r.mode),
        policy: dpop::Policy {
            algorithms,
            iat_window_s: r.iat_window_s,
        },
        require_nonce: r.require_nonce,
    })
}

/// The proof algorithms: at least one, each an asymmetric one Tollgate verifies, none twice;
/// `none` and HMAC get their own explanation.
fn compile_proof_algorithms(at: &str, names: &[String]) -> Result<AlgSet, ConfigError> {
    if names.is_empty() {
        return err(at, "at least one algorithm is required");
    }
    let mut algorithms = AlgSet::default();
    for (j, name) in names.iter().enumerate() {
        let path = format!("{at}[{j}]");
        match Alg::from_name(name) {
            Some(alg) if algorithms.contains(alg) => {
                return err(path, format!("{name:?} is listed twice"))
            }
            Some(alg) => algorithms.insert(alg),
            None if name.eq_ignore_ascii_case("none") => {
                return err(
                    path,
                    "\"none\" is never accepted: a DPoP proof must be signed with the client's key",
                )
            }
            None if name.to_ascii_uppercase().starts_with("HS") => {
                return err(
                    path,
                    format!("{name:?} is refused: a DPoP proof is signed with an asymmetric key whose public part it carries, never with a shared secret"),
                )
            }
            None => {
                return err(
                    path,
                    format!("unsupported algorithm {name:?} (supported: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"),
                )
            }
        }
    }
    Ok(algorithms)
}

/// The top-level `sender_constraint` section. The certificate header is one Tollgate owns: a
/// lower-case header name, not a reserved one, not an identity header nor the gateway's route
/// header (in any spelling a backend reads as the same).
pub(super) fn compile_sender_constraint(
    r: RawSenderConstraint,
    identity: &Identity,
    route_header: Option<&str>,
) -> Result<SenderConstraint, ConfigError> {
    let external_origin = match r.external_origin {
        None => None,
        Some(text) => Some(external_origin("sender_constraint.external_origin", &text)?),
    };
    let client_certificate = match r.client_certificate {
        RawClientCertificate {
            from: RawCertificateSource::Connection,
            header: None,
        } => ClientCertificate::Connection,
        RawClientCertificate {
            from: RawCertificateSource::Connection,
            header: Some(_),
        } => {
            return err(
                "sender_constraint.client_certificate",
                "a header is read only with \"from\": \"xfcc\" or \"client-cert\"",
            )
        }
        RawClientCertificate {
            from: RawCertificateSource::Xfcc,
            header,
        } => ClientCertificate::Xfcc {
            header: header.unwrap_or_else(|| "x-forwarded-client-cert".to_owned()),
        },
        RawClientCertificate {
            from: RawCertificateSource::ClientCert,
            header,
        } => ClientCertificate::ClientCert {
            header: header.unwrap_or_else(|| "client-cert".to_owned()),
        },
    };
    if let Some(h) = client_certificate.header() {
        let path = "sender_constraint.client_certificate.header";
        if !is_header_name(h) || RESERVED_HEADERS.contains(&h) {
            return err(
                path,
                "must be a lower-case HTTP header name Tollgate may remove",
            );
        }
        if let Some(other) = identity.owned_headers().find(|o| same_header_name(o, h)) {
            return err(
                path,
                format!("names the same header as the identity header {other:?}"),
            );
        }
        if route_header.is_some_and(|rh| same_header_name(rh, h)) {
            return err(path, "names the same header as gateway.route_header");
        }
    }
    Ok(SenderConstraint {
        external_origin,
        client_certificate,
    })
}

/// `scheme://host[:port]`: the request's path is appended to it.
fn external_origin(path: &str, text: &str) -> Result<PublicOrigin, ConfigError> {
    let url = http_url(path, text)?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return err(
            path,
            "must be an origin only (scheme://host[:port]): no path, query or fragment; the request's path is appended to it",
        );
    }
    PublicOrigin::from_url(&url).or_else(|why| err(path, why))
}
