//! JWKS parsing (which published keys load, and why the others are skipped), key ids, `kid`
//! candidates and the per-worker key ring, against the fixed test keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::key::KeyFamily;
use crate::testdata::{b64, jwks, nested_json, TestKey, JSON_MAX_DEPTH};

fn parse(keys: &[Value]) -> Result<(KeySet, usize), JwksError> {
    let doc = jwks(keys).to_string();
    let by_bytes = KeySet::parse(doc.as_bytes()).map(|(s, n)| (s.len(), n));
    let by_value = KeySet::from_value(&jwks(keys));
    assert_eq!(
        by_bytes,
        by_value
            .as_ref()
            .map(|(s, n)| (s.len(), *n))
            .map_err(Clone::clone)
    );
    by_value
}

/// A P-256 JWK whose `x` lost its leading byte (31 bytes, as a careless encoder of a
/// coordinate with a leading zero would write it).
fn short_ec_coordinate_jwk() -> Value {
    let mut jwk = TestKey::P256.public_jwk_as("ec-short", None);
    let x = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["x"].as_str().unwrap(),
    )
    .unwrap();
    jwk["x"] = Value::from(b64(&x[1..]));
    jwk
}

#[test]
fn every_supported_key_type_loads() {
    let keys = [
        TestKey::RsaA.public_jwk(),
        TestKey::P256.public_jwk(),
        TestKey::P384.public_jwk(),
        TestKey::Ed25519.public_jwk(),
        TestKey::RsaB.public_jwk_as("rsa-b-sig", Some("PS512")),
    ];
    let (set, skipped) = parse(&keys).unwrap();
    assert_eq!((set.len(), skipped), (5, 0));
    let mut with_use = TestKey::RsaA.public_jwk();
    with_use["use"] = json!("sig");
    with_use["key_ops"] = json!(["verify"]);
    with_use["x5t"] = json!("ignored");
    assert_eq!(parse(&[with_use]).unwrap().0.len(), 1);
}

#[test]
fn unusable_keys_are_skipped_and_counted() {
    let mut enc = TestKey::RsaB.public_jwk_as("rsa-enc", None);
    enc["use"] = json!("enc");
    let oaep = TestKey::RsaB.public_jwk_as("rsa-oaep", Some("RSA-OAEP"));
    let hs = json!({"kty": "oct", "kid": "hmac", "k": b64(b"secret"), "alg": "HS256"});
    let oct_no_alg = json!({"kty": "oct", "kid": "hmac2", "k": b64(b"secret")});
    let weak = TestKey::Rsa1024.public_jwk();
    let alg_of_other_family = TestKey::RsaB.public_jwk_as("rsa-es", Some("ES256"));
    let unknown_kty = json!({"kty": "LWE", "kid": "pq", "x": "AAAA"});
    let no_kty = json!({"kid": "nokty", "n": "AQAB", "e": "AQAB"});
    let x25519 = json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64(&[9u8; 32])});
    // Ed25519 keys the verifier refuses (crypto::ed25519_math): the identity and the point of
    // order 2 (small order), and a 31-byte x.
    let okp =
        |kid: &str, x: &[u8]| json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(x)});
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut order_2 = [0xffu8; 32];
    order_2[0] = 0xec;
    order_2[31] = 0x7f;
    let ed_identity = okp("ed-identity", &identity);
    let ed_order_2 = okp("ed-order-2", &order_2);
    let ed_short = okp("ed-short", &[9u8; 31]);
    let p256_claiming_p384 = {
        let mut j = TestKey::P256.public_jwk_as("p256-as-p384", None);
        j["crv"] = json!("P-384");
        j
    };
    let not_an_object = json!("rsa-a");
    let numeric_kid = {
        let mut j = TestKey::RsaB.public_jwk();
        j["kid"] = json!(7);
        j
    };
    let skipped_keys = [
        enc,
        oaep,
        hs,
        oct_no_alg,
        weak,
        alg_of_other_family,
        short_ec_coordinate_jwk(),
        unknown_kty,
        no_kty,
        x25519,
        ed_identity,
        ed_order_2,
        ed_short,
        p256_claiming_p384,
        not_an_object,
        numeric_kid,
    ];
    let mut all = skipped_keys.to_vec();
    all.push(TestKey::RsaA.public_jwk());
    let (set, skipped) = parse(&all).unwrap();
    assert_eq!((set.len(), skipped), (1, skipped_keys.len()));
    assert!(set.has_kid("rsa-a"));
    for gone in [
        "rsa-enc",
        "rsa-oaep",
        "hmac",
        "rsa-weak",
        "rsa-es",
        "ec-short",
        "pq",
        "ed-identity",
        "ed-order-2",
        "ed-short",
    ] {
        assert!(!set.has_kid(gone), "{gone}");
    }
    // Each one alone leaves nothing usable.
    for (i, jwk) in skipped_keys.iter().enumerate() {
        assert_eq!(
            parse(std::slice::from_ref(jwk)).err(),
            Some(JwksError::NoUsableKeys { skipped: 1 }),
            "skipped key #{i}"
        );
    }
}

