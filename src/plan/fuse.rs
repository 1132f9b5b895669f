//! Graph rewriting before layout: the passes that bring a plan to (or near) its minimum
//! depth. They run on the stage list of [`Plan::compile`](super::Plan::compile) when
//! [`PlanOptions::fold_normalization`](super::PlanOptions) is set (the default), and use only
//! the graph's shapes and activation degrees to decide what to rewrite, so a client holding
//! a weightless copy of the model gets the same plan structure as the server. The plaintext
//! twin ([`crate::model::reference`]) keeps evaluating the unfused graph.
//!
//! 1. **Lower affine activations.** A degree-1 activation `c0 + c1 t(x)` is a per-feature
//!    affine map.
//! 2. **Fuse linear chains** (dense, affine, scale, and the residual adds and
//!    concatenations between them). A dense stage absorbs a producer that feeds only it:
//!    `W (V x + c) + b = (W V) x + (W c + b)`, `W (x + y) = W x + W y`,
//!    `W [x; y] = W_1 x + W_2 y`; an affine stage folds into a dense or affine producer; a
//!    residual add of dense maps becomes one dense map over the concatenated operands.
//!    Operands that occur twice are merged (`W_1 x + W_2 x = (W_1 + W_2) x`). A rewrite is
//!    kept when it lowers the depth with at most 1.5 times the work, or keeps the depth
//!    and does not add work (work: key switches in the latency layout, plaintext products in
//!    the batch layout). LoRA pairs are fused only on these terms, i.e. when the product is
//!    cheaper than the two factors (e.g. a 10-class head times the up-projection).
//!    Example: the bottleneck `head(x + up(act(down x)))` becomes
//!    `[head | head·up] [x; act(down x)]`, one level less, `head·up` a `classes x hidden` map.
//! 3. **Fold activation maps.** A degree-2 activation `p(x) = b2 x^2 + b1 x + b0` is
//!    evaluated as `sign(b2) u^2 + (b0 - b1^2 / (4 b2))` with
//!    `u = sqrt|b2| (x + b1 / (2 b2))`, and the affine map `x -> u` is folded into the
//!    producer: **one level** (one ciphertext product, no constant product). Higher degrees
//!    get the interval normalisation `t = alpha x + beta` folded into the producer (their
//!    Chebyshev evaluation then costs `ceil(log2(d + 1))` levels). When the producer cannot
//!    take the map (an adapter input, or a stage with other consumers) but a single dense
//!    stage reads the square, the square is `(x + b1/(2 b2))^2` (a free constant addition)
//!    and the consumer's columns take `b2` and its bias the constant: still one level.
//!    Otherwise an explicit affine stage goes before the activation (one level).
//!
//! The square form is exact; its conditioning depends on `b2`: the error of `u` is
//! multiplied by `2|u|`, i.e. by about `|b1| / sqrt|b2|` when the linear term dominates.
//! A degree-2 activation whose leading coefficient is exactly 0 but whose linear term is not
//! is refused (declare it with degree 1).
//!
//! Size: one concern (the graph-rewriting passes that bring a plan to its minimum depth), each pass a function over the same stage list.

