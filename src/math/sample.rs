//! Samplers: ternary secrets, discrete Gaussian errors and uniform polynomials.
//!
//! Secret randomness (keys, errors, encryption masks) always comes from an RNG the caller
//! passes in explicitly. Public uniform polynomials are expanded from a 32-byte seed with
//! ChaCha20 (one stream per polynomial), so they can be stored as the seed alone.

use super::poly::{Eval, RnsPoly};
use super::rns::RingContext;
use rand::{CryptoRng, Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Standard deviation of the error distribution (HomomorphicEncryption.org standard).
pub const SIGMA: f64 = 3.2;
/// Tail cut of the Gaussian sampler: samples are bounded by `6 * sigma` (rounded up).
pub const GAUSSIAN_BOUND: i64 = 20;

/// Uniform ternary coefficients in {-1, 0, 1}.
pub fn ternary<G: RngCore + CryptoRng>(rng: &mut G, n: usize) -> Vec<i64> {
    (0..n).map(|_| rng.random_range(0..3i64) - 1).collect()
}

/// Ternary coefficients with exactly `h` non-zero entries (each ±1), at random positions.
pub fn sparse_ternary<G: RngCore + CryptoRng>(rng: &mut G, n: usize, h: usize) -> Vec<i64> {
    let mut v = vec![0i64; n];
    let mut placed = 0;
    while placed < h.min(n) {
        let i = rng.random_range(0..n);
        if v[i] == 0 {
            v[i] = if rng.random::<bool>() { 1 } else { -1 };
            placed += 1;
        }
    }
    v
}

/// Discrete Gaussian coefficients with standard deviation [`SIGMA`], tail-cut at
/// [`GAUSSIAN_BOUND`], by inversion of a cumulative table with a full table scan per sample
/// (no early exit, so the time does not depend on the value drawn).
pub fn gaussian<G: RngCore + CryptoRng>(rng: &mut G, n: usize) -> Vec<i64> {
    // Cumulative distribution of |x| (with x = 0 counted once), scaled to 2^63.
    let weights: Vec<f64> = (0..=GAUSSIAN_BOUND)
        .map(|x| {
            let w = (-(x as f64).powi(2) / (2.0 * SIGMA * SIGMA)).exp();
            if x == 0 {
                w
            } else {
                2.0 * w
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdt = Vec::with_capacity(weights.len());
    let mut acc = 0f64;
    for w in &weights {
        acc += w / total;
        cdt.push((acc.min(1.0) * (1u64 << 63) as f64) as u64);
    }
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let u = r >> 1;
            let sign_bit = (r & 1) as i64;
            let mut mag = 0i64;
            for &c in &cdt {
                mag += (u >= c) as i64;
            }
            let mag = mag.min(GAUSSIAN_BOUND);
            mag * (1 - 2 * sign_bit)
        })
        .collect()
}

/// Rounded Gaussian coefficients with standard deviation `sigma` (any size up to 2^58), for
/// noise flooding. Box–Muller on 53-bit uniforms from the caller's CSPRNG, then rounded to
/// the nearest integer. For `sigma >= 2^4` the rounded and the discrete Gaussian are
/// statistically indistinguishable for flooding purposes (smoothing: their distance is far
/// below `2^-100` per coefficient). Tails are cut where the uniform's 53 bits end (about
/// `8.6 sigma`). A fixed number of floating-point operations per sample (`sigma` is
/// public); floating-point timing is not guaranteed constant.
pub fn gaussian_wide<G: RngCore + CryptoRng>(rng: &mut G, n: usize, sigma: f64) -> Vec<i64> {
    normal_f64(rng, n, sigma)
        .into_iter()
        .map(|x| x.round() as i64)
        .collect()
}

/// `n` real Gaussian samples of standard deviation `sigma` (Box–Muller on 53-bit uniforms from
/// the caller's CSPRNG, two samples per pair of uniforms; tails cut near `8.6 sigma`).
/// [`gaussian_wide`] rounds these; tuning draws its perturbation directions and its
/// differential-privacy noise from them.
pub fn normal_f64<G: RngCore + CryptoRng>(rng: &mut G, n: usize, sigma: f64) -> Vec<f64> {
    let unit = |r: &mut G| ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (unit(rng), unit(rng));
        let rad = (-2.0 * u1.ln()).sqrt() * sigma;
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        out.push(rad * c);
        out.push(rad * s);
    }
    out.truncate(n);
    out
}

/// The uniform polynomial expanded from `seed` on ChaCha20 stream `stream`, with limbs for
/// `q_0..=q_level` (and the special primes if `extended`), in evaluation form.
///
/// Limb `i` consumes the stream in order, so a lower level is a prefix of a higher one and a
/// polynomial can be stored as `(seed, stream)` alone. Each word is drawn by rejection
/// sampling below the prime (masked to its bit length).
pub fn uniform_from_seed(
    ring: &RingContext,
    seed: &[u8; 32],
    stream: u64,
    level: usize,
    extended: bool,
) -> RnsPoly<Eval> {
    let mut prng = ChaCha20Rng::from_seed(*seed);
    prng.set_stream(stream);
    let mut poly = RnsPoly::<Eval>::zero(ring, level, extended);
    let lvl = poly.level();
    let n = poly.n();
    for i in 0..poly.num_limbs() {
        let p = ring.table(lvl, i).modulus().value();
        let mask = u64::MAX >> p.leading_zeros();
        let limb = &mut poly.as_words_mut()[i * n..(i + 1) * n];
        for x in limb.iter_mut() {
            *x = loop {
                let v = prng.next_u64() & mask;
                if v < p {
                    break v;
                }
            };
        }
    }
    poly
}

/// A fresh 32-byte seed drawn from `rng`.
pub fn fresh_seed<G: RngCore + CryptoRng>(rng: &mut G) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_the_right_spread() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let v = gaussian(&mut rng, 1 << 16);
        let mean = v.iter().sum::<i64>() as f64 / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((var.sqrt() - SIGMA).abs() < 0.1, "sigma {}", var.sqrt());
        assert!(v.iter().all(|x| x.abs() <= GAUSSIAN_BOUND));
    }

    #[test]
    fn ternary_is_balanced() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let v = ternary(&mut rng, 30000);
        for t in -1..=1 {
            let c = v.iter().filter(|&&x| x == t).count();
            assert!((9000..11000).contains(&c));
        }
        let s = sparse_ternary(&mut rng, 1024, 64);
        assert_eq!(s.iter().filter(|&&x| x != 0).count(), 64);
    }
}
