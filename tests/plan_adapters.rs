//! Random adapters of the shapes the toolkit targets, encrypted end to end, against the
//! plaintext twin: at least 16 bits of precision relative to the largest logit and the same
//! argmax on every sample.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::reference::argmax;
use hepeft::model::{reference, zoo, ActivationFn, Adapter};
use hepeft::plan::{Mode, Plan, PlanOptions};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;

struct Outcome {
    bits: f64,
    argmax_equal: bool,
}

/// Runs `adapter` encrypted on `samples` random inputs and compares with the reference.
fn run(
    label: &str,
    adapter: &Adapter,
    params: &CkksParams,
    mode: Mode,
    samples: usize,
    seed: u64,
) -> Outcome {
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let inputs: Vec<Array2<f64>> = zoo::uniform_inputs(&mut r, adapter, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, report) = reference::evaluate_batch(adapter, &views).unwrap();
    assert!(
        report.is_clean(),
        "{label}: inputs left an activation interval"
    );

    let plan = Plan::compile(
        adapter,
        params,
        PlanOptions {
            mode,
            ..Default::default()
        },
    )
    .unwrap();
    let got = run_plan_encrypted(&plan, &inputs, seed);
    let stats = PrecisionStats::relative_to_largest(
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
    );
    let (bits, max_err) = (stats.min_bits, stats.max_abs_error);
    let max_logit = max_err * 2f64.powf(bits);
    let argmax_equal = got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .all(|(a, b)| argmax(a) == argmax(b));
    println!(
        "{label:<40} depth {} rotations {:>3} key switches {:>3}: max |err| {max_err:.2e}, {bits:.1} bits rel. to max logit {max_logit:.2}, argmax equal: {argmax_equal}",
        plan.depth(),
        plan.rotation_steps().len(),
        plan.key_switches()
    );
    Outcome { bits, argmax_equal }
}

fn assert_good(o: Outcome, label: &str) {
    assert!(o.bits >= 16.0, "{label}: only {:.1} bits", o.bits);
    assert!(o.argmax_equal, "{label}: argmax differs");
}

#[test]
fn lora_head_d768_r8_c10() {
    let a = zoo::lora_head(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1), 768, 8, 10).unwrap();
    assert_good(
        run(
            "LoRA d=768 r=8 -> 10",
            &a,
            &deep_test_params(),
            Mode::Latency,
            3,
            100,
        ),
        "lora",
    );
}

#[test]
fn bottleneck_gelu_residual_100_classes() {
    let a = zoo::bottleneck(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(2),
        768,
        64,
        ActivationFn::Gelu,
        7,
        (-4.0, 4.0),
        100,
    )
    .unwrap();
    assert_good(
        run(
            "bottleneck 768-64-GELU7-64+res-100",
            &a,
            &deep_test_params(),
            Mode::Latency,
            2,
            200,
        ),
        "bottleneck",
    );
}

#[test]
fn two_tapped_inputs_concatenated() {
    let a = zoo::two_tap(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(3),
        384,
        384,
        8,
        10,
    )
    .unwrap();
    assert_good(
        run(
            "two taps 384+384, LoRA r=8 -> 10",
            &a,
            &deep_test_params(),
            Mode::Latency,
            2,
            300,
        ),
        "two taps",
    );
}

#[test]
fn wide_input_needs_several_ciphertexts() {
    let params = deep_test_params();
    let a = zoo::lora_head(&mut rand_chacha::ChaCha20Rng::seed_from_u64(4), 4096, 8, 10).unwrap();
    let plan = Plan::compile(&a, &params, PlanOptions::default()).unwrap();
    assert_eq!(plan.input_ciphertexts(), 2, "d = 4096 over 2048 slots");
    assert_good(
        run(
            "LoRA d=4096 r=8 -> 10 (2 ciphertexts)",
            &a,
            &params,
            Mode::Latency,
            1,
            400,
        ),
        "wide",
    );
}

#[test]
fn batch_mode_needs_no_rotation() {
    let params = deep_test_params();
    let a = zoo::bottleneck(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(5),
        48,
        16,
        ActivationFn::Silu,
        5,
        (-4.0, 4.0),
        10,
    )
    .unwrap();
    let plan = Plan::compile(
        &a,
        &params,
        PlanOptions {
            mode: Mode::Batch,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(plan.galois_elements().is_empty());
    assert_good(
        run(
            "batch: bottleneck 48-16-SiLU5-48+res-10 x 64",
            &a,
            &params,
            Mode::Batch,
            64,
            500,
        ),
        "batch",
    );
}

#[test]
fn client_and_server_compile_the_same_plan() {
    let params = deep_test_params();
    let a = zoo::bottleneck(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(6),
        256,
        32,
        ActivationFn::Gelu,
        7,
        (-4.0, 4.0),
        10,
    )
    .unwrap();
    let b = zoo::bottleneck(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(7),
        256,
        32,
        ActivationFn::Gelu,
        7,
        (-4.0, 4.0),
        10,
    )
    .unwrap();
    let pa = Plan::compile(&a, &params, PlanOptions::default()).unwrap();
    let pb = Plan::compile(&b, &params, PlanOptions::default()).unwrap();
    assert_eq!(
        pa.galois_elements(),
        pb.galois_elements(),
        "keys depend on shapes only"
    );
    assert_eq!(pa.structure_digest(), pb.structure_digest());
    println!("{}", pa.summary());
}

#[test]
fn too_deep_for_the_parameters_is_an_error() {
    let a = zoo::bottleneck(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(8),
        64,
        16,
        ActivationFn::Gelu,
        7,
        (-4.0, 4.0),
        10,
    )
    .unwrap();
    let shallow = CkksParams::preset("CKKS_N13_QP200_128").unwrap();
    match Plan::compile(&a, &shallow, PlanOptions::default()) {
        Err(hepeft::Error::LevelExhausted { .. }) => {}
        other => panic!("expected a depth error, got {other:?}"),
    }
}
