//! Test fixtures shared by the unit tests: fixed private keys (JWK files beside this one), a
//! fixed clock, and token minting with jwt-compact.
//!
//! The keys were generated once (jwcrypto) and are committed: they are TEST KEYS ONLY, public
//! by construction, and must never be trusted anywhere. Loading them is fast; generating RSA
//! keys at test time is not.
//!
//! | file                | key                  | kid        |
//! |---------------------|----------------------|------------|
//! | `rsa_a.jwk.json`    | RSA-2048             | `rsa-a`    |
//! | `rsa_b.jwk.json`    | RSA-2048             | `rsa-b`    |
//! | `rsa_1024.jwk.json` | RSA-1024 (too weak)  | `rsa-weak` |
//! | `p256.jwk.json`     | EC P-256             | `ec-p256`  |
//! | `p384.jwk.json`     | EC P-384             | `ec-p384`  |
//! | `ed25519.jwk.json`  | OKP Ed25519          | `ed-25519` |
//! | `rsa_a.pub.pem`     | `rsa-a` public key as SPKI PEM (the HMAC-confusion secret) | |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::{Ed25519, Hs256, Hs256Key, Rsa};
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{Map, Value};

use crate::crypto::{Es256, Es384};

/// The fixed "now" of every test: 2023-11-14T22:13:20Z.
pub const NOW_S: i64 = 1_700_000_000;
pub const NOW_MS: u64 = NOW_S as u64 * 1000;

pub const ISS_A: &str = "https://as1.example.com";
pub const ISS_B: &str = "https://as2.example.com";
pub const AUD: &str = "api://orders";

/// `rsa-a`'s public key as PEM text: what an HS256 key-confusion attacker uses as HMAC secret.
pub const RSA_A_PUBLIC_PEM: &str = include_str!("rsa_a.pub.pem");

/// One of the fixed test keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    RsaA,
    RsaB,
    Rsa1024,
    P256,
    P384,
    Ed25519,
}

/// JWK members that are private key material.
const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

impl TestKey {
    fn text(self) -> &'static str {
        match self {
            TestKey::RsaA => include_str!("rsa_a.jwk.json"),
            TestKey::RsaB => include_str!("rsa_b.jwk.json"),
            TestKey::Rsa1024 => include_str!("rsa_1024.jwk.json"),
            TestKey::P256 => include_str!("p256.jwk.json"),
            TestKey::P384 => include_str!("p384.jwk.json"),
            TestKey::Ed25519 => include_str!("ed25519.jwk.json"),
        }
    }

    /// The full private JWK.
    pub fn private_jwk(self) -> Map<String, Value> {
        serde_json::from_str(self.text()).expect("fixture JWK is JSON")
    }

    /// The fixture's own `kid`.
    pub fn kid(self) -> String {
        self.private_jwk()["kid"]
            .as_str()
            .expect("fixture has a kid")
            .to_owned()
    }

    /// The public JWK as the fixture defines it (its own `kid`, no `alg`, no `use`).
    pub fn public_jwk(self) -> Value {
        let mut jwk = self.private_jwk();
        for m in PRIVATE_MEMBERS {
            jwk.remove(m);
        }
        Value::Object(jwk)
    }

    /// The public JWK with another `kid` and, optionally, a pinned `alg`.
    pub fn public_jwk_as(self, kid: &str, alg: Option<&str>) -> Value {
        let mut jwk = self.public_jwk();
        jwk["kid"] = Value::from(kid);
        if let Some(alg) = alg {
            jwk["alg"] = Value::from(alg);
        }
        jwk
    }

    fn member(self, name: &str) -> Vec<u8> {
        let jwk = self.private_jwk();
        let text = jwk[name].as_str().expect("fixture member is a string");
        URL_SAFE_NO_PAD
            .decode(text)
            .expect("fixture member is base64url")
    }

    pub fn rsa_private(self) -> rsa::RsaPrivateKey {
        let int = |m: &str| rsa::BigUint::from_bytes_be(&self.member(m));
        rsa::RsaPrivateKey::from_components(int("n"), int("e"), int("d"), vec![int("p"), int("q")])
            .expect("fixture RSA key")
    }

    fn p256(self) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&self.member("d")).expect("fixture P-256 key")
    }

    fn p384(self) -> p384::ecdsa::SigningKey {
        p384::ecdsa::SigningKey::from_slice(&self.member("d")).expect("fixture P-384 key")
    }

    pub fn ed25519(self) -> ed25519_compact::SecretKey {
        let seed = ed25519_compact::Seed::from_slice(&self.member("d")).expect("fixture seed");
        ed25519_compact::KeyPair::from_seed(seed).sk
    }
}

