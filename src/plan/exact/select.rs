//! Choosing the exact path's settings for a head: candidate quantization options and fine
//! bootstrapping keys, each planned, measured against the f64 model on the calibration
//! features (argmax agreement of the integer twin, which the encryption equals bit for bit)
//! and costed with a bootstrapping cost model; the cheapest candidate that reaches a target
//! agreement within a key budget wins.

use ndarray::{ArrayView2, Axis};

use crate::exact::{DecompositionBaseLog, DecompositionLevelCount, ExactParams, DEFAULT_VETTED};
use crate::model::reference::{argmax_agreement, evaluate_exact_fn_batch};
use crate::model::Adapter;
use crate::{Error, Result};

use super::{argmax_pbs, quantize, QuantizeOptions, QuantizedPlan};

/// Cost of one blind rotation with a `levels`-level bootstrapping key, in units of the
/// coarse (1-level) one, and of one keyswitch: measured on one thread of the 2-core AMD
/// EPYC of `docs/BENCHMARKS.md` (`examples/exact_ab.rs` and the `pbs_cost` rows: 2^15 x 2
/// about 2.0x, 2^12 x 3 about 2.6x the coarse rotation, a keyswitch about 0.19x).
pub fn rotation_cost(levels: usize) -> f64 {
    match levels {
        0 | 1 => 1.0,
        2 => 2.0,
        l => 2.6 + 0.7 * (l - 3) as f64,
    }
}

/// See [`rotation_cost`].
pub const KEYSWITCH_COST: f64 = 0.19;

/// Estimated server cost of one sample of `plan` (without sanitization), in coarse blind
/// rotations: per hidden unit `2J` keyswitches and `3J - 1` coarse rotations for the stages
/// (`Evaluator::top_digits`), then the table (4-bit: 1 keyswitch, 1 fine rotation; 5-bit:
/// 2 keyswitches, 1 coarse and 2 fine; 6-bit: 4, 3 and 4, the extra bit included); the
/// argmax's bootstrappings at 1.5 coarse rotations each.
pub fn estimated_cost(plan: &QuantizedPlan, params: &ExactParams) -> f64 {
    let fine = rotation_cost(params.pbs_decomposition(true).1 .0);
    let mut cost = 0.0;
    for l in &plan.layers {
        let Some(a) = &l.activation else { continue };
        let j = f64::from(a.stages);
        let (ks, coarse, fines) = match a.bits {
            4 => (1.0, 0.0, 1.0),
            5 => (2.0, 1.0, 2.0),
            _ => (4.0, 3.0, 4.0),
        };
        let unit =
            (2.0 * j + ks) * KEYSWITCH_COST + (3.0 * j - 1.0).max(0.0) + coarse + fines * fine;
        cost += l.out_dim as f64 * unit;
    }
    if plan.argmax {
        cost += 1.5 * argmax_pbs(plan.output_dim(), plan.logits_log_modulus()) as f64;
    }
    cost
}

/// One candidate setting and what it gives.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Short name (`default`, `j3-6bit-in`, `accurate-5`, `six-bit`).
    pub name: &'static str,
    /// Quantization options.
    pub options: QuantizeOptions,
    /// Parameters (the vetted set with this candidate's fine decomposition).
    pub params: ExactParams,
    /// Argmax agreement of the integer twin with f64 on the calibration features, or the
    /// reason the candidate could not be planned.
    pub agreement: std::result::Result<f64, String>,
    /// [`estimated_cost`] (0 when not planned).
    pub cost: f64,
    /// Evaluation keys transferred (seeded), bytes.
    pub key_bytes: u64,
}

