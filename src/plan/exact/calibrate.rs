//! Calibration: input, weight and activation scales chosen on sample features, weight
//! widths lowered until every bootstrapping and decryption meets the failure target.

use ndarray::ArrayView2;

use crate::exact::noise::{self, MAX_LOG2_P_FAIL};
use crate::exact::ExactParams;
use crate::model::{Activation, Adapter};
use crate::{Error, Result};

use super::argmax::{argmax_pfails, max_pair_diff_norm2, ARGMAX_LOG_MODULUS, ARGMAX_MAX_CLASSES};
use super::chain::{chain, unsupported, FloatLayer};
use super::reference::{hidden_forward, quantize_vec};
use super::{QuantReport, QuantizeOptions, QuantizedActivation, QuantizedLayer, QuantizedPlan};

pub(super) fn act_eval(act: &Activation, z: f64) -> f64 {
    match act.eval_exact(z) {
        Some(y) => y,
        None => act.eval(z.clamp(act.lo, act.hi)),
    }
}

fn act_name(act: &Activation) -> String {
    act.func
        .map_or_else(|| "poly".to_string(), |f| f.name().to_string())
}

fn bits_for(max_abs: i64) -> u32 {
    // smallest p with 2^(p-1) > 2 * max_abs (one bit of headroom, one sign bit)
    let need = (2 * max_abs.unsigned_abs() as u128 + 1).max(1);
    let mut p = 1u32;
    while (1u128 << (p - 1)) <= need {
        p += 1;
    }
    p
}

fn check_options(o: &QuantizeOptions) -> Result<()> {
    let bad = |r: String| Err(Error::params(r));
    if !(2..=16).contains(&o.input_bits) {
        return bad(format!("input_bits {} must be in 2..=16", o.input_bits));
    }
    if !(2..=16).contains(&o.weight_bits) || !(2..=16).contains(&o.output_weight_bits) {
        return bad("weight bits must be in 2..=16".into());
    }
    if !(1..=13).contains(&o.stages) {
        return bad(format!("stages {} must be in 1..=13", o.stages));
    }
    if !(4..=6).contains(&o.activation_bits) {
        return bad(format!(
            "activation_bits {} must be 4, 5 or 6",
            o.activation_bits
        ));
    }
    if !(1..=16).contains(&o.hidden_bits) {
        return bad(format!("hidden_bits {} must be in 1..=16", o.hidden_bits));
    }
    if !(o.range_fill > 0.0 && o.range_fill <= 1.0) {
        return bad(format!("range_fill {} must be in (0, 1]", o.range_fill));
    }
    Ok(())
}

/// Quantizes `adapter` with the calibration features `calib` (`samples x d`).
///
/// # Errors
/// [`Error::Model`] for an unsupported graph, [`Error::DimensionMismatch`] for features of
/// the wrong width, [`Error::InvalidValue`] for non-finite features or an empty set,
/// [`Error::InvalidParameters`] for bad options or when no weight width keeps every
/// bootstrapping and the decryption below the 2^-128 failure target.
pub fn quantize(
    adapter: &Adapter,
    calib: ArrayView2<f64>,
    opts: &QuantizeOptions,
    params: &ExactParams,
) -> Result<QuantizedPlan> {
    // A tensor read by several layers is held at the largest of their moduli, and a layer
    // with a smaller modulus reads it shifted (noise amplified). The moduli are known only
    // once the plan is made: plan with an assumed set, then again with the moduli found,
    // until the assumption covers them (the noise figures are then upper bounds).
    let mut hint: Vec<u32> = Vec::new();
    for _ in 0..4 {
        let plan = quantize_with_moduli(adapter, calib, opts, params, &hint)?;
        let covered = plan
            .tensor_log_moduli
            .iter()
            .enumerate()
            .all(|(t, &m)| hint.get(t).is_some_and(|&h| h >= m));
        if covered {
            return Ok(plan);
        }
        hint = plan
            .tensor_log_moduli
            .iter()
            .enumerate()
            .map(|(t, &m)| m.max(hint.get(t).copied().unwrap_or(0)))
            .collect();
    }
    Err(Error::params(
        "exact backend: the moduli of tensors read by several layers do not settle",
    ))
}

