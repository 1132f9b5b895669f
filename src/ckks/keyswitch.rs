//! Hybrid key switching (Han-Ki): decompose into digits, raise each to `Q_l·P` (ModUp),
//! multiply by the key, and divide by `P` (ModDown). The decomposition can be hoisted: computed
//! once and reused by many rotations of the same ciphertext.

use super::keys::SwitchingKey;
use super::params::CkksParams;
use crate::math::dot::{dot_accumulate_table, weighted_accumulate, weighted_ifma, DotModulus};
use crate::math::poly::{Coeff, Eval, RnsPoly};
use crate::math::{scratch, simd};
use rayon::prelude::*;

/// The digits of one polynomial, each raised to the extended basis `Q_l·P`, in evaluation form.
/// Computing it costs `(l+1)` inverse NTTs plus, per digit, one NTT per limb outside the digit.
#[derive(Clone, Debug)]
pub struct Decomposition {
    pub(crate) digits: Vec<RnsPoly<Eval>>,
    pub(crate) level: usize,
}

/// ModUp of every digit of `c` (evaluation form, level `l`, not extended).
pub(crate) fn decompose(params: &CkksParams, c: &RnsPoly<Eval>) -> Decomposition {
    let ring = params.ring();
    let level = c.level();
    let coeff: RnsPoly<Coeff> = c.clone().into_coeff(ring);
    let ranges = params.digits(level);
    let raise = |j: usize, range: &std::ops::Range<usize>| {
        // every limb is overwritten below
        let mut out = RnsPoly::<Eval>::dirty(ring, level, true);
        let mu = params.mod_up(level, j);
        let n = ring.n();
        // Target limb indices: q limbs outside the digit, then every special limb.
        let targets: Vec<usize> = (0..out.num_limbs())
            .filter(|i| !range.contains(i))
            .collect();
        if range.len() == 1 {
            // One prime q: the centered digit is x + h - h with h = (q-1)/2, so each target
            // limb is [x + h]_q reduced into t, minus h mod t: one fused pass per target.
            let src = coeff.limb(range.start);
            let ms = *ring.table(level, range.start).modulus();
            let hs = mu.src_half[0];
            for (&t, &ht) in targets.iter().zip(&mu.dst_half) {
                let table = ring.table(level, t);
                let m = *table.modulus();
                let dst = out.limb_mut(t);
                if ms.value() <= m.value() {
                    simd::add_sub(dst, src, ms.value(), hs, m.value(), ht);
                } else {
                    for (y, &x) in dst.iter_mut().zip(src) {
                        *y = m.sub(m.reduce(ms.add(x, hs)), ht);
                    }
                }
                table.forward(dst);
            }
        } else {
            // [x + h]_{Q_j} on the digit primes, converted, minus h on the targets
            let shifted: Vec<Vec<u64>> = range
                .clone()
                .zip(&mu.src_half)
                .map(|(i, &h)| {
                    let m = ring.table(level, i).modulus();
                    let mut v = scratch::dirty(n);
                    simd::add_sub(&mut v, coeff.limb(i), m.value(), h, m.value(), 0);
                    v
                })
                .collect();
            let src: Vec<&[u64]> = shifted.iter().map(|v| v.as_slice()).collect();
            let mut converted = scratch::dirty(targets.len() * n);
            {
                let mut outs: Vec<&mut [u64]> = converted.chunks_exact_mut(n).collect();
                mu.converter.convert(&src, &mut outs);
            }
            for ((t, limb), &h) in targets
                .iter()
                .zip(converted.chunks_exact(n))
                .zip(&mu.dst_half)
            {
                let table = ring.table(level, *t);
                let m = table.modulus();
                let dst = out.limb_mut(*t);
                simd::add_sub(dst, limb, m.value(), 0, m.value(), h);
                table.forward(dst);
            }
            scratch::recycle(converted);
            shifted.into_iter().for_each(scratch::recycle);
        }
        for i in range.clone() {
            out.limb_mut(i).copy_from_slice(c.limb(i));
        }
        out
    };
    let work = ranges.len() * (level + 1 + ring.p_tables().len()) * ring.n();
    let digits = if crate::math::par::worth_parallel(work) {
        ranges
            .par_iter()
            .enumerate()
            .map(|(j, r)| raise(j, r))
            .collect()
    } else {
        ranges
            .iter()
            .enumerate()
            .map(|(j, r)| raise(j, r))
            .collect()
    };
    Decomposition { digits, level }
}

