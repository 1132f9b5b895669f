//! Batch layout for token adapters: many samples per ciphertext (throughput).
//!
//! # Layout
//! With `T'` the next power of two above `T`, every sample gets a block of `W = 2T'` slots
//! (its `T` tokens, then zeros), `B'` = the batch padded to a power of two, and the
//! `N/2` slots hold `R = N / (2 W B')` replicas of the `B'` blocks (the *column blocks*):
//! slot `t + W (j + B' i)` is token `t` of sample `j` in column block `i`.
//! - **packed** (inputs and the residual stream, width `d`): ciphertext `a` holds column
//!   `a R + i` in column block `i`: `ceil(d / R)` ciphertexts per tapped layer and batch.
//! - **columns** (the adapter's narrow values): one ciphertext per column, the same column
//!   in every column block (replicated `R` times); only the slots `t < T` of a block are
//!   meaningful (the padding slots carry whatever biases put there and are never read into a
//!   real slot: every product that moves values across slots is masked).
//!
//! The level schedule is the latency plan's ([`TokenPlan`]): same depth, so the parameters
//! [`select_token`](crate::select::token::select_token) picks serve both; only the rotations
//! differ ([`TokenBatchPlan::rotation_steps`]).
//!
//! # Operations (cost per batch, not per sample)
//! - linear maps: columns -> columns by constant products (no rotation); columns -> packed
//!   by one plaintext product per input column and output ciphertext; packed -> columns by
//!   one plaintext product per input ciphertext and output column, then a rotate-and-sum over
//!   the column blocks (`log2 R` rotations per output column).
//! - affine, scale, polynomials, residuals: as in the latency layout.
//! - pooling: a plaintext mask (zero on padding) and a rotate-and-sum over `T'` slots
//!   (`log2 T'`): the pooled row sits on the first slot of every sample's block.
//! - **linear attention** (between column values), by associativity as in the latency plan:
//!   - `V_e` by constant products; the mixing `U_e[t] = sum_j M[j, t] V_e[j]` inside each
//!     block by one rotation back by `T' - 1` and a `2T'`-diagonal transform (BSGS,
//!     `~2 sqrt(2T')` rotations) whose diagonals are zero wherever a read would leave the
//!     sample's real tokens, so `U_e` is zero on padding;
//!     This runs on *chunks*: `V` holds `cc = min(R, dh)` head columns per ciphertext,
//!     column `c0 + i` in column block `i` (plaintext products on the input columns), so
//!     the mixing costs `heads ceil(dh / cc)` transforms instead of `r`;
//!   - `K_c` and `Q_c` in replicated columns (constant products);
//!   - per chunk and head column `c`: one relinearized product `K_c ⊙ U`, one rotation back
//!     by `T' - 1` and a window sum over `2T'` slots (`log2(2T')` rotations), which leaves
//!     `G_{c e}` on every real token of every block (the window only reads padding, which is
//!     zero, outside the sample), then one product with `Q_c`, summed over `c`, one
//!     relinearization: `out_e = sum_c Q_c G_ce` for the chunk's columns `e`;
//!   - the mixing bias `1 (m^T V)` per chunk: a plaintext product with `m`, one rotation
//!     and the window sum;
//!   - the projection per output column: one plaintext product per chunk (the weights of
//!     column `c0 + i` in block `i`) and a rotate-and-sum over the column blocks (`log2 R`),
//!     which replicates the column again.
//!
//!   Levels as the latency plan (qkv 1, mixing 1, `K U` 1, `Q G` 1, projection 1).
//!
//! With one column block (`R = 1`, the largest batch `N / (4T')`) every `(c, e)` pair of a
//! head takes its own ciphertext; with `R >= dh` one ciphertext per head column.

use std::collections::BTreeSet;

use ndarray::{Array1, Array2};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;

use crate::ckks::lintrans::{baby_step_for, rotation_steps};
use crate::ckks::{
    galois_element_for_rotation, Ciphertext, CkksParams, Decryptor, Encoder, Encryptor, Evaluator,
    GaloisElement, Level, LinearTransform,
};
use crate::model::layer::NodeRef;
use crate::model::token::{LinearAttention, Pooling, TokenAdapter, TokenOp};
use crate::{Error, Result};

use super::layout::sum_steps;
use super::run::{check_input_counts, evaluate_nodes, Run, Shape};
use super::{Layout, TokenPlan};

/// A token plan for `B` samples per query (see the module documentation of
/// `plan::token::batch`): the latency plan's level schedule with the batch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatchPlan {
    plan: TokenPlan,
    batch: usize,
    padded: usize,
    reps: usize,
    steps: Vec<i64>,
    relin: bool,
}

