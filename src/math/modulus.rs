//! Word-size modular arithmetic (Barrett and Shoup) and NTT-friendly prime generation.

use crate::{Error, Result};

/// A word-size odd modulus `p < 2^62` with precomputed Barrett constants.
///
/// All arithmetic takes operands already reduced modulo `p` (unless a method says otherwise)
/// and returns reduced results. Operations are constant-time in their operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modulus {
    p: u64,
    /// floor(2^128 / p) as (low, high) 64-bit words.
    ratio: [u64; 2],
    /// floor(2^64 / p), for one-word Barrett reduction.
    ratio64: u64,
}

/// Largest modulus width supported (tfhe-ntt's fast paths need `p < 2^62`).
pub const MAX_MODULUS_BITS: u32 = 61;

impl Modulus {
    /// Builds a modulus; `p` must be odd with `3 <= p < 2^62`.
    pub fn new(p: u64) -> Result<Self> {
        if p < 3 || p % 2 == 0 || p >= (1u64 << 62) {
            return Err(Error::params(format!(
                "modulus {p} must be odd and in [3, 2^62)"
            )));
        }
        let ratio_full = u128::MAX / p as u128; // floor((2^128 - 1) / p) == floor(2^128 / p) for odd p
        Ok(Modulus {
            p,
            ratio: [ratio_full as u64, (ratio_full >> 64) as u64],
            ratio64: (ratio_full >> 64) as u64,
        })
    }

    /// The modulus value.
    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.p
    }

    /// Bit length of the modulus.
    pub fn bits(&self) -> u32 {
        64 - self.p.leading_zeros()
    }

    /// `a + b mod p`.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        // branch-free (operands are random: a branch mispredicts half the time, and the
        // `min` form lets loops vectorize)
        let s = a + b;
        s.min(s.wrapping_sub(self.p))
    }

    /// `a - b mod p`.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        // branch-free: a - b wraps above p exactly when a < b
        let d = a.wrapping_sub(b);
        d.min(d.wrapping_add(self.p))
    }

    /// `-a mod p`.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        // branch-free: p - 0 = p maps to 0
        let r = self.p - a;
        r.min(r.wrapping_sub(self.p))
    }

    /// Reduces any 128-bit value (in particular any product of two reduced
    /// operands) modulo `p` with Barrett's method.
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let x_lo = x as u64;
        let x_hi = (x >> 64) as u64;
        let [r0, r1] = self.ratio;
        let carry = ((x_lo as u128 * r0 as u128) >> 64) as u64;
        let t2 = x_lo as u128 * r1 as u128;
        let t1 = x_hi as u128 * r0 as u128;
        let mid = (t2 as u64 as u128) + (t1 as u64 as u128) + carry as u128;
        let q = x_hi
            .wrapping_mul(r1)
            .wrapping_add((t2 >> 64) as u64)
            .wrapping_add((t1 >> 64) as u64)
            .wrapping_add((mid >> 64) as u64);
        // The quotient estimate is short by at most 2, so r < 3p < 2^64.
        let r = x_lo.wrapping_sub(q.wrapping_mul(self.p));
        let r = r.min(r.wrapping_sub(self.p));
        r.min(r.wrapping_sub(self.p))
    }

    /// Reduces any `u64` modulo `p` (one-word Barrett: one widening product).
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        let q = ((x as u128 * self.ratio64 as u128) >> 64) as u64;
        let r = x - q * self.p; // q <= floor(x/p), so no underflow; r < 2p
        r.min(r.wrapping_sub(self.p))
    }

    /// Reduces a signed value into `[0, p)`.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// Reduces a signed 128-bit value into `[0, p)`.
    pub fn reduce_i128(&self, x: i128) -> u64 {
        let mag = x.unsigned_abs();
        let r = self.reduce_u128(mag);
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// `a * b mod p` (Barrett).
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_u128(a as u128 * b as u128)
    }

    /// Precomputes Shoup's companion `floor(w * 2^64 / p)` of a constant `w < p`.
    #[inline(always)]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.p as u128) as u64
    }

    /// `a * w mod p` for a constant `w` with companion `w_shoup` from [`Modulus::shoup`].
    #[inline(always)]
    pub fn mul_shoup(&self, a: u64, w: u64, w_shoup: u64) -> u64 {
        let q = ((a as u128 * w_shoup as u128) >> 64) as u64;
        let r = a.wrapping_mul(w).wrapping_sub(q.wrapping_mul(self.p));
        r.min(r.wrapping_sub(self.p))
    }

    /// `a^e mod p` (square and multiply; variable time in `e`, which is public).
    pub fn pow(&self, mut a: u64, mut e: u64) -> u64 {
        let mut r = 1 % self.p;
        a = self.reduce(a);
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, a);
            }
            a = self.mul(a, a);
            e >>= 1;
        }
        r
    }

    /// Multiplicative inverse of `a` modulo the (prime) modulus, or an error if `a == 0 mod p`.
    pub fn inv(&self, a: u64) -> Result<u64> {
        let a = self.reduce(a);
        if a == 0 {
            return Err(Error::params(format!("0 has no inverse modulo {}", self.p)));
        }
        Ok(self.pow(a, self.p - 2))
    }

    /// Centered representative of a reduced value, in `(-p/2, p/2]`.
    #[inline(always)]
    pub fn center(&self, a: u64) -> i64 {
        if a > self.p / 2 {
            a as i64 - self.p as i64
        } else {
            a as i64
        }
    }
}

