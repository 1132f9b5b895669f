//! From an adapter to stages, layouts, levels and the keys a plan needs.

use super::layout::{self, Segment};
use crate::ckks::keygen::galois_element_for_rotation;
use crate::ckks::lintrans::{baby_step_for, rotation_steps};
use crate::ckks::polyeval::{chebyshev_depth, chebyshev_products};
use crate::ckks::CkksParams;
use crate::model::{Adapter, NodeRef, Op};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use serde::Serialize;
use std::collections::BTreeSet;

/// Packing layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub enum Mode {
    /// One sample per query, vectors packed in slots (rotations).
    #[default]
    Latency,
    /// Up to N/2 samples per query, one ciphertext per feature (no rotations).
    Batch,
}

impl Mode {
    /// Parses `latency` or `batch`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "latency" => Ok(Mode::Latency),
            "batch" | "throughput" => Ok(Mode::Batch),
            _ => Err(Error::params(format!(
                "unknown mode {s:?} (latency or batch)"
            ))),
        }
    }
}

/// Compilation options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Packing layout.
    pub mode: Mode,
    /// Rewrite the graph before layout (the passes of `plan::fuse`, documented in
    /// `docs/design.md`): fuse chains of linear, affine and scale maps (also across residual
    /// adds and concatenations) where that lowers the cost, fold activation maps into the
    /// producing layer, and evaluate degree-2 activations as one square (one level). `false`
    /// keeps the graph as written (one stage per node, activations normalised by a separate
    /// constant product).
    pub fold_normalization: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            mode: Mode::Latency,
            fold_normalization: true,
        }
    }
}

/// What a stage computes, with weights already transformed (LoRA scale folded, activation
/// normalisation folded where allowed).
#[derive(Clone, Debug)]
pub(crate) enum StageOp {
    Input,
    /// `y = W x + b`.
    Dense {
        weight: Array2<f64>,
        bias: Option<Array1<f64>>,
    },
    /// `y_i = mul_i x_i + add_i`.
    Affine {
        mul: Array1<f64>,
        add: Array1<f64>,
    },
    /// Chebyshev series on `t = alpha x + beta` (`normalized`: the producer already did it).
    Poly {
        cheb: Vec<f64>,
        alpha: f64,
        beta: f64,
        normalized: bool,
    },
    /// `y = sign * x^2 + offset` (a degree-2 activation whose affine map was folded into the
    /// producer, which also multiplies by `sqrt(q_l / Delta)` so that the square lands at
    /// scale `Delta`): one ciphertext product, one level.
    ///
    /// `consumer_scaled`: the producer could not take the affine map (an adapter input, or
    /// a stage with other consumers), so the square is `(x + shift)^2` with `shift` a free
    /// constant addition, and the single dense consumer's columns carry both the leading
    /// coefficient and the `q_l / Delta` correction (the square is then declared at scale
    /// `Delta`); `sign = 1`, `offset = 0` (in the consumer's bias).
    Square {
        sign: f64,
        offset: f64,
        shift: f64,
        consumer_scaled: bool,
    },
    Add,
    Concat,
}

#[derive(Clone, Debug)]
pub(crate) struct Stage {
    pub name: String,
    pub op: StageOp,
    pub inputs: Vec<usize>,
    pub out_dim: usize,
    /// Latency layout of the output.
    pub segments: Vec<Segment>,
    /// Level of the output (before any alignment by a consumer).
    pub level: usize,
    /// Level the inputs are aligned to.
    pub in_level: usize,
}

/// Per-stage figures of a plan.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// Stage name (adapter node name; LoRA nodes give `name.A` and `name.B`).
    pub name: String,
    /// Operation kind.
    pub kind: String,
    /// Output width.
    pub out_dim: usize,
    /// Level of the operands.
    pub level_in: usize,
    /// Level of the result.
    pub level_out: usize,
    /// Rotations (each one key switch).
    pub rotations: usize,
    /// Relinearizations (each one key switch).
    pub relinearizations: usize,
    /// Plaintext or constant products.
    pub plain_products: usize,
}

/// A compiled plan: stages, layouts, levels and required keys. Built from the adapter's
/// structure; see the module docs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub(crate) params: CkksParams,
    pub(crate) options: PlanOptions,
    pub(crate) stages: Vec<Stage>,
    pub(crate) input_dims: Vec<usize>,
    rotations: BTreeSet<i64>,
    needs_relin: bool,
    report: Vec<StageReport>,
    depth_lower_bound: usize,
}

fn dense_rotations(out_segs: &[Segment], in_segs: &[Segment]) -> (Vec<i64>, usize) {
    let mut steps = Vec::new();
    let mut count = 0;
    for o in out_segs {
        for i in in_segs {
            let (s, c) = block_rotations(o.period, i.period);
            count += c;
            steps.extend(s);
        }
    }
    (steps, count)
}

