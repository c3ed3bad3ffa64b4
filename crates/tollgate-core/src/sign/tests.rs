//! Signing keys and minted tokens: every refusal of a private JWK, tokens checked by the
//! crate's own verifier (through the published JWKS) and by third-party verifiers, the RFC 8037
//! and RFC 6979 vectors byte for byte, redaction, rotation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Map, Value};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::jwt::{self, JwtError, VerifiedClaims};
use crate::key::Alg;
use crate::testdata::{b64, verify_with_published_jwks, TestKey, NOW_S};

const GATEWAY: &str = "https://gateway.example.com";
const UPSTREAM: &str = "orders-backend";

/// RFC 8037 Appendix A.1: the example Ed25519 private key.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/// RFC 8037 Appendix A.4: `{"alg":"EdDSA"}` over "Example of Ed25519 signing", in full.
const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A fixture's full private JWK as a `Value`.
fn private(key: TestKey) -> Value {
    Value::Object(key.private_jwk())
}

/// `private(key)` with `member` set to `value` (`Value::Null`: removed).
fn with(key: TestKey, member: &str, value: Value) -> Value {
    let mut jwk = key.private_jwk();
    if value.is_null() {
        jwk.remove(member);
    } else {
        jwk.insert(member.to_owned(), value);
    }
    Value::Object(jwk)
}

fn load(key: TestKey) -> SigningKey {
    SigningKey::from_jwk(&private(key)).expect("fixture is a signing key")
}

fn claims(sub: &str) -> Map<String, Value> {
    json!({
        "iss": GATEWAY, "aud": UPSTREAM, "sub": sub, "iat": NOW_S, "exp": NOW_S + 60,
        "jti": "0123456789abcdef",
    })
    .as_object()
    .unwrap()
    .clone()
}

/// Verifies `token` as the upstream would, through the published JWKS.
fn verify_via_jwks(token: &str, jwks: &str) -> Result<VerifiedClaims, JwtError> {
    verify_with_published_jwks(token, jwks, GATEWAY, UPSTREAM, NOW_S)
}

fn ring(keys: &[TestKey], active: &str) -> SigningKeys {
    SigningKeys::new(keys.iter().map(|k| load(*k)).collect(), active).unwrap()
}

