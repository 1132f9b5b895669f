//! `params select --precision 16 --no-flooding` on the issue-13 benchmark heads:
//! (a) 768 -> 64 -> (0.5 t + 0.25 t^2) -> 100 and (b) 384 -> 8 -> (same) -> 10 (built as in
//! `benches/head.rs`). Both fit N = 2^13 at the minimum depth, and the predicted precision
//! is a lower bound of the measured one on every output slot of every sample, in the latency
//! and batch layouts. Head (b) runs by default; head (a) in both layouts and a larger batch
//! are `--ignored` (a few seconds each in release mode).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::{reference, zoo, Adapter};
use hepeft::plan::{Mode, PlanOptions};
use hepeft::select::{batch_request, select, SelectRequest};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn square_mlp(seed: u64, d: usize, hidden: usize, classes: usize) -> Adapter {
    zoo::square_mlp(&mut ChaCha20Rng::seed_from_u64(seed), d, hidden, classes).unwrap()
}

/// Selects for `adapter` (no flooding, 16 bits), runs `samples` random inputs encrypted and
/// returns (predicted bits, worst measured bits over every output slot of every sample:
/// absolute error against the unfused twin, unit-sized output as the model counts).
fn measure(label: &str, adapter: &Adapter, mode: Mode, samples: usize, seed: u64) -> (f64, f64) {
    measure_at(label, adapter, mode, samples, seed, (16, 13, 3))
}

