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
use crate::plan::token::TokenPlan;
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
        )
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
        let extra = ((log_n as f64 - 12.0) / 2.0).ceil() as u32;
        // TOKEN_MARGIN_BITS over the pooled-adapter model: the token network is deeper and
        // multiplies ciphertexts (measured: 13.6 bits at 16 asked without it, example token_owc)
        let log_scale = (precision_bits + 16 + extra + TOKEN_MARGIN_BITS).max(25);
        if log_scale > 50 {
            return Err(Error::params(format!(
                "{precision_bits} bits of precision would need a scale of 2^{log_scale}; at most 2^50 is supported"
            )));
        }
        let q0 = (log_scale + 10).min(60);
        let special = q0.max(log_scale);
        let base = q0 + depth as u32 * log_scale;
        let mut chosen = None;
        let mut last_err = None;
        for k in (1..=(depth + 1).min(8)).rev() {
            if base + k as u32 * special > bound {
                continue;
            }
            let lit = CkksParamsLiteral::new(
                log_n,
                [vec![q0], vec![log_scale; depth]].concat(),
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
        let report = report_for(adapter, &params, &plan, bound, refused);
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
    let switching_key_bytes = params.num_digits() * (top + 1 + k) * n * 8 + 32;
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
        query_bytes: query * 2 * (top + 1) * n * 8,
        result_ciphertexts: result,
        result_bytes: result * 2 * (plan.output_level() + 1) * n * 8,
        refused,
    }
}
