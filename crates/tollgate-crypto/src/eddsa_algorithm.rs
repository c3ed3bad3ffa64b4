//! `EdDSA` (Ed25519, RFC 8037) for jwt-compact, through its public `Algorithm` trait, verified by
//! [`super::ed25519_math`] (jwt-compact's own `Ed25519`, on ed25519-compact, is not used).
//!
//! Tollgate only verifies here (the gateway's own tokens are signed by ed25519-dalek in
//! tollgate-core's `sign`). The signing key type exists for this crate's unit tests, which mint
//! tokens with ed25519-dalek; outside them it is uninhabited.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};

use super::ed25519_math::{Signature, VerifyingKey};

/// JWS signature: the 64-byte `R || S` of RFC 8032 (RFC 8037 §3.1), `S` canonical.
#[derive(Debug, Clone)]
pub struct EdSignature(Signature);

impl AlgorithmSignature for EdSignature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(Signature::LENGTH);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::from_bytes(slice)
            .map(Self)
            .ok_or_else(|| anyhow::anyhow!("malformed Ed25519 signature"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

#[cfg(test)]
type SigningKey = ed25519_dalek::SigningKey;
#[cfg(not(test))]
type SigningKey = crate::es_algorithm::NoSigningKey;

/// `EdDSA` with Ed25519 (the only curve Tollgate accepts under that name).
#[derive(Debug, Default, Clone, Copy)]
pub struct EdDsa;

impl Algorithm for EdDsa {
    type SigningKey = SigningKey;
    type VerifyingKey = VerifyingKey;
    type Signature = EdSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("EdDSA")
    }

    #[cfg(test)]
    // Test-only: ed25519-dalek's signature always has a canonical S.
    #[allow(clippy::expect_used)]
    fn sign(&self, signing_key: &SigningKey, message: &[u8]) -> EdSignature {
        use ed25519_dalek::Signer as _;
        let signature = signing_key.sign(message);
        EdSignature(Signature::from_bytes(&signature.to_bytes()).expect("S is canonical"))
    }

    #[cfg(not(test))]
    fn sign(&self, signing_key: &SigningKey, _message: &[u8]) -> EdSignature {
        match *signing_key {}
    }

    fn verify_signature(
        &self,
        signature: &EdSignature,
        verifying_key: &VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0)
    }
}
