//! JSON Web Key Sets: parsing an issuer's published keys into verifying keys ([`crate::key`]),
//! and the keys each worker holds ([`KeyRing`]). When a JWKS is fetched is [`crate::refresh`]'s.
//!
//! Decides which published keys are usable for signature verification: public keys of the
//! supported types only (RSA >= 2048 bits, P-256, P-384, Ed25519), `use` absent or `sig`, an
//! `alg` (if declared) that Tollgate verifies. Symmetric (`oct`) keys are never loaded: a JWKS
//! is public, so an HMAC key in it would let anyone forge tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::crypto::rsa::RsaPublicKey;
use crate::crypto::{ecdsa_math, ed25519_math};
use crate::key::{Alg, Key, KeyId, KeyMaterial};

/// Minimum RSA modulus size accepted (NIST SP 800-131A; RFC 7518 §3.3 requires 2048).
pub const MIN_RSA_BITS: usize = 2048;
/// Maximum RSA modulus size accepted: bounds the cost of one verification (as the `rsa` crate's
/// default limit did).
pub const MAX_RSA_BITS: usize = 4096;

/// The usable keys of one issuer.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

/// Why a JWKS document as a whole was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    NotAJwks,
    /// Parsed, but not one key was usable; the counts say how many were skipped.
    NoUsableKeys { skipped: usize },
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::NotAJwks => write!(f, "not a JWKS document (expected {{\"keys\": [...]}})"),
            JwksError::NoUsableKeys { skipped } => {
                write!(f, "no usable signature key ({skipped} skipped)")
            }
        }
    }
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<Value>,
}

/// The JWK members Tollgate reads; everything else (x5c, key_ops, ...) is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the usable keys. Returns the set and how many keys were
    /// skipped (unsupported type, encryption keys, weak RSA, malformed).
    pub fn parse(doc: &[u8]) -> Result<(KeySet, usize), JwksError> {
        let doc: JwksDoc = serde_json::from_slice(doc).map_err(|_| JwksError::NotAJwks)?;
        Self::from_values(&doc.keys)
    }

    /// Like [`KeySet::parse`] for an already parsed `{"keys": [...]}` value.
    pub fn from_value(doc: &Value) -> Result<(KeySet, usize), JwksError> {
        match doc.get("keys").and_then(Value::as_array) {
            Some(keys) => Self::from_values(keys),
            None => Err(JwksError::NotAJwks),
        }
    }

    fn from_values(values: &[Value]) -> Result<(KeySet, usize), JwksError> {
        let keys: Vec<Key> = values.iter().filter_map(parse_key).collect();
        let skipped = values.len() - keys.len();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped });
        }
        Ok((KeySet { keys }, skipped))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may have signed a token with this `kid` and `alg`. With a `kid`, only the key(s)
    /// with exactly that id; without one, every key of the algorithm's family.
    pub fn candidates<'s>(
        &'s self,
        kid: Option<&'s str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'s Key> + 's {
        self.keys.iter().filter(move |key| match kid {
            Some(kid) => key.kid.as_deref() == Some(kid),
            None => key.material.family() == alg.family(),
        })
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Whether the set still holds the key with this [`KeyId`] (a scan of a few integers: cheap
    /// enough for every cache hit).
    pub fn has_id(&self, id: KeyId) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }
}

/// The [`KeyId`] of a key of type `kty` with these public parameters (in a fixed order,
/// each length-prefixed, so no two different keys share the hashed bytes).
fn key_id(kty: &str, parts: &[&[u8]]) -> KeyId {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kty.as_bytes());
    for part in parts {
        h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut head = [0u8; 4];
    head.copy_from_slice(&digest[..4]);
    u32::from_le_bytes(head)
}

fn b64(field: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(field.as_deref()?).ok()
}

/// One public JWK as a verifying key, by the same rules as a key set's keys (`None`: not one
/// Tollgate can verify with). For keys that come with what they sign (a DPoP proof's `jwk`).
pub fn public_key(value: &Value) -> Option<Key> {
    parse_key(value)
}

