//! Server side of a token plan: the encrypted evaluation node by node.

use ndarray::Array1;
use ndarray::Array2;
use rayon::prelude::*;

use crate::ckks::polyeval::evaluate_chebyshev;
use crate::ckks::{Ciphertext, Encoder, Evaluator, Level};
use crate::model::layer::NodeRef;
use crate::model::token::{Pooling, TokenAdapter, TokenOp};
use crate::{Error, Result};

use super::layout::{block_steps, sum_steps, unit_interval};
use super::{Layout, TokenPlan};

impl TokenPlan {
    /// Evaluates `adapter` on the encrypted columns of one sample (from
    /// [`TokenPlan::encrypt_inputs`]); returns the output columns. `ev` must hold the
    /// relinearization key and the Galois keys of [`TokenPlan::galois_elements`].
    ///
    /// Cost per node: see the module documentation.
    ///
    /// # Errors
    /// Missing keys, inputs at the wrong level or count.
    pub fn evaluate(
        &self,
        adapter: &TokenAdapter,
        ev: &Evaluator,
        encoder: &Encoder,
        inputs: &[Vec<Ciphertext>],
    ) -> Result<Vec<Ciphertext>> {
        check_input_counts(adapter, inputs, "packed", |dim| {
            self.ciphertexts_for(Layout::Packed, dim)
        })?;
        let run = Run {
            plan: self,
            ev,
            encoder,
            delta: ev.params().default_scale(),
        };
        evaluate_nodes(self, adapter, inputs, "", |op, args, shape| {
            run.node(op, args, shape)
        })
    }
}

/// Checks that `inputs` holds one ciphertext list per adapter input, of `count(dim)`
/// ciphertexts each (`layout` names the layout in the error).
///
/// # Errors
/// [`Error::DimensionMismatch`] naming the input and both counts.
pub(super) fn check_input_counts(
    adapter: &TokenAdapter,
    inputs: &[Vec<Ciphertext>],
    layout: &str,
    count: impl Fn(usize) -> usize,
) -> Result<()> {
    if inputs.len() != adapter.inputs().len() {
        return Err(Error::dims(
            "token adapter inputs",
            adapter.inputs().len(),
            inputs.len(),
        ));
    }
    for (spec, cts) in adapter.inputs().iter().zip(inputs) {
        let n = count(spec.dim);
        if cts.len() != n {
            return Err(Error::dims(
                format!("{layout} ciphertexts of input {}", spec.name),
                n,
                cts.len(),
            ));
        }
    }
    Ok(())
}

/// Runs `adapter`'s nodes in order with `node` (the latency or the batch evaluation of one
/// node), checking each output's level against `plan`'s schedule and freeing each node's
/// value after its last use (a MiniLM-sized block holds dozens of 32-ciphertext values: tens
/// of GB at N = 2^16 if all were kept). `what` qualifies error contexts. Returns the last
/// node's value.
///
/// # Errors
/// The first node error, or a level off the schedule.
pub(super) fn evaluate_nodes(
    plan: &TokenPlan,
    adapter: &TokenAdapter,
    inputs: &[Vec<Ciphertext>],
    what: &str,
    node_fn: impl Fn(&TokenOp, &[&[Ciphertext]], Shape) -> Result<Vec<Ciphertext>>,
) -> Result<Vec<Ciphertext>> {
    let last_use = last_uses(adapter);
    let mut values: Vec<Vec<Ciphertext>> = Vec::with_capacity(adapter.nodes().len());
    for (j, node) in adapter.nodes().iter().enumerate() {
        let args: Vec<&[Ciphertext]> = node
            .inputs
            .iter()
            .map(|r| match r {
                NodeRef::Input(i) => inputs[*i].as_slice(),
                NodeRef::Node(k) => values[*k].as_slice(),
            })
            .collect();
        let (lin, rin) = match node.inputs.first() {
            Some(NodeRef::Node(k)) => (plan.layouts[*k], plan.rows[*k]),
            _ => (Layout::Packed, plan.tokens),
        };
        let shape = Shape {
            lin,
            rin,
            lout: plan.layouts[j],
            wout: node.shape.1,
        };
        let context = || format!("encrypted token node {}{what}", node.name);
        let out = node_fn(&node.op, &args, shape).map_err(|e| Error::InvalidValue {
            context: context(),
            reason: e.to_string(),
        })?;
        if let Some(c) = out.first() {
            if c.level() != plan.levels[j] {
                return Err(Error::InvalidValue {
                    context: context(),
                    reason: format!(
                        "ended at level {}, the schedule says {}",
                        c.level(),
                        plan.levels[j]
                    ),
                });
            }
        }
        values.push(out);
        for r in &node.inputs {
            if let NodeRef::Node(k) = r {
                if last_use[*k] == j {
                    values[*k] = Vec::new();
                }
            }
        }
    }
    values
        .pop()
        .ok_or_else(|| Error::model("token adapter has no nodes"))
}

