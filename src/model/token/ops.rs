//! The token-level operations ([`TokenOp`]), the linear attention and the shape checks.

use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};

use crate::model::activation::Activation;
use crate::{Error, Result};

/// How [`TokenOp::Pool`] reduces the token axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// The mean over the `T` tokens.
    Mean,
}

impl Pooling {
    /// `"cls"` or `"mean"` (the model-card spelling).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
        }
    }

    /// Parses `"cls"` or `"mean"`.
    ///
    /// # Errors
    /// [`Error::Model`] naming the accepted values.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            other => Err(Error::model(format!(
                "unknown pooling {other:?}: use \"cls\" or \"mean\""
            ))),
        }
    }
}

/// Multi-head linear attention with a learned token-mixing matrix (CryptPEFT's LinAtten).
///
/// For an input `X` (`T x r`): `[Q K V] = X Wqkv^T (+ b)`, heads split the `r` columns into
/// `heads` groups of `r / heads`; per head `S = (scale Q) K^T` (`T x T`), then the mixing
/// Linear(T, T) over the key axis `S' = S M^T + 1 m^T`, then `S' V`; the heads are
/// concatenated and projected: `Y = [S'_1 V_1 .. S'_H V_H] P^T + p`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearAttention {
    /// Number of heads; divides the width `r`.
    pub heads: usize,
    /// `3r x r`: rows `0..r` give Q, `r..2r` K, `2r..3r` V.
    pub qkv: Array2<f64>,
    /// Optional bias of length `3r`.
    pub qkv_bias: Option<Array1<f64>>,
    /// Factor on Q (usually `(r / heads)^-1/2`).
    pub scale: f64,
    /// `T x T` token mixing over the key axis (shared by the heads).
    pub mix: Array2<f64>,
    /// Optional bias of length `T` of the mixing.
    pub mix_bias: Option<Array1<f64>>,
    /// Output projection `r x r`.
    pub proj: Array2<f64>,
    /// Optional bias of length `r`.
    pub proj_bias: Option<Array1<f64>>,
}

impl LinearAttention {
    /// The width `r` (columns of `qkv`).
    pub fn width(&self) -> usize {
        self.qkv.ncols()
    }

    /// Rows `from..from + r` of `qkv` and of its bias (zeros without one), times `f`: the
    /// `q`, `k` or `v` block for `from` = 0, `r` or `2r`. Cost: one `r x r` copy.
    pub fn qkv_rows(&self, from: usize, f: f64) -> (Array2<f64>, Array1<f64>) {
        let r = self.width();
        let w = self
            .qkv
            .slice_axis(Axis(0), Slice::from(from..from + r))
            .mapv(|v| v * f);
        let b = match &self.qkv_bias {
            Some(b) => b
                .slice_axis(Axis(0), Slice::from(from..from + r))
                .mapv(|v| v * f),
            None => Array1::zeros(r),
        };
        (w, b)
    }

    /// Width of one head, `r / heads`.
    pub fn head_dim(&self) -> usize {
        self.width() / self.heads.max(1)
    }

    fn validate(&self, tokens: usize, context: &str) -> Result<()> {
        let r = self.width();
        if r == 0 || self.heads == 0 || r % self.heads != 0 {
            return Err(Error::model(format!(
                "{context}: {} heads must divide the width {r} (and both be at least 1)",
                self.heads
            )));
        }
        shape(&self.qkv, 3 * r, r, &format!("{context}: qkv"))?;
        shape(&self.mix, tokens, tokens, &format!("{context}: mix"))?;
        shape(&self.proj, r, r, &format!("{context}: proj"))?;
        opt_len(&self.qkv_bias, 3 * r, &format!("{context}: qkv bias"))?;
        opt_len(&self.mix_bias, tokens, &format!("{context}: mix bias"))?;
        opt_len(&self.proj_bias, r, &format!("{context}: proj bias"))?;
        finite(self.qkv.iter(), &format!("{context}: qkv"))?;
        finite(self.mix.iter(), &format!("{context}: mix"))?;
        finite(self.proj.iter(), &format!("{context}: proj"))?;
        finite(std::iter::once(&self.scale), &format!("{context}: scale"))?;
        for (b, what) in [
            (&self.qkv_bias, "qkv bias"),
            (&self.mix_bias, "mix bias"),
            (&self.proj_bias, "proj bias"),
        ] {
            if let Some(b) = b {
                finite(b.iter(), &format!("{context}: {what}"))?;
            }
        }
        Ok(())
    }

