//! Encrypted evaluation of token-level adapters ([`TokenAdapter`]) for one sample (latency).
//!
//! # Layouts
//! Two layouts for a `T x w` token matrix ([`Layout`]), with `T'` = the next power of two
//! above `T` (padding tokens are zero on input):
//! - [`Layout::Packed`]: `c = N / (2 T')` columns per ciphertext, column `a c + b` in block
//!   `b` (slots `b T' .. b T' + T'`) of ciphertext `a`. The inputs are uploaded this way
//!   (`ceil(d / c)` ciphertexts per tapped layer: 2 for `d = 384`, `T = 64` at N = 2^15),
//!   and every value added to them (the residual stream of the OWC recurrence) stays packed.
//! - [`Layout::Cols`]: one ciphertext per column, the `T'` token slots repeated over all
//!   slots (period `T'`). The narrow values inside an adapter (width `r`) use it.
//!
//! The plan picks the layout per value: inputs packed, linear maps produce columns unless
//! their output is added to a packed value, other ops keep their operand's layout.
//!
//! # Operations
//! - **token-wise linear maps** (linear, LoRA densified, one level): columns -> columns by
//!   constant products (no rotation); columns -> packed by one plaintext product per input
//!   column and output ciphertext (weights laid out per block, no rotation); packed ->
//!   columns by one plaintext product per input ciphertext and output column, then a
//!   rotate-and-sum over the blocks (`log2 c` rotations). Packed -> packed is not
//!   supported yet (refused at compile time). Constants are encoded at the scale that lands
//!   on exactly the default scale after the rescale.
//! - **affine / scale** (one level): constant or plaintext products.
//! - **polynomial activations**: per ciphertext, the interval map (one level, unless folded
//!   by [`fuse_tokens`]) and the Chebyshev evaluation (`ceil(log2(deg + 1))` levels).
//! - **the `T x T` token mixing**: a plaintext matrix on the slot axis, applied by the
//!   diagonal method with baby-step giant-step ([`LinearTransform`]); the period `T'` makes
//!   the rotations cyclic over the tokens. One level, `~2 sqrt(T')` rotations per column.
//! - **linear attention**, evaluated by associativity: with `U = M^T V` (the mixing on the
//!   token axis), `S' V = (Q K^T) M^T V + 1 (m^T V) = Q (K^T U) + 1 (m^T V)`, so per head
//!   the `dh x dh` matrix `G = K^T U` is computed with ciphertext-ciphertext products
//!   `K_c * U_e` and a rotate-and-sum over the tokens (`log2 T'` rotations), then
//!   `out_e = sum_c Q_c * G_ce` (ciphertext-ciphertext products, one relinearization per
//!   output column). The `T x T` scores are never materialised. Levels: qkv 1, mixing 1,
//!   `K^T U` 1, `Q G` 1, proj 1. Cost per head: `dh^2` products and `dh^2 log2 T'`
//!   rotations (the dominant term at `r = 64`).
//! - **pooling**: a plaintext mask (`1/T` on real tokens for mean, the first token for CLS,
//!   zero on padding) and a rotate-and-sum over the tokens: one level, `log2 T'` rotations.
//!   In columns the pooled row is replicated; packed, it is valid in the first slot of
//!   each block.
//! - **residuals**: additions after dropping to the lower level.
//!
//! Padding tokens (`T < T'`) carry garbage after biases, but never reach a real token: the
//! mixing matrix, the mixing bias and the pooling mask are zero there.
//!
//! The level schedule depends on the structure only ([`TokenPlan::depth_of`]); the plan
//! lists the rotations and whether a relinearization key is needed, so keygen follows it.

use std::collections::BTreeSet;

use ndarray::{Array1, Array2, Axis, Slice};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;