/// Key-switching work of one batch evaluation, counted from the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBatchCost {
    /// Rotations per batch.
    pub rotations: usize,
    /// Relinearized ciphertext-ciphertext products of the attentions per batch.
    pub attention_products: usize,
    /// Samples per batch.
    pub batch: usize,
}

fn log2(k: usize) -> usize {
    k.max(1).trailing_zeros() as usize
}

impl TokenBatchPlan {
    /// Most samples one query holds for `adapter` under `params`: `N / (4T')`.
    pub fn capacity(adapter: &TokenAdapter, params: &CkksParams) -> usize {
        params.slots() / (2 * adapter.tokens().next_power_of_two())
    }

    /// Schedules `adapter` for batches of up to `batch` samples.
    ///
    /// # Errors
    /// What [`TokenPlan::compile`] refuses; a batch of 0 or above
    /// [`TokenBatchPlan::capacity`] (naming it); an attention that reads or writes packed
    /// values (the batch attention works between column values, the OWC block's case).
    pub fn compile(adapter: &TokenAdapter, params: &CkksParams, batch: usize) -> Result<Self> {
        let plan = TokenPlan::compile(adapter, params)?;
        let cap = Self::capacity(adapter, params);
        if batch == 0 || batch > cap {
            return Err(Error::params(format!(
                "a token batch holds 1..={cap} samples at N = 2^{} with T = {} (one block of 2T' = {} \
                 slots per sample), not {batch}: split the samples into batches of at most {cap}",
                params.log_n(),
                adapter.tokens(),
                2 * plan.period
            )));
        }
        let padded = batch.next_power_of_two();
        let slots = plan.slots;
        let period = plan.period;
        let reps = slots / (2 * period * padded);
        let mut steps = BTreeSet::new();
        let mut relin = false;
        let rep_steps = rep_steps(period, padded, slots);
        for (j, n) in adapter.nodes().iter().enumerate() {
            let lin = match n.inputs.first() {
                Some(NodeRef::Node(k)) => plan.layouts[*k],
                _ => Layout::Packed,
            };
            let lout = plan.layouts[j];
            match &n.op {
                TokenOp::Linear { .. } | TokenOp::LowRank { .. }
                    if lin == Layout::Packed && lout == Layout::Cols =>
                {
                    steps.extend(rep_steps.iter().copied());
                }
                TokenOp::Pool(_) => steps.extend(sum_steps(period)),
                TokenOp::Poly(act) if act.degree() >= 2 => relin = true,
                TokenOp::LinearAttention(_) => {
                    if lin != Layout::Cols || lout != Layout::Cols {
                        return Err(Error::model(format!(
                            "node {}: the batch layout evaluates a linear attention between column \
                             values only (a linear map before and after it, as in the OWC block); \
                             use the latency plan (TokenPlan) for this adapter",
                            n.name
                        )));
                    }
                    relin = true;
                    steps.insert(back_step(period, slots));
                    steps.extend(window_steps(period));
                    steps.extend(rotation_steps(2 * period, baby_step_for(2 * period)));
                    steps.extend(rep_steps.iter().copied());
                }
                _ => {}
            }
        }
        steps.remove(&0);
        Ok(TokenBatchPlan {
            plan,
            batch,
            padded,
            reps,
            steps: steps.into_iter().collect(),
            relin,
        })
    }

    /// The latency plan this batch plan shares its level schedule with.
    pub fn latency_plan(&self) -> &TokenPlan {
        &self.plan
    }
    /// Samples per query.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Column blocks per ciphertext, `R = N / (4 T' B')`.
    pub fn column_blocks(&self) -> usize {
        self.reps
    }
    /// Levels consumed (as the latency plan).
    pub fn depth(&self) -> usize {
        self.plan.depth()
    }
    /// Level of the inputs.
    pub fn input_level(&self) -> Level {
        self.plan.input_level()
    }
    /// Level of the output.
    pub fn output_level(&self) -> Level {
        self.plan.output_level()
    }
    /// Rotation steps the server uses (one Galois key each).
    pub fn rotation_steps(&self) -> &[i64] {
        &self.steps
    }
    /// The Galois elements of [`TokenBatchPlan::rotation_steps`].
    pub fn galois_elements(&self, params: &CkksParams) -> Vec<GaloisElement> {
        self.steps
            .iter()
            .map(|&s| GaloisElement(galois_element_for_rotation(params, s)))
            .collect()
    }
    /// Whether a relinearization key is needed.
    pub fn needs_relin(&self) -> bool {
        self.relin
    }
    /// Ciphertexts the client uploads per batch.
    pub fn query_ciphertexts(&self, adapter: &TokenAdapter) -> usize {
        adapter
            .inputs()
            .iter()
            .map(|i| i.dim.div_ceil(self.reps))
            .sum()
    }
    /// Ciphertexts returned per batch.
    pub fn result_ciphertexts(&self) -> usize {
        let (_, w) = self.plan.output_shape;
        match self.plan.layouts.last().copied().unwrap_or(Layout::Cols) {
            Layout::Cols => w,
            Layout::Packed => w.div_ceil(self.reps),
        }
    }

