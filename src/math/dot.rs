//! Lazy multiply-accumulate: `out_c += sum_t s_t ⊙ u_{c,t} mod p` for one or two outputs
//! `c` that share the left operands `s_t` (the digits of a key switch against the `b` and `a`
//! halves of a key; a plaintext diagonal against both parts of a ciphertext).
//!
//! Each product is kept unreduced (a 104-bit pair of 52-bit words on AVX-512 IFMA, a 128-bit
//! pair of 64-bit words otherwise), summed over up to [`CHUNK`] terms, and reduced once:
//! two Shoup products by the constants `2^w mod p` and `1` and three conditional
//! subtractions. Against one Barrett reduction and two conditional subtractions per product
//! (`tfhe_ntt`'s `mul_accumulate`), a sum over `k` terms costs about `2k + 6` instead of `5k`
//! 52-bit multiplies with IFMA, and about half the word products without it; the shared
//! operand is read once for both outputs and the accumulators stay in registers (so each
//! output limb is read and written once per [`CHUNK`] terms).
//!
//! Size: one concern (the lazy multiply-accumulate and its three kernels, IFMA, AVX2 and
//! portable, with their dispatch and the proptest that holds them to the scalar arithmetic);
//! the kernels share the reduction constants, so they stay together.
//!
//! Safe code throughout: `pulp` tokens select the kernel at run time (AVX-512 IFMA for primes
//! below `2^50` with the `avx512` feature; AVX2 for primes below `2^62`; portable `u128`
//! otherwise). Results are bit-identical to the scalar [`Modulus`] arithmetic.

use super::modulus::Modulus;
use super::ntt::NttTable;

/// Largest number of products summed before a reduction: bounds the unreduced sums (below
/// `8·2^100` with IFMA and `8·2^124` otherwise).
pub const CHUNK: usize = 8;

/// The constants of one prime for [`dot_accumulate`].
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    any(not(feature = "avx512"), not(target_arch = "x86_64")),
    allow(dead_code)
)]
pub struct DotModulus {
    p: u64,
    /// `2^52 mod p` and its Shoup companion `floor(r·2^52/p)`; `floor(2^52/p)` (IFMA).
    r52: u64,
    r52_shoup: u64,
    one52_shoup: u64,
    /// `2^64 mod p` and its Shoup companion `floor(r·2^64/p)`; `floor(2^64/p)`.
    r64: u64,
    r64_shoup: u64,
    one64_shoup: u64,
}

impl DotModulus {
    /// The constants for `m` (any prime below `2^62`; larger primes use the `u128` path).
    pub fn new(m: &Modulus) -> Self {
        let p = m.value();
        let pw = p as u128;
        let r52 = ((1u128 << 52) % pw) as u64;
        let r64 = ((1u128 << 64) % pw) as u64;
        DotModulus {
            p,
            r52,
            r52_shoup: (((r52 as u128) << 52) / pw) as u64,
            one52_shoup: ((1u128 << 52) / pw) as u64,
            r64,
            r64_shoup: (((r64 as u128) << 64) / pw) as u64,
            one64_shoup: ((1u128 << 64) / pw) as u64,
        }
    }

    /// The prime.
    pub fn value(&self) -> u64 {
        self.p
    }
}

/// `out0[i] = (out0[i] + sum_t s[t][i]·u0[t][i]) mod p` and, when `out1` is given, the same
/// with `u1` into `out1`. All inputs are residues below `p`; every slice has `out0`'s length;
/// `s`, `u0` and `u1` have the same number of terms. Cost per element and output: one
/// product per term (unreduced) and one reduction per [`CHUNK`] terms.
pub fn dot_accumulate(
    m: &DotModulus,
    out0: &mut [u64],
    mut out1: Option<&mut [u64]>,
    s: &[&[u64]],
    u0: &[&[u64]],
    u1: &[&[u64]],
) {
    debug_assert_eq!(s.len(), u0.len());
    debug_assert!(out1.is_none() || s.len() == u1.len());
    for start in (0..s.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(s.len());
        let u1c = if out1.is_some() {
            &u1[start..end]
        } else {
            &[][..]
        };
        chunk(
            m,
            out0,
            out1.as_deref_mut(),
            &s[start..end],
            &u0[start..end],
            u1c,
        );
    }
}

