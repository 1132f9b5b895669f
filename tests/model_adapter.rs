//! Adapter graphs: builder checks, the reference evaluator against hand computation, the
//! out-of-interval report and the zoo.

use hepeft::model::{
    evaluate, evaluate_batch, evaluate_exact_fn, evaluate_exact_fn_batch, zoo, Activation,
    ActivationFn, AdapterBuilder, NodeRef, Op,
};
use hepeft::Error;
use ndarray::{arr1, arr2, Array1, Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn close(a: &Array1<f64>, b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a} vs {b:?}");
    }
}

/// Every op once, small enough to compute by hand.
#[test]
fn reference_matches_hand_computation() {
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 2).unwrap();
    let u = b.input("u", 1).unwrap();
    // h = W x + bias = [x0 + 0.5, x1, x0 + x1 - 1]
    let h = b
        .linear(
            x,
            arr2(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
            Some(arr1(&[0.5, 0.0, -1.0])),
        )
        .unwrap();
    // q = h^2 (exact on [-4, 4])
    let q = b
        .poly(
            h,
            Activation::fit(ActivationFn::Square, -4.0, 4.0, 2).unwrap(),
        )
        .unwrap();
    // l = 0.5 * B (A x) + [1, 1, 1] with A = [[1, -1]], B = [[2], [0], [1]]
    let l = b
        .low_rank(
            x,
            arr2(&[[1.0, -1.0]]),
            arr2(&[[2.0], [0.0], [1.0]]),
            0.5,
            Some(arr1(&[1.0, 1.0, 1.0])),
        )
        .unwrap();
    let s = b.add(&[q, l]).unwrap();
    let a = b
        .affine(s, arr1(&[1.0, 2.0, -1.0]), arr1(&[0.0, 0.0, 3.0]))
        .unwrap();
    let c = b.concat(&[a, u]).unwrap();
    let out = b.scale(c, 2.0).unwrap();
    assert_eq!(out, NodeRef::Node(6));
    let adapter = b.build().unwrap();
    assert_eq!(adapter.input_dims(), vec![2, 1]);
    assert_eq!(adapter.output_dim(), 4);
    assert_eq!(adapter.max_poly_degree(), 2);
    assert!(
        adapter.summary().contains("low_rank 3x2 rank 1"),
        "{}",
        adapter.summary()
    );

    let xv = arr1(&[1.0, 2.0]);
    let uv = arr1(&[-0.25]);
    let (y, report) = evaluate(&adapter, &[xv.view(), uv.view()]).unwrap();
    // h = [1.5, 2, 2]; q = [2.25, 4, 4]; A x = -1; l = 0.5*[-2, 0, -1] + 1 = [0, 1, 0.5]
    // s = [2.25, 5, 4.5]; a = [2.25, 10, -1.5]; c = [2.25, 10, -1.5, -0.25]; out = 2c.
    close(&y, &[4.5, 20.0, -3.0, -0.5], 1e-12);
    assert!(report.is_clean());
    assert_eq!(report.samples, 1);
    assert_eq!(report.poly.len(), 1);
    assert_eq!(report.poly[0].node, "poly1");
    assert_eq!((report.poly[0].min, report.poly[0].max), (1.5, 2.0));
    assert_eq!(report.poly[0].evaluated, 3);
}

#[test]
fn batch_agrees_with_single() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let adapter = zoo::two_tap(&mut rng, 5, 3, 2, 4).unwrap();
    let inputs = zoo::uniform_inputs(&mut rng, &adapter, 6);
    let views: Vec<_> = inputs.iter().map(|m| m.view()).collect();
    let (batch, report) = evaluate_batch(&adapter, &views).unwrap();
    assert_eq!(batch.dim(), (6, 4));
    assert_eq!(report.samples, 6);
    for i in 0..6 {
        let rows: Vec<_> = inputs.iter().map(|m| m.row(i)).collect();
        let (y, _) = evaluate(&adapter, &rows).unwrap();
        for (a, b) in y.iter().zip(batch.row(i)) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}

#[test]
fn out_of_interval_values_are_reported() {
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 3).unwrap();
    b.node(
        "act",
        Op::Poly(Activation::fit(ActivationFn::Tanh, -1.0, 1.0, 7).unwrap()),
        &[x],
    )
    .unwrap();
    let adapter = b.build().unwrap();
    let inputs = arr2(&[[0.5, 2.0, -3.0], [0.0, 1.0, -1.0]]);
    let (y, report) = evaluate_batch(&adapter, &[inputs.view()]).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.total_outside(), 2);
    let v: Vec<_> = report.violations().collect();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].node, "act");
    assert_eq!(
        (v[0].outside, v[0].evaluated, v[0].min, v[0].max),
        (2, 6, -3.0, 2.0)
    );
    match report.check() {
        Err(Error::OutOfInterval {
            value,
            lo,
            hi,
            context,
        }) => {
            assert_eq!((value, lo, hi), (-3.0, -1.0, 1.0));
            assert!(context.contains("act"), "{context}");
        }
        other => panic!("expected OutOfInterval, got {other:?}"),
    }
    assert!(report.to_string().contains("2/6 outside"));
    // Inside the interval the polynomial is close to tanh; outside it is not.
    let (exact, _) = evaluate_exact_fn_batch(&adapter, &[inputs.view()]).unwrap();
    assert!((y[[0, 0]] - exact[[0, 0]]).abs() < 1e-3);
    assert!(
        (y[[0, 2]] - exact[[0, 2]]).abs() > 1.0,
        "poly {} vs tanh {}",
        y[[0, 2]],
        exact[[0, 2]]
    );
}

