//! The homomorphic evaluator: additions, multiplications, rescaling, level management and
//! rotations (plain and hoisted).
//!
//! Conventions: `op(&self, ..) -> Result<Ciphertext>` allocates; `op_assign(&self, &mut ct, ..)`
//! works in place. Operands at different levels are brought to the lower one; operands at
//! different scales are an error ([`Error::ScaleMismatch`]) unless they agree to within
//! [`SCALE_TOLERANCE`], never a silently wrong result.
//!
//! Size: one `impl Evaluator` block of small operations; key switching is in `keyswitch.rs`, linear transforms in `lintrans.rs`, sanitization in `sanitize.rs`.

use super::ciphertext::{Ciphertext, Plaintext};
use super::keygen::{galois_element_for_conjugation, galois_element_for_rotation};
use super::keys::{EvaluationKeys, SwitchingKey};
use super::keyswitch::{self, Decomposition};
use super::params::CkksParams;
use super::units::Level;
use crate::math::poly::{Eval, RnsPoly};
use crate::{Error, Result};
use std::sync::Arc;

/// Relative difference under which two scales count as equal (the error this admits is far
/// below CKKS noise).
pub const SCALE_TOLERANCE: f64 = 1e-9;

/// Evaluates homomorphic operations; holds the evaluation keys it may need.
#[derive(Debug, Clone)]
pub struct Evaluator {
    params: CkksParams,
    keys: Option<Arc<EvaluationKeys>>,
}

/// A ciphertext prepared for many rotations: its `c_1` decomposed once (hoisting).
#[derive(Debug, Clone)]
pub struct HoistedCiphertext {
    ct: Ciphertext,
    dec: Decomposition,
}

/// A ciphertext `(d_0, d_1)` held in the extended basis `Q_l·P` and multiplied by `P`, the
/// form key-switch products take before ModDown. Double-hoisted linear transforms keep baby
/// steps and giant-step sums in this form and divide by `P` once at the end
/// ([`Evaluator::mod_down_extended`]).
#[derive(Debug, Clone)]
pub(crate) struct ExtendedCiphertext {
    pub(crate) parts: [RnsPoly<Eval>; 2],
    pub(crate) scale: f64,
}

impl HoistedCiphertext {
    /// The ciphertext it was made from.
    pub fn ciphertext(&self) -> &Ciphertext {
        &self.ct
    }
}

impl Evaluator {
    /// An evaluator without keys (additions, plaintext products, rescaling).
    pub fn new(params: &CkksParams) -> Self {
        Evaluator {
            params: params.clone(),
            keys: None,
        }
    }

    /// An evaluator holding evaluation keys (needed for `mul_relin`, rotations, conjugation).
    pub fn with_keys(params: &CkksParams, keys: Arc<EvaluationKeys>) -> Result<Self> {
        params.check_digest("evaluation keys", &keys.params_digest())?;
        Ok(Evaluator {
            params: params.clone(),
            keys: Some(keys),
        })
    }

    /// The parameter set.
    pub fn params(&self) -> &CkksParams {
        &self.params
    }

    fn check_ct(&self, ct: &Ciphertext) -> Result<()> {
        self.params.check_digest("ciphertext", &ct.params_digest())
    }

    fn check_pt(&self, pt: &Plaintext) -> Result<()> {
        self.params.check_digest("plaintext", &pt.params_digest())
    }

    fn check_scales(a: f64, b: f64) -> Result<()> {
        let rel = (a - b).abs() / a.abs().max(b.abs());
        if rel <= SCALE_TOLERANCE {
            Ok(())
        } else {
            Err(Error::ScaleMismatch {
                left: a,
                right: b,
                rel,
            })
        }
    }

    // ---------------------------------------------------------------- levels

    /// Drops `ct` to `level` (no rescaling: the scale is unchanged). Cost: none.
    pub fn drop_to_level_assign(&self, ct: &mut Ciphertext, level: Level) -> Result<()> {
        self.check_ct(ct)?;
        if level > ct.level() {
            return Err(Error::InvalidLevel {
                level,
                max: ct.level(),
            });
        }
        for p in ct.parts_mut().iter_mut() {
            p.truncate_level(level.get());
        }
        Ok(())
    }