use super::compile::{block_rotations, Stage, StageOp};
use super::layout::{self, Segment};
use crate::ckks::polyeval::chebyshev_depth;
use crate::model::{Adapter, NodeRef, Op};
use crate::{Error, Result};
use ndarray::{Array1, Array2, Axis};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The minimum number of levels any plan of `adapter` can use under the standard CKKS level
/// model (every product by a non-integer constant or plaintext costs one rescale): along
/// every path from an input to the output, one level per maximal run of dense maps
/// (linear or low-rank layers, with the affine maps, scalings, adds and concatenations
/// between them: a whole run fuses into one product) plus `ceil(log2 d)` per activation of
/// degree `d >= 2`; the bound is the largest such sum.
pub fn depth_lower_bound(adapter: &Adapter) -> usize {
    // Per value: the worst path cost ending in an open (already counted) dense run, and the
    // worst ending after an activation or at an input.
    const NONE: i64 = i64::MIN / 4;
    let mut open = vec![NONE; adapter.nodes().len()];
    let mut closed = vec![NONE; adapter.nodes().len()];
    let get = |r: &NodeRef, open: &[i64], closed: &[i64]| -> (i64, i64) {
        match *r {
            NodeRef::Input(_) => (NONE, 0),
            NodeRef::Node(j) => (open[j], closed[j]),
        }
    };
    for (k, node) in adapter.nodes().iter().enumerate() {
        let ins: Vec<(i64, i64)> = node.inputs.iter().map(|r| get(r, &open, &closed)).collect();
        let max_open = ins.iter().map(|p| p.0).max().unwrap_or(NONE);
        let max_closed = ins.iter().map(|p| p.1).max().unwrap_or(NONE);
        let (o, c) = match &node.op {
            Op::Linear { .. } | Op::LowRank { .. } => (max_open.max(max_closed + 1), NONE),
            Op::Poly(act) if act.degree() >= 2 => {
                let d = act.degree();
                let levels = usize::BITS - (d - 1).leading_zeros();
                (NONE, max_open.max(max_closed) + i64::from(levels))
            }
            // affine maps, scalings, affine activations, adds, concatenations: transparent
            _ => (max_open, max_closed),
        };
        open[k] = o;
        closed[k] = c;
    }
    let last = adapter.nodes().len().saturating_sub(1);
    let v = open
        .get(last)
        .copied()
        .unwrap_or(NONE)
        .max(closed.get(last).copied().unwrap_or(NONE));
    usize::try_from(v.max(0)).unwrap_or(0)
}

/// Runs the three passes on `stages` (the first `n_inputs` are the inputs) and returns the
/// rewritten, compacted stage list (topological order, output last).
pub(crate) fn fuse(
    stages: Vec<Stage>,
    n_inputs: usize,
    slots: usize,
    latency: bool,
) -> Result<Vec<Stage>> {
    let mut stages = stages;
    lower_affine_activations(&mut stages);
    let mut guard = 0;
    loop {
        guard += 1;
        if guard > 4 * stages.len() + 8 {
            break;
        }
        let base = score(&stages, n_inputs, slots, latency);
        let mut best: Option<(Score, Vec<Stage>)> = None;
        let live = live_set(&stages);
        for c in (n_inputs..stages.len()).filter(|&c| live[c]) {
            for cand in candidates(&stages, n_inputs, c) {
                let sc = score(&cand, n_inputs, slots, latency);
                if sc.better_than(&base) && best.as_ref().is_none_or(|(b, _)| sc.lex() < b.lex()) {
                    best = Some((sc, cand));
                }
            }
        }
        match best {
            Some((_, s)) => stages = s,
            None => break,
        }
    }
    let output = stages.len().saturating_sub(1);
    let stages = fold_activations(stages, n_inputs)?;
    Ok(compact(stages, n_inputs, output))
}

/// After layout: a square stage at level `l` receives `u * sqrt(q_l / Delta)` from its
/// producer, so that `u'^2` rescaled by `q_l` lands exactly at scale `Delta`.
pub(crate) fn apply_square_scales(stages: &mut [Stage], q: &[u64], delta: f64) {
    for idx in 0..stages.len() {
        if !matches!(stages[idx].op, StageOp::Square { .. }) {
            continue;
        }
        let Some(&p) = stages[idx].inputs.first() else {
            continue;
        };
        let Some(&ql) = q.get(stages[p].level.get()) else {
            continue;
        };
        if let StageOp::Square {
            consumer_scaled: true,
            ..
        } = stages[idx].op
        {
            if let Some(c) = stages.iter().position(|s| s.inputs.contains(&idx)) {
                scale_columns_of(stages, c, idx, ql as f64 / delta, 0.0);
            }
        } else {
            scale_rows(&mut stages[p].op, (ql as f64 / delta).sqrt(), 0.0);
        }
    }
}

/// Replaces the operand `operand` of dense stage `c` by `f * operand + k`: its columns are
/// multiplied by `f` and `k` times their row sums is added to the bias.
fn scale_columns_of(stages: &mut [Stage], c: usize, operand: usize, f: f64, k: f64) {
    let widths: Vec<usize> = stages[c]
        .inputs
        .iter()
        .map(|&i| stages[i].out_dim)
        .collect();
    let hits: Vec<bool> = stages[c].inputs.iter().map(|&i| i == operand).collect();
    if let StageOp::Dense { weight, bias } = &mut stages[c].op {
        let mut at = 0;
        for (w, hit) in widths.iter().zip(hits) {
            if hit {
                let mut cols = weight.slice_axis_mut(Axis(1), (at..at + w).into());
                if k != 0.0 {
                    add_bias(bias, cols.sum_axis(Axis(1)) * k);
                }
                cols.mapv_inplace(|v| v * f);
            }
            at += w;
        }
    }
}

