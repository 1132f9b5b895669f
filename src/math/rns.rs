//! RNS bases: the ring context (primes and NTT tables), fast basis conversion (ModUp /
//! ModDown) and exact CRT reconstruction.

use super::dot::{weighted_accumulate, DotModulus};
use super::modulus::Modulus;
use super::ntt::{automorphism_eval_permutation, NttTable};
use super::scratch;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The ring `Z[X]/(X^N + 1)` with a chain of ciphertext primes `q_0..q_L` and special primes
/// `p_0..p_{K-1}` used by hybrid key switching.
///
/// A polynomial "at level `l`" has limbs for `q_0..=q_l`; an "extended" polynomial has, in
/// addition, limbs for every special prime (in that order).
pub struct RingContext {
    n: usize,
    log_n: u32,
    q: Vec<NttTable>,
    p: Vec<NttTable>,
    galois_perm: Mutex<HashMap<u64, Arc<Vec<u32>>>>,
}

impl std::fmt::Debug for RingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingContext")
            .field("n", &self.n)
            .field(
                "q",
                &self
                    .q
                    .iter()
                    .map(|t| t.modulus().value())
                    .collect::<Vec<_>>(),
            )
            .field(
                "p",
                &self
                    .p
                    .iter()
                    .map(|t| t.modulus().value())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RingContext {
    /// Builds NTT tables for every prime. `n` must be a power of two in `[16, 2^17]`.
    pub fn new(n: usize, q: &[u64], p: &[u64]) -> Result<Self> {
        if !n.is_power_of_two() || !(16..=1 << 17).contains(&n) {
            return Err(Error::params(format!(
                "ring degree {n} must be a power of two in [16, 2^17]"
            )));
        }
        if q.is_empty() {
            return Err(Error::params("the modulus chain is empty"));
        }
        let mut all: Vec<u64> = q.iter().chain(p).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::params(
                "primes of the modulus chain must be distinct",
            ));
        }
        let build = |ps: &[u64]| -> Result<Vec<NttTable>> {
            ps.iter()
                .map(|&v| NttTable::new(n, Modulus::new(v)?))
                .collect()
        };
        let q = build(q)?;
        let p = build(p)?;
        let first = q[0].eval_exponents();
        if q.iter().chain(&p).any(|t| t.eval_exponents() != first) {
            return Err(Error::params("NTT evaluation orders differ between primes"));
        }
        Ok(RingContext {
            n,
            log_n: n.trailing_zeros(),
            q,
            p,
            galois_perm: Mutex::new(HashMap::new()),
        })
    }

    /// Ring degree N.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// log2 N.
    #[inline]
    pub fn log_n(&self) -> u32 {
        self.log_n
    }

    /// Highest level L (the number of ciphertext primes minus one).
    #[inline]
    pub fn max_level(&self) -> usize {
        self.q.len() - 1
    }

    /// Tables of the ciphertext primes `q_0..q_L`.
    #[inline]
    pub fn q_tables(&self) -> &[NttTable] {
        &self.q
    }

    /// Tables of the special primes.
    #[inline]
    pub fn p_tables(&self) -> &[NttTable] {
        &self.p
    }

    /// Table of limb `i` of a polynomial at `level` (extended or not: limbs past `level`
    /// are special primes).
    #[inline]
    pub fn table(&self, level: usize, i: usize) -> &NttTable {
        if i <= level {
            &self.q[i]
        } else {
            &self.p[i - level - 1]
        }
    }

    /// Tables of every limb of a polynomial at `level`, extended by the special primes or not.
    pub fn tables(&self, level: usize, extended: bool) -> Vec<&NttTable> {
        let mut v: Vec<&NttTable> = self.q[..=level].iter().collect();
        if extended {
            v.extend(self.p.iter());
        }
        v
    }

    /// The permutation applying `X -> X^g` to evaluation-form limbs (cached per `g`).
    pub fn galois_permutation(&self, g: u64) -> Arc<Vec<u32>> {
        let mut cache = match self.galois_perm.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache
            .entry(g)
            .or_insert_with(|| {
                Arc::new(automorphism_eval_permutation(self.q[0].eval_exponents(), g))
            })
            .clone()
    }

    /// Whether the NTT of the first ciphertext prime runs on the AVX-512 IFMA path.
    pub fn uses_ifma(&self) -> bool {
        self.q[0].uses_ifma()
    }
}

