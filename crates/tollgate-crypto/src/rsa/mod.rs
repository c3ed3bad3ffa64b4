//! RSA signature verification for JWS: `RS256/384/512` (RSASSA-PKCS1-v1_5) and
//! `PS256/384/512` (RSASSA-PSS, MGF1 with the same hash, salt length = hash length, RFC 7518
//! §3.5), plugged into jwt-compact through its public `Algorithm` trait.
//!
//! Why not the `rsa` crate: its general-purpose bignums cost ~1 ms per verification inside V8
//! (64-bit-oriented arithmetic on a 32-bit engine). Verification needs only `s^e mod n` with a
//! public exponent, done here by `monty` (or `monty_simd`, its SIMD128 form, in wasm builds
//! with SIMD) with per-key constants, followed by the RFC 8017
//! encoding checks below. Both are tested against the Wycheproof vectors and against the `rsa`
//! crate in `tests.rs`.
//!
//! Encoding checks follow RFC 8017: PKCS#1 v1.5 re-encodes the expected block and compares it
//! whole (§8.2.2 step 3–4 — no parsing of attacker-controlled ASN.1); PSS is EMSA-PSS-VERIFY
//! (§9.1.2) step by step.

// The scalar arithmetic, and the same with wasm SIMD128 where the build enables it (the
// workspace's .cargo/config.toml does for the wasm targets; a build without it is the scalar
// path for engines without SIMD). Tests check the two against each other.
#[cfg(any(test, not(all(target_arch = "wasm32", target_feature = "simd128"))))]
mod monty;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod monty_simd;

use std::borrow::Cow;

use jwt_compact::{Algorithm, AlgorithmSignature};
use sha2::{Digest, Sha256, Sha384, Sha512};

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use monty::Modulus;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use monty_simd::Modulus;

/// Largest public exponent accepted (the `rsa` crate's limit; real keys use 65537).
const MAX_EXPONENT: u64 = (1 << 33) - 1;

/// Modulus sizes the arithmetic takes. The JWKS loader applies the stricter policy
/// (`jwks::MIN_RSA_BITS`, `jwks::MAX_RSA_BITS`).
const MIN_BITS: usize = 512;
const MAX_BITS: usize = 8192;

/// An RSA public key prepared for verification (Montgomery constants computed once).
#[derive(Clone)]
pub struct RsaPublicKey {
    modulus: Modulus,
    e: u64,
    /// Length of the modulus in bytes: every signature is exactly this long.
    size: usize,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaPublicKey")
            .field("bits", &self.bits())
            .field("e", &self.e)
            .finish()
    }
}

impl RsaPublicKey {
    /// From the big-endian modulus and exponent (a JWK's `n` and `e`). `None` for an even or
    /// out-of-range modulus, or an exponent that is even, below 3 or above 2^33 - 1.
    pub fn new(n_be: &[u8], e_be: &[u8]) -> Option<RsaPublicKey> {
        let e_be = &e_be[e_be.iter().position(|&b| b != 0)?..];
        if e_be.len() > 8 {
            return None;
        }
        let mut e_bytes = [0u8; 8];
        e_bytes[8 - e_be.len()..].copy_from_slice(e_be);
        let e = u64::from_be_bytes(e_bytes);
        if e < 3 || e % 2 == 0 || e > MAX_EXPONENT {
            return None;
        }
        let modulus = Modulus::new(n_be)?;
        let bits = modulus.bits();
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return None;
        }
        Some(RsaPublicKey {
            modulus,
            e,
            size: bits.div_ceil(8),
        })
    }

    pub fn bits(&self) -> usize {
        self.modulus.bits()
    }

    /// RSAVP1 (RFC 8017 §5.2.2) and I2OSP to `size` bytes: the encoded message inside a
    /// signature, or `None` for a signature of the wrong length or not below `n`.
    fn open(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.size {
            return None;
        }
        self.modulus.pow(signature, self.e, self.size)
    }

    /// RSASSA-PKCS1-v1_5 verification of `message` (RFC 8017 §8.2.2).
    pub fn verify_pkcs1v15(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.open(signature) else {
            return false;
        };
        let digest = hash.digest(&[message]);
        let prefix = hash.digest_info_prefix();
        // EM = 0x00 || 0x01 || PS (>= 8 x 0xff) || 0x00 || DigestInfo prefix || H
        let t_len = prefix.len() + digest.len();
        if em.len() < t_len + 11 {
            return false;
        }
        let ps_end = em.len() - t_len - 1;
        em[0] == 0x00
            && em[1] == 0x01
            && em[2..ps_end].iter().all(|&b| b == 0xff)
            && em[ps_end] == 0x00
            && em[ps_end + 1..ps_end + 1 + prefix.len()] == *prefix
            && em[ps_end + 1 + prefix.len()..] == *digest
    }

    /// RSASSA-PSS verification of `message` with MGF1(`hash`) and a salt of `salt_len` bytes
    /// (RFC 8017 §8.1.2, EMSA-PSS-VERIFY §9.1.2).
    pub fn verify_pss(
        &self,
        hash: Hash,
        salt_len: usize,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let Some(em) = self.open(signature) else {
            return false;
        };
        // emBits = modBits - 1; when that is a multiple of 8 the encoded message is one byte
        // shorter than the modulus, and the byte before it must be zero (I2OSP to emLen).
        let em_bits = self.bits() - 1;
        let em_len = em_bits.div_ceil(8);
        let em = match em.len() - em_len {
            0 => &em[..],
            1 if em[0] == 0 => &em[1..],
            _ => return false,
        };
        let m_hash = hash.digest(&[message]);
        let h_len = m_hash.len();
        if em_len < h_len + salt_len + 2 || em[em_len - 1] != 0xbc {
            return false;
        }
        let (masked_db, rest) = em.split_at(em_len - h_len - 1);
        let h = &rest[..h_len];
        let top_bits = 8 * em_len - em_bits;
        let top_mask = 0xffu8.checked_shr(top_bits as u32).unwrap_or(0);
        if masked_db[0] & !top_mask != 0 {
            return false;
        }
        let mut db = mgf1(hash, h, masked_db.len());
        for (d, m) in db.iter_mut().zip(masked_db) {
            *d ^= m;
        }
        db[0] &= top_mask;
        let ps_len = em_len - h_len - salt_len - 2;
        if db[..ps_len].iter().any(|&b| b != 0) || db[ps_len] != 0x01 {
            return false;
        }
        let salt = &db[ps_len + 1..];
        hash.digest(&[&[0u8; 8], &m_hash, salt]) == h
    }
}

