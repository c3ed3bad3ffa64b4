//! Verify-only ECDSA (P-256 for ES256, P-384 for ES384), built for speed on public data.
//!
//! All field and group arithmetic is the RustCrypto `p256` / `p384` crates' (through
//! `primeorder`'s complete formulas); only the scalar-multiplication schedule and the ECDSA
//! verification equation are written here.
//!
//! Verification handles no secret: the key, the token and its signature are public. So every
//! step may take variable time (table lookups indexed by scalar digits, a variable-time scalar
//! inversion, skipped zero digits), which is what makes it fast.
//!
//! The schedule: a JWKS key lives for hours, so when a key loads it is expanded once into a
//! table of multiples of its point Q, `T[i][j-1] = j·2^(w·i)·Q` for `j = 1..=2^(w-1)`, stored
//! affine (one batch inversion). The same table for the generator G is built once per process.
//! A scalar `k` is recoded into signed base-2^w digits `d_i` (`|d_i| <= 2^(w-1)`), so that
//! `k·P = Σ sign(d_i)·T[i][|d_i|-1]`: only mixed additions, no doublings. `u1·G + u2·Q` then
//! costs about `256/w_G + 256/w_Q` mixed additions for P-256, against ~256 doublings and
//! ~100 additions for a double-scalar multiplication without per-point tables.
//!
//! Key sets reload whole on every JWKS refresh, in every worker; a key's table is found again
//! by the key's encoding while any loaded set still holds it, so only new keys pay for one
//! ([`crate::precompute`], shared with Ed25519).

use std::sync::{Arc, Mutex, OnceLock};

use elliptic_curve::array::typenum::Unsigned;
use elliptic_curve::ff::PrimeField;
use elliptic_curve::group::Group;
use elliptic_curve::ops::{Invert, Reduce};
use elliptic_curve::point::AffineCoordinates;
use elliptic_curve::sec1::ToSec1Point;
use elliptic_curve::{BatchNormalize, FieldBytes, PublicKey, Scalar};
use p256::NistP256;
use p384::NistP384;
use primeorder::{AffinePoint, PrimeCurveParams, ProjectivePoint};
use sha2::Digest as _;

use crate::precompute::{self, MAX_WINDOW};

/// A curve Tollgate verifies ECDSA signatures on, with its hash, table widths and caches.
///
/// Widths were chosen by timing in V8 (`bench/crypto`, notes in `docs/benchmarks.md`): each
/// extra bit of `Q_WINDOW` saves some mixed additions per verification but doubles the key's
/// table (memory and build time at key load); `G_WINDOW` is paid once per process.
pub trait EcdsaCurve: PrimeCurveParams {
    /// Window width (bits) of the process-wide generator table.
    const G_WINDOW: u32;
    /// Window width (bits) of each key's table.
    const Q_WINDOW: u32;
    /// The JWS hash of `message` (SHA-256 for ES256, SHA-384 for ES384); its width equals the
    /// curve's, so ECDSA's truncation step is a no-op.
    fn digest(message: &[u8]) -> FieldBytes<Self>;
    /// The generator table, built on first use.
    fn generator_table() -> &'static Table<Self>;
    /// The tables of the keys loaded and still held somewhere in this process.
    fn key_tables() -> &'static Mutex<KeyTables<Self>>;
}

impl EcdsaCurve for NistP256 {
    /// 37 rows of 64 points: 2,368 points, 170 KB.
    const G_WINDOW: u32 = 7;
    /// 43 rows of 32 points: 1,376 points, 99 KB per key.
    const Q_WINDOW: u32 = 6;

    fn digest(message: &[u8]) -> FieldBytes<Self> {
        let hash: [u8; 32] = sha2::Sha256::digest(message).into();
        hash.into()
    }

    fn generator_table() -> &'static Table<Self> {
        static TABLE: OnceLock<Table<NistP256>> = OnceLock::new();
        TABLE.get_or_init(|| Table::new(ProjectivePoint::GENERATOR, Self::G_WINDOW))
    }

    fn key_tables() -> &'static Mutex<KeyTables<Self>> {
        static TABLES: Mutex<KeyTables<NistP256>> = Mutex::new(Vec::new());
        &TABLES
    }
}

impl EcdsaCurve for NistP384 {
    /// 65 rows of 32 points: 2,080 points, 216 KB (7 bits would save ~5% per verification
    /// for 70% more memory and start-up time, for a rarely used algorithm).
    const G_WINDOW: u32 = 6;
    /// 77 rows of 16 points: 1,232 points, 128 KB per key.
    const Q_WINDOW: u32 = 5;

