//! RNS polynomials whose type says whether they hold coefficients or evaluations.

use super::rns::RingContext;
use super::scratch;
use rayon::prelude::*;
use std::marker::PhantomData;

/// Marker for the coefficient representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coeff;
/// Marker for the evaluation (NTT) representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eval;

/// The two representations of an [`RnsPoly`].
pub trait Representation: Clone + Copy + std::fmt::Debug + Send + Sync + 'static {}
impl Representation for Coeff {}
impl Representation for Eval {}

/// A polynomial of `Z[X]/(X^N+1)` in RNS form: limbs for `q_0..=q_level`, followed by limbs
/// for the special primes when `extended`. Limbs are contiguous (`limb i` is
/// `data[i*N..(i+1)*N]`) and always fully reduced.
#[derive(PartialEq, Eq)]
pub struct RnsPoly<R: Representation> {
    n: usize,
    level: usize,
    num_special: usize,
    data: Vec<u64>,
    _repr: PhantomData<R>,
}

impl<R: Representation> std::fmt::Debug for RnsPoly<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RnsPoly")
            .field("repr", &std::any::type_name::<R>())
            .field("n", &self.n)
            .field("level", &self.level)
            .field("special_limbs", &self.num_special)
            .finish_non_exhaustive()
    }
}

impl<R: Representation> Clone for RnsPoly<R> {
    fn clone(&self) -> Self {
        RnsPoly {
            n: self.n,
            level: self.level,
            num_special: self.num_special,
            data: scratch::copied(&self.data),
            _repr: PhantomData,
        }
    }
}

impl<R: Representation> Drop for RnsPoly<R> {
    fn drop(&mut self) {
        scratch::recycle(std::mem::take(&mut self.data));
    }
}

impl<R: Representation> RnsPoly<R> {
    /// Moves the words into a polynomial of another representation.
    fn retag<S: Representation>(mut self) -> RnsPoly<S> {
        RnsPoly {
            n: self.n,
            level: self.level,
            num_special: self.num_special,
            data: std::mem::take(&mut self.data),
            _repr: PhantomData,
        }
    }

    /// The zero polynomial at `level`, extended by the special primes if `extended`.
    pub fn zero(ring: &RingContext, level: usize, extended: bool) -> Self {
        let num_special = if extended { ring.p_tables().len() } else { 0 };
        let n = ring.n();
        RnsPoly {
            n,
            level,
            num_special,
            data: scratch::zeroed((level + 1 + num_special) * n),
            _repr: PhantomData,
        }
    }

    /// A polynomial whose words are unspecified (reused buffers): for callers that
    /// overwrite every limb.
    pub(crate) fn dirty(ring: &RingContext, level: usize, extended: bool) -> Self {
        let num_special = if extended { ring.p_tables().len() } else { 0 };
        let n = ring.n();
        RnsPoly {
            n,
            level,
            num_special,
            data: scratch::dirty((level + 1 + num_special) * n),
            _repr: PhantomData,
        }
    }

