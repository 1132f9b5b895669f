//! CryptPEFT's one-way-communication network as a token graph ([`owc_adapter`]), seeded
//! random ones ([`random_owc`]) and random inputs ([`uniform_tokens`]).

use ndarray::{Array1, Array2};
use rand::Rng;

use crate::model::activation::{Activation, ActivationFn};
use crate::model::layer::NodeRef;
use crate::{Error, Result};

use super::graph::{TokenAdapter, TokenAdapterBuilder};
use super::ops::{LinearAttention, Pooling, TokenOp};

/// One CryptPEFT adapter `A_i` at width `r` on `d`-wide tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct OwcBlock {
    /// `lora_A`: `r x d`, with optional bias.
    pub down: (Array2<f64>, Option<Array1<f64>>),
    /// First LayerNorm, folded to an affine map (mul, add) of width `r`.
    pub norm1: (Array1<f64>, Array1<f64>),
    /// The linear attention.
    pub attention: LinearAttention,
    /// Second LayerNorm (affine).
    pub norm2: (Array1<f64>, Array1<f64>),
    /// MLP first layer `hidden x r` + bias.
    pub fc1: (Array2<f64>, Option<Array1<f64>>),
    /// The activation (a polynomial ReLU/GELU).
    pub act: Activation,
    /// MLP second layer `r x hidden` + bias.
    pub fc2: (Array2<f64>, Option<Array1<f64>>),
    /// `lora_B`: `d x r`, with optional bias.
    pub up: (Array2<f64>, Option<Array1<f64>>),
    /// The scaler on `lora_B`'s output (CryptPEFT: 0.5).
    pub up_scale: f64,
}

/// CryptPEFT's OWC network as a token graph.
///
/// Inputs `h_1 .. h_s` (the token states entering the `s` tapped layers, `T x d` each), and
/// `h_final` (the backbone's last hidden state) when `final_input` is true. For tap `i`:
/// `in_i = out_{i-1} + h_i` (`in_1 = h_1`), `out_i = A_i(in_i) + in_i`; the output is
/// `head(pool(norm(h_final + out_s)))` (or of `out_s` without `final_input`).
///
/// # Errors
/// Shape errors from the builder, naming the node.
#[allow(clippy::too_many_arguments)]
pub fn owc_adapter(
    tokens: usize,
    d: usize,
    blocks: &[OwcBlock],
    final_input: bool,
    final_norm: Option<(Array1<f64>, Array1<f64>)>,
    pooling: Pooling,
    head: (Array2<f64>, Option<Array1<f64>>),
) -> Result<TokenAdapter> {
    if blocks.is_empty() {
        return Err(Error::model(
            "an OWC adapter needs at least one tapped layer",
        ));
    }
    let mut b = TokenAdapterBuilder::new(tokens);
    let taps: Vec<NodeRef> = (0..blocks.len())
        .map(|i| b.input(&format!("h{}", i + 1), d))
        .collect::<Result<_>>()?;
    let final_h = if final_input {
        Some(b.input("h_final", d)?)
    } else {
        None
    };
    let mut out: Option<NodeRef> = None;
    for (i, blk) in blocks.iter().enumerate() {
        let p = format!("a{}", i + 1);
        let inp = match out {
            None => taps[i],
            Some(o) => b.node(&format!("{p}.in"), TokenOp::Add, &[o, taps[i]])?,
        };
        let x1 = b.node(
            &format!("{p}.down"),
            TokenOp::Linear {
                weight: blk.down.0.clone(),
                bias: blk.down.1.clone(),
            },
            &[inp],
        )?;
        let n1 = b.node(
            &format!("{p}.norm1"),
            TokenOp::Affine {
                mul: blk.norm1.0.clone(),
                add: blk.norm1.1.clone(),
            },
            &[x1],
        )?;
        let at = b.node(
            &format!("{p}.attn"),
            TokenOp::LinearAttention(Box::new(blk.attention.clone())),
            &[n1],
        )?;
        let x2 = b.node(&format!("{p}.res1"), TokenOp::Add, &[x1, at])?;
        let n2 = b.node(
            &format!("{p}.norm2"),
            TokenOp::Affine {
                mul: blk.norm2.0.clone(),
                add: blk.norm2.1.clone(),
            },
            &[x2],
        )?;
        let f1 = b.node(
            &format!("{p}.fc1"),
            TokenOp::Linear {
                weight: blk.fc1.0.clone(),
                bias: blk.fc1.1.clone(),
            },
            &[n2],
        )?;
        let ac = b.node(&format!("{p}.act"), TokenOp::Poly(blk.act.clone()), &[f1])?;
        let f2 = b.node(
            &format!("{p}.fc2"),
            TokenOp::Linear {
                weight: blk.fc2.0.clone(),
                bias: blk.fc2.1.clone(),
            },
            &[ac],
        )?;
        let x3 = b.node(&format!("{p}.res2"), TokenOp::Add, &[x2, f2])?;
        let (mut w, bias) = blk.up.clone();
        w.mapv_inplace(|v| v * blk.up_scale);
        let bias = bias.map(|v| v * blk.up_scale);
        let up = b.node(
            &format!("{p}.up"),
            TokenOp::Linear { weight: w, bias },
            &[x3],
        )?;
        out = Some(b.node(&format!("{p}.out"), TokenOp::Add, &[up, inp])?);
    }
    let mut cur = out.ok_or_else(|| Error::model("no tapped layer"))?;
    if let Some(h) = final_h {
        cur = b.node("final.res", TokenOp::Add, &[h, cur])?;
    }
    if let Some((mul, add)) = final_norm {
        cur = b.node("final.norm", TokenOp::Affine { mul, add }, &[cur])?;
    }
    let pooled = b.node("pool", TokenOp::Pool(pooling), &[cur])?;
    b.node(
        "head",
        TokenOp::Linear {
            weight: head.0,
            bias: head.1,
        },
        &[pooled],
    )?;
    b.build()
}

