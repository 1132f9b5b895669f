#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Whole adapter heads, server side: one encrypted query evaluated by a prepared plan, with
//! one and two threads. Run: `cargo bench --bench head`.

use criterion::{criterion_group, criterion_main, Criterion};
use hepeft::ckks::{CkksParams, Encoder, EncryptionKey, Evaluator, KeyGenerator};
use hepeft::model::{zoo, ActivationFn, AdapterBuilder, Op};
use hepeft::plan::{InputLayout, Plan, PlanOptions};
use ndarray::ArrayView2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// 768 -> 64 -> (0.5 t + 0.25 t^2) -> 100: the head the SEAL/OpenFHE peer figures use.
fn square_mlp(rng: &mut ChaCha20Rng) -> hepeft::Result<hepeft::model::Adapter> {
    square_mlp_sized(rng, 768, 64, 100)
}

fn square_mlp_sized(
    rng: &mut ChaCha20Rng,
    d: usize,
    hidden: usize,
    classes: usize,
) -> hepeft::Result<hepeft::model::Adapter> {
    zoo::square_mlp(rng, d, hidden, classes)
}

fn bench_heads(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let cases: Vec<(&str, hepeft::model::Adapter, &str)> = vec![
        (
            "lowrank_384_8_10",
            zoo::lora_head(&mut rng, 384, 8, 10).expect("adapter"),
            "CKKS_N13_QP200_128",
        ),
        (
            "square_mlp_768_64_100",
            square_mlp(&mut rng).expect("adapter"),
            "CKKS_N14_QP430_128",
        ),
        (
            "bottleneck_768_64_gelu7_100",
            zoo::bottleneck(&mut rng, 768, 64, ActivationFn::Gelu, 7, (-4.0, 4.0), 100)
                .expect("adapter"),
            "CKKS_N14_QP430_128",
        ),
    ];
    let mut g = c.benchmark_group("head");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, adapter, preset) in cases {
        let params = CkksParams::preset(preset).expect("preset");
        let plan = Plan::compile(&adapter, &params, PlanOptions::default()).expect("plan");
        let kg = KeyGenerator::new(&params);
        let sk = kg.gen_secret_key(&mut rng);
        let pk = kg.gen_public_key(&sk, &mut rng).expect("pk");
        let keys = kg
            .gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), &mut rng)
            .expect("keys");
        let ev = Evaluator::with_keys(&params, Arc::new(keys)).expect("evaluator");
        let enc = Encoder::new(&params).expect("encoder");
        let inputs = zoo::uniform_inputs(&mut rng, &adapter, 1);
        let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
        let query = plan
            .encrypt_query(&enc, EncryptionKey::Public(&pk), &views, &mut rng)
            .expect("query");
        let prepared = plan.prepare().expect("prepare");
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            g.bench_function(format!("{name}/{preset}/threads{threads}"), |b| {
                b.iter(|| pool.install(|| prepared.evaluate(&ev, black_box(&query))))
            });
        }
    }
    g.finish();
}

/// `d -> r -> d`: the LoRA map `B (A x)` alone (no dense branch), `A: r x d`, `B: d x r`.
fn lora_map(rng: &mut ChaCha20Rng, d: usize, r: usize) -> hepeft::Result<hepeft::model::Adapter> {
    let mut m = |rows: usize, c: usize| {
        ndarray::Array2::from_shape_simple_fn((rows, c), || {
            rng.random_range(-1.0..1.0) / (c as f64).sqrt()
        })
    };
    let (a, bm) = (m(r, d), m(d, r));
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d)?;
    b.node(
        "lora",
        Op::LowRank {
            a,
            b: bm,
            scale: 1.0,
            bias: None,
        },
        &[x],
    )?;
    b.build()
}

