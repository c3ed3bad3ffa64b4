//! JWT verification of well-signed tokens with fuzzer-chosen contents. The fuzzer picks the JOSE
//! header (`alg`, `kid`, `typ`, `crit`) and the claims (`iss`, `exp`, `nbf`, `iat`, `aud`, extra
//! members); the target signs them with the Ed25519 fixture key, so the signature always checks
//! and the time, issuer, audience and type rules are what decides. Then it flips bytes.
//! Checks: never panics; a token with every rule satisfied verifies, and one breaking any rule
//! does not (a small model of `jwt::verify`); a flipped token verifies only if its decoded
//! header and payload are unchanged (no one can alter a signed token).
#![no_main]

#[path = "../common.rs"]
mod common;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use tollgate_core::jwt::{peek, verify, JwtError, VerifiedClaims};

const ED25519: &str = include_str!("../../crates/tollgate-core/src/testdata/ed25519.jwk.json");
const AUD: &str = "api://orders";
const ALGS: [&str; 6] = ["EdDSA", "ES256", "RS256", "none", "HS256", "eddsa"];
const KIDS: [&str; 3] = ["ed-25519", "ec-p256", "rsa-a"];
const RESERVED: [&str; 5] = ["iss", "exp", "nbf", "iat", "aud"];

/// The `iss` claim: the issuer under test, another string, or not a string at all.
#[derive(Arbitrary, Debug, PartialEq)]
enum Iss {
    Ours,
    Other(String),
    Number(i64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    alg: u8,
    kid: Option<Result<u8, String>>,
    typ: Option<String>,
    crit: bool,
    at_jwt: bool,
    iss: Option<Iss>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    aud: Option<Vec<String>>,
    extra: Vec<(String, String)>,
    flips: Vec<(u16, u8)>,
}

/// Small values are offsets from now (to land on both sides of the window), others absolute.
fn time(v: i64) -> i64 {
    if i64::from(v as i16) == v {
        common::NOW_S + v
    } else {
        v
    }
}

fn sign(signing_input: &str) -> String {
    let jwk: Value = serde_json::from_str(ED25519).unwrap_or_default();
    let d = URL_SAFE_NO_PAD
        .decode(jwk["d"].as_str().unwrap_or_default())
        .unwrap_or_default();
    // The fixture's `d` is 32 bytes; were it not, the zero seed's signatures fail to verify
    // and the target's invariant says so. (ed25519-compact without its `random` feature, which
    // only jwt-compact's `ed25519-compact` feature turned on, has no `Seed::default()`.)
    let seed = ed25519_compact::Seed::from_slice(&d)
        .unwrap_or_else(|_| ed25519_compact::Seed::new([0; ed25519_compact::Seed::BYTES]));
    let sk = ed25519_compact::KeyPair::from_seed(seed).sk;
    URL_SAFE_NO_PAD.encode(sk.sign(signing_input, None).as_slice())
}

/// Peeks and verifies as the filter does (the token's `alg`/`kid` choose keys).
fn check(token: &str, at_jwt: bool) -> Result<VerifiedClaims, JwtError> {
    let peeked = peek(token)?;
    let alg = peeked.alg()?;
    let audiences = [AUD.to_owned()];
    let expect = common::expectations(common::ISS, &audiences, at_jwt);
    let mut last = Err(JwtError::BadSignature);
    for key in common::keys().candidates(peeked.kid(), alg) {
        last = verify(&peeked, key, &expect, common::NOW_S);
        if last.is_ok() {
            break;
        }
    }
    last
}

fn decoded(token: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let payload = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    Some((header, payload))
}

fuzz_target!(|input: Input| {
    let alg = ALGS[usize::from(input.alg) % ALGS.len()];
    let mut header = Map::new();
    header.insert("alg".into(), alg.into());
    let kid = match &input.kid {
        Some(Ok(i)) => Some(KIDS[usize::from(*i) % KIDS.len()].to_owned()),
        Some(Err(s)) => Some(s.clone()),
        None => None,
    };
    if let Some(kid) = &kid {
        header.insert("kid".into(), kid.as_str().into());
    }
    if let Some(typ) = &input.typ {
        header.insert("typ".into(), typ.as_str().into());
    }
    if input.crit {
        header.insert("crit".into(), json!(["exp"]));
    }
    let mut claims = Map::new();
    for (name, value) in &input.extra {
        if !RESERVED.contains(&name.as_str()) {
            claims.insert(name.clone(), value.as_str().into());
        }
    }
    let iss = match &input.iss {
        Some(Iss::Ours) => Some(Value::from(common::ISS)),
        Some(Iss::Other(other)) => Some(Value::from(other.as_str())),
        Some(Iss::Number(n)) => Some(Value::from(*n)),
        None => None,
    };
    if let Some(iss) = iss {
        claims.insert("iss".into(), iss);
    }
    let times = [("exp", input.exp), ("nbf", input.nbf), ("iat", input.iat)];
    for (name, t) in times {
        if let Some(t) = t {
            claims.insert(name.into(), time(t).into());
        }
    }
    if let Some(aud) = &input.aud {
        claims.insert("aud".into(), json!(aud));
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()),
    );
    let token = format!("{signing_input}.{}", sign(&signing_input));

    // The model: every rule Tollgate applies, written out independently.
    let skew = common::SKEW_S as i64;
    let now = common::NOW_S;
    let typ_ok =
        |t: &str| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt");
    let valid = alg == "EdDSA"
        && kid.as_deref().is_none_or(|k| k == "ed-25519")
        && !input.crit
        && (input.iss == Some(Iss::Ours) || input.iss == Some(Iss::Other(common::ISS.into())))
        && input
            .exp
            .is_some_and(|t| now <= time(t).saturating_add(skew))
        && input.nbf.is_none_or(|t| time(t) <= now + skew)
        && input.iat.is_none_or(|t| time(t) <= now + skew)
        && input
            .aud
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == AUD))
        && (!input.at_jwt || input.typ.as_deref().is_some_and(typ_ok));
    let outcome = check(&token, input.at_jwt);
    // Timestamps far outside chrono's range are refused as malformed: not a model violation.
    let extreme = [input.exp, input.nbf, input.iat]
        .iter()
        .flatten()
        .any(|t| time(*t).unsigned_abs() > 1 << 40);
    if !extreme {
        assert_eq!(
            outcome.is_ok(),
            valid,
            "model disagrees: {outcome:?} for {input:?}"
        );
    }
    if let Ok(verified) = &outcome {
        assert_eq!(verified.claims.get("iss"), Some(&Value::from(common::ISS)));
    }

    // Bit flips anywhere in the token: content that changed must not verify.
    let mut bytes = token.clone().into_bytes();
    for (pos, mask) in &input.flips {
        if !bytes.is_empty() {
            let i = usize::from(*pos) % bytes.len();
            bytes[i] ^= mask;
        }
    }
    if let Ok(flipped) = String::from_utf8(bytes) {
        if flipped != token && check(&flipped, input.at_jwt).is_ok() {
            assert_eq!(decoded(&flipped), decoded(&token), "altered token verified");
        }
    }
});
