//! Grant records in shared data (seen by every worker), the way the token cache keeps its
//! entries: a fixed number of slots (`tollgate.gr.<slot>` for grant records, `tollgate.gl.<slot>`
//! for links), chosen by the id's hash, each record carrying its id and until when it is worth
//! anything. Shared data has no TTL and no delete, so nothing is ever removed: a dead record
//! is read as empty and overwritten, and a new grant whose slot holds another live one takes
//! the slot (the newest wins, as in the token cache). See [`crate::gateway::grants`].

use super::{Host, Worker};
use crate::cache::{self, CacheKey};
use crate::gateway::grants::{self, GrantCall, Issued};

const RECORD: &str = "tollgate.gr.";
const LINK: &str = "tollgate.gl.";

impl<H: Host + Clone> Worker<H> {
    fn grant_slots(&self) -> u32 {
        self.cfg.cache_slots.min(grants::MAX_SLOTS)
    }

    fn grant_name(&self, space: &str, id: &CacheKey) -> String {
        format!("{space}{}", cache::slot_of(id, self.grant_slots()))
    }

    /// The live record kept for `id` in `space`.
    fn grant_read(
        &self,
        space: &str,
        id: &CacheKey,
        now_ms: u64,
    ) -> (Option<(u64, Vec<u8>)>, Option<u32>) {
        let (value, cas) = self.host.shared_get(&self.grant_name(space, id));
        (value.and_then(|v| grants::decode(id, v, now_ms)), cas)
    }

    /// The grant a token (by its id) belongs to: a grant's own id, or the grant it links to.
    fn grant_of(&self, id: &CacheKey, now_ms: u64) -> Option<CacheKey> {
        if self.grant_read(RECORD, id, now_ms).0.is_some() {
            return Some(*id);
        }
        let (_, keys) = self.grant_read(LINK, id, now_ms).0?;
        let grant = grants::keys(&keys).next();
        grant
    }

    /// A successful answer of a token call through the gateway (`body`, as the server sent it):
    /// its access token joins the grant of the refresh token presented or issued, and the
    /// access token and a new refresh token link to that grant.
    pub fn remember_grant(&self, call: &GrantCall, body: &[u8], now_ms: u64) {
        if self.grant_slots() == 0 {
            return;
        }
        let Some(issued) = grants::issued(&self.cfg, call, body, now_ms) else {
            return;
        };
        let grant = self.grant_of(&issued.grant, now_ms).unwrap_or(issued.grant);
        let Some(until_ms) = self.grant_add(&grant, &issued, now_ms) else {
            log::warn!("tollgate: a grant record could not be written");
            return;
        };
        for id in [Some(issued.access), issued.refresh].into_iter().flatten() {
            let link = grants::encode(&id, until_ms, &grant);
            if !self
                .host
                .shared_set(&self.grant_name(LINK, &id), &link, None)
            {
                log::warn!("tollgate: a grant link could not be written");
            }
        }
    }

    /// Adds `issued` to the record of `grant` (compare-and-swap, retried as other workers write
    /// the slot); the record's end, once written.
    fn grant_add(&self, grant: &CacheKey, issued: &Issued, now_ms: u64) -> Option<u64> {
        let name = self.grant_name(RECORD, grant);
        for _ in 0..16 {
            let (old, cas) = self.grant_read(RECORD, grant, now_ms);
            let (until_ms, record) = grants::merge(grant, old, issued);
            if self.host.shared_swap(&name, &record, cas) {
                return Some(until_ms);
            }
        }
        None
    }

    /// A revocation through the gateway that the server confirmed: `keys` (the named token's
    /// cache keys, see [`grants::revoked_id`]) leave the cache, and so do the cache keys of
    /// every access token of the grant the token belongs to.
    pub fn revoked(&self, keys: &[CacheKey], now_ms: u64) {
        let mut all = keys.to_vec();
        let grant = grants::revoked_id(keys).and_then(|id| self.grant_of(id, now_ms));
        if let Some((_, grant_keys)) = grant.and_then(|g| self.grant_read(RECORD, &g, now_ms).0) {
            all.extend(grants::keys(&grant_keys));
        }
        self.evict(&all);
    }
}
