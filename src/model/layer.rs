//! The operations of an adapter graph and their shape rules.

use ndarray::{Array1, Array2};

use super::activation::Activation;
use crate::{Error, Result};

/// Where a node takes one of its operands from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// The adapter input with this index (see [`Adapter::inputs`](super::Adapter::inputs)).
    Input(usize),
    /// The output of the node with this index; it must come earlier in the node list.
    Node(usize),
}

/// A named input vector of the adapter (for example the `[CLS]` features of a backbone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// Unique name (shared namespace with node names).
    pub name: String,
    /// Width of the input vector, at least 1.
    pub dim: usize,
}

/// One operation of an adapter graph. All vectors are column vectors of `f64`.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `y = W x + bias`, `weight` is `out x in`, `bias` has length `out`.
    Linear {
        /// Weight matrix, `out x in`.
        weight: Array2<f64>,
        /// Optional bias of length `out`.
        bias: Option<Array1<f64>>,
    },
    /// LoRA-style low-rank map `y = scale * B (A x) + bias`, never densified.
    LowRank {
        /// Down projection, `r x in`.
        a: Array2<f64>,
        /// Up projection, `out x r`.
        b: Array2<f64>,
        /// Scalar factor (PEFT: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA).
        scale: f64,
        /// Optional bias of length `out` (not multiplied by `scale`).
        bias: Option<Array1<f64>>,
    },
    /// Per-feature affine map `y_i = mul_i * x_i + add_i` (a folded LayerNorm/BatchNorm).
    Affine {
        /// Per-feature multiplier, length = input width.
        mul: Array1<f64>,
        /// Per-feature offset, length = input width.
        add: Array1<f64>,
    },
    /// `y = s * x`.
    Scale(f64),
    /// Elementwise polynomial activation.
    Poly(Activation),
    /// Elementwise sum of two or more inputs of equal width (residual connection).
    Add,
    /// Concatenation of one or more inputs, in order; the widths add up.
    Concat,
}