/// Whether [`dot_accumulate`] beats one `tfhe_ntt` multiply-accumulate per term for the
/// prime `p` on this CPU and build: on x86-64 with AVX2, except for primes of `2^50` and more
/// on an AVX-512 build with AVX-512 (`tfhe_ntt`'s 8-lane kernel beats the 4-lane 128-bit one
/// there); never elsewhere (the portable `u128` fallback is slower).
pub fn lazy_pays(p: u64) -> bool {
    #[cfg(all(feature = "avx512", target_arch = "x86_64"))]
    if p >= (1 << 50) && pulp::x86::V4::try_new().is_some() {
        return false;
    }
    // the portable fallback divides 128-bit sums: slower than tfhe-ntt's per-term kernels
    #[cfg(target_arch = "x86_64")]
    return p < (1 << 62) && pulp::x86::V3::try_new().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
        false
    }
}

/// [`dot_accumulate`] for the prime of `table` when [`lazy_pays`], else one
/// [`NttTable::mul_accumulate`] per term and output (same results).
pub fn dot_accumulate_table(
    table: &NttTable,
    out0: &mut [u64],
    out1: Option<&mut [u64]>,
    s: &[&[u64]],
    u0: &[&[u64]],
    u1: &[&[u64]],
) {
    let p = table.modulus().value();
    if lazy_pays(p) {
        dot_accumulate(&DotModulus::new(table.modulus()), out0, out1, s, u0, u1);
        return;
    }
    for (a, b) in s.iter().zip(u0) {
        table.mul_accumulate(out0, a, b);
    }
    if let Some(out1) = out1 {
        for (a, b) in s.iter().zip(u1) {
            table.mul_accumulate(out1, a, b);
        }
    }
}

/// `out[i] = (out[i] + sum_t s[t][i]·w[t]) mod p`: a sum of slices weighted by constants
/// (the `sum_j v_j·(S/s_j) mod t` of a basis conversion, [`crate::math::rns::BasisConverter`]).
/// Requires `out[i] < p`, `w[t] < p` and every `s[t][i] < s_bound`; `s` may hold residues of
/// other (larger) primes than `p`. Cost per element: one unreduced product per term and one
/// reduction per [`CHUNK`] terms (the IFMA kernel when `p` and `s_bound` are at most `2^50`,
/// the AVX2 one below `2^62`, else `u128` arithmetic); bit-identical to the scalar sum.
pub fn weighted_accumulate(m: &DotModulus, out: &mut [u64], s: &[&[u64]], w: &[u64], s_bound: u64) {
    debug_assert_eq!(s.len(), w.len());
    for start in (0..s.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(s.len());
        weighted_chunk(m, out, &s[start..end], &w[start..end], s_bound);
    }
}

/// Whether [`weighted_accumulate`] runs its IFMA kernel for the prime `p` and terms below
/// `s_bound` on this CPU and build. With one or two terms (a scaled copy, a scaled sum) only
/// that kernel beats a scalar Shoup loop; the AVX2 kernel pays from about four terms on (a
/// basis conversion) because it builds each 64-bit product from four 32-bit ones.
pub fn weighted_ifma(p: u64, s_bound: u64) -> bool {
    #[cfg(all(feature = "avx512", target_arch = "x86_64"))]
    if p <= (1 << 50) && s_bound <= (1 << 50) {
        return ifma::Ifma::try_new().is_some();
    }
    let _ = (p, s_bound);
    false
}

