//! The rewriting passes of `plan::fuse` (linear chains fused across residuals and
//! concatenations, activation maps folded, degree-2 activations as one square) against the
//! UNFUSED plaintext twin, on random adapters of every op combination, in the latency and
//! batch layouts, at a small ring. Each case prints its depth against the unfused plan and
//! the lower bound, and its measured precision against the precision model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::{reference, zoo, Activation, ActivationFn, Adapter, AdapterBuilder, Op};
use hepeft::plan::sanitize::model_precision_bits;
use hepeft::plan::{depth_lower_bound, Mode, Plan, PlanOptions};
use ndarray::{Array1, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// TEST-ONLY (insecure at N = 2^12): 11 levels at scale 2^40, two special primes.
fn params() -> CkksParams {
    let lit = CkksParamsLiteral::new(12, [vec![50], vec![40; 11]].concat(), vec![50, 50], 40);
    CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap()
}

fn w(rng: &mut ChaCha20Rng, r: usize, c: usize) -> Array2<f64> {
    let b = 1.0 / (c as f64).sqrt();
    Array2::from_shape_simple_fn((r, c), || rng.random_range(-b..=b))
}

fn v(rng: &mut ChaCha20Rng, n: usize, b: f64) -> Array1<f64> {
    Array1::from_shape_simple_fn(n, || rng.random_range(-b..=b))
}

fn lin(
    b: &mut AdapterBuilder,
    rng: &mut ChaCha20Rng,
    x: hepeft::model::NodeRef,
    out: usize,
    inp: usize,
) -> hepeft::model::NodeRef {
    b.linear(x, w(rng, out, inp), Some(v(rng, out, 0.1)))
        .unwrap()
}

/// A random degree-2 activation on [-4, 4] with a leading coefficient of either sign.
fn quad(rng: &mut ChaCha20Rng) -> Activation {
    let c2 = rng.random_range(0.1..0.5) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    Activation::from_power_coeffs(
        &[rng.random_range(-0.2..0.2), rng.random_range(0.2..1.0), c2],
        -4.0,
        4.0,
    )
    .unwrap()
}

struct Case {
    label: &'static str,
    adapter: Adapter,
    /// The depth the fused plan must reach.
    depth: usize,
}

fn cases() -> Vec<Case> {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let rng = &mut rng;
    let mut out = Vec::new();

    // head (a) in small: linear, square, linear
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 48).unwrap();
    let h = lin(&mut b, rng, x, 16, 48);
    let a = b
        .poly(
            h,
            Activation::from_power_coeffs(&[0.0, 0.5, 0.25], -4.0, 4.0).unwrap(),
        )
        .unwrap();
    lin(&mut b, rng, a, 10, 16);
    out.push(Case {
        label: "linear-square-linear",
        adapter: b.build().unwrap(),
        depth: 3,
    });

    // residual around fused layers: bottleneck with a square, then a head
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 32).unwrap();
    let h = lin(&mut b, rng, x, 8, 32);
    let q = quad(rng);
    let a = b.poly(h, q).unwrap();
    let up = lin(&mut b, rng, a, 32, 8);
    let z = b.add(&[x, up]).unwrap();
    lin(&mut b, rng, z, 6, 32);
    out.push(Case {
        label: "bottleneck square + residual + head",
        adapter: b.build().unwrap(),
        depth: 3,
    });

    // concatenated taps, affine (folded norm), scale, square, concat of two branches
    let mut b = AdapterBuilder::new();
    let t0 = b.input("tap0", 24).unwrap();
    let t1 = b.input("tap1", 16).unwrap();
    let z = b.concat(&[t0, t1]).unwrap();
    let n = b.affine(z, v(rng, 40, 1.0), v(rng, 40, 0.1)).unwrap();
    let h1 = lin(&mut b, rng, n, 12, 40);
    let h1 = b.scale(h1, 0.7).unwrap();
    let q = quad(rng);
    let a1 = b.poly(h1, q).unwrap();
    let h2 = lin(&mut b, rng, t1, 12, 16);
    let cat = b.concat(&[a1, h2]).unwrap();
    lin(&mut b, rng, cat, 10, 24);
    out.push(Case {
        label: "taps + affine + scale + square + concat",
        adapter: b.build().unwrap(),
        depth: 3,
    });

    // LoRA with a dense branch, then a cubic activation and a head
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 64).unwrap();
    let d = lin(&mut b, rng, x, 16, 64);
    let (la, lb) = (w(rng, 4, 64), w(rng, 16, 4));
    let l = b.low_rank(x, la, lb, 2.0, None).unwrap();
    let s = b.add(&[d, l]).unwrap();
    let a = b
        .poly(
            s,
            Activation::fit(ActivationFn::Silu, -4.0, 4.0, 3).unwrap(),
        )
        .unwrap();
    lin(&mut b, rng, a, 10, 16);
    out.push(Case {
        label: "LoRA + dense branch + SiLU3 + head",
        adapter: b.build().unwrap(),
        depth: 4,
    });

    // activations that cannot be folded: on the input, and on a shared producer; a
    // degree-1 activation; a degree-4 activation
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 32).unwrap();
    let q = quad(rng);
    let a = b.poly(x, q).unwrap();
    let h = lin(&mut b, rng, a, 16, 32);
    let q = quad(rng);
    let a2 = b.poly(h, q).unwrap();
    let r = b.add(&[a2, h]).unwrap();
    let l1 = b
        .poly(
            r,
            Activation::from_power_coeffs(&[0.1, 0.8], -4.0, 4.0).unwrap(),
        )
        .unwrap();
    let h3 = lin(&mut b, rng, l1, 16, 16);
    let a4 = b
        .poly(
            h3,
            Activation::fit(ActivationFn::Gelu, -4.0, 4.0, 4).unwrap(),
        )
        .unwrap();
    lin(&mut b, rng, a4, 10, 16);
    // input square with its map in the consumer 1, linear 1, affine+square on a shared
    // producer read by an add 2, (degree 1 folds into the next linear) linear 1, degree 4
    // as Chebyshev 3, linear 1
    out.push(Case {
        label: "unfoldable squares, degree 1, degree 4",
        adapter: b.build().unwrap(),
        depth: 9,
    });

    // a square on the input and on a shared layer, each read by one dense layer: the map
    // goes to the consumer, one level each
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 24).unwrap();
    let q = quad(rng);
    let a = b.poly(x, q).unwrap();
    let h = lin(&mut b, rng, a, 16, 24);
    let q = quad(rng);
    let a2 = b.poly(h, q).unwrap();
    let h2 = lin(&mut b, rng, a2, 16, 16);
    let r = b.add(&[h2, h]).unwrap();
    lin(&mut b, rng, r, 10, 16);
    out.push(Case {
        label: "squares on an input and a shared layer",
        adapter: b.build().unwrap(),
        depth: 4,
    });

    // a power-of-two degree keeps ceil(log2(d + 1)) levels: one above the bound
    out.push(Case {
        label: "zoo bottleneck GELU8",
        adapter: zoo::bottleneck(rng, 32, 8, ActivationFn::Gelu, 8, (-4.0, 4.0), 10).unwrap(),
        depth: 6,
    });

    // the zoo's shapes
    out.push(Case {
        label: "zoo LoRA head",
        adapter: zoo::lora_head(rng, 64, 4, 10).unwrap(),
        depth: 1,
    });
    out.push(Case {
        label: "zoo two taps",
        adapter: zoo::two_tap(rng, 24, 40, 4, 10).unwrap(),
        depth: 1,
    });
    out.push(Case {
        label: "zoo bottleneck square",
        adapter: zoo::bottleneck(rng, 32, 8, ActivationFn::Square, 2, (-4.0, 4.0), 10).unwrap(),
        depth: 3,
    });
    out
}