#[test]
fn builder_rejects_bad_graphs() {
    let w = |r, c| Array2::<f64>::ones((r, c));
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 4).unwrap();
    let y = b.input("y", 3).unwrap();
    assert!(
        matches!(b.input("x", 2), Err(Error::Model { .. })),
        "duplicate name"
    );
    assert!(
        matches!(b.input("z", 0), Err(Error::Model { .. })),
        "zero width"
    );
    assert!(matches!(
        b.linear(x, w(2, 3), None),
        Err(Error::DimensionMismatch {
            expected: 4,
            found: 3,
            ..
        })
    ));
    assert!(matches!(
        b.linear(x, w(2, 4), Some(Array1::zeros(3))),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(
        matches!(
            b.low_rank(x, w(2, 4), w(5, 3), 1.0, None),
            Err(Error::DimensionMismatch { .. })
        ),
        "rank"
    );
    assert!(matches!(
        b.affine(x, Array1::ones(3), Array1::ones(3)),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        b.add(&[x, y]),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(b.add(&[x]), Err(Error::Model { .. })));
    assert!(matches!(b.concat(&[]), Err(Error::Model { .. })));
    assert!(
        matches!(
            b.node("n", Op::Scale(2.0), &[x, y]),
            Err(Error::Model { .. })
        ),
        "arity"
    );
    assert!(
        matches!(b.scale(NodeRef::Node(0), 2.0), Err(Error::Model { .. })),
        "forward reference"
    );
    assert!(matches!(
        b.scale(NodeRef::Input(9), 2.0),
        Err(Error::Model { .. })
    ));
    let mut nan = w(2, 4);
    nan[[1, 2]] = f64::NAN;
    assert!(matches!(
        b.linear(x, nan, None),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        b.scale(x, f64::INFINITY),
        Err(Error::InvalidValue { .. })
    ));
    assert!(
        matches!(
            b.linear(x, Array2::zeros((0, 4)), None),
            Err(Error::Model { .. })
        ),
        "empty matrix"
    );
    let bad_act = Activation {
        func: None,
        lo: 1.0,
        hi: 0.0,
        cheb: vec![0.0, 1.0],
    };
    assert!(matches!(
        b.poly(x, bad_act),
        Err(Error::InvalidValue { .. })
    ));
    // Nothing was added by the failed calls.
    let h = b.linear(x, w(3, 4), None).unwrap();
    assert_eq!(h, NodeRef::Node(0));
    assert!(
        matches!(b.node("x", Op::Scale(1.0), &[h]), Err(Error::Model { .. })),
        "name taken by input"
    );

    // Unused input y.
    let only_x = b.clone();
    assert!(matches!(only_x.build(), Err(Error::Model { reason }) if reason.contains("'y'")));
    // Dead node: h is not used by the last node.
    let mut dead = b.clone();
    dead.concat(&[x, y]).unwrap();
    assert!(matches!(dead.build(), Err(Error::Model { reason }) if reason.contains("linear0")));
    b.add(&[h, y]).unwrap();
    assert!(b.build().is_ok());

    assert!(AdapterBuilder::new().build().is_err());
    let mut no_nodes = AdapterBuilder::new();
    no_nodes.input("x", 1).unwrap();
    assert!(no_nodes.build().is_err());
}

#[test]
fn reference_rejects_bad_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let adapter = zoo::two_tap(&mut rng, 3, 2, 1, 2).unwrap();
    let a = Array1::<f64>::zeros(3);
    let b = Array1::<f64>::zeros(2);
    assert!(matches!(
        evaluate(&adapter, &[a.view()]),
        Err(Error::Model { .. })
    ));
    assert!(matches!(
        evaluate(&adapter, &[b.view(), b.view()]),
        Err(Error::DimensionMismatch {
            expected: 3,
            found: 2,
            ..
        })
    ));
    let mut nan = a.clone();
    nan[1] = f64::NAN;
    match evaluate(&adapter, &[nan.view(), b.view()]) {
        Err(Error::InvalidValue { context, .. }) => {
            assert!(context.contains("tap0") && context.contains("feature 1"))
        }
        other => panic!("{other:?}"),
    }
    let mut inf = b.clone();
    inf[0] = f64::NEG_INFINITY;
    assert!(matches!(
        evaluate(&adapter, &[a.view(), inf.view()]),
        Err(Error::InvalidValue { .. })
    ));
    let two = Array2::<f64>::zeros((2, 3));
    let one = Array2::<f64>::zeros((1, 2));
    assert!(matches!(
        evaluate_batch(&adapter, &[two.view(), one.view()]),
        Err(Error::DimensionMismatch { .. })
    ));
    let empty0 = Array2::<f64>::zeros((0, 3));
    let empty1 = Array2::<f64>::zeros((0, 2));
    assert!(matches!(
        evaluate_batch(&adapter, &[empty0.view(), empty1.view()]),
        Err(Error::InvalidValue { .. })
    ));
}

#[test]
fn overflow_is_an_error_not_infinity() {
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 1).unwrap();
    let s = b.scale(x, 1e200).unwrap();
    b.scale(s, 1e200).unwrap();
    let adapter = b.build().unwrap();
    let v = arr1(&[1.0]);
    assert!(matches!(
        evaluate(&adapter, &[v.view()]),
        Err(Error::InvalidValue { .. })
    ));
}

