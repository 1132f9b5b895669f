//! Token-level adapters: graphs whose values are `T x w` token matrices (one row per
//! token), as in CryptPEFT's one-way-communication (OWC) side network.
//!
//! A [`TokenAdapter`] is an ordered DAG of [`TokenOp`]s on named `T x d` inputs (the
//! backbone's token states at tapped layers). Token-wise maps (linear, LoRA, affine,
//! polynomial activation) act on every row independently; [`TokenOp::LinearAttention`]
//! mixes tokens with a learned `T x T` matrix instead of a softmax; [`TokenOp::Pool`]
//! reduces the `T` rows to one (`[CLS]` or mean). The output is the last node.
//!
//! [`owc_adapter`] builds CryptPEFT's architecture (the recurrence over `s` tapped layers,
//! each with a LoRA-down / encoder block / LoRA-up adapter), [`random_owc`] a seeded random
//! one, and [`evaluate_tokens`] is the `f64` twin of every encrypted run.

use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};
use rand::Rng;

use super::activation::{Activation, ActivationFn};
use super::layer::{InputSpec, NodeRef};
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

/// One node of a token graph.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenNode {
    /// Unique name (shared namespace with the inputs).
    pub name: String,
    /// The operation.
    pub op: TokenOp,
    /// Operands: inputs or earlier nodes.
    pub inputs: Vec<NodeRef>,
    /// Output shape `(rows, width)`.
    pub shape: (usize, usize),
}

/// A token-level adapter: a shape-checked DAG of [`TokenOp`]s on `T x d` inputs; the last
/// node is the output. Immutable once built.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenAdapter {
    tokens: usize,
    inputs: Vec<InputSpec>,
    nodes: Vec<TokenNode>,
}

impl TokenAdapter {
    /// Number of tokens `T` of every input.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
    /// The inputs (each `T x dim`), in evaluation order.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }
    /// The nodes in topological order; the last is the output.
    pub fn nodes(&self) -> &[TokenNode] {
        &self.nodes
    }
    /// Output shape `(rows, width)`.
    pub fn output_shape(&self) -> (usize, usize) {
        self.nodes.last().map_or((0, 0), |n| n.shape)
    }
    /// Shape of an input or node value.
    pub fn shape_of(&self, r: NodeRef) -> Option<(usize, usize)> {
        match r {
            NodeRef::Input(i) => self.inputs.get(i).map(|s| (self.tokens, s.dim)),
            NodeRef::Node(j) => self.nodes.get(j).map(|n| n.shape),
        }
    }
    /// Name of an input or node.
    pub fn name_of(&self, r: NodeRef) -> &str {
        match r {
            NodeRef::Input(i) => self.inputs.get(i).map_or("?", |s| s.name.as_str()),
            NodeRef::Node(j) => self.nodes.get(j).map_or("?", |n| n.name.as_str()),
        }
    }
    /// Total number of scalar parameters.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.param_count()).sum()
    }
    /// A multi-line description: one line per node.
    pub fn summary(&self) -> String {
        let ins: Vec<String> = self
            .inputs
            .iter()
            .map(|i| format!("{}[{}x{}]", i.name, self.tokens, i.dim))
            .collect();
        let (r, w) = self.output_shape();
        let mut s = format!(
            "token adapter: inputs {} -> output [{r}x{w}], {} nodes, {} parameters\n",
            ins.join(", "),
            self.nodes.len(),
            self.param_count()
        );
        for n in &self.nodes {
            let args: Vec<&str> = n.inputs.iter().map(|&r| self.name_of(r)).collect();
            s.push_str(&format!(
                "  {} = {}({}) -> [{}x{}]\n",
                n.name,
                n.op.kind(),
                args.join(", "),
                n.shape.0,
                n.shape.1
            ));
        }
        s
    }
}

/// Builds a [`TokenAdapter`] node by node, checking shapes as it goes.
#[derive(Clone, Debug)]
pub struct TokenAdapterBuilder {
    tokens: usize,
    inputs: Vec<InputSpec>,
    nodes: Vec<TokenNode>,
}

impl TokenAdapterBuilder {
    /// A builder for inputs of `tokens` rows.
    pub fn new(tokens: usize) -> Self {
        TokenAdapterBuilder {
            tokens,
            inputs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i.name == name) || self.nodes.iter().any(|n| n.name == name)
    }

