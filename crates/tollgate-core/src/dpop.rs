//! DPoP proofs at the resource (RFC 9449 §4.3, §7): whether one `DPoP` header value proves
//! possession of the key an access token is bound to, for this request.
//!
//! Pure: the caller gives the proof, the request (method, the URI it was sent to, the access
//! token) and the clock, and gets the proof's `jti` (for the replay store), its key's RFC 7638
//! thumbprint (to compare with the token's `cnf.jkt`) and its `iat`, or the reason it was
//! refused. The replay store, the server nonce and the binding to the token are the caller's.
//!
//! The algorithm comes from the configured set and the key, never from the proof alone: `none`
//! and HMAC have no code path ([`crate::jwt::verify_jws`]), and the `jwk` must be a public key
//! of the family the `alg` names.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::key::{Alg, AlgSet, Key};

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method (`htm`), as sent.
    pub method: &'a str,
    /// The URI the request was sent to (`htu`), rebuilt by the caller from `:scheme`,
    /// `:authority` and `:path` or a configured external URL; its query and fragment are
    /// ignored.
    pub uri: &'a str,
    /// The access token the request presents (`ath`).
    pub access_token: &'a str,
    /// The server nonce the proof must carry, when one is required.
    pub nonce: Option<&'a str>,
    /// The thumbprint the proof's key must have (the token's `cnf.jkt`): checked before the
    /// signature, so a proof by any other key costs no verification (and no key table).
    pub bound_to: Option<&'a str>,
}

/// The configured rules.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The proof algorithms accepted (asymmetric only: the key set's `Alg`s).
    pub algorithms: AlgSet,
    /// How far `iat` may be from now, either way, in seconds.
    pub iat_window_s: u64,
}

/// A proof that holds for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Its `jti`: a replay is a second proof with the same `jti` inside the window.
    pub jti: String,
    /// base64url SHA-256 thumbprint of its `jwk` (RFC 7638): the token's `cnf.jkt` must equal it.
    pub jkt: String,
    /// Its `iat`, seconds since the epoch.
    pub iat: i64,
    /// Its `nonce`, if it has one (checked by the caller when a server nonce is required).
    pub nonce: Option<String>,
}

/// Why a proof was refused: each is `401` with `error="invalid_dpop_proof"` and a fixed
/// description that never echoes the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// Not a compact JWS with a JSON header.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    NotDpop,
    /// `alg` is not one of the configured asymmetric algorithms.
    AlgNotAllowed,
    /// `jwk` is missing, not a usable public key, or not of the family `alg` names.
    BadKey,
    /// `jwk` carries private key members.
    PrivateKey,
    /// The signature does not verify with `jwk`.
    BadSignature,
    /// `jti`, `htm`, `htu` or `iat` is missing or of the wrong type (or `jti` is too long).
    MissingClaim,
    /// `htm` is not the request's method.
    WrongMethod,
    /// `htu` is not the request's URI.
    WrongUri,
    /// `iat` is outside the window.
    Stale,
    /// `ath` is missing or is not the hash of the presented access token.
    WrongToken,
    /// The server nonce is missing or not the current one.
    WrongNonce,
    /// The proof's key is not [`Expected::bound_to`] (a binding error, not a bad proof).
    OtherKey,
}

impl ProofError {
    /// The fixed `error_description`.
    pub fn describe(self) -> &'static str {
        match self {
            ProofError::Malformed => "the DPoP proof is not a JWS",
            ProofError::NotDpop => "the DPoP proof's typ is not dpop+jwt",
            ProofError::AlgNotAllowed => "the DPoP proof's algorithm is not accepted",
            ProofError::BadKey => "the DPoP proof's jwk is not a usable public key",
            ProofError::PrivateKey => "the DPoP proof's jwk holds a private key",
            ProofError::BadSignature => "the DPoP proof's signature does not verify",
            ProofError::MissingClaim => "the DPoP proof lacks jti, htm, htu or iat",
            ProofError::WrongMethod => "the DPoP proof is for another method",
            ProofError::WrongUri => "the DPoP proof is for another URI",
            ProofError::Stale => "the DPoP proof's iat is outside the accepted window",
            ProofError::WrongToken => "the DPoP proof's ath does not match the access token",
            ProofError::WrongNonce => "the DPoP proof lacks the current nonce",
            ProofError::OtherKey => "the DPoP proof's key is not the one the token is bound to",
        }
    }
}