/// `y -> f y + g` applied to the output of a dense or affine op (rows scaled).
fn scale_rows(op: &mut StageOp, f: f64, g: f64) {
    match op {
        StageOp::Dense { weight, bias } => {
            weight.mapv_inplace(|w| w * f);
            let b = bias.take().unwrap_or_else(|| Array1::zeros(weight.nrows()));
            *bias = Some(b.mapv(|v| v * f + g));
        }
        StageOp::Affine { mul, add } => {
            mul.mapv_inplace(|m| m * f);
            add.mapv_inplace(|a| a * f + g);
        }
        _ => {}
    }
}

fn lower_affine_activations(stages: &mut [Stage]) {
    for st in stages.iter_mut() {
        if let StageOp::Poly {
            cheb, alpha, beta, ..
        } = &st.op
        {
            if cheb.len() <= 2 {
                let c0 = cheb.first().copied().unwrap_or(0.0);
                let c1 = cheb.get(1).copied().unwrap_or(0.0);
                st.op = StageOp::Affine {
                    mul: Array1::from_elem(st.out_dim, c1 * alpha),
                    add: Array1::from_elem(st.out_dim, c1 * beta + c0),
                };
            }
        }
    }
}

fn live_set(stages: &[Stage]) -> Vec<bool> {
    let mut live = vec![false; stages.len()];
    let mut stack: Vec<usize> = stages.len().checked_sub(1).into_iter().collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut live[i], true) {
            continue;
        }
        stack.extend(stages[i].inputs.iter().copied());
    }
    live
}

fn consumers(stages: &[Stage]) -> Vec<usize> {
    let live = live_set(stages);
    let mut c = vec![0usize; stages.len()];
    for (k, s) in stages.iter().enumerate() {
        if live[k] {
            for &i in &s.inputs {
                c[i] += 1;
            }
        }
    }
    c
}

#[derive(Clone, Copy, Debug)]
struct Score {
    depth: usize,
    work: usize,
    products: usize,
    stages: usize,
}

impl Score {
    fn lex(&self) -> (usize, usize, usize, usize) {
        (self.depth, self.work, self.products, self.stages)
    }
    /// Lower depth at most 1.5 times the work, or the same depth and no more work (and, on
    /// equal work, fewer products or fewer stages). (A level saved makes each key switch
    /// cheaper by about one limb in four at these depths, so twice the key switches for one
    /// level less is slower on the same ring: the LoRA map 768 -> 64 -> 768 fused into one
    /// 768 x 768 map took 62 key switches against 32 and ran 1.6 times slower.)
    fn better_than(&self, o: &Score) -> bool {
        if self.depth < o.depth {
            return 2 * self.work <= 3 * o.work.max(1);
        }
        self.depth == o.depth
            && (self.work, self.products, self.stages) < (o.work, o.products, o.stages)
            && self.work <= o.work
    }
}

