//! Linear transforms on one ciphertext by the diagonal method with baby-step giant-step
//! (BSGS) and hoisted baby steps:
//!
//! `z = sum_{k<K} diag_k ⊙ rot(x, k) = sum_{b<h} rot( sum_{a<g} rot(diag_{gb+a}, -gb) ⊙ rot(x, a), gb )`
//!
//! The baby steps `rot(x, a)` share one decomposition of `x` (hoisting); the diagonals are
//! pre-rotated in plaintext. Cost: `g - 1` hoisted rotations, `h - 1` full rotations, `K`
//! plaintext products (fused multiply-accumulates into each giant step's sum) and one
//! rescale; one level.
//!
//! **Double hoisting** (Bossuat, Mouchet, Troncoso-Pastoriza and Hubaux, Eurocrypt 2021):
//! the baby steps are left in the extended basis `Q_l·P` (their key-switch products are not
//! divided by `P`), the diagonals are encoded with special limbs too, and each giant step's
//! sum stays in `Q_l·P`; a giant-step rotation brings only the sum's `c_1` down to `Q_l`
//! (to decompose it) and adds its key-switch products to one extended accumulator. The
//! transform then ends with a single ModDown per part: `2` ModDowns instead of
//! `2·(g - 1 + h - 1)`, and the hoisted baby steps cost no NTT at all.

use super::ciphertext::{Ciphertext, Plaintext};
use super::encoding::Encoder;
use super::eval::{Evaluator, ExtendedCiphertext};
use super::units::Level;
use crate::{Error, Result};
use rayon::prelude::*;

/// A transform with `K` diagonals, encoded for one level.
#[derive(Debug, Clone)]
pub struct LinearTransform {
    /// `plain[b][a]`: pre-rotated diagonal `gb + a`, or `None` when that diagonal is zero.
    plain: Vec<Vec<Option<Plaintext>>>,
    baby: usize,
    level: Level,
    scale: f64,
}

