//! Which parameters of an adapter move during tuning, as one flat vector `theta`.

use crate::model::{Adapter, AdapterBuilder, Op};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// The parameter groups a tuning run may move (chosen by the model owner, in the card's
/// `[tune]` table or on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// Every weight, bias and affine vector of linear, low-rank, affine and scale nodes
    /// (activation coefficients stay fixed: they set the encrypted depth and interval).
    All,
    /// Only the factors `A` and `B` of low-rank (LoRA) nodes.
    LoraFactors,
    /// Only the `B` factors of low-rank nodes (LoRA-FA: `A` stays at its initialisation).
    LoraB,
    /// Only biases, affine vectors and scalar scales (BitFit-style).
    BiasesAndScales,
}

impl Trainable {
    /// Parses `all`, `lora`, `lora_b` or `bias` (the CLI and card spellings).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Trainable::All),
            "lora" | "lora_factors" => Ok(Trainable::LoraFactors),
            "lora_b" => Ok(Trainable::LoraB),
            "bias" | "biases" | "biases_and_scales" => Ok(Trainable::BiasesAndScales),
            other => Err(Error::InvalidValue {
                context: "trainable parameters".into(),
                reason: format!("`{other}` is not one of all, lora, lora_b, bias"),
            }),
        }
    }

    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Trainable::All => "all",
            Trainable::LoraFactors => "lora",
            Trainable::LoraB => "lora_b",
            Trainable::BiasesAndScales => "bias",
        }
    }
}

/// One tensor of one node that belongs to `theta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tensor {
    /// `Linear::weight`.
    Weight,
    /// `Linear::bias` or `LowRank::bias`.
    Bias,
    /// `LowRank::a`.
    LoraA,
    /// `LowRank::b`.
    LoraB,
    /// `Affine::mul`.
    AffineMul,
    /// `Affine::add`.
    AffineAdd,
    /// `Scale(s)`.
    Scale,
}

/// A slice of `theta`: node, tensor, and how many values (row-major for matrices).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Index of the node in [`Adapter::nodes`].
    pub node: usize,
    /// Node name (for reports and checkpoints).
    pub name: String,
    /// Which tensor.
    pub tensor: Tensor,
    /// Number of values.
    pub len: usize,
}

/// The layout of `theta` for one adapter structure and one [`Trainable`] choice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThetaLayout {
    /// What moves.
    pub trainable: Trainable,
    /// The slices, in node order.
    pub slots: Vec<Slot>,
}

impl ThetaLayout {
    /// Lists the tensors of `adapter` selected by `trainable`.
    ///
    /// # Errors
    /// [`Error::Model`] when the adapter has nothing of that kind (for example `lora` on an
    /// adapter without a low-rank node).
    pub fn new(adapter: &Adapter, trainable: Trainable) -> Result<Self> {
        let mut slots = Vec::new();
        for (i, node) in adapter.nodes().iter().enumerate() {
            let mut push = |tensor, len| {
                slots.push(Slot {
                    node: i,
                    name: node.name.clone(),
                    tensor,
                    len,
                })
            };
            let all = trainable == Trainable::All;
            let bias = all || trainable == Trainable::BiasesAndScales;
            match &node.op {
                Op::Linear { weight, bias: b } => {
                    if all {
                        push(Tensor::Weight, weight.len());
                    }
                    if let (true, Some(b)) = (bias, b) {
                        push(Tensor::Bias, b.len());
                    }
                }
                Op::LowRank { a, b, bias: bb, .. } => {
                    if all || trainable == Trainable::LoraFactors {
                        push(Tensor::LoraA, a.len());
                    }
                    if all || trainable == Trainable::LoraFactors || trainable == Trainable::LoraB {
                        push(Tensor::LoraB, b.len());
                    }
                    if let (true, Some(bb)) = (bias, bb) {
                        push(Tensor::Bias, bb.len());
                    }
                }
                Op::Affine { mul, add } => {
                    if bias {
                        push(Tensor::AffineMul, mul.len());
                        push(Tensor::AffineAdd, add.len());
                    }
                }
                Op::Scale(_) => {
                    if bias {
                        push(Tensor::Scale, 1);
                    }
                }
                Op::Poly(_) | Op::Add | Op::Concat => {}
            }
        }
        if slots.is_empty() {
            return Err(Error::model(format!(
                "the adapter has no `{}` parameters to tune",
                trainable.name()
            )));
        }
        Ok(ThetaLayout { trainable, slots })
    }

    /// Length of `theta`.
    pub fn dim(&self) -> usize {
        self.slots.iter().map(|s| s.len).sum()
    }

