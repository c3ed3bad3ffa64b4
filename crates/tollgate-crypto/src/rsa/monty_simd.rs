//! `s^e mod n` for RSA **public** keys with wasm SIMD128: the same Montgomery exponentiation
//! as [`super::monty`], with the inner loops two 32x32->64 products per instruction
//! (`i64x2.extmul_{low,high}_i32x4_u`). Compiled instead of `monty` when the build enables
//! `simd128` (the workspace's `.cargo/config.toml` does for the wasm targets); a build without
//! it keeps the scalar code.
//!
//! Only public values pass through here, so the code is variable-time by design.
//!
//! **Representation.** Limbs of `W` = 28 bits (27 for moduli above 3,358 bits) held in 32-bit
//! lanes, so that a product is below 2^56 and a 64-bit accumulator lane can take the sum of many
//! products without a carry out. The Montgomery product (operand scanning, Koç–Acar–Kaliski's
//! CIOS without the per-step carry chain) adds, for each limb `b_i` of one factor, `a·b_i + m_i·n`
//! into accumulator lanes `i..i+k` and carries only out of lane `i`; every lane receives at most
//! `2k` products of `< 2^(2W)`, which the choice of `W` keeps below 2^64 (`MAX_LIMBS`). The
//! other lanes are carried once, when the product is written out.
//!
//! **Two rows per pass.** Rows `i` (even) and `i + 1` are added in one pass over the
//! accumulator: the scalar part computes both `m_i` and `m_{i+1}` first (`m_{i+1}` needs row
//! `i`'s effect on lane `i + 1`, three products), then each 128-bit accumulator vector is
//! loaded and stored once for both rows. Row `i + 1` lands one lane higher, which is why `a` and
//! `n` are also kept shifted up by one limb (`*_odd`): every accumulator access stays on a
//! whole vector, through safe slices of `v128`.
//!
//! **Lazy reduction.** `R = 2^(W·k) > 4n` (`k` has two limbs to spare), so inputs below `2n`
//! give an output below `2n` (Montgomery's bound) and no product needs the final subtraction;
//! only the result is reduced below `n`.
//!
//! Tested against the scalar `monty` and num-bigint-dig on random moduli of many sizes, and
//! through the Wycheproof vectors (`super::tests`, run in V8 by `scripts/test-wasm`).

use core::arch::wasm32::{
    i32x4_shuffle, i64x2_add, u32x4, u32x4_replace_lane, u32x4_splat, u64x2,
    u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4, u64x2_extract_lane, u64x2_replace_lane, v128,
};

use super::{less_than, neg_inverse_mod_2_32};

/// Most limbs with 28-bit limbs: `2·k` products below 2^56 must fit a 64-bit lane
/// (`2·120·(2^28-1)^2 < 2^64`). Longer moduli use 27-bit limbs (`2·k·2^54 < 2^64` up to
/// `k = 512`, far beyond `super::MAX_BITS`).
const MAX_LIMBS: usize = 120;

const ZERO: v128 = u64x2(0, 0);

/// An odd modulus with its Montgomery constants. `R = 2^(W·k)`.
#[derive(Clone)]
pub struct Modulus {
    /// Bits per limb (28, or 27 for long moduli).
    w: u32,
    /// `2^w - 1`.
    mask: u32,
    /// Limbs in a product: even, with `W·k >= bits + 2` (so `R > 4n`).
    k: usize,
    /// Limbs stored per number: `k` rounded up to whole vectors (the rest zero).
    stored: usize,
    /// Vectors of factors a pass multiplies: enough for limbs `0..=k` (row `i + 1`'s factors
    /// are one limb up); the packed numbers' last vectors beyond that are zero.
    chunks: usize,
    bits: usize,
    /// `n`, `stored` limbs.
    n: Vec<u32>,
    /// `n` packed four limbs to a vector, then one zero vector.
    n_even: Vec<v128>,
    /// `n` shifted up one limb (limb 0 is zero), packed the same way.
    n_odd: Vec<v128>,
    /// `-n^-1 mod 2^w`.
    n0_inv: u32,
    /// `R^2 mod n`, to enter the Montgomery domain with one product.
    r2: Vec<u32>,
}

/// Working space for products, allocated once per exponentiation.
struct Scratch {
    /// Accumulator lanes, two per vector; `stored + 4` vectors hold lanes up to `2k + 7`.
    acc: Vec<v128>,
    a_even: Vec<v128>,
    a_odd: Vec<v128>,
}

