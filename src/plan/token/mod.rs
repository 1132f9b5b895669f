//! Encrypted evaluation of token-level adapters ([`TokenAdapter`]) for one sample (latency).
//!
//! # Layout: column packing
//! A `T x w` token matrix is `w` ciphertexts, one per feature column. Column `j` holds the
//! `T` tokens in slots `0..T`, zero-padded to `T'` = the next power of two, and the block
//! of `T'` slots is repeated over all `N/2` slots (period `T'`). The client prepares this
//! layout for free; the server then needs:
//! - **token-wise maps** (linear, LoRA, affine, scale): constant products and additions
//!   across ciphertexts, no rotation; one level. Every output column is
//!   `sum_i w_oi x_i` with the constants encoded at the scale that lands on exactly the
//!   default scale after the rescale.
//! - **polynomial activations**: per column, the interval map (one level) and the Chebyshev
//!   evaluation (`ceil(log2(deg + 1))` levels, `deg`-ish key switches).
//! - **the `T x T` token mixing**: a plaintext matrix on the slot axis, applied by the
//!   diagonal method with baby-step giant-step ([`LinearTransform`]); the period `T'` makes
//!   the rotations cyclic over the tokens. One level, `~2 sqrt(T')` rotations per column.
//! - **linear attention**, evaluated by associativity: with `U = M^T V` (the mixing on the
//!   token axis), `S' V = (Q K^T) M^T V + 1 (m^T V) = Q (K^T U) + 1 (m^T V)`, so per head
//!   the `dh x dh` matrix `G = K^T U` is computed with ciphertext-ciphertext products
//!   `K_c * U_e` and a rotate-and-sum over the tokens (`log2 T'` rotations), then
//!   `out_e = sum_c Q_c * G_ce` (ciphertext-ciphertext products, one relinearization per
//!   output column). The `T x T` scores are never materialised. Levels: qkv 1, mixing 1,
//!   `K^T U` 1, `Q G` 1, proj 1.
//! - **pooling**: a plaintext mask (`1/T` on real tokens for mean, the first token for CLS,
//!   zero on padding) and a rotate-and-sum: one level, `log2 T'` rotations. The pooled row
//!   is then replicated in every slot.
//! - **residuals**: additions after dropping to the lower level.
//!
//! Padding tokens (`T < T'`) carry garbage after biases, but never reach a real token: the
//! mixing matrix, the mixing bias and the pooling mask are zero there.
//!
//! The level schedule depends on the structure only ([`TokenPlan::depth_of`]); the plan
//! lists the rotations and whether a relinearization key is needed, so keygen follows it.

use std::collections::BTreeSet;

