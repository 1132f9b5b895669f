//! Linear transforms on one ciphertext by the diagonal method with baby-step giant-step
//! (BSGS) and hoisted baby steps:
//!
//! `z = sum_{k<K} diag_k ⊙ rot(x, k) = sum_{b<h} rot( sum_{a<g} rot(diag_{gb+a}, -gb) ⊙ rot(x, a), gb )`
//!
//! The baby steps `rot(x, a)` share one decomposition of `x` (hoisting); the diagonals are
//! pre-rotated in plaintext. Cost: `g - 1` hoisted rotations, `h - 1` full rotations, `K`
//! plaintext products (fused multiply-accumulates into each giant step's sum) and one
//! rescale; one level.

use super::ciphertext::{Ciphertext, Plaintext};
use super::encoding::Encoder;
use super::eval::Evaluator;
use crate::{Error, Result};
use rayon::prelude::*;

/// A transform with `K` diagonals, encoded for one level.
#[derive(Debug, Clone)]
pub struct LinearTransform {
    /// `plain[b][a]`: pre-rotated diagonal `gb + a`, or `None` when that diagonal is zero.
    plain: Vec<Vec<Option<Plaintext>>>,
    baby: usize,
    level: usize,
}

/// Baby-step size for `k` diagonals: the smallest power of two `g` with `g^2 >= k`, so there
/// are at least as many (cheap, hoisted) baby steps as (full) giant steps.
pub fn baby_step_for(k: usize) -> usize {
    let mut g = 1usize;
    while g * g < k {
        g *= 2;
    }
    g.min(k.max(1))
}

/// The rotation steps a transform with `k` diagonals and baby step `g` uses.
pub fn rotation_steps(k: usize, g: usize) -> Vec<i64> {
    let g = g.max(1);
    let h = k.div_ceil(g);
    let mut steps: Vec<i64> = (1..g.min(k)).map(|a| a as i64).collect();
    steps.extend((1..h).map(|b| (b * g) as i64));
    steps
}

/// The giant-step rotations of a transform with `k` diagonals and baby step `g` (the steps
/// left when the baby steps `rot(x, a)` are given).
pub fn giant_steps(k: usize, g: usize) -> Vec<i64> {
    let g = g.max(1);
    (1..k.div_ceil(g)).map(|b| (b * g) as i64).collect()
}

impl LinearTransform {
    /// Encodes diagonals (`diags[k]` has at most N/2 values: the slot vector of diagonal `k`,
    /// already extended periodically as the layout requires) at `level` and `scale`.
    /// Zero diagonals are skipped. Cost: one encoding per non-zero diagonal.
    pub fn new(
        encoder: &Encoder,
        diags: &[Vec<f64>],
        level: usize,
        scale: f64,
        baby: usize,
    ) -> Result<Self> {
        let slots = encoder.slots();
        let k = diags.len();
        if k == 0 || k > slots {
            return Err(Error::InvalidValue {
                context: "linear transform".into(),
                reason: format!("{k} diagonals for {slots} slots"),
            });
        }
        let g = baby.max(1);
        let h = k.div_ceil(g);
        let mut plain = Vec::with_capacity(h);
        for b in 0..h {
            let mut row = Vec::with_capacity(g);
            for a in 0..g {
                let idx = b * g + a;
                if idx >= k || diags[idx].iter().all(|&v| v == 0.0) {
                    row.push(None);
                    continue;
                }
                // rot(diag, -gb)[i] = diag[(i - gb) mod slots]
                let d = &diags[idx];
                let shift = (b * g) % slots;
                let full: Vec<f64> = (0..slots)
                    .map(|i| d.get((i + slots - shift) % slots).copied().unwrap_or(0.0))
                    .collect();
                row.push(Some(encoder.encode(&full, level, scale)?));
            }
            plain.push(row);
        }
        Ok(LinearTransform {
            plain,
            baby: g,
            level,
        })
    }

    /// Level the diagonals are encoded at (the input must be at this level).
    pub fn level(&self) -> usize {
        self.level
    }

    /// The rotation steps this transform needs keys for.
    pub fn steps(&self) -> Vec<i64> {
        let k = self.plain.len() * self.baby;
        rotation_steps(k, self.baby)
    }

