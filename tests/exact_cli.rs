//! `--backend exact` end to end on files: params select -> keygen -> encrypt -> evaluate ->
//! decrypt, compared with the integer reference (bit for bit) and the f64 reference.
#![cfg(all(feature = "exact", feature = "cli"))]

use std::path::Path;
use std::process::Command;

use hepeft::exact::ExactParams;
use hepeft::model::load::{load_features_npy, save_adapter, save_features_npy};
use hepeft::model::{Activation, ActivationFn, AdapterBuilder, Op};
use hepeft::plan::{quantize, QuantPublic, QuantizeOptions};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[path = "common/exact_cli.rs"]
mod exact_cli_common;
use exact_cli_common::{exact_pipeline, exact_pipeline_with, p};

#[test]
fn exact_pipeline_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (din, h, c) = (16, 3, 3);
    let mut b = AdapterBuilder::new();
    let x = b.input("x", din).unwrap();
    let w1 = Array2::from_shape_simple_fn((h, din), || rng.random_range(-0.25..=0.25));
    let b1 = Array1::from_shape_simple_fn(h, || rng.random_range(-0.1..=0.1));
    let y = b
        .node(
            "fc",
            Op::Linear {
                weight: w1,
                bias: Some(b1),
            },
            &[x],
        )
        .unwrap();
    let act = Activation::fit(ActivationFn::Relu, -4.0, 4.0, 7).unwrap();
    let y = b.node("relu", Op::Poly(act), &[y]).unwrap();
    let w2 = Array2::from_shape_simple_fn((c, h), || rng.random_range(-0.5..=0.5));
    b.node(
        "out",
        Op::Linear {
            weight: w2,
            bias: None,
        },
        &[y],
    )
    .unwrap();
    let adapter = b.build().unwrap();
    let card = d.join("card.toml");
    save_adapter(&adapter, &card, Some("tiny-relu")).unwrap();
    let calib = Array2::from_shape_simple_fn((32, din), || rng.random_range(-1.0..=1.0));
    let feats = Array2::from_shape_simple_fn((2, din), || rng.random_range(-1.0..=1.0));
    let calib_path = d.join("calib.npy");
    let feats_path = d.join("x.npy");
    save_features_npy(&calib_path, calib.view()).unwrap();
    save_features_npy(&feats_path, feats.view()).unwrap();

    let (report, got) = exact_pipeline(
        d,
        &card,
        &calib_path,
        std::slice::from_ref(&feats_path),
        &["--stages", "1"],
    );
    assert!(report.contains("predicted PBS per sample: 15"), "{report}");
    let quant = d.join("quant.json");
    let keys = d.join("keys");
    let (q, r) = (d.join("q.ct"), d.join("r.ct"));

    // the library's integer reference, dequantized, must match exactly
    let params = ExactParams::default_2m128().unwrap();
    let opts = QuantizeOptions {
        stages: 1,
        ..QuantizeOptions::default()
    };
    let plan = quantize(&adapter, calib.view(), &opts, &params).unwrap();
    let want = plan.forward_batch(feats.view()).unwrap();
    assert_eq!(got, want);
    let public: QuantPublic =
        serde_json::from_str(&std::fs::read_to_string(&quant).unwrap()).unwrap();
    assert_eq!(public.predicted_pbs, 15);

    // a CKKS key directory / wrong backend is refused with a clear error
    let out = Command::new(env!("CARGO_BIN_EXE_hepeft"))
        .args([
            "evaluate",
            "--backend",
            "exact",
            "--model",
            p(&card),
            "--eval-keys",
            p(&keys.join("eval.keys")),
            "--input",
            p(&q),
            "--out",
            p(&r),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--quant is required"));
}

/// Regression (issue 19): a head with no lookup table (the shipped digits probe, one linear
/// layer) needs no bootstrapping. Its quantization file used to carry `null` for the per-PBS
/// failure probability, which `keygen` then refused to read.
#[test]
fn exact_probe_without_bootstrapping_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/digits");
    let card = root.join("probe/card.toml");
    let pixels = load_features_npy(root.join("features/pixels.npy")).unwrap();
    let calib = pixels.select(ndarray::Axis(0), &(0..200).collect::<Vec<_>>());
    let feats = pixels.select(ndarray::Axis(0), &[200, 201, 202]);
    let (calib_path, feats_path) = (d.join("calib.npy"), d.join("x.npy"));
    save_features_npy(&calib_path, calib.view()).unwrap();
    save_features_npy(&feats_path, feats.view()).unwrap();
    let (report, got) = exact_pipeline(d, &card, &calib_path, &[feats_path], &[]);
    assert!(report.contains("predicted PBS per sample: 0"), "{report}");
    assert!(report.contains("per PBS (no bootstrapping)"), "{report}");
    let public: QuantPublic =
        serde_json::from_str(&std::fs::read_to_string(d.join("quant.json")).unwrap()).unwrap();
    assert_eq!(public.max_log2_p_fail_pbs, None);

    let adapter = hepeft::model::load::load_card(&card).unwrap();
    let params = ExactParams::default_2m128().unwrap();
    let plan = quantize(&adapter, calib.view(), &QuantizeOptions::default(), &params).unwrap();
    assert_eq!(plan.predicted_pbs(), 0);
    assert_eq!(got, plan.forward_batch(feats.view()).unwrap());
}

