//! Polynomial evaluation in the Chebyshev basis, depth-optimal, with exact scale management.
//!
//! `p(t) = sum_k c_k T_k(t)` for `t` in `[-1, 1]`, evaluated with depth
//! `ceil(log2(d + 1))` (the minimum for degree `d`):
//!
//! - Only the power-of-two Chebyshev polynomials are built: `T_2m = 2 T_m^2 - 1`.
//! - Degree >= 4: `p = q · T_m + r` with `m` the largest power of two <= d (Chebyshev
//!   division: `q_0 = c_m`, `q_j = 2 c_{m+j}`, `r_i = c_i - c_{2m-i}`), recursively.
//! - Degree <= 3: `c_2 T_2 = 2 T_1 (c_2 T_1) - c_2` and `c_3 T_3 = 2 T_2 (c_3 T_1) - c_3 T_1`:
//!   the coefficient is applied to `T_1`, which has a level to spare, so no term costs an
//!   extra level for its coefficient.
//!
//! Every intermediate result is produced at an exact (level, scale) chosen by its consumer:
//! constants are encoded at the scale that makes the next product land on the target, so
//! every addition is between operands at exactly the same scale.
//!
//! Cost for degree 7: 7 ciphertext products (each a key switch), depth 3.

use super::ciphertext::Ciphertext;
use super::eval::{Evaluator, SCALE_TOLERANCE};
use super::units::Level;
use crate::{Error, Result};

/// Levels consumed by [`evaluate_chebyshev`] for degree `d`: `ceil(log2(d + 1))` (at least 1).
pub fn chebyshev_depth(degree: usize) -> usize {
    let mut depth = 0;
    while (1usize << depth) < degree + 1 {
        depth += 1;
    }
    depth.max(1)
}

/// Ciphertext products (key switches) [`evaluate_chebyshev`] performs for a degree-`d`
/// series with no zero coefficient (zero coefficients can only save products).
pub fn chebyshev_products(degree: usize) -> usize {
    fn rec(d: usize, top_power: &mut usize) -> usize {
        if d >= 4 {
            let mut m = 4;
            while m * 2 <= d {
                m *= 2;
            }
            *top_power = (*top_power).max(m);
            rec(d - m, top_power) + 1 + rec(m - 1, top_power)
        } else {
            if d >= 3 {
                *top_power = (*top_power).max(2);
            }
            usize::from(d >= 2) + usize::from(d >= 3)
        }
    }
    let mut top = 1;
    let terms = rec(degree, &mut top);
    terms + top.trailing_zeros() as usize
}

/// Brings `ct` to exactly (`level`, `scale`) using one constant multiplication and rescale
/// when it sits higher. Errors when it sits lower, or at the same level with another scale.
pub fn match_level_and_scale(
    ev: &Evaluator,
    ct: &Ciphertext,
    level: Level,
    scale: f64,
) -> Result<Ciphertext> {
    if ct.level() == level && rel(ct.scale(), scale) <= SCALE_TOLERANCE {
        return Ok(ct.clone());
    }
    scaled_t1(ev, ct, 1.0, level.get(), scale)
}

/// The powers-of-two Chebyshev polynomials of one input: `pow2[j] = T_{2^j}(t)`.
struct Powers {
    pow2: Vec<Ciphertext>,
}

impl Powers {
    fn get(&mut self, ev: &Evaluator, m: usize) -> Result<&Ciphertext> {
        let j = m.trailing_zeros() as usize;
        while self.pow2.len() <= j {
            let last = &self.pow2[self.pow2.len() - 1];
            let mut sq = ev.mul_relin(last, last)?;
            ev.rescale_assign(&mut sq)?;
            ev.mul_int_assign(&mut sq, 2)?;
            ev.add_const_assign(&mut sq, -1.0)?;
            self.pow2.push(sq);
        }
        Ok(&self.pow2[j])
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs())
}

/// `c · x` at exactly (`level`, `scale`), one constant product below `x`'s level.
fn scaled_t1(
    ev: &Evaluator,
    t1: &Ciphertext,
    c: f64,
    level: usize,
    scale: f64,
) -> Result<Ciphertext> {
    if t1.level() <= level {
        return Err(Error::LevelExhausted {
            op: "Chebyshev term".into(),
            needed: level + 1,
            available: t1.level().get(),
        });
    }
    let mut x = ev.drop_to_level(t1, Level(level + 1))?;
    let q = ev.params().q()[level + 1] as f64;
    let const_scale = (scale * q / x.scale()).round();
    ev.mul_const_assign(&mut x, c, const_scale)?;
    ev.rescale_assign(&mut x)?;
    if rel(x.scale(), scale) > 1e-6 {
        return Err(Error::ScaleMismatch {
            left: x.scale(),
            right: scale,
            rel: rel(x.scale(), scale),
        });
    }
    x.set_scale(scale);
    Ok(x)
}