use crate::ckks::lintrans::baby_step_for;
use crate::ckks::polyeval::{chebyshev_depth, evaluate_chebyshev};
use crate::ckks::CkksParams;
use crate::ckks::{
    galois_element_for_rotation, Ciphertext, Decryptor, Encoder, Encryptor, Evaluator,
    LinearTransform,
};
use crate::model::layer::NodeRef;
use crate::model::token::{LinearAttention, Pooling, TokenAdapter, TokenOp};
use crate::{Error, Result};

pub mod fuse;
pub use fuse::fuse_tokens;

/// Levels consumed by a linear attention node (qkv, mixing, `K^T U`, `Q G`, proj).
pub const ATTENTION_LEVELS: usize = 5;

/// A level schedule and key list for evaluating a [`TokenAdapter`] on one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenPlan {
    tokens: usize,
    period: usize,
    slots: usize,
    input_level: usize,
    /// Output level of every node.
    levels: Vec<usize>,
    depth: usize,
    steps: Vec<i64>,
    relin: bool,
    output_shape: (usize, usize),
    scale: f64,
    /// Layout of every input, then of every node.
    input_layouts: Vec<Layout>,
    layouts: Vec<Layout>,
    /// Valid rows of every node value (`T`, or 1 after pooling).
    rows: Vec<usize>,
}

/// How a `T x w` value sits in ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One ciphertext per column, the `T'` token slots repeated over all slots.
    Cols,
    /// `c = N / (2 T')` columns per ciphertext, column `a c + b` in block `b` (slots
    /// `b T' .. (b + 1) T'`) of ciphertext `a`. After pooling only slot `b T'` is valid.
    Packed,
}

/// Forward layouts under `required` (node outputs that must be packed): inputs are packed,
/// linear maps and attention produce columns unless required, other ops keep their first
/// operand's layout.
fn forward_layouts(adapter: &TokenAdapter, required: &[bool]) -> Vec<Layout> {
    let mut out: Vec<Layout> = Vec::with_capacity(adapter.nodes().len());
    for (j, n) in adapter.nodes().iter().enumerate() {
        let l = match n.op {
            TokenOp::Linear { .. } | TokenOp::LowRank { .. } | TokenOp::LinearAttention(_) => {
                if required[j] {
                    Layout::Packed
                } else {
                    Layout::Cols
                }
            }
            _ => match n.inputs.first() {
                Some(NodeRef::Node(k)) => out[*k],
                _ => Layout::Packed,
            },
        };
        out.push(l);
    }
    out
}

/// Requires `r` to be packed: marks the linear map that produces it (through layout-keeping
/// ops). Returns whether something changed.
fn require_packed(adapter: &TokenAdapter, required: &mut [bool], r: NodeRef) -> bool {
    let NodeRef::Node(k) = r else { return false };
    let Some(n) = adapter.nodes().get(k) else {
        return false;
    };
    match n.op {
        TokenOp::Linear { .. } | TokenOp::LowRank { .. } | TokenOp::LinearAttention(_) => {
            if required[k] {
                false
            } else {
                required[k] = true;
                true
            }
        }
        _ => {
            let mut changed = false;
            for &i in &n.inputs {
                changed |= require_packed(adapter, required, i);
            }
            changed
        }
    }
}

fn op_levels(op: &TokenOp) -> usize {
    match op {
        TokenOp::Linear { .. }
        | TokenOp::LowRank { .. }
        | TokenOp::Affine { .. }
        | TokenOp::Scale(_)
        | TokenOp::Pool(_) => 1,
        TokenOp::Add => 0,
        TokenOp::Poly(act) => {
            usize::from(!unit_interval(act.interval())) + chebyshev_depth(act.degree())
        }
        TokenOp::LinearAttention(_) => ATTENTION_LEVELS,
    }
}

fn unit_interval((lo, hi): (f64, f64)) -> bool {
    lo == -1.0 && hi == 1.0
}

/// Whether the first operand of `n` is packed.
fn ins_packed(n: &crate::model::token::TokenNode, layouts: &[Layout]) -> bool {
    match n.inputs.first() {
        Some(NodeRef::Node(k)) => layouts.get(*k) == Some(&Layout::Packed),
        Some(NodeRef::Input(_)) => true,
        None => false,
    }
}

