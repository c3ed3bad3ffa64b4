//! The verifying keys Tollgate holds and the signature algorithms they serve: what a JWKS
//! loads into ([`crate::jwks`]) and what a token is verified with ([`crate::jwt`]).
//!
//! A key knows its family ([`KeyFamily`]), the algorithm it is pinned to when its JWK declares
//! one, and a short id of its public parameters ([`KeyId`]). The arithmetic behind each
//! family's verifying key is [`crate::crypto`]'s.

use crate::crypto::ecdsa_math::VerifyingKey;
use crate::crypto::ed25519_math;
use crate::crypto::rsa::RsaPublicKey;

/// Signature algorithms Tollgate verifies. HMAC and `none` are deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

/// The kind of public key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Alg {
    /// Every algorithm Tollgate verifies.
    pub const ALL: [Alg; 9] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
    ];

    /// The JOSE name (`alg` header value). Exact, case-sensitive match as RFC 7515 requires.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JOSE name, as written in a token's `alg` header and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The kind of key that verifies this algorithm.
    pub fn family(self) -> KeyFamily {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                KeyFamily::Rsa
            }
            Alg::Es256 => KeyFamily::P256,
            Alg::Es384 => KeyFamily::P384,
            Alg::EdDsa => KeyFamily::Ed25519,
        }
    }

    /// This algorithm's bit in an [`AlgSet`].
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of algorithms (an issuer's allow-list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    /// Adds `alg` to the set.
    pub fn insert(&mut self, alg: Alg) {
        self.0 |= alg.bit();
    }
    /// Whether `alg` is in the set.
    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }
    /// Whether the set holds no algorithm.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A verifying key, converted once when the key set loads.
#[derive(Clone)]
pub enum KeyMaterial {
    Rsa(Box<RsaPublicKey>),
    P256(VerifyingKey<p256::NistP256>),
    P384(VerifyingKey<p384::NistP384>),
    Ed25519(ed25519_math::VerifyingKey),
}

impl KeyMaterial {
    /// The kind of key this is.
    pub fn family(&self) -> KeyFamily {
        match self {
            KeyMaterial::Rsa(_) => KeyFamily::Rsa,
            KeyMaterial::P256(_) => KeyFamily::P256,
            KeyMaterial::P384(_) => KeyFamily::P384,
            KeyMaterial::Ed25519(_) => KeyFamily::Ed25519,
        }
    }
}

/// A short, stable id of a key's public parameters (the first 4 bytes of SHA-256 over the key
/// type and its parameters), computed once when the key set loads. A cache entry records the
/// id of the key that verified its token, so that the entry stops counting once the issuer no
/// longer publishes that key ([`crate::jwks::KeySet::has_id`]). 32 bits keep the entry small and quick to
/// decode; two keys of one issuer sharing an id (odds about 2^-32 per pair; the issuer makes
/// its keys, not the client) would only keep the dropped key's entries alive until they expire,
/// as before ids were recorded.
pub type KeyId = u32;

/// One usable key of a set.
#[derive(Clone)]
pub struct Key {
    /// See [`KeyId`].
    pub id: KeyId,
    /// The JWK's `kid`, which tokens name their key by.
    pub kid: Option<String>,
    /// The key's own `alg`, when the JWK declares one: the token's `alg` must then equal it.
    pub alg: Option<Alg>,
    /// The verifying key itself.
    pub material: KeyMaterial,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.material.family())
            .finish()
    }
}
