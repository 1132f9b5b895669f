//! Output sanitization: what the server does to an encrypted result before it leaves, so
//! that the client's decryption reveals the requested logits and nothing else about the
//! adapter (issue 8; the threat model is `docs/threat-model.md`).
//!
//! [`Plan::sanitize`] runs four steps on every result ciphertext:
//!
//! 1. **Mask** (latency layout): zero every slot that is not an output. When the final stage
//!    is a dense map without wide blocks the mask is folded into its diagonals and bias at
//!    compilation ([`Plan::output_mask_folded`]): no product and no level. Otherwise, when
//!    the final stage is dense or affine the non-output slots already hold, by construction of the
//!    diagonals and packed vectors, only exact zeros or exact copies of the outputs, and
//!    the mask is applied only if a level is left (one plaintext product and one rescale).
//!    When the final stage is an activation (whose value at 0, a function of its
//!    coefficients, sits in the gap slots) a level is required and its absence is an error.
//!    Batch layout: every slot is the adapter applied to a sample the client chose, so
//!    there is nothing to mask.
//! 2. **Drop to the output level** ([`crate::ckks::CkksParams::output_floor_level`]: 0, or 1
//!    on chains with a prime reserved for the output): fewer limbs to download, and nothing
//!    of the upper limbs remains.
//! 3. **Re-randomize**: add a fresh public-key encryption of zero under the client's key,
//!    so `c_1` no longer is a deterministic function of the query and the weights.
//! 4. **Flood** (on by default): add a rounded Gaussian of standard deviation `sigma` to
//!    every coefficient of `c_0`, so that the decrypted error no longer depends on the
//!    weights (see [`FloodingConfig`] for the formula and what it costs).
//!
//! Steps 3 and 4 are the scheme operations [`Evaluator::rerandomize_assign`] and
//! [`Evaluator::flood_assign`] (`crate::ckks::sanitize`); this module decides which
//! ciphertexts get them and how wide the flooding is.
//!
//! ## The flooding formula
//!
//! Let the evaluation error of one query's outputs, in message units, have a root-mean-square
//! over the live slots of at most `eps`. Its
//! coefficient vector `e` then has `||e||_2 <= eps * Delta` (the slots are the canonical
//! embedding, an isometry up to `sqrt(N/2)` on the N/2 slots), and two adapters with the
//! same logits differ in their errors by `d`, `||d||_2 <= D = 2 eps Delta`. After a mask
//! product only the `k` output slots carry weight-dependent error, so `D = 2 eps Delta
//! sqrt(k / (N/2))`; over several result ciphertexts the `D^2` add. With flooding
//! noise `f ~ N(0, sigma^2)` per coefficient, the client's view of one query differs
//! between the two adapters by a Kullback–Leibler divergence of at most `D^2 / (2 sigma^2)`;
//! over `t` adaptively chosen queries the divergences add (chain rule). We take
//!
//! ```text
//! sigma = 2^(s/2) * sqrt(t) * D
//! ```
//!
//! so that the total divergence is at most `2^(-s-1)` and, by Pinsker's inequality, the
//! statistical distance between the two views is at most `2^(-s/2-1)`: `s` bits of
//! security in the sense of Li, Micciancio, Schultz and Sorrell (CRYPTO 2022, "Securing
//! approximate homomorphic encryption using differential privacy"), whose Rényi/bit-security
//! analysis is what allows `2^(s/2)` instead of the `2^s` a plain statistical-distance
//! argument needs. The same shape is OpenFHE's `NOISE_FLOODING_DECRYPT` rule,
//! `log2 sigma = s/2 + log2 sqrt(12 t) + noise estimate`. After `q > t` queries the bound
//! degrades gracefully to `2^(-s/2-1) * sqrt(q/t)`.
//!
//! **Cost.** Each slot receives flooding noise of standard deviation
//! `sigma * sqrt(N/2) / Delta = 2^(s/2+1) * sqrt(t) * sqrt(N/2) * eps` per real component
//! (one unmasked ciphertext): the output loses `s/2 + 1 + log2(t)/2 + (log2 N - 1)/2` bits
//! against the error bound `eps`; at `s = 40`, `t = 1`, `N = 2^13`: 27 bits. A mask
//! replaces `(log2 N - 1)/2` by `log2(k)/2`. [`FloodingConfig::cost_bits`] is the unmasked
//! (worst) case that `params select` accounts for; [`SanitizeReport`] has the exact figure.
//!
//! **Where `eps` comes from.** It must not depend on the weights (the flooding width is
//! visible to the client), so by default it is the public precision model of the
//! parameter set ([`model_precision_bits`]) plus [`EPS_MARGIN_BITS`] (0), as a bound on the
//! RMS of one query's outputs (`tests/flooding_bound.rs` measures it per family and preset;
//! adapters with weights far from unit scale can exceed it, see `docs/threat-model.md`). The server can check
//! that its adapter respects that bound with [`crate::plan::PreparedPlan`] and a throwaway
//! key ([`measure_output_error`]); the guarantee holds for adapters that do.