fn uniform_matrix(rng: &mut impl Rng, rows: usize, cols: usize, bound: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-bound..=bound))
}

fn uniform_vector(rng: &mut impl Rng, len: usize, bound: f64) -> Array1<f64> {
    Array1::from_shape_simple_fn(len, || rng.random_range(-bound..=bound))
}

fn weight(rng: &mut impl Rng, out: usize, fan_in: usize) -> Array2<f64> {
    uniform_matrix(rng, out, fan_in, 1.0 / (fan_in as f64).sqrt())
}

/// Sizes of [`random_owc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwcShape {
    /// Tokens `T`.
    pub tokens: usize,
    /// Backbone width `d`.
    pub d: usize,
    /// Adapter width `r`.
    pub r: usize,
    /// Attention heads (divide `r`).
    pub heads: usize,
    /// Tapped layers `s`.
    pub taps: usize,
    /// Classes.
    pub classes: usize,
}

/// A seeded random OWC adapter (weights `U(+-1/sqrt(fan_in))`, LayerNorm-like affine maps
/// near the identity, mixing near `I / 2 + U(+-1/T)`, degree-7 ReLU on `[-4, 4]`) with a
/// `h_final` input, a final norm and mean pooling. Intended inputs: uniform in
/// `[-1, 1]` ([`uniform_tokens`]). Random, not trained: for shapes and numerics.
///
/// # Errors
/// [`Error::Model`] for a zero size or heads not dividing `r`.
pub fn random_owc(rng: &mut impl Rng, sh: OwcShape) -> Result<TokenAdapter> {
    let OwcShape {
        tokens: t,
        d,
        r,
        heads,
        taps,
        classes,
    } = sh;
    if [t, d, r, heads, taps, classes].contains(&0) {
        return Err(Error::model("random_owc: every size must be at least 1"));
    }
    let act = Activation::fit(ActivationFn::Relu, -4.0, 4.0, 7)?;
    let norm = |rng: &mut dyn FnMut() -> f64, w: usize| {
        (
            Array1::from_shape_simple_fn(w, || 1.0 + 0.2 * rng()),
            Array1::from_shape_simple_fn(w, || 0.1 * rng()),
        )
    };
    let mut blocks = Vec::with_capacity(taps);
    for _ in 0..taps {
        let mut u = || rng.random_range(-1.0..=1.0);
        let norm1 = norm(&mut u, r);
        let norm2 = norm(&mut u, r);
        let mut mix = uniform_matrix(rng, t, t, 1.0 / t as f64);
        for i in 0..t {
            mix[[i, i]] += 0.5;
        }
        let attention = LinearAttention {
            heads,
            qkv: weight(rng, 3 * r, r),
            qkv_bias: None,
            scale: 1.0 / ((r / heads.max(1)).max(1) as f64).sqrt(),
            mix,
            mix_bias: Some(uniform_vector(rng, t, 0.1 / t as f64)),
            proj: weight(rng, r, r),
            proj_bias: Some(uniform_vector(rng, r, 0.1)),
        };
        blocks.push(OwcBlock {
            down: (weight(rng, r, d), Some(uniform_vector(rng, r, 0.1))),
            norm1,
            attention,
            norm2,
            fc1: (weight(rng, r, r), Some(uniform_vector(rng, r, 0.1))),
            act: act.clone(),
            fc2: (weight(rng, r, r), Some(uniform_vector(rng, r, 0.1))),
            up: (weight(rng, d, r), Some(uniform_vector(rng, d, 0.1))),
            up_scale: 0.5,
        });
    }
    let mut u = || rng.random_range(-1.0..=1.0);
    let final_norm = norm(&mut u, d);
    let head = (
        weight(rng, classes, d),
        Some(uniform_vector(rng, classes, 0.1)),
    );
    owc_adapter(t, d, &blocks, true, Some(final_norm), Pooling::Mean, head)
}

/// `samples` random inputs for `adapter`, each entry uniform in `[-1, 1]`: `out[s][i]` is
/// input `i` of sample `s` (`T x dim_i`).
pub fn uniform_tokens(
    rng: &mut impl Rng,
    adapter: &TokenAdapter,
    samples: usize,
) -> Vec<Vec<Array2<f64>>> {
    (0..samples)
        .map(|_| {
            adapter
                .inputs()
                .iter()
                .map(|i| uniform_matrix(rng, adapter.tokens(), i.dim, 1.0))
                .collect()
        })
        .collect()
}