/// `sum_j perm(digit_j) · (b_j, a_j)` over `Q_l·P`, where `perm` optionally applies an
/// automorphism to the digits first (hoisted rotations). The sums over the digits are reduced
/// lazily ([`crate::math::dot`]): one reduction per limb and output instead of one per
/// product, each digit limb read once for both outputs. Cost: `2·dnum·(l+1+K)` unreduced
/// vectorised products of N words and `2·(l+1+K)` reductions.
pub(crate) fn inner_product(
    params: &CkksParams,
    dec: &Decomposition,
    key: &SwitchingKey,
    perm: Option<&[u32]>,
) -> (RnsPoly<Eval>, RnsPoly<Eval>) {
    let ring = params.ring();
    let level = dec.level;
    let top = params.max_level().get();
    let mut acc0 = RnsPoly::<Eval>::zero(ring, level, true);
    let mut acc1 = RnsPoly::<Eval>::zero(ring, level, true);
    let limbs = acc0.num_limbs();
    // key limb index for each extended limb index at this level
    let key_limb = |i: usize| {
        if i <= level {
            i
        } else {
            top + 1 + (i - level - 1)
        }
    };
    let n = ring.n();
    let work = |i: usize, a0: &mut [u64], a1: &mut [u64]| {
        let kl = key_limb(i);
        let permuted: Vec<Vec<u64>> = match perm {
            Some(p) => dec
                .digits
                .iter()
                .map(|d| {
                    let dl = d.limb(i);
                    let mut tmp = scratch::dirty(n);
                    for (x, &k) in tmp.iter_mut().zip(p) {
                        *x = dl[k as usize];
                    }
                    tmp
                })
                .collect(),
            None => Vec::new(),
        };
        let s: Vec<&[u64]> = match perm {
            Some(_) => permuted.iter().map(|v| v.as_slice()).collect(),
            None => dec.digits.iter().map(|d| d.limb(i)).collect(),
        };
        let kb: Vec<&[u64]> = (0..s.len()).map(|j| key.b[j].limb(kl)).collect();
        let ka: Vec<&[u64]> = (0..s.len()).map(|j| key.a[j].limb(kl)).collect();
        dot_accumulate_table(ring.table(level, i), a0, Some(a1), &s, &kb, &ka);
        permuted.into_iter().for_each(scratch::recycle);
    };
    let words0 = acc0.as_words_mut();
    let words1 = acc1.as_words_mut();
    if crate::math::par::worth_parallel(2 * limbs * n * dec.digits.len()) {
        words0
            .par_chunks_exact_mut(n)
            .zip(words1.par_chunks_exact_mut(n))
            .enumerate()
            .for_each(|(i, (a0, a1))| work(i, a0, a1));
    } else {
        for (i, (a0, a1)) in words0
            .chunks_exact_mut(n)
            .zip(words1.chunks_exact_mut(n))
            .enumerate()
        {
            work(i, a0, a1);
        }
    }
    (acc0, acc1)
}

/// ModDown: `round(x / P)` from `Q_l·P` to `Q_l`, in evaluation form, computed as
/// `(x + h - [x + h]_P) / P` with `h = (P-1)/2` so the division rounds instead of flooring
/// (a floor would add a bias of 1/2 to every coefficient, which concentrates in the slots
/// near the root 1). The conversion of `[x + h]_P` to `Q_l` is exact
/// ([`BasisConverter::convert_exact`](crate::math::rns::BasisConverter::convert_exact)): the fast
/// approximate one would leave `-u`, `0 <= u < K`, in every coefficient, the same kind of
/// constant-sign bias. Cost: K inverse NTTs, (l+1) NTTs, `N·K·(l+2)` word products.
pub(crate) fn mod_down(params: &CkksParams, x: &RnsPoly<Eval>) -> RnsPoly<Eval> {
    let ring = params.ring();
    let level = x.level();
    let n = ring.n();
    let k = ring.p_tables().len();
    let half_p = params.half_p();
    let p_coeff: Vec<Vec<u64>> = (0..k)
        .map(|j| {
            let t = ring.table(level, level + 1 + j);
            let mut limb = scratch::copied(x.limb(level + 1 + j));
            t.inverse(&mut limb);
            let m = t.modulus();
            simd::add_sub_in_place(&mut limb, m.value(), half_p.1[j], m.value(), 0);
            limb
        })
        .collect();
    let src: Vec<&[u64]> = p_coeff.iter().map(|v| v.as_slice()).collect();
    // every limb is written below from x's ciphertext limbs and the conversion
    let mut out = RnsPoly::<Eval>::zero(ring, level, false);
    let mut conv = scratch::dirty((level + 1) * n);
    {
        let mut outs: Vec<&mut [u64]> = conv.chunks_exact_mut(n).collect();
        params.p_to_q(level).convert_exact(&src, &mut outs);
    }
    let p_inv = params.p_inv_mod_q();
    let body = |i: usize, o: &mut [u64], c: &mut [u64]| {
        let t = ring.table(level, i);
        let m = t.modulus();
        // h - [x + h]_P on every coefficient, then to the evaluation domain
        simd::rsub_in_place(c, m.value(), half_p.0[i]);
        t.forward(c);
        // (x_i + c)·P^-1 = x_i·P^-1 + c·P^-1 into the zeroed o, with one reduction
        let w = p_inv[i];
        let xi = &x.limb(i)[..o.len()];
        if weighted_ifma(m.value(), m.value()) {
            weighted_accumulate(&DotModulus::new(m), o, &[xi, c], &[w, w], m.value());
        } else {
            let ws = m.shoup(w);
            for ((y, &a), &z) in o.iter_mut().zip(xi).zip(c.iter()) {
                *y = m.mul_shoup(m.add(a, z), w, ws);
            }
        }
    };
    let words = out.as_words_mut();
    if crate::math::par::worth_parallel((level + 1) * n) {
        words
            .par_chunks_exact_mut(n)
            .zip(conv.par_chunks_exact_mut(n))
            .enumerate()
            .for_each(|(i, (o, c))| body(i, o, c));
    } else {
        for (i, (o, c)) in words
            .chunks_exact_mut(n)
            .zip(conv.chunks_exact_mut(n))
            .enumerate()
        {
            body(i, o, c);
        }
    }
    scratch::recycle(conv);
    p_coeff.into_iter().for_each(scratch::recycle);
    out
}