fn weighted_chunk(m: &DotModulus, out: &mut [u64], s: &[&[u64]], w: &[u64], s_bound: u64) {
    #[cfg(all(feature = "avx512", target_arch = "x86_64"))]
    if m.p <= (1 << 50) && s_bound <= (1 << 50) {
        if let Some(simd) = ifma::Ifma::try_new() {
            ifma::run_weighted(simd, m, out, s, w);
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if m.p < (1 << 62) && s_bound <= (1 << 62) {
        if let Some(simd) = pulp::x86::V3::try_new() {
            wide::run_weighted(simd, m, out, s, w);
            return;
        }
    }
    let _ = s_bound;
    scalar_weighted(m, out, 0, s, w);
}

/// `out[i] = (out[i] + sum_t s[t][from + i]·w[t]) mod p` in `u128` (reducing after every
/// term: the terms may be as large as `2^64`).
fn scalar_weighted(m: &DotModulus, out: &mut [u64], from: usize, s: &[&[u64]], w: &[u64]) {
    let p = m.p as u128;
    for (i, o) in out.iter_mut().enumerate() {
        let k = from + i;
        let mut acc: u128 = *o as u128;
        for (a, &b) in s.iter().zip(w) {
            acc = (acc + a[k] as u128 * b as u128) % p;
        }
        *o = acc as u64;
    }
}

fn chunk(
    m: &DotModulus,
    out0: &mut [u64],
    out1: Option<&mut [u64]>,
    s: &[&[u64]],
    u0: &[&[u64]],
    u1: &[&[u64]],
) {
    #[cfg(all(feature = "avx512", target_arch = "x86_64"))]
    if m.p < (1 << 50) {
        if let Some(simd) = ifma::Ifma::try_new() {
            ifma::run(simd, m, out0, out1, s, u0, u1);
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if m.p < (1 << 62) {
        if let Some(simd) = pulp::x86::V3::try_new() {
            wide::run(simd, m, out0, out1, s, u0, u1);
            return;
        }
    }
    scalar(m, out0, 0, s, u0);
    if let Some(out1) = out1 {
        scalar(m, out1, 0, s, u1);
    }
}

/// `out[i] = (out[i] + sum_t s[t][from + i]·u[t][from + i]) mod p` in `u128` (at most
/// [`CHUNK`] terms: below `2^127` for `p < 2^62`; larger primes reduce after every term).
fn scalar(m: &DotModulus, out: &mut [u64], from: usize, s: &[&[u64]], u: &[&[u64]]) {
    let p = m.p as u128;
    let big = m.p >= (1 << 62);
    for (i, o) in out.iter_mut().enumerate() {
        let k = from + i;
        let mut acc: u128 = *o as u128;
        for (a, b) in s.iter().zip(u) {
            acc += a[k] as u128 * b[k] as u128;
            if big {
                acc %= p;
            }
        }
        *o = (acc % p) as u64;
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    //! 64-bit lanes (AVX2): products as 128-bit pairs from four 32x32 products.
    use super::{scalar, DotModulus};
    use pulp::x86::V3;
    use pulp::{cast, u64x4, Simd};

    /// `(x mod 2^32)·(y mod 2^32)` per lane.
    #[inline(always)]
    fn mul32(v: V3, x: u64x4, y: u64x4) -> u64x4 {
        cast(v.avx2._mm256_mul_epu32(cast(x), cast(y)))
    }

    /// `(lo, hi)` of `a·b` per lane.
    #[inline(always)]
    fn mul_wide(v: V3, a: u64x4, b: u64x4) -> (u64x4, u64x4) {
        let m32 = v.splat_u64s(0xffff_ffff);
        let a_hi = v.shr_const_u64x4::<32>(a);
        let b_hi = v.shr_const_u64x4::<32>(b);
        let ll = mul32(v, a, b);
        let lh = mul32(v, a, b_hi);
        let hl = mul32(v, a_hi, b);
        let hh = mul32(v, a_hi, b_hi);
        // (ll >> 32) + lh < 2^64, then + (hl mod 2^32) < 2^64
        let mid = v.add_u64s(lh, v.shr_const_u64x4::<32>(ll));
        let mid2 = v.add_u64s(hl, v.and_u64s(mid, m32));
        let lo = v.or_u64s(v.shl_const_u64x4::<32>(mid2), v.and_u64s(ll, m32));
        let hi = v.add_u64s(
            v.add_u64s(hh, v.shr_const_u64x4::<32>(mid)),
            v.shr_const_u64x4::<32>(mid2),
        );
        (lo, hi)
    }

    /// `a·b mod 2^64` per lane.
    #[inline(always)]
    fn mul_low(v: V3, a: u64x4, b: u64x4) -> u64x4 {
        let ll = mul32(v, a, b);
        let cross = v.add_u64s(
            mul32(v, v.shr_const_u64x4::<32>(a), b),
            mul32(v, a, v.shr_const_u64x4::<32>(b)),
        );
        v.add_u64s(ll, v.shl_const_u64x4::<32>(cross))
    }

    /// Shoup: `a·w mod p` in `[0, 2p)` for any `a`, `w < p`, `ws = floor(w·2^64/p)`.
    #[inline(always)]
    fn shoup(v: V3, a: u64x4, w: u64x4, ws: u64x4, p: u64x4) -> u64x4 {
        let q = mul_wide(v, a, ws).1;
        v.sub_u64s(mul_low(v, a, w), mul_low(v, q, p))
    }

    /// `x - y` if `x >= y`, else `x`.
    #[inline(always)]
    fn sub_if_ge(v: V3, x: u64x4, y: u64x4) -> u64x4 {
        v.select_u64s(v.less_than_u64s(x, y), x, v.sub_u64s(x, y))
    }

    struct Op<'a> {
        v: V3,
        m: &'a DotModulus,
        out0: &'a mut [u64],
        out1: Option<&'a mut [u64]>,
        s: &'a [&'a [u64]],
        u0: &'a [&'a [u64]],
        u1: &'a [&'a [u64]],
    }

    /// The splatted constants of the final reduction.
    #[derive(Clone, Copy)]
    struct Consts {
        p: u64x4,
        p2: u64x4,
        r: u64x4,
        rs: u64x4,
        one: u64x4,
        ones: u64x4,
    }

    /// `(l, h) += a·b` as a 128-bit pair.
    #[inline(always)]
    fn mac(v: V3, l: &mut u64x4, h: &mut u64x4, a: u64x4, b: u64x4) {
        let (pl, ph) = mul_wide(v, a, b);
        let nl = v.add_u64s(*l, pl);
        let carry = v.less_than_u64s(nl, pl);
        // carry is all ones (-1) where the low word wrapped
        *h = v.sub_u64s(v.add_u64s(*h, ph), cast(carry));
        *l = nl;
    }

    /// `(o + h·2^64 + l) mod p` for `o < p < 2^62`.
    #[inline(always)]
    fn reduce(v: V3, c: Consts, l: u64x4, h: u64x4, o: u64x4) -> u64x4 {
        // h·(2^64 mod p) + l, both Shoup products in [0, 2p)
        let t = v.add_u64s(shoup(v, h, c.r, c.rs, c.p), shoup(v, l, c.one, c.ones, c.p));
        let t = sub_if_ge(v, sub_if_ge(v, t, c.p2), c.p);
        sub_if_ge(v, v.add_u64s(t, o), c.p)
    }

    type Lanes<'a> = &'a [[u64; 4]];

    fn lanes<'b>(x: &[&'b [u64]], full: usize) -> Vec<Lanes<'b>> {
        x.iter()
            .map(|v| pulp::as_arrays::<4, u64>(&v[..full]).0)
            .collect()
    }

    impl pulp::NullaryFnOnce for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Op {
                v,
                m,
                out0,
                out1,
                s,
                u0,
                u1,
            } = self;
            let n = out0.len();
            let full = n / 4 * 4;
            let c = Consts {
                p: v.splat_u64s(m.p),
                p2: v.splat_u64s(2 * m.p),
                r: v.splat_u64s(m.r64),
                rs: v.splat_u64s(m.r64_shoup),
                one: v.splat_u64s(1),
                ones: v.splat_u64s(m.one64_shoup),
            };
            let zero = v.splat_u64s(0);
            let (sl, u0l) = (lanes(s, full), lanes(u0, full));
            match out1 {
                Some(out1) => {
                    let u1l = lanes(u1, full);
                    let o0 = pulp::as_arrays_mut::<4, u64>(&mut out0[..full]).0;
                    let o1 = pulp::as_arrays_mut::<4, u64>(&mut out1[..full]).0;
                    for (k, (y0, y1)) in o0.iter_mut().zip(o1.iter_mut()).enumerate() {
                        let (mut l0, mut h0, mut l1, mut h1) = (zero, zero, zero, zero);
                        for ((a, b0), b1) in sl.iter().zip(&u0l).zip(&u1l) {
                            let x: u64x4 = cast(a[k]);
                            mac(v, &mut l0, &mut h0, x, cast(b0[k]));
                            mac(v, &mut l1, &mut h1, x, cast(b1[k]));
                        }
                        *y0 = cast(reduce(v, c, l0, h0, cast(*y0)));
                        *y1 = cast(reduce(v, c, l1, h1, cast(*y1)));
                    }
                    scalar(m, &mut out1[full..], full, s, u1);
                }
                None => {
                    let o0 = pulp::as_arrays_mut::<4, u64>(&mut out0[..full]).0;
                    for (k, y0) in o0.iter_mut().enumerate() {
                        let (mut l0, mut h0) = (zero, zero);
                        for (a, b0) in sl.iter().zip(&u0l) {
                            mac(v, &mut l0, &mut h0, cast(a[k]), cast(b0[k]));
                        }
                        *y0 = cast(reduce(v, c, l0, h0, cast(*y0)));
                    }
                }
            }
            scalar(m, &mut out0[full..], full, s, u0);
        }
    }

    pub(super) fn run(
        v: V3,
        m: &DotModulus,
        out0: &mut [u64],
        out1: Option<&mut [u64]>,
        s: &[&[u64]],
        u0: &[&[u64]],
        u1: &[&[u64]],
    ) {
        v.vectorize(Op {
            v,
            m,
            out0,
            out1,
            s,
            u0,
            u1,
        });
    }

    struct WeightedOp<'a> {
        v: V3,
        m: &'a DotModulus,
        out: &'a mut [u64],
        s: &'a [&'a [u64]],
        w: &'a [u64],
    }

    impl pulp::NullaryFnOnce for WeightedOp<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let WeightedOp { v, m, out, s, w } = self;
            let n = out.len();
            let full = n / 4 * 4;
            let c = Consts {
                p: v.splat_u64s(m.p),
                p2: v.splat_u64s(2 * m.p),
                r: v.splat_u64s(m.r64),
                rs: v.splat_u64s(m.r64_shoup),
                one: v.splat_u64s(1),
                ones: v.splat_u64s(m.one64_shoup),
            };
            let zero = v.splat_u64s(0);
            let sl = lanes(s, full);
            let wl: Vec<u64x4> = w.iter().map(|&x| v.splat_u64s(x)).collect();
            let o = pulp::as_arrays_mut::<4, u64>(&mut out[..full]).0;
            for (k, y) in o.iter_mut().enumerate() {
                let (mut l, mut h) = (zero, zero);
                for (a, &b) in sl.iter().zip(&wl) {
                    mac(v, &mut l, &mut h, cast(a[k]), b);
                }
                *y = cast(reduce(v, c, l, h, cast(*y)));
            }
            super::scalar_weighted(m, &mut out[full..], full, s, w);
        }
    }

    pub(super) fn run_weighted(v: V3, m: &DotModulus, out: &mut [u64], s: &[&[u64]], w: &[u64]) {
        v.vectorize(WeightedOp { v, m, out, s, w });
    }
}

