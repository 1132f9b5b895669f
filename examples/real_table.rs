//! The per-task latency and bytes table of docs/BENCHMARKS.md (issue #7), measured on the
//! shipped real adapters (assets/real/<task>/): for every adapter,
//!
//! * accuracy: the plaintext f64 model and the encrypted run over all held-out samples (batch
//!   layout: the samples share one query; without flooding, which the batch layout cannot
//!   carry at useful precision: docs/threat-model.md), with the argmax agreement;
//! * one query in the latency layout (one sample, rotations), as a client would send it:
//!   client encrypt, server evaluate with 1 and 2 threads, client decrypt (medians of
//!   `REPS` samples; the server time includes the output sanitization the CLI and the
//!   service always run: mask, drop to the output level, re-randomize, and the default 40-bit
//!   noise flooding, on parameters `select` chose for 16 bits after it; the argmax of every
//!   flooded result is checked against the plaintext twin), bytes up (query envelope), bytes down (sanitized result
//!   envelope), evaluation key bytes (sent once), parameters and their security;
//! * the same query turned into end-to-end latency on a LAN (1 Gbps, 0.5 ms round trip) and a
//!   WAN (400 Mbps, 4 ms), the way CryptPEFT reports its figures (0.79 s LAN / 2.52 s WAN per
//!   image, 0.053 GB, 29 rounds, under MPC).
//!
//! Run: `bash bench/real_table.sh` (or `cargo run --release --example real_table [REPS]`).
//! Prints Markdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::ckks::serialize::CiphertextBundle;
use hepeft::ckks::*;
use hepeft::model::load::{load_card, load_features_npy};
use hepeft::model::reference::argmax;
use hepeft::model::{reference, Adapter};
use hepeft::plan::{public_structure, FloodingConfig, Mode, Plan, PlanOptions, SanitizeConfig};
use hepeft::select::{select, SelectRequest};
use ndarray::{Array2, ArrayView2, Axis, Slice};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Precision asked of the selector for the batch accuracy run, without flooding (see
/// tests/real_adapters.rs for why 20 and not 16); the flooded latency query asks 16.
const PRECISION_BITS: u32 = 20;
const LAN: (f64, f64) = (1e9, 0.5e-3);
const WAN: (f64, f64) = (400e6, 4e-3);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn mib(b: usize) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

struct Task {
    dir: PathBuf,
    name: String,
    manifest: serde_json::Value,
}

fn tasks() -> Vec<Task> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
            Task {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                manifest: serde_json::from_str(&text).unwrap(),
                dir,
            }
        })
        .collect()
}

struct Measured {
    name: String,
    plain_acc: f64,
    enc_acc: f64,
    agree: String,
    encrypt_ms: f64,
    eval_ms: [f64; 2],
    decrypt_ms: f64,
    up: usize,
    down: usize,
    keys: usize,
    params: String,
}

fn pools() -> [rayon::ThreadPool; 2] {
    [1, 2].map(|t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
    })
}

