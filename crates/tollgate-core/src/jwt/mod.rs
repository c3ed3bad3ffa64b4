//! JWT access tokens: peek at the unverified `iss`, then verify against one key.
//!
//! Decides: which algorithm a token may use (the token's `alg` must be in the issuer's allowed
//! set AND fit the key's type and the key's own `alg`), whether the signature holds (jwt-compact),
//! and the time, issuer, audience and `typ` checks. Claims are only reachable through
//! [`VerifiedClaims`], which only [`verify`] builds. Never trusts the header to choose the key
//! type; never accepts `none` or HMAC (there is no code path for them).

use jwt_compact::{Algorithm, AlgorithmExt, Token, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::audience;
use crate::crypto::rsa::{Hash, Padding, RsaAlg};
use crate::crypto::{EdDsa, Es256, Es384};
use crate::key::{Alg, AlgSet, Key, KeyMaterial};

/// Why a JWT was refused. Every variant becomes `401 invalid_token` (see `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts with JSON header and payload.
    Malformed,
    /// The header has `crit`: it names extensions that must be understood, and Tollgate
    /// understands none (RFC 7515 §4.1.11).
    CriticalHeader,
    /// No string `iss` claim to pick an issuer with.
    MissingIssuer,
    /// `alg` is not one Tollgate verifies (`none`, `HS256`, unknown names).
    UnsupportedAlg,
    /// `alg` is not in this issuer's `algorithms`.
    AlgNotAllowed,
    /// The issuer publishes no key with the token's `kid` (or none fitting a kid-less token).
    UnknownKey,
    /// The key's type or declared `alg` does not fit the token's `alg`.
    KeyAlgMismatch,
    BadSignature,
    /// `typ` is not `at+jwt` while the issuer requires RFC 9068 access tokens.
    NotAccessToken,
    MissingExp,
    Expired,
    NotYetValid,
    IssuedInFuture,
    IssuerMismatch,
    AudienceMismatch,
}

impl JwtError {
    /// Short, constant text for logs, `error_description` and metric names; never token data.
    pub fn describe(self) -> &'static str {
        match self {
            JwtError::Malformed => "the token is not a well-formed JWT",
            JwtError::CriticalHeader => "the token requires an unsupported header extension",
            JwtError::MissingIssuer => "the token has no issuer",
            JwtError::UnsupportedAlg => "the token's signature algorithm is not accepted",
            JwtError::AlgNotAllowed => {
                "the token's signature algorithm is not allowed for its issuer"
            }
            JwtError::UnknownKey => "the token's signing key is not published by its issuer",
            JwtError::KeyAlgMismatch => "the token's algorithm does not match its key",
            JwtError::BadSignature => "the token's signature is invalid",
            JwtError::NotAccessToken => "the token is not an access token (typ at+jwt)",
            JwtError::MissingExp => "the token has no expiry",
            JwtError::Expired => "the token has expired",
            JwtError::NotYetValid => "the token is not valid yet",
            JwtError::IssuedInFuture => "the token was issued in the future",
            JwtError::IssuerMismatch => "the token's issuer does not match",
            JwtError::AudienceMismatch => "the token's audience is not accepted",
        }
    }

    /// Metric-name suffix.
    pub fn code(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::CriticalHeader => "critical_header",
            JwtError::MissingIssuer => "missing_issuer",
            JwtError::UnsupportedAlg => "unsupported_alg",
            JwtError::AlgNotAllowed => "alg_not_allowed",
            JwtError::UnknownKey => "unknown_key",
            JwtError::KeyAlgMismatch => "key_alg_mismatch",
            JwtError::BadSignature => "bad_signature",
            JwtError::NotAccessToken => "not_access_token",
            JwtError::MissingExp => "missing_exp",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::IssuerMismatch => "issuer_mismatch",
            JwtError::AudienceMismatch => "audience_mismatch",
        }
    }
}

/// A parsed but unverified token: what routing to an issuer may look at, and nothing more.
pub struct Peeked<'a> {
    token: Untrusted<'a>,
    iss: String,
}

