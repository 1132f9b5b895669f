//! Level-saving rewrites of a [`TokenAdapter`] before encryption ([`fuse_tokens`]).
//!
//! Each rewrite keeps the function (up to `f64` rounding) and removes one level from every
//! path through it:
//! - an affine map (folded LayerNorm) or a scale whose consumers are all token-wise linear
//!   maps or linear attentions is folded into their weights (`W diag(a)`, `b + W c`);
//! - an affine map whose only consumer is a pooling is moved after it (pooling commutes with
//!   per-feature affine maps), so that it can fold into the head;
//! - the interval map `t = (2x - lo - hi) / (hi - lo)` of a polynomial activation is folded
//!   into the linear map that feeds it when that map has no other consumer (the activation
//!   then works on `[-1, 1]`).
//!
//! For CryptPEFT's block this takes a tapped layer from 15 to 12 levels and the final
//! norm + pool + head from 3 to 2.

use ndarray::{Array1, Array2, Axis};

use crate::model::activation::Activation;
use crate::model::layer::NodeRef;
use crate::model::token::{TokenAdapter, TokenAdapterBuilder, TokenOp};
use crate::Result;

struct Work {
    name: String,
    op: TokenOp,
    inputs: Vec<NodeRef>,
}

fn consumers(nodes: &[Option<Work>], j: usize) -> Vec<usize> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(k, n)| {
            n.as_ref()
                .filter(|n| n.inputs.contains(&NodeRef::Node(j)))
                .map(|_| k)
        })
        .collect()
}

/// `(mul, add)` of an affine-like op of width `w`.
fn as_affine(op: &TokenOp, w: usize) -> Option<(Array1<f64>, Array1<f64>)> {
    match op {
        TokenOp::Affine { mul, add } => Some((mul.clone(), add.clone())),
        TokenOp::Scale(f) => Some((Array1::from_elem(w, *f), Array1::zeros(w))),
        _ => None,
    }
}

/// `W diag(mul)`, `b + W add`.
fn fold_into(
    w: &Array2<f64>,
    b: Option<&Array1<f64>>,
    mul: &Array1<f64>,
    add: &Array1<f64>,
) -> (Array2<f64>, Array1<f64>) {
    let wm = w * &mul.view().insert_axis(Axis(0));
    let mut bias = w.dot(add);
    if let Some(b) = b {
        bias += b;
    }
    (wm, bias)
}

/// Folds the input affine map `(mul, add)` into a consumer, if it can take one.
fn absorb(op: &TokenOp, mul: &Array1<f64>, add: &Array1<f64>) -> Option<TokenOp> {
    match op {
        TokenOp::Linear { weight, bias } => {
            let (w, b) = fold_into(weight, bias.as_ref(), mul, add);
            Some(TokenOp::Linear {
                weight: w,
                bias: Some(b),
            })
        }
        TokenOp::LowRank { a, b, scale, bias } => {
            // scale B (A (m x + c)) + bias = scale B (A diag(m)) x + (scale B A c + bias)
            let a2 = a * &mul.view().insert_axis(Axis(0));
            let mut bias2 = b.dot(&a.dot(add)) * *scale;
            if let Some(bb) = bias {
                bias2 += bb;
            }
            Some(TokenOp::LowRank {
                a: a2,
                b: b.clone(),
                scale: *scale,
                bias: Some(bias2),
            })
        }
        TokenOp::LinearAttention(at) => {
            let (w, b) = fold_into(&at.qkv, at.qkv_bias.as_ref(), mul, add);
            let mut at2 = at.as_ref().clone();
            at2.qkv = w;
            at2.qkv_bias = Some(b);
            Some(TokenOp::LinearAttention(Box::new(at2)))
        }
        _ => None,
    }
}

fn width_of(adapter: &TokenAdapter, r: NodeRef) -> usize {
    adapter.shape_of(r).map_or(0, |s| s.1)
}

