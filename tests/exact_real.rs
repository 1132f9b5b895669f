//! Every shipped real adapter (`assets/real`, see docs/real-tasks.md) on the exact path:
//! single-input heads (probes, LoRA) run through the whole `--backend exact` CLI pipeline
//! (params select -> keygen -> encrypt -> evaluate -> decrypt) on a few held-out samples
//! and must decrypt to the integer twin bit for bit; the integer twin's argmax agreement
//! with f64 is measured on all held-out samples. Adapters the exact path does not take
//! (residual around an activation, several inputs) must be refused at `params select` with
//! the reason.
#![cfg(all(feature = "exact", feature = "cli"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hepeft::exact::ExactParams;
use hepeft::model::load::{load_card, load_features_npy, save_features_npy};
use hepeft::model::{evaluate_exact_fn_batch, reference};
use hepeft::plan::{quantize, QuantizeOptions};
use ndarray::{Array2, Axis};

fn rows(a: &Array2<f64>, r: std::ops::Range<usize>) -> Array2<f64> {
    a.select(Axis(0), &r.collect::<Vec<_>>())
}

/// Calibration rows (the first ones of the held-out file) and encrypted rows (after them).
const CALIB: usize = 100;
const ENCRYPTED: usize = 2;

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/real")
        .join(rel)
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hepeft"))
        .args(args)
        .output()
        .unwrap()
}

fn hepeft(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "hepeft {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `task/adapter` (reading `features`) through the CLI; returns the argmax agreement of
/// the integer twin with f64 over all held-out samples.
fn pipeline(task: &str, adapter: &str, features: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let card = asset(&format!("{task}/{adapter}/card.toml"));
    let feats = load_features_npy(asset(&format!("{task}/features/{features}.npy"))).unwrap();
    let calib = rows(&feats, 0..CALIB);
    let x = rows(&feats, CALIB..CALIB + ENCRYPTED);
    let (calib_path, x_path) = (d.join("calib.npy"), d.join("x.npy"));
    save_features_npy(&calib_path, calib.view()).unwrap();
    save_features_npy(&x_path, x.view()).unwrap();
    let quant = d.join("quant.json");
    let keys = d.join("keys");
    let (q, r, out) = (d.join("q.ct"), d.join("r.ct"), d.join("out.npy"));
    let report = hepeft(&[
        "params",
        "select",
        "--backend",
        "exact",
        "--model",
        p(&card),
        "--calib",
        p(&calib_path),
        "--out",
        p(&quant),
    ]);
    assert!(report.contains("predicted PBS per sample"), "{report}");
    hepeft(&[
        "keygen",
        "--backend",
        "exact",
        "--model",
        p(&quant),
        "--out",
        p(&keys),
    ]);
    hepeft(&[
        "encrypt",
        "--backend",
        "exact",
        "--keys",
        p(&keys),
        "--model",
        p(&quant),
        "--input",
        p(&x_path),
        "--out",
        p(&q),
    ]);
    hepeft(&[
        "evaluate",
        "--backend",
        "exact",
        "--model",
        p(&card),
        "--calib",
        p(&calib_path),
        "--quant",
        p(&quant),
        "--eval-keys",
        p(&keys.join("eval.keys")),
        "--input",
        p(&q),
        "--out",
        p(&r),
    ]);
    hepeft(&[
        "decrypt",
        "--backend",
        "exact",
        "--keys",
        p(&keys),
        "--model",
        p(&quant),
        "--input",
        p(&r),
        "--out",
        p(&out),
    ]);
    let got = load_features_npy(&out).unwrap();

    // the integer twin, quantized the same way the CLI does
    let a = load_card(&card).unwrap();
    let params = ExactParams::default_2m128().unwrap();
    let plan = quantize(&a, calib.view(), &QuantizeOptions::default(), &params).unwrap();
    let twin = plan.forward_batch(x.view()).unwrap();
    assert_eq!(got, twin, "{task}/{adapter}: decrypted != integer twin");

    let (want, _) = evaluate_exact_fn_batch(&a, &[feats.view()]).unwrap();
    let all = plan.forward_batch(feats.view()).unwrap();
    let agree =
        reference::argmax_agreement(all.view(), want.view()).unwrap() as f64 / feats.nrows() as f64;
    let rel = reference::relative_rms_error(all.view(), want.view()).unwrap();
    eprintln!(
        "exact real {task}/{adapter}: PBS {}, argmax agreement with f64 {agree:.3} ({} samples), rel. RMS {rel:.3}",
        plan.predicted_pbs(),
        feats.nrows()
    );
    agree
}

/// `params select --backend exact` on `task/adapter` must fail, saying `why`.
fn refused(task: &str, adapter: &str, features: &str, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let card = asset(&format!("{task}/{adapter}/card.toml"));
    let feats = load_features_npy(asset(&format!("{task}/features/{features}.npy"))).unwrap();
    let calib: Array2<f64> = rows(&feats, 0..CALIB);
    let calib_path = dir.path().join("calib.npy");
    save_features_npy(&calib_path, calib.view()).unwrap();
    let out = run(&[
        "params",
        "select",
        "--backend",
        "exact",
        "--model",
        p(&card),
        "--calib",
        p(&calib_path),
        "--out",
        p(&dir.path().join("quant.json")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{task}/{adapter} was accepted");
    assert!(err.contains(why), "{task}/{adapter}: {err}");
}

#[test]
fn real_probes_and_lora_through_the_exact_cli() {
    let mut worst = 1.0f64;
    for (task, adapter, features) in [
        ("digits", "probe", "pixels"),
        ("finefoods", "probe", "emb"),
        ("finefoods", "lora", "emb"),
        ("mnist", "probe", "b15"),
        ("mnist", "lora", "b15"),
    ] {
        worst = worst.min(pipeline(task, adapter, features));
    }
    // linear heads lose only input and weight rounding
    assert!(worst >= 0.95, "worst argmax agreement {worst}");
}

#[test]
fn real_residual_and_multi_input_adapters_are_refused_with_the_reason() {
    for (task, features) in [("digits", "pixels"), ("finefoods", "emb"), ("mnist", "b15")] {
        refused(
            task,
            "bottleneck",
            features,
            "residual around a nonlinearity",
        );
    }
    for (task, features) in [("finefoods", "emb"), ("mnist", "b15")] {
        refused(task, "side", features, "single-input");
    }
}