/// Baby-step size for `k` diagonals: the smallest power of two `g` with `g^2 >= k`, so there
/// are at least as many (hoisted) baby steps as (full) giant steps.
///
/// Double hoisting makes a baby step cost no NTT, but each one still reads its own Galois key
/// (`2·dnum·(l+1+K)` limbs, 2.6 MB at N = 2^13 with four digits): a 4:1 ratio (64 diagonals:
/// 15 baby and 3 giant steps) ran about 8 % slower than this one on head (a) and lost 0.7 bits,
/// so the balanced choice stays (and the rotation keys with it).
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
    /// already extended periodically as the layout requires) at `level` and `scale`, with
    /// special limbs for double hoisting. Zero diagonals are skipped. Cost: one encoding per
    /// non-zero diagonal.
    pub fn new(
        encoder: &Encoder,
        diags: &[Vec<f64>],
        level: Level,
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
                row.push(Some(encoder.encode_extended(&full, level, scale)?));
            }
            plain.push(row);
        }
        Ok(LinearTransform {
            plain,
            baby: g,
            level,
            scale,
        })
    }

    /// Whether every diagonal is zero (the transform maps everything to zero; `apply`
    /// refuses it, callers add nothing instead).
    pub fn is_zero(&self) -> bool {
        self.plain.iter().flatten().all(Option::is_none)
    }

    /// Scale the diagonals are encoded at (the product's scale is the input's times it).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Level the diagonals are encoded at (the input must be at this level).
    pub fn level(&self) -> Level {
        self.level
    }

    /// The rotation steps this transform needs keys for.
    pub fn steps(&self) -> Vec<i64> {
        let k = self.plain.len() * self.baby;
        rotation_steps(k, self.baby)
    }

    /// `sum_k diag_k ⊙ rot(x, k)`, not rescaled (scale `x.scale · diag scale`), double
    /// hoisted (see the module docs). Cost: one hoisting (ModUp) of `x`, `g - 1` key-switch
    /// inner products for the baby steps, `2·(l+1+K)` multiply-accumulates per diagonal, per
    /// giant step one ModDown of one part, one ModUp and one inner product, and two ModDowns
    /// at the end.
    pub fn apply(&self, ev: &Evaluator, x: &Ciphertext) -> Result<Ciphertext> {
        Ok(ev.mod_down_extended(&self.apply_extended(ev, x)?))
    }

    /// [`LinearTransform::apply`] without the final ModDown: the sum `P·z` in `Q_l·P`, for
    /// callers that add more key-switch products (rotate-and-sum, other blocks) before
    /// dividing by `P` once. Cost: that of `apply` less two ModDowns.
    pub(crate) fn apply_extended(
        &self,
        ev: &Evaluator,
        x: &Ciphertext,
    ) -> Result<ExtendedCiphertext> {
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
        // no baby rotation (one diagonal per giant step): no hoisting either
        let hoisted = if needed.iter().skip(1).any(|&n| n) {
            Some(ev.hoist(x)?)
        } else {
            None
        };
        let rotate_baby = |a: usize| match (&hoisted, needed[a]) {
            (_, false) => Ok(None),
            (Some(h), true) => ev.rotate_hoisted_extended(h, a as i64).map(Some),
            (None, true) => ev.lift_extended(x).map(Some),
        };
        let baby: Vec<Option<ExtendedCiphertext>> = if rayon::current_num_threads() > 1 {
            (0..g)
                .into_par_iter()
                .map(rotate_baby)
                .collect::<Result<_>>()?
        } else {
            (0..g).map(rotate_baby).collect::<Result<_>>()?
        };
        // one giant step: the inner sum for row b in Q_l·P, rotated by g*b into a partial
        // extended accumulator
        let giant =
            |(b, row): (usize, &Vec<Option<Plaintext>>)| -> Result<Option<ExtendedCiphertext>> {
                let mut inner: Option<ExtendedCiphertext> = None;
                for (a, p) in row.iter().enumerate() {
                    let (Some(p), Some(Some(xr))) = (p, baby.get(a)) else {
                        continue;
                    };
                    ev.mul_plain_accumulate_extended(&mut inner, xr, p)?;
                }
                let Some(inner) = inner else {
                    return Ok(None);
                };
                if b == 0 {
                    return Ok(Some(inner));
                }
                let mut acc = None;
                ev.rotate_extended_accumulate(&mut acc, &inner, (b * g) as i64)?;
                Ok(acc)
            };
        let parts: Vec<Option<ExtendedCiphertext>> = self.map_giant_steps(giant)?;
        let mut acc: Option<ExtendedCiphertext> = None;
        for part in parts.into_iter().flatten() {
            sum_into(&mut acc, part, |s, p| ev.add_extended_assign(s, p))?;
        }
        acc.ok_or_else(all_zero)
    }

    /// The single-hoisted evaluation of [`LinearTransform::apply`] (every baby and giant
    /// rotation divided by `P` on its own): the reference the double-hoisted one is tested
    /// against. Cost: `g - 1` hoisted and `h - 1` full rotations.
    #[cfg(test)]
    pub(crate) fn apply_single_hoisted(
        &self,
        ev: &Evaluator,
        x: &Ciphertext,
    ) -> Result<Ciphertext> {
        let g = self.baby;
        let needed: Vec<bool> = (0..g)
            .map(|a| self.plain.iter().any(|row| row[a].is_some()))
            .collect();
        let hoisted = ev.hoist(x)?;
        let baby: Vec<Option<Ciphertext>> = (0..g)
            .map(|a| {
                if needed[a] {
                    ev.rotate_hoisted(&hoisted, a as i64).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<_>>()?;
        let baby: Vec<Option<&Ciphertext>> = baby.iter().map(Option::as_ref).collect();
        self.giant_steps_single(ev, &baby)
    }

    /// Like [`LinearTransform::apply`], with the baby steps given: `rotated[a] = rot(x, a)`
    /// for `a < g` (at least [`LinearTransform::baby_step`] ciphertexts; the client prepared
    /// them, so the server does no hoisting and no baby rotation). Cost: `h - 1` full
    /// rotations and the plaintext products.
    pub fn apply_rotated(&self, ev: &Evaluator, rotated: &[Ciphertext]) -> Result<Ciphertext> {
        match self.apply_rotated_split(ev, rotated)? {
            (Some(e), Some(l)) => {
                let mut out = ev.mod_down_extended(&e);
                ev.add_assign(&mut out, &l)?;
                Ok(out)
            }
            (Some(e), None) => Ok(ev.mod_down_extended(&e)),
            (None, Some(l)) => Ok(l),
            (None, None) => Err(all_zero()),
        }
    }

    /// [`LinearTransform::apply_rotated`] before its ModDown: `(e, l)` with the result
    /// `mod_down(e) + l` (`e`: the giant steps' key-switch products in `Q_l·P`; `l`: the rest,
    /// in `Q_l`), at least one of them present.
    pub(crate) fn apply_rotated_split(
        &self,
        ev: &Evaluator,
        rotated: &[Ciphertext],
    ) -> Result<(Option<ExtendedCiphertext>, Option<Ciphertext>)> {
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
        self.giant_steps_lazy(ev, &baby)
    }

    /// Baby-step size `g` (the transform reads `rot(x, a)` for `a < g`).
    pub fn baby_step(&self) -> usize {
        self.baby
    }

    /// The giant steps on given baby steps `baby[a] = rot(x, a)` in `Q_l`, with lazy ModDown:
    /// each giant rotation adds its key-switch products to one accumulator in `Q_l·P` and
    /// its rotated `c_0` to one in `Q_l`; two ModDowns at the end.
    /// `giant` on every giant step `(b, row of diagonals)`, in order; in parallel when
    /// rayon has more than one thread.
    fn map_giant_steps<T: Send>(
        &self,
        giant: impl Fn((usize, &Vec<Option<Plaintext>>)) -> Result<T> + Sync + Send,
    ) -> Result<Vec<T>> {
        if rayon::current_num_threads() > 1 {
            self.plain.par_iter().enumerate().map(giant).collect()
        } else {
            self.plain.iter().enumerate().map(giant).collect()
        }
    }

    fn giant_steps_lazy(
        &self,
        ev: &Evaluator,
        baby: &[Option<&Ciphertext>],
    ) -> Result<(Option<ExtendedCiphertext>, Option<Ciphertext>)> {
        let g = self.baby;
        type Partial = (Option<ExtendedCiphertext>, Option<Ciphertext>);
        let giant = |(b, row): (usize, &Vec<Option<Plaintext>>)| -> Result<Partial> {
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
            let (mut ext, mut low) = (None, None);
            if let Some(inner) = inner {
                ev.rotate_lazy_accumulate(&mut ext, &mut low, &inner, (b * g) as i64)?;
            }
            Ok((ext, low))
        };
        let parts: Vec<Partial> = self.map_giant_steps(giant)?;
        let (mut ext, mut low): Partial = (None, None);
        for (e, l) in parts {
            if let Some(e) = e {
                sum_into(&mut ext, e, |s, p| ev.add_extended_assign(s, p))?;
            }
            if let Some(l) = l {
                sum_into(&mut low, l, |s, p| ev.add_assign(s, p))?;
            }
        }
        if ext.is_none() && low.is_none() {
            return Err(all_zero());
        }
        Ok((ext, low))
    }

    /// The giant steps on given baby steps, each rotation a full key switch (the reference
    /// for the lazy and double-hoisted forms).
    #[cfg(test)]
    fn giant_steps_single(
        &self,
        ev: &Evaluator,
        baby: &[Option<&Ciphertext>],
    ) -> Result<Ciphertext> {
        let g = self.baby;
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
        let parts: Vec<Option<Ciphertext>> = self.map_giant_steps(giant)?;
        let mut acc: Option<Ciphertext> = None;
        for part in parts.into_iter().flatten() {
            sum_into(&mut acc, part, |s, p| ev.add_assign(s, p))?;
        }
        acc.ok_or_else(all_zero)
    }
}

/// Adds `part` into `acc` with `add`, or makes it the sum when `acc` is empty.
fn sum_into<T>(
    acc: &mut Option<T>,
    part: T,
    add: impl FnOnce(&mut T, &T) -> Result<()>,
) -> Result<()> {
    match acc.as_mut() {
        Some(s) => add(s, &part),
        None => {
            *acc = Some(part);
            Ok(())
        }
    }
}

fn all_zero() -> Error {
    Error::InvalidValue {
        context: "linear transform".into(),
        reason: "all diagonals are zero".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ckks::{
        galois_element_for_rotation, CkksParams, CkksParamsLiteral, Decryptor, EncryptionKey,
        Encryptor, KeyGenerator, PrecisionStats, Security,
    };
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use std::sync::Arc;

    fn bits(got: &[f64], want: &[f64]) -> f64 {
        PrecisionStats::compare(got, want).min_bits
    }

    /// Double-hoisted BSGS (baby steps and giant-step sums in `Q_l·P`), the lazy giant steps
    /// on client-prepared baby steps, and the single-hoisted reference agree with each other
    /// and with the f64 matrix product, at N = 2^10..2^12, with one to three special primes
    /// (several digits of one or two primes each), full and partly zero diagonals, and a
    /// transform read below the top level.
    #[test]
    fn double_hoisted_bsgs_equals_single_hoisted() {
        // (log N, log q, log p, dnum)
        type Case = (u32, Vec<u32>, Vec<u32>, Option<usize>);
        let cases: [Case; 4] = [
            (10, vec![50, 40, 40], vec![50], None),
            (11, vec![55, 40, 40, 40], vec![50, 50], None),
            (12, vec![55, 40, 40, 40, 40], vec![55], None),
            (12, vec![55, 40, 40, 40, 40], vec![50, 50, 50], Some(2)),
        ];
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        for (log_n, q, p, dnum) in cases {
            let mut lit = CkksParamsLiteral::new(log_n, q, p, 40);
            lit.dnum = dnum;
            let params = CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap();
            let slots = params.slots();
            let kg = KeyGenerator::new(&params);
            let sk = kg.gen_secret_key(&mut rng);
            let encoder = Encoder::new(&params).unwrap();
            let dec = Decryptor::new(&params, &sk).unwrap();
            let enc = Encryptor::new(&params, EncryptionKey::Secret(&sk)).unwrap();
            for (k, g, level_drop, sparse) in [(16usize, 4usize, 0usize, false), (33, 8, 1, true)] {
                let steps = rotation_steps(k.div_ceil(g) * g, g);
                let elements: Vec<u64> = steps
                    .iter()
                    .map(|&s| galois_element_for_rotation(&params, s))
                    .collect();
                let keys = kg
                    .gen_evaluation_keys(&sk, &elements, false, &mut rng)
                    .unwrap();
                let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
                let diags: Vec<Vec<f64>> = (0..k)
                    .map(|j| {
                        if sparse && j % 3 == 1 {
                            vec![0.0; slots]
                        } else {
                            (0..slots).map(|_| rng.random_range(-1.0..1.0)).collect()
                        }
                    })
                    .collect();
                let x: Vec<f64> = (0..slots).map(|_| rng.random_range(-1.0..1.0)).collect();
                let level = params.max_level().saturating_sub(level_drop);
                let scale = params.default_scale();
                let q = params.q()[level.get()] as f64;
                let lt = LinearTransform::new(&encoder, &diags, level, q, g).unwrap();
                let ct = ev
                    .drop_to_level(
                        &enc.encrypt(
                            &encoder.encode(&x, params.max_level(), scale).unwrap(),
                            &mut rng,
                        )
                        .unwrap(),
                        level,
                    )
                    .unwrap();
                let want: Vec<f64> = (0..slots)
                    .map(|i| (0..k).map(|j| diags[j][i] * x[(i + j) % slots]).sum())
                    .collect();
                let run = |c: Ciphertext| -> Vec<f64> {
                    let mut c = c;
                    ev.rescale_assign(&mut c).unwrap();
                    encoder.decode(&dec.decrypt(&c).unwrap()).unwrap()
                };
                let double = run(lt.apply(&ev, &ct).unwrap());
                let single = run(lt.apply_single_hoisted(&ev, &ct).unwrap());
                let copies: Vec<Ciphertext> = (0..g)
                    .map(|a| {
                        let r: Vec<f64> = (0..slots).map(|i| x[(i + a) % slots]).collect();
                        let pt = encoder.encode(&r, params.max_level(), scale).unwrap();
                        ev.drop_to_level(&enc.encrypt(&pt, &mut rng).unwrap(), level)
                            .unwrap()
                    })
                    .collect();
                let lazy = run(lt.apply_rotated(&ev, &copies).unwrap());
                let (bd, bs, bl, bds) = (
                    bits(&double, &want),
                    bits(&single, &want),
                    bits(&lazy, &want),
                    bits(&double, &single),
                );
                assert!(
                    bd >= 18.0 && bs >= 18.0 && bl >= 18.0,
                    "N = 2^{log_n}, k = {k}: double {bd:.1}, single {bs:.1}, lazy {bl:.1} bits"
                );
                // double hoisting rounds once where the reference rounds per rotation: the
                // two agree far beyond the precision either has against the f64 product
                assert!(bds >= bd.min(bs) - 1.0, "double vs single {bds:.1} bits");
            }
        }
    }
}