    /// Ring degree.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }
    /// Level: the index of the last ciphertext prime held.
    #[inline]
    pub fn level(&self) -> usize {
        self.level
    }
    /// Whether the polynomial carries special-prime limbs.
    #[inline]
    pub fn is_extended(&self) -> bool {
        self.num_special > 0
    }
    /// Number of limbs.
    #[inline]
    pub fn num_limbs(&self) -> usize {
        self.level + 1 + self.num_special
    }
    /// Limb `i`.
    #[inline]
    pub fn limb(&self, i: usize) -> &[u64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }
    /// Limb `i`, mutably.
    #[inline]
    pub fn limb_mut(&mut self, i: usize) -> &mut [u64] {
        &mut self.data[i * self.n..(i + 1) * self.n]
    }
    /// All limbs.
    pub fn limbs(&self) -> std::slice::ChunksExact<'_, u64> {
        self.data.chunks_exact(self.n)
    }
    /// All limbs, mutably.
    pub fn limbs_mut(&mut self) -> std::slice::ChunksExactMut<'_, u64> {
        self.data.chunks_exact_mut(self.n)
    }
    /// The raw words, limb after limb.
    pub fn as_words(&self) -> &[u64] {
        &self.data
    }
    /// The raw words, mutably.
    pub(crate) fn as_words_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }
    /// Overwrites every word with zero (for secret material).
    pub(crate) fn zeroize_words(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.data);
    }

    /// Runs `f(table, limb, other_limb)` over every limb (in parallel for large polynomials).
    fn zip_limbs(
        &mut self,
        ring: &RingContext,
        other: &Self,
        f: impl Fn(&super::ntt::NttTable, &mut [u64], &[u64]) + Sync,
    ) {
        let (n, level) = (self.n, self.level);
        if super::par::worth_parallel(self.data.len()) {
            self.data
                .par_chunks_exact_mut(n)
                .zip(other.data.par_chunks_exact(n))
                .enumerate()
                .for_each(|(i, (a, b))| f(ring.table(level, i), a, b));
        } else {
            for (i, (a, b)) in self
                .data
                .chunks_exact_mut(n)
                .zip(other.data.chunks_exact(n))
                .enumerate()
            {
                f(ring.table(level, i), a, b);
            }
        }
    }

    /// Runs `f(table, limb_index, limb)` over every limb (in parallel for large polynomials).
    pub(crate) fn for_each_limb(
        &mut self,
        ring: &RingContext,
        f: impl Fn(&super::ntt::NttTable, usize, &mut [u64]) + Sync,
    ) {
        let (n, level) = (self.n, self.level);
        if super::par::worth_parallel(self.data.len()) {
            self.data
                .par_chunks_exact_mut(n)
                .enumerate()
                .for_each(|(i, a)| f(ring.table(level, i), i, a));
        } else {
            for (i, a) in self.data.chunks_exact_mut(n).enumerate() {
                f(ring.table(level, i), i, a);
            }
        }
    }

    /// `self += other` (same level and shape). Cost: N per limb.
    pub fn add_assign(&mut self, ring: &RingContext, other: &Self) {
        debug_assert_eq!(self.num_limbs(), other.num_limbs());
        self.zip_limbs(ring, other, |t, a, b| {
            super::simd::add_assign(a, b, t.modulus().value())
        });
    }

    /// `self -= other` (same level and shape).
    pub fn sub_assign(&mut self, ring: &RingContext, other: &Self) {
        debug_assert_eq!(self.num_limbs(), other.num_limbs());
        self.zip_limbs(ring, other, |t, a, b| {
            super::simd::sub_assign(a, b, t.modulus().value())
        });
    }

    /// `self = -self`.
    pub fn neg_assign(&mut self, ring: &RingContext) {
        self.for_each_limb(ring, |t, _, a| {
            let m = t.modulus();
            for x in a.iter_mut() {
                *x = m.neg(*x);
            }
        });
    }

    /// Multiplies limb `i` by the constant `scalars[i]` (each reduced modulo its prime).
    pub fn mul_scalar_assign(&mut self, ring: &RingContext, scalars: &[u64]) {
        self.for_each_limb(ring, |t, i, a| {
            let m = t.modulus();
            let w = scalars[i];
            let ws = m.shoup(w);
            for x in a.iter_mut() {
                *x = m.mul_shoup(*x, w, ws);
            }
        });
    }

    /// Drops every ciphertext limb above `level` (not for extended polynomials).
    pub fn truncate_level(&mut self, level: usize) {
        debug_assert!(self.num_special == 0 && level <= self.level);
        self.data.truncate((level + 1) * self.n);
        self.level = level;
    }

    /// A copy of an extended polynomial restricted to `level`, keeping the special limbs.
    pub fn at_level_extended(&self, level: usize) -> Self {
        debug_assert!(self.num_special > 0 && level <= self.level);
        let n = self.n;
        let mut data = scratch::dirty(0);
        data.extend_from_slice(&self.data[..(level + 1) * n]);
        data.extend_from_slice(&self.data[(self.level + 1) * n..]);
        RnsPoly {
            n,
            level,
            num_special: self.num_special,
            data,
            _repr: PhantomData,
        }
    }

    /// A copy restricted to `level` (and without special limbs).
    pub fn at_level(&self, level: usize) -> Self {
        let data = scratch::copied(&self.data[..(level + 1) * self.n]);
        RnsPoly {
            n: self.n,
            level,
            num_special: 0,
            data,
            _repr: PhantomData,
        }
    }
}