/// The candidates tried by [`select`]: `base` (with the default `2^15 x 2` fine key), `J = 3`
/// with 6-bit inputs, `J = 3` with 6-bit inputs and hidden outputs on the `2^12 x 3` key,
/// and [`QuantizeOptions::six_bit`] on that key; `base.argmax` is kept in all.
///
/// # Errors
/// [`Error::InvalidParameters`] if a parameter set cannot be built (not expected).
pub fn candidates(
    base: &QuantizeOptions,
) -> Result<Vec<(&'static str, QuantizeOptions, ExactParams)>> {
    let fine = |b: usize, l: usize| {
        ExactParams::vetted(
            DEFAULT_VETTED,
            DecompositionBaseLog(b),
            DecompositionLevelCount(l),
        )
    };
    let j3 = QuantizeOptions {
        stages: 3,
        input_bits: 6,
        ..base.clone()
    };
    let acc5 = QuantizeOptions {
        hidden_bits: 6,
        ..j3.clone()
    };
    let six = QuantizeOptions {
        argmax: base.argmax,
        ..QuantizeOptions::six_bit()
    };
    Ok(vec![
        ("default", base.clone(), fine(15, 2)?),
        ("j3-6bit-in", j3, fine(15, 2)?),
        ("accurate-5", acc5, fine(12, 3)?),
        ("six-bit", six, fine(12, 3)?),
    ])
}

/// Plans every [`candidates`] entry for `adapter` on `calib` (the adapter's inputs side by
/// side), measures each against the f64 model on `calib`, and returns the index of the
/// cheapest (by [`estimated_cost`]) whose agreement is at least `min_agreement` and whose
/// transferred keys fit `max_key_bytes`; if none does, the most accurate that fits the key
/// budget, and `false`. Agreement is measured in-sample (the calibration features also set
/// the scales), so hold out data to judge the choice. Cost: one plan and one integer-twin
/// pass over `calib` per candidate; no encryption.
///
/// # Errors
/// [`Error::InvalidParameters`] if no candidate can be planned or fits the key budget, and
/// the errors of the f64 reference on bad features.
pub fn select(
    adapter: &Adapter,
    calib: ArrayView2<f64>,
    base: &QuantizeOptions,
    min_agreement: f64,
    max_key_bytes: u64,
) -> Result<(Vec<Candidate>, usize, bool)> {
    let mut views = Vec::new();
    let mut at = 0usize;
    for i in adapter.inputs() {
        if at + i.dim > calib.ncols() {
            return Err(Error::dims(
                "exact calibration features",
                at + i.dim,
                calib.ncols(),
            ));
        }
        let (_, rest) = calib.split_at(Axis(1), at);
        let (v, _) = rest.split_at(Axis(1), i.dim);
        views.push(v);
        at += i.dim;
    }
    let (want, _) = evaluate_exact_fn_batch(adapter, &views)?;
    let mut out = Vec::new();
    for (name, options, params) in candidates(base)? {
        let key_bytes = params.key_bytes().0;
        let (agreement, cost) = match quantize(adapter, calib, &options, &params) {
            Ok(plan) => {
                let got = plan.forward_batch(calib)?;
                let agree =
                    argmax_agreement(got.view(), want.view())? as f64 / calib.nrows() as f64;
                (Ok(agree), estimated_cost(&plan, &params))
            }
            Err(e) => (Err(e.to_string()), 0.0),
        };
        out.push(Candidate {
            name,
            options,
            params,
            agreement,
            cost,
            key_bytes,
        });
    }
    let fits = |c: &Candidate| c.key_bytes <= max_key_bytes && c.agreement.is_ok();
    let met = out
        .iter()
        .enumerate()
        .filter(|(_, c)| fits(c) && c.agreement.as_ref().is_ok_and(|&a| a >= min_agreement))
        .min_by(|a, b| a.1.cost.total_cmp(&b.1.cost))
        .map(|(i, _)| i);
    if let Some(i) = met {
        return Ok((out, i, true));
    }
    let best = out
        .iter()
        .enumerate()
        .filter(|(_, c)| fits(c))
        .max_by(|a, b| {
            let (x, y) = (
                a.1.agreement.as_ref().copied().unwrap_or(0.0),
                b.1.agreement.as_ref().copied().unwrap_or(0.0),
            );
            x.total_cmp(&y).then(b.1.cost.total_cmp(&a.1.cost))
        })
        .map(|(i, _)| i)
        .ok_or_else(|| {
            Error::params(format!(
                "exact backend: no candidate setting can be planned within {max_key_bytes} B of keys"
            ))
        })?;
    Ok((out, best, false))
}
