//! Quantize an [`Adapter`] into an integer plan for the exact (TFHE) backend, and the
//! integer reference twin every encrypted run must match bit for bit.
//!
//! Supported graphs: one input, then a chain of affine blocks (any mix of `Linear`,
//! `LowRank`, `Scale`, `Affine` and `Add` of affine maps of the *same* value, folded into
//! one dense matrix) separated by elementwise `Poly` activations, ending with an affine
//! block. Anything else (concatenation, residuals around an activation, several inputs)
//! returns [`Error::Model`].
//!
//! Integer semantics (what [`QuantizedPlan::reference`] computes and the encrypted run
//! reproduces exactly):
//! - inputs: `x_q = clamp(round(x / s_x), -(2^(b-1) - 1), 2^(b-1) - 1)`, per tensor;
//! - hidden layer (with activation, `J` stages): `acc = (W_q x + b_q) mod 2^p` with
//!   `p = 4J + 5`; `v = acc >> 4J` (in `[0, 32)`). With 5-bit tables (default) `h = T[v]`,
//!   `b_q` carries the offset `16 · 16^J` and `v - 16 = floor(pre-activation / 16^J)`;
//!   with 4-bit tables `h = T[v]` for `v < 16` and `-T[v - 16]` otherwise (the negacyclic
//!   wrap, reached only on overflow), offset `8 · 16^J`. `T` holds `round(f(z) / s_h)` at
//!   the centre `z` of each box (per output channel, since weight scales are per channel),
//!   with `s_h` spreading `[min(f, 0), max(f, 0)]` over `2^hidden_bits - 1` steps;
//!   pre-activations outside the calibrated window wrap modulo `2^p`;
//! - output layer: `y = (W_q h + b_q) mod 2^p_out`, signed; real value `y · s_in · s_w[j]`.
//!
//! Scales are calibrated on sample features: per output channel, the weight scale is the
//! larger of `max|W_j| / (2^(bits-1) - 1)` and the one that maps the largest calibrated
//! pre-activation to `fill · 8 · 16^J`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::exact::noise::{self, MAX_LOG2_P_FAIL};
use crate::exact::{ExactParams, ExactParamsLiteral};
use crate::model::{Activation, Adapter, NodeRef, Op};
use crate::{Error, Result};

/// Boxes one bootstrapping distinguishes on the padded half torus.
const BOXES: usize = 16;

/// Most classes the encrypted argmax handles: the win count of a class (`0..classes`) is
/// read by one bootstrapping, which distinguishes 16 values.
pub const ARGMAX_MAX_CLASSES: usize = 16;

/// Modulus (log2) of the encrypted one-hot bits the client decrypts.
pub const ARGMAX_LOG_MODULUS: u32 = 2;

/// The integer reference of the encrypted argmax: the one-hot vector of the logits `l`
/// (signed, held modulo `2^p`). For every pair `i < j`, `d = (l_i - l_j) mod 2^p` read as a
/// signed `p`-bit integer; `i` beats `j` iff `d >= 0` (ties go to the lower index), else `j`
/// beats `i`. Class `i` gets 1 iff it beats all `classes - 1` others. Without wrap-around
/// (`|l_i - l_j| < 2^(p-1)`, which the planner's headroom gives on calibration data) this is
/// the one-hot of the first maximal logit; with wrap-around the tournament may have no
/// winner (all zeros), never two.
pub fn argmax_one_hot(logits: &[i64], p: u32) -> Vec<i64> {
    let p = p.clamp(1, 62);
    let c = logits.len();
    let mut wins = vec![0usize; c];
    for (i, &a) in logits.iter().enumerate() {
        for (j, &b) in logits.iter().enumerate().skip(i + 1) {
            let d = crate::exact::to_signed(wrap(a.wrapping_sub(b), p), p);
            if let Some(w) = wins.get_mut(if d >= 0 { i } else { j }) {
                *w += 1;
            }
        }
    }
    wins.iter().map(|&w| i64::from(w + 1 == c)).collect()
}