/// Latency segments of every stage (as the layout computes them) and the plan's figures.
fn score(stages: &[Stage], n_inputs: usize, slots: usize, latency: bool) -> Score {
    let live = live_set(stages);
    let mut segs: Vec<Vec<Segment>> = vec![vec![]; stages.len()];
    let mut depth = vec![0usize; stages.len()];
    let (mut work, mut products, mut count) = (0usize, 0usize, 0usize);
    for (k, st) in stages.iter().enumerate() {
        if k < n_inputs {
            segs[k] = layout::split(st.out_dim, slots);
            continue;
        }
        if !live[k] {
            continue;
        }
        count += 1;
        let d_in = st.inputs.iter().map(|&i| depth[i]).max().unwrap_or(0);
        let first = st
            .inputs
            .first()
            .map(|&i| segs[i].clone())
            .unwrap_or_default();
        let (levels, out) = match &st.op {
            StageOp::Dense { weight, .. } => {
                let out = layout::split(st.out_dim, slots);
                if latency {
                    for o in &out {
                        for &i in &st.inputs {
                            for s in &segs[i] {
                                work += block_rotations(o.period, s.period).1;
                                products += o.period.min(s.period);
                            }
                        }
                    }
                } else {
                    work += weight.len();
                    products += weight.len();
                }
                (1, out)
            }
            StageOp::Affine { .. } => {
                products += if latency { first.len() } else { st.out_dim };
                if !latency {
                    work += st.out_dim;
                }
                (1, first)
            }
            StageOp::Poly { cheb, .. } => (chebyshev_depth(cheb.len().saturating_sub(1)), first),
            StageOp::Square { .. } => (1, first),
            StageOp::Add => (0, first),
            StageOp::Concat => {
                let mut out = Vec::new();
                let mut shift = 0;
                for &i in &st.inputs {
                    out.extend(layout::shifted(&segs[i], shift));
                    shift += stages[i].out_dim;
                }
                (0, out)
            }
            StageOp::Input => (0, first),
        };
        depth[k] = d_in + levels;
        segs[k] = out;
    }
    Score {
        depth: depth.last().copied().unwrap_or(0),
        work,
        products,
        stages: count,
    }
}

/// Column blocks of `w`, one per operand width.
fn split_cols(w: &Array2<f64>, widths: &[usize]) -> Vec<Array2<f64>> {
    let mut out = Vec::with_capacity(widths.len());
    let mut at = 0;
    for &d in widths {
        out.push(w.slice_axis(Axis(1), (at..at + d).into()).to_owned());
        at += d;
    }
    out
}

/// Joins `(operand, block)` pairs into one weight over the distinct operands (blocks of a
/// repeated operand are summed), in order of first occurrence.
fn join_blocks(rows: usize, blocks: Vec<(usize, Array2<f64>)>) -> (Array2<f64>, Vec<usize>) {
    let mut ins: Vec<usize> = Vec::new();
    let mut mats: Vec<Array2<f64>> = Vec::new();
    for (i, b) in blocks {
        if let Some(pos) = ins.iter().position(|&j| j == i) {
            mats[pos] += &b;
        } else {
            ins.push(i);
            mats.push(b);
        }
    }
    let views: Vec<_> = mats.iter().map(|m| m.view()).collect();
    let w = ndarray::concatenate(Axis(1), &views).unwrap_or_else(|_| Array2::zeros((rows, 0)));
    (w, ins)
}

fn add_bias(bias: &mut Option<Array1<f64>>, extra: Array1<f64>) {
    match bias {
        Some(b) => *b += &extra,
        None => *bias = Some(extra),
    }
}

/// The dense stage `c` with operand position `j` replaced by what its producer computes;
/// `None` when the producer is not a linear stage.
fn absorb(stages: &[Stage], c: usize, j: usize) -> Option<Stage> {
    let st = &stages[c];
    let StageOp::Dense { weight, bias } = &st.op else {
        return None;
    };
    let widths: Vec<usize> = st.inputs.iter().map(|&i| stages[i].out_dim).collect();
    let cols = split_cols(weight, &widths);
    let p = st.inputs[j];
    let prod = &stages[p];
    let wj = &cols[j];
    let mut bias = bias.clone();
    let replaced: Vec<(usize, Array2<f64>)> = match &prod.op {
        StageOp::Dense {
            weight: wp,
            bias: bp,
        } => {
            let pw: Vec<usize> = prod.inputs.iter().map(|&i| stages[i].out_dim).collect();
            let fused = wj.dot(wp);
            if let Some(bp) = bp {
                add_bias(&mut bias, wj.dot(bp));
            }
            prod.inputs
                .iter()
                .copied()
                .zip(split_cols(&fused, &pw))
                .collect()
        }
        StageOp::Affine { mul, add } => {
            let scaled = wj * &mul.view().insert_axis(Axis(0));
            add_bias(&mut bias, wj.dot(add));
            vec![(prod.inputs[0], scaled)]
        }
        StageOp::Add => prod.inputs.iter().map(|&i| (i, wj.clone())).collect(),
        StageOp::Concat => {
            let pw: Vec<usize> = prod.inputs.iter().map(|&i| stages[i].out_dim).collect();
            prod.inputs
                .iter()
                .copied()
                .zip(split_cols(wj, &pw))
                .collect()
        }
        _ => return None,
    };
    let mut blocks = Vec::new();
    for (k, (&i, b)) in st.inputs.iter().zip(cols).enumerate() {
        if k == j {
            blocks.extend(replaced.iter().cloned());
        } else {
            blocks.push((i, b));
        }
    }
    let (w, ins) = join_blocks(st.out_dim, blocks);
    Some(Stage {
        op: StageOp::Dense { weight: w, bias },
        inputs: ins,
        ..st.clone()
    })
}

