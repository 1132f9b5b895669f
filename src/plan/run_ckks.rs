//! Executing a plan on ciphertexts: weights encoded once ([`Plan::prepare`]), then any number
//! of queries ([`PreparedPlan::evaluate`]). Independent work (output segments, giant steps,
//! output features in batch mode) runs on rayon's pool.
//!
//! Size: one concern (preparing and executing a plan on ciphertexts), latency and batch layouts side by side because they share the prepared weights.

use std::borrow::Cow;

use super::compile::{block_baby, row_sum_steps, Mode, Plan, Stage, StageOp};
use super::layout::{self, Segment};
use crate::ckks::eval::ExtendedCiphertext;
use crate::ckks::lintrans::LinearTransform;
use crate::ckks::polyeval::evaluate_chebyshev;
use crate::ckks::{
    Ciphertext, Decryptor, Encoder, EncryptionKey, Encryptor, Evaluator, Level, Plaintext,
};
use crate::{Error, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;

/// One `m x n` block of a dense layer in latency mode.
#[derive(Debug, Clone)]
struct Block {
    transform: LinearTransform,
    /// Rotate-and-sum steps for a wide block.
    row_sum: Vec<i64>,
}

#[derive(Debug, Clone)]
enum Prepared {
    None,
    /// `blocks[o][i]`, bias per output segment (latency).
    DenseLatency {
        blocks: Vec<Vec<Block>>,
        bias: Vec<Option<Plaintext>>,
    },
    /// Per-segment multiplier and offset plaintexts (latency).
    AffineLatency {
        mul: Vec<Plaintext>,
        add: Vec<Plaintext>,
    },
}

/// A plan with its weights encoded, ready to evaluate queries. Server side.
#[derive(Debug, Clone)]
pub struct PreparedPlan {
    plan: Plan,
    prepared: Vec<Prepared>,
}

#[allow(clippy::too_many_arguments)]
fn dense_block(
    encoder: &Encoder,
    w: &ndarray::Array2<f64>,
    o: &Segment,
    i: &Segment,
    level: Level,
    scale: f64,
    copies: usize,
    masked: bool,
) -> Result<Block> {
    let slots = encoder.slots();
    let (m, n) = (o.period, i.period);
    let k = m.min(n);
    let d = m.max(n);
    let diags: Vec<Vec<f64>> = (0..k)
        .map(|kk| {
            (0..slots)
                .map(|s| {
                    let t = s % d;
                    let row = t % m;
                    let col = (t + kk) % n;
                    // folded output mask: only the first period keeps its rows
                    if row < o.dim && col < i.dim && (!masked || s < o.dim) {
                        w[[o.offset + row, i.offset + col]]
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let transform = LinearTransform::new(encoder, &diags, level, scale, block_baby(m, n, copies))?;
    Ok(Block {
        transform,
        row_sum: row_sum_steps(m, n),
    })
}

impl Plan {
    /// Encodes the weights for evaluation (diagonals of every dense block at the level it
    /// runs at, biases, affine vectors). Cost: one encoding per non-zero diagonal; done once
    /// per loaded model, not per query.
    ///
    /// First refuses weights, biases and coefficients the scale and modulus cannot carry
    /// ([`Plan::check_value_bounds`]), naming the layer and the value.
    pub fn prepare(&self) -> Result<PreparedPlan> {
        self.check_value_bounds()?;
        let params = &self.params;
        let encoder = Encoder::new(params)?;
        let delta = params.default_scale();
        let latency = self.options.mode == Mode::Latency;
        let mask_at = self
            .output_mask_folded()
            .then(|| self.stages.len().saturating_sub(1));
        let prepared = self
            .stages
            .iter()
            .enumerate()
            .map(|(idx, st)| -> Result<Prepared> {
                let masked = mask_at == Some(idx);
                if !latency {
                    return Ok(Prepared::None);
                }
                let q_in = params.q()[st.in_level.get()] as f64;
                match &st.op {
                    StageOp::Dense { weight, bias } => {
                        // the weight acts on the concatenation of the operands
                        let mut in_segs: Vec<(Segment, usize)> = Vec::new();
                        let mut shift = 0;
                        for &i in &st.inputs {
                            let c = self.input_copies(i);
                            in_segs.extend(
                                layout::shifted(&self.stages[i].segments, shift)
                                    .into_iter()
                                    .map(|s| (s, c)),
                            );
                            shift += self.stages[i].out_dim;
                        }
                        let blocks = st
                            .segments
                            .par_iter()
                            .map(|o| {
                                in_segs
                                    .iter()
                                    .map(|(i, c)| {
                                        dense_block(
                                            &encoder,
                                            weight,
                                            o,
                                            i,
                                            st.in_level,
                                            q_in,
                                            *c,
                                            masked,
                                        )
                                    })
                                    .collect::<Result<Vec<_>>>()
                            })
                            .collect::<Result<Vec<_>>>()?;
                        let bias = st
                            .segments
                            .iter()
                            .map(|o| match bias {
                                Some(b) => {
                                    let slice = b
                                        .as_slice()
                                        .ok_or_else(|| Error::model("bias is not contiguous"))?;
                                    let mut v = layout::pack(slice, o, params.slots());
                                    if masked {
                                        let from = o.dim.min(v.len());
                                        v[from..].fill(0.0);
                                    }
                                    Ok(Some(encoder.encode(&v, st.level, delta)?))
                                }
                                None => Ok(None),
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Ok(Prepared::DenseLatency { blocks, bias })
                    }
                    StageOp::Affine { mul, add } => {
                        let (m, a) = (mul.to_vec(), add.to_vec());
                        let mut mp = Vec::new();
                        let mut ap = Vec::new();
                        for seg in &st.segments {
                            mp.push(encoder.encode(
                                &layout::pack(&m, seg, params.slots()),
                                st.in_level,
                                q_in,
                            )?);
                            ap.push(encoder.encode(
                                &layout::pack(&a, seg, params.slots()),
                                st.level,
                                delta,
                            )?);
                        }
                        Ok(Prepared::AffineLatency { mul: mp, add: ap })
                    }
                    _ => Ok(Prepared::None),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedPlan {
            plan: self.clone(),
            prepared,
        })
    }

    fn check_inputs_shape(&self, rows: &[usize], widths: &[usize]) -> Result<()> {
        if widths.len() != self.input_dims.len() {
            return Err(Error::dims(
                "number of adapter inputs",
                self.input_dims.len(),
                widths.len(),
            ));
        }
        for (k, (&w, &d)) in widths.iter().zip(&self.input_dims).enumerate() {
            if w != d {
                return Err(Error::dims(format!("width of input {k}"), d, w));
            }
        }
        if rows.iter().any(|&r| r != rows[0]) {
            return Err(Error::InvalidValue {
                context: "inputs".into(),
                reason: "inputs have different numbers of samples".into(),
            });
        }
        Ok(())
    }

    /// Encodes one sample's inputs (latency mode) or a batch (batch mode: `inputs[k]` is
    /// `samples x dim_k`, at most N/2 samples) into the plaintexts of a query, in order.
    /// Rejects NaN/inf and wrong widths.
    pub fn encode_query(
        &self,
        encoder: &Encoder,
        inputs: &[ArrayView2<f64>],
    ) -> Result<Vec<Plaintext>> {
        let (top, delta) = (self.params.max_level(), self.params.default_scale());
        self.query_slots(inputs)?
            .iter()
            .map(|v| encoder.encode(v, top, delta))
            .collect()
    }

    /// The slot vectors of a query's ciphertexts, in order (see [`Plan::encode_query`]):
    /// checked, not yet encoded. `N/2` values per ciphertext.
    fn query_slots(&self, inputs: &[ArrayView2<f64>]) -> Result<Vec<Vec<f64>>> {
        let rows: Vec<usize> = inputs.iter().map(|a| a.nrows()).collect();
        let widths: Vec<usize> = inputs.iter().map(|a| a.ncols()).collect();
        self.check_inputs_shape(&rows, &widths)?;
        for (k, a) in inputs.iter().enumerate() {
            if let Some(pos) = a.iter().position(|v| !v.is_finite()) {
                return Err(Error::InvalidValue {
                    context: format!("input {k}"),
                    reason: format!("value {pos} is NaN or infinite"),
                });
            }
        }
        let slots = self.params.slots();
        let mut out = Vec::new();
        match self.options.mode {
            Mode::Latency => {
                if rows.first().copied().unwrap_or(0) != 1 {
                    return Err(Error::dims(
                        "samples per latency-mode query",
                        1,
                        rows.first().copied().unwrap_or(0),
                    ));
                }
                for (k, a) in inputs.iter().enumerate() {
                    let v: Vec<f64> = a.row(0).to_vec();
                    for seg in &self.stages[k].segments {
                        let packed = layout::pack(&v, seg, slots);
                        for c in 0..self.input_copies(k) {
                            // rot(x, c): slot i holds x[i + c]
                            let rotated: Vec<f64> =
                                (0..slots).map(|i| packed[(i + c) % slots]).collect();
                            out.push(rotated);
                        }
                    }
                }
            }
            Mode::Batch => {
                let samples = rows.first().copied().unwrap_or(0);
                let (g, stride) = (self.batch_pack(), self.batch_stride());
                if samples == 0 || samples > stride {
                    return Err(Error::dims(
                        if g > 1 {
                            "samples per packed batch-mode query (at most N/(2 batch_pack))"
                        } else {
                            "samples per batch-mode query (at most N/2)"
                        },
                        stride,
                        samples,
                    ));
                }
                for a in inputs {
                    // feature c g + b of sample s goes to slot b * stride + s of ciphertext c
                    let d = a.ncols();
                    for c in 0..d.div_ceil(g) {
                        let mut v = vec![0.0; slots];
                        for b in 0..g.min(d - c * g) {
                            for (s, &x) in a.column(c * g + b).iter().enumerate() {
                                v[b * stride + s] = x;
                            }
                        }
                        out.push(v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Encrypts a query (see [`Plan::encode_query`]). Client side.
    pub fn encrypt_query<G: RngCore + CryptoRng>(
        &self,
        encoder: &Encoder,
        key: EncryptionKey<'_>,
        inputs: &[ArrayView2<f64>],
        rng: &mut G,
    ) -> Result<Vec<Ciphertext>> {
        let enc = Encryptor::new(&self.params, key)?;
        let (top, delta) = (self.params.max_level(), self.params.default_scale());
        // one plaintext at a time: a batch query's plaintexts never all live at once
        self.query_slots(inputs)?
            .iter()
            .map(|v| enc.encrypt(&encoder.encode(v, top, delta)?, rng))
            .collect()
    }

    /// Convenience for one sample given as vectors.
    pub fn encrypt_sample<G: RngCore + CryptoRng>(
        &self,
        encoder: &Encoder,
        key: EncryptionKey<'_>,
        inputs: &[ArrayView1<f64>],
        rng: &mut G,
    ) -> Result<Vec<Ciphertext>> {
        let rows: Vec<ArrayView2<f64>> = inputs
            .iter()
            .map(|v| v.view().insert_axis(ndarray::Axis(0)))
            .collect();
        self.encrypt_query(encoder, key, &rows, rng)
    }

    /// Decodes result plaintexts into `samples x output_dim` (latency: one row).
    pub fn decode_result(
        &self,
        encoder: &Encoder,
        pts: &[Plaintext],
        samples: usize,
    ) -> Result<Array2<f64>> {
        if pts.len() != self.output_ciphertexts() {
            return Err(Error::dims(
                "result ciphertexts",
                self.output_ciphertexts(),
                pts.len(),
            ));
        }
        let dim = self.output_dim();
        match self.options.mode {
            Mode::Latency => {
                let mut row = vec![0.0; dim];
                for (seg, pt) in self.output_segments().iter().zip(pts) {
                    let v = encoder.decode(pt)?;
                    row[seg.offset..seg.offset + seg.dim].copy_from_slice(&v[..seg.dim]);
                }
                Array2::from_shape_vec((1, dim), row).map_err(|e| Error::model(e.to_string()))
            }
            Mode::Batch => {
                if samples == 0 || samples > self.batch_stride() {
                    return Err(Error::dims("samples", self.batch_stride(), samples));
                }
                let mut out = Array2::zeros((samples, dim));
                for (j, pt) in pts.iter().enumerate() {
                    let v = encoder.decode(pt)?;
                    for s in 0..samples {
                        out[[s, j]] = v[s];
                    }
                }
                Ok(out)
            }
        }
    }

    /// Decrypts and decodes a result. Client side.
    pub fn decrypt_result(
        &self,
        encoder: &Encoder,
        decryptor: &Decryptor<'_>,
        cts: &[Ciphertext],
        samples: usize,
    ) -> Result<Array2<f64>> {
        let pts = cts
            .iter()
            .map(|c| decryptor.decrypt(c))
            .collect::<Result<Vec<_>>>()?;
        self.decode_result(encoder, &pts, samples)
    }
}

impl PreparedPlan {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Evaluates the adapter on an encrypted query (the ciphertexts of
    /// [`Plan::encrypt_query`], in order) and returns the encrypted result. Server side:
    /// needs only evaluation keys. `progress(stage_index, stage_count)` is called after each
    /// stage.
    pub fn evaluate_with_progress(
        &self,
        ev: &Evaluator,
        query: &[Ciphertext],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<Ciphertext>> {
        let plan = &self.plan;
        if query.len() != plan.input_ciphertexts() {
            return Err(Error::dims(
                "query ciphertexts",
                plan.input_ciphertexts(),
                query.len(),
            ));
        }
        let top = plan.params.max_level();
        for (k, ct) in query.iter().enumerate() {
            plan.params
                .check_digest("query ciphertext", &ct.params_digest())?;
            if ct.level() != top || ct.degree_plus_one() != 2 {
                return Err(Error::InvalidValue {
                    context: format!("query ciphertext {k}"),
                    reason: format!(
                        "must be fresh (level {top}, 2 parts); found level {}",
                        ct.level()
                    ),
                });
            }
            let rel =
                (ct.scale() - plan.params.default_scale()).abs() / plan.params.default_scale();
            if rel > 1e-9 {
                return Err(Error::ScaleMismatch {
                    left: ct.scale(),
                    right: plan.params.default_scale(),
                    rel,
                });
            }
        }
        let mut values: Vec<Option<Vec<Ciphertext>>> = vec![None; plan.stages.len()];
        // client-prepared rotations per input segment: rotated[k][segment][a] = rot(x, a)
        let mut rotated: Vec<Option<Vec<Vec<Ciphertext>>>> = vec![None; plan.input_dims.len()];
        let mut cursor = 0;
        for (k, _) in plan.input_dims.iter().enumerate() {
            match plan.options.mode {
                Mode::Latency => {
                    let copies = plan.input_copies(k);
                    let segs = plan.stages[k].segments.len();
                    let cts = &query[cursor..cursor + segs * copies];
                    values[k] = Some(cts.iter().step_by(copies).cloned().collect());
                    if copies > 1 {
                        rotated[k] = Some(cts.chunks(copies).map(<[_]>::to_vec).collect());
                    }
                    cursor += segs * copies;
                }
                Mode::Batch => {
                    let dim = plan.input_dims[k];
                    let count = dim.div_ceil(plan.batch_pack());
                    values[k] = Some(unpack_batch(
                        ev,
                        &query[cursor..cursor + count],
                        dim,
                        plan.batch_pack(),
                        plan.batch_stride(),
                    )?);
                    cursor += count;
                }
            }
        }
        let total = plan.stages.len();
        // Wavefronts: stages whose operands are all computed run together (in parallel when
        // the pool has more than one worker), e.g. the dense and the LoRA branch of a head.
        let mut depth = vec![0usize; total];
        for idx in plan.input_dims.len()..total {
            depth[idx] = 1 + plan.stages[idx]
                .inputs
                .iter()
                .map(|&i| depth[i])
                .max()
                .unwrap_or(0);
        }
        let max_depth = depth.iter().copied().max().unwrap_or(0);
        // the wave after which no stage reads a value any more (the output is kept): freeing
        // it then bounds the server's memory by the live values, not by every stage's
        let mut last_read = vec![usize::MAX; total];
        for (idx, last) in last_read
            .iter_mut()
            .enumerate()
            .take(total.saturating_sub(1))
        {
            *last = (0..total)
                .filter(|&j| plan.stages[j].inputs.contains(&idx))
                .map(|j| depth[j])
                .max()
                .unwrap_or(usize::MAX);
        }
        let mut done = plan.input_dims.len();
        for wave in 1..=max_depth {
            let members: Vec<usize> = (0..total).filter(|&i| depth[i] == wave).collect();
            let run = |idx: usize| -> Result<(usize, Vec<Ciphertext>)> {
                let st = &plan.stages[idx];
                let inputs: Vec<&Vec<Ciphertext>> = st
                    .inputs
                    .iter()
                    .map(|&i| {
                        values[i]
                            .as_ref()
                            .ok_or_else(|| Error::model("stage evaluated before its input"))
                    })
                    .collect::<Result<_>>()?;
                let out = match plan.options.mode {
                    Mode::Latency => {
                        let copies: Vec<Option<&Vec<Ciphertext>>> = st
                            .inputs
                            .iter()
                            .flat_map(|&i| match rotated.get(i).and_then(Option::as_ref) {
                                Some(per_seg) => per_seg.iter().map(Some).collect::<Vec<_>>(),
                                None => vec![None; plan.stages[i].segments.len()],
                            })
                            .collect();
                        self.stage_latency(ev, idx, st, &inputs, &copies)?
                    }
                    Mode::Batch => stage_batch(ev, st, &inputs)?,
                };
                Ok((idx, out))
            };
            let outs: Vec<(usize, Vec<Ciphertext>)> =
                if members.len() > 1 && rayon::current_num_threads() > 1 {
                    members.par_iter().map(|&i| run(i)).collect::<Result<_>>()?
                } else {
                    members.iter().map(|&i| run(i)).collect::<Result<_>>()?
                };
            for (idx, out) in outs {
                values[idx] = Some(out);
                done += 1;
                progress(done, total);
            }
            for (value, &last) in values.iter_mut().zip(&last_read) {
                if last == wave {
                    *value = None;
                }
            }
        }
        values
            .pop()
            .flatten()
            .ok_or_else(|| Error::model("no output"))
    }

    /// [`PreparedPlan::evaluate_with_progress`] without a progress callback.
    pub fn evaluate(&self, ev: &Evaluator, query: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        self.evaluate_with_progress(ev, query, &|_, _| {})
    }

    fn stage_latency(
        &self,
        ev: &Evaluator,
        idx: usize,
        st: &Stage,
        inputs: &[&Vec<Ciphertext>],
        copies: &[Option<&Vec<Ciphertext>>],
    ) -> Result<Vec<Ciphertext>> {
        let aligned = aligned(ev, inputs.iter().flat_map(|v| v.iter()), st.in_level)?;
        let copies: Vec<Option<Vec<Ciphertext>>> = copies
            .iter()
            .map(|c| c.map(|c| align(ev, c, st.in_level)).transpose())
            .collect::<Result<_>>()?;
        match (&st.op, &self.prepared[idx]) {
            (StageOp::Dense { .. }, Prepared::DenseLatency { blocks, bias }) => blocks
                .par_iter()
                .zip(bias.par_iter())
                .map(|(row, b)| {
                    // Every block's key-switch products (baby and giant steps, rotate-and-sum)
                    // stay in Q_l·P and are summed there: one ModDown per part per output.
                    let mut ext: Option<ExtendedCiphertext> = None;
                    let mut low: Option<Ciphertext> = None;
                    // scale of the sum (for an all-zero row: a trivial zero ciphertext)
                    let mut zero_at = None;
                    for ((block, x), pre) in row.iter().zip(&aligned).zip(&copies) {
                        if block.transform.is_zero() {
                            // an all-zero block (e.g. a weightless public card) adds nothing
                            zero_at = Some((x.level(), x.scale() * block.transform.scale()));
                            continue;
                        }
                        let (mut e, mut l) = match pre {
                            Some(pre) => block.transform.apply_rotated_split(ev, pre)?,
                            None => (Some(block.transform.apply_extended(ev, x)?), None),
                        };
                        if !block.row_sum.is_empty() {
                            let mut z = match (e, l.take()) {
                                (Some(mut e), Some(l)) => {
                                    ev.add_extended_assign(&mut e, &ev.lift_extended(&l)?)?;
                                    e
                                }
                                (Some(e), None) => e,
                                (None, Some(l)) => ev.lift_extended(&l)?,
                                (None, None) => {
                                    return Err(Error::model("linear block without diagonals"))
                                }
                            };
                            ev.rotate_sum_extended(&mut z, &block.row_sum)?;
                            e = Some(z);
                        }
                        if let Some(e) = e {
                            match ext.as_mut() {
                                Some(a) => ev.add_extended_assign(a, &e)?,
                                None => ext = Some(e),
                            }
                        }
                        if let Some(l) = l {
                            match low.as_mut() {
                                Some(a) => ev.add_assign(a, &l)?,
                                None => low = Some(l),
                            }
                        }
                    }
                    let mut y = match (ext, low) {
                        (Some(e), Some(l)) => {
                            let mut y = ev.mod_down_extended(&e);
                            ev.add_assign(&mut y, &l)?;
                            y
                        }
                        (Some(e), None) => ev.mod_down_extended(&e),
                        (None, Some(l)) => l,
                        (None, None) => match zero_at {
                            Some((level, scale)) => ev.zero_ciphertext(level, scale),
                            None => return Err(Error::model("dense layer without inputs")),
                        },
                    };
                    ev.rescale_assign(&mut y)?;
                    if let Some(b) = b {
                        ev.add_plain_assign(&mut y, b)?;
                    }
                    Ok(y)
                })
                .collect(),
            (StageOp::Affine { .. }, Prepared::AffineLatency { mul, add }) => aligned
                .iter()
                .zip(mul.iter().zip(add))
                .map(|(x, (m, a))| {
                    let mut y = ev.mul_plain(x, m)?;
                    ev.rescale_assign(&mut y)?;
                    ev.add_plain_assign(&mut y, a)?;
                    Ok(y)
                })
                .collect(),
            (
                StageOp::Poly {
                    cheb,
                    alpha,
                    beta,
                    normalized,
                },
                _,
            ) => aligned
                .par_iter()
                .map(|x| poly(ev, x, cheb, *alpha, *beta, *normalized))
                .collect(),
            (
                StageOp::Square {
                    sign,
                    offset,
                    shift,
                    ..
                },
                _,
            ) => aligned
                .par_iter()
                .map(|x| square(ev, x, *sign, *offset, *shift))
                .collect(),
            (StageOp::Add, _) => add_all(ev, inputs, st.in_level),
            (StageOp::Concat, _) => Ok(inputs.iter().flat_map(|v| v.iter().cloned()).collect()),
            _ => Err(Error::model(format!(
                "stage '{}' was not prepared",
                st.name
            ))),
        }
    }
}

/// The ciphertexts `cts` at `level`: borrowed where they already are, dropped (a copy of the
/// lower limbs) where they are above. No copy of an operand that needs no change.
fn aligned<'a>(
    ev: &Evaluator,
    cts: impl IntoIterator<Item = &'a Ciphertext>,
    level: Level,
) -> Result<Vec<Cow<'a, Ciphertext>>> {
    cts.into_iter()
        .map(|c| {
            Ok(if c.level() > level {
                Cow::Owned(ev.drop_to_level(c, level)?)
            } else {
                Cow::Borrowed(c)
            })
        })
        .collect()
}

/// [`aligned`], owned.
fn align(ev: &Evaluator, cts: &[Ciphertext], level: Level) -> Result<Vec<Ciphertext>> {
    Ok(aligned(ev, cts, level)?
        .into_iter()
        .map(Cow::into_owned)
        .collect())
}

fn add_all(ev: &Evaluator, inputs: &[&Vec<Ciphertext>], level: Level) -> Result<Vec<Ciphertext>> {
    let mut acc = align(ev, inputs[0], level)?;
    for other in &inputs[1..] {
        if other.len() != acc.len() {
            return Err(Error::dims(
                "residual add operands (ciphertexts)",
                acc.len(),
                other.len(),
            ));
        }
        for (a, b) in acc.iter_mut().zip(other.iter()) {
            ev.add_assign(a, b)?;
        }
    }
    Ok(acc)
}

/// `sign * (x + shift)^2 + offset`, where the producer delivered `x * sqrt(q_l / Delta)` at
/// scale `Delta` (or the consumer multiplies by `q_l / Delta`): the rescaled square is then
/// declared at scale `Delta`. One ciphertext product and relinearization, one level.
fn square(
    ev: &Evaluator,
    x: &Ciphertext,
    sign: f64,
    offset: f64,
    shift: f64,
) -> Result<Ciphertext> {
    let delta = ev.params().default_scale();
    let shifted;
    let x = if shift != 0.0 {
        shifted = ev.add_const(x, shift)?;
        &shifted
    } else {
        x
    };
    let mut y = ev.mul_relin(x, x)?;
    ev.rescale_assign(&mut y)?;
    y.set_scale(delta);
    if sign < 0.0 {
        ev.neg_assign(&mut y)?;
    }
    if offset != 0.0 {
        ev.add_const_assign(&mut y, offset)?;
    }
    Ok(y)
}

fn poly(
    ev: &Evaluator,
    x: &Ciphertext,
    cheb: &[f64],
    alpha: f64,
    beta: f64,
    normalized: bool,
) -> Result<Ciphertext> {
    let delta = ev.params().default_scale();
    let t = if normalized {
        x.clone()
    } else {
        let q = ev.params().q()[x.level().get()] as f64;
        let mut t = ev.mul_const(x, alpha, q)?;
        ev.rescale_assign(&mut t)?;
        t.set_scale(x.scale());
        ev.add_const_assign(&mut t, beta)?;
        t
    };
    evaluate_chebyshev(ev, &t, cheb, delta)
}

/// Unpacks one input of a packed batch query: ciphertext `c` holds features `c g .. c g + g`
/// in blocks of `stride` slots; feature `c g + b` becomes `rot(ct_c, b * stride)`, whose
/// first block is that feature (the other blocks hold the group's other features, i.e. the
/// adapter also runs on permutations of the client's own inputs, values the client could
/// have queried itself). Returns one ciphertext per feature, as an unpacked batch query has.
/// Cost per ciphertext: one hoisting ModUp and `g - 1` hoisted rotations; no level.
fn unpack_batch(
    ev: &Evaluator,
    cts: &[Ciphertext],
    dim: usize,
    g: usize,
    stride: usize,
) -> Result<Vec<Ciphertext>> {
    if g <= 1 {
        return Ok(cts.to_vec());
    }
    let groups: Vec<Vec<Ciphertext>> = cts
        .par_iter()
        .enumerate()
        .map(|(c, ct)| {
            let width = dim.saturating_sub(c * g).min(g);
            let steps: Vec<i64> = (1..width).map(|b| (b * stride) as i64).collect();
            let mut group = Vec::with_capacity(width);
            group.push(ct.clone());
            if !steps.is_empty() {
                group.extend(ev.rotate_many(ct, &steps)?);
            }
            Ok(group)
        })
        .collect::<Result<_>>()?;
    Ok(groups.into_iter().flatten().collect())
}

fn stage_batch(ev: &Evaluator, st: &Stage, inputs: &[&Vec<Ciphertext>]) -> Result<Vec<Ciphertext>> {
    if let StageOp::Add = st.op {
        return add_all(ev, inputs, st.in_level);
    }
    // the operands at the stage's level, borrowed where they already are (a batch query has
    // one ciphertext per feature, so copying them all would double the server's memory)
    let x = aligned(ev, inputs.iter().flat_map(|v| v.iter()), st.in_level)?;
    let q = ev.params().q()[st.in_level.get()] as f64;
    match &st.op {
        StageOp::Dense { weight, bias } => (0..weight.nrows())
            .into_par_iter()
            .map(|i| {
                let mut acc: Option<Ciphertext> = None;
                for (j, xj) in x.iter().enumerate() {
                    let w = weight[[i, j]];
                    if w == 0.0 {
                        continue;
                    }
                    let term = ev.mul_const(xj, w, q)?;
                    match acc.as_mut() {
                        Some(a) => ev.add_assign(a, &term)?,
                        None => acc = Some(term),
                    }
                }
                let mut y = match acc {
                    Some(a) => a,
                    None => ev.mul_const(&x[0], 0.0, q)?,
                };
                ev.rescale_assign(&mut y)?;
                y.set_scale(x[0].scale());
                if let Some(b) = bias {
                    ev.add_const_assign(&mut y, b[i])?;
                }
                Ok(y)
            })
            .collect(),
        StageOp::Affine { mul, add } => x
            .par_iter()
            .enumerate()
            .map(|(j, xj)| {
                let mut y = ev.mul_const(xj, mul[j], q)?;
                ev.rescale_assign(&mut y)?;
                y.set_scale(xj.scale());
                ev.add_const_assign(&mut y, add[j])?;
                Ok(y)
            })
            .collect(),
        StageOp::Poly {
            cheb,
            alpha,
            beta,
            normalized,
        } => x
            .par_iter()
            .map(|xj| poly(ev, xj, cheb, *alpha, *beta, *normalized))
            .collect(),
        StageOp::Square {
            sign,
            offset,
            shift,
            ..
        } => x
            .par_iter()
            .map(|xj| square(ev, xj, *sign, *offset, *shift))
            .collect(),
        StageOp::Add => add_all(ev, inputs, st.in_level),
        StageOp::Concat => Ok(x.into_iter().map(Cow::into_owned).collect()),
        StageOp::Input => Err(Error::model("input stage evaluated")),
    }
}
