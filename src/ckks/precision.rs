//! Precision statistics: how many bits of a decrypted result agree with its plaintext twin,
//! and the public precision model of a parameter set.

/// The empirical precision model (bits kept at a unit-sized output) of a parameter set
/// with scale `2^log_scale` and degree `2^log_n`: `log_scale - 15 - (log_n - 12)/2`,
/// measured by this crate's tests at N = 2^12..2^14 (25 bits at scale 2^40, N = 2^12).
/// It depends on the parameters only, never on weights.
pub fn model_precision_bits(log_scale: f64, log_n: u32) -> f64 {
    log_scale - 15.0 - (log_n as f64 - 12.0) / 2.0
}

/// Error statistics of `got` against `want`, in bits (`-log2 |error|`, larger is better).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrecisionStats {
    /// Bits at the worst slot.
    pub min_bits: f64,
    /// Bits of the mean absolute error.
    pub mean_bits: f64,
    /// Bits at the median slot.
    pub median_bits: f64,
    /// Largest absolute error.
    pub max_abs_error: f64,
    /// Number of slots compared.
    pub count: usize,
}

impl PrecisionStats {
    /// Compares `got` with `want` slot by slot (absolute error).
    pub fn compare(got: &[f64], want: &[f64]) -> Self {
        Self::compare_relative_to(got, want, 1.0)
    }

    /// Compares with errors divided by the largest `|want|` (how classifier outputs are
    /// judged: bits relative to the largest logit).
    pub fn relative_to_largest(got: &[f64], want: &[f64]) -> Self {
        let largest = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        Self::compare_relative_to(got, want, largest.max(f64::MIN_POSITIVE))
    }

    /// Compares with errors divided by `reference` (e.g. the largest logit).
    pub fn compare_relative_to(got: &[f64], want: &[f64], reference: f64) -> Self {
        let mut errs: Vec<f64> = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) / reference).abs())
            .collect();
        let count = errs.len();
        if count == 0 {
            return PrecisionStats {
                min_bits: f64::INFINITY,
                mean_bits: f64::INFINITY,
                median_bits: f64::INFINITY,
                max_abs_error: 0.0,
                count,
            };
        }
        errs.sort_by(|a, b| a.total_cmp(b));
        let max = errs[count - 1];
        let mean = errs.iter().sum::<f64>() / count as f64;
        let median = errs[count / 2];
        let bits = |e: f64| if e == 0.0 { 64.0 } else { -e.log2() };
        PrecisionStats {
            min_bits: bits(max),
            mean_bits: bits(mean),
            median_bits: bits(median),
            max_abs_error: max * reference,
            count,
        }
    }
}

impl std::fmt::Display for PrecisionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "precision over {} values: min {:.1} bits, median {:.1} bits, mean {:.1} bits (max |err| {:.3e})",
            self.count, self.min_bits, self.median_bits, self.mean_bits, self.max_abs_error
        )
    }
}
