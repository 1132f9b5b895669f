//! Client pre-rotated input layouts (`InputLayout::PreRotated`): the client encrypts the
//! baby-step rotations of its input, the server skips them. Every layout must agree with the
//! plaintext twin (and with the replicated layout) at small rings, need fewer key switches,
//! and carry the stated number of query ciphertexts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::{reference, zoo, Adapter};
use hepeft::plan::{InputLayout, Mode, Plan, PlanOptions};
use ndarray::ArrayView1;
use rand::SeedableRng;
use std::sync::Arc;

fn square_mlp(seed: u64, d: usize, hidden: usize, classes: usize) -> Adapter {
    zoo::square_mlp(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(seed),
        d,
        hidden,
        classes,
    )
    .unwrap()
}

/// Encrypts one random sample in `layout`, evaluates, decrypts; returns the plan and the bits
/// relative to the largest output against the plaintext twin.
fn run(adapter: &Adapter, params: &CkksParams, layout: InputLayout, seed: u64) -> (Plan, f64) {
    let plan = Plan::compile_with_layout(adapter, params, PlanOptions::default(), layout).unwrap();
    let mut r = rng(seed);
    let inputs = zoo::uniform_inputs(&mut r, adapter, 1);
    let rows: Vec<ArrayView1<f64>> = inputs.iter().map(|a| a.row(0)).collect();
    let (want, report) = reference::evaluate(adapter, &rows).unwrap();
    assert!(report.is_clean(), "inputs left an activation interval");
    let f = Fixture::new(params.clone(), seed + 1);
    let keys = KeyGenerator::new(params)
        .gen_evaluation_keys(
            &f.sk,
            &plan.galois_elements(),
            plan.needs_relin(),
            &mut rng(seed + 2),
        )
        .unwrap();
    let ev = Evaluator::with_keys(params, Arc::new(keys)).unwrap();
    let q = plan
        .encrypt_sample(
            &f.encoder,
            EncryptionKey::Secret(&f.sk),
            &rows,
            &mut rng(seed + 3),
        )
        .unwrap();
    assert_eq!(q.len(), plan.input_ciphertexts());
    let out = plan.prepare().unwrap().evaluate(&ev, &q).unwrap();
    let dec = Decryptor::new(params, &f.sk).unwrap();
    let got = plan.decrypt_result(&f.encoder, &dec, &out, 1).unwrap();
    let stats = PrecisionStats::relative_to_largest(&got.row(0).to_vec(), &want.to_vec());
    println!(
        "{layout:?}: {} query ciphertexts, {} key switches, {} limb NTTs, {:.1} bits",
        plan.input_ciphertexts(),
        plan.key_switches(),
        plan.ntts(),
        stats.min_bits
    );
    (plan, stats.min_bits)
}

/// Runs the replicated layout and pre-rotated layouts with `caps` copies: all agree with the
/// twin to 16 bits, and each pre-rotated plan needs fewer key switches than the replicated.
fn check_layouts(adapter: &Adapter, params: &CkksParams, caps: &[usize], seed: u64) {
    let (base, bits) = run(adapter, params, InputLayout::Replicated, seed);
    assert!(bits >= 16.0, "replicated: only {bits:.1} bits");
    for &max_copies in caps {
        let (plan, bits) = run(
            adapter,
            params,
            InputLayout::PreRotated { max_copies },
            seed,
        );
        assert!(
            bits >= 16.0,
            "pre-rotated {max_copies}: only {bits:.1} bits"
        );
        assert!(
            plan.key_switches() < base.key_switches(),
            "pre-rotated {max_copies}: {} key switches, replicated {}",
            plan.key_switches(),
            base.key_switches()
        );
        assert!(plan.ntts() < base.ntts());
        assert!(plan.input_ciphertexts() > base.input_ciphertexts());
        assert_ne!(plan.structure_digest(), base.structure_digest());
        assert_eq!(
            plan.depth(),
            base.depth(),
            "the layout must not cost levels"
        );
    }
}

#[test]
fn square_head_pre_rotated_agrees_with_twin() {
    // 200 -> 16 -> square -> 10 at 2048 slots: first block 16 x 256, 16 diagonals
    let a = square_mlp(1, 200, 16, 10);
    check_layouts(&a, &insecure_test_params(), &[2, 4, 16], 10);
}

