//! Linear attention between column values with every product of one head in one
//! ciphertext ([`AttentionPacking`]; see the module documentation of [`super`]).
//!
//! Slot `t + 4T' (e + ec b)` of a head ciphertext (`t < 4T'`; the pattern repeats over the
//! slots) holds, for `t mod T'` a real token:
//! - `V_e[t mod T']` (all `b`), from plaintext products on the input columns; the mixing
//!   (`sum_k diag_k ⊙ rot(V, k)`, `k < T'`, BSGS: `~2 sqrt(T')` rotations per ciphertext
//!   instead of per column) reads at most `T' - 1` slots ahead, so `U_e = (M^T V)_e` is right
//!   on the first `2T'` slots of every block;
//! - `K_b[t mod T']` (all `e`): one product gives every `K_b U_e`, `T'`-periodic on the
//!   first `2T'` slots of a block, so a rotate-and-sum over `T'` consecutive slots
//!   (`log2 T'` rotations) leaves `G_be` on slots `t < T'`;
//! - `Q_b[t]` on the first quarter (`t < T'`), zero elsewhere: one more product and a
//!   rotate-and-sum over the outer `b` axis (`log2 dhp` rotations, cyclic since `b` is
//!   outermost) leave `out_e[t] = sum_b Q_b[t] G_be` on every `b`, zero on `t >= T'`;
//! - the projection, per output column: one plaintext product per head ciphertext (the
//!   weights zero on `t >= T'`) and a rotate-and-sum over the `4 ec` quarter blocks
//!   (`log2(4 ec)` rotations), which replicates the column with period `T'`.
//!
//! The linear maps to `K`, `V`, `Q` and `m^T V` (the mixing bias, `m` folded into the
//! weights, then a rotate-and-sum over the tokens) are plaintext products on the columns
//! (the weights laid out in the pattern, no rotation). Levels as the column by column
//! evaluation: qkv 1, mixing 1, `K U` 1, `Q G` 1, projection 1.
//!
//! Cost per head ciphertext: the mixing, 2 relinearized products and `2 log2 T' + log2 dhp`
//! rotations (`log2 T'` fewer without a mixing bias); per output column `log2(4 ec)`
//! rotations. The column-by-column evaluation needs the mixing per column, and `r dh`
//! products and `r dh log2 T'` rotations for `G` alone.

use rayon::prelude::*;

use crate::ckks::{Ciphertext, Level};
use crate::model::token::LinearAttention;
use crate::{Error, Result};

use super::layout::{AttentionPacking, BLOCK};
use super::run::Run;

