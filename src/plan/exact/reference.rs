//! The integer reference twin of a [`QuantizedPlan`]: what every encrypted run must
//! reproduce bit for bit.

use ndarray::{Array2, ArrayView1, ArrayView2};

use crate::{Error, Result};

use super::argmax::{argmax_one_hot, argmax_pbs, ARGMAX_LOG_MODULUS};
use super::{QuantizedLayer, QuantizedPlan, BOXES};

pub(super) fn quantize_vec(x: ArrayView1<f64>, scale: f64, bits: u32) -> Vec<i64> {
    let q = (1i64 << (bits - 1)) - 1;
    x.iter()
        .map(|v| ((v / scale).round() as i64).clamp(-q, q))
        .collect()
}

pub(super) fn wrap(a: i64, p: u32) -> u64 {
    (a as u64) & ((1u64 << p) - 1)
}

/// One hidden layer in integers: `(outputs, overflow count)`.
pub(super) fn hidden_forward(layer: &QuantizedLayer, x: &[i64]) -> (Vec<i64>, usize) {
    let Some(act) = &layer.activation else {
        return (Vec::new(), 0);
    };
    let mut over = 0;
    let out = layer
        .weights
        .chunks(layer.in_dim.max(1))
        .zip(&layer.bias)
        .zip(&act.tables)
        .map(|((row, &b), t)| {
            let acc = row
                .iter()
                .zip(x)
                .fold(b, |s, (&w, &xi)| s.wrapping_add(w.wrapping_mul(xi)));
            if acc < 0 || acc >= 1i64 << layer.log_modulus {
                over += 1;
            }
            let v = (wrap(acc, layer.log_modulus) >> act.read_shift()) as usize;
            let get = |i: usize| t.get(i).copied().unwrap_or(0);
            // 6-bit tables are two 5-bit reads (the last entry wraps, see `lut6_value`);
            // 5-bit tables read all 32 boxes; 4-bit tables wrap negacyclically above 16
            if act.bits == 6 {
                crate::exact::lut6_value(t, v)
            } else if act.bits == 5 || v < BOXES {
                get(v)
            } else {
                -get(v - BOXES)
            }
        })
        .collect();
    (out, over)
}