/// An equivalent adapter with fewer levels (see the module documentation). The twin of the
/// result equals the twin of `adapter` up to rounding.
///
/// # Errors
/// Only if rebuilding fails, which would be a bug in a rewrite.
pub fn fuse_tokens(adapter: &TokenAdapter) -> Result<TokenAdapter> {
    let mut nodes: Vec<Option<Work>> = adapter
        .nodes()
        .iter()
        .map(|n| {
            Some(Work {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: n.inputs.clone(),
            })
        })
        .collect();
    let last = nodes.len().saturating_sub(1);
    let widths: Vec<usize> = adapter
        .nodes()
        .iter()
        .map(|n| match n.inputs.first() {
            Some(&r) => width_of(adapter, r),
            None => 0,
        })
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for j in 0..nodes.len() {
            if j == last {
                continue;
            }
            let Some(n) = nodes[j].as_ref() else { continue };
            let cons = consumers(&nodes, j);
            // affine moved after a pooling
            if let (TokenOp::Affine { .. }, [k]) = (&n.op, cons.as_slice()) {
                if let Some(Work {
                    op: TokenOp::Pool(_),
                    inputs,
                    ..
                }) = nodes[*k].as_ref()
                {
                    if inputs.len() == 1 {
                        let k = *k;
                        let (Some(a), Some(p)) = (nodes[j].take(), nodes[k].take()) else {
                            continue;
                        };
                        nodes[j] = Some(Work {
                            name: p.name,
                            op: p.op,
                            inputs: a.inputs,
                        });
                        nodes[k] = Some(Work {
                            name: a.name,
                            op: a.op,
                            inputs: vec![NodeRef::Node(j)],
                        });
                        changed = true;
                        continue;
                    }
                }
            }
            // affine / scale folded into every consumer
            if let Some((mul, add)) = as_affine(&n.op, widths[j]) {
                let single_operand = cons.iter().all(|&k| {
                    nodes[k]
                        .as_ref()
                        .is_some_and(|c| c.inputs.len() == 1 && absorb(&c.op, &mul, &add).is_some())
                });
                if !cons.is_empty() && single_operand {
                    let src = n.inputs.clone();
                    for &k in &cons {
                        if let Some(c) = nodes[k].as_mut() {
                            if let Some(op) = absorb(&c.op, &mul, &add) {
                                c.op = op;
                                c.inputs = src.clone();
                            }
                        }
                    }
                    nodes[j] = None;
                    changed = true;
                    continue;
                }
            }
            // interval map folded into the feeding linear map
            if let [k] = cons.as_slice() {
                let k = *k;
                let is_linear = matches!(n.op, TokenOp::Linear { .. } | TokenOp::LowRank { .. });
                let poly = match nodes[k].as_ref().map(|c| &c.op) {
                    Some(TokenOp::Poly(act)) if act.interval() != (-1.0, 1.0) => Some(act.clone()),
                    _ => None,
                };
                if let (true, Some(act)) = (is_linear, poly) {
                    let (lo, hi) = act.interval();
                    let m = 2.0 / (hi - lo);
                    let c = -(lo + hi) / (hi - lo);
                    let new_op = match &n.op {
                        TokenOp::Linear { weight, bias } => {
                            let out = weight.nrows();
                            TokenOp::Linear {
                                weight: weight * m,
                                bias: Some(
                                    bias.as_ref().map_or_else(|| Array1::zeros(out), |b| b * m) + c,
                                ),
                            }
                        }
                        TokenOp::LowRank { a, b, scale, bias } => {
                            let out = b.nrows();
                            TokenOp::LowRank {
                                a: a.clone(),
                                b: b.clone(),
                                scale: scale * m,
                                bias: Some(
                                    bias.as_ref().map_or_else(|| Array1::zeros(out), |b| b * m) + c,
                                ),
                            }
                        }
                        _ => continue,
                    };
                    let unit = Activation {
                        func: act.func,
                        lo: -1.0,
                        hi: 1.0,
                        cheb: act.cheb.clone(),
                    };
                    if let Some(nj) = nodes[j].as_mut() {
                        nj.op = new_op;
                    }
                    if let Some(nk) = nodes[k].as_mut() {
                        nk.op = TokenOp::Poly(unit);
                    }
                    changed = true;
                }
            }
        }
    }
    // rebuild with compacted indices
    let mut b = TokenAdapterBuilder::new(adapter.tokens());
    for i in adapter.inputs() {
        b.input(&i.name, i.dim)?;
    }
    let mut map: Vec<Option<NodeRef>> = vec![None; nodes.len()];
    for (j, n) in nodes.into_iter().enumerate() {
        let Some(n) = n else { continue };
        let inputs: Vec<NodeRef> = n
            .inputs
            .iter()
            .map(|r| match r {
                NodeRef::Input(i) => Some(NodeRef::Input(*i)),
                NodeRef::Node(k) => map[*k],
            })
            .collect::<Option<_>>()
            .ok_or_else(|| crate::Error::model(format!("fuse: node {} lost an operand", n.name)))?;
        map[j] = Some(b.node(&n.name, n.op, &inputs)?);
    }
    b.build()
}
