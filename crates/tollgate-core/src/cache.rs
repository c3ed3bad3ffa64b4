//! The token cache: a token that verified (or that its issuer vouched for by introspection) is
//! not checked again until the entry expires; a token the issuer called inactive is refused
//! from the cache for a short negative TTL.
//!
//! Storage is a fixed number of slots (bounded by construction, so no eviction pass is ever
//! needed) held by the host and shared by every worker. A token's key is SHA-256 over the
//! configuration fingerprint and the token, so the token itself is never stored and a new
//! configuration never trusts results of the old one. A slot holds one entry; a newer token
//! hashing to the same slot replaces it — except that a live positive entry (a token that
//! passed) is only ever replaced by another positive entry: a refusal (negative entry) or a
//! claim marker of another token leaves it alone, so junk tokens cannot push good ones out
//! ([`put_slot`], [`claim_slot`]). Entries are valid strictly before their `until`, which is
//! never past the token's `exp`.

use std::cell::OnceCell;
use std::rc::Rc;

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
    /// Shared, so that a worker's memo hands out a hit without copying the claims (a clone of
    /// the entry is a reference count).
    #[serde(rename = "c")]
    pub claims: Rc<Map<String, Value>>,
    /// The [`crate::key::KeyId`] of the key that verified the token's signature (`None`: an
    /// introspected token, no key involved). A hit counts only while the issuer's held key set
    /// still has this key.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<crate::key::KeyId>,
    /// The identity headers, rendered once for the entry and shared by its clones.
    #[serde(skip)]
    pub rendered: Rendered,
}

/// Header (name, value) pairs rendered once and shared.
pub type Shared = Rc<[(String, String)]>;

/// The identity headers of a cache entry ([`crate::identity::headers`]), rendered from its claims on the first request that
/// uses the entry and then shared by every clone of it (the worker's memo hands out clones), so
/// a warm request forwards identity without walking the claims again. What is rendered
/// depends only on the entry and the configuration, and an entry lives in one worker's memo
/// for one configuration. Never stored in the shared cache; equal whatever it holds (it
/// follows from the claims).
#[derive(Clone, Default)]
pub struct Rendered(Rc<OnceCell<Shared>>);

impl Rendered {
    /// The headers, rendered by `render` the first time.
    pub fn get_or_render(&self, render: impl FnOnce() -> Vec<(String, String)>) -> Shared {
        Rc::clone(self.0.get_or_init(|| render().into()))
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Rendered) -> bool {
        true
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.get().is_some() {
            "rendered"
        } else {
            "not rendered"
        };
        f.write_str(state)
    }
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

/// Whether a slot value is another token's (not `key`'s) live positive entry.
fn holds_other_positive(key: &CacheKey, value: &[u8], now_ms: u64) -> bool {
    let Some((stored, json)) = value.split_at_checked(32) else {
        return false;
    };
    stored != key
        && matches!(
            serde_json::from_slice::<Cached>(json),
            Ok(entry @ Cached::Valid(_)) if now_ms < entry.until_ms()
        )
}

/// How long a claim on a slot lasts: the most a worker can keep others waiting for its
/// verification (a worker that dies mid-verification blocks nobody for longer).
pub const CLAIM_MS: u64 = 50;

/// A claim marker: the 32-byte key, a 0 byte (no JSON entry starts with it), the time the
/// claim lapses (ms since the epoch, little endian), then the slot value the claim covers:
/// another token's live positive entry (empty when the slot held nothing worth keeping). So a
/// token whose slot holds another token's entry is still claimed — single flight holds for
/// tokens that share a slot — while that entry stays readable under the claim and is put back
/// if the verification ends without an entry (a forged token cannot evict it).
pub fn encode_claim(key: &CacheKey, lapses_ms: u64, covers: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(41 + covers.len());
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(&lapses_ms.to_le_bytes());
    out.extend_from_slice(covers);
    out
}

/// What a slot value (`None`: no value) tells about `key` at `now_ms`.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// A live entry for this key.
    Entry(Cached),
    /// A live claim for this key: some worker is verifying this very token.
    Claimed,
    /// A live claim for another key (another token is being verified in this slot).
    Busy,
    /// Another token's live positive entry (the slot value, as a claim marker keeps it): only
    /// a positive entry replaces it, never a negative one; a claim covers it.
    Kept(Vec<u8>),
    /// Nothing worth keeping: empty, another token's negative entry, a dead entry, a lapsed
    /// claim.
    Free,
}

