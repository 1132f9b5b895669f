//! Linear attention with a learned token mixing, evaluated by associativity (see the module
//! documentation of [`super`]).

use rayon::prelude::*;

use crate::ckks::lintrans::baby_step_for;
use crate::ckks::{Ciphertext, Level, LinearTransform};
use crate::model::token::LinearAttention;
use crate::{Error, Result};

use super::layout::AttentionPacking;
use super::run::{Run, Shape};
use super::{Layout, ATTENTION_LEVELS};

impl Run<'_> {
    /// The attention's operands aligned to one level, and the level its first products land
    /// at (one below). Errors with [`Error::LevelExhausted`] when fewer than
    /// `ATTENTION_LEVELS` levels are left.
    pub(super) fn attention_inputs(&self, x: &[Ciphertext]) -> Result<(Vec<Ciphertext>, usize)> {
        let x = self.aligned(x)?;
        let l_in = x.first().map_or(0, |c| c.level().get());
        if l_in < ATTENTION_LEVELS {
            return Err(Error::LevelExhausted {
                op: "linear attention".into(),
                needed: ATTENTION_LEVELS,
                available: l_in,
            });
        }
        Ok((x, l_in - 1))
    }

    /// The token mixing `U[t] = sum_k diag_k[t] V[t + k]` as a transform at level `l`: one
    /// diagonal per shift `k < period`, laid out by `slots(k)`. One encoding per diagonal.
    pub(super) fn mixing_transform(
        &self,
        l: usize,
        slots: impl Fn(usize) -> Vec<f64> + Sync,
    ) -> Result<LinearTransform> {
        let period = self.plan.period;
        let diags: Vec<Vec<f64>> = (0..period).map(slots).collect();
        LinearTransform::new(
            self.encoder,
            &diags,
            Level(l),
            self.q(l)?,
            baby_step_for(period),
        )
    }

    pub(super) fn attention(
        &self,
        at: &LinearAttention,
        x: &[Ciphertext],
        sh: Shape,
    ) -> Result<Vec<Ciphertext>> {
        let pk = AttentionPacking::of(
            self.plan.period,
            self.plan.slots,
            at.head_dim(),
            sh.lin,
            sh.lout,
        );
        if let Some(pk) = pk {
            return self.attention_packed(at, x, pk);
        }
        let delta = self.delta;
        let r = at.width();
        let dh = at.head_dim();
        let tokens = self.plan.tokens;
        let period = self.plan.period;
        let (x, l) = self.attention_inputs(x)?;
        let to_cols = Shape {
            lin: sh.lin,
            rin: sh.rin,
            lout: Layout::Cols,
            wout: r,
        };
        // K and V in columns at (l, delta)
        let (kw, kb) = at.qkv_rows(r, 1.0);
        let (vw, vb) = at.qkv_rows(2 * r, 1.0);
        let k_cols = self.linear(&x, &kw, Some(&kb), delta, to_cols)?;
        let v_cols = self.linear(&x, &vw, Some(&vb), delta, to_cols)?;
        // U = M^T V on the token axis: y[t] = sum_j M[j, t] v[j], diagonal k: A[t, t + k]
        let lt = self.mixing_transform(l, |k| {
            self.plan.column_slots(|t| {
                let j = (t + k) % period;
                if j < tokens {
                    at.mix[[j, t]]
                } else {
                    0.0
                }
            })
        })?;
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
                        let mut b = self.mask(v, Layout::Cols, 0, 1, |t, _| m[t], delta)?;
                        self.rotate_sum(&mut b)?;
                        self.ev.drop_to_level(&b, Level(l - 3))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let k_low: Vec<Ciphertext> = k_cols
            .iter()
            .map(|c| self.ev.drop_to_level(c, Level(l - 1)))
            .collect::<Result<_>>()?;
        // G[h][c][e] = sum_t K_c[t] U_e[t], replicated, at (l - 2, s_g = delta^2 / q_{l-1})
        // (K and U are both at exactly delta), computed per output column and consumed at
        // once, so that only a few ciphertexts are alive per thread.
        let s_g = k_low
            .first()
            .zip(u_cols.first())
            .map(|(k, u)| k.scale() * u.scale())
            .ok_or_else(|| Error::model("attention without columns"))?
            / self.q(l - 1)?;
        // Q at level l with the scale that makes Q * G land on delta after one rescale
        let s_q = delta * self.q(l - 2)? / s_g;
        let (qw, qb) = at.qkv_rows(0, at.scale);
        let q_cols: Vec<Ciphertext> = self
            .linear(&x, &qw, Some(&qb), s_q, to_cols)?
            .iter()
            .map(|c| self.ev.drop_to_level(c, Level(l - 2)))
            .collect::<Result<_>>()?;
        let heads_out: Vec<Ciphertext> = (0..r)
            .into_par_iter()
            .map(|col| {
                let h = col / dh;
                let mut acc: Option<Ciphertext> = None;
                for c in 0..dh {
                    let mut g = self.ev.mul_relin(&k_low[h * dh + c], &u_cols[col])?;
                    self.ev.rescale_assign(&mut g)?;
                    self.rotate_sum(&mut g)?;
                    let p = self.ev.mul(&q_cols[h * dh + c], &g)?;
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
        let proj = Shape {
            lin: Layout::Cols,
            rin: tokens,
            lout: sh.lout,
            wout: r,
        };
        self.linear(&heads_out, &at.proj, at.proj_bias.as_ref(), delta, proj)
    }
}
