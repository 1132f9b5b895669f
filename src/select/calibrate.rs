//! The adapter-calibrated public error bound (issue 14): the flooding width and the
//! selector's precision target both need two facts about the adapter that the unit-weight
//! precision model of [`crate::plan::sanitize::model_precision_bits`] does not know:
//!
//! * **how much the adapter amplifies the CKKS noise** (weights with standardisation folded
//!   in can make the output error ~40x larger than the model's; random heads keep it 3 bits
//!   below), and
//! * **how large its logits are** (precision is judged relative to the largest logit of a
//!   query: a head whose logits stay below 0.3 needs 1.7 bits more than a unit logit).
//!
//! [`calibrate`] measures the first by running the adapter encrypted at a small ring with a
//! throwaway key, against its f64 twin, on the first [`CALIBRATION_TRIALS`] calibration
//! features when given (`--calib`), else on seeded inputs uniform in `[-1, 1]` (which
//! drive a side network's activations far out of their range: give features for those):
//! this is deterministic (fixed seed), so the server (`evaluate`, `serve`) and `params
//! select` on the same card and features find the same offset. The second is measured on the twin over calibration
//! features when the caller has them (`params select --calib`), else on the same uniform
//! inputs (which can be far from the data: a probe trained on small embeddings sees tiny
//! logits on them, and the selector then asks for more precision than needed). The results are published rounded ([`ErrorProfile`]),
//! so they reveal at most their rounded values (`docs/threat-model.md`).
//!
//! The error offset `c` is the public bound in the form
//! `log2 eps = c + (log2 N - 12) - log_scale` (the RMS error of one query's outputs, message
//! units): the measured value at `N = 2^12` (or the smallest ring the plan fits) and scale
//! `2^40`, plus [`CALIBRATION_MARGIN_BITS`], rounded up to half a bit. The rescaling and
//! fresh-encryption noise per slot grow as `N` with a ternary secret (`sqrt(N)` coefficients
//! of size `sqrt(N)`), so the extrapolation to larger rings takes one bit per doubling, not
//! the half bit of the unit model.

use crate::ckks::security::Security;
use crate::ckks::{
    CkksParams, CkksParamsLiteral, Decryptor, Encoder, EncryptionKey, Evaluator, KeyGenerator,
};
use crate::model::{reference, Adapter};
use crate::plan::{Mode, Plan, PlanOptions};
use crate::{Error, Result};
use rand::{RngCore, SeedableRng};
use serde::Serialize;

/// Bits added to the measured error offset before publication: covers the queries the
/// calibration did not see and the extrapolation from the calibration ring.
pub const CALIBRATION_MARGIN_BITS: f64 = 1.0;

/// Queries the calibration runs (one sample each, latency layout).
pub const CALIBRATION_TRIALS: usize = 8;

/// Scale of the calibration chain, log2.
const CALIBRATION_LOG_SCALE: u32 = 40;

/// Seed of the calibration's inputs and throwaway keys (fixed: the server and the
/// selector must find the same figures).
const CALIBRATION_SEED: u64 = 0x6865_7065_6674_0e14;

/// What [`calibrate`] found, in the rounded form that is published.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ErrorProfile {
    /// Public error offset `c` (bits, multiple of 0.5): `log2 eps = c + (log2 N - 12) -
    /// log_scale` bounds the RMS error of one query's outputs. The unit model is 15 bits
    /// with half a bit per doubling of `N`.
    pub offset_bits: f64,
    /// The measured offset before margin and rounding.
    pub measured_offset_bits: f64,
    /// log2 of the logit floor ([`LOGIT_FLOOR_QUANTILE`] quantile, over the calibration
    /// queries, of a query's largest |logit|), rounded down to half a bit: precision "relative to the largest logit" is the
    /// precision against a unit logit plus this.
    pub logit_floor_log2: f64,
    /// Ring degree (log2) the calibration ran at.
    pub log_n: u32,
}

impl ErrorProfile {
    /// Bits the selector must reach against a unit logit so that `bits` remain relative to
    /// the largest logit: `bits - min(0, logit_floor_log2)` (large logits are not credited).
    pub fn unit_bits_for(&self, bits: f64) -> f64 {
        bits - self.logit_floor_log2.min(0.0)
    }
}