/// Bits removed by each reduction stage of a logit difference held modulo `2^p` before its
/// sign is read with one bootstrapping (5 bits are left): stages of 4, then a last stage of
/// `(p - 5) mod 4` bits if that is not zero. Empty for `p <= 5`. The 4-bit stages come
/// first because the first stage reads the difference with its full noise multiplied by
/// `2^(p-k-1)`, which is smallest (`2^(p-5)`, the same margin as decrypting the logit) for
/// `k = 4`.
pub fn argmax_reductions(p: u32) -> Vec<u32> {
    if p <= 5 {
        return Vec::new();
    }
    let r = (p - 5) % 4;
    let mut v: Vec<u32> = std::iter::repeat_n(4, ((p - 5) / 4) as usize).collect();
    if r > 0 {
        v.push(r);
    }
    v
}

/// Bootstrappings of the encrypted argmax of `classes` logits held modulo `2^p`:
/// `C(C-1)/2 · (2R + 1) + C` with `R = ceil((p - 5) / 4)` reduction stages per pair (two
/// bootstrappings each), one sign read per pair and one equality read per class.
pub fn argmax_pbs(classes: usize, p: u32) -> u64 {
    let c = classes as u64;
    let pairs = c * c.saturating_sub(1) / 2;
    pairs * (2 * argmax_reductions(p).len() as u64 + 1) + c
}

/// Per-bootstrapping failure probabilities (log2, with multiplicities) of the encrypted
/// argmax, for differences of noise variance `var_diff`: per stage, the coarse read of the
/// shifted difference and the fine read of its low part (as in the hidden layers), then the
/// fine sign read, then the coarse read of each win count (a sum of `classes - 1` fine
/// sign outputs).
fn argmax_pfails(params: &ExactParams, p: u32, var_diff: f64, classes: usize) -> Vec<(f64, usize)> {
    let fine = noise::pbs_variance(params, true);
    let coarse = noise::pbs_variance(params, false);
    let pairs = (classes * classes.saturating_sub(1) / 2).max(1);
    let mut out = Vec::new();
    let mut cur = var_diff;
    let mut pc = p.max(5);
    for k in argmax_reductions(p) {
        let top = cur * 4f64.powi((pc - k - 1) as i32);
        out.push((noise::pbs_log2_p_fail(params, top), pairs));
        out.push((noise::pbs_log2_p_fail(params, top + coarse), pairs));
        cur += fine;
        pc -= k;
    }
    out.push((noise::pbs_log2_p_fail(params, cur), pairs));
    out.push((
        noise::pbs_log2_p_fail(params, classes.saturating_sub(1) as f64 * fine),
        classes,
    ));
    out
}

/// Options of [`quantize`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizeOptions {
    /// Bits of the quantized input features (signed, symmetric).
    pub input_bits: u32,
    /// Largest weight width of hidden layers (signed, per output channel).
    pub weight_bits: u32,
    /// Low-nibble removal stages per hidden neuron (`J`): accumulators hold `4J + 5` bits
    /// and each stage costs two bootstrappings.
    pub stages: u32,
    /// Bits of hidden activations (unsigned if the table is never negative).
    pub hidden_bits: u32,
    /// Bits of the pre-activation the table reads: 4 (16 boxes, one bootstrapping) or 5
    /// (32 boxes, three bootstrappings, see [`Evaluator::lut5`](crate::exact::Evaluator::lut5)).
    pub activation_bits: u32,
    /// Largest weight width of the output layer; lowered until decryption is reliable.
    pub output_weight_bits: u32,
    /// Fraction of the representable pre-activation range the calibrated maximum fills.
    pub range_fill: f64,
    /// Encrypted argmax: the server returns an encrypted one-hot vector of the predicted
    /// class (see [`argmax_one_hot`]) instead of the logits. At most [`ARGMAX_MAX_CLASSES`]
    /// classes.
    #[serde(default)]
    pub argmax: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            input_bits: 6,
            weight_bits: 8,
            stages: 2,
            hidden_bits: 4,
            activation_bits: 5,
            output_weight_bits: 8,
            range_fill: 0.9,
            argmax: false,
        }
    }
}