pub fn read_slot(key: &CacheKey, value: Option<&[u8]>, now_ms: u64) -> Slot {
    let Some(value) = value else {
        return Slot::Free;
    };
    let Some((holder, lapses_ms, covers)) = read_claim(value) else {
        return read_entry(key, value, now_ms);
    };
    let live = lapses_ms > now_ms;
    if live && holder == &key[..] {
        return Slot::Claimed;
    }
    // For everything else the slot holds what the claim covers: readable under a live claim,
    // and the slot's content once the claim lapsed.
    match read_entry(key, covers, now_ms) {
        Slot::Entry(entry) => Slot::Entry(entry),
        _ if live => Slot::Busy,
        covered => covered,
    }
}

/// A slot value that is not a claim marker, for `key`.
fn read_entry(key: &CacheKey, value: &[u8], now_ms: u64) -> Slot {
    match decode(key, value, now_ms) {
        Some(entry) => Slot::Entry(entry),
        None if holds_other_positive(key, value, now_ms) => Slot::Kept(value.to_vec()),
        None => Slot::Free,
    }
}

/// The slot value to write back when the claim `key` holds ends without an entry: what the
/// claim covers (`Some(empty)` if nothing). `None` if `value` is not `key`'s claim (another
/// worker's, or an entry: leave it).
pub fn after_unclaim(key: &CacheKey, value: &[u8]) -> Option<Vec<u8>> {
    let (holder, _, covers) = read_claim(value)?;
    (holder == &key[..]).then(|| covers.to_vec())
}

/// The slot value without `key`'s entry (a revocation): `None` if there is nothing of `key`'s
/// to remove. `key`'s own entry gives an empty slot; another token's claim covering `key`'s
/// entry keeps the claim and drops what it covers. A claim of `key`'s (a verification under
/// way) is left alone.
pub fn without(key: &CacheKey, value: &[u8]) -> Option<Vec<u8>> {
    match read_claim(value) {
        Some((holder, lapses_ms, covers)) => {
            (holder != &key[..] && covers.get(..32) == Some(&key[..])).then(|| {
                let mut holder_key = [0u8; 32];
                holder_key.copy_from_slice(holder);
                encode_claim(&holder_key, lapses_ms, &[])
            })
        }
        None => (value.get(..32) == Some(&key[..])).then(Vec::new),
    }
}

fn read_claim(value: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let (holder, rest) = value.split_at_checked(32)?;
    let (&0, rest) = rest.split_first()? else {
        return None;
    };
    let (lapses, covers) = rest.split_at_checked(8)?;
    Some((holder, u64::from_le_bytes(lapses.try_into().ok()?), covers))
}

/// What to do with a token the cache missed, just before its signature is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Verify it (holding the claim on its slot, or without one when none could be had).
    Verify,
    /// Another worker is verifying this very token: wait for its entry.
    Wait,
    /// Its entry landed meanwhile.
    Found(Cached),
}

/// The CAS to pass the host for a write that must not overwrite anything written since a read
/// that returned `read_cas`. The host (proxy-wasm-cpp-host `SharedData::set`) compares a
/// non-zero CAS with an existing key's own CAS and **skips the check for a key that does not
/// exist**, so for a read that found no key (`None`) a plain write would create it whoever
/// else created it meanwhile. Passing a CAS no existing key holds instead makes that write
/// "create only": it succeeds while the key is missing and fails once anyone created it. Key
/// CASes are values of one process-wide counter (1, 2, 3, ..., skipping 0 on wrap-around), so
/// no key holds `u32::MAX` until the process made 2^32 - 1 shared-data writes; even then a
/// wrong "create" needs a rival's write to get exactly that value (odds 2^-32), and costs one
/// extra verification or call, never a wrong answer. See docs/host-notes.md, "Single flight".
pub fn swap_cas(read_cas: Option<u32>) -> u32 {
    read_cas.unwrap_or(u32::MAX)
}