/// Runs `adapter` encrypted (fused plan) on `samples` inputs; returns the worst absolute
/// error bits (unit-sized output, as the precision model counts) and the fused depth.
fn run(
    adapter: &Adapter,
    p: &CkksParams,
    mode: Mode,
    fold: bool,
    samples: usize,
    seed: u64,
    batch_pack: usize,
) -> (f64, Plan) {
    let mut r = rng(seed);
    let inputs: Vec<Array2<f64>> = zoo::uniform_inputs(&mut r, adapter, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, report) = reference::evaluate_batch(adapter, &views).unwrap();
    assert!(report.is_clean(), "inputs left an activation interval");
    let opts = PlanOptions {
        mode,
        fold_normalization: fold,
        batch_pack,
        ..Default::default()
    };
    let plan = Plan::compile(adapter, p, opts).unwrap();
    let got = run_plan_encrypted(&plan, &inputs, seed);
    let stats = PrecisionStats::compare(
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
    );
    (stats.min_bits, plan)
}

fn check_all(mode: Mode, samples: usize) {
    check_all_packed(mode, samples, 1);
}

/// [`check_all`] with `batch_pack` input features per batch query ciphertext.
fn check_all_packed(mode: Mode, samples: usize, batch_pack: usize) {
    let p = params();
    let predicted = model_precision_bits(p.default_scale().log2().round(), p.log_n());
    for (k, case) in cases().into_iter().enumerate() {
        let seed = 1000 + 10 * k as u64;
        let unfused_opts = PlanOptions {
            mode,
            fold_normalization: false,
            ..Default::default()
        };
        let unfused_depth = hepeft::select::required_depth(&case.adapter, unfused_opts).unwrap();
        let (bits, plan) = run(&case.adapter, &p, mode, true, samples, seed, batch_pack);
        // the unfused plan, when it fits the test chain, on the same inputs
        let unfused = if unfused_depth <= p.max_level().get() {
            let (b, u) = run(&case.adapter, &p, mode, false, samples, seed, batch_pack);
            format!("{b:.1} bits, {} key switches", u.key_switches())
        } else {
            "does not fit".to_string()
        };
        let bound = depth_lower_bound(&case.adapter);
        println!(
            "{mode:?} pack {batch_pack} {:<42} depth {} (unfused {unfused_depth}, lower bound {bound}), {} key switches: {bits:.1} bits, predicted {predicted:.1}; unfused: {unfused}",
            case.label,
            plan.depth(),
            plan.key_switches(),
        );
        assert_eq!(plan.depth(), case.depth, "{}: depth", case.label);
        if mode == Mode::Batch {
            let want: usize = case
                .adapter
                .input_dims()
                .iter()
                .map(|d| d.div_ceil(batch_pack))
                .sum();
            assert_eq!(plan.input_ciphertexts(), want, "{}: query size", case.label);
        }
        assert!(
            plan.depth() >= bound,
            "{}: below the lower bound",
            case.label
        );
        assert!(plan.depth() <= unfused_depth, "{}: deeper", case.label);
        assert_eq!(plan.depth_lower_bound(), bound);
        assert!(
            bits >= predicted,
            "{}: measured {bits:.1} bits < predicted {predicted:.1}",
            case.label
        );
    }
}