    /// Declares an input `T x dim`.
    ///
    /// # Errors
    /// [`Error::Model`] for a duplicate name, a zero width, or an input after a node.
    pub fn input(&mut self, name: &str, dim: usize) -> Result<NodeRef> {
        if dim == 0 {
            return Err(Error::model(format!(
                "token input {name}: width must be >= 1"
            )));
        }
        if self.name_taken(name) {
            return Err(Error::model(format!("duplicate name {name:?}")));
        }
        self.inputs.push(InputSpec {
            name: name.to_string(),
            dim,
        });
        Ok(NodeRef::Input(self.inputs.len() - 1))
    }

    /// Appends a node.
    ///
    /// # Errors
    /// Shape and parameter errors naming the node; unknown operands.
    pub fn node(&mut self, name: &str, op: TokenOp, inputs: &[NodeRef]) -> Result<NodeRef> {
        if self.name_taken(name) {
            return Err(Error::model(format!("duplicate name {name:?}")));
        }
        let mut shapes = Vec::with_capacity(inputs.len());
        for &r in inputs {
            let sh = match r {
                NodeRef::Input(i) => self.inputs.get(i).map(|s| (self.tokens, s.dim)),
                NodeRef::Node(j) => self.nodes.get(j).map(|n| n.shape),
            };
            shapes.push(sh.ok_or_else(|| {
                Error::model(format!("node {name}: operand {r:?} does not exist (yet)"))
            })?);
        }
        let shape = op.out_shape(&shapes, self.tokens, &format!("node {name}"))?;
        self.nodes.push(TokenNode {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
            shape,
        });
        Ok(NodeRef::Node(self.nodes.len() - 1))
    }

    /// Finishes the graph.
    ///
    /// # Errors
    /// [`Error::Model`] when there are no tokens, inputs or nodes, or when an input or node
    /// does not contribute to the output.
    pub fn build(self) -> Result<TokenAdapter> {
        if self.tokens == 0 {
            return Err(Error::model("a token adapter needs at least 1 token"));
        }
        if self.inputs.is_empty() || self.nodes.is_empty() {
            return Err(Error::model(
                "a token adapter needs at least one input and one node",
            ));
        }
        let mut used_in = vec![false; self.inputs.len()];
        let mut used = vec![false; self.nodes.len()];
        let last = self.nodes.len() - 1;
        used[last] = true;
        for j in (0..self.nodes.len()).rev() {
            if !used[j] {
                return Err(Error::model(format!(
                    "node {} does not contribute to the output",
                    self.nodes[j].name
                )));
            }
            for &r in &self.nodes[j].inputs {
                match r {
                    NodeRef::Input(i) => used_in[i] = true,
                    NodeRef::Node(k) => used[k] = true,
                }
            }
        }
        if let Some(i) = used_in.iter().position(|u| !u) {
            return Err(Error::model(format!(
                "input {} does not contribute to the output",
                self.inputs[i].name
            )));
        }
        Ok(TokenAdapter {
            tokens: self.tokens,
            inputs: self.inputs,
            nodes: self.nodes,
        })
    }
}

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
    if inputs.len() != adapter.inputs.len() {
        return Err(Error::dims(
            "token adapter inputs",
            adapter.inputs.len(),
            inputs.len(),
        ));
    }
    for (spec, x) in adapter.inputs.iter().zip(inputs) {
        if x.dim() != (adapter.tokens, spec.dim) {
            return Err(Error::model(format!(
                "input {}: expected {}x{}, got {}x{}",
                spec.name,
                adapter.tokens,
                spec.dim,
                x.nrows(),
                x.ncols()
            )));
        }
    }
    let mut values: Vec<Array2<f64>> = Vec::with_capacity(adapter.nodes.len());
    let mut outside = Vec::new();
    for node in &adapter.nodes {
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

/// One CryptPEFT adapter `A_i` at width `r` on `d`-wide tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct OwcBlock {
    /// `lora_A`: `r x d`, with optional bias.
    pub down: (Array2<f64>, Option<Array1<f64>>),
    /// First LayerNorm, folded to an affine map (mul, add) of width `r`.
    pub norm1: (Array1<f64>, Array1<f64>),
    /// The linear attention.
    pub attention: LinearAttention,
    /// Second LayerNorm (affine).
    pub norm2: (Array1<f64>, Array1<f64>),
    /// MLP first layer `hidden x r` + bias.
    pub fc1: (Array2<f64>, Option<Array1<f64>>),
    /// The activation (a polynomial ReLU/GELU).
    pub act: Activation,
    /// MLP second layer `r x hidden` + bias.
    pub fc2: (Array2<f64>, Option<Array1<f64>>),
    /// `lora_B`: `d x r`, with optional bias.
    pub up: (Array2<f64>, Option<Array1<f64>>),
    /// The scaler on `lora_B`'s output (CryptPEFT: 0.5).
    pub up_scale: f64,
}

