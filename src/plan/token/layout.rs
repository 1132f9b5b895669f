//! Where token values sit in ciphertexts ([`Layout`]), the per-op level counts and the
//! rotate-and-sum step lists.

use crate::ckks::polyeval::chebyshev_depth;
use crate::model::layer::NodeRef;
use crate::model::token::{TokenAdapter, TokenNode, TokenOp};
use crate::{Error, Result};

use super::ATTENTION_LEVELS;

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
pub(super) fn forward_layouts(adapter: &TokenAdapter, required: &[bool]) -> Vec<Layout> {
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
pub(super) fn require_packed(adapter: &TokenAdapter, required: &mut [bool], r: NodeRef) -> bool {
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

pub(super) fn op_levels(op: &TokenOp) -> usize {
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

pub(super) fn unit_interval((lo, hi): (f64, f64)) -> bool {
    lo == -1.0 && hi == 1.0
}

/// Whether the first operand of `n` is packed.
pub(super) fn ins_packed(n: &TokenNode, layouts: &[Layout]) -> bool {
    match n.inputs.first() {
        Some(NodeRef::Node(k)) => layouts.get(*k) == Some(&Layout::Packed),
        Some(NodeRef::Input(_)) => true,
        None => false,
    }
}

/// Rotate-and-sum steps over the blocks of a packed ciphertext: T', 2T', .., N/4.
pub(super) fn block_steps(period: usize, slots: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut k = period;
    while k < slots {
        v.push(k as i64);
        k *= 2;
    }
    v
}

/// `log2 T'` rotate-and-sum steps: 1, 2, 4, .., T'/2.
pub(super) fn sum_steps(period: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut k = 1;
    while k < period {
        v.push(k as i64);
        k *= 2;
    }
    v
}

/// The layout of every node: the inputs (and everything added to them) packed, the rest in
/// columns (a fixed point of [`forward_layouts`] under [`require_packed`]).
///
/// # Errors
/// [`Error::Model`] for a residual whose operands cannot share a layout, or a linear map
/// from packed to packed values (not supported yet).
pub(super) fn assign_layouts(adapter: &TokenAdapter) -> Result<Vec<Layout>> {
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
    Ok(layouts)
}

/// Slots of one block of the packed attention, in units of `T'`: the `T'`-periodic values
/// of a block stay right on its first `2T'` slots after the mixing's rotations (`< T'`).
pub(super) const BLOCK: usize = 4;

/// Geometry of the packed attention (see the module documentation of [`super`]): every
/// `(c, e)` product of one head's `G = K^T U` sits in one ciphertext, slot
/// `t + 4T' (e + ec b)` (`t < 4T'`, `e < ec`, `b < dhp`) holding `K_b[t mod T'] U_e[t mod T']`
/// (valid on `t < 2T'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AttentionPacking {
    /// Head width padded to a power of two (the summed `b` axis).
    pub(super) dhp: usize,
    /// Output columns `e` per ciphertext (a power of two, at most `dhp`).
    pub(super) ec: usize,
    /// Ciphertexts per head, `ceil(dh / ec)`.
    pub(super) chunks: usize,
}

impl AttentionPacking {
    /// The packing of an attention of head width `dh` between column values, or `None` when
    /// the attention reads or writes packed values or one head does not fit in the slots
    /// (`4 T' dhp > N / 2`); the plan then evaluates it column by column.
    pub(super) fn of(
        period: usize,
        slots: usize,
        dh: usize,
        lin: Layout,
        lout: Layout,
    ) -> Option<Self> {
        if lin != Layout::Cols || lout != Layout::Cols || dh == 0 {
            return None;
        }
        let dhp = dh.next_power_of_two();
        let room = slots / (BLOCK * period * dhp);
        if room == 0 {
            return None;
        }
        let ec = dhp.min(room);
        Some(AttentionPacking {
            dhp,
            ec,
            chunks: dh.div_ceil(ec),
        })
    }

    /// Period of the pattern (`4 T' ec dhp`), which divides the slots.
    pub(super) fn span(&self, period: usize) -> usize {
        BLOCK * period * self.ec * self.dhp
    }

    /// Rotate-and-sum steps over the `b` axis: `4 T' ec`, .., `4 T' ec dhp / 2`.
    pub(super) fn head_steps(&self, period: usize) -> Vec<i64> {
        let mut v = Vec::new();
        let mut k = BLOCK * period * self.ec;
        while k < self.span(period) {
            v.push(k as i64);
            k *= 2;
        }
        v
    }

    /// Rotate-and-sum steps of the output projection over the `4 ec` quarter blocks:
    /// `T'`, `2T'`, .., `2 ec T'`.
    pub(super) fn proj_steps(&self, period: usize) -> Vec<i64> {
        let mut v = Vec::new();
        let mut k = period;
        while k < BLOCK * self.ec * period {
            v.push(k as i64);
            k *= 2;
        }
        v
    }
}
