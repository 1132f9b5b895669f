//! Folds an [`Adapter`] graph into a chain of dense affine layers separated by elementwise
//! activations (what the exact backend evaluates).
//!
//! Values are *tensors* (tensor 0: the adapter's inputs, concatenated in declaration order;
//! tensor `k`: the output of hidden layer `k - 1`) or *affine maps* of several tensors (one
//! dense block per source tensor plus a bias). `Linear`, `LowRank`, `Scale`, `Affine`, `Add`
//! and `Concat` of affine maps stay affine (blocks of the same source are summed, `Concat`
//! stacks rows); an activation turns an affine map into a new hidden layer reading the
//! concatenation of its sources. So residuals around an activation (a bottleneck adapter:
//! the last layer reads the input and the hidden units) and concatenated taps are layers
//! with several sources. The graph must end with an affine map (the logits).

use ndarray::{concatenate, Array1, Array2, Axis};

use crate::model::{Activation, Adapter, NodeRef, Op};
use crate::{Error, Result};

/// One dense layer: `w` reads the concatenation of the tensors `srcs` (in that order).
#[derive(Clone)]
pub(super) struct FloatLayer {
    /// Source tensors, increasing.
    pub(super) srcs: Vec<usize>,
    pub(super) w: Array2<f64>,
    pub(super) b: Array1<f64>,
    pub(super) act: Option<Activation>,
}

/// An affine map of several tensors: `Σ_t parts[t] · tensor_t + b`, parts sorted by source.
#[derive(Clone)]
struct Affine {
    parts: Vec<(usize, Array2<f64>)>,
    b: Array1<f64>,
}

impl Affine {
    fn rows(&self) -> usize {
        self.b.len()
    }

    fn map(self, f: impl Fn(Array2<f64>) -> Array2<f64>, b: Array1<f64>) -> Affine {
        Affine {
            parts: self.parts.into_iter().map(|(t, w)| (t, f(w))).collect(),
            b,
        }
    }
}

pub(super) fn unsupported(what: impl Into<String>) -> Error {
    Error::model(format!("exact backend: {}", what.into()))
}

