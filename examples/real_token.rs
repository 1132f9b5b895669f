//! The shipped token-level (CryptPEFT OWC) adapters of the fine-food reviews
//! (assets/real/finefoods/token/, trained by training/train_token.py on MiniLM-L6 token
//! states, T = 32) under CKKS at the parameters `select_token` picks (16 bits, 128-bit
//! security), one sample per query (latency layout): keygen, client encrypt, server evaluate
//! with 1 and 2 threads, client decrypt, bytes up (query) and down (result) as serialized,
//! evaluation-key bytes, parameters, precision against the plaintext twin and argmax
//! agreement; then LAN / WAN latency next to CryptPEFT's reported figures (same network
//! model as examples/real_table.rs). Prints Markdown.
//!
//! Run: `cargo run --release --example real_token -- [ADAPTER|all] [SAMPLES=1] [THREADS=1,2]`
//! e.g. `cargo run --release --example real_token -- s1_h2_r32 2 2`. Slow: tens of seconds to
//! minutes per sample and thread count (docs/BENCHMARKS.md, "Token-level adapters").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::ckks::serialize::{to_bytes, CiphertextBundle};
use hepeft::ckks::*;
use hepeft::model::reference::argmax;
use hepeft::model::token::evaluate_tokens;
use hepeft::model::token_card::load_token_card;
use hepeft::model::token_npy::load_token_states_npy;
use hepeft::plan::token::fuse_tokens;
use hepeft::select::token::select_token;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const LAN: (f64, f64) = (1e9, 0.5e-3);
const WAN: (f64, f64) = (400e6, 4e-3);

