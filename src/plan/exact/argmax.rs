//! The encrypted argmax: integer semantics, reduction stages, bootstrapping count and
//! failure probabilities (the encrypted run is in `plan::run_exact`).

use crate::exact::noise;
use crate::exact::ExactParams;

use super::reference::wrap;

/// Most classes the encrypted argmax handles: the win count of a class (`0..classes`) is
/// read by one bootstrapping, which distinguishes 16 values.
pub const ARGMAX_MAX_CLASSES: usize = 16;

/// Modulus (log2) of the encrypted one-hot bits the client decrypts.
pub const ARGMAX_LOG_MODULUS: u32 = 2;

/// The integer reference of the encrypted argmax: the one-hot vector of the logits `l`
/// (signed, held modulo `2^p`). For every pair `i < j`, `d = (l_i - l_j) mod 2^p` read as a
/// signed `p`-bit integer; `i` beats `j` iff `d >= 0` (ties go to the lower index), else `j`
/// beats `i`. Class `i` gets 1 iff it beats all `classes - 1` others. Without wrap-around
/// (`|l_i - l_j| < 2^(p-1)`, which the planner's headroom gives on calibration data) this is
/// the one-hot of the first maximal logit; with wrap-around the tournament may have no
/// winner (all zeros), never two.
pub fn argmax_one_hot(logits: &[i64], p: u32) -> Vec<i64> {
    let p = p.clamp(1, 62);
    let c = logits.len();
    let mut wins = vec![0usize; c];
    for (i, &a) in logits.iter().enumerate() {
        for (j, &b) in logits.iter().enumerate().skip(i + 1) {
            let d = crate::exact::to_signed(wrap(a.wrapping_sub(b), p), p);
            if let Some(w) = wins.get_mut(if d >= 0 { i } else { j }) {
                *w += 1;
            }
        }
    }
    wins.iter().map(|&w| i64::from(w + 1 == c)).collect()
}

/// Bits removed by each reduction stage of a logit difference held modulo `2^p` before its
/// sign is read with one bootstrapping (5 bits are left): stages of 4, then a last stage of
/// `(p - 5) mod 4` bits if that is not zero. Empty for `p <= 5`. The 4-bit stages come
/// first because the first stage reads the difference with its full noise multiplied by
/// `2^(p-k-1)`, which is smallest (`2^(p-5)`, the same margin as decrypting the logit) for
/// `k = 4`.
pub fn argmax_reductions(p: u32) -> Vec<u32> {
    if p <= 5 {
        return Vec::new();
    }
    let r = (p - 5) % 4;
    let mut v: Vec<u32> = std::iter::repeat_n(4, ((p - 5) / 4) as usize).collect();
    if r > 0 {
        v.push(r);
    }
    v
}

/// Bootstrappings of the encrypted argmax of `classes` logits held modulo `2^p`:
/// `C(C-1)/2 · (2R + 1) + C` with `R = ceil((p - 5) / 4)` reduction stages per pair (two
/// bootstrappings each), one sign read per pair and one equality read per class.
pub fn argmax_pbs(classes: usize, p: u32) -> u64 {
    let c = classes as u64;
    let pairs = c * c.saturating_sub(1) / 2;
    pairs * (2 * argmax_reductions(p).len() as u64 + 1) + c
}

/// Per-bootstrapping failure probabilities (log2, with multiplicities) of the encrypted
/// argmax, for differences of noise variance `var_diff`: per stage, the coarse read of the
/// shifted difference and the fine read of its low part (as in the hidden layers), then the
/// fine sign read, then the coarse read of each win count (a sum of `classes - 1` fine
/// sign outputs).
pub(super) fn argmax_pfails(
    params: &ExactParams,
    p: u32,
    var_diff: f64,
    classes: usize,
) -> Vec<(f64, usize)> {
    let fine = noise::pbs_variance(params, true);
    let coarse = noise::pbs_variance(params, false);
    let pairs = (classes * classes.saturating_sub(1) / 2).max(1);
    let mut out = Vec::new();
    let mut cur = var_diff;
    let mut pc = p.max(5);
    for k in argmax_reductions(p) {
        let top = cur * 4f64.powi((pc - k - 1) as i32);
        out.push((noise::pbs_log2_p_fail(params, top), pairs));
        out.push((noise::pbs_log2_p_fail(params, top + coarse), pairs));
        cur += fine;
        pc -= k;
    }
    out.push((noise::pbs_log2_p_fail(params, cur), pairs));
    out.push((
        noise::pbs_log2_p_fail(params, classes.saturating_sub(1) as f64 * fine),
        classes,
    ));
    out
}

/// Largest `Σ_k (w_ik - w_jk)² · var_k` over pairs of rows (0 for fewer than two rows).
pub(super) fn max_pair_diff_norm2(w: &[i64], in_dim: usize, col_var: &[f64]) -> f64 {
    let rows: Vec<&[i64]> = w.chunks(in_dim.max(1)).collect();
    let mut best = 0.0f64;
    for (i, a) in rows.iter().enumerate() {
        for b in rows.iter().skip(i + 1) {
            let n: f64 = a
                .iter()
                .zip(b.iter())
                .zip(col_var)
                .map(|((&x, &y), s)| {
                    let d = (x - y) as f64;
                    d * d * s
                })
                .sum();
            best = best.max(n);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_of_the_first_maximum() {
        assert_eq!(argmax_one_hot(&[3, 7, 7, -2], 8), vec![0, 1, 0, 0]);
        assert_eq!(argmax_one_hot(&[-5, -9], 8), vec![1, 0]);
        assert_eq!(argmax_one_hot(&[4], 8), vec![1]);
    }

    #[test]
    fn wrap_around_gives_no_winner_never_two() {
        // mod 2^4: 7 - (-7) = 14 reads as -2, so -7 "beats" 7; 0 beats -7 and loses to 7
        let h = argmax_one_hot(&[7, -7, 0], 4);
        assert!(h.iter().sum::<i64>() <= 1, "{h:?}");
    }

    #[test]
    fn reduction_stages_and_pbs_count() {
        assert!(argmax_reductions(5).is_empty());
        assert_eq!(argmax_reductions(9), vec![4]);
        assert_eq!(argmax_reductions(11), vec![4, 2]);
        assert_eq!(argmax_reductions(16), vec![4, 4, 3]);
        // C(C-1)/2 (2R + 1) + C
        assert_eq!(argmax_pbs(10, 16), 45 * 7 + 10);
        assert_eq!(argmax_pbs(2, 5), 1 + 2);
        assert_eq!(argmax_pbs(1, 16), 1);
    }

    #[test]
    fn pair_difference_norm_weights_each_column() {
        // rows (1, 0), (0, 2), (3, 3): largest Σ (w_i - w_j)² var over pairs
        let w = [1, 0, 0, 2, 3, 3];
        assert_eq!(max_pair_diff_norm2(&w, 2, &[1.0, 1.0]), 4.0 + 9.0);
        assert_eq!(max_pair_diff_norm2(&w, 2, &[0.0, 10.0]), 90.0);
        assert_eq!(max_pair_diff_norm2(&w[..2], 2, &[1.0, 1.0]), 0.0);
    }
}
