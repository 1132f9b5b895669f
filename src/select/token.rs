//! Parameter selection for token-level adapters ([`TokenAdapter`], one sample, column
//! packing; see [`crate::plan::token`]).
//!
//! Same rules as [`select`](super::select): the smallest N whose HomomorphicEncryption.org
//! bound holds `q0 + depth x scale + special primes`, the scale from the precision wanted,
//! then the most special primes that fit (fewer key-switching digits). No bootstrapping: the
//! whole adapter must fit in one chain. With CryptPEFT's block after
//! [`fuse_tokens`](crate::plan::token::fuse_tokens) (12 levels per tapped layer, 2 for
//! pooling and head), 128-bit security and 16 bits of precision, `s <= 3` tapped layers fit
//! at N = 2^16 (see the test `token_select` for the figures).

use serde::Serialize;

use super::predicted_precision_bits;
use crate::ckks::security::{max_log_qp, Security};
use crate::ckks::{CkksParams, CkksParamsLiteral};
use crate::model::token::TokenAdapter;
use crate::plan::token::{flooded_precision_bits, TokenPlan};
use crate::plan::FloodingConfig;
use crate::{Error, Result};

/// Extra scale bits over the precision model of [`select`](super::select): token adapters
/// are deeper and multiply ciphertexts, and lost about 2.5 bits against it in the example
/// `token_owc` (N = 2^15, depth 14).
pub const TOKEN_MARGIN_BITS: u32 = 3;

/// What [`select_token`] chose, with the figures a deployment needs.
#[derive(Clone, Debug, Serialize)]
pub struct TokenSelectionReport {
    /// log2 N.
    pub log_n: u32,
    /// Bit sizes of q_0..q_L.
    pub log_q: Vec<u32>,
    /// Bit sizes of the special primes.
    pub log_p: Vec<u32>,
    /// log2 of the scale.
    pub log_scale: u32,
    /// log2(QP) and the bound it was checked against.
    pub log_qp: f64,
    /// The HomomorphicEncryption.org bound at this N.
    pub max_log_qp: u32,
    /// Levels the adapter consumes.
    pub depth: usize,
    /// Tokens and their slot period `T'`.
    pub tokens: usize,
    /// `T'`.
    pub period: usize,
    /// Predicted precision (bits relative to a unit output).
    pub predicted_precision_bits: f64,
    /// Galois keys (rotations) plus the relinearization key.
    pub evaluation_keys: usize,
    /// Bytes of all evaluation keys (seeded, as stored).
    pub evaluation_key_bytes: usize,
    /// Ciphertexts uploaded per sample (each input packed, `N / (2 T')` columns each).
    pub query_ciphertexts: usize,
    /// Bytes uploaded per sample (fresh ciphertexts at the top level, seeded `c_1` halves
    /// them with symmetric encryption; this is the public-key figure).
    pub query_bytes: usize,
    /// Ciphertexts returned per sample.
    pub result_ciphertexts: usize,
    /// Bytes returned per sample (at the output level).
    pub result_bytes: usize,
    /// Ring degrees refused before this one, with the reason.
    pub refused: Vec<String>,
    /// The flooding the parameters were selected for and the precision predicted after it
    /// ([`flooded_precision_bits`]); `None`: selected without flooding.
    pub flooding: Option<(FloodingConfig, f64)>,
}

/// Parameters, plan and report for a token adapter.
#[derive(Clone, Debug)]
pub struct TokenSelection {
    /// The parameters.
    pub params: CkksParams,
    /// The level schedule under them.
    pub plan: TokenPlan,
    /// Figures.
    pub report: TokenSelectionReport,
}