/// A probe's results without sanitization need no bootstrapping at all: `keygen
/// --no-flooding` then writes no bootstrapping key (the key set is the keyswitching key and
/// nothing else, 64 KiB instead of ~90 MB), the run stays bit-exact, and such keys refuse
/// a sanitized `evaluate` with the setting that works.
#[test]
fn exact_probe_keys_without_sanitization_hold_no_bootstrapping_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/digits");
    let card = root.join("probe/card.toml");
    let pixels = load_features_npy(root.join("features/pixels.npy")).unwrap();
    let calib = pixels.select(ndarray::Axis(0), &(0..200).collect::<Vec<_>>());
    let feats = pixels.select(ndarray::Axis(0), &[200, 201]);
    let (calib_path, feats_path) = (d.join("calib.npy"), d.join("x.npy"));
    save_features_npy(&calib_path, calib.view()).unwrap();
    save_features_npy(&feats_path, feats.view()).unwrap();
    let (_, got) = exact_pipeline_with(
        d,
        &card,
        &calib_path,
        std::slice::from_ref(&feats_path),
        &[],
        &["--no-flooding"],
    );
    let keys = std::fs::metadata(d.join("keys/eval.keys")).unwrap().len();
    assert!(keys < 100_000, "probe keys without sanitization: {keys} B");
    let adapter = hepeft::model::load::load_card(&card).unwrap();
    let params = ExactParams::default_2m128().unwrap();
    let plan = quantize(&adapter, calib.view(), &QuantizeOptions::default(), &params).unwrap();
    assert_eq!(got, plan.forward_batch(feats.view()).unwrap());

    // the same keys cannot sanitize: evaluate without --no-flooding is refused
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hepeft"))
        .args(["evaluate", "--backend", "exact", "--model"])
        .arg(&card)
        .arg("--calib")
        .arg(&calib_path)
        .arg("--quant")
        .arg(d.join("quant.json"))
        .arg("--eval-keys")
        .arg(d.join("keys/eval.keys"))
        .arg("--input")
        .arg(d.join("q.ct"))
        .arg("--out")
        .arg(d.join("r2.ct"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot sanitize") && err.contains("--no-flooding"),
        "{err}"
    );
}

/// `hepeft demo --backend exact` on the embedded digits task: keygen, encryption,
/// evaluation with sanitized results (the default), decryption equal to the integer twin.
#[test]
fn exact_demo_on_the_embedded_real_task_is_sanitized_and_bit_exact() {
    let out = Command::new(env!("CARGO_BIN_EXE_hepeft"))
        .args([
            "demo",
            "--backend",
            "exact",
            "--model",
            "digits",
            "--samples",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("results sanitized"), "{text}");
    assert!(text.contains("decrypted = integer twin: true"), "{text}");
}