/// The claim step of single flight, independent of the host: `seen` is the token's slot as
/// the lookup that missed found it (state and CAS); `swap(value, cas)` writes the slot if its
/// CAS is still `cas` (see [`swap_cas`]) and says whether it did; `reread` reads the slot
/// again. Returns what to do and whether this worker now holds the claim.
pub fn claim_slot(
    key: &CacheKey,
    seen: (Slot, Option<u32>),
    now_ms: u64,
    swap: impl FnOnce(&[u8], u32) -> bool,
    reread: impl FnOnce() -> Option<Vec<u8>>,
) -> (Claim, bool) {
    let (state, cas) = seen;
    let covers = match state {
        Slot::Entry(entry) => return (Claim::Found(entry), false),
        Slot::Claimed => return (Claim::Wait, false),
        // Another token is being verified in this slot: leave its claim alone.
        Slot::Busy => return (Claim::Verify, false),
        // Another token's live positive entry stays, under the claim (this token may be a
        // forgery: it comes back if the verification fails).
        Slot::Kept(value) => value,
        Slot::Free => Vec::new(),
    };
    let marker = encode_claim(key, now_ms.saturating_add(CLAIM_MS), &covers);
    if swap(&marker, swap_cas(cas)) {
        return (Claim::Verify, true);
    }
    // Someone wrote the slot since it was read: perhaps a claim or the entry for this token.
    let claim = match read_slot(key, reread().as_deref(), now_ms) {
        Slot::Entry(entry) => Claim::Found(entry),
        Slot::Claimed => Claim::Wait,
        Slot::Busy | Slot::Kept(_) | Slot::Free => Claim::Verify,
    };
    (claim, false)
}

/// The write step of an entry, independent of the host: `read` gives the slot's value and CAS,
/// `write(value, cas)` writes it (`None`: unconditionally; `Some` as [`swap_cas`] says) and
/// says whether it did. A positive entry is written unconditionally (the newest token that
/// passed has the slot, as any cache that keeps recent entries). A negative entry is written
/// only over nothing worth keeping — never over another token's live positive entry — and only
/// if the slot did not change since it was read (else it is dropped: at worst the issuer is
/// asked again). Returns whether the entry was written.
pub fn put_slot(
    key: &CacheKey,
    entry: &Cached,
    now_ms: u64,
    read: impl FnOnce() -> (Option<Vec<u8>>, Option<u32>),
    write: impl FnOnce(&[u8], Option<u32>) -> bool,
) -> bool {
    let value = encode(key, entry);
    if value.is_empty() {
        return false;
    }
    match entry {
        Cached::Valid(_) => write(&value, None),
        Cached::Invalid { .. } => {
            let (current, cas) = read();
            // Not over another token's live positive entry, nor over another token's live
            // claim (which may cover one).
            if matches!(
                read_slot(key, current.as_deref(), now_ms),
                Slot::Kept(_) | Slot::Busy
            ) {
                return false;
            }
            write(&value, Some(swap_cas(cas)))
        }
    }
}

/// Whether an introspection answer may be cached, given the revocation epoch when its call
/// began and now. A revocation through the gateway that the server confirmed moves the epoch
/// (and removes the token's entry); an `active` answer the server may have given before that
/// revocation, landing after it, must not be cached (it would be served for up to `max_ttl_s`).
/// Negative answers are always cacheable.
pub fn cacheable_after(entry: &Cached, epoch_at_start: u64, epoch_now: u64) -> bool {
    matches!(entry, Cached::Invalid { .. }) || epoch_at_start == epoch_now
}