/// CryptPEFT's OWC network as a token graph.
///
/// Inputs `h_1 .. h_s` (the token states entering the `s` tapped layers, `T x d` each), and
/// `h_final` (the backbone's last hidden state) when `final_input` is true. For tap `i`:
/// `in_i = out_{i-1} + h_i` (`in_1 = h_1`), `out_i = A_i(in_i) + in_i`; the output is
/// `head(pool(norm(h_final + out_s)))` (or of `out_s` without `final_input`).
///
/// # Errors
/// Shape errors from the builder, naming the node.
#[allow(clippy::too_many_arguments)]
pub fn owc_adapter(
    tokens: usize,
    d: usize,
    blocks: &[OwcBlock],
    final_input: bool,
    final_norm: Option<(Array1<f64>, Array1<f64>)>,
    pooling: Pooling,
    head: (Array2<f64>, Option<Array1<f64>>),
) -> Result<TokenAdapter> {
    if blocks.is_empty() {
        return Err(Error::model(
            "an OWC adapter needs at least one tapped layer",
        ));
    }
    let mut b = TokenAdapterBuilder::new(tokens);
    let taps: Vec<NodeRef> = (0..blocks.len())
        .map(|i| b.input(&format!("h{}", i + 1), d))
        .collect::<Result<_>>()?;
    let final_h = if final_input {
        Some(b.input("h_final", d)?)
    } else {
        None
    };
    let mut out: Option<NodeRef> = None;
    for (i, blk) in blocks.iter().enumerate() {
        let p = format!("a{}", i + 1);
        let inp = match out {
            None => taps[i],
            Some(o) => b.node(&format!("{p}.in"), TokenOp::Add, &[o, taps[i]])?,
        };
        let x1 = b.node(
            &format!("{p}.down"),
            TokenOp::Linear {
                weight: blk.down.0.clone(),
                bias: blk.down.1.clone(),
            },
            &[inp],
        )?;
        let n1 = b.node(
            &format!("{p}.norm1"),
            TokenOp::Affine {
                mul: blk.norm1.0.clone(),
                add: blk.norm1.1.clone(),
            },
            &[x1],
        )?;
        let at = b.node(
            &format!("{p}.attn"),
            TokenOp::LinearAttention(Box::new(blk.attention.clone())),
            &[n1],
        )?;
        let x2 = b.node(&format!("{p}.res1"), TokenOp::Add, &[x1, at])?;
        let n2 = b.node(
            &format!("{p}.norm2"),
            TokenOp::Affine {
                mul: blk.norm2.0.clone(),
                add: blk.norm2.1.clone(),
            },
            &[x2],
        )?;
        let f1 = b.node(
            &format!("{p}.fc1"),
            TokenOp::Linear {
                weight: blk.fc1.0.clone(),
                bias: blk.fc1.1.clone(),
            },
            &[n2],
        )?;
        let ac = b.node(&format!("{p}.act"), TokenOp::Poly(blk.act.clone()), &[f1])?;
        let f2 = b.node(
            &format!("{p}.fc2"),
            TokenOp::Linear {
                weight: blk.fc2.0.clone(),
                bias: blk.fc2.1.clone(),
            },
            &[ac],
        )?;
        let x3 = b.node(&format!("{p}.res2"), TokenOp::Add, &[x2, f2])?;
        let (mut w, bias) = blk.up.clone();
        w.mapv_inplace(|v| v * blk.up_scale);
        let bias = bias.map(|v| v * blk.up_scale);
        let up = b.node(
            &format!("{p}.up"),
            TokenOp::Linear { weight: w, bias },
            &[x3],
        )?;
        out = Some(b.node(&format!("{p}.out"), TokenOp::Add, &[up, inp])?);
    }
    let mut cur = out.ok_or_else(|| Error::model("no tapped layer"))?;
    if let Some(h) = final_h {
        cur = b.node("final.res", TokenOp::Add, &[h, cur])?;
    }
    if let Some((mul, add)) = final_norm {
        cur = b.node("final.norm", TokenOp::Affine { mul, add }, &[cur])?;
    }
    let pooled = b.node("pool", TokenOp::Pool(pooling), &[cur])?;
    b.node(
        "head",
        TokenOp::Linear {
            weight: head.0,
            bias: head.1,
        },
        &[pooled],
    )?;
    b.build()
}

