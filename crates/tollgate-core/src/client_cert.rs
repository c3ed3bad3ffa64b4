//! The client certificate's thumbprint (RFC 8705 §3.1: base64url SHA-256 of the leaf
//! certificate's DER, what `cnf["x5t#S256"]` holds), from each place a host can give it:
//!
//! - Envoy's connection properties: `connection.sha256_peer_certificate_digest` (lower-case
//!   hex of the DER's SHA-256) or `connection.peer_certificate` (URL-encoded PEM), since 1.38;
//! - a trusted proxy's header, only when configured: Envoy's `x-forwarded-client-cert` (XFCC,
//!   `Hash=` or `Cert=`) or RFC 9440 `Client-Cert` (the DER as a structured-field byte
//!   sequence).
//!
//! Pure parsing; which source to trust is configuration.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The thumbprint of a DER certificate.
pub fn x5t_of_der(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// From a hex SHA-256 digest of the DER (64 hex digits, either case).
pub fn x5t_of_hex_digest(hex: &str) -> Option<String> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(URL_SAFE_NO_PAD.encode(digest))
}

/// From PEM text: the first `CERTIFICATE` block (the leaf, first in a chain).
pub fn x5t_of_pem(pem: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let len = pem.get(start..)?.find(END)?;
    let body: String = pem
        .get(start..start + len)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD.decode(body).ok()?;
    Some(x5t_of_der(&der))
}

/// From URL-encoded PEM (Envoy's `connection.peer_certificate`, XFCC `Cert=`).
pub fn x5t_of_url_encoded_pem(text: &str) -> Option<String> {
    let pem = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()?;
    x5t_of_pem(&pem)
}

/// From an XFCC header holding exactly one element (what a proxy that sanitises the header
/// and sets it for its own client sends): its `Hash=`, else its `Cert=`. Several elements (a
/// chain of proxies) are ambiguous and give `None`.
pub fn x5t_of_xfcc(header: &str) -> Option<String> {
    if split_outside_quotes(header, ',').len() != 1 {
        return None;
    }
    let mut hash = None;
    let mut cert = None;
    for pair in split_outside_quotes(header, ';') {
        let (key, value) = pair.split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        match key.trim().to_ascii_lowercase().as_str() {
            "hash" => hash = Some(value.to_owned()),
            "cert" => cert = Some(value.to_owned()),
            _ => {}
        }
    }
    match (hash, cert) {
        (Some(h), _) => x5t_of_hex_digest(&h),
        (None, Some(c)) => x5t_of_url_encoded_pem(&c),
        (None, None) => None,
    }
}

/// From an RFC 9440 `Client-Cert` header: `:<base64 DER>:`.
pub fn x5t_of_client_cert(header: &str) -> Option<String> {
    let inner = header.trim().strip_prefix(':')?.strip_suffix(':')?;
    let der = STANDARD.decode(inner).ok()?;
    Some(x5t_of_der(&der))
}

/// `text` split at `sep` where it is not inside double quotes.
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A P-256 certificate made with `openssl req -x509`; its thumbprint and SHA-256
    /// fingerprint as openssl printed them (`openssl x509 -outform DER | openssl dgst
    /// -sha256`, `openssl x509 -fingerprint -sha256`).
    const PEM: &str = include_str!("testdata/client_cert.pem");
    const X5T: &str = "cbddfVE1yNe3jkInSFtEH8B0kWNaGElcIN0ibo5MWi4";
    const HEX: &str = "71b75d7d5135c8d7b78e4227485b441fc07491635a18495c20dd226e8e4c5a2e";

    fn url_encoded(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn der() -> Vec<u8> {
        let body: String = PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    #[test]
    fn every_source_gives_the_same_thumbprint() {
        assert_eq!(x5t_of_pem(PEM).as_deref(), Some(X5T));
        assert_eq!(x5t_of_der(&der()), X5T);
        assert_eq!(x5t_of_hex_digest(HEX).as_deref(), Some(X5T));
        assert_eq!(x5t_of_hex_digest(&HEX.to_uppercase()).as_deref(), Some(X5T));
        assert_eq!(
            x5t_of_url_encoded_pem(&url_encoded(PEM)).as_deref(),
            Some(X5T)
        );
        let xfcc_hash = format!("By=spiffe://gw;Hash={HEX};Subject=\"CN=tollgate-test-client\"");
        assert_eq!(x5t_of_xfcc(&xfcc_hash).as_deref(), Some(X5T));
        let xfcc_cert = format!("Cert=\"{}\";Subject=\"CN=a,O=b\"", url_encoded(PEM));
        assert_eq!(x5t_of_xfcc(&xfcc_cert).as_deref(), Some(X5T));
        let rfc9440 = format!(":{}:", STANDARD.encode(der()));
        assert_eq!(x5t_of_client_cert(&rfc9440).as_deref(), Some(X5T));
        // A chain: the first certificate is the leaf.
        let chain = format!("{PEM}{PEM}");
        assert_eq!(x5t_of_pem(&chain).as_deref(), Some(X5T));
    }

    #[test]
    fn what_is_not_one_certificate_gives_none() {
        assert_eq!(x5t_of_hex_digest(&HEX[..62]), None);
        assert_eq!(x5t_of_hex_digest(&format!("{}zz", &HEX[..62])), None);
        assert_eq!(
            x5t_of_pem("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(x5t_of_pem("no pem"), None);
        // Two proxies' elements: ambiguous.
        let two = format!("Hash={HEX},Hash={HEX}");
        assert_eq!(x5t_of_xfcc(&two), None);
        assert_eq!(x5t_of_xfcc("By=spiffe://gw"), None);
        assert_eq!(
            x5t_of_client_cert(&STANDARD.encode(der())),
            None,
            "not a byte sequence"
        );
        assert_eq!(x5t_of_client_cert(":!!:"), None);
    }
}