/// Full key switch of `c` (level l): returns `(d0, d1)` at level l with
/// `d0 + d1·s ≈ c·s'` where the key switches `s'` to `s`.
pub(crate) fn switch_key(
    params: &CkksParams,
    c: &RnsPoly<Eval>,
    key: &SwitchingKey,
) -> (RnsPoly<Eval>, RnsPoly<Eval>) {
    let dec = decompose(params, c);
    let (u0, u1) = inner_product(params, &dec, key, None);
    let (d0, d1) = crate::math::par::join(
        u0.as_words().len(),
        || mod_down(params, &u0),
        || mod_down(params, &u1),
    );
    (d0, d1)
}

/// `acc += P·φ(x)` on the ciphertext limbs of the extended `acc` (the special limbs of
/// `P·x` are zero), where `φ` is the evaluation-domain permutation `perm` (or the identity)
/// and `x` holds at least `acc`'s ciphertext limbs. This lifts a ciphertext part from `Q_l`
/// into `Q_l·P` at scale `P`, the form key-switch products take before ModDown.
/// Cost: `(l+1)·N` products (the IFMA kernel where it runs, else scalar Shoup), no NTT.
pub(crate) fn add_p_times(
    params: &CkksParams,
    acc: &mut RnsPoly<Eval>,
    x: &RnsPoly<Eval>,
    perm: Option<&[u32]>,
) {
    let ring = params.ring();
    let level = acc.level();
    let p_mod_q = params.p_mod_q();
    for (i, &w) in p_mod_q.iter().enumerate().take(level + 1) {
        let m = *ring.table(level, i).modulus();
        let src = x.limb(i);
        let dst = acc.limb_mut(i);
        if !weighted_ifma(m.value(), m.value()) {
            // one term: the scalar Shoup loop beats the AVX2 kernel
            let ws = m.shoup(w);
            match perm {
                Some(p) => {
                    for (y, &k) in dst.iter_mut().zip(p) {
                        *y = m.add(*y, m.mul_shoup(src[k as usize], w, ws));
                    }
                }
                None => {
                    for (y, &v) in dst.iter_mut().zip(src) {
                        *y = m.add(*y, m.mul_shoup(v, w, ws));
                    }
                }
            }
            continue;
        }
        let dm = DotModulus::new(&m);
        match perm {
            Some(p) => {
                let mut tmp = scratch::dirty(dst.len());
                for (y, &k) in tmp.iter_mut().zip(p) {
                    *y = src[k as usize];
                }
                weighted_accumulate(&dm, dst, &[&tmp], &[w], m.value());
                scratch::recycle(tmp);
            }
            None => weighted_accumulate(&dm, dst, &[&src[..dst.len()]], &[w], m.value()),
        }
    }
}

/// `acc += φ(x)` limb by limb (same shape; `φ` as in [`add_p_times`]). Cost: N per limb.
pub(crate) fn add_permuted(
    params: &CkksParams,
    acc: &mut RnsPoly<Eval>,
    x: &RnsPoly<Eval>,
    perm: Option<&[u32]>,
) {
    let ring = params.ring();
    let level = acc.level();
    for i in 0..acc.num_limbs() {
        let m = *ring.table(level, i).modulus();
        let src = x.limb(i);
        let dst = acc.limb_mut(i);
        match perm {
            Some(p) => {
                let mut tmp = scratch::dirty(dst.len());
                for (y, &k) in tmp.iter_mut().zip(p) {
                    *y = src[k as usize];
                }
                simd::add_assign(dst, &tmp, m.value());
                scratch::recycle(tmp);
            }
            None => simd::add_assign(dst, &src[..dst.len()], m.value()),
        }
    }
}