fn parts(token: &str) -> Vec<Vec<u8>> {
    token
        .split('.')
        .map(|p| URL_SAFE_NO_PAD.decode(p).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Loading keys
// ---------------------------------------------------------------------------------------------

#[test]
fn loads_ed25519_and_p256_fixtures() {
    let ed = load(TestKey::Ed25519);
    assert_eq!((ed.kid(), ed.alg()), ("ed-25519", Alg::EdDsa));
    let ec = load(TestKey::P256);
    assert_eq!((ec.kid(), ec.alg()), ("ec-p256", Alg::Es256));
}

#[test]
fn accepts_matching_alg_use_and_key_ops() {
    let mut jwk = TestKey::P256.private_jwk();
    jwk.insert("alg".into(), json!("ES256"));
    jwk.insert("use".into(), json!("sig"));
    jwk.insert("key_ops".into(), json!(["sign", "verify"]));
    assert!(SigningKey::from_jwk(&Value::Object(jwk)).is_ok());
    let ed = with(TestKey::Ed25519, "alg", json!("EdDSA"));
    assert!(SigningKey::from_jwk(&ed).is_ok());
}

#[test]
fn refuses_each_bad_key() {
    use SigningKeyError as E;
    let ed = TestKey::Ed25519;
    let ec = TestKey::P256;
    let other_ed_x = RFC8037_X;
    let other_ec_x = TestKey::P384.private_jwk()["x"].as_str().unwrap()[..43].to_owned();
    let order = b64(&hex(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
    ));
    let cases: Vec<(&str, Value, SigningKeyError)> = vec![
        ("not an object", json!("a key"), E::NotAnObject),
        ("no kid", with(ed, "kid", Value::Null), E::MissingKid),
        ("empty kid", with(ed, "kid", json!("")), E::MissingKid),
        ("numeric kid", with(ec, "kid", json!(7)), E::MissingKid),
        ("RSA", private(TestKey::RsaA), E::UnsupportedKeyType),
        (
            "oct",
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            E::UnsupportedKeyType,
        ),
        (
            "no kty",
            with(ed, "kty", Value::Null),
            E::UnsupportedKeyType,
        ),
        (
            "X25519",
            with(ed, "crv", json!("X25519")),
            E::UnsupportedCurve,
        ),
        ("P-384", private(TestKey::P384), E::UnsupportedCurve),
        ("no crv", with(ec, "crv", Value::Null), E::UnsupportedCurve),
        (
            "Ed25519 as ES256",
            with(ed, "alg", json!("ES256")),
            E::AlgMismatch,
        ),
        (
            "P-256 as ES384",
            with(ec, "alg", json!("ES384")),
            E::AlgMismatch,
        ),
        (
            "P-256 as none",
            with(ec, "alg", json!("none")),
            E::AlgMismatch,
        ),
        (
            "alg not a string",
            with(ec, "alg", json!(["ES256"])),
            E::AlgMismatch,
        ),
        ("use enc", with(ec, "use", json!("enc")), E::NotForSigning),
        (
            "key_ops verify",
            with(ed, "key_ops", json!(["verify"])),
            E::SignNotPermitted,
        ),
        (
            "key_ops not a list",
            with(ed, "key_ops", json!("sign")),
            E::SignNotPermitted,
        ),
        (
            "public Ed25519",
            TestKey::Ed25519.public_jwk(),
            E::NotPrivate,
        ),
        ("public P-256", TestKey::P256.public_jwk(), E::NotPrivate),
        (
            "d short",
            with(ed, "d", json!(b64(&[7; 31]))),
            E::MalformedMember(Member::D),
        ),
        (
            "d long",
            with(ec, "d", json!(b64(&[7; 33]))),
            E::MalformedMember(Member::D),
        ),
        (
            "d padded",
            with(ec, "d", json!(format!("{}=", b64(&[7; 32])))),
            E::MalformedMember(Member::D),
        ),
        (
            "d standard base64",
            with(ed, "d", json!("+".repeat(43))),
            E::MalformedMember(Member::D),
        ),
        (
            "d a number",
            with(ed, "d", json!(1)),
            E::MalformedMember(Member::D),
        ),
        (
            "x short",
            with(ed, "x", json!(b64(&[9; 31]))),
            E::MalformedMember(Member::X),
        ),
        (
            "no x",
            with(ec, "x", Value::Null),
            E::MalformedMember(Member::X),
        ),
        (
            "no y",
            with(ec, "y", Value::Null),
            E::MalformedMember(Member::Y),
        ),
        (
            "y long",
            with(ec, "y", json!(b64(&[9; 48]))),
            E::MalformedMember(Member::Y),
        ),
        (
            "Ed25519 zero seed",
            with(ed, "d", json!(b64(&[0; 32]))),
            E::InvalidPrivateKey,
        ),
        (
            "P-256 d zero",
            with(ec, "d", json!(b64(&[0; 32]))),
            E::InvalidPrivateKey,
        ),
        (
            "P-256 d = n",
            with(ec, "d", json!(order)),
            E::InvalidPrivateKey,
        ),
        (
            "P-256 d all ones",
            with(ec, "d", json!(b64(&[0xff; 32]))),
            E::InvalidPrivateKey,
        ),
        (
            "Ed25519 other x",
            with(ed, "x", json!(other_ed_x)),
            E::PublicKeyMismatch,
        ),
        (
            "Ed25519 other d",
            with(ed, "d", json!(RFC8037_D)),
            E::PublicKeyMismatch,
        ),
        (
            "P-256 other x",
            with(ec, "x", json!(other_ec_x)),
            E::PublicKeyMismatch,
        ),
        (
            "P-256 x and y swapped",
            {
                let jwk = TestKey::P256.private_jwk();
                let mut swapped = jwk.clone();
                swapped.insert("x".into(), jwk["y"].clone());
                swapped.insert("y".into(), jwk["x"].clone());
                Value::Object(swapped)
            },
            E::PublicKeyMismatch,
        ),
    ];
    for (name, jwk, want) in cases {
        assert_eq!(SigningKey::from_jwk(&jwk).err(), Some(want), "{name}");
    }
}

#[test]
fn error_texts_are_fixed_and_hold_no_key_material() {
    use SigningKeyError as E;
    let d = TestKey::P256.private_jwk()["d"]
        .as_str()
        .unwrap()
        .to_owned();
    let all = [
        E::NotAnObject,
        E::MissingKid,
        E::UnsupportedKeyType,
        E::UnsupportedCurve,
        E::AlgMismatch,
        E::NotForSigning,
        E::SignNotPermitted,
        E::NotPrivate,
        E::MalformedMember(Member::X),
        E::MalformedMember(Member::Y),
        E::MalformedMember(Member::D),
        E::InvalidPrivateKey,
        E::PublicKeyMismatch,
    ];
    for e in all {
        assert_eq!(e.to_string(), e.describe());
        assert!(!e.describe().contains(&d));
    }
    // A refusal of a key with a private part says nothing about it.
    let bad = with(TestKey::P256, "x", json!(b64(&[1; 32])));
    let err = SigningKey::from_jwk(&bad).unwrap_err();
    assert!(!format!("{err:?} {err}").contains(&d));
}

// ---------------------------------------------------------------------------------------------
// Redaction and the published keys
// ---------------------------------------------------------------------------------------------

#[test]
fn debug_never_shows_the_private_key() {
    for key in [TestKey::Ed25519, TestKey::P256] {
        let jwk = key.private_jwk();
        let d_text = jwk["d"].as_str().unwrap();
        let d_bytes = URL_SAFE_NO_PAD.decode(d_text).unwrap();
        let signing = load(key);
        let keys = ring(&[key], &key.kid());
        for shown in [
            format!("{signing:?}"),
            format!("{signing:#?}"),
            format!("{keys:?}"),
            format!("{:?}", keys.active().private),
        ] {
            assert!(shown.contains("[redacted]"), "{shown}");
            assert!(!shown.contains(d_text), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &d_bytes[..8])), "{shown}");
            assert!(!shown.contains(&format!("{:x?}", &d_bytes[..8])), "{shown}");
        }
    }
}