impl QuantizedPlan {
    /// Input width.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Output width.
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_dim)
    }

    /// Modulus (log2) the client encrypts inputs with.
    pub fn input_log_modulus(&self) -> u32 {
        self.tensor_log_moduli.first().copied().unwrap_or(1)
    }

    /// Modulus (log2) of the outputs the client decrypts: the logits' modulus, or
    /// [`ARGMAX_LOG_MODULUS`] with the encrypted argmax.
    pub fn output_log_modulus(&self) -> u32 {
        if self.argmax {
            ARGMAX_LOG_MODULUS
        } else {
            self.logits_log_modulus()
        }
    }

    /// Modulus (log2) the logits are held at (the output layer's accumulator).
    pub fn logits_log_modulus(&self) -> u32 {
        self.layers.last().map_or(1, |l| l.log_modulus)
    }

    /// Bootstrappings (blind rotations) per sample: `3J` per hidden neuron with 4-bit
    /// tables, `3J + 2` with 5-bit tables, `3J + 6` with 6-bit tables (the last stage's
    /// extra bit and two 5-bit reads); of these only the tables' 1, 2 or 4 use the fine key
    /// (`Evaluator::top_digits` runs the `3J - 1` of the stages on the coarse key); none for
    /// linear layers; plus [`argmax_pbs`] with the argmax.
    pub fn predicted_pbs(&self) -> u64 {
        let argmax = if self.argmax {
            argmax_pbs(self.output_dim(), self.logits_log_modulus())
        } else {
            0
        };
        argmax
            + self
                .layers
                .iter()
                .filter_map(|l| {
                    l.activation.as_ref().map(|a| {
                        let table = match a.bits {
                            6 => 7,
                            5 => 3,
                            _ => 1,
                        };
                        // `Evaluator::top_digits`: a sign and a near rotation per stage, a
                        // far one for every stage but the last
                        l.out_dim as u64 * ((3 * a.stages as u64).saturating_sub(1) + table)
                    })
                })
                .sum::<u64>()
    }

    /// Quantizes one input vector (clamped to the input width).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong width, [`Error::InvalidValue`] for a
    /// non-finite value.
    pub fn quantize_input(&self, x: ArrayView1<f64>) -> Result<Vec<i64>> {
        if x.len() != self.input_dim() {
            return Err(Error::dims("exact input", self.input_dim(), x.len()));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidValue {
                context: "exact input".into(),
                reason: "non-finite feature".into(),
            });
        }
        Ok(quantize_vec(x, self.input_scale, self.input_bits))
    }

    /// The integer reference: outputs modulo `2^output_log_modulus`, signed (the one-hot
    /// [`argmax_one_hot`] of the logits with the argmax).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong input width.
    pub fn reference(&self, xq: &[i64]) -> Result<Vec<i64>> {
        let logits = self.reference_logits(xq)?;
        Ok(if self.argmax {
            argmax_one_hot(&logits, self.logits_log_modulus())
        } else {
            logits
        })
    }

    /// The integer logits modulo `2^logits_log_modulus`, signed (what the encrypted run
    /// computes before the argmax, if any).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong input width.
    pub fn reference_logits(&self, xq: &[i64]) -> Result<Vec<i64>> {
        if xq.len() != self.input_dim() {
            return Err(Error::dims(
                "exact reference input",
                self.input_dim(),
                xq.len(),
            ));
        }
        let mut tensors: Vec<Vec<i64>> = vec![xq.to_vec()];
        let mut logits = Vec::new();
        for layer in &self.layers {
            let x: Vec<i64> = layer
                .sources
                .iter()
                .flat_map(|&t| tensors.get(t).map_or(&[][..], |v| v.as_slice()))
                .copied()
                .collect();
            if x.len() != layer.in_dim {
                return Err(Error::dims("exact layer input", layer.in_dim, x.len()));
            }
            if layer.activation.is_some() {
                tensors.push(hidden_forward(layer, &x).0);
            } else {
                let p = layer.log_modulus;
                logits = layer
                    .weights
                    .chunks(layer.in_dim.max(1))
                    .zip(&layer.bias)
                    .map(|(row, &b)| {
                        let acc = row
                            .iter()
                            .zip(&x)
                            .fold(b, |s, (&w, &xi)| s.wrapping_add(w.wrapping_mul(xi)));
                        crate::exact::to_signed(wrap(acc, p), p)
                    })
                    .collect();
            }
        }
        Ok(logits)
    }

    /// Real outputs from integer outputs (`y_j · s_in · s_w[j]`; the one-hot unchanged with
    /// the argmax).
    pub fn dequantize(&self, y: &[i64]) -> Vec<f64> {
        if self.argmax {
            return y.iter().map(|&v| v as f64).collect();
        }
        match self.layers.last() {
            Some(l) => y
                .iter()
                .zip(&l.weight_scales)
                .map(|(&v, s)| v as f64 * (s * l.input_scale))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Quantized forward pass of a batch in real units (for accuracy reports).
    ///
    /// # Errors
    /// As [`quantize_input`](Self::quantize_input).
    pub fn forward_batch(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((x.nrows(), self.output_dim()));
        for (i, row) in x.rows().into_iter().enumerate() {
            let y = self.reference(&self.quantize_input(row)?)?;
            for (dst, v) in out.row_mut(i).iter_mut().zip(self.dequantize(&y)) {
                *dst = v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_and_clamp_symmetrically() {
        let x = [0.26, -0.74, 10.0, -10.0];
        // scale 0.5, 3 bits: levels -3..=3
        assert_eq!(
            quantize_vec(ArrayView1::from(&x[..]), 0.5, 3),
            vec![1, -1, 3, -3]
        );
    }

    #[test]
    fn wrap_reduces_modulo_a_power_of_two() {
        assert_eq!(wrap(-1, 4), 15);
        assert_eq!(wrap(17, 4), 1);
        assert_eq!(wrap(5, 13), 5);
    }
}