#[test]
fn not_a_jwks() {
    for doc in [
        "",
        "not json",
        "[]",
        "{}",
        r#"{"keys": "rsa"}"#,
        r#"{"keys": {}}"#,
        r#"{"keys": null}"#,
    ] {
        assert_eq!(
            KeySet::parse(doc.as_bytes()).err(),
            Some(JwksError::NotAJwks),
            "{doc}"
        );
    }
    assert_eq!(
        KeySet::from_value(&json!({"kid": "x"})).err(),
        Some(JwksError::NotAJwks)
    );
    assert_eq!(
        KeySet::from_value(&json!([TestKey::RsaA.public_jwk()])).err(),
        Some(JwksError::NotAJwks)
    );
}

#[test]
fn no_usable_keys() {
    assert_eq!(
        parse(&[]).err(),
        Some(JwksError::NoUsableKeys { skipped: 0 })
    );
    let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
    let weak = TestKey::Rsa1024.public_jwk();
    assert_eq!(
        parse(&[oct, weak]).err(),
        Some(JwksError::NoUsableKeys { skipped: 2 })
    );
    assert_eq!(
        JwksError::NoUsableKeys { skipped: 2 }.to_string(),
        "no usable signature key (2 skipped)"
    );
}

#[test]
fn kid_candidates() {
    let keys = [
        TestKey::RsaA.public_jwk(),
        TestKey::RsaB.public_jwk(),
        TestKey::P256.public_jwk(),
        TestKey::P256.public_jwk_as("rsa-a", None), // a second key under a reused kid
        TestKey::Ed25519.public_jwk_as("", None),
        {
            let mut no_kid = TestKey::P384.public_jwk();
            no_kid.as_object_mut().unwrap().remove("kid");
            no_kid
        },
    ];
    let (set, _) = parse(&keys).unwrap();
    let kids = |kid: Option<&str>, alg: Alg| -> Vec<(Option<String>, KeyFamily)> {
        set.candidates(kid, alg)
            .map(|k| (k.kid.clone(), k.material.family()))
            .collect()
    };
    // With a kid: exactly the keys carrying it, whatever their family.
    assert_eq!(
        kids(Some("rsa-a"), Alg::Rs256),
        vec![
            (Some("rsa-a".into()), KeyFamily::Rsa),
            (Some("rsa-a".into()), KeyFamily::P256)
        ]
    );
    assert_eq!(
        kids(Some("rsa-b"), Alg::Es256),
        vec![(Some("rsa-b".into()), KeyFamily::Rsa)]
    );
    assert!(kids(Some("nope"), Alg::Rs256).is_empty());
    assert!(
        kids(Some("RSA-A"), Alg::Rs256).is_empty(),
        "kids are case-sensitive"
    );
    assert_eq!(
        kids(Some(""), Alg::EdDsa).len(),
        1,
        "an empty kid is still a kid"
    );
    // Without a kid: every key of the algorithm's family.
    assert_eq!(kids(None, Alg::Ps384).len(), 2);
    assert_eq!(kids(None, Alg::Es256).len(), 2);
    assert_eq!(kids(None, Alg::Es384), vec![(None, KeyFamily::P384)]);
    assert_eq!(kids(None, Alg::EdDsa).len(), 1);
    assert!(set.has_kid("ec-p256") && !set.has_kid("ec-p384"));
}

#[test]
fn key_debug_never_prints_key_material() {
    let (set, _) = parse(&[TestKey::RsaA.public_jwk()]).unwrap();
    let k = set.candidates(Some("rsa-a"), Alg::Rs256).next().unwrap();
    let text = format!("{k:?}");
    assert!(text.contains("rsa-a") && text.contains("Rsa"));
    let n = TestKey::RsaA.public_jwk()["n"].as_str().unwrap().to_owned();
    assert!(!text.contains(&n[..16]));
}

fn held(fetched_at: Option<u64>) -> Held {
    Held {
        keys: parse(&[TestKey::RsaA.public_jwk()]).unwrap().0,
        fetched_at,
        generation: 1,
    }
}