/// The longest `jti` accepted: a replay store keeps a hash of it, but a bounded value keeps
/// hashing and logging cheap.
pub const MAX_JTI_LEN: usize = 256;

/// Members that only a private JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks `proof` (one `DPoP` header value) against the request at `now_s`.
pub fn check(
    proof: &str,
    expected: &Expected<'_>,
    policy: &Policy,
    now_s: i64,
) -> Result<Proof, ProofError> {
    let header = header_of(proof)?;
    let typ = header.get("typ").and_then(Value::as_str);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
        return Err(ProofError::NotDpop);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .filter(|a| policy.algorithms.contains(*a))
        .ok_or(ProofError::AlgNotAllowed)?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(ProofError::BadKey);
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::PrivateKey);
    }
    let jkt = thumbprint(jwk).ok_or(ProofError::BadKey)?;
    if expected.bound_to.is_some_and(|bound| bound != jkt) {
        return Err(ProofError::OtherKey);
    }
    let (key, known) = match recent_key(jwk) {
        Some(key) => (key, true),
        None => (
            crate::jwks::public_key(&Value::Object(jwk.clone())).ok_or(ProofError::BadKey)?,
            false,
        ),
    };
    if key.material.family() != alg.family() {
        return Err(ProofError::BadKey);
    }
    let claims =
        crate::jwt::verify_jws(proof, alg, &key, policy.algorithms).map_err(|e| match e {
            crate::jwt::JwtError::BadSignature => ProofError::BadSignature,
            crate::jwt::JwtError::Malformed => ProofError::Malformed,
            _ => ProofError::BadKey,
        })?;
    if !known {
        remember_key(jwk, key);
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let (Some(jti), Some(htm), Some(htu), Some(iat)) = (
        text("jti"),
        text("htm"),
        text("htu"),
        claims.get("iat").and_then(Value::as_i64),
    ) else {
        return Err(ProofError::MissingClaim);
    };
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ProofError::MissingClaim);
    }
    if htm != expected.method {
        return Err(ProofError::WrongMethod);
    }
    if !same_uri(htu, expected.uri) {
        return Err(ProofError::WrongUri);
    }
    let window = i64::try_from(policy.iat_window_s).unwrap_or(i64::MAX);
    if iat < now_s.saturating_sub(window) || iat > now_s.saturating_add(window) {
        return Err(ProofError::Stale);
    }
    if text("ath") != Some(ath(expected.access_token).as_str()) {
        return Err(ProofError::WrongToken);
    }
    if let Some(nonce) = expected.nonce {
        if text("nonce") != Some(nonce) {
            return Err(ProofError::WrongNonce);
        }
    }
    Ok(Proof {
        jti: jti.to_owned(),
        jkt,
        iat,
        nonce: text("nonce").map(str::to_owned),
    })
}

/// How many proof keys `remember_key` holds.
pub const RECENT_KEYS: usize = 32;

/// The keys of the last [`RECENT_KEYS`] distinct proof keys that verified a proof, with their
/// JWK, most recent first. A DPoP client signs every proof with the same key, and the ECDSA and
/// Ed25519 verifiers build a table of multiples of a key the first time they verify with it
/// (~5 ms in V8 for P-256, `crate::crypto::ecdsa_math`; ~0.4 ms for Ed25519,
/// `crate::crypto::ed25519_math`) and keep it only while the key is held: a key dropped with
/// its request had its table built again on every request (bench/run measured ~5.5 ms of CPU
/// per DPoP request, against ~0.5 ms for a whole cold ES256 token). Held here, a key's table
/// (~100 KB for P-256, 130 KB for Ed25519) lives while it is among the last [`RECENT_KEYS`]
/// used (at most ~4 MB), per VM, so per worker: a worker that serves more DPoP clients at once
/// than that rebuilds a client's table when its turn comes again. Only keys that tokens are
/// bound to get here (the thumbprint is checked against `cnf.jkt` before the signature). The
/// cache is keyed by the whole JWK, so a proof finds the very key parsing its JWK would give,
/// and nothing is accepted that parsing would refuse.
static RECENT: Mutex<VecDeque<(Map<String, Value>, Key)>> = Mutex::new(VecDeque::new());