#[test]
fn lora_head_is_dense_head_plus_low_rank_update() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let adapter = zoo::lora_head(&mut rng, 16, 4, 3).unwrap();
    let (w, bias) = match &adapter.nodes()[0].op {
        Op::Linear { weight, bias } => (weight.clone(), bias.clone().unwrap()),
        other => panic!("{other:?}"),
    };
    let (a, bm, scale) = match &adapter.nodes()[1].op {
        Op::LowRank {
            a,
            b,
            scale,
            bias: None,
        } => (a.clone(), b.clone(), *scale),
        other => panic!("{other:?}"),
    };
    assert_eq!(scale, zoo::ZOO_LORA_SCALE);
    assert_eq!((a.dim(), bm.dim()), ((4, 16), (3, 4)));
    let dense = &w + &(bm.dot(&a) * scale);
    let xs = zoo::uniform_inputs(&mut rng, &adapter, 10);
    let (y, report) = evaluate_batch(&adapter, &[xs[0].view()]).unwrap();
    assert!(report.is_clean() && report.poly.is_empty());
    let want = xs[0].dot(&dense.t()) + &bias;
    assert!((&y - &want).iter().all(|d| d.abs() < 1e-12));
}

#[test]
fn zoo_is_deterministic_and_in_range() {
    let make = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        zoo::bottleneck(&mut rng, 64, 16, ActivationFn::Gelu, 7, (-4.0, 4.0), 10).unwrap()
    };
    let adapter = make(3);
    assert_eq!(adapter, make(3));
    assert_ne!(adapter, make(4));
    assert_eq!(adapter.input_dims(), vec![64]);
    assert_eq!(adapter.output_dim(), 10);
    let names: Vec<&str> = adapter.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["down", "act", "up", "residual", "head"]);

    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let xs = zoo::uniform_inputs(&mut rng, &adapter, 500);
    let (y, report) = evaluate_batch(&adapter, &[xs[0].view()]).unwrap();
    assert!(report.is_clean(), "{report}");
    let stats = &report.poly[0];
    assert!(
        stats.max < 2.0 && stats.min > -2.0,
        "pre-activations should stay well inside [-4, 4]: {report}"
    );
    // End-to-end effect of the degree-7 GELU fit, measured against exact GELU.
    let (exact, _) = evaluate_exact_fn_batch(&adapter, &[xs[0].view()]).unwrap();
    let err = (&y - &exact).iter().fold(0.0f64, |m, d| m.max(d.abs()));
    let scale = exact.iter().fold(0.0f64, |m, d| m.max(d.abs()));
    println!("bottleneck GELU-7: max |poly - exact| = {err:.3e} on outputs up to {scale:.3}");
    assert!(err > 0.0 && err < 0.05, "{err}");

    let probe = zoo::linear_probe(&mut rng, 8, 3).unwrap();
    assert_eq!(
        (probe.input_dims(), probe.output_dim(), probe.nodes().len()),
        (vec![8], 3, 1)
    );
    let two = zoo::two_tap(&mut rng, 6, 4, 2, 5).unwrap();
    assert_eq!((two.input_dims(), two.output_dim()), (vec![6, 4], 5));
    assert!(zoo::lora_head(&mut rng, 0, 1, 1).is_err());
    assert!(zoo::bottleneck(&mut rng, 4, 2, ActivationFn::Gelu, 0, (-1.0, 1.0), 2).is_err());
    // Single-sample exact_fn wrapper agrees with the batch one.
    let row = xs[0].index_axis(Axis(0), 0);
    let (e1, _) = evaluate_exact_fn(&adapter, &[row]).unwrap();
    assert!(e1
        .iter()
        .zip(exact.row(0))
        .all(|(a, b)| (a - b).abs() < 1e-12));
}