use super::compile::{Mode, Plan, StageOp};
use crate::ckks::{
    Ciphertext, Decryptor, Encoder, EncryptionKey, Evaluator, KeyGenerator, PublicKey,
};
use crate::{Error, Result};
use rand::{CryptoRng, RngCore};
use serde::Serialize;

/// Bits added to the precision model's error to get the bound `eps` on the root-mean-square
/// error of the live output slots of one query (see "Where `eps` comes from"). Negative: the
/// model bounds the worst slot over many queries, the RMS over one query's outputs sits
/// 1.9 to 3.0 bits below it on every preset and adapter family measured
/// (`tests/flooding_bound.rs`), and the bound keeps at least one bit of that.
pub const EPS_MARGIN_BITS: f64 = 0.0;

/// log2(3): precision figures of one value count three standard deviations (99.73%); over
/// several values see [`tail_bits`].
pub const THREE_SIGMA_BITS: f64 = 1.584_962_500_721_156;

/// Probability that the precision figure after flooding is exceeded by one query's worst
/// output: that of three standard deviations for one value (`P(|X| > 3 sigma)`).
pub const TAIL_PROBABILITY: f64 = 0.0027;

/// `log2 z` where `z` standard deviations bound the largest of `count` independent centered
/// Gaussians except with probability at most [`TAIL_PROBABILITY`]: the smallest `z` with
/// `count * 2 phi(z) / z <= TAIL_PROBABILITY` (the Mills-ratio upper bound of the two-sided
/// tail, so the figure is valid for every `count`). About 1.60 bits for one value (three
/// standard deviations, slightly above), 2.07 for 100, 2.37 for 10^4, 2.57 for 10^6. Cost: a bisection.
pub fn tail_bits(count: f64) -> f64 {
    let target = TAIL_PROBABILITY / count.max(1.0);
    let tail = |z: f64| 2.0 * (-z * z / 2.0).exp() / ((2.0 * std::f64::consts::PI).sqrt() * z);
    let (mut lo, mut hi) = (1.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if tail(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi.log2()
}

/// Default statistical security of the flooding, bits.
pub const DEFAULT_STATISTICAL_SECURITY: u32 = 40;

pub use crate::ckks::precision::model_precision_bits;

/// Noise flooding settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FloodingConfig {
    /// Statistical security `s`, bits (default 40).
    pub statistical_security: u32,
    /// Number of result decryptions `t` the guarantee covers at full strength (default 1;
    /// beyond it the distance bound grows as `sqrt(queries / t)`).
    pub queries: u64,
    /// log2 of the per-slot error bound `eps` in message units; `None` takes the public
    /// precision model of the parameters plus [`EPS_MARGIN_BITS`].
    pub eval_error_log2: Option<f64>,
    /// The adapter's calibrated public error offset `c`
    /// ([`crate::select::calibrate::ErrorProfile::offset_bits`]): when set (and
    /// `eval_error_log2` is not), `log2 eps = c + (log2 N - 12) - log_scale` instead of the
    /// unit-weight model.
    #[serde(default)]
    pub error_offset_bits: Option<f64>,
}

impl Default for FloodingConfig {
    fn default() -> Self {
        FloodingConfig {
            statistical_security: DEFAULT_STATISTICAL_SECURITY,
            queries: 1,
            eval_error_log2: None,
            error_offset_bits: None,
        }
    }
}

impl FloodingConfig {
    /// Flooding at `statistical_security` bits for `queries` decryptions, error bound from
    /// the precision model.
    pub fn new(statistical_security: u32, queries: u64) -> Self {
        FloodingConfig {
            statistical_security,
            queries,
            eval_error_log2: None,
            error_offset_bits: None,
        }
    }

    /// The error bound `log2 eps` used for parameters with scale `2^log_scale`, degree `2^log_n`.
    pub fn eps_log2(&self, log_scale: f64, log_n: u32) -> f64 {
        match (self.eval_error_log2, self.error_offset_bits) {
            (Some(e), _) => e,
            (None, Some(c)) => c + (log_n as f64 - 12.0) - log_scale,
            (None, None) => -model_precision_bits(log_scale, log_n) + EPS_MARGIN_BITS,
        }
    }

    /// This configuration with the adapter's calibrated error offset (see
    /// [`FloodingConfig::error_offset_bits`]); `None` keeps the unit model.
    pub fn with_error_offset(self, offset_bits: Option<f64>) -> Self {
        FloodingConfig {
            error_offset_bits: offset_bits,
            ..self
        }
    }

    /// Bits of output precision flooding costs against the bound `eps` at degree `2^log_n`
    /// when all `N/2` slots of one result ciphertext are live (no mask):
    /// `s/2 + 1 + log2(t)/2 + (log2 N - 1)/2`. A mask to `k` output slots replaces
    /// `(log2 N - 1)/2` by `log2(k)/2` ([`Plan::flooded_precision_bits`] has the exact figure).
    pub fn cost_bits(&self, log_n: u32) -> f64 {
        self.statistical_security as f64 / 2.0
            + 1.0
            + (self.queries.max(1) as f64).log2() / 2.0
            + (log_n as f64 - 1.0) / 2.0
    }

    /// Standard deviation (per real slot component, message units) of the flooding noise
    /// for parameters with scale `2^log_scale` and degree `2^log_n`, as log2.
    pub fn slot_std_log2(&self, log_scale: f64, log_n: u32) -> f64 {
        self.eps_log2(log_scale, log_n) + self.cost_bits(log_n)
    }

    /// Predicted precision (bits, unit-sized output) after flooding one unmasked result
    /// ciphertext: `-log2` of the bound [`tail_bits`] gives for its `N/2` slots. Negative
    /// means nothing survives.
    pub fn precision_after(&self, log_scale: f64, log_n: u32) -> f64 {
        -self.slot_std_log2(log_scale, log_n) - tail_bits((log_n as f64 - 1.0).exp2())
    }
}

/// What [`Plan::sanitize`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SanitizeConfig {
    /// Noise flooding; `None` turns it off (the decrypted error then depends on the
    /// weights: see `docs/threat-model.md`).
    pub flooding: Option<FloodingConfig>,
}

