//! DPoP's state shared by the workers: the key of the server nonces ([`nonce_secret`]) and
//! the replay store.
//!
//! The replay store (RFC 9449 §11.1): which proofs (`jti`, per proof key) were already
//! used inside the `iat` window, seen by every worker of the process through shared data.
//!
//! Shared data has no delete and no TTL, so the store is a fixed number of buckets
//! (`tollgate.dp.<bucket>`), each holding up to [`BUCKET_ENTRIES`] entries of (16-byte id,
//! until when it counts). A proof's id goes to exactly one bucket, and every change to a bucket
//! is a compare-and-swap of the whole bucket ([`Host::shared_swap`]), so two workers that
//! check the same proof at the same moment cannot both accept it: the second write fails, the
//! second worker reads the bucket again and finds the id. Dead entries are dropped when a
//! bucket is written.
//!
//! **Full fails closed.** A bucket whose entries are all still live has no room: the proof is
//! refused ([`Seen::Full`]), never accepted unrecorded. So is a bucket the host will not let
//! this worker write after a few tries. With `buckets` × 16 entries for `live` proofs in the
//! window, a bucket is full with the Poisson odds of 16 or more of mean `live / buckets`:
//! about 3 in 100,000 for 305,000 live proofs (5,000 DPoP requests/s with the default 60 s
//! window) over [`BUCKETS`].
//!
//! On hosts without shared data the flow keeps "shared" data per VM ([`super::store`]): the
//! store then only sees the proofs of its own worker, and a proof replayed to another worker
//! (another nginx worker on APISIX or Kong) is not caught there.

use sha2::{Digest, Sha256};

use super::host::Host;

/// Buckets of the store: at most `BUCKETS` × [`BUCKET_ENTRIES`] (1,048,576) live proofs. A
/// bucket is a shared-data key made on first use, so memory follows the live proofs (~80
/// bytes each, docs/benchmarks.md), not this number. A proof lives for its `iat` window (61 s
/// by default), so the store holds `rate × 61 s` proofs: 5,000 DPoP requests/s per Envoy
/// process fill a bucket (and are refused) 3 times in 100,000.
pub const BUCKETS: u32 = 65_536;
/// Entries per bucket.
pub const BUCKET_ENTRIES: usize = 16;
/// Bytes per entry: a 16-byte id and an 8-byte expiry (ms since the epoch, little endian).
const ENTRY: usize = 24;
/// Compare-and-swap attempts before a proof is refused as if the store were full.
const TRIES: usize = 4;
const SPACE: &str = "tollgate.dp.";

/// What the store says of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First use: now recorded until the given time.
    Fresh,
    /// Already used inside the window.
    Replay,
    /// No room, or the host would not take the write: refused (fail closed).
    Full,
}

/// The store's id of a proof: its key's thumbprint and its `jti`, hashed.
pub fn proof_id(jkt: &str, jti: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(jkt.as_bytes());
    h.update([0u8]);
    h.update(jti.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Records the proof `id` until `until_ms`, unless it is recorded already.
pub fn record(host: &impl Host, buckets: u32, id: &[u8; 16], until_ms: u64, now_ms: u64) -> Seen {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id[..8]);
    let bucket = u64::from_le_bytes(head) % u64::from(buckets.max(1));
    let name = format!("{SPACE}{bucket}");
    for _ in 0..TRIES {
        let (value, cas) = host.shared_get(&name);
        let mut live: Vec<([u8; 16], u64)> = entries(value.as_deref().unwrap_or_default())
            .filter(|(_, until)| *until > now_ms)
            .collect();
        if live.iter().any(|(seen, _)| seen == id) {
            return Seen::Replay;
        }
        if live.len() >= BUCKET_ENTRIES {
            return Seen::Full;
        }
        live.push((*id, until_ms));
        if host.shared_swap(&name, &encode(&live), cas) {
            return Seen::Fresh;
        }
    }
    Seen::Full
}

/// Where the server nonces' key lives.
const NONCE_KEY: &str = "tollgate.dp.nonce-key";
/// Bytes of that key.
const NONCE_KEY_LEN: usize = 32;

/// The key of the DPoP server nonces: the one in shared data, or a new random one put there
/// if there is none yet. Two workers that start together both try to create it; only one
/// write succeeds (compare-and-swap) and both then use what the store holds. `None` when the
/// host gives no randomness or will not keep the key.
pub fn nonce_secret(host: &impl Host) -> Option<Vec<u8>> {
    for _ in 0..TRIES {
        let (value, cas) = host.shared_get(NONCE_KEY);
        if let Some(v) = value.filter(|v| v.len() == NONCE_KEY_LEN) {
            return Some(v);
        }
        let mut fresh = vec![0u8; NONCE_KEY_LEN];
        if !host.random(&mut fresh) {
            return None;
        }
        // Whether this write or another worker's won, the next read returns the key.
        host.shared_swap(NONCE_KEY, &fresh, cas);
    }
    None
}

fn entries(bytes: &[u8]) -> impl Iterator<Item = ([u8; 16], u64)> + '_ {
    bytes.chunks_exact(ENTRY).filter_map(|e| {
        let (id, until) = e.split_at(16);
        Some((
            id.try_into().ok()?,
            u64::from_le_bytes(until.try_into().ok()?),
        ))
    })
}