/// Fast (approximate) basis conversion from a source RNS basis `S` to target primes:
/// `y_t = sum_j [x_j * (S/s_j)^-1]_{s_j} * (S/s_j) mod t`, which equals `x + u*S` for some
/// `0 <= u < |S|`. This is the ModUp / ModDown primitive of hybrid key switching.
#[derive(Debug, Clone)]
pub struct BasisConverter {
    src: Vec<Modulus>,
    dst: Vec<Modulus>,
    /// `(S/s_j)^-1 mod s_j` and its Shoup companion.
    hat_inv: Vec<(u64, u64)>,
    /// `hat_mod[t * src.len() + j] = (S/s_j) mod dst_t`.
    hat_mod: Vec<u64>,
    /// `S mod dst_t`, for the exact conversion's correction.
    s_mod: Vec<u64>,
    /// `1 / s_j` as `f64`, for the exact conversion's overflow estimate.
    inv_src_f64: Vec<f64>,
    /// The lazy-reduction constants of every target prime.
    dst_dot: Vec<DotModulus>,
}

impl BasisConverter {
    /// Precomputes the conversion constants. Cost: O(|S|^2 + |S|·|T|) modular products.
    pub fn new(src: &[Modulus], dst: &[Modulus]) -> Result<Self> {
        let mut hat_inv = Vec::with_capacity(src.len());
        for (j, sj) in src.iter().enumerate() {
            let mut prod = 1u64;
            for (k, sk) in src.iter().enumerate() {
                if k != j {
                    prod = sj.mul(prod, sj.reduce(sk.value()));
                }
            }
            let inv = sj.inv(prod)?;
            hat_inv.push((inv, sj.shoup(inv)));
        }
        let mut hat_mod = Vec::with_capacity(src.len() * dst.len());
        for t in dst {
            for j in 0..src.len() {
                let mut prod = 1u64;
                for (k, sk) in src.iter().enumerate() {
                    if k != j {
                        prod = t.mul(prod, t.reduce(sk.value()));
                    }
                }
                hat_mod.push(prod);
            }
        }
        let s_mod = dst
            .iter()
            .map(|t| {
                src.iter()
                    .fold(1u64, |acc, s| t.mul(acc, t.reduce(s.value())))
            })
            .collect();
        let inv_src_f64 = src.iter().map(|s| 1.0 / s.value() as f64).collect();
        Ok(BasisConverter {
            src: src.to_vec(),
            dst: dst.to_vec(),
            hat_inv,
            hat_mod,
            s_mod,
            inv_src_f64,
            dst_dot: dst.iter().map(DotModulus::new).collect(),
        })
    }

    /// Converts coefficient-form limbs `input[j]` (one per source prime) into coefficient-form
    /// limbs `output[t]` (one per target prime). Cost: `N·|S|` Shoup products, then per
    /// target `N·|S|` lazily reduced products ([`weighted_accumulate`]: vectorized).
    pub fn convert(&self, input: &[&[u64]], output: &mut [&mut [u64]]) {
        self.convert_impl(input, output, false);
    }

    /// `v_j = [x_j·(S/s_j)^-1]_{s_j}` for every source limb, in one scratch buffer (`|S|·N`).
    fn scaled_inputs(&self, input: &[&[u64]], n: usize) -> Vec<u64> {
        let mut v = scratch::dirty(self.src.len() * n);
        for ((out, x), (sj, &(w, ws))) in v
            .chunks_exact_mut(n)
            .zip(input)
            .zip(self.src.iter().zip(&self.hat_inv))
        {
            for (y, &a) in out.iter_mut().zip(&x[..n]) {
                *y = sj.mul_shoup(a, w, ws);
            }
        }
        v
    }

