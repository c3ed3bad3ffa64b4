//! JWT peek/verify against fixed keys and a fixed clock (JWKS parsing: `jwks/tests.rs`).
//!
//! Token fixtures are named by scenario (in the style of Envoy's jwt_authn `test_common.h`);
//! each documents its decoded header and payload. `NOW` is [`NOW_S`]; the issuer under test
//! is `https://as1.example.com` with audience `api://orders` and a 60 s clock skew.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::jwks::KeySet;
use crate::key::{Alg, AlgSet, Key, KeyFamily};
use crate::testdata::{
    b64, compact, header, jwks, sign, sign_hs256, TestKey, AUD, ISS_A, ISS_B, NOW_S,
    RSA_A_PUBLIC_PEM,
};

const SKEW: i64 = 60;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// What the issuer under test expects (owned, so tests can tweak one field).
struct Issuer {
    issuer: &'static str,
    audiences: Vec<String>,
    algorithms: AlgSet,
    clock_skew_s: u64,
    require_at_jwt: bool,
}

fn all_algs() -> AlgSet {
    let mut set = AlgSet::default();
    for alg in Alg::ALL {
        set.insert(alg);
    }
    set
}

fn algs(list: &[Alg]) -> AlgSet {
    let mut set = AlgSet::default();
    for alg in list {
        set.insert(*alg);
    }
    set
}

fn issuer_a() -> Issuer {
    Issuer {
        issuer: ISS_A,
        audiences: vec![AUD.to_owned()],
        algorithms: all_algs(),
        clock_skew_s: SKEW as u64,
        require_at_jwt: false,
    }
}

/// The one usable key of a single-key JWKS built from `jwk`.
fn key_of(jwk: Value) -> Key {
    let (set, skipped) = KeySet::from_value(&jwks(&[jwk])).expect("usable key");
    assert_eq!((set.len(), skipped), (1, 0));
    let key = [Alg::Rs256, Alg::Es256, Alg::Es384, Alg::EdDsa]
        .into_iter()
        .find_map(|alg| set.candidates(None, alg).next().cloned())
        .expect("one key");
    key
}

/// The fixture's public key, its own kid, no pinned alg.
fn key(k: TestKey) -> Key {
    key_of(k.public_jwk())
}

/// Peeks and verifies `token` with `key` for `issuer` at the fixed clock `now`.
fn check_at(token: &str, key: &Key, issuer: &Issuer, now: i64) -> Result<VerifiedClaims, JwtError> {
    let peeked = peek(token)?;
    let expect = Expectations {
        issuer: issuer.issuer,
        audiences: &issuer.audiences,
        algorithms: issuer.algorithms,
        clock_skew_s: issuer.clock_skew_s,
        require_at_jwt: issuer.require_at_jwt,
    };
    verify(&peeked, key, &expect, now)
}

fn check(token: &str, key: &Key, issuer: &Issuer) -> Result<VerifiedClaims, JwtError> {
    check_at(token, key, issuer, NOW_S)
}

/// The test key that signs `alg`.
fn key_for_alg(alg: Alg) -> TestKey {
    match alg.family() {
        KeyFamily::Rsa => TestKey::RsaA,
        KeyFamily::P256 => TestKey::P256,
        KeyFamily::P384 => TestKey::P384,
        KeyFamily::Ed25519 => TestKey::Ed25519,
    }
}

/// The standard access-token payload:
/// `{"iss":"https://as1.example.com","sub":"alice","aud":"api://orders",
///   "client_id":"orders-cli","scope":"read write","iat":NOW-60,"exp":NOW+3600}`
fn payload() -> Value {
    json!({
        "iss": ISS_A,
        "sub": "alice",
        "aud": AUD,
        "client_id": "orders-cli",
        "scope": "read write",
        "iat": NOW_S - 60,
        "exp": NOW_S + 3600,
    })
}

/// [`payload`] with `changes` merged in; a `null` value removes the member.
fn payload_with(changes: Value) -> Value {
    let mut p = payload();
    let obj = p.as_object_mut().unwrap();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    p
}