fn parse_key(value: &Value) -> Option<Key> {
    let jwk: RawJwk = serde_json::from_value(value.clone()).ok()?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    // A declared alg Tollgate cannot verify (RSA-OAEP, HS256, ...) means "not for us".
    let alg = match jwk.alg.as_deref() {
        Some(name) => Some(Alg::from_name(name)?),
        None => None,
    };
    let (material, id) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let (n, e) = (b64(&jwk.n)?, b64(&jwk.e)?);
            let key = RsaPublicKey::new(&n, &e)?;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&key.bits()) {
                return None;
            }
            (KeyMaterial::Rsa(Box::new(key)), key_id("RSA", &[&n, &e]))
        }
        ("EC", Some("P-256")) => {
            let point = uncompressed_point(&b64(&jwk.x)?, &b64(&jwk.y)?, 32)?;
            let key = ecdsa_math::VerifyingKey::from_sec1_bytes(&point)?;
            (KeyMaterial::P256(key), key_id("EC P-256", &[&point]))
        }
        ("EC", Some("P-384")) => {
            let point = uncompressed_point(&b64(&jwk.x)?, &b64(&jwk.y)?, 48)?;
            let key = ecdsa_math::VerifyingKey::from_sec1_bytes(&point)?;
            (KeyMaterial::P384(key), key_id("EC P-384", &[&point]))
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(&jwk.x)?;
            let key = ed25519_math::VerifyingKey::from_bytes(&x)?;
            (KeyMaterial::Ed25519(key), key_id("OKP Ed25519", &[&x]))
        }
        _ => return None,
    };
    if alg.is_some_and(|a| a.family() != material.family()) {
        return None;
    }
    Some(Key {
        id,
        kid: jwk.kid,
        alg,
        material,
    })
}

/// SEC1 uncompressed encoding `04 || x || y`; coordinates must have exactly the curve's width.
fn uncompressed_point(x: &[u8], y: &[u8], width: usize) -> Option<Vec<u8>> {
    if x.len() != width || y.len() != width {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * width);
    point.push(4);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Some(point)
}

/// The keys one worker currently holds for every configured issuer.
#[derive(Debug, Default)]
pub struct KeyRing {
    slots: Vec<Option<Held>>,
}

/// A key set and the facts needed to judge it.
#[derive(Debug, Clone)]
pub struct Held {
    pub keys: KeySet,
    /// Last successful fetch (ms); `None` for keys written in the configuration (never stale).
    pub fetched_at: Option<u64>,
    /// The shared fetch generation these keys came from.
    pub generation: u64,
}

/// What a worker can verify an issuer's tokens with right now.
#[derive(Debug)]
pub enum KeysFor<'a> {
    Usable(&'a KeySet),
    /// Nothing fetched yet (or the last fetch is lost): wait for a fetch.
    Missing,
    /// Held keys are older than the issuer's `max_stale`.
    TooStale,
}

impl KeyRing {
    pub fn new(issuers: usize) -> KeyRing {
        KeyRing {
            slots: vec![None; issuers],
        }
    }

    pub fn set(&mut self, issuer: usize, held: Held) {
        if let Some(slot) = self.slots.get_mut(issuer) {
            *slot = Some(held);
        }
    }

    pub fn held(&self, issuer: usize) -> Option<&Held> {
        self.slots.get(issuer).and_then(Option::as_ref)
    }

    pub fn get(&self, issuer: usize, now: u64, max_stale_ms: u64) -> KeysFor<'_> {
        match self.held(issuer) {
            None => KeysFor::Missing,
            Some(h)
                if h.fetched_at
                    .is_some_and(|at| now.saturating_sub(at) > max_stale_ms) =>
            {
                KeysFor::TooStale
            }
            Some(h) => KeysFor::Usable(&h.keys),
        }
    }
}

#[cfg(test)]
mod tests;
