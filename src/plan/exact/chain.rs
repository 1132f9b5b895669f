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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActivationFn, AdapterBuilder};

    fn relu() -> Op {
        Op::Poly(Activation::fit(ActivationFn::Relu, -4.0, 4.0, 3).unwrap())
    }

    fn lin(r: usize, c: usize, v: f64) -> Op {
        Op::Linear {
            weight: Array2::from_elem((r, c), v),
            bias: Some(Array1::from_elem(r, 0.5)),
        }
    }

    #[test]
    fn linear_chain_folds_into_one_layer() {
        let mut b = AdapterBuilder::new();
        let x = b.input("x", 3).unwrap();
        let y = b.node("a", lin(2, 3, 1.0), &[x]).unwrap();
        let y = b.node("s", Op::Scale(2.0), &[y]).unwrap();
        b.node("c", lin(4, 2, 1.0), &[y]).unwrap();
        let layers = chain(&b.build().unwrap()).unwrap();
        assert_eq!(layers.len(), 1);
        let l = &layers[0];
        assert_eq!(l.srcs, vec![0]);
        assert!(l.act.is_none());
        // c · (2 (a x + 0.5)) + 0.5: every weight 4, every bias 2·2·0.5 + 0.5
        assert!(l.w.iter().all(|&v| (v - 4.0).abs() < 1e-12));
        assert!(l.b.iter().all(|&v| (v - 2.5).abs() < 1e-12));
    }

    #[test]
    fn residual_reads_the_input_and_the_hidden_units() {
        let mut b = AdapterBuilder::new();
        let x = b.input("x", 3).unwrap();
        let d = b.node("down", lin(2, 3, 1.0), &[x]).unwrap();
        let h = b.node("act", relu(), &[d]).unwrap();
        let u = b.node("up", lin(3, 2, 1.0), &[h]).unwrap();
        let r = b.node("res", Op::Add, &[x, u]).unwrap();
        b.node("head", lin(2, 3, 1.0), &[r]).unwrap();
        let layers = chain(&b.build().unwrap()).unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].srcs, vec![0]);
        assert!(layers[0].act.is_some());
        assert_eq!(layers[1].srcs, vec![0, 1]);
        // head · x (3 columns of 1) then head · up (2 columns of 3)
        assert_eq!(layers[1].w.dim(), (2, 5));
        assert!((layers[1].w[[0, 0]] - 1.0).abs() < 1e-12);
        assert!((layers[1].w[[0, 4]] - 3.0).abs() < 1e-12);
    }

    #[test]
    fn several_inputs_and_concat_are_one_concatenated_input() {
        let mut b = AdapterBuilder::new();
        let x = b.input("x", 2).unwrap();
        let y = b.input("y", 3).unwrap();
        let c = b.node("cat", Op::Concat, &[y, x]).unwrap();
        b.node("head", lin(1, 5, 1.0), &[c]).unwrap();
        let layers = chain(&b.build().unwrap()).unwrap();
        assert_eq!(layers.len(), 1);
        // tensor 0 is [x, y]; the concat [y, x] picks every column once
        assert_eq!(layers[0].w.dim(), (1, 5));
        assert!(layers[0].w.iter().all(|&v| (v - 1.0).abs() < 1e-12));
    }

    #[test]
    fn a_head_ending_in_an_activation_is_refused() {
        let mut b = AdapterBuilder::new();
        let x = b.input("x", 3).unwrap();
        let y = b.node("a", lin(2, 3, 1.0), &[x]).unwrap();
        b.node("act", relu(), &[y]).unwrap();
        let e = chain(&b.build().unwrap()).err().unwrap();
        assert!(e.to_string().contains("logits"), "{e}");
    }
}
