//! Layer 4: parameter selection. From an adapter's plan (depth, widest vector, batch size)
//! and the precision wanted, choose N, the Q chain, P, dnum and the scale, at a security level
//! checked against the HomomorphicEncryption.org table; refuse with a reason what cannot work.
//!
//! The precision model is empirical, measured by this crate's tests at N = 2^12..2^14:
//! end-to-end outputs keep about `log_scale - 15 - (log N - 12)/2` bits relative to a
//! unit-sized output (25 bits at scale 2^40). It is a prediction; `hepeft demo` and the test
//! suite report the measured figure.

pub mod token;

use crate::ckks::security::{max_log_qp, Security};
use crate::ckks::{CkksParams, CkksParamsLiteral};
use crate::model::Adapter;
use crate::plan::{FloodingConfig, Mode, Plan, PlanOptions};
use crate::{Error, Result};
use serde::Serialize;

pub mod advice;
pub mod calibrate;
pub mod record;

pub use advice::select_with_advice;
pub use calibrate::{calibrate, ErrorProfile};
pub use record::{ParamsFile, SelectionRecord};

/// What the caller wants.
#[derive(Clone, Copy, Debug)]
pub struct SelectRequest {
    /// Bits of precision wanted at the output: relative to the largest logit of a query
    /// when `profile` is given, else relative to a unit-sized logit.
    pub precision_bits: u32,
    /// Security level (never [`Security::Unchecked`] here).
    pub security: Security,
    /// Layout and, for batch mode, the number of samples per query.
    pub options: PlanOptions,
    /// Samples per query in batch mode (needs N/2 >= batch).
    pub batch: Option<usize>,
    /// Noise flooding the server will apply (see [`crate::plan::sanitize`]): the precision
    /// asked for must survive it. In latency mode the output mask makes flooding much
    /// cheaper: folded into the final layer when the plan can
    /// ([`Plan::output_mask_folded`]), else one extra level is reserved for it. `None`: no
    /// flooding.
    pub flooding: Option<FloodingConfig>,
    /// The adapter's calibrated error offset and logit size ([`calibrate()`]): with it the
    /// flooding is sized from the adapter's public error bound (as the server will size
    /// it) and `precision_bits` count relative to the largest logit of a query. `None`:
    /// the unit-weight model and a unit-sized logit.
    pub profile: Option<ErrorProfile>,
}

impl Default for SelectRequest {
    fn default() -> Self {
        SelectRequest {
            precision_bits: 16,
            security: Security::Bits128,
            options: PlanOptions::default(),
            batch: None,
            flooding: None,
            profile: None,
        }
    }
}

impl SelectRequest {
    /// Precision (bits) to reach against a unit-sized logit: `precision_bits`, plus the
    /// bits a query whose largest logit is below 1 loses relative to it (from the profile).
    pub fn unit_target_bits(&self) -> f64 {
        let p = self.precision_bits as f64;
        self.profile.map_or(p, |pr| pr.unit_bits_for(p))
    }

    /// The flooding the server will apply, with the profile's error offset.
    pub fn effective_flooding(&self) -> Option<FloodingConfig> {
        self.flooding
            .map(|f| f.with_error_offset(self.profile.map(|p| p.offset_bits)))
    }
}

/// Predicted end-to-end precision (bits) for a scale and ring degree.
pub fn predicted_precision_bits(log_scale: u32, log_n: u32) -> f64 {
    crate::ckks::precision::model_precision_bits(log_scale as f64, log_n)
}

