//! Runs a [`QuantizedPlan`] on TFHE ciphertexts (the exact backend).
//!
//! Per hidden neuron: one leveled dot product (no bootstrapping), the top bits of the
//! accumulator through `J` stages on the coarse key (`Evaluator::top_digits`: `3J - 1`
//! blind rotations) and a lookup table (one fine bootstrapping for 4-bit tables, three
//! for 5-bit ones, seven for 6-bit ones) that applies the activation, requantizes and
//! re-encodes the result at the next layer's modulus. The
//! output layer is a leveled dot product only. Neurons run in parallel with rayon. With
//! [`QuantizeOptions::argmax`](super::QuantizeOptions::argmax) the logits are then turned
//! into an encrypted one-hot vector (see `encrypted_argmax`).

use rand::{CryptoRng, Rng};
use rayon::prelude::*;

use super::exact::{argmax_reductions, QuantizedPlan, ARGMAX_LOG_MODULUS, ARGMAX_MAX_CLASSES};
use crate::exact::{encode, ClientKey, Evaluator, ExactCiphertext, Lut, ServerKey};
use crate::{Error, Result};

/// Result of one encrypted evaluation.
#[derive(Clone, Debug)]
pub struct ExactRun {
    /// Encrypted outputs, modulo `2^plan.output_log_modulus()`.
    pub outputs: Vec<ExactCiphertext>,
    /// Bootstrappings performed.
    pub pbs: u64,
}

