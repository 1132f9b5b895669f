//! The `--backend exact` CLI pipeline on files, shared by tests/exact_cli.rs and
//! tests/exact_real.rs (included with `#[path]`, so only the exact tests compile it).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hepeft::model::load::load_features_npy;
use ndarray::Array2;

/// Runs the `hepeft` binary and returns its stdout; panics with its stderr on failure.
pub fn hepeft(args: &[&str]) -> String {
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

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `params select -> keygen -> encrypt -> evaluate -> decrypt` with `--backend exact` on files in
/// `d`, one `--input` per file of `inputs` (one per adapter input); returns the select report
/// and the decrypted outputs.
pub fn exact_pipeline(
    d: &Path,
    card: &Path,
    calib_path: &Path,
    inputs: &[PathBuf],
    select_extra: &[&str],
) -> (String, Array2<f64>) {
    exact_pipeline_with(d, card, calib_path, inputs, select_extra, &[])
}

/// [`exact_pipeline`] with `key_extra` passed to both `keygen` and `evaluate` (e.g.
/// `--no-flooding`).
pub fn exact_pipeline_with(
    d: &Path,
    card: &Path,
    calib_path: &Path,
    inputs: &[PathBuf],
    select_extra: &[&str],
    key_extra: &[&str],
) -> (String, Array2<f64>) {
    let quant = d.join("quant.json");
    let mut select = vec![
        "params",
        "select",
        "--backend",
        "exact",
        "--model",
        p(card),
        "--calib",
        p(calib_path),
        "--out",
        p(&quant),
    ];
    select.extend_from_slice(select_extra);
    let report = hepeft(&select);
    let keys = d.join("keys");
    let mut keygen = vec![
        "keygen",
        "--backend",
        "exact",
        "--model",
        p(&quant),
        "--out",
        p(&keys),
    ];
    keygen.extend_from_slice(key_extra);
    hepeft(&keygen);
    let q = d.join("q.ct");
    let mut encrypt = vec![
        "encrypt",
        "--backend",
        "exact",
        "--keys",
        p(&keys),
        "--model",
        p(&quant),
        "--out",
        p(&q),
    ];
    for x in inputs {
        encrypt.extend(["--input", p(x)]);
    }
    hepeft(&encrypt);
    let r = d.join("r.ct");
    let eval_keys = keys.join("eval.keys");
    let mut evaluate = vec![
        "evaluate",
        "--backend",
        "exact",
        "--model",
        p(card),
        "--calib",
        p(calib_path),
        "--quant",
        p(&quant),
        "--eval-keys",
        p(&eval_keys),
        "--input",
        p(&q),
        "--out",
        p(&r),
    ];
    evaluate.extend_from_slice(key_extra);
    hepeft(&evaluate);
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
    (report, load_features_npy(&logits).unwrap())
}
