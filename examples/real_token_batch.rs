//! Batch throughput of the shipped token-level (CryptPEFT OWC) adapters of the fine-food
//! reviews (assets/real/finefoods/token/, T = 32) with the batch layout
//! (`hepeft::plan::token::TokenBatchPlan`, docs/token-adapters.md "Packing (many samples,
//! batch)") at the parameters `select_token` picks (16 bits, 128-bit security): one query of
//! `BATCH` samples (the 16 held-out samples, repeated in order to fill a larger batch), keygen,
//! client encrypt, server evaluate with each thread count (wall and process CPU time),
//! decrypt, every held-out sample against the plaintext twin (bits relative to the largest
//! logit, argmax), bytes up and down, samples per second.
//!
//! Run: `cargo run --release --example real_token_batch -- [ADAPTER=s1_h2_r32] [BATCH=16] [THREADS=1,2]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::ckks::serialize::{to_bytes, CiphertextBundle};
use hepeft::ckks::*;
use hepeft::model::reference::argmax;
use hepeft::model::token::evaluate_tokens;
use hepeft::model::token_card::load_token_card;
use hepeft::model::token_npy::load_token_states_npy;
use hepeft::plan::token::{fuse_tokens, TokenBatchPlan};
use hepeft::select::token::select_token;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// CPU seconds of this process (user + system, all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) => {
            (u.parse::<f64>().unwrap_or(f64::NAN) + s.parse::<f64>().unwrap_or(f64::NAN)) / 100.0
        }
        _ => f64::NAN,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("s1_h2_r32", String::as_str);
    let batch: usize = args.get(1).map_or(16, |s| s.parse().unwrap());
    let threads: Vec<usize> = args
        .get(2)
        .map_or("1,2", String::as_str)
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/finefoods");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest["token_adapters"][name];
    assert!(entry.is_object(), "no token adapter named {name}");
    let adapter = load_token_card(dir.join(entry["card"].as_str().unwrap())).unwrap();
    let fused = fuse_tokens(&adapter).unwrap();
    let per_input: Vec<Vec<Array2<f64>>> = adapter
        .inputs()
        .iter()
        .map(|spec| {
            load_token_states_npy(dir.join(entry["inputs"][&spec.name].as_str().unwrap())).unwrap()
        })
        .collect();
    let held = per_input[0].len();
    let samples: Vec<Vec<Array2<f64>>> = (0..batch)
        .map(|j| per_input.iter().map(|v| v[j % held].clone()).collect())
        .collect();
    let sel = select_token(&fused, 16, Security::Bits128).unwrap();
    let params = sel.params;
    let plan = TokenBatchPlan::compile(&fused, &params, batch).unwrap();
    let cost = plan.cost(&fused);
    let lat = sel.plan.cost(&fused);
    eprintln!(
        "{name}: N = 2^{}, log QP {:.0}, depth {}; batch {batch} (capacity {}), {} column blocks; \
         per batch {} rotations + {} attention products ({:.1} + {:.2} per sample; latency layout {} + {}); \
         {} Galois keys",
        sel.report.log_n,
        sel.report.log_qp,
        plan.depth(),
        TokenBatchPlan::capacity(&fused, &params),
        plan.column_blocks(),
        cost.rotations,
        cost.attention_products,
        cost.rotations as f64 / batch as f64,
        cost.attention_products as f64 / batch as f64,
        lat.rotations,
        lat.attention_products,
        plan.rotation_steps().len()
    );
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let t = Instant::now();
    let keys = kg
        .gen_evaluation_keys(
            &sk,
            &plan.galois_elements(&params),
            plan.needs_relin(),
            &mut rng,
        )
        .unwrap();
    let keygen_s = t.elapsed().as_secs_f64();
    let key_bytes = to_bytes(&params, &keys).unwrap().len();
    let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
    let encoder = Encoder::new(&params).unwrap();
    let encryptor = Encryptor::new(&params, EncryptionKey::Secret(&sk)).unwrap();
    let dec = Decryptor::new(&params, &sk).unwrap();
    let digest = params.digest();
    let t = Instant::now();
    let q = plan
        .encrypt_inputs(&fused, &encoder, &encryptor, &samples, &mut rng)
        .unwrap();
    let enc_s = t.elapsed().as_secs_f64();
    let up = to_bytes(
        &params,
        &CiphertextBundle {
            digest,
            items: q.iter().flatten().cloned().collect(),
        },
    )
    .unwrap()
    .len();
    eprintln!(
        "  keygen {keygen_s:.1} s ({}), encrypt {enc_s:.1} s, query {} ciphertexts {}",
        mib(key_bytes),
        plan.query_ciphertexts(&fused),
        mib(up)
    );
    let mut out = Vec::new();
    let mut timing = Vec::new();
    for &th in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(th)
            .build()
            .unwrap();
        let (l0, t, c0) = (load(), Instant::now(), cpu_seconds());
        out = pool
            .install(|| plan.evaluate(&fused, &ev, &encoder, &q))
            .unwrap();
        let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let l1 = load();
        eprintln!(
            "  server, {th} thread(s): {wall:.1} s wall, {cpu:.1} s CPU for {batch} samples: \
             {:.3} samples/s wall, {:.2} s CPU per sample [load {l0} -> {l1}]",
            batch as f64 / wall,
            cpu / batch as f64
        );
        timing.push((th, wall, cpu, l0, l1));
    }
    let down = to_bytes(
        &params,
        &CiphertextBundle {
            digest,
            items: out.clone(),
        },
    )
    .unwrap()
    .len();
    let t = Instant::now();
    let got = plan
        .decrypt_output(&encoder, &dec, &out, samples.len())
        .unwrap();
    let dec_s = t.elapsed().as_secs_f64();
    let (mut agree, mut worst) = (0, f64::INFINITY);
    let mut bits_list = Vec::new();
    for (j, g) in got.iter().enumerate().take(held.min(batch)) {
        let want = evaluate_tokens(&adapter, &samples[j]).unwrap().output;
        let gv: Vec<f64> = g.iter().copied().collect();
        let wv: Vec<f64> = want.iter().copied().collect();
        let bits = PrecisionStats::relative_to_largest(&gv, &wv).min_bits;
        worst = worst.min(bits);
        bits_list.push(format!("{bits:.1}"));
        let same = argmax(g.row(0)) == argmax(want.row(0));
        agree += usize::from(same);
        eprintln!(
            "  sample {j}: encrypted {gv:.5?} twin {wv:.5?}: {bits:.1} bits, argmax equal {same}"
        );
    }
    // repeated samples must decrypt like their first copy
    for (j, g) in got.iter().enumerate().skip(held) {
        let want = evaluate_tokens(&adapter, &samples[j]).unwrap().output;
        assert_eq!(argmax(g.row(0)), argmax(want.row(0)), "sample {j}");
    }
    println!(
        "| token adapter | batch | parameters | server, threads: wall (CPU) [load before -> after] | samples/s (wall) | CPU s per sample | query up | result down | evaluation keys | argmax = plaintext | bits per held-out sample (worst) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (th, wall, cpu, l0, l1) in &timing {
        println!(
            "| {name} | {batch} | N = 2^{}, log QP {:.0}, depth {} | {th}: {wall:.1} s ({cpu:.1} s CPU) [{l0} -> {l1}] | {:.3} | {:.2} | {} | {} | {} | {agree}/{} | {} ({worst:.1}) |",
            sel.report.log_n,
            sel.report.log_qp,
            plan.depth(),
            batch as f64 / wall,
            cpu / batch as f64,
            mib(up),
            mib(down),
            mib(key_bytes),
            held.min(batch),
            bits_list.join(", ")
        );
    }
    eprintln!("  decrypt {dec_s:.2} s");
    assert_eq!(
        agree,
        held.min(batch),
        "argmax differs from the plaintext twin"
    );
}
