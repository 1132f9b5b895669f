//! From an adapter to stages, layouts, levels and the keys a plan needs.
//!
//! Size: one concern (stages, level schedule and key list of one plan, all over the private `Stage` type); packing lives in `layout.rs`, the depth passes in `fuse.rs`, execution in `run_ckks.rs`.

use super::layout::{self, Segment};
use crate::ckks::keygen::galois_element_for_rotation;
use crate::ckks::lintrans::{baby_step_for, giant_steps, rotation_steps};
use crate::ckks::polyeval::{chebyshev_depth, chebyshev_products};
use crate::ckks::{CkksParams, Level};
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
    /// Parses `latency` or `batch` (also `throughput`, an old name of batch).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for any other name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "latency" => Ok(Mode::Latency),
            "batch" | "throughput" => Ok(Mode::Batch),
            _ => Err(Error::params(format!(
                "unknown mode {s:?} (latency or batch)"
            ))),
        }
    }

    /// The name written in key directories, metadata and descriptions: `latency` or
    /// `batch` (what [`Mode::parse`] reads back).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Latency => "latency",
            Mode::Batch => "batch",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Mode::parse(s)
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
    /// Client pre-rotated input copies, at most this many per input segment (a power of
    /// two; 1, the default, is the replicated layout): [`InputLayout::PreRotated`] with
    /// `max_copies = pre_rotate` in latency mode. The server's baby-step rotations go away
    /// and the query grows up to `pre_rotate`-fold. Batch mode ignores it.
    ///
    /// [`PRE_ROTATE_AUTO`] (0) lets [`Plan::compile`] choose: the layout of `1, 2, 4, ...,`
    /// [`AUTO_MAX_COPIES`] copies with the lowest [`Plan::estimated_cost`]. The compiled
    /// plan's options then hold the chosen number (what plan.json and the sidecar record).
    pub pre_rotate: usize,
    /// Batch mode: input features packed per query ciphertext (a power of two, at most
    /// [`MAX_BATCH_PACK`]; 1, the default, is one ciphertext per feature). With `g > 1` the
    /// slots split into `g` blocks of `N/(2g)` samples; feature `c g + b` of a sample sits in
    /// block `b` of ciphertext `c`, so a query carries `ceil(d / g)` ciphertexts per input of
    /// width `d` instead of `d`, and takes at most `N/(2g)` samples. The server unpacks each
    /// ciphertext with `g - 1` hoisted rotations by multiples of `N/(2g)` (no level) before
    /// the first stage. Latency mode ignores it.
    pub batch_pack: usize,
}

/// [`PlanOptions::pre_rotate`] value asking the compiler to choose the client pre-rotation
/// from its cost model ([`Plan::estimated_cost`]).
pub const PRE_ROTATE_AUTO: usize = 0;

/// Most pre-rotated copies per input segment the automatic choice ([`PRE_ROTATE_AUTO`])
/// considers: a query grows at most this many times (8 x 256 KiB for a 768-wide input at
/// N = 2^13). Larger values stay available by asking for them.
pub const AUTO_MAX_COPIES: usize = 8;

/// Most input features one batch-mode query ciphertext carries ([`PlanOptions::batch_pack`]):
/// each needs one rotation key and one hoisted rotation per ciphertext to unpack.
pub const MAX_BATCH_PACK: usize = 16;

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            mode: Mode::Latency,
            fold_normalization: true,
            pre_rotate: 1,
            batch_pack: 1,
        }
    }
}

impl PlanOptions {
    /// The client input layout these options name.
    pub fn input_layout(&self) -> InputLayout {
        if self.pre_rotate > 1 {
            InputLayout::PreRotated {
                max_copies: self.pre_rotate,
            }
        } else {
            InputLayout::Replicated
        }
    }
}

