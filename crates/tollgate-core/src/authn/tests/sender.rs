//! Sender-constrained tokens in the decision (issue 15): DPoP proofs (RFC 9449) and client
//! certificates (RFC 8705) against the token's `cnf`, the route's and the issuer's modes, on a
//! fresh verification, a cached one and an introspection answer. Proofs are signed with the
//! test keys; the thumbprints are jwcrypto's (see `dpop/tests.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::authn::sender::ProofUse;
use crate::binding::BindingError;
use crate::dpop::{ath, nonce};
use crate::testdata::dpop_proof;

/// jwcrypto's RFC 7638 thumbprints of the P-256 and Ed25519 test keys.
const JKT_P256: &str = "zZ6ymYfEhw-Kq92WnU_42d3zpQus2lvi5S2lpIYtDKI";
const JKT_ED25519: &str = "rsU1Mf3xawxNAfWPNEh90ai0LtHFugxPMIGuADW8aQ8";
/// Some client certificate's `x5t#S256`, and another's.
const X5T: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";
const OTHER_X5T: &str = "Z0Oh1JTVjHUOzf7qAIvTyj8Zm4bVBTpWO7xF1PYt5bA";

const URI: &str = "https://api.example.com/api/orders";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The standard issuers and routes plus `/dpop` (DPoP required) and `/mtls` (certificate
/// required), with `as1` taking certificate-bound tokens (`mtls` allowed) and the given
/// changes to `as1`.
fn env_with(as1: Value, identity: Value) -> Env {
    let mut cfg: Value = serde_json::from_str(&config_json(json!({}))).unwrap();
    cfg["issuers"][0]["mtls"] = json!({"mode": "allowed"});
    for (k, v) in as1.as_object().unwrap() {
        cfg["issuers"][0][k] = v.clone();
    }
    let routes = cfg["routes"].as_array_mut().unwrap();
    routes.insert(
        0,
        json!({"name": "dpop", "match": {"prefix": "/dpop"}, "require": {"dpop": "required"}}),
    );
    routes.insert(
        0,
        json!({"name": "mtls", "match": {"prefix": "/mtls"}, "require": {"mtls": "required"}}),
    );
    cfg["identity"] = identity;
    Env::from_text(&cfg.to_string())
}

fn env() -> Env {
    env_with(json!({}), json!({}))
}

/// An `as1` token (RS256) with `cnf`.
fn bound_token(cnf: Value) -> String {
    let mut claims = as1_payload("read write");
    claims["cnf"] = cnf;
    sign(
        "RS256",
        TestKey::RsaA,
        &header(Some("rsa-a"), None),
        &claims,
    )
}

fn dpop_bound() -> String {
    bound_token(json!({"jkt": JKT_P256}))
}

/// A proof by `key` for `method` `uri`, `token`, issued `iat`, with `jti`.
fn proof_by(key: TestKey, method: &str, uri: &str, token: &str, iat: i64, jti: &str) -> String {
    let alg = if key == TestKey::Ed25519 {
        "EdDSA"
    } else {
        "ES256"
    };
    let claims = json!({"jti": jti, "htm": method, "htu": uri, "iat": iat, "ath": ath(token)});
    dpop_proof(alg, key, None, "dpop+jwt", &claims)
}

fn proof(token: &str) -> String {
    proof_by(TestKey::P256, "GET", URI, token, NOW_S, "jti-1")
}

/// What a request offers: its `Authorization` value, `DPoP` values, client certificate.
struct Offer<'a> {
    path: &'a str,
    authorization: String,
    dpop: Vec<String>,
    cert: Option<&'a str>,
    fresh: Option<Cached>,
    nonce_secret: Option<&'a [u8]>,
}