fn uniform_matrix(rng: &mut impl Rng, rows: usize, cols: usize, bound: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-bound..=bound))
}

fn uniform_vector(rng: &mut impl Rng, len: usize, bound: f64) -> Array1<f64> {
    Array1::from_shape_simple_fn(len, || rng.random_range(-bound..=bound))
}

fn weight(rng: &mut impl Rng, out: usize, fan_in: usize) -> Array2<f64> {
    uniform_matrix(rng, out, fan_in, 1.0 / (fan_in as f64).sqrt())
}

/// Sizes of [`random_owc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwcShape {
    /// Tokens `T`.
    pub tokens: usize,
    /// Backbone width `d`.
    pub d: usize,
    /// Adapter width `r`.
    pub r: usize,
    /// Attention heads (divide `r`).
    pub heads: usize,
    /// Tapped layers `s`.
    pub taps: usize,
    /// Classes.
    pub classes: usize,
}

/// A seeded random OWC adapter (weights `U(+-1/sqrt(fan_in))`, LayerNorm-like affine maps
/// near the identity, mixing near `I / 2 + U(+-1/T)`, degree-7 ReLU on `[-4, 4]`) with a
/// `h_final` input, a final norm and mean pooling. Intended inputs: uniform in
/// `[-1, 1]` ([`uniform_tokens`]). Random, not trained: for shapes and numerics.
///
/// # Errors
/// [`Error::Model`] for a zero size or heads not dividing `r`.
pub fn random_owc(rng: &mut impl Rng, sh: OwcShape) -> Result<TokenAdapter> {
    let OwcShape {
        tokens: t,
        d,
        r,
        heads,
        taps,
        classes,
    } = sh;
    if [t, d, r, heads, taps, classes].contains(&0) {
        return Err(Error::model("random_owc: every size must be at least 1"));
    }
    let act = Activation::fit(ActivationFn::Relu, -4.0, 4.0, 7)?;
    let norm = |rng: &mut dyn FnMut() -> f64, w: usize| {
        (
            Array1::from_shape_simple_fn(w, || 1.0 + 0.2 * rng()),
            Array1::from_shape_simple_fn(w, || 0.1 * rng()),
        )
    };
    let mut blocks = Vec::with_capacity(taps);
    for _ in 0..taps {
        let mut u = || rng.random_range(-1.0..=1.0);
        let norm1 = norm(&mut u, r);
        let norm2 = norm(&mut u, r);
        let mut mix = uniform_matrix(rng, t, t, 1.0 / t as f64);
        for i in 0..t {
            mix[[i, i]] += 0.5;
        }
        let attention = LinearAttention {
            heads,
            qkv: weight(rng, 3 * r, r),
            qkv_bias: None,
            scale: 1.0 / ((r / heads.max(1)).max(1) as f64).sqrt(),
            mix,
            mix_bias: Some(uniform_vector(rng, t, 0.1 / t as f64)),
            proj: weight(rng, r, r),
            proj_bias: Some(uniform_vector(rng, r, 0.1)),
        };
        blocks.push(OwcBlock {
            down: (weight(rng, r, d), Some(uniform_vector(rng, r, 0.1))),
            norm1,
            attention,
            norm2,
            fc1: (weight(rng, r, r), Some(uniform_vector(rng, r, 0.1))),
            act: act.clone(),
            fc2: (weight(rng, r, r), Some(uniform_vector(rng, r, 0.1))),
            up: (weight(rng, d, r), Some(uniform_vector(rng, d, 0.1))),
            up_scale: 0.5,
        });
    }
    let mut u = || rng.random_range(-1.0..=1.0);
    let final_norm = norm(&mut u, d);
    let head = (
        weight(rng, classes, d),
        Some(uniform_vector(rng, classes, 0.1)),
    );
    owc_adapter(t, d, &blocks, true, Some(final_norm), Pooling::Mean, head)
}