/// Rotation steps and count of one `m' x n'` block: BSGS over `min(m', n')` diagonals, then
/// a rotate-and-sum over `n'/m'` copies when the block is wide.
pub(crate) fn block_rotations(m: usize, n: usize) -> (Vec<i64>, usize) {
    let k = m.min(n);
    let g = baby_step_for(k);
    let mut steps = rotation_steps(k, g);
    let mut count = steps.len();
    let mut w = m;
    while w < n {
        steps.push(w as i64);
        count += 1;
        w *= 2;
    }
    steps.sort_unstable();
    steps.dedup();
    (steps, count)
}

impl Plan {
    /// Compiles `adapter` for `params`. Uses only shapes and activation degrees and
    /// intervals, never weight values, so a client holding a weightless copy of the model
    /// gets the same layout and keys.
    ///
    /// Errors: a layout that does not fit (batch mode only takes up to N/2 samples, which
    /// is checked at encoding), or an adapter deeper than the parameters' levels.
    pub fn compile(adapter: &Adapter, params: &CkksParams, options: PlanOptions) -> Result<Self> {
        let slots = params.slots();
        let top = params.max_level();
        let n_inputs = adapter.inputs().len();
        let mut stages: Vec<Stage> = Vec::new();
        for spec in adapter.inputs() {
            stages.push(Stage {
                name: spec.name.clone(),
                op: StageOp::Input,
                inputs: vec![],
                out_dim: spec.dim,
                segments: layout::split(spec.dim, slots),
                level: top,
                in_level: top,
            });
        }
        let mut node_stage = Vec::with_capacity(adapter.nodes().len());
        let resolve = |r: &NodeRef, node_stage: &Vec<usize>| -> usize {
            match *r {
                NodeRef::Input(i) => i,
                NodeRef::Node(j) => node_stage[j],
            }
        };
        for node in adapter.nodes() {
            let ins: Vec<usize> = node
                .inputs
                .iter()
                .map(|r| resolve(r, &node_stage))
                .collect();
            let mut push = |name: String, op: StageOp, inputs: Vec<usize>, out_dim: usize| {
                stages.push(Stage {
                    name,
                    op,
                    inputs,
                    out_dim,
                    segments: vec![],
                    level: 0,
                    in_level: 0,
                });
                stages.len() - 1
            };
            let id = match &node.op {
                Op::Linear { weight, bias } => push(
                    node.name.clone(),
                    StageOp::Dense {
                        weight: weight.clone(),
                        bias: bias.clone(),
                    },
                    ins,
                    node.out_dim,
                ),
                Op::LowRank { a, b, scale, bias } => {
                    let first = push(
                        format!("{}.A", node.name),
                        StageOp::Dense {
                            weight: a.clone(),
                            bias: None,
                        },
                        ins,
                        a.nrows(),
                    );
                    push(
                        format!("{}.B", node.name),
                        StageOp::Dense {
                            weight: b * *scale,
                            bias: bias.clone(),
                        },
                        vec![first],
                        node.out_dim,
                    )
                }
                Op::Affine { mul, add } => push(
                    node.name.clone(),
                    StageOp::Affine {
                        mul: mul.clone(),
                        add: add.clone(),
                    },
                    ins,
                    node.out_dim,
                ),
                Op::Scale(s) => {
                    let d = node.out_dim;
                    push(
                        node.name.clone(),
                        StageOp::Affine {
                            mul: Array1::from_elem(d, *s),
                            add: Array1::zeros(d),
                        },
                        ins,
                        d,
                    )
                }
                Op::Poly(act) => {
                    let (lo, hi) = act.interval();
                    let alpha = 2.0 / (hi - lo);
                    let beta = -(hi + lo) / (hi - lo);
                    push(
                        node.name.clone(),
                        StageOp::Poly {
                            cheb: act.cheb.clone(),
                            alpha,
                            beta,
                            normalized: false,
                        },
                        ins,
                        node.out_dim,
                    )
                }
                Op::Add => push(node.name.clone(), StageOp::Add, ins, node.out_dim),
                Op::Concat => push(node.name.clone(), StageOp::Concat, ins, node.out_dim),
            };
            node_stage.push(id);
        }
        if stages.len() == n_inputs {
            return Err(Error::model("the adapter has no operations"));
        }
        if options.fold_normalization {
            stages = super::fuse::fuse(stages, n_inputs, slots, options.mode == Mode::Latency)?;
        }
        let mut plan = Plan {
            params: params.clone(),
            options,
            stages,
            input_dims: adapter.input_dims(),
            rotations: BTreeSet::new(),
            needs_relin: false,
            report: vec![],
            depth_lower_bound: super::fuse::depth_lower_bound(adapter),
        };
        plan.lay_out()?;
        super::fuse::apply_square_scales(
            &mut plan.stages,
            plan.params.q(),
            plan.params.default_scale(),
        );
        Ok(plan)
    }