impl Op {
    /// Short lowercase name of the operation kind (`"linear"`, `"low_rank"`, ...), as used
    /// in model cards.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "linear",
            Op::LowRank { .. } => "low_rank",
            Op::Affine { .. } => "affine",
            Op::Scale(_) => "scale",
            Op::Poly(_) => "poly",
            Op::Add => "add",
            Op::Concat => "concat",
        }
    }

    /// Number of scalar parameters the operation holds (weights, biases, coefficients).
    pub fn param_count(&self) -> usize {
        match self {
            Op::Linear { weight, bias } => weight.len() + bias.as_ref().map_or(0, |b| b.len()),
            Op::LowRank { a, b, bias, .. } => {
                a.len() + b.len() + 1 + bias.as_ref().map_or(0, |b| b.len())
            }
            Op::Affine { mul, add } => mul.len() + add.len(),
            Op::Scale(_) => 1,
            Op::Poly(act) => act.cheb.len(),
            Op::Add | Op::Concat => 0,
        }
    }

    /// Checks that every parameter is finite and that the operation is internally
    /// consistent (matching bias length, rank at least 1, valid activation).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a non-finite value, [`Error::DimensionMismatch`] for
    /// inconsistent parameter shapes, [`Error::Model`] for an empty matrix.
    pub fn validate(&self, context: &str) -> Result<()> {
        match self {
            Op::Linear { weight, bias } => {
                nonempty(weight, &format!("{context}: weight"))?;
                finite(weight.iter(), &format!("{context}: weight"))?;
                if let Some(bias) = bias {
                    if bias.len() != weight.nrows() {
                        return Err(Error::dims(
                            format!("{context}: bias length vs weight rows"),
                            weight.nrows(),
                            bias.len(),
                        ));
                    }
                    finite(bias.iter(), &format!("{context}: bias"))?;
                }
            }
            Op::LowRank { a, b, scale, bias } => {
                nonempty(a, &format!("{context}: A"))?;
                nonempty(b, &format!("{context}: B"))?;
                if b.ncols() != a.nrows() {
                    return Err(Error::dims(
                        format!("{context}: rank (B columns vs A rows)"),
                        a.nrows(),
                        b.ncols(),
                    ));
                }
                finite(a.iter(), &format!("{context}: A"))?;
                finite(b.iter(), &format!("{context}: B"))?;
                finite(std::iter::once(scale), &format!("{context}: scale"))?;
                if let Some(bias) = bias {
                    if bias.len() != b.nrows() {
                        return Err(Error::dims(
                            format!("{context}: bias length vs B rows"),
                            b.nrows(),
                            bias.len(),
                        ));
                    }
                    finite(bias.iter(), &format!("{context}: bias"))?;
                }
            }
            Op::Affine { mul, add } => {
                if mul.len() != add.len() {
                    return Err(Error::dims(
                        format!("{context}: affine add vs mul length"),
                        mul.len(),
                        add.len(),
                    ));
                }
                finite(mul.iter(), &format!("{context}: mul"))?;
                finite(add.iter(), &format!("{context}: add"))?;
            }
            Op::Scale(s) => finite(std::iter::once(s), &format!("{context}: scale"))?,
            Op::Poly(act) => act.validate()?,
            Op::Add | Op::Concat => {}
        }
        Ok(())
    }

    /// Output width of the operation applied to operands of widths `in_dims`.
    ///
    /// # Errors
    /// [`Error::Model`] for a wrong number of operands, [`Error::DimensionMismatch`] when
    /// the widths do not fit the parameters.
    pub fn out_dim(&self, in_dims: &[usize], context: &str) -> Result<usize> {
        let single = || -> Result<usize> {
            match in_dims {
                [d] => Ok(*d),
                _ => Err(Error::model(format!(
                    "{context}: {} takes exactly 1 input, got {}",
                    self.kind(),
                    in_dims.len()
                ))),
            }
        };
        match self {
            Op::Linear { weight, .. } => {
                let d = single()?;
                if weight.ncols() != d {
                    return Err(Error::dims(
                        format!("{context}: weight columns"),
                        d,
                        weight.ncols(),
                    ));
                }
                Ok(weight.nrows())
            }
            Op::LowRank { a, b, .. } => {
                let d = single()?;
                if a.ncols() != d {
                    return Err(Error::dims(format!("{context}: A columns"), d, a.ncols()));
                }
                Ok(b.nrows())
            }
            Op::Affine { mul, .. } => {
                let d = single()?;
                if mul.len() != d {
                    return Err(Error::dims(
                        format!("{context}: affine length"),
                        d,
                        mul.len(),
                    ));
                }
                Ok(d)
            }
            Op::Scale(_) | Op::Poly(_) => single(),
            Op::Add => {
                if in_dims.len() < 2 {
                    return Err(Error::model(format!(
                        "{context}: add takes at least 2 inputs, got {}",
                        in_dims.len()
                    )));
                }
                let d = in_dims[0];
                if let Some(&bad) = in_dims.iter().find(|&&x| x != d) {
                    return Err(Error::dims(format!("{context}: add operand width"), d, bad));
                }
                Ok(d)
            }
            Op::Concat => {
                if in_dims.is_empty() {
                    return Err(Error::model(format!(
                        "{context}: concat needs at least 1 input"
                    )));
                }
                Ok(in_dims.iter().sum())
            }
        }
    }
}

fn nonempty(m: &Array2<f64>, context: &str) -> Result<()> {
    if m.is_empty() {
        return Err(Error::model(format!(
            "{context}: matrix is empty ({} x {})",
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(())
}

fn finite<'a>(values: impl Iterator<Item = &'a f64>, context: &str) -> Result<()> {
    for (i, v) in values.enumerate() {
        if !v.is_finite() {
            return Err(Error::InvalidValue {
                context: context.to_string(),
                reason: format!("element {i} is {v}"),
            });
        }
    }
    Ok(())
}

/// One node of an adapter graph: an operation applied to earlier values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique name (shared namespace with input names).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Operands, each an adapter input or an earlier node.
    pub inputs: Vec<NodeRef>,
    /// Width of the node's output vector.
    pub out_dim: usize,
}