    /// Rotations and attention products of one batch evaluation of `adapter`.
    pub fn cost(&self, adapter: &TokenAdapter) -> TokenBatchCost {
        let period = self.plan.period;
        let reps = log2(self.reps);
        let window = 1 + window_steps(period).len();
        let mix = 1 + rotation_steps(2 * period, baby_step_for(2 * period)).len();
        let mut c = TokenBatchCost {
            batch: self.batch,
            ..TokenBatchCost::default()
        };
        for (j, n) in adapter.nodes().iter().enumerate() {
            let lin = match n.inputs.first() {
                Some(NodeRef::Node(k)) => self.plan.layouts[*k],
                _ => Layout::Packed,
            };
            let lout = self.plan.layouts[j];
            match &n.op {
                TokenOp::Linear { .. } | TokenOp::LowRank { .. }
                    if lin == Layout::Packed && lout == Layout::Cols =>
                {
                    c.rotations += n.shape.1 * reps;
                }
                TokenOp::Pool(_) => {
                    let cts = match lin {
                        Layout::Cols => n.shape.1,
                        Layout::Packed => n.shape.1.div_ceil(self.reps),
                    };
                    c.rotations += cts * log2(period);
                }
                TokenOp::LinearAttention(at) => {
                    let (r, dh) = (at.width(), at.head_dim());
                    let chunks = at.heads * dh.div_ceil(self.reps.min(dh).max(1));
                    c.rotations += chunks * (mix + dh * window) + r * reps;
                    if at.mix_bias.is_some() {
                        c.rotations += chunks * window;
                    }
                    c.attention_products += chunks * (dh + 1);
                }
                _ => {}
            }
        }
        c
    }

    /// Slot `s` as (token slot `t < 2T'`, sample `j < B'`, column block `i < R`).
    fn coords(&self, s: usize) -> (usize, usize, usize) {
        let w = 2 * self.plan.period;
        (s % w, (s / w) % self.padded, s / (w * self.padded))
    }

