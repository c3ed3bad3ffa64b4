//! Modular exponentiation for RSA **public** keys: `s^e mod n` with Montgomery multiplication.
//!
//! Only public values pass through here (the key's modulus and exponent, the token's
//! signature), so the code is variable-time by design. Limbs are 32 bits: WebAssembly has a
//! native 32x32->64 multiply but no 64x64->128 one, which is what made the general-purpose
//! bignum crates slow inside V8. The per-key constants (`-n^-1 mod 2^32`, `R^2 mod n`) are
//! computed once when the key loads.
//!
//! The algorithm is the textbook CIOS Montgomery product (Koç, Acar, Kaliski, "Analyzing and
//! Comparing Montgomery Multiplication Algorithms", 1996) with left-to-right binary
//! exponentiation. It is tested against `num-bigint-dig` (what the `rsa` crate computes with)
//! and through the Wycheproof RSA vectors in `super::tests`.

use super::{less_than, neg_inverse_mod_2_32};

/// An odd modulus with its Montgomery constants. `R = 2^(32·k)` for `k` limbs.
#[derive(Clone)]
pub struct Modulus {
    /// Little-endian 32-bit limbs; the top limb is non-zero.
    n: Vec<u32>,
    /// `-n^-1 mod 2^32`.
    n0_inv: u32,
    /// `R^2 mod n`, to enter the Montgomery domain with one product.
    r2: Vec<u32>,
}

impl Modulus {
    /// `n` as big-endian bytes (leading zeros allowed). `None` unless `n` is odd and > 1.
    pub fn new(n_be: &[u8]) -> Option<Modulus> {
        let n = limbs_from_be(n_be);
        if n[0] & 1 == 0 || (n.len() == 1 && n[0] == 1) {
            return None;
        }
        let n0_inv = neg_inverse_mod_2_32(n[0]);
        let mut modulus = Modulus {
            n,
            n0_inv,
            r2: Vec::new(),
        };
        modulus.r2 = modulus.r_squared();
        Some(modulus)
    }

    /// Bits in `n`.
    pub fn bits(&self) -> usize {
        let top = self.n[self.n.len() - 1];
        32 * self.n.len() - top.leading_zeros() as usize
    }

    /// `base^exp mod n` for `base < n` as big-endian bytes; `None` if `base >= n` or
    /// `exp == 0`. The result is big-endian, exactly `out_len` bytes (`None` if it does not fit).
    pub fn pow(&self, base_be: &[u8], exp: u64, out_len: usize) -> Option<Vec<u8>> {
        if exp == 0 {
            return None;
        }
        let mut base = limbs_from_be(base_be);
        let k = self.n.len();
        if base.len() > k {
            return None;
        }
        base.resize(k, 0);
        if !less_than(&base, &self.n) {
            return None;
        }
        let mut scratch = vec![0u32; 2 * k];
        // Into the Montgomery domain (base·R mod n), exponentiate, and out again (·1·R^-1).
        let mut x = vec![0u32; k];
        self.mul(&base, &self.r2, &mut scratch, &mut x);
        let acc = self.pow_mont(&x, exp, &mut scratch);
        let mut one = vec![0u32; k];
        one[0] = 1;
        self.mul(&acc, &one, &mut scratch, &mut x);
        limbs_to_be(&x, out_len)
    }

