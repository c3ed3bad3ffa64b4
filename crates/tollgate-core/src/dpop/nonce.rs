//! The server nonce of RFC 9449 §8–9: `DPoP-Nonce` values Tollgate issues and rotates, and
//! checks without keeping a list. A nonce is the rotation period it was made in and an HMAC of
//! that period under a per-process secret; it is accepted in that period and the next, so
//! each nonce lives between one and two periods, and a client that followed the last
//! `DPoP-Nonce` it got never sees its nonce refused.
//!
//! The secret (32 random bytes) is the caller's: one per Envoy process, kept in shared data so
//! every worker makes and accepts the same nonces.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The rotation period Tollgate uses: a nonce is accepted for 5 to 10 minutes, so a client
/// retries with a new one (`use_dpop_nonce`) at most once per 5 minutes.
pub const ROTATION_S: u64 = 300;

/// Bytes of the MAC kept in a nonce.
const MAC_LEN: usize = 16;

fn mac(secret: &[u8], period: u64) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    m.update(&period.to_le_bytes());
    Some(m)
}

fn period_of(now_s: u64, rotation_s: u64) -> u64 {
    now_s / rotation_s.max(1)
}

/// The nonce to hand out at `now_s` (seconds) with periods of `rotation_s`.
pub fn issue(secret: &[u8], now_s: u64, rotation_s: u64) -> Option<String> {
    let period = period_of(now_s, rotation_s);
    let tag = mac(secret, period)?.finalize().into_bytes();
    let mut bytes = period.to_le_bytes().to_vec();
    bytes.extend_from_slice(tag.get(..MAC_LEN)?);
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `nonce` was issued in this period or the one before (the MAC compared in constant
/// time, by `hmac`).
pub fn accepts(secret: &[u8], nonce: &str, now_s: u64, rotation_s: u64) -> bool {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
        return false;
    };
    let Some((head, tag)) = bytes.split_at_checked(8) else {
        return false;
    };
    let Ok(head) = <[u8; 8]>::try_from(head) else {
        return false;
    };
    let period = u64::from_le_bytes(head);
    let now = period_of(now_s, rotation_s);
    if period != now && period.saturating_add(1) != now {
        return false;
    }
    tag.len() == MAC_LEN
        && mac(secret, period).is_some_and(|m| m.verify_truncated_left(tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SECRET: [u8; 32] = [7; 32];
    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_nonce_lives_through_its_period_and_the_next() {
        let n = issue(&SECRET, NOW, 300).unwrap();
        let start = NOW - NOW % 300;
        assert!(accepts(&SECRET, &n, start, 300));
        assert!(accepts(&SECRET, &n, start + 599, 300));
        assert!(
            !accepts(&SECRET, &n, start + 600, 300),
            "two periods on: refused"
        );
        assert!(
            !accepts(&SECRET, &n, start - 1, 300),
            "from the future: refused"
        );
        // The same period gives the same nonce (every worker agrees); the next one another.
        assert_eq!(issue(&SECRET, start + 299, 300).unwrap(), n);
        assert_ne!(issue(&SECRET, start + 300, 300).unwrap(), n);
    }

    #[test]
    fn a_nonce_from_another_secret_or_altered_is_refused() {
        let n = issue(&SECRET, NOW, 300).unwrap();
        assert!(!accepts(&[8; 32], &n, NOW, 300));
        let mut bytes = URL_SAFE_NO_PAD.decode(&n).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(!accepts(&SECRET, &URL_SAFE_NO_PAD.encode(&bytes), NOW, 300));
        // A period moved forward without its MAC.
        let mut bytes = URL_SAFE_NO_PAD.decode(&n).unwrap();
        bytes[0] = bytes[0].wrapping_add(1);
        assert!(!accepts(
            &SECRET,
            &URL_SAFE_NO_PAD.encode(&bytes),
            NOW + 300,
            300
        ));
        for junk in ["", "!!", "AAAA", &n[..10]] {
            assert!(!accepts(&SECRET, junk, NOW, 300), "{junk}");
        }
    }
}