/// Folds the adapter into dense affine layers separated by activations; the last layer
/// has no activation. Returns the layers and the width of tensor 0 (all inputs).
pub(super) fn chain(adapter: &Adapter) -> Result<Vec<FloatLayer>> {
    let inputs = adapter.inputs();
    if inputs.is_empty() {
        return Err(unsupported("the adapter has no input"));
    }
    let total: usize = inputs.iter().map(|i| i.dim).sum();
    let mut offsets = Vec::with_capacity(inputs.len());
    let mut off = 0;
    for i in inputs {
        offsets.push(off);
        off += i.dim;
    }
    let mut dims = vec![total];
    let mut layers: Vec<FloatLayer> = Vec::new();
    let mut vals: Vec<Affine> = Vec::new();
    let resolve = |vals: &Vec<Affine>, r: NodeRef| -> Result<Affine> {
        match r {
            NodeRef::Input(i) => {
                let (Some(&o), Some(inp)) = (offsets.get(i), inputs.get(i)) else {
                    return Err(unsupported(format!("input {i} does not exist")));
                };
                let mut w = Array2::zeros((inp.dim, total));
                for k in 0..inp.dim {
                    w[[k, o + k]] = 1.0;
                }
                Ok(Affine {
                    parts: vec![(0, w)],
                    b: Array1::zeros(inp.dim),
                })
            }
            NodeRef::Node(i) => vals
                .get(i)
                .cloned()
                .ok_or_else(|| unsupported("dangling node reference")),
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
                let a = resolve(&vals, first)?;
                let mut b = weight.dot(&a.b);
                if let Some(bb) = bias {
                    b += bb;
                }
                a.map(|w| weight.dot(&w), b)
            }
            Op::LowRank { a, b, scale, bias } => {
                let m = b.dot(a) * *scale;
                let v = resolve(&vals, first)?;
                let mut bb = m.dot(&v.b);
                if let Some(x) = bias {
                    bb += x;
                }
                v.map(|w| m.dot(&w), bb)
            }
            Op::Scale(s) => {
                let v = resolve(&vals, first)?;
                let b = &v.b * *s;
                v.map(|w| w * *s, b)
            }
            Op::Affine { mul, add } => {
                let v = resolve(&vals, first)?;
                let b = &v.b * mul + add;
                let col = mul.view().insert_axis(Axis(1)).to_owned();
                v.map(|w| &w * &col, b)
            }
            Op::Add => {
                let mut acc: Option<Affine> = None;
                for &r in &node.inputs {
                    let v = resolve(&vals, r)?;
                    acc = Some(match acc {
                        None => v,
                        Some(mut a) => {
                            if a.rows() != v.rows() {
                                return Err(unsupported(format!(
                                    "add node {} sums widths {} and {}",
                                    node.name,
                                    a.rows(),
                                    v.rows()
                                )));
                            }
                            a.b += &v.b;
                            for (t, w) in v.parts {
                                match a.parts.iter_mut().find(|(s, _)| *s == t) {
                                    Some((_, aw)) => *aw += &w,
                                    None => a.parts.push((t, w)),
                                }
                            }
                            a.parts.sort_by_key(|(t, _)| *t);
                            a
                        }
                    });
                }
                acc.ok_or_else(|| unsupported("empty add"))?
            }
            Op::Concat => {
                let vs = node
                    .inputs
                    .iter()
                    .map(|&r| resolve(&vals, r))
                    .collect::<Result<Vec<_>>>()?;
                let rows: usize = vs.iter().map(Affine::rows).sum();
                let mut srcs: Vec<usize> = vs
                    .iter()
                    .flat_map(|v| v.parts.iter().map(|(t, _)| *t))
                    .collect();
                srcs.sort_unstable();
                srcs.dedup();
                let mut parts = Vec::with_capacity(srcs.len());
                for &t in &srcs {
                    let dt = *dims.get(t).ok_or_else(|| unsupported("bad tensor"))?;
                    let mut w = Array2::zeros((rows, dt));
                    let mut r0 = 0;
                    for v in &vs {
                        if let Some((_, pw)) = v.parts.iter().find(|(s, _)| *s == t) {
                            for ((r, c), &x) in pw.indexed_iter() {
                                if let Some(dst) = w.get_mut([r0 + r, c]) {
                                    *dst = x;
                                }
                            }
                        }
                        r0 += v.rows();
                    }
                    parts.push((t, w));
                }
                let bs: Vec<_> = vs.iter().map(|v| v.b.view()).collect();
                let b = concatenate(Axis(0), &bs)
                    .map_err(|e| unsupported(format!("concat node {}: {e}", node.name)))?;
                Affine { parts, b }
            }
            Op::Poly(act) => {
                let v = resolve(&vals, first)?;
                let layer = dense(v, Some(act.clone()))?;
                dims.push(layer.w.nrows());
                let t = dims.len() - 1;
                let d = layer.w.nrows();
                layers.push(layer);
                Affine {
                    parts: vec![(t, Array2::eye(d))],
                    b: Array1::zeros(d),
                }
            }
        };
        vals.push(v);
    }
    let last = vals
        .pop()
        .ok_or_else(|| unsupported("the adapter has no node"))?;
    let is_bare_activation = last.parts.len() == 1
        && last.parts.first().is_some_and(|(t, _)| *t == layers.len())
        && adapter
            .nodes()
            .last()
            .is_some_and(|n| matches!(n.op, Op::Poly(_)));
    if is_bare_activation {
        return Err(unsupported("the head must end with a linear map (logits)"));
    }
    layers.push(dense(last, None)?);
    Ok(layers)
}

/// The dense layer of an affine map: its blocks side by side, sources increasing.
fn dense(v: Affine, act: Option<Activation>) -> Result<FloatLayer> {
    let srcs: Vec<usize> = v.parts.iter().map(|(t, _)| *t).collect();
    let ws: Vec<_> = v.parts.iter().map(|(_, w)| w.view()).collect();
    let w = if ws.is_empty() {
        Array2::zeros((v.rows(), 0))
    } else {
        concatenate(Axis(1), &ws).map_err(|e| unsupported(format!("layer blocks: {e}")))?
    };
    Ok(FloatLayer {
        srcs,
        w,
        b: v.b,
        act,
    })
}