#[test]
fn public_jwks_has_public_members_only() {
    // An input JWK with extra members: none of them is published.
    let mut ed = TestKey::Ed25519.private_jwk();
    ed.insert("x5c".into(), json!(["MIIB..."]));
    ed.insert("note".into(), json!("internal"));
    let keys = SigningKeys::new(
        vec![
            SigningKey::from_jwk(&Value::Object(ed)).unwrap(),
            load(TestKey::P256),
        ],
        "ed-25519",
    )
    .unwrap();
    let doc: Value = serde_json::from_str(keys.public_jwks()).unwrap();
    let published = doc["keys"].as_array().unwrap();
    let ed_pub = TestKey::Ed25519.private_jwk();
    let ec_pub = TestKey::P256.private_jwk();
    assert_eq!(
        published,
        &vec![
            json!({"kty": "OKP", "crv": "Ed25519", "x": ed_pub["x"], "kid": "ed-25519",
                   "alg": "EdDSA", "use": "sig"}),
            json!({"kty": "EC", "crv": "P-256", "x": ec_pub["x"], "y": ec_pub["y"],
                   "kid": "ec-p256", "alg": "ES256", "use": "sig"}),
        ]
    );
    for m in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(published.iter().all(|k| k.get(m).is_none()), "{m}");
    }
    assert_eq!(doc.as_object().unwrap().len(), 1, "only `keys`");
}

// ---------------------------------------------------------------------------------------------
// Minting, verified by the crate's own verifier
// ---------------------------------------------------------------------------------------------

#[test]
fn signed_tokens_verify_through_the_published_jwks() {
    for key in [TestKey::Ed25519, TestKey::P256] {
        let keys = ring(&[key], &key.kid());
        let token = keys.sign(&claims("alice"));
        let header: Value = serde_json::from_slice(&parts(&token)[0]).unwrap();
        assert_eq!(
            header,
            json!({"alg": keys.active().alg().name(), "kid": key.kid(), "typ": "JWT"})
        );
        let verified = verify_via_jwks(&token, keys.public_jwks()).expect("verifies");
        assert_eq!(verified.claims, claims("alice"), "{key:?}");
        assert_eq!(verified.exp_s, NOW_S + 60);
    }
}

