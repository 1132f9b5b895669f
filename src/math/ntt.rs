//! Negacyclic NTT over one prime, on top of `tfhe_ntt::prime64::Plan`.
//!
//! hepeft never implements its own NTT: this module owns the plan, the `1/N` normalisation and
//! the order in which `tfhe-ntt` lays out evaluations (needed to apply automorphisms
//! `X -> X^g` directly in the evaluation domain).

use super::modulus::Modulus;
use crate::{Error, Result};
use tfhe_ntt::prime64::Plan;

/// NTT tables for one prime `p ≡ 1 mod 2N`.
pub struct NttTable {
    plan: Plan,
    modulus: Modulus,
    /// `eval_exponent[j] = k` (odd) such that slot `j` of the forward transform holds the
    /// evaluation at `psi^k`, for the fixed primitive 2N-th root `psi` = slot 0's root.
    eval_exponent: Vec<u32>,
}

impl std::fmt::Debug for NttTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NttTable")
            .field("n", &self.plan.ntt_size())
            .field("p", &self.modulus.value())
            .field("ifma", &self.plan.use_ifma())
            .finish()
    }
}

impl NttTable {
    /// Builds the tables for ring degree `n` (a power of two) and prime `p ≡ 1 mod 2n`.
    /// Cost: O(n log n) once.
    pub fn new(n: usize, modulus: Modulus) -> Result<Self> {
        let plan = Plan::try_new(n, modulus.value()).ok_or_else(|| {
            Error::params(format!(
                "{} is not an NTT prime for N = {n}",
                modulus.value()
            ))
        })?;
        // Transform the polynomial X: slot j then holds the root it evaluates at.
        let mut x = vec![0u64; n];
        x[1] = 1;
        plan.fwd(&mut x);
        let psi = x[0];
        let two_n = 2 * n;
        let mut log_of = std::collections::HashMap::with_capacity(n);
        let mut pw = psi;
        let psi2 = modulus.mul(psi, psi);
        for k in (1..two_n).step_by(2) {
            log_of.insert(pw, k as u32);
            pw = modulus.mul(pw, psi2);
        }
        let eval_exponent = x
            .iter()
            .map(|r| log_of.get(r).copied())
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| Error::params("NTT output is not a set of odd powers of a root"))?;
        Ok(NttTable {
            plan,
            modulus,
            eval_exponent,
        })
    }

    /// The prime of this table.
    #[inline]
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// Ring degree N.
    #[inline]
    pub fn n(&self) -> usize {
        self.plan.ntt_size()
    }

    /// Whether the AVX-512 IFMA code path (primes below 2^50 on CPUs with IFMA) is used.
    pub fn uses_ifma(&self) -> bool {
        self.plan.use_ifma()
    }

    /// Coefficients -> evaluations, in place. Cost: one tfhe-ntt forward transform.
    #[inline]
    pub fn forward(&self, a: &mut [u64]) {
        self.plan.fwd(a);
    }

    /// Evaluations -> coefficients, in place (including the `1/N` factor).
    #[inline]
    pub fn inverse(&self, a: &mut [u64]) {
        self.plan.inv(a);
        self.plan.normalize(a);
    }

    /// `acc += a * b` pointwise (vectorised by tfhe-ntt).
    #[inline]
    pub fn mul_accumulate(&self, acc: &mut [u64], a: &[u64], b: &[u64]) {
        self.plan.mul_accumulate(acc, a, b);
    }

    /// Exponent table of the evaluation order (see the struct docs).
    pub fn eval_exponents(&self) -> &[u32] {
        &self.eval_exponent
    }
}

/// The permutation that applies `X -> X^g` in the evaluation domain for the layout described
/// by `eval_exponent`: `out[j] = in[perm[j]]`. `g` must be odd.
pub fn automorphism_eval_permutation(eval_exponent: &[u32], g: u64) -> Vec<u32> {
    let n = eval_exponent.len();
    let two_n = 2 * n as u64;
    let mut index_of = vec![0u32; 2 * n];
    for (j, &k) in eval_exponent.iter().enumerate() {
        index_of[k as usize] = j as u32;
    }
    eval_exponent
        .iter()
        .map(|&k| index_of[((k as u64 * g) % two_n) as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::modulus::ntt_primes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn ntt_roundtrip_and_convolution(seed in any::<u64>(), bits in prop::sample::select(vec![40u32, 50, 60])) {
            let n = 64;
            let p = ntt_primes(bits, n, 1, &[]).unwrap()[0];
            let m = Modulus::new(p).unwrap();
            let t = NttTable::new(n, m).unwrap();
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 8) % p };
            let a: Vec<u64> = (0..n).map(|_| next()).collect();
            let b: Vec<u64> = (0..n).map(|_| next()).collect();
            let mut fa = a.clone();
            t.forward(&mut fa);
            let mut back = fa.clone();
            t.inverse(&mut back);
            prop_assert_eq!(&back, &a);
            // negacyclic convolution
            let mut fb = b.clone();
            t.forward(&mut fb);
            let mut prod = vec![0u64; n];
            t.mul_accumulate(&mut prod, &fa, &fb);
            t.inverse(&mut prod);
            let mut expect = vec![0u64; n];
            for i in 0..n { for j in 0..n {
                let v = m.mul(a[i], b[j]);
                if i + j < n { expect[i + j] = m.add(expect[i + j], v); } else { expect[i + j - n] = m.sub(expect[i + j - n], v); }
            }}
            prop_assert_eq!(prod, expect);
        }
    }

    #[test]
    fn eval_domain_automorphism_matches_coefficient_domain() {
        let n = 32;
        let p = ntt_primes(50, n, 1, &[]).unwrap()[0];
        let m = Modulus::new(p).unwrap();
        let t = NttTable::new(n, m).unwrap();
        let a: Vec<u64> = (0..n as u64).map(|i| (i * 7919 + 3) % p).collect();
        for g in [3u64, 5, 25, 2 * n as u64 - 1] {
            // coefficient-domain X -> X^g
            let mut expect = vec![0u64; n];
            for (i, &c) in a.iter().enumerate() {
                let e = (i as u64 * g) % (2 * n as u64);
                if (e as usize) < n {
                    expect[e as usize] = c;
                } else {
                    expect[e as usize - n] = m.neg(c);
                }
            }
            t.forward(&mut expect);
            let mut fa = a.clone();
            t.forward(&mut fa);
            let perm = automorphism_eval_permutation(t.eval_exponents(), g);
            let got: Vec<u64> = perm.iter().map(|&j| fa[j as usize]).collect();
            assert_eq!(got, expect, "g = {g}");
        }
    }
}
