//! `ES384` (ECDSA on P-384 with SHA-384) for jwt-compact, which ships ES256 but not ES384.
//!
//! This is glue, not cryptography: it plugs the RustCrypto `p384` crate (the sibling of the
//! `p256` crate jwt-compact itself uses for ES256) into jwt-compact's public `Algorithm` trait.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

/// JWS signature: the fixed-width `r || s` encoding of RFC 7518 §3.4 (2 x 48 bytes).
#[derive(Debug, Clone)]
pub struct Es384Signature(Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(96);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::try_from(slice)
            .map(Self)
            .map_err(|err| anyhow::anyhow!(err))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

/// The `ES384` algorithm.
#[derive(Debug, Default, Clone, Copy)]
pub struct Es384;

impl Algorithm for Es384 {
    type SigningKey = SigningKey;
    type VerifyingKey = VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, signing_key: &SigningKey, message: &[u8]) -> Es384Signature {
        Es384Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Es384Signature,
        verifying_key: &VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}