impl<'a> Offer<'a> {
    fn dpop(path: &'a str, token: &str, proof: String) -> Offer<'a> {
        Offer {
            path,
            authorization: format!("DPoP {token}"),
            dpop: vec![proof],
            cert: None,
            fresh: None,
            nonce_secret: None,
        }
    }

    fn bearer(path: &'a str, token: &str) -> Offer<'a> {
        Offer {
            path,
            authorization: format!("Bearer {token}"),
            dpop: Vec::new(),
            cert: None,
            fresh: None,
            nonce_secret: None,
        }
    }

    fn cert(mut self, x5t: &'a str) -> Offer<'a> {
        self.cert = Some(x5t);
        self
    }
}

impl Env {
    /// `GET https://api.example.com{path}` as `offer` says, at [`NOW_MS`], not waiting.
    fn offer(&mut self, offer: &Offer<'_>) -> Decision {
        let req = RequestFacts {
            method: "GET",
            path: offer.path,
            authority: "api.example.com",
            route_name: None,
            headers: &[],
        };
        let dpop: Vec<&str> = offer.dpop.iter().map(String::as_str).collect();
        let mut deciding = Deciding {
            cfg: &self.cfg,
            ring: &self.ring,
            cache: &mut self.cache,
            now_ms: NOW_MS,
            nonce_secret: offer.nonce_secret,
        };
        let request = Request {
            facts: &req,
            authorization: &[&offer.authorization],
            sender: Sender {
                scheme: "https",
                dpop: &dpop,
                cert_x5t: offer.cert,
            },
        };
        authenticate(&mut deciding, &request, MayWait::No, offer.fresh.as_ref())
    }
}

fn denial(d: &Decision) -> (&Denial, Challenge) {
    match d {
        Decision::Done(Verdict::Deny {
            denial, challenge, ..
        }) => (denial, *challenge),
        other => panic!("not denied: {other:?}"),
    }
}

fn proof_use(d: &Decision) -> Option<&ProofUse> {
    match d {
        Decision::Done(Verdict::Allow { proof, .. }) => proof.as_deref(),
        other => panic!("not allowed: {other:?}"),
    }
}

fn binding_header(d: &Decision) -> Option<String> {
    headers_of(d)
        .into_iter()
        .find(|(n, _)| n == "x-tollgate-cnf")
        .map(|(_, v)| v)
}

#[test]
fn a_dpop_bound_token_with_its_proof_passes_and_hands_the_proof_to_the_replay_store() {
    let mut env = env();
    let token = dpop_bound();
    let d = env.offer(&Offer::dpop("/api/orders", &token, proof(&token)));
    assert!(allowed(AS1, false)(&d), "{d:?}");
    assert_eq!(binding_header(&d), Some(format!("dpop;jkt={JKT_P256}")));
    let used = proof_use(&d).expect("a proof to record");
    assert_eq!((used.jkt.as_str(), used.jti.as_str()), (JKT_P256, "jti-1"));
    // Counted until the end of its iat window (60 s) and a second more.
    assert_eq!(used.until_ms, NOW_MS + 61_000);
    // The token is cached now; the next request still needs a proof of its own.
    let again = env.offer(&Offer::dpop(
        "/api/orders",
        &token,
        proof_by(TestKey::P256, "POST", URI, &token, NOW_S, "jti-2"),
    ));
    assert_eq!(
        denial(&again).0,
        &Denial::InvalidDpopProof("the DPoP proof is for another method")
    );
    let cached = env.offer(&Offer::dpop(
        "/api/orders",
        &token,
        proof_by(TestKey::P256, "GET", URI, &token, NOW_S, "jti-3"),
    ));
    assert!(allowed(AS1, true)(&cached), "{cached:?}");
}

#[test]
fn every_proof_check_refuses_with_invalid_dpop_proof_in_the_dpop_challenge() {
    let token = dpop_bound();
    let other_uri = "https://api.example.com/api/other";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "the request carries no DPoP proof"),
        (
            vec![proof(&token), proof(&token)],
            "the request carries more than one DPoP header",
        ),
        (
            vec![proof_by(
                TestKey::P256,
                "GET",
                other_uri,
                &token,
                NOW_S,
                "j",
            )],
            "the DPoP proof is for another URI",
        ),
        (
            vec![proof_by(TestKey::P256, "GET", URI, &token, NOW_S - 61, "j")],
            "the DPoP proof's iat is outside the accepted window",
        ),
        (
            vec![proof_by(
                TestKey::P256,
                "GET",
                URI,
                "another-token",
                NOW_S,
                "j",
            )],
            "the DPoP proof's ath does not match the access token",
        ),
        (
            vec![dpop_proof(
                "ES256",
                TestKey::P256,
                Some(json!(TestKey::P256.private_jwk())),
                "dpop+jwt",
                &json!({"jti": "j", "htm": "GET", "htu": URI, "iat": NOW_S, "ath": ath(&token)}),
            )],
            "the DPoP proof's jwk holds a private key",
        ),
    ];
    for (proofs, why) in cases {
        let mut env = env();
        let mut offer = Offer::dpop("/api/orders", &token, String::new());
        offer.dpop = proofs;
        let d = env.offer(&offer);
        let (denied, challenge) = denial(&d);
        assert_eq!(denied, &Denial::InvalidDpopProof(why));
        assert_eq!(challenge.used, Scheme::Dpop, "{why}");
        let reply = crate::outcome::reply(denied, "api", challenge, None);
        let dpop_challenge = &reply.headers[2].1;
        assert!(
            dpop_challenge.starts_with("DPoP algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\""),
            "{dpop_challenge}"
        );
        assert_eq!(reply.headers[1].1, "Bearer realm=\"api\"", "no error there");
    }
}

#[test]
fn a_proof_by_another_key_a_downgrade_and_an_unbound_dpop_token_are_refused() {
    let token = dpop_bound();
    let mut env = env();
    let other = proof_by(TestKey::Ed25519, "GET", URI, &token, NOW_S, "j");
    let d = env.offer(&Offer::dpop("/api/orders", &token, other));
    assert_eq!(denial(&d).0, &Denial::Binding(BindingError::WrongKey));

    // A DPoP-bound token as Bearer: refused, the error in the DPoP challenge.
    let d = env.offer(&Offer::bearer("/api/orders", &token));
    let (denied, challenge) = denial(&d);
    assert_eq!(denied, &Denial::Binding(BindingError::Downgrade));
    assert_eq!(challenge.used, Scheme::Bearer);
    let reply = crate::outcome::reply(denied, "api", challenge, None);
    assert_eq!(reply.headers[1].1, "Bearer realm=\"api\"");
    assert!(reply.headers[2].1.contains("error=\"invalid_token\""));

    // An unbound token with the DPoP scheme and a good proof.
    let unbound = as1_read_write_token();
    let d = env.offer(&Offer::dpop("/api/orders", &unbound, proof(&unbound)));
    assert_eq!(denial(&d).0, &Denial::Binding(BindingError::NotDpopBound));
    let _ = JKT_ED25519;
}

#[test]
fn a_dpop_required_route_takes_only_dpop_bound_tokens_and_challenges_with_dpop_only() {
    let mut env = env();
    let d = env.offer(&Offer::bearer("/dpop/x", &as1_read_write_token()));
    let (denied, challenge) = denial(&d);
    assert_eq!(denied, &Denial::Binding(BindingError::DpopRequired));
    assert!(!challenge.bearer);
    let reply = crate::outcome::reply(denied, "api", challenge, None);
    let www: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        www,
        ["DPoP algs=\"ES256 EdDSA\", error=\"invalid_token\", error_description=\"this resource requires a DPoP-bound token\""]
    );
    // Bearer credentials are still read there (to say why they do not do).
    let missing = env.offer(&Offer {
        authorization: String::new(),
        ..Offer::bearer("/dpop/x", "")
    });
    assert_eq!(denial(&missing).0, &Denial::MissingToken);
    let token = dpop_bound();
    assert!(allowed(AS1, false)(&env.offer(&Offer::dpop(
        "/dpop/x",
        &token,
        proof_by(
            TestKey::P256,
            "GET",
            "https://api.example.com/dpop/x",
            &token,
            NOW_S,
            "j"
        )
    ))));
}

