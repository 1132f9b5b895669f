//! The public quantization file (`hepeft-exact-quant/1`): what a client needs to know
//! about a plan, without its weights.

use ndarray::ArrayView1;

use crate::exact::{ExactParams, ExactParamsLiteral};
use crate::{Error, Result};

use super::reference::quantize_vec;
use super::{QuantizeOptions, QuantizedPlan};

/// Format tag of [`QuantPublic`] files.
pub const QUANT_FORMAT: &str = "hepeft-exact-quant/1";

/// What a client needs to know about a quantized plan (no weights): the parameter set, the
/// input quantizer and moduli, the output scales, and the plan's costs. Written by
/// `hepeft params select --backend exact` as JSON: a human-readable plan, versioned by
/// [`QUANT_FORMAT`], carrying the parameter digest, read with a 1 MiB cap; why it is not a
/// [`HeObject`](crate::io::object::HeObject) envelope: docs/file-formats.md.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantPublic {
    /// Always [`QUANT_FORMAT`].
    pub format: String,
    /// The exact parameter set.
    pub params: ExactParamsLiteral,
    /// Hex digest of the parameter set.
    pub params_digest: String,
    /// The options the plan was quantized with.
    pub options: QuantizeOptions,
    /// Input width.
    pub input_dim: usize,
    /// Output width.
    pub output_dim: usize,
    /// Real value of one input unit.
    pub input_scale: f64,
    /// Input width in bits.
    pub input_bits: u32,
    /// Modulus (log2) of encrypted inputs.
    pub input_log_modulus: u32,
    /// Modulus (log2) of encrypted outputs.
    pub output_log_modulus: u32,
    /// Real value of one output unit, per output (all 1 with the argmax: the outputs are
    /// the one-hot vector, see [`QuantizeOptions::argmax`], recorded in `options`).
    pub output_scales: Vec<f64>,
    /// Bootstrappings per sample.
    pub predicted_pbs: u64,
    /// Evaluation-key bytes as transferred (seeded).
    pub key_bytes_transferred: u64,
    /// Evaluation-key bytes in server memory (expanded, Fourier domain).
    pub key_bytes_memory: u64,
    /// Bytes of one ciphertext.
    pub ciphertext_bytes: usize,
    /// Largest per-bootstrapping failure probability (log2); `None` (JSON `null`) when the plan
    /// has no bootstrapping.
    pub max_log2_p_fail_pbs: Option<f64>,
    /// Union bound of all failures for one sample (log2).
    pub log2_p_fail_sample: f64,
}

impl QuantizedPlan {
    /// The public description of this plan under `params` (built with `opts`).
    pub fn public(&self, params: &ExactParams, opts: &QuantizeOptions) -> QuantPublic {
        let (t, m) = params.key_bytes();
        QuantPublic {
            format: QUANT_FORMAT.to_string(),
            params: params.literal().clone(),
            params_digest: crate::io::format::digest_hex(&params.digest()),
            options: opts.clone(),
            input_dim: self.input_dim(),
            output_dim: self.output_dim(),
            input_scale: self.input_scale,
            input_bits: self.input_bits,
            input_log_modulus: self.input_log_modulus(),
            output_log_modulus: self.output_log_modulus(),
            output_scales: if self.argmax {
                vec![1.0; self.output_dim()]
            } else {
                self.layers
                    .last()
                    .map(|l| l.weight_scales.iter().map(|s| s * l.input_scale).collect())
                    .unwrap_or_default()
            },
            predicted_pbs: self.predicted_pbs(),
            key_bytes_transferred: t,
            key_bytes_memory: m,
            ciphertext_bytes: params.ciphertext_bytes(),
            max_log2_p_fail_pbs: self.report.max_log2_p_fail_pbs,
            log2_p_fail_sample: self.report.log2_p_fail_sample,
        }
    }
}

impl QuantPublic {
    /// Checks the format tag and the parameter set; returns the parameters.
    ///
    /// # Errors
    /// [`Error::Format`] for a wrong tag or digest, [`Error::InvalidParameters`] for a
    /// parameter set that is not vetted.
    pub fn checked_params(&self) -> Result<ExactParams> {
        if self.format != QUANT_FORMAT {
            return Err(Error::format(
                "exact quantization file",
                format!("format {:?}, expected {QUANT_FORMAT:?}", self.format),
            ));
        }
        let p = ExactParams::from_literal(self.params.clone())?;
        if crate::io::format::digest_hex(&p.digest()) != self.params_digest {
            return Err(Error::format(
                "exact quantization file",
                "parameter digest does not match the parameters",
            ));
        }
        Ok(p)
    }

    /// Quantizes one input vector as the plan does.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong width, [`Error::InvalidValue`] for a
    /// non-finite value.
    pub fn quantize_input(&self, x: ArrayView1<f64>) -> Result<Vec<i64>> {
        if x.len() != self.input_dim {
            return Err(Error::dims("exact input", self.input_dim, x.len()));
        }
        if x.iter().any(|v| !v.is_finite()) || !(2..=16).contains(&self.input_bits) {
            return Err(Error::InvalidValue {
                context: "exact input".into(),
                reason: "non-finite feature or bad input width".into(),
            });
        }
        Ok(quantize_vec(x, self.input_scale, self.input_bits))
    }

    /// Real outputs from decrypted integers.
    pub fn dequantize(&self, y: &[i64]) -> Vec<f64> {
        y.iter()
            .zip(&self.output_scales)
            .map(|(&v, s)| v as f64 * s)
            .collect()
    }
}