/// Heads (a) and (b) and the LoRA maps `B (A x)` (d = 768, r = 8 and 64) on the parameters
/// `hepeft params select --precision 16 --no-flooding` picks for them, one thread (the
/// issue-13 comparison with SEAL, driven by `bench/heads_vs_seal.sh`). Before timing, each
/// case prints one line `head_selected/NAME key=value ...` on stderr: ring, depth, key
/// switches, measured precision (bits relative to the largest output against the plaintext
/// twin) and bytes of the query (secret-key encryption, seeded), the result and the
/// evaluation keys. Each case runs in the layout the compiler chooses (`NAME/auto`, the
/// CLI's default: [`hepeft::plan::PRE_ROTATE_AUTO`]), the replicated input layout (`NAME/rep`) and with
/// client pre-rotated inputs of up to 8 and 64 copies (`NAME/pre8`, `NAME/pre64`, see
/// [`InputLayout::PreRotated`]; same parameters).
/// Run: `RAYON_NUM_THREADS=1 cargo bench --bench head -- head_selected`.
fn bench_selected(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let cases = [
        ("a_768_64_100", square_mlp_sized(&mut rng, 768, 64, 100)),
        ("b_384_8_10", square_mlp_sized(&mut rng, 384, 8, 10)),
        ("lora_768_r8", lora_map(&mut rng, 768, 8)),
        ("lora_768_r64", lora_map(&mut rng, 768, 64)),
    ];
    let mut g = c.benchmark_group("head_selected");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // `auto`: the compiler's choice (`PRE_ROTATE_AUTO`, the CLI's default)
    let layouts = [
        ("auto", None),
        ("rep", Some(InputLayout::Replicated)),
        ("pre8", Some(InputLayout::PreRotated { max_copies: 8 })),
        ("pre64", Some(InputLayout::PreRotated { max_copies: 64 })),
    ];
    for (base, adapter) in cases {
        let adapter = adapter.expect("adapter");
        let sel = hepeft::select::select(
            &adapter,
            &hepeft::select::SelectRequest {
                precision_bits: 16,
                ..Default::default()
            },
        )
        .expect("select");
        for (lname, layout) in layouts {
            let name = format!("{base}/{lname}");
            let params = sel.params.clone();
            let plan = match layout {
                Some(layout) => {
                    Plan::compile_with_layout(&adapter, &params, sel.plan.options(), layout)
                }
                None => Plan::compile(
                    &adapter,
                    &params,
                    PlanOptions {
                        pre_rotate: hepeft::plan::PRE_ROTATE_AUTO,
                        ..sel.plan.options()
                    },
                ),
            }
            .expect("plan");
            let kg = KeyGenerator::new(&params);
            let sk = kg.gen_secret_key(&mut rng);
            let keys = kg
                .gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), &mut rng)
                .expect("keys");
            let key_bytes = hepeft::ckks::to_bytes(&params, &keys)
                .expect("keys bytes")
                .len();
            let ev = Evaluator::with_keys(&params, Arc::new(keys)).expect("evaluator");
            let enc = Encoder::new(&params).expect("encoder");
            let inputs = zoo::uniform_inputs(&mut rng, &adapter, 1);
            let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
            let query = plan
                .encrypt_query(&enc, EncryptionKey::Secret(&sk), &views, &mut rng)
                .expect("query");
            let bundle = |items: &[hepeft::ckks::Ciphertext]| {
                hepeft::ckks::to_bytes(
                    &params,
                    &hepeft::ckks::CiphertextBundle {
                        digest: params.digest(),
                        items: items.to_vec(),
                    },
                )
                .expect("bundle bytes")
                .len()
            };
            let query_bytes = bundle(&query);
            let prepared = plan.prepare().expect("prepare");
            let result = prepared.evaluate(&ev, &query).expect("evaluate");
            let result_bytes = bundle(&result);
            let dec = hepeft::ckks::Decryptor::new(&params, &sk).expect("decryptor");
            let got = plan
                .decrypt_result(&enc, &dec, &result, 1)
                .expect("decrypt");
            let rows: Vec<ndarray::ArrayView1<f64>> = inputs.iter().map(|a| a.row(0)).collect();
            let (want, _) = hepeft::model::reference::evaluate(&adapter, &rows).expect("twin");
            let got: Vec<f64> = got.row(0).to_vec();
            let prec = hepeft::ckks::PrecisionStats::relative_to_largest(&got, &want.to_vec());
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("pool");
            eprintln!(
            "head_selected/{name} logn={} depth={} key_switches={} ntts={} rotations={} bits={:.2} query_bytes={} result_bytes={} key_bytes={} ntt_path={} pre_rotate={}",
            params.log_n(),
            plan.depth(),
            plan.key_switches(),
            plan.ntts(),
            plan.report().iter().map(|r| r.rotations).sum::<usize>(),
            prec.min_bits,
            query_bytes,
            result_bytes,
            key_bytes,
            params.ntt_path().replace(' ', "_"),
            plan.options().pre_rotate,
        );
            eprint!("{}", plan.summary());
            g.bench_function(format!("{name}/N{}/threads1", params.log_n()), |b| {
                b.iter(|| pool.install(|| prepared.evaluate(&ev, black_box(&query))))
            });
        }
        if base.starts_with("a_") || base.starts_with("b_") {
            bench_flooded(&mut g, base, &adapter, &mut rng);
        }
    }
    g.finish();
}