impl RnsPoly<Coeff> {
    /// Builds a polynomial from signed integer coefficients (reduced into every limb).
    pub fn from_signed(ring: &RingContext, coeffs: &[i64], level: usize, extended: bool) -> Self {
        let mut p = Self::zero(ring, level, extended);
        p.for_each_limb(ring, |t, _, a| {
            let m = t.modulus();
            for (x, &c) in a.iter_mut().zip(coeffs) {
                *x = m.reduce_i64(c);
            }
        });
        p
    }

    /// Builds a polynomial from signed 128-bit coefficients.
    pub fn from_signed_i128(ring: &RingContext, coeffs: &[i128], level: usize) -> Self {
        Self::from_signed_i128_in(ring, coeffs, level, false)
    }

    /// [`RnsPoly::from_signed_i128`], extended by the special primes if `extended`.
    pub fn from_signed_i128_in(
        ring: &RingContext,
        coeffs: &[i128],
        level: usize,
        extended: bool,
    ) -> Self {
        let mut p = Self::zero(ring, level, extended);
        p.for_each_limb(ring, |t, _, a| {
            let m = t.modulus();
            for (x, &c) in a.iter_mut().zip(coeffs) {
                *x = m.reduce_i128(c);
            }
        });
        p
    }

    /// Forward NTT of every limb. Cost: one NTT per limb.
    pub fn into_eval(mut self, ring: &RingContext) -> RnsPoly<Eval> {
        self.for_each_limb(ring, |t, _, a| t.forward(a));
        self.retag()
    }
}

impl RnsPoly<Eval> {
    /// Inverse NTT of every limb. Cost: one inverse NTT per limb.
    pub fn into_coeff(mut self, ring: &RingContext) -> RnsPoly<Coeff> {
        self.for_each_limb(ring, |t, _, a| t.inverse(a));
        self.retag()
    }

    /// `self *= other` pointwise (vectorised: a multiply-accumulate into a zeroed buffer).
    pub fn mul_assign(&mut self, ring: &RingContext, other: &Self) {
        let n = self.n;
        self.zip_limbs(ring, other, |t, a, b| {
            let mut tmp = scratch::zeroed(n);
            t.mul_accumulate(&mut tmp, a, b);
            a.copy_from_slice(&tmp);
            scratch::recycle(tmp);
        });
    }

    /// `self *= other` pointwise on the limbs `self` has, where `other` may hold more limbs
    /// (a higher level, or special limbs after them): used to multiply by the secret key
    /// without copying it.
    pub fn mul_assign_prefix(&mut self, ring: &RingContext, other: &Self) {
        let n = self.n;
        let level = self.level;
        for (i, a) in self.data.chunks_exact_mut(n).enumerate() {
            let t = ring.table(level, i);
            let mut tmp = scratch::zeroed(n);
            t.mul_accumulate(&mut tmp, a, other.limb(i));
            a.copy_from_slice(&tmp);
            scratch::recycle(tmp);
        }
    }

    /// `self += a * b` pointwise (vectorised by tfhe-ntt). `a` and `b` may hold more limbs
    /// than `self` only in the sense of the same layout; shapes must match.
    pub fn mul_accumulate(&mut self, ring: &RingContext, a: &Self, b: &Self) {
        let level = self.level;
        let n = self.n;
        for (i, acc) in self.data.chunks_exact_mut(n).enumerate() {
            ring.table(level, i)
                .mul_accumulate(acc, a.limb(i), b.limb(i));
        }
    }

    /// Applies `X -> X^g` given the evaluation-domain permutation of
    /// [`RingContext::galois_permutation`]. Cost: one gather per limb.
    pub fn permuted(&self, perm: &[u32]) -> Self {
        let mut out = scratch::dirty(self.data.len());
        for (o, a) in out
            .chunks_exact_mut(self.n)
            .zip(self.data.chunks_exact(self.n))
        {
            for (x, &j) in o.iter_mut().zip(perm) {
                *x = a[j as usize];
            }
        }
        RnsPoly {
            n: self.n,
            level: self.level,
            num_special: self.num_special,
            data: out,
            _repr: PhantomData,
        }
    }
}
