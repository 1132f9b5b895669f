//! Where the exact path's error comes from: the quantized plan's steps applied one at a
//! time to the f64 model, each measured against f64 (argmax agreement, relative RMS error).
//!
//! The encrypted run equals the integer twin bit for bit except with the failure
//! probability the planner bounds (at most 2^-128 per bootstrapping), so bootstrapping
//! noise contributes nothing measurable: every difference from f64 is quantization, and
//! this module splits it by source. Cost: one f64 forward pass per step and sample.

use ndarray::{Array2, ArrayView2};

use crate::model::reference::{argmax_agreement, relative_rms_error};
use crate::model::Adapter;
use crate::{Error, Result};

use super::calibrate::act_eval;
use super::chain::{chain, FloatLayer};
use super::reference::quantize_vec;
use super::QuantizedPlan;

/// One step of an [`error_budget`]: every quantization up to and including this one is
/// applied, the later ones are not.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetStep {
    /// What this step adds.
    pub name: &'static str,
    /// Fraction of samples whose argmax equals the f64 model's.
    pub argmax_agreement: f64,
    /// `‖got - f64‖ / ‖f64‖` over all outputs.
    pub relative_rms: f64,
}

/// Steps of the budget, in the order they are applied.
pub const BUDGET_STEPS: [&str; 6] = [
    "inputs quantized",
    "+ hidden weights quantized",
    "+ pre-activation read on the table's boxes",
    "+ hidden outputs rounded by the tables",
    "+ output weights quantized",
    "integer twin (bias rounding, wrap-around)",
];

/// Splits the error of `plan` (quantized from `adapter`) against the f64 model on the
/// samples `x` (`n x d`) into the contributions of [`BUDGET_STEPS`]; the last step is the
/// integer twin itself, which the encrypted run reproduces. The logits are compared (with
/// the argmax option too, whose one-hot is the argmax of those logits).
///
/// # Errors
/// [`Error::Model`] for a graph `quantize` refuses, [`Error::DimensionMismatch`] if `plan`
/// does not come from `adapter` or `x` has the wrong width.
pub fn error_budget(
    plan: &QuantizedPlan,
    adapter: &Adapter,
    x: ArrayView2<f64>,
) -> Result<Vec<BudgetStep>> {
    let floats = chain(adapter)?;
    if floats.len() != plan.layers.len() || x.ncols() != plan.input_dim() {
        return Err(Error::dims(
            "error budget: plan layers",
            floats.len(),
            plan.layers.len(),
        ));
    }
    let n = x.nrows();
    let c = plan.output_dim();
    let mut outs = vec![Array2::<f64>::zeros((n, c)); BUDGET_STEPS.len() + 1];
    for (i, row) in x.rows().into_iter().enumerate() {
        for (level, out) in outs.iter_mut().enumerate().take(BUDGET_STEPS.len()) {
            let y = forward(plan, &floats, row.to_vec(), level)?;
            for (dst, v) in out.row_mut(i).iter_mut().zip(y) {
                *dst = v;
            }
        }
        let xq = plan.quantize_input(row)?;
        let logits = plan.reference_logits(&xq)?;
        if let Some(l) = plan.layers.last() {
            for ((dst, &v), s) in outs[BUDGET_STEPS.len()]
                .row_mut(i)
                .iter_mut()
                .zip(&logits)
                .zip(&l.weight_scales)
            {
                *dst = v as f64 * s * l.input_scale;
            }
        }
    }
    let want = &outs[0];
    BUDGET_STEPS
        .iter()
        .zip(outs.iter().skip(1))
        .map(|(&name, got)| {
            Ok(BudgetStep {
                name,
                argmax_agreement: argmax_agreement(got.view(), want.view())? as f64
                    / n.max(1) as f64,
                relative_rms: relative_rms_error(got.view(), want.view())?,
            })
        })
        .collect()
}

/// The f64 forward pass with the first `level` quantization steps applied (level 0: the
/// f64 model itself, evaluated as `quantize` folds it).
fn forward(
    plan: &QuantizedPlan,
    floats: &[FloatLayer],
    x: Vec<f64>,
    level: usize,
) -> Result<Vec<f64>> {
    let x = if level >= 1 {
        let xq = quantize_vec(
            ndarray::ArrayView1::from(&x),
            plan.input_scale,
            plan.input_bits,
        );
        xq.iter().map(|&v| v as f64 * plan.input_scale).collect()
    } else {
        x
    };
    // per tensor: real values, and the real value of one integer unit of each element
    let mut units: Vec<Vec<f64>> = vec![vec![plan.input_scale; x.len()]];
    let mut tensors: Vec<Vec<f64>> = vec![x];
    let mut out = Vec::new();
    for (ql, fl) in plan.layers.iter().zip(floats) {
        let gather = |v: &Vec<Vec<f64>>| -> Vec<f64> {
            ql.sources
                .iter()
                .flat_map(|&t| v.get(t).map_or(&[][..], |a| a.as_slice()))
                .copied()
                .collect()
        };
        let (h, in_units) = (gather(&tensors), gather(&units));
        if h.len() != ql.in_dim || fl.w.ncols() != ql.in_dim {
            return Err(Error::dims("error budget: layer input", ql.in_dim, h.len()));
        }
        let quantized_weights = match &ql.activation {
            Some(_) => level >= 2,
            None => level >= 5,
        };
        let mut next = Vec::with_capacity(ql.out_dim);
        for (j, (wrow, &b)) in fl.w.rows().into_iter().zip(fl.b.iter()).enumerate() {
            let s_w = ql.weight_scales.get(j).copied().unwrap_or(1.0);
            let z: f64 = if quantized_weights {
                // the plan folds the input units into the weights: w ≈ w_q · s_w / unit
                let qrow = ql
                    .weights
                    .get(j * ql.in_dim..(j + 1) * ql.in_dim)
                    .ok_or_else(|| Error::dims("error budget weights", ql.in_dim, 0))?;
                qrow.iter()
                    .zip(&h)
                    .zip(&in_units)
                    .map(|((&w, v), u)| w as f64 * s_w * ql.input_scale / u * v)
                    .sum::<f64>()
                    + b
            } else {
                wrow.iter().zip(&h).map(|(w, v)| w * v).sum::<f64>() + b
            };
            let (Some(act), Some(qa)) = (&fl.act, &ql.activation) else {
                next.push(z);
                continue;
            };
            let unit = (1u64 << qa.read_shift()) as f64 * ql.input_scale * s_w;
            let half = (1i64 << (qa.bits - 1)) as f64;
            let z = if level >= 3 {
                ((z / unit).floor().clamp(-half, half - 1.0) + 0.5) * unit
            } else {
                z
            };
            let y = act_eval(act, z);
            let s_h = qa.output_scales.get(j).copied().unwrap_or(1.0);
            next.push(if level >= 4 {
                (y / s_h).round() * s_h
            } else {
                y
            });
        }
        match &ql.activation {
            Some(qa) => {
                units.push(qa.output_scales.clone());
                tensors.push(next);
            }
            None => out = next,
        }
    }
    Ok(out)
}