/// The lookup tables of a hidden layer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedActivation {
    /// Name of the function (`"relu"`, `"gelu"`, `"poly"`).
    pub name: String,
    /// Low-nibble removal stages `J`.
    pub stages: u32,
    /// Bits the table reads (4: 16 entries, negacyclic wrap; 5: 32 entries).
    pub bits: u32,
    /// One table per output channel (`2^bits` entries).
    pub tables: Vec<Vec<i64>>,
    /// Real value of one unit of the layer's output.
    pub output_scale: f64,
}

/// One quantized layer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedLayer {
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
    /// Integer weights, row-major `out_dim x in_dim`.
    pub weights: Vec<i64>,
    /// Integer biases (offsets included).
    pub bias: Vec<i64>,
    /// Accumulator modulus `p` (values are held mod `2^p`).
    pub log_modulus: u32,
    /// Real value of one input unit.
    pub input_scale: f64,
    /// Per-output-channel weight scales.
    pub weight_scales: Vec<f64>,
    /// Activation tables, `None` for the output layer.
    pub activation: Option<QuantizedActivation>,
}

/// What calibration and the noise model found.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantReport {
    /// Calibration samples used.
    pub samples: usize,
    /// Per hidden layer: calibration (sample, neuron) pairs whose pre-activation left the
    /// 16-box range (they wrap, see the module docs).
    pub overflows: Vec<usize>,
    /// Output weight width chosen.
    pub output_weight_bits: u32,
    /// Largest per-bootstrapping failure probability (log2) of the plan; `None` when the plan
    /// has no bootstrapping at all (a linear probe).
    pub max_log2_p_fail_pbs: Option<f64>,
    /// Decryption failure probability of the worst output (log2).
    pub log2_p_fail_decrypt: f64,
    /// Union bound of all failures for one sample (log2).
    pub log2_p_fail_sample: f64,
}

/// An integer plan: quantized layers plus the input quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedPlan {
    /// Real value of one input unit.
    pub input_scale: f64,
    /// Input width in bits.
    pub input_bits: u32,
    /// The layers, input to output.
    pub layers: Vec<QuantizedLayer>,
    /// Outputs are the one-hot argmax of the logits (see [`argmax_one_hot`]).
    pub argmax: bool,
    /// Calibration and noise report.
    pub report: QuantReport,
}

#[derive(Clone)]
struct FloatLayer {
    w: Array2<f64>,
    b: Array1<f64>,
    act: Option<Activation>,
}

#[derive(Clone)]
enum Val {
    Tensor(usize),
    Affine {
        src: usize,
        w: Array2<f64>,
        b: Array1<f64>,
    },
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::model(format!("exact backend: {}", what.into()))
}

