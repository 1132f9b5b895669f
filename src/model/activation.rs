//! Polynomial activations in the Chebyshev basis.
//!
//! CKKS evaluates only polynomials, so every nonlinearity of an adapter is a polynomial
//! `p(x) = sum_k c_k T_k(t)` with `t = (2x - lo - hi) / (hi - lo)`, valid on a declared
//! interval `[lo, hi]`. Outside that interval the polynomial diverges quickly from the
//! function it approximates (and the encrypted evaluation computes garbage), which is why
//! the interval is part of the type and the plaintext reference reports values outside it.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest supported polynomial degree.
pub const MAX_DEGREE: usize = 63;

/// A named scalar function that an [`Activation`] may approximate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationFn {
    /// `x^2`.
    Square,
    /// Exact GELU, `x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))` (not the tanh approximation).
    Gelu,
    /// `max(x, 0)`.
    Relu,
    /// SiLU / swish, `x * sigmoid(x)`.
    Silu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid, `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x`.
    Identity,
}

impl ActivationFn {
    /// All named functions, in declaration order.
    pub const ALL: [ActivationFn; 7] = [
        ActivationFn::Square,
        ActivationFn::Gelu,
        ActivationFn::Relu,
        ActivationFn::Silu,
        ActivationFn::Tanh,
        ActivationFn::Sigmoid,
        ActivationFn::Identity,
    ];

    /// Evaluates the exact function at `x` (NaN in, NaN out).
    pub fn eval(self, x: f64) -> f64 {
        match self {
            ActivationFn::Square => x * x,
            ActivationFn::Gelu => 0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2)),
            ActivationFn::Relu => {
                if x > 0.0 || x.is_nan() {
                    x
                } else {
                    0.0
                }
            }
            ActivationFn::Silu => x * sigmoid(x),
            ActivationFn::Tanh => x.tanh(),
            ActivationFn::Sigmoid => sigmoid(x),
            ActivationFn::Identity => x,
        }
    }

    /// The lowercase name used in model cards (`"gelu"`, `"square"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ActivationFn::Square => "square",
            ActivationFn::Gelu => "gelu",
            ActivationFn::Relu => "relu",
            ActivationFn::Silu => "silu",
            ActivationFn::Tanh => "tanh",
            ActivationFn::Sigmoid => "sigmoid",
            ActivationFn::Identity => "identity",
        }
    }

    /// Parses a lowercase name as produced by [`ActivationFn::name`].
    ///
    /// # Errors
    /// [`Error::Model`] for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|f| f.name() == name)
            .ok_or_else(|| Error::model(format!("unknown activation function '{name}'")))
    }
}

impl std::fmt::Display for ActivationFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Error function, accurate to a few ulps of 1 in absolute terms.
///
/// Uses `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))`, whose
/// terms are all positive (no cancellation); `|erf(x)| = 1` in double precision for
/// `|x| >= 6`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax >= 6.0 {
        return x.signum();
    }
    let x2 = ax * ax;
    let mut term = ax;
    let mut sum = ax;
    let mut n = 0.0_f64;
    // The ratio of successive terms is 2x^2 / (2n + 3) < 1 once n > x^2, so ~x^2 + 40
    // terms reach double precision; 200 bounds the loop for |x| < 6.
    for _ in 0..200 {
        term *= 2.0 * x2 / (2.0 * n + 3.0);
        sum += term;
        n += 1.0;
        if term < sum * 1e-17 {
            break;
        }
    }
    let v = 2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum;
    v.min(1.0).copysign(x)
}

/// A polynomial activation in the Chebyshev basis on a declared interval `[lo, hi]`.
///
/// The polynomial is `p(x) = sum_{k=0}^{d} cheb[k] * T_k(t)` with
/// `t = (2x - lo - hi) / (hi - lo)`, so `t` ranges over `[-1, 1]` when `x` ranges over
/// `[lo, hi]`. `func` names the function that was approximated (`None` for an explicit
/// polynomial); it is used only by fit-error reports and by the exact-function reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    /// The named function this polynomial approximates, `None` for an explicit polynomial.
    pub func: Option<ActivationFn>,
    /// Lower end of the declared interval.
    pub lo: f64,
    /// Upper end of the declared interval.
    pub hi: f64,
    /// Chebyshev coefficients `c_0 ..= c_d` (in `t`, not `x`).
    pub cheb: Vec<f64>,
}

fn check_interval(lo: f64, hi: f64) -> Result<()> {
    if !lo.is_finite() || !hi.is_finite() {
        return Err(Error::InvalidValue {
            context: "activation interval".into(),
            reason: format!("bounds must be finite, got [{lo}, {hi}]"),
        });
    }
    if lo >= hi {
        return Err(Error::InvalidValue {
            context: "activation interval".into(),
            reason: format!("need lo < hi, got [{lo}, {hi}]"),
        });
    }
    Ok(())
}