/// Rotate-and-sum steps over the blocks of a packed ciphertext: T', 2T', .., N/4.
fn block_steps(period: usize, slots: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut k = period;
    while k < slots {
        v.push(k as i64);
        k *= 2;
    }
    v
}

/// `log2 T'` rotate-and-sum steps: 1, 2, 4, .., T'/2.
fn sum_steps(period: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut k = 1;
    while k < period {
        v.push(k as i64);
        k *= 2;
    }
    v
}

impl TokenPlan {
    /// Levels the adapter consumes (the longest path from an input to the output), with
    /// every input at the same level.
    pub fn depth_of(adapter: &TokenAdapter) -> usize {
        let mut used = vec![0usize; adapter.nodes().len()];
        for (j, n) in adapter.nodes().iter().enumerate() {
            let before = n
                .inputs
                .iter()
                .map(|r| match r {
                    NodeRef::Input(_) => 0,
                    NodeRef::Node(k) => used[*k],
                })
                .max()
                .unwrap_or(0);
            used[j] = before + op_levels(&n.op);
        }
        used.last().copied().unwrap_or(0)
    }

    /// Schedules `adapter` under `params`: inputs are encrypted at the top level.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when `T'` (the next power of two above `T`) exceeds the slots, or
    /// the depth exceeds the chain (naming both and what to do).
    pub fn compile(adapter: &TokenAdapter, params: &CkksParams) -> Result<Self> {
        let tokens = adapter.tokens();
        let period = tokens.next_power_of_two();
        let slots = params.slots();
        if period > slots {
            return Err(Error::params(format!(
                "{tokens} tokens pad to {period} slots, more than the {slots} of N = 2^{}: choose N >= {}",
                params.log_n(),
                2 * period
            )));
        }
        let depth = Self::depth_of(adapter);
        let top = params.max_level();
        if depth > top {
            return Err(Error::params(format!(
                "the token adapter needs {depth} levels, the parameters have {top}: use a longer chain \
                 (hepeft::select::token::select_token) or fewer tapped layers"
            )));
        }
        // layouts: the inputs (and everything added to them) packed, the rest in columns
        let mut required = vec![false; adapter.nodes().len()];
        let layouts = loop {
            let layouts = forward_layouts(adapter, &required);
            let layout_of = |r: &NodeRef| match r {
                NodeRef::Input(_) => Layout::Packed,
                NodeRef::Node(k) => layouts[*k],
            };
            let mut changed = false;
            for n in adapter.nodes() {
                if matches!(n.op, TokenOp::Add)
                    && n.inputs.iter().any(|r| layout_of(r) == Layout::Packed)
                {
                    for r in &n.inputs {
                        if layout_of(r) == Layout::Cols {
                            changed |= require_packed(adapter, &mut required, *r);
                        }
                    }
                }
            }
            if !changed {
                break layouts;
            }
        };
        let layout_of = |r: &NodeRef| match r {
            NodeRef::Input(_) => Layout::Packed,
            NodeRef::Node(k) => layouts[*k],
        };
        for n in adapter.nodes() {
            let ins: Vec<Layout> = n.inputs.iter().map(layout_of).collect();
            if matches!(n.op, TokenOp::Add) && ins.iter().any(|&l| l != ins[0]) {
                return Err(Error::model(format!(
                    "node {}: its operands cannot share one ciphertext layout (a residual over a value \
                     that is not a linear map, a residual or an element-wise op of the inputs)",
                    n.name
                )));
            }
        }
        for (j, n) in adapter.nodes().iter().enumerate() {
            let linear = matches!(
                n.op,
                TokenOp::Linear { .. } | TokenOp::LowRank { .. } | TokenOp::LinearAttention(_)
            );
            if linear && ins_packed(n, &layouts) && layouts[j] == Layout::Packed {
                return Err(Error::model(format!(
                    "node {}: a linear map from packed to packed token matrices is not supported yet \
                     (the plan packs the inputs and every residual over them)",
                    n.name
                )));
            }
        }
        let mut rows: Vec<usize> = Vec::with_capacity(adapter.nodes().len());
        for n in adapter.nodes() {
            rows.push(n.shape.0);
        }
        let mut levels = Vec::with_capacity(adapter.nodes().len());
        let mut steps = BTreeSet::new();
        let mut relin = false;
        for (j, n) in adapter.nodes().iter().enumerate() {
            let from_packed = ins_packed(n, &layouts);
            let linear = matches!(
                n.op,
                TokenOp::Linear { .. } | TokenOp::LowRank { .. } | TokenOp::LinearAttention(_)
            );
            if linear && from_packed && layouts[j] == Layout::Cols {
                steps.extend(block_steps(period, slots));
            }
            let before = n
                .inputs
                .iter()
                .map(|r| match r {
                    NodeRef::Input(_) => top,
                    NodeRef::Node(k) => levels[*k],
                })
                .min()
                .unwrap_or(top);
            levels.push(before - op_levels(&n.op));
            match &n.op {
                TokenOp::LinearAttention(_) => {
                    relin = true;
                    let g = baby_step_for(period);
                    steps.extend(crate::ckks::lintrans::rotation_steps(period, g));
                    steps.extend(sum_steps(period));
                }
                TokenOp::Pool(_) => steps.extend(sum_steps(period)),
                TokenOp::Poly(act) if act.degree() >= 2 => relin = true,
                _ => {}
            }
        }
        steps.remove(&0);
        Ok(TokenPlan {
            tokens,
            period,
            slots,
            input_level: top,
            levels,
            depth,
            steps: steps.into_iter().collect(),
            relin,
            output_shape: adapter.output_shape(),
            scale: params.default_scale(),
            input_layouts: vec![Layout::Packed; adapter.inputs().len()],
            layouts,
            rows,
        })
    }