impl QuantizedPlan {
    /// Client side: quantizes nothing, encrypts already quantized inputs at the plan's
    /// input modulus.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong width.
    pub fn encrypt_input(
        &self,
        key: &ClientKey,
        xq: &[i64],
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<ExactCiphertext>> {
        if xq.len() != self.input_dim() {
            return Err(Error::dims("exact input", self.input_dim(), xq.len()));
        }
        key.encrypt(xq, self.input_log_modulus(), rng)
    }

    /// Client side: decrypts the outputs to the integers of [`reference`](Self::reference).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong count.
    pub fn decrypt_output(&self, key: &ClientKey, cts: &[ExactCiphertext]) -> Result<Vec<i64>> {
        if cts.len() != self.output_dim() {
            return Err(Error::dims("exact outputs", self.output_dim(), cts.len()));
        }
        key.decrypt(cts, self.output_log_modulus())
    }

    /// Server side: sanitizes the outputs of [`evaluate`](Self::evaluate) before they leave
    /// (see [`crate::exact::sanitize`]): each output is re-randomized under the client's
    /// public key, rebuilt from fresh bootstrappings and flooded, so that what the client
    /// decrypts depends on the output values only. Decrypts to the same integers.
    ///
    /// Cost: [`sanitize_pbs`](crate::exact::sanitize_pbs)`(output_log_modulus)`
    /// bootstrappings per output (7 for logits modulo 2^11), run in parallel, and two
    /// public-key encryptions of zero per output. Returns the outputs and the bootstrappings
    /// performed.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong count or key; what
    /// [`Evaluator::sanitize`] refuses.
    pub fn sanitize_outputs(
        &self,
        key: &ServerKey,
        pk: &crate::exact::ExactPublicKey,
        outputs: &[ExactCiphertext],
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<(Vec<ExactCiphertext>, u64)> {
        if outputs.len() != self.output_dim() {
            return Err(Error::dims(
                "exact outputs",
                self.output_dim(),
                outputs.len(),
            ));
        }
        let p = self.output_log_modulus();
        let ev = Evaluator::new(key);
        // randomness is drawn in order on this thread; the bootstrappings run in parallel
        let seeds: Vec<[u8; 32]> = outputs.iter().map(|_| rng.random()).collect();
        let out = outputs
            .par_iter()
            .zip(seeds.par_iter())
            .map(|(c, seed)| {
                let mut r = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::from_seed(*seed);
                ev.sanitize(c, p, pk, &mut r)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((out, ev.pbs_count()))
    }

    /// Server side: evaluates the plan on encrypted inputs. Cost:
    /// [`predicted_pbs`](Self::predicted_pbs) bootstrappings plus one leveled dot product per
    /// neuron; the count actually performed is returned in [`ExactRun::pbs`].
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a wrong input count or ciphertext size.
    pub fn evaluate(&self, key: &ServerKey, inputs: &[ExactCiphertext]) -> Result<ExactRun> {
        if inputs.len() != self.input_dim() {
            return Err(Error::dims(
                "exact encrypted input",
                self.input_dim(),
                inputs.len(),
            ));
        }
        let ev = Evaluator::new(key);
        let params = key.params();
        let mut tensors: Vec<Vec<ExactCiphertext>> = vec![inputs.to_vec()];
        let mut xs = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            let p = layer.log_modulus;
            // hidden outputs are encoded at the modulus their tensor is held at
            let next_p = self.tensor_log_moduli.get(li + 1).copied().unwrap_or(p);
            // the concatenated sources; a tensor held at 2^m > 2^p is read shifted by 2^(m-p)
            let mut input = Vec::with_capacity(layer.in_dim);
            let mut shift = Vec::with_capacity(layer.in_dim);
            for &t in &layer.sources {
                let cts = tensors
                    .get(t)
                    .ok_or_else(|| Error::dims("exact layer sources", t + 1, tensors.len()))?;
                let m = self.tensor_log_moduli.get(t).copied().unwrap_or(p);
                if m < p {
                    return Err(Error::params(format!(
                        "exact plan: tensor {t} is held at 2^{m}, below its reader's 2^{p}"
                    )));
                }
                input.extend(cts.iter().cloned());
                shift.extend(std::iter::repeat_n(m - p, cts.len()));
            }
            if input.len() != layer.in_dim {
                return Err(Error::dims("exact layer input", layer.in_dim, input.len()));
            }
            xs = (0..layer.out_dim)
                .into_par_iter()
                .map(|j| {
                    let row: Vec<i64> = layer
                        .weights
                        .get(j * layer.in_dim..(j + 1) * layer.in_dim)
                        .ok_or_else(|| Error::dims("exact weights", layer.in_dim, 0))?
                        .iter()
                        .zip(&shift)
                        .map(|(&w, &k)| w.wrapping_mul(1i64.wrapping_shl(k)))
                        .collect();
                    let b = layer.bias.get(j).copied().unwrap_or(0);
                    let mut acc = ev.dot(&input, &row, encode(b, p))?;
                    let Some(act) = &layer.activation else {
                        return Ok(acc);
                    };
                    let table = act.tables.get(j).ok_or_else(|| {
                        Error::dims("exact activation tables", layer.out_dim, act.tables.len())
                    })?;
                    // the top 5 bits of the accumulator (and the 6th for 6-bit tables),
                    // every stage on the coarse key (`Evaluator::top_digits`)
                    let (w, bit) = ev.top_digits(&acc, p, act.stages, act.bits == 6)?;
                    acc = w;
                    if act.bits == 6 {
                        let bit = bit.ok_or_else(|| {
                            Error::params("exact backend: 6-bit tables need at least one stage")
                        })?;
                        return ev.lut6(&acc, &bit, table, next_p);
                    }
                    if act.bits == 5 {
                        return ev.lut5(&acc, table, next_p);
                    }
                    if table.len() != 16 {
                        return Err(Error::dims("exact activation table", 16, table.len()));
                    }
                    let lut = Lut::new(params, true, |i| encode(table[i % 16], next_p));
                    ev.pbs(&acc, &lut)
                })
                .collect::<Result<Vec<_>>>()?;
            if layer.activation.is_some() {
                tensors.push(std::mem::take(&mut xs));
            }
        }
        if self.argmax {
            xs = encrypted_argmax(&ev, &xs, self.logits_log_modulus())?;
        }
        Ok(ExactRun {
            outputs: xs,
            pbs: ev.pbs_count(),
        })
    }
}

/// The encrypted one-hot argmax of logits held modulo `2^p` (the twin of
/// [`argmax_one_hot`](super::exact::argmax_one_hot)): per pair `i < j`, the difference
/// `l_i - l_j` (leveled), reduced to its top 5 bits by [`argmax_reductions`] (two
/// bootstrappings per stage), then a fine sign bootstrapping returning `+2^58` if `i` wins
/// (`d >= 0`) and `-2^58` otherwise; the win count of class `i`, at scale `2^59`, is the
/// leveled sum `(C-1)·2^58 + Σ_{j>i} s_ij - Σ_{j<i} s_ji`; one coarse bootstrapping per
/// class maps `C - 1` wins to 1 and anything else to 0, at modulus
/// `2^`[`ARGMAX_LOG_MODULUS`]. Cost: [`argmax_pbs`](super::exact::argmax_pbs).
fn encrypted_argmax(
    ev: &Evaluator<'_>,
    logits: &[ExactCiphertext],
    p: u32,
) -> Result<Vec<ExactCiphertext>> {
    let c = logits.len();
    if c > ARGMAX_MAX_CLASSES {
        return Err(Error::params(format!(
            "encrypted argmax supports at most {ARGMAX_MAX_CLASSES} classes, got {c}"
        )));
    }
    let params = ev.params();
    let stages = argmax_reductions(p);
    let half_box = 1u64 << 58;
    let sign = Lut::new(params, true, |_| half_box);
    let pairs: Vec<(usize, usize)> = (0..c)
        .flat_map(|i| (i + 1..c).map(move |j| (i, j)))
        .collect();
    let signs = pairs
        .par_iter()
        .map(|&(i, j)| {
            let (Some(a), Some(b)) = (logits.get(i), logits.get(j)) else {
                return Err(Error::dims("exact argmax logits", c, logits.len()));
            };
            // for p < 5 the phase d·2^(64-p) already is (d·2^(5-p))·2^59
            let mut d = ev.sub_add(a, b, 0)?;
            let mut pc = p.max(5);
            for &k in &stages {
                d = ev.drop_low_bits(&d, pc, k)?;
                pc -= k;
            }
            ev.pbs(&d, &sign)
        })
        .collect::<Result<Vec<_>>>()?;
    let one = encode(1, ARGMAX_LOG_MODULUS);
    let target = c.saturating_sub(1);
    let is_winner = Lut::new(params, false, move |v| if v == target { one } else { 0 });
    (0..c)
        .into_par_iter()
        .map(|i| {
            let mut acc = ev.dot(
                &[],
                &[],
                (c.saturating_sub(1) as u64).wrapping_mul(half_box),
            )?;
            for (&(a, b), s) in pairs.iter().zip(&signs) {
                if a == i {
                    acc = ev.add(&acc, s)?;
                } else if b == i {
                    acc = ev.sub_add(&acc, s, 0)?;
                }
            }
            ev.pbs(&acc, &is_winner)
        })
        .collect()
}
