//! Tokens the gateway signs itself (issue 17, the gateway-signed backend token): private
//! signing keys loaded from JWKs ([`SigningKey`]), the set of them with one active key
//! ([`SigningKeys`]), compact JWS minting, and the public JWKS the gateway publishes.
//!
//! Decides: which private JWKs are acceptable signing keys (Ed25519 for `EdDSA`, P-256 for
//! `ES256`; the whole JWK checked, its public part recomputed from the private one), which key
//! signs (the active `kid`), what the JWS header says, and what is published (public members
//! only, rebuilt from the checked key rather than copied from the input).
//!
//! Never does: arithmetic on a private key (Ed25519 is `ed25519-dalek`'s signer, ES256 the
//! RustCrypto `ecdsa` signer behind `p256`'s `ecdsa` feature: both constant-time, both
//! deterministic: RFC 8032 and RFC 6979); read a clock (`iat`/`exp` are the caller's claims);
//! choose which claims a token carries; print private key material (it lives in
//! [`PrivateKey`], whose `Debug` is `[redacted]`; it has no `Display`, and the decoded JWK
//! members are wiped when dropped).
//!
//! RS256 is not offered: a constant-time RSA signer would mean linking the `rsa` crate (the
//! plugin's own RSA code verifies only, with variable-time public-key arithmetic), a large
//! addition to the `.wasm` for a key type the two curves already cover.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::key::Alg;

/// The JWS `typ` of [`SigningKeys::sign`]: a plain JWT (RFC 7519 §5.1).
pub const TYP_JWT: &str = "JWT";

/// Why a private JWK is not a usable signing key. The texts are fixed and never carry key
/// material (a member's name at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyError {
    /// The JWK is not a JSON object.
    NotAnObject,
    /// No non-empty string `kid`: tokens name their key by it, so it is required.
    MissingKid,
    /// `kty` missing, or not `OKP` / `EC` (RSA and symmetric keys are not signing keys here).
    UnsupportedKeyType,
    /// `crv` missing, or not `Ed25519` (OKP) / `P-256` (EC).
    UnsupportedCurve,
    /// `alg` is present and is not the key's algorithm (`EdDSA` / `ES256`).
    AlgMismatch,
    /// `use` is present and is not `sig`.
    NotForSigning,
    /// `key_ops` is present and does not list `sign`.
    SignNotPermitted,
    /// No `d` member: a public key cannot sign.
    NotPrivate,
    /// A key member is missing, not base64url without padding, or not the curve's exact
    /// length.
    MalformedMember(Member),
    /// `d` is not a valid private key for the curve (zero, or not below the group order).
    InvalidPrivateKey,
    /// The public members (`x`, `y`) are not the public key of `d`.
    PublicKeyMismatch,
}

impl SigningKeyError {
    /// Short, constant text for configuration errors and logs.
    pub fn describe(self) -> &'static str {
        match self {
            SigningKeyError::NotAnObject => "the signing key is not a JSON object",
            SigningKeyError::MissingKid => "the signing key has no kid",
            SigningKeyError::UnsupportedKeyType => {
                "the signing key's kty is not supported (OKP Ed25519 or EC P-256)"
            }
            SigningKeyError::UnsupportedCurve => {
                "the signing key's crv is not supported (Ed25519 or P-256)"
            }
            SigningKeyError::AlgMismatch => "the signing key's alg does not match its type",
            SigningKeyError::NotForSigning => "the signing key's use is not sig",
            SigningKeyError::SignNotPermitted => "the signing key's key_ops does not allow sign",
            SigningKeyError::NotPrivate => "the signing key has no private part (d)",
            SigningKeyError::MalformedMember(Member::X) => "the signing key's x is malformed",
            SigningKeyError::MalformedMember(Member::Y) => "the signing key's y is malformed",
            SigningKeyError::MalformedMember(Member::D) => "the signing key's d is malformed",
            SigningKeyError::InvalidPrivateKey => "the signing key's d is not a valid private key",
            SigningKeyError::PublicKeyMismatch => {
                "the signing key's public part does not match its private part"
            }
        }
    }
}

impl std::fmt::Display for SigningKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for SigningKeyError {}

/// The key members of a JWK that [`SigningKeyError::MalformedMember`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    X,
    Y,
    D,
}

impl Member {
    fn name(self) -> &'static str {
        match self {
            Member::X => "x",
            Member::Y => "y",
            Member::D => "d",
        }
    }
}

/// Why a set of signing keys was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeysError {
    /// No key at all.
    NoKeys,
    /// Two keys share a `kid`: a verifier could not tell which one signed.
    DuplicateKid,
    /// No key has the `kid` named active.
    UnknownActiveKid,
}

impl SigningKeysError {
    /// Short, constant text for configuration errors and logs.
    pub fn describe(self) -> &'static str {
        match self {
            SigningKeysError::NoKeys => "no signing key is configured",
            SigningKeysError::DuplicateKid => "two signing keys share a kid",
            SigningKeysError::UnknownActiveKid => "no signing key has the active kid",
        }
    }
}

impl std::fmt::Display for SigningKeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for SigningKeysError {}