/// Deterministic Miller-Rabin primality test for 64-bit integers.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    const SMALL: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    for &p in &SMALL {
        if n % p == 0 {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, a);
            }
            a = mulmod(a, a);
            e >>= 1;
        }
        r
    };
    'witness: for &a in &SMALL {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Generates `count` distinct primes `p ≡ 1 (mod 2n)` of exactly `bits` bits, the largest
/// ones below `2^bits` (used for the first modulus and the special primes, where size, not
/// closeness to a scale, matters). Primes listed in `exclude` are skipped.
///
/// Cost: about `bits` Miller-Rabin tests per prime found.
pub fn ntt_primes(bits: u32, n: usize, count: usize, exclude: &[u64]) -> Result<Vec<u64>> {
    if !(20..=MAX_MODULUS_BITS).contains(&bits) {
        return Err(Error::params(format!(
            "prime size {bits} bits is outside the supported range 20..={MAX_MODULUS_BITS}"
        )));
    }
    let two_n = 2 * n as u64;
    if (two_n as u128) << 2 > (1u128 << bits) {
        return Err(Error::params(format!(
            "no {bits}-bit primes congruent to 1 mod {two_n}"
        )));
    }
    let top = 1u64 << bits;
    let bottom = 1u64 << (bits - 1);
    // Largest candidate below 2^bits that is 1 mod 2n.
    let mut cand = top - two_n + 1;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if cand <= bottom {
            return Err(Error::params(format!(
                "ran out of {bits}-bit NTT primes for N = {n} (asked for {count})"
            )));
        }
        if is_prime(cand) && !exclude.contains(&cand) && !out.contains(&cand) {
            out.push(cand);
        }
        cand -= two_n;
    }
    Ok(out)
}

