//! The public description of an adapter: its structure with every weight set to zero.
//!
//! A plan depends only on shapes, activation degrees and intervals, so the model owner can
//! publish this description (as a model card with zero tensors) and the client compiles the
//! same plan from it, generates exactly the keys the server will use, and never sees a
//! weight. Activation coefficients are zeroed too; only their count (the degree) and the
//! interval remain.

use crate::model::{Activation, Adapter, AdapterBuilder, Op};
use crate::Result;
use ndarray::{Array1, Array2};

/// `adapter` with every weight, bias, affine vector, scale and activation coefficient set to
/// zero (LoRA scales and `Scale` factors become 1, so nothing about them leaks either).
pub fn public_structure(adapter: &Adapter) -> Result<Adapter> {
    let mut b = AdapterBuilder::new();
    for spec in adapter.inputs() {
        b.input(&spec.name, spec.dim)?;
    }
    for node in adapter.nodes() {
        let op = match &node.op {
            Op::Linear { weight, bias } => Op::Linear {
                weight: Array2::zeros(weight.raw_dim()),
                bias: bias.as_ref().map(|v| Array1::zeros(v.len())),
            },
            Op::LowRank { a, b: bm, bias, .. } => Op::LowRank {
                a: Array2::zeros(a.raw_dim()),
                b: Array2::zeros(bm.raw_dim()),
                scale: 1.0,
                bias: bias.as_ref().map(|v| Array1::zeros(v.len())),
            },
            Op::Affine { mul, add } => Op::Affine {
                mul: Array1::zeros(mul.len()),
                add: Array1::zeros(add.len()),
            },
            Op::Scale(_) => Op::Scale(1.0),
            Op::Poly(act) => Op::Poly(Activation {
                func: None,
                lo: act.lo,
                hi: act.hi,
                cheb: vec![0.0; act.cheb.len()],
            }),
            Op::Add => Op::Add,
            Op::Concat => Op::Concat,
        };
        b.node(&node.name, op, &node.inputs)?;
    }
    b.build()
}