    /// Levels consumed.
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// `T'`: the slot period (tokens padded to a power of two).
    pub fn period(&self) -> usize {
        self.period
    }
    /// Level the client encrypts the inputs at.
    pub fn input_level(&self) -> usize {
        self.input_level
    }
    /// Level of the output columns.
    pub fn output_level(&self) -> usize {
        self.levels.last().copied().unwrap_or(self.input_level)
    }
    /// Rotation steps the server uses (one Galois key each).
    pub fn rotation_steps(&self) -> &[i64] {
        &self.steps
    }
    /// The Galois elements of [`TokenPlan::rotation_steps`].
    pub fn galois_elements(&self, params: &CkksParams) -> Vec<u64> {
        self.steps
            .iter()
            .map(|&s| galois_element_for_rotation(params, s))
            .collect()
    }
    /// Whether a relinearization key is needed (attention, or activations of degree >= 2).
    pub fn needs_relin(&self) -> bool {
        self.relin
    }

    /// Columns per packed ciphertext, `c = N / (2 T')`.
    pub fn columns_per_ciphertext(&self) -> usize {
        self.slots / self.period
    }
    /// Layout of each node's value.
    pub fn layouts(&self) -> &[Layout] {
        &self.layouts
    }
    /// Ciphertexts holding a value of `width` columns in `layout`.
    pub fn ciphertexts_for(&self, layout: Layout, width: usize) -> usize {
        match layout {
            Layout::Cols => width,
            Layout::Packed => width.div_ceil(self.columns_per_ciphertext()),
        }
    }
    /// Ciphertexts the client uploads per sample (all inputs, packed).
    pub fn query_ciphertexts(&self, adapter: &TokenAdapter) -> usize {
        adapter
            .inputs()
            .iter()
            .map(|i| self.ciphertexts_for(Layout::Packed, i.dim))
            .sum()
    }
    /// Ciphertexts returned per sample.
    pub fn result_ciphertexts(&self) -> usize {
        let l = self.layouts.last().copied().unwrap_or(Layout::Cols);
        self.ciphertexts_for(l, self.output_shape.1)
    }

