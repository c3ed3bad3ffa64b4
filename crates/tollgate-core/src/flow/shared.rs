//! Records in the host's shared data (one copy per Envoy process, seen by every worker):
//! per-issuer fetch state and key sets, and the verified-token cache slots.
//!
//! Keys: `tollgate.<fp>.jwks.<issuer>.state` (a [`FetchState`], updated by compare-and-swap),
//! `tollgate.<fp>.jwks.<issuer>.keys` (generation, fetch time, JWKS bytes),
//! `tollgate.<fp>.jwks.<issuer>.<well-known name>` (the gateway's metadata documents),
//! `tollgate.tc.<slot>` (a token's cache entry, or a worker's claim while it verifies the
//! token) and the introspection leases `tollgate.il.<slot>`. `<fp>` is a short configuration
//! fingerprint, so a changed configuration starts from fresh fetch state.

use super::host::Host;
use crate::cache::{self, CacheKey, Cached, Claim, LocalMemo, Slot, TokenCache};
use crate::endpoint::DocumentKind;
use crate::gateway::metadata::Documents;
use crate::refresh::{DocState, FetchState};

/// The shared-data names of one issuer's records.
#[derive(Debug, Clone)]
pub struct IssuerKeys {
    pub state: String,
    pub keys: String,
    /// The issuer's metadata documents as fetched (for the gateway), by
    /// [`DocumentKind::index`].
    pub documents: [String; 2],
}

impl IssuerKeys {
    pub fn new(fingerprint: &[u8; 32], issuer_name: &str) -> IssuerKeys {
        let fp: String = fingerprint[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        IssuerKeys {
            state: format!("tollgate.{fp}.jwks.{issuer_name}.state"),
            keys: format!("tollgate.{fp}.jwks.{issuer_name}.keys"),
            documents: DocumentKind::ALL
                .map(|k| format!("tollgate.{fp}.jwks.{issuer_name}.{}", k.well_known())),
        }
    }

    pub fn read_state(&self, host: &impl Host) -> (FetchState, Option<u32>) {
        let (value, cas) = host.shared_get(&self.state);
        (
            value.map(|v| FetchState::decode(&v)).unwrap_or_default(),
            cas,
        )
    }

    /// Creates the state record if absent, so that later writes can be compare-and-swapped
    /// (the host applies no CAS check to a key that does not exist yet).
    pub fn ensure_state(&self, host: &impl Host) {
        if host.shared_get(&self.state).0.is_none() {
            host.shared_set(&self.state, &FetchState::default().encode(), None);
        }
    }

    /// Applies `change` to the state if `decide` agrees, atomically with respect to other
    /// workers (retrying on CAS mismatch). Returns the state written, or `None` if `decide`
    /// said no.
    pub fn update(
        &self,
        host: &impl Host,
        decide: impl Fn(&FetchState) -> bool,
        change: impl Fn(&mut FetchState),
    ) -> Option<FetchState> {
        for _ in 0..16 {
            let (mut state, cas) = self.read_state(host);
            if !decide(&state) {
                return None;
            }
            change(&mut state);
            if host.shared_set(&self.state, &state.encode(), cas) {
                return Some(state);
            }
        }
        None
    }

    pub fn write_document(&self, host: &impl Host, kind: DocumentKind, doc: &[u8]) {
        host.shared_set(&self.documents[kind.index()], doc, None);
    }

    /// The gateway's documents, parsed (gateway calls are rare enough to parse them each
    /// time); `wanted` says which kinds the issuer's configuration names.
    pub fn read_documents(&self, host: &impl Host, wanted: [bool; 2]) -> Documents {
        let (state, _) = self.read_state(host);
        let mut documents = Documents {
            ready: true,
            ..Documents::default()
        };
        for kind in DocumentKind::ALL {
            let i = kind.index();
            if !wanted[i] {
                continue;
            }
            match state.documents[i] {
                DocState::Unknown => documents.ready = false,
                DocState::Absent => {}
                DocState::Stored => {
                    documents.docs[i] = host
                        .shared_get(&self.documents[i])
                        .0
                        .and_then(|v| serde_json::from_slice(&v).ok());
                }
            }
        }
        documents
    }

    pub fn write_keys(&self, host: &impl Host, generation: u64, fetched_at: u64, jwks: &[u8]) {
        let mut value = Vec::with_capacity(16 + jwks.len());
        value.extend_from_slice(&generation.to_le_bytes());
        value.extend_from_slice(&fetched_at.to_le_bytes());
        value.extend_from_slice(jwks);
        host.shared_set(&self.keys, &value, None);
    }

    /// (generation, fetched_at, JWKS bytes) of the shared key set, if one was fetched.
    pub fn read_keys(&self, host: &impl Host) -> Option<(u64, u64, Vec<u8>)> {
        let value = host.shared_get(&self.keys).0?;
        let (head, jwks) = value.split_at_checked(16)?;
        let (g, f) = head.split_at(8);
        Some((
            u64::from_le_bytes(g.try_into().ok()?),
            u64::from_le_bytes(f.try_into().ok()?),
            jwks.to_vec(),
        ))
    }
}

/// The verified-token cache over shared data: `slots` fixed keys, so memory is bounded. In
/// front of it, each worker keeps a [`LocalMemo`] of tokens it saw; every removal from the
/// shared cache (revocation through the gateway) bumps a shared epoch, and a worker that sees a
/// new epoch drops its memo — one small shared-data read per request instead of a hash, a copy
/// and a JSON decode (and none where nothing can revoke, see
/// [`SharedTokenCache::without_revocation`]).
///
/// Single flight: a worker about to verify a token the cache missed first swaps a claim marker
/// into the token's slot (compare-and-swap against the read that missed, so of two workers
/// only one gets it, also for a slot never written before); the other waits until the entry
/// replaces the marker, or the marker goes or lapses ([`cache::CLAIM_MS`]).
pub struct SharedTokenCache<H> {
    host: H,
    pub slots: u32,
    memo: LocalMemo,
    epoch: u64,
    /// Whether entries can be revoked (the gateway is configured): only then is the epoch read
    /// on every memo lookup. See [`SharedTokenCache::without_revocation`].
    revocable: bool,
    /// What the last [`TokenCache::get`] that missed read: key, slot state, CAS (the claim
    /// that follows swaps against it instead of reading the slot again).
    missed: Option<(CacheKey, Slot, Option<u32>)>,
    /// The key whose slot this worker claimed and has not yet filled or freed.
    claimed: Option<CacheKey>,
}

const EPOCH_KEY: &str = "tollgate.tc.epoch";

/// Tokens a worker remembers locally.
const MEMO_ENTRIES: usize = 1024;

fn read_epoch(host: &impl Host) -> u64 {
    host.shared_get(EPOCH_KEY)
        .0
        .and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()))
        .map_or(0, u64::from_le_bytes)
}

