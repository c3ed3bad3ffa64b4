//! What the per-key table verifiers ([`crate::ecdsa_math`], [`crate::ed25519_math`]) share:
//! the signed-digit recoding of a scalar, and the registry that finds a key's table again by
//! the key's encoding.
//!
//! Both verifiers multiply a point by a scalar with a table of its multiples,
//! `T[i][j-1] = j·2^(w·i)·P` for `j = 1..=2^(w-1)`: the scalar is recoded into signed
//! base-2^w digits `d_i` and `k·P = Σ sign(d_i)·T[i][|d_i|-1]`, additions only.
//!
//! Key sets reload whole on every JWKS refresh, in every worker; a key's table is registered
//! under the key's encoding, held weakly, so that a reload finds the table of an unchanged key
//! while any loaded set still holds it, and only new keys pay for one.

use std::ops::{Add, Sub};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// Widest window supported: digits are `i16` and a window spans at most two bytes.
pub const MAX_WINDOW: u32 = 8;

/// How many signed base-2^w digits a scalar below `2^bits` needs: `ceil((bits + 1) / w)`. The
/// extra bit keeps the top digit from carrying out (see [`recode`]).
pub const fn digit_count(bits: u32, window: u32) -> usize {
    (bits + 1).div_ceil(window) as usize
}

/// Writes the signed base-2^w digits of the little-endian scalar `le` (below `2^bits`, least
/// significant digit first) into `out` and returns them: `k = Σ d_i·2^(w·i)` with
/// `-2^(w-1) < d_i <= 2^(w-1)`. `window` must be in `1..=MAX_WINDOW`; at most `out.len()`
/// digits are written.
pub fn recode<'o>(le: &[u8], bits: u32, window: u32, out: &'o mut [i16]) -> &'o [i16] {
    let count = digit_count(bits, window).min(out.len());
    let half = 1i32 << (window - 1);
    let mask = (1u32 << window) - 1;
    let mut carry = 0i32;
    for (i, digit) in out.iter_mut().take(count).enumerate() {
        let bit = i * window as usize;
        let (byte, shift) = (bit / 8, bit % 8);
        // Bytes past the scalar's end read as zero.
        let pair = u32::from(le.get(byte).copied().unwrap_or(0))
            | u32::from(le.get(byte + 1).copied().unwrap_or(0)) << 8;
        let mut value = ((pair >> shift) & mask) as i32 + carry;
        carry = 0;
        if value > half {
            value -= 1 << window;
            carry = 1;
        }
        // |value| <= 2^(w-1) <= 128 fits.
        *digit = value as i16;
    }
    // The top window holds at most w-1 bits of k (< 2^bits), so its digit cannot carry out.
    &out[..count]
}

/// Adds `Σ sign(d_i)·T[i][|d_i|-1]` to `acc`: `points` is a table of `2^(window-1)` multiples
/// per row (row `i` for digit `d_i`, as [`recode`] writes them), zero digits are skipped.
pub fn add_signed_multiples<P, T>(acc: &mut P, points: &[T], digits: &[i16], window: u32)
where
    P: Copy + for<'t> Add<&'t T, Output = P> + for<'t> Sub<&'t T, Output = P>,
{
    let half = 1usize << (window - 1);
    for (row, &digit) in digits.iter().enumerate() {
        let magnitude = usize::from(digit.unsigned_abs());
        if magnitude == 0 {
            continue;
        }
        let Some(point) = points.get(row * half + magnitude - 1) else {
            continue; // unreachable: recode keeps |digit| <= half and row < rows
        };
        *acc = if digit > 0 {
            *acc + point
        } else {
            *acc - point
        };
    }
}

/// Tables by their key's encoding, held weakly (see the module's documentation).
pub type KeyTables<T> = Vec<(Vec<u8>, Weak<T>)>;

/// The registry, locked (a poisoned lock is still used: its entries are only pointers).
pub fn lock<T>(registry: &'static Mutex<KeyTables<T>>) -> MutexGuard<'static, KeyTables<T>> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The held table registered under `encoded`, if any (dead entries are pruned first).
pub fn lookup<T>(tables: &mut KeyTables<T>, encoded: &[u8]) -> Option<Arc<T>> {
    tables.retain(|(_, table)| table.strong_count() > 0);
    tables
        .iter()
        .find(|(key, _)| key[..] == *encoded)
        .and_then(|(_, table)| table.upgrade())
}

/// The table registered under `encoded` if one is held, else `build()`'s, registered.
pub fn find_or_build<T>(
    registry: &'static Mutex<KeyTables<T>>,
    encoded: &[u8],
    build: impl FnOnce() -> T,
) -> Arc<T> {
    let mut tables = lock(registry);
    if let Some(table) = lookup(&mut tables, encoded) {
        return table;
    }
    let table = Arc::new(build());
    tables.push((encoded.to_vec(), Arc::downgrade(&table)));
    table
}