/// The outcome of a selection, with everything `params select` prints.
#[derive(Clone, Debug, Serialize)]
pub struct SelectionReport {
    /// log2 N.
    pub log_n: u32,
    /// Bit sizes of q_0..q_L.
    pub log_q: Vec<u32>,
    /// Bit sizes of the special primes.
    pub log_p: Vec<u32>,
    /// log2 of the scale.
    pub log_scale: u32,
    /// Key-switching digits.
    pub dnum: usize,
    /// log2(QP) of the chosen set.
    pub log_qp: f64,
    /// The table's bound for N at the requested security.
    pub max_log_qp: u32,
    /// Security level, in bits.
    pub security_bits: u32,
    /// Levels available and used by the adapter.
    pub levels: usize,
    /// Levels the adapter consumes.
    pub depth: usize,
    /// The fewest levels any plan of the adapter can consume
    /// ([`crate::plan::depth_lower_bound`]).
    pub depth_lower_bound: usize,
    /// Predicted output precision, bits.
    pub predicted_precision_bits: f64,
    /// Predicted precision after noise flooding, bits (when flooding was requested).
    pub flooded_precision_bits: Option<f64>,
    /// Flooding statistical security, bits (when requested).
    pub flooding_bits: Option<u32>,
    /// The adapter's calibrated public error offset (bits), when the selection had one.
    pub error_offset_bits: Option<f64>,
    /// log2 of the smallest largest |logit| of a calibration query, when calibrated.
    pub logit_floor_log2: Option<f64>,
    /// Predicted precision relative to the largest logit of a query (after flooding when
    /// requested), when calibrated: what `--precision` asks for.
    pub relative_precision_bits: Option<f64>,
    /// Rotation keys the client generates.
    pub rotation_keys: usize,
    /// Key switches per query.
    pub key_switches_per_query: usize,
    /// Bytes of one switching key as stored (seeded).
    pub switching_key_bytes: usize,
    /// Bytes of the `eval.keys` file as `keygen` writes it (switching keys, the public key
    /// the server re-randomizes with, envelope and binding): exact.
    pub evaluation_key_bytes: usize,
    /// Bytes of the `public.key` file: exact.
    pub public_key_bytes: usize,
    /// Bytes of the `secret.key` file: exact.
    pub secret_key_bytes: usize,
    /// Bytes of one fresh ciphertext (public-key encryption) inside a query file.
    pub ciphertext_bytes: usize,
    /// Bytes of one result ciphertext (level 0) inside a result file.
    pub result_ciphertext_bytes: usize,
    /// Ciphertexts uploaded per query.
    pub query_ciphertexts: usize,
    /// Ciphertexts downloaded per query (at the output level).
    pub result_ciphertexts: usize,
    /// Parameter digest.
    pub digest: String,
    /// Candidates tried and why they were refused.
    pub refused: Vec<String>,
    /// Batch mode with a declared sample count well below the slots: the
    /// [`PlanOptions::batch_pack`] (`keygen --batch-pack G`) that packs the most features
    /// per query ciphertext while one query still takes every declared sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_pack_hint: Option<usize>,
}

/// A chosen parameter set and its report.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The parameters.
    pub params: CkksParams,
    /// The compiled plan under them.
    pub plan: Plan,
    /// Figures.
    pub report: SelectionReport,
}

/// Levels an adapter consumes under `options`, independent of N.
pub fn required_depth(adapter: &Adapter, options: PlanOptions) -> Result<usize> {
    // A throwaway deep chain (never used to encrypt): only the level bookkeeping matters.
    let mut lit = CkksParamsLiteral::new(12, [vec![50], vec![30; 59]].concat(), vec![50], 30)
        .with_security(Security::Unchecked);
    lit.dnum = Some(60);
    let probe = CkksParams::from_literal(lit)?;
    Ok(Plan::compile(adapter, &probe, options)?.depth())
}

