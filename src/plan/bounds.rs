//! Value bounds: refuse weights, biases and polynomial coefficients that the scale and
//! modulus cannot carry, instead of letting the encrypted result wrap silently.
//!
//! A CKKS ciphertext at level `l` holds a message `m` at scale `D` modulo
//! `Q_l = q_0 ... q_l`; it decrypts correctly only while `|m| D < Q_l / 2`. A dense stage
//! multiplies by weights encoded at scale `q_l` and rescales, so its output must satisfy
//! that at the stage's output level, and the final output, which the server drops to
//! level 0 before returning it, must satisfy `|y| D < q_0 / 2`.
//!
//! The check propagates a magnitude estimate for every stage's output from features of
//! magnitude 1 (`INPUT_BOUND`): a dense stage gives `max_i ||w_i||_2 * in + max |b|` (the
//! typical size of `w_i . x` for inputs of that magnitude with independent signs; the
//! worst case `sum_j |w_ij|` is far too pessimistic for trained adapters), an affine one
//! `max |mul| * in + max |add|`, a polynomial `sum_k |c_k|` (its Chebyshev coefficients;
//! `|T_k| <= 1` on the declared interval: a true bound), a sum the sum of its inputs', a
//! concatenation their maximum. A stage whose estimate exceeds what its level holds (with
//! one bit kept for noise) is refused, naming the layer, the largest value in the
//! offending row and the limit: such values wrap even for ordinary inputs (a weight of
//! 1e6, all weights 100, a byte flip giving -1.7e19, a coefficient of 1e10). It is an
//! estimate, not a proof: adversarially aligned or larger inputs can still exceed it, which
//! the returned headroom (in bits) quantifies. Non-finite values are refused with their
//! position. Cost: one pass over the weights.

use super::compile::{Plan, StageOp};
use crate::{Error, Result};

/// The bound on input features the check assumes (features of magnitude up to 1).
pub const INPUT_BOUND: f64 = 1.0;

/// Bits kept free below the modulus for noise and rounding.
const NOISE_MARGIN_BITS: f64 = 1.0;

fn non_finite(layer: &str, what: &str, idx: String, v: f64) -> Error {
    Error::InvalidValue {
        context: format!("layer '{layer}'"),
        reason: format!("{what}{idx} is {v}: weights, biases and coefficients must be finite"),
    }
}

