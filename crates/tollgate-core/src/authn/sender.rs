//! The sender-constraint step of a decision (issue 15): whether the request proves the
//! binding of the token it presents — a DPoP proof (RFC 9449 §4.3, §7), the client
//! certificate (RFC 8705 §3) — as the token's `cnf` and the route's modes ask.
//!
//! Runs on every accepted token, cached or not: the cache keeps the token's claims (a JWT's,
//! or the whole introspection answer) with their `cnf`, so a cache hit is held to the binding
//! like a fresh verification. What it cannot do itself is the replay check, which needs the
//! host's shared data: it hands the proof's `jti` to the flow ([`ProofUse`]), which records
//! it before the request goes on.
//!
//! A mode of `off` means the binding cannot be proved here: the `DPoP` scheme is not read, and
//! a token bound that way is refused.

use serde_json::{Map, Value};

use super::{Accept, Deciding, Request, NO_CLOCK};
use crate::binding::{self, BindingError, Cnf, Mode, Modes, Presented, Scheme};
use crate::config::{FilterConfig, Issuer};
use crate::dpop::{self, nonce, Expected};
use crate::extract;
use crate::outcome::{Challenge, Denial};

/// A DPoP proof that holds for the request, for the flow to record in the replay store
/// before the request goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofUse {
    /// The proof key's thumbprint and the proof's `jti`: the replay store's id of the proof.
    pub jkt: String,
    pub jti: String,
    /// Until when a second use would still be accepted (the end of its `iat` window), ms.
    pub until_ms: u64,
    /// The challenges of a refusal, should the store say it is a replay.
    pub challenge: Challenge,
}

/// What the binding step found: the proof to record and the binding header's value.
#[derive(Debug)]
pub(super) struct Bound {
    pub proof: Option<Box<ProofUse>>,
    /// `dpop;jkt=…`, `mtls;x5t=…`, or both joined by `, `; `None` for an unbound token.
    pub header: Option<String>,
}

/// How the token came: its scheme and its text as sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Presenting<'a> {
    pub token: &'a str,
    pub scheme: Scheme,
}

/// The binding of a token of issuer `idx` with `claims`, as `accept` presents it.
pub(super) fn check(
    d: &Deciding<'_>,
    accept: &Accept<'_>,
    idx: usize,
    claims: &Map<String, Value>,
) -> Result<Bound, Denial> {
    let (cfg, now_ms) = (d.cfg, d.now_ms);
    let (req, requirement, how) = (accept.req, accept.requirement, accept.how);
    let Some(issuer) = cfg.issuers.get(idx) else {
        // Unreachable (cache entries naming no configured issuer are misses); never an allow.
        return Err(Denial::InvalidToken(NO_ISSUER));
    };
    // The route's modes, else the issuer's.
    let modes = Modes {
        dpop: requirement.dpop.unwrap_or(issuer.dpop.mode),
        mtls: requirement.mtls.unwrap_or(issuer.mtls),
    };
    let cnf = Cnf::of(claims.get("cnf"));
    let dpop_typed = claims
        .get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop"));
    if dpop_typed && cnf.jkt.is_none() {
        // RFC 9449 §6.2: an introspection answer for a DPoP-bound token names its key.
        return Err(Denial::InvalidToken(DPOP_TYPED_WITHOUT_KEY));
    }
    if modes.dpop == Mode::Off && (how.scheme == Scheme::Dpop || cnf.jkt.is_some()) {
        return Err(Denial::Binding(BindingError::DpopOff));
    }
    if modes.mtls == Mode::Off && cnf.x5t.is_some() {
        return Err(Denial::Binding(BindingError::MtlsOff));
    }
    if how.scheme == Scheme::Dpop && cnf.jkt.is_none() {
        // Whatever the proof: no key to check it against (and no verification spent on it).
        return Err(Denial::Binding(BindingError::NotDpopBound));
    }
    let proof = match how.scheme {
        Scheme::Dpop => Some(prove(
            cfg,
            issuer,
            d.nonce_secret,
            req,
            how,
            cnf.jkt,
            now_ms,
        )?),
        Scheme::Bearer => None,
    };
    let cert_x5t = match modes.mtls {
        Mode::Off => None,
        Mode::Allowed | Mode::Required => req.sender.cert_x5t,
    };
    let presented = Presented {
        scheme: how.scheme,
        proof_jkt: proof.as_ref().map(|p| p.jkt.as_str()),
        cert_x5t,
    };
    let proved = binding::check(cnf, presented, modes).map_err(Denial::Binding)?;
    let mut parts: Vec<String> = Vec::new(); // no allocation for an unbound token
    if let (true, Some(jkt)) = (proved.dpop, cnf.jkt) {
        parts.push(format!("dpop;jkt={jkt}"));
    }
    if let (true, Some(x5t)) = (proved.mtls, cnf.x5t) {
        parts.push(format!("mtls;x5t={x5t}"));
    }
    let window_ms = issuer.dpop.policy.iat_window_s.saturating_mul(1000);
    Ok(Bound {
        proof: proof.map(|p| {
            Box::new(ProofUse {
                until_ms: u64::try_from(p.iat)
                    .unwrap_or(0)
                    .saturating_mul(1000)
                    .saturating_add(window_ms)
                    .saturating_add(1000)
                    .max(now_ms.saturating_add(1000)),
                jkt: p.jkt,
                jti: p.jti,
                challenge: requirement.challenge.used(Scheme::Dpop),
            })
        }),
        header: (!parts.is_empty()).then(|| parts.join(", ")),
    })
}