impl TokenSelectionReport {
    /// A short human-readable report.
    pub fn to_text(&self) -> String {
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        format!(
            "N = 2^{}  log Q = {:?}  log P = {:?}  scale 2^{}\n\
             log2(QP) = {:.1} <= {}; depth {}; T = {} (period {}); predicted precision {:.1} bits\n\
             evaluation keys {} ({:.1} MiB); query {} ciphertexts ({:.2} MiB); result {} ciphertexts ({:.3} MiB)\n",
            self.log_n,
            self.log_q,
            self.log_p,
            self.log_scale,
            self.log_qp,
            self.max_log_qp,
            self.depth,
            self.tokens,
            self.period,
            self.predicted_precision_bits,
            self.evaluation_keys,
            mib(self.evaluation_key_bytes),
            self.query_ciphertexts,
            mib(self.query_bytes),
            self.result_ciphertexts,
            mib(self.result_bytes),
        ) + &match &self.flooding {
            Some((f, bits)) => format!(
                "sanitized: output mask (one level) and noise flooding at {} bits for {} quer(ies): about {bits:.1} bits left\n",
                f.statistical_security, f.queries
            ),
            None => "selected WITHOUT noise flooding (results are masked only if a level is left)\n".into(),
        }
    }
}

/// Chooses the fastest parameter set reaching `precision_bits` at `security` for `adapter`
/// evaluated on one sample (fuse it first with
/// [`fuse_tokens`](crate::plan::token::fuse_tokens) to save levels).
///
/// # Errors
/// [`Error::InvalidParameters`] naming, for every N up to 2^16, why it was refused (too deep for the
/// security bound, too many tokens for the slots, precision out of reach).
pub fn select_token(
    adapter: &TokenAdapter,
    precision_bits: u32,
    security: Security,
) -> Result<TokenSelection> {
    select_token_with(adapter, precision_bits, security, None)
}

/// [`select_token`] for results sanitized with noise flooding `flooding` (what `hepeft
/// evaluate` does by default): one more level for the output mask of
/// [`TokenPlan::sanitize`], and a scale raised until the precision predicted after
/// flooding ([`flooded_precision_bits`]) reaches `precision_bits`; above 2^50 a 30-bit
/// prime is reserved for the output (results leave at level 1), up to 2^60.
///
/// # Errors
/// As [`select_token`]; a flooding no scale up to 2^60 can carry.
pub fn select_token_flooded(
    adapter: &TokenAdapter,
    precision_bits: u32,
    security: Security,
    flooding: &FloodingConfig,
) -> Result<TokenSelection> {
    select_token_with(adapter, precision_bits, security, Some(flooding))
}

/// Scale, first prime and whether an output prime is reserved for `precision_bits` at
/// degree `2^log_n`, with flooding `flooding` (None: the unflooded rule).
fn token_scale(
    adapter: &TokenAdapter,
    precision_bits: u32,
    log_n: u32,
    flooding: Option<&FloodingConfig>,
) -> Result<(u32, Vec<u32>)> {
    let extra = ((log_n as f64 - 12.0) / 2.0).ceil() as u32;
    // TOKEN_MARGIN_BITS over the pooled-adapter model: the token network is deeper and
    // multiplies ciphertexts (measured: 13.6 bits at 16 asked without it, example token_owc)
    let mut log_scale = (precision_bits + 16 + extra + TOKEN_MARGIN_BITS).max(25);
    if let Some(f) = flooding {
        let (rows, w) = adapter.output_shape();
        while flooded_precision_bits(rows * w, f, log_scale as f64, log_n) < precision_bits as f64 {
            log_scale += 1;
            if log_scale > 60 {
                return Err(Error::params(format!(
                    "{precision_bits} bits after noise flooding at {} bits for {} quer(ies) would need a scale                      above 2^60 at N = 2^{log_n}: ask fewer bits (--precision), lower --flooding-bits, or, for a                      trusted client only, turn flooding off",
                    f.statistical_security, f.queries
                )));
            }
        }
    } else if log_scale > 50 {
        return Err(Error::params(format!(
            "{precision_bits} bits of precision would need a scale of 2^{log_scale}; at most 2^50 is supported"
        )));
    }
    // the first prime: 10 bits of headroom over the scale; above 2^50 a 30-bit prime plus
    // one more prime at the scale hold the output (CkksParams::output_floor_level = 1)
    let head = if log_scale + 10 <= 60 {
        vec![log_scale + 10]
    } else {
        vec![30, log_scale]
    };
    Ok((log_scale, head))
}