impl Run<'_> {
    /// The slot vector of `f(t, e, b)` in the pattern of `pk` (`t < 2T'`).
    fn head_slots(&self, pk: AttentionPacking, f: impl Fn(usize, usize, usize) -> f64) -> Vec<f64> {
        let tw = BLOCK * self.plan.period;
        (0..self.plan.slots)
            .map(|s| {
                let t = s % tw;
                let e = (s / tw) % pk.ec;
                let b = (s / (tw * pk.ec)) % pk.dhp;
                f(t, e, b)
            })
            .collect()
    }

    /// `sum_i x_i ⊙ P_i + B` with `P_i = head_slots(w(i, ..))` and `B = head_slots(bias)`,
    /// landing at `target` one level down. Cost: one encoding and plaintext product per
    /// non-zero `P_i`, one rescale.
    fn head_combo(
        &self,
        pk: AttentionPacking,
        x: &[Ciphertext],
        w: impl Fn(usize, usize, usize, usize) -> f64,
        bias: impl Fn(usize, usize, usize) -> f64,
        target: f64,
    ) -> Result<Ciphertext> {
        let first = x
            .first()
            .ok_or_else(|| Error::model("attention without columns"))?;
        let level = first.level();
        let cs = target * self.q(level.get())? / first.scale();
        let mut y = self.rescaled_sum(x, first, cs, |i, xi| {
            let pat = self.head_slots(pk, |t, e, b| w(i, t, e, b));
            if pat.iter().all(|&v| v == 0.0) {
                return Ok(None);
            }
            let pt = self.encoder.encode(&pat, level, cs)?;
            self.ev.mul_plain(xi, &pt).map(Some)
        })?;
        let pat = self.head_slots(pk, bias);
        if pat.iter().any(|&v| v != 0.0) {
            let pt = self.encoder.encode(&pat, y.level(), y.scale())?;
            self.ev.add_plain_assign(&mut y, &pt)?;
        }
        Ok(y)
    }

    /// Rotate-and-sum over `steps` (each slot gets the sum of the slots `steps` reach).
    fn sum_over(&self, ct: &mut Ciphertext, steps: &[i64]) -> Result<()> {
        for &s in steps {
            let r = self.ev.rotate(ct, s)?;
            self.ev.add_assign(ct, &r)?;
        }
        Ok(())
    }

    /// Linear attention from columns to columns in the packing `pk` (module documentation).
    pub(super) fn attention_packed(
        &self,
        at: &LinearAttention,
        x: &[Ciphertext],
        pk: AttentionPacking,
    ) -> Result<Vec<Ciphertext>> {
        let delta = self.delta;
        let r = at.width();
        let dh = at.head_dim();
        let heads = at.heads;
        let tokens = self.plan.tokens;
        let period = self.plan.period;
        let (x, l) = self.attention_inputs(x)?;
        let real = |t: usize| t % period < tokens;
        let w = |row: usize, i: usize| at.qkv[[row, i]];
        let bias = |row: usize| at.qkv_bias.as_ref().map_or(0.0, |b| b[row]);
        // the mixing on the pattern: U[t] = sum_k diag_k[t] V[t + k] on the first 2T' slots
        let lt = self.mixing_transform(l, |k| {
            self.head_slots(pk, |t, _, _| {
                let (tp, j) = (t % period, (t + k) % period);
                if t < 2 * period && tp < tokens && j < tokens {
                    at.mix[[j, tp]]
                } else {
                    0.0
                }
            })
        })?;
        // K_b per head at (l - 1, delta)
        let k_heads: Vec<Ciphertext> = (0..heads)
            .into_par_iter()
            .map(|h| {
                let row = |b: usize| r + h * dh + b;
                let k = self.head_combo(
                    pk,
                    &x,
                    |i, t, _, b| if real(t) && b < dh { w(row(b), i) } else { 0.0 },
                    |t, _, b| if real(t) && b < dh { bias(row(b)) } else { 0.0 },
                    delta,
                )?;
                self.ev.drop_to_level(&k, Level(l - 1))
            })
            .collect::<Result<_>>()?;
        let chunks: Vec<(usize, usize)> = (0..heads)
            .flat_map(|h| (0..pk.chunks).map(move |c| (h, c * pk.ec)))
            .collect();
        // G per (head, chunk) at (l - 2, s_g), valid on t < T'
        let gs: Vec<Ciphertext> = chunks
            .par_iter()
            .map(|&(h, e0)| {
                let row = |e: usize| 2 * r + h * dh + e0 + e;
                let live = |t: usize, e: usize| real(t) && e0 + e < dh;
                let v = self.head_combo(
                    pk,
                    &x,
                    |i, t, e, _| if live(t, e) { w(row(e), i) } else { 0.0 },
                    |t, e, _| if live(t, e) { bias(row(e)) } else { 0.0 },
                    delta,
                )?;
                let mut u = lt.apply(self.ev, &v)?;
                self.ev.rescale_assign(&mut u)?;
                let mut g = self.ev.mul_relin(&k_heads[h], &u)?;
                self.ev.rescale_assign(&mut g)?;
                self.rotate_sum(&mut g)?;
                Ok(g)
            })
            .collect::<Result<_>>()?;
        drop(k_heads);
        let s_g = gs
            .first()
            .map(|g| g.scale())
            .ok_or_else(|| Error::model("attention without heads"))?;
        // Q_b per head on the first half blocks, at (l - 2, s_q): Q G lands on delta
        let s_q = delta * self.q(l - 2)? / s_g;
        let q_heads: Vec<Ciphertext> = (0..heads)
            .into_par_iter()
            .map(|h| {
                let row = |b: usize| h * dh + b;
                let live = |t: usize, b: usize| t < period && real(t) && b < dh;
                let q = self.head_combo(
                    pk,
                    &x,
                    |i, t, _, b| {
                        if live(t, b) {
                            at.scale * w(row(b), i)
                        } else {
                            0.0
                        }
                    },
                    |t, _, b| {
                        if live(t, b) {
                            at.scale * bias(row(b))
                        } else {
                            0.0
                        }
                    },
                    s_q,
                )?;
                self.ev.drop_to_level(&q, Level(l - 2))
            })
            .collect::<Result<_>>()?;
        let head_steps = pk.head_steps(period);
        // out_e[t] = sum_b Q_b[t] G_be + beta_e per (head, chunk) at (l - 3, delta)
        let outs: Vec<Ciphertext> = chunks
            .par_iter()
            .zip(gs.par_iter())
            .map(|(&(h, e0), g)| {
                let mut z = self.ev.mul_relin(&q_heads[h], g)?;
                self.ev.rescale_assign(&mut z)?;
                self.sum_over(&mut z, &head_steps)?;
                if let Some(m) = &at.mix_bias {
                    // beta_e = sum_t m_t V_e[t]: m folded into the V weights
                    let row = |e: usize| 2 * r + h * dh + e0 + e;
                    let live = |t: usize, e: usize| real(t) && e0 + e < dh;
                    let mut b = self.head_combo(
                        pk,
                        &x,
                        |i, t, e, _| {
                            if live(t, e) {
                                m[t % period] * w(row(e), i)
                            } else {
                                0.0
                            }
                        },
                        |t, e, _| {
                            if live(t, e) {
                                m[t % period] * bias(row(e))
                            } else {
                                0.0
                            }
                        },
                        delta,
                    )?;
                    self.rotate_sum(&mut b)?;
                    self.ev.drop_to_level_assign(&mut b, z.level())?;
                    self.ev.add_assign(&mut z, &b)?;
                }
                Ok(z)
            })
            .collect::<Result<_>>()?;
        drop(gs);
        drop(q_heads);
        // projection: per output column, the weights on the first half blocks, then a
        // rotate-and-sum over the 2 ec half blocks, at (l - 4, delta), period T'
        let first = outs
            .first()
            .ok_or_else(|| Error::model("attention without heads"))?;
        let level = first.level();
        let cs = delta * self.q(level.get())? / first.scale();
        let proj_steps = pk.proj_steps(period);
        (0..r)
            .into_par_iter()
            .map(|o| {
                let mut y = self.rescaled_sum(&outs, first, cs, |k, zk| {
                    let (h, e0) = chunks[k];
                    let pat = self.head_slots(pk, |t, e, _| {
                        if t < period && real(t) && e0 + e < dh {
                            at.proj[[o, h * dh + e0 + e]]
                        } else {
                            0.0
                        }
                    });
                    if pat.iter().all(|&v| v == 0.0) {
                        return Ok(None);
                    }
                    let pt = self.encoder.encode(&pat, level, cs)?;
                    self.ev.mul_plain(zk, &pt).map(Some)
                })?;
                self.sum_over(&mut y, &proj_steps)?;
                if let Some(b) = &at.proj_bias {
                    if b[o] != 0.0 {
                        self.ev.add_const_assign(&mut y, b[o])?;
                    }
                }
                Ok(y)
            })
            .collect()
    }
}