/// Generates primes `p ≡ 1 (mod 2n)` closest to `2^bits`, alternately above and below it,
/// so that a chain of rescalings by these primes keeps the scale near `2^bits`.
/// Used for the scale primes of the CKKS modulus chain. Primes in `exclude` are skipped.
pub fn ntt_primes_near(bits: u32, n: usize, count: usize, exclude: &[u64]) -> Result<Vec<u64>> {
    if !(20..MAX_MODULUS_BITS).contains(&bits) {
        return Err(Error::params(format!(
            "scale prime size {bits} bits is outside the supported range 20..{MAX_MODULUS_BITS}"
        )));
    }
    let two_n = 2 * n as u64;
    let center = 1u64 << bits;
    let mut up = center + 1;
    let mut down = center + 1 - two_n;
    let mut out: Vec<u64> = Vec::with_capacity(count);
    let mut take_up = true;
    let limit_up = 1u64 << (bits + 1);
    let limit_down = 1u64 << (bits - 1);
    while out.len() < count {
        if up >= limit_up && down <= limit_down {
            return Err(Error::params(format!(
                "ran out of NTT primes near 2^{bits} for N = {n}"
            )));
        }
        let cand = if (take_up && up < limit_up) || down <= limit_down {
            let c = up;
            up += two_n;
            c
        } else {
            let c = down;
            down -= two_n;
            c
        };
        if is_prime(cand) && !exclude.contains(&cand) && !out.contains(&cand) {
            out.push(cand);
            take_up = !take_up;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRIMES: [u64; 3] = [
        4_611_686_018_427_387_847,
        1_099_511_627_689,
        1_152_921_504_606_846_883,
    ];

    proptest! {
        #[test]
        fn mul_matches_u128(a in any::<u64>(), b in any::<u64>(), i in 0usize..3) {
            let m = Modulus::new(PRIMES[i]).unwrap();
            let (a, b) = (a % m.value(), b % m.value());
            prop_assert_eq!(m.mul(a, b) as u128, (a as u128 * b as u128) % m.value() as u128);
            let ws = m.shoup(b);
            prop_assert_eq!(m.mul_shoup(a, b, ws), m.mul(a, b));
            prop_assert_eq!(m.add(a, b) as u128, (a as u128 + b as u128) % m.value() as u128);
            prop_assert_eq!(m.add(m.sub(a, b), b), a);
            prop_assert_eq!(m.sub(a, b) as i128, (a as i128 - b as i128).rem_euclid(m.value() as i128));
            prop_assert_eq!(m.sub(a, a), 0);
            prop_assert_eq!(m.add(m.value() - 1, 1), 0);
        }

        #[test]
        fn reduce_u128_matches(x in any::<u128>(), i in 0usize..3) {
            let m = Modulus::new(PRIMES[i]).unwrap();
                        prop_assert_eq!(m.reduce_u128(x) as u128, x % m.value() as u128);
        }

        #[test]
        fn signed_reductions(x in any::<i64>(), y in any::<i128>(), i in 0usize..3) {
            let m = Modulus::new(PRIMES[i]).unwrap();
            let p = m.value() as i128;
            prop_assert_eq!(m.reduce_i64(x) as i128, (x as i128).rem_euclid(p));
        prop_assert_eq!(m.reduce(x as u64) as i128, (x as u64 as i128).rem_euclid(p));
        prop_assert_eq!(m.reduce(u64::MAX) as u128, u64::MAX as u128 % p as u128);
            prop_assert_eq!(m.reduce_i128(y) as i128, y.rem_euclid(p));
        }

        #[test]
        fn inverse(a in 1u64..u64::MAX, i in 0usize..3) {
            let m = Modulus::new(PRIMES[i]).unwrap();
            let a = a % m.value();
            prop_assume!(a != 0);
            prop_assert_eq!(m.mul(a, m.inv(a).unwrap()), 1);
        }
    }

    #[test]
    fn primes_are_ntt_friendly() {
        let n = 1 << 13;
        let ps = ntt_primes(60, n, 3, &[]).unwrap();
        let qs = ntt_primes_near(40, n, 6, &ps).unwrap();
        for &p in ps.iter().chain(&qs) {
            assert!(is_prime(p));
            assert_eq!(p % (2 * n as u64), 1);
        }
        assert!(ps.iter().all(|&p| p >> 59 == 1));
        assert!(qs.iter().all(|&q| (q as f64).log2().round() == 40.0));
        assert!(Modulus::new(4).is_err());
    }
}