fn mib(b: usize) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU seconds of this process (user + system, all threads), from /proc/self/stat (Linux;
/// NaN elsewhere). On a shared machine the wall clock of one thread overstates the work;
/// the CPU time of the 1-thread run is what a quiet core would take.
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

/// Milliseconds (median wall, mean CPU) of one rotation and of one ciphertext product +
/// relinearization at `level` (fresh encryption of random values), one thread: the unit
/// costs of the attention.
fn unit_costs(
    params: &CkksParams,
    ev: &Evaluator,
    encoder: &Encoder,
    encryptor: &Encryptor,
    level: Level,
    step: i64,
    rng: &mut ChaCha20Rng,
) -> ((f64, f64), (f64, f64)) {
    use rand::Rng;
    let v: Vec<f64> = (0..params.n() / 2)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let pt = encoder.encode(&v, level, params.default_scale()).unwrap();
    let ct = encryptor.encrypt(&pt, rng).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // (median wall ms, mean CPU ms) over 5 runs
    let time = |f: &(dyn Fn() + Sync)| {
        let c0 = cpu_seconds();
        let v: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                pool.install(f);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        (median(v), (cpu_seconds() - c0) * 1e3 / 5.0)
    };
    let rot = time(&|| {
        ev.rotate(&ct, step).unwrap();
    });
    let mul = time(&|| {
        ev.mul_relin(&ct, &ct).unwrap();
    });
    (rot, mul)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let samples: usize = args.get(1).map_or(1, |s| s.parse().unwrap());
    let threads: Vec<usize> = args
        .get(2)
        .map_or("1,2", String::as_str)
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    // HEPEFT_FINEFOODS: another export of training/train_token.py (HEPEFT_ASSETS_OUT)
    let dir = std::env::var_os("HEPEFT_FINEFOODS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/finefoods"),
        PathBuf::from,
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let labels: Vec<usize> = hepeft::model::load::load_features_npy(
        dir.join(manifest["token_features"]["labels"].as_str().unwrap()),
    )
    .unwrap()
    .iter()
    .map(|&y| y as usize)
    .collect();
    let mut names: Vec<String> = manifest["token_adapters"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| which == "all" || k.as_str() == which)
        .cloned()
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no token adapter named {which}");
    let pools: Vec<rayon::ThreadPool> = threads
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut rows = Vec::new();
    for name in &names {
        let entry = &manifest["token_adapters"][name];
        let adapter = load_token_card(dir.join(entry["card"].as_str().unwrap())).unwrap();
        let fused = fuse_tokens(&adapter).unwrap();
        let inputs: Vec<Vec<Array2<f64>>> = adapter
            .inputs()
            .iter()
            .map(|spec| {
                load_token_states_npy(dir.join(entry["inputs"][&spec.name].as_str().unwrap()))
                    .unwrap()
            })
            .collect();
        let sel = select_token(&fused, 16, Security::Bits128).unwrap();
        eprintln!(
            "{name}: {} parameters\n{}",
            adapter.param_count(),
            sel.report.to_text()
        );
        let (params, plan) = (sel.params, sel.plan);
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
        let (cost, before) = (plan.cost(&fused), plan.cost_columnwise(&fused));
        eprintln!(
            "  {name}: per sample {} rotations and {} attention products (column by column: {} and {}); {} Galois keys{}",
            cost.rotations,
            cost.attention_products,
            before.rotations,
            before.attention_products,
            plan.rotation_steps().len(),
            if plan.needs_relin() { " + relinearization key" } else { "" }
        );
        let att_level = plan.input_level().saturating_sub(2);
        let (rot, mul) = unit_costs(&params, &ev, &encoder, &encryptor, att_level, 1, &mut rng);
        eprintln!(
            "  {name}: one rotation {:.1} ms wall / {:.1} ms CPU, one ct x ct product + relinearization {:.1} ms wall / {:.1} ms CPU, at level {att_level} (1 thread)",
            rot.0, rot.1, mul.0, mul.1
        );
        let (mut enc_t, mut dec_t) = (Vec::new(), Vec::new());
        let mut eval_t: Vec<Vec<f64>> = vec![Vec::new(); pools.len()];
        let mut eval_cpu: Vec<Vec<f64>> = vec![Vec::new(); pools.len()];
        let (mut up, mut down, mut agree, mut worst_bits) = (0, 0, 0, f64::INFINITY);
        let n = samples.min(labels.len());
        for i in 0..n {
            let xs: Vec<Array2<f64>> = inputs.iter().map(|v| v[i].clone()).collect();
            let t = Instant::now();
            let q = plan
                .encrypt_inputs(&fused, &encoder, &encryptor, &xs, &mut rng)
                .unwrap();
            enc_t.push(t.elapsed().as_secs_f64());
            let flat: Vec<Ciphertext> = q.iter().flatten().cloned().collect();
            up = to_bytes(
                &params,
                &CiphertextBundle {
                    digest,
                    items: flat,
                },
            )
            .unwrap()
            .len();
            let mut out = Vec::new();
            for (k, pool) in pools.iter().enumerate() {
                let t = Instant::now();
                let c0 = cpu_seconds();
                out = pool
                    .install(|| plan.evaluate(&fused, &ev, &encoder, &q))
                    .unwrap();
                eval_t[k].push(t.elapsed().as_secs_f64());
                eval_cpu[k].push(cpu_seconds() - c0);
                eprintln!(
                    "  {name} sample {i}: server {:.1} s wall, {:.1} s CPU with {} thread(s), load {}",
                    eval_t[k].last().unwrap(),
                    eval_cpu[k].last().unwrap(),
                    threads[k],
                    std::fs::read_to_string("/proc/loadavg")
                        .unwrap_or_default()
                        .trim()
                );
            }
            down = to_bytes(
                &params,
                &CiphertextBundle {
                    digest,
                    items: out.clone(),
                },
            )
            .unwrap()
            .len();
            let t = Instant::now();
            let got = plan.decrypt_output(&encoder, &dec, &out).unwrap();
            dec_t.push(t.elapsed().as_secs_f64());
            let want = evaluate_tokens(&adapter, &xs).unwrap().output;
            let g: Vec<f64> = got.iter().copied().collect();
            let w: Vec<f64> = want.iter().copied().collect();
            let bits = PrecisionStats::relative_to_largest(&g, &w).min_bits;
            worst_bits = worst_bits.min(bits);
            let same = argmax(got.row(0)) == argmax(want.row(0));
            agree += usize::from(same);
            eprintln!(
                "  {name} sample {i}: encrypted {g:.4?} twin {w:.4?} ({bits:.1} bits), label {}",
                labels[i]
            );
        }
        rows.push((
            name.clone(),
            entry["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            format!("{agree}/{n}"),
            worst_bits,
            median(enc_t),
            eval_t.into_iter().map(median).collect::<Vec<f64>>(),
            eval_cpu.into_iter().map(median).collect::<Vec<f64>>(),
            median(dec_t),
            up,
            down,
            key_bytes,
            keygen_s,
            format!(
                "N = 2^{}, log QP {:.0}, depth {}, 128-bit",
                sel.report.log_n, sel.report.log_qp, sel.report.depth
            ),
            adapter.param_count(),
        ));
    }
    let th: Vec<String> = threads
        .iter()
        .map(|t| format!("server s, {t} thr. (CPU s)"))
        .collect();
    println!(
        "| token adapter | params | plaintext test acc. | argmax = plaintext (bits) | client encrypt s | {} | client decrypt s | bytes up | bytes down | evaluation keys (once) | keygen s | parameters |",
        th.join(" | ")
    );
    println!(
        "|---|---|---|---|---|{}---|---|---|---|---|---|",
        "---|".repeat(th.len())
    );
    for r in &rows {
        let ev: Vec<String> =
            r.5.iter()
                .zip(&r.6)
                .map(|(w, c)| format!("{w:.1} ({c:.1})"))
                .collect();
        println!(
            "| {} | {} | {:.4} | {} ({:.1}) | {:.2} | {} | {:.3} | {} | {} | {} | {:.1} | {} |",
            r.0,
            r.13,
            r.1,
            r.2,
            r.3,
            r.4,
            ev.join(" | "),
            r.7,
            mib(r.8),
            mib(r.9),
            mib(r.10),
            r.11,
            r.12
        );
    }
    println!();
    println!(
        "| per query | rounds | bytes per query | LAN (1 Gbps, 0.5 ms) | WAN (400 Mbps, 4 ms) |"
    );
    println!("|---|---|---|---|---|");
    println!("| CryptPEFT (MPC, reported) | 29 | 0.053 GB | 0.79 s | 2.52 s |");
    for r in &rows {
        let bytes = (r.8 + r.9) as f64;
        let compute = r.4 + r.5.last().copied().unwrap_or(f64::NAN) + r.7;
        let net = |(bw, rtt): (f64, f64)| compute + bytes * 8.0 / bw + rtt;
        println!(
            "| hepeft token {} ({} threads) | 1 | {:.4} GB | {:.2} s | {:.2} s |",
            r.0,
            threads.last().unwrap(),
            bytes / 1e9,
            net(LAN),
            net(WAN)
        );
    }
}