/// Measures the [`ErrorProfile`] of `adapter` (see the module docs); the logit floor on
/// `features` (one array per input, samples x width) when given. `Ok(None)` when the
/// adapter's logits are all zero on the calibration inputs (a public card without
/// weights): the unit model applies.
///
/// Cost: one key generation with the plan's Galois keys at `N = 2^12` (or the smallest ring
/// the plan fits), [`CALIBRATION_TRIALS`] encrypted queries and twin evaluations: well under
/// a second for the shipped adapters.
///
/// # Errors
/// An adapter no ring up to `N = 2^16` can hold, and evaluation errors.
pub fn calibrate(
    adapter: &Adapter,
    features: Option<&[ndarray::Array2<f64>]>,
) -> Result<Option<ErrorProfile>> {
    let options = PlanOptions::default();
    // a public card (every weight zero) has nothing to calibrate
    let probe: Vec<ndarray::Array2<f64>> = adapter
        .input_dims()
        .iter()
        .map(|&d| {
            ndarray::Array2::from_shape_fn((2, d), |(r, c)| {
                if r == 0 {
                    0.5
                } else {
                    0.7 * (((c * 7 + 3) % 11) as f64 / 5.0 - 1.0)
                }
            })
        })
        .collect();
    let views: Vec<ndarray::ArrayView2<f64>> = probe.iter().map(|a| a.view()).collect();
    if reference::evaluate_batch(adapter, &views)?
        .0
        .iter()
        .all(|v| *v == 0.0)
    {
        return Ok(None);
    }
    let depth = super::required_depth(adapter, options)?;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(CALIBRATION_SEED);
    let mut last = None;
    for log_n in 12u32..=16 {
        let mut lit = CkksParamsLiteral::new(
            log_n,
            [vec![50], vec![CALIBRATION_LOG_SCALE; depth]].concat(),
            vec![50],
            CALIBRATION_LOG_SCALE,
        )
        .with_security(Security::Unchecked);
        lit.dnum = Some(depth + 1);
        let params = CkksParams::from_literal(lit)?;
        let plan = match Plan::compile(adapter, &params, options) {
            Ok(p) => p,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let Some((c, uniform_floor)) = run(adapter, &plan, features, &mut rng)? else {
            return Ok(None);
        };
        let floor = match features {
            Some(f) => data_logit_floor(adapter, f)?,
            None => uniform_floor,
        };
        if floor <= 0.0 || !floor.is_finite() {
            return Ok(None);
        }
        return Ok(Some(profile(c, floor, log_n)));
    }
    Err(last.unwrap_or_else(|| Error::params("no ring up to N = 2^16 holds this adapter")))
}

/// Quantile of the per-sample largest |logit| taken as the logit floor (the median): a
/// query's largest logit is above it half of the time, and the largest over `k` queries
/// (what "relative to the largest logit" measures over a set of queries) with probability
/// `1 - 2^-k`. Samples whose logits all sit near zero (near-ties of a two-class head) have
/// no meaningful relative precision; a lower quantile would let them set the scale (on
/// finefoods/bottleneck the 10% quantile is 2^-4.5, the median 2^-1.5).
pub const LOGIT_FLOOR_QUANTILE: f64 = 0.5;

/// The [`LOGIT_FLOOR_QUANTILE`] quantile, over the samples of `features`, of the twin's
/// largest |logit|.
fn data_logit_floor(adapter: &Adapter, features: &[ndarray::Array2<f64>]) -> Result<f64> {
    let views: Vec<ndarray::ArrayView2<f64>> = features.iter().map(|a| a.view()).collect();
    let (out, _) = reference::evaluate_batch(adapter, &views)?;
    let mut maxima: Vec<f64> = out
        .rows()
        .into_iter()
        .map(|r| r.iter().fold(0f64, |m, v| m.max(v.abs())))
        .collect();
    Ok(quantile(&mut maxima))
}

/// The [`LOGIT_FLOOR_QUANTILE`] quantile of `v` (lower order statistic); 0 when empty.
fn quantile(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = (v.len().saturating_sub(1) as f64 * LOGIT_FLOOR_QUANTILE).floor() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

fn profile(measured: f64, logit_floor: f64, log_n: u32) -> ErrorProfile {
    ErrorProfile {
        offset_bits: ((measured + CALIBRATION_MARGIN_BITS) * 2.0).ceil() / 2.0,
        measured_offset_bits: measured,
        logit_floor_log2: (logit_floor.log2() * 2.0).floor() / 2.0,
        log_n,
    }
}

/// (measured offset, logit floor) of `plan` over the calibration queries.
fn run<G: RngCore + rand::CryptoRng>(
    adapter: &Adapter,
    plan: &Plan,
    features: Option<&[ndarray::Array2<f64>]>,
    rng: &mut G,
) -> Result<Option<(f64, f64)>> {
    debug_assert_eq!(plan.options().mode, Mode::Latency);
    let params = plan.params();
    let kg = KeyGenerator::new(params);
    let sk = kg.gen_secret_key(rng);
    let pk = kg.gen_public_key(&sk, rng)?;
    let keys = kg.gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), rng)?;
    let ev = Evaluator::with_keys(params, std::sync::Arc::new(keys))?;
    let encoder = Encoder::new(params)?;
    let dec = Decryptor::new(params, &sk)?;
    let prepared = plan.prepare()?;
    let mut worst = 0f64;
    let mut maxima = Vec::with_capacity(CALIBRATION_TRIALS);
    let rows = features
        .and_then(|f| f.first())
        .map_or(CALIBRATION_TRIALS, |f| f.nrows().min(CALIBRATION_TRIALS));
    for t in 0..rows {
        let inputs: Vec<ndarray::Array2<f64>> = match features {
            Some(f) => f.iter().map(|a| a.select(ndarray::Axis(0), &[t])).collect(),
            None => adapter
                .input_dims()
                .iter()
                .map(|&d| {
                    ndarray::Array2::from_shape_fn((1, d), |_| {
                        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                        2.0 * u - 1.0
                    })
                })
                .collect(),
        };
        let views: Vec<ndarray::ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
        let (want, _) = reference::evaluate_batch(adapter, &views)?;
        let q = plan.encrypt_query(&encoder, EncryptionKey::Public(&pk), &views, rng)?;
        let res = prepared.evaluate(&ev, &q)?;
        let got = plan.decrypt_result(&encoder, &dec, &res, 1)?;
        let n = want.len().max(1) as f64;
        let ms: f64 = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            / n;
        worst = worst.max(ms.sqrt());
        maxima.push(want.iter().fold(0f64, |m, v| m.max(v.abs())));
    }
    let floor = quantile(&mut maxima);
    if floor <= 0.0 || !floor.is_finite() || worst <= 0.0 {
        return Ok(None);
    }
    let measured = worst.log2() + CALIBRATION_LOG_SCALE as f64 - (params.log_n() as f64 - 12.0);
    Ok(Some((measured, floor)))
}