fn check_degree(degree: usize) -> Result<()> {
    if degree == 0 || degree > MAX_DEGREE {
        return Err(Error::InvalidValue {
            context: "activation degree".into(),
            reason: format!("degree must be in 1..={MAX_DEGREE}, got {degree}"),
        });
    }
    Ok(())
}

fn check_finite(values: &[f64], context: &str) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: context.into(),
            reason: format!("coefficient {i} is {v}"),
        });
    }
    Ok(())
}

impl Activation {
    /// Chebyshev interpolant of degree `degree` of `func` on `[lo, hi]`.
    ///
    /// Interpolates at the `degree + 1` Chebyshev nodes of the first kind, which is within
    /// a small factor of the best uniform approximation for smooth functions. `Square`
    /// (for `degree >= 2`) and `Identity` are represented exactly, with degree 2 and 1.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if `lo >= hi`, a bound is not finite, or `degree` is not in
    /// `1..=63`.
    pub fn fit(func: ActivationFn, lo: f64, hi: f64, degree: usize) -> Result<Self> {
        check_interval(lo, hi)?;
        check_degree(degree)?;
        match func {
            ActivationFn::Square if degree >= 2 => {
                let mut a = Self::from_power_coeffs(&[0.0, 0.0, 1.0], lo, hi)?;
                a.func = Some(func);
                return Ok(a);
            }
            ActivationFn::Identity => {
                let mut a = Self::from_power_coeffs(&[0.0, 1.0], lo, hi)?;
                a.func = Some(func);
                return Ok(a);
            }
            _ => {}
        }
        let n = degree + 1;
        let nf = n as f64;
        let mid = 0.5 * (lo + hi);
        let half = 0.5 * (hi - lo);
        let values: Vec<f64> = (0..n)
            .map(|j| {
                let t = (std::f64::consts::PI * (j as f64 + 0.5) / nf).cos();
                func.eval(mid + half * t)
            })
            .collect();
        let cheb: Vec<f64> = (0..n)
            .map(|k| {
                let s: f64 = values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        v * (std::f64::consts::PI * k as f64 * (j as f64 + 0.5) / nf).cos()
                    })
                    .sum();
                let c = 2.0 / nf * s;
                if k == 0 {
                    0.5 * c
                } else {
                    c
                }
            })
            .collect();
        check_finite(&cheb, "fitted activation")?;
        Ok(Activation {
            func: Some(func),
            lo,
            hi,
            cheb,
        })
    }

    /// Converts a polynomial given by its power coefficients in `x`
    /// (`p(x) = sum_i coeffs[i] * x^i`) to the Chebyshev basis in `t` on `[lo, hi]`.
    ///
    /// The conversion is exact up to floating-point rounding (Horner's scheme carried out
    /// in the Chebyshev basis with `x = mid + half * t`). Trailing zero coefficients are
    /// dropped; the resulting `func` is `None`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad interval, a non-finite coefficient, or a degree
    /// (after dropping trailing zeros) outside `1..=63`.
    pub fn from_power_coeffs(coeffs: &[f64], lo: f64, hi: f64) -> Result<Self> {
        check_interval(lo, hi)?;
        check_finite(coeffs, "power coefficients")?;
        let len = coeffs.iter().rposition(|&c| c != 0.0).map_or(0, |p| p + 1);
        if len < 2 {
            return Err(Error::InvalidValue {
                context: "power coefficients".into(),
                reason: format!("polynomial must have degree in 1..={MAX_DEGREE}, got a constant"),
            });
        }
        check_degree(len - 1)?;
        let mid = 0.5 * (lo + hi);
        let half = 0.5 * (hi - lo);
        // q <- q * (mid + half * t) + a_i, in the Chebyshev basis.
        let mut q: Vec<f64> = vec![0.0; len];
        q[0] = coeffs[len - 1];
        // `deg` is the degree of q before this step.
        for (deg, i) in (0..len - 1).rev().enumerate() {
            let mut next = vec![0.0; len];
            for k in 0..=deg {
                next[k] += mid * q[k];
                if k == 0 {
                    next[1] += half * q[0];
                } else {
                    next[k + 1] += 0.5 * half * q[k];
                    next[k - 1] += 0.5 * half * q[k];
                }
            }
            next[0] += coeffs[i];
            q = next;
        }
        check_finite(&q, "converted power coefficients")?;
        Ok(Activation {
            func: None,
            lo,
            hi,
            cheb: q,
        })
    }

    /// An explicit polynomial from its Chebyshev coefficients in `t` on `[lo, hi]`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad interval, a non-finite coefficient, or a degree
    /// (`cheb.len() - 1`) outside `1..=63`.
    pub fn from_chebyshev(cheb: Vec<f64>, lo: f64, hi: f64) -> Result<Self> {
        check_interval(lo, hi)?;
        check_finite(&cheb, "chebyshev coefficients")?;
        check_degree(cheb.len().saturating_sub(1))?;
        Ok(Activation {
            func: None,
            lo,
            hi,
            cheb,
        })
    }

    /// Checks the invariants of a value whose public fields may have been edited:
    /// finite interval with `lo < hi`, finite coefficients, degree in `1..=63`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the broken invariant.
    pub fn validate(&self) -> Result<()> {
        check_interval(self.lo, self.hi)?;
        check_finite(&self.cheb, "chebyshev coefficients")?;
        check_degree(self.cheb.len().saturating_sub(1))
    }

    /// Degree `d` of the polynomial (number of coefficients minus one).
    pub fn degree(&self) -> usize {
        self.cheb.len().saturating_sub(1)
    }

    /// The declared interval `(lo, hi)`.
    pub fn interval(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// Whether `x` lies in the declared interval (inclusive).
    pub fn contains(&self, x: f64) -> bool {
        x >= self.lo && x <= self.hi
    }

    /// Maps `x` to the Chebyshev variable `t = (2x - lo - hi) / (hi - lo)`.
    pub fn to_t(&self, x: f64) -> f64 {
        (2.0 * x - self.lo - self.hi) / (self.hi - self.lo)
    }

    /// Evaluates the polynomial at `x` with Clenshaw's recurrence.
    ///
    /// Works for any `x`, but outside `[lo, hi]` the value says nothing about `func`.
    pub fn eval(&self, x: f64) -> f64 {
        let t = self.to_t(x);
        let mut b1 = 0.0;
        let mut b2 = 0.0;
        for &c in self.cheb.iter().skip(1).rev() {
            let b0 = c + 2.0 * t * b1 - b2;
            b2 = b1;
            b1 = b0;
        }
        self.cheb.first().copied().unwrap_or(0.0) + t * b1 - b2
    }

    /// Evaluates the named function (`func`) at `x`, or `None` for an explicit polynomial.
    pub fn eval_exact(&self, x: f64) -> Option<f64> {
        self.func.map(|f| f.eval(x))
    }

    /// Largest `|p(x) - func(x)|` over `samples` equally spaced points of `[lo, hi]`
    /// (both ends included).
    ///
    /// # Errors
    /// [`Error::Model`] for an explicit polynomial (no named function);
    /// [`Error::InvalidValue`] if `samples < 2`.
    pub fn max_fit_error(&self, samples: usize) -> Result<f64> {
        let func = self.func.ok_or_else(|| {
            Error::model("max_fit_error: explicit polynomial has no named function")
        })?;
        if samples < 2 {
            return Err(Error::InvalidValue {
                context: "max_fit_error".into(),
                reason: format!("need at least 2 samples, got {samples}"),
            });
        }
        let step = (self.hi - self.lo) / (samples - 1) as f64;
        let mut worst = 0.0f64;
        for i in 0..samples {
            let x = if i + 1 == samples {
                self.hi
            } else {
                self.lo + step * i as f64
            };
            worst = worst.max((self.eval(x) - func.eval(x)).abs());
        }
        Ok(worst)
    }

    /// Power coefficients `b_0 ..= b_d` in the variable `t`: `p = sum_j b_j t^j`.
    ///
    /// Useful for evaluators that work in the monomial basis. The conversion is exact in
    /// exact arithmetic, but the coefficients grow like `2^d`, so prefer the Chebyshev form
    /// for high degrees.
    pub fn power_coeffs_in_t(&self) -> Vec<f64> {
        let n = self.cheb.len();
        let mut out = vec![0.0; n];
        // T_{k-1}, T_k as power series in t.
        let mut prev = vec![0.0; n];
        let mut cur = vec![0.0; n];
        if n == 0 {
            return out;
        }
        cur[0] = 1.0; // T_0
        for (k, &c) in self.cheb.iter().enumerate() {
            if k > 0 {
                // next = 2 t T_k - T_{k-1}, except T_1 = t.
                let mut next = vec![0.0; n];
                for j in 0..n - 1 {
                    next[j + 1] += if k == 1 { cur[j] } else { 2.0 * cur[j] };
                }
                if k > 1 {
                    for (x, p) in next.iter_mut().zip(&prev) {
                        *x -= p;
                    }
                }
                prev = std::mem::replace(&mut cur, next);
            }
            for (o, v) in out.iter_mut().zip(&cur) {
                *o += c * v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        // Reference values from Abramowitz & Stegun table 7.1 / high-precision evaluation.
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ];
        for (x, want) in cases {
            assert!(
                (erf(x) - want).abs() < 1e-15,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn power_in_t_matches_clenshaw() {
        let a = Activation::fit(ActivationFn::Tanh, -3.0, 5.0, 9).unwrap();
        let b = a.power_coeffs_in_t();
        for i in 0..=20 {
            let x = -3.0 + 8.0 * i as f64 / 20.0;
            let t = a.to_t(x);
            let p: f64 = b.iter().rev().fold(0.0, |acc, c| acc * t + c);
            assert!((p - a.eval(x)).abs() < 1e-12);
        }
    }
}