/// Issue 14's flooding column: `NAME/flood40`, the parameters `params select --precision 16`
/// picks with the default 40-bit flooding (one query), timed as evaluate + sanitize (mask,
/// drop to the output level, re-randomize, flood), one thread; prints the same
/// `head_selected/...` line as the unflooded cases (bits: worst logit after flooding,
/// relative to the largest output).
fn bench_flooded(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    base: &str,
    adapter: &hepeft::model::Adapter,
    rng: &mut ChaCha20Rng,
) {
    use hepeft::plan::{FloodingConfig, SanitizeConfig};
    // as `params select` does: the adapter's calibrated error bound and logit size
    let req = hepeft::select::SelectRequest {
        precision_bits: 16,
        flooding: Some(FloodingConfig::default()),
        profile: hepeft::select::calibrate(adapter, None).expect("calibrate"),
        ..Default::default()
    };
    let sel = hepeft::select::select(adapter, &req).expect("select with flooding");
    let (params, plan) = (sel.params.clone(), sel.plan.clone());
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(rng);
    let pk = kg.gen_public_key(&sk, rng).expect("pk");
    let keys = kg
        .gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), rng)
        .expect("keys");
    let key_bytes = hepeft::ckks::to_bytes(&params, &keys)
        .expect("keys bytes")
        .len();
    let ev = Evaluator::with_keys(&params, Arc::new(keys)).expect("evaluator");
    let enc = Encoder::new(&params).expect("encoder");
    let inputs = zoo::uniform_inputs(rng, adapter, 1);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let query = plan
        .encrypt_query(&enc, EncryptionKey::Public(&pk), &views, rng)
        .expect("query");
    let bundle = |items: &[hepeft::ckks::Ciphertext]| {
        hepeft::ckks::to_bytes(
            &params,
            &hepeft::ckks::CiphertextBundle {
                digest: params.digest(),
                items: items.to_vec(),
            },
        )
        .expect("bundle bytes")
        .len()
    };
    let prepared = plan.prepare().expect("prepare");
    let cfg = SanitizeConfig {
        flooding: req.effective_flooding(),
    };
    let out = prepared.evaluate(&ev, &query).expect("evaluate");
    let (result, _) = plan.sanitize(&ev, out, &pk, &cfg, rng).expect("sanitize");
    let dec = hepeft::ckks::Decryptor::new(&params, &sk).expect("decryptor");
    let got = plan
        .decrypt_result(&enc, &dec, &result, 1)
        .expect("decrypt");
    let rows: Vec<ndarray::ArrayView1<f64>> = inputs.iter().map(|a| a.row(0)).collect();
    let (want, _) = hepeft::model::reference::evaluate(adapter, &rows).expect("twin");
    let prec =
        hepeft::ckks::PrecisionStats::relative_to_largest(&got.row(0).to_vec(), &want.to_vec());
    eprintln!(
        "head_selected/{base}/flood40 logn={} depth={} key_switches={} ntts={} rotations={} bits={:.2} query_bytes={} result_bytes={} key_bytes={}",
        params.log_n(),
        plan.depth(),
        plan.key_switches(),
        plan.ntts(),
        plan.report().iter().map(|r| r.rotations).sum::<usize>(),
        prec.min_bits,
        bundle(&query),
        bundle(&result),
        key_bytes,
    );
    eprint!("{}", plan.summary());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut r = ChaCha20Rng::seed_from_u64(9);
    g.bench_function(
        format!("{base}/flood40/N{}/threads1", params.log_n()),
        |b| {
            b.iter(|| {
                pool.install(|| {
                    let out = prepared.evaluate(&ev, black_box(&query))?;
                    plan.sanitize(&ev, out, &pk, &cfg, &mut r)
                })
            })
        },
    );
}

criterion_group!(benches, bench_heads, bench_selected);
criterion_main!(benches);
