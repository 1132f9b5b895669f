//! Polynomial evaluation in the Chebyshev basis, with exact scale management.
//!
//! `p(t) = sum_k c_k T_k(t)` for `t` in `[-1, 1]`. The Chebyshev polynomials are built by
//! `T_2k = 2 T_k^2 - 1` and `T_2k+1 = 2 T_k+1 T_k - T_1` (a product tree of depth
//! `ceil(log2 d)`), then combined with one constant multiplication and one rescale. Every
//! addition is between operands at exactly the same scale: a lower-degree term is brought to
//! the level and scale of the product it is subtracted from by a constant multiplication
//! chosen for that purpose.
//!
//! Cost for degree `d`: `d - 1` ciphertext products (each a key switch), `d` constant
//! products; depth [`chebyshev_depth`]`(d)`.

use super::ciphertext::Ciphertext;
use super::eval::{Evaluator, SCALE_TOLERANCE};
use crate::{Error, Result};

/// Levels consumed by [`evaluate_chebyshev`] for degree `d >= 1`: `ceil(log2 d) + 1`.
pub fn chebyshev_depth(degree: usize) -> usize {
    let mut depth = 0;
    while (1usize << depth) < degree {
        depth += 1;
    }
    depth + 1
}

/// Brings `ct` to exactly (`level`, `scale`) using one constant multiplication and rescale
/// when it sits higher. Errors when it sits lower, or at the same level with another scale.
pub fn match_level_and_scale(
    ev: &Evaluator,
    ct: &Ciphertext,
    level: usize,
    scale: f64,
) -> Result<Ciphertext> {
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(b.abs());
    if ct.level() == level && rel(ct.scale(), scale) <= SCALE_TOLERANCE {
        return Ok(ct.clone());
    }
    if ct.level() <= level {
        return Err(Error::LevelExhausted {
            op: "scale matching".into(),
            needed: level + 1,
            available: ct.level(),
        });
    }
    let mut x = ev.drop_to_level(ct, level + 1)?;
    let q = ev.params().q()[level + 1] as f64;
    let const_scale = scale * q / x.scale();
    // the constant is the integer round(const_scale): its relative rounding error is
    // below 2^-30 for the scales in use, far below SCALE_TOLERANCE's effect on precision
    let k = const_scale.round();
    ev.mul_const_assign(&mut x, 1.0, k)?;
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

/// Evaluates `sum_k coeffs[k] T_k(t)` on a ciphertext whose slots lie in `[-1, 1]`; the result
/// has scale `target_scale` at level `t.level() - chebyshev_depth(d)`. Needs a
/// relinearization key for `d >= 2`.
pub fn evaluate_chebyshev(
    ev: &Evaluator,
    t: &Ciphertext,
    coeffs: &[f64],
    target_scale: f64,
) -> Result<Ciphertext> {
    let d = coeffs.len().saturating_sub(1);
    if coeffs.is_empty() || coeffs.iter().any(|c| !c.is_finite()) {
        return Err(Error::InvalidValue {
            context: "Chebyshev coefficients".into(),
            reason: "empty or not finite".into(),
        });
    }
    let depth = chebyshev_depth(d.max(1));
    if t.level() < depth {
        return Err(Error::LevelExhausted {
            op: format!("Chebyshev degree {d}"),
            needed: depth,
            available: t.level(),
        });
    }
    // T[k] for k in 1..=d
    let mut tk: Vec<Option<Ciphertext>> = vec![None; d + 1];
    tk[1] = Some(t.clone());
    for k in 2..=d {
        let (a, b) = (k.div_ceil(2), k / 2);
        let (ta, tb) = match (&tk[a], &tk[b]) {
            (Some(x), Some(y)) => (x, y),
            _ => {
                return Err(Error::InvalidValue {
                    context: "Chebyshev tree".into(),
                    reason: "missing term".into(),
                })
            }
        };
        let mut p = ev.mul_relin(ta, tb)?;
        ev.rescale_assign(&mut p)?;
        ev.mul_int_assign(&mut p, 2)?;
        if a == b {
            ev.add_const_assign(&mut p, -1.0)?;
        } else {
            // T_{a+b} = 2 T_a T_b - T_{a-b}, here a - b = 1
            let t1 = match_level_and_scale(ev, t, p.level(), p.scale())?;
            ev.sub_assign(&mut p, &t1)?;
        }
        tk[k] = Some(p);
    }
    // combine at the lowest level used, then one rescale
    let final_level = t.level() + 1 - depth; // before the last rescale
    let q = ev.params().q()[final_level] as f64;
    let mut acc: Option<Ciphertext> = None;
    for (k, c) in coeffs.iter().enumerate().skip(1) {
        if *c == 0.0 {
            continue;
        }
        let Some(term) = &tk[k] else { continue };
        let mut x = ev.drop_to_level(term, final_level)?;
        let const_scale = (target_scale * q / x.scale()).round();
        ev.mul_const_assign(&mut x, *c, const_scale)?;
        x.set_scale(target_scale * q);
        match acc.as_mut() {
            Some(s) => ev.add_assign(s, &x)?,
            None => acc = Some(x),
        }
    }
    let mut out = match acc {
        Some(a) => a,
        None => {
            // constant polynomial: 0 * t at the right level and scale
            let mut x = ev.drop_to_level(t, final_level)?;
            ev.mul_const_assign(&mut x, 0.0, 1.0)?;
            x.set_scale(target_scale * q);
            x
        }
    };
    ev.rescale_assign(&mut out)?;
    out.set_scale(target_scale);
    ev.add_const_assign(&mut out, coeffs[0])?;
    Ok(out)
}