/// `samples` random inputs for `adapter`, each entry uniform in `[-1, 1]`: `out[s][i]` is
/// input `i` of sample `s` (`T x dim_i`).
pub fn uniform_tokens(
    rng: &mut impl Rng,
    adapter: &TokenAdapter,
    samples: usize,
) -> Vec<Vec<Array2<f64>>> {
    (0..samples)
        .map(|_| {
            adapter
                .inputs()
                .iter()
                .map(|i| uniform_matrix(rng, adapter.tokens(), i.dim, 1.0))
                .collect()
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::unreachable)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::SeedableRng;

    fn close(a: &Array2<f64>, b: &Array2<f64>) {
        assert_eq!(a.dim(), b.dim());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    fn one(b: TokenAdapterBuilder, x: Vec<Array2<f64>>) -> Array2<f64> {
        let ad = b.build().unwrap();
        evaluate_tokens(&ad, &x).unwrap().output
    }

    #[test]
    fn tokenwise_ops_by_hand() {
        let x = array![[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]];
        // linear: W = [[1, 1], [2, -1], [0, 3]], b = [1, 0, -1]
        let mut b = TokenAdapterBuilder::new(3);
        let i = b.input("x", 2).unwrap();
        let w = array![[1.0, 1.0], [2.0, -1.0], [0.0, 3.0]];
        b.node(
            "l",
            TokenOp::Linear {
                weight: w,
                bias: Some(array![1.0, 0.0, -1.0]),
            },
            &[i],
        )
        .unwrap();
        let y = one(b, vec![x.clone()]);
        close(
            &y,
            &array![[4.0, 0.0, 5.0], [3.0, 7.0, -4.0], [1.5, 1.0, -1.0]],
        );

        // low rank: A = [[1, -1]], B = [[2], [1]], scale 0.5
        let mut b = TokenAdapterBuilder::new(3);
        let i = b.input("x", 2).unwrap();
        b.node(
            "lr",
            TokenOp::LowRank {
                a: array![[1.0, -1.0]],
                b: array![[2.0], [1.0]],
                scale: 0.5,
                bias: None,
            },
            &[i],
        )
        .unwrap();
        close(
            &one(b, vec![x.clone()]),
            &array![[-1.0, -0.5], [4.0, 2.0], [0.5, 0.25]],
        );

        // affine, then square, then residual, then scale
        let mut b = TokenAdapterBuilder::new(3);
        let i = b.input("x", 2).unwrap();
        let a = b
            .node(
                "aff",
                TokenOp::Affine {
                    mul: array![2.0, -1.0],
                    add: array![0.0, 1.0],
                },
                &[i],
            )
            .unwrap();
        let sq = Activation::fit(ActivationFn::Square, -10.0, 10.0, 2).unwrap();
        let p = b.node("sq", TokenOp::Poly(sq), &[a]).unwrap();
        let r = b.node("res", TokenOp::Add, &[p, i]).unwrap();
        b.node("s", TokenOp::Scale(2.0), &[r]).unwrap();
        // aff: [[2,-1],[6,2],[1,1]]; sq: [[4,1],[36,4],[1,1]]; +x: [[5,3],[39,3],[1.5,1]]
        close(
            &one(b, vec![x.clone()]),
            &array![[10.0, 6.0], [78.0, 6.0], [3.0, 2.0]],
        );

        // pooling
        for (pool, want) in [
            (Pooling::Cls, array![[1.0, 2.0]]),
            (Pooling::Mean, array![[1.5, 1.0 / 3.0]]),
        ] {
            let mut b = TokenAdapterBuilder::new(3);
            let i = b.input("x", 2).unwrap();
            b.node("p", TokenOp::Pool(pool), &[i]).unwrap();
            close(&one(b, vec![x.clone()]), &want);
        }
    }

    #[test]
    fn linear_attention_by_hand() {
        // T = 2, r = 2, one head: qkv picks Q = x, K = x, V = x; scale 1; mix = [[1, 0], [1, 1]]
        // with bias [0, 1]; proj = identity.
        let x = array![[1.0, 0.0], [1.0, 2.0]];
        let mut qkv = Array2::zeros((6, 2));
        for blk in 0..3 {
            qkv[[2 * blk, 0]] = 1.0;
            qkv[[2 * blk + 1, 1]] = 1.0;
        }
        let at = LinearAttention {
            heads: 1,
            qkv,
            qkv_bias: None,
            scale: 1.0,
            mix: array![[1.0, 0.0], [1.0, 1.0]],
            mix_bias: Some(array![0.0, 1.0]),
            proj: Array2::eye(2),
            proj_bias: None,
        };
        // S = x x^T = [[1, 1], [1, 5]]; S' = S M^T + [0, 1] = [[1, 3], [1, 7]];
        // S' V = [[1*1+3*1, 3*2], [1+7, 14]] = [[4, 6], [8, 14]]
        close(&at.apply(x.view()), &array![[4.0, 6.0], [8.0, 14.0]]);

        // two heads of width 1: head h sees column h only.
        let mut at2 = at.clone();
        at2.heads = 2;
        // head 0: q = k = v = [1, 1]: S = [[1,1],[1,1]], S' = [[1,3],[1,3]], S'V = [4, 4]
        // head 1: q = k = v = [0, 2]: S = [[0,0],[0,4]], S' = [[0,1],[0,5]], S'V = [2, 10]
        close(&at2.apply(x.view()), &array![[4.0, 2.0], [4.0, 10.0]]);
    }

    #[test]
    fn owc_recurrence_matches_a_manual_loop() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sh = OwcShape {
            tokens: 5,
            d: 6,
            r: 4,
            heads: 2,
            taps: 2,
            classes: 3,
        };
        let ad = random_owc(&mut rng, sh).unwrap();
        let xs = uniform_tokens(&mut rng, &ad, 1).remove(0);
        let got = evaluate_tokens(&ad, &xs).unwrap().output;
        // manual: rebuild each block's op sequence from the nodes
        let node = |n: &str| {
            ad.nodes()
                .iter()
                .find(|x| x.name == n)
                .map(|x| x.op.clone())
                .unwrap()
        };
        let lin = |op: TokenOp, x: &Array2<f64>| match op {
            TokenOp::Linear { weight, bias } => rowwise_linear(x.view(), &weight, bias.as_ref()),
            TokenOp::Affine { mul, add } => x * &mul + &add,
            TokenOp::Poly(a) => x.mapv(|v| a.eval(v)),
            TokenOp::LinearAttention(at) => at.apply(x.view()),
            _ => unreachable!(),
        };
        let mut out: Option<Array2<f64>> = None;
        for i in 1..=2 {
            let inp = match &out {
                None => xs[0].clone(),
                Some(o) => o + &xs[i - 1],
            };
            let p = format!("a{i}");
            let x1 = lin(node(&format!("{p}.down")), &inp);
            let at = lin(
                node(&format!("{p}.attn")),
                &lin(node(&format!("{p}.norm1")), &x1),
            );
            let x2 = &x1 + &at;
            let h = lin(node(&format!("{p}.norm2")), &x2);
            let h = lin(node(&format!("{p}.fc1")), &h);
            let h = lin(node(&format!("{p}.act")), &h);
            let x3 = &x2 + &lin(node(&format!("{p}.fc2")), &h);
            out = Some(lin(node(&format!("{p}.up")), &x3) + &inp);
        }
        let fin = lin(node("final.norm"), &(&xs[2] + &out.unwrap()));
        let pooled = fin.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
        let want = lin(node("head"), &pooled);
        close(&got, &want);
        assert_eq!(got.dim(), (1, 3));
    }

    #[test]
    fn shape_errors_name_the_node() {
        let mut b = TokenAdapterBuilder::new(4);
        let i = b.input("x", 3).unwrap();
        let p = b.node("p", TokenOp::Pool(Pooling::Cls), &[i]).unwrap();
        let e = b
            .node("p2", TokenOp::Pool(Pooling::Mean), &[p])
            .unwrap_err();
        assert!(e.to_string().contains("p2"), "{e}");
        let e = b
            .node(
                "l",
                TokenOp::Linear {
                    weight: Array2::zeros((2, 5)),
                    bias: None,
                },
                &[i],
            )
            .unwrap_err();
        assert!(e.to_string().contains("node l"), "{e}");
        let e = evaluate_tokens(
            &{
                let mut b = TokenAdapterBuilder::new(4);
                let i = b.input("x", 3).unwrap();
                b.node("s", TokenOp::Scale(1.0), &[i]).unwrap();
                b.build().unwrap()
            },
            &[Array2::zeros((3, 3))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("4x3"), "{e}");
    }
}