fn fusable(op: &StageOp) -> bool {
    matches!(
        op,
        StageOp::Dense { .. } | StageOp::Affine { .. } | StageOp::Add | StageOp::Concat
    )
}

/// Rewrites of stage `c`: for a dense stage, absorbing one single-consumer linear producer,
/// alone or with every linear producer that absorption exposes; for an affine stage,
/// folding into its dense or affine producer; for an add of dense maps, one dense map.
fn candidates(stages: &[Stage], n_inputs: usize, c: usize) -> Vec<Vec<Stage>> {
    let cons = consumers(stages);
    let single = |i: usize, cons: &[usize], stages: &[Stage]| -> bool {
        i >= n_inputs && cons[i] == 1 && fusable(&stages[i].op)
    };
    let mut out = Vec::new();
    match &stages[c].op {
        StageOp::Dense { .. } => {
            for j in 0..stages[c].inputs.len() {
                let p = stages[c].inputs[j];
                if !single(p, &cons, stages) {
                    continue;
                }
                let Some(one) = absorb(stages, c, j) else {
                    continue;
                };
                let before: Vec<usize> = stages[c].inputs.clone();
                let mut cand = stages.to_vec();
                cand[c] = one;
                out.push(cand.clone());
                // closure: keep absorbing operands this absorption exposed
                let mut changed = true;
                let mut rounds = 0;
                while changed && rounds < 64 {
                    changed = false;
                    rounds += 1;
                    let cons = consumers(&cand);
                    for k in 0..cand[c].inputs.len() {
                        let q = cand[c].inputs[k];
                        if before.contains(&q) || !single(q, &cons, &cand) {
                            continue;
                        }
                        if let Some(next) = absorb(&cand, c, k) {
                            cand[c] = next;
                            changed = true;
                            break;
                        }
                    }
                }
                if rounds > 1 {
                    out.push(cand);
                }
            }
        }
        StageOp::Affine { mul, add } => {
            let p = stages[c].inputs[0];
            if p >= n_inputs && cons[p] == 1 {
                let mut op = stages[p].op.clone();
                let ok = match &mut op {
                    StageOp::Dense { weight, bias } => {
                        *weight = &*weight * &mul.view().insert_axis(Axis(1));
                        let b = bias.take().unwrap_or_else(|| Array1::zeros(weight.nrows()));
                        *bias = Some(&b * mul + add);
                        true
                    }
                    StageOp::Affine { mul: m, add: a } => {
                        *a = &*a * mul + add;
                        *m = &*m * mul;
                        true
                    }
                    _ => false,
                };
                if ok {
                    let mut cand = stages.to_vec();
                    cand[c].op = op;
                    cand[c].inputs = stages[p].inputs.clone();
                    out.push(cand);
                }
            }
        }
        StageOp::Add => {
            let ins = &stages[c].inputs;
            if ins.iter().all(|&i| {
                i >= n_inputs && cons[i] == 1 && matches!(stages[i].op, StageOp::Dense { .. })
            }) {
                let mut blocks = Vec::new();
                let mut bias: Option<Array1<f64>> = None;
                for &i in ins {
                    if let StageOp::Dense { weight, bias: b } = &stages[i].op {
                        let w: Vec<usize> = stages[i]
                            .inputs
                            .iter()
                            .map(|&k| stages[k].out_dim)
                            .collect();
                        blocks.extend(stages[i].inputs.iter().copied().zip(split_cols(weight, &w)));
                        if let Some(b) = b {
                            add_bias(&mut bias, b.clone());
                        }
                    }
                }
                let (w, new_ins) = join_blocks(stages[c].out_dim, blocks);
                let mut cand = stages.to_vec();
                cand[c].op = StageOp::Dense { weight: w, bias };
                cand[c].inputs = new_ins;
                out.push(cand);
            }
        }
        _ => {}
    }
    out
}