impl SanitizeConfig {
    /// Masking, level drop, re-randomization and flooding at the defaults (40 bits, 1 query).
    pub fn flooded() -> Self {
        SanitizeConfig {
            flooding: Some(FloodingConfig::default()),
        }
    }

    /// Masking, level drop and re-randomization, without flooding.
    pub fn without_flooding() -> Self {
        SanitizeConfig { flooding: None }
    }
}

/// Figures of a sanitization (identical for every query of a plan).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SanitizeReport {
    /// Whether non-output slots were zeroed: by a mask product (one level), or by the mask
    /// folded into the final layer ([`Plan::output_mask_folded`]).
    pub masked: bool,
    /// Why masking was or was not needed.
    pub mask_note: String,
    /// Level of the returned ciphertexts (always 0).
    pub output_level: crate::ckks::Level,
    /// Flooding figures, if on.
    pub flooding: Option<FloodingReport>,
}

/// Flooding figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FloodingReport {
    /// Statistical security `s`, bits.
    pub statistical_security: u32,
    /// Decryptions `t` covered at full strength.
    pub queries: u64,
    /// log2 of the per-slot error bound `eps` (message units).
    pub eps_log2: f64,
    /// log2 of the coefficient standard deviation `sigma`.
    pub sigma_log2: f64,
    /// log2 of the flooding noise's per-slot standard deviation (message units).
    pub slot_std_log2: f64,
    /// Bits lost against `eps`.
    pub cost_bits: f64,
    /// Predicted precision after flooding (bits, unit-sized output): `-log2` of the bound
    /// [`tail_bits`] gives for the largest flooding noise over the query's live outputs.
    pub precision_bits_after: f64,
    /// log2 of the statistical-distance bound between two adapters' views over `t` queries.
    pub distance_bound_log2: f64,
}