#[test]
fn fused_plans_agree_with_the_unfused_twin_latency() {
    check_all(Mode::Latency, 2);
}

#[test]
fn fused_plans_agree_with_the_unfused_twin_batch() {
    check_all(Mode::Batch, 16);
}

/// Packed batch queries (several input features per ciphertext, unpacked by the server with
/// rotations): every op combination agrees with the twin as the unpacked layout does, at
/// the same depth, with `ceil(d / g)` query ciphertexts per input.
#[test]
fn fused_plans_agree_with_the_unfused_twin_packed_batch() {
    check_all_packed(Mode::Batch, 16, 4);
    check_all_packed(Mode::Batch, 3, 16);
}

#[test]
fn packed_batch_options_are_checked() {
    let p = params();
    let a = zoo::square_mlp(&mut rng(3), 40, 8, 4).unwrap();
    let opts = |batch_pack| PlanOptions {
        mode: Mode::Batch,
        batch_pack,
        ..Default::default()
    };
    for bad in [0, 3, 32] {
        let e = Plan::compile(&a, &p, opts(bad)).unwrap_err().to_string();
        assert!(e.contains("power of two from 1 to 16"), "{bad}: {e}");
    }
    let unpacked = Plan::compile(&a, &p, opts(1)).unwrap();
    let packed = Plan::compile(&a, &p, opts(8)).unwrap();
    assert_eq!(unpacked.samples_per_query(), p.slots());
    assert_eq!(packed.samples_per_query(), p.slots() / 8);
    assert_eq!(
        (unpacked.input_ciphertexts(), packed.input_ciphertexts()),
        (40, 5)
    );
    assert_ne!(unpacked.structure_digest(), packed.structure_digest());
    assert_eq!(packed.rotation_steps().len(), 7);
    assert_eq!(packed.depth(), unpacked.depth());
    // the latency layout ignores the option (and keeps its digest)
    let lat = |batch_pack| {
        Plan::compile(
            &a,
            &p,
            PlanOptions {
                batch_pack,
                ..Default::default()
            },
        )
        .unwrap()
        .structure_digest()
    };
    assert_eq!(lat(1), lat(8));
    // one sample too many for the packed blocks is refused at encoding
    let f = Fixture::new(p.clone(), 7);
    let too_many = ndarray::Array2::zeros((p.slots() / 8 + 1, 40));
    let e = packed
        .encode_query(&f.encoder, &[too_many.view()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("packed batch-mode query"), "{e}");
}

#[test]
fn depth_lower_bounds_of_the_benchmark_shapes() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sq = Activation::from_power_coeffs(&[0.0, 0.5, 0.25], -4.0, 4.0).unwrap();
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 768).unwrap();
    let h = lin(&mut b, &mut rng, x, 64, 768);
    let a = b.poly(h, sq).unwrap();
    lin(&mut b, &mut rng, a, 100, 64);
    let head_a = b.build().unwrap();
    assert_eq!(depth_lower_bound(&head_a), 3);
    let bn = zoo::bottleneck(&mut rng, 384, 32, ActivationFn::Square, 2, (-4.0, 4.0), 2).unwrap();
    assert_eq!(depth_lower_bound(&bn), 3);
    let g7 = zoo::bottleneck(&mut rng, 64, 8, ActivationFn::Gelu, 7, (-4.0, 4.0), 2).unwrap();
    assert_eq!(depth_lower_bound(&g7), 5);
    let lora = zoo::lora_head(&mut rng, 64, 4, 10).unwrap();
    assert_eq!(depth_lower_bound(&lora), 1);
    let p = params();
    for (a, want) in [(&head_a, 3), (&bn, 3), (&g7, 5), (&lora, 1)] {
        let plan = Plan::compile(a, &p, PlanOptions::default()).unwrap();
        assert_eq!(plan.depth(), want, "{}", plan.summary());
        assert!(plan.summary().contains(&format!("lower bound {want}")));
    }
}