/// `(g, h, sign, offset)` with `p(x) = sign (g x + h)^2 + offset` for the degree-2 series
/// `cheb` on `t = alpha x + beta`.
fn square_form(cheb: &[f64], alpha: f64, beta: f64, name: &str) -> Result<(f64, f64, f64, f64)> {
    let (b2, b1, b0) = power_coeffs_in_x(cheb, alpha, beta);
    if b2 == 0.0 {
        if b1 == 0.0 {
            return Ok((0.0, 0.0, 1.0, b0));
        }
        return Err(zero_leading(name));
    }
    let sign = b2.signum();
    let r = b2.abs().sqrt();
    let g = r;
    let h = sign * b1 / (2.0 * r);
    let offset = b0 - b1 * b1 / (4.0 * b2);
    if ![g, h, offset].iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidValue {
            context: format!("activation '{name}'"),
            reason: "the square form of its coefficients is not finite".into(),
        });
    }
    Ok((g, h, sign, offset))
}

/// `(b2, b1, b0)` with `p(x) = b2 x^2 + b1 x + b0` for the degree-2 Chebyshev series `cheb`
/// on `t = alpha x + beta`.
fn power_coeffs_in_x(cheb: &[f64], alpha: f64, beta: f64) -> (f64, f64, f64) {
    let c = |k: usize| cheb.get(k).copied().unwrap_or(0.0);
    // in t: T_2 = 2 t^2 - 1
    let (a2, a1, a0) = (2.0 * c(2), c(1), c(0) - c(2));
    (
        a2 * alpha * alpha,
        2.0 * a2 * alpha * beta + a1 * alpha,
        a2 * beta * beta + a1 * beta + a0,
    )
}

fn zero_leading(name: &str) -> Error {
    Error::model(format!(
        "activation '{name}' is declared with degree 2 but its leading coefficient is 0: declare it with degree 1"
    ))
}

/// Pass 3 (see the module docs). Inserted affine stages are appended; [`compact`] puts them
/// in place.
fn fold_activations(mut stages: Vec<Stage>, n_inputs: usize) -> Result<Vec<Stage>> {
    let cons = consumers(&stages);
    let live = live_set(&stages);
    let n = stages.len();
    for idx in n_inputs..n {
        if !live[idx] {
            continue;
        }
        let (cheb, alpha, beta) = match &stages[idx].op {
            StageOp::Poly {
                cheb,
                alpha,
                beta,
                normalized: false,
            } if stages[idx].inputs.len() == 1 => (cheb.clone(), *alpha, *beta),
            _ => continue,
        };
        let src = stages[idx].inputs[0];
        let foldable = src >= n_inputs
            && cons[src] == 1
            && matches!(
                stages[src].op,
                StageOp::Dense { .. } | StageOp::Affine { .. }
            );
        let consumer = (0..n).find(|&c| live[c] && stages[c].inputs.contains(&idx));
        let dense_consumer = cons[idx] == 1
            && consumer.is_some_and(|c| matches!(stages[c].op, StageOp::Dense { .. }));
        if cheb.len() == 3 && !foldable && dense_consumer {
            // (x + shift)^2 with the coefficient and the constant in the consumer
            let (b2, b1, b0) = power_coeffs_in_x(&cheb, alpha, beta);
            let (lambda, shift, k) = if b2 == 0.0 {
                if b1 != 0.0 {
                    return Err(zero_leading(&stages[idx].name));
                }
                (0.0, 0.0, b0)
            } else {
                (b2, b1 / (2.0 * b2), b0 - b1 * b1 / (4.0 * b2))
            };
            if let Some(c) = consumer {
                scale_columns_of(&mut stages, c, idx, lambda, k);
            }
            stages[idx].op = StageOp::Square {
                sign: 1.0,
                offset: 0.0,
                shift,
                consumer_scaled: true,
            };
            continue;
        }
        let (g, h) = if cheb.len() == 3 {
            let (g, h, sign, offset) = square_form(&cheb, alpha, beta, &stages[idx].name)?;
            stages[idx].op = StageOp::Square {
                sign,
                offset,
                shift: 0.0,
                consumer_scaled: false,
            };
            (g, h)
        } else {
            if let StageOp::Poly { normalized, .. } = &mut stages[idx].op {
                *normalized = true;
            }
            (alpha, beta)
        };
        if foldable {
            scale_rows(&mut stages[src].op, g, h);
        } else {
            let d = stages[idx].out_dim;
            stages.push(Stage {
                name: format!("{}.in", stages[idx].name),
                op: StageOp::Affine {
                    mul: Array1::from_elem(d, g),
                    add: Array1::from_elem(d, h),
                },
                inputs: vec![src],
                out_dim: d,
                segments: vec![],
                level: crate::ckks::Level::ZERO,
                in_level: crate::ckks::Level::ZERO,
            });
            let new = stages.len() - 1;
            stages[idx].inputs = vec![new];
        }
    }
    Ok(stages)
}