    /// Computes segments, levels, rotations and the report; checks the depth.
    fn lay_out(&mut self) -> Result<()> {
        let slots = self.params.slots();
        let latency = self.options.mode == Mode::Latency;
        let mut report = Vec::new();
        let mut rotations = BTreeSet::new();
        let mut needs_relin = false;
        for idx in 0..self.stages.len() {
            let (ins, op, out_dim) = {
                let s = &self.stages[idx];
                (s.inputs.clone(), s.op.clone(), s.out_dim)
            };
            if let StageOp::Input = op {
                continue;
            }
            let in_level = ins.iter().map(|&i| self.stages[i].level).min().unwrap_or(0);
            let need = |levels: usize, what: &str| -> Result<usize> {
                in_level.checked_sub(levels).ok_or_else(|| Error::LevelExhausted {
                    op: format!("{what} '{}' (the adapter is deeper than the parameters allow: choose a larger preset or run `hepeft params select`)", self.stages[idx].name),
                    needed: levels,
                    available: in_level,
                })
            };
            let mut rot = 0;
            let mut relin = 0;
            let mut products = 0;
            let (level, segments, kind) = match &op {
                StageOp::Input => unreachable_input(),
                StageOp::Dense { weight, .. } => {
                    let in_segs: Vec<Segment> = ins
                        .iter()
                        .flat_map(|&i| self.stages[i].segments.clone())
                        .collect();
                    let out_segs = layout::split(out_dim, slots);
                    if latency {
                        let (steps, count) = dense_rotations(&out_segs, &in_segs);
                        rotations.extend(steps);
                        rot = count;
                        products = out_segs
                            .iter()
                            .map(|o| {
                                in_segs
                                    .iter()
                                    .map(|i| o.period.min(i.period))
                                    .sum::<usize>()
                            })
                            .sum();
                    } else {
                        products = weight.len();
                    }
                    (need(1, "linear layer")?, out_segs, "linear")
                }
                StageOp::Affine { .. } => {
                    products = if latency {
                        self.stages[ins[0]].segments.len()
                    } else {
                        out_dim
                    };
                    (
                        need(1, "affine map")?,
                        self.stages[ins[0]].segments.clone(),
                        "affine",
                    )
                }
                StageOp::Poly {
                    cheb, normalized, ..
                } => {
                    let d = cheb.len().saturating_sub(1).max(1);
                    let depth = chebyshev_depth(d) + usize::from(!normalized);
                    let per_ct = chebyshev_products(cheb.len().saturating_sub(1));
                    let cts = if latency {
                        self.stages[ins[0]].segments.len()
                    } else {
                        out_dim
                    };
                    relin = per_ct * cts;
                    needs_relin |= relin > 0;
                    products = cheb.len() * cts;
                    (
                        need(depth, "activation")?,
                        self.stages[ins[0]].segments.clone(),
                        "poly",
                    )
                }
                StageOp::Square { .. } => {
                    let cts = if latency {
                        self.stages[ins[0]].segments.len()
                    } else {
                        out_dim
                    };
                    relin = cts;
                    needs_relin = true;
                    (
                        need(1, "activation")?,
                        self.stages[ins[0]].segments.clone(),
                        "square",
                    )
                }
                StageOp::Add => {
                    let first = &self.stages[ins[0]].segments;
                    if latency && ins.iter().any(|&i| self.stages[i].segments != *first) {
                        return Err(Error::model(format!(
                            "residual add '{}': operands are packed differently (concatenations of different widths)",
                            self.stages[idx].name
                        )));
                    }
                    (in_level, first.clone(), "add")
                }
                StageOp::Concat => {
                    let mut segs = Vec::new();
                    let mut shift = 0;
                    for &i in &ins {
                        segs.extend(layout::shifted(&self.stages[i].segments, shift));
                        shift += self.stages[i].out_dim;
                    }
                    (in_level, segs, "concat")
                }
            };
            let st = &mut self.stages[idx];
            st.level = level;
            st.in_level = in_level;
            st.segments = segments;
            report.push(StageReport {
                name: st.name.clone(),
                kind: kind.to_string(),
                out_dim,
                level_in: in_level,
                level_out: level,
                rotations: rot,
                relinearizations: relin,
                plain_products: products,
            });
        }
        rotations.remove(&0);
        self.rotations = rotations;
        self.needs_relin = needs_relin;
        self.report = report;
        Ok(())
    }

