//! Quantized (integer reference) vs f64 accuracy of the exact path, reported for the
//! benchmark heads (plaintext only: the encrypted run equals the integer reference bit for
//! bit, see `exact_roundtrip.rs`). Run with `--nocapture` to see the table.
#![cfg(feature = "exact")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::exact::ExactParams;
use hepeft::model::reference;
use hepeft::model::{
    evaluate_exact_fn_batch, Activation, ActivationFn, Adapter, AdapterBuilder, Op,
};
use hepeft::plan::{quantize, QuantizeOptions};
use ndarray::{Array1, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn head(rng: &mut ChaCha20Rng, d: usize, h: usize, c: usize, act: ActivationFn) -> Adapter {
    let mut m = |r: usize, k: usize| {
        Array2::from_shape_simple_fn((r, k), || rng.random_range(-1.0..1.0) / (k as f64).sqrt())
    };
    let (w1, w2) = (m(h, d), m(c, h));
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d).unwrap();
    let y = b
        .node(
            "down",
            Op::Linear {
                weight: w1,
                bias: Some(Array1::zeros(h)),
            },
            &[x],
        )
        .unwrap();
    let y = b
        .node(
            "act",
            Op::Poly(Activation::fit(act, -4.0, 4.0, 7).unwrap()),
            &[y],
        )
        .unwrap();
    b.node(
        "head",
        Op::Linear {
            weight: w2,
            bias: None,
        },
        &[y],
    )
    .unwrap();
    b.build().unwrap()
}

fn agreement(got: ArrayView2<f64>, want: ArrayView2<f64>) -> (f64, f64) {
    let agree = reference::argmax_agreement(got, want).unwrap();
    let rel = reference::relative_rms_error(got, want).unwrap();
    (agree as f64 / got.nrows() as f64, rel)
}

#[test]
fn quantized_vs_f64_accuracy_report() {
    let params = ExactParams::default_2m128().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let calib = Array2::from_shape_simple_fn((256, 384), || rng.random_range(-1.0..=1.0));
    let test = Array2::from_shape_simple_fn((1000, 384), || rng.random_range(-1.0..=1.0));
    let mut default_agree = Vec::new();
    for (name, h, act) in [
        ("384-8-relu-10", 8, ActivationFn::Relu),
        ("384-64-relu-10", 64, ActivationFn::Relu),
        ("384-64-gelu-10", 64, ActivationFn::Gelu),
    ] {
        let a = head(&mut rng, 384, h, 10, act);
        let (want, _) = evaluate_exact_fn_batch(&a, &[test.view()]).unwrap();
        for (stages, abits, hbits, ibits) in [
            (2u32, 4u32, 4u32, 6u32),
            (2, 5, 4, 6),
            (2, 5, 5, 6),
            (3, 4, 4, 6),
            (3, 5, 5, 6),
            (2, 5, 5, 5),
        ] {
            let opts = QuantizeOptions {
                stages,
                activation_bits: abits,
                hidden_bits: hbits,
                input_bits: ibits,
                ..QuantizeOptions::default()
            };
            let plan = quantize(&a, calib.view(), &opts, &params).unwrap();
            let got = plan.forward_batch(test.view()).unwrap();
            let (agree, rel) = agreement(got.view(), want.view());
            eprintln!(
                "accuracy {name}: J={stages} input {ibits} bits table {abits} bits hidden {hbits} bits -> PBS {}, argmax agreement {agree:.3}, rel. RMS {rel:.3}, out weights {} bits, overflows {:?}",
                plan.predicted_pbs(),
                plan.report.output_weight_bits,
                plan.report.overflows
            );
            if opts == QuantizeOptions::default() {
                default_agree.push(agree);
                assert!(
                    agree > 0.75,
                    "{name}: default quantization agrees on only {agree}"
                );
            }
            assert!(
                agree > 0.5,
                "{name}: quantization destroyed the head ({agree})"
            );
        }
    }
    assert_eq!(default_agree.len(), 3);
}

/// Where the error of the default plan comes from on 384 -> 64 -> ReLU -> 10 (the
/// benchmark head): each quantization step applied alone on top of the previous ones.
#[test]
fn error_budget_of_the_benchmark_head() {
    let params = ExactParams::default_2m128().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let a = head(&mut rng, 384, 64, 10, ActivationFn::Relu);
    let calib = Array2::from_shape_simple_fn((256, 384), || rng.random_range(-1.0..=1.0));
    let test = Array2::from_shape_simple_fn((1000, 384), || rng.random_range(-1.0..=1.0));
    let opts = QuantizeOptions::default();
    let plan = quantize(&a, calib.view(), &opts, &params).unwrap();
    let steps = hepeft::plan::exact::error_budget(&plan, &a, test.view()).unwrap();
    assert_eq!(steps.len(), hepeft::plan::exact::BUDGET_STEPS.len());
    for s in &steps {
        eprintln!(
            "budget 384-64-relu-10: {:<45} argmax agreement {:.3}, rel. RMS {:.3}",
            s.name, s.argmax_agreement, s.relative_rms
        );
    }
    // the last step is the integer twin: the same figures as forward_batch
    let (want, _) = evaluate_exact_fn_batch(&a, &[test.view()]).unwrap();
    let got = plan.forward_batch(test.view()).unwrap();
    let (agree, rel) = agreement(got.view(), want.view());
    let last = steps.last().unwrap();
    assert!((last.argmax_agreement - agree).abs() < 1e-9);
    assert!((last.relative_rms - rel).abs() < 1e-9);
    // quantizing the inputs alone costs little; each later step only adds error on average
    assert!(steps[0].argmax_agreement > 0.95, "{steps:?}");
    // the default plan's headroom (range_fill 0.7) keeps wrap-around rare on unseen samples
    assert!(
        steps[5].argmax_agreement > steps[4].argmax_agreement - 0.02,
        "{steps:?}"
    );
    assert!(last.argmax_agreement > 0.85, "{steps:?}");
}