/// Chooses the fastest parameter set (smallest N, then the most special primes that fit)
/// reaching `req.precision_bits` at `req.security` for `adapter`.
pub fn select(adapter: &Adapter, req: &SelectRequest) -> Result<Selection> {
    let Some(sec_bits) = req.security.bits() else {
        return Err(Error::params(
            "parameter selection needs a security level (128, 192 or 256)",
        ));
    };
    let depth = required_depth(adapter, req.options)?;
    let mut refused = Vec::new();
    for log_n in 12u32..=16 {
        let Some(bound) = max_log_qp(log_n, req.security) else {
            refused.push(format!(
                "N = 2^{log_n}: no {sec_bits}-bit entry in the table"
            ));
            continue;
        };
        if let Some(b) = req.batch {
            if b > 1 << (log_n - 1) {
                refused.push(format!(
                    "N = 2^{log_n}: {b} samples need more than {} slots",
                    1 << (log_n - 1)
                ));
                continue;
            }
        }
        let extra = ((log_n as f64 - 12.0) / 2.0).ceil() as u32;
        let target = req.unit_target_bits();
        let flooding = req.effective_flooding();
        // With flooding, the scale is raised below until the precision survives it.
        let mut log_scale = target.ceil() as u32 + 16 + extra; // one bit of margin over the model
                                                               // The output mask (latency mode, with flooding) takes one more level, unless the
                                                               // plan folds it into its final layer ([`Plan::output_mask_folded`]): tried first.
        let mask_wanted = req.flooding.is_some() && req.options.mode == Mode::Latency;
        let mut levels = depth;
        // With flooding the scale must also pay for the flooding noise; its cost does not
        // depend on the scale, so one correction after a first compilation suffices.
        let mut attempt = 0;
        let found = loop {
            attempt += 1;
            if log_scale > MAX_LOG_SCALE {
                break Err(log_scale);
            }
            let ls = log_scale.max(25);
            match candidate(adapter, req, log_n, ls, levels, bound)? {
                Candidate::Refused(reason) => break Ok(Err(reason)),
                Candidate::Ok(params, plan) => {
                    if mask_wanted && levels == depth && !plan.output_mask_folded() {
                        levels += 1;
                        attempt -= 1;
                        continue;
                    }
                    let Some(f) = &flooding else {
                        break Ok(Ok((params, plan)));
                    };
                    let after = plan.flooded_precision_bits(f);
                    if after >= target {
                        break Ok(Ok((params, plan)));
                    }
                    if attempt > 3 {
                        break Ok(Err(format!(
                            "N = 2^{log_n}: flooding leaves {after:.1} bits at scale 2^{ls}"
                        )));
                    }
                    // the flooding's cost does not depend on the scale, and with a
                    // calibrated offset neither does the error: lower the scale again when
                    // the first guess overshoots
                    log_scale = (ls as f64 + (target - after)).ceil().max(25.0) as u32;
                    if log_scale == ls {
                        log_scale += 1;
                    }
                }
            }
        };
        match found {
            Err(needed) => {
                let Some(f) = &req.flooding else {
                    return Err(Error::params(format!(
                        "{} bits of precision would need a scale of 2^{needed}; at most 2^{MAX_LOG_SCALE} is supported (about {} bits)",
                        req.precision_bits,
                        predicted_precision_bits(MAX_LOG_SCALE, log_n).floor()
                    )));
                };
                refused.push(format!(
                    "N = 2^{log_n}: {} bits after {}-bit noise flooding would need a scale of 2^{needed}; \
                     at most 2^{MAX_LOG_SCALE} is supported{}",
                    req.precision_bits,
                    f.statistical_security,
                    flooding_hint(req, log_n)
                ));
                continue;
            }
            Ok(Err(reason)) => {
                refused.push(reason);
                continue;
            }
            Ok(Ok((params, plan))) => {
                let mut report =
                    report_for(&params, &plan, bound, sec_bits, depth, refused.clone());
                if let Some(f) = &flooding {
                    report.flooded_precision_bits = Some(plan.flooded_precision_bits(f));
                    report.flooding_bits = Some(f.statistical_security);
                }
                report.batch_pack_hint = batch_pack_hint(&plan, req.batch);
                if let Some(p) = &req.profile {
                    report.error_offset_bits = Some(p.offset_bits);
                    report.logit_floor_log2 = Some(p.logit_floor_log2);
                    let unit = report
                        .flooded_precision_bits
                        .unwrap_or(report.predicted_precision_bits);
                    report.relative_precision_bits = Some(unit + p.logit_floor_log2.min(0.0));
                }
                return Ok(Selection {
                    params,
                    plan,
                    report,
                });
            }
        }
    }
    Err(Error::params(format!(
        "no parameter set up to N = 2^16 reaches {} bits at {sec_bits}-bit security for this adapter (depth {depth}): {}",
        req.precision_bits,
        refused.join("; ")
    )))
}

/// Largest scale the selector uses, log2: scale primes sit near `2^60`, the largest size the
/// NTT takes ([`crate::math::modulus::MAX_MODULUS_BITS`] is 61).
pub const MAX_LOG_SCALE: u32 = 60;