    /// `sum_k diag_k ⊙ rot(x, k)`, not rescaled (scale `x.scale · diag scale`).
    /// Cost: one hoisting of `x`, `g - 1` hoisted and `h - 1` full rotations.
    pub fn apply(&self, ev: &Evaluator, x: &Ciphertext) -> Result<Ciphertext> {
        if x.level() != self.level {
            return Err(Error::InvalidLevel {
                level: x.level(),
                max: self.level,
            });
        }
        let g = self.baby;
        let needed: Vec<bool> = (0..g)
            .map(|a| self.plain.iter().any(|row| row[a].is_some()))
            .collect();
        let hoisted = ev.hoist(x)?;
        let parallel = rayon::current_num_threads() > 1;
        let rotate_baby = |a: usize| {
            if needed[a] {
                ev.rotate_hoisted(&hoisted, a as i64).map(Some)
            } else {
                Ok(None)
            }
        };
        let baby: Vec<Option<Ciphertext>> = if parallel {
            (0..g)
                .into_par_iter()
                .map(rotate_baby)
                .collect::<Result<_>>()?
        } else {
            (0..g).map(rotate_baby).collect::<Result<_>>()?
        };
        let baby: Vec<Option<&Ciphertext>> = baby.iter().map(Option::as_ref).collect();
        self.giant_steps(ev, &baby)
    }

    /// Like [`LinearTransform::apply`], with the baby steps given: `rotated[a] = rot(x, a)`
    /// for `a < g` (at least [`LinearTransform::baby_step`] ciphertexts; the client prepared
    /// them, so the server does no hoisting and no baby rotation). Cost: `h - 1` full
    /// rotations and the plaintext products.
    pub fn apply_rotated(&self, ev: &Evaluator, rotated: &[Ciphertext]) -> Result<Ciphertext> {
        if rotated.len() < self.baby {
            return Err(Error::dims(
                "pre-rotated copies of a linear transform's input",
                self.baby,
                rotated.len(),
            ));
        }
        if let Some(x) = rotated.iter().find(|x| x.level() != self.level) {
            return Err(Error::InvalidLevel {
                level: x.level(),
                max: self.level,
            });
        }
        let baby: Vec<Option<&Ciphertext>> = rotated[..self.baby].iter().map(Some).collect();
        self.giant_steps(ev, &baby)
    }

    /// Baby-step size `g` (the transform reads `rot(x, a)` for `a < g`).
    pub fn baby_step(&self) -> usize {
        self.baby
    }

    /// The giant steps on given baby steps `baby[a] = rot(x, a)`.
    fn giant_steps(&self, ev: &Evaluator, baby: &[Option<&Ciphertext>]) -> Result<Ciphertext> {
        let g = self.baby;
        let parallel = rayon::current_num_threads() > 1;
        // one giant step: the inner sum for row b, rotated by g*b
        let giant = |(b, row): (usize, &Vec<Option<Plaintext>>)| -> Result<Option<Ciphertext>> {
            let mut inner: Option<Ciphertext> = None;
            for (a, p) in row.iter().enumerate() {
                let (Some(p), Some(Some(xr))) = (p, baby.get(a)) else {
                    continue;
                };
                match inner.as_mut() {
                    Some(s) => ev.mul_plain_accumulate(s, xr, p)?,
                    None => inner = Some(ev.mul_plain(xr, p)?),
                }
            }
            match inner {
                Some(inner) if b > 0 => ev.rotate(&inner, (b * g) as i64).map(Some),
                other => Ok(other),
            }
        };
        let parts: Vec<Option<Ciphertext>> = if parallel {
            self.plain
                .par_iter()
                .enumerate()
                .map(giant)
                .collect::<Result<_>>()?
        } else {
            self.plain
                .iter()
                .enumerate()
                .map(giant)
                .collect::<Result<_>>()?
        };
        let mut acc: Option<Ciphertext> = None;
        for part in parts.into_iter().flatten() {
            match acc.as_mut() {
                Some(s) => ev.add_assign(s, &part)?,
                None => acc = Some(part),
            }
        }
        acc.ok_or_else(|| Error::InvalidValue {
            context: "linear transform".into(),
            reason: "all diagonals are zero".into(),
        })
    }
}
