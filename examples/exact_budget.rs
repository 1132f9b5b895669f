#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Where the exact path's error comes from, and what quantization options buy: the
//! 384 -> 64 -> ReLU -> 10 head of `cargo bench --bench exact` (same seed, same weights,
//! calibration and test features), planned with several `QuantizeOptions`, each printed
//! with its PBS count, argmax agreement of the integer twin with f64 (the encrypted run
//! equals the twin bit for bit) and the error budget by step
//! (`hepeft::plan::error_budget`). No encryption: runs in seconds.
//!
//! Run: `cargo run --release --example exact_budget [FILTER [FINE,...]]` (FINE: the fine
//! key's decomposition, `15x2` by default). With `--time` as a third argument, it also
//! generates keys for each fine decomposition, times 16 coarse and 16 fine bootstrappings
//! on one thread, and prints each variant's estimated server latency (head plus
//! sanitization of the logits, from its coarse and fine PBS counts; the keyswitch shared
//! by some pairs is counted twice, so the estimate is an upper bound).

use hepeft::exact::{DecompositionBaseLog, DecompositionLevelCount, ExactParams};
use hepeft::model::reference;
use hepeft::model::{
    evaluate_exact_fn_batch, Activation, ActivationFn, Adapter, AdapterBuilder, Op,
};
use hepeft::plan::exact::error_budget;
use hepeft::plan::{quantize, QuantizeOptions};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn relu_head(rng: &mut ChaCha20Rng, d: usize, h: usize, c: usize) -> Adapter {
    let mut m = |r: usize, k: usize| {
        Array2::from_shape_simple_fn((r, k), || rng.random_range(-1.0..1.0) / (k as f64).sqrt())
    };
    let (w1, w2) = (m(h, d), m(c, h));
    let b1 = Array1::from_shape_simple_fn(h, || rng.random_range(-0.1..0.1));
    let b2 = Array1::from_shape_simple_fn(c, || rng.random_range(-0.1..0.1));
    let mut b = AdapterBuilder::new();
    let x = b.input("x", d).unwrap();
    let y = b
        .node(
            "down",
            Op::Linear {
                weight: w1,
                bias: Some(b1),
            },
            &[x],
        )
        .unwrap();
    let y = b
        .node(
            "relu",
            Op::Poly(Activation::fit(ActivationFn::Relu, -4.0, 4.0, 7).unwrap()),
            &[y],
        )
        .unwrap();
    b.node(
        "head",
        Op::Linear {
            weight: w2,
            bias: Some(b2),
        },
        &[y],
    )
    .unwrap();
    b.build().unwrap()
}

/// Coarse and fine bootstrappings per sample: the head's (stages: `3J - 1` coarse, all on
/// the coarse key since `Evaluator::top_digits`; tables: 1 fine with 4-bit tables, 1 coarse
/// and 2 fine with 5-bit ones, 3 coarse and 4 fine with 6-bit ones, the extra bit included)
/// and the sanitization of its outputs.
fn pbs_split(plan: &hepeft::plan::QuantizedPlan) -> (u64, u64) {
    let (mut c, mut f) = (0u64, 0u64);
    for l in &plan.layers {
        let Some(a) = &l.activation else { continue };
        let n = l.out_dim as u64;
        let j = a.stages as u64;
        c += n * (3 * j).saturating_sub(1);
        match a.bits {
            4 => f += n,
            5 => {
                c += n;
                f += 2 * n;
            }
            _ => {
                c += 3 * n;
                f += 4 * n;
            }
        }
    }
    let digits = (plan.output_log_modulus() as u64 - 1).div_ceil(4);
    let out = plan.output_dim() as u64;
    c += out * digits;
    f += out * (digits + 1);
    (c, f)
}