fn measure(
    task: &Task,
    adapter_name: &str,
    reps: usize,
    pools: &[rayon::ThreadPool; 2],
) -> Measured {
    let entry = &task.manifest["adapters"][adapter_name];
    let adapter: Adapter = load_card(task.dir.join(entry["card"].as_str().unwrap())).unwrap();
    let features: Vec<Array2<f64>> = adapter
        .inputs()
        .iter()
        .map(|spec| {
            let file = task.manifest["features"][&spec.name].as_str().unwrap();
            load_features_npy(task.dir.join(file)).unwrap()
        })
        .collect();
    let labels: Vec<usize> =
        load_features_npy(task.dir.join(task.manifest["labels"].as_str().unwrap()))
            .unwrap()
            .iter()
            .map(|&y| y as usize)
            .collect();
    let n = labels.len();
    let views: Vec<ArrayView2<f64>> = features.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(&adapter, &views).unwrap();
    let acc = |m: &Array2<f64>| {
        m.axis_iter(Axis(0))
            .zip(&labels)
            .filter(|(r, &y)| argmax(*r) == y)
            .count() as f64
            / n as f64
    };
    let plain_acc = acc(&want);
    let public = public_structure(&adapter).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0x7ab1e);

    // Accuracy: every held-out sample encrypted, batch layout (one query).
    let batch = PlanOptions {
        mode: Mode::Batch,
        ..Default::default()
    };
    let params = select(
        &adapter,
        &SelectRequest {
            options: batch,
            batch: Some(n),
            precision_bits: PRECISION_BITS,
            ..Default::default()
        },
    )
    .unwrap()
    .params;
    let plan = Plan::compile(&adapter, &params, batch).unwrap();
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let keys = kg
        .gen_evaluation_keys(&sk, &[0u64; 0], plan.needs_relin(), &mut rng)
        .unwrap();
    let encoder = Encoder::new(&params).unwrap();
    let q = plan
        .encrypt_query(&encoder, EncryptionKey::Secret(&sk), &views, &mut rng)
        .unwrap();
    let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
    let out = plan.prepare().unwrap().evaluate(&ev, &q).unwrap();
    let got = plan
        .decrypt_result(&encoder, &Decryptor::new(&params, &sk).unwrap(), &out, n)
        .unwrap();
    let agree = got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .filter(|(a, b)| argmax(*a) == argmax(*b))
        .count();
    let enc_acc = acc(&got);

    // Latency: one sample per query, as a client sends it.
    let latency = PlanOptions::default();
    let params = select(
        &adapter,
        &SelectRequest {
            options: latency,
            flooding: Some(FloodingConfig::default()),
            ..Default::default()
        },
    )
    .unwrap()
    .params;
    let client_plan = Plan::compile(&public, &params, latency).unwrap();
    let server_plan = Plan::compile(&adapter, &params, latency).unwrap();
    let prepared = server_plan.prepare().unwrap();
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng).unwrap();
    let keys = kg
        .gen_evaluation_keys(
            &sk,
            &client_plan.galois_elements(),
            client_plan.needs_relin(),
            &mut rng,
        )
        .unwrap();
    let key_bytes = to_bytes(&params, &keys).unwrap().len();
    let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
    let encoder = Encoder::new(&params).unwrap();
    let dec = Decryptor::new(&params, &sk).unwrap();
    let digest = params.digest();
    let (mut enc_t, mut eval_t, mut dec_t) = (Vec::new(), [Vec::new(), Vec::new()], Vec::new());
    let (mut up, mut down) = (0, 0);
    for i in 0..reps.min(n) {
        let row: Vec<ArrayView2<f64>> = views
            .iter()
            .map(|v| v.slice_axis(Axis(0), Slice::from(i..i + 1)))
            .collect();
        let t = Instant::now();
        let q = client_plan
            .encrypt_query(&encoder, EncryptionKey::Secret(&sk), &row, &mut rng)
            .unwrap();
        let q_bytes = to_bytes(
            &params,
            &CiphertextBundle {
                digest,
                items: q.clone(),
            },
        )
        .unwrap();
        enc_t.push(t.elapsed().as_secs_f64() * 1e3);
        up = q_bytes.len();
        let mut result = Vec::new();
        for (k, pool) in pools.iter().enumerate() {
            let t = Instant::now();
            result = pool
                .install(|| {
                    let out = prepared.evaluate(&ev, &q)?;
                    server_plan.sanitize(
                        &ev,
                        out,
                        &pk,
                        &SanitizeConfig::flooded(),
                        &mut rng.clone(),
                    )
                })
                .unwrap()
                .0;
            eval_t[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
        let r_bytes = to_bytes(
            &params,
            &CiphertextBundle {
                digest,
                items: result,
            },
        )
        .unwrap();
        down = r_bytes.len();
        let t = Instant::now();
        let back: CiphertextBundle = from_bytes(&params, &r_bytes).unwrap();
        let logits = client_plan
            .decrypt_result(&encoder, &dec, &back.items, 1)
            .unwrap();
        dec_t.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(argmax(logits.row(0)), argmax(want.row(i)));
    }
    let [e1, e2] = eval_t;
    Measured {
        name: format!("{}/{adapter_name}", task.name),
        plain_acc,
        enc_acc,
        agree: format!("{agree}/{n}"),
        encrypt_ms: median(enc_t),
        eval_ms: [median(e1), median(e2)],
        decrypt_ms: median(dec_t),
        up,
        down,
        keys: key_bytes,
        params: format!(
            "N=2^{}, log QP {:.0}, depth {}, {}",
            params.log_n(),
            params.log_qp(),
            params.max_level(),
            params.security()
        ),
    }
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("REPS: a number"))
        .unwrap_or(5);
    let pools = pools();
    let mut rows = Vec::new();
    for task in tasks() {
        let mut names: Vec<String> = task.manifest["adapters"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        for name in names {
            eprintln!("measuring {}/{name} ...", task.name);
            rows.push(measure(&task, &name, reps, &pools));
        }
    }
    println!("| task / adapter | plaintext acc. | encrypted acc. (argmax = plaintext) | client encrypt ms | server evaluate ms, 1 thread | 2 threads | client decrypt ms | bytes up | bytes down | evaluation keys (once) | parameters, security |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.4} | {:.4} ({}) | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.name,
            r.plain_acc,
            r.enc_acc,
            r.agree,
            r.encrypt_ms,
            r.eval_ms[0],
            r.eval_ms[1],
            r.decrypt_ms,
            mib(r.up),
            mib(r.down),
            mib(r.keys),
            r.params
        );
    }
    println!();
    println!(
        "| per query | rounds | bytes per query | LAN (1 Gbps, 0.5 ms) | WAN (400 Mbps, 4 ms) |"
    );
    println!("|---|---|---|---|---|");
    println!("| CryptPEFT (MPC, reported) | 29 | 0.053 GB | 0.79 s | 2.52 s |");
    for r in &rows {
        let bytes = (r.up + r.down) as f64;
        let compute = (r.encrypt_ms + r.eval_ms[1] + r.decrypt_ms) / 1e3;
        let net = |(bw, rtt): (f64, f64)| compute + bytes * 8.0 / bw + rtt;
        println!(
            "| hepeft {} (2 threads) | 1 | {:.4} GB | {:.3} s | {:.3} s |",
            r.name,
            bytes / 1e9,
            net(LAN),
            net(WAN)
        );
    }
}