#[cfg(all(feature = "avx512", target_arch = "x86_64"))]
mod ifma {
    //! AVX-512 IFMA (primes below `2^50`): products as 52-bit halves accumulated in place by
    //! `vpmadd52luq`/`vpmadd52huq`.
    use super::{scalar, DotModulus};
    use pulp::{cast, u64x8};

    pulp::simd_type! {
        /// AVX-512 with IFMA (x86-v4 plus `avx512ifma`).
        pub struct Ifma {
            pub sse: "sse",
            pub sse2: "sse2",
            pub fxsr: "fxsr",
            pub sse3: "sse3",
            pub ssse3: "ssse3",
            pub sse4_1: "sse4.1",
            pub sse4_2: "sse4.2",
            pub popcnt: "popcnt",
            pub avx: "avx",
            pub avx2: "avx2",
            pub bmi1: "bmi1",
            pub bmi2: "bmi2",
            pub fma: "fma",
            pub lzcnt: "lzcnt",
            pub avx512f: "avx512f",
            pub avx512bw: "avx512bw",
            pub avx512cd: "avx512cd",
            pub avx512dq: "avx512dq",
            pub avx512vl: "avx512vl",
            pub avx512ifma: "avx512ifma",
        }
    }

    const M52: u64 = (1 << 52) - 1;

