//! Chebyshev activations: fit accuracy, exact conversions, argument checks.

use hepeft::model::{Activation, ActivationFn};
use hepeft::Error;
use proptest::prelude::*;

fn power_eval(coeffs: &[f64], x: f64) -> f64 {
    coeffs.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

#[test]
fn fit_errors_measured() {
    // (function, interval, degree, bound). Bounds are the measured errors rounded up
    // (measured values in the comments, 2001 samples).
    let cases = [
        (ActivationFn::Gelu, (-4.0, 4.0), 3, 0.45), // measured 0.425
        (ActivationFn::Gelu, (-4.0, 4.0), 7, 0.06), // measured 0.0522
        (ActivationFn::Gelu, (-4.0, 4.0), 15, 3e-4), // measured 2.40e-4
        (ActivationFn::Gelu, (-4.0, 4.0), 31, 1e-10), // measured 7.6e-11
        (ActivationFn::Tanh, (-5.0, 5.0), 15, 0.01), // measured 8.87e-3
        (ActivationFn::Sigmoid, (-8.0, 8.0), 9, 0.015), // measured 0.0134
        (ActivationFn::Silu, (-6.0, 6.0), 7, 0.08), // measured 0.0722
        (ActivationFn::Relu, (-1.0, 1.0), 15, 0.035), // measured 0.0314
    ];
    for (f, (lo, hi), d, bound) in cases {
        let a = Activation::fit(f, lo, hi, d).unwrap();
        assert_eq!(a.degree(), d);
        assert_eq!(a.func, Some(f));
        let e = a.max_fit_error(2001).unwrap();
        println!("{f} degree {d} on [{lo}, {hi}]: max error {e:.3e}");
        assert!(e < bound, "{f} degree {d}: error {e} >= {bound}");
    }
}

#[test]
fn gelu_error_decreases_with_degree() {
    let errs: Vec<f64> = [3, 7, 15, 31]
        .iter()
        .map(|&d| {
            Activation::fit(ActivationFn::Gelu, -4.0, 4.0, d)
                .unwrap()
                .max_fit_error(1001)
                .unwrap()
        })
        .collect();
    for w in errs.windows(2) {
        assert!(w[1] < w[0] / 5.0, "errors {errs:?}");
    }
}

#[test]
fn interpolant_matches_function_at_chebyshev_nodes() {
    let (lo, hi, d) = (-3.0, 2.0, 9);
    let a = Activation::fit(ActivationFn::Tanh, lo, hi, d).unwrap();
    for j in 0..=d {
        let t = (std::f64::consts::PI * (j as f64 + 0.5) / (d as f64 + 1.0)).cos();
        let x = 0.5 * (lo + hi) + 0.5 * (hi - lo) * t;
        assert!((a.eval(x) - x.tanh()).abs() < 1e-13);
    }
}

#[test]
fn square_and_identity_are_exact() {
    let sq = Activation::fit(ActivationFn::Square, -3.0, 5.0, 7).unwrap();
    assert_eq!(sq.degree(), 2);
    assert!(sq.max_fit_error(1001).unwrap() < 1e-12);
    assert!(
        (sq.eval(11.0) - 121.0).abs() < 1e-10,
        "exact even outside the interval"
    );
    let id = Activation::fit(ActivationFn::Identity, -1.0, 3.0, 5).unwrap();
    assert_eq!(id.degree(), 1);
    assert!((id.eval(-7.5) + 7.5).abs() < 1e-12);
}

#[test]
fn power_to_chebyshev_by_hand() {
    // 0.25 + 0.5 x + 0.125 x^2 on [-4, 4]: x = 4t gives 0.25 + 2t + 2t^2
    // = 1.25 T0 + 2 T1 + 1 T2.
    let a = Activation::from_power_coeffs(&[0.25, 0.5, 0.125], -4.0, 4.0).unwrap();
    assert_eq!(a.func, None);
    let want = [1.25, 2.0, 1.0];
    for (c, w) in a.cheb.iter().zip(want) {
        assert!((c - w).abs() < 1e-15, "{:?}", a.cheb);
    }
    // Trailing zeros are dropped.
    let b = Activation::from_power_coeffs(&[0.0, 1.0, 0.0, 0.0], 0.0, 1.0).unwrap();
    assert_eq!(b.degree(), 1);
}

#[test]
fn power_coeffs_in_t_inverts_conversion_on_unit_interval() {
    let coeffs = [0.3, -1.0, 0.5, 2.0, -0.25, 0.125];
    let a = Activation::from_power_coeffs(&coeffs, -1.0, 1.0).unwrap();
    let back = a.power_coeffs_in_t();
    for (x, y) in back.iter().zip(coeffs) {
        assert!((x - y).abs() < 1e-13, "{back:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn power_conversion_is_exact(
        coeffs in prop::collection::vec(-2.0f64..2.0, 2..12),
        lo in -5.0f64..0.0,
        width in 0.5f64..8.0,
        u in 0.0f64..1.0,
    ) {
        prop_assume!(coeffs.last().copied().unwrap_or(0.0).abs() > 1e-3);
        let hi = lo + width;
        let a = Activation::from_power_coeffs(&coeffs, lo, hi).unwrap();
        prop_assert_eq!(a.degree(), coeffs.len() - 1);
        let x = lo + u * width;
        let want = power_eval(&coeffs, x);
        // Rounding error is relative to the size of the polynomial over the whole interval.
        let m = lo.abs().max(hi.abs()).max(1.0);
        let scale: f64 = coeffs.iter().enumerate().map(|(i, c)| c.abs() * m.powi(i as i32)).sum();
        prop_assert!((a.eval(x) - want).abs() <= 1e-12 * scale.max(1.0), "{} vs {}", a.eval(x), want);
    }
}

#[test]
fn explicit_chebyshev_and_validation() {
    let a = Activation::from_chebyshev(vec![0.0, 1.0, 0.5], -2.0, 2.0).unwrap();
    // t = x/2; T2(t) = 2t^2 - 1.
    let x: f64 = 1.2;
    let t = x / 2.0;
    assert!((a.eval(x) - (t + 0.5 * (2.0 * t * t - 1.0))).abs() < 1e-15);
    assert!(matches!(a.max_fit_error(10), Err(Error::Model { .. })));
    assert!(a.contains(2.0) && !a.contains(2.0001));
}

#[test]
fn rejects_bad_arguments() {
    let bad = [
        Activation::fit(ActivationFn::Gelu, 1.0, 1.0, 3),
        Activation::fit(ActivationFn::Gelu, 2.0, 1.0, 3),
        Activation::fit(ActivationFn::Gelu, f64::NAN, 1.0, 3),
        Activation::fit(ActivationFn::Gelu, -1.0, f64::INFINITY, 3),
        Activation::fit(ActivationFn::Gelu, -1.0, 1.0, 0),
        Activation::fit(ActivationFn::Gelu, -1.0, 1.0, 64),
        Activation::from_power_coeffs(&[1.0], -1.0, 1.0),
        Activation::from_power_coeffs(&[], -1.0, 1.0),
        Activation::from_power_coeffs(&[0.0, f64::NAN], -1.0, 1.0),
        Activation::from_power_coeffs(
            &[0.0; 66]
                .iter()
                .chain([1.0].iter())
                .copied()
                .collect::<Vec<_>>(),
            -1.0,
            1.0,
        ),
        Activation::from_chebyshev(vec![1.0], -1.0, 1.0),
    ];
    for (i, r) in bad.into_iter().enumerate() {
        assert!(
            matches!(r, Err(Error::InvalidValue { .. })),
            "case {i}: {r:?}"
        );
    }
    assert!(Activation::fit(ActivationFn::Gelu, -1.0, 1.0, 63).is_ok());
    let fit = Activation::fit(ActivationFn::Sigmoid, -1.0, 1.0, 3).unwrap();
    assert!(fit.max_fit_error(1).is_err());
}

#[test]
fn named_functions() {
    assert!((ActivationFn::Gelu.eval(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
    assert_eq!(ActivationFn::Relu.eval(-2.0), 0.0);
    assert!((ActivationFn::Silu.eval(2.0) - 2.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-15);
    assert!((ActivationFn::Sigmoid.eval(-800.0)).abs() < 1e-300);
    for f in ActivationFn::ALL {
        assert_eq!(ActivationFn::from_name(f.name()).unwrap(), f);
    }
    assert!(ActivationFn::from_name("swish").is_err());
}