impl Plan {
    /// Whether the output's non-output slots hold only zeros and exact copies of outputs
    /// (true for a final dense or affine stage, and sums or concatenations of such).
    fn output_gaps_clean(&self) -> bool {
        fn clean(plan: &Plan, idx: usize) -> bool {
            match plan.stages.get(idx).map(|s| &s.op) {
                Some(StageOp::Dense { .. } | StageOp::Affine { .. } | StageOp::Input) => true,
                Some(StageOp::Add | StageOp::Concat) => plan
                    .stages
                    .get(idx)
                    .is_some_and(|s| s.inputs.iter().all(|&i| clean(plan, i))),
                Some(StageOp::Poly { .. } | StageOp::Square { .. }) | None => false,
            }
        }
        self.stages
            .len()
            .checked_sub(1)
            .is_some_and(|i| clean(self, i))
    }

    /// Sanitizes the result ciphertexts of one query (see the module docs): mask, drop to
    /// level 0, re-randomize with a fresh encryption of zero under `pk`, flood.
    ///
    /// Cost per ciphertext: one public-key encryption of zero at level 0, one NTT of the
    /// flooding noise, and (when masking) one plaintext product and one rescale.
    ///
    /// # Errors
    /// [`Error::LevelExhausted`] if the output must be masked and has no level left;
    /// [`Error::InvalidValue`] if the flooding noise would overflow `q_0` (the parameters
    /// cannot carry this statistical security); parameter mismatches.
    pub fn sanitize<G: RngCore + CryptoRng>(
        &self,
        ev: &Evaluator,
        outputs: Vec<Ciphertext>,
        pk: &PublicKey,
        cfg: &SanitizeConfig,
        rng: &mut G,
    ) -> Result<(Vec<Ciphertext>, SanitizeReport)> {
        let params = &self.params;
        let latency = self.options.mode == Mode::Latency;
        let clean = self.output_gaps_clean();
        let folded = self.output_mask_folded();
        let floor = params.output_floor_level();
        let mut masked = false;
        let segments = self.output_segments().to_vec();
        let encoder = if latency {
            Some(Encoder::new(params)?)
        } else {
            None
        };
        // Pass 1: mask and drop; pass 2 needs every ciphertext's masking state for the bound.
        let mut prepped = Vec::with_capacity(outputs.len());
        for (k, mut ct) in outputs.into_iter().enumerate() {
            let mut live_slots = params.slots();
            if let Some(enc) = &encoder {
                let level = ct.level();
                if folded {
                    masked = true;
                    live_slots = segments.get(k).map_or(0, |s| s.dim).max(1);
                } else if level > floor {
                    let dim = segments.get(k).map_or(0, |s| s.dim);
                    let mask: Vec<f64> = (0..params.slots())
                        .map(|s| if s < dim { 1.0 } else { 0.0 })
                        .collect();
                    let q = params.q()[level.get()] as f64;
                    let pt = enc.encode(&mask, level, q)?;
                    ev.mul_plain_assign(&mut ct, &pt)?;
                    ev.rescale_assign(&mut ct)?;
                    masked = true;
                    live_slots = dim.max(1);
                } else if !clean {
                    return Err(Error::LevelExhausted {
                        op: "masking the non-output slots of an output that ends in an activation"
                            .into(),
                        needed: 1,
                        available: 0,
                    });
                }
            }
            let to = floor.min(ct.level());
            ev.drop_to_level_assign(&mut ct, to)?;
            prepped.push((ct, live_slots));
        }
        // Values the client reads (the precision figure bounds the largest of their errors).
        let read_values: f64 = if latency {
            segments.iter().map(|s| s.dim.max(1) as f64).sum()
        } else {
            prepped.iter().map(|(_, live)| *live as f64).sum()
        };
        let eps_log2 = cfg.flooding.as_ref().map_or(0.0, |f| {
            f.eps_log2(params.default_scale().log2(), params.log_n())
        });
        let (out, flood_report) =
            rerandomize_and_flood(ev, pk, prepped, read_values, eps_log2, cfg, rng)?;
        let mask_note = if !latency {
            "batch layout: every slot is an output of a sample the client chose".to_string()
        } else if folded {
            "non-output slots zeroed by the mask folded into the final layer's diagonals (no level)"
                .to_string()
        } else if masked {
            "non-output slots zeroed by a mask product (one level)".to_string()
        } else {
            "no level left; the final stage is linear, so non-output slots hold only zeros and copies of the outputs"
                .to_string()
        };
        Ok((
            out,
            SanitizeReport {
                masked,
                mask_note,
                output_level: floor,
                flooding: flood_report,
            },
        ))
    }
}