impl<H: Host> SharedTokenCache<H> {
    /// The cache over `host`'s shared data (`slots` 0: off).
    pub fn new(host: H, slots: u32) -> SharedTokenCache<H> {
        SharedTokenCache {
            host,
            slots,
            memo: LocalMemo::new(if slots > 0 { MEMO_ENTRIES } else { 0 }),
            epoch: 0,
            revocable: true,
            missed: None,
            claimed: None,
        }
    }

    /// The cache of a configuration without the gateway: nothing revokes its entries, so the
    /// memo trusts itself without reading the revocation epoch (one shared-data read, and its
    /// copy into the VM, per warm request). Sound because only a revocation through the gateway
    /// removes entries ([`Self::remove`]), and it removes them under the keys of its own
    /// configuration, whose text (the keys' fingerprint) names the gateway: a configuration
    /// without one never shares keys with a configuration that has one.
    pub fn without_revocation(mut self) -> SharedTokenCache<H> {
        self.revocable = false;
        self
    }

    /// The revocation epoch: moves whenever a token is removed through [`Self::remove`].
    pub fn epoch(&self) -> u64 {
        if self.slots == 0 {
            return 0;
        }
        read_epoch(&self.host)
    }

    /// Whether some worker holds a live claim on `key`'s slot for `key` (is verifying that
    /// token). `false` once the entry landed, the claim was freed or lapsed, or another token
    /// took the slot.
    pub fn claimed_elsewhere(&self, key: &CacheKey, now_ms: u64) -> bool {
        if self.slots == 0 {
            return false;
        }
        let value = self.host.shared_get(&self.slot_key(key)).0;
        cache::read_slot(key, value.as_deref(), now_ms) == Slot::Claimed
    }

    /// Whether a live entry for `key` is in the cache (another worker's answer landed).
    pub fn peek(&mut self, key: &CacheKey, now_ms: u64) -> bool {
        self.slots > 0 && self.get(key, now_ms).is_some()
    }