/// Host storage for cache slots (shared data in the adapter, a map in tests).
pub trait TokenCache {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached>;
    /// Stores an entry (this also ends a claim on `key`: the entry replaces the marker), as
    /// [`put_slot`] allows at `now_ms`.
    fn put(&mut self, key: &CacheKey, entry: &Cached, now_ms: u64);

    /// Called after [`TokenCache::get`] missed `key`, just before the token's signature is
    /// checked: claims the token's slot for [`CLAIM_MS`] so that other workers wait for this
    /// worker's entry instead of verifying the same token too (single flight across workers).
    /// The default (storage no other worker shares): always verify.
    fn claim(&mut self, _key: &CacheKey, _now_ms: u64) -> Claim {
        Claim::Verify
    }

    /// The verification [`TokenCache::claim`] allowed ended without an entry (the token was
    /// refused, or its key is not known yet): frees the claim, so waiting workers go ahead.
    fn unclaim(&mut self, _key: &CacheKey) {}

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
///
/// A hit is on every warm request, so it is cheap over tokens of a kilobyte: the map is keyed
/// by a 64-bit hash of the token (foldhash, seeded at random per memo: a few instructions per
/// 8 bytes, where std's SipHash takes several times that) and the token is compared 8 bytes at
/// a time (`same_token`; wasm's `memcmp` goes byte by byte). Tokens whose hashes collide
/// share a bucket, each compared whole.
#[derive(Debug, Default)]
pub struct LocalMemo {
    entries: std::collections::HashMap<u64, Vec<(Box<str>, Cached)>>,
    len: usize,
    capacity: usize,
    hasher: foldhash::fast::RandomState,
}

impl LocalMemo {
    pub fn new(capacity: usize) -> LocalMemo {
        LocalMemo {
            capacity,
            ..LocalMemo::default()
        }
    }

    fn hash(&self, token: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one(token)
    }

    pub fn get(&self, token: &str, now_ms: u64) -> Option<&Cached> {
        self.entries
            .get(&self.hash(token))?
            .iter()
            .find(|(t, _)| same_token(t, token))
            .map(|(_, entry)| entry)
            .filter(|entry| now_ms < entry.until_ms())
    }