/// The key of `jwk` if it verified a recent proof (and it moves to the front).
fn recent_key(jwk: &Map<String, Value>) -> Option<Key> {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    let at = recent.iter().position(|(known, _)| known == jwk)?;
    let entry = recent.remove(at)?;
    let key = entry.1.clone();
    recent.push_front(entry);
    Some(key)
}

/// Holds `key` (of `jwk`, which just verified a proof) among the recent proof keys.
fn remember_key(jwk: &Map<String, Value>, key: Key) {
    remember_in(
        &mut RECENT.lock().unwrap_or_else(PoisonError::into_inner),
        jwk,
        key,
    );
}

/// `key` first in `recent`, which keeps at most [`RECENT_KEYS`] keys, one per JWK.
fn remember_in(
    recent: &mut VecDeque<(Map<String, Value>, Key)>,
    jwk: &Map<String, Value>,
    key: Key,
) {
    recent.retain(|(known, _)| known != jwk);
    recent.push_front((jwk.clone(), key));
    recent.truncate(RECENT_KEYS);
}

/// The JOSE header of a compact JWS, as a JSON object.
fn header_of(proof: &str) -> Result<Map<String, Value>, ProofError> {
    let mut parts = proof.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| ProofError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)
}

/// The URI a proof's `htu` must name, without query: the configured external origin (TLS
/// ended in front of Envoy) with the request's path, else `:scheme://:authority` and the path.
/// `None` when the parts do not make an http(s) URI.
pub fn request_uri(
    scheme: &str,
    authority: &str,
    path: &str,
    external_origin: Option<&str>,
) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return None;
    }
    let text = match external_origin {
        Some(origin) => format!("{}{path}", origin.trim_end_matches('/')),
        None if matches!(scheme, "http" | "https") && !authority.is_empty() => {
            format!("{scheme}://{authority}{path}")
        }
        None => return None,
    };
    comparable(&text)
}

/// The `DPoP` challenge (RFC 9449 §7.1): the accepted algorithms, and the error if there is
/// one; `error` is `invalid_token` or `invalid_dpop_proof`, `description` a fixed text.
pub fn challenge(algorithms: AlgSet, error: Option<(&str, &str)>) -> String {
    let algs: Vec<&str> = Alg::ALL
        .into_iter()
        .filter(|a| algorithms.contains(*a))
        .map(Alg::name)
        .collect();
    let mut v = format!("DPoP algs=\"{}\"", algs.join(" "));
    if let Some((code, description)) = error {
        v.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    v
}

/// `ath`: base64url(SHA-256(the access token's ASCII)), RFC 9449 §4.2.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over its required members, in
/// lexicographic order, without whitespace; base64url. `None` for a key type it does not
/// define here (RSA, EC and OKP are) or a required member that is not a string.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = Map::new();
    for m in members {
        canonical.insert(
            (*m).to_owned(),
            Value::String(jwk.get(*m)?.as_str()?.to_owned()),
        );
    }
    // serde_json's Map is ordered by key and `to_string` writes no whitespace.
    let text = Value::Object(canonical).to_string();
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

/// Whether `htu` names the same URI as `uri`, both without query and fragment, after the
/// normalisation RFC 9449 §4.3 asks for (RFC 3986 §6.2.2 and §6.2.3: case of the scheme and
/// host, the default port, dot segments, an empty path, percent-encoding case), as the WHATWG
/// parser does it.
pub fn same_uri(htu: &str, uri: &str) -> bool {
    match (comparable(htu), comparable(uri)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn comparable(text: &str) -> Option<String> {
    let mut url = Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    Some(upper_percent_escapes(url.as_str()))
}

/// `%2f` and `%2F` are the same octet (RFC 3986 §6.2.2.1); the WHATWG parser keeps escapes as
/// written, so their hex digits are made upper case here.
fn upper_percent_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut left = 0usize;
    for c in text.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub mod nonce;

#[cfg(test)]
mod tests;
