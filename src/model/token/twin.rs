//! The `f64` twin of token adapters ([`evaluate_tokens`]).

use ndarray::{Array2, ArrayView2, Axis, Slice};

use crate::model::layer::NodeRef;
use crate::{Error, Result};

use super::graph::TokenAdapter;
use super::ops::{rowwise_linear, Pooling, TokenOp};

/// The plaintext twin's report: the output and the activation inputs outside their
/// declared interval (the encrypted run is meaningless there).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenReference {
    /// The output value (`rows x width`).
    pub output: Array2<f64>,
    /// Per `poly` node: (node name, values outside the interval, largest |value|).
    pub outside: Vec<(String, usize, f64)>,
}

/// Evaluates `adapter` on one sample: `inputs[i]` is the `T x dim_i` matrix of input `i`.
/// This is the `f64` twin of the encrypted evaluation (attention computed literally, with
/// the `T x T` scores).
///
/// # Errors
/// [`Error::DimensionMismatch`] for inputs of the wrong shape or count.
pub fn evaluate_tokens(adapter: &TokenAdapter, inputs: &[Array2<f64>]) -> Result<TokenReference> {
    if inputs.len() != adapter.inputs().len() {
        return Err(Error::dims(
            "token adapter inputs",
            adapter.inputs().len(),
            inputs.len(),
        ));
    }
    for (spec, x) in adapter.inputs().iter().zip(inputs) {
        if x.dim() != (adapter.tokens(), spec.dim) {
            return Err(Error::model(format!(
                "input {}: expected {}x{}, got {}x{}",
                spec.name,
                adapter.tokens(),
                spec.dim,
                x.nrows(),
                x.ncols()
            )));
        }
    }
    let mut values: Vec<Array2<f64>> = Vec::with_capacity(adapter.nodes().len());
    let mut outside = Vec::new();
    for node in adapter.nodes() {
        let arg = |k: usize| -> ArrayView2<f64> {
            match node.inputs[k] {
                NodeRef::Input(i) => inputs[i].view(),
                NodeRef::Node(j) => values[j].view(),
            }
        };
        let y = match &node.op {
            TokenOp::Linear { weight, bias } => rowwise_linear(arg(0), weight, bias.as_ref()),
            TokenOp::LowRank { a, b, scale, bias } => {
                let mut y = arg(0).dot(&a.t()).dot(&b.t()) * *scale;
                if let Some(bb) = bias {
                    y += bb;
                }
                y
            }
            TokenOp::Affine { mul, add } => &arg(0) * mul + add,
            TokenOp::Scale(f) => arg(0).mapv(|v| v * f),
            TokenOp::Poly(act) => {
                let x = arg(0);
                let mut n = 0;
                let mut big = 0f64;
                for &v in x.iter() {
                    if !act.contains(v) {
                        n += 1;
                        big = big.max(v.abs());
                    }
                }
                if n > 0 {
                    outside.push((node.name.clone(), n, big));
                }
                x.mapv(|v| act.eval(v))
            }
            TokenOp::Add => {
                let mut y = arg(0).to_owned();
                for k in 1..node.inputs.len() {
                    y += &arg(k);
                }
                y
            }
            TokenOp::LinearAttention(at) => at.apply(arg(0)),
            TokenOp::Pool(Pooling::Cls) => arg(0).slice_axis(Axis(0), Slice::from(0..1)).to_owned(),
            TokenOp::Pool(Pooling::Mean) => arg(0)
                .mean_axis(Axis(0))
                .map(|m| m.insert_axis(Axis(0)))
                .unwrap_or_else(|| Array2::zeros((1, node.shape.1))),
        };
        values.push(y);
    }
    let output = values
        .pop()
        .ok_or_else(|| Error::model("token adapter has no nodes"))?;
    Ok(TokenReference { output, outside })
}
