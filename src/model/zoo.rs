//! Seeded random adapters for tests, benches and demos.
//!
//! Intended input distribution: every feature independently uniform in `[-1, 1]` (see
//! [`uniform_inputs`]). Weights are uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in)]` and
//! biases uniform in `[-0.1, 0.1]`, so every pre-activation has a standard deviation of
//! about `1/3` whatever the width: a bottleneck activation on `[-4, 4]` is then more than
//! ten standard deviations wide, and out-of-interval values essentially never occur for
//! such inputs. (Worst-case inputs can still leave the interval; the reference report
//! tells.) The weights are random, not trained: these adapters exercise shapes and
//! numerics, not accuracy.

use ndarray::{Array1, Array2};
use rand::Rng;

use super::activation::{Activation, ActivationFn};
use super::adapter::{Adapter, AdapterBuilder};
use super::layer::{NodeRef, Op};
use crate::{Error, Result};

/// Scale factor used by the LoRA branches of the zoo (PEFT `alpha / r` with `alpha = 2r`).
pub const ZOO_LORA_SCALE: f64 = 2.0;

fn uniform_matrix(rng: &mut impl Rng, rows: usize, cols: usize, bound: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-bound..=bound))
}

fn uniform_vector(rng: &mut impl Rng, len: usize, bound: f64) -> Array1<f64> {
    Array1::from_shape_simple_fn(len, || rng.random_range(-bound..=bound))
}

fn weight(rng: &mut impl Rng, out: usize, fan_in: usize) -> Array2<f64> {
    uniform_matrix(rng, out, fan_in, 1.0 / (fan_in as f64).sqrt())
}

fn bias(rng: &mut impl Rng, out: usize) -> Array1<f64> {
    uniform_vector(rng, out, 0.1)
}

fn positive(name: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::model(format!("zoo: {name} must be at least 1")));
    }
    Ok(())
}

/// A linear probe: input `x[d]`, output `W x + b` with `W` of shape `classes x d`.
///
/// # Errors
/// [`Error::Model`] if a size is 0.
pub fn linear_probe(rng: &mut impl Rng, d: usize, classes: usize) -> Result<Adapter> {
    positive("d", d)?;
    positive("classes", classes)?;
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d)?;
    b.node(
        "head",
        Op::Linear {
            weight: weight(rng, classes, d),
            bias: Some(bias(rng, classes)),
        },
        &[x],
    )?;
    b.build()
}

/// A classifier head with a LoRA update: input `x[d]`,
/// `logits = W x + b + s * B (A x)` with `W: classes x d`, `A: r x d`, `B: classes x r`,
/// `s =` [`ZOO_LORA_SCALE`]. Nodes: `head` (linear), `lora` (low rank), `logits` (add).
///
/// # Errors
/// [`Error::Model`] if a size is 0.
pub fn lora_head(rng: &mut impl Rng, d: usize, r: usize, classes: usize) -> Result<Adapter> {
    positive("d", d)?;
    positive("r", r)?;
    positive("classes", classes)?;
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d)?;
    head_plus_lora(&mut b, rng, x, d, r, classes)?;
    b.build()
}

/// Appends `head` (`W x + b`), `lora` (`s * B (A x)`) and `logits` (their sum) on node `x`
/// of width `d`, drawing `W`, `b`, `A`, `B` from `rng` in that order.
fn head_plus_lora(
    b: &mut AdapterBuilder,
    rng: &mut impl Rng,
    x: NodeRef,
    d: usize,
    r: usize,
    classes: usize,
) -> Result<NodeRef> {
    let head = b.node(
        "head",
        Op::Linear {
            weight: weight(rng, classes, d),
            bias: Some(bias(rng, classes)),
        },
        &[x],
    )?;
    // B is scaled by 1/sqrt(r) like any fan-in; the product s*B*A then has entries of the
    // same order as W.
    let a = weight(rng, r, d);
    let bm = weight(rng, classes, r);
    let lora = b.node(
        "lora",
        Op::LowRank {
            a,
            b: bm,
            scale: ZOO_LORA_SCALE,
            bias: None,
        },
        &[x],
    )?;
    b.node("logits", Op::Add, &[head, lora])
}