#[test]
fn dpop_off_refuses_the_scheme_and_bound_tokens_and_does_not_advertise_it() {
    let mut env = env_with(json!({"dpop": {"mode": "off"}}), json!({}));
    let token = dpop_bound();
    let d = env.offer(&Offer::bearer("/as1/x", &token));
    let (denied, challenge) = denial(&d);
    assert_eq!(denied, &Denial::Binding(BindingError::DpopOff));
    // The /as1 route takes as1 only: no DPoP there.
    assert_eq!(challenge.dpop, None);
    // The DPoP scheme is not read on a route where nobody takes it: no credentials.
    let d = env.offer(&Offer::dpop("/as1/x", &token, proof(&token)));
    assert_eq!(denial(&d).0, &Denial::MissingToken);
}

#[test]
fn certificate_bound_tokens_need_their_certificate() {
    let mut env = env();
    let token = bound_token(json!({"x5t#S256": X5T}));
    let d = env.offer(&Offer::bearer("/api/orders", &token).cert(X5T));
    assert!(allowed(AS1, false)(&d), "{d:?}");
    assert_eq!(binding_header(&d), Some(format!("mtls;x5t={X5T}")));
    assert_eq!(proof_use(&d), None);
    for (offer, why) in [
        (
            Offer::bearer("/api/orders", &token),
            BindingError::NoCertificate,
        ),
        (
            Offer::bearer("/api/orders", &token).cert(OTHER_X5T),
            BindingError::WrongCertificate,
        ),
        (
            Offer::bearer("/mtls/x", &as1_read_write_token()).cert(X5T),
            BindingError::MtlsRequired,
        ),
    ] {
        let d = env.offer(&offer);
        let (denied, challenge) = denial(&d);
        assert_eq!(denied, &Denial::Binding(why));
        let reply = crate::outcome::reply(denied, "api", challenge, None);
        assert!(
            reply.headers[1]
                .1
                .starts_with("Bearer realm=\"api\", error=\"invalid_token\""),
            "{:?}",
            reply.headers
        );
    }
    // as2 reads no certificate (mtls off): its certificate-bound tokens are refused.
    let mut claims =
        json!({"iss": ISS_B, "sub": "bob", "exp": NOW_S + 3600, "cnf": {"x5t#S256": X5T}});
    claims["scope"] = json!("read");
    let as2 = sign(
        "RS256",
        TestKey::RsaB,
        &header(Some("rsa-b"), None),
        &claims,
    );
    let d = env.offer(&Offer::bearer("/api/orders", &as2).cert(X5T));
    assert_eq!(denial(&d).0, &Denial::Binding(BindingError::MtlsOff));
}