    fn digest(message: &[u8]) -> FieldBytes<Self> {
        let hash: [u8; 48] = sha2::Sha384::digest(message).into();
        hash.into()
    }

    fn generator_table() -> &'static Table<Self> {
        static TABLE: OnceLock<Table<NistP384>> = OnceLock::new();
        TABLE.get_or_init(|| Table::new(ProjectivePoint::GENERATOR, Self::G_WINDOW))
    }

    fn key_tables() -> &'static Mutex<KeyTables<Self>> {
        static TABLES: Mutex<KeyTables<NistP384>> = Mutex::new(Vec::new());
        &TABLES
    }
}

/// Key tables by the key's SEC1 encoding, held weakly: a key set that reloads (every JWKS
/// refresh, in every worker) finds the tables of its unchanged keys while the previous set
/// still holds them, instead of rebuilding them.
pub type KeyTables<C> = precompute::KeyTables<Table<C>>;

/// Most digits a scalar recodes to: 384-bit scalars with the narrowest window (4).
const MAX_DIGITS: usize = 97;

const _: () = {
    let windows = [
        NistP256::G_WINDOW,
        NistP256::Q_WINDOW,
        NistP384::G_WINDOW,
        NistP384::Q_WINDOW,
    ];
    let mut i = 0;
    while i < windows.len() {
        assert!(windows[i] >= 4 && windows[i] <= MAX_WINDOW);
        i += 1;
    }
};

/// Affine multiples of one point: row `i` holds `j·2^(w·i)·P` for `j = 1..=2^(w-1)`.
pub struct Table<C: PrimeCurveParams> {
    window: u32,
    points: Vec<AffinePoint<C>>,
}

impl<C: EcdsaCurve> Table<C> {
    fn new(point: ProjectivePoint<C>, window: u32) -> Table<C> {
        let half = 1usize << (window - 1);
        let rows = digit_count::<C>(window);
        let mut projective = Vec::with_capacity(rows * half);
        let mut base = point;
        for _ in 0..rows {
            let row = projective.len();
            projective.push(base);
            for j in 2..=half {
                // j·B: doubling (j/2)·B is cheaper than adding B to (j-1)·B.
                let next = if j % 2 == 0 {
                    projective[row + j / 2 - 1].double()
                } else {
                    projective[row + j - 2] + base
                };
                projective.push(next);
            }
            // The next row's base, 2^w·B, is twice the last entry, 2^(w-1)·B.
            base = projective[row + half - 1].double();
        }
        Table {
            window,
            points: <ProjectivePoint<C> as BatchNormalize<[_]>>::batch_normalize(&projective),
        }
    }

    /// Adds `k·P` (P the table's point) to `acc`.
    fn add_multiple(&self, acc: &mut ProjectivePoint<C>, k: &Scalar<C>) {
        let mut digits = [0i16; MAX_DIGITS];
        let digits = recode::<C>(k, self.window, &mut digits);
        precompute::add_signed_multiples(acc, &self.points, digits, self.window);
    }
}

/// How many signed base-2^w digits a scalar of the curve needs: `ceil((bits + 1) / w)`. The
/// extra bit keeps the top digit from carrying out (see [`recode`]).
fn digit_count<C: EcdsaCurve>(window: u32) -> usize {
    precompute::digit_count(Scalar::<C>::NUM_BITS, window)
}

/// Writes the signed base-2^w digits of `k` (least significant first) into `out` and returns
/// them: `k = Σ d_i·2^(w·i)` with `-2^(w-1) < d_i <= 2^(w-1)` ([`precompute::recode`]).
fn recode<'o, C: EcdsaCurve>(k: &Scalar<C>, window: u32, out: &'o mut [i16]) -> &'o [i16] {
    // Little-endian bytes of k.
    let mut le = [0u8; 64];
    for (dst, src) in le.iter_mut().zip(k.to_repr().iter().rev()) {
        *dst = *src;
    }
    precompute::recode(&le, Scalar::<C>::NUM_BITS, window, out)
}

/// A public key ready for fast verification. Its table of multiples is built on first use (so
/// loading a key set, e.g. while the plugin is configured, stays cheap: ~5 ms per P-256 key and
/// ~50 ms for the generator's table are paid by the first token that needs them), and shared
/// by clones and by later loads of the same key while any holder is alive.
pub struct VerifyingKey<C: EcdsaCurve> {
    point: AffinePoint<C>,
    table: Arc<OnceLock<Arc<Table<C>>>>,
}