#[test]
fn pre_rotated_copies_follow_the_first_layer() {
    let a = square_mlp(2, 200, 16, 10);
    let params = insecure_test_params();
    let opts = PlanOptions::default();
    // 16 diagonals: baby step 4 by default, raised to the cap, never above 16
    for (cap, copies) in [(1, 1), (2, 4), (4, 4), (8, 8), (16, 16), (64, 16)] {
        let plan = Plan::compile_with_layout(
            &a,
            &params,
            opts,
            InputLayout::PreRotated { max_copies: cap },
        )
        .unwrap();
        assert_eq!(plan.input_copies(0), copies, "cap {cap}");
        assert_eq!(plan.input_ciphertexts(), copies);
    }
    // the replicated layout is what `compile` gives, digest included
    let plain = Plan::compile(&a, &params, opts).unwrap();
    let rep = Plan::compile_with_layout(&a, &params, opts, InputLayout::Replicated).unwrap();
    assert_eq!(plain.structure_digest(), rep.structure_digest());
    let err =
        Plan::compile_with_layout(&a, &params, opts, InputLayout::PreRotated { max_copies: 6 })
            .unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
}

#[test]
fn lora_head_input_read_by_two_layers() {
    // the input feeds the dense head and the LoRA down-projection (fused or not)
    let a = zoo::lora_head(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3), 384, 8, 10).unwrap();
    check_layouts(&a, &deep_test_params(), &[8], 20);
}

#[test]
fn wide_input_two_segments_pre_rotated() {
    // d = 4096 over 2048 slots: two segments, each sent with its copies
    let a = zoo::lora_head(&mut rand_chacha::ChaCha20Rng::seed_from_u64(4), 4096, 8, 10).unwrap();
    let params = deep_test_params();
    let (plan, bits) = run(&a, &params, InputLayout::PreRotated { max_copies: 4 }, 30);
    assert!(bits >= 16.0, "only {bits:.1} bits");
    assert_eq!(plan.input_ciphertexts(), 2 * plan.input_copies(0));
}

#[test]
fn two_taps_concatenated_pre_rotated() {
    let a = zoo::two_tap(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(5),
        96,
        160,
        4,
        6,
    )
    .unwrap();
    check_layouts(&a, &deep_test_params(), &[8], 40);
}

#[test]
fn batch_mode_ignores_the_input_layout() {
    let a = square_mlp(6, 32, 8, 4);
    let params = insecure_test_params();
    let opts = PlanOptions {
        mode: Mode::Batch,
        ..Default::default()
    };
    let plan =
        Plan::compile_with_layout(&a, &params, opts, InputLayout::PreRotated { max_copies: 8 })
            .unwrap();
    assert_eq!(plan.input_copies(0), 1);
    assert_eq!(plan.input_ciphertexts(), 32);
}

#[test]
fn automatic_pre_rotation_takes_the_cheapest_layout() {
    use hepeft::plan::{AUTO_MAX_COPIES, PRE_ROTATE_AUTO};
    let a = square_mlp(7, 200, 16, 10);
    let params = insecure_test_params();
    let auto = PlanOptions {
        pre_rotate: PRE_ROTATE_AUTO,
        ..Default::default()
    };
    let plan = Plan::compile(&a, &params, auto).unwrap();
    let chosen = plan.options().pre_rotate;
    assert!(
        chosen.is_power_of_two() && chosen <= AUTO_MAX_COPIES,
        "chose {chosen}"
    );
    // no candidate the rule considers is cheaper by the model
    let mut costs = Vec::new();
    let mut cap = 1;
    while cap <= AUTO_MAX_COPIES {
        let layout = if cap == 1 {
            InputLayout::Replicated
        } else {
            InputLayout::PreRotated { max_copies: cap }
        };
        let p = Plan::compile_with_layout(&a, &params, PlanOptions::default(), layout).unwrap();
        costs.push((cap, p.estimated_cost()));
        cap *= 2;
    }
    let best = costs.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
    assert_eq!(plan.estimated_cost(), best, "{costs:?}");
    // the chosen number compiles back to the same plan (what plan.json records and the
    // client re-compiles from)
    let again = Plan::compile(
        &a,
        &params,
        PlanOptions {
            pre_rotate: chosen,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(again.structure_digest(), plan.structure_digest());
    assert_eq!(again.input_ciphertexts(), plan.input_ciphertexts());
    // and it agrees with the twin
    let layout = plan.input_layout();
    let (_, bits) = run(&a, &params, layout, 50);
    assert!(bits >= 16.0, "auto ({layout:?}): only {bits:.1} bits");
    // batch mode has nothing to choose
    let batch = Plan::compile(
        &a,
        &params,
        PlanOptions {
            mode: Mode::Batch,
            ..auto
        },
    )
    .unwrap();
    assert_eq!(batch.input_copies(0), 1);
}