    /// Allocating form of [`Evaluator::drop_to_level_assign`].
    pub fn drop_to_level(&self, ct: &Ciphertext, level: Level) -> Result<Ciphertext> {
        let mut out = ct.clone();
        self.drop_to_level_assign(&mut out, level)?;
        Ok(out)
    }

    /// Divides by the last prime `q_l` with rounding: level `l -> l-1`, scale `Δ -> Δ/q_l`.
    /// Cost per part: one inverse NTT and `l` NTTs.
    pub fn rescale_assign(&self, ct: &mut Ciphertext) -> Result<()> {
        self.check_ct(ct)?;
        let level = ct.level().get();
        if level == 0 {
            return Err(Error::LevelExhausted {
                op: "rescale".into(),
                needed: 1,
                available: 0,
            });
        }
        let ring = self.params.ring();
        let q_last = *ring.table(level, level).modulus();
        let q_inv = self.params.q_inv(level);
        let n = ring.n();
        for part in ct.parts_mut().iter_mut() {
            let mut last = crate::math::scratch::copied(part.limb(level));
            ring.table(level, level).inverse(&mut last);
            let centered: Vec<i64> = last.iter().map(|&v| q_last.center(v)).collect();
            crate::math::scratch::recycle(last);
            let body = |i: usize, limb: &mut [u64]| {
                let t = ring.table(level, i);
                let m = t.modulus();
                let mut tmp = crate::math::scratch::dirty(centered.len());
                for (x, &v) in tmp.iter_mut().zip(&centered) {
                    *x = m.reduce_i64(v);
                }
                t.forward(&mut tmp);
                let w = q_inv[i];
                let ws = m.shoup(w);
                for (x, &y) in limb.iter_mut().zip(&tmp) {
                    *x = m.mul_shoup(m.sub(*x, y), w, ws);
                }
                crate::math::scratch::recycle(tmp);
            };
            part.truncate_level(level);
            let words = &mut part_words(part)[..level * n];
            if crate::math::par::worth_parallel(level * n) {
                use rayon::prelude::*;
                words
                    .par_chunks_exact_mut(n)
                    .enumerate()
                    .for_each(|(i, l)| body(i, l));
            } else {
                for (i, l) in words.chunks_exact_mut(n).enumerate() {
                    body(i, l);
                }
            }
            part.truncate_level(level - 1);
        }
        let s = ct.scale() / q_last.value() as f64;
        ct.set_scale(s);
        Ok(())
    }