fn select_token_with(
    adapter: &TokenAdapter,
    precision_bits: u32,
    security: Security,
    flooding: Option<&FloodingConfig>,
) -> Result<TokenSelection> {
    let Some(sec_bits) = security.bits() else {
        return Err(Error::params(
            "parameter selection needs a security level (128, 192 or 256)",
        ));
    };
    let depth = TokenPlan::depth_of(adapter);
    let period = adapter.tokens().next_power_of_two();
    let mut refused = Vec::new();
    for log_n in 12u32..=16 {
        let Some(bound) = max_log_qp(log_n, security) else {
            refused.push(format!(
                "N = 2^{log_n}: no {sec_bits}-bit entry in the table"
            ));
            continue;
        };
        if period > 1 << (log_n - 1) {
            refused.push(format!(
                "N = 2^{log_n}: {} tokens pad to {period} slots, more than {}",
                adapter.tokens(),
                1 << (log_n - 1)
            ));
            continue;
        }
        let (log_scale, head) = match token_scale(adapter, precision_bits, log_n, flooding) {
            Ok(v) => v,
            Err(e) if flooding.is_some() => {
                refused.push(format!("N = 2^{log_n}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        // the output mask of the sanitization takes one level
        let levels = depth + usize::from(flooding.is_some());
        let q0 = head.iter().sum::<u32>();
        let special = head
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(log_scale)
            .min(60);
        let base = q0 + levels as u32 * log_scale;
        let mut chosen = None;
        let mut last_err = None;
        for k in (1..=(levels + 1).min(8)).rev() {
            if base + k as u32 * special > bound {
                continue;
            }
            let lit = CkksParamsLiteral::new(
                log_n,
                [head.clone(), vec![log_scale; levels]].concat(),
                vec![special; k],
                log_scale,
            )
            .with_security(security);
            match CkksParams::from_literal(lit) {
                Ok(p) => {
                    chosen = Some(p);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some(params) = chosen else {
            refused.push(match last_err {
                Some(e) => format!("N = 2^{log_n}: {e}"),
                None => format!(
                    "N = 2^{log_n}: depth {depth} at scale 2^{log_scale} needs log2(QP) >= {} (q0 {q0} + {depth} x {log_scale} + one {special}-bit special prime), above the bound of {bound}",
                    base + special
                ),
            });
            continue;
        };
        let plan = TokenPlan::compile(adapter, &params)?;
        let mut report = report_for(adapter, &params, &plan, bound, refused);
        report.flooding =
            flooding.map(|f| (*f, plan.flooded_precision_bits(f, log_scale as f64, log_n)));
        return Ok(TokenSelection {
            params,
            plan,
            report,
        });
    }
    Err(Error::params(format!(
        "no parameter set up to N = 2^16 reaches {precision_bits} bits at {sec_bits}-bit security for this token adapter (depth {depth}; fuse it first, or tap fewer layers): {}",
        refused.join("; ")
    )))
}

fn report_for(
    adapter: &TokenAdapter,
    params: &CkksParams,
    plan: &TokenPlan,
    bound: u32,
    refused: Vec<String>,
) -> TokenSelectionReport {
    let n = params.n();
    let top = params.max_level();
    let k = params.p().len();
    // seeded keys: one polynomial per digit plus the seed (as `select::report_for`)
    let switching_key_bytes = params.num_digits() * (top.primes() + k) * n * 8 + 32;
    let keys = plan.rotation_steps().len() + usize::from(plan.needs_relin());
    let log2 = |v: u64| (v as f64).log2().round() as u32;
    let query = plan.query_ciphertexts(adapter);
    let result = plan.result_ciphertexts();
    let log_scale = params.default_scale().log2().round() as u32;
    TokenSelectionReport {
        log_n: params.log_n(),
        log_q: params.q().iter().map(|&v| log2(v)).collect(),
        log_p: params.p().iter().map(|&v| log2(v)).collect(),
        log_scale,
        log_qp: params.log_qp(),
        max_log_qp: bound,
        depth: plan.depth(),
        tokens: adapter.tokens(),
        period: plan.period(),
        predicted_precision_bits: predicted_precision_bits(
            log_scale - TOKEN_MARGIN_BITS,
            params.log_n(),
        ),
        evaluation_keys: keys,
        evaluation_key_bytes: keys * switching_key_bytes,
        query_ciphertexts: query,
        query_bytes: query * 2 * top.primes() * n * 8,
        result_ciphertexts: result,
        result_bytes: result * 2 * plan.output_level().primes() * n * 8,
        refused,
        flooding: None,
    }
}