/// The header members Tollgate reads besides jwt-compact's standard ones.
#[derive(Debug, Clone, Deserialize)]
struct HeaderExtra {
    #[serde(default)]
    crit: Option<Value>,
}

type Untrusted<'a> = UntrustedToken<'a, HeaderExtra>;

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<Value>,
}

impl<'a> Peeked<'a> {
    /// The unverified `iss`, used only to choose which issuer's keys to verify with.
    pub fn iss(&self) -> &str {
        &self.iss
    }
    pub fn kid(&self) -> Option<&str> {
        self.token.header().key_id.as_deref()
    }
    /// The token's `alg`, if it is one Tollgate knows.
    pub fn alg(&self) -> Result<Alg, JwtError> {
        Alg::from_name(self.token.algorithm()).ok_or(JwtError::UnsupportedAlg)
    }
}

/// Parses a compact JWS far enough to read `iss`, `kid` and `alg`. No trust is implied.
pub fn peek(token: &str) -> Result<Peeked<'_>, JwtError> {
    let token = Untrusted::try_from(token).map_err(|_| JwtError::Malformed)?;
    if token.header().other_fields.crit.is_some() {
        return Err(JwtError::CriticalHeader);
    }
    let claims = token
        .deserialize_claims_unchecked::<IssOnly>()
        .map_err(|_| JwtError::Malformed)?;
    match claims.custom.iss {
        Some(Value::String(iss)) => Ok(Peeked { token, iss }),
        _ => Err(JwtError::MissingIssuer),
    }
}

/// What one issuer requires of its tokens (a view of the issuer's configuration).
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub algorithms: AlgSet,
    pub clock_skew_s: u64,
    pub require_at_jwt: bool,
}

/// Claims of a token whose signature, time window, issuer, audience and type all checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    /// The whole payload, including `exp` / `nbf` / `iat` as integers.
    pub claims: Map<String, Value>,
    /// Expiry, seconds since the epoch.
    pub exp_s: i64,
}

/// Checks the algorithm policy before any cryptography: the token's `alg` must be allowed for
/// the issuer and fit `key`.
pub fn check_alg(alg: Alg, key: &Key, allowed: AlgSet) -> Result<(), JwtError> {
    if !allowed.contains(alg) {
        return Err(JwtError::AlgNotAllowed);
    }
    if key.material.family() != alg.family() || key.alg.is_some_and(|pinned| pinned != alg) {
        return Err(JwtError::KeyAlgMismatch);
    }
    Ok(())
}

/// Verifies `peeked` with `key` and checks it against `expect` at `now_s` (seconds since epoch).
pub fn verify(
    peeked: &Peeked<'_>,
    key: &Key,
    expect: &Expectations<'_>,
    now_s: i64,
) -> Result<VerifiedClaims, JwtError> {
    let alg = peeked.alg()?;
    check_alg(alg, key, expect.algorithms)?;
    let token = verify_signature(alg, &key.material, &peeked.token)?;
    let (header, claims) = token.into_parts();

    if expect.require_at_jwt && !is_at_jwt(header.token_type.as_deref()) {
        return Err(JwtError::NotAccessToken);
    }
    let skew = i64::try_from(expect.clock_skew_s).unwrap_or(i64::MAX);
    let exp_s = claims
        .expiration
        .map(|t| t.timestamp())
        .ok_or(JwtError::MissingExp)?;
    if now_s > exp_s.saturating_add(skew) {
        return Err(JwtError::Expired);
    }
    let nbf_s = claims.not_before.map(|t| t.timestamp());
    if nbf_s.is_some_and(|nbf| nbf > now_s.saturating_add(skew)) {
        return Err(JwtError::NotYetValid);
    }
    let iat_s = claims.issued_at.map(|t| t.timestamp());
    if iat_s.is_some_and(|iat| iat > now_s.saturating_add(skew)) {
        return Err(JwtError::IssuedInFuture);
    }

    let mut payload: Map<String, Value> = claims.custom;
    if payload.get("iss").and_then(Value::as_str) != Some(expect.issuer) {
        return Err(JwtError::IssuerMismatch);
    }
    if !audience::accepts(payload.get("aud"), expect.audiences) {
        return Err(JwtError::AudienceMismatch);
    }
    payload.insert("exp".into(), exp_s.into());
    if let Some(nbf) = nbf_s {
        payload.insert("nbf".into(), nbf.into());
    }
    if let Some(iat) = iat_s {
        payload.insert("iat".into(), iat.into());
    }
    Ok(VerifiedClaims {
        claims: payload,
        exp_s,
    })
}