const NO_ISSUER: &str = "the token's issuer is not configured";
const DPOP_TYPED_WITHOUT_KEY: &str = "the token is DPoP-bound but its issuer names no key";
const NO_PROOF: &str = "the request carries no DPoP proof";
const NO_URI: &str = "the request's URI cannot be rebuilt to check the DPoP proof";

/// The request's one DPoP proof, checked against the request and the token (§4.3) — its key
/// first against the token's `bound_to` thumbprint — and the issuer's server nonce if it
/// requires one (§9).
fn prove(
    cfg: &FilterConfig,
    issuer: &Issuer,
    nonce_secret: Option<&[u8]>,
    req: &Request<'_>,
    how: Presenting<'_>,
    bound_to: Option<&str>,
    now_ms: u64,
) -> Result<dpop::Proof, Denial> {
    let token = how.token;
    let text = extract::dpop_proof(req.sender.dpop)
        .map_err(Denial::InvalidDpopProof)?
        .ok_or(Denial::InvalidDpopProof(NO_PROOF))?;
    let external = cfg
        .sender_constraint
        .external_origin
        .as_ref()
        .map(|o| o.origin.as_str());
    let uri = dpop::request_uri(
        req.sender.scheme,
        req.facts.authority,
        req.facts.path,
        external,
    )
    .ok_or(Denial::InvalidRequest(NO_URI))?;
    let expected = Expected {
        method: req.facts.method,
        uri: &uri,
        access_token: token,
        nonce: None,
        bound_to,
    };
    debug_assert_ne!(now_ms, NO_CLOCK);
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let proof = dpop::check(text, &expected, &issuer.dpop.policy, now_s).map_err(|e| match e {
        dpop::ProofError::OtherKey => Denial::Binding(BindingError::WrongKey),
        e => Denial::InvalidDpopProof(e.describe()),
    })?;
    if issuer.dpop.require_nonce {
        let Some(secret) = nonce_secret else {
            return Err(Denial::DpopUnavailable);
        };
        let now_s = now_ms / 1000;
        let current = proof
            .nonce
            .as_deref()
            .is_some_and(|n| nonce::accepts(secret, n, now_s, nonce::ROTATION_S));
        if !current {
            return Err(match nonce::issue(secret, now_s, nonce::ROTATION_S) {
                Some(fresh) => Denial::UseDpopNonce(fresh),
                None => Denial::DpopUnavailable,
            });
        }
    }
    Ok(proof)
}
