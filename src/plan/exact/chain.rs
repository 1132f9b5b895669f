//! Folds an [`Adapter`] graph into a chain of dense affine layers separated by elementwise
//! activations (what the exact backend evaluates).

use ndarray::{Array1, Array2};

use crate::model::{Activation, Adapter, NodeRef, Op};
use crate::{Error, Result};

#[derive(Clone)]
pub(super) struct FloatLayer {
    pub(super) w: Array2<f64>,
    pub(super) b: Array1<f64>,
    pub(super) act: Option<Activation>,
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

pub(super) fn unsupported(what: impl Into<String>) -> Error {
    Error::model(format!("exact backend: {}", what.into()))
}

/// Folds the adapter into a chain of dense affine layers separated by activations.
pub(super) fn chain(adapter: &Adapter) -> Result<Vec<FloatLayer>> {
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