    /// `x^exp` for `x` in Montgomery form (result in Montgomery form), `exp >= 1`:
    /// left-to-right binary exponentiation. `scratch` is `2k` limbs.
    fn pow_mont(&self, x: &[u32], exp: u64, scratch: &mut [u32]) -> Vec<u32> {
        let mut acc = x.to_vec();
        let mut tmp = vec![0u32; x.len()];
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

    /// `R^2 mod n`. `2^(bits-1) < n`, so a few doublings mod n give `R mod n` and then
    /// `2R mod n` (2 in Montgomery form); raising that to the power `32k` in the Montgomery
    /// domain gives `2^(32k)·R = R^2 mod n` in about log2(32k) products.
    fn r_squared(&self) -> Vec<u32> {
        let k = self.n.len();
        let bits = self.bits();
        let mut x = vec![0u32; k];
        x[(bits - 1) / 32] = 1 << ((bits - 1) % 32);
        for _ in 0..(32 * k - bits + 2) {
            double_mod(&mut x, &self.n);
        }
        let mut scratch = vec![0u32; 2 * k];
        self.pow_mont(&x, 32 * k as u64, &mut scratch)
    }

    /// Montgomery square `out = a·a·R^-1 mod n` for `a < n`: the full square first, computing
    /// each cross product once and doubling (about half the multiplies of `mul`'s product
    /// pass), then a separate Montgomery reduction. `t` is scratch of `2k` limbs.
    fn sqr(&self, a: &[u32], t: &mut [u32], out: &mut [u32]) {
        let k = self.n.len();
        let (n, a, t) = (&self.n[..k], &a[..k], &mut t[..2 * k]);
        t.fill(0);
        // Cross products a[i]·a[j], i < j.
        for i in 0..k {
            let ai = u64::from(a[i]);
            let mut carry = 0u64;
            for j in i + 1..k {
                let s = u64::from(t[i + j]) + ai * u64::from(a[j]) + carry;
                t[i + j] = s as u32;
                carry = s >> 32;
            }
            // Row i ends at i + k, which no earlier row reached.
            if i + k < 2 * k {
                t[i + k] = carry as u32;
            }
        }
        // Double them, then add the squares a[i]² on the diagonal.
        let mut shifted_out = 0u32;
        for limb in t.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | shifted_out;
            shifted_out = next;
        }
        let mut carry = 0u64;
        for i in 0..k {
            let sq = u64::from(a[i]) * u64::from(a[i]);
            let lo = u64::from(t[2 * i]) + (sq & 0xffff_ffff) + carry;
            t[2 * i] = lo as u32;
            let hi = u64::from(t[2 * i + 1]) + (sq >> 32) + (lo >> 32);
            t[2 * i + 1] = hi as u32;
            carry = hi >> 32;
        }
        // Montgomery reduction: add m·n·2^(32i) to clear limb i, k times; the value then sits in
        // the high half, below 2n, with `top` its bit above 2^(32k).
        let mut top = 0u64;
        for i in 0..k {
            let m = u64::from(t[i].wrapping_mul(self.n0_inv));
            let mut carry = 0u64;
            for j in 0..k {
                let s = u64::from(t[i + j]) + m * u64::from(n[j]) + carry;
                t[i + j] = s as u32;
                carry = s >> 32;
            }
            let s = u64::from(t[i + k]) + carry + top;
            t[i + k] = s as u32;
            top = s >> 32;
        }
        out.copy_from_slice(&t[k..]);
        if top != 0 || !less_than(out, n) {
            sub_in_place(out, n);
        }
    }

    /// Montgomery product `out = a·b·R^-1 mod n` for `a, b < n` (CIOS with the multiply and
    /// reduce passes fused into one loop). `t` is scratch of at least `k + 1` limbs.
    fn mul(&self, a: &[u32], b: &[u32], t: &mut [u32], out: &mut [u32]) {
        let k = self.n.len();
        let (n, a, b, t) = (&self.n[..k], &a[..k], &b[..k], &mut t[..k + 1]);
        t.fill(0);
        for &bi in b {
            let bi = u64::from(bi);
            // Limb 0 decides m, the multiple of n that makes the low limb vanish.
            let s = u64::from(t[0]) + u64::from(a[0]) * bi;
            let m = u64::from((s as u32).wrapping_mul(self.n0_inv));
            let mut carry_ab = s >> 32;
            let mut carry_mn = (u64::from(s as u32) + m * u64::from(n[0])) >> 32;
            // t = (t + a·b[i] + m·n) / 2^32
            for j in 1..k {
                let s = u64::from(t[j]) + u64::from(a[j]) * bi + carry_ab;
                carry_ab = s >> 32;
                let r = u64::from(s as u32) + m * u64::from(n[j]) + carry_mn;
                carry_mn = r >> 32;
                t[j - 1] = r as u32;
            }
            let s = u64::from(t[k]) + carry_ab + carry_mn;
            t[k - 1] = s as u32;
            t[k] = (s >> 32) as u32;
        }
        // t < 2n: one conditional subtraction brings it below n.
        out.copy_from_slice(&t[..k]);
        if t[k] != 0 || !less_than(out, n) {
            sub_in_place(out, n);
        }
    }
}

/// Big-endian bytes to little-endian limbs, leading zero limbs dropped (zero is one limb).
fn limbs_from_be(bytes: &[u8]) -> Vec<u32> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[first..];
    if bytes.is_empty() {
        return vec![0];
    }
    let mut limbs = Vec::with_capacity(bytes.len().div_ceil(4));
    for chunk in bytes.rchunks(4) {
        let mut word = [0u8; 4];
        word[4 - chunk.len()..].copy_from_slice(chunk);
        limbs.push(u32::from_be_bytes(word));
    }
    limbs
}

/// Little-endian limbs to exactly `len` big-endian bytes; `None` if the value needs more.
fn limbs_to_be(limbs: &[u32], len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    for (i, limb) in limbs.iter().enumerate() {
        for (b, byte) in limb.to_le_bytes().into_iter().enumerate() {
            let pos = 4 * i + b;
            if pos < len {
                out[len - 1 - pos] = byte;
            } else if byte != 0 {
                return None;
            }
        }
    }
    Some(out)
}

/// `a -= b` modulo `2^(32·len)` for equal-length limbs.
fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
}

/// `x = 2x mod n` for `x < n`: the shifted-out bit and a comparison decide one subtraction.
fn double_mod(x: &mut [u32], n: &[u32]) {
    let mut carry = 0u32;
    for limb in x.iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | carry;
        carry = next;
    }
    if carry != 0 || !less_than(x, n) {
        sub_in_place(x, n);
    }
}