/// RS256 with `rsa-a` (kid `rsa-a`), typ absent, over `payload`.
fn rs256(payload: &Value) -> String {
    sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-a"), None),
        payload,
    )
}

// ---------------------------------------------------------------------------------------------
// Token fixtures, named by scenario
// ---------------------------------------------------------------------------------------------

/// A good token for `alg`, signed with that family's fixture key.
/// Header: `{"alg":<alg>,"kid":<fixture kid>}`; payload: [`payload`].
fn good_token(alg: Alg) -> String {
    let k = key_for_alg(alg);
    sign(alg.name(), k, &header(Some(&k.kid()), None), &payload())
}

/// Header: `{"alg":"none","kid":"rsa-a"}`; payload: [`payload`]; empty signature.
fn alg_none_token() -> String {
    let p = payload().to_string();
    compact(r#"{"alg":"none","kid":"rsa-a"}"#, &p, b"")
}

/// Header: `{"alg":"HS256","kid":"rsa-a"}`; payload: [`payload`]; HMAC-SHA256 keyed with the
/// PEM text of `rsa-a`'s PUBLIC key (the classic RS256 -> HS256 key-confusion forgery).
fn hs256_signed_with_public_key_token() -> String {
    sign_hs256(
        RSA_A_PUBLIC_PEM.as_bytes(),
        &header(Some("rsa-a"), None),
        &payload(),
    )
}

/// Header: `{"alg":"ES256","kid":"rsa-a"}` (signed with P-256); payload: [`payload`].
/// Names the RSA key but uses an EC algorithm.
fn es256_token_naming_rsa_key() -> String {
    sign(
        "ES256",
        TestKey::P256,
        &header(Some("rsa-a"), None),
        &payload(),
    )
}

/// Header: `{"alg":"RS256","kid":"rsa-a"}`; payload: [`payload`] with `"sub":"mallory"`
/// substituted AFTER signing (the signature covers `"sub":"alice"`).
fn tampered_payload_token() -> String {
    let good = rs256(&payload());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = payload_with(json!({"sub": "mallory"})).to_string();
    format!("{}.{}.{}", parts[0], b64(forged.as_bytes()), parts[2])
}

/// Header: `{"alg":"RS256","kid":"rsa-a"}`; payload: [`payload`]; the signature's last byte
/// flipped.
fn tampered_signature_token() -> String {
    let good = rs256(&payload());
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    *sig.last_mut().unwrap() ^= 0x01;
    format!("{head}.{}", b64(&sig))
}

/// Header: `{"alg":"RS256","kid":"rsa-a"}`; payload: [`payload`]; signed by `rsa-b`, i.e. a
/// valid signature by a key other than the one the kid names.
fn signed_by_other_key_token() -> String {
    sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-a"), None),
        &payload(),
    )
}

/// Header: `{"alg":"RS256","kid":"rsa-a"}`; payload: [`payload`] with `"exp": NOW-60-1`:
/// expired one second beyond the skew.
fn expired_token() -> String {
    rs256(&payload_with(json!({"exp": NOW_S - SKEW - 1})))
}

/// Payload with `"exp": NOW-60`: expired, but exactly at the edge of the skew.
fn expired_within_skew_token() -> String {
    rs256(&payload_with(json!({"exp": NOW_S - SKEW})))
}

/// Payload with `"nbf": NOW+61`.
fn not_yet_valid_token() -> String {
    rs256(&payload_with(json!({"nbf": NOW_S + SKEW + 1})))
}

/// Payload with `"nbf": NOW+60`.
fn not_yet_valid_within_skew_token() -> String {
    rs256(&payload_with(json!({"nbf": NOW_S + SKEW})))
}

/// Payload with `"iat": NOW+61`.
fn issued_in_future_token() -> String {
    rs256(&payload_with(json!({"iat": NOW_S + SKEW + 1})))
}