    /// Evaluates the attention on `x` (`T x r`) literally: scores, mixing, `scores V`.
    pub fn apply(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let r = self.width();
        let t = x.nrows();
        let dh = self.head_dim();
        let qkv = rowwise_linear(x, &self.qkv, self.qkv_bias.as_ref());
        let mut heads_out = Array2::<f64>::zeros((t, r));
        for h in 0..self.heads {
            let q = qkv
                .slice_axis(Axis(1), Slice::from(h * dh..(h + 1) * dh))
                .mapv(|v| v * self.scale);
            let k = qkv.slice_axis(Axis(1), Slice::from(r + h * dh..r + (h + 1) * dh));
            let v = qkv.slice_axis(Axis(1), Slice::from(2 * r + h * dh..2 * r + (h + 1) * dh));
            let scores = q.dot(&k.t());
            let mixed = rowwise_linear(scores.view(), &self.mix, self.mix_bias.as_ref());
            heads_out
                .slice_axis_mut(Axis(1), Slice::from(h * dh..(h + 1) * dh))
                .assign(&mixed.dot(&v));
        }
        rowwise_linear(heads_out.view(), &self.proj, self.proj_bias.as_ref())
    }
}

/// One operation of a token graph. Values are `rows x width` matrices (`rows` = `T`, or 1
/// after pooling); token-wise ops apply to every row.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenOp {
    /// Token-wise `y = W x + b` (`weight` is `out x in`).
    Linear {
        /// `out x in`.
        weight: Array2<f64>,
        /// Optional, length `out`.
        bias: Option<Array1<f64>>,
    },
    /// Token-wise LoRA map `y = scale B (A x) + bias`.
    LowRank {
        /// `r x in`.
        a: Array2<f64>,
        /// `out x r`.
        b: Array2<f64>,
        /// Scalar factor.
        scale: f64,
        /// Optional, length `out`.
        bias: Option<Array1<f64>>,
    },
    /// Per-feature affine map `mul * x + add` (LayerNorm / BatchNorm at inference).
    Affine {
        /// Length = width.
        mul: Array1<f64>,
        /// Length = width.
        add: Array1<f64>,
    },
    /// `y = s x`.
    Scale(f64),
    /// Elementwise polynomial activation.
    Poly(Activation),
    /// Elementwise sum of two or more operands of the same shape (residual).
    Add,
    /// Multi-head linear attention with a learned token mixing; needs `rows = T`.
    LinearAttention(Box<LinearAttention>),
    /// Reduces the token axis to one row.
    Pool(Pooling),
}

