//! DPoP proof checks. Proofs are signed here with jwt-compact over the test keys; thumbprints
//! are checked against RFC 9449's own example and against values jwcrypto 1.6.1 computed
//! (`jwk.JWK(**public).thumbprint()`), not against this module's own arithmetic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::testdata::{compact, dpop_proof, TestKey, NOW_S};

const URI: &str = "https://api.example.com/api/orders/7";
const TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";

fn policy() -> Policy {
    let mut algorithms = AlgSet::default();
    algorithms.insert(Alg::Es256);
    algorithms.insert(Alg::EdDsa);
    Policy {
        algorithms,
        iat_window_s: 60,
    }
}

fn expected() -> Expected<'static> {
    Expected {
        method: "POST",
        uri: URI,
        access_token: TOKEN,
        nonce: None,
        bound_to: None,
    }
}

fn claims() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URI, "iat": NOW_S, "ath": ath(TOKEN)})
}

fn proof_with(alg: &str, key: TestKey, jwk: Option<Value>, typ: &str, claims: &Value) -> String {
    dpop_proof(alg, key, jwk, typ, claims)
}

fn proof(claims: &Value) -> String {
    proof_with("ES256", TestKey::P256, None, "dpop+jwt", claims)
}

fn check_now(proof: &str) -> Result<Proof, ProofError> {
    check(proof, &expected(), &policy(), NOW_S)
}

#[test]
fn thumbprints_are_rfc_7638() {
    // RFC 9449 §4.1's example key and the jkt RFC 9449 §6.1 binds it by.
    let rfc = json!({"kty": "EC", "crv": "P-256",
                     "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                     "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"});
    assert_eq!(
        thumbprint(rfc.as_object().unwrap()).as_deref(),
        Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
    );
    // The test keys, as jwcrypto computes them (members other than the required ones, such as
    // `kid`, `alg` and `use`, do not count).
    for (key, jkt) in [
        (TestKey::P256, "zZ6ymYfEhw-Kq92WnU_42d3zpQus2lvi5S2lpIYtDKI"),
        (
            TestKey::Ed25519,
            "rsU1Mf3xawxNAfWPNEh90ai0LtHFugxPMIGuADW8aQ8",
        ),
        (TestKey::RsaA, "wJuIBnKzhgMEObgzxi5Poo9U_FfDOot8kurO3ialkA8"),
    ] {
        let jwk = key.public_jwk_as("any-kid", Some("whatever"));
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).as_deref(),
            Some(jkt),
            "{key:?}"
        );
    }
    assert_eq!(
        thumbprint(json!({"kty": "oct", "k": "c2VjcmV0"}).as_object().unwrap()),
        None
    );
    assert_eq!(
        thumbprint(
            json!({"kty": "EC", "crv": "P-256", "x": "a"})
                .as_object()
                .unwrap()
        ),
        None
    );
}

#[test]
fn a_proof_by_a_key_other_than_the_tokens_is_refused_before_its_signature() {
    let mut e = expected();
    e.bound_to = Some("zZ6ymYfEhw-Kq92WnU_42d3zpQus2lvi5S2lpIYtDKI");
    assert!(check(&proof(&claims()), &e, &policy(), NOW_S).is_ok());
    e.bound_to = Some("rsU1Mf3xawxNAfWPNEh90ai0LtHFugxPMIGuADW8aQ8");
    assert_eq!(
        check(&proof(&claims()), &e, &policy(), NOW_S),
        Err(ProofError::OtherKey)
    );
    // Not even a broken signature is looked at.
    let mut broken = proof(&claims());
    broken.push_str("AAAA");
    assert_eq!(
        check(&broken, &e, &policy(), NOW_S),
        Err(ProofError::OtherKey)
    );
}

#[test]
fn a_good_proof_gives_its_jti_thumbprint_and_iat() {
    let got = check_now(&proof(&claims())).unwrap();
    assert_eq!(
        got,
        Proof {
            jti: "e1j3V_bKic8-LAEB".into(),
            jkt: "zZ6ymYfEhw-Kq92WnU_42d3zpQus2lvi5S2lpIYtDKI".into(),
            iat: NOW_S,
            nonce: None,
        }
    );
    let eddsa = proof_with("EdDSA", TestKey::Ed25519, None, "dpop+jwt", &claims());
    assert_eq!(
        check_now(&eddsa).unwrap().jkt,
        "rsU1Mf3xawxNAfWPNEh90ai0LtHFugxPMIGuADW8aQ8"
    );
    // The media type compares without case, as RFC 7515 §4.1.9 says.
    let upper = proof_with("ES256", TestKey::P256, None, "DPoP+JWT", &claims());
    assert!(check_now(&upper).is_ok());
}