fn encode(entries: &[([u8; 16], u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for (id, until) in entries {
        out.extend_from_slice(id);
        out.extend_from_slice(&until.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::flow::testhost::TestHost;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn a_proof_counts_once_inside_its_window_on_every_worker() {
        let one = TestHost::new();
        let two = one.peer();
        let id = proof_id("jkt-a", "jti-1");
        assert_eq!(record(&one, 64, &id, NOW + 60_000, NOW), Seen::Fresh);
        assert_eq!(record(&one, 64, &id, NOW + 60_000, NOW + 1), Seen::Replay);
        assert_eq!(
            record(&two, 64, &id, NOW + 60_000, NOW + 2),
            Seen::Replay,
            "another worker"
        );
        // The same jti under another key is another proof.
        assert_eq!(
            record(&two, 64, &proof_id("jkt-b", "jti-1"), NOW + 60_000, NOW),
            Seen::Fresh
        );
        // Once its window is over the entry is dead (the proof's iat is then refused anyway).
        assert_eq!(
            record(&one, 64, &id, NOW + 120_000, NOW + 60_000),
            Seen::Fresh
        );
    }

    #[test]
    fn a_full_bucket_refuses_and_frees_up_as_entries_die() {
        let host = TestHost::new();
        // One bucket: every id lands in it.
        for i in 0..BUCKET_ENTRIES {
            let id = proof_id("k", &format!("jti-{i}"));
            assert_eq!(
                record(&host, 1, &id, NOW + 1_000 + i as u64, NOW),
                Seen::Fresh
            );
        }
        let late = proof_id("k", "late");
        assert_eq!(
            record(&host, 1, &late, NOW + 60_000, NOW),
            Seen::Full,
            "fail closed"
        );
        // The first entry dies at NOW + 1_000: room again, and the full bucket's ids are
        // still replays.
        assert_eq!(
            record(&host, 1, &late, NOW + 60_000, NOW + 1_000),
            Seen::Fresh
        );
        let last = proof_id("k", &format!("jti-{}", BUCKET_ENTRIES - 1));
        assert_eq!(
            record(&host, 1, &last, NOW + 60_000, NOW + 1_000),
            Seen::Replay
        );
    }

    /// Two workers read the same bucket before either writes (the interleaving a single
    /// check-then-write would get wrong): the second write fails its compare-and-swap, and the
    /// second worker then finds the proof.
    #[test]
    fn two_workers_racing_on_one_proof_accept_it_once() {
        let one = TestHost::new();
        let two = one.peer();
        let id = proof_id("k", "raced");
        let name = format!("{SPACE}0");
        // Worker two has read the (missing) bucket; worker one records the proof meanwhile.
        let (seen_by_two, cas_two) = two.shared_get(&name);
        assert!(seen_by_two.is_none());
        assert_eq!(record(&one, 1, &id, NOW + 60_000, NOW), Seen::Fresh);
        // Worker two's write, based on its stale read, is refused by the host ...
        assert!(!two.shared_swap(&name, &encode(&[(id, NOW + 60_000)]), cas_two));
        // ... and its next try finds the proof.
        assert_eq!(record(&two, 1, &id, NOW + 60_000, NOW), Seen::Replay);
    }
}
