//! Encrypted evaluation of token-level adapters ([`TokenAdapter`]) for one sample (latency);
//! [`TokenBatchPlan`] evaluates many samples per query with the same level schedule
//! (throughput; module `batch`).
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
//!   diagonal method with baby-step giant-step ([`LinearTransform`](crate::ckks::LinearTransform)); the period `T'` makes
//!   the rotations cyclic over the tokens. One level, `~2 sqrt(T')` rotations per column.
//! - **linear attention**, evaluated by associativity: with `U = M^T V` (the mixing on the
//!   token axis), `S' V = (Q K^T) M^T V + 1 (m^T V) = Q (K^T U) + 1 (m^T V)`, so per head
//!   the `dh x dh` matrix `G = K^T U` is computed with ciphertext-ciphertext products
//!   `K_c * U_e` and a rotate-and-sum over the tokens (`log2 T'` rotations), then
//!   `out_e = sum_c Q_c * G_ce`. The `T x T` scores are never materialised. Levels: qkv 1,
//!   mixing 1, `K^T U` 1, `Q G` 1, proj 1. Two evaluations:
//!   - **packed** (between column values, when `4 T' dhp <= N / 2`, `dhp` the head width
//!     padded to a power of two; the OWC block's case): every `K_b U_e` product of a head
//!     sits in one ciphertext (slot `t + 4T' (e + ec b)`), built from the input columns by
//!     plaintext products, so one head costs per ciphertext the mixing, 2 relinearized
//!     products and `2 log2 T' + log2 dhp` rotations, and the projection `log2(4 ec)`
//!     rotations per output column (see `attention_packed.rs`);
//!   - **column by column** (an attention reading or writing packed values, or a head too
//!     wide): `G_ce` by one ciphertext-ciphertext product `K_c * U_e` and a rotate-and-sum
//!     over the tokens each, the mixing per column; `dh^2` products and `dh^2 log2 T'`
//!     rotations per head.
//!
//!   [`TokenPlan::cost`] counts the rotations and products of the plan
//!   ([`TokenPlan::cost_columnwise`]: column by column).
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

use crate::ckks::galois_element_for_rotation;
use crate::ckks::lintrans::baby_step_for;
use crate::ckks::{CkksParams, Level};
use crate::model::layer::NodeRef;
use crate::model::token::{TokenAdapter, TokenOp};
use crate::{Error, Result};

mod attention;
mod attention_packed;
pub mod batch;
pub mod fuse;
mod io;
mod layout;
mod run;
mod sanitize;

pub use sanitize::{flooded_precision_bits, TOKEN_EPS_MARGIN_BITS};

pub use batch::{TokenBatchCost, TokenBatchPlan};
pub use fuse::fuse_tokens;
pub use layout::Layout;
use layout::{
    assign_layouts, block_steps, ins_packed, op_levels, sum_steps, AttentionPacking, BLOCK,
};

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
        let top = params.max_level().get();
        if depth > top {
            return Err(Error::params(format!(
                "the token adapter needs {depth} levels, the parameters have {top}: use a longer chain \
                 (hepeft::select::token::select_token) or fewer tapped layers"
            )));
        }
        let layouts = assign_layouts(adapter)?;
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
                TokenOp::LinearAttention(at) => {
                    relin = true;
                    let g = baby_step_for(period);
                    steps.extend(crate::ckks::lintrans::rotation_steps(period, g));
                    steps.extend(sum_steps(period));
                    let lin = match n.inputs.first() {
                        Some(NodeRef::Node(k)) => layouts[*k],
                        _ => Layout::Packed,
                    };
                    if let Some(pk) =
                        AttentionPacking::of(period, slots, at.head_dim(), lin, layouts[j])
                    {
                        steps.extend(pk.head_steps(period));
                        steps.extend(pk.proj_steps(period));
                    }
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
    pub fn input_level(&self) -> Level {
        Level(self.input_level)
    }
    /// Level of the output columns.
    pub fn output_level(&self) -> Level {
        Level(self.levels.last().copied().unwrap_or(self.input_level))
    }
    /// Rotation steps the server uses (one Galois key each).
    pub fn rotation_steps(&self) -> &[i64] {
        &self.steps
    }
    /// The Galois elements of [`TokenPlan::rotation_steps`].
    pub fn galois_elements(&self, params: &CkksParams) -> Vec<crate::ckks::GaloisElement> {
        self.steps
            .iter()
            .map(|&s| crate::ckks::GaloisElement(galois_element_for_rotation(params, s)))
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
}

/// Key-switching work of one evaluation (one sample), counted from the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCost {
    /// Rotations (one key switch each; the mixing's baby steps counted once per column).
    pub rotations: usize,
    /// Relinearized ciphertext-ciphertext products of the attentions (the activations'
    /// products are not counted here).
    pub attention_products: usize,
}

impl TokenPlan {
    /// Rotations and attention products of one evaluation of `adapter` (the adapter the
    /// plan was compiled for) as [`TokenPlan::evaluate`] runs it.
    pub fn cost(&self, adapter: &TokenAdapter) -> TokenCost {
        self.count(adapter, false)
    }

    /// [`TokenPlan::cost`] if every attention were evaluated column by column (`G = K^T U`
    /// one `(c, e)` product per ciphertext), the evaluation before the packed attention;
    /// for comparison.
    pub fn cost_columnwise(&self, adapter: &TokenAdapter) -> TokenCost {
        self.count(adapter, true)
    }

    fn count(&self, adapter: &TokenAdapter, columnwise: bool) -> TokenCost {
        let log2 = |k: usize| k.max(1).trailing_zeros() as usize;
        let blocks = block_steps(self.period, self.slots).len();
        let sums = sum_steps(self.period).len();
        let g = baby_step_for(self.period);
        let mix = (g.min(self.period) - 1) + (self.period.div_ceil(g) - 1);
        let mut c = TokenCost::default();
        for (j, n) in adapter.nodes().iter().enumerate() {
            let lin = match n.inputs.first() {
                Some(NodeRef::Node(k)) => self.layouts[*k],
                _ => Layout::Packed,
            };
            let lout = self.layouts[j];
            match &n.op {
                TokenOp::Linear { .. } | TokenOp::LowRank { .. }
                    if lin == Layout::Packed && lout == Layout::Cols =>
                {
                    c.rotations += n.shape.1 * blocks;
                }
                TokenOp::Pool(_) => c.rotations += self.ciphertexts_for(lin, n.shape.1) * sums,
                TokenOp::LinearAttention(at) => {
                    let (r, dh) = (at.width(), at.head_dim());
                    let bias = usize::from(at.mix_bias.is_some());
                    let pk = AttentionPacking::of(self.period, self.slots, dh, lin, lout);
                    match pk.filter(|_| !columnwise) {
                        Some(pk) => {
                            let cts = at.heads * pk.chunks;
                            c.rotations += cts * (mix + sums * (1 + bias) + log2(pk.dhp))
                                + r * log2(BLOCK * pk.ec);
                            c.attention_products += 2 * cts;
                        }
                        None => {
                            c.rotations += r * mix;
                            if lin == Layout::Packed {
                                c.rotations += 3 * r * blocks;
                            }
                            c.rotations += r * sums * (dh + bias);
                            c.attention_products += r * dh + r;
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }
}