impl TokenOp {
    /// Lowercase name as in token model cards.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenOp::Linear { .. } => "linear",
            TokenOp::LowRank { .. } => "low_rank",
            TokenOp::Affine { .. } => "affine",
            TokenOp::Scale(_) => "scale",
            TokenOp::Poly(_) => "poly",
            TokenOp::Add => "add",
            TokenOp::LinearAttention(_) => "linear_attention",
            TokenOp::Pool(_) => "pool",
        }
    }

    /// Number of scalar parameters.
    pub fn param_count(&self) -> usize {
        let ol = |b: &Option<Array1<f64>>| b.as_ref().map_or(0, |b| b.len());
        match self {
            TokenOp::Linear { weight, bias } => weight.len() + ol(bias),
            TokenOp::LowRank { a, b, bias, .. } => a.len() + b.len() + 1 + ol(bias),
            TokenOp::Affine { mul, add } => mul.len() + add.len(),
            TokenOp::Scale(_) => 1,
            TokenOp::Poly(act) => act.cheb.len(),
            TokenOp::Add | TokenOp::Pool(_) => 0,
            TokenOp::LinearAttention(at) => {
                at.qkv.len()
                    + at.mix.len()
                    + at.proj.len()
                    + 1
                    + ol(&at.qkv_bias)
                    + ol(&at.mix_bias)
                    + ol(&at.proj_bias)
            }
        }
    }

    /// Checks the parameters and returns the output shape `(rows, width)` for operands of
    /// shapes `ins`, in a graph of `tokens` tokens.
    ///
    /// # Errors
    /// [`Error::Model`] / [`Error::DimensionMismatch`] / [`Error::InvalidValue`] naming the
    /// node.
    pub fn out_shape(
        &self,
        ins: &[(usize, usize)],
        tokens: usize,
        context: &str,
    ) -> Result<(usize, usize)> {
        let single = || -> Result<(usize, usize)> {
            match ins {
                [x] => Ok(*x),
                _ => Err(Error::model(format!(
                    "{context}: {} takes exactly 1 input, got {}",
                    self.kind(),
                    ins.len()
                ))),
            }
        };
        match self {
            TokenOp::Linear { weight, bias } => {
                let (rows, w) = single()?;
                if weight.is_empty() {
                    return Err(Error::model(format!("{context}: empty weight")));
                }
                shape(weight, weight.nrows(), w, &format!("{context}: weight"))?;
                opt_len(bias, weight.nrows(), &format!("{context}: bias"))?;
                finite(weight.iter(), &format!("{context}: weight"))?;
                if let Some(b) = bias {
                    finite(b.iter(), &format!("{context}: bias"))?;
                }
                Ok((rows, weight.nrows()))
            }
            TokenOp::LowRank { a, b, scale, bias } => {
                let (rows, w) = single()?;
                if a.is_empty() || b.is_empty() {
                    return Err(Error::model(format!("{context}: empty A or B")));
                }
                shape(a, a.nrows(), w, &format!("{context}: A"))?;
                shape(b, b.nrows(), a.nrows(), &format!("{context}: B"))?;
                opt_len(bias, b.nrows(), &format!("{context}: bias"))?;
                finite(a.iter(), &format!("{context}: A"))?;
                finite(b.iter(), &format!("{context}: B"))?;
                finite(std::iter::once(scale), &format!("{context}: scale"))?;
                if let Some(bb) = bias {
                    finite(bb.iter(), &format!("{context}: bias"))?;
                }
                Ok((rows, b.nrows()))
            }
            TokenOp::Affine { mul, add } => {
                let (rows, w) = single()?;
                if mul.len() != w {
                    return Err(Error::dims(format!("{context}: affine mul"), w, mul.len()));
                }
                if add.len() != w {
                    return Err(Error::dims(format!("{context}: affine add"), w, add.len()));
                }
                finite(mul.iter(), &format!("{context}: mul"))?;
                finite(add.iter(), &format!("{context}: add"))?;
                Ok((rows, w))
            }
            TokenOp::Scale(f) => {
                finite(std::iter::once(f), &format!("{context}: scale"))?;
                single()
            }
            TokenOp::Poly(act) => {
                act.validate()?;
                single()
            }
            TokenOp::Add => {
                if ins.len() < 2 {
                    return Err(Error::model(format!(
                        "{context}: add takes at least 2 inputs, got {}",
                        ins.len()
                    )));
                }
                let first = ins[0];
                if let Some(bad) = ins.iter().find(|&&x| x != first) {
                    return Err(Error::model(format!(
                        "{context}: add operands must have equal shapes, got {}x{} and {}x{}",
                        first.0, first.1, bad.0, bad.1
                    )));
                }
                Ok(first)
            }
            TokenOp::LinearAttention(at) => {
                let (rows, w) = single()?;
                if rows != tokens {
                    return Err(Error::model(format!(
                        "{context}: linear attention needs all {tokens} tokens, got {rows} rows (pooled already?)"
                    )));
                }
                if w != at.width() {
                    return Err(Error::dims(
                        format!("{context}: attention width"),
                        at.width(),
                        w,
                    ));
                }
                at.validate(tokens, context)?;
                Ok((rows, w))
            }
            TokenOp::Pool(_) => {
                let (rows, w) = single()?;
                if rows != tokens {
                    return Err(Error::model(format!(
                        "{context}: pool needs {tokens} token rows, got {rows} (pooled twice?)"
                    )));
                }
                Ok((1, w))
            }
        }
    }
}

fn shape(m: &Array2<f64>, rows: usize, cols: usize, context: &str) -> Result<()> {
    if m.nrows() != rows {
        return Err(Error::dims(format!("{context} rows"), rows, m.nrows()));
    }
    if m.ncols() != cols {
        return Err(Error::dims(format!("{context} columns"), cols, m.ncols()));
    }
    Ok(())
}

fn opt_len(b: &Option<Array1<f64>>, len: usize, context: &str) -> Result<()> {
    match b {
        Some(b) if b.len() != len => Err(Error::dims(context.to_string(), len, b.len())),
        _ => Ok(()),
    }
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

/// `x W^T + 1 b^T`: the token-wise linear map on the rows of `x`.
pub fn rowwise_linear(x: ArrayView2<f64>, w: &Array2<f64>, b: Option<&Array1<f64>>) -> Array2<f64> {
    let mut y = x.dot(&w.t());
    if let Some(b) = b {
        y += b;
    }
    y
}