impl<C: EcdsaCurve> Clone for VerifyingKey<C> {
    fn clone(&self) -> Self {
        VerifyingKey {
            point: self.point,
            table: Arc::clone(&self.table),
        }
    }
}

impl<C: EcdsaCurve> VerifyingKey<C> {
    /// From a SEC1-encoded point; `None` unless it is a point of the curve other than the
    /// identity. Shares the table of the same key loaded before and still held, if any; else
    /// the table is built when the key first verifies.
    pub fn from_sec1_bytes(bytes: &[u8]) -> Option<Self> {
        let public = PublicKey::<C>::from_sec1_bytes(bytes).ok()?;
        let key = VerifyingKey {
            point: *public.as_affine(),
            table: Arc::new(OnceLock::new()),
        };
        if let Some(table) =
            precompute::lookup(&mut precompute::lock(C::key_tables()), &key.encoded())
        {
            let _ = key.table.set(table);
        }
        Some(key)
    }

    /// The key's canonical (uncompressed) encoding: what its table is registered under.
    fn encoded(&self) -> Vec<u8> {
        self.point.to_sec1_point(false).as_bytes().to_vec()
    }

    /// The key's table, built (and registered for later loads) on first use.
    fn table(&self) -> &Arc<Table<C>> {
        self.table.get_or_init(|| {
            precompute::find_or_build(C::key_tables(), &self.encoded(), || {
                Table::new(self.point.into(), C::Q_WINDOW)
            })
        })
    }

    /// Whether both keys use the same table (the same key, loaded while the other was held).
    /// For tests (tollgate-core's key-set reload test through the `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn shares_table_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.table(), other.table())
    }

    /// Whether `(r, s)` is an ECDSA signature of `message` (hashed with the curve's JWS hash).
    pub fn verify(&self, message: &[u8], signature: &Signature<C>) -> bool {
        self.verify_prehashed(&C::digest(message), signature)
    }

    /// ECDSA verification (SEC 1 v2 §4.1.4) of a hash exactly as wide as the curve.
    pub fn verify_prehashed(&self, hash: &FieldBytes<C>, signature: &Signature<C>) -> bool {
        let Signature { r, s } = signature;
        let z = <Scalar<C> as Reduce<FieldBytes<C>>>::reduce(hash);
        let Some(s_inv) = Option::<Scalar<C>>::from(s.invert_vartime()) else {
            return false; // unreachable: s is non-zero
        };
        let (u1, u2) = (z * s_inv, *r * s_inv);
        let mut acc = ProjectivePoint::<C>::IDENTITY;
        C::generator_table().add_multiple(&mut acc, &u1);
        self.table().add_multiple(&mut acc, &u2);
        if bool::from(acc.is_identity()) {
            return false;
        }
        // x(R) mod n == r. (The inversion inside `to_affine` stays: primeorder keeps the
        // projective coordinates private, so x can't be compared as X == r·Z.)
        let x = acc.to_affine().x();
        <Scalar<C> as Reduce<FieldBytes<C>>>::reduce(&x) == *r
    }
}

/// An ECDSA signature whose `r` and `s` are both in `[1, n)`.
#[derive(Clone, Copy, Debug)]
pub struct Signature<C: EcdsaCurve> {
    r: Scalar<C>,
    s: Scalar<C>,
}

impl<C: EcdsaCurve> Signature<C> {
    /// Bytes of the fixed-width `r || s` (IEEE P1363) encoding.
    pub const LENGTH: usize = 2 * C::FieldBytesSize::USIZE;

    /// From the fixed-width `r || s` encoding JWS uses (RFC 7518 §3.4); `None` for another
    /// length or when `r` or `s` is zero or not below the group order.
    pub fn from_p1363(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LENGTH {
            return None;
        }
        let (r, s) = bytes.split_at(C::FieldBytesSize::USIZE);
        Some(Signature {
            r: nonzero_scalar::<C>(r)?,
            s: nonzero_scalar::<C>(s)?,
        })
    }

    /// The `r || s` encoding.
    pub fn to_p1363(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LENGTH);
        out.extend_from_slice(&self.r.to_repr());
        out.extend_from_slice(&self.s.to_repr());
        out
    }
}

/// A big-endian scalar in `[1, n)`.
fn nonzero_scalar<C: EcdsaCurve>(bytes: &[u8]) -> Option<Scalar<C>> {
    let repr = FieldBytes::<C>::try_from(bytes).ok()?;
    let scalar = Option::<Scalar<C>>::from(Scalar::<C>::from_repr(repr))?;
    (!bool::from(elliptic_curve::ff::Field::is_zero(&scalar))).then_some(scalar)
}

#[cfg(test)]
mod tests;