    /// Packed ciphertext `a` of a `width`-column value: `f(j, t, column)` on the real tokens
    /// `t < rows` of the samples `j < B` and the valid columns, zero elsewhere.
    fn packed_slots(
        &self,
        a: usize,
        width: usize,
        rows: usize,
        f: impl Fn(usize, usize, usize) -> f64,
    ) -> Vec<f64> {
        let rows = rows.min(self.plan.tokens);
        (0..self.plan.slots)
            .map(|s| {
                let (t, j, i) = self.coords(s);
                let col = a * self.reps + i;
                if t < rows && j < self.batch && col < width {
                    f(j, t, col)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// A pattern `f(t, i)` on the real tokens of every sample (column block `i`), zero on
    /// padding.
    fn block_slots(&self, rows: usize, f: impl Fn(usize, usize) -> f64) -> Vec<f64> {
        let rows = rows.min(self.plan.tokens);
        (0..self.plan.slots)
            .map(|s| {
                let (t, j, i) = self.coords(s);
                if t < rows && j < self.batch {
                    f(t, i)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Encrypts up to `B` samples (`samples[j][k]` is input `k` of sample `j`, `T x dim_k`)
    /// into the packed ciphertexts of every input (`ceil(dim_k / R)` each), at the input
    /// level and the default scale. Cost: one encoding and encryption per ciphertext.
    ///
    /// # Errors
    /// No samples or more than the batch; wrong input counts or shapes.
    pub fn encrypt_inputs<G: RngCore + CryptoRng>(
        &self,
        adapter: &TokenAdapter,
        encoder: &Encoder,
        encryptor: &Encryptor,
        samples: &[Vec<Array2<f64>>],
        rng: &mut G,
    ) -> Result<Vec<Vec<Ciphertext>>> {
        if samples.is_empty() || samples.len() > self.batch {
            return Err(Error::model(format!(
                "a token batch takes 1..={} samples, got {}",
                self.batch,
                samples.len()
            )));
        }
        for (j, xs) in samples.iter().enumerate() {
            if xs.len() != adapter.inputs().len() {
                return Err(Error::dims(
                    format!("token adapter inputs of sample {j}"),
                    adapter.inputs().len(),
                    xs.len(),
                ));
            }
            for (spec, x) in adapter.inputs().iter().zip(xs) {
                if x.dim() != (self.plan.tokens, spec.dim) {
                    return Err(Error::model(format!(
                        "sample {j}, input {}: expected {}x{} token features, got {}x{}",
                        spec.name,
                        self.plan.tokens,
                        spec.dim,
                        x.nrows(),
                        x.ncols()
                    )));
                }
            }
        }
        let n = samples.len();
        let mut out = Vec::with_capacity(adapter.inputs().len());
        for (k, spec) in adapter.inputs().iter().enumerate() {
            let cts = (0..spec.dim.div_ceil(self.reps))
                .map(|a| {
                    let v = self.packed_slots(a, spec.dim, self.plan.tokens, |j, t, col| {
                        if j < n {
                            samples[j][k][[t, col]]
                        } else {
                            0.0
                        }
                    });
                    let pt = encoder.encode(&v, self.plan.input_level(), self.plan.scale)?;
                    encryptor.encrypt(&pt, rng)
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(cts);
        }
        Ok(out)
    }

    /// Decrypts the output of a batch into one matrix per sample (`samples` of them, as
    /// encrypted).
    ///
    /// # Errors
    /// A wrong number of ciphertexts or samples; decryption errors.
    pub fn decrypt_output(
        &self,
        encoder: &Encoder,
        decryptor: &Decryptor,
        cts: &[Ciphertext],
        samples: usize,
    ) -> Result<Vec<Array2<f64>>> {
        let n = self.result_ciphertexts();
        if cts.len() != n {
            return Err(Error::dims("token batch output ciphertexts", n, cts.len()));
        }
        if samples == 0 || samples > self.batch {
            return Err(Error::model(format!(
                "a token batch holds 1..={} samples, not {samples}",
                self.batch
            )));
        }
        let (rows, w) = self.plan.output_shape;
        let layout = self.plan.layouts.last().copied().unwrap_or(Layout::Cols);
        let wd = 2 * self.plan.period;
        let mut out = vec![Array2::zeros((rows, w)); samples];
        for (a, ct) in cts.iter().enumerate() {
            let v = encoder.decode(&decryptor.decrypt(ct)?)?;
            let at = |s: usize| v.get(s).copied().unwrap_or(0.0);
            for (j, o) in out.iter_mut().enumerate() {
                for t in 0..rows {
                    match layout {
                        Layout::Cols => o[[t, a]] = at(t + wd * j),
                        Layout::Packed => {
                            for i in 0..self.reps {
                                let col = a * self.reps + i;
                                if col < w {
                                    o[[t, col]] = at(t + wd * (j + self.padded * i));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Evaluates `adapter` on one encrypted batch (from [`TokenBatchPlan::encrypt_inputs`]);
    /// `ev` must hold the relinearization key and the Galois keys of
    /// [`TokenBatchPlan::galois_elements`]. Cost: module documentation.
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
        check_input_counts(adapter, inputs, "batch", |dim| dim.div_ceil(self.reps))?;
        let run = Run {
            plan: &self.plan,
            ev,
            encoder,
            delta: ev.params().default_scale(),
        };
        let b = Batch { bp: self, run };
        evaluate_nodes(
            &self.plan,
            adapter,
            inputs,
            " (batch)",
            |op, args, shape| b.node(op, args, shape),
        )
    }
}

impl TokenBatchPlan {
    /// The mask of output ciphertext `a`: 1 on the slots the client reads (each sample's
    /// output rows, in the first column block only for column outputs), 0 elsewhere; and
    /// the number of ones.
    fn output_mask(&self, a: usize) -> (Vec<f64>, usize) {
        let (rows, width) = self.plan.output_shape;
        let v: Vec<f64> = match self.plan.layouts.last().copied().unwrap_or(Layout::Cols) {
            Layout::Cols => (0..self.plan.slots)
                .map(|s| {
                    let (t, j, i) = self.coords(s);
                    f64::from(u8::from(
                        i == 0 && j < self.batch && t < rows.min(self.plan.tokens),
                    ))
                })
                .collect(),
            Layout::Packed => self.packed_slots(a, width, rows, |_, _, _| 1.0),
        };
        let live = v.iter().filter(|&&x| x != 0.0).count();
        (v, live)
    }

    /// Sanitizes the output of one batch as [`TokenPlan::sanitize`] does for one sample:
    /// mask to the slots the client reads (one level; the padding and the replicas of the
    /// column blocks hold weight-dependent values), drop to the output level, re-randomize
    /// under `pk`, flood (when `cfg` says so) with the noise sized for the `batch x outputs`
    /// values read. The error bound `eps` is the public precision model plus
    /// [`TOKEN_EPS_MARGIN_BITS`](super::TOKEN_EPS_MARGIN_BITS). Cost per output ciphertext:
    /// one plaintext product and rescale, one public-key encryption of zero, one NTT of the
    /// flooding noise.
    ///
    /// # Errors
    /// [`Error::LevelExhausted`] when the output has no level left for the mask;
    /// [`Error::InvalidValue`] if the flooding noise would overflow `q_0`.
    pub fn sanitize<G: RngCore + CryptoRng>(
        &self,
        ev: &Evaluator,
        outputs: Vec<Ciphertext>,
        pk: &crate::ckks::PublicKey,
        cfg: &crate::plan::SanitizeConfig,
        rng: &mut G,
    ) -> Result<(Vec<Ciphertext>, crate::plan::SanitizeReport)> {
        let params = ev.params();
        let floor = params.output_floor_level();
        let encoder = Encoder::new(params)?;
        let mut prepped = Vec::with_capacity(outputs.len());
        for (a, mut ct) in outputs.into_iter().enumerate() {
            let level = ct.level();
            if level <= floor {
                return Err(Error::LevelExhausted {
                    op: format!(
                        "masking the non-output slots of a token batch's output (at level {level}, the output \
                         level is {floor}): choose parameters that reserve the mask level (select_token_flooded)"
                    ),
                    needed: 1,
                    available: 0,
                });
            }
            let (mask, live) = self.output_mask(a);
            let q = params.q().get(level.get()).copied().unwrap_or(1) as f64;
            let pt = encoder.encode(&mask, level, q)?;
            ev.mul_plain_assign(&mut ct, &pt)?;
            ev.rescale_assign(&mut ct)?;
            ev.drop_to_level_assign(&mut ct, floor)?;
            prepped.push((ct, live.max(1)));
        }
        let eps_log2 = cfg
            .flooding
            .as_ref()
            .map_or(0.0, |f| match f.eval_error_log2 {
                Some(e) => e,
                None => {
                    f.eps_log2(params.default_scale().log2(), params.log_n())
                        + super::TOKEN_EPS_MARGIN_BITS
                }
            });
        let read = (self.plan.output_values() * self.batch).max(1) as f64;
        let (out, flooding) = crate::plan::sanitize::rerandomize_and_flood(
            ev, pk, prepped, read, eps_log2, cfg, rng,
        )?;
        Ok((
            out,
            crate::plan::SanitizeReport {
                masked: true,
                mask_note: "non-output slots (padding, samples beyond the batch, the replicas of the column \
                            blocks) zeroed by a mask product (one level)"
                    .into(),
                output_level: floor,
                flooding,
            },
        ))
    }
}

/// Rotate-and-sum steps over the column blocks: `W B'`, `2 W B'`, .., `N/4`.
fn rep_steps(period: usize, padded: usize, slots: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut k = 2 * period * padded;
    while k < slots {
        v.push(k as i64);
        k *= 2;
    }
    v
}

/// The rotation back by `T' - 1` slots, as a positive step.
fn back_step(period: usize, slots: usize) -> i64 {
    ((slots - (period - 1)) % slots) as i64
}

/// Window-sum steps over `2T'` slots: 1, 2, .., T'.
fn window_steps(period: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut k = 1;
    while k <= period {
        v.push(k as i64);
        k *= 2;
    }
    v
}

struct Batch<'a> {
    bp: &'a TokenBatchPlan,
    run: Run<'a>,
}

impl Batch<'_> {
    /// `ct ⊙ pattern` rescaled to `target`.
    fn mask(&self, ct: &Ciphertext, pat: &[f64], target: f64) -> Result<Ciphertext> {
        let level = ct.level();
        let pscale = target * self.run.q(level.get())? / ct.scale();
        let pt = self.run.encoder.encode(pat, level, pscale)?;
        let mut y = self.run.ev.mul_plain(ct, &pt)?;
        self.run.ev.rescale_assign(&mut y)?;
        Ok(y)
    }

    fn sum_over(&self, ct: &mut Ciphertext, steps: &[i64]) -> Result<()> {
        for &s in steps {
            let r = self.run.ev.rotate(ct, s)?;
            self.run.ev.add_assign(ct, &r)?;
        }
        Ok(())
    }

    /// One rotation back by `T' - 1`, then a window sum over `2T'` slots: every real token
    /// of a block gets the sum of the block (when the value is zero on padding).
    fn block_sum(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        let p = &self.bp.plan;
        let mut y = if p.period > 1 {
            self.run.ev.rotate(ct, back_step(p.period, p.slots))?
        } else {
            ct.clone()
        };
        self.sum_over(&mut y, &window_steps(p.period))?;
        Ok(y)
    }

    fn rep_sum(&self, ct: &mut Ciphertext) -> Result<()> {
        let p = &self.bp.plan;
        self.sum_over(ct, &rep_steps(p.period, self.bp.padded, p.slots))
    }

    fn linear(
        &self,
        x: &[Ciphertext],
        w: &Array2<f64>,
        bias: Option<&Array1<f64>>,
        target: f64,
        sh: Shape,
    ) -> Result<Vec<Ciphertext>> {
        let run = &self.run;
        let bp = self.bp;
        match (sh.lin, sh.lout) {
            (Layout::Cols, Layout::Cols) => run.linear(x, w, bias, target, sh),
            (Layout::Packed, Layout::Packed) => Err(Error::model(
                "a linear map from packed to packed token matrices is not supported yet",
            )),
            (lin, lout) => {
                let x = run.aligned(x)?;
                let first = x
                    .first()
                    .ok_or_else(|| Error::model("linear map on zero ciphertexts"))?;
                let level = first.level();
                if level.get() == 0 {
                    return Err(Error::LevelExhausted {
                        op: "token-wise linear map (batch)".into(),
                        needed: 1,
                        available: 0,
                    });
                }
                let cs = target * run.q(level.get())? / first.scale();
                let (out_w, in_w) = w.dim();
                let rows = sh.rin;
                if lin == Layout::Cols && lout == Layout::Packed {
                    (0..out_w.div_ceil(bp.reps))
                        .into_par_iter()
                        .map(|a| {
                            let mut y = run.rescaled_sum(&x, first, cs, |i, xi| {
                                let pat = bp.packed_slots(a, out_w, rows, |_, _, o| w[[o, i]]);
                                if pat.iter().all(|&v| v == 0.0) {
                                    return Ok(None);
                                }
                                let pt = run.encoder.encode(&pat, level, cs)?;
                                run.ev.mul_plain(xi, &pt).map(Some)
                            })?;
                            if let Some(b) = bias {
                                let pat = bp.packed_slots(a, out_w, rows, |_, _, o| b[o]);
                                let pt = run.encoder.encode(&pat, y.level(), y.scale())?;
                                run.ev.add_plain_assign(&mut y, &pt)?;
                            }
                            Ok(y)
                        })
                        .collect()
                } else {
                    (0..out_w)
                        .into_par_iter()
                        .map(|o| {
                            let mut y = run.rescaled_sum(&x, first, cs, |a, xa| {
                                let pat = bp.packed_slots(a, in_w, rows, |_, _, i| w[[o, i]]);
                                if pat.iter().all(|&v| v == 0.0) {
                                    return Ok(None);
                                }
                                let pt = run.encoder.encode(&pat, level, cs)?;
                                run.ev.mul_plain(xa, &pt).map(Some)
                            })?;
                            self.rep_sum(&mut y)?;
                            if let Some(b) = bias {
                                if b[o] != 0.0 {
                                    run.ev.add_const_assign(&mut y, b[o])?;
                                }
                            }
                            Ok(y)
                        })
                        .collect()
                }
            }
        }
    }

    fn node(&self, op: &TokenOp, args: &[&[Ciphertext]], sh: Shape) -> Result<Vec<Ciphertext>> {
        let run = &self.run;
        let bp = self.bp;
        let delta = run.delta;
        let x = args
            .first()
            .copied()
            .ok_or_else(|| Error::model("node without operands"))?;
        match op {
            TokenOp::Linear { weight, bias } => self.linear(x, weight, bias.as_ref(), delta, sh),
            TokenOp::LowRank { a, b, scale, bias } => {
                let w = b.dot(a) * *scale;
                self.linear(x, &w, bias.as_ref(), delta, sh)
            }
            TokenOp::Affine { mul, add } if sh.lin == Layout::Packed => {
                let x = run.aligned(x)?;
                x.par_iter()
                    .enumerate()
                    .map(|(a, c)| {
                        let pat = bp.packed_slots(a, sh.wout, sh.rin, |_, _, j| mul[j]);
                        let mut y = self.mask(c, &pat, delta)?;
                        let pat = bp.packed_slots(a, sh.wout, sh.rin, |_, _, j| add[j]);
                        let pt = run.encoder.encode(&pat, y.level(), y.scale())?;
                        run.ev.add_plain_assign(&mut y, &pt)?;
                        Ok(y)
                    })
                    .collect()
            }
            TokenOp::Pool(pool) => {
                let tokens = bp.plan.tokens;
                let x = run.aligned(x)?;
                let weight = |t: usize| match pool {
                    Pooling::Cls => f64::from(u8::from(t == 0)),
                    Pooling::Mean => 1.0 / tokens as f64,
                };
                x.par_iter()
                    .enumerate()
                    .map(|(a, c)| {
                        let pat = match sh.lin {
                            Layout::Cols => bp.block_slots(sh.rin, |t, _| weight(t)),
                            Layout::Packed => {
                                bp.packed_slots(a, sh.wout, sh.rin, |_, t, _| weight(t))
                            }
                        };
                        let mut y = self.mask(c, &pat, delta)?;
                        run.rotate_sum(&mut y)?;
                        Ok(y)
                    })
                    .collect()
            }
            TokenOp::LinearAttention(at) => self.attention(at, x, sh),
            // affine on columns, scale, polynomials, residuals: per ciphertext, any layout
            _ => run.node(op, args, sh),
        }
    }

    fn attention(
        &self,
        at: &LinearAttention,
        x: &[Ciphertext],
        sh: Shape,
    ) -> Result<Vec<Ciphertext>> {
        if sh.lin != Layout::Cols || sh.lout != Layout::Cols {
            return Err(Error::model(
                "the batch layout evaluates a linear attention between column values only",
            ));
        }
        let run = &self.run;
        let bp = self.bp;
        let ev = run.ev;
        let delta = run.delta;
        let r = at.width();
        let dh = at.head_dim();
        let heads = at.heads;
        let tokens = bp.plan.tokens;
        let period = bp.plan.period;
        let (x, l) = run.attention_inputs(x)?;
        let cc = bp.reps.min(dh).max(1);
        let chunks = dh.div_ceil(cc);
        let to_cols = Shape {
            lin: Layout::Cols,
            rin: tokens,
            lout: Layout::Cols,
            wout: r,
        };
        let w = |row: usize, i: usize| at.qkv[[row, i]];
        let bias = |row: usize| at.qkv_bias.as_ref().map_or(0.0, |b| b[row]);
        // `sum_i x_i ⊙ P_i + B` with head column `rows(i)` of the qkv weights in column
        // block `i` (zero where `None`), landing at `target` one level down
        let combo = |rows: &dyn Fn(usize) -> Option<usize>, target: f64| {
            let first = x
                .first()
                .ok_or_else(|| Error::model("attention without columns"))?;
            let level = first.level();
            let cs = target * run.q(level.get())? / first.scale();
            let mut y = run.rescaled_sum(&x, first, cs, |xi, c| {
                let pat = bp.block_slots(tokens, |_, i| rows(i).map_or(0.0, |row| w(row, xi)));
                if pat.iter().all(|&v| v == 0.0) {
                    return Ok(None);
                }
                let pt = run.encoder.encode(&pat, level, cs)?;
                ev.mul_plain(c, &pt).map(Some)
            })?;
            let pat = bp.block_slots(tokens, |_, i| rows(i).map_or(0.0, bias));
            if pat.iter().any(|&v| v != 0.0) {
                let pt = run.encoder.encode(&pat, y.level(), y.scale())?;
                ev.add_plain_assign(&mut y, &pt)?;
            }
            Ok::<Ciphertext, Error>(y)
        };
        // (head, chunk): head columns c0 + i, c0 = chunk * cc, in column block i
        let hc: Vec<(usize, usize)> = (0..heads)
            .flat_map(|h| (0..chunks).map(move |g| (h, g)))
            .collect();
        let col_of = |h: usize, g: usize, i: usize| {
            let c = g * cc + i;
            (i < cc && c < dh).then_some(h * dh + c)
        };
        // V chunks at (l, delta)
        let vs: Vec<Ciphertext> = hc
            .par_iter()
            .map(|&(h, g)| combo(&|i| col_of(h, g, i).map(|c| 2 * r + c), delta))
            .collect::<Result<_>>()?;
        // the mixing inside each block, after a rotation back by T' - 1: diagonal k reads
        // token j = t + k - (T' - 1); zero unless t and j are real tokens
        let n = 2 * period;
        let diags: Vec<Vec<f64>> = (0..n)
            .map(|k| {
                bp.block_slots(tokens, |t, _| {
                    let j = t + k;
                    if j + 1 >= period && j + 1 - period < tokens {
                        at.mix[[j + 1 - period, t]]
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let lt = LinearTransform::new(run.encoder, &diags, Level(l), run.q(l)?, baby_step_for(n))?;
        let back = back_step(period, bp.plan.slots);
        // U chunks at (l - 1, delta), zero on padding
        let us: Vec<Ciphertext> = vs
            .par_iter()
            .map(|v| {
                let v = if period > 1 {
                    ev.rotate(v, back)?
                } else {
                    v.clone()
                };
                let mut u = lt.apply(ev, &v)?;
                ev.rescale_assign(&mut u)?;
                Ok(u)
            })
            .collect::<Result<_>>()?;
        // beta = sum_j m_j V[j] on every real token, per chunk, at (l - 1, delta)
        let betas: Option<Vec<Ciphertext>> = match &at.mix_bias {
            None => None,
            Some(m) => {
                let pat = bp.block_slots(tokens, |t, _| m[t]);
                Some(
                    vs.par_iter()
                        .map(|v| self.block_sum(&self.mask(v, &pat, delta)?))
                        .collect::<Result<_>>()?,
                )
            }
        };
        drop(vs);
        // K and Q in replicated columns (constant products)
        let (kw, kb) = at.qkv_rows(r, 1.0);
        let ks: Vec<Ciphertext> = run
            .linear(&x, &kw, Some(&kb), delta, to_cols)?
            .iter()
            .map(|c| ev.drop_to_level(c, Level(l - 1)))
            .collect::<Result<_>>()?;
        let s_g = ks
            .first()
            .zip(us.first())
            .map(|(k, u)| k.scale() * u.scale())
            .ok_or_else(|| Error::model("attention without columns"))?
            / run.q(l - 1)?;
        let s_q = delta * run.q(l - 2)? / s_g;
        let (qw, qb) = at.qkv_rows(0, at.scale);
        let qs: Vec<Ciphertext> = run
            .linear(&x, &qw, Some(&qb), s_q, to_cols)?
            .iter()
            .map(|c| ev.drop_to_level(c, Level(l - 2)))
            .collect::<Result<_>>()?;
        // per chunk: out = sum_c Q_c ⊙ blocksum(K_c ⊙ U) + beta at (l - 3, delta), head
        // column c0 + i in column block i
        let outs: Vec<Ciphertext> = hc
            .par_iter()
            .enumerate()
            .map(|(idx, &(h, _))| {
                let mut acc: Option<Ciphertext> = None;
                for c in 0..dh {
                    let mut p = ev.mul_relin(&ks[h * dh + c], &us[idx])?;
                    ev.rescale_assign(&mut p)?;
                    let gsum = self.block_sum(&p)?;
                    let z = ev.mul(&qs[h * dh + c], &gsum)?;
                    match acc.as_mut() {
                        None => acc = Some(z),
                        Some(a) => ev.add_assign(a, &z)?,
                    }
                }
                let mut y = acc.ok_or_else(|| Error::model("empty head"))?;
                ev.relinearize_assign(&mut y)?;
                ev.rescale_assign(&mut y)?;
                if let Some(b) = &betas {
                    let b = ev.drop_to_level(&b[idx], y.level())?;
                    ev.add_assign(&mut y, &b)?;
                }
                Ok(y)
            })
            .collect::<Result<_>>()?;
        drop(ks);
        drop(qs);
        drop(us);
        // projection per output column: the weights of head column c0 + i in column block i,
        // then a rotate-and-sum over the column blocks (replicated again), at (l - 4, delta)
        let first = outs
            .first()
            .ok_or_else(|| Error::model("attention without heads"))?;
        let level = first.level();
        let cs = delta * run.q(level.get())? / first.scale();
        (0..r)
            .into_par_iter()
            .map(|o| {
                let mut y = run.rescaled_sum(&outs, first, cs, |k, zk| {
                    let (h, g) = hc[k];
                    let pat = bp.block_slots(tokens, |_, i| {
                        col_of(h, g, i).map_or(0.0, |c| at.proj[[o, c]])
                    });
                    if pat.iter().all(|&v| v == 0.0) {
                        return Ok(None);
                    }
                    let pt = run.encoder.encode(&pat, level, cs)?;
                    ev.mul_plain(zk, &pt).map(Some)
                })?;
                self.rep_sum(&mut y)?;
                if let Some(b) = &at.proj_bias {
                    if b[o] != 0.0 {
                        ev.add_const_assign(&mut y, b[o])?;
                    }
                }
                Ok(y)
            })
            .collect()
    }
}