/// Folds the adapter into a chain of dense affine layers separated by activations.
fn chain(adapter: &Adapter) -> Result<Vec<FloatLayer>> {
    if adapter.inputs().len() != 1 {
        return Err(unsupported(format!(
            "only single-input adapters are supported, this one has {}",
            adapter.inputs().len()
        )));
    }
    let mut dims = vec![adapter.inputs()[0].dim];
    let mut layers: Vec<FloatLayer> = Vec::new();
    let mut vals: Vec<Val> = Vec::new();
    let resolve = |vals: &Vec<Val>, r: NodeRef| -> Result<Val> {
        match r {
            NodeRef::Input(0) => Ok(Val::Tensor(0)),
            NodeRef::Input(i) => Err(unsupported(format!("input {i}"))),
            NodeRef::Node(i) => vals
                .get(i)
                .cloned()
                .ok_or_else(|| unsupported("dangling node reference")),
        }
    };
    let as_affine = |v: Val, dims: &Vec<usize>| -> Result<(usize, Array2<f64>, Array1<f64>)> {
        match v {
            Val::Tensor(t) => {
                let d = *dims.get(t).ok_or_else(|| unsupported("bad tensor"))?;
                Ok((t, Array2::eye(d), Array1::zeros(d)))
            }
            Val::Affine { src, w, b } => Ok((src, w, b)),
        }
    };
    for node in adapter.nodes() {
        let first = node
            .inputs
            .first()
            .copied()
            .ok_or_else(|| unsupported(format!("node {} has no input", node.name)))?;
        let v = match &node.op {
            Op::Linear { weight, bias } => {
                let (src, w0, b0) = as_affine(resolve(&vals, first)?, &dims)?;
                linear_of(weight, bias.as_ref(), src, &w0, &b0)
            }
            Op::LowRank { a, b, scale, bias } => {
                let (src, w0, b0) = as_affine(resolve(&vals, first)?, &dims)?;
                linear_of(&(b.dot(a) * *scale), bias.as_ref(), src, &w0, &b0)
            }
            Op::Scale(s) => {
                let (src, w0, b0) = as_affine(resolve(&vals, first)?, &dims)?;
                Val::Affine {
                    src,
                    w: w0 * *s,
                    b: b0 * *s,
                }
            }
            Op::Affine { mul, add } => {
                let (src, w0, b0) = as_affine(resolve(&vals, first)?, &dims)?;
                let w = &w0 * &mul.view().insert_axis(ndarray::Axis(1));
                Val::Affine {
                    src,
                    w,
                    b: &b0 * mul + add,
                }
            }
            Op::Add => {
                let mut acc: Option<(usize, Array2<f64>, Array1<f64>)> = None;
                for &r in &node.inputs {
                    let (src, w, b) = as_affine(resolve(&vals, r)?, &dims)?;
                    acc = Some(match acc {
                        None => (src, w, b),
                        Some((s0, w0, b0)) => {
                            if s0 != src {
                                return Err(unsupported(format!(
                                    "add node {} sums values that do not come from the same \
                                     activation (residual around a nonlinearity)",
                                    node.name
                                )));
                            }
                            (s0, w0 + w, b0 + b)
                        }
                    });
                }
                let (src, w, b) = acc.ok_or_else(|| unsupported("empty add"))?;
                Val::Affine { src, w, b }
            }
            Op::Poly(act) => match resolve(&vals, first)? {
                Val::Affine { src, w, b } if src == layers.len() => {
                    dims.push(w.nrows());
                    layers.push(FloatLayer {
                        w,
                        b,
                        act: Some(act.clone()),
                    });
                    Val::Tensor(layers.len())
                }
                _ => {
                    return Err(unsupported(format!(
                        "activation {} must directly follow a linear map of the latest value",
                        node.name
                    )))
                }
            },
            Op::Concat => {
                return Err(unsupported(format!(
                    "concat node {} is not supported",
                    node.name
                )))
            }
        };
        vals.push(v);
    }
    match vals.last() {
        Some(Val::Affine { src, w, b }) if *src == layers.len() => {
            layers.push(FloatLayer {
                w: w.clone(),
                b: b.clone(),
                act: None,
            });
            Ok(layers)
        }
        _ => Err(unsupported("the head must end with a linear map (logits)")),
    }
}

fn linear_of(
    m: &Array2<f64>,
    bias: Option<&Array1<f64>>,
    src: usize,
    w0: &Array2<f64>,
    b0: &Array1<f64>,
) -> Val {
    let mut b = m.dot(b0);
    if let Some(bb) = bias {
        b += bb;
    }
    Val::Affine {
        src,
        w: m.dot(w0),
        b,
    }
}