    #[inline(always)]
    fn lo(f: Ifma, acc: u64x8, a: u64x8, b: u64x8) -> u64x8 {
        cast(
            f.avx512ifma
                ._mm512_madd52lo_epu64(cast(acc), cast(a), cast(b)),
        )
    }

    #[inline(always)]
    fn hi(f: Ifma, acc: u64x8, a: u64x8, b: u64x8) -> u64x8 {
        cast(
            f.avx512ifma
                ._mm512_madd52hi_epu64(cast(acc), cast(a), cast(b)),
        )
    }

    #[inline(always)]
    fn splat(f: Ifma, x: u64) -> u64x8 {
        cast(f.avx512f._mm512_set1_epi64(x as i64))
    }

    #[inline(always)]
    fn add(f: Ifma, a: u64x8, b: u64x8) -> u64x8 {
        cast(f.avx512f._mm512_add_epi64(cast(a), cast(b)))
    }

    #[inline(always)]
    fn sub(f: Ifma, a: u64x8, b: u64x8) -> u64x8 {
        cast(f.avx512f._mm512_sub_epi64(cast(a), cast(b)))
    }

    #[inline(always)]
    fn and(f: Ifma, a: u64x8, b: u64x8) -> u64x8 {
        cast(f.avx512f._mm512_and_si512(cast(a), cast(b)))
    }

