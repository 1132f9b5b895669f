#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Profiling driver for the issue-13 heads: selects parameters as `params select --precision
//! 16` does, evaluates one query repeatedly on one thread and prints the wall-clock median and
//! the process's CPU time per evaluation (user + system from `/proc/self/stat`, in 10 ms ticks
//! averaged over the runs; Linux only), which a loaded machine inflates far less than the
//! wall clock.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo run --release --example head_profile -- a 10 1`
//! (arguments: head `a` = 768-64-square-100, `b` = 384-8-square-10, `lora8` / `lora64` = the LoRA map `B (A x)` of
//! `benches/head.rs` (d = 768, r = 8 / 64), anything else =
//! `zoo::lora_head(768, r = 64, 768)`; seconds; client pre-rotated copies, 1 = replicated, 0 = the compiler's choice). `ITERS=n` caps the
//! evaluations; `NTT_PROBE=1` also times one limb's forward/inverse NTT, multiply-accumulate
//! and automorphism. Use it under `perf record` to see where the time goes.
use hepeft::ckks::{Encoder, EncryptionKey, Evaluator, KeyGenerator};
use hepeft::model::zoo;
use hepeft::plan::{InputLayout, Plan};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("a");
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let copies: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let adapter = match which {
        "a" => zoo::square_mlp(&mut rng, 768, 64, 100),
        "b" => zoo::square_mlp(&mut rng, 384, 8, 10),
        "lora8" => lora_map(&mut rng, 768, 8),
        "lora64" => lora_map(&mut rng, 768, 64),
        _ => zoo::lora_head(&mut rng, 768, 64, 768),
    }
    .expect("adapter");
    // FLOOD=1: the parameters `params select` picks with the default 40-bit flooding (and
    // the adapter's calibrated profile); the sanitization is then timed too.
    let flood = std::env::var("FLOOD").is_ok();
    let req = hepeft::select::SelectRequest {
        precision_bits: 16,
        flooding: flood.then(hepeft::plan::FloodingConfig::default),
        profile: if flood {
            hepeft::select::calibrate(&adapter, None).expect("calibrate")
        } else {
            None
        },
        ..Default::default()
    };
    let sel = hepeft::select::select(&adapter, &req).expect("select");
    let params = sel.params.clone();
    eprintln!("{}", params.describe());
    eprintln!(
        "q {:?} p {:?} ifma {}",
        params
            .q()
            .iter()
            .map(|q| (*q as f64).log2())
            .collect::<Vec<_>>(),
        params
            .p()
            .iter()
            .map(|q| (*q as f64).log2())
            .collect::<Vec<_>>(),
        params.ring().uses_ifma()
    );
    eprintln!(
        "element loops (math::simd): {}",
        hepeft::math::simd::level()
    );
    if std::env::var("NTT_PROBE").is_ok() {
        ntt_probe(&params);
    }
    let layout = if copies > 1 {
        InputLayout::PreRotated { max_copies: copies }
    } else {
        InputLayout::Replicated
    };
    // copies 0: the compiler's choice (`PRE_ROTATE_AUTO`, the CLI's default)
    let plan = if copies == 0 {
        Plan::compile(
            &adapter,
            &params,
            hepeft::plan::PlanOptions {
                pre_rotate: hepeft::plan::PRE_ROTATE_AUTO,
                ..sel.plan.options()
            },
        )
    } else {
        Plan::compile_with_layout(&adapter, &params, sel.plan.options(), layout)
    }
    .expect("plan");
    eprintln!(
        "pre_rotate {} (estimated cost {:.0} limb NTTs)",
        plan.options().pre_rotate,
        plan.estimated_cost()
    );
    eprint!("{}", plan.summary());
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let keys = kg
        .gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), &mut rng)
        .expect("keys");
    let ev = Evaluator::with_keys(&params, Arc::new(keys)).expect("evaluator");
    let enc = Encoder::new(&params).expect("encoder");
    let inputs = zoo::uniform_inputs(&mut rng, &adapter, 1);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let query = plan
        .encrypt_query(&enc, EncryptionKey::Secret(&sk), &views, &mut rng)
        .expect("query");
    let prepared = plan.prepare().expect("prepare");
    let dec = hepeft::ckks::Decryptor::new(&params, &sk).expect("decryptor");
    let result = prepared.evaluate(&ev, &query).expect("evaluate");
    let got = plan
        .decrypt_result(&enc, &dec, &result, 1)
        .expect("decrypt");
    let rows: Vec<ndarray::ArrayView1<f64>> = inputs.iter().map(|a| a.row(0)).collect();
    let (want, _) = hepeft::model::reference::evaluate(&adapter, &rows).expect("twin");
    let prec =
        hepeft::ckks::PrecisionStats::relative_to_largest(&got.row(0).to_vec(), &want.to_vec());
    eprintln!("bits {:.2}", prec.min_bits);
    let cpu_ns = || -> f64 {
        // utime + stime of the process, in clock ticks (1/100 s)
        let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let rest = s.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) * 1e7
    };
    let start = std::time::Instant::now();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    while start.elapsed().as_secs_f64() < secs && times.len() < iters {
        let t = std::time::Instant::now();
        let c = cpu_ns();
        let r = prepared.evaluate(&ev, &query).expect("evaluate");
        std::hint::black_box(r);
        cpu.push((cpu_ns() - c) / 1e6);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "cpu per run {:.2} ms",
        cpu.iter().sum::<f64>() / cpu.len() as f64
    );
    eprintln!(
        "runs {} median {:.2} ms min {:.2} ms",
        times.len(),
        times[times.len() / 2],
        times[0]
    );
    if flood {
        let pk = kg.gen_public_key(&sk, &mut rng).expect("pk");
        let cfg = hepeft::plan::SanitizeConfig {
            flooding: req.effective_flooding(),
        };
        let mut st = Vec::new();
        for _ in 0..times.len().clamp(3, 20) {
            let out = prepared.evaluate(&ev, &query).expect("evaluate");
            let t = std::time::Instant::now();
            let r = plan
                .sanitize(&ev, out, &pk, &cfg, &mut rng)
                .expect("sanitize");
            st.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(r);
        }
        st.sort_by(|a, b| a.partial_cmp(b).unwrap());
        eprintln!("sanitize median {:.2} ms", st[st.len() / 2]);
    }
}

