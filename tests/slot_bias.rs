//! No slot is special: decrypted errors are spread evenly over the slots, whatever the number
//! of special primes. A biased ModDown (an approximate basis conversion from `P` back to `Q`)
//! leaves a constant-sign error in every coefficient after each key switch; in the slots that
//! error concentrates on slot 0 (the root next to 1), so one logit of every sample, or every
//! logit of the first sample, came out wrong while the rest were fine.
//!
//! Each test decrypts many results and checks that no slot's RMS error exceeds a small multiple
//! of the median slot's, for K = 1..=5 special primes, on raw rotations and on whole heads in
//! the latency and batch layouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::{reference, zoo, ActivationFn};
use hepeft::plan::{Mode, Plan, PlanOptions};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use std::sync::Arc;

/// How far the worst slot may sit above the median slot (RMS over trials). Without a bias the
/// ratio stays below 4 on these seeds (samples differ in size, so slots do too); the biased
/// ModDown gave 50 to 250 on raw rotations and on the batch layout.
const MAX_RATIO: f64 = 8.0;

/// Largest allowed |mean error| of one slot in units of its standard error (a t statistic).
/// An unbiased slot stays below 4 with overwhelming probability at 48 trials; the biased ModDown
/// gave a clear systematic error on logit 0 of the latency layout.
const MAX_T: f64 = 5.0;

/// N = 2^12, a chain of `levels` 40-bit primes over a 55-bit base, `k` special primes of 56
/// bits (insecure sizes, test only).
fn params_with_special_primes(levels: usize, k: usize) -> CkksParams {
    let lit = CkksParamsLiteral::new(12, [vec![55], vec![40; levels]].concat(), vec![56; k], 40);
    CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap()
}

/// Per-slot RMS of `errors[trial][slot]`, then (worst, median) over slots.
fn worst_and_median(errors: &[Vec<f64>]) -> (f64, f64, usize) {
    let slots = errors[0].len();
    let mut rms: Vec<(f64, usize)> = (0..slots)
        .map(|s| {
            let ms = errors.iter().map(|e| e[s] * e[s]).sum::<f64>() / errors.len() as f64;
            (ms.sqrt(), s)
        })
        .collect();
    let worst = rms
        .iter()
        .copied()
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    rms.sort_by(|a, b| a.0.total_cmp(&b.0));
    (worst.0, rms[slots / 2].0, worst.1)
}

fn assert_even(label: &str, errors: &[Vec<f64>]) {
    let (worst, median, at) = worst_and_median(errors);
    let ratio = worst / median;
    println!(
        "{label:<44} worst slot {at:>4}: rms {worst:.2e}, median {median:.2e}, ratio {ratio:.2} ({:.1} bits)",
        -median.log2()
    );
    assert!(
        ratio <= MAX_RATIO,
        "{label}: slot {at} carries {worst:.3e}, {ratio:.1}x the median slot's {median:.3e}"
    );
}

/// Checks that no slot carries a systematic (constant-sign) error: `|mean| <= MAX_T · sd/sqrt(n)`.
fn assert_unbiased(label: &str, errors: &[Vec<f64>]) {
    let n = errors.len() as f64;
    let worst = (0..errors[0].len())
        .map(|s| {
            let mean = errors.iter().map(|e| e[s]).sum::<f64>() / n;
            let var = errors.iter().map(|e| (e[s] - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean / (var / n).sqrt(), s)
        })
        .fold(
            (0.0f64, 0),
            |a, b| if b.0.abs() > a.0.abs() { b } else { a },
        );
    println!(
        "{label:<44} largest slot bias: t = {:.2} at slot {}",
        worst.0, worst.1
    );
    assert!(
        worst.0.abs() <= MAX_T,
        "{label}: slot {} has a systematic error (t = {:.1})",
        worst.1,
        worst.0
    );
}

/// Sums 16 hoisted rotations of a fresh ciphertext: 16 key switches whose ModDown errors add
/// up coherently if ModDown is biased.
#[test]
fn rotations_spread_their_error_evenly() {
    for k in 1..=5 {
        let params = params_with_special_primes(2, k);
        let f = Fixture::new(params.clone(), 40 + k as u64);
        let slots = params.slots() as i64;
        let steps: Vec<i64> = (1..=16).map(|i| i * 37 % slots).collect();
        let elements: Vec<u64> = steps
            .iter()
            .map(|&s| galois_element_for_rotation(&params, s))
            .collect();
        let keys = KeyGenerator::new(&params)
            .gen_evaluation_keys(&f.sk, &elements, false, &mut rng(50 + k as u64))
            .unwrap();
        let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
        let mut errors = Vec::new();
        for trial in 0..8u64 {
            let a = values(params.slots(), 100 * k as u64 + trial);
            let ct = f.encrypt(&a, 1000 + trial);
            let rotated = ev.rotate_many(&ct, &steps).unwrap();
            let mut sum = rotated[0].clone();
            for r in &rotated[1..] {
                sum = ev.add(&sum, r).unwrap();
            }
            let got = f.decrypt(&sum);
            let want: Vec<f64> = (0..slots)
                .map(|i| {
                    steps
                        .iter()
                        .map(|&st| a[(i + st).rem_euclid(slots) as usize])
                        .sum()
                })
                .collect();
            errors.push(got.iter().zip(&want).map(|(g, w)| g - w).collect());
        }
        assert_even(&format!("16 rotations summed, K = {k}"), &errors);
    }
}

/// A bottleneck head (linear, degree-2 activation, linear, residual, linear head) run encrypted
/// in `mode` on `samples` inputs. Returns `errors[sample][logit]` against the f64 twin.
fn head_errors(params: &CkksParams, mode: Mode, samples: usize, seed: u64) -> Array2<f64> {
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let adapter = zoo::bottleneck(&mut r, 64, 8, ActivationFn::Gelu, 2, (-4.0, 4.0), 10).unwrap();
    let inputs = zoo::uniform_inputs(&mut r, &adapter, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(&adapter, &views).unwrap();
    let plan = Plan::compile(
        &adapter,
        params,
        PlanOptions {
            mode,
            ..Default::default()
        },
    )
    .unwrap();
    let got = run_plan_encrypted(&plan, &inputs, seed);
    got - want
}

/// Latency layout: logit j of every sample sits in slot j, so a slot-0 bias shows as one
/// logit index whose error is far above the others'.
#[test]
fn latency_head_has_no_special_logit() {
    for k in 1..=5 {
        let params = params_with_special_primes(5, k);
        let err = head_errors(&params, Mode::Latency, 48, 300 + k as u64);
        let per_trial: Vec<Vec<f64>> = err.axis_iter(Axis(0)).map(|r| r.to_vec()).collect();
        let label = format!("latency bottleneck, per logit, K = {k}");
        assert_even(&label, &per_trial);
        assert_unbiased(&label, &per_trial);
    }
}

/// Batch layout: sample s sits in slot s of every output ciphertext, so a slot-0 bias shows
/// as one sample whose logits are all off.
#[test]
fn batch_head_has_no_special_sample() {
    for k in 1..=5 {
        let params = params_with_special_primes(5, k);
        let err = head_errors(&params, Mode::Batch, 256, 400 + k as u64);
        // trials = logits, slots = samples
        let per_trial: Vec<Vec<f64>> = err.axis_iter(Axis(1)).map(|c| c.to_vec()).collect();
        assert_even(
            &format!("batch bottleneck, per sample, K = {k}"),
            &per_trial,
        );
    }
}
