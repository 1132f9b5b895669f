//! Issue 14: noise flooding that fits, and the error bound it is computed from.
//!
//! * **The bound.** Flooding hides an error whose root-mean-square over the live output
//!   slots of one query is at most the public `eps` of `FloodingConfig` (the precision model
//!   of the parameter set, `EPS_MARGIN_BITS` = 0 over it). For every adapter family of
//!   `model::zoo` on a deep N = 2^12 test chain at scale 2^40, on two presets and on the
//!   selected N = 2^14 sets at scales 2^57..2^59, the measured worst per-query RMS against
//!   the f64 twin over many queries sits below `eps`; each case prints its margin. On the
//!   shipped real adapters (ignored) the margin is printed, not asserted: two of them
//!   (digits/bottleneck, finefoods/side) exceed the unit-weight model by 1.3 bits
//!   (`docs/threat-model.md`).
//! * **Selection.** `select` with the default request plus default flooding (16 bits,
//!   40-bit statistical security, one query) succeeds for heads (a) 768 -> 64 -> sq -> 100
//!   and (b) 384 -> 8 -> sq -> 10 and every shipped real adapter in the latency layout,
//!   and the precision it predicts after flooding is a lower bound of the measured one.
//! * **Batch layout** with flooding refuses with the reason and a setting that works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::activation::ActivationFn;
use hepeft::model::card::load_card;
use hepeft::model::npy::load_features_npy;
use hepeft::model::{reference, zoo, Adapter};
use hepeft::plan::{FloodingConfig, Mode, Plan, PlanOptions, SanitizeConfig};
use hepeft::select::{batch_request, calibrate, select, SelectRequest};
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};