/// The hash functions of the JWS RSA algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for part in parts {
                d.update(part);
            }
            d.finalize().to_vec()
        }
        match self {
            Hash::Sha256 => run::<Sha256>(parts),
            Hash::Sha384 => run::<Sha384>(parts),
            Hash::Sha512 => run::<Sha512>(parts),
        }
    }

    /// DER of `DigestInfo` up to the digest bytes (RFC 8017 §9.2 note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// MGF1 (RFC 8017 §B.2.1) with `hash`, `len` bytes of mask.
fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.output_len());
    let mut counter = 0u32;
    while out.len() < len {
        out.extend_from_slice(&hash.digest(&[seed, &counter.to_be_bytes()]));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// The padding scheme of a JWS RSA algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Pkcs1v15,
    /// Salt length = hash length (RFC 7518 §3.5).
    Pss,
}

/// A JWS RSA algorithm for jwt-compact: verification only.
#[derive(Debug, Clone, Copy)]
pub struct RsaAlg {
    pub hash: Hash,
    pub padding: Padding,
}

/// Tollgate never signs: the signing-key type has no values.
#[derive(Debug)]
pub enum NoSigningKey {}

/// The raw signature bytes (`I2OSP` of the signature integer, modulus length).
#[derive(Debug, Clone)]
pub struct RsaSignature(Vec<u8>);

impl AlgorithmSignature for RsaSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(RsaSignature(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

impl Algorithm for RsaAlg {
    type SigningKey = NoSigningKey;
    type VerifyingKey = RsaPublicKey;
    type Signature = RsaSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match (self.padding, self.hash) {
            (Padding::Pkcs1v15, Hash::Sha256) => "RS256",
            (Padding::Pkcs1v15, Hash::Sha384) => "RS384",
            (Padding::Pkcs1v15, Hash::Sha512) => "RS512",
            (Padding::Pss, Hash::Sha256) => "PS256",
            (Padding::Pss, Hash::Sha384) => "PS384",
            (Padding::Pss, Hash::Sha512) => "PS512",
        })
    }

    fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> RsaSignature {
        match *signing_key {}
    }

    fn verify_signature(
        &self,
        signature: &RsaSignature,
        key: &RsaPublicKey,
        message: &[u8],
    ) -> bool {
        match self.padding {
            Padding::Pkcs1v15 => key.verify_pkcs1v15(self.hash, message, &signature.0),
            Padding::Pss => {
                key.verify_pss(self.hash, self.hash.output_len(), message, &signature.0)
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// `a < b` for equal-length little-endian limbs (of any width): `monty` and `monty_simd`.
fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `-n0^-1 mod 2^32` for odd `n0` (Newton iteration: each step doubles the correct bits); its
/// low `w` bits are `-n0^-1 mod 2^w`.
fn neg_inverse_mod_2_32(n0: u32) -> u32 {
    let mut inv: u32 = 1; // correct to 1 bit for odd n0
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}
