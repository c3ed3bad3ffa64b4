//! Verify-only Ed25519 (RFC 8032 §5.1.7, the JWS `EdDSA` of RFC 8037), built for speed on
//! public data.
//!
//! The field and group arithmetic is curve25519-dalek's (its `u32` backend on wasm32: 25.5-bit
//! limbs whose products are native 64-bit wasm multiplications, where ed25519-compact's 51-bit
//! limbs need a 128-bit product that wasm32 has no instruction for); only the
//! scalar-multiplication schedule and the verification equation are written here. Verification
//! handles no secret, so every step may take variable time (table lookups indexed by scalar
//! digits, skipped zero digits).
//!
//! The schedule is [`crate::ecdsa_math`]'s: the base point `B` is expanded once per process,
//! and each key `A` once when it first verifies, into a table of multiples
//! `T[i][j-1] = j·2^(w·i)·P` ([`crate::precompute`]), so that `[S]B - [k]A` costs about
//! `253/w_B + 253/w_A` point additions and no doublings. curve25519-dalek keeps its cheaper
//! mixed point representations private, so the tables hold extended points, added with its
//! complete formulas. Measured in wasm instructions (wasmtime fuel) for the arithmetic of one
//! verification: ed25519-compact 5.5 M; curve25519-dalek's `vartime_double_scalar_mul_basepoint`
//! (~253 doublings, ~80 additions) 1.8 M; its constant-time radix-16 tables for `A` and `B`
//! 1.4 M; these tables 0.83 M (`docs/benchmarks.md`, "Cold EdDSA").
//!
//! # What is accepted
//!
//! A signature `R || S` (64 bytes) of message `M` by key `A` is accepted exactly when (these are
//! ed25519-compact's rules, which verified Tollgate's EdDSA before; the tests hold the two to
//! the same verdicts):
//! - `S` is canonical: `S < L`, the group order (RFC 8032 §5.1.7 step 1), so a signature is not
//!   malleable through `S + L`;
//! - `A` and `R` are canonical encodings (the 255-bit `y` below `p = 2^255 - 19`) of points of
//!   the curve, and neither has small order (is in the 8-torsion subgroup `E[8]`: the identity,
//!   and the points of order 2, 4 and 8). A key failing this is refused when it loads
//!   ([`VerifyingKey::from_bytes`]), so a JWKS holding one leaves it out. (`x = 0` with the
//!   sign bit set, which RFC 8032 refuses to decode, only encodes `y = ±1`: small order.)
//! - the **cofactored** equation holds: `[8]([S]B - [k]A - R)` is the identity, with
//!   `k = SHA-512(R || A || M) mod L` over the encodings as received. So points of mixed order
//!   (a large-order point plus a torsion component) are accepted as `A` or `R` when it holds,
//!   as RFC 8032's check `[8][S]B = [8]R + [8][k]A'` accepts them; a cofactorless verifier
//!   (`[S]B = R + [k]A`, e.g. ed25519-dalek's `verify_strict`) refuses most of those. No
//!   honest signer produces them.

use std::sync::{Arc, Mutex, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest as _, Sha512};

use crate::precompute::{self, KeyTables, MAX_WINDOW};

/// Window width (bits) of the process-wide table of the base point: 43 rows of 32 points,
/// 1,376 points of 160 bytes, 220 KB, built by the first EdDSA verification.
pub const B_WINDOW: u32 = 6;
/// Window width (bits) of each key's table: 51 rows of 16 points, 816 points, 130 KB per key.
///
/// Widths were chosen by counting wasm instructions per verification (`bench/crypto/fuel.py`)
/// and timing in V8 (`bench/crypto/run`; notes in `docs/benchmarks.md`): one more bit of the
/// key's window saves ~7% of the arithmetic and doubles the table (memory, and build time at
/// the key's first verification); the base point's table is paid once per process.
pub const A_WINDOW: u32 = 5;

/// Scalars here are below `L < 2^253`.
const SCALAR_BITS: u32 = 253;
/// Most digits a scalar recodes to (the narrowest window allowed, 4).
const MAX_DIGITS: usize = precompute::digit_count(SCALAR_BITS, 4);

const _: () = assert!(B_WINDOW >= 4 && B_WINDOW <= MAX_WINDOW);
const _: () = assert!(A_WINDOW >= 4 && A_WINDOW <= MAX_WINDOW);

/// Multiples of one point: row `i` holds `j·2^(w·i)·P` for `j = 1..=2^(w-1)`.
pub struct Table {
    window: u32,
    points: Vec<EdwardsPoint>,
}

impl Table {
    fn new(point: EdwardsPoint, window: u32) -> Table {
        let half = 1usize << (window - 1);
        let rows = precompute::digit_count(SCALAR_BITS, window);
        let mut points = Vec::with_capacity(rows * half);
        let mut base = point;
        for _ in 0..rows {
            let row = points.len();
            points.push(base);
            for j in 2..=half {
                let next = if j % 2 == 0 {
                    let p: &EdwardsPoint = &points[row + j / 2 - 1];
                    p + p
                } else {
                    points[row + j - 2] + base
                };
                points.push(next);
            }
            // The next row's base, 2^w·B, is twice the last entry, 2^(w-1)·B.
            let last: &EdwardsPoint = &points[row + half - 1];
            base = last + last;
        }
        Table { window, points }
    }