use ndarray::Array2;
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
    /// [`Error::Params`] when `T'` (the next power of two above `T`) exceeds the slots, or
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
        let mut levels = Vec::with_capacity(adapter.nodes().len());
        let mut steps = BTreeSet::new();
        let mut relin = false;
        for n in adapter.nodes() {
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

    /// Encrypts one sample: `inputs[i]` is `T x dim_i`; returns one ciphertext per column
    /// of every input, at [`TokenPlan::input_level`] and the default scale. Cost: one
    /// encoding and encryption per column.
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
            let mut cols = Vec::with_capacity(spec.dim);
            for j in 0..spec.dim {
                let v = self.column_slots(|t| x[[t, j]]);
                let pt = encoder.encode(&v, self.input_level, scale)?;
                cols.push(encryptor.encrypt(&pt, rng)?);
            }
            out.push(cols);
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
        if cols.len() != w {
            return Err(Error::dims("token adapter output columns", w, cols.len()));
        }
        let mut out = Array2::zeros((rows, w));
        for (j, ct) in cols.iter().enumerate() {
            let v = encoder.decode(&decryptor.decrypt(ct)?)?;
            for t in 0..rows {
                out[[t, j]] = v.get(t).copied().unwrap_or(0.0);
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
        for (spec, cols) in adapter.inputs().iter().zip(inputs) {
            if cols.len() != spec.dim {
                return Err(Error::dims(
                    format!("columns of input {}", spec.name),
                    spec.dim,
                    cols.len(),
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
            let out = run.node(&node.op, &args).map_err(|e| Error::InvalidValue {
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

    /// Columns brought to their lowest common level (the scale is unchanged).
    fn aligned(&self, cols: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        let level = cols.iter().map(|c| c.level()).min().unwrap_or(0);
        cols.iter()
            .map(|c| self.ev.drop_to_level(c, level))
            .collect()
    }

    /// `y_o = sum_i w[o, i] x_i + b_o` landing at scale `target` one level down.
    fn linear(
        &self,
        x: &[Ciphertext],
        rows: &[Vec<f64>],
        bias: Option<&[f64]>,
        target: f64,
    ) -> Result<Vec<Ciphertext>> {
        let x = self.aligned(x)?;
        let first = x
            .first()
            .ok_or_else(|| Error::model("linear map on zero columns"))?;
        let level = first.level();
        if level == 0 {
            return Err(Error::LevelExhausted {
                op: "token-wise linear map".into(),
                needed: 1,
                available: 0,
            });
        }
        let cs = target * self.q(level)? / first.scale();
        rows.par_iter()
            .enumerate()
            .map(|(o, w)| {
                let mut acc: Option<Ciphertext> = None;
                for (xi, &wi) in x.iter().zip(w) {
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
                    let bo = b.get(o).copied().unwrap_or(0.0);
                    if bo != 0.0 {
                        self.ev.add_const_assign(&mut y, bo)?;
                    }
                }
                Ok(y)
            })
            .collect()
    }

    fn rotate_sum(&self, ct: &mut Ciphertext) -> Result<()> {
        for s in sum_steps(self.plan.period) {
            let r = self.ev.rotate(ct, s)?;
            self.ev.add_assign(ct, &r)?;
        }
        Ok(())
    }

    /// `ct ⊙ mask` (a column pattern), rescaled to `target`.
    fn mask(
        &self,
        ct: &Ciphertext,
        pattern: impl Fn(usize) -> f64,
        target: f64,
    ) -> Result<Ciphertext> {
        let level = ct.level();
        let pscale = target * self.q(level)? / ct.scale();
        let pt = self
            .encoder
            .encode(&self.plan.column_slots(pattern), level, pscale)?;
        let mut y = self.ev.mul_plain(ct, &pt)?;
        self.ev.rescale_assign(&mut y)?;
        Ok(y)
    }

    fn node(&self, op: &TokenOp, args: &[&[Ciphertext]]) -> Result<Vec<Ciphertext>> {
        let x = args
            .first()
            .copied()
            .ok_or_else(|| Error::model("node without operands"))?;
        let delta = self.delta;
        match op {
            TokenOp::Linear { weight, bias } => {
                let rows: Vec<Vec<f64>> = weight.rows().into_iter().map(|r| r.to_vec()).collect();
                let b = bias.as_ref().map(|b| b.to_vec());
                self.linear(x, &rows, b.as_deref(), delta)
            }
            TokenOp::LowRank { a, b, scale, bias } => {
                let w = b.dot(a) * *scale;
                let rows: Vec<Vec<f64>> = w.rows().into_iter().map(|r| r.to_vec()).collect();
                let bb = bias.as_ref().map(|b| b.to_vec());
                self.linear(x, &rows, bb.as_deref(), delta)
            }
            TokenOp::Affine { mul, add } => {
                let x = self.aligned(x)?;
                x.par_iter()
                    .enumerate()
                    .map(|(i, c)| self.scalar_affine(c, mul[i], add[i], delta))
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
                x.par_iter()
                    .map(|c| {
                        let mut y = match pool {
                            Pooling::Cls => {
                                self.mask(c, |t| if t == 0 { 1.0 } else { 0.0 }, delta)?
                            }
                            Pooling::Mean => self.mask(c, |_| 1.0 / tokens as f64, delta)?,
                        };
                        self.rotate_sum(&mut y)?;
                        Ok(y)
                    })
                    .collect()
            }
            TokenOp::LinearAttention(at) => self.attention(at, x),
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

    fn attention(&self, at: &LinearAttention, x: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
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
        let row = |k: usize, f: f64| -> Vec<f64> { at.qkv.row(k).iter().map(|v| v * f).collect() };
        let bias = |k: usize, f: f64| -> f64 { at.qkv_bias.as_ref().map_or(0.0, |b| b[k] * f) };
        // K and V at (l, delta)
        let kv_rows: Vec<Vec<f64>> = (r..3 * r).map(|k| row(k, 1.0)).collect();
        let kv_bias: Vec<f64> = (r..3 * r).map(|k| bias(k, 1.0)).collect();
        let kv = self.linear(&x, &kv_rows, Some(&kv_bias), delta)?;
        let (k_cols, v_cols) = kv.split_at(r);
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
        let lt = LinearTransform::new(
            self.encoder,
            &diags,
            l,
            delta * self.q(l)? / delta,
            baby_step_for(period),
        )?;
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
                        let mut b = self.mask(v, |t| m[t], delta)?;
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
        // G[h][c][e] = sum_t K_c[t] U_e[t], replicated, at (l - 2, delta^2 / q_{l-1})
        let pairs: Vec<(usize, usize, usize)> = (0..at.heads)
            .flat_map(|h| (0..dh).flat_map(move |c| (0..dh).map(move |e| (h, c, e))))
            .collect();
        let g: Vec<Ciphertext> = pairs
            .par_iter()
            .map(|&(h, c, e)| {
                let mut p = self.ev.mul_relin(&k_low[h * dh + c], &u_cols[h * dh + e])?;
                self.ev.rescale_assign(&mut p)?;
                self.rotate_sum(&mut p)?;
                Ok(p)
            })
            .collect::<Result<_>>()?;
        let s_g = g
            .first()
            .map(|c| c.scale())
            .ok_or_else(|| Error::model("attention without heads"))?;
        // Q at level l with the scale that makes Q * G land on delta after one rescale
        let s_q = delta * self.q(l - 2)? / s_g;
        let q_rows: Vec<Vec<f64>> = (0..r).map(|k| row(k, at.scale)).collect();
        let q_bias: Vec<f64> = (0..r).map(|k| bias(k, at.scale)).collect();
        let q_cols: Vec<Ciphertext> = self
            .linear(&x, &q_rows, Some(&q_bias), s_q)?
            .iter()
            .map(|c| self.ev.drop_to_level(c, l - 2))
            .collect::<Result<_>>()?;
        let heads_out: Vec<Ciphertext> = (0..r)
            .into_par_iter()
            .map(|col| {
                let h = col / dh;
                let e = col % dh;
                let mut acc: Option<Ciphertext> = None;
                for c in 0..dh {
                    let gi = (h * dh + c) * dh + e;
                    let p = self.ev.mul(&q_cols[h * dh + c], &g[gi])?;
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
        let p_rows: Vec<Vec<f64>> = at.proj.rows().into_iter().map(|r| r.to_vec()).collect();
        let p_bias = at.proj_bias.as_ref().map(|b| b.to_vec());
        self.linear(&heads_out, &p_rows, p_bias.as_deref(), delta)
    }
}