/// Payload with `"iat": NOW+60`.
fn issued_in_future_within_skew_token() -> String {
    rs256(&payload_with(json!({"iat": NOW_S + SKEW})))
}

/// Payload without `exp`.
fn missing_exp_token() -> String {
    rs256(&payload_with(json!({"exp": null})))
}

/// Payload with `"exp": "tomorrow"` (not a NumericDate).
fn non_numeric_exp_token() -> String {
    rs256(&payload_with(json!({"exp": "tomorrow"})))
}

/// Payload with `"iss": "https://as1.example.com/"` (trailing slash: not the same string).
fn other_issuer_spelling_token() -> String {
    rs256(&payload_with(json!({"iss": format!("{ISS_A}/")})))
}

/// Payload with `"aud": ["api://billing","api://orders"]`.
fn audience_array_token() -> String {
    rs256(&payload_with(json!({"aud": ["api://billing", AUD]})))
}

/// Payload with `"aud": "api://billing"`.
fn wrong_audience_token() -> String {
    rs256(&payload_with(json!({"aud": "api://billing"})))
}

/// Payload with `"aud": ["api://billing","api://users"]`.
fn wrong_audience_array_token() -> String {
    rs256(&payload_with(
        json!({"aud": ["api://billing", "api://users"]}),
    ))
}

/// Payload without `aud`.
fn no_audience_token() -> String {
    rs256(&payload_with(json!({"aud": null})))
}

/// Payload with `"aud": 42`.
fn numeric_audience_token() -> String {
    rs256(&payload_with(json!({"aud": 42})))
}

/// Header: `{"alg":"RS256","kid":"rsa-a","typ":<typ>}`; payload: [`payload`].
fn typed_token(typ: &str) -> String {
    sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-a"), Some(typ)),
        &payload(),
    )
}

/// An OpenID Connect ID token presented as an access token.
/// Header: `{"alg":"RS256","kid":"rsa-a","typ":"JWT"}`;
/// payload: `{"iss":"https://as1.example.com","sub":"alice","aud":"api://orders",
///   "nonce":"n-0S6_WzA2Mj","auth_time":NOW-120,"iat":NOW-60,"exp":NOW+3600}`.
fn id_token_not_at_jwt() -> String {
    let p = json!({
        "iss": ISS_A,
        "sub": "alice",
        "aud": AUD,
        "nonce": "n-0S6_WzA2Mj",
        "auth_time": NOW_S - 120,
        "iat": NOW_S - 60,
        "exp": NOW_S + 3600,
    });
    sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-a"), Some("JWT")),
        &p,
    )
}

/// Payload without `iss`.
fn missing_iss_token() -> String {
    rs256(&payload_with(json!({"iss": null})))
}

/// Payload with `"iss": 12345`.
fn numeric_iss_token() -> String {
    rs256(&payload_with(json!({"iss": 12345})))
}

/// Header: `{"alg":"RS256","kid":"rsa-a","crit":["exp"],"exp":NOW+3600}` (a critical
/// extension parameter Tollgate does not understand); payload: [`payload`]; validly signed.
fn crit_header_token() -> String {
    let extension = json!({"crit": ["exp"], "exp": NOW_S + 3600});
    let head = jwt_compact::Header::new(extension).with_key_id("rsa-a");
    sign("RS256", TestKey::RsaA, &head, &payload())
}