/// How the client lays out the adapter inputs in a latency-mode query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub enum InputLayout {
    /// Each input segment is one ciphertext, replicated over the slots; the server rotates
    /// it for the baby steps of the first layer (one hoisting, `g - 1` hoisted rotations).
    #[default]
    Replicated,
    /// "Free client preprocessing": for an input read by a dense layer, the client also
    /// encrypts the copies `rot(x, a)`, `0 < a < g`, of each segment, where `g` is the baby
    /// step of the reading layer's blocks, raised up to `max_copies` (a power of two) to
    /// trade giant-step rotations for query bytes. The server's baby-step rotations (and the
    /// hoisting) disappear; only giant steps and the rotate-and-sum of wide blocks remain.
    /// The query grows `g`-fold. Inputs read by no dense layer keep one copy.
    PreRotated {
        /// Most copies per segment (power of two; 1 is the replicated layout).
        max_copies: usize,
    },
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
    pub level: Level,
    /// Level the inputs are aligned to.
    pub in_level: Level,
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
    pub level_in: crate::ckks::Level,
    /// Level of the result.
    pub level_out: crate::ckks::Level,
    /// Rotations (each one key switch).
    pub rotations: usize,
    /// Relinearizations (each one key switch).
    pub relinearizations: usize,
    /// Plaintext or constant products.
    pub plain_products: usize,
    /// Key switches (rotations and relinearizations).
    pub key_switches: usize,
    /// Forward and inverse NTTs of one limb done by the key switches and rescalings (an
    /// estimate from the layout: ModUp, ModDown, rescale; hoisted rotations share one ModUp).
    pub ntts: usize,
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
    /// Client-side layout of the inputs.
    pub(crate) input_layout: InputLayout,
    /// Per adapter input: copies `rot(x, a)`, `a < copies`, the query carries per segment
    /// (1: the replicated layout).
    pub(crate) input_copies: Vec<usize>,
}

/// Checks [`PlanOptions::batch_pack`]: a power of two, at most [`MAX_BATCH_PACK`] and at
/// most half the slots (a block keeps at least two samples).
fn check_batch_pack(pack: usize, slots: usize) -> Result<()> {
    if pack == 0 || !pack.is_power_of_two() || pack > MAX_BATCH_PACK || pack > slots / 2 {
        return Err(Error::InvalidValue {
            context: "batch packing (features per query ciphertext)".into(),
            reason: format!(
                "batch_pack = {pack} must be a power of two from 1 to {} (1: one ciphertext per feature)",
                MAX_BATCH_PACK.min((slots / 2).max(1))
            ),
        });
    }
    Ok(())
}

/// Limb NTTs of one key switch at `level` (ModUp of the digits, ModDown of both parts).
fn keyswitch_ntts(params: &CkksParams, level: usize) -> usize {
    mod_up_ntts(params, level) + 2 * mod_down_ntts(params, level)
}

/// Limb NTTs of one ModUp (decomposition) at `level`.
fn mod_up_ntts(params: &CkksParams, level: usize) -> usize {
    let k = params.ring().p_tables().len();
    params
        .digits(level)
        .iter()
        .map(|r| level + 1 + k - r.len())
        .sum::<usize>()
        + level
        + 1
}

/// Limb NTTs of the ModDown of one polynomial at `level`.
fn mod_down_ntts(params: &CkksParams, level: usize) -> usize {
    params.ring().p_tables().len() + level + 1
}

/// Limb NTTs of one double-hoisted (or, with client copies, lazily divided) BSGS block at
/// `level` with `giants` giant-step rotations (see `ckks::lintrans`): the hoisting ModUp
/// (server-side baby steps only), per giant step a ModUp and, when the sums are extended,
/// the ModDown of one part. The two ModDowns at the end are shared by every block of an
/// output ([`dense_rotations`]).
fn bsgs_ntts(
    params: &CkksParams,
    level: usize,
    babies: usize,
    giants: usize,
    hoisted: bool,
) -> usize {
    if babies == 0 && giants == 0 {
        return 0;
    }
    let hoist = if hoisted && babies > 0 {
        mod_up_ntts(params, level)
    } else {
        0
    };
    let per_giant = mod_up_ntts(params, level)
        + if hoisted {
            mod_down_ntts(params, level)
        } else {
            0
        };
    hoist + giants * per_giant
}

/// Limb NTTs of one rescale of a 2-part ciphertext from `level`.
fn rescale_ntts(level: usize) -> usize {
    2 * (1 + level)
}

