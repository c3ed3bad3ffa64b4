//! `ES256` and `ES384` for jwt-compact, through its public `Algorithm` trait, verified by
//! [`super::ecdsa_math`] (jwt-compact's own `Es256` is not used; it has no `ES384`).
//!
//! Tollgate only verifies. The signing key types exist for the unit tests, which mint tokens
//! with the RustCrypto `p256` / `p384` signers (this crate's own tests, and tollgate-core's
//! through the `test-support` feature); outside tests they are uninhabited.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p256::NistP256;
use p384::NistP384;

use super::ecdsa_math::{EcdsaCurve, Signature, VerifyingKey};

/// JWS signature: the fixed-width `r || s` encoding of RFC 7518 §3.4.
#[derive(Debug, Clone)]
pub struct EsSignature<C: EcdsaCurve>(Signature<C>);

impl<C: EcdsaCurve> AlgorithmSignature for EsSignature<C> {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(Signature::<C>::LENGTH);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::from_p1363(slice)
            .map(Self)
            .ok_or_else(|| anyhow::anyhow!("malformed ECDSA signature"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_p1363())
    }
}

/// A key that signs `ES*` tokens (only the unit tests have one).
pub trait EsSigner<C: EcdsaCurve> {
    fn sign_es(&self, message: &[u8]) -> EsSignature<C>;
}

/// What Tollgate signs with outside tests: no value of this type exists (also `EdDSA`'s).
#[derive(Debug)]
pub enum NoSigningKey {}

#[cfg(not(any(test, feature = "test-support")))]
impl<C: EcdsaCurve> EsSigner<C> for NoSigningKey {
    fn sign_es(&self, _message: &[u8]) -> EsSignature<C> {
        match *self {}
    }
}

#[cfg(any(test, feature = "test-support"))]
// Test-only code (the feature is a dev-dependency's), where a panic is a test failure.
#[allow(clippy::expect_used)]
mod signers {
    use p256::NistP256;
    use p384::NistP384;

    use super::{EsSignature, EsSigner, Signature};

    impl EsSigner<NistP256> for p256::ecdsa::SigningKey {
        fn sign_es(&self, message: &[u8]) -> EsSignature<NistP256> {
            use p256::ecdsa::signature::Signer;
            let signature: p256::ecdsa::Signature = self.sign(message);
            EsSignature(Signature::from_p1363(&signature.to_bytes()).expect("r, s in range"))
        }
    }

    impl EsSigner<NistP384> for p384::ecdsa::SigningKey {
        fn sign_es(&self, message: &[u8]) -> EsSignature<NistP384> {
            use p384::ecdsa::signature::Signer;
            let signature: p384::ecdsa::Signature = self.sign(message);
            EsSignature(Signature::from_p1363(&signature.to_bytes()).expect("r, s in range"))
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
type P256SigningKey = p256::ecdsa::SigningKey;
#[cfg(not(any(test, feature = "test-support")))]
type P256SigningKey = NoSigningKey;
#[cfg(any(test, feature = "test-support"))]
type P384SigningKey = p384::ecdsa::SigningKey;
#[cfg(not(any(test, feature = "test-support")))]
type P384SigningKey = NoSigningKey;

/// `ES256`: ECDSA on P-256 with SHA-256.
#[derive(Debug, Default, Clone, Copy)]
pub struct Es256;

/// `ES384`: ECDSA on P-384 with SHA-384.
#[derive(Debug, Default, Clone, Copy)]
pub struct Es384;

macro_rules! es_algorithm {
    ($alg:ty, $name:literal, $curve:ty, $signing_key:ty) => {
        impl Algorithm for $alg {
            type SigningKey = $signing_key;
            type VerifyingKey = VerifyingKey<$curve>;
            type Signature = EsSignature<$curve>;

            fn name(&self) -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn sign(&self, signing_key: &$signing_key, message: &[u8]) -> EsSignature<$curve> {
                signing_key.sign_es(message)
            }

            fn verify_signature(
                &self,
                signature: &EsSignature<$curve>,
                verifying_key: &VerifyingKey<$curve>,
                message: &[u8],
            ) -> bool {
                verifying_key.verify(message, &signature.0)
            }
        }
    };
}

es_algorithm!(Es256, "ES256", NistP256, P256SigningKey);
es_algorithm!(Es384, "ES384", NistP384, P384SigningKey);