/// Private key material. `Debug` prints `[redacted]`; there is no `Display`, no accessor and
/// no `Clone`. Both inner types wipe their secret on drop (`ed25519-dalek`'s `SigningKey` with
/// its `zeroize` feature, RustCrypto's zeroizing `SigningKey`).
pub struct PrivateKey(Private);

enum Private {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One checked signing key: its `kid`, algorithm, private key and the public JWK built from it.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    private: PrivateKey,
    /// `{kty, crv, x[, y], kid, alg, use}`: built from the checked key, never from the input.
    public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &self.private)
            .finish()
    }
}

/// A base64url (no padding) member of `jwk` decoded, exactly `len` bytes long, in a buffer
/// wiped on drop (it may be `d`).
fn member(
    jwk: &Map<String, Value>,
    name: Member,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, SigningKeyError> {
    let text = jwk
        .get(name.name())
        .and_then(Value::as_str)
        .ok_or(SigningKeyError::MalformedMember(name))?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| SigningKeyError::MalformedMember(name))?,
    );
    if bytes.len() != len {
        return Err(SigningKeyError::MalformedMember(name));
    }
    Ok(bytes)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Checks a private JWK and loads it: `OKP`/`Ed25519` signs `EdDSA`, `EC`/`P-256` signs
    /// `ES256`. Required: a non-empty `kid`, the curve's public members and `d`, each base64url
    /// of the exact length (RFC 8037 §2, RFC 7518 §6.2), and the public members equal to the
    /// public key recomputed from `d`. If present, `alg` must be the key's algorithm, `use`
    /// must be `sig` and `key_ops` must list `sign`. Other members are ignored (and never
    /// published).
    pub fn from_jwk(jwk: &Value) -> Result<SigningKey, SigningKeyError> {
        let jwk = jwk.as_object().ok_or(SigningKeyError::NotAnObject)?;
        let kid = match jwk.get("kid").and_then(Value::as_str) {
            Some(kid) if !kid.is_empty() => kid.to_owned(),
            _ => return Err(SigningKeyError::MissingKid),
        };
        let (alg, curve) = match jwk.get("kty").and_then(Value::as_str) {
            Some("OKP") => (Alg::EdDsa, "Ed25519"),
            Some("EC") => (Alg::Es256, "P-256"),
            _ => return Err(SigningKeyError::UnsupportedKeyType),
        };
        if jwk.get("crv").and_then(Value::as_str) != Some(curve) {
            return Err(SigningKeyError::UnsupportedCurve);
        }
        if let Some(declared) = jwk.get("alg") {
            if declared.as_str() != Some(alg.name()) {
                return Err(SigningKeyError::AlgMismatch);
            }
        }
        if let Some(use_) = jwk.get("use") {
            if use_.as_str() != Some("sig") {
                return Err(SigningKeyError::NotForSigning);
            }
        }
        if let Some(ops) = jwk.get("key_ops") {
            let allows_sign = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("sign")));
            if !allows_sign {
                return Err(SigningKeyError::SignNotPermitted);
            }
        }
        if !jwk.contains_key("d") {
            return Err(SigningKeyError::NotPrivate);
        }
        let (private, public_jwk) = match alg {
            Alg::EdDsa => ed25519(jwk)?,
            _ => p256_key(jwk)?,
        };
        let mut public_jwk = public_jwk;
        public_jwk.insert("kid".into(), Value::from(kid.as_str()));
        public_jwk.insert("alg".into(), Value::from(alg.name()));
        public_jwk.insert("use".into(), Value::from("sig"));
        Ok(SigningKey {
            kid,
            alg,
            private: PrivateKey(private),
            public_jwk: Value::Object(public_jwk),
        })
    }

    /// The key's `kid`, written in the header of every token it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm the key signs with (`EdDSA` or `ES256`).
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK (`kty`, `crv`, `x`, `y` for EC, `kid`, `alg`, `use: sig`): no private
    /// member, whatever the input JWK held.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// A compact JWS of `claims` with the header `{"alg", "kid", "typ"}`. The claims are
    /// written as given: the caller sets `iat`/`exp` from its own clock.
    pub fn sign(&self, typ: &str, claims: &Map<String, Value>) -> String {
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": typ});
        // Writing a `Value` into a `Vec` cannot fail (map keys are strings, no I/O); should it
        // ever, the empty payload is no JWT any verifier accepts.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = b64(header.to_string().as_bytes());
        token.push('.');
        token.push_str(&b64(&payload));
        let signature = self.sign_bytes(token.as_bytes());
        token.push('.');
        token.push_str(&b64(&signature));
        token
    }

    /// The JWS signature of `message` (the signing input): Ed25519 per RFC 8032 (no added
    /// noise: deterministic), or ECDSA P-256 / SHA-256 with an RFC 6979 nonce as the fixed-width
    /// `r || s` of RFC 7518 §3.4.
    fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        match &self.private.0 {
            Private::Ed25519(secret) => {
                use ed25519_dalek::Signer as _;
                secret.sign(message).to_bytes().to_vec()
            }
            Private::P256(secret) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = secret.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }
}