/// Rotation steps, rotation count and limb NTTs of a dense layer whose operands are at
/// `level`; `copies[j]` is the number of client-prepared rotations of input segment `j`
/// (1: none).
fn dense_rotations(
    params: &CkksParams,
    level: usize,
    out_segs: &[Segment],
    in_segs: &[Segment],
    copies: &[usize],
) -> (Vec<i64>, usize, usize) {
    let mut steps = Vec::new();
    let (mut count, mut ntts) = (0, 0);
    for o in out_segs {
        // whether the output's sum has key-switch products in Q_l·P (then one ModDown pair)
        let mut extended = false;
        for (i, &c) in in_segs.iter().zip(copies) {
            let k = o.period.min(i.period);
            let g = block_baby(o.period, i.period, c);
            let babies = if c > 1 { 0 } else { g.min(k).saturating_sub(1) };
            let giants = k.div_ceil(g).saturating_sub(1);
            let (s, n) = if c > 1 {
                block_rotations_prerotated(o.period, i.period, c)
            } else {
                block_rotations(o.period, i.period)
            };
            count += n;
            steps.extend(s);
            // rotate-and-sum in Q_l·P: per step the ModDown of one part and a ModUp
            let folds = row_sum_steps(o.period, i.period).len();
            ntts += bsgs_ntts(params, level, babies, giants, c == 1)
                + folds * (mod_up_ntts(params, level) + mod_down_ntts(params, level));
            // (server-side baby steps always leave the block's sum in Q_l·P)
            extended |= c == 1 || giants > 0 || folds > 0;
        }
        if extended {
            ntts += 2 * mod_down_ntts(params, level);
        }
        ntts += rescale_ntts(level);
    }
    (steps, count, ntts)
}

/// The rotate-and-sum steps of an `m' x n'` block (`m' < n'`: the `n'/m'` partial sums are
/// folded together).
pub(crate) fn row_sum_steps(m: usize, n: usize) -> Vec<i64> {
    let mut steps = Vec::new();
    let mut w = m;
    while w < n {
        steps.push(w as i64);
        w *= 2;
    }
    steps
}

/// Baby step of an `m' x n'` block whose input comes with `copies` client-prepared
/// rotations (`copies > 1`), or the server-side one ([`baby_step_for`]).
pub(crate) fn block_baby(m: usize, n: usize, copies: usize) -> usize {
    let k = m.min(n);
    if copies > 1 {
        copies.min(k.next_power_of_two()).max(1)
    } else {
        baby_step_for(k)
    }
}

