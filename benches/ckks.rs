#![allow(clippy::expect_used, clippy::unwrap_used)]
//! CKKS primitives, single thread, at the chains of the SEAL comparison and at the fastest
//! presets. Run: `cargo bench --bench ckks` (see docs/BENCHMARKS.md and bench/compare.sh).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hepeft::ckks::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn literal(log_n: u32, log_q: Vec<u32>, log_p: Vec<u32>, log_scale: u32) -> CkksParamsLiteral {
    CkksParamsLiteral::new(log_n, log_q, log_p, log_scale)
}

/// (label, params): the SEAL chains (60-bit primes, AVX-512 without IFMA) and hepeft's
/// fastest presets (all primes below 2^50: AVX-512 IFMA).
fn configs() -> Vec<(&'static str, CkksParams)> {
    let ok = |r: hepeft::Result<CkksParams>| r.expect("benchmark parameters are valid");
    vec![
        (
            "N13_seal_chain",
            ok(CkksParams::from_literal(literal(
                13,
                vec![60, 40, 40],
                vec![60],
                40,
            ))),
        ),
        (
            "N14_seal_chain",
            ok(CkksParams::from_literal(literal(
                14,
                vec![60, 40, 40, 40, 40, 40, 40],
                vec![60],
                40,
            ))),
        ),
        (
            "N13_fast_QP212",
            ok(CkksParams::preset("CKKS_N13_QP212_128")),
        ),
        (
            "N14_fast_QP430",
            ok(CkksParams::preset("CKKS_N14_QP430_128")),
        ),
    ]
}

fn bench_ckks(c: &mut Criterion) {
    // Single thread: the global rayon pool gets one worker (ignore the error if a previous
    // group already set it).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    {
        for (label, params) in configs() {
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            let kg = KeyGenerator::new(&params);
            let sk = kg.gen_secret_key(&mut rng);
            let pk = kg.gen_public_key(&sk, &mut rng).expect("pk");
            let steps: Vec<i64> = (1..=8).collect();
            let elements: Vec<u64> = steps
                .iter()
                .map(|&s| galois_element_for_rotation(&params, s))
                .collect();
            let keys = Arc::new(
                kg.gen_evaluation_keys(&sk, &elements, true, &mut rng)
                    .expect("keys"),
            );
            let ev = Evaluator::with_keys(&params, keys).expect("evaluator");
            let enc = Encoder::new(&params).expect("encoder");
            let encryptor = Encryptor::new(&params, EncryptionKey::Public(&pk)).expect("encryptor");
            let decryptor = Decryptor::new(&params, &sk).expect("decryptor");
            let top = params.max_level();
            let values: Vec<f64> = (0..params.slots())
                .map(|i| ((i % 17) as f64 - 8.0) / 8.0)
                .collect();
            let pt = enc
                .encode(&values, top, params.default_scale())
                .expect("encode");
            let pt_w = enc
                .encode(&values, top, params.q()[top.get()] as f64)
                .expect("encode");
            let ct = encryptor.encrypt(&pt, &mut rng).expect("encrypt");
            let ct2 = encryptor.encrypt(&pt, &mut rng).expect("encrypt");

            let mut g = c.benchmark_group(label);
            g.sample_size(20)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));
            let ring = params.ring();
            for (name, idx) in [("ntt_fwd_q0", 0usize), ("ntt_fwd_q1", 1)] {
                let table = &ring.q_tables()[idx];
                let mut buf: Vec<u64> = (0..params.n() as u64)
                    .map(|i| i * 7 % table.modulus().value())
                    .collect();
                g.bench_function(BenchmarkId::new(name, table.modulus().bits()), |b| {
                    b.iter(|| table.forward(black_box(&mut buf)))
                });
            }
            g.bench_function("encode", |b| {
                b.iter(|| enc.encode(black_box(&values), top, params.default_scale()))
            });
            g.bench_function("encrypt_pk", |b| {
                b.iter(|| encryptor.encrypt(black_box(&pt), &mut rng))
            });
            g.bench_function("decrypt", |b| b.iter(|| decryptor.decrypt(black_box(&ct))));
            g.bench_function("decode", |b| b.iter(|| enc.decode(black_box(&pt))));
            g.bench_function("add", |b| b.iter(|| ev.add(black_box(&ct), &ct2)));
            g.bench_function("mul_plain_rescale", |b| {
                b.iter(|| {
                    let mut x = ev.mul_plain(black_box(&ct), &pt_w)?;
                    ev.rescale_assign(&mut x)?;
                    hepeft::Result::Ok(x)
                })
            });
            g.bench_function("mul_relin_rescale", |b| {
                b.iter(|| {
                    let mut x = ev.mul_relin(black_box(&ct), &ct2)?;
                    ev.rescale_assign(&mut x)?;
                    hepeft::Result::Ok(x)
                })
            });
            g.bench_function("rotate", |b| b.iter(|| ev.rotate(black_box(&ct), 1)));
            g.bench_function("rotate_hoisted_8", |b| {
                b.iter(|| ev.rotate_many(black_box(&ct), &steps))
            });
            g.bench_function("rotate_sequential_8", |b| {
                b.iter(|| {
                    steps
                        .iter()
                        .map(|&s| ev.rotate(black_box(&ct), s))
                        .collect::<Vec<_>>()
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench_ckks);
criterion_main!(benches);