/// `OKP`/`Ed25519`: `x` and `d` (the 32-byte seed); `x` must be the seed's public key. An
/// all-zero seed is refused: RFC 8032 allows any 32 bytes, but that one is no secret.
fn ed25519(jwk: &Map<String, Value>) -> Result<(Private, Map<String, Value>), SigningKeyError> {
    let x = member(jwk, Member::X, ed25519_dalek::PUBLIC_KEY_LENGTH)?;
    let d = member(jwk, Member::D, ed25519_dalek::SECRET_KEY_LENGTH)?;
    let mut seed = Zeroizing::new([0u8; ed25519_dalek::SECRET_KEY_LENGTH]);
    seed.copy_from_slice(&d);
    // Every byte is read (no early exit on the secret).
    if seed.iter().fold(0u8, |any, byte| any | byte) == 0 {
        return Err(SigningKeyError::InvalidPrivateKey);
    }
    // The public key is recomputed from the seed (a constant-time multiplication of the base
    // point) and compared with `x`, which is public.
    let secret = ed25519_dalek::SigningKey::from_bytes(&seed);
    if secret.verifying_key().as_bytes()[..] != x[..] {
        return Err(SigningKeyError::PublicKeyMismatch);
    }
    let mut public_jwk = Map::new();
    public_jwk.insert("kty".into(), Value::from("OKP"));
    public_jwk.insert("crv".into(), Value::from("Ed25519"));
    public_jwk.insert("x".into(), Value::from(b64(&x)));
    Ok((Private::Ed25519(secret), public_jwk))
}

/// `EC`/`P-256`: `x`, `y` and `d`, 32 bytes each; `(x, y)` must be `d`'s public point.
fn p256_key(jwk: &Map<String, Value>) -> Result<(Private, Map<String, Value>), SigningKeyError> {
    const WIDTH: usize = 32;
    let x = member(jwk, Member::X, WIDTH)?;
    let y = member(jwk, Member::Y, WIDTH)?;
    let d = member(jwk, Member::D, WIDTH)?;
    let secret =
        p256::ecdsa::SigningKey::from_slice(&d).map_err(|_| SigningKeyError::InvalidPrivateKey)?;
    let point = secret.verifying_key().to_sec1_point(false);
    let derived = point.as_bytes();
    // SEC1 uncompressed: 04 || x || y.
    if derived.len() != 1 + 2 * WIDTH
        || derived[1..=WIDTH] != x[..]
        || derived[1 + WIDTH..] != y[..]
    {
        return Err(SigningKeyError::PublicKeyMismatch);
    }
    let mut public_jwk = Map::new();
    public_jwk.insert("kty".into(), Value::from("EC"));
    public_jwk.insert("crv".into(), Value::from("P-256"));
    public_jwk.insert("x".into(), Value::from(b64(&x)));
    public_jwk.insert("y".into(), Value::from(b64(&y)));
    Ok((Private::P256(secret), public_jwk))
}

/// The gateway's signing keys: every key is published, the active one signs. Rotation is a new
/// set: add the next key (published before it signs), make it active, later drop the old one.
pub struct SigningKeys {
    active: SigningKey,
    /// The other keys, published only.
    others: Vec<SigningKey>,
    /// `{"keys": [...]}` of every key's public JWK, in configuration order: built once.
    jwks: String,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("active", &self.active)
            .field("others", &self.others)
            .finish()
    }
}

impl SigningKeys {
    /// The keys, with the one whose `kid` is `active_kid` signing. Kids must be unique.
    pub fn new(keys: Vec<SigningKey>, active_kid: &str) -> Result<SigningKeys, SigningKeysError> {
        if keys.is_empty() {
            return Err(SigningKeysError::NoKeys);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|other| other.kid == key.kid) {
                return Err(SigningKeysError::DuplicateKid);
            }
        }
        let published: Vec<&Value> = keys.iter().map(|key| &key.public_jwk).collect();
        let jwks = json!({ "keys": published }).to_string();
        let (mut active, mut others) = (None, Vec::with_capacity(keys.len()));
        for key in keys {
            if key.kid == active_kid {
                active = Some(key);
            } else {
                others.push(key);
            }
        }
        let active = active.ok_or(SigningKeysError::UnknownActiveKid)?;
        Ok(SigningKeys {
            active,
            others,
            jwks,
        })
    }

    /// The key that signs.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// Every key: the active one first.
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.active).chain(&self.others)
    }

    /// A compact JWS of `claims` signed by the active key, header
    /// `{"alg", "kid", "typ": "JWT"}`.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        self.active.sign(TYP_JWT, claims)
    }

    /// Like [`SigningKeys::sign`] with another `typ` (e.g. `at+jwt`, RFC 9068).
    pub fn sign_typed(&self, typ: &str, claims: &Map<String, Value>) -> String {
        self.active.sign(typ, claims)
    }

    /// The public JWKS of every key (`{"keys": [...]}`, configuration order), for the
    /// gateway to serve. Built once, when the set is made.
    pub fn public_jwks(&self) -> &str {
        &self.jwks
    }
}

#[cfg(test)]
mod tests;