/// Bit sizes of the ciphertext chain for `levels` levels at scale `2^log_scale`, and the
/// size of `q_0`: `q_0 = log_scale + 10` bits (outputs up to `2^9`) while that fits 61 bits;
/// above (scales beyond 2^51, which noise flooding needs) `q_0` is 61 bits and a 30-bit
/// prime is reserved for the output, so that results leave at level 1 with
/// `q_0 q_1 >= 2^(log_scale + 10)` (see [`CkksParams::output_floor_level`]). The reserved
/// prime costs 30 bits of the modulus budget and doubles the downloaded limbs (two instead
/// of one).
pub fn chain(log_scale: u32, levels: usize) -> (Vec<u32>, u32) {
    let headroom = crate::ckks::OUTPUT_HEADROOM_BITS;
    let max = crate::math::modulus::MAX_MODULUS_BITS;
    if log_scale + headroom <= max {
        let q0 = log_scale + headroom;
        ([vec![q0], vec![log_scale; levels]].concat(), q0)
    } else {
        (
            [vec![max, RESERVED_OUTPUT_BITS], vec![log_scale; levels]].concat(),
            max,
        )
    }
}

/// Size of the prime reserved for the output on chains whose scale leaves `q_0` too little
/// headroom ([`chain`]).
pub const RESERVED_OUTPUT_BITS: u32 = 30;

/// What to try when flooding at the requested settings refuses at `2^log_n`.
fn flooding_hint(req: &SelectRequest, log_n: u32) -> String {
    if req.flooding.is_none() {
        return String::new();
    }
    if req.options.mode == Mode::Batch {
        format!(
            " (batch layout: every slot of every result ciphertext carries the error, so flooding \
             costs (log2 N - 1)/2 = {:.1} bits more than a latency query; use --mode latency, \
             fewer --precision bits, or --no-flooding)",
            (log_n as f64 - 1.0) / 2.0
        )
    } else {
        " (use fewer --precision bits, or --no-flooding)".to_string()
    }
}

enum Candidate {
    Ok(CkksParams, Plan),
    Refused(String),
}

/// The fastest parameter set at `log_n` with `levels` levels at scale `2^log_scale` under
/// `bound`, compiled for `adapter`, or why there is none.
///
/// Key switching: for each digit count `dnum` (digits of `alpha = ceil(|Q| / dnum)`
/// consecutive q primes), the special modulus `P` must dominate the largest digit (the
/// check of [`CkksParams::from_literal`], plus [`KEYSWITCH_MARGIN_BITS`] for a digit of
/// several primes), so it takes the fewest special primes of at most 61 bits whose product
/// covers it, sized evenly (`ceil(digit / k)` bits each, which may
/// bring them under 2^50 where the IFMA kernels apply). Among the layouts under the bound
/// the cheapest by [`keyswitch_cost`] (limb NTTs and multiply-accumulates of one key switch
/// at the top level) wins: fewer digits mean fewer NTTs per key switch, more special primes
/// more limbs in every extended product.
fn candidate(
    adapter: &Adapter,
    req: &SelectRequest,
    log_n: u32,
    log_scale: u32,
    levels: usize,
    bound: u32,
) -> Result<Candidate> {
    let (log_q, _) = chain(log_scale, levels);
    let max_bits = crate::math::modulus::MAX_MODULUS_BITS;
    let base: u32 = log_q.iter().sum();
    let nq = log_q.len();
    let mut layouts: Vec<(usize, usize, u32)> = Vec::new(); // (dnum, k, bits per special prime)
    for dnum in 1..=nq {
        let alpha = nq.div_ceil(dnum);
        if nq.div_ceil(alpha) != dnum {
            continue; // same digits as a smaller dnum
        }
        let digit = log_q
            .chunks(alpha)
            .map(|c| c.iter().sum::<u32>())
            .max()
            .unwrap_or(0);
        // a digit of several primes needs P above it (KEYSWITCH_MARGIN_BITS); a one-prime
        // digit keeps the rule measured before, P at least that prime
        let need = digit + if alpha > 1 { KEYSWITCH_MARGIN_BITS } else { 0 };
        let k = need.div_ceil(max_bits).max(1);
        let bits = need.div_ceil(k).max(MIN_SPECIAL_BITS);
        if base + k * bits <= bound {
            layouts.push((dnum, k as usize, bits));
        }
    }
    layouts.sort_by_key(|&(dnum, k, _)| (keyswitch_cost(nq, dnum, k), k));
    // the security check of `CkksParams::from_literal` (on the actual primes) has the last word
    let mut last_err = None;
    for &(dnum, k, bits) in &layouts {
        let mut lit = CkksParamsLiteral::new(log_n, log_q.clone(), vec![bits; k], log_scale)
            .with_security(req.security);
        lit.dnum = Some(dnum);
        match CkksParams::from_literal(lit) {
            Ok(params) => {
                let plan = Plan::compile(adapter, &params, req.options)?;
                return Ok(Candidate::Ok(params, plan));
            }
            Err(e) => last_err = Some(e),
        }
    }
    let one_prime = log_q.iter().copied().max().unwrap_or(0);
    Ok(Candidate::Refused(match last_err {
        Some(e) => format!("N = 2^{log_n}: {e}"),
        None => format!(
            "N = 2^{log_n}: depth {levels} at scale 2^{log_scale} needs log2(QP) >= {} (q {log_q:?} + one {one_prime}-bit special prime), above the bound of {bound}",
            base + one_prime
        ),
    }))
}

