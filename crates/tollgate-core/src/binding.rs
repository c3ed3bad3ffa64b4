//! Sender-constrained tokens: whether the way a token is presented satisfies its binding
//! (`cnf`, RFC 7800) and the route's requirements — DPoP (RFC 9449 §7) and mTLS
//! certificate-bound tokens (RFC 8705 §3).
//!
//! Pure: the caller gives the token's `cnf` (from the verified JWT or the introspection
//! answer, cached or not), how it was presented (scheme, the thumbprint of a DPoP proof that
//! [`crate::dpop::check`] accepted, the client certificate's thumbprint) and the route's modes.
//! A token's binding holds whatever the route says: a DPoP-bound token sent as `Bearer` is
//! refused (a downgrade), and so is a certificate-bound one without its certificate.

/// How a route treats one kind of binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Not asked for (a bound token is still held to its binding).
    #[default]
    Off,
    /// Accepted, not required.
    Allowed,
    /// Every token must have it.
    Required,
}

/// A route's binding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    pub dpop: Mode,
    pub mtls: Mode,
}

/// The `Authorization` scheme the token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// A token's confirmation members (RFC 9449 §6, RFC 8705 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cnf<'a> {
    /// `cnf.jkt`: the DPoP key's thumbprint.
    pub jkt: Option<&'a str>,
    /// `cnf.x5t#S256`: the client certificate's thumbprint.
    pub x5t: Option<&'a str>,
}

impl<'a> Cnf<'a> {
    /// The members of a `cnf` claim (a JSON object; anything else binds nothing).
    pub fn of(cnf: Option<&'a serde_json::Value>) -> Cnf<'a> {
        let member = |name: &str| cnf.and_then(|c| c.get(name)).and_then(|v| v.as_str());
        Cnf {
            jkt: member("jkt"),
            x5t: member("x5t#S256"),
        }
    }
}

/// How the request presented the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    pub scheme: Scheme,
    /// The thumbprint of the request's DPoP proof, once [`crate::dpop::check`] accepted it.
    pub proof_jkt: Option<&'a str>,
    /// base64url SHA-256 of the client certificate's DER, when the connection has one.
    pub cert_x5t: Option<&'a str>,
}

/// The binding a request proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proved {
    pub dpop: bool,
    pub mtls: bool,
}

/// Why the binding does not hold. Every one is `401`; [`BindingError::is_dpop`] says which
/// `WWW-Authenticate` error applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingError {
    /// A DPoP-bound token sent as `Bearer`.
    Downgrade,
    /// The DPoP proof's key is not the one the token is bound to.
    WrongKey,
    /// `DPoP` scheme for a token that is not DPoP-bound.
    NotDpopBound,
    /// The route requires DPoP and the token is not DPoP-bound.
    DpopRequired,
    /// A certificate-bound token, and no client certificate.
    NoCertificate,
    /// A certificate-bound token, and another client certificate.
    WrongCertificate,
    /// The route requires a certificate-bound token.
    MtlsRequired,
    /// DPoP is `off` for this token here: the `DPoP` scheme, and DPoP-bound tokens, are not
    /// accepted.
    DpopOff,
    /// mTLS is `off` for this token here: certificate-bound tokens are not accepted.
    MtlsOff,
}

impl BindingError {
    /// The fixed `error_description`.
    pub fn describe(self) -> &'static str {
        match self {
            BindingError::Downgrade => "the token is DPoP-bound: present it with the DPoP scheme",
            BindingError::WrongKey => "the DPoP proof's key is not the one the token is bound to",
            BindingError::NotDpopBound => "the token is not DPoP-bound",
            BindingError::DpopRequired => "this resource requires a DPoP-bound token",
            BindingError::NoCertificate => {
                "the token is bound to a client certificate, and none was presented"
            }
            BindingError::WrongCertificate => "the token is bound to another client certificate",
            BindingError::MtlsRequired => "this resource requires a certificate-bound token",
            BindingError::DpopOff => "DPoP-bound tokens are not accepted for this resource",
            BindingError::MtlsOff => "certificate-bound tokens are not accepted for this resource",
        }
    }

    /// Whether the refusal is about DPoP (its challenge is the `DPoP` one).
    pub fn is_dpop(self) -> bool {
        matches!(
            self,
            BindingError::Downgrade
                | BindingError::WrongKey
                | BindingError::NotDpopBound
                | BindingError::DpopRequired
                | BindingError::DpopOff
        )
    }
}

/// Whether a token with `cnf`, presented as `presented`, may pass a route with `modes`.
pub fn check(cnf: Cnf<'_>, presented: Presented<'_>, modes: Modes) -> Result<Proved, BindingError> {
    let dpop = match (cnf.jkt, presented.scheme) {
        (Some(_), Scheme::Bearer) => return Err(BindingError::Downgrade),
        (Some(jkt), Scheme::Dpop) => {
            if presented.proof_jkt != Some(jkt) {
                return Err(BindingError::WrongKey);
            }
            true
        }
        (None, Scheme::Dpop) => return Err(BindingError::NotDpopBound),
        (None, Scheme::Bearer) => false,
    };
    let mtls = match (cnf.x5t, presented.cert_x5t) {
        (Some(_), None) => return Err(BindingError::NoCertificate),
        (Some(bound), Some(cert)) if !constant_time_eq(bound, cert) => {
            return Err(BindingError::WrongCertificate)
        }
        (Some(_), Some(_)) => true,
        (None, _) => false,
    };
    if modes.dpop == Mode::Required && !dpop {
        return Err(BindingError::DpopRequired);
    }
    if modes.mtls == Mode::Required && !mtls {
        return Err(BindingError::MtlsRequired);
    }
    Ok(Proved { dpop, mtls })
}