/// `a · b` where `a` is first dropped to `b`'s level, rescaled, landing on exactly
/// (`level`, `scale`) (the caller chose `b`'s scale for that).
fn product_to(
    ev: &Evaluator,
    a: &Ciphertext,
    b: &Ciphertext,
    level: usize,
    scale: f64,
) -> Result<Ciphertext> {
    let a = if a.level() > b.level() {
        ev.drop_to_level(a, b.level())?
    } else {
        a.clone()
    };
    let mut p = ev.mul_relin(&a, b)?;
    ev.rescale_assign(&mut p)?;
    if p.level() != level || rel(p.scale(), scale) > 1e-6 {
        return Err(Error::ScaleMismatch {
            left: p.scale(),
            right: scale,
            rel: rel(p.scale(), scale),
        });
    }
    p.set_scale(scale);
    Ok(p)
}

/// `p(t)` at exactly (`level`, `scale`); needs `level <= T_1.level - chebyshev_depth(deg p)`.
fn eval_at(
    ev: &Evaluator,
    pw: &mut Powers,
    coeffs: &[f64],
    level: usize,
    scale: f64,
) -> Result<Ciphertext> {
    let mut c: Vec<f64> = coeffs.to_vec();
    while c.len() > 1 && c[c.len() - 1] == 0.0 {
        c.pop();
    }
    let d = c.len().saturating_sub(1);
    let t1 = pw.pow2[0].clone();
    if d >= 4 {
        let mut m = 4;
        while m * 2 <= d {
            m *= 2;
        }
        // p = q T_m + r
        let mut q = vec![0.0; d - m + 1];
        q[0] = c[m];
        for j in 1..=d - m {
            q[j] = 2.0 * c[m + j];
        }
        let mut r: Vec<f64> = c[..m].to_vec();
        for j in 1..=d - m {
            r[m - j] -= c[m + j];
        }
        let tm = pw.get(ev, m)?.clone();
        let tm_at = ev.drop_to_level(&tm, Level(level + 1))?;
        let q_scale = scale * ev.params().q()[level + 1] as f64 / tm_at.scale();
        let qv = eval_at(ev, pw, &q, level + 1, q_scale)?;
        let mut out = product_to(ev, &tm_at, &qv, level, scale)?;
        let rv = eval_at(ev, pw, &r, level, scale)?;
        ev.add_assign(&mut out, &rv)?;
        return Ok(out);
    }
    let get = |k: usize| c.get(k).copied().unwrap_or(0.0);
    let (c0, c1, c2, c3) = (get(0), get(1), get(2), get(3));
    // (c1 - c3) T_1 (the -c3 T_1 of 2 T_2 (c3 T_1) - c3 T_1)
    let mut out = scaled_t1(ev, &t1, c1 - c3, level, scale)?;
    let q_next = ev.params().q()[level + 1] as f64;
    if c2 != 0.0 {
        // c2 T_2 = 2 T_1 (c2 T_1) - c2
        let t1_at = ev.drop_to_level(&t1, Level(level + 1))?;
        let u = scaled_t1(ev, &t1, c2, level + 1, scale * q_next / t1_at.scale())?;
        let mut p = product_to(ev, &t1_at, &u, level, scale)?;
        ev.mul_int_assign(&mut p, 2)?;
        ev.add_const_assign(&mut p, -c2)?;
        ev.add_assign(&mut out, &p)?;
    }
    if c3 != 0.0 {
        // 2 T_2 (c3 T_1)
        let t2 = pw.get(ev, 2)?.clone();
        let t2_at = ev.drop_to_level(&t2, Level(level + 1))?;
        let u = scaled_t1(ev, &t1, c3, level + 1, scale * q_next / t2_at.scale())?;
        let mut p = product_to(ev, &t2_at, &u, level, scale)?;
        ev.mul_int_assign(&mut p, 2)?;
        ev.add_assign(&mut out, &p)?;
    }
    ev.add_const_assign(&mut out, c0)?;
    Ok(out)
}

/// Evaluates `sum_k coeffs[k] T_k(t)` on a ciphertext whose slots lie in `[-1, 1]`; the result
/// has scale `target_scale` at level `t.level() - chebyshev_depth(d)`. Needs a
/// relinearization key for `d >= 2`.
pub fn evaluate_chebyshev(
    ev: &Evaluator,
    t: &Ciphertext,
    coeffs: &[f64],
    target_scale: f64,
) -> Result<Ciphertext> {
    if coeffs.is_empty() || coeffs.iter().any(|c| !c.is_finite()) || !target_scale.is_finite() {
        return Err(Error::InvalidValue {
            context: "Chebyshev coefficients".into(),
            reason: "empty or not finite".into(),
        });
    }
    let d = coeffs.len() - 1;
    let depth = chebyshev_depth(d);
    if t.level() < depth {
        return Err(Error::LevelExhausted {
            op: format!("Chebyshev degree {d}"),
            needed: depth,
            available: t.level().get(),
        });
    }
    let mut pw = Powers {
        pow2: vec![t.clone()],
    };
    eval_at(ev, &mut pw, coeffs, t.level().get() - depth, target_scale)
}