    fn convert_impl(&self, input: &[&[u64]], output: &mut [&mut [u64]], exact: bool) {
        let ns = self.src.len();
        let n = input.first().map_or(0, |l| l.len());
        if ns == 1 {
            // One source prime: (S/s_0) = 1, so y_t = x mod t (and the conversion is exact).
            for (t, out) in output.iter_mut().enumerate() {
                let m = self.dst[t];
                if self.src[0].value() <= m.value() {
                    out[..n].copy_from_slice(&input[0][..n]);
                } else {
                    for (y, &x) in out.iter_mut().zip(input[0]) {
                        *y = m.reduce(x);
                    }
                }
            }
            return;
        }
        let v = self.scaled_inputs(input, n);
        // exact: the overflow u = floor(sum_j v_j / s_j) < ns, subtracted below as one more
        // term u·(t - S mod t)
        let mut u = if exact { scratch::dirty(n) } else { Vec::new() };
        if exact {
            let mut frac = vec![0f64; n];
            for (vj, &inv) in v.chunks_exact(n).zip(&self.inv_src_f64) {
                for (f, &x) in frac.iter_mut().zip(vj) {
                    *f += x as f64 * inv;
                }
            }
            // 0 <= frac < ns; the float sum is within ns·2^-52 of the exact one, and a
            // truncation is the floor of a non-negative value
            let top = ns as u64 - 1;
            for (y, f) in u.iter_mut().zip(&frac) {
                *y = (*f as u64).min(top);
            }
        }
        let bound = self.src.iter().map(|m| m.value()).max().unwrap_or(1);
        {
            let mut terms: Vec<&[u64]> = v.chunks_exact(n).collect();
            if exact {
                terms.push(&u);
            }
            let mut w = Vec::with_capacity(ns + 1);
            for (t, out) in output.iter_mut().enumerate() {
                let m = self.dst[t];
                w.clear();
                w.extend_from_slice(&self.hat_mod[t * ns..(t + 1) * ns]);
                if exact {
                    // -u·S mod t
                    w.push(m.sub(0, self.s_mod[t]));
                }
                let out = &mut out[..n];
                out.fill(0);
                weighted_accumulate(&self.dst_dot[t], out, &terms, &w, bound);
            }
        }
        scratch::recycle(v);
        if exact {
            scratch::recycle(u);
        }
    }
}

impl BasisConverter {
    /// Exact basis conversion: like [`convert`](Self::convert), but returns `x mod t` for the
    /// representative `x` in `[0, S)`, with no multiple of `S` added. The overflow
    /// `u = floor(sum_j v_j / s_j)` (with `v_j = [x_j (S/s_j)^-1]_{s_j}`) is estimated in
    /// `f64` and subtracted as `u·S mod t` (Halevi-Polyakov-Shoup). The estimate can be off by
    /// one only when `x` lies within about `|S|·2^-50` of `0` or `S`, where it returns
    /// `x ± S`: an error of one unit after a division by `S`, never a bias.
    ///
    /// ModDown needs this: the approximate conversion's `u·S` term, divided by `S = P`, adds
    /// `-u` with `0 <= u < K` (mean about `(K-1)/2`) to every coefficient, a constant-sign
    /// bias that piles up on the slots next to the root 1.
    ///
    /// Cost: as [`convert`](Self::convert) with one more term per target, plus `N·|S|`
    /// floating-point products.
    pub fn convert_exact(&self, input: &[&[u64]], output: &mut [&mut [u64]]) {
        self.convert_impl(input, output, true);
    }
}

/// Exact CRT reconstruction of centered residues to `f64`, by Garner's algorithm with balanced
/// mixed-radix digits (so the value comes out centered in `(-Q/2, Q/2)` with no cancellation).
#[derive(Debug, Clone)]
pub struct CrtReconstructor {
    moduli: Vec<Modulus>,
    /// `inv[i] = (q_0 * ... * q_{i-1})^-1 mod q_i`.
    inv: Vec<u64>,
    /// `radix_mod[i][j] = (q_0 * ... * q_{j-1}) mod q_i` for `j < i`.
    radix_mod: Vec<Vec<u64>>,
    /// `radix_f64[j] = q_0 * ... * q_{j-1}` as f64.
    radix_f64: Vec<f64>,
}