#[test]
fn a_degree_two_activation_without_leading_coefficient_is_refused_with_the_fix() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 8).unwrap();
    let h = lin(&mut b, &mut rng, x, 4, 8);
    let act = Activation::from_chebyshev(vec![0.1, 0.5, 0.0], -4.0, 4.0).unwrap();
    b.node("act", Op::Poly(act), &[h]).unwrap();
    let a = b.build().unwrap();
    let err = Plan::compile(&a, &params(), PlanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("degree 1"), "{err}");
    // the unfused plan still runs it
    assert!(Plan::compile(
        &a,
        &params(),
        PlanOptions {
            fold_normalization: false,
            ..Default::default()
        }
    )
    .is_ok());
}

/// Evaluates one query of `plan` (no sanitization) and returns every slot of each result
/// ciphertext, decrypted.
fn raw_slots(plan: &Plan, inputs: &[Array2<f64>], seed: u64) -> Vec<Vec<f64>> {
    let p = plan.params();
    let f = Fixture::new(p.clone(), seed);
    let keys = KeyGenerator::new(p)
        .gen_evaluation_keys(
            &f.sk,
            &plan.galois_elements(),
            plan.needs_relin(),
            &mut rng(seed + 1),
        )
        .unwrap();
    let ev = Evaluator::with_keys(p, std::sync::Arc::new(keys)).unwrap();
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let q = plan
        .encrypt_query(
            &f.encoder,
            EncryptionKey::Public(&f.pk),
            &views,
            &mut rng(seed + 2),
        )
        .unwrap();
    let out = plan.prepare().unwrap().evaluate(&ev, &q).unwrap();
    out.iter().map(|c| f.decrypt(c)).collect()
}