/// RFC 9068 §2.1: `typ` is `at+jwt`; the `application/` prefix is allowed (RFC 7515 §4.1.9).
/// Media types compare case-insensitively, the `application/` part included.
fn is_at_jwt(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    })
}

type Payload = Map<String, Value>;

fn verify_signature(
    alg: Alg,
    material: &KeyMaterial,
    token: &Untrusted<'_>,
) -> Result<Token<Payload, HeaderExtra>, JwtError> {
    let outcome = match (alg, material) {
        (Alg::Rs256, KeyMaterial::Rsa(key)) => {
            with(rsa_alg(Hash::Sha256, Padding::Pkcs1v15), key, token)
        }
        (Alg::Rs384, KeyMaterial::Rsa(key)) => {
            with(rsa_alg(Hash::Sha384, Padding::Pkcs1v15), key, token)
        }
        (Alg::Rs512, KeyMaterial::Rsa(key)) => {
            with(rsa_alg(Hash::Sha512, Padding::Pkcs1v15), key, token)
        }
        (Alg::Ps256, KeyMaterial::Rsa(key)) => {
            with(rsa_alg(Hash::Sha256, Padding::Pss), key, token)
        }
        (Alg::Ps384, KeyMaterial::Rsa(key)) => {
            with(rsa_alg(Hash::Sha384, Padding::Pss), key, token)
        }
        (Alg::Ps512, KeyMaterial::Rsa(key)) => {
            with(rsa_alg(Hash::Sha512, Padding::Pss), key, token)
        }
        (Alg::Es256, KeyMaterial::P256(key)) => with(Es256, key, token),
        (Alg::Es384, KeyMaterial::P384(key)) => with(Es384, key, token),
        (Alg::EdDsa, KeyMaterial::Ed25519(key)) => with(EdDsa, key, token),
        _ => return Err(JwtError::KeyAlgMismatch),
    };
    outcome.map_err(|err| match err {
        jwt_compact::ValidationError::MalformedClaims(_) => JwtError::Malformed,
        _ => JwtError::BadSignature,
    })
}

/// The payload of a compact JWS whose signature `key` verifies under `alg`, after the same
/// algorithm policy as access tokens ([`check_alg`] with `allowed`; the JWS must say `alg`
/// itself; `crit` is refused). No claim is checked: for proofs whose claims the caller checks
/// ([`crate::dpop`]). `iat` is put back into the payload as an integer.
pub fn verify_jws(
    token: &str,
    alg: Alg,
    key: &Key,
    allowed: AlgSet,
) -> Result<Map<String, Value>, JwtError> {
    let untrusted = Untrusted::try_from(token).map_err(|_| JwtError::Malformed)?;
    if untrusted.header().other_fields.crit.is_some() {
        return Err(JwtError::CriticalHeader);
    }
    if Alg::from_name(untrusted.algorithm()) != Some(alg) {
        return Err(JwtError::UnsupportedAlg);
    }
    check_alg(alg, key, allowed)?;
    let (_, claims) = verify_signature(alg, &key.material, &untrusted)?.into_parts();
    let mut payload = claims.custom;
    if let Some(iat) = claims.issued_at {
        payload.insert("iat".into(), iat.timestamp().into());
    }
    Ok(payload)
}

fn rsa_alg(hash: Hash, padding: Padding) -> RsaAlg {
    RsaAlg { hash, padding }
}

fn with<A: Algorithm>(
    alg: A,
    key: &A::VerifyingKey,
    token: &Untrusted<'_>,
) -> Result<Token<Payload, HeaderExtra>, jwt_compact::ValidationError> {
    alg.validator::<Payload>(key).validate(token)
}

#[cfg(test)]
mod tests;