    pub fn put(&mut self, token: &str, entry: &Cached) {
        if self.capacity == 0 {
            return;
        }
        let hash = self.hash(token);
        let known = self
            .entries
            .get(&hash)
            .is_some_and(|bucket| bucket.iter().any(|(t, _)| same_token(t, token)));
        if self.len >= self.capacity && !known {
            self.clear();
        }
        let bucket = self.entries.entry(hash).or_default();
        match bucket.iter_mut().find(|(t, _)| same_token(t, token)) {
            Some((_, old)) => *old = entry.clone(),
            None => {
                bucket.push((token.into(), entry.clone()));
                self.len += 1;
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }
}

/// Whether two tokens are the same text, compared a 64-bit word at a time.
fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |c: &[u8]| <[u8; 8]>::try_from(c).map(u64::from_ne_bytes).ok();
    wa.by_ref()
        .zip(wb.by_ref())
        .all(|(x, y)| word(x) == word(y))
        && wa.remainder() == wb.remainder()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testhost::TestHost;
    use crate::flow::Host as _;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn entry(exp_ms: u64) -> Cached {
        Cached::Valid(Verified {
            issuer: 1,
            exp_ms,
            claims: json!({"sub": "alice"}).as_object().cloned().unwrap().into(),
            key: Some(7),
            rendered: Default::default(),
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
    fn tokens_are_compared_whole_word_by_word() {
        let base = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        for len in 0..base.len() {
            let t = &base[..len];
            assert!(same_token(t, t));
            // A change in any byte, in a whole word or in the remainder, is a different token.
            for at in 0..len {
                let mut other = t.as_bytes().to_vec();
                other[at] ^= 1;
                let other = String::from_utf8(other).unwrap();
                assert!(!same_token(t, &other), "{len} {at}");
            }
            assert!(!same_token(t, base) || len == base.len());
        }
        assert!(!same_token("abcdefgh", "abcdefghi"));
    }

    #[test]
    fn tokens_in_one_bucket_stay_apart() {
        // Whatever the hash, two tokens with one hash keep their own entries: force a bucket
        // of two by putting both under the first token's hash.
        let mut memo = LocalMemo::new(4);
        memo.put("token-a", &entry(100));
        let hash = memo.hash("token-a");
        memo.entries
            .entry(hash)
            .or_default()
            .push(("token-b".into(), entry(200)));
        let until = |e: Option<&Cached>| e.map(Cached::until_ms);
        assert_eq!(until(memo.get("token-a", 0)), Some(100));
        assert_eq!(memo.entries[&hash].len(), 2);
        assert!(memo.entries[&hash]
            .iter()
            .any(|(t, e)| &**t == "token-b" && e.until_ms() == 200));
        // Replacing an entry keeps the count.
        memo.put("token-a", &entry(300));
        assert_eq!(until(memo.get("token-a", 0)), Some(300));
        assert_eq!(memo.len, 1);
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
    fn an_active_answer_overtaken_by_a_revocation_is_not_cached() {
        let negative = Cached::Invalid {
            issuer: 0,
            until_ms: 10,
        };
        assert!(cacheable_after(&entry(1_000), 3, 3));
        assert!(!cacheable_after(&entry(1_000), 3, 4));
        assert!(!cacheable_after(&entry(1_000), u64::MAX, 0), "wrapped");
        assert!(cacheable_after(&negative, 3, 4));
        assert!(cacheable_after(&negative, 3, 3));
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

    /// One worker's access to the slot `"slot"` in shared data, through the flow's test host:
    /// shared data as the host keeps it (a [`crate::flow::LocalStore`], Envoy's CAS rules: one
    /// counter for all keys; a non-zero CAS is checked only against a key that exists).
    trait Slots {
        /// A raw write, `cas` as on the wire (0: unconditional).
        fn set(&self, name: &str, value: &[u8], cas: u32) -> bool;
        fn get(&self, name: &str) -> (Option<Vec<u8>>, Option<u32>);

        /// What a worker's lookup saw in the slot.
        fn seen(&self, key: &CacheKey, now_ms: u64) -> (Slot, Option<u32>) {
            let (value, cas) = self.get("slot");
            (read_slot(key, value.as_deref(), now_ms), cas)
        }

        fn claim(&self, key: &CacheKey, seen: (Slot, Option<u32>), now_ms: u64) -> (Claim, bool) {
            claim_slot(
                key,
                seen,
                now_ms,
                |v, cas| self.set("slot", v, cas),
                || self.get("slot").0,
            )
        }

        /// What a worker whose claim ended without an entry writes back.
        fn unclaim(&self, key: &CacheKey) {
            let (value, cas) = self.get("slot");
            if let Some(covered) = value.as_deref().and_then(|v| after_unclaim(key, v)) {
                self.set("slot", &covered, cas.unwrap_or(0));
            }
        }

        fn put(&self, key: &CacheKey, entry: &Cached, now_ms: u64) -> bool {
            put_slot(
                key,
                entry,
                now_ms,
                || self.get("slot"),
                |v, cas| self.set("slot", v, cas.unwrap_or(0)),
            )
        }
    }

    impl Slots for TestHost {
        fn set(&self, name: &str, value: &[u8], cas: u32) -> bool {
            self.shared_set(name, value, Some(cas))
        }

        fn get(&self, name: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.shared_get(name)
        }
    }

    #[test]
    fn the_host_skips_the_cas_check_for_a_missing_key_and_swap_cas_closes_that() {
        // The hole: both workers read "no key" (CAS None -> 0 on the wire), both writes win.
        let host = TestHost::new();
        assert!(host.set("a", b"worker 1", 0) && host.set("a", b"worker 2", 0));
        // Create only: the first write creates the key, the second one fails.
        let host = TestHost::new();
        host.set("unrelated", b"x", 0);
        assert!(host.set("b", b"worker 1", swap_cas(None)));
        assert!(!host.set("b", b"worker 2", swap_cas(None)));
        assert_eq!(host.get("b").0.as_deref(), Some(&b"worker 1"[..]));
        // An existing key: swap against the CAS read.
        let (_, cas) = host.get("b");
        assert!(host.set("b", b"worker 2", swap_cas(cas)));
        assert!(!host.set("b", b"worker 1", swap_cas(cas)), "stale CAS");
    }

    #[test]
    fn two_workers_missing_a_never_written_slot_at_once_verify_once() {
        let host = TestHost::new();
        let k = key_for(&[7; 32], "tok");
        let (seen_a, seen_b) = (host.seen(&k, 0), host.seen(&k, 0));
        assert_eq!(seen_a, (Slot::Free, None));
        assert_eq!(host.claim(&k, seen_a, 0), (Claim::Verify, true));
        assert_eq!(host.claim(&k, seen_b, 0), (Claim::Wait, false));
        // A third worker reads the claim and waits without writing.
        let seen_c = host.seen(&k, 1);
        assert_eq!(seen_c.0, Slot::Claimed);
        assert_eq!(host.claim(&k, seen_c, 1), (Claim::Wait, false));
        // The entry replaces the claim.
        host.set("slot", &encode(&k, &entry(1_000)), 0);
        assert_eq!(host.seen(&k, 2).0, Slot::Entry(entry(1_000)));
    }

    #[test]
    fn a_worker_raced_by_the_entry_itself_uses_it() {
        let host = TestHost::new();
        let k = key_for(&[7; 32], "tok");
        let seen_late = host.seen(&k, 0);
        let seen = host.seen(&k, 0);
        assert_eq!(host.claim(&k, seen, 0), (Claim::Verify, true));
        host.set("slot", &encode(&k, &entry(1_000)), 0);
        assert_eq!(
            host.claim(&k, seen_late, 0),
            (Claim::Found(entry(1_000)), false)
        );
    }

    #[test]
    fn a_claim_lapses_and_can_be_taken_over() {
        let host = TestHost::new();
        let k = key_for(&[7; 32], "tok");
        let seen = host.seen(&k, 0);
        assert_eq!(host.claim(&k, seen, 0), (Claim::Verify, true));
        assert_eq!(host.seen(&k, CLAIM_MS - 1).0, Slot::Claimed);
        let later = host.seen(&k, CLAIM_MS);
        assert_eq!(later.0, Slot::Free, "the claimant died or took too long");
        assert_eq!(host.claim(&k, later, CLAIM_MS), (Claim::Verify, true));
        assert_eq!(host.seen(&k, CLAIM_MS + 1).0, Slot::Claimed);
    }

    #[test]
    fn another_tokens_claim_is_left_alone() {
        let host = TestHost::new();
        let (k, other) = (key_for(&[7; 32], "tok"), key_for(&[7; 32], "tok2"));
        let seen = host.seen(&other, 0);
        assert_eq!(host.claim(&other, seen, 0), (Claim::Verify, true));
        let seen = host.seen(&k, 0);
        assert_eq!(seen.0, Slot::Busy);
        assert_eq!(host.claim(&k, seen, 0), (Claim::Verify, false));
        assert_eq!(host.seen(&other, 0).0, Slot::Claimed, "untouched");
    }

    #[test]
    fn a_claim_covers_another_tokens_live_entry_which_stays_readable_and_comes_back() {
        let host = TestHost::new();
        let (forged, kept) = (key_for(&[7; 32], "forged"), key_for(&[7; 32], "kept"));
        host.set("slot", &encode(&kept, &entry(1_000)), 0);
        let seen = host.seen(&forged, 0);
        assert!(matches!(seen.0, Slot::Kept(_)));
        // Tokens sharing a slot still get single flight: the first claims, the next waits.
        let late = host.seen(&forged, 1);
        assert_eq!(host.claim(&forged, seen, 0), (Claim::Verify, true));
        assert_eq!(host.claim(&forged, late, 1), (Claim::Wait, false));
        // Under the claim the other token's entry is still a hit.
        assert_eq!(host.seen(&kept, 1).0, Slot::Entry(entry(1_000)));
        // The forgery fails: the entry it covered is back, whole.
        host.unclaim(&forged);
        assert_eq!(host.get("slot").0, Some(encode(&kept, &entry(1_000))));
        // A claim that lapsed leaves what it covered, too.
        let seen = host.seen(&forged, 2);
        assert_eq!(host.claim(&forged, seen, 2), (Claim::Verify, true));
        assert_eq!(host.seen(&kept, 2 + CLAIM_MS).0, Slot::Entry(entry(1_000)));
        assert!(matches!(host.seen(&forged, 2 + CLAIM_MS).0, Slot::Kept(_)));
        // A token that passes takes the slot (the newest entry wins).
        host.set("slot", &encode(&forged, &entry(2_000)), 0);
        assert!(matches!(host.seen(&kept, 3).0, Slot::Kept(_)));
    }

    #[test]
    fn a_revocation_under_another_tokens_claim_removes_the_covered_entry() {
        let host = TestHost::new();
        let (claimant, revoked) = (key_for(&[7; 32], "claimant"), key_for(&[7; 32], "revoked"));
        host.set("slot", &encode(&revoked, &entry(1_000)), 0);
        let seen = host.seen(&claimant, 0);
        assert_eq!(host.claim(&claimant, seen, 0), (Claim::Verify, true));
        let (value, cas) = host.get("slot");
        let emptied = without(&revoked, &value.unwrap()).unwrap();
        host.set("slot", &emptied, cas.unwrap());
        assert_eq!(
            host.seen(&revoked, 1).0,
            Slot::Busy,
            "gone, the claim stays"
        );
        assert_eq!(host.seen(&claimant, 1).0, Slot::Claimed);
        host.unclaim(&claimant);
        assert_eq!(host.seen(&revoked, 1).0, Slot::Free, "not put back");
        // The token's own entry: the slot empties; its own claim, or another token's entry:
        // nothing to remove.
        assert_eq!(
            without(&revoked, &encode(&revoked, &entry(1_000))),
            Some(vec![])
        );
        assert_eq!(without(&revoked, &encode_claim(&revoked, 50, &[])), None);
        assert_eq!(without(&revoked, &encode(&claimant, &entry(1_000))), None);
    }

    #[test]
    fn a_live_entry_that_lands_between_the_read_and_the_claim_is_never_overwritten() {
        let (k, other) = (key_for(&[7; 32], "tok"), key_for(&[7; 32], "tok2"));
        let host = TestHost::new();
        let seen = host.seen(&k, 0);
        host.set("slot", &encode(&other, &entry(1_000)), 0);
        assert_eq!(host.claim(&k, seen, 0), (Claim::Verify, false));
        assert_eq!(host.seen(&other, 0).0, Slot::Entry(entry(1_000)));
        // A dead positive entry or a negative one is not worth keeping: claimed.
        for value in [
            encode(&other, &entry(1_000)),
            encode(
                &other,
                &Cached::Invalid {
                    issuer: 0,
                    until_ms: 5_000,
                },
            ),
        ] {
            let host = TestHost::new();
            host.set("slot", &value, 0);
            let seen = host.seen(&k, 1_000);
            assert_eq!(seen.0, Slot::Free);
            assert_eq!(host.claim(&k, seen, 1_000), (Claim::Verify, true));
        }
    }

    fn negative(until_ms: u64) -> Cached {
        Cached::Invalid {
            issuer: 1,
            until_ms,
        }
    }

    #[test]
    fn negative_entries_never_push_out_another_tokens_live_positive_entry() {
        let host = TestHost::new();
        let (good, junk) = (key_for(&[7; 32], "good"), key_for(&[7; 32], "junk"));
        assert!(host.put(&good, &entry(1_000), 0));
        for now in [0, 500, 999] {
            assert!(!host.put(&junk, &negative(now + 10), now), "at {now}");
            assert_eq!(host.seen(&good, now).0, Slot::Entry(entry(1_000)));
        }
        // Once the positive entry is dead, the slot is free for anything.
        assert!(host.put(&junk, &negative(1_010), 1_000));
        assert_eq!(host.seen(&junk, 1_000).0, Slot::Entry(negative(1_010)));
        // A negative entry gives way to a positive one, and replaces another negative one.
        let other_junk = key_for(&[7; 32], "junk2");
        assert!(host.put(&other_junk, &negative(1_020), 1_000));
        assert!(host.put(&good, &entry(2_000), 1_000));
        assert_eq!(host.seen(&good, 1_000).0, Slot::Entry(entry(2_000)));
        // A token's own positive entry may turn negative (its issuer now says inactive).
        assert!(host.put(&good, &negative(1_500), 1_000));
        assert_eq!(host.seen(&good, 1_000).0, Slot::Entry(negative(1_500)));
    }

    #[test]
    fn a_positive_entry_replaces_another_tokens_positive_entry() {
        let host = TestHost::new();
        let (a, b) = (key_for(&[7; 32], "a"), key_for(&[7; 32], "b"));
        assert!(host.put(&a, &entry(5_000), 0));
        assert!(
            host.put(&b, &entry(1_000), 0),
            "the newest token that passed"
        );
        assert_eq!(host.seen(&b, 0).0, Slot::Entry(entry(1_000)));
        assert!(matches!(host.seen(&a, 0).0, Slot::Kept(_)));
    }

    #[test]
    fn a_negative_entry_is_dropped_when_the_slot_changed_since_it_was_read() {
        let host = TestHost::new();
        let (good, junk) = (key_for(&[7; 32], "good"), key_for(&[7; 32], "junk"));
        let written = put_slot(
            &junk,
            &negative(100),
            0,
            || {
                let before = host.get("slot");
                host.set("slot", &encode(&good, &entry(1_000)), 0); // a rival's write
                before
            },
            |v, cas| host.set("slot", v, cas.unwrap_or(0)),
        );
        assert!(!written);
        assert_eq!(host.seen(&good, 0).0, Slot::Entry(entry(1_000)));
    }

    #[test]
    fn claim_markers_and_entries_never_pass_for_each_other() {
        let k = key_for(&[7; 32], "tok");
        let marker = encode_claim(&k, 100, &[]);
        assert_eq!(decode(&k, &marker, 0), None);
        assert_eq!(after_unclaim(&k, &marker), Some(vec![]));
        assert_eq!(after_unclaim(&key_for(&[7; 32], "tok2"), &marker), None);
        let value = encode(&k, &entry(1_000));
        assert_eq!(after_unclaim(&k, &value), None);
        assert_eq!(read_slot(&k, Some(&value), 0), Slot::Entry(entry(1_000)));
        assert_eq!(read_slot(&k, Some(&value), 1_000), Slot::Free, "dead entry");
        let other = key_for(&[7; 32], "tok2");
        assert_eq!(
            read_slot(&other, Some(&value), 999),
            Slot::Kept(value.clone())
        );
        assert_eq!(read_slot(&other, Some(&value), 1_000), Slot::Free);
        assert_eq!(read_slot(&k, Some(b""), 0), Slot::Free);
        assert_eq!(read_slot(&k, None, 0), Slot::Free);
        assert_eq!(
            read_slot(&k, Some(&marker[..40]), 0),
            Slot::Free,
            "truncated"
        );
    }

    #[test]
    fn slots_stay_in_range() {
        for t in ["a", "b", "c", "d"] {
            assert!(slot_of(&key_for(&[0; 32], t), 3) < 3);
        }
    }
}