/// Bits by which the special modulus `P` must exceed a key-switching digit of several q
/// primes. Measured on head (b) at N = 2^14, scale 2^59 (`tests/flooding_bound.rs`): with
/// `P` equal to its 150-bit digit (dnum 2) the per-query RMS error rose from 2^-46.9 to
/// 2^-43.5, above the public flooding bound 2^-44; 4 bits (the margin the dnum-3 chain had)
/// keep the key-switching noise below the rescaling noise.
pub const KEYSWITCH_MARGIN_BITS: u32 = 4;

/// Smallest special prime the selector uses, bits.
pub const MIN_SPECIAL_BITS: u32 = 30;

/// Cost proxy of one key switch at the top level of a chain of `nq` q primes with `dnum`
/// digits and `k` special primes, in limb operations: the ModUp's NTTs (one inverse per q
/// limb, one forward per digit and limb it lacks), the ModDown of both parts (`k` inverse,
/// `nq` forward each), and the multiply-accumulate with the key (two parts, `dnum` digits of
/// `nq + k` limbs), counted as a quarter of an NTT each.
pub fn keyswitch_cost(nq: usize, dnum: usize, k: usize) -> usize {
    let alpha = nq.div_ceil(dnum).max(1);
    let mod_up: usize = (0..nq.div_ceil(alpha))
        .map(|d| nq + k - ((d + 1) * alpha).min(nq).saturating_sub(d * alpha))
        .sum::<usize>()
        + nq;
    let mod_down = 2 * (k + nq);
    let mac = 2 * dnum * (nq + k);
    4 * (mod_up + mod_down) + mac
}

/// The largest `g <= MAX_BATCH_PACK` with `samples <= N/(2g)`, when above 1 and `plan` is an
/// unpacked batch plan: a `g`-fold smaller query for `g - 1` rotations per query ciphertext.
fn batch_pack_hint(plan: &Plan, samples: Option<usize>) -> Option<usize> {
    let samples = samples?.max(1);
    if plan.options().mode != crate::plan::Mode::Batch || plan.batch_pack() > 1 {
        return None;
    }
    let fit = plan.params().slots() / samples;
    let g = if fit == 0 {
        1
    } else {
        (1usize << fit.ilog2()).min(crate::plan::MAX_BATCH_PACK)
    };
    (g > 1).then_some(g)
}

/// The report of an existing parameter set for `plan`.
pub fn report_for(
    params: &CkksParams,
    plan: &Plan,
    bound: u32,
    sec_bits: u32,
    depth: usize,
    refused: Vec<String>,
) -> SelectionReport {
    let top = params.max_level();
    let sizes =
        crate::ckks::KeyFileSizes::new(params, plan.galois_elements().len(), plan.needs_relin());
    let usize_of = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
    let log2 = |v: u64| (v as f64).log2().round() as u32;
    SelectionReport {
        log_n: params.log_n(),
        log_q: params.q().iter().map(|&v| log2(v)).collect(),
        log_p: params.p().iter().map(|&v| log2(v)).collect(),
        log_scale: params.default_scale().log2().round() as u32,
        dnum: params.dnum(),
        log_qp: params.log_qp(),
        max_log_qp: bound,
        security_bits: sec_bits,
        levels: top.get(),
        depth,
        depth_lower_bound: plan.depth_lower_bound(),
        predicted_precision_bits: predicted_precision_bits(
            params.default_scale().log2().round() as u32,
            params.log_n(),
        ),
        flooded_precision_bits: None,
        flooding_bits: None,
        error_offset_bits: None,
        logit_floor_log2: None,
        relative_precision_bits: None,
        rotation_keys: plan.galois_elements().len(),
        key_switches_per_query: plan.key_switches(),
        switching_key_bytes: usize_of(sizes.switching_key),
        evaluation_key_bytes: usize_of(sizes.evaluation_keys),
        public_key_bytes: usize_of(sizes.public_key),
        secret_key_bytes: usize_of(sizes.secret_key),
        ciphertext_bytes: usize_of(crate::ckks::ciphertext_bytes(params, top, 2)),
        result_ciphertext_bytes: usize_of(crate::ckks::ciphertext_bytes(
            params,
            crate::ckks::Level::ZERO,
            2,
        )),
        query_ciphertexts: plan.input_ciphertexts(),
        result_ciphertexts: plan.output_ciphertexts(),
        digest: params.digest_short(),
        refused,
        batch_pack_hint: None,
    }
}