/// Like [`block_rotations`] when the client sent the baby steps: giant steps and the
/// rotate-and-sum only.
fn block_rotations_prerotated(m: usize, n: usize, copies: usize) -> (Vec<i64>, usize) {
    let k = m.min(n);
    let g = block_baby(m, n, copies);
    let mut steps = giant_steps(k, g);
    let mut w = m;
    while w < n {
        steps.push(w as i64);
        w *= 2;
    }
    let count = steps.len();
    steps.sort_unstable();
    steps.dedup();
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
    ///
    /// With `options.pre_rotate = `[`PRE_ROTATE_AUTO`] in latency mode, compiles the layouts
    /// of `1, 2, 4, ...,` [`AUTO_MAX_COPIES`] client copies and keeps the one with the lowest
    /// [`Plan::estimated_cost`] (the fewest copies among equals); batch mode takes 1.
    pub fn compile(adapter: &Adapter, params: &CkksParams, options: PlanOptions) -> Result<Self> {
        if options.pre_rotate != PRE_ROTATE_AUTO {
            return Self::compile_with_layout(adapter, params, options, options.input_layout());
        }
        let mut best =
            Self::compile_with_layout(adapter, params, options, InputLayout::Replicated)?;
        if options.mode != Mode::Latency {
            return Ok(best);
        }
        let mut best_cost = best.estimated_cost();
        let mut copies = 2;
        while copies <= AUTO_MAX_COPIES {
            let layout = InputLayout::PreRotated { max_copies: copies };
            let plan = Self::compile_with_layout(adapter, params, options, layout)?;
            let cost = plan.estimated_cost();
            if cost < best_cost {
                (best, best_cost) = (plan, cost);
            }
            copies *= 2;
        }
        // record the copies the plan actually uses (a cap of 2 raised to the baby step 8
        // compiles to the plan of cap 8): the same plan, a readable plan.json
        let used = (0..best.input_copies.len())
            .map(|i| best.input_copies(i))
            .max()
            .unwrap_or(1);
        if used > 1 && used != best.options.pre_rotate {
            let layout = InputLayout::PreRotated { max_copies: used };
            let same = Self::compile_with_layout(adapter, params, options, layout)?;
            if same.input_copies == best.input_copies {
                best = same;
            }
        }
        Ok(best)
    }

    /// The cost model behind [`PRE_ROTATE_AUTO`], in units of one limb NTT of this ring:
    /// `ntts + w_ks·key_switches + w_ct·query_ciphertexts`. A key switch costs, besides its
    /// NTTs, the read of its key and `2·dnum·(l+1+K)` limb products; every query ciphertext
    /// (a pre-rotated copy) is read by one plaintext product per diagonal and held in memory.
    /// The weights are fitted to quiet single-thread runs of heads (a), (b) and the LoRA maps
    /// (docs/BENCHMARKS.md): with AVX-512 IFMA a key switch weighs about 28 limb NTTs and a
    /// query ciphertext 12; on the AVX2 path, where the NTT is about 5 times slower, 12 and 3.
    pub fn estimated_cost(&self) -> f64 {
        let (w_ks, w_ct) = if self.params.ring().uses_ifma() {
            (28.0, 12.0)
        } else {
            (12.0, 3.0)
        };
        self.ntts() as f64
            + w_ks * self.key_switches() as f64
            + w_ct * self.input_ciphertexts() as f64
    }

    /// [`Plan::compile`] with a client-side input layout (latency mode; batch mode ignores
    /// it). Like the rest of the plan, the number of copies follows from shapes only, so the
    /// client encrypts exactly what the server expects.
    ///
    /// Errors: as [`Plan::compile`], and `max_copies` that is 0 or not a power of two.
    pub fn compile_with_layout(
        adapter: &Adapter,
        params: &CkksParams,
        mut options: PlanOptions,
        input_layout: InputLayout,
    ) -> Result<Self> {
        // the layout given here wins over `options.pre_rotate`
        options.pre_rotate = match input_layout {
            InputLayout::Replicated => 1,
            InputLayout::PreRotated { max_copies } => max_copies,
        };
        if let InputLayout::PreRotated { max_copies } = input_layout {
            if !max_copies.is_power_of_two() {
                return Err(Error::InvalidValue {
                    context: "pre-rotated input layout".into(),
                    reason: format!(
                        "max_copies = {max_copies} must be a power of two (1, 2, 4, 8, ...)"
                    ),
                });
            }
        }
        let slots = params.slots();
        if options.mode == Mode::Batch {
            check_batch_pack(options.batch_pack, slots)?;
        } else {
            options.batch_pack = 1;
        }
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
                    level: Level::ZERO,
                    in_level: Level::ZERO,
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
            input_layout,
            input_copies: vec![1; n_inputs],
        };
        plan.choose_input_copies();
        plan.lay_out()?;
        super::fuse::apply_square_scales(
            &mut plan.stages,
            plan.params.q(),
            plan.params.default_scale(),
        );
        Ok(plan)
    }

    /// Copies per input for [`InputLayout::PreRotated`]: the largest baby step of the dense
    /// blocks reading the input (at least `baby_step_for`, raised up to `max_copies`), or 1.
    fn choose_input_copies(&mut self) {
        let InputLayout::PreRotated { max_copies } = self.input_layout else {
            return;
        };
        if self.options.mode != Mode::Latency || max_copies <= 1 {
            return;
        }
        let slots = self.params.slots();
        for k in 0..self.input_copies.len() {
            let mut g = 1;
            for st in &self.stages {
                if let StageOp::Dense { .. } = st.op {
                    if !st.inputs.contains(&k) {
                        continue;
                    }
                    for o in layout::split(st.out_dim, slots) {
                        for i in &self.stages[k].segments {
                            let kk = o.period.min(i.period);
                            let want =
                                baby_step_for(kk).max(max_copies.min(kk.next_power_of_two()));
                            g = g.max(want);
                        }
                    }
                }
            }
            self.input_copies[k] = g;
        }
    }

    /// Computes segments, levels, rotations and the report; checks the depth.
    fn lay_out(&mut self) -> Result<()> {
        let slots = self.params.slots();
        let latency = self.options.mode == Mode::Latency;
        let mut report = Vec::new();
        let mut rotations = BTreeSet::new();
        let mut needs_relin = false;
        if !latency && self.options.batch_pack > 1 {
            let (g, stride) = (self.options.batch_pack, self.batch_stride());
            let top = self.params.max_level();
            for (k, &d) in self.input_dims.iter().enumerate() {
                let rot: usize = (0..d.div_ceil(g)).map(|c| (d - c * g).min(g) - 1).sum();
                rotations.extend((1..g.min(d)).map(|b| (b * stride) as i64));
                // per ciphertext one hoisting ModUp, per rotation the ModDown of both parts
                let hoists = (0..d.div_ceil(g)).filter(|&c| d - c * g > 1).count();
                report.push(StageReport {
                    name: format!("{}.unpack", self.stages[k].name),
                    kind: "unpack".into(),
                    out_dim: d,
                    level_in: top,
                    level_out: top,
                    rotations: rot,
                    relinearizations: 0,
                    plain_products: 0,
                    key_switches: rot,
                    ntts: hoists * mod_up_ntts(&self.params, top.get())
                        + rot * 2 * mod_down_ntts(&self.params, top.get()),
                });
            }
        }
        for idx in 0..self.stages.len() {
            let (ins, op, out_dim) = {
                let s = &self.stages[idx];
                (s.inputs.clone(), s.op.clone(), s.out_dim)
            };
            if let StageOp::Input = op {
                continue;
            }
            let in_level = ins
                .iter()
                .map(|&i| self.stages[i].level)
                .min()
                .unwrap_or(Level::ZERO);
            let need = |levels: usize, what: &str| -> Result<Level> {
                in_level.checked_sub(levels).ok_or_else(|| Error::LevelExhausted {
                    op: format!("{what} '{}' (the adapter is deeper than the parameters allow: choose a larger preset or run `hepeft params select`)", self.stages[idx].name),
                    needed: levels,
                    available: in_level.get(),
                })
            };
            let mut rot = 0;
            let mut relin = 0;
            let mut products = 0;
            let mut ntts = 0;
            let (level, segments, kind) = match &op {
                StageOp::Input => unreachable_input(),
                StageOp::Dense { weight, .. } => {
                    let in_segs: Vec<Segment> = ins
                        .iter()
                        .flat_map(|&i| self.stages[i].segments.clone())
                        .collect();
                    let out_segs = layout::split(out_dim, slots);
                    let copies: Vec<usize> = ins
                        .iter()
                        .flat_map(|&i| {
                            let c = self.input_copies.get(i).copied().unwrap_or(1);
                            vec![c; self.stages[i].segments.len()]
                        })
                        .collect();
                    if latency {
                        let (steps, count, dense_ntts) = dense_rotations(
                            &self.params,
                            in_level.get(),
                            &out_segs,
                            &in_segs,
                            &copies,
                        );
                        rotations.extend(steps);
                        rot = count;
                        ntts = dense_ntts;
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
                    ntts = relin * keyswitch_ntts(&self.params, in_level.get())
                        + (relin + cts) * rescale_ntts(in_level.get());
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
                    ntts = cts
                        * (keyswitch_ntts(&self.params, in_level.get())
                            + rescale_ntts(in_level.get()));
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
                key_switches: rot + relin,
                ntts,
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
    pub fn output_level(&self) -> Level {
        self.stages.last().map_or(Level::ZERO, |s| s.level)
    }
    /// Levels consumed by the adapter.
    pub fn depth(&self) -> usize {
        self.params.max_level().levels_above(self.output_level())
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
    pub fn galois_elements(&self) -> Vec<crate::ckks::GaloisElement> {
        let mut g: Vec<crate::ckks::GaloisElement> = self
            .rotations
            .iter()
            .map(|&s| crate::ckks::GaloisElement(galois_element_for_rotation(&self.params, s)))
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
    /// Input features per batch-mode query ciphertext ([`PlanOptions::batch_pack`]; 1 in
    /// latency mode).
    pub fn batch_pack(&self) -> usize {
        match self.options.mode {
            Mode::Latency => 1,
            Mode::Batch => self.options.batch_pack.max(1),
        }
    }
    /// Slots between the blocks of a packed batch query: the most samples one batch query
    /// takes (`N/2` unpacked; `N/(2g)` with `g` features per ciphertext).
    pub fn batch_stride(&self) -> usize {
        self.params.slots() / self.batch_pack()
    }
    /// Samples one query takes: 1 in latency mode, [`Plan::batch_stride`] in batch mode.
    pub fn samples_per_query(&self) -> usize {
        match self.options.mode {
            Mode::Latency => 1,
            Mode::Batch => self.batch_stride(),
        }
    }
    /// Client-side input layout the plan was compiled with.
    pub fn input_layout(&self) -> InputLayout {
        self.input_layout
    }
    /// Copies `rot(x, a)`, `a < copies`, per segment of input `i` in a query (1 unless
    /// [`InputLayout::PreRotated`]).
    pub fn input_copies(&self, i: usize) -> usize {
        self.input_copies.get(i).copied().unwrap_or(1)
    }
    /// Total limb NTTs per query (see [`StageReport::ntts`]).
    pub fn ntts(&self) -> usize {
        self.report.iter().map(|r| r.ntts).sum()
    }
    /// Number of ciphertexts a query carries (latency: segments of every input, times the
    /// pre-rotated copies; batch: one per input feature, or per [`Plan::batch_pack`]
    /// features when packed).
    pub fn input_ciphertexts(&self) -> usize {
        match self.options.mode {
            Mode::Latency => (0..self.input_dims.len())
                .map(|i| self.stages[i].segments.len() * self.input_copies(i))
                .sum(),
            Mode::Batch => self
                .input_dims
                .iter()
                .map(|d| d.div_ceil(self.batch_pack()))
                .sum(),
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
        if self.input_copies.iter().any(|&c| c > 1) {
            // the replicated layout keeps the digest it always had
            h.update(b"input-copies");
            for &c in &self.input_copies {
                h.update((c as u64).to_le_bytes());
            }
        }
        if self.batch_pack() > 1 {
            // unpacked batch plans keep the digest they always had
            h.update(b"batch-pack");
            h.update((self.batch_pack() as u64).to_le_bytes());
        }
        for s in &self.stages {
            h.update(s.name.as_bytes());
            h.update((s.out_dim as u64).to_le_bytes());
            h.update((s.level.get() as u64).to_le_bytes());
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
            "plan ({:?}): depth {} (lower bound {}) of {}, {} rotation keys, relinearization {}, {} key switches and {} limb NTTs per query, {} -> {} ciphertexts{}\n",
            self.options.mode,
            self.depth(),
            self.depth_lower_bound,
            self.params.max_level(),
            self.rotations.len(),
            if self.needs_relin { "yes" } else { "no" },
            self.key_switches(),
            self.ntts(),
            self.input_ciphertexts(),
            self.output_ciphertexts(),
            if self.input_copies.iter().any(|&c| c > 1) {
                format!(" (client pre-rotated inputs: {:?} copies)", self.input_copies)
            } else if self.batch_pack() > 1 {
                format!(
                    " (packed batch: {} features per query ciphertext, at most {} samples per query)",
                    self.batch_pack(),
                    self.batch_stride()
                )
            } else {
                String::new()
            }
        );
        for r in &self.report {
            s.push_str(&format!(
                "  {:<16} {:<7} dim {:>5}  level {:>2} -> {:>2}  rotations {:>3}  relin {:>3}  key switches {:>3}  NTTs {:>5}  products {:>6}\n",
                r.name, r.kind, r.out_dim, r.level_in, r.level_out, r.rotations, r.relinearizations, r.key_switches, r.ntts, r.plain_products
            ));
        }
        s
    }
}

fn unreachable_input() -> (Level, Vec<Segment>, &'static str) {
    (Level::ZERO, vec![], "input")
}
