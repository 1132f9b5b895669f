//! Trained adapters on real backbone features (assets/real/<task>/, made by training/):
//! every shipped adapter runs encrypted in batch mode over its held-out samples, with
//! parameters from `hepeft::select`, and must give the plaintext f64 model's argmax on every
//! sample. Prints accuracy against the labels, the largest logit error and the precision.
//! Uses only the shipped files: no Python, no network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::ckks::*;
use hepeft::model::load::{load_card, load_features_npy};
use hepeft::model::reference::argmax;
use hepeft::model::{reference, Adapter};
use hepeft::plan::{public_structure, Mode, Plan, PlanOptions};
use hepeft::select::{select, SelectRequest};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real")
}

fn accuracy(logits: &Array2<f64>, labels: &[usize]) -> f64 {
    let hits = logits
        .axis_iter(Axis(0))
        .zip(labels)
        .filter(|(row, &y)| argmax(*row) == y)
        .count();
    hits as f64 / labels.len() as f64
}

fn manifests() -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root())
        .expect("assets/real")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let text = std::fs::read_to_string(d.join("manifest.json")).unwrap();
        out.push((d, serde_json::from_str(&text).unwrap()));
    }
    assert!(!out.is_empty(), "no assets/real/*/manifest.json");
    out
}

struct Row {
    name: String,
    samples: usize,
    plain_acc: f64,
    enc_acc: f64,
    max_err: f64,
    bits: f64,
    log_n: u32,
    depth: usize,
    seconds: f64,
}

/// Runs one shipped adapter encrypted over all its held-out samples.
fn run_one(task_dir: &Path, manifest: &serde_json::Value, name: &str, seed: u64) -> Row {
    let entry = &manifest["adapters"][name];
    let adapter: Adapter = load_card(task_dir.join(entry["card"].as_str().unwrap())).unwrap();
    let features: Vec<Array2<f64>> = adapter
        .inputs()
        .iter()
        .map(|spec| {
            let file = manifest["features"][&spec.name].as_str().unwrap();
            let f = load_features_npy(task_dir.join(file)).unwrap();
            assert_eq!(f.ncols(), spec.dim, "{name}: input {}", spec.name);
            f
        })
        .collect();
    let labels: Vec<usize> = load_features_npy(task_dir.join(manifest["labels"].as_str().unwrap()))
        .unwrap()
        .iter()
        .map(|&y| y as usize)
        .collect();
    let n = labels.len();
    assert!(features.iter().all(|f| f.nrows() == n));
    let views: Vec<ArrayView2<f64>> = features.iter().map(|a| a.view()).collect();

    // Plaintext f64 twin; the held-out inputs stay inside every polynomial's interval.
    let (want, report) = reference::evaluate_batch(&adapter, &views).unwrap();
    assert!(
        report.is_clean(),
        "{name}: held-out inputs leave an activation interval"
    );
    let plain_acc = accuracy(&want, &labels);
    let recorded = entry["test_accuracy"].as_f64().unwrap();
    assert!(
        (plain_acc - recorded).abs() < 0.5 / n as f64,
        "{name}: Rust reference accuracy {plain_acc} vs manifest {recorded}"
    );

    // Parameters for this adapter in batch mode (no rotation keys), 128-bit security.
    let options = PlanOptions {
        mode: Mode::Batch,
        ..Default::default()
    };
    let sel = select(
        &adapter,
        &SelectRequest {
            options,
            batch: Some(n),
            // 4 bits over the default: the default's error model assumes unit-sized
            // weights, and the folded standardisation makes some rows ~40x larger.
            precision_bits: 20,
            ..Default::default()
        },
    )
    .unwrap();
    let params = sel.params;
    let start = Instant::now();

    // Client: plan from the public structure, keys, encrypted query.
    let client_plan =
        Plan::compile(&public_structure(&adapter).unwrap(), &params, options).unwrap();
    assert!(client_plan.galois_elements().is_empty());
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng).unwrap();
    let keys = kg
        .gen_evaluation_keys(&sk, &[0u64; 0], client_plan.needs_relin(), &mut rng)
        .unwrap();
    let encoder = Encoder::new(&params).unwrap();
    let query = client_plan
        .encrypt_query(&encoder, EncryptionKey::Public(&pk), &views, &mut rng)
        .unwrap();

    // Server: the real plan with the weights.
    let server_plan = Plan::compile(&adapter, &params, options).unwrap();
    assert_eq!(
        server_plan.structure_digest(),
        client_plan.structure_digest()
    );
    let evaluator = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
    let result = server_plan
        .prepare()
        .unwrap()
        .evaluate(&evaluator, &query)
        .unwrap();

    // Client: decrypt.
    let got = client_plan
        .decrypt_result(&encoder, &Decryptor::new(&params, &sk).unwrap(), &result, n)
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();

    let stats = PrecisionStats::relative_to_largest(
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
    );
    let differ = got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .filter(|(a, b)| argmax(*a) != argmax(*b))
        .count();
    assert_eq!(
        differ, 0,
        "{name}: argmax differs on {differ} of {n} samples"
    );
    Row {
        name: format!("{}/{name}", task_dir.file_name().unwrap().to_string_lossy()),
        samples: n,
        plain_acc,
        enc_acc: accuracy(&got, &labels),
        max_err: stats.max_abs_error,
        bits: stats.min_bits,
        log_n: params.log_n(),
        depth: server_plan.depth(),
        seconds,
    }
}