impl Modulus {
    /// `n` as big-endian bytes (leading zeros allowed). `None` unless `n` is odd and > 1.
    pub fn new(n_be: &[u8]) -> Option<Modulus> {
        let first = n_be.iter().position(|&b| b != 0)?;
        let n_be = &n_be[first..];
        let bits = 8 * n_be.len() - n_be[0].leading_zeros() as usize;
        if n_be[n_be.len() - 1] & 1 == 0 || bits < 2 {
            return None;
        }
        let limbs = |w: usize| {
            let k = (bits + 2).div_ceil(w);
            k + k % 2
        };
        let (w, k) = match limbs(28) {
            k if k <= MAX_LIMBS => (28, k),
            _ => (27, limbs(27)),
        };
        let stored = k.div_ceil(4) * 4;
        let n = limbs_from_be(n_be, w, stored)?;
        let mask = (1u32 << w) - 1;
        let n_even = pack(&n);
        let n_odd = shift_one_limb(&n_even);
        let mut modulus = Modulus {
            w,
            mask,
            k,
            stored,
            chunks: (k + 1).div_ceil(4),
            bits,
            n_even,
            n_odd,
            n0_inv: neg_inverse_mod_2_32(n[0]) & mask,
            n,
            r2: Vec::new(),
        };
        modulus.r2 = modulus.r_squared();
        Some(modulus)
    }