/// A bottleneck adapter with a residual connection and a classifier head:
/// `h = act(W_down x + b_down)`, `z = x + W_up h + b_up`, `logits = W_head z + b_head`,
/// with `W_down: hidden x d`, `W_up: d x hidden`, `W_head: classes x d` and `act` the
/// degree-`degree` Chebyshev fit of `act` on `interval`. Nodes: `down`, `act`, `up`,
/// `residual`, `head`.
///
/// # Errors
/// [`Error::Model`] if a size is 0; [`Error::InvalidValue`] for a bad interval or degree.
pub fn bottleneck(
    rng: &mut impl Rng,
    d: usize,
    hidden: usize,
    act: ActivationFn,
    degree: usize,
    interval: (f64, f64),
    classes: usize,
) -> Result<Adapter> {
    positive("d", d)?;
    positive("hidden", hidden)?;
    positive("classes", classes)?;
    let activation = Activation::fit(act, interval.0, interval.1, degree)?;
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d)?;
    let down = b.node(
        "down",
        Op::Linear {
            weight: weight(rng, hidden, d),
            bias: Some(bias(rng, hidden)),
        },
        &[x],
    )?;
    let h = b.node("act", Op::Poly(activation), &[down])?;
    let up = b.node(
        "up",
        Op::Linear {
            weight: weight(rng, d, hidden),
            bias: Some(bias(rng, d)),
        },
        &[h],
    )?;
    let z = b.node("residual", Op::Add, &[x, up])?;
    b.node(
        "head",
        Op::Linear {
            weight: weight(rng, classes, d),
            bias: Some(bias(rng, classes)),
        },
        &[z],
    )?;
    b.build()
}

/// The benchmark heads of issue 13: `d -> hidden -> (0.5 t + 0.25 t^2) -> classes`, no
/// biases, weights uniform in `[-1, 1) / sqrt(fan_in)`; head (a) is 768/64/100, head (b)
/// 384/8/10. Nodes: `down`, `act` (on `[-4, 4]`), `head`.
///
/// # Errors
/// [`Error::Model`] if a size is 0.
pub fn square_mlp(rng: &mut impl Rng, d: usize, hidden: usize, classes: usize) -> Result<Adapter> {
    positive("d", d)?;
    positive("hidden", hidden)?;
    positive("classes", classes)?;
    let mut m = |rows: usize, cols: usize| {
        Array2::from_shape_simple_fn((rows, cols), || {
            rng.random_range(-1.0..1.0) / (cols as f64).sqrt()
        })
    };
    let (w1, w2) = (m(hidden, d), m(classes, hidden));
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d)?;
    let h = b.node(
        "down",
        Op::Linear {
            weight: w1,
            bias: None,
        },
        &[x],
    )?;
    let a = b.node(
        "act",
        Op::Poly(Activation::from_power_coeffs(&[0.0, 0.5, 0.25], -4.0, 4.0)?),
        &[h],
    )?;
    b.node(
        "head",
        Op::Linear {
            weight: w2,
            bias: None,
        },
        &[a],
    )?;
    b.build()
}

/// A head on two backbone taps: inputs `tap0[d1]` and `tap1[d2]`, `z = concat(tap0, tap1)`,
/// `logits = W z + b + s * B (A z)` with `W: classes x (d1+d2)`, `A: r x (d1+d2)`,
/// `B: classes x r`. Nodes: `concat`, `head`, `lora`, `logits`.
///
/// # Errors
/// [`Error::Model`] if a size is 0.
pub fn two_tap(
    rng: &mut impl Rng,
    d1: usize,
    d2: usize,
    r: usize,
    classes: usize,
) -> Result<Adapter> {
    positive("d1", d1)?;
    positive("d2", d2)?;
    positive("r", r)?;
    positive("classes", classes)?;
    let d = d1 + d2;
    let mut b = AdapterBuilder::new();
    let t0 = b.input("tap0", d1)?;
    let t1 = b.input("tap1", d2)?;
    let z = b.node("concat", Op::Concat, &[t0, t1])?;
    head_plus_lora(&mut b, rng, z, d, r, classes)?;
    b.build()
}

/// A batch of `samples` inputs for `adapter` drawn from the zoo's intended distribution
/// (each feature uniform in `[-1, 1]`): one `samples x dim` matrix per adapter input.
pub fn uniform_inputs(rng: &mut impl Rng, adapter: &Adapter, samples: usize) -> Vec<Array2<f64>> {
    adapter
        .inputs()
        .iter()
        .map(|spec| uniform_matrix(rng, samples, spec.dim, 1.0))
        .collect()
}