/// Drops dead stages and orders the rest topologically: inputs first, then by original
/// position (a stage appended by a pass goes right before its consumer); `output` (the
/// original last stage) stays last.
fn compact(stages: Vec<Stage>, n_inputs: usize, output: usize) -> Vec<Stage> {
    let n = stages.len();
    let mut key: Vec<u64> = (0..n as u64).map(|i| 2 * i + 1).collect();
    for i in (output + 1..n).rev() {
        if let Some(c) = stages.iter().position(|s| s.inputs.contains(&i)) {
            key[i] = key[c].saturating_sub(1);
        }
    }
    let mut live = vec![false; n];
    let mut stack = vec![output];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut live[i], true) {
            continue;
        }
        stack.extend(stages[i].inputs.iter().copied());
    }
    for l in live.iter_mut().take(n_inputs) {
        *l = true;
    }
    let mut indeg = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![vec![]; n];
    for (i, s) in stages.iter().enumerate() {
        if live[i] {
            for &j in &s.inputs {
                indeg[i] += 1;
                users[j].push(i);
            }
        }
    }
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..n)
        .filter(|&i| live[i] && indeg[i] == 0)
        .map(|i| Reverse((key[i], i)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = heap.pop() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                heap.push(Reverse((key[u], u)));
            }
        }
    }
    let mut remap = vec![usize::MAX; n];
    for (new, &old) in order.iter().enumerate() {
        remap[old] = new;
    }
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&old| {
            let mut s = slots[old].take()?;
            s.inputs = s.inputs.iter().map(|&i| remap[i]).collect();
            Some(s)
        })
        .collect()
}

impl super::Plan {
    /// Whether the sanitization mask is folded into the final layer (the fourth pass,
    /// latency layout, with [`PlanOptions::fold_normalization`](super::PlanOptions)): the
    /// final stage is a dense map none of whose blocks is wide (no rotate-and-sum after the
    /// plaintext products), so its diagonals and bias are encoded with every slot outside
    /// `0..dim` of each output segment set to zero, and the output's non-output slots hold
    /// exact zeros (plus the fresh rounding and key-switching noise of that one product)
    /// instead of copies of the outputs. [`super::Plan::sanitize`] then needs no mask product
    /// and no level for it. Cost: none (a few more zero entries in the encoded diagonals).
    ///
    /// A wide block (`m' < n'`) sums `n'/m'` partial results by rotations after the
    /// products, which would move the zeros of a masked diagonal onto output slots: such a
    /// final stage keeps the separate mask product.
    pub fn output_mask_folded(&self) -> bool {
        if self.options.mode != super::Mode::Latency || !self.options.fold_normalization {
            return false;
        }
        let Some(last) = self.stages.last() else {
            return false;
        };
        if !matches!(last.op, StageOp::Dense { .. }) {
            return false;
        }
        let in_periods: Vec<usize> = last
            .inputs
            .iter()
            .flat_map(|&i| self.stages.get(i).map_or(&[][..], |s| &s.segments[..]))
            .map(|s| s.period)
            .collect();
        !in_periods.is_empty()
            && last
                .segments
                .iter()
                .all(|o| in_periods.iter().all(|&n| o.period >= n))
    }
}