    /// Reads `theta` out of `adapter`. Cost: one copy of the selected tensors.
    ///
    /// # Errors
    /// [`Error::Model`] if `adapter` does not have this layout's structure.
    pub fn read(&self, adapter: &Adapter) -> Result<Vec<f64>> {
        let mut theta = Vec::with_capacity(self.dim());
        for slot in &self.slots {
            let op = &node_op(adapter, slot)?;
            match (slot.tensor, op) {
                (Tensor::Weight, Op::Linear { weight, .. }) => theta.extend(weight.iter()),
                (Tensor::Bias, Op::Linear { bias: Some(b), .. })
                | (Tensor::Bias, Op::LowRank { bias: Some(b), .. }) => theta.extend(b.iter()),
                (Tensor::LoraA, Op::LowRank { a, .. }) => theta.extend(a.iter()),
                (Tensor::LoraB, Op::LowRank { b, .. }) => theta.extend(b.iter()),
                (Tensor::AffineMul, Op::Affine { mul, .. }) => theta.extend(mul.iter()),
                (Tensor::AffineAdd, Op::Affine { add, .. }) => theta.extend(add.iter()),
                (Tensor::Scale, Op::Scale(s)) => theta.push(*s),
                _ => return Err(mismatch(slot)),
            }
        }
        Ok(theta)
    }

    /// A copy of `adapter` with the selected tensors replaced by `theta` (the adapter is
    /// rebuilt, so every shape and finiteness check runs again). Cost: one copy of the
    /// adapter.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a `theta` of the wrong length; [`Error::Model`] for
    /// a structure mismatch; [`Error::InvalidValue`] for a non-finite value.
    pub fn write(&self, adapter: &Adapter, theta: &[f64]) -> Result<Adapter> {
        if theta.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                context: "tuning parameter vector".into(),
                expected: self.dim(),
                found: theta.len(),
            });
        }
        let mut ops: Vec<Op> = adapter.nodes().iter().map(|n| n.op.clone()).collect();
        let mut at = 0;
        for slot in &self.slots {
            let values = &theta[at..at + slot.len];
            at += slot.len;
            let op = ops.get_mut(slot.node).ok_or_else(|| mismatch(slot))?;
            match (slot.tensor, op) {
                (Tensor::Weight, Op::Linear { weight, .. }) => fill2(weight, values, slot)?,
                (Tensor::Bias, Op::Linear { bias: Some(b), .. })
                | (Tensor::Bias, Op::LowRank { bias: Some(b), .. }) => fill1(b, values, slot)?,
                (Tensor::LoraA, Op::LowRank { a, .. }) => fill2(a, values, slot)?,
                (Tensor::LoraB, Op::LowRank { b, .. }) => fill2(b, values, slot)?,
                (Tensor::AffineMul, Op::Affine { mul, .. }) => fill1(mul, values, slot)?,
                (Tensor::AffineAdd, Op::Affine { add, .. }) => fill1(add, values, slot)?,
                (Tensor::Scale, Op::Scale(s)) => *s = values[0],
                _ => return Err(mismatch(slot)),
            }
        }
        let mut b = AdapterBuilder::new();
        for input in adapter.inputs() {
            b.input(&input.name, input.dim)?;
        }
        for (node, op) in adapter.nodes().iter().zip(ops) {
            b.node(&node.name, op, &node.inputs)?;
        }
        b.build()
    }
}

fn node_op(adapter: &Adapter, slot: &Slot) -> Result<Op> {
    adapter
        .nodes()
        .get(slot.node)
        .filter(|n| n.name == slot.name)
        .map(|n| n.op.clone())
        .ok_or_else(|| mismatch(slot))
}

fn mismatch(slot: &Slot) -> Error {
    Error::model(format!(
        "node {} (`{}`) has no {:?} tensor of {} values: the adapter does not have the structure this tuning run was set up for",
        slot.node, slot.name, slot.tensor, slot.len
    ))
}

fn fill1(dst: &mut Array1<f64>, values: &[f64], slot: &Slot) -> Result<()> {
    if dst.len() != values.len() {
        return Err(mismatch(slot));
    }
    dst.iter_mut().zip(values).for_each(|(d, &v)| *d = v);
    Ok(())
}

fn fill2(dst: &mut Array2<f64>, values: &[f64], slot: &Slot) -> Result<()> {
    if dst.len() != values.len() {
        return Err(mismatch(slot));
    }
    dst.iter_mut().zip(values).for_each(|(d, &v)| *d = v);
    Ok(())
}