#[test]
fn both_bindings_at_once() {
    let mut env = env();
    let token = bound_token(json!({"jkt": JKT_P256, "x5t#S256": X5T}));
    let d = env.offer(&Offer::dpop("/api/orders", &token, proof(&token)).cert(X5T));
    assert_eq!(
        binding_header(&d),
        Some(format!("dpop;jkt={JKT_P256}, mtls;x5t={X5T}"))
    );
    let d = env.offer(&Offer::dpop("/api/orders", &token, proof(&token)));
    assert_eq!(denial(&d).0, &Denial::Binding(BindingError::NoCertificate));
}

#[test]
fn an_introspection_answer_binds_an_opaque_token_like_a_jwt() {
    let mut env = env();
    let token = "opaque-token-1";
    let answer = |claims: Value| {
        Some(Cached::Valid(Verified {
            issuer: AS1,
            exp_ms: NOW_MS + 3_600_000,
            claims: claims.as_object().unwrap().clone().into(),
            key: None,
            rendered: Default::default(),
        }))
    };
    let bound =
        json!({"active": true, "token_type": "DPoP", "sub": "bob", "cnf": {"jkt": JKT_P256}});
    let mut offer = Offer::dpop("/api/orders", token, proof(token));
    offer.fresh = answer(bound.clone());
    assert!(allowed(AS1, false)(&env.offer(&offer)));
    let mut downgrade = Offer::bearer("/api/orders", token);
    downgrade.fresh = answer(bound);
    assert_eq!(
        denial(&env.offer(&downgrade)).0,
        &Denial::Binding(BindingError::Downgrade)
    );
    // `token_type: DPoP` without the key it is bound to cannot be checked.
    let mut keyless = Offer::dpop("/api/orders", token, proof(token));
    keyless.fresh = answer(json!({"active": true, "token_type": "DPoP", "sub": "bob"}));
    assert_eq!(
        denial(&env.offer(&keyless)).0,
        &Denial::InvalidToken("the token is DPoP-bound but its issuer names no key")
    );
}

#[test]
fn a_required_server_nonce_is_asked_for_then_accepted() {
    let mut env = env_with(json!({"dpop": {"require_nonce": true}}), json!({}));
    let token = dpop_bound();
    let mut offer = Offer::dpop("/api/orders", &token, proof(&token));
    offer.nonce_secret = Some(SECRET);
    let d = env.offer(&offer);
    let Denial::UseDpopNonce(fresh) = denial(&d).0.clone() else {
        panic!("{d:?}")
    };
    let now_s = NOW_MS / 1000;
    assert!(nonce::accepts(SECRET, &fresh, now_s, nonce::ROTATION_S));
    let reply = crate::outcome::reply(denial(&d).0, "api", denial(&d).1, None);
    assert!(reply
        .headers
        .contains(&("dpop-nonce".to_owned(), fresh.clone())));
    let claims = json!({"jti": "n1", "htm": "GET", "htu": URI, "iat": NOW_S,
                        "ath": ath(&token), "nonce": fresh});
    offer.dpop = vec![dpop_proof(
        "ES256",
        TestKey::P256,
        None,
        "dpop+jwt",
        &claims,
    )];
    // (The token's verification was cached by the first request.)
    assert!(allowed(AS1, true)(&env.offer(&offer)));
    // Without the nonce key (no randomness on this host): 503, never an unchecked proof.
    offer.nonce_secret = None;
    assert_eq!(denial(&env.offer(&offer)).0, &Denial::DpopUnavailable);
}

#[test]
fn the_upstream_gets_authorization_as_configured() {
    let token = dpop_bound();
    for (setting, expected) in [
        ("unchanged", Upstream::Keep),
        ("drop", Upstream::Drop),
        ("bearer", Upstream::Bearer(format!("Bearer {token}"))),
    ] {
        let mut env = env_with(json!({}), json!({"authorization": setting}));
        match env.offer(&Offer::dpop("/api/orders", &token, proof(&token))) {
            Decision::Done(Verdict::Allow { authorization, .. }) => {
                assert_eq!(authorization, expected, "{setting}")
            }
            other => panic!("{other:?}"),
        }
    }
}