/// The output mask folded into the final dense layer (`Plan::output_mask_folded`): the
/// fused plan's outputs equal the unfused twin's (fold off: the mask is a separate product)
/// and the plaintext reference, its non-output slots are zero instead of copies, and
/// sanitization (with flooding) needs no level for the mask, so the adapter runs with
/// flooding on a chain of exactly its depth. A final layer with wide blocks keeps the
/// separate mask.
#[test]
fn the_output_mask_folds_into_a_final_dense_layer() {
    use hepeft::plan::{FloodingConfig, SanitizeConfig};
    let a = zoo::square_mlp(&mut rng(41), 64, 16, 10).unwrap();
    let inputs = zoo::uniform_inputs(&mut rng(42), &a, 1);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|x| x.view()).collect();
    let (want, _) = reference::evaluate_batch(&a, &views).unwrap();
    let want: Vec<f64> = want.iter().copied().collect();
    let p = params();
    let predicted = model_precision_bits(p.default_scale().log2().round(), p.log_n());
    let compile = |p: &CkksParams, fold: bool| {
        Plan::compile(
            &a,
            p,
            PlanOptions {
                fold_normalization: fold,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let fused = compile(&p, true);
    let twin = compile(&p, false);
    assert!(fused.output_mask_folded());
    assert!(!twin.output_mask_folded());
    let (f_slots, t_slots) = (
        raw_slots(&fused, &inputs, 50),
        raw_slots(&twin, &inputs, 60),
    );
    let dim = fused.output_dim();
    for (name, slots) in [("fused", &f_slots[0]), ("unfused twin", &t_slots[0])] {
        let s = PrecisionStats::compare(&slots[..dim], &want);
        println!("{name}: {:.1} bits (predicted {predicted:.1})", s.min_bits);
        assert!(s.min_bits >= predicted, "{name}: {:.1} bits", s.min_bits);
    }
    // fused non-output slots: zero up to the evaluation noise; the twin's hold copies
    let gap = f_slots[0][dim..].iter().fold(0f64, |m, v| m.max(v.abs()));
    println!("fused: largest non-output slot {:.2e}", gap);
    assert!(gap < (-predicted).exp2(), "non-output slot {gap:e}");
    let period = fused.output_segments()[0].period;
    assert!(
        (t_slots[0][period] - want[0]).abs() < 1e-4,
        "twin keeps copies"
    );

    // on a chain of exactly the adapter's depth, sanitization with flooding still masks
    let depth = fused.depth();
    let exact = CkksParams::from_literal(
        CkksParamsLiteral::new(12, [vec![50], vec![40; depth]].concat(), vec![50, 50], 40)
            .with_security(Security::Unchecked),
    )
    .unwrap();
    let plan = compile(&exact, true);
    assert_eq!(plan.output_level().get(), 0);
    let f = FloodingConfig::new(8, 1);
    let cfg = SanitizeConfig { flooding: Some(f) };
    let fx = Fixture::new(exact.clone(), 70);
    let keys = KeyGenerator::new(&exact)
        .gen_evaluation_keys(&fx.sk, &plan.galois_elements(), true, &mut rng(71))
        .unwrap();
    let ev = Evaluator::with_keys(&exact, std::sync::Arc::new(keys)).unwrap();
    let q = plan
        .encrypt_query(
            &fx.encoder,
            EncryptionKey::Public(&fx.pk),
            &views,
            &mut rng(72),
        )
        .unwrap();
    let out = plan.prepare().unwrap().evaluate(&ev, &q).unwrap();
    let (res, report) = plan.sanitize(&ev, out, &fx.pk, &cfg, &mut rng(73)).unwrap();
    assert!(report.masked, "{}", report.mask_note);
    assert!(report.mask_note.contains("folded"), "{}", report.mask_note);
    let fr = report.flooding.unwrap();
    assert!((fr.precision_bits_after - plan.flooded_precision_bits(&f)).abs() < 1e-9);
    let got = fx.decrypt(&res[0]);
    let s = PrecisionStats::compare(&got[..dim], &want);
    println!(
        "exact-depth chain, 8-bit flooding: {:.1} bits, predicted {:.1}",
        s.min_bits, fr.precision_bits_after
    );
    assert!(s.min_bits >= fr.precision_bits_after);

    // a wide final layer (32 -> 4: rotate-and-sum after the products) keeps the mask product
    let wide = zoo::square_mlp(&mut rng(43), 64, 32, 4).unwrap();
    let plan = Plan::compile(&wide, &p, PlanOptions::default()).unwrap();
    assert!(!plan.output_mask_folded());
}