fn act_eval(act: &Activation, z: f64) -> f64 {
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
    if !(4..=5).contains(&o.activation_bits) {
        return bad(format!(
            "activation_bits {} must be 4 or 5",
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
    let d = adapter.inputs()[0].dim;
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
    let mut xs: Vec<Vec<i64>> = calib
        .rows()
        .into_iter()
        .map(|r| quantize_vec(r, input_scale, opts.input_bits))
        .collect();

    let fresh = noise::fresh_variance(params);
    let fine = noise::pbs_variance(params, true);
    let mut pfails: Vec<(f64, usize)> = Vec::new();
    let mut out_layers = Vec::new();
    let mut overflows = Vec::new();
    let mut s_in = input_scale;
    let mut chosen_out_bits = opts.output_weight_bits;
    let mut decrypt_pf = f64::NEG_INFINITY;
    let count = layers.len();
    let act_var = if opts.activation_bits == 5 {
        2.0 * fine
    } else {
        fine
    };
    for (li, fl) in layers.iter().enumerate() {
        let var_in = if li == 0 { fresh } else { act_var };
        let (out_dim, in_dim) = fl.w.dim();
        if let Some(act) = &fl.act {
            let mut bits = opts.weight_bits;
            let (layer, layer_pf) = loop {
                let (layer, pf) = quantize_hidden(fl, act, &xs, s_in, bits, opts, params, var_in);
                let worst = pf.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
                if worst <= MAX_LOG2_P_FAIL || bits <= 2 {
                    break (layer, pf);
                }
                bits -= 1;
            };
            pfails.extend(layer_pf);
            let s_h = layer.activation.as_ref().map_or(1.0, |a| a.output_scale);
            let mut over = 0usize;
            xs = xs
                .iter()
                .map(|x| {
                    let (h, o) = hidden_forward(&layer, x);
                    over += o;
                    h
                })
                .collect();
            overflows.push(over);
            s_in = s_h;
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
                let var = max_row_norm2(&weights, in_dim) * var_in;
                let pf = noise::log2_p_fail(var, 2f64.powi(63 - p as i32));
                let arg_pf = if opts.argmax && p <= 62 {
                    // both logits read the same input noise: the difference's noise is
                    // (w_i - w_j) · e, so its variance is ‖w_i - w_j‖² var_in
                    argmax_pfails(
                        params,
                        p,
                        max_pair_diff_norm2(&weights, in_dim) * var_in,
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
    Ok(QuantizedPlan {
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
    var_in: f64,
) -> (QuantizedLayer, Vec<(f64, usize)>) {
    let (out_dim, in_dim) = fl.w.dim();
    let fine = noise::pbs_variance(params, true);
    let coarse = noise::pbs_variance(params, false);
    let mut pfails = Vec::new();
    let j = opts.stages;
    let p = 4 * j + 5;
    let unit = 1i64 << (4 * j);
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
    // hidden outputs span [min(T, 0), max(T, 0)] in 2^hidden_bits levels (zero exact)
    let hi = real_tables.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
    let lo = real_tables.iter().flatten().fold(0.0f64, |m, &v| m.min(v));
    let levels = ((1i64 << opts.hidden_bits) - 1) as f64;
    let s_h = if hi > lo { (hi - lo) / levels } else { 1.0 };
    let tables: Vec<Vec<i64>> = real_tables
        .iter()
        .map(|t| t.iter().map(|v| (v / s_h).round() as i64).collect())
        .collect();
    // noise: every stage reads 5 bits; outputs feeding `c` come from the fine key
    let var_acc = max_row_norm2(&weights, in_dim) * var_in;
    let mut cur = var_acc;
    let mut pc = p;
    for _ in 0..j {
        let top = cur * 4f64.powi((pc - 5) as i32);
        pfails.push((noise::pbs_log2_p_fail(params, top), out_dim));
        pfails.push((noise::pbs_log2_p_fail(params, top + coarse), out_dim));
        cur += fine;
        pc -= 4;
    }
    pfails.push((noise::pbs_log2_p_fail(params, cur), out_dim));
    if opts.activation_bits == 5 {
        // lut5: sign (coarse) and odd part read `cur`, the even part `cur + coarse`
        pfails.push((noise::pbs_log2_p_fail(params, cur + coarse), out_dim));
        pfails.push((noise::pbs_log2_p_fail(params, cur), out_dim));
    }
    let layer = QuantizedLayer {
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
            output_scale: s_h,
        }),
    };
    (layer, pfails)
}

fn max_row_norm2(w: &[i64], in_dim: usize) -> f64 {
    w.chunks(in_dim.max(1))
        .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .fold(0.0, f64::max)
}

/// Largest `‖w_i - w_j‖²` over pairs of rows (0 for fewer than two rows).
fn max_pair_diff_norm2(w: &[i64], in_dim: usize) -> f64 {
    let rows: Vec<&[i64]> = w.chunks(in_dim.max(1)).collect();
    let mut best = 0.0f64;
    for (i, a) in rows.iter().enumerate() {
        for b in rows.iter().skip(i + 1) {
            let n: f64 = a
                .iter()
                .zip(b.iter())
                .map(|(&x, &y)| {
                    let d = (x - y) as f64;
                    d * d
                })
                .sum();
            best = best.max(n);
        }
    }
    best
}

fn quantize_vec(x: ArrayView1<f64>, scale: f64, bits: u32) -> Vec<i64> {
    let q = (1i64 << (bits - 1)) - 1;
    x.iter()
        .map(|v| ((v / scale).round() as i64).clamp(-q, q))
        .collect()
}

fn wrap(a: i64, p: u32) -> u64 {
    (a as u64) & ((1u64 << p) - 1)
}

/// One hidden layer in integers: `(outputs, overflow count)`.
fn hidden_forward(layer: &QuantizedLayer, x: &[i64]) -> (Vec<i64>, usize) {
    let Some(act) = &layer.activation else {
        return (Vec::new(), 0);
    };
    let mut over = 0;
    let out = layer
        .weights
        .chunks(layer.in_dim)
        .zip(&layer.bias)
        .zip(&act.tables)
        .map(|((row, &b), t)| {
            let acc = row
                .iter()
                .zip(x)
                .fold(b, |s, (&w, &xi)| s.wrapping_add(w.wrapping_mul(xi)));
            if acc < 0 || acc >= 1i64 << layer.log_modulus {
                over += 1;
            }
            let v = (wrap(acc, layer.log_modulus) >> (4 * act.stages)) as usize;
            let get = |i: usize| t.get(i).copied().unwrap_or(0);
            // 5-bit tables read all 32 boxes; 4-bit tables wrap negacyclically above 16
            if act.bits == 5 || v < BOXES {
                get(v)
            } else {
                -get(v - BOXES)
            }
        })
        .collect();
    (out, over)
}

impl QuantizedPlan {
    /// Input width.
    pub fn input_dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.in_dim)
    }

    /// Output width.
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_dim)
    }

    /// Modulus (log2) the client encrypts inputs with.
    pub fn input_log_modulus(&self) -> u32 {
        self.layers.first().map_or(1, |l| l.log_modulus)
    }

    /// Modulus (log2) of the outputs the client decrypts: the logits' modulus, or
    /// [`ARGMAX_LOG_MODULUS`] with the encrypted argmax.
    pub fn output_log_modulus(&self) -> u32 {
        if self.argmax {
            ARGMAX_LOG_MODULUS
        } else {
            self.logits_log_modulus()
        }
    }

    /// Modulus (log2) the logits are held at (the output layer's accumulator).
    pub fn logits_log_modulus(&self) -> u32 {
        self.layers.last().map_or(1, |l| l.log_modulus)
    }

    /// Bootstrappings per sample: `2J + 1` per hidden neuron with 4-bit tables, `2J + 3`
    /// with 5-bit tables; none for linear layers; plus [`argmax_pbs`] with the argmax.
    pub fn predicted_pbs(&self) -> u64 {
        let argmax = if self.argmax {
            argmax_pbs(self.output_dim(), self.logits_log_modulus())
        } else {
            0
        };
        argmax
            + self
                .layers
                .iter()
                .filter_map(|l| {
                    l.activation.as_ref().map(|a| {
                        let table = if a.bits == 5 { 3 } else { 1 };
                        l.out_dim as u64 * (2 * a.stages as u64 + table)
                    })
                })
                .sum::<u64>()
    }

    /// Quantizes one input vector (clamped to the input width).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong width, [`Error::InvalidValue`] for a
    /// non-finite value.
    pub fn quantize_input(&self, x: ArrayView1<f64>) -> Result<Vec<i64>> {
        if x.len() != self.input_dim() {
            return Err(Error::dims("exact input", self.input_dim(), x.len()));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidValue {
                context: "exact input".into(),
                reason: "non-finite feature".into(),
            });
        }
        Ok(quantize_vec(x, self.input_scale, self.input_bits))
    }

    /// The integer reference: outputs modulo `2^output_log_modulus`, signed (the one-hot
    /// [`argmax_one_hot`] of the logits with the argmax).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong input width.
    pub fn reference(&self, xq: &[i64]) -> Result<Vec<i64>> {
        let logits = self.reference_logits(xq)?;
        Ok(if self.argmax {
            argmax_one_hot(&logits, self.logits_log_modulus())
        } else {
            logits
        })
    }

    /// The integer logits modulo `2^logits_log_modulus`, signed (what the encrypted run
    /// computes before the argmax, if any).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong input width.
    pub fn reference_logits(&self, xq: &[i64]) -> Result<Vec<i64>> {
        if xq.len() != self.input_dim() {
            return Err(Error::dims(
                "exact reference input",
                self.input_dim(),
                xq.len(),
            ));
        }
        let mut x = xq.to_vec();
        for layer in &self.layers {
            if layer.activation.is_some() {
                x = hidden_forward(layer, &x).0;
            } else {
                let p = layer.log_modulus;
                x = layer
                    .weights
                    .chunks(layer.in_dim)
                    .zip(&layer.bias)
                    .map(|(row, &b)| {
                        let acc = row
                            .iter()
                            .zip(&x)
                            .fold(b, |s, (&w, &xi)| s.wrapping_add(w.wrapping_mul(xi)));
                        crate::exact::to_signed(wrap(acc, p), p)
                    })
                    .collect();
            }
        }
        Ok(x)
    }

    /// Real outputs from integer outputs (`y_j · s_in · s_w[j]`; the one-hot unchanged with
    /// the argmax).
    pub fn dequantize(&self, y: &[i64]) -> Vec<f64> {
        if self.argmax {
            return y.iter().map(|&v| v as f64).collect();
        }
        match self.layers.last() {
            Some(l) => y
                .iter()
                .zip(&l.weight_scales)
                .map(|(&v, s)| v as f64 * (s * l.input_scale))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Quantized forward pass of a batch in real units (for accuracy reports).
    ///
    /// # Errors
    /// As [`quantize_input`](Self::quantize_input).
    pub fn forward_batch(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((x.nrows(), self.output_dim()));
        for (i, row) in x.rows().into_iter().enumerate() {
            let y = self.reference(&self.quantize_input(row)?)?;
            for (dst, v) in out.row_mut(i).iter_mut().zip(self.dequantize(&y)) {
                *dst = v;
            }
        }
        Ok(out)
    }
}

/// Format tag of [`QuantPublic`] files.
pub const QUANT_FORMAT: &str = "hepeft-exact-quant/1";

/// What a client needs to know about a quantized plan (no weights): the parameter set, the
/// input quantizer and moduli, the output scales, and the plan's costs. Written by
/// `hepeft params select --backend exact` as JSON.
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