fn r(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Worst, over the samples, of the RMS error of one query's outputs (log2, message units),
/// and the largest |logit|.
fn worst_query_rms(
    plan: &Plan,
    adapter: &Adapter,
    inputs: &[Array2<f64>],
    seed: u64,
) -> (f64, f64) {
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(adapter, &views).unwrap();
    let got = run_plan_encrypted(plan, inputs, seed);
    let mut worst = 0f64;
    for (g, w) in got.rows().into_iter().zip(want.rows()) {
        let ms = g.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / g.len() as f64;
        worst = worst.max(ms.sqrt());
    }
    let largest = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    (worst.log2(), largest)
}

/// Checks the public bound on `adapter` under `params` over `samples` queries; returns the
/// margin in bits.
fn check_bound(
    label: &str,
    adapter: &Adapter,
    params: &CkksParams,
    samples: usize,
    seed: u64,
) -> f64 {
    let inputs = zoo::uniform_inputs(&mut r(seed), adapter, samples);
    measure_bound(label, adapter, params, &inputs, seed, true)
}

/// [`check_bound`] on given `inputs`, asserting the bound only when `strict`.
fn measure_bound(
    label: &str,
    adapter: &Adapter,
    params: &CkksParams,
    inputs: &[Array2<f64>],
    seed: u64,
    strict: bool,
) -> f64 {
    measure_bound_with(label, adapter, params, inputs, seed, strict, None)
}

/// [`measure_bound`] against the bound with the calibrated error offset `offset` (bits)
/// when given, else the unit model.
fn measure_bound_with(
    label: &str,
    adapter: &Adapter,
    params: &CkksParams,
    inputs: &[Array2<f64>],
    seed: u64,
    strict: bool,
    offset: Option<f64>,
) -> f64 {
    let samples = inputs[0].nrows();
    let plan = Plan::compile(adapter, params, PlanOptions::default()).unwrap();
    let (rms, largest) = worst_query_rms(&plan, adapter, inputs, seed);
    let eps = FloodingConfig::default()
        .with_error_offset(offset)
        .eps_log2(params.default_scale().log2(), params.log_n());
    let margin = eps - rms;
    println!(
        "{label}: N = 2^{} scale 2^{}, {samples} queries: worst per-query RMS error 2^{rms:.2}, \
         public bound eps 2^{eps:.2}, margin {margin:.2} bits (largest logit {largest:.3})",
        params.log_n(),
        params.default_scale().log2()
    );
    assert!(
        !strict || margin > 0.0,
        "{label}: measured 2^{rms:.2} above the bound 2^{eps:.2}"
    );
    margin
}

fn families(seed: u64) -> Vec<(&'static str, Adapter)> {
    let mut g = r(seed);
    vec![
        (
            "linear probe 128 -> 10",
            zoo::linear_probe(&mut g, 128, 10).unwrap(),
        ),
        (
            "LoRA head 128/r4/10",
            zoo::lora_head(&mut g, 128, 4, 10).unwrap(),
        ),
        (
            "bottleneck 64 -> 16 -> GELU(7) -> 10",
            zoo::bottleneck(&mut g, 64, 16, ActivationFn::Gelu, 7, (-4.0, 4.0), 10).unwrap(),
        ),
        (
            "square MLP 128 -> 8 -> sq -> 10",
            zoo::square_mlp(&mut g, 128, 8, 10).unwrap(),
        ),
        (
            "two taps 64 + 64 / r4 / 10",
            zoo::two_tap(&mut g, 64, 64, 4, 10).unwrap(),
        ),
    ]
}

#[test]
fn the_public_bound_holds_for_every_family_at_n12() {
    let params = deep_test_params();
    for (i, (label, a)) in families(1).iter().enumerate() {
        check_bound(label, a, &params, 32, 100 + i as u64);
    }
}

#[test]
fn the_public_bound_holds_on_the_presets() {
    for (name, fam) in [("CKKS_N13_QP200_128", 0), ("CKKS_N14_QP430_128", 2)] {
        let params = CkksParams::preset(name).unwrap();
        let (label, a) = &families(2)[fam];
        check_bound(&format!("{name}, {label}"), a, &params, 16, 200);
    }
}

/// Selects for `adapter` with default flooding in the latency layout, runs `samples`
/// sanitized queries and checks the prediction against the measurement (absolute, unit-sized
/// output as the selector counts); returns (predicted, measured absolute, measured
/// relative to the largest logit).
fn flooded_selection(
    label: &str,
    adapter: &Adapter,
    inputs: &[Array2<f64>],
    seed: u64,
    calibration: Option<&[Array2<f64>]>,
) -> (f64, f64, f64) {
    let profile = calibrate(adapter, calibration).unwrap().unwrap();
    let req = SelectRequest {
        flooding: Some(FloodingConfig::default()),
        profile: Some(profile),
        ..Default::default()
    };
    let sel = select(adapter, &req).unwrap_or_else(|e| panic!("{label}: {e}"));
    let predicted = sel.report.flooded_precision_bits.unwrap();
    let predicted_rel = sel.report.relative_precision_bits.unwrap();
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(adapter, &views).unwrap();
    let cfg = SanitizeConfig {
        flooding: req.effective_flooding(),
    };
    let got = run_plan_sanitized(&sel.plan, inputs, seed, Some(&cfg));
    let g: Vec<f64> = got.iter().copied().collect();
    let w: Vec<f64> = want.iter().copied().collect();
    let abs = PrecisionStats::compare(&g, &w);
    let rel = PrecisionStats::relative_to_largest(&g, &w);
    println!(
        "{label}: offset {:.1}, logit floor 2^{:.1}; N = 2^{} log Q {:?} log P {:?} scale 2^{}, output level {}; \
         predicted {predicted:.1} bits unit / {predicted_rel:.1} relative after 40-bit flooding; measured over \
         {} logits: worst {:.1} bits absolute, {:.1} bits relative to the largest logit ({:.3})",
        profile.offset_bits,
        profile.logit_floor_log2,
        sel.report.log_n,
        sel.report.log_q,
        sel.report.log_p,
        sel.report.log_scale,
        sel.params.output_floor_level(),
        abs.count,
        abs.min_bits,
        rel.min_bits,
        w.iter().fold(0f64, |m, v| m.max(v.abs()))
    );
    assert!(
        predicted_rel >= 16.0,
        "{label}: predicted {predicted_rel:.1}"
    );
    assert!(
        abs.min_bits >= predicted,
        "{label}: measured {:.1} < predicted {predicted:.1}",
        abs.min_bits
    );
    assert!(
        rel.min_bits >= predicted_rel,
        "{label}: measured {:.1} relative < predicted {predicted_rel:.1}",
        rel.min_bits
    );
    // The calibrated bound the flooding covers holds on this selection too.
    measure_bound_with(
        label,
        adapter,
        &sel.params,
        inputs,
        seed + 1,
        true,
        Some(profile.offset_bits),
    );
    // Argmax after flooding equals the plaintext argmax on every sample.
    for (g, w) in got.rows().into_iter().zip(want.rows()) {
        let am = |r: ndarray::ArrayView1<f64>| {
            r.iter()
                .enumerate()
                .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        };
        assert_eq!(am(g), am(w), "{label}: argmax after flooding");
    }
    (predicted, abs.min_bits, rel.min_bits)
}

#[test]
fn head_b_with_default_flooding_fits_and_meets_the_prediction() {
    let a = zoo::square_mlp(&mut r(7), 384, 8, 10).unwrap();
    let inputs = zoo::uniform_inputs(&mut r(11), &a, 8);
    let (_, _, rel) = flooded_selection("head (b)", &a, &inputs, 12, None);
    assert!(rel >= 16.0, "{rel:.1} bits relative to the largest logit");
}

#[test]
#[ignore = "head (a) at N = 2^14: 99 MiB of keys, about 20 s"]
fn head_a_with_default_flooding_fits_and_meets_the_prediction() {
    let a = zoo::square_mlp(&mut r(8), 768, 64, 100).unwrap();
    let inputs = zoo::uniform_inputs(&mut r(13), &a, 6);
    let (_, _, rel) = flooded_selection("head (a)", &a, &inputs, 14, None);
    assert!(rel >= 16.0, "{rel:.1} bits relative to the largest logit");
}

/// A real adapter: label, adapter, measured samples, calibration samples.
type RealCase = (String, Adapter, Vec<Array2<f64>>, Vec<Array2<f64>>);

/// A selection case: label, adapter, calibration features if any.
type SelectCase = (String, Adapter, Option<Vec<Array2<f64>>>);

/// Every shipped real adapter with its first 6 held-out samples (measured) and the next
/// 64 (calibration of the logit size).
fn real_adapters() -> Vec<RealCase> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for d in dirs {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap())
                .unwrap();
        let mut names: Vec<String> = m["adapters"].as_object().unwrap().keys().cloned().collect();
        names.sort();
        for name in names {
            let a: Adapter =
                load_card(d.join(m["adapters"][&name]["card"].as_str().unwrap())).unwrap();
            let all: Vec<Array2<f64>> = a
                .inputs()
                .iter()
                .map(|spec| {
                    load_features_npy(d.join(m["features"][&spec.name].as_str().unwrap())).unwrap()
                })
                .collect();
            let rows = |r: std::ops::Range<usize>| -> Vec<Array2<f64>> {
                let idx: Vec<usize> = r.collect();
                all.iter()
                    .map(|f| f.select(ndarray::Axis(0), &idx))
                    .collect()
            };
            out.push((
                format!("{}/{name}", d.file_name().unwrap().to_string_lossy()),
                a,
                rows(0..6),
                rows(6..70),
            ));
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn every_real_adapter_selects_with_default_flooding() {
    for (label, a, _, _) in real_adapters() {
        let req = SelectRequest {
            flooding: Some(FloodingConfig::default()),
            ..Default::default()
        };
        let sel = select(&a, &req).unwrap_or_else(|e| panic!("{label}: {e}"));
        println!(
            "{label}: N = 2^{} log Q {:?} scale 2^{}, predicted {:.1} bits after flooding",
            sel.report.log_n,
            sel.report.log_q,
            sel.report.log_scale,
            sel.report.flooded_precision_bits.unwrap()
        );
    }
}

#[test]
#[ignore = "every shipped real adapter encrypted at N = 2^14 with flooding: about a minute"]
fn every_real_adapter_meets_the_prediction_after_flooding() {
    for (i, (label, a, feats, cal)) in real_adapters().into_iter().enumerate() {
        // Strict: the bound is the adapter's calibrated one (on the 64 calibration rows,
        // not the 6 measured); the margins printed are recorded in docs/threat-model.md.
        let (_, _, rel) = flooded_selection(&label, &a, &feats, 500 + i as u64, Some(&cal));
        assert!(
            rel >= 16.0,
            "{label}: {rel:.1} bits relative to the largest logit"
        );
    }
}

#[test]
fn batch_layout_with_flooding_refuses_with_the_reason() {
    let a = zoo::square_mlp(&mut r(7), 384, 8, 10).unwrap();
    let mut req = batch_request(16, Security::Bits128, 256);
    req.flooding = Some(FloodingConfig::default());
    let err = select(&a, &req).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("batch layout"), "{err}");
    assert!(err.contains("--mode latency"), "{err}");
    let _ = Mode::Batch;
}

/// The cost of flooding on head (a): the selection with and without default flooding
/// (ring, chain, levels, key and ciphertext bytes) and one query's server time (evaluate +
/// sanitize, one thread, median of 3). Prints the rows of docs/BENCHMARKS.md; asserts only
/// that both selections exist.
#[test]
#[ignore = "timing table for docs/BENCHMARKS.md: head (a) at N = 2^13 and N = 2^14"]
fn flooding_cost_of_head_a() {
    let a = zoo::square_mlp(&mut r(8), 768, 64, 100).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for flooding in [None, Some(FloodingConfig::default())] {
        let sel = select(
            &a,
            &SelectRequest {
                flooding,
                ..Default::default()
            },
        )
        .unwrap();
        let p = &sel.params;
        let plan = &sel.plan;
        let f = Fixture::new(p.clone(), 3);
        let keys = KeyGenerator::new(p)
            .gen_evaluation_keys(
                &f.sk,
                &plan.galois_elements(),
                plan.needs_relin(),
                &mut rng(4),
            )
            .unwrap();
        let ev = Evaluator::with_keys(p, std::sync::Arc::new(keys)).unwrap();
        let prepared = plan.prepare().unwrap();
        let inputs = zoo::uniform_inputs(&mut r(5), &a, 1);
        let views: Vec<ArrayView2<f64>> = inputs.iter().map(|x| x.view()).collect();
        let cfg = match flooding {
            Some(_) => SanitizeConfig::flooded(),
            None => SanitizeConfig::without_flooding(),
        };
        let mut times = Vec::new();
        let mut out_bytes = 0;
        for i in 0..3 {
            let q = plan
                .encrypt_query(
                    &f.encoder,
                    EncryptionKey::Public(&f.pk),
                    &views,
                    &mut rng(10 + i),
                )
                .unwrap();
            let t = std::time::Instant::now();
            let out = pool.install(|| {
                let out = prepared.evaluate(&ev, &q).unwrap();
                plan.sanitize(&ev, out, &f.pk, &cfg, &mut rng(20 + i))
                    .unwrap()
                    .0
            });
            times.push(t.elapsed().as_secs_f64() * 1e3);
            out_bytes = out.iter().map(|c| 2 * c.level().primes() * p.n() * 8).sum();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {} | N = 2^{}, log Q {:?}, log P {:?}, scale 2^{} | {} levels (adapter {}) | {:.1} MiB keys ({} keys) | {:.2} MiB query | {:.2} MiB result | {:.0} ms | predicted {:.1} bits |",
            if flooding.is_some() { "40-bit flooding, 1 query" } else { "no flooding" },
            p.log_n(),
            sel.report.log_q,
            sel.report.log_p,
            sel.report.log_scale,
            sel.report.levels,
            sel.report.depth,
            sel.report.evaluation_key_bytes as f64 / (1 << 20) as f64,
            sel.report.rotation_keys + usize::from(plan.needs_relin()),
            (sel.report.ciphertext_bytes * sel.report.query_ciphertexts) as f64 / (1 << 20) as f64,
            out_bytes as f64 / (1 << 20) as f64,
            times[1],
            sel.report.flooded_precision_bits.unwrap_or(sel.report.predicted_precision_bits)
        );
    }
}

/// Friction (g): in the batch layout the precision figure after flooding bounds the worst
/// logit over every slot of every result ciphertext (`tail_bits` over the slot count), not
/// one logit's three standard deviations. Head (b), 20-bit flooding (the batch layout cannot
/// carry 40 bits at 16), a full batch: every one of the `N/2 x 10` decrypted values is
/// within the predicted precision.
#[test]
#[ignore = "a full N = 2^14 batch of head (b): 384 input ciphertexts"]
fn batch_flooded_figure_covers_the_worst_logit() {
    let a = zoo::square_mlp(&mut r(7), 384, 8, 10).unwrap();
    let mut req = batch_request(16, Security::Bits128, 8192);
    req.flooding = Some(FloodingConfig::new(20, 1));
    let sel = select(&a, &req).unwrap();
    let predicted = sel.report.flooded_precision_bits.unwrap();
    let samples = sel.params.slots();
    let inputs = zoo::uniform_inputs(&mut r(21), &a, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|x| x.view()).collect();
    let (want, _) = reference::evaluate_batch(&a, &views).unwrap();
    let cfg = SanitizeConfig {
        flooding: Some(FloodingConfig::new(20, 1)),
    };
    let got = run_plan_sanitized(&sel.plan, &inputs, 22, Some(&cfg));
    let g: Vec<f64> = got.iter().copied().collect();
    let w: Vec<f64> = want.iter().copied().collect();
    let abs = PrecisionStats::compare(&g, &w);
    println!(
        "head (b) batch, 20-bit flooding: N = 2^{} scale 2^{}; predicted {predicted:.2} bits over {} logits \
         (one logit's 3 sigma would say {:.2}); measured worst {:.2}, median {:.2}",
        sel.report.log_n,
        sel.report.log_scale,
        abs.count,
        predicted + hepeft::plan::sanitize::tail_bits(abs.count as f64)
            - hepeft::plan::sanitize::THREE_SIGMA_BITS,
        abs.min_bits,
        abs.median_bits
    );
    assert!(
        abs.min_bits >= predicted,
        "measured {:.2} < predicted {predicted:.2}",
        abs.min_bits
    );
}

/// Friction (b): a refusal never prints an inequality that does not hold (a log2(QP) of
/// 218.0004 against a bound of 218 used to print as "218.0 exceeds ... 218").
#[test]
fn insecure_refusal_prints_a_true_inequality() {
    let e = hepeft::Error::InsecureParameters {
        log_n: 13,
        log_qp: 218.0004,
        max_log_qp: 218,
        security_bits: 128,
    }
    .to_string();
    assert!(e.contains("log2(QP) = 218.0004 exceeds"), "{e}");
    let e = hepeft::Error::InsecureParameters {
        log_n: 13,
        log_qp: 230.26,
        max_log_qp: 218,
        security_bits: 128,
    }
    .to_string();
    assert!(e.contains("log2(QP) = 230.3 exceeds"), "{e}");
}

/// The tail bound over `count` values: three standard deviations for one value, growing
/// slowly with the count; the output floor: level 0 on every preset, 1 on the chains
/// selected for flooding.
#[test]
fn tail_bits_and_output_floor() {
    use hepeft::plan::sanitize::tail_bits;
    assert!(
        (tail_bits(1.0) - 3f64.log2()).abs() < 0.02,
        "{}",
        tail_bits(1.0)
    );
    println!(
        "tail bits: 1 {:.3}, 10 {:.3}, 100 {:.3}, 1e4 {:.3}, 81920 {:.3}, 1e6 {:.3}",
        tail_bits(1.0),
        tail_bits(10.0),
        tail_bits(100.0),
        tail_bits(1e4),
        tail_bits(81920.0),
        tail_bits(1e6)
    );
    assert!(tail_bits(100.0) > tail_bits(10.0) && tail_bits(1e4) < 2.5);
    for (name, _) in PRESETS {
        assert_eq!(
            CkksParams::preset(name).unwrap().output_floor_level(),
            0,
            "{name}"
        );
    }
    let (log_q, q0) = hepeft::select::chain(59, 4);
    assert_eq!((log_q[..2].to_vec(), q0), (vec![61, 30], 61));
    let (log_q, _) = hepeft::select::chain(40, 3);
    assert_eq!(log_q, vec![50, 40, 40, 40]);
    let lit = CkksParamsLiteral::new(12, hepeft::select::chain(55, 2).0, vec![61], 55)
        .with_security(Security::Unchecked);
    assert_eq!(
        CkksParams::from_literal(lit).unwrap().output_floor_level(),
        1
    );
}

/// Items 1-2 of issue 14: `select` with the default request (16 bits relative to the largest
/// logit, 40-bit flooding for one query) and the adapter's calibrated profile, for heads (a)
/// and (b) and every shipped real adapter, in the latency and the batch layout: prints the
/// chosen parameters and the predicted bits (or the refusal); asserts the latency layout.
#[test]
#[ignore = "selection table for docs/threat-model.md: calibrates 14 adapters"]
fn calibrated_selection_table() {
    let cases: Vec<(String, Adapter)> = vec![
        (
            "head (a) 768-64-sq-100".into(),
            zoo::square_mlp(&mut r(8), 768, 64, 100).unwrap(),
        ),
        (
            "head (b) 384-8-sq-10".into(),
            zoo::square_mlp(&mut r(7), 384, 8, 10).unwrap(),
        ),
    ];
    let mut cases: Vec<SelectCase> = cases.into_iter().map(|(l, a)| (l, a, None)).collect();
    cases.extend(
        real_adapters()
            .into_iter()
            .map(|(l, a, _, cal)| (l, a, Some(cal))),
    );
    for (label, a, cal) in cases {
        let profile = calibrate(&a, cal.as_deref()).unwrap().unwrap();
        for mode in [Mode::Latency, Mode::Batch] {
            let req = SelectRequest {
                flooding: Some(FloodingConfig::default()),
                profile: Some(profile),
                options: PlanOptions {
                    mode,
                    ..Default::default()
                },
                ..Default::default()
            };
            match select(&a, &req) {
                Ok(sel) => println!(
                    "| {label} | {} | offset {:.1} (measured {:.2}), logits >= 2^{:.1} | N = 2^{}, log Q {:?}, log P {:?}, scale 2^{} | {:.1} unit, {:.1} relative |",
                    mode.name(),
                    profile.offset_bits,
                    profile.measured_offset_bits,
                    profile.logit_floor_log2,
                    sel.report.log_n,
                    sel.report.log_q,
                    sel.report.log_p,
                    sel.report.log_scale,
                    sel.report.flooded_precision_bits.unwrap(),
                    sel.report.relative_precision_bits.unwrap()
                ),
                Err(e) => {
                    println!(
                        "| {label} | {} | offset {:.1} (measured {:.2}), logits >= 2^{:.1} | refused: {e} |",
                        mode.name(),
                        profile.offset_bits,
                        profile.measured_offset_bits,
                        profile.logit_floor_log2
                    );
                    assert!(mode == Mode::Batch, "{label}: {e}");
                }
            }
        }
    }
}

/// Item 1 through the CLI: head (b)'s card, `params select` with default flags (16 bits,
/// 40-bit flooding, calibrated profile), keygen on the public card, encrypt 8 samples one
/// query each, evaluate with default flooding (the server calibrates the same card),
/// decrypt; bits relative to the largest logit against the twin.
#[test]
#[ignore = "the CLI pipeline on head (b) at N = 2^14 with default flooding: 8 queries"]
fn cli_pipeline_head_b_default_flooding() {
    use hepeft::model::card::save_adapter;
    use hepeft::model::npy::save_features_npy;
    let bin = env!("CARGO_BIN_EXE_hepeft");
    let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flooding_cli_b");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = zoo::square_mlp(&mut r(7), 384, 8, 10).unwrap();
    let card = dir.join("adapter.toml");
    save_adapter(&a, &card, Some("head (b)")).unwrap();
    run(&[&"publish", &"--model", &card, &"--out", &dir.join("public")]);
    let public = dir.join("public/public.toml");
    let params = dir.join("params.toml");
    print!(
        "{}",
        run(&[&"params", &"select", &"--model", &card, &"--out", &params])
    );
    let keys = dir.join("keys");
    run(&[
        &"keygen",
        &"--params",
        &params,
        &"--model",
        &public,
        &"--out",
        &keys,
    ]);
    let x = zoo::uniform_inputs(&mut r(31), &a, 8).remove(0);
    let (want, _) = reference::evaluate_batch(&a, &[x.view()]).unwrap();
    let mut got = Vec::new();
    for s in 0..x.nrows() {
        let f = dir.join(format!("x{s}.npy"));
        save_features_npy(&f, x.select(ndarray::Axis(0), &[s]).view()).unwrap();
        let q = dir.join(format!("q{s}.ct"));
        run(&[
            &"encrypt", &"--keys", &keys, &"--model", &public, &"--input", &f, &"--out", &q,
        ]);
        let res = dir.join(format!("r{s}.ct"));
        let out = run(&[
            &"evaluate",
            &"--model",
            &card,
            &"--eval-keys",
            &keys.join("eval.keys"),
            &"--params",
            &keys.join("params.toml"),
            &"--input",
            &q,
            &"--out",
            &res,
        ]);
        if s == 0 {
            print!("{out}");
        }
        let l = dir.join(format!("l{s}.npy"));
        run(&[
            &"decrypt", &"--keys", &keys, &"--model", &public, &"--input", &res, &"--out", &l,
        ]);
        got.extend(load_features_npy(&l).unwrap().iter().copied());
    }
    let w: Vec<f64> = want.iter().copied().collect();
    let rel = PrecisionStats::relative_to_largest(&got, &w);
    let abs = PrecisionStats::compare(&got, &w);
    println!(
        "head (b) CLI, 8 queries: worst {:.1} bits absolute, {:.1} bits relative to the largest logit ({:.3})",
        abs.min_bits,
        rel.min_bits,
        w.iter().fold(0f64, |m, v| m.max(v.abs()))
    );
    assert!(rel.min_bits >= 16.0, "{:.1}", rel.min_bits);
}