#[test]
fn the_algorithm_comes_from_the_configuration_and_the_key() {
    // PS256 is not in the configured set.
    let ps = proof_with("PS256", TestKey::RsaA, None, "dpop+jwt", &claims());
    assert_eq!(check_now(&ps), Err(ProofError::AlgNotAllowed));
    let mut with_ps = policy();
    with_ps.algorithms.insert(Alg::Ps256);
    assert!(check(&ps, &expected(), &with_ps, NOW_S).is_ok());
    // none and HS256: no code path, whatever the header says.
    let jwk = TestKey::P256.public_jwk();
    for alg in ["none", "HS256"] {
        let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk}).to_string();
        let forged = compact(&header, &claims().to_string(), b"");
        assert_eq!(check_now(&forged), Err(ProofError::AlgNotAllowed), "{alg}");
    }
    // An EC key under EdDSA, or an Ed25519 key under ES256.
    let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}).to_string();
    let mixed = compact(&header, &claims().to_string(), &[0; 64]);
    assert_eq!(check_now(&mixed), Err(ProofError::BadKey));
}

#[test]
fn the_header_must_be_a_dpop_proof_with_a_public_key() {
    assert_eq!(
        check_now(&proof_with("ES256", TestKey::P256, None, "jwt", &claims())),
        Err(ProofError::NotDpop)
    );
    let private = Value::Object(TestKey::P256.private_jwk());
    assert_eq!(
        check_now(&proof_with(
            "ES256",
            TestKey::P256,
            Some(private),
            "dpop+jwt",
            &claims()
        )),
        Err(ProofError::PrivateKey)
    );
    // A symmetric key is secret material too.
    let symmetric = json!({"kty": "oct", "k": "c2VjcmV0"});
    assert_eq!(
        check_now(&proof_with(
            "ES256",
            TestKey::P256,
            Some(symmetric),
            "dpop+jwt",
            &claims()
        )),
        Err(ProofError::PrivateKey)
    );
    let unknown_curve = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
    assert_eq!(
        check_now(&proof_with(
            "ES256",
            TestKey::P256,
            Some(unknown_curve),
            "dpop+jwt",
            &claims()
        )),
        Err(ProofError::BadKey)
    );
    for junk in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30"] {
        assert_eq!(check_now(junk), Err(ProofError::Malformed), "{junk}");
    }
}

#[test]
fn a_proof_signed_by_another_key_fails() {
    // The header names the P-256 key; the signature is the Ed25519 key's over the same bytes
    // (the EdDSA proof's signature put on the ES256 proof: wrong length and wrong key).
    let es = proof(&claims());
    let ed = proof_with("EdDSA", TestKey::Ed25519, None, "dpop+jwt", &claims());
    let (head, _) = es.rsplit_once('.').unwrap();
    let (_, other_sig) = ed.rsplit_once('.').unwrap();
    assert_eq!(
        check_now(&format!("{head}.{other_sig}")),
        Err(ProofError::BadSignature)
    );
    // Claims changed after signing.
    let mut parts: Vec<&str> = es.split('.').collect();
    let mut changed = claims();
    changed["htm"] = json!("GET");
    let body = crate::testdata::b64(changed.to_string().as_bytes());
    parts[1] = &body;
    assert_eq!(check_now(&parts.join(".")), Err(ProofError::BadSignature));
}