/// Steps 3 and 4 of the sanitization (see the module docs) on result ciphertexts already
/// masked and dropped to the output level: `prepped` holds each ciphertext with its number
/// of live slots (the weight-dependent ones), `read_values` the values the client reads
/// (for the precision figure), `eps_log2` the public error bound `log2 eps`. Adds a fresh
/// encryption of zero under `pk` to each, then (when `cfg` floods) the
/// rounded Gaussian of `sigma = 2^(s/2) sqrt(t) D`. Shared by [`Plan::sanitize`] and the
/// token plans ([`crate::plan::token::TokenPlan::sanitize`]). Cost per ciphertext: one
/// public-key encryption of zero and one NTT of the noise.
///
/// # Errors
/// [`Error::InvalidValue`] if the flooding noise would overflow `q_0`.
pub(crate) fn rerandomize_and_flood<G: RngCore + CryptoRng>(
    ev: &Evaluator,
    pk: &PublicKey,
    prepped: Vec<(Ciphertext, usize)>,
    read_values: f64,
    eps_log2: f64,
    cfg: &SanitizeConfig,
    rng: &mut G,
) -> Result<(Vec<Ciphertext>, Option<FloodingReport>)> {
    let params = ev.params();
    // D^2 = sum over ciphertexts of (2 eps Delta)^2 * live / (N/2): after a mask only the
    // output slots carry weight-dependent error.
    let half_n = params.slots() as f64;
    let d2_units: f64 = prepped
        .iter()
        .map(|(_, live)| 4.0 * (*live as f64) / half_n)
        .sum();
    let mut out = Vec::with_capacity(prepped.len());
    let mut flood_report = None;
    for (mut ct, _) in prepped {
        ev.rerandomize_assign(&mut ct, pk, rng)?;
        if let Some(f) = &cfg.flooding {
            let log_scale = ct.scale().log2();
            let t = f.queries.max(1) as f64;
            // sigma = 2^(s/2) * sqrt(t) * D, D = eps * Delta * sqrt(d2_units).
            let sigma_log2 = f.statistical_security as f64 / 2.0
                + t.log2() / 2.0
                + d2_units.log2() / 2.0
                + eps_log2
                + log_scale;
            if !ev.flooding_fits(ct.level(), sigma_log2) {
                let q0_log2: f64 = params.q()[..=ct.level().get()]
                    .iter()
                    .map(|&q| (q as f64).log2())
                    .sum();
                return Err(Error::InvalidValue {
                    context: "noise flooding".into(),
                    reason: format!(
                        "flooding at {} bits needs sigma = 2^{sigma_log2:.1}, too close to q_0 = 2^{:.1}: \
                         use parameters with a larger q_0 or lower the statistical security",
                        f.statistical_security,
                        q0_log2
                    ),
                });
            }
            ev.flood_assign(&mut ct, sigma_log2, rng)?;
            let slot_std_log2 = sigma_log2 + half_n.log2() / 2.0 - log_scale;
            flood_report = Some(FloodingReport {
                statistical_security: f.statistical_security,
                queries: f.queries,
                eps_log2,
                sigma_log2,
                slot_std_log2,
                cost_bits: slot_std_log2 - eps_log2,
                precision_bits_after: -slot_std_log2 - tail_bits(read_values),
                distance_bound_log2: -(f.statistical_security as f64) / 2.0 - 1.0,
            });
        }
        out.push(ct);
    }
    Ok((out, flood_report))
}