    /// `x - y` if `x >= y`, else `x` (the smaller of `x` and the wrapped `x - y`).
    #[inline(always)]
    fn sub_if_ge(f: Ifma, x: u64x8, y: u64x8) -> u64x8 {
        cast(f.avx512f._mm512_min_epu64(cast(x), cast(sub(f, x, y))))
    }

    /// Shoup with `β = 2^52`: `a·w mod p` in `[0, 2p)` for `a < 2^52`, `w < p`,
    /// `ws = floor(w·2^52/p)`.
    #[inline(always)]
    fn shoup(f: Ifma, a: u64x8, w: u64x8, ws: u64x8, p: u64x8) -> u64x8 {
        let zero = splat(f, 0);
        let q = hi(f, zero, a, ws);
        let m52 = splat(f, M52);
        and(f, sub(f, lo(f, zero, a, w), lo(f, zero, q, p)), m52)
    }

    /// The splatted constants of the final reduction.
    #[derive(Clone, Copy)]
    struct Consts {
        p: u64x8,
        p2: u64x8,
        m52: u64x8,
        r: u64x8,
        rs: u64x8,
        one: u64x8,
        ones: u64x8,
    }

    /// `(o + h·2^52 + l) mod p` for `o < p`, `h < 2^51`, `l < 2^63`.
    #[inline(always)]
    fn reduce(f: Ifma, c: Consts, l: u64x8, h: u64x8, o: u64x8) -> u64x8 {
        // carry l's bits above 52 into h (h stays below 2^52: at most 8 high halves below
        // 2^48 plus a carry below 8)
        let h = add(f, h, cast(f.avx512f._mm512_srli_epi64::<52>(cast(l))));
        let l = and(f, l, c.m52);
        let t = add(
            f,
            shoup(f, h, c.r, c.rs, c.p),
            shoup(f, l, c.one, c.ones, c.p),
        );
        let t = sub_if_ge(f, sub_if_ge(f, t, c.p2), c.p);
        sub_if_ge(f, add(f, t, o), c.p)
    }

