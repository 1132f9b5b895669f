//! Output sanitization of token plans, as [`Plan::sanitize`](crate::plan::Plan::sanitize)
//! does for pooled plans (see [`crate::plan::sanitize`] for the four steps and the flooding
//! formula): mask every slot that is not an output, drop to the output level, re-randomize
//! under the client's public key, flood.
//!
//! A token plan's output columns are never clean outside the output slots: a bias added
//! to a column ciphertext fills every slot, and in column layout each value is repeated
//! with period `T'`. So the mask is always applied, and it costs one level, which
//! [`select_token_flooded`](crate::select::token::select_token_flooded) reserves.

use rand::{CryptoRng, RngCore};

use crate::ckks::{Ciphertext, Encoder, Evaluator, PublicKey};
use crate::plan::sanitize::{rerandomize_and_flood, tail_bits};
use crate::plan::{FloodingConfig, SanitizeConfig, SanitizeReport};
use crate::{Error, Result};

use super::{Layout, TokenPlan};

/// Bits added to the public error bound `eps` of the pooled-adapter precision model for
/// token plans: they are deeper and multiply ciphertexts, and lost about 2.5 bits against
/// the model in the example `token_owc` (the same margin as
/// [`TOKEN_MARGIN_BITS`](crate::select::token::TOKEN_MARGIN_BITS) in the selection).
pub const TOKEN_EPS_MARGIN_BITS: f64 = 3.0;

impl TokenPlan {
    /// Output values the client reads per sample (`rows x width` of the output).
    pub fn output_values(&self) -> usize {
        self.output_shape.0 * self.output_shape.1
    }

    /// The output shape `(rows, width)` (`1 x classes` after pooling and a head).
    pub fn output_shape(&self) -> (usize, usize) {
        self.output_shape
    }

    /// `log2 eps` of the flooding `f` for these parameters: `f`'s own bound when set, else
    /// the public precision model at the default scale plus [`TOKEN_EPS_MARGIN_BITS`].
    fn eps_log2(&self, f: &FloodingConfig, log_scale: f64, log_n: u32) -> f64 {
        match f.eval_error_log2 {
            Some(e) => e,
            None => f.eps_log2(log_scale, log_n) + TOKEN_EPS_MARGIN_BITS,
        }
    }

    /// The mask of output ciphertext `a`: 1 on the slots holding an output value (the first
    /// period only in column layout), 0 elsewhere; and the number of ones.
    fn output_mask(&self, a: usize) -> (Vec<f64>, usize) {
        let (rows, width) = self.output_shape;
        let v: Vec<f64> = match self.layouts.last().copied().unwrap_or(Layout::Cols) {
            Layout::Cols => (0..self.slots)
                .map(|i| if i < rows.min(self.tokens) { 1.0 } else { 0.0 })
                .collect(),
            Layout::Packed => self.packed_slots(a, width, rows, |_, _| 1.0),
        };
        let live = v.iter().filter(|&&x| x != 0.0).count();
        (v, live)
    }

    /// Sanitizes the output ciphertexts of one sample ([`TokenPlan::evaluate`]'s result):
    /// mask to the output slots (one level: the output must sit above
    /// [`CkksParams::output_floor_level`](crate::ckks::CkksParams::output_floor_level)),
    /// drop to the output level, re-randomize with a fresh encryption of zero under `pk`,
    /// flood (when `cfg` says so) with `sigma = 2^(s/2) sqrt(t) D` where `D` counts only
    /// the output slots. The error bound `eps` is the public precision model plus
    /// [`TOKEN_EPS_MARGIN_BITS`].
    ///
    /// Cost per output ciphertext: one plaintext product and rescale, one public-key
    /// encryption of zero, one NTT of the flooding noise.
    ///
    /// # Errors
    /// [`Error::LevelExhausted`] when the output has no level left for the mask (choose
    /// parameters with [`select_token_flooded`](crate::select::token::select_token_flooded));
    /// [`Error::InvalidValue`] if the flooding noise would overflow `q_0`.
    pub fn sanitize<G: RngCore + CryptoRng>(
        &self,
        ev: &Evaluator,
        outputs: Vec<Ciphertext>,
        pk: &PublicKey,
        cfg: &SanitizeConfig,
        rng: &mut G,
    ) -> Result<(Vec<Ciphertext>, SanitizeReport)> {
        let params = ev.params();
        let floor = params.output_floor_level();
        let encoder = Encoder::new(params)?;
        let mut prepped = Vec::with_capacity(outputs.len());
        for (a, mut ct) in outputs.into_iter().enumerate() {
            let level = ct.level();
            if level <= floor {
                return Err(Error::LevelExhausted {
                    op: format!(
                        "masking the non-output slots of a token adapter's output (at level {level}, the output \
                         level is {floor}): choose parameters that reserve the mask level \
                         (`hepeft params select` on the token card, or select_token_flooded)"
                    ),
                    needed: 1,
                    available: 0,
                });
            }
            let (mask, live) = self.output_mask(a);
            let pt = encoder.encode(&mask, level, params.q()[level.get()] as f64)?;
            ev.mul_plain_assign(&mut ct, &pt)?;
            ev.rescale_assign(&mut ct)?;
            ev.drop_to_level_assign(&mut ct, floor)?;
            prepped.push((ct, live.max(1)));
        }
        let eps_log2 = cfg.flooding.as_ref().map_or(0.0, |f| {
            self.eps_log2(f, params.default_scale().log2(), params.log_n())
        });
        let read = self.output_values().max(1) as f64;
        let (out, flooding) = rerandomize_and_flood(ev, pk, prepped, read, eps_log2, cfg, rng)?;
        Ok((
            out,
            SanitizeReport {
                masked: true,
                mask_note: "non-output slots (and the copies of each value in column layout) zeroed by a mask \
                            product (one level)"
                    .into(),
                output_level: floor,
                flooding,
            },
        ))
    }

    /// Predicted output precision (bits, unit-sized output) after [`TokenPlan::sanitize`]
    /// with flooding `f` under parameters of scale `2^log_scale` and degree `2^log_n`
    /// ([`flooded_precision_bits`] for this plan's output values).
    pub fn flooded_precision_bits(&self, f: &FloodingConfig, log_scale: f64, log_n: u32) -> f64 {
        flooded_precision_bits(self.output_values(), f, log_scale, log_n)
    }
}

/// Predicted precision (bits, unit-sized output) of `values` output values after
/// [`TokenPlan::sanitize`] with flooding `f` at scale `2^log_scale`, degree `2^log_n`: the
/// same `sigma` (only the output values live) and the bound [`tail_bits`] gives over them.
/// Depends on the output size and the parameter sizes only (a few float operations).
pub fn flooded_precision_bits(
    values: usize,
    f: &FloodingConfig,
    log_scale: f64,
    log_n: u32,
) -> f64 {
    let live = values.max(1) as f64;
    let half_n = (log_n as f64 - 1.0).exp2();
    let d2_units = 4.0 * live / half_n;
    let eps_log2 = match f.eval_error_log2 {
        Some(e) => e,
        None => f.eps_log2(log_scale, log_n) + TOKEN_EPS_MARGIN_BITS,
    };
    let slot_std_log2 = f.statistical_security as f64 / 2.0
        + (f.queries.max(1) as f64).log2() / 2.0
        + d2_units.log2() / 2.0
        + eps_log2
        + half_n.log2() / 2.0;
    -slot_std_log2 - tail_bits(live)
}