/// Seconds per coarse and per fine bootstrapping (mean of 16 each, one thread).
fn time_pbs(params: &ExactParams) -> (f64, f64) {
    use hepeft::exact::{generate_keys, Evaluator, Lut};
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (client, compressed) = generate_keys(params, &mut rng).unwrap();
    let server = compressed.expand(params).unwrap();
    let ev = Evaluator::new(&server);
    let ct = client.encrypt(&[3], 5, &mut rng).unwrap().remove(0);
    let mut t = [0.0; 2];
    for (i, fine) in [false, true].into_iter().enumerate() {
        let lut = Lut::new(params, fine, |i| (i as u64) << 59);
        ev.pbs(&ct, &lut).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..16 {
            ev.pbs(&ct, &lut).unwrap();
        }
        t[i] = start.elapsed().as_secs_f64() / 16.0;
    }
    (t[0], t[1])
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    // the bench draws the two key seeds first
    let _: u128 = rng.random();
    let _: u128 = rng.random();
    let _small = relu_head(&mut rng, 384, 8, 10);
    let mlp = relu_head(&mut rng, 384, 64, 10);
    let uniform = |rng: &mut ChaCha20Rng, n: usize| {
        Array2::from_shape_simple_fn((n, 384), || rng.random_range(-1.0..=1.0))
    };
    let calib = uniform(&mut rng, 256);
    let test = uniform(&mut rng, 1000);
    let (f64_out, _) = evaluate_exact_fn_batch(&mlp, &[test.view()]).unwrap();
    let d = QuantizeOptions::default();
    let mut variants: Vec<(String, QuantizeOptions)> = vec![("default".into(), d.clone())];
    type Tweak = Box<dyn Fn(&mut QuantizeOptions)>;
    let extra: Vec<(&str, Tweak)> = vec![
        ("stages 3", Box::new(|o| o.stages = 3)),
        ("hidden_bits 6", Box::new(|o| o.hidden_bits = 6)),
        ("hidden_bits 7", Box::new(|o| o.hidden_bits = 7)),
        ("input_bits 6", Box::new(|o| o.input_bits = 6)),
        ("input_bits 7", Box::new(|o| o.input_bits = 7)),
        ("fill 0.85", Box::new(|o| o.range_fill = 0.85)),
        ("fill 1.0", Box::new(|o| o.range_fill = 1.0)),
        (
            "stages 3, input 6",
            Box::new(|o| {
                o.stages = 3;
                o.input_bits = 6;
            }),
        ),
        (
            "stages 3, fill 0.85",
            Box::new(|o| {
                o.stages = 3;
                o.range_fill = 0.85;
            }),
        ),
        (
            "stages 3, input 6, fill 0.85",
            Box::new(|o| {
                o.stages = 3;
                o.input_bits = 6;
                o.range_fill = 0.85;
            }),
        ),
        (
            "stages 3, input 6, fill 0.8",
            Box::new(|o| {
                o.stages = 3;
                o.input_bits = 6;
                o.range_fill = 0.8;
            }),
        ),
        (
            "stages 4, input 7",
            Box::new(|o| {
                o.stages = 4;
                o.input_bits = 7;
            }),
        ),
        (
            "stages 3, hidden 6, input 6",
            Box::new(|o| {
                o.stages = 3;
                o.hidden_bits = 6;
                o.input_bits = 6;
            }),
        ),
        (
            "stages 3, hidden 7, input 7",
            Box::new(|o| {
                o.stages = 3;
                o.hidden_bits = 7;
                o.input_bits = 7;
            }),
        ),
        ("act6", Box::new(|o| o.activation_bits = 6)),
        (
            "act6, hidden 6",
            Box::new(|o| {
                o.activation_bits = 6;
                o.hidden_bits = 6;
            }),
        ),
        (
            "act6, stages 3, input 6",
            Box::new(|o| {
                o.activation_bits = 6;
                o.stages = 3;
                o.input_bits = 6;
            }),
        ),
        (
            "act6, stages 3, input 6, hidden 6",
            Box::new(|o| {
                o.activation_bits = 6;
                o.stages = 3;
                o.input_bits = 6;
                o.hidden_bits = 6;
            }),
        ),
    ];
    for (name, f) in extra {
        let mut o = d.clone();
        f(&mut o);
        variants.push((name.to_string(), o));
    }
    let mut fines: Vec<(usize, usize)> = vec![(15, 2)];
    if let Some(f) = std::env::args().nth(2) {
        fines = f
            .split(',')
            .map(|bl| {
                let (b, l) = bl.split_once('x').unwrap();
                (b.parse().unwrap(), l.parse().unwrap())
            })
            .collect();
    }
    if let Some(filter) = std::env::args().nth(1) {
        variants.retain(|(n, _)| n.contains(&filter));
    }
    for (fb, fl) in fines {
        let params = ExactParams::vetted(
            hepeft::exact::DEFAULT_VETTED,
            DecompositionBaseLog(fb),
            DecompositionLevelCount(fl),
        )
        .unwrap();
        println!(
            "fine {fb}x{fl}: fine PBS std 2^{:.1}",
            hepeft::exact::noise::pbs_variance(&params, true).log2() / 2.0
        );
        let timed = (std::env::args().nth(3).as_deref() == Some("--time")).then(|| {
            let (tc, tf) = time_pbs(&params);
            println!(
                "    one thread: coarse PBS {:.1} ms, fine PBS {:.1} ms",
                tc * 1e3,
                tf * 1e3
            );
            (tc, tf)
        });
        for (name, opts) in variants.clone() {
            let plan = match quantize(&mlp, calib.view(), &opts, &params) {
                Ok(p) => p,
                Err(e) => {
                    println!("{name}: refused: {e}");
                    continue;
                }
            };
            let q = plan.forward_batch(test.view()).unwrap();
            let agree = reference::argmax_agreement(q.view(), f64_out.view()).unwrap();
            println!(
            "{name}: PBS {} | argmax agreement {:.3} | out weight bits {} | logits mod 2^{} | log2 p_fail/PBS {:.1} | overflows {:?}",
            plan.predicted_pbs(),
            agree as f64 / 1000.0,
            plan.report.output_weight_bits,
            plan.logits_log_modulus(),
            plan.report.max_log2_p_fail_pbs.unwrap_or(f64::NEG_INFINITY),
            plan.report.overflows
        );
            let (c, f) = pbs_split(&plan);
            print!(
                "    coarse / fine PBS with sanitization: {c} / {f} | cost model (head): {:.0} coarse-PBS units",
                hepeft::plan::exact::estimated_cost(&plan, &params)
            );
            if let Some((tc, tf)) = timed {
                print!(
                    " | estimated latency {:.2} s on one thread, {:.2} s on two",
                    c as f64 * tc + f as f64 * tf,
                    (c as f64 * tc + f as f64 * tf) / 2.0
                );
            }
            println!();
            for s in error_budget(&plan, &mlp, test.view()).unwrap() {
                println!(
                    "    {:<45} {:.3}  rel RMS {:.3}",
                    s.name, s.argmax_agreement, s.relative_rms
                );
            }
        }
    }
}
