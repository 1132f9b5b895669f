//! `--backend exact` end to end on files: params select -> keygen -> encrypt -> evaluate ->
//! decrypt, compared with the integer reference (bit for bit) and the f64 reference.
#![cfg(all(feature = "exact", feature = "cli"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use hepeft::exact::ExactParams;
use hepeft::model::load::{load_features_npy, save_adapter, save_features_npy};
use hepeft::model::{Activation, ActivationFn, AdapterBuilder, Op};
use hepeft::plan::{quantize, QuantPublic, QuantizeOptions};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn hepeft(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hepeft"))
        .args(args)
        .output()
        .unwrap();
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

    let quant = d.join("quant.json");
    let report = hepeft(&[
        "params",
        "select",
        "--backend",
        "exact",
        "--model",
        p(&card),
        "--calib",
        p(&calib_path),
        "--stages",
        "1",
        "--out",
        p(&quant),
    ]);
    assert!(report.contains("predicted PBS per sample: 15"), "{report}");
    let keys = d.join("keys");
    hepeft(&[
        "keygen",
        "--backend",
        "exact",
        "--model",
        p(&quant),
        "--out",
        p(&keys),
    ]);
    let q = d.join("q.ct");
    hepeft(&[
        "encrypt",
        "--backend",
        "exact",
        "--keys",
        p(&keys),
        "--model",
        p(&quant),
        "--input",
        p(&feats_path),
        "--out",
        p(&q),
    ]);
    let r = d.join("r.ct");
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
    let logits = d.join("logits.npy");
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
        p(&logits),
    ]);
    let got = load_features_npy(&logits).unwrap();

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
