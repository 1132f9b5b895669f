//! The public structure of a token adapter: the same graph with every weight, scale and
//! activation coefficient zero (what `hepeft publish` gives clients of a token card).

use ndarray::{Array1, Array2};

use crate::model::activation::Activation;
use crate::model::layer::NodeRef;
use crate::Result;

use super::graph::{TokenAdapter, TokenAdapterBuilder};
use super::ops::{LinearAttention, TokenOp};

fn z2(m: &Array2<f64>) -> Array2<f64> {
    Array2::zeros(m.dim())
}

fn z1(b: &Option<Array1<f64>>) -> Option<Array1<f64>> {
    b.as_ref().map(|b| Array1::zeros(b.len()))
}

/// `adapter` with every tensor, scale and Chebyshev coefficient replaced by zero, and the
/// name of each activation's function dropped; shapes, operand lists, activation degrees
/// and intervals, heads and pooling kept. The encrypted plan depends only on these, so a
/// client compiles the server's plan from it. Costs one pass over the parameters.
///
/// # Errors
/// Builder errors (none for a valid adapter).
pub fn public_token_structure(adapter: &TokenAdapter) -> Result<TokenAdapter> {
    let mut b = TokenAdapterBuilder::new(adapter.tokens());
    for i in adapter.inputs() {
        b.input(&i.name, i.dim)?;
    }
    for n in adapter.nodes() {
        let op = match &n.op {
            TokenOp::Linear { weight, bias } => TokenOp::Linear {
                weight: z2(weight),
                bias: z1(bias),
            },
            TokenOp::LowRank { a, b, bias, .. } => TokenOp::LowRank {
                a: z2(a),
                b: z2(b),
                scale: 0.0,
                bias: z1(bias),
            },
            TokenOp::Affine { mul, add } => TokenOp::Affine {
                mul: Array1::zeros(mul.len()),
                add: Array1::zeros(add.len()),
            },
            TokenOp::Scale(_) => TokenOp::Scale(0.0),
            TokenOp::Poly(act) => TokenOp::Poly(Activation {
                func: None,
                lo: act.lo,
                hi: act.hi,
                cheb: vec![0.0; act.cheb.len()],
            }),
            TokenOp::Add => TokenOp::Add,
            TokenOp::Pool(p) => TokenOp::Pool(*p),
            TokenOp::LinearAttention(at) => TokenOp::LinearAttention(Box::new(LinearAttention {
                heads: at.heads,
                qkv: z2(&at.qkv),
                qkv_bias: z1(&at.qkv_bias),
                scale: 0.0,
                mix: z2(&at.mix),
                mix_bias: z1(&at.mix_bias),
                proj: z2(&at.proj),
                proj_bias: z1(&at.proj_bias),
            })),
        };
        let ins: Vec<NodeRef> = n.inputs.clone();
        b.node(&n.name, op, &ins)?;
    }
    b.build()
}