/// Verifies a token the gateway signed the way its upstream would, through the crate's own
/// path: the published `jwks` (every key usable), the key its `kid` names, then `jwt::verify`
/// for EdDSA or ES256 with `issuer` and `audience`, no clock skew, at `now_s`.
pub fn verify_with_published_jwks(
    token: &str,
    jwks: &str,
    issuer: &str,
    audience: &str,
    now_s: i64,
) -> Result<crate::jwt::VerifiedClaims, crate::jwt::JwtError> {
    use crate::key::{Alg, AlgSet};
    let (set, skipped) =
        crate::jwks::KeySet::parse(jwks.as_bytes()).expect("the published JWKS loads");
    assert_eq!(skipped, 0, "every published key is usable");
    let peeked = crate::jwt::peek(token)?;
    let alg = peeked.alg()?;
    let key = set
        .candidates(peeked.kid(), alg)
        .next()
        .ok_or(crate::jwt::JwtError::UnknownKey)?;
    let mut algorithms = AlgSet::default();
    algorithms.insert(Alg::EdDsa);
    algorithms.insert(Alg::Es256);
    let audiences = [audience.to_owned()];
    let expect = crate::jwt::Expectations {
        issuer,
        audiences: &audiences,
        algorithms,
        clock_skew_s: 0,
        require_at_jwt: false,
    };
    crate::jwt::verify(&peeked, key, &expect, now_s)
}

/// `{"keys": [...]}`.
pub fn jwks(keys: &[Value]) -> Value {
    serde_json::json!({ "keys": keys })
}

/// A JOSE header with optional `kid` and `typ` (`alg` is added by the signer).
pub fn header(kid: Option<&str>, typ: Option<&str>) -> Header {
    let mut h = Header::empty();
    if let Some(kid) = kid {
        h = h.with_key_id(kid);
    }
    if let Some(typ) = typ {
        h = h.with_token_type(typ);
    }
    h
}

/// Signs `payload` (a JSON object, `exp`/`nbf`/`iat` written as plain integers) with `key`
/// under the JOSE algorithm `alg`. The key must fit the algorithm.
pub fn sign<H: serde::Serialize>(
    alg: &str,
    key: TestKey,
    header: &Header<H>,
    payload: &Value,
) -> String {
    let claims = Claims::new(payload.as_object().expect("payload is an object").clone());
    let token = match alg {
        "RS256" => Rsa::rs256().token(header, &claims, &key.rsa_private()),
        "RS384" => Rsa::rs384().token(header, &claims, &key.rsa_private()),
        "RS512" => Rsa::rs512().token(header, &claims, &key.rsa_private()),
        "PS256" => Rsa::ps256().token(header, &claims, &key.rsa_private()),
        "PS384" => Rsa::ps384().token(header, &claims, &key.rsa_private()),
        "PS512" => Rsa::ps512().token(header, &claims, &key.rsa_private()),
        "ES256" => Es256.token(header, &claims, &key.p256()),
        "ES384" => Es384.token(header, &claims, &key.p384()),
        "EdDSA" => Ed25519.token(header, &claims, &key.ed25519()),
        other => panic!("no signer for {other}"),
    };
    token.expect("signing succeeds")
}

/// A DPoP proof (RFC 9449 §4.2) signed by `key` under `alg`, with `jwk` in its header (the
/// key's public JWK without `kid` unless given) and `typ` as given.
pub fn dpop_proof(
    alg: &str,
    key: TestKey,
    jwk: Option<Value>,
    typ: &str,
    claims: &Value,
) -> String {
    let mut jwk = jwk.unwrap_or_else(|| key.public_jwk());
    if let Some(m) = jwk.as_object_mut() {
        m.remove("kid");
    }
    let header = Header::new(serde_json::json!({ "jwk": jwk })).with_token_type(typ);
    sign(alg, key, &header, claims)
}

/// HS256 over `payload` with an arbitrary byte string as the HMAC secret.
pub fn sign_hs256(secret: &[u8], header: &Header, payload: &Value) -> String {
    let claims = Claims::new(payload.as_object().expect("payload is an object").clone());
    Hs256
        .token(header, &claims, &Hs256Key::new(secret))
        .expect("signing succeeds")
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS assembled by hand from raw header and payload text and signature bytes.
pub fn compact(header_json: &str, payload_json: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header_json.as_bytes()),
        b64(payload_json.as_bytes()),
        b64(signature)
    )
}

/// The deepest nesting serde_json accepts (its recursion limit is 128, counting the level that
/// fails): deeper documents are refused (`RecursionLimitExceeded`) before they can exhaust the
/// stack (1 MiB in the plugin's wasm, as in the wasm32 tests).
pub const JSON_MAX_DEPTH: usize = 127;

/// `depth` nested JSON arrays around `0`: `[[[0]]]` for 3.
pub fn nested_json(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}