impl Plan {
    /// Predicted output precision (bits, unit-sized output) after [`Plan::sanitize`] with
    /// flooding `f`: the same `sigma` as `sanitize` computes (masked when the output has a
    /// level above the output floor in latency mode), with the bound [`tail_bits`] gives
    /// over the values the client reads (the outputs of one query in latency mode, every
    /// slot of every result ciphertext in batch mode). Depends only on the plan's structure
    /// and parameters.
    pub fn flooded_precision_bits(&self, f: &FloodingConfig) -> f64 {
        let params = &self.params;
        let half_n = params.slots() as f64;
        let masked = self.options.mode == Mode::Latency
            && (self.output_mask_folded() || self.output_level() > params.output_floor_level());
        let live_values: f64 = if masked {
            self.output_segments()
                .iter()
                .map(|s| s.dim.max(1) as f64)
                .sum()
        } else {
            half_n * self.output_ciphertexts() as f64
        };
        let d2_units = 4.0 * live_values / half_n;
        let read_values: f64 = if self.options.mode == Mode::Latency {
            self.output_segments()
                .iter()
                .map(|s| s.dim.max(1) as f64)
                .sum()
        } else {
            live_values
        };
        let eps_log2 = f.eps_log2(params.default_scale().log2(), params.log_n());
        let slot_std_log2 = f.statistical_security as f64 / 2.0
            + (f.queries.max(1) as f64).log2() / 2.0
            + d2_units.log2() / 2.0
            + eps_log2
            + half_n.log2() / 2.0;
        -slot_std_log2 - tail_bits(read_values)
    }
}

/// Measured error of a prepared plan's outputs under a throwaway key: runs `trials` random
/// queries (inputs uniform in `[-amplitude, amplitude]`), twice each with independent
/// encryptions, and returns log2 of the largest, over the trials, root-mean-square of the
/// difference between the two decryptions over the live output slots (the outputs in
/// latency mode, every slot in batch mode), divided by `sqrt(2)`: an estimate of the RMS
/// error of one query in message units, needing no plaintext reference, to set against the
/// public bound `eps` of [`FloodingConfig`] (which bounds exactly that). The server uses it
/// once per model to check that its adapter respects the bound. Cost: one key generation
/// with the plan's Galois keys and `2 * trials` evaluations.
///
/// # Errors
/// Key generation, encryption and evaluation errors.
pub fn measure_output_error<G: RngCore + CryptoRng>(
    prepared: &super::PreparedPlan,
    trials: usize,
    amplitude: f64,
    rng: &mut G,
) -> Result<f64> {
    let plan = prepared.plan();
    let params = plan.params();
    let kg = KeyGenerator::new(params);
    let sk = kg.gen_secret_key(rng);
    let pk = kg.gen_public_key(&sk, rng)?;
    let keys = kg.gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), rng)?;
    let ev = Evaluator::with_keys(params, std::sync::Arc::new(keys))?;
    let encoder = Encoder::new(params)?;
    let dec = Decryptor::new(params, &sk)?;
    let mut worst = f64::MIN_POSITIVE;
    for _ in 0..trials.max(1) {
        let inputs: Vec<ndarray::Array2<f64>> = plan
            .input_dims()
            .iter()
            .map(|&d| {
                ndarray::Array2::from_shape_fn((1, d), |_| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    (2.0 * u - 1.0) * amplitude
                })
            })
            .collect();
        let views: Vec<ndarray::ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
        let mut runs = Vec::with_capacity(2);
        for _ in 0..2 {
            let q = plan.encrypt_query(&encoder, EncryptionKey::Public(&pk), &views, rng)?;
            let res = prepared.evaluate(&ev, &q)?;
            let mut slots = Vec::new();
            for (k, ct) in res.iter().enumerate() {
                let floor = params.output_floor_level().min(ct.level());
                let pt = dec.decrypt(&ev.drop_to_level(ct, floor)?)?;
                let mut v = encoder.decode(&pt)?;
                if plan.options.mode == Mode::Latency {
                    v.truncate(plan.output_segments().get(k).map_or(0, |s| s.dim.max(1)));
                }
                slots.extend(v);
            }
            runs.push(slots);
        }
        let n = runs[0].len().max(1) as f64;
        let sq: f64 = runs[0]
            .iter()
            .zip(&runs[1])
            .map(|(a, b)| (a - b) * (a - b) / 2.0)
            .sum();
        worst = worst.max((sq / n).sqrt());
    }
    Ok(worst.log2())
}
