//! The client pre-rotated input layout through the `hepeft` binary: `keygen --pre-rotate 8`
//! records it in plan.json, `encrypt` writes the rotated copies and names the layout in the
//! query's sidecar, `evaluate` and `decrypt` follow it, and the logits match the plaintext
//! twin. The query carries more ciphertexts than the replicated one and the keys fewer
//! rotation keys. Small adapter on the secure N = 2^13 preset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use hepeft::model::load::{load_features_npy, save_adapter, save_features_npy};
use hepeft::model::reference::argmax;
use hepeft::model::{reference, zoo};
use ndarray::{ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const PRESET: &str = "CKKS_N13_QP200_128";

#[track_caller]
fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hepeft"));
    for a in args {
        c.arg(a);
    }
    let o: Output = c.output().expect("running hepeft");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success(),
        "hepeft failed ({:?})\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
    out + &err
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// keygen -> encrypt -> evaluate -> decrypt with `pre_rotate` copies; returns the decrypted
/// logits' precision against the twin (bits relative to the largest logit), the query's
/// ciphertext count and the number of rotation keys.
fn run(dir: &Path, pre_rotate: usize) -> (f64, u64, usize) {
    run_layout(dir, "latency", "pre_rotate", pre_rotate, 2)
}

/// [`run`] in `mode` with the layout option `option` (`pre_rotate` or `batch_pack`, passed
/// as `--pre-rotate` / `--batch-pack`) set to `value`, on `samples` samples.
fn run_layout(
    dir: &Path,
    mode: &str,
    option: &str,
    value: usize,
    samples: usize,
) -> (f64, u64, usize) {
    let pre_rotate = value;
    let flag = format!("--{}", option.replace('_', "-"));
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(31);
    let adapter = zoo::lora_head(&mut rng, 128, 4, 5).unwrap();
    let card = dir.join("adapter.toml");
    save_adapter(&adapter, &card, Some("pre-rotated test head")).unwrap();
    let keys = dir.join("keys");
    let k = pre_rotate.to_string();
    ok(&[
        &"keygen",
        &"--params",
        &PRESET,
        &"--model",
        &card,
        &"--mode",
        &mode,
        &flag,
        &k,
        &"--out",
        &keys,
    ]);
    let plan_json = json(&keys.join("plan.json"));
    let x = zoo::uniform_inputs(&mut ChaCha20Rng::seed_from_u64(32), &adapter, samples).remove(0);
    let features = dir.join("x.npy");
    save_features_npy(&features, x.view()).unwrap();
    let query = dir.join("query.ct");
    ok(&[
        &"encrypt", &"--keys", &keys, &"--model", &card, &"--input", &features, &"--out", &query,
    ]);
    let meta = json(&dir.join("query.ct.json"));
    if pre_rotate > 1 {
        assert_eq!(meta[option], pre_rotate as u64, "{meta}");
        assert_eq!(plan_json[option], pre_rotate as u64, "{plan_json}");
    } else {
        // the replicated / unpacked layout writes the files it always wrote
        assert!(meta.get(option).is_none(), "{meta}");
        assert!(plan_json.get(option).is_none(), "{plan_json}");
    }
    let result = dir.join("result.ct");
    ok(&[
        &"evaluate",
        &"--no-flooding",
        &"--model",
        &card,
        &"--eval-keys",
        &keys.join("eval.keys"),
        &"--params",
        &keys.join("params.toml"),
        &"--input",
        &query,
        &"--out",
        &result,
    ]);
    let logits = dir.join("logits.npy");
    ok(&[
        &"decrypt", &"--keys", &keys, &"--model", &card, &"--input", &result, &"--out", &logits,
    ]);
    let got = load_features_npy(&logits).unwrap();
    let views: Vec<ArrayView2<f64>> = vec![x.view()];
    let (want, _) = reference::evaluate_batch(&adapter, &views).unwrap();
    assert_eq!(got.dim(), want.dim());
    for (g, w) in got.axis_iter(Axis(0)).zip(want.axis_iter(Axis(0))) {
        assert_eq!(argmax(g), argmax(w));
    }
    let got_flat: Vec<f64> = got.iter().copied().collect();
    let want_flat: Vec<f64> = want.iter().copied().collect();
    let bits = hepeft::ckks::PrecisionStats::relative_to_largest(&got_flat, &want_flat).min_bits;
    let per_query = meta["ciphertexts_per_query"].as_u64().unwrap();
    let rotation_keys = plan_json["rotation_steps"].as_array().unwrap().len();
    (bits, per_query, rotation_keys)
}

#[test]
fn pre_rotated_cli_pipeline_matches_the_twin() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli_prerotated-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (bits_rep, cts_rep, keys_rep) = run(&dir.join("rep"), 1);
    let (bits_pre, cts_pre, keys_pre) = run(&dir.join("pre8"), 8);
    eprintln!(
        "replicated: {bits_rep:.1} bits, {cts_rep} ciphertexts per query, {keys_rep} rotation keys; \
         pre8: {bits_pre:.1} bits, {cts_pre} ciphertexts, {keys_pre} rotation keys"
    );
    assert!(bits_rep >= 16.0, "replicated: {bits_rep:.1} bits");
    assert!(bits_pre >= 16.0, "pre-rotated: {bits_pre:.1} bits");
    assert!(
        cts_pre > cts_rep,
        "the pre-rotated query carries the copies: {cts_pre} vs {cts_rep} ciphertexts"
    );
    assert!(
        keys_pre < keys_rep,
        "the server's baby steps need no keys: {keys_pre} vs {keys_rep} rotation keys"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `keygen --mode batch --batch-pack 4`: four features per query ciphertext, recorded in
/// plan.json and the sidecar; the query is four times smaller, the server unpacks it with
/// three rotation keys, and the logits of every sample match the twin.
#[test]
fn packed_batch_cli_pipeline_matches_the_twin() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli_batch_pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (bits_one, cts_one, keys_one) = run_layout(&dir.join("g1"), "batch", "batch_pack", 1, 40);
    let (bits_four, cts_four, keys_four) =
        run_layout(&dir.join("g4"), "batch", "batch_pack", 4, 40);
    eprintln!(
        "batch: {bits_one:.1} bits, {cts_one} ciphertexts per query, {keys_one} rotation keys; \
         packed 4: {bits_four:.1} bits, {cts_four} ciphertexts, {keys_four} rotation keys"
    );
    assert!(
        bits_one >= 16.0 && bits_four >= 16.0,
        "{bits_one:.1} / {bits_four:.1} bits"
    );
    assert_eq!((cts_one, cts_four), (128, 32));
    assert_eq!((keys_one, keys_four), (0, 3));
    let _ = std::fs::remove_dir_all(&dir);
}