    /// Bits in `n`.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// `base^exp mod n` for `base < n` as big-endian bytes; `None` if `base >= n` or
    /// `exp == 0`. The result is big-endian, exactly `out_len` bytes (`None` if it does not fit).
    ///
    /// For an odd `exp` (every RSA exponent) the last multiplication takes `base` as it is,
    /// outside the Montgomery domain: `(base^(exp-1)·R)·base·R^-1 = base^exp`, so leaving the
    /// domain costs no product of its own.
    pub fn pow(&self, base_be: &[u8], exp: u64, out_len: usize) -> Option<Vec<u8>> {
        if exp == 0 {
            return None;
        }
        let base = limbs_from_be(base_be, self.w, self.stored)?;
        if !less_than(&base, &self.n) {
            return None;
        }
        let mut scratch = self.scratch();
        let mut out = vec![0u32; self.stored];
        if exp == 1 {
            out.copy_from_slice(&base);
        } else {
            let mut x = vec![0u32; self.stored];
            self.mul(&base, &self.r2, &mut scratch, &mut x);
            // x^(exp with its lowest bit cleared), in the Montgomery domain.
            let acc = self.pow_mont(&x, exp & !1, &mut scratch);
            let mut one = vec![0u32; self.stored];
            one[0] = 1;
            let last = if exp & 1 == 1 { &base } else { &one };
            self.mul(&acc, last, &mut scratch, &mut out);
        }
        if !less_than(&out, &self.n) {
            sub_in_place(&mut out, &self.n, self.w);
        }
        limbs_to_be(&out, self.w, out_len)
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            acc: vec![ZERO; self.stored + 4],
            a_even: Vec::with_capacity(self.stored / 4 + 1),
            a_odd: Vec::with_capacity(self.stored / 4 + 1),
        }
    }

    /// `x^exp` for `x` in Montgomery form (result in Montgomery form, below `2n`), `exp >= 1`:
    /// left-to-right binary exponentiation.
    fn pow_mont(&self, x: &[u32], exp: u64, scratch: &mut Scratch) -> Vec<u32> {
        let mut acc = x.to_vec();
        let mut tmp = vec![0u32; self.stored];
        let top = 63 - exp.leading_zeros();
        for bit in (0..top).rev() {
            self.sqr(&acc, scratch, &mut tmp);
            if (exp >> bit) & 1 == 1 {
                self.mul(&tmp, x, scratch, &mut acc);
            } else {
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        acc
    }

    /// `R^2 mod n`: doublings mod n from `2^(bits-1)` give `2R mod n` (2 in Montgomery form);
    /// raising that to the power `W·k` in the Montgomery domain gives `2^(W·k)·R = R^2`.
    fn r_squared(&self) -> Vec<u32> {
        let w = self.w as usize;
        let mut x = vec![0u32; self.stored];
        let top = self.bits - 1;
        x[top / w] = 1 << (top % w);
        for _ in 0..(w * self.k - self.bits + 2) {
            let mut carry = 0u32;
            for limb in x.iter_mut() {
                let v = (*limb << 1) | carry;
                *limb = v & self.mask;
                carry = v >> self.w;
            }
            if !less_than(&x, &self.n) {
                sub_in_place(&mut x, &self.n, self.w);
            }
        }
        let mut scratch = self.scratch();
        let mut r2 = self.pow_mont(&x, (w * self.k) as u64, &mut scratch);
        if !less_than(&r2, &self.n) {
            sub_in_place(&mut r2, &self.n, self.w);
        }
        r2
    }

    /// Montgomery product `out = a·b·R^-1 mod n` up to one `n`: for `a, b < 2n` (whole limbs),
    /// `out < 2n`.
    fn mul(&self, a: &[u32], b: &[u32], scratch: &mut Scratch, out: &mut [u32]) {
        pack_into(a, &mut scratch.a_even);
        shift_one_limb_into(&scratch.a_even, &mut scratch.a_odd);
        let acc = &mut scratch.acc[..];
        acc.fill(ZERO);
        let (a0, a1) = (u64::from(a[0]), u64::from(a[1]));
        for (pass, pair) in b[..self.k].chunks_exact(2).enumerate() {
            let (b0, b1) = (u64::from(pair[0]), u64::from(pair[1]));
            // Row i's a·b_i reaches lane i as a0·b0, lane i + 1 as a1·b0; row i + 1's reaches
            // lane i + 1 as a0·b1.
            let [m0, m1] = self.reduction_digits(acc, 2 * pass, a0 * b0, a1 * b0 + a0 * b1);
            let splats = [u32x4_splat(pair[0]), u32x4_splat(pair[1])];
            let digits = [u32x4_splat(m0), u32x4_splat(m1)];
            let factors = scratch.a_even.iter().zip(&scratch.a_odd);
            let rows = factors.zip(self.n_even.iter().zip(&self.n_odd));
            let chunks = acc[pass..].chunks_exact_mut(2).zip(rows).take(self.chunks);
            for (lanes, ((&a_e, &a_o), (&n_e, &n_o))) in chunks {
                add_rows(lanes, [a_e, a_o, n_e, n_o], &splats, &digits);
            }
            carry_two_lanes(acc, 2 * pass, self.w);
        }
        self.write_out(acc, out);
    }

    /// Montgomery square `out = a·a·R^-1 mod n` up to one `n`, for `a < 2n`: as [`Self::mul`]
    /// with `b = a`, but each cross product `a_i·a_j` (`i < j`) is added once, doubled, so the
    /// `a·a_i` part of pass `i` starts at limb `i` (row `i` multiplies `a_i` by the row
    /// `(0, .., 0, a_i, 2a_(i+1), 2a_(i+2), ..)`) and the chunks below it only reduce: about
    /// a quarter fewer products than `mul`.
    fn sqr(&self, a: &[u32], scratch: &mut Scratch, out: &mut [u32]) {
        pack_doubled_into(a, &mut scratch.a_even);
        shift_one_limb_into(&scratch.a_even, &mut scratch.a_odd);
        let (doubled_even, doubled_odd) = (&scratch.a_even, &scratch.a_odd);
        let acc = &mut scratch.acc[..];
        acc.fill(ZERO);
        let limb = |j: usize| a.get(j).copied().unwrap_or(0);
        for pass in 0..self.k / 2 {
            let i = 2 * pass;
            let (x0, x1) = (limb(i), limb(i + 1));
            // Only pass 0's squares reach lanes i and i + 1: a0² and 2·a0·a1.
            let (square0, square1) = match i {
                0 => (
                    u64::from(x0) * u64::from(x0),
                    2 * u64::from(x0) * u64::from(x1),
                ),
                _ => (0, 0),
            };
            let [m0, m1] = self.reduction_digits(acc, i, square0, square1);
            let splats = [u32x4_splat(x0), u32x4_splat(x1)];
            let digits = [u32x4_splat(m0), u32x4_splat(m1)];
            // Chunk `first` holds limb i; row i's factors are zero below it, and row i + 1's
            // (one limb up) below limb i + 2.
            let first = i / 4;
            let moduli = self.n_even.iter().zip(&self.n_odd);
            let mut chunks = acc[pass..]
                .chunks_exact_mut(2)
                .zip(moduli)
                .take(self.chunks)
                .enumerate();
            for (_, (lanes, (&n_e, &n_o))) in chunks.by_ref().take(first) {
                add_reduction_rows(lanes, [n_e, n_o], &digits);
            }
            for (q, (lanes, (&n_e, &n_o))) in chunks {
                let (mut even, mut odd) = (
                    doubled_even.get(q).copied().unwrap_or(ZERO),
                    doubled_odd.get(q).copied().unwrap_or(ZERO),
                );
                // The squares a_i² and a_(i+1)² are not doubled; limbs below them are zero.
                if q == first {
                    if i % 4 == 0 {
                        even = u32x4_replace_lane::<0>(even, x0);
                        odd = u32x4(0, 0, x1, 2 * limb(i + 2));
                    } else {
                        even = u32x4(0, 0, x0, 2 * x1);
                        odd = ZERO;
                    }
                } else if q == first + 1 && i % 4 == 2 {
                    odd = u32x4_replace_lane::<0>(odd, x1);
                }
                add_rows(lanes, [even, odd, n_e, n_o], &splats, &digits);
            }
            carry_two_lanes(acc, i, self.w);
        }
        self.write_out(acc, out);
    }

    /// The Montgomery digits `m_i`, `m_(i+1)` of the pass over rows `i` and `i + 1`: `m_i`
    /// clears lane `i`, `m_(i+1)` lane `i + 1`, given what the pass's products add to those two
    /// lanes (`add0`, `add1`) and that `m_i·n` reaches lane `i + 1` too (`m_i·n_1`, with lane
    /// `i`'s carry).
    fn reduction_digits(&self, acc: &[v128], i: usize, add0: u64, add1: u64) -> [u32; 2] {
        let (n0, n1) = (u64::from(self.n[0]), u64::from(self.n[1]));
        let u0 = lane(acc, i) + add0;
        let m0 = (u0 as u32).wrapping_mul(self.n0_inv) & self.mask;
        let carry = (u0 + u64::from(m0) * n0) >> self.w;
        let u1 = lane(acc, i + 1) + add1 + u64::from(m0) * n1 + carry;
        let m1 = (u1 as u32).wrapping_mul(self.n0_inv) & self.mask;
        [m0, m1]
    }

    /// The result is lanes `k..` (the sum divided by R): carry them into whole limbs. It is
    /// below `2n < R`, so nothing carries out of the last limb.
    fn write_out(&self, acc: &[v128], out: &mut [u32]) {
        let mut carry = 0u64;
        for (j, limb) in out.iter_mut().enumerate() {
            let v = lane(acc, self.k + j) + carry;
            *limb = v as u32 & self.mask;
            carry = v >> self.w;
        }
    }
}

/// Adds both rows of a pass to two accumulator vectors (four lanes): `even·x0 + n_even·m0` (row
/// i) and `odd·x1 + n_odd·m1` (row i + 1, one limb up), `factors = [even, odd, n_even, n_odd]`.
#[inline(always)]
fn add_rows(lanes: &mut [v128], factors: [v128; 4], splats: &[v128; 2], digits: &[v128; 2]) {
    let [even, odd, n_e, n_o] = factors;
    // SAFETY: volatile reads of local arrays are always sound. They are there for speed: they
    // keep LLVM from hoisting the splats' zero-extension out of the caller's loop, which turns
    // each extmul into an i64x2.mul that V8 emulates with several instructions.
    let [x0, x1] = unsafe { core::ptr::read_volatile(splats) };
    let [m0, m1] = unsafe { core::ptr::read_volatile(digits) };
    if let [low, high] = lanes {
        *low = i64x2_add(
            i64x2_add(
                *low,
                i64x2_add(
                    u64x2_extmul_low_u32x4(even, x0),
                    u64x2_extmul_low_u32x4(n_e, m0),
                ),
            ),
            i64x2_add(
                u64x2_extmul_low_u32x4(odd, x1),
                u64x2_extmul_low_u32x4(n_o, m1),
            ),
        );
        *high = i64x2_add(
            i64x2_add(
                *high,
                i64x2_add(
                    u64x2_extmul_high_u32x4(even, x0),
                    u64x2_extmul_high_u32x4(n_e, m0),
                ),
            ),
            i64x2_add(
                u64x2_extmul_high_u32x4(odd, x1),
                u64x2_extmul_high_u32x4(n_o, m1),
            ),
        );
    }
}

/// [`add_rows`] for the chunks where only the reduction (`n·m`) adds anything.
#[inline(always)]
fn add_reduction_rows(lanes: &mut [v128], moduli: [v128; 2], digits: &[v128; 2]) {
    let [n_e, n_o] = moduli;
    // SAFETY: as in `add_rows`.
    let [m0, m1] = unsafe { core::ptr::read_volatile(digits) };
    if let [low, high] = lanes {
        *low = i64x2_add(
            *low,
            i64x2_add(
                u64x2_extmul_low_u32x4(n_e, m0),
                u64x2_extmul_low_u32x4(n_o, m1),
            ),
        );
        *high = i64x2_add(
            *high,
            i64x2_add(
                u64x2_extmul_high_u32x4(n_e, m0),
                u64x2_extmul_high_u32x4(n_o, m1),
            ),
        );
    }
}

/// After a pass over rows `i` and `i + 1`, lanes `i` and `i + 1` are multiples of 2^w: carry
/// them up.
fn carry_two_lanes(acc: &mut [v128], i: usize, w: u32) {
    let carry = lane(acc, i) >> w;
    add_to_lane(acc, i + 1, carry);
    let carry = lane(acc, i + 1) >> w;
    add_to_lane(acc, i + 2, carry);
}

/// Accumulator lane `i` (two lanes per vector).
fn lane(acc: &[v128], i: usize) -> u64 {
    let v = acc[i / 2];
    if i.is_multiple_of(2) {
        u64x2_extract_lane::<0>(v)
    } else {
        u64x2_extract_lane::<1>(v)
    }
}

fn add_to_lane(acc: &mut [v128], i: usize, x: u64) {
    let v = &mut acc[i / 2];
    *v = if i.is_multiple_of(2) {
        u64x2_replace_lane::<0>(*v, u64x2_extract_lane::<0>(*v) + x)
    } else {
        u64x2_replace_lane::<1>(*v, u64x2_extract_lane::<1>(*v) + x)
    };
}

/// Limbs (a multiple of four) packed four to a vector, then one zero vector: the length the
/// one-limb-shifted copy needs, so both rows of a pass run over the same vectors.
fn pack(limbs: &[u32]) -> Vec<v128> {
    let mut out = Vec::with_capacity(limbs.len() / 4 + 1);
    pack_into(limbs, &mut out);
    out
}

fn pack_into(limbs: &[u32], out: &mut Vec<v128>) {
    out.clear();
    out.extend(limbs.chunks_exact(4).map(|c| u32x4(c[0], c[1], c[2], c[3])));
    out.push(ZERO);
}

/// [`pack_into`] of the limbs doubled (below 2^29: whole limbs are below 2^28).
fn pack_doubled_into(limbs: &[u32], out: &mut Vec<v128>) {
    out.clear();
    out.extend(
        limbs
            .chunks_exact(4)
            .map(|c| u32x4(2 * c[0], 2 * c[1], 2 * c[2], 2 * c[3])),
    );
    out.push(ZERO);
}

/// Packed limbs moved up by one limb (limb 0 becomes zero), the same number of vectors.
fn shift_one_limb(packed: &[v128]) -> Vec<v128> {
    let mut out = Vec::with_capacity(packed.len());
    shift_one_limb_into(packed, &mut out);
    out
}

fn shift_one_limb_into(packed: &[v128], out: &mut Vec<v128>) {
    out.clear();
    let mut previous = ZERO;
    for &v in packed {
        // Lane 3 of the previous vector, then lanes 0-2 of this one.
        out.push(i32x4_shuffle::<3, 4, 5, 6>(previous, v));
        previous = v;
    }
}

/// Big-endian bytes to exactly `len` little-endian limbs of `w` bits; `None` if they do not fit.
fn limbs_from_be(bytes: &[u8], w: u32, len: usize) -> Option<Vec<u32>> {
    let mask = (1u64 << w) - 1;
    let mut out = vec![0u32; len];
    let (mut bits, mut have, mut j) = (0u64, 0u32, 0usize);
    for &byte in bytes.iter().rev() {
        bits |= u64::from(byte) << have;
        have += 8;
        while have >= w {
            if bits & mask != 0 {
                *out.get_mut(j)? = (bits & mask) as u32;
            }
            j += 1;
            bits >>= w;
            have -= w;
        }
    }
    if bits != 0 {
        *out.get_mut(j)? = bits as u32;
    }
    Some(out)
}

/// Limbs of `w` bits to exactly `len` big-endian bytes; `None` if the value needs more.
fn limbs_to_be(limbs: &[u32], w: u32, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let (mut bits, mut have, mut pos) = (0u64, 0u32, 0usize);
    for &limb in limbs {
        bits |= u64::from(limb) << have;
        have += w;
        while have >= 8 {
            let byte = bits as u8;
            if pos < len {
                out[len - 1 - pos] = byte;
            } else if byte != 0 {
                return None;
            }
            pos += 1;
            bits >>= 8;
            have -= 8;
        }
    }
    (bits == 0).then_some(out)
}

/// `a -= b` for equal-length limbs of `w` bits, `a >= b`.
fn sub_in_place(a: &mut [u32], b: &[u32], w: u32) {
    let mask = (1u32 << w) - 1;
    let mut borrow = 0u32;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = x.wrapping_sub(y).wrapping_sub(borrow);
        *x = d & mask;
        borrow = d >> 31;
    }
}