    /// Allocating form of [`Evaluator::rescale_assign`].
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        let mut out = ct.clone();
        self.rescale_assign(&mut out)?;
        Ok(out)
    }

    // ---------------------------------------------------------------- additions

    fn align(&self, a: &mut Ciphertext, b_level: Level) -> Result<()> {
        if a.level() > b_level {
            self.drop_to_level_assign(a, b_level)?;
        }
        Ok(())
    }

    fn add_sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext, sub: bool) -> Result<()> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        Self::check_scales(a.scale(), b.scale())?;
        self.align(a, b.level())?;
        let level = a.level().get();
        let ring = self.params.ring();
        let b_parts: Vec<RnsPoly<Eval>> = b
            .parts()
            .iter()
            .map(|p| {
                if p.level() > level {
                    p.at_level(level)
                } else {
                    p.clone()
                }
            })
            .collect();
        let parts = a.parts_mut();
        while parts.len() < b_parts.len() {
            parts.push(RnsPoly::zero(ring, level, false));
        }
        for (x, y) in parts.iter_mut().zip(&b_parts) {
            if sub {
                x.sub_assign(ring, y);
            } else {
                x.add_assign(ring, y);
            }
        }
        Ok(())
    }

    /// `a += b`.
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.add_sub_assign(a, b, false)
    }
    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.add_assign(&mut out, b)?;
        Ok(out)
    }
    /// `a -= b`.
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.add_sub_assign(a, b, true)
    }
    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.sub_assign(&mut out, b)?;
        Ok(out)
    }
    /// `a = -a`.
    pub fn neg_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.check_ct(a)?;
        let ring = self.params.ring();
        for p in a.parts_mut().iter_mut() {
            p.neg_assign(ring);
        }
        Ok(())
    }

    fn plain_at(&self, pt: &Plaintext, level: usize) -> Result<RnsPoly<Eval>> {
        self.check_pt(pt)?;
        if pt.level() < level {
            return Err(Error::LevelExhausted {
                op: "plaintext operand".into(),
                needed: level,
                available: pt.level().get(),
            });
        }
        Ok(if pt.level() == level && !pt.poly().is_extended() {
            pt.poly().clone()
        } else {
            pt.poly().at_level(level)
        })
    }

    /// `a += pt` (pt at the same scale, at a level >= a's).
    pub fn add_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(a)?;
        Self::check_scales(a.scale(), pt.scale())?;
        let p = self.plain_at(pt, a.level().get())?;
        a.parts_mut()[0].add_assign(self.params.ring(), &p);
        Ok(())
    }
    /// `a + pt`.
    pub fn add_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.add_plain_assign(&mut out, pt)?;
        Ok(out)
    }
    /// `a -= pt`.
    pub fn sub_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(a)?;
        Self::check_scales(a.scale(), pt.scale())?;
        let p = self.plain_at(pt, a.level().get())?;
        a.parts_mut()[0].sub_assign(self.params.ring(), &p);
        Ok(())
    }

    fn scalar_residues(&self, value: f64, level: usize, context: &str) -> Result<Vec<u64>> {
        if !value.is_finite() || value.abs() >= 2f64.powi(120) {
            return Err(Error::InvalidValue {
                context: context.into(),
                reason: format!("constant {value} is not finite or too large"),
            });
        }
        let k = value.round() as i128;
        let ring = self.params.ring();
        Ok((0..=level)
            .map(|i| ring.table(level, i).modulus().reduce_i128(k))
            .collect())
    }

    /// `a += c` in every slot (c encoded at a's scale). Cost: N per limb.
    pub fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        self.check_ct(a)?;
        let level = a.level().get();
        let r = self.scalar_residues(c * a.scale(), level, "add_const")?;
        let ring = self.params.ring();
        let c0 = &mut a.parts_mut()[0];
        c0.for_each_limb(ring, |t, i, limb| {
            let m = t.modulus();
            for x in limb.iter_mut() {
                *x = m.add(*x, r[i]);
            }
        });
        Ok(())
    }
    /// `a + c`.
    pub fn add_const(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.add_const_assign(&mut out, c)?;
        Ok(out)
    }

    // ---------------------------------------------------------------- products

    /// `a *= pt` slot-wise; the scale becomes `a.scale · pt.scale` (rescale afterwards).
    /// Cost: (degree+1)·(l+1) pointwise products.
    pub fn mul_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(a)?;
        let p = self.plain_at(pt, a.level().get())?;
        let ring = self.params.ring();
        for part in a.parts_mut().iter_mut() {
            part.mul_assign(ring, &p);
        }
        let s = a.scale() * pt.scale();
        a.set_scale(s);
        Ok(())
    }
    /// `acc += a * pt` slot-wise, fused: each product limb is accumulated straight into
    /// `acc` (one vectorised multiply-accumulate pass per limb and part, no temporary
    /// ciphertext and no copy of the plaintext). `acc` must be at `a`'s level and degree and
    /// at scale `a.scale · pt.scale`. Cost: (degree+1)·(l+1) pointwise multiply-accumulates.
    pub fn mul_plain_accumulate(
        &self,
        acc: &mut Ciphertext,
        a: &Ciphertext,
        pt: &Plaintext,
    ) -> Result<()> {
        self.check_ct(acc)?;
        self.check_ct(a)?;
        self.check_pt(pt)?;
        let level = a.level().get();
        if acc.level() != level || pt.level() < level {
            return Err(Error::InvalidLevel {
                level: acc.level().min(pt.level()),
                max: Level(level),
            });
        }
        if acc.degree_plus_one() != a.degree_plus_one() {
            return Err(Error::InvalidValue {
                context: "multiply-accumulate".into(),
                reason: format!(
                    "accumulator has {} parts, operand {}",
                    acc.degree_plus_one(),
                    a.degree_plus_one()
                ),
            });
        }
        Self::check_scales(acc.scale(), a.scale() * pt.scale())?;
        let ring = self.params.ring();
        let p = pt.poly();
        for (dst, src) in acc.parts_mut().iter_mut().zip(a.parts()) {
            for i in 0..=level {
                ring.table(level, i)
                    .mul_accumulate(dst.limb_mut(i), src.limb(i), p.limb(i));
            }
        }
        Ok(())
    }

    /// `a * pt`.
    pub fn mul_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.mul_plain_assign(&mut out, pt)?;
        Ok(out)
    }

    /// `a *= c` for a real constant, encoded as the integer `round(c · const_scale)`; the scale
    /// becomes `a.scale · const_scale` (rescale afterwards). Cost: N Shoup products per limb.
    pub fn mul_const_assign(&self, a: &mut Ciphertext, c: f64, const_scale: f64) -> Result<()> {
        self.check_ct(a)?;
        let r = self.scalar_residues(c * const_scale, a.level().get(), "mul_const")?;
        let ring = self.params.ring();
        for part in a.parts_mut().iter_mut() {
            part.mul_scalar_assign(ring, &r);
        }
        let s = a.scale() * const_scale;
        a.set_scale(s);
        Ok(())
    }
    /// `a * c` (see [`Evaluator::mul_const_assign`]).
    pub fn mul_const(&self, a: &Ciphertext, c: f64, const_scale: f64) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.mul_const_assign(&mut out, c, const_scale)?;
        Ok(out)
    }

    /// `a *= k` for an integer: the scale is unchanged and no level is used.
    pub fn mul_int_assign(&self, a: &mut Ciphertext, k: i64) -> Result<()> {
        self.check_ct(a)?;
        let r = self.scalar_residues(k as f64, a.level().get(), "mul_int")?;
        let ring = self.params.ring();
        for part in a.parts_mut().iter_mut() {
            part.mul_scalar_assign(ring, &r);
        }
        Ok(())
    }

    /// Tensor product without relinearization: a 3-part ciphertext at scale `a.scale·b.scale`.
    /// Cost: 4·(l+1) pointwise products.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        if a.degree_plus_one() != 2 || b.degree_plus_one() != 2 {
            return Err(Error::InvalidValue {
                context: "mul".into(),
                reason: "operands must be relinearized (2 parts)".into(),
            });
        }
        let level = a.level().min(b.level()).get();
        let ring = self.params.ring();
        let at = |c: &Ciphertext, i: usize| {
            if c.level() > level {
                c.parts()[i].at_level(level)
            } else {
                c.parts()[i].clone()
            }
        };
        let (a0, a1, b0, b1) = (at(a, 0), at(a, 1), at(b, 0), at(b, 1));
        let mut d0 = RnsPoly::<Eval>::zero(ring, level, false);
        let mut d1 = RnsPoly::<Eval>::zero(ring, level, false);
        let mut d2 = RnsPoly::<Eval>::zero(ring, level, false);
        d0.mul_accumulate(ring, &a0, &b0);
        d1.mul_accumulate(ring, &a0, &b1);
        d1.mul_accumulate(ring, &a1, &b0);
        d2.mul_accumulate(ring, &a1, &b1);
        Ok(Ciphertext::new(
            vec![d0, d1, d2],
            a.scale() * b.scale(),
            self.params.digest(),
        ))
    }

    fn keys(&self) -> Result<&EvaluationKeys> {
        self.keys.as_deref().ok_or_else(|| Error::MissingKey {
            what: "this evaluator holds no evaluation keys".into(),
        })
    }

    /// Relinearizes a 3-part ciphertext back to 2 parts. Cost: one key switch.
    pub fn relinearize_assign(&self, ct: &mut Ciphertext) -> Result<()> {
        self.check_ct(ct)?;
        if ct.degree_plus_one() == 2 {
            return Ok(());
        }
        let rlk = self.keys()?.relin().ok_or_else(|| Error::MissingKey {
            what: "relinearization key".into(),
        })?;
        let ring = self.params.ring();
        let parts = ct.parts_mut();
        let c2 = parts
            .pop()
            .ok_or_else(|| Error::format("ciphertext", "no parts"))?;
        let (d0, d1) = keyswitch::switch_key(&self.params, &c2, &rlk.0);
        parts[0].add_assign(ring, &d0);
        parts[1].add_assign(ring, &d1);
        Ok(())
    }

    /// `a * b`, relinearized (not rescaled). Cost: 4·(l+1) products and one key switch.
    pub fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut out = self.mul(a, b)?;
        self.relinearize_assign(&mut out)?;
        Ok(out)
    }
    /// `a *= b`, relinearized.
    pub fn mul_relin_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        *a = self.mul_relin(a, b)?;
        Ok(())
    }

    // ---------------------------------------------------------------- automorphisms

    pub(crate) fn galois_key(&self, element: u64) -> Result<&SwitchingKey> {
        self.keys()?
            .galois(element)
            .map(|g| &g.key)
            .ok_or_else(|| Error::MissingKey {
                what: format!("Galois key for element {element}"),
            })
    }

    /// Applies `X -> X^element` and switches the key back to `s`. Cost: one key switch.
    pub fn apply_galois(&self, ct: &Ciphertext, element: u64) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        if ct.degree_plus_one() != 2 {
            return Err(Error::InvalidValue {
                context: "rotation".into(),
                reason: "relinearize first".into(),
            });
        }
        if element == 1 {
            return Ok(ct.clone());
        }
        let key = self.galois_key(element)?;
        let ring = self.params.ring();
        let perm = ring.galois_permutation(element);
        let c1 = ct.parts()[1].permuted(&perm);
        let (d0, d1) = keyswitch::switch_key(&self.params, &c1, key);
        let mut c0 = ct.parts()[0].permuted(&perm);
        c0.add_assign(ring, &d0);
        Ok(Ciphertext::new(
            vec![c0, d1],
            ct.scale(),
            self.params.digest(),
        ))
    }

    /// Rotates slots left by `steps` (negative: right). Needs the Galois key of
    /// [`galois_element_for_rotation`]. Cost: one key switch.
    pub fn rotate(&self, ct: &Ciphertext, steps: i64) -> Result<Ciphertext> {
        self.apply_galois(ct, galois_element_for_rotation(&self.params, steps))
    }
    /// In-place rotation.
    pub fn rotate_assign(&self, ct: &mut Ciphertext, steps: i64) -> Result<()> {
        *ct = self.rotate(ct, steps)?;
        Ok(())
    }
    /// Complex conjugation of every slot. Cost: one key switch.
    pub fn conjugate(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.apply_galois(ct, galois_element_for_conjugation(&self.params))
    }

    /// Decomposes `c_1` once for many rotations (hoisting). Cost: the ModUp part of a key
    /// switch.
    pub fn hoist(&self, ct: &Ciphertext) -> Result<HoistedCiphertext> {
        self.check_ct(ct)?;
        if ct.degree_plus_one() != 2 {
            return Err(Error::InvalidValue {
                context: "hoisting".into(),
                reason: "relinearize first".into(),
            });
        }
        let dec = keyswitch::decompose(&self.params, &ct.parts()[1]);
        Ok(HoistedCiphertext {
            ct: ct.clone(),
            dec,
        })
    }

    /// ModDown of an extended pair into a ciphertext at `scale`.
    pub(crate) fn mod_down_pair(
        &self,
        u0: &RnsPoly<Eval>,
        u1: &RnsPoly<Eval>,
        scale: f64,
    ) -> Ciphertext {
        let (d0, d1) = crate::math::par::join(
            u0.as_words().len(),
            || keyswitch::mod_down(&self.params, u0),
            || keyswitch::mod_down(&self.params, u1),
        );
        Ciphertext::new(vec![d0, d1], scale, self.params.digest())
    }

    /// Rotation of a hoisted ciphertext by `steps`. Cost: the inner product and ModDown of a
    /// key switch (the ModUp was paid once by [`Evaluator::hoist`]).
    pub fn rotate_hoisted(&self, h: &HoistedCiphertext, steps: i64) -> Result<Ciphertext> {
        let element = galois_element_for_rotation(&self.params, steps);
        if element == 1 {
            return Ok(h.ct.clone());
        }
        let key = self.galois_key(element)?;
        let ring = self.params.ring();
        let perm = ring.galois_permutation(element);
        let (u0, u1) = keyswitch::inner_product(&self.params, &h.dec, key, Some(&perm));
        let mut out = self.mod_down_pair(&u0, &u1, h.ct.scale());
        let c0 = h.ct.parts()[0].permuted(&perm);
        out.parts_mut()[0].add_assign(ring, &c0);
        Ok(out)
    }

    // ------------------------------------------------- double hoisting (extended basis)

    /// Rotation of a hoisted ciphertext by `steps`, left in the extended basis `Q_l·P`
    /// (no ModDown): `(P·φ(c_0) + u_0, u_1)` with `u` the key-switch inner product. Baby
    /// steps of a double-hoisted linear transform. Cost: the inner product of a key switch
    /// and one Shoup product per ciphertext word; no NTT.
    pub(crate) fn rotate_hoisted_extended(
        &self,
        h: &HoistedCiphertext,
        steps: i64,
    ) -> Result<ExtendedCiphertext> {
        let element = galois_element_for_rotation(&self.params, steps);
        let ring = self.params.ring();
        let level = h.dec.level;
        if element == 1 {
            let mut parts = [
                RnsPoly::<Eval>::zero(ring, level, true),
                RnsPoly::<Eval>::zero(ring, level, true),
            ];
            for (d, s) in parts.iter_mut().zip(h.ct.parts()) {
                keyswitch::add_p_times(&self.params, d, s, None);
            }
            return Ok(ExtendedCiphertext {
                parts,
                scale: h.ct.scale(),
            });
        }
        let key = self.galois_key(element)?;
        let perm = ring.galois_permutation(element);
        let (mut u0, u1) = keyswitch::inner_product(&self.params, &h.dec, key, Some(&perm));
        keyswitch::add_p_times(&self.params, &mut u0, &h.ct.parts()[0], Some(&perm));
        Ok(ExtendedCiphertext {
            parts: [u0, u1],
            scale: h.ct.scale(),
        })
    }

    /// `acc += a * pt` in the extended basis; `pt` must carry special limbs
    /// ([`Encoder::encode_extended`](super::Encoder)) at `a`'s level or above, and `acc`
    /// (when present) the scale `a.scale · pt.scale`. Cost: `2·(l+1+K)` vectorised
    /// multiply-accumulates.
    pub(crate) fn mul_plain_accumulate_extended(
        &self,
        acc: &mut Option<ExtendedCiphertext>,
        a: &ExtendedCiphertext,
        pt: &Plaintext,
    ) -> Result<()> {
        self.check_pt(pt)?;
        let level = a.parts[0].level();
        let p = pt.poly();
        if !p.is_extended() || p.level() < level {
            return Err(Error::InvalidValue {
                context: "extended multiply-accumulate".into(),
                reason: format!(
                    "plaintext at level {} (special limbs: {}) for an operand at level {level}",
                    p.level(),
                    p.is_extended()
                ),
            });
        }
        let ring = self.params.ring();
        let scale = a.scale * pt.scale();
        let acc = match acc {
            Some(acc) => {
                Self::check_scales(acc.scale, scale)?;
                acc
            }
            None => acc.insert(ExtendedCiphertext {
                parts: [
                    RnsPoly::<Eval>::zero(ring, level, true),
                    RnsPoly::<Eval>::zero(ring, level, true),
                ],
                scale,
            }),
        };
        let limbs = a.parts[0].num_limbs();
        let pt_limb = |i: usize| {
            if i <= level {
                p.limb(i)
            } else {
                p.limb(p.level() + 1 + (i - level - 1))
            }
        };
        for (dst, src) in acc.parts.iter_mut().zip(&a.parts) {
            for i in 0..limbs {
                ring.table(level, i)
                    .mul_accumulate(dst.limb_mut(i), src.limb(i), pt_limb(i));
            }
        }
        Ok(())
    }

    /// Giant step of a double-hoisted transform: `acc += rot(s, steps)`, all in the extended
    /// basis. Only `s_1` is brought down to `Q_l` (one ModDown), rotated and decomposed; the
    /// key-switch products and `φ(s_0)` stay in `Q_l·P`, so the whole transform ends with one
    /// ModDown per part instead of two per rotation. Cost: K inverse and (l+1) forward NTTs
    /// (ModDown of one part), a ModUp and the inner product of a key switch.
    pub(crate) fn rotate_extended_accumulate(
        &self,
        acc: &mut Option<ExtendedCiphertext>,
        s: &ExtendedCiphertext,
        steps: i64,
    ) -> Result<()> {
        let element = galois_element_for_rotation(&self.params, steps);
        let ring = self.params.ring();
        let (d0, d1) = if element == 1 {
            (s.parts[0].clone(), s.parts[1].clone())
        } else {
            let key = self.galois_key(element)?;
            let perm = ring.galois_permutation(element);
            let t1 = keyswitch::mod_down(&self.params, &s.parts[1]).permuted(&perm);
            let dec = keyswitch::decompose(&self.params, &t1);
            let (mut v0, v1) = keyswitch::inner_product(&self.params, &dec, key, None);
            keyswitch::add_permuted(&self.params, &mut v0, &s.parts[0], Some(&perm));
            (v0, v1)
        };
        Self::accumulate_extended(ring, acc, [d0, d1], s.scale)
    }

    /// Giant step on an ordinary ciphertext (the baby steps were client-prepared copies):
    /// `rot(s, steps)` split into its key-switch products, added to `ext` in `Q_l·P`, and
    /// `φ(s_0)`, added to `low` in `Q_l`; `mod_down_extended(ext) + low` is the sum of the
    /// rotations. Cost: a ModUp and the inner product of a key switch; no ModDown.
    pub(crate) fn rotate_lazy_accumulate(
        &self,
        ext: &mut Option<ExtendedCiphertext>,
        low: &mut Option<Ciphertext>,
        s: &Ciphertext,
        steps: i64,
    ) -> Result<()> {
        self.check_ct(s)?;
        if s.degree_plus_one() != 2 {
            return Err(Error::InvalidValue {
                context: "rotation".into(),
                reason: "relinearize first".into(),
            });
        }
        let element = galois_element_for_rotation(&self.params, steps);
        if element == 1 {
            return match low {
                Some(l) => self.add_assign(l, s),
                None => {
                    *low = Some(s.clone());
                    Ok(())
                }
            };
        }
        let ring = self.params.ring();
        let key = self.galois_key(element)?;
        let perm = ring.galois_permutation(element);
        let c1 = s.parts()[1].permuted(&perm);
        let dec = keyswitch::decompose(&self.params, &c1);
        let (v0, v1) = keyswitch::inner_product(&self.params, &dec, key, None);
        Self::accumulate_extended(ring, ext, [v0, v1], s.scale())?;
        match low {
            Some(l) => {
                Self::check_scales(l.scale(), s.scale())?;
                let c0 = &mut l.parts_mut()[0];
                keyswitch::add_permuted(&self.params, c0, &s.parts()[0], Some(&perm));
            }
            None => {
                let c0 = s.parts()[0].permuted(&perm);
                let zero = RnsPoly::<Eval>::zero(ring, s.level().get(), false);
                *low = Some(Ciphertext::new(
                    vec![c0, zero],
                    s.scale(),
                    self.params.digest(),
                ));
            }
        }
        Ok(())
    }

    fn accumulate_extended(
        ring: &crate::math::rns::RingContext,
        acc: &mut Option<ExtendedCiphertext>,
        parts: [RnsPoly<Eval>; 2],
        scale: f64,
    ) -> Result<()> {
        match acc {
            Some(a) => {
                Self::check_scales(a.scale, scale)?;
                for (x, y) in a.parts.iter_mut().zip(&parts) {
                    x.add_assign(ring, y);
                }
            }
            None => *acc = Some(ExtendedCiphertext { parts, scale }),
        }
        Ok(())
    }

    /// `a += b` in the extended basis (same level and scale).
    pub(crate) fn add_extended_assign(
        &self,
        a: &mut ExtendedCiphertext,
        b: &ExtendedCiphertext,
    ) -> Result<()> {
        Self::check_scales(a.scale, b.scale)?;
        let ring = self.params.ring();
        for (x, y) in a.parts.iter_mut().zip(&b.parts) {
            x.add_assign(ring, y);
        }
        Ok(())
    }

    /// The trivial encryption `(0, 0)` of zero at `level` and `scale` (what a transform whose
    /// weights are all zero returns; it carries no randomness, so results that leave the
    /// server must be sanitized as usual). Cost: two zeroed polynomials.
    pub(crate) fn zero_ciphertext(&self, level: Level, scale: f64) -> Ciphertext {
        let ring = self.params.ring();
        Ciphertext::new(
            vec![
                RnsPoly::<Eval>::zero(ring, level.get(), false),
                RnsPoly::<Eval>::zero(ring, level.get(), false),
            ],
            scale,
            self.params.digest(),
        )
    }

    /// `P·ct` in the extended basis `Q_l·P` (its special limbs are zero): the form in which an
    /// ordinary ciphertext joins a sum of key-switch products that is divided by `P` once.
    /// Cost: `(l+1)·N` Shoup products per part; no NTT.
    pub(crate) fn lift_extended(&self, ct: &Ciphertext) -> Result<ExtendedCiphertext> {
        self.check_ct(ct)?;
        if ct.degree_plus_one() != 2 {
            return Err(Error::InvalidValue {
                context: "extended ciphertext".into(),
                reason: "relinearize first".into(),
            });
        }
        let ring = self.params.ring();
        let mut parts = [
            RnsPoly::<Eval>::zero(ring, ct.level().get(), true),
            RnsPoly::<Eval>::zero(ring, ct.level().get(), true),
        ];
        for (d, s) in parts.iter_mut().zip(ct.parts()) {
            keyswitch::add_p_times(&self.params, d, s, None);
        }
        Ok(ExtendedCiphertext {
            parts,
            scale: ct.scale(),
        })
    }

    /// Rotate-and-sum in the extended basis: `z <- z + rot(z, s)` for each step `s` in turn
    /// (the folding of a wide matrix block's partial sums), with no ModDown of the result.
    /// Cost per step: the ModDown of one part, a ModUp and a key-switch inner product
    /// (`K` fewer inverse and `l+1` fewer forward NTTs than a full rotation and addition).
    pub(crate) fn rotate_sum_extended(
        &self,
        z: &mut ExtendedCiphertext,
        steps: &[i64],
    ) -> Result<()> {
        for &s in steps {
            let mut r = None;
            self.rotate_extended_accumulate(&mut r, z, s)?;
            if let Some(r) = r {
                self.add_extended_assign(z, &r)?;
            }
        }
        Ok(())
    }

    /// ModDown of both parts: the ciphertext at `Q_l` an extended one stands for.
    /// Cost: two ModDowns.
    pub(crate) fn mod_down_extended(&self, e: &ExtendedCiphertext) -> Ciphertext {
        self.mod_down_pair(&e.parts[0], &e.parts[1], e.scale)
    }

    /// Many rotations of one ciphertext sharing one decomposition.
    pub fn rotate_many(&self, ct: &Ciphertext, steps: &[i64]) -> Result<Vec<Ciphertext>> {
        let h = self.hoist(ct)?;
        steps.iter().map(|&s| self.rotate_hoisted(&h, s)).collect()
    }
}

fn part_words(p: &mut RnsPoly<Eval>) -> &mut [u64] {
    p.as_words_mut()
}