    /// Drops the entry for `key` (leaving any other token's entry in the slot alone), and
    /// tells every worker (this one included) to forget what it remembers locally.
    pub fn remove(&self, key: &CacheKey) {
        if self.slots == 0 {
            return;
        }
        let name = self.slot_key(key);
        let (value, cas) = self.host.shared_get(&name);
        if let Some(new) = value.as_deref().and_then(|v| cache::without(key, v)) {
            self.host.shared_set(&name, &new, cas);
        }
        for _ in 0..16 {
            let (value, cas) = self.host.shared_get(EPOCH_KEY);
            let next = value
                .and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map_or(0, u64::from_le_bytes)
                .wrapping_add(1);
            if self.host.shared_swap(EPOCH_KEY, &next.to_le_bytes(), cas) {
                break;
            }
        }
    }

    fn slot_key(&self, key: &CacheKey) -> String {
        format!("tollgate.tc.{}", cache::slot_of(key, self.slots))
    }
}

impl<H: Host> TokenCache for SharedTokenCache<H> {
    fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Cached> {
        let (value, cas) = self.host.shared_get(&self.slot_key(key));
        match cache::read_slot(key, value.as_deref(), now_ms) {
            Slot::Entry(entry) => {
                self.missed = None;
                Some(entry)
            }
            state => {
                self.missed = Some((*key, state, cas));
                None
            }
        }
    }

    fn put(&mut self, key: &CacheKey, entry: &Cached, now_ms: u64) {
        let name = self.slot_key(key);
        let written = cache::put_slot(
            key,
            entry,
            now_ms,
            || self.host.shared_get(&name),
            |value, cas| self.host.shared_set(&name, value, cas),
        );
        if !written {
            self.unclaim(key);
        } else if self.claimed == Some(*key) {
            self.claimed = None; // the entry replaced the claim marker
        }
    }

    fn claim(&mut self, key: &CacheKey, now_ms: u64) -> Claim {
        let name = self.slot_key(key);
        let seen = match self.missed.take() {
            Some((k, state, cas)) if k == *key => (state, cas),
            _ => {
                let (value, cas) = self.host.shared_get(&name);
                (cache::read_slot(key, value.as_deref(), now_ms), cas)
            }
        };
        let (claim, held) = cache::claim_slot(
            key,
            seen,
            now_ms,
            |marker, cas| self.host.shared_set(&name, marker, Some(cas)),
            || self.host.shared_get(&name).0,
        );
        if held {
            self.claimed = Some(*key);
        }
        claim
    }

    fn unclaim(&mut self, key: &CacheKey) {
        if self.claimed != Some(*key) {
            return;
        }
        self.claimed = None;
        // If the slot still holds this worker's marker, put back what it covers (another
        // token's entry, or nothing; a revocation meanwhile took that entry out of the marker).
        let name = self.slot_key(key);
        let (value, cas) = self.host.shared_get(&name);
        if let Some(covered) = value.as_deref().and_then(|v| cache::after_unclaim(key, v)) {
            self.host.shared_set(&name, &covered, cas);
        }
    }

    fn get_local(&mut self, token: &str, now_ms: u64) -> Option<Cached> {
        if self.slots == 0 {
            return None;
        }
        if self.revocable {
            let epoch = read_epoch(&self.host);
            if epoch != self.epoch {
                self.memo.clear();
                self.epoch = epoch;
                return None;
            }
        }
        self.memo.get(token, now_ms).cloned()
    }

    fn remember(&mut self, token: &str, entry: &Cached) {
        self.memo.put(token, entry);
    }
}

/// Whether an introspection lease is held, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This worker now holds the lease: it makes the call.
    Taken,
    /// Another worker is introspecting this very token: wait for its answer in the cache.
    HeldElsewhere,
    /// The slot is busy with another token (or a race was lost): call without a lease.
    Unavailable,
}

/// Single-flight across workers: one lease slot per cache slot, holding the token's cache key
/// and the time the lease lapses (so a worker that dies mid-call frees it).
impl<H: Host> SharedTokenCache<H> {
    fn lease_key(&self, key: &CacheKey) -> String {
        format!("tollgate.il.{}", cache::slot_of(key, self.slots))
    }

    pub fn take_lease(&self, key: &CacheKey, now_ms: u64, until_ms: u64) -> Lease {
        take_lease(&self.host, &self.lease_key(key), key, now_ms, until_ms)
    }

    /// Whether some worker holds a live lease for `key`.
    pub fn lease_held(&self, key: &CacheKey, now_ms: u64) -> bool {
        lease_held(&self.host, &self.lease_key(key), key, now_ms)
    }