/// [`measure`] for `bits` of precision, expecting N = 2^`log_n` and `depth` levels.
fn measure_at(
    label: &str,
    adapter: &Adapter,
    mode: Mode,
    samples: usize,
    seed: u64,
    (bits, log_n, depth): (u32, u32, usize),
) -> (f64, f64) {
    let req = match mode {
        Mode::Latency => SelectRequest {
            precision_bits: bits,
            ..Default::default()
        },
        Mode::Batch => batch_request(bits, Security::Bits128, samples),
    };
    let sel = select(adapter, &req).unwrap();
    let (p, plan) = (&sel.params, &sel.plan);
    assert_eq!(
        p.log_n(),
        log_n,
        "{label}: {}\n{}",
        sel.report.to_text(),
        plan.summary()
    );
    assert_eq!(plan.depth(), depth, "{label}: {}", plan.summary());
    assert_eq!(sel.report.depth_lower_bound, depth);
    assert!(sel
        .report
        .to_text()
        .contains(&format!("lower bound {depth}")));
    let mut r = rng(seed);
    let inputs = zoo::uniform_inputs(&mut r, adapter, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(adapter, &views).unwrap();
    let got = run_plan_encrypted(plan, &inputs, seed);
    let g: Vec<f64> = got.iter().copied().collect();
    let w: Vec<f64> = want.iter().copied().collect();
    let abs = PrecisionStats::compare(&g, &w);
    let rel = PrecisionStats::relative_to_largest(&g, &w);
    let predicted = sel.report.predicted_precision_bits;
    println!(
        "{label} {mode:?}: N = 2^{} scale 2^{} log P {:?}, depth {} (lower bound {}), {} key switches; \
         predicted {predicted:.1} bits; measured over {} slots: worst {:.1} bits, median {:.1} (absolute), \
         worst {:.1} bits relative to the largest logit",
        p.log_n(),
        sel.report.log_scale,
        sel.report.log_p,
        plan.depth(),
        plan.depth_lower_bound(),
        plan.key_switches(),
        abs.count,
        abs.min_bits,
        abs.median_bits,
        rel.min_bits
    );
    (predicted, abs.min_bits)
}

fn check(label: &str, adapter: &Adapter, mode: Mode, samples: usize, seed: u64) {
    let (predicted, measured) = measure(label, adapter, mode, samples, seed);
    assert!(
        measured >= predicted,
        "{label} {mode:?}: measured {measured:.1} bits < predicted {predicted:.1}"
    );
    assert!(measured >= 16.0, "{label}: {measured:.1} bits");
}

#[test]
fn head_b_selects_n13_and_meets_the_prediction_latency() {
    check(
        "head (b)",
        &square_mlp(7, 384, 8, 10),
        Mode::Latency,
        8,
        300,
    );
}

#[test]
fn head_b_selects_n13_and_meets_the_prediction_batch() {
    check(
        "head (b)",
        &square_mlp(7, 384, 8, 10),
        Mode::Batch,
        256,
        310,
    );
}

#[test]
fn head_a_selects_n13_and_meets_the_prediction_latency() {
    check(
        "head (a)",
        &square_mlp(8, 768, 64, 100),
        Mode::Latency,
        4,
        320,
    );
}

#[test]
#[ignore = "full-size batch of head (a): 768 ciphertexts per query"]
fn head_a_selects_n13_and_meets_the_prediction_batch() {
    check(
        "head (a)",
        &square_mlp(8, 768, 64, 100),
        Mode::Batch,
        512,
        330,
    );
}

#[test]
#[ignore = "more samples of head (a) and (b), latency layout"]
fn heads_meet_the_prediction_on_many_samples() {
    check(
        "head (a)",
        &square_mlp(9, 768, 64, 100),
        Mode::Latency,
        32,
        340,
    );
    check(
        "head (b)",
        &square_mlp(10, 384, 8, 10),
        Mode::Latency,
        64,
        350,
    );
}

/// 24 bits move head (b) to N = 2^14, where selection takes several special primes (the
/// configuration that used to bias slot 0): the prediction still holds on every slot.
#[test]
fn head_b_at_24_bits_with_several_special_primes() {
    let a = square_mlp(12, 384, 8, 10);
    for (mode, samples) in [(Mode::Latency, 4), (Mode::Batch, 128)] {
        let (predicted, measured) =
            measure_at("head (b) 24 bits", &a, mode, samples, 360, (24, 14, 3));
        assert!(
            measured >= predicted,
            "{mode:?}: measured {measured:.1} bits < predicted {predicted:.1}"
        );
    }
}

/// A LoRA head (depth 1 once fused) at 12 bits fits the smallest ring, N = 2^12, and the
/// prediction holds there too.
#[test]
fn lora_head_at_12_bits_takes_n12() {
    let a = zoo::lora_head(&mut rng(13), 384, 8, 10).unwrap();
    for (mode, samples) in [(Mode::Latency, 4), (Mode::Batch, 64)] {
        let (predicted, measured) =
            measure_at("LoRA 384 r8 12 bits", &a, mode, samples, 370, (12, 12, 1));
        assert!(
            measured >= predicted,
            "{mode:?}: measured {measured:.1} bits < predicted {predicted:.1}"
        );
    }
}

/// The refusal reasons state a true inequality.
#[test]
fn refusals_state_a_true_inequality() {
    let a = square_mlp(11, 768, 64, 100);
    let sel = select(
        &a,
        &SelectRequest {
            precision_bits: 30,
            ..Default::default()
        },
    )
    .unwrap();
    for r in &sel.report.refused {
        println!("refused: {r}");
        if let Some(rest) = r.split("needs log2(QP) >= ").nth(1) {
            let need: f64 = rest.split_whitespace().next().unwrap().parse().unwrap();
            let bound: f64 = r
                .rsplit("bound of ")
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(need > bound, "{r}");
        }
    }
    assert!(!sel.report.refused.is_empty());
    let _ = PlanOptions::default();
}

/// `hepeft params select --model <head (a)> --no-flooding --precision 16` through the binary.
#[test]
fn cli_params_select_picks_n13_for_head_a() {
    let dir = std::env::temp_dir().join(format!("hepeft-select-head-a-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let card = dir.join("head_a.toml");
    hepeft::model::load::save_adapter(&square_mlp(8, 768, 64, 100), &card, Some("head_a")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hepeft"))
        .args([
            "params",
            "select",
            "--no-flooding",
            "--precision",
            "16",
            "--model",
        ])
        .arg(&card)
        .arg("--out")
        .arg(dir.join("selected.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(text.contains("N = 2^13"), "{text}");
    assert!(text.contains("adapter uses 3, lower bound 3"), "{text}");
}