/// Payload text `{"iss":"https://as1.example.com","iss":"https://as2.example.com",...}`:
/// two `iss` members (which one an issuer-picker sees would be parser-dependent).
fn duplicate_iss_token() -> String {
    let text = format!(
        r#"{{"iss":"{ISS_A}","iss":"{ISS_B}","sub":"alice","aud":"{AUD}","exp":{}}}"#,
        NOW_S + 3600
    );
    let head = b64(br#"{"alg":"RS256","kid":"rsa-a"}"#);
    let body = b64(text.as_bytes());
    format!("{head}.{body}.{}", b64(&[0u8; 256]))
}

// ---------------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------------

#[test]
fn every_supported_alg_verifies() {
    for alg in Alg::ALL {
        let token = good_token(alg);
        let k = key(key_for_alg(alg));
        let v = check(&token, &k, &issuer_a()).unwrap_or_else(|e| panic!("{}: {e:?}", alg.name()));
        assert_eq!(v.exp_s, NOW_S + 3600, "{}", alg.name());
        assert_eq!(v.claims["sub"], "alice");
        assert_eq!(
            v.claims["exp"],
            json!(NOW_S + 3600),
            "exp is kept as an integer"
        );
        assert_eq!(v.claims["iat"], json!(NOW_S - 60));
        assert_eq!(v.claims["iss"], ISS_A);
    }
}

#[test]
fn every_supported_alg_verifies_with_a_key_pinned_to_it() {
    for alg in Alg::ALL {
        let k = key_for_alg(alg);
        let pinned = key_of(k.public_jwk_as(&k.kid(), Some(alg.name())));
        assert_eq!(pinned.alg, Some(alg));
        assert!(
            check(&good_token(alg), &pinned, &issuer_a()).is_ok(),
            "{}",
            alg.name()
        );
    }
}

#[test]
fn alg_names_are_exact_and_exclude_none_and_hmac() {
    for alg in Alg::ALL {
        assert_eq!(Alg::from_name(alg.name()), Some(alg));
    }
    for name in [
        "none", "None", "NONE", "HS256", "HS384", "HS512", "rs256", "ES256K", "Ed25519", "",
    ] {
        assert_eq!(Alg::from_name(name), None, "{name:?}");
    }
}

#[test]
fn alg_set_holds_exactly_what_was_inserted() {
    let set = algs(&[Alg::Rs256, Alg::EdDsa]);
    assert!(set.contains(Alg::Rs256) && set.contains(Alg::EdDsa));
    assert!(!set.contains(Alg::Ps256) && !set.contains(Alg::Es384));
    assert!(AlgSet::default().is_empty());
    assert!(!set.is_empty());
}

#[test]
fn alg_none_token_is_refused() {
    let token = alg_none_token();
    let peeked = peek(&token).expect("parses");
    assert_eq!(peeked.alg(), Err(JwtError::UnsupportedAlg));
    assert_eq!(
        check(&token, &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::UnsupportedAlg
    );
    // Every spelling of none.
    for name in ["None", "NONE", "nOnE"] {
        let t = compact(
            &format!(r#"{{"alg":"{name}"}}"#),
            &payload().to_string(),
            b"",
        );
        assert_eq!(
            check(&t, &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
            JwtError::UnsupportedAlg
        );
    }
}

#[test]
fn hs256_signed_with_public_key_token_is_refused() {
    let token = hs256_signed_with_public_key_token();
    for k in [
        key(TestKey::RsaA),
        key_of(TestKey::RsaA.public_jwk_as("rsa-a", Some("RS256"))),
    ] {
        assert_eq!(
            check(&token, &k, &issuer_a()).unwrap_err(),
            JwtError::UnsupportedAlg
        );
    }
}

#[test]
fn alg_not_in_the_issuers_allow_list_is_refused_even_with_a_good_signature() {
    let only_rs256 = Issuer {
        algorithms: algs(&[Alg::Rs256]),
        ..issuer_a()
    };
    assert!(check(&good_token(Alg::Rs256), &key(TestKey::RsaA), &only_rs256).is_ok());
    for alg in [Alg::Ps256, Alg::Rs512, Alg::Es256, Alg::EdDsa] {
        let k = key(key_for_alg(alg));
        assert_eq!(
            check(&good_token(alg), &k, &only_rs256).unwrap_err(),
            JwtError::AlgNotAllowed,
            "{}",
            alg.name()
        );
    }
}

#[test]
fn es256_token_with_an_rsa_key_is_a_key_mismatch() {
    let token = es256_token_naming_rsa_key();
    assert_eq!(
        check(&token, &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::KeyAlgMismatch
    );
    // Every cross-family pairing.
    for alg in Alg::ALL {
        for k in [
            TestKey::RsaA,
            TestKey::P256,
            TestKey::P384,
            TestKey::Ed25519,
        ] {
            if key_for_alg(alg) == k {
                continue;
            }
            let key = key(k);
            assert_eq!(
                check_alg(alg, &key, all_algs()),
                Err(JwtError::KeyAlgMismatch),
                "{} with {k:?}",
                alg.name()
            );
        }
    }
}

#[test]
fn rs256_token_with_a_key_pinned_to_ps256_is_a_key_mismatch() {
    let pinned = key_of(TestKey::RsaA.public_jwk_as("rsa-a", Some("PS256")));
    assert_eq!(
        check(&good_token(Alg::Rs256), &pinned, &issuer_a()).unwrap_err(),
        JwtError::KeyAlgMismatch
    );
    assert!(check(&good_token(Alg::Ps256), &pinned, &issuer_a()).is_ok());
}

#[test]
fn es384_token_with_a_p256_key_is_a_key_mismatch() {
    assert_eq!(
        check(&good_token(Alg::Es384), &key(TestKey::P256), &issuer_a()).unwrap_err(),
        JwtError::KeyAlgMismatch
    );
}

#[test]
fn allow_list_is_checked_before_the_key_family() {
    let only_es256 = Issuer {
        algorithms: algs(&[Alg::Es256]),
        ..issuer_a()
    };
    assert_eq!(
        check_alg(Alg::Rs256, &key(TestKey::P256), only_es256.algorithms),
        Err(JwtError::AlgNotAllowed)
    );
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

#[test]
fn tampered_payload_token_is_a_bad_signature() {
    assert_eq!(
        check(&tampered_payload_token(), &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::BadSignature
    );
}

#[test]
fn tampered_signature_token_is_a_bad_signature() {
    assert_eq!(
        check(
            &tampered_signature_token(),
            &key(TestKey::RsaA),
            &issuer_a()
        )
        .unwrap_err(),
        JwtError::BadSignature
    );
}

#[test]
fn signed_by_other_key_token_is_a_bad_signature() {
    assert_eq!(
        check(
            &signed_by_other_key_token(),
            &key(TestKey::RsaA),
            &issuer_a()
        )
        .unwrap_err(),
        JwtError::BadSignature
    );
}

#[test]
fn tampering_breaks_every_algorithm() {
    for alg in Alg::ALL {
        let good = good_token(alg);
        let (head, _) = good.rsplit_once('.').unwrap();
        let other = good_token(alg); // ECDSA/PSS are randomized; RSA/EdDSA are not
        let forged_payload = payload_with(json!({"scope": "admin"})).to_string();
        let parts: Vec<&str> = other.split('.').collect();
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged_payload.as_bytes()),
            parts[2]
        );
        let k = key(key_for_alg(alg));
        assert_eq!(
            check(&swapped, &k, &issuer_a()).unwrap_err(),
            JwtError::BadSignature,
            "{}",
            alg.name()
        );
        let truncated = format!("{head}.{}", b64(&[0u8; 8]));
        assert_eq!(
            check(&truncated, &k, &issuer_a()).unwrap_err(),
            JwtError::BadSignature,
            "{}",
            alg.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

#[test]
fn expired_token_is_refused_just_outside_the_skew() {
    assert_eq!(
        check(&expired_token(), &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::Expired
    );
}

#[test]
fn expired_token_is_accepted_just_inside_the_skew() {
    let v = check(
        &expired_within_skew_token(),
        &key(TestKey::RsaA),
        &issuer_a(),
    )
    .unwrap();
    assert_eq!(v.exp_s, NOW_S - SKEW);
}

#[test]
fn expiry_without_skew_is_exact() {
    let no_skew = Issuer {
        clock_skew_s: 0,
        ..issuer_a()
    };
    let token = rs256(&payload_with(json!({"exp": NOW_S})));
    let k = key(TestKey::RsaA);
    assert!(check_at(&token, &k, &no_skew, NOW_S).is_ok());
    assert_eq!(
        check_at(&token, &k, &no_skew, NOW_S + 1).unwrap_err(),
        JwtError::Expired
    );
}

#[test]
fn not_yet_valid_token_is_refused_just_outside_the_skew() {
    assert_eq!(
        check(&not_yet_valid_token(), &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::NotYetValid
    );
}

#[test]
fn not_yet_valid_token_is_accepted_just_inside_the_skew() {
    let v = check(
        &not_yet_valid_within_skew_token(),
        &key(TestKey::RsaA),
        &issuer_a(),
    )
    .unwrap();
    assert_eq!(v.claims["nbf"], json!(NOW_S + SKEW));
}

#[test]
fn issued_in_future_token_is_refused_just_outside_the_skew() {
    assert_eq!(
        check(&issued_in_future_token(), &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::IssuedInFuture
    );
}

#[test]
fn issued_in_future_token_is_accepted_just_inside_the_skew() {
    assert!(check(
        &issued_in_future_within_skew_token(),
        &key(TestKey::RsaA),
        &issuer_a()
    )
    .is_ok());
}

#[test]
fn missing_exp_token_is_refused() {
    assert_eq!(
        check(&missing_exp_token(), &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::MissingExp
    );
}

#[test]
fn non_numeric_exp_token_is_malformed() {
    assert_eq!(
        check(&non_numeric_exp_token(), &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::Malformed
    );
}

#[test]
fn signature_is_checked_before_time() {
    // An expired token with a bad signature reports the signature, not the time.
    let expired = expired_token();
    let (head, _) = expired.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", b64(&[7u8; 256]));
    assert_eq!(
        check(&forged, &key(TestKey::RsaA), &issuer_a()).unwrap_err(),
        JwtError::BadSignature
    );
}

// ---------------------------------------------------------------------------------------------
// Issuer, audience, type
// ---------------------------------------------------------------------------------------------

#[test]
fn issuer_must_match_exactly() {
    assert_eq!(
        check(
            &other_issuer_spelling_token(),
            &key(TestKey::RsaA),
            &issuer_a()
        )
        .unwrap_err(),
        JwtError::IssuerMismatch
    );
    let as_b = Issuer {
        issuer: ISS_B,
        ..issuer_a()
    };
    assert_eq!(
        check(&good_token(Alg::Rs256), &key(TestKey::RsaA), &as_b).unwrap_err(),
        JwtError::IssuerMismatch
    );
}

#[test]
fn audience_string_or_array_containing_an_accepted_value_passes() {
    let k = key(TestKey::RsaA);
    assert!(check(&good_token(Alg::Rs256), &k, &issuer_a()).is_ok());
    assert!(check(&audience_array_token(), &k, &issuer_a()).is_ok());
}

#[test]
fn wrong_audience_token_is_refused() {
    let k = key(TestKey::RsaA);
    for token in [
        wrong_audience_token(),
        wrong_audience_array_token(),
        no_audience_token(),
        numeric_audience_token(),
    ] {
        assert_eq!(
            check(&token, &k, &issuer_a()).unwrap_err(),
            JwtError::AudienceMismatch
        );
    }
}

#[test]
fn no_configured_audience_accepts_any_or_no_aud() {
    let any = Issuer {
        audiences: Vec::new(),
        ..issuer_a()
    };
    let k = key(TestKey::RsaA);
    for token in [
        wrong_audience_token(),
        no_audience_token(),
        good_token(Alg::Rs256),
    ] {
        assert!(check(&token, &k, &any).is_ok());
    }
}

#[test]
fn require_at_jwt_accepts_only_at_jwt_types() {
    let strict = Issuer {
        require_at_jwt: true,
        ..issuer_a()
    };
    let k = key(TestKey::RsaA);
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "application/AT+JWT",
        "Application/At+Jwt",
    ] {
        assert!(check(&typed_token(typ), &k, &strict).is_ok(), "{typ}");
    }
    for typ in [
        "JWT",
        "jwt",
        "at+jwt2",
        "application/jwt",
        "x/at+jwt",
        "application/application/at+jwt",
        " at+jwt",
    ] {
        assert_eq!(
            check(&typed_token(typ), &k, &strict).unwrap_err(),
            JwtError::NotAccessToken,
            "{typ}"
        );
    }
    assert_eq!(
        check(&good_token(Alg::Rs256), &k, &strict).unwrap_err(),
        JwtError::NotAccessToken,
        "typ absent"
    );
}

#[test]
fn id_token_not_at_jwt_is_refused_when_access_tokens_are_required() {
    let strict = Issuer {
        require_at_jwt: true,
        ..issuer_a()
    };
    let k = key(TestKey::RsaA);
    assert_eq!(
        check(&id_token_not_at_jwt(), &k, &strict).unwrap_err(),
        JwtError::NotAccessToken
    );
    // Without the requirement any typ is fine.
    assert!(check(&id_token_not_at_jwt(), &k, &issuer_a()).is_ok());
    assert!(check(&typed_token("JWT"), &k, &issuer_a()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Parsing: malformed tokens and the unverified iss
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_tokens_are_malformed() {
    let good = good_token(Alg::Rs256);
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        ("empty", String::new()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.{}", parts[2])),
        (
            "bad base64 header",
            format!("!!!.{}.{}", parts[1], parts[2]),
        ),
        (
            "bad base64 payload",
            format!("{}.@@@.{}", parts[0], parts[2]),
        ),
        (
            "bad base64 signature",
            format!("{}.{}.***", parts[0], parts[1]),
        ),
        (
            "non-JSON header",
            compact("alg=RS256", &payload().to_string(), b"sig"),
        ),
        (
            "non-JSON payload",
            compact(r#"{"alg":"RS256"}"#, "iss=https://as1", b"sig"),
        ),
        (
            "payload is an array",
            compact(r#"{"alg":"RS256"}"#, r#"["iss"]"#, b"sig"),
        ),
        (
            "header without alg",
            compact(r#"{"kid":"rsa-a"}"#, &payload().to_string(), b"sig"),
        ),
        ("two iss members", duplicate_iss_token()),
    ];
    for (what, token) in cases {
        assert_eq!(peek(&token).err(), Some(JwtError::Malformed), "{what}");
    }
}

#[test]
fn crit_header_token_is_refused() {
    let token = crit_header_token();
    // The signature is good: a verifier that ignores `crit` would accept the token.
    let plain = UntrustedToken::new(&token).unwrap();
    let rsa_a = match key(TestKey::RsaA).material {
        KeyMaterial::Rsa(k) => k,
        _ => unreachable!(),
    };
    assert!(rsa_alg(Hash::Sha256, Padding::Pkcs1v15)
        .validator::<Payload>(&rsa_a)
        .validate(&plain)
        .is_ok());
    assert_eq!(peek(&token).err(), Some(JwtError::CriticalHeader));
    let no_crit = compact(
        r#"{"alg":"RS256","crit":null}"#,
        &payload().to_string(),
        b"sig",
    );
    assert!(peek(&no_crit).is_ok(), "a null crit is an absent crit");
}

#[test]
fn tokens_without_a_string_iss_have_no_issuer() {
    assert_eq!(
        peek(&missing_iss_token()).err(),
        Some(JwtError::MissingIssuer)
    );
    assert_eq!(
        peek(&numeric_iss_token()).err(),
        Some(JwtError::MissingIssuer)
    );
    let null_iss = compact(r#"{"alg":"RS256"}"#, r#"{"iss":null,"exp":1}"#, b"sig");
    assert_eq!(peek(&null_iss).err(), Some(JwtError::MissingIssuer));
}

#[test]
fn peek_reads_iss_kid_and_alg_without_verifying() {
    let token = signed_by_other_key_token();
    let peeked = peek(&token).unwrap();
    assert_eq!(peeked.iss(), ISS_A);
    assert_eq!(peeked.kid(), Some("rsa-a"));
    assert_eq!(peeked.alg(), Ok(Alg::Rs256));
    let unknown = compact(r#"{"alg":"XS999"}"#, &payload().to_string(), b"sig");
    assert_eq!(peek(&unknown).unwrap().alg(), Err(JwtError::UnsupportedAlg));
    assert_eq!(peek(&unknown).unwrap().kid(), None);
}

#[test]
fn error_codes_and_descriptions_are_distinct() {
    use JwtError::*;
    let all = [
        Malformed,
        CriticalHeader,
        MissingIssuer,
        UnsupportedAlg,
        AlgNotAllowed,
        UnknownKey,
        KeyAlgMismatch,
        BadSignature,
        NotAccessToken,
        MissingExp,
        Expired,
        NotYetValid,
        IssuedInFuture,
        IssuerMismatch,
        AudienceMismatch,
    ];
    let codes: std::collections::HashSet<_> = all.iter().map(|e| e.code()).collect();
    let texts: std::collections::HashSet<_> = all.iter().map(|e| e.describe()).collect();
    assert_eq!((codes.len(), texts.len()), (all.len(), all.len()));
}

// ---------------------------------------------------------------------------------------------
// Deeply nested JSON (run in V8 by scripts/test-wasm: the wasm stack is 1 MiB)
// ---------------------------------------------------------------------------------------------

mod deep_json {
    use super::*;
    use crate::testdata::{nested_json, JSON_MAX_DEPTH};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// An EdDSA token over hand-written payload text (a `Value` that deep could not be built).
    fn eddsa_token(payload_json: &str) -> String {
        let header_json = r#"{"alg":"EdDSA","typ":"at+jwt"}"#;
        let input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(payload_json.as_bytes())
        );
        let signature = TestKey::Ed25519.ed25519().sign(input.as_bytes(), None);
        compact(header_json, payload_json, signature.as_ref())
    }

    fn payload_with(deep: &str) -> String {
        format!(
            r#"{{"iss":"{ISS_A}","aud":"{AUD}","sub":"alice","exp":{},"deep":{deep}}}"#,
            NOW_S + 60
        )
    }

    /// A claim nested to just under serde_json's limit verifies and keeps its depth; far past
    /// the limit the token is refused as malformed. Neither exhausts the stack.
    #[test]
    fn nesting_at_and_far_past_the_limit() {
        let key = key(TestKey::Ed25519);
        // The payload object is one level; the claim adds the rest.
        let token = eddsa_token(&payload_with(&nested_json(JSON_MAX_DEPTH - 1)));
        let verified = check(&token, &key, &issuer_a()).expect("nested claim within the limit");
        let mut depth = 0;
        let mut v = &verified.claims["deep"];
        while let Value::Array(items) = v {
            depth += 1;
            v = &items[0];
        }
        assert_eq!(depth, JSON_MAX_DEPTH - 1);
        // One level more: refused, not a crash.
        let token = eddsa_token(&payload_with(&nested_json(JSON_MAX_DEPTH)));
        assert_eq!(
            check(&token, &key, &issuer_a()),
            Err(JwtError::Malformed),
            "one level past the limit"
        );
        // Far past it: `peek` already refuses (jwt-compact's claims flatten every member into
        // serde's buffer, which is depth-limited too).
        let token = eddsa_token(&payload_with(&nested_json(100_000)));
        assert_eq!(peek(&token).err(), Some(JwtError::Malformed));
        assert_eq!(check(&token, &key, &issuer_a()), Err(JwtError::Malformed));
        // A deep header is malformed at `peek`.
        let header = format!(r#"{{"alg":"EdDSA","x":{}}}"#, nested_json(100_000));
        let token = compact(&header, &payload_with("0"), &[0; 64]);
        assert_eq!(peek(&token).err(), Some(JwtError::Malformed));
    }
}