    /// The slot vector of packed ciphertext `a` of a `width`-column value: slot `b T' + t`
    /// holds `f(t, a c + b)` for `t < rows` and a valid column, else 0.
    fn packed_slots(
        &self,
        a: usize,
        width: usize,
        rows: usize,
        f: impl Fn(usize, usize) -> f64,
    ) -> Vec<f64> {
        let c = self.columns_per_ciphertext();
        (0..self.slots)
            .map(|i| {
                let (b, t) = (i / self.period, i % self.period);
                let col = a * c + b;
                if t < rows.min(self.tokens) && col < width {
                    f(t, col)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The slot vector of one column of `T` tokens: zero-padded to `T'`, repeated.
    fn column_slots(&self, column: impl Fn(usize) -> f64) -> Vec<f64> {
        (0..self.slots)
            .map(|i| {
                let t = i % self.period;
                if t < self.tokens {
                    column(t)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Encrypts one sample: `inputs[i]` is `T x dim_i`; returns the packed ciphertexts of
    /// every input (`ceil(dim_i / c)` each, [`Layout::Packed`]), at
    /// [`TokenPlan::input_level`] and the default scale. Cost: one encoding and encryption
    /// per ciphertext.
    ///
    /// # Errors
    /// Wrong input shapes.
    pub fn encrypt_inputs<G: RngCore + CryptoRng>(
        &self,
        adapter: &TokenAdapter,
        encoder: &Encoder,
        encryptor: &Encryptor,
        inputs: &[Array2<f64>],
        rng: &mut G,
    ) -> Result<Vec<Vec<Ciphertext>>> {
        if inputs.len() != adapter.inputs().len() {
            return Err(Error::dims(
                "token adapter inputs",
                adapter.inputs().len(),
                inputs.len(),
            ));
        }
        let scale = self.scale;
        let mut out = Vec::with_capacity(inputs.len());
        for (spec, x) in adapter.inputs().iter().zip(inputs) {
            if x.dim() != (self.tokens, spec.dim) {
                return Err(Error::model(format!(
                    "input {}: expected {}x{} token features, got {}x{}",
                    spec.name,
                    self.tokens,
                    spec.dim,
                    x.nrows(),
                    x.ncols()
                )));
            }
            let n = self.ciphertexts_for(Layout::Packed, spec.dim);
            let mut cts = Vec::with_capacity(n);
            for a in 0..n {
                let v = self.packed_slots(a, spec.dim, self.tokens, |t, j| x[[t, j]]);
                let pt = encoder.encode(&v, self.input_level, scale)?;
                cts.push(encryptor.encrypt(&pt, rng)?);
            }
            out.push(cts);
        }
        Ok(out)
    }

    /// Decrypts the output columns into the output matrix (`rows x width`: `1 x classes`
    /// after pooling).
    ///
    /// # Errors
    /// A wrong number of columns; decryption errors.
    pub fn decrypt_output(
        &self,
        encoder: &Encoder,
        decryptor: &Decryptor,
        cols: &[Ciphertext],
    ) -> Result<Array2<f64>> {
        let (rows, w) = self.output_shape;
        let layout = self.layouts.last().copied().unwrap_or(Layout::Cols);
        let n = self.ciphertexts_for(layout, w);
        if cols.len() != n {
            return Err(Error::dims(
                "token adapter output ciphertexts",
                n,
                cols.len(),
            ));
        }
        let c = self.columns_per_ciphertext();
        let mut out = Array2::zeros((rows, w));
        for (a, ct) in cols.iter().enumerate() {
            let v = encoder.decode(&decryptor.decrypt(ct)?)?;
            for t in 0..rows {
                match layout {
                    Layout::Cols => out[[t, a]] = v.get(t).copied().unwrap_or(0.0),
                    Layout::Packed => {
                        for b in 0..c {
                            let j = a * c + b;
                            if j < w {
                                out[[t, j]] = v.get(b * self.period + t).copied().unwrap_or(0.0);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

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
        if inputs.len() != adapter.inputs().len() {
            return Err(Error::dims(
                "token adapter inputs",
                adapter.inputs().len(),
                inputs.len(),
            ));
        }
        for (spec, cts) in adapter.inputs().iter().zip(inputs) {
            let n = self.ciphertexts_for(Layout::Packed, spec.dim);
            if cts.len() != n {
                return Err(Error::dims(
                    format!("packed ciphertexts of input {}", spec.name),
                    n,
                    cts.len(),
                ));
            }
        }
        let run = Run {
            plan: self,
            ev,
            encoder,
            delta: ev.params().default_scale(),
        };
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
                Some(NodeRef::Node(k)) => (self.layouts[*k], self.rows[*k]),
                _ => (Layout::Packed, self.tokens),
            };
            let shape = Shape {
                lin,
                rin,
                lout: self.layouts[j],
                wout: node.shape.1,
            };
            let out = run
                .node(&node.op, &args, shape)
                .map_err(|e| Error::InvalidValue {
                    context: format!("encrypted token node {}", node.name),
                    reason: e.to_string(),
                })?;
            if let Some(c) = out.first() {
                if c.level() != self.levels[j] {
                    return Err(Error::InvalidValue {
                        context: format!("encrypted token node {}", node.name),
                        reason: format!(
                            "ended at level {}, the schedule says {}",
                            c.level(),
                            self.levels[j]
                        ),
                    });
                }
            }
            values.push(out);
        }
        values
            .pop()
            .ok_or_else(|| Error::model("token adapter has no nodes"))
    }
}

/// Layouts around one node: first operand (layout, valid rows) and output (layout, width).
#[derive(Clone, Copy, Debug)]
struct Shape {
    lin: Layout,
    rin: usize,
    lout: Layout,
    wout: usize,
}

struct Run<'a> {
    plan: &'a TokenPlan,
    ev: &'a Evaluator,
    encoder: &'a Encoder,
    delta: f64,
}

impl Run<'_> {
    fn q(&self, level: usize) -> Result<f64> {
        self.ev
            .params()
            .q()
            .get(level)
            .map(|&q| q as f64)
            .ok_or(Error::InvalidLevel {
                level,
                max: self.ev.params().max_level(),
            })
    }

    /// Ciphertexts brought to their lowest common level (the scale is unchanged).
    fn aligned(&self, cols: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        let level = cols.iter().map(|c| c.level()).min().unwrap_or(0);
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
    fn linear(
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
        let cs = target * self.q(level)? / first.scale();
        let (out_w, in_w) = w.dim();
        let plan = self.plan;
        let rows = sh.rin;
        match (sh.lin, sh.lout) {
            (Layout::Cols, Layout::Cols) => (0..out_w)
                .into_par_iter()
                .map(|o| {
                    let mut acc: Option<Ciphertext> = None;
                    for (i, xi) in x.iter().enumerate() {
                        let wi = w[[o, i]];
                        if wi == 0.0 {
                            continue;
                        }
                        let t = self.ev.mul_const(xi, wi, cs)?;
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
                    let mut acc: Option<Ciphertext> = None;
                    for (i, xi) in x.iter().enumerate() {
                        let pat = plan.packed_slots(a, out_w, rows, |_, o| w[[o, i]]);
                        if pat.iter().all(|&v| v == 0.0) {
                            continue;
                        }
                        let pt = self.encoder.encode(&pat, level, cs)?;
                        let t = self.ev.mul_plain(xi, &pt)?;
                        match acc.as_mut() {
                            None => acc = Some(t),
                            Some(acc) => self.ev.add_assign(acc, &t)?,
                        }
                    }
                    let mut y = match acc {
                        Some(a) => a,
                        None => self.ev.mul_const(first, 0.0, cs)?,
                    };
                    self.ev.rescale_assign(&mut y)?;
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
                    let mut acc: Option<Ciphertext> = None;
                    for (a, xa) in x.iter().enumerate() {
                        let pat = plan.packed_slots(a, in_w, rows, |_, i| w[[o, i]]);
                        if pat.iter().all(|&v| v == 0.0) {
                            continue;
                        }
                        let pt = self.encoder.encode(&pat, level, cs)?;
                        let t = self.ev.mul_plain(xa, &pt)?;
                        match acc.as_mut() {
                            None => acc = Some(t),
                            Some(acc) => self.ev.add_assign(acc, &t)?,
                        }
                    }
                    let mut y = match acc {
                        Some(a) => a,
                        None => self.ev.mul_const(first, 0.0, cs)?,
                    };
                    self.ev.rescale_assign(&mut y)?;
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

    /// Rotate-and-sum over the `T'` token slots (every slot of a column ciphertext gets the
    /// sum; in a packed ciphertext only the first slot of each block is right).
    fn rotate_sum(&self, ct: &mut Ciphertext) -> Result<()> {
        for s in sum_steps(self.plan.period) {
            let r = self.ev.rotate(ct, s)?;
            self.ev.add_assign(ct, &r)?;
        }
        Ok(())
    }

    /// `ct ⊙ pattern`, rescaled to `target`; the pattern is `f(t, column)` in either layout
    /// (`a` = the ciphertext's index for packed values).
    fn mask(
        &self,
        ct: &Ciphertext,
        layout: Layout,
        a: usize,
        width: usize,
        f: impl Fn(usize, usize) -> f64,
        target: f64,
    ) -> Result<Ciphertext> {
        let level = ct.level();
        let pscale = target * self.q(level)? / ct.scale();
        let pat = match layout {
            Layout::Cols => self.plan.column_slots(|t| f(t, a)),
            Layout::Packed => self.plan.packed_slots(a, width, self.plan.tokens, f),
        };
        let pt = self.encoder.encode(&pat, level, pscale)?;
        let mut y = self.ev.mul_plain(ct, &pt)?;
        self.ev.rescale_assign(&mut y)?;
        Ok(y)
    }

    fn node(&self, op: &TokenOp, args: &[&[Ciphertext]], sh: Shape) -> Result<Vec<Ciphertext>> {
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
                    .unwrap_or(0);
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

    fn scalar_affine(&self, c: &Ciphertext, mul: f64, add: f64, target: f64) -> Result<Ciphertext> {
        let cs = target * self.q(c.level())? / c.scale();
        let mut y = self.ev.mul_const(c, mul, cs)?;
        self.ev.rescale_assign(&mut y)?;
        if add != 0.0 {
            self.ev.add_const_assign(&mut y, add)?;
        }
        Ok(y)
    }

    fn attention(
        &self,
        at: &LinearAttention,
        x: &[Ciphertext],
        sh: Shape,
    ) -> Result<Vec<Ciphertext>> {
        let delta = self.delta;
        let r = at.width();
        let dh = at.head_dim();
        let tokens = self.plan.tokens;
        let period = self.plan.period;
        let x = self.aligned(x)?;
        let l_in = x.first().map_or(0, |c| c.level());
        if l_in < ATTENTION_LEVELS {
            return Err(Error::LevelExhausted {
                op: "linear attention".into(),
                needed: ATTENTION_LEVELS,
                available: l_in,
            });
        }
        let l = l_in - 1;
        let to_cols = Shape {
            lin: sh.lin,
            rin: sh.rin,
            lout: Layout::Cols,
            wout: r,
        };
        let rows_of = |from: usize, f: f64| -> (Array2<f64>, Array1<f64>) {
            let w = at
                .qkv
                .slice_axis(Axis(0), Slice::from(from..from + r))
                .mapv(|v| v * f);
            let b = match &at.qkv_bias {
                Some(b) => b
                    .slice_axis(Axis(0), Slice::from(from..from + r))
                    .mapv(|v| v * f),
                None => Array1::zeros(r),
            };
            (w, b)
        };
        // K and V in columns at (l, delta)
        let (kw, kb) = rows_of(r, 1.0);
        let (vw, vb) = rows_of(2 * r, 1.0);
        let k_cols = self.linear(&x, &kw, Some(&kb), delta, to_cols)?;
        let v_cols = self.linear(&x, &vw, Some(&vb), delta, to_cols)?;
        // U = M^T V on the token axis: y[t] = sum_j M[j, t] v[j], diagonal k: A[t, t + k]
        let diags: Vec<Vec<f64>> = (0..period)
            .map(|k| {
                self.plan.column_slots(|t| {
                    let j = (t + k) % period;
                    if j < tokens {
                        at.mix[[j, t]]
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let lt = LinearTransform::new(self.encoder, &diags, l, self.q(l)?, baby_step_for(period))?;
        let u_cols: Vec<Ciphertext> = v_cols
            .par_iter()
            .map(|v| {
                let mut u = lt.apply(self.ev, v)?;
                self.ev.rescale_assign(&mut u)?;
                Ok(u)
            })
            .collect::<Result<_>>()?;
        // beta_e = sum_j m_j V[j, e], replicated, at (l - 3, delta)
        let betas: Option<Vec<Ciphertext>> = match &at.mix_bias {
            None => None,
            Some(m) => Some(
                v_cols
                    .par_iter()
                    .map(|v| {
                        let mut b = self.mask(v, Layout::Cols, 0, 1, |t, _| m[t], delta)?;
                        self.rotate_sum(&mut b)?;
                        self.ev.drop_to_level(&b, l - 3)
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let k_low: Vec<Ciphertext> = k_cols
            .iter()
            .map(|c| self.ev.drop_to_level(c, l - 1))
            .collect::<Result<_>>()?;
        // G[h][c][e] = sum_t K_c[t] U_e[t], replicated, at (l - 2, s_g = delta^2 / q_{l-1})
        // (K and U are both at exactly delta), computed per output column and consumed at
        // once, so that only a few ciphertexts are alive per thread.
        let s_g = k_low
            .first()
            .zip(u_cols.first())
            .map(|(k, u)| k.scale() * u.scale())
            .ok_or_else(|| Error::model("attention without columns"))?
            / self.q(l - 1)?;
        // Q at level l with the scale that makes Q * G land on delta after one rescale
        let s_q = delta * self.q(l - 2)? / s_g;
        let (qw, qb) = rows_of(0, at.scale);
        let q_cols: Vec<Ciphertext> = self
            .linear(&x, &qw, Some(&qb), s_q, to_cols)?
            .iter()
            .map(|c| self.ev.drop_to_level(c, l - 2))
            .collect::<Result<_>>()?;
        let heads_out: Vec<Ciphertext> = (0..r)
            .into_par_iter()
            .map(|col| {
                let h = col / dh;
                let mut acc: Option<Ciphertext> = None;
                for c in 0..dh {
                    let mut g = self.ev.mul_relin(&k_low[h * dh + c], &u_cols[col])?;
                    self.ev.rescale_assign(&mut g)?;
                    self.rotate_sum(&mut g)?;
                    let p = self.ev.mul(&q_cols[h * dh + c], &g)?;
                    match acc.as_mut() {
                        None => acc = Some(p),
                        Some(a) => self.ev.add_assign(a, &p)?,
                    }
                }
                let mut y = acc.ok_or_else(|| Error::model("empty head"))?;
                self.ev.relinearize_assign(&mut y)?;
                self.ev.rescale_assign(&mut y)?;
                if let Some(b) = &betas {
                    self.ev.add_assign(&mut y, &b[col])?;
                }
                Ok(y)
            })
            .collect::<Result<_>>()?;
        let proj = Shape {
            lin: Layout::Cols,
            rin: tokens,
            lout: sh.lout,
            wout: r,
        };
        self.linear(&heads_out, &at.proj, at.proj_bias.as_ref(), delta, proj)
    }
}