    struct Op<'a> {
        f: Ifma,
        m: &'a DotModulus,
        out0: &'a mut [u64],
        out1: Option<&'a mut [u64]>,
        s: &'a [&'a [u64]],
        u0: &'a [&'a [u64]],
        u1: &'a [&'a [u64]],
    }

    type Lanes<'a> = &'a [[u64; 8]];

    impl pulp::NullaryFnOnce for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Op {
                f,
                m,
                out0,
                out1,
                s,
                u0,
                u1,
            } = self;
            let n = out0.len();
            let full = n / 8 * 8;
            let c = Consts {
                p: splat(f, m.p),
                p2: splat(f, 2 * m.p),
                m52: splat(f, M52),
                r: splat(f, m.r52),
                rs: splat(f, m.r52_shoup),
                one: splat(f, 1),
                ones: splat(f, m.one52_shoup),
            };
            let zero = splat(f, 0);
            fn lanes<'b>(x: &[&'b [u64]], full: usize) -> Vec<Lanes<'b>> {
                x.iter()
                    .map(|v| pulp::as_arrays::<8, u64>(&v[..full]).0)
                    .collect()
            }
            let (sl, u0l) = (lanes(s, full), lanes(u0, full));
            match out1 {
                Some(out1) => {
                    let u1l = lanes(u1, full);
                    let o0 = pulp::as_arrays_mut::<8, u64>(&mut out0[..full]).0;
                    let o1 = pulp::as_arrays_mut::<8, u64>(&mut out1[..full]).0;
                    for (v, (y0, y1)) in o0.iter_mut().zip(o1.iter_mut()).enumerate() {
                        let (mut l0, mut h0, mut l1, mut h1) = (zero, zero, zero, zero);
                        for ((a, b0), b1) in sl.iter().zip(&u0l).zip(&u1l) {
                            let x: u64x8 = cast(a[v]);
                            let (b0, b1): (u64x8, u64x8) = (cast(b0[v]), cast(b1[v]));
                            l0 = lo(f, l0, x, b0);
                            h0 = hi(f, h0, x, b0);
                            l1 = lo(f, l1, x, b1);
                            h1 = hi(f, h1, x, b1);
                        }
                        *y0 = cast(reduce(f, c, l0, h0, cast(*y0)));
                        *y1 = cast(reduce(f, c, l1, h1, cast(*y1)));
                    }
                    scalar(m, &mut out1[full..], full, s, u1);
                }
                None => {
                    let o0 = pulp::as_arrays_mut::<8, u64>(&mut out0[..full]).0;
                    for (v, y0) in o0.iter_mut().enumerate() {
                        let (mut l0, mut h0) = (zero, zero);
                        for (a, b0) in sl.iter().zip(&u0l) {
                            let (x, b0): (u64x8, u64x8) = (cast(a[v]), cast(b0[v]));
                            l0 = lo(f, l0, x, b0);
                            h0 = hi(f, h0, x, b0);
                        }
                        *y0 = cast(reduce(f, c, l0, h0, cast(*y0)));
                    }
                }
            }
            scalar(m, &mut out0[full..], full, s, u0);
        }
    }

    pub(super) fn run(
        f: Ifma,
        m: &DotModulus,
        out0: &mut [u64],
        out1: Option<&mut [u64]>,
        s: &[&[u64]],
        u0: &[&[u64]],
        u1: &[&[u64]],
    ) {
        f.vectorize(Op {
            f,
            m,
            out0,
            out1,
            s,
            u0,
            u1,
        });
    }

    struct WeightedOp<'a> {
        f: Ifma,
        m: &'a DotModulus,
        out: &'a mut [u64],
        s: &'a [&'a [u64]],
        w: &'a [u64],
    }

    impl pulp::NullaryFnOnce for WeightedOp<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let WeightedOp { f, m, out, s, w } = self;
            let n = out.len();
            let full = n / 8 * 8;
            let c = Consts {
                p: splat(f, m.p),
                p2: splat(f, 2 * m.p),
                m52: splat(f, M52),
                r: splat(f, m.r52),
                rs: splat(f, m.r52_shoup),
                one: splat(f, 1),
                ones: splat(f, m.one52_shoup),
            };
            let zero = splat(f, 0);
            let sl: Vec<Lanes<'_>> = s
                .iter()
                .map(|v| pulp::as_arrays::<8, u64>(&v[..full]).0)
                .collect();
            let wl: Vec<u64x8> = w.iter().map(|&x| splat(f, x)).collect();
            let o = pulp::as_arrays_mut::<8, u64>(&mut out[..full]).0;
            for (k, y) in o.iter_mut().enumerate() {
                let (mut l, mut h) = (zero, zero);
                for (a, &b) in sl.iter().zip(&wl) {
                    let x: u64x8 = cast(a[k]);
                    l = lo(f, l, x, b);
                    h = hi(f, h, x, b);
                }
                *y = cast(reduce(f, c, l, h, cast(*y)));
            }
            super::scalar_weighted(m, &mut out[full..], full, s, w);
        }
    }

    pub(super) fn run_weighted(f: Ifma, m: &DotModulus, out: &mut [u64], s: &[&[u64]], w: &[u64]) {
        f.vectorize(WeightedOp { f, m, out, s, w });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::modulus::ntt_primes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every kernel equals the scalar `Modulus` sum of products, for 30- to 62-bit primes,
        /// 0 to 20 terms (more than one chunk), lengths with and without a tail, edge values.
        #[test]
        fn matches_scalar(seed in any::<u64>(), len in 0usize..600, terms in 0usize..20,
                          bits in prop::sample::select(vec![30u32, 33, 43, 49, 50, 51, 55, 59, 61])) {
            let p = ntt_primes(bits, 16, 1, &[]).unwrap()[0];
            let m = Modulus::new(p).unwrap();
            let dm = DotModulus::new(&m);
            let mut st = seed;
            let mut next = || {
                st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let r = st >> 1;
                match r % 7 { 0 => p - 1, 1 => 0, _ => r % p }
            };
            let mut gen = |k: usize| -> Vec<Vec<u64>> { (0..k).map(|_| (0..len).map(|_| next()).collect()).collect() };
            let s = gen(terms);
            let u0 = gen(terms);
            let u1 = gen(terms);
            let o = gen(2);
            let sr: Vec<&[u64]> = s.iter().map(|v| v.as_slice()).collect();
            let u0r: Vec<&[u64]> = u0.iter().map(|v| v.as_slice()).collect();
            let u1r: Vec<&[u64]> = u1.iter().map(|v| v.as_slice()).collect();
            let mut got0 = o[0].clone();
            let mut got1 = o[1].clone();
            dot_accumulate(&dm, &mut got0, Some(&mut got1), &sr, &u0r, &u1r);
            let want = |init: &[u64], u: &[Vec<u64>]| -> Vec<u64> {
                (0..len).map(|i| {
                    (0..terms).fold(init[i], |a, t| m.add(a, m.mul(s[t][i], u[t][i])))
                }).collect()
            };
            prop_assert_eq!(&got0, &want(&o[0], &u0));
            prop_assert_eq!(&got1, &want(&o[1], &u1));
            let mut single = o[0].clone();
            dot_accumulate(&dm, &mut single, None, &sr, &u0r, &[]);
            prop_assert_eq!(&single, &want(&o[0], &u0));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The weighted sum equals the scalar one, with terms below the prime or below a
        /// larger source prime (as in a basis conversion from larger primes).
        #[test]
        fn weighted_matches_scalar(seed in any::<u64>(), len in 0usize..300, terms in 0usize..20,
                          bits in prop::sample::select(vec![30u32, 33, 43, 50, 55, 61]),
                          src_bits in prop::sample::select(vec![30u32, 43, 50, 59, 62])) {
            let p = ntt_primes(bits, 16, 1, &[]).unwrap()[0];
            let m = Modulus::new(p).unwrap();
            let dm = DotModulus::new(&m);
            let bound = 1u64 << src_bits;
            let mut st = seed;
            let mut next = |lim: u64| {
                st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let r = st >> 1;
                match r % 7 { 0 => lim - 1, 1 => 0, _ => r % lim }
            };
            let s: Vec<Vec<u64>> = (0..terms).map(|_| (0..len).map(|_| next(bound)).collect()).collect();
            let w: Vec<u64> = (0..terms).map(|_| next(p)).collect();
            let o: Vec<u64> = (0..len).map(|_| next(p)).collect();
            let sr: Vec<&[u64]> = s.iter().map(|v| v.as_slice()).collect();
            let mut got = o.clone();
            weighted_accumulate(&dm, &mut got, &sr, &w, bound);
            let want: Vec<u64> = (0..len).map(|i| {
                (0..terms).fold(o[i], |a, t| m.add(a, m.mul(m.reduce(s[t][i]), w[t])))
            }).collect();
            prop_assert_eq!(got, want);
        }
    }
}