impl SelectionReport {
    /// Human-readable report.
    pub fn to_text(&self) -> String {
        let size = |b: usize| {
            let b = b as f64;
            if b >= (1u64 << 20) as f64 {
                format!("{:.2} MiB", b / (1u64 << 20) as f64)
            } else {
                format!("{:.1} KiB", b / 1024.0)
            }
        };
        let mut s = format!(
            "N = 2^{}  log Q = {:?}  log P = {:?}  scale 2^{}  dnum {}\n\
             log2(QP) = {:.1} <= {} (HomomorphicEncryption.org, {}-bit, ternary secret)\n\
             levels {} (adapter uses {}, lower bound {}), predicted precision {:.1} bits\n\
             rotation keys {}, key switches per query {}\n\
             eval.keys {} ({} per switching key, public key included), public.key {}, secret.key {}\n\
             query {} ciphertext(s) of {}, result {} ciphertext(s) of {}\n\
             digest {}\n",
            self.log_n,
            self.log_q,
            self.log_p,
            self.log_scale,
            self.dnum,
            self.log_qp,
            self.max_log_qp,
            self.security_bits,
            self.levels,
            self.depth,
            self.depth_lower_bound,
            self.predicted_precision_bits,
            self.rotation_keys,
            self.key_switches_per_query,
            size(self.evaluation_key_bytes),
            size(self.switching_key_bytes),
            size(self.public_key_bytes),
            size(self.secret_key_bytes),
            self.query_ciphertexts,
            size(self.ciphertext_bytes),
            self.result_ciphertexts,
            size(self.result_ciphertext_bytes),
            self.digest
        );
        if let (Some(p), Some(s_bits)) = (self.flooded_precision_bits, self.flooding_bits) {
            s.push_str(&format!(
                "after {s_bits}-bit noise flooding: predicted precision {p:.1} bits\n"
            ));
        }
        if let (Some(c), Some(l), Some(r)) = (
            self.error_offset_bits,
            self.logit_floor_log2,
            self.relative_precision_bits,
        ) {
            s.push_str(&format!(
                "calibrated: error offset {c:.1} bits (unit model 15), logits of at least 2^{l:.1}: \
                 predicted {r:.1} bits relative to the largest logit\n"
            ));
        }
        if let Some(g) = self.batch_pack_hint {
            s.push_str(&format!(
                "queries of the declared samples fit N/(2*{g}) slots: `keygen --batch-pack {g}` packs {g} features per query ciphertext ({} ciphertext(s) of the {} above become about {}, {} more rotation key(s), {} hoisted rotation(s) per ciphertext)\n",
                self.query_ciphertexts,
                size(self.ciphertext_bytes),
                self.query_ciphertexts.div_ceil(g),
                g - 1,
                g - 1
            ));
        }
        for r in &self.refused {
            s.push_str(&format!("  refused: {r}\n"));
        }
        s
    }
}

/// Selection for batch mode with `samples` per query.
pub fn batch_request(precision_bits: u32, security: Security, samples: usize) -> SelectRequest {
    SelectRequest {
        precision_bits,
        security,
        options: PlanOptions {
            mode: Mode::Batch,
            ..Default::default()
        },
        batch: Some(samples),
        flooding: None,
        profile: None,
    }
}