impl CrtReconstructor {
    /// Precomputes Garner constants for the given primes.
    pub fn new(moduli: &[Modulus]) -> Result<Self> {
        let mut inv = Vec::new();
        let mut radix_mod = Vec::new();
        let mut radix_f64 = Vec::new();
        let mut acc = 1f64;
        for (i, qi) in moduli.iter().enumerate() {
            let mut row = Vec::with_capacity(i);
            let mut prod = 1u64;
            for qj in &moduli[..i] {
                row.push(prod);
                prod = qi.mul(prod, qi.reduce(qj.value()));
            }
            inv.push(if i == 0 { 1 } else { qi.inv(prod)? });
            radix_mod.push(row);
            radix_f64.push(acc);
            acc *= qi.value() as f64;
        }
        Ok(CrtReconstructor {
            moduli: moduli.to_vec(),
            inv,
            radix_mod,
            radix_f64,
        })
    }

    /// Reconstructs the centered integer with residues `r[i] mod q_i`, as `f64`.
    /// Cost: O(k^2) word products for k primes.
    pub fn reconstruct(&self, r: &[u64]) -> f64 {
        let k = self.moduli.len();
        let mut digits = [0i64; 64];
        let mut value = 0f64;
        for i in 0..k.min(64) {
            let qi = &self.moduli[i];
            // partial = sum_{j<i} d_j * M_j mod q_i
            let mut partial = 0u64;
            for (d, &m) in digits[..i].iter().zip(&self.radix_mod[i]) {
                partial = qi.add(partial, qi.mul(qi.reduce_i64(*d), m));
            }
            let d = qi.mul(qi.sub(r[i], partial), self.inv[i]);
            digits[i] = qi.center(d);
        }
        for i in (0..k.min(64)).rev() {
            value += digits[i] as f64 * self.radix_f64[i];
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::modulus::ntt_primes;
    use proptest::prelude::*;

    fn moduli(bits: u32, k: usize, exclude: &[u64]) -> Vec<Modulus> {
        ntt_primes(bits, 16, k, exclude)
            .unwrap()
            .into_iter()
            .map(|p| Modulus::new(p).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn basis_extension_is_exact_up_to_multiples_of_s(x in any::<u128>(), ks in 1usize..4) {
            let src = moduli(40, ks, &[]);
            let dst = moduli(60, 3, &[]);
            let s_prod: u128 = src.iter().map(|m| m.value() as u128).product();
            let x = x % s_prod;
            let input: Vec<Vec<u64>> = src.iter().map(|m| vec![(x % m.value() as u128) as u64]).collect();
            let input_refs: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut out = vec![vec![0u64; 1]; 3];
            let mut out_refs: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            BasisConverter::new(&src, &dst).unwrap().convert(&input_refs, &mut out_refs);
            // y = x + u*S with 0 <= u < ks: find u consistent with every target.
            let ok = (0..ks as u128).any(|u| {
                let y = x + u * s_prod;
                dst.iter().zip(&out).all(|(t, o)| (y % t.value() as u128) as u64 == o[0])
            });
            prop_assert!(ok);
        }

        #[test]
        fn exact_basis_conversion_adds_no_multiple_of_s(x in any::<u128>(), ks in 1usize..6) {
            let src = moduli(25, ks, &[]);
            let dst = moduli(58, 3, &[]);
            let s_prod: u128 = src.iter().map(|m| m.value() as u128).product();
            // keep x away from the 2^-50-wide ambiguity window at either end of [0, S)
            let margin = (s_prod >> 48).max(1);
            let x = margin + x % (s_prod - 2 * margin);
            let input: Vec<Vec<u64>> = src.iter().map(|m| vec![(x % m.value() as u128) as u64]).collect();
            let input_refs: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut out = vec![vec![0u64; 1]; 3];
            let mut out_refs: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            BasisConverter::new(&src, &dst).unwrap().convert_exact(&input_refs, &mut out_refs);
            for (t, o) in dst.iter().zip(&out) {
                prop_assert_eq!((x % t.value() as u128) as u64, o[0]);
            }
        }

        #[test]
        fn crt_reconstructs_centered(x in any::<i64>()) {
            let ms = moduli(40, 3, &[]);
            let r: Vec<u64> = ms.iter().map(|m| m.reduce_i64(x)).collect();
            let got = CrtReconstructor::new(&ms).unwrap().reconstruct(&r);
            prop_assert!((got - x as f64).abs() <= (x as f64).abs() * 1e-15 + 1e-9);
        }
    }
}