    /// Parameters the plan was compiled for.
    pub fn params(&self) -> &CkksParams {
        &self.params
    }
    /// Options it was compiled with.
    pub fn options(&self) -> PlanOptions {
        self.options
    }
    /// Widths of the adapter inputs.
    pub fn input_dims(&self) -> &[usize] {
        &self.input_dims
    }
    /// Width of the output.
    pub fn output_dim(&self) -> usize {
        self.stages.last().map_or(0, |s| s.out_dim)
    }
    /// Latency layout of input `i`.
    pub fn input_segments(&self, i: usize) -> &[Segment] {
        &self.stages[i].segments
    }
    /// Latency layout of the output.
    pub fn output_segments(&self) -> &[Segment] {
        self.stages.last().map_or(&[], |s| &s.segments)
    }
    /// Level of the output ciphertexts.
    pub fn output_level(&self) -> usize {
        self.stages.last().map_or(0, |s| s.level)
    }
    /// Levels consumed by the adapter.
    pub fn depth(&self) -> usize {
        self.params.max_level() - self.output_level()
    }
    /// The fewest levels any plan of this adapter can consume (see
    /// [`depth_lower_bound`](super::depth_lower_bound)); [`Plan::depth`] reaches it when
    /// the rewriting passes could fold everything.
    pub fn depth_lower_bound(&self) -> usize {
        self.depth_lower_bound
    }
    /// Rotation steps the server performs (the client generates exactly these keys).
    pub fn rotation_steps(&self) -> Vec<i64> {
        self.rotations.iter().copied().collect()
    }
    /// Galois elements of [`Plan::rotation_steps`].
    pub fn galois_elements(&self) -> Vec<u64> {
        let mut g: Vec<u64> = self
            .rotations
            .iter()
            .map(|&s| galois_element_for_rotation(&self.params, s))
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }
    /// Whether a relinearization key is needed (any activation of degree >= 2).
    pub fn needs_relin(&self) -> bool {
        self.needs_relin
    }
    /// Per-stage figures.
    pub fn report(&self) -> &[StageReport] {
        &self.report
    }
    /// Total key switches (rotations and relinearizations) per query.
    pub fn key_switches(&self) -> usize {
        self.report
            .iter()
            .map(|r| r.rotations + r.relinearizations)
            .sum()
    }
    /// Number of ciphertexts a query carries (latency: segments of every input; batch: one per
    /// input feature).
    pub fn input_ciphertexts(&self) -> usize {
        match self.options.mode {
            Mode::Latency => (0..self.input_dims.len())
                .map(|i| self.stages[i].segments.len())
                .sum(),
            Mode::Batch => self.input_dims.iter().sum(),
        }
    }
    /// Number of ciphertexts a result carries.
    pub fn output_ciphertexts(&self) -> usize {
        match self.options.mode {
            Mode::Latency => self.output_segments().len(),
            Mode::Batch => self.output_dim(),
        }
    }
    /// A digest of the plan's structure (parameters, mode, stages, layouts, levels): client
    /// and server compare it to know they compiled the same plan.
    pub fn structure_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"hepeft/plan/v1");
        h.update(self.params.digest());
        h.update([
            u8::from(self.options.mode == Mode::Batch),
            u8::from(self.options.fold_normalization),
        ]);
        for s in &self.stages {
            h.update(s.name.as_bytes());
            h.update((s.out_dim as u64).to_le_bytes());
            h.update((s.level as u64).to_le_bytes());
            for seg in &s.segments {
                h.update((seg.offset as u64).to_le_bytes());
                h.update((seg.dim as u64).to_le_bytes());
                h.update((seg.period as u64).to_le_bytes());
            }
        }
        h.finalize().into()
    }
    /// Human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "plan ({:?}): depth {} (lower bound {}) of {}, {} rotation keys, relinearization {}, {} key switches per query, {} -> {} ciphertexts\n",
            self.options.mode,
            self.depth(),
            self.depth_lower_bound,
            self.params.max_level(),
            self.rotations.len(),
            if self.needs_relin { "yes" } else { "no" },
            self.key_switches(),
            self.input_ciphertexts(),
            self.output_ciphertexts()
        );
        for r in &self.report {
            s.push_str(&format!(
                "  {:<16} {:<7} dim {:>5}  level {:>2} -> {:>2}  rotations {:>3}  relin {:>3}  products {:>6}\n",
                r.name, r.kind, r.out_dim, r.level_in, r.level_out, r.rotations, r.relinearizations, r.plain_products
            ));
        }
        s
    }
}

fn unreachable_input() -> (usize, Vec<Segment>, &'static str) {
    (0, vec![], "input")
}