/// `d -> r -> d`: the LoRA map `B (A x)` alone, as in `benches/head.rs`.
fn lora_map(rng: &mut ChaCha20Rng, d: usize, r: usize) -> hepeft::Result<hepeft::model::Adapter> {
    use rand::Rng;
    let mut m = |rows: usize, c: usize| {
        ndarray::Array2::from_shape_simple_fn((rows, c), || {
            rng.random_range(-1.0..1.0) / (c as f64).sqrt()
        })
    };
    let (a, bm) = (m(r, d), m(d, r));
    let mut b = hepeft::model::AdapterBuilder::new();
    let x = b.input("x", d)?;
    b.node(
        "lora",
        hepeft::model::Op::LowRank {
            a,
            b: bm,
            scale: 1.0,
            bias: None,
        },
        &[x],
    )?;
    b.build()
}

#[allow(dead_code)]
fn ntt_probe(params: &hepeft::ckks::CkksParams) {
    let t = &params.ring().q_tables()[1];
    let mut v: Vec<u64> = (0..params.n() as u64)
        .map(|i| (i * 7919) % t.modulus().value())
        .collect();
    let s = std::time::Instant::now();
    for _ in 0..2000 {
        t.forward(&mut v);
    }
    eprintln!("fwd {:.2} us", s.elapsed().as_secs_f64() * 1e6 / 2000.0);
    let s = std::time::Instant::now();
    for _ in 0..2000 {
        t.inverse(&mut v);
    }
    eprintln!(
        "inv+norm {:.2} us",
        s.elapsed().as_secs_f64() * 1e6 / 2000.0
    );
    let a = v.clone();
    let mut acc = v.clone();
    let s = std::time::Instant::now();
    for _ in 0..2000 {
        t.mul_accumulate(&mut acc, &a, &v);
    }
    eprintln!("mac {:.2} us", s.elapsed().as_secs_f64() * 1e6 / 2000.0);
    let perm = params.ring().galois_permutation(5);
    let s = std::time::Instant::now();
    for _ in 0..2000 {
        for (x, &k) in acc.iter_mut().zip(perm.iter()) {
            *x = a[k as usize];
        }
    }
    eprintln!("perm {:.2} us", s.elapsed().as_secs_f64() * 1e6 / 2000.0);
}