    pub fn release_lease(&self, key: &CacheKey) {
        release_lease(&self.host, &self.lease_key(key), key);
    }
}

/// Takes the lease at shared-data key `name` for `key` until `until_ms`. (Also the policy
/// decisions' leases, `flow/authorize.rs`.)
pub(super) fn take_lease(
    host: &impl Host,
    name: &str,
    key: &[u8; 32],
    now_ms: u64,
    until_ms: u64,
) -> Lease {
    let (value, cas) = host.shared_get(name);
    if let Some((holder, lapses)) = value.as_deref().and_then(read_lease) {
        if lapses > now_ms {
            return if holder == &key[..] {
                Lease::HeldElsewhere
            } else {
                Lease::Unavailable
            };
        }
    }
    let mut mine = key.to_vec();
    mine.extend_from_slice(&until_ms.to_le_bytes());
    // Also when the slot was never written: then only if it still was not.
    if host.shared_swap(name, &mine, cas) {
        return Lease::Taken;
    }
    // Lost a race: if the winner is calling for this very key, wait for it.
    if lease_held(host, name, key, now_ms) {
        Lease::HeldElsewhere
    } else {
        Lease::Unavailable
    }
}

/// Whether some worker holds a live lease for `key` at `name`.
pub(super) fn lease_held(host: &impl Host, name: &str, key: &[u8; 32], now_ms: u64) -> bool {
    let (value, _) = host.shared_get(name);
    value
        .as_deref()
        .and_then(read_lease)
        .is_some_and(|(holder, lapses)| holder == &key[..] && lapses > now_ms)
}

/// Frees the lease at `name` if `key` holds it.
pub(super) fn release_lease(host: &impl Host, name: &str, key: &[u8; 32]) {
    let (value, cas) = host.shared_get(name);
    if value
        .as_deref()
        .and_then(read_lease)
        .is_some_and(|(holder, _)| holder == &key[..])
    {
        let mut lapsed = key.to_vec();
        lapsed.extend_from_slice(&0u64.to_le_bytes());
        host.shared_set(name, &lapsed, cas);
    }
}

fn read_lease(value: &[u8]) -> Option<(&[u8], u64)> {
    let (holder, lapses) = value.split_at_checked(32)?;
    Some((holder, u64::from_le_bytes(lapses.try_into().ok()?)))
}

/// Fixed-slot records in shared data, each keyed by a 32-byte hash, with a lease per slot: the
/// policy-decision cache (`tollgate.dc.<slot>`, leases `tollgate.dl.<slot>`) and the
/// exchanged-token cache (`tollgate.xc.<slot>`, `tollgate.xl.<slot>`). `slots` fixed keys, so
/// memory is bounded; a record names its key, so a slot shared by two keys is a miss. 0 slots:
/// off.
#[derive(Clone)]
pub(super) struct Slots<H> {
    host: H,
    slots: u32,
    records: &'static str,
    leases: &'static str,
}

impl<H: Host> Slots<H> {
    pub(super) fn new(host: H, slots: u32, records: &'static str, leases: &'static str) -> Self {
        Slots {
            host,
            slots,
            records,
            leases,
        }
    }

    /// Whether the store is on (and cross-worker single flight with it).
    pub(super) fn enabled(&self) -> bool {
        self.slots > 0
    }

    fn slot(&self, key: &[u8; 32]) -> u32 {
        cache::slot_of(key, self.slots)
    }

    /// The record in `key`'s slot (possibly another key's: the caller's decoder checks).
    pub(super) fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        if self.slots == 0 {
            return None;
        }
        let name = format!("tollgate.{}.{}", self.records, self.slot(key));
        self.host.shared_get(&name).0
    }

    pub(super) fn put(&self, key: &[u8; 32], record: &[u8]) {
        if self.slots > 0 {
            let name = format!("tollgate.{}.{}", self.records, self.slot(key));
            self.host.shared_set(&name, record, None);
        }
    }

    fn lease_key(&self, key: &[u8; 32]) -> String {
        format!("tollgate.{}.{}", self.leases, self.slot(key))
    }

    pub(super) fn take_lease(&self, key: &[u8; 32], now: u64, until: u64) -> Lease {
        take_lease(&self.host, &self.lease_key(key), key, now, until)
    }

    pub(super) fn lease_held(&self, key: &[u8; 32], now: u64) -> bool {
        lease_held(&self.host, &self.lease_key(key), key, now)
    }

    pub(super) fn release_lease(&self, key: &[u8; 32]) {
        release_lease(&self.host, &self.lease_key(key), key);
    }
}