impl Plan {
    /// Checks every stage's value bound against what the scale and modulus hold (see the
    /// module docs) and returns the smallest headroom in bits (how many more bits of
    /// magnitude the inputs could have before a stage would wrap).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the layer, the value and the limit.
    pub fn check_value_bounds(&self) -> Result<f64> {
        let params = &self.params;
        let log_delta = params.default_scale().log2();
        let log_q: Vec<f64> = params.q().iter().map(|&q| (q as f64).log2()).collect();
        // log2 Q_l for every level l.
        let mut log_big_q = Vec::with_capacity(log_q.len());
        let mut acc = 0.0;
        for l in &log_q {
            acc += l;
            log_big_q.push(acc);
        }
        let last = self.stages.len().saturating_sub(1);
        let mut bounds: Vec<f64> = Vec::with_capacity(self.stages.len());
        let mut headroom = f64::INFINITY;
        for (si, st) in self.stages.iter().enumerate() {
            let in_bound = |k: usize| {
                st.inputs
                    .get(k)
                    .and_then(|&i| bounds.get(i))
                    .copied()
                    .unwrap_or(INPUT_BOUND)
            };
            // (bound, description of the largest contributing value)
            let (bound, culprit): (f64, String) = match &st.op {
                StageOp::Input => (INPUT_BOUND, String::new()),
                StageOp::Dense { weight, bias } => {
                    let x = in_bound(0);
                    let mut worst = (0.0f64, 0usize);
                    for (i, row) in weight.rows().into_iter().enumerate() {
                        let mut s = 0.0;
                        for (j, w) in row.iter().enumerate() {
                            if !w.is_finite() {
                                return Err(non_finite(
                                    &st.name,
                                    "weight",
                                    format!("[{i}][{j}]"),
                                    *w,
                                ));
                            }
                            s += w * w;
                        }
                        let s = s.sqrt();
                        if s > worst.0 {
                            worst = (s, i);
                        }
                    }
                    let mut b_max = 0.0f64;
                    if let Some(b) = bias {
                        for (i, v) in b.iter().enumerate() {
                            if !v.is_finite() {
                                return Err(non_finite(&st.name, "bias", format!("[{i}]"), *v));
                            }
                            b_max = b_max.max(v.abs());
                        }
                    }
                    let row = weight.row(worst.1);
                    let (j, w) = row
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                        .map_or((0, 0.0), |(j, w)| (j, *w));
                    let culprit = if b_max > worst.0 * x {
                        format!("a bias of magnitude {b_max:e}")
                    } else {
                        format!(
                            "row {} (L2 norm {:e}, largest weight[{}][{j}] = {w:e})",
                            worst.1, worst.0, worst.1
                        )
                    };
                    (worst.0 * x + b_max, culprit)
                }
                StageOp::Affine { mul, add } => {
                    let x = in_bound(0);
                    let mut m_max = 0.0f64;
                    for (i, v) in mul.iter().enumerate() {
                        if !v.is_finite() {
                            return Err(non_finite(&st.name, "mul", format!("[{i}]"), *v));
                        }
                        m_max = m_max.max(v.abs());
                    }
                    let mut a_max = 0.0f64;
                    for (i, v) in add.iter().enumerate() {
                        if !v.is_finite() {
                            return Err(non_finite(&st.name, "add", format!("[{i}]"), *v));
                        }
                        a_max = a_max.max(v.abs());
                    }
                    (
                        m_max * x + a_max,
                        format!("mul up to {m_max:e}, add up to {a_max:e}"),
                    )
                }
                StageOp::Poly { cheb, .. } => {
                    let mut s = 0.0;
                    let mut worst = (0usize, 0.0f64);
                    for (k, c) in cheb.iter().enumerate() {
                        if !c.is_finite() {
                            return Err(non_finite(
                                &st.name,
                                "Chebyshev coefficient",
                                format!(" {k}"),
                                *c,
                            ));
                        }
                        s += c.abs();
                        if c.abs() > worst.1.abs() {
                            worst = (k, *c);
                        }
                    }
                    (
                        s,
                        format!(
                            "Chebyshev coefficients summing to {s:e} in magnitude (largest c_{} = {:e})",
                            worst.0, worst.1
                        ),
                    )
                }
                StageOp::Square {
                    sign,
                    offset,
                    shift,
                    ..
                } => {
                    for (what, v) in [("sign", sign), ("offset", offset), ("shift", shift)] {
                        if !v.is_finite() {
                            return Err(non_finite(&st.name, what, String::new(), *v));
                        }
                    }
                    let x = in_bound(0) + shift.abs();
                    (
                        sign.abs() * x * x + offset.abs(),
                        format!("a square of inputs up to {x:e} (offset {offset:e})"),
                    )
                }
                StageOp::Add => (
                    st.inputs
                        .iter()
                        .map(|&i| bounds.get(i).copied().unwrap_or(INPUT_BOUND))
                        .sum(),
                    "the sum of its inputs".to_string(),
                ),
                StageOp::Concat => (
                    st.inputs
                        .iter()
                        .map(|&i| bounds.get(i).copied().unwrap_or(INPUT_BOUND))
                        .fold(0.0, f64::max),
                    "its inputs".to_string(),
                ),
            };
            // The output level's modulus; the final stage is dropped to the output floor
            // (level 0, or 1 on chains with a prime reserved for the output).
            let level = if si == last {
                params.output_floor_level().min(st.level)
            } else {
                st.level
            };
            let cap_bits = log_big_q.get(level.get()).copied().unwrap_or(0.0)
                - 1.0
                - log_delta
                - NOISE_MARGIN_BITS;
            let bound_bits = if bound > 0.0 {
                bound.log2()
            } else {
                f64::NEG_INFINITY
            };
            if !bound.is_finite() || bound_bits > cap_bits {
                return Err(Error::InvalidValue {
                    context: format!("layer '{}'", st.name),
                    reason: format!(
                        "values too large to encrypt: with inputs of magnitude <= {INPUT_BOUND}, {culprit} \
                         gives outputs up to {bound:e} (2^{bound_bits:.1}), but scale 2^{log_delta:.0} and the \
                         level-{level} modulus 2^{:.0} hold at most 2^{cap_bits:.1} ({:.3e}); the encrypted \
                         result would wrap. Scale the layer down, or choose parameters with more headroom \
                         (a larger first prime or a smaller scale)",
                        log_big_q.get(level.get()).copied().unwrap_or(0.0),
                        cap_bits.exp2()
                    ),
                });
            }
            headroom = headroom.min(cap_bits - bound_bits);
            bounds.push(bound);
        }
        Ok(headroom)
    }
}