/// The adapters this file runs; `manifest_lists_every_shipped_card` and
/// `every_manifest_adapter_is_tested` keep it in step with assets/real.
const TESTED: &[(&str, &str)] = &[
    ("digits", "bottleneck"),
    ("digits", "probe"),
    ("finefoods", "bottleneck"),
    ("finefoods", "lora"),
    ("finefoods", "probe"),
    ("finefoods", "side"),
    ("mnist", "bottleneck"),
    ("mnist", "lora"),
    ("mnist", "probe"),
    ("mnist", "side"),
];

/// One adapter, one test: the harness runs them side by side.
fn check(task: &str, name: &str) {
    let dir = root().join(task);
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seed = 1000 + TESTED.iter().position(|t| *t == (task, name)).unwrap() as u64;
    let r = run_one(&dir, &manifest, name, seed);
    println!(
        "{:<22} samples {:>4}  plain acc {:.4}  encrypted acc {:.4}  max |err| {:.2e}  {:.1} bits  N = 2^{}  depth {}  {:.2} s",
        r.name, r.samples, r.plain_acc, r.enc_acc, r.max_err, r.bits, r.log_n, r.depth, r.seconds
    );
    assert_eq!(r.plain_acc, r.enc_acc, "{}", r.name);
    assert!(r.bits >= 14.0, "{}: only {:.1} bits", r.name, r.bits);
}

#[test]
fn digits_bottleneck() {
    check("digits", "bottleneck");
}

#[test]
fn digits_probe() {
    check("digits", "probe");
}

#[test]
fn finefoods_bottleneck() {
    check("finefoods", "bottleneck");
}

#[test]
fn finefoods_lora() {
    check("finefoods", "lora");
}

#[test]
fn finefoods_probe() {
    check("finefoods", "probe");
}

#[test]
fn finefoods_side() {
    check("finefoods", "side");
}

#[test]
fn mnist_bottleneck() {
    check("mnist", "bottleneck");
}

#[test]
fn mnist_lora() {
    check("mnist", "lora");
}

#[test]
fn mnist_probe() {
    check("mnist", "probe");
}

#[test]
fn mnist_side() {
    check("mnist", "side");
}

#[test]
fn every_manifest_adapter_is_tested() {
    for (dir, manifest) in manifests() {
        let task = dir.file_name().unwrap().to_string_lossy().to_string();
        for name in manifest["adapters"].as_object().unwrap().keys() {
            assert!(
                TESTED.contains(&(task.as_str(), name.as_str())),
                "{task}/{name} is shipped but not in TESTED"
            );
        }
    }
}

/// Every adapter directory under a task is listed in its manifest (none is silently skipped).
#[test]
fn manifest_lists_every_shipped_card() {
    for (dir, manifest) in manifests() {
        let listed = manifest["adapters"].as_object().unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.join("card.toml").is_file() {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                assert!(
                    listed.contains_key(&name),
                    "{} not in manifest",
                    p.display()
                );
            }
        }
    }
}
