//! The token cache: a token that verified (or that its issuer vouched for by introspection) is
//! not checked again until the entry expires; a token the issuer called inactive is refused
//! from the cache for a short negative TTL.
//!
//! Storage is a fixed number of slots (bounded by construction, so no eviction pass is ever
//! needed) held by the host and shared by every worker. A token's key is SHA-256 over the
//! configuration fingerprint and the token, so the token itself is never stored and a new
//! configuration never trusts results of the old one. A slot holds one entry; a newer token
//! hashing to the same slot replaces it. Entries are valid strictly before their `until`, which is
//! never past the token's `exp`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// SHA-256(config fingerprint || token).
pub type CacheKey = [u8; 32];

pub fn key_for(fingerprint: &[u8; 32], token: &str) -> CacheKey {
    let mut h = Sha256::new();
    h.update(fingerprint);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// The slot a key lives in, for `slots` > 0.
pub fn slot_of(key: &CacheKey, slots: u32) -> u32 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&key[..8]);
    (u64::from_le_bytes(head) % u64::from(slots.max(1))) as u32
}

/// What a cache hit gives back: enough to re-check the route's requirements and forward
/// identity without touching the token again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// Index of the issuer in the configuration the fingerprint names.
    #[serde(rename = "i")]
    pub issuer: usize,
    /// Token expiry in ms since the epoch: the entry is dead from this moment.
    #[serde(rename = "e")]
    pub exp_ms: u64,
    #[serde(rename = "c")]
    pub claims: Map<String, Value>,
}

/// A cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cached {
    /// Accept (requirements are still checked per request).
    #[serde(rename = "v")]
    Valid(Verified),
    /// Refuse: the issuer said the token is not active (negative caching).
    #[serde(rename = "x")]
    Invalid {
        #[serde(rename = "i")]
        issuer: usize,
        #[serde(rename = "u")]
        until_ms: u64,
    },
}

impl Cached {
    pub fn issuer(&self) -> usize {
        match self {
            Cached::Valid(v) => v.issuer,
            Cached::Invalid { issuer, .. } => *issuer,
        }
    }

    fn until_ms(&self) -> u64 {
        match self {
            Cached::Valid(v) => v.exp_ms,
            Cached::Invalid { until_ms, .. } => *until_ms,
        }
    }
}

/// Slot value: the 32-byte key, then the entry as JSON.
pub fn encode(key: &CacheKey, entry: &Cached) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(key);
    if serde_json::to_writer(&mut out, entry).is_err() {
        out.clear();
    }
    out
}

/// The entry for `key` in a slot value, if the slot holds that key and it is still alive.
pub fn decode(key: &CacheKey, value: &[u8], now_ms: u64) -> Option<Cached> {
    let (stored, json) = value.split_at_checked(32)?;
    if stored != key {
        return None;
    }
    let entry: Cached = serde_json::from_slice(json).ok()?;
    (now_ms < entry.until_ms()).then_some(entry)
}

/// Host storage for cache slots (shared data in the adapter, a map in tests).
pub trait TokenCache {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached>;
    fn put(&mut self, key: &CacheKey, entry: &Cached);

    /// A faster, local copy of an entry, looked up by the token itself (before any hashing).
    /// Implementations that keep one must drop it when the shared entry could have been
    /// removed (revocation); the default keeps none.
    fn get_local(&mut self, _token: &str, _now_ms: u64) -> Option<Cached> {
        None
    }

    /// Offers an entry just read or written for the local copy.
    fn remember(&mut self, _token: &str, _entry: &Cached) {}
}

/// A small per-worker map from tokens (compared whole, so no collision can mix two tokens up)
/// to entries, in front of the shared cache: a hit costs no SHA-256, no shared-data copy and
/// no JSON decoding. Bounded: when full it starts over.
#[derive(Debug, Default)]
pub struct LocalMemo {
    entries: std::collections::HashMap<Box<str>, Cached>,
    capacity: usize,
}

impl LocalMemo {
    pub fn new(capacity: usize) -> LocalMemo {
        LocalMemo {
            entries: std::collections::HashMap::new(),
            capacity,
        }
    }

    pub fn get(&self, token: &str, now_ms: u64) -> Option<&Cached> {
        self.entries
            .get(token)
            .filter(|entry| now_ms < entry.until_ms())
    }

    pub fn put(&mut self, token: &str, entry: &Cached) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(token) {
            self.entries.clear();
        }
        self.entries.insert(token.into(), entry.clone());
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(exp_ms: u64) -> Cached {
        Cached::Valid(Verified {
            issuer: 1,
            exp_ms,
            claims: json!({"sub": "alice"}).as_object().cloned().unwrap(),
        })
    }

    #[test]
    fn the_local_memo_is_bounded_and_honours_expiry() {
        let mut memo = LocalMemo::new(2);
        memo.put("a", &entry(100));
        memo.put("b", &entry(100));
        assert!(memo.get("a", 99).is_some());
        assert!(memo.get("a", 100).is_none(), "never past the entry's end");
        memo.put("c", &entry(100));
        assert!(
            memo.get("a", 0).is_none() && memo.get("c", 0).is_some(),
            "full: starts over"
        );
        assert!(memo.get("a-longer", 0).is_none(), "whole tokens only");
        LocalMemo::new(0).put("x", &entry(100));
    }

    #[test]
    fn negative_entries_round_trip_until_their_ttl() {
        let k = key_for(&[7; 32], "tok");
        let neg = Cached::Invalid {
            issuer: 0,
            until_ms: 500,
        };
        let v = encode(&k, &neg);
        assert_eq!(decode(&k, &v, 499), Some(neg));
        assert_eq!(decode(&k, &v, 500), None);
    }

    #[test]
    fn round_trip_until_expiry() {
        let k = key_for(&[7; 32], "tok");
        let v = encode(&k, &entry(1_000));
        assert_eq!(decode(&k, &v, 999), Some(entry(1_000)));
        assert_eq!(decode(&k, &v, 1_000), None, "never served at or past exp");
    }

    #[test]
    fn another_token_in_the_same_slot_is_a_miss() {
        let k = key_for(&[7; 32], "tok");
        let other = key_for(&[7; 32], "tok2");
        assert_eq!(decode(&other, &encode(&k, &entry(1_000)), 0), None);
    }

    #[test]
    fn key_depends_on_configuration() {
        assert_ne!(key_for(&[1; 32], "tok"), key_for(&[2; 32], "tok"));
    }

    #[test]
    fn garbage_slot_values_are_misses() {
        let k = key_for(&[7; 32], "tok");
        assert_eq!(decode(&k, b"", 0), None);
        let mut v = k.to_vec();
        v.extend_from_slice(b"{not json");
        assert_eq!(decode(&k, &v, 0), None);
    }

    #[test]
    fn slots_stay_in_range() {
        for t in ["a", "b", "c", "d"] {
            assert!(slot_of(&key_for(&[0; 32], t), 3) < 3);
        }
    }
}
