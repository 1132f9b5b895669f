//! Element-wise modular loops outside the NTT (the ModUp and ModDown passes of key
//! switching, polynomial additions), vectorized through `pulp`'s portable SIMD layer, in safe
//! code: `pulp::Arch` picks AVX-512 (x86-v4, with the `avx512` cargo feature), AVX2 (x86-v3),
//! NEON on aarch64, or scalar code at run time; every target builds (no `cfg` here).
//!
//! Every function takes residues already reduced modulo its primes (each below `2^63`) and
//! returns reduced residues, bit-identical to the scalar [`Modulus`](super::Modulus)
//! operations. Reductions are a comparison and a blend (no branch, no product).

use pulp::{Arch, Simd, WithSimd};

/// Name of the SIMD level the loops of this module run at on this CPU and build, e.g.
/// `"V4"` (AVX-512), `"V3"` (AVX2) or `"Scalar"` (pulp's type name, last path segment).
pub fn level() -> &'static str {
    struct Name;
    impl WithSimd for Name {
        type Output = &'static str;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) -> &'static str {
            let full = std::any::type_name::<S>();
            full.rsplit("::").next().unwrap_or(full)
        }
    }
    Arch::new().dispatch(Name)
}

/// `x - p` where `x >= p`, else `x` (for `x < 2p`).
#[inline(always)]
fn reduce_once<S: Simd>(s: S, x: S::u64s, p: S::u64s) -> S::u64s {
    s.select_u64s(s.less_than_u64s(x, p), x, s.sub_u64s(x, p))
}

/// `x - y mod p` for `x, y < p`.
#[inline(always)]
fn sub_mod<S: Simd>(s: S, x: S::u64s, y: S::u64s, p: S::u64s) -> S::u64s {
    let d = s.sub_u64s(x, y);
    s.select_u64s(s.less_than_u64s(x, y), s.add_u64s(d, p), d)
}

#[inline(always)]
fn reduce_once_scalar(x: u64, p: u64) -> u64 {
    x.min(x.wrapping_sub(p))
}

#[inline(always)]
fn sub_mod_scalar(x: u64, y: u64, p: u64) -> u64 {
    let d = x.wrapping_sub(y);
    d.min(d.wrapping_add(p))
}

/// The constants of `((x + a) mod p1 - b) mod p2` (requires `p1 <= p2`, `a < p1`, `b < p2`).
#[derive(Clone, Copy)]
struct AddSubConst {
    p1: u64,
    a: u64,
    p2: u64,
    b: u64,
}

struct AddSubOp<'a> {
    dst: &'a mut [u64],
    src: Option<&'a [u64]>,
    c: AddSubConst,
}

impl WithSimd for AddSubOp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let AddSubConst { p1, a, p2, b } = self.c;
        let (vp1, va, vp2, vb) = (
            s.splat_u64s(p1),
            s.splat_u64s(a),
            s.splat_u64s(p2),
            s.splat_u64s(b),
        );
        // (no closures: they would not inherit the target features of `vectorize`)
        let (head, tail) = S::as_mut_simd_u64s(self.dst);
        match self.src {
            Some(src) => {
                let (shead, stail) = S::as_simd_u64s(src);
                for (y, &x) in head.iter_mut().zip(shead) {
                    *y = sub_mod(s, reduce_once(s, s.add_u64s(x, va), vp1), vb, vp2);
                }
                for (y, &x) in tail.iter_mut().zip(stail) {
                    *y = sub_mod_scalar(reduce_once_scalar(x + a, p1), b, p2);
                }
            }
            None => {
                for y in head.iter_mut() {
                    *y = sub_mod(s, reduce_once(s, s.add_u64s(*y, va), vp1), vb, vp2);
                }
                for y in tail.iter_mut() {
                    *y = sub_mod_scalar(reduce_once_scalar(*y + a, p1), b, p2);
                }
            }
        }
    }
}

/// `dst[i] = ((src[i] + a) mod p1 - b) mod p2` for residues `src[i] < p1 <= p2`, `a < p1`,
/// `b < p2` (the centered-digit shift of ModUp: one pass per target limb). `dst` and `src`
/// have the same length. Cost: N word additions, comparisons and blends.
pub fn add_sub(dst: &mut [u64], src: &[u64], p1: u64, a: u64, p2: u64, b: u64) {
    debug_assert!(p1 <= p2 && a < p1 && b < p2);
    Arch::new().dispatch(AddSubOp {
        dst,
        src: Some(src),
        c: AddSubConst { p1, a, p2, b },
    });
}

/// In-place [`add_sub`]: `data[i] = ((data[i] + a) mod p1 - b) mod p2`.
pub fn add_sub_in_place(data: &mut [u64], p1: u64, a: u64, p2: u64, b: u64) {
    debug_assert!(p1 <= p2 && a < p1 && b < p2);
    Arch::new().dispatch(AddSubOp {
        dst: data,
        src: None,
        c: AddSubConst { p1, a, p2, b },
    });
}