/// [`quantize`] with tensor `t` assumed held at modulus `2^hint[t]` (or at its reader's
/// modulus where `hint` has no entry or a smaller one).
fn quantize_with_moduli(
    adapter: &Adapter,
    calib: ArrayView2<f64>,
    opts: &QuantizeOptions,
    params: &ExactParams,
    hint: &[u32],
) -> Result<QuantizedPlan> {
    check_options(opts)?;
    let layers = chain(adapter)?;
    if opts.argmax {
        let classes = layers.last().map_or(0, |l| l.w.nrows());
        if !(1..=ARGMAX_MAX_CLASSES).contains(&classes) {
            return Err(Error::params(format!(
                "exact backend: encrypted argmax supports 1..={ARGMAX_MAX_CLASSES} classes, the head has {classes}"
            )));
        }
    }
    let d: usize = adapter.inputs().iter().map(|i| i.dim).sum();
    if calib.ncols() != d {
        return Err(Error::dims("exact calibration features", d, calib.ncols()));
    }
    if calib.nrows() == 0 || calib.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: "exact calibration features".into(),
            reason: "need at least one sample, all finite".into(),
        });
    }
    let qmax_in = ((1i64 << (opts.input_bits - 1)) - 1) as f64;
    let max_in = calib.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let input_scale = if max_in > 0.0 { max_in / qmax_in } else { 1.0 };
    // per calibration sample, every tensor so far (tensor 0: the quantized inputs)
    let mut samples: Vec<Vec<Vec<i64>>> = calib
        .rows()
        .into_iter()
        .map(|r| vec![quantize_vec(r, input_scale, opts.input_bits)])
        .collect();
    // per tensor: real value of one unit of each element, and the noise variance it carries
    let mut units: Vec<Vec<f64>> = vec![vec![input_scale; d]];

    let fresh = noise::fresh_variance(params);
    let fine = noise::pbs_variance(params, true);
    let mut pfails: Vec<(f64, usize)> = Vec::new();
    let mut out_layers = Vec::new();
    let mut overflows = Vec::new();
    let s_in = 1.0;
    let mut chosen_out_bits = opts.output_weight_bits;
    let mut decrypt_pf = f64::NEG_INFINITY;
    let count = layers.len();
    // output noise of a table read: fine PBS outputs summed (1, 2 or 4)
    let act_var = match opts.activation_bits {
        6 => 4.0 * fine,
        5 => 2.0 * fine,
        _ => fine,
    };
    let mut tvar: Vec<f64> = vec![fresh];
    for (li, fl) in layers.iter().enumerate() {
        // the units of the source tensors are folded into the weights: the layer reads the
        // integers of the concatenated sources directly (its `input_scale` is 1)
        let mut fl = fl.clone();
        let mut col_unit = Vec::with_capacity(fl.w.ncols());
        let mut col_src = Vec::with_capacity(fl.w.ncols());
        for &t in &fl.srcs {
            let u = units
                .get(t)
                .ok_or_else(|| unsupported("internal: source tensor not yet computed"))?;
            col_unit.extend_from_slice(u);
            col_src.extend(std::iter::repeat_n(t, u.len()));
        }
        if col_unit.len() != fl.w.ncols() {
            return Err(unsupported(
                "internal: layer width does not match its sources",
            ));
        }
        for (mut col, u) in fl.w.columns_mut().into_iter().zip(&col_unit) {
            col *= *u;
        }
        let fl = &fl;
        // noise variance of each input column as read at modulus 2^p: a tensor held at a
        // larger modulus 2^m is read shifted by 2^(m - p)
        let col_var = |p: u32| -> Vec<f64> {
            col_src
                .iter()
                .map(|&t| {
                    let m = hint.get(t).copied().unwrap_or(0).max(p);
                    tvar.get(t).copied().unwrap_or(fresh) * 4f64.powi((m - p) as i32)
                })
                .collect()
        };
        let xs: Vec<Vec<i64>> = samples
            .iter()
            .map(|ts| {
                fl.srcs
                    .iter()
                    .flat_map(|&t| ts.get(t).map_or(&[][..], |v| v.as_slice()))
                    .copied()
                    .collect()
            })
            .collect();
        let (out_dim, in_dim) = fl.w.dim();
        if let Some(act) = &fl.act {
            let mut bits = opts.weight_bits;
            let (layer, layer_pf) = loop {
                let cv = col_var(4 * opts.stages + 5);
                let (mut layer, pf) = quantize_hidden(fl, act, &xs, s_in, bits, opts, params, &cv);
                layer.sources.clone_from(&fl.srcs);
                let worst = pf.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
                if worst <= MAX_LOG2_P_FAIL || bits <= 2 {
                    break (layer, pf);
                }
                bits -= 1;
            };
            pfails.extend(layer_pf);
            units.push(
                layer
                    .activation
                    .as_ref()
                    .map(|a| a.output_scales.clone())
                    .unwrap_or_default(),
            );
            tvar.push(act_var);
            let mut over = 0usize;
            for (ts, x) in samples.iter_mut().zip(&xs) {
                let (h, o) = hidden_forward(&layer, x);
                over += o;
                ts.push(h);
            }
            overflows.push(over);
            out_layers.push(layer);
        } else {
            if li + 1 != count {
                return Err(unsupported("internal: output layer not last"));
            }
            let mut bits = opts.output_weight_bits;
            let layer = loop {
                let qmax = ((1i64 << (bits - 1)) - 1) as f64;
                let mut weights = Vec::with_capacity(out_dim * in_dim);
                let mut bias = Vec::with_capacity(out_dim);
                let mut scales = Vec::with_capacity(out_dim);
                for (row, &b) in fl.w.rows().into_iter().zip(fl.b.iter()) {
                    let max_w = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    let s_w = if max_w > 0.0 { max_w / qmax } else { 1.0 };
                    weights.extend(row.iter().map(|w| (w / s_w).round() as i64));
                    bias.push((b / (s_in * s_w)).round() as i64);
                    scales.push(s_w);
                }
                let mut max_acc = 0i64;
                for x in &xs {
                    for (row, &b) in weights.chunks(in_dim).zip(&bias) {
                        let a: i64 = row.iter().zip(x).map(|(w, xi)| w * xi).sum::<i64>() + b;
                        max_acc = max_acc.max(a.abs());
                    }
                }
                let p = bits_for(max_acc).max(opts.input_bits + 1).max(2);
                let cv = col_var(p);
                let var = max_row_norm2(&weights, in_dim, &cv);
                let pf = noise::log2_p_fail(var, 2f64.powi(63 - p as i32));
                let arg_pf = if opts.argmax && p <= 62 {
                    // both logits read the same input noise: the difference's noise is
                    // (w_i - w_j) · e, so its variance is Σ (w_i - w_j)² var
                    argmax_pfails(
                        params,
                        p,
                        max_pair_diff_norm2(&weights, in_dim, &cv),
                        out_dim,
                    )
                } else {
                    Vec::new()
                };
                let arg_worst = arg_pf.iter().map(|q| q.0).fold(f64::NEG_INFINITY, f64::max);
                if p <= 62 && pf <= MAX_LOG2_P_FAIL && arg_worst <= MAX_LOG2_P_FAIL {
                    decrypt_pf = if opts.argmax {
                        // the client decrypts the one-hot bits (coarse PBS outputs)
                        noise::log2_p_fail(
                            noise::pbs_variance(params, false),
                            2f64.powi(63 - ARGMAX_LOG_MODULUS as i32),
                        )
                    } else {
                        pf
                    };
                    pfails.extend(arg_pf);
                    break QuantizedLayer {
                        sources: fl.srcs.clone(),
                        in_dim,
                        out_dim,
                        weights,
                        bias,
                        log_modulus: p,
                        input_scale: s_in,
                        weight_scales: scales,
                        activation: None,
                    };
                }
                if bits <= 2 {
                    return Err(Error::params(format!(
                        "exact backend: no output weight width keeps decryption{} below 2^{MAX_LOG2_P_FAIL} \
                         (last try: {bits} bits, log modulus {p}, log2 p_fail {pf:.1}{})",
                        if opts.argmax { " and the argmax bootstrappings" } else { "" },
                        if opts.argmax { format!(", argmax {arg_worst:.1}") } else { String::new() }
                    )));
                }
                bits -= 1;
            };
            chosen_out_bits = bits;
            out_layers.push(layer);
        }
    }
    let max_pf = pfails.iter().map(|p| p.0).reduce(f64::max);
    if let Some(max_pf) = max_pf.filter(|&pf| pf > MAX_LOG2_P_FAIL) {
        return Err(Error::params(format!(
            "exact backend: a bootstrapping would fail with probability 2^{max_pf:.1} > 2^{MAX_LOG2_P_FAIL}; \
             use fewer stages or narrower weights"
        )));
    }
    let union = noise::log2_sum(pfails.iter().map(|&(pf, n)| pf + (n as f64).log2()).chain(
        std::iter::once(decrypt_pf + (out_layers.last().map_or(1, |l| l.out_dim) as f64).log2()),
    ));
    // each tensor is held at the largest modulus of the layers reading it
    let mut tensor_log_moduli = vec![0u32; out_layers.len()];
    for l in &out_layers {
        for &t in &l.sources {
            if let Some(m) = tensor_log_moduli.get_mut(t) {
                *m = (*m).max(l.log_modulus);
            }
        }
    }
    for m in &mut tensor_log_moduli {
        if *m == 0 {
            *m = opts.input_bits + 1;
        }
    }
    Ok(QuantizedPlan {
        input_dim: d,
        tensor_log_moduli,
        input_scale,
        input_bits: opts.input_bits,
        layers: out_layers,
        argmax: opts.argmax,
        report: QuantReport {
            samples: calib.nrows(),
            overflows,
            output_weight_bits: chosen_out_bits,
            max_log2_p_fail_pbs: max_pf,
            log2_p_fail_decrypt: decrypt_pf,
            log2_p_fail_sample: union,
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn quantize_hidden(
    fl: &FloatLayer,
    act: &Activation,
    xs: &[Vec<i64>],
    s_in: f64,
    weight_bits: u32,
    opts: &QuantizeOptions,
    params: &ExactParams,
    col_var: &[f64],
) -> (QuantizedLayer, Vec<(f64, usize)>) {
    let (out_dim, in_dim) = fl.w.dim();
    let coarse = noise::pbs_variance(params, false);
    let mut pfails = Vec::new();
    let j = opts.stages;
    let p = 4 * j + 5;
    let unit = 1i64 << super::read_shift(j, opts.activation_bits);
    let boxes = 1usize << opts.activation_bits;
    let half = (boxes / 2) as i64;
    let range = (half * unit) as f64;
    let qmax_w = ((1i64 << (weight_bits - 1)) - 1) as f64;
    let mut weights = Vec::with_capacity(out_dim * in_dim);
    let mut bias = Vec::with_capacity(out_dim);
    let mut scales = Vec::with_capacity(out_dim);
    let mut real_tables = Vec::with_capacity(out_dim);
    for (row, &b) in fl.w.rows().into_iter().zip(fl.b.iter()) {
        let max_z = xs
            .iter()
            .map(|x| {
                (row.iter()
                    .zip(x)
                    .map(|(w, &xi)| w * xi as f64 * s_in)
                    .sum::<f64>()
                    + b)
                    .abs()
            })
            .fold(0.0f64, f64::max);
        let max_w = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut s_w = (max_z / (s_in * range * opts.range_fill)).max(max_w / qmax_w);
        if !(s_w > 0.0 && s_w.is_finite()) {
            s_w = 1.0;
        }
        weights.extend(row.iter().map(|w| (w / s_w).round() as i64));
        bias.push((b / (s_in * s_w)).round() as i64 + half * unit);
        scales.push(s_w);
        let t: Vec<f64> = (0..boxes)
            .map(|v| {
                act_eval(
                    act,
                    (v as f64 - half as f64 + 0.5) * unit as f64 * s_in * s_w,
                )
            })
            .collect();
        real_tables.push(t);
    }
    // hidden outputs span [min(T, 0), max(T, 0)] over all channels in 2^hidden_bits levels
    // (zero exact). One scale for the layer, not one per channel: per-channel scales (which
    // the representation allows, folded into the next layer's weights) make every unit use
    // its whole range, which widens the output accumulator; the fine bootstrapping noise
    // summed over the hidden width then costs the output weights a bit (measured on
    // 384 -> 64 -> ReLU -> 10: no better argmax agreement, often 3-bit output weights).
    let hi = real_tables.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
    let lo = real_tables.iter().flatten().fold(0.0f64, |m, &v| m.min(v));
    let levels = ((1i64 << opts.hidden_bits) - 1) as f64;
    let s_h = if hi > lo { (hi - lo) / levels } else { 1.0 };
    let output_scales = vec![s_h; out_dim];
    let tables: Vec<Vec<i64>> = real_tables
        .iter()
        .zip(&output_scales)
        .map(|(t, s_h)| {
            let mut t: Vec<i64> = t.iter().map(|v| (v / s_h).round() as i64).collect();
            if opts.activation_bits == 6 {
                // the last box is what two 5-bit reads give there (the top of the window,
                // reached only on overflow)
                let last = crate::exact::lut6_value(&t, 63);
                if let Some(e) = t.last_mut() {
                    *e = last;
                }
            }
            t
        })
        .collect();
    // noise (`Evaluator::top_digits`): read k (k = 0..J, the last one the tables' input)
    // sees the accumulator shifted by 2^(p-5-4k), minus nibble k-1 and nibble k-2 as coarse
    // outputs at their scales, and from k = 3 on a centred fraction of at most 2^50
    let var_acc = max_row_norm2(&weights, in_dim, col_var);
    let read = |k: u32| -> (f64, f64) {
        let var = var_acc * 4f64.powi((p - 5 - 4 * k) as i32) + coarse * f64::from(k.min(2));
        let offset = if k >= 3 {
            crate::exact::TOP_DIGITS_CENTRE as f64
        } else {
            0.0
        };
        (var, offset)
    };
    let pf = |(v, o): (f64, f64)| noise::pbs_log2_p_fail_offset(params, v, o);
    for k in 0..j {
        let (top, off) = read(k);
        // the sign read, then the low read (its input carries the sign's coarse output;
        // the near, far and 6th-bit rotations share that keyswitch and that input)
        pfails.push((pf((top, off)), out_dim));
        pfails.push((pf((top + coarse, off)), out_dim));
        if opts.activation_bits == 6 && k + 1 == j {
            pfails.push((pf((top + coarse, off)), out_dim));
        }
    }
    let (cur, cur_off) = read(j);
    // lut5: sign (coarse) and odd part read its input, the even part the input plus a
    // coarse output; lut6 is a lut5 of `w` and one of `w + b` (b: one coarse output).
    // (Order kept as before 6-bit tables: the union bound, hence the public file, is
    // reproduced to the last bit.)
    let reads: &[f64] = match opts.activation_bits {
        6 => &[cur, cur + coarse],
        5 => &[cur],
        _ => &[],
    };
    pfails.push((
        pf((reads.first().copied().unwrap_or(cur), cur_off)),
        out_dim,
    ));
    for (i, &r) in reads.iter().enumerate() {
        if i > 0 {
            pfails.push((pf((r, cur_off)), out_dim));
        }
        pfails.push((pf((r + coarse, cur_off)), out_dim));
        pfails.push((pf((r, cur_off)), out_dim));
    }
    let layer = QuantizedLayer {
        sources: Vec::new(),
        in_dim,
        out_dim,
        weights,
        bias,
        log_modulus: p,
        input_scale: s_in,
        weight_scales: scales,
        activation: Some(QuantizedActivation {
            name: act_name(act),
            stages: j,
            bits: opts.activation_bits,
            tables,
            output_scales,
        }),
    };
    (layer, pfails)
}

/// Largest noise variance of a row's dot product: `max_j Σ_i w_ji² · var_i`.
fn max_row_norm2(w: &[i64], in_dim: usize, col_var: &[f64]) -> f64 {
    w.chunks(in_dim.max(1))
        .map(|r| {
            r.iter()
                .zip(col_var)
                .map(|(&v, s)| (v as f64) * (v as f64) * s)
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_for_keeps_a_sign_and_a_headroom_bit() {
        assert_eq!(bits_for(0), 2);
        assert_eq!(bits_for(1), 3);
        // |a| <= 100 needs 2·100 < 2^(p-1): p = 9
        assert_eq!(bits_for(100), 9);
        assert_eq!(bits_for(127), 9);
        assert_eq!(bits_for(128), 10);
    }

    #[test]
    fn row_variance_weights_each_column() {
        let w = [1, 2, 3, 0, 0, 4];
        assert_eq!(max_row_norm2(&w, 3, &[1.0, 1.0, 1.0]), 16.0);
        assert_eq!(max_row_norm2(&w, 3, &[1.0, 10.0, 1.0]), 1.0 + 40.0 + 9.0);
    }

    #[test]
    fn options_are_checked() {
        assert!(check_options(&QuantizeOptions::default()).is_ok());
        for bad in [
            QuantizeOptions {
                input_bits: 1,
                ..QuantizeOptions::default()
            },
            QuantizeOptions {
                stages: 0,
                ..QuantizeOptions::default()
            },
            QuantizeOptions {
                activation_bits: 7,
                ..QuantizeOptions::default()
            },
            QuantizeOptions {
                range_fill: 1.5,
                ..QuantizeOptions::default()
            },
        ] {
            assert!(check_options(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tables_evaluate_the_function_itself() {
        let act = Activation::fit(crate::model::ActivationFn::Relu, -4.0, 4.0, 3).unwrap();
        assert_eq!(act_eval(&act, -2.0), 0.0);
        assert!((act_eval(&act, 1.5) - 1.5).abs() < 1e-12);
        assert_eq!(act_name(&act), "relu");
    }
}
