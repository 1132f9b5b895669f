//! Noise model of the exact backend, in absolute units of the 2^64 torus (a variance of
//! `v` means a standard deviation of `sqrt(v)` out of 2^64).
//!
//! The additive variances of keyswitching, modulus switching and bootstrapping are tfhe-rs's
//! own published formulas (`tfhe::core_crypto::commons::noise_formulas`, the ones its
//! parameter optimizer uses for the TUniform 2^-128 sets). A PBS reading a value at a box
//! centre fails when the total noise reaches the box half-width `h`; with Gaussian noise of
//! variance `v` that happens with probability `erfc(h / sqrt(2 v))`, which
//! [`log2_p_fail`] returns in log2.

use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::keyswitch_additive_variance_132_bits_security_tuniform;
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::pbs_variance_132_bits_security_tuniform_fft_mul;

use super::params::{ExactParams, READ_BITS};

/// 2^64 as f64.
const Q: f64 = 18_446_744_073_709_551_616.0;
/// 2^128 as f64 (torus-normalized variance -> absolute variance).
const Q2: f64 = Q * Q;

/// Largest accepted per-PBS failure probability (log2), the same target as the vetted sets.
pub const MAX_LOG2_P_FAIL: f64 = -128.0;

/// Variance of a fresh client encryption (TUniform with bound 2^b: `(2^(2b+1) + 1) / 6`).
pub fn fresh_variance(p: &ExactParams) -> f64 {
    let b = p.glwe_noise_log2() as i32;
    (2f64.powi(2 * b + 1) + 1.0) / 6.0
}

/// Variance added by keyswitching from the big key (k·N) to the small key (n).
pub fn keyswitch_variance(p: &ExactParams) -> f64 {
    let (base_log, level) = p.ks_decomposition();
    keyswitch_additive_variance_132_bits_security_tuniform(
        p.big_lwe_dimension(),
        p.lwe_dimension(),
        base_log,
        level,
        Q,
        Q,
    )
    .0 * Q2
}

/// Variance added by the centered modulus switch from 2^64 to 2N.
pub fn modulus_switch_variance(p: &ExactParams) -> f64 {
    centered_binary_shifted_modulus_switch_additive_variance(
        p.lwe_dimension(),
        Q,
        2.0 * p.polynomial_size().0 as f64,
    )
    .0 * Q2
}

/// Output variance of one bootstrapping (FFT with 53-bit mantissa), coarse or fine key.
pub fn pbs_variance(p: &ExactParams, fine: bool) -> f64 {
    let (base_log, level) = p.pbs_decomposition(fine);
    pbs_variance_132_bits_security_tuniform_fft_mul(
        p.lwe_dimension(),
        p.glwe_dimension(),
        p.polynomial_size(),
        base_log,
        level,
        53.0,
        Q,
    )
    .0 * Q2
}

/// Half-width of a PBS box (`2^(64 - READ_BITS - 1)`).
pub fn box_half_width() -> f64 {
    2f64.powi(64 - READ_BITS as i32 - 1)
}

/// [`pbs_log2_p_fail`] for a read whose value sits up to `offset` away from its box centre
/// (a known, bounded shift, such as the centred fraction [`Evaluator::top_digits`]
/// leaves): the noise must stay within `box_half_width() - offset`.
///
/// [`Evaluator::top_digits`]: super::Evaluator::top_digits
pub fn pbs_log2_p_fail_offset(p: &ExactParams, input_var: f64, offset: f64) -> f64 {
    let v = input_var + keyswitch_variance(p) + modulus_switch_variance(p);
    log2_p_fail(v, box_half_width() - offset.abs()) + model_correction(p)
}

/// log2 of the probability that a PBS whose *input* ciphertext (big key, before keyswitch)
/// has noise variance `input_var` reads the wrong box, made conservative by
/// [`model_correction`] (never more optimistic than tfhe-rs's own figure for the set).
pub fn pbs_log2_p_fail(p: &ExactParams, input_var: f64) -> f64 {
    raw_pbs_log2_p_fail(p, input_var) + model_correction(p)
}

fn raw_pbs_log2_p_fail(p: &ExactParams, input_var: f64) -> f64 {
    let v = input_var + keyswitch_variance(p) + modulus_switch_variance(p);
    log2_p_fail(v, box_half_width())
}

/// Bits by which this Gaussian model is more optimistic than tfhe-rs's published failure
/// probability at the set's own design point (input noise = `max_noise_level` = 5 nominal
/// PBS outputs, 5-bit read); 0 if it is not. About 2.1 bits for the default set. Added to
/// every bootstrapping failure figure so that ours are never below tfhe-rs's.
pub fn model_correction(p: &ExactParams) -> f64 {
    let at_design = raw_pbs_log2_p_fail(p, 5.0 * pbs_variance(p, false));
    (at_design - p.vetted_log2_p_fail()).min(0.0).abs()
}

/// `log2(erfc(h / sqrt(2 v)))`: probability that centred Gaussian noise of variance `v`
/// reaches magnitude `h`.
pub fn log2_p_fail(v: f64, h: f64) -> f64 {
    if v <= 0.0 {
        return f64::NEG_INFINITY;
    }
    log2_erfc(h / (2.0 * v).sqrt())
}

/// `log2(erfc(x))` for `x >= 0`, valid far into the tail (no underflow): the Chebyshev
/// fit of Numerical Recipes (`erfcc`, relative error < 1.2e-7) evaluated in log form.
pub fn log2_erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ln = t.ln() + poly;
    if x >= 0.0 {
        ln / std::f64::consts::LN_2
    } else {
        (2.0 - ln.exp()).log2()
    }
}

/// log2 of a sum of probabilities given in log2 (a union bound).
pub fn log2_sum(terms: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = terms.into_iter().filter(|t| t.is_finite()).collect();
    let Some(m) = v.iter().copied().reduce(f64::max) else {
        return f64::NEG_INFINITY;
    };
    m + v.iter().map(|t| (t - m).exp2()).sum::<f64>().log2()
}