/// Thumbprints compared without an early exit.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    const X5T: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";

    fn bearer(cert: Option<&'static str>) -> Presented<'static> {
        Presented {
            scheme: Scheme::Bearer,
            proof_jkt: None,
            cert_x5t: cert,
        }
    }

    fn dpop(proof_jkt: &'static str) -> Presented<'static> {
        Presented {
            scheme: Scheme::Dpop,
            proof_jkt: Some(proof_jkt),
            cert_x5t: None,
        }
    }

    fn modes(dpop: Mode, mtls: Mode) -> Modes {
        Modes { dpop, mtls }
    }

    const OFF: Modes = Modes {
        dpop: Mode::Off,
        mtls: Mode::Off,
    };

    #[test]
    fn cnf_members_come_from_the_claim() {
        let claim = json!({"jkt": JKT, "x5t#S256": X5T});
        assert_eq!(
            Cnf::of(Some(&claim)),
            Cnf {
                jkt: Some(JKT),
                x5t: Some(X5T)
            }
        );
        assert_eq!(Cnf::of(Some(&json!("jkt"))), Cnf::default());
        assert_eq!(Cnf::of(Some(&json!({"jkt": 7}))), Cnf::default());
        assert_eq!(Cnf::of(None), Cnf::default());
    }

    #[test]
    fn a_dpop_bound_token_is_held_to_its_key_whatever_the_route_says() {
        let bound = Cnf {
            jkt: Some(JKT),
            x5t: None,
        };
        for route in [
            OFF,
            modes(Mode::Allowed, Mode::Off),
            modes(Mode::Required, Mode::Off),
        ] {
            assert_eq!(
                check(bound, bearer(None), route),
                Err(BindingError::Downgrade)
            );
            assert_eq!(
                check(bound, dpop("another"), route),
                Err(BindingError::WrongKey)
            );
            assert_eq!(
                check(bound, dpop(JKT), route),
                Ok(Proved {
                    dpop: true,
                    mtls: false
                })
            );
        }
    }

    #[test]
    fn an_unbound_token_passes_only_where_nothing_is_required() {
        let unbound = Cnf::default();
        assert_eq!(
            check(unbound, bearer(None), OFF),
            Ok(Proved {
                dpop: false,
                mtls: false
            })
        );
        assert_eq!(
            check(unbound, dpop(JKT), OFF),
            Err(BindingError::NotDpopBound)
        );
        assert_eq!(
            check(unbound, bearer(None), modes(Mode::Required, Mode::Off)),
            Err(BindingError::DpopRequired)
        );
        assert_eq!(
            check(unbound, bearer(Some(X5T)), modes(Mode::Off, Mode::Required)),
            Err(BindingError::MtlsRequired),
            "a certificate alone does not bind an unbound token"
        );
        assert!(check(unbound, bearer(None), modes(Mode::Allowed, Mode::Allowed)).is_ok());
    }

    #[test]
    fn a_certificate_bound_token_needs_its_certificate() {
        let bound = Cnf {
            jkt: None,
            x5t: Some(X5T),
        };
        assert_eq!(
            check(bound, bearer(None), OFF),
            Err(BindingError::NoCertificate)
        );
        assert_eq!(
            check(
                bound,
                bearer(Some("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg3")),
                OFF
            ),
            Err(BindingError::WrongCertificate)
        );
        assert_eq!(
            check(bound, bearer(Some(X5T)), modes(Mode::Off, Mode::Required)),
            Ok(Proved {
                dpop: false,
                mtls: true
            })
        );
        // A DPoP-required route is not satisfied by a certificate.
        assert_eq!(
            check(bound, bearer(Some(X5T)), modes(Mode::Required, Mode::Off)),
            Err(BindingError::DpopRequired)
        );
        // Bound both ways: both hold.
        let both = Cnf {
            jkt: Some(JKT),
            x5t: Some(X5T),
        };
        let mut presented = dpop(JKT);
        assert_eq!(
            check(both, presented, OFF),
            Err(BindingError::NoCertificate)
        );
        presented.cert_x5t = Some(X5T);
        assert_eq!(
            check(both, presented, modes(Mode::Required, Mode::Required)),
            Ok(Proved {
                dpop: true,
                mtls: true
            })
        );
    }

    #[test]
    fn dpop_refusals_get_the_dpop_challenge() {
        assert!(BindingError::Downgrade.is_dpop());
        assert!(BindingError::DpopRequired.is_dpop());
        assert!(!BindingError::WrongCertificate.is_dpop());
        assert!(!BindingError::MtlsRequired.is_dpop());
    }
}