/// The index of the last node reading each node's value (its own index when none does).
pub(super) fn last_uses(adapter: &TokenAdapter) -> Vec<usize> {
    let mut last: Vec<usize> = (0..adapter.nodes().len()).collect();
    for (j, n) in adapter.nodes().iter().enumerate() {
        for r in &n.inputs {
            if let NodeRef::Node(k) = r {
                if let Some(l) = last.get_mut(*k) {
                    *l = j;
                }
            }
        }
    }
    last
}

/// Layouts around one node: first operand (layout, valid rows) and output (layout, width).
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub(super) lin: Layout,
    pub(super) rin: usize,
    pub(super) lout: Layout,
    pub(super) wout: usize,
}

pub(super) struct Run<'a> {
    pub(super) plan: &'a TokenPlan,
    pub(super) ev: &'a Evaluator,
    pub(super) encoder: &'a Encoder,
    pub(super) delta: f64,
}

impl Run<'_> {
    pub(super) fn q(&self, level: usize) -> Result<f64> {
        self.ev
            .params()
            .q()
            .get(level)
            .map(|&q| q as f64)
            .ok_or(Error::InvalidLevel {
                level: Level(level),
                max: self.ev.params().max_level(),
            })
    }

    /// Ciphertexts brought to their lowest common level (the scale is unchanged).
    pub(super) fn aligned(&self, cols: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        let level = cols.iter().map(|c| c.level()).min().unwrap_or(Level::ZERO);
        cols.iter()
            .map(|c| self.ev.drop_to_level(c, level))
            .collect()
    }

    /// `Y = X W^T + 1 b^T` (`w` is `out x in`), landing at scale `target` one level down,
    /// from layout `sh.lin` to `sh.lout`:
    /// - columns -> columns: constant products, no rotation;
    /// - columns -> packed: per output ciphertext, one plaintext product per input column
    ///   (the weights laid out per block), no rotation;
    /// - packed -> columns: per output column, one plaintext product per input ciphertext
    ///   and a rotate-and-sum over the blocks (`log2 c` rotations).
    pub(super) fn linear(
        &self,
        x: &[Ciphertext],
        w: &Array2<f64>,
        bias: Option<&Array1<f64>>,
        target: f64,
        sh: Shape,
    ) -> Result<Vec<Ciphertext>> {
        let x = self.aligned(x)?;
        let first = x
            .first()
            .ok_or_else(|| Error::model("linear map on zero ciphertexts"))?;
        let level = first.level();
        if level == 0 {
            return Err(Error::LevelExhausted {
                op: "token-wise linear map".into(),
                needed: 1,
                available: 0,
            });
        }
        let cs = target * self.q(level.get())? / first.scale();
        let (out_w, in_w) = w.dim();
        let plan = self.plan;
        let rows = sh.rin;
        match (sh.lin, sh.lout) {
            (Layout::Cols, Layout::Cols) => (0..out_w)
                .into_par_iter()
                .map(|o| {
                    let mut y = self.rescaled_sum(&x, first, cs, |i, xi| {
                        let wi = w[[o, i]];
                        if wi == 0.0 {
                            return Ok(None);
                        }
                        self.ev.mul_const(xi, wi, cs).map(Some)
                    })?;
                    if let Some(b) = bias {
                        if b[o] != 0.0 {
                            self.ev.add_const_assign(&mut y, b[o])?;
                        }
                    }
                    Ok(y)
                })
                .collect(),
            (Layout::Cols, Layout::Packed) => (0..plan.ciphertexts_for(Layout::Packed, out_w))
                .into_par_iter()
                .map(|a| {
                    let mut y = self.rescaled_sum(&x, first, cs, |i, xi| {
                        let pat = plan.packed_slots(a, out_w, rows, |_, o| w[[o, i]]);
                        if pat.iter().all(|&v| v == 0.0) {
                            return Ok(None);
                        }
                        let pt = self.encoder.encode(&pat, level, cs)?;
                        self.ev.mul_plain(xi, &pt).map(Some)
                    })?;
                    if let Some(b) = bias {
                        let pat = plan.packed_slots(a, out_w, rows, |_, o| b[o]);
                        let pt = self.encoder.encode(&pat, y.level(), y.scale())?;
                        self.ev.add_plain_assign(&mut y, &pt)?;
                    }
                    Ok(y)
                })
                .collect(),
            (Layout::Packed, Layout::Cols) => (0..out_w)
                .into_par_iter()
                .map(|o| {
                    let mut y = self.rescaled_sum(&x, first, cs, |a, xa| {
                        let pat = plan.packed_slots(a, in_w, rows, |_, i| w[[o, i]]);
                        if pat.iter().all(|&v| v == 0.0) {
                            return Ok(None);
                        }
                        let pt = self.encoder.encode(&pat, level, cs)?;
                        self.ev.mul_plain(xa, &pt).map(Some)
                    })?;
                    for s in block_steps(plan.period, plan.slots) {
                        let r = self.ev.rotate(&y, s)?;
                        self.ev.add_assign(&mut y, &r)?;
                    }
                    if let Some(b) = bias {
                        if b[o] != 0.0 {
                            self.ev.add_const_assign(&mut y, b[o])?;
                        }
                    }
                    Ok(y)
                })
                .collect(),
            (Layout::Packed, Layout::Packed) => Err(Error::model(
                "a linear map from packed to packed token matrices is not supported yet",
            )),
        }
    }

    /// `sum_i term(i, x_i)`, rescaled once: `term` returns `None` for a zero term (skipped);
    /// an all-zero sum is `first` times 0 at scale factor `cs`, so the result always has the
    /// level and scale a product would have. Costs the terms plus one addition each and one
    /// rescale.
    pub(super) fn rescaled_sum<F>(
        &self,
        x: &[Ciphertext],
        first: &Ciphertext,
        cs: f64,
        term: F,
    ) -> Result<Ciphertext>
    where
        F: Fn(usize, &Ciphertext) -> Result<Option<Ciphertext>>,
    {
        let mut acc: Option<Ciphertext> = None;
        for (i, xi) in x.iter().enumerate() {
            let Some(t) = term(i, xi)? else {
                continue;
            };
            match acc.as_mut() {
                None => acc = Some(t),
                Some(a) => self.ev.add_assign(a, &t)?,
            }
        }
        let mut y = match acc {
            Some(a) => a,
            None => self.ev.mul_const(first, 0.0, cs)?,
        };
        self.ev.rescale_assign(&mut y)?;
        Ok(y)
    }

    /// Rotate-and-sum over the `T'` token slots (every slot of a column ciphertext gets the
    /// sum; in a packed ciphertext only the first slot of each block is right).
    pub(super) fn rotate_sum(&self, ct: &mut Ciphertext) -> Result<()> {
        for s in sum_steps(self.plan.period) {
            let r = self.ev.rotate(ct, s)?;
            self.ev.add_assign(ct, &r)?;
        }
        Ok(())
    }

    /// `ct ⊙ pattern`, rescaled to `target`; the pattern is `f(t, column)` in either layout
    /// (`a` = the ciphertext's index for packed values).
    pub(super) fn mask(
        &self,
        ct: &Ciphertext,
        layout: Layout,
        a: usize,
        width: usize,
        f: impl Fn(usize, usize) -> f64,
        target: f64,
    ) -> Result<Ciphertext> {
        let level = ct.level();
        let pscale = target * self.q(level.get())? / ct.scale();
        let pat = match layout {
            Layout::Cols => self.plan.column_slots(|t| f(t, a)),
            Layout::Packed => self.plan.packed_slots(a, width, self.plan.tokens, f),
        };
        let pt = self.encoder.encode(&pat, level, pscale)?;
        let mut y = self.ev.mul_plain(ct, &pt)?;
        self.ev.rescale_assign(&mut y)?;
        Ok(y)
    }

    pub(super) fn node(
        &self,
        op: &TokenOp,
        args: &[&[Ciphertext]],
        sh: Shape,
    ) -> Result<Vec<Ciphertext>> {
        let x = args
            .first()
            .copied()
            .ok_or_else(|| Error::model("node without operands"))?;
        let delta = self.delta;
        match op {
            TokenOp::Linear { weight, bias } => self.linear(x, weight, bias.as_ref(), delta, sh),
            TokenOp::LowRank { a, b, scale, bias } => {
                let w = b.dot(a) * *scale;
                self.linear(x, &w, bias.as_ref(), delta, sh)
            }
            TokenOp::Affine { mul, add } => {
                let x = self.aligned(x)?;
                x.par_iter()
                    .enumerate()
                    .map(|(i, c)| match sh.lin {
                        Layout::Cols => self.scalar_affine(c, mul[i], add[i], delta),
                        Layout::Packed => {
                            let mut y = self.mask(c, sh.lin, i, sh.wout, |_, j| mul[j], delta)?;
                            let pat = self.plan.packed_slots(i, sh.wout, sh.rin, |_, j| add[j]);
                            let pt = self.encoder.encode(&pat, y.level(), y.scale())?;
                            self.ev.add_plain_assign(&mut y, &pt)?;
                            Ok(y)
                        }
                    })
                    .collect()
            }
            TokenOp::Scale(f) => {
                let x = self.aligned(x)?;
                x.par_iter()
                    .map(|c| self.scalar_affine(c, *f, 0.0, delta))
                    .collect()
            }
            TokenOp::Poly(act) => {
                let (lo, hi) = act.interval();
                let x = self.aligned(x)?;
                x.par_iter()
                    .map(|c| {
                        let t = if unit_interval((lo, hi)) {
                            c.clone()
                        } else {
                            let m = 2.0 / (hi - lo);
                            self.scalar_affine(c, m, -(lo + hi) / (hi - lo), delta)?
                        };
                        evaluate_chebyshev(self.ev, &t, &act.cheb, delta)
                    })
                    .collect()
            }
            TokenOp::Add => {
                let level = args
                    .iter()
                    .flat_map(|a| a.iter().map(|c| c.level()))
                    .min()
                    .unwrap_or(Level::ZERO);
                let mut out: Vec<Ciphertext> = x
                    .iter()
                    .map(|c| self.ev.drop_to_level(c, level))
                    .collect::<Result<_>>()?;
                for other in &args[1..] {
                    for (o, c) in out.iter_mut().zip(other.iter()) {
                        self.ev.add_assign(o, c)?;
                    }
                }
                Ok(out)
            }
            TokenOp::Pool(pool) => {
                let tokens = self.plan.tokens;
                let x = self.aligned(x)?;
                let pattern = |t: usize, _: usize| match pool {
                    Pooling::Cls => {
                        if t == 0 {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    Pooling::Mean => 1.0 / tokens as f64,
                };
                x.par_iter()
                    .enumerate()
                    .map(|(a, c)| {
                        let mut y = self.mask(c, sh.lin, a, sh.wout, pattern, delta)?;
                        self.rotate_sum(&mut y)?;
                        Ok(y)
                    })
                    .collect()
            }
            TokenOp::LinearAttention(at) => self.attention(at, x, sh),
        }
    }

    pub(super) fn scalar_affine(
        &self,
        c: &Ciphertext,
        mul: f64,
        add: f64,
        target: f64,
    ) -> Result<Ciphertext> {
        let cs = target * self.q(c.level().get())? / c.scale();
        let mut y = self.ev.mul_const(c, mul, cs)?;
        self.ev.rescale_assign(&mut y)?;
        if add != 0.0 {
            self.ev.add_const_assign(&mut y, add)?;
        }
        Ok(y)
    }
}