    /// Adds `k·P` (P the table's point) to `acc`.
    fn add_multiple(&self, acc: &mut EdwardsPoint, k: &Scalar) {
        let mut digits = [0i16; MAX_DIGITS];
        let digits = precompute::recode(k.as_bytes(), SCALAR_BITS, self.window, &mut digits);
        precompute::add_signed_multiples(acc, &self.points, digits, self.window);
    }
}

/// The base point's table, built on first use.
fn basepoint_table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::new(ED25519_BASEPOINT_POINT, B_WINDOW))
}

/// The tables of the keys loaded and still held somewhere in this process.
static KEY_TABLES: Mutex<KeyTables<Table>> = Mutex::new(Vec::new());

/// Whether the 255-bit `y` of an encoded point (its sign bit aside) is below `p = 2^255 - 19`.
/// curve25519-dalek's decompression reduces `y` modulo `p` instead of refusing it.
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    // y >= p exactly when y is 2^255 - 19 + t for t in 0..19: bytes 0xed + t, then thirty
    // 0xff, then 0x7f (sign bit aside).
    !(bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// The point `bytes` encodes, if the encoding is canonical and the point is not of small order.
fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical_y(bytes) {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (!point.is_small_order()).then_some(point)
}

/// An Ed25519 public key ready for fast verification. Its table of multiples is built on first
/// use (~6 M wasm instructions, ~0.4 ms in V8; the first verification of a process also builds
/// the base point's, ~11 M, and took ~2 ms in a fresh V8 instance), so loading a key set stays
/// cheap, and is shared by clones and by later loads of the same key while any holder is
/// alive.
#[derive(Clone)]
pub struct VerifyingKey {
    encoded: [u8; 32],
    point: EdwardsPoint,
    table: Arc<OnceLock<Arc<Table>>>,
}

impl VerifyingKey {
    /// Bytes of an encoded key.
    pub const LENGTH: usize = 32;

    /// From the 32-byte encoding of RFC 8032 §5.1.2 (a JWK's `x`, RFC 8037); `None` unless it
    /// is the canonical encoding of a point of the curve not of small order. Shares the table
    /// of the same key loaded before and still held, if any; else the table is built when the
    /// key first verifies.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let encoded: [u8; 32] = bytes.try_into().ok()?;
        let point = decode_point(&encoded)?;
        let key = VerifyingKey {
            encoded,
            point,
            table: Arc::new(OnceLock::new()),
        };
        if let Some(table) = precompute::lookup(&mut precompute::lock(&KEY_TABLES), &encoded) {
            let _ = key.table.set(table);
        }
        Some(key)
    }

    /// The key's encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.encoded
    }

    /// The key's table, built (and registered for later loads) on first use.
    fn table(&self) -> &Arc<Table> {
        self.table.get_or_init(|| {
            precompute::find_or_build(&KEY_TABLES, &self.encoded, || {
                Table::new(self.point, A_WINDOW)
            })
        })
    }

    /// Whether both keys use the same table (the same key, loaded while the other was held).
    /// For tests (tollgate-core's through the `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn shares_table_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.table(), other.table())
    }

    /// Whether `signature` is this key's Ed25519 signature of `message` (see the module's
    /// documentation for exactly what is accepted).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Some(r) = decode_point(&signature.r) else {
            return false;
        };
        let hash: [u8; 64] = Sha512::new()
            .chain_update(signature.r)
            .chain_update(self.encoded)
            .chain_update(message)
            .finalize()
            .into();
        let k = Scalar::from_bytes_mod_order_wide(&hash);
        // [S]B - [k]A: the base point's digits, then the key's (of -k).
        let mut acc = EdwardsPoint::identity();
        basepoint_table().add_multiple(&mut acc, &signature.s);
        self.table().add_multiple(&mut acc, &-k);
        (acc - r).is_small_order()
    }
}

/// An Ed25519 signature `R || S` whose `S` is canonical (below the group order). `R` is
/// decoded, and refused if it is not a canonical encoding of a point not of small order, when
/// the signature is verified.
#[derive(Clone, Copy, Debug)]
pub struct Signature {
    r: [u8; 32],
    s: Scalar,
}

impl Signature {
    /// Bytes of an encoded signature.
    pub const LENGTH: usize = 64;

    /// From the 64-byte `R || S` of RFC 8032 §5.1.6; `None` for another length or when `S` is
    /// not below the group order.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 64] = bytes.try_into().ok()?;
        let (r, s) = bytes.split_at(32);
        let s: [u8; 32] = s.try_into().ok()?;
        Some(Signature {
            r: r.try_into().ok()?,
            s: Option::from(Scalar::from_canonical_bytes(s))?,
        })
    }

    /// The `R || S` encoding.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(self.s.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests;
