//! The client's side of what the tuning replies reveal: per-sample clipping of the
//! finite-difference estimates, optional Gaussian noise, and its privacy accounting.
//!
//! ## Accounting
//! Each reply is the vector `g` of `k` scalars, `g_j = mean_i clip(d_ij, C) + n_j`, with
//! `d_ij = (l_i(theta + eps z_j) - l_i(theta - eps z_j)) / (2 eps)` for sample `i` of the `B`
//! samples the client tunes on, and `n_j ~ N(0, (sigma_mult * 2C / B)^2)`. Replacing one
//! sample moves each `g_j` by at most `2C / B`, so the vector's L2 sensitivity is
//! `2C sqrt(k) / B`, and one reply is the Gaussian mechanism with
//! zero-concentrated DP `rho = k / (2 sigma_mult^2)` (Bun and Steinke, TCC 2016, Prop. 1.6).
//! `T` replies compose to `rho_T = T k / (2 sigma_mult^2)` (no amplification is claimed: the
//! same samples are used at every step), which gives `(epsilon, delta)`-DP with
//! `epsilon = rho_T + 2 sqrt(rho_T ln(1/delta))` (ibid., Prop. 1.3).

use crate::math::sample::normal_f64;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// The client's clipping and noise settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyPrivacy {
    /// Per-sample clipping bound `C` of the finite differences; `None`: no clipping (and no
    /// differential privacy).
    pub clip: Option<f64>,
    /// Noise multiplier `sigma_mult` (standard deviation in units of the per-coordinate
    /// sensitivity `2C/B`); `None`: no noise. Needs `clip`.
    pub noise_multiplier: Option<f64>,
    /// `delta` of the reported `(epsilon, delta)`.
    pub delta: f64,
}

impl Default for ReplyPrivacy {
    fn default() -> Self {
        ReplyPrivacy {
            clip: Some(10.0),
            noise_multiplier: None,
            delta: 1e-5,
        }
    }
}

/// Accumulated zero-concentrated DP of the replies sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    /// Replies accounted.
    pub replies: u64,
    /// Total `rho` (zCDP); `None` once a reply without noise was sent (no DP guarantee).
    pub rho: Option<f64>,
}

impl PrivacyLedger {
    /// A fresh ledger (no reply sent: `rho = 0`).
    pub fn new() -> Self {
        PrivacyLedger {
            replies: 0,
            rho: Some(0.0),
        }
    }

    /// Records one reply of `k` scalars under `p`.
    pub fn record(&mut self, k: usize, p: &ReplyPrivacy) {
        self.replies += 1;
        self.rho = match (self.rho, p.clip, p.noise_multiplier) {
            (Some(rho), Some(_), Some(z)) if z > 0.0 => Some(rho + k as f64 / (2.0 * z * z)),
            _ => None,
        };
    }

    /// `epsilon` of `(epsilon, delta)`-DP for all replies so far; `None` when a reply had no
    /// noise (or no clipping).
    pub fn epsilon(&self, delta: f64) -> Option<f64> {
        let rho = self.rho?;
        if rho == 0.0 {
            return Some(0.0);
        }
        Some(rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt())
    }
}

/// `mean_i clip(d_i, C)` over the per-sample finite differences `d`, plus Gaussian noise of
/// standard deviation `sigma_mult * 2C / B` when `p` asks for it.
pub fn privatize<G: RngCore + CryptoRng>(d: &[f64], p: &ReplyPrivacy, rng: &mut G) -> f64 {
    let b = d.len().max(1) as f64;
    let clipped: f64 = match p.clip {
        Some(c) => d.iter().map(|&x| x.clamp(-c, c)).sum(),
        None => d.iter().sum(),
    };
    let mut g = clipped / b;
    if let (Some(c), Some(z)) = (p.clip, p.noise_multiplier) {
        g += normal_f64(rng, 1, z * 2.0 * c / b)[0];
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn clipping_bounds_each_sample() {
        let p = ReplyPrivacy {
            clip: Some(1.0),
            noise_multiplier: None,
            delta: 1e-5,
        };
        let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        assert_eq!(privatize(&[5.0, -0.5, 0.5, 100.0], &p, &mut r), 2.0 / 4.0);
    }

    #[test]
    fn ledger_matches_the_gaussian_mechanism() {
        let p = ReplyPrivacy {
            clip: Some(1.0),
            noise_multiplier: Some(2.0),
            delta: 1e-5,
        };
        let mut l = PrivacyLedger::new();
        for _ in 0..10 {
            l.record(4, &p);
        }
        // rho = 10 * 4 / (2 * 4) = 5
        assert!((l.rho.unwrap() - 5.0).abs() < 1e-12);
        let eps = l.epsilon(1e-5).unwrap();
        assert!((eps - (5.0 + 2.0 * (5.0f64 * 1e5f64.ln()).sqrt())).abs() < 1e-9);
        l.record(4, &ReplyPrivacy::default());
        assert_eq!(
            l.epsilon(1e-5),
            None,
            "a noiseless reply voids the guarantee"
        );
    }
}