#[test]
fn typ_is_a_parameter() {
    let keys = ring(&[TestKey::Ed25519], "ed-25519");
    let token = keys.sign_typed("at+jwt", &claims("alice"));
    let header: Value = serde_json::from_slice(&parts(&token)[0]).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert!(verify_via_jwks(&token, keys.public_jwks()).is_ok());
}

#[test]
fn kid_is_escaped_in_the_header() {
    let jwk = with(TestKey::Ed25519, "kid", json!("a\"b\\c"));
    let keys = SigningKeys::new(vec![SigningKey::from_jwk(&jwk).unwrap()], "a\"b\\c").unwrap();
    let token = keys.sign(&claims("alice"));
    let header: Value = serde_json::from_slice(&parts(&token)[0]).unwrap();
    assert_eq!(header["kid"], "a\"b\\c");
    assert!(verify_via_jwks(&token, keys.public_jwks()).is_ok());
}

#[test]
fn tampering_fails() {
    for key in [TestKey::Ed25519, TestKey::P256] {
        let keys = ring(&[key], &key.kid());
        let jwks = keys.public_jwks();
        let token = keys.sign(&claims("alice"));
        let segments: Vec<&str> = token.split('.').collect();

        // Another payload under the original signature.
        let forged_payload = b64(serde_json::to_string(&claims("mallory"))
            .unwrap()
            .as_bytes());
        let forged = format!("{}.{}.{}", segments[0], forged_payload, segments[2]);
        assert_eq!(
            verify_via_jwks(&forged, jwks).err(),
            Some(JwtError::BadSignature)
        );

        // One bit of the signature flipped.
        let mut signature = URL_SAFE_NO_PAD.decode(segments[2]).unwrap();
        signature[5] ^= 1;
        let forged = format!("{}.{}.{}", segments[0], segments[1], b64(&signature));
        assert_eq!(
            verify_via_jwks(&forged, jwks).err(),
            Some(JwtError::BadSignature)
        );

        // The header's kid pointed at another key.
        let header = json!({"alg": keys.active().alg().name(), "kid": "other", "typ": "JWT"});
        let forged = format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            segments[1],
            segments[2]
        );
        assert_eq!(
            verify_via_jwks(&forged, jwks).err(),
            Some(JwtError::UnknownKey)
        );
    }
}

#[test]
fn an_expired_minted_token_is_refused() {
    let keys = ring(&[TestKey::P256], "ec-p256");
    let mut old = claims("alice");
    old.insert("exp".into(), json!(NOW_S - 1));
    let token = keys.sign(&old);
    assert_eq!(
        verify_via_jwks(&token, keys.public_jwks()).err(),
        Some(JwtError::Expired)
    );
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

#[test]
fn rotation_the_active_key_signs_and_every_key_is_published() {
    let before = ring(&[TestKey::Ed25519, TestKey::P256], "ed-25519");
    let after = ring(&[TestKey::Ed25519, TestKey::P256], "ec-p256");
    // Both sets publish both keys, in configuration order.
    assert_eq!(before.public_jwks(), after.public_jwks());
    let kids: Vec<String> = serde_json::from_str::<Value>(after.public_jwks()).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, ["ed-25519", "ec-p256"]);
    assert_eq!(
        after.keys().map(SigningKey::kid).collect::<Vec<_>>(),
        ["ec-p256", "ed-25519"]
    );

    let old_token = before.sign(&claims("alice"));
    let new_token = after.sign(&claims("alice"));
    assert_eq!(jwt::peek(&old_token).unwrap().kid(), Some("ed-25519"));
    assert_eq!(jwt::peek(&new_token).unwrap().kid(), Some("ec-p256"));
    assert_eq!(jwt::peek(&new_token).unwrap().alg(), Ok(Alg::Es256));
    // A verifier holding the published set accepts tokens of either key.
    assert!(verify_via_jwks(&old_token, after.public_jwks()).is_ok());
    assert!(verify_via_jwks(&new_token, after.public_jwks()).is_ok());
}

