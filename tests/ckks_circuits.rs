//! Linear transforms (BSGS) and Chebyshev polynomial evaluation against f64 twins.

mod common;
use common::*;
use hepeft::ckks::lintrans::{baby_step_for, rotation_steps};
use hepeft::ckks::polyeval::{chebyshev_depth, chebyshev_products, evaluate_chebyshev};
use hepeft::ckks::*;
use std::sync::Arc;

fn clenshaw(c: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for &ck in c.iter().skip(1).rev() {
        let b0 = 2.0 * t * b1 - b2 + ck;
        b2 = b1;
        b1 = b0;
    }
    t * b1 - b2 + c[0]
}

#[test]
fn chebyshev_series_matches_clenshaw() {
    let f = Fixture::new(insecure_test_params(), 1);
    let keys = KeyGenerator::new(&f.params)
        .gen_evaluation_keys(&f.sk, &[0u64; 0], true, &mut rng(2))
        .unwrap();
    let ev = Evaluator::with_keys(&f.params, Arc::new(keys)).unwrap();
    let t = values(f.params.slots(), 3);
    let ct = f.encrypt(&t, 4);
    for degree in [1usize, 2, 3, 4, 5, 7, 8, 15] {
        let coeffs: Vec<f64> = values(degree + 1, 10 + degree as u64)
            .iter()
            .map(|c| c / (degree as f64))
            .collect();
        let out = evaluate_chebyshev(&ev, &ct, &coeffs, f.params.default_scale()).unwrap();
        assert_eq!(
            out.level(),
            f.params.max_level().saturating_sub(chebyshev_depth(degree))
        );
        // depth-optimal: ceil(log2(d + 1))
        assert_eq!(
            chebyshev_depth(degree),
            (degree + 1).next_power_of_two().trailing_zeros() as usize
        );
        let want: Vec<f64> = t.iter().map(|&x| clenshaw(&coeffs, x)).collect();
        let stats = PrecisionStats::compare(&f.decrypt(&out), &want);
        println!("Chebyshev degree {degree}: {stats}");
        assert!(stats.min_bits >= 20.0, "degree {degree}: {stats}");
    }
    assert_eq!(chebyshev_products(7), 7);
    assert_eq!(chebyshev_products(2), 1);
    // too deep for the remaining levels
    let low = Evaluator::new(&f.params)
        .drop_to_level(&ct, Level(1))
        .unwrap();
    assert!(matches!(
        evaluate_chebyshev(&ev, &low, &[0.0; 9], 1e12),
        Err(hepeft::Error::LevelExhausted { .. })
    ));
}

#[test]
fn bsgs_linear_transform_matches_matrix_product() {
    let f = Fixture::new(insecure_test_params(), 5);
    let slots = f.params.slots();
    for k in [1usize, 3, 8, 16, 33] {
        let g = baby_step_for(k);
        let steps = rotation_steps(k, g);
        let elements: Vec<u64> = steps
            .iter()
            .map(|&s| galois_element_for_rotation(&f.params, s))
            .collect();
        let keys = KeyGenerator::new(&f.params)
            .gen_evaluation_keys(&f.sk, &elements, false, &mut rng(6))
            .unwrap();
        let ev = Evaluator::with_keys(&f.params, Arc::new(keys)).unwrap();
        let diags: Vec<Vec<f64>> = (0..k).map(|j| values(slots, 100 + j as u64)).collect();
        let x = values(slots, 7);
        let ct = f.encrypt(&x, 8);
        let level = ct.level();
        let lt = LinearTransform::new(
            &f.encoder,
            &diags,
            level,
            f.params.q()[level.get()] as f64,
            g,
        )
        .unwrap();
        assert_eq!(lt.steps(), steps);
        let mut out = lt.apply(&ev, &ct).unwrap();
        Evaluator::new(&f.params).rescale_assign(&mut out).unwrap();
        assert!(
            (out.scale() - ct.scale()).abs() / ct.scale() < 1e-12,
            "scale is preserved exactly"
        );
        let want: Vec<f64> = (0..slots)
            .map(|i| (0..k).map(|j| diags[j][i] * x[(i + j) % slots]).sum())
            .collect();
        let stats = PrecisionStats::compare(&f.decrypt(&out), &want);
        println!("BSGS K = {k} (g = {g}, {} rotations): {stats}", steps.len());
        assert!(stats.min_bits >= 20.0, "K = {k}: {stats}");
    }
}