struct RSubOp<'a> {
    data: &'a mut [u64],
    p: u64,
    h: u64,
}

impl WithSimd for RSubOp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let (p, h) = (self.p, self.h);
        let (vp, vh) = (s.splat_u64s(p), s.splat_u64s(h));
        let (head, tail) = S::as_mut_simd_u64s(self.data);
        for y in head.iter_mut() {
            *y = sub_mod(s, vh, *y, vp);
        }
        for y in tail.iter_mut() {
            *y = sub_mod_scalar(h, *y, p);
        }
    }
}

/// `data[i] = (h - data[i]) mod p` (ModDown's `h - [x + h]_P`). Cost: N word operations.
pub fn rsub_in_place(data: &mut [u64], p: u64, h: u64) {
    debug_assert!(h < p);
    Arch::new().dispatch(RSubOp { data, p, h });
}

struct ZipOp<'a> {
    dst: &'a mut [u64],
    src: &'a [u64],
    p: u64,
    sub: bool,
}

impl WithSimd for ZipOp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let p = self.p;
        let vp = s.splat_u64s(p);
        let (head, tail) = S::as_mut_simd_u64s(self.dst);
        let (shead, stail) = S::as_simd_u64s(self.src);
        if self.sub {
            for (y, &x) in head.iter_mut().zip(shead) {
                *y = sub_mod(s, *y, x, vp);
            }
            for (y, &x) in tail.iter_mut().zip(stail) {
                *y = sub_mod_scalar(*y, x, p);
            }
        } else {
            for (y, &x) in head.iter_mut().zip(shead) {
                *y = reduce_once(s, s.add_u64s(*y, x), vp);
            }
            for (y, &x) in tail.iter_mut().zip(stail) {
                *y = reduce_once_scalar(*y + x, p);
            }
        }
    }
}

/// `dst[i] = (dst[i] + src[i]) mod p` (same lengths). Cost: N word operations.
pub fn add_assign(dst: &mut [u64], src: &[u64], p: u64) {
    debug_assert_eq!(dst.len(), src.len());
    Arch::new().dispatch(ZipOp {
        dst,
        src,
        p,
        sub: false,
    });
}

/// `dst[i] = (dst[i] - src[i]) mod p` (same lengths). Cost: N word operations.
pub fn sub_assign(dst: &mut [u64], src: &[u64], p: u64) {
    debug_assert_eq!(dst.len(), src.len());
    Arch::new().dispatch(ZipOp {
        dst,
        src,
        p,
        sub: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::Modulus;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every kernel equals the scalar `Modulus` operations, on lengths with and without a
        /// scalar tail, for 33- to 62-bit primes.
        #[test]
        fn kernels_match_scalar(seed in any::<u64>(), len in 0usize..40, bits in 33u32..=62) {
            let p2 = ((1u64 << bits) - 57) | 1;
            let p1 = p2 - 2 * (seed % 1000) - 2;
            let (m1, m2) = (Modulus::new(p1).unwrap(), Modulus::new(p2).unwrap());
            let mut s = seed;
            let mut next = |p: u64| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 3) % p
            };
            let x: Vec<u64> = (0..len).map(|_| next(p1)).collect();
            let y: Vec<u64> = (0..len).map(|_| next(p2)).collect();
            let (a, b, h) = (next(p1), next(p2), next(p2));
            // edge values
            let mut x = x;
            if len > 2 { x[0] = 0; x[1] = p1 - 1; }

            let mut got = vec![0u64; len];
            add_sub(&mut got, &x, p1, a, p2, b);
            let want: Vec<u64> = x.iter().map(|&v| m2.sub(m1.add(v, a), b)).collect();
            prop_assert_eq!(&got, &want);

            let mut got = x.clone();
            add_sub_in_place(&mut got, p1, a, p2, b);
            prop_assert_eq!(&got, &want);

            let mut got = y.clone();
            rsub_in_place(&mut got, p2, h);
            let want: Vec<u64> = y.iter().map(|&v| m2.sub(h, v)).collect();
            prop_assert_eq!(&got, &want);

            let z: Vec<u64> = (0..len).map(|_| next(p2)).collect();
            let mut got = y.clone();
            add_assign(&mut got, &z, p2);
            let want: Vec<u64> = y.iter().zip(&z).map(|(&u, &v)| m2.add(u, v)).collect();
            prop_assert_eq!(&got, &want);
            let mut got = y.clone();
            sub_assign(&mut got, &z, p2);
            let want: Vec<u64> = y.iter().zip(&z).map(|(&u, &v)| m2.sub(u, v)).collect();
            prop_assert_eq!(&got, &want);
        }
    }

    #[test]
    fn level_is_named() {
        assert!(!level().is_empty());
    }
}