#[test]
fn claims_must_match_the_request() {
    let with = |name: &str, value: Value| {
        let mut c = claims();
        c[name] = value;
        check_now(&proof(&c))
    };
    for name in ["jti", "htm", "htu"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(name);
        assert_eq!(
            check_now(&proof(&c)),
            Err(ProofError::MissingClaim),
            "{name}"
        );
    }
    assert_eq!(with("jti", json!("")), Err(ProofError::MissingClaim));
    assert_eq!(
        with("jti", json!("j".repeat(MAX_JTI_LEN + 1))),
        Err(ProofError::MissingClaim)
    );
    assert_eq!(with("htm", json!("GET")), Err(ProofError::WrongMethod));
    assert_eq!(with("htm", json!("post")), Err(ProofError::WrongMethod));
    assert_eq!(
        with("htu", json!("https://api.example.com/api/orders/8")),
        Err(ProofError::WrongUri)
    );
    assert_eq!(
        with("htu", json!("http://api.example.com/api/orders/7")),
        Err(ProofError::WrongUri)
    );
    // A query-string trick: a proof for another path that carries this one in its query.
    assert_eq!(
        with(
            "htu",
            json!("https://api.example.com/api/orders/1?x=/api/orders/7")
        ),
        Err(ProofError::WrongUri)
    );
    // The same URI, written differently (RFC 3986 §6.2.2, §6.2.3), and with a query or
    // fragment, which htu ignores.
    for same in [
        "HTTPS://API.Example.COM:443/api/orders/7",
        "https://api.example.com/api/./x/../orders/7",
        "https://api.example.com/api/orders/7?page=2#top",
    ] {
        assert!(with("htu", json!(same)).is_ok(), "{same}");
    }
    assert!(same_uri(
        "https://a.example/p%2fq",
        "https://a.example/p%2Fq"
    ));
    assert!(!same_uri(
        "https://a.example/p%2fq",
        "https://a.example/p/q"
    ));
    assert!(!same_uri("https://user@a.example/p", "https://a.example/p"));
    assert!(!same_uri("not a uri", "not a uri"));
    assert_eq!(
        with("ath", json!(ath("another token"))),
        Err(ProofError::WrongToken)
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("ath");
    assert_eq!(check_now(&proof(&c)), Err(ProofError::WrongToken));
}

#[test]
fn iat_must_be_inside_the_window_either_way() {
    for (offset, ok) in [(-60, true), (-61, false), (60, true), (61, false)] {
        let mut c = claims();
        c["iat"] = json!(NOW_S + offset);
        let got = check_now(&proof(&c));
        assert_eq!(got.is_ok(), ok, "{offset}: {got:?}");
        if !ok {
            assert_eq!(got, Err(ProofError::Stale));
        }
    }
}

#[test]
fn a_required_nonce_must_be_the_current_one() {
    let mut want = expected();
    want.nonce = Some("n-1");
    let mut c = claims();
    assert_eq!(
        check(&proof(&c), &want, &policy(), NOW_S),
        Err(ProofError::WrongNonce)
    );
    c["nonce"] = json!("n-0");
    assert_eq!(
        check(&proof(&c), &want, &policy(), NOW_S),
        Err(ProofError::WrongNonce)
    );
    c["nonce"] = json!("n-1");
    assert!(check(&proof(&c), &want, &policy(), NOW_S).is_ok());
}

#[test]
fn descriptions_never_echo_the_proof() {
    for e in [
        ProofError::Malformed,
        ProofError::NotDpop,
        ProofError::AlgNotAllowed,
        ProofError::BadKey,
        ProofError::PrivateKey,
        ProofError::BadSignature,
        ProofError::MissingClaim,
        ProofError::WrongMethod,
        ProofError::WrongUri,
        ProofError::Stale,
        ProofError::WrongToken,
        ProofError::WrongNonce,
    ] {
        let d = e.describe();
        assert!(
            d.is_ascii() && !d.contains('"') && d.starts_with("the DPoP proof"),
            "{d}"
        );
    }
}

#[test]
fn the_request_uri_comes_from_the_request_or_the_external_origin() {
    assert_eq!(
        request_uri("https", "API.example.com:443", "/api/orders/7?page=2", None).as_deref(),
        Some(URI)
    );
    // TLS ended in front of Envoy: the configured origin, whatever :scheme says.
    assert_eq!(
        request_uri(
            "http",
            "internal:8080",
            "/api/orders/7",
            Some("https://api.example.com/")
        )
        .as_deref(),
        Some(URI)
    );
    assert_eq!(request_uri("ftp", "a", "/x", None), None);
    assert_eq!(request_uri("https", "", "/x", None), None);
    assert_eq!(request_uri("https", "a.example", "x", None), None);
    // What it gives compares equal to a proof's htu for the same resource.
    let uri = request_uri("https", "api.example.com", "/api/./orders/7", None).unwrap();
    assert!(same_uri(URI, &uri));
}

#[test]
fn the_challenge_names_the_accepted_algorithms_and_the_error() {
    assert_eq!(
        challenge(policy().algorithms, None),
        "DPoP algs=\"ES256 EdDSA\""
    );
    assert_eq!(
        challenge(
            policy().algorithms,
            Some(("invalid_dpop_proof", ProofError::Stale.describe()))
        ),
        "DPoP algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"the DPoP proof's iat is outside the accepted window\""
    );
}

/// A proof made by a real DPoP client: npm openid-client 6.9.1's `fetchProtectedResource` with
/// a `getDPoPHandle` handle (`tests/rig/rp/rp.mjs dpop_fetch`), for a PUT to an echo upstream
/// with an opaque DPoP-bound token from oidc-provider; its key's thumbprint as jwcrypto 1.6.1
/// computes it.
#[test]
fn a_proof_from_openid_client_holds_for_its_request_only() {
    let fixture: Value =
        serde_json::from_str(include_str!("../testdata/dpop_openid_client.json")).unwrap();
    let text = |name: &str| fixture[name].as_str().unwrap();
    let iat = fixture["iat"].as_i64().unwrap();
    let expected = Expected {
        method: text("method"),
        uri: text("url"),
        access_token: text("token"),
        nonce: None,
        bound_to: None,
    };
    let got = check(text("proof"), &expected, &policy(), iat + 5).unwrap();
    assert_eq!(got.jkt, text("jkt"));
    assert_eq!(got.jti, text("jti"));
    let other_method = Expected {
        method: "GET",
        ..expected
    };
    assert_eq!(
        check(text("proof"), &other_method, &policy(), iat),
        Err(ProofError::WrongMethod)
    );
    let other_token = Expected {
        access_token: "another",
        ..expected
    };
    assert_eq!(
        check(text("proof"), &other_token, &policy(), iat),
        Err(ProofError::WrongToken)
    );
    assert_eq!(
        check(text("proof"), &expected, &policy(), iat + 61),
        Err(ProofError::Stale)
    );
}

/// A P-256 test key's public JWK with a member no other test uses, so that what this test
/// finds among the recent keys is its own doing (tests run in parallel and share them).
fn own_jwk(tag: &str) -> Value {
    let mut jwk = TestKey::P256.public_jwk();
    let m = jwk.as_object_mut().unwrap();
    m.remove("kid");
    m.insert("x-test".into(), json!(tag));
    jwk
}

/// A good proof signed by the P-256 test key, carrying `jwk` as its key.
fn proof_by_jwk(jwk: &Value) -> String {
    proof_with(
        "ES256",
        TestKey::P256,
        Some(jwk.clone()),
        "dpop+jwt",
        &claims(),
    )
}

#[test]
fn a_proof_key_and_its_table_are_kept_for_the_next_proof() {
    let jwk = own_jwk("kept");
    let good = proof_by_jwk(&jwk);
    assert!(check_now(&good).is_ok());
    let kept = recent_key(jwk.as_object().unwrap()).expect("kept after it verified");
    // The key that verified the next proof, parsed again, finds the table of the kept one
    // (built by the first verification) instead of building another.
    let again = crate::jwks::public_key(&jwk).unwrap();
    match (&kept.material, &again.material) {
        (crate::key::KeyMaterial::P256(a), crate::key::KeyMaterial::P256(b)) => {
            assert!(a.shares_table_with(b));
        }
        _ => panic!("P-256 keys"),
    }
    assert!(check_now(&good).is_ok(), "verifies with the kept key");
}

#[test]
fn only_keys_that_verified_a_proof_are_kept_and_only_their_own_jwk_finds_them() {
    // A proof whose signature does not verify leaves its key out.
    let jwk = own_jwk("bad-signature");
    let good = proof_by_jwk(&jwk);
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", crate::testdata::b64(&[7u8; 64]));
    assert_eq!(check_now(&forged), Err(ProofError::BadSignature));
    assert!(recent_key(jwk.as_object().unwrap()).is_none());
    // The same key material under a JWK that parsing refuses ("use": "enc") is refused even
    // while the key is kept: the cache is keyed by the whole JWK.
    let kept = own_jwk("kept-then-enc");
    let ok = proof_with(
        "ES256",
        TestKey::P256,
        Some(kept.clone()),
        "dpop+jwt",
        &claims(),
    );
    assert!(check_now(&ok).is_ok());
    let mut enc = kept;
    enc["use"] = json!("enc");
    let refused = proof_with("ES256", TestKey::P256, Some(enc), "dpop+jwt", &claims());
    assert_eq!(check_now(&refused), Err(ProofError::BadKey));
}

#[test]
fn at_most_recent_keys_are_kept_most_recent_first() {
    let jwks: Vec<Value> = (0..=RECENT_KEYS)
        .map(|i| own_jwk(&format!("lru-{i}")))
        .collect();
    let key = crate::jwks::public_key(&TestKey::P256.public_jwk()).unwrap();
    let mut recent = VecDeque::new();
    for jwk in &jwks {
        remember_in(&mut recent, jwk.as_object().unwrap(), key.clone());
    }
    assert_eq!(recent.len(), RECENT_KEYS);
    assert!(
        !recent
            .iter()
            .any(|(j, _)| j == jwks[0].as_object().unwrap()),
        "the oldest is dropped"
    );
    assert_eq!(&recent[0].0, jwks[RECENT_KEYS].as_object().unwrap());
    // Remembered again, a key moves to the front and is held once.
    remember_in(&mut recent, jwks[3].as_object().unwrap(), key);
    assert_eq!(recent.len(), RECENT_KEYS);
    assert_eq!(&recent[0].0, jwks[3].as_object().unwrap());
}