#[test]
fn refuses_bad_key_sets() {
    assert_eq!(
        SigningKeys::new(vec![], "x").err(),
        Some(SigningKeysError::NoKeys)
    );
    let twice = vec![load(TestKey::P256), load(TestKey::P256)];
    assert_eq!(
        SigningKeys::new(twice, "ec-p256").err(),
        Some(SigningKeysError::DuplicateKid)
    );
    let one = vec![load(TestKey::P256)];
    assert_eq!(
        SigningKeys::new(one, "ed-25519").err(),
        Some(SigningKeysError::UnknownActiveKid)
    );
}

// ---------------------------------------------------------------------------------------------
// Determinism and third-party verifiers
// ---------------------------------------------------------------------------------------------

#[test]
fn signatures_are_deterministic() {
    // ES256 with RFC 6979 nonces, EdDSA by construction (RFC 8032): same input, same token.
    for key in [TestKey::P256, TestKey::Ed25519] {
        let keys = ring(&[key], &key.kid());
        assert_eq!(
            keys.sign(&claims("alice")),
            keys.sign(&claims("alice")),
            "{key:?}"
        );
        assert_ne!(
            keys.sign(&claims("alice")),
            keys.sign(&claims("bob")),
            "{key:?}"
        );
    }
}

#[test]
fn es256_verifies_with_rustcrypto_p256_both_versions() {
    let keys = ring(&[TestKey::P256], "ec-p256");
    let token = keys.sign(&claims("alice"));
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let jwk = TestKey::P256.private_jwk();
    let mut point = vec![4u8];
    for m in ["x", "y"] {
        point.extend(URL_SAFE_NO_PAD.decode(jwk[m].as_str().unwrap()).unwrap());
    }
    {
        use p256::ecdsa::signature::Verifier as _;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&signature).unwrap();
        vk.verify(input.as_bytes(), &sig)
            .expect("p256 0.14 verifies");
        assert!(vk.verify(b"another message", &sig).is_err());
    }
    {
        use p256_v013::ecdsa::signature::Verifier as _;
        let vk = p256_v013::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let sig = p256_v013::ecdsa::Signature::from_slice(&signature).unwrap();
        vk.verify(input.as_bytes(), &sig)
            .expect("p256 0.13 verifies");
    }
}

#[test]
fn eddsa_verifies_with_ed25519_compact() {
    let keys = ring(&[TestKey::Ed25519], "ed-25519");
    let token = keys.sign(&claims("alice"));
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature =
        ed25519_compact::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap())
            .unwrap();
    let x = TestKey::Ed25519.private_jwk()["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let pk = ed25519_compact::PublicKey::from_slice(&URL_SAFE_NO_PAD.decode(x).unwrap()).unwrap();
    pk.verify(input.as_bytes(), &signature).expect("verifies");
    assert!(pk.verify(b"another message", &signature).is_err());
}

#[test]
fn eddsa_matches_rfc8037_a4_byte_for_byte() {
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X,
                     "kid": "rfc8037"});
    let key = SigningKey::from_jwk(&jwk).unwrap();
    let (input, signature) = RFC8037_JWS.rsplit_once('.').unwrap();
    assert_eq!(b64(&key.sign_bytes(input.as_bytes())), signature);
}

#[test]
fn es256_matches_rfc6979_a2_5_sha256_sample() {
    // RFC 6979 Appendix A.2.5 (ECDSA, 256 bits, prime field), SHA-256, message "sample".
    let d = hex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721");
    let ux = hex("60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6");
    let uy = hex("7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299");
    let jwk = json!({"kty": "EC", "crv": "P-256", "d": b64(&d), "x": b64(&ux), "y": b64(&uy),
                     "kid": "rfc6979"});
    let key = SigningKey::from_jwk(&jwk).unwrap();
    let r = "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716";
    let s = "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8";
    assert_eq!(key.sign_bytes(b"sample"), hex(&format!("{r}{s}")));
}