#[test]
fn key_ring_missing_too_stale_usable() {
    const NOW: u64 = 10_000_000;
    const MAX_STALE: u64 = 60_000;
    let mut ring = KeyRing::new(3);
    assert!(matches!(ring.get(0, NOW, MAX_STALE), KeysFor::Missing));
    assert!(
        matches!(ring.get(7, NOW, MAX_STALE), KeysFor::Missing),
        "out of range"
    );
    ring.set(7, held(Some(NOW))); // ignored
    assert!(ring.held(7).is_none());

    ring.set(0, held(Some(NOW - MAX_STALE)));
    assert!(
        matches!(ring.get(0, NOW, MAX_STALE), KeysFor::Usable(k) if k.len() == 1),
        "at the limit"
    );
    ring.set(0, held(Some(NOW - MAX_STALE - 1)));
    assert!(matches!(ring.get(0, NOW, MAX_STALE), KeysFor::TooStale));
    // A fetch stamped in the future (clock skew between workers) is fresh, not an overflow.
    ring.set(0, held(Some(NOW + 5_000)));
    assert!(matches!(ring.get(0, NOW, MAX_STALE), KeysFor::Usable(_)));
    assert!(
        matches!(ring.get(1, NOW, MAX_STALE), KeysFor::Missing),
        "slots are separate"
    );
}

#[test]
fn inline_keys_are_never_stale() {
    let mut ring = KeyRing::new(1);
    ring.set(0, held(None));
    assert!(matches!(ring.get(0, u64::MAX, 1), KeysFor::Usable(_)));
    assert_eq!(ring.held(0).unwrap().generation, 1);
}

fn id_of(jwk: serde_json::Value) -> KeyId {
    let (set, _) = KeySet::from_value(&jwks(&[jwk])).unwrap();
    set.keys[0].id
}

#[test]
fn a_key_id_names_the_public_key_not_its_kid_or_alg() {
    let all = [
        TestKey::RsaA,
        TestKey::RsaB,
        TestKey::P256,
        TestKey::P384,
        TestKey::Ed25519,
    ];
    let ids: Vec<KeyId> = all.iter().map(|k| id_of(k.public_jwk())).collect();
    for (i, a) in ids.iter().enumerate() {
        assert!(ids[i + 1..].iter().all(|b| a != b), "distinct keys");
    }
    assert_eq!(
        id_of(TestKey::RsaA.public_jwk_as("other", Some("PS256"))),
        ids[0],
        "same key, other kid and alg"
    );
    assert_eq!(id_of(TestKey::P256.public_jwk_as("x", None)), ids[2]);
    let (set, _) = KeySet::from_value(&jwks(&[
        TestKey::RsaA.public_jwk(),
        TestKey::Ed25519.public_jwk(),
    ]))
    .unwrap();
    assert!(set.has_id(ids[0]) && set.has_id(ids[4]));
    assert!(!set.has_id(ids[1]) && !set.has_id(ids[2]));
}

#[test]
fn jwks_nesting() {
    let mut jwk = TestKey::P256.public_jwk().to_string();
    jwk.pop(); // the closing brace
    let doc = |deep: &str| format!(r#"{{"keys":[{jwk},"x-deep":{deep}}}]}}"#);
    // `{"keys":[{..., "x-deep": ...}]}` is three levels before the nested arrays.
    let (set, skipped) =
        KeySet::parse(doc(&nested_json(JSON_MAX_DEPTH - 3)).as_bytes()).expect("within");
    assert_eq!((set.len(), skipped), (1, 0));
    assert!(KeySet::parse(doc(&nested_json(JSON_MAX_DEPTH - 2)).as_bytes()).is_err());
    assert!(KeySet::parse(doc(&nested_json(100_000)).as_bytes()).is_err());
    assert!(KeySet::parse(nested_json(100_000).as_bytes()).is_err());
}

/// Re-parsing a JWKS while the previous set is held (what every refresh does) reuses the ECDSA
/// and Ed25519 keys' precomputed tables (`crypto::ecdsa_math`, `crypto::ed25519_math`).
#[test]
fn a_refreshed_key_set_reuses_the_tables_of_unchanged_keys() {
    use crate::key::{Alg, KeyMaterial};
    let doc = jwks(&[
        TestKey::P256.public_jwk(),
        TestKey::P384.public_jwk(),
        TestKey::Ed25519.public_jwk(),
    ]);
    let (held, _) = KeySet::from_value(&doc).unwrap();
    let (refreshed, _) = KeySet::from_value(&doc).unwrap();
    for alg in [Alg::Es256, Alg::Es384, Alg::EdDsa] {
        let old = &held.candidates(None, alg).next().unwrap().material;
        let new = &refreshed.candidates(None, alg).next().unwrap().material;
        match (old, new) {
            (KeyMaterial::P256(old), KeyMaterial::P256(new)) => assert!(old.shares_table_with(new)),
            (KeyMaterial::P384(old), KeyMaterial::P384(new)) => assert!(old.shares_table_with(new)),
            (KeyMaterial::Ed25519(old), KeyMaterial::Ed25519(new)) => {
                assert!(old.shares_table_with(new))
            }
            _ => panic!("unexpected key types"),
        }
    }
}
