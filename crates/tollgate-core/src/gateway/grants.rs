//! Grants seen through the gateway: which access tokens came with which refresh token, so that
//! a revocation through the gateway evicts every cached access token of the grant, not only the
//! token it names (oidc-provider revokes the whole grant; RFC 7009 §2.1 says the server SHOULD
//! invalidate the grant's access tokens when a refresh token is revoked).
//!
//! Pure values and the record format; [`crate::flow`] keeps the records in shared data.
//!
//! - [`GrantCall`]: a token call whose answer may carry a refresh token (set by the plan);
//! - [`issued`]: what of a successful token answer is remembered (cache keys and ids only,
//!   never a token);
//! - records ([`encode`], [`decode`], [`merge`]): `id | until | keys`, in fixed slots, as the
//!   token cache keeps its entries.
//!
//! A token's id is its cache key as its server minted it (routing tag removed): the id of an
//! access token is its untagged cache key, the id of a refresh token is the same hash over the
//! refresh token. A grant record lives under the id of the refresh token that started it
//! (the first one the gateway saw); every later refresh token and every access token of the
//! grant links to it (a link is a record whose one key is the grant's id).

use serde_json::{Map, Value};

use super::form;
use crate::cache::{self, CacheKey};
use crate::config::FilterConfig;
use crate::token;

/// The keys one grant record keeps at most: the newest (an access token's tagged and untagged
/// keys count apart). Older ones are dropped when a refresh adds more.
pub const MAX_KEYS: usize = 16;

/// Grant record slots (and as many link slots) at most: fewer if the token cache has fewer.
pub const MAX_SLOTS: u32 = 1024;

/// A token call whose answer is read, to remember its grant: the issuer it went to and, for the
/// refresh grant, the id of the refresh token it presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantCall {
    pub issuer: usize,
    pub presented: Option<CacheKey>,
}

impl GrantCall {
    /// A token call to `issuer` with `form`: `None` when nothing of its answer could ever be in
    /// the token cache at revocation (the cache is off, or the issuer does not introspect).
    pub fn of(
        cfg: &FilterConfig,
        issuer: usize,
        form: Option<&[(String, String)]>,
    ) -> Option<GrantCall> {
        if cfg.cache_slots == 0 || cfg.issuers.get(issuer)?.introspection.is_none() {
            return None;
        }
        let presented = form
            .and_then(|f| form::get(f, "refresh_token"))
            .map(|t| id_of(cfg, t));
        Some(GrantCall { issuer, presented })
    }
}

/// The id of a token as clients present it (tagged or not).
pub fn id_of(cfg: &FilterConfig, token: &str) -> CacheKey {
    let bare = crate::issuer::tagged(cfg, token).map_or(token, |(_, b)| b);
    cache::key_for(&cfg.fingerprint, bare)
}

/// The id of the token a revocation names, from its cache keys as
/// [`super::plan::OnResponse::evictions`] lists them: as sent, then without its routing tag.
pub fn revoked_id(evictions: &[CacheKey]) -> Option<&CacheKey> {
    evictions.last()
}

/// What a successful token answer adds to its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The grant: the id the record is looked up by (a presented refresh token's, else the
    /// issued one's).
    pub grant: CacheKey,
    /// The access token's id (its untagged cache key).
    pub access: CacheKey,
    /// Its cache keys as API clients may present it, one after the other: untagged, and with
    /// tagging on also tagged (whether this answer's access token is tagged is the rewrite's
    /// business: both keys cover either).
    pub keys: Vec<u8>,
    /// A refresh token issued with it that is not the grant's id (a first or rotated one).
    pub refresh: Option<CacheKey>,
    /// Until when a cache entry of the access token can exist: its `expires_in` from now, or
    /// the issuer's `max_ttl_s` without one.
    pub until_ms: u64,
}

/// What of a token answer (`body`, as the server sent it) to remember; `None` for an answer
/// without an access token, or one with neither a presented nor an issued refresh token.
pub fn issued(cfg: &FilterConfig, call: &GrantCall, body: &[u8], now_ms: u64) -> Option<Issued> {
    let issuer = cfg.issuers.get(call.issuer)?;
    let max_ms = issuer.introspection.as_ref()?.ttl.max_ms;
    let doc: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let text = |name: &str| doc.get(name).and_then(Value::as_str);
    let at = text("access_token")?;
    let issued_rt = text("refresh_token").map(|t| cache::key_for(&cfg.fingerprint, t));
    let grant = call.presented.or(issued_rt)?;
    let access = cache::key_for(&cfg.fingerprint, at);
    let mut keys = access.to_vec();
    if cfg.gateway.as_ref().is_some_and(|g| g.tagging) && !token::is_jws(at) {
        keys.extend_from_slice(&cache::key_for(
            &cfg.fingerprint,
            &token::tag(&issuer.name, at),
        ));
    }
    let lifetime_ms = doc
        .get("expires_in")
        .and_then(Value::as_u64)
        .map_or(max_ms, |s| s.saturating_mul(1000));
    Some(Issued {
        grant,
        access,
        keys,
        refresh: issued_rt.filter(|r| *r != grant),
        until_ms: now_ms.saturating_add(lifetime_ms),
    })
}

/// A record: the id it is kept for, until when it is worth anything (ms since the epoch), then
/// its keys (32 bytes each, one after the other).
pub fn encode(id: &CacheKey, until_ms: u64, keys: &[u8]) -> Vec<u8> {
    [&id[..], &until_ms.to_le_bytes(), keys].concat()
}

/// The live record for `id` in a slot value: (until, keys). `None` for another id's record, a
/// dead one, or anything malformed.
pub fn decode(id: &CacheKey, mut value: Vec<u8>, now_ms: u64) -> Option<(u64, Vec<u8>)> {
    let until = u64::from_le_bytes(value.get(32..40)?.try_into().ok()?);
    if value.get(..32) != Some(&id[..]) || until <= now_ms || value.len() % 32 != 8 {
        return None;
    }
    Some((until, value.split_off(40)))
}

/// The keys of a record, each as a cache key.
pub fn keys(keys: &[u8]) -> impl Iterator<Item = CacheKey> + '_ {
    keys.chunks_exact(32).filter_map(|k| k.try_into().ok())
}

/// The grant record for `grant` after `issued` was added to what the slot held (`old`, the
/// live record for `grant`, if any): the new keys last, at most [`MAX_KEYS`] (the oldest go),
/// living until the later of the two ends. Returns that end and the record. (A key answered
/// twice, as a server's retry grace period may, is kept twice: it only takes room.)
pub fn merge(grant: &CacheKey, old: Option<(u64, Vec<u8>)>, issued: &Issued) -> (u64, Vec<u8>) {
    let (until, mut keys) = old.unwrap_or_default();
    let until = until.max(issued.until_ms);
    keys.extend_from_slice(&issued.keys);
    let drop = keys.len().saturating_sub(MAX_KEYS * 32);
    (
        until,
        encode(grant, until, keys.get(drop..).unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests;
