//! Batch layout of token-level adapters (issue 15, `hepeft::plan::token::TokenBatchPlan`):
//! many samples per ciphertext, each decrypted sample against its `f64` twin at small,
//! insecure sizes (precision in bits relative to the largest output, `--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::ckks::*;
use hepeft::model::reference::argmax;
use hepeft::model::token::{evaluate_tokens, random_owc, uniform_tokens, OwcShape, TokenAdapter};
use hepeft::plan::token::{fuse_tokens, TokenBatchPlan, TokenPlan};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

/// N = 2^log_n, 40-bit primes over a 55-bit base (insecure sizes, tests only).
fn params(log_n: u32, levels: usize) -> CkksParams {
    let k = levels.div_ceil(8).max(1);
    let lit = CkksParamsLiteral::new(
        log_n,
        [vec![55], vec![40; levels]].concat(),
        vec![56; k],
        40,
    );
    CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap()
}

/// Encrypts `samples` into one batch of `batch`, evaluates, decrypts; checks every sample
/// against the twin (bits and argmax) and returns the worst bits.
fn run_batch(
    label: &str,
    ad: &TokenAdapter,
    params: &CkksParams,
    batch: usize,
    samples: &[Vec<Array2<f64>>],
) -> f64 {
    let plan = TokenBatchPlan::compile(ad, params, batch).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let kg = KeyGenerator::new(params);
    let sk = kg.gen_secret_key(&mut rng);
    let keys = kg
        .gen_evaluation_keys(
            &sk,
            &plan.galois_elements(params),
            plan.needs_relin(),
            &mut rng,
        )
        .unwrap();
    let encoder = Encoder::new(params).unwrap();
    let enc = Encryptor::new(params, EncryptionKey::Secret(&sk)).unwrap();
    let dec = Decryptor::new(params, &sk).unwrap();
    let ev = Evaluator::with_keys(params, Arc::new(keys)).unwrap();
    let cts = plan
        .encrypt_inputs(ad, &encoder, &enc, samples, &mut rng)
        .unwrap();
    assert_eq!(
        cts.iter().map(Vec::len).sum::<usize>(),
        plan.query_ciphertexts(ad)
    );
    let out = plan.evaluate(ad, &ev, &encoder, &cts).unwrap();
    assert_eq!(out.len(), plan.result_ciphertexts());
    assert_eq!(out[0].level(), plan.output_level());
    let got = plan
        .decrypt_output(&encoder, &dec, &out, samples.len())
        .unwrap();
    let cost = plan.cost(ad);
    let mut worst = f64::INFINITY;
    for (j, (g, xs)) in got.iter().zip(samples).enumerate() {
        let want = evaluate_tokens(ad, xs).unwrap();
        assert!(want.outside.is_empty(), "{label} sample {j}");
        let gv: Vec<f64> = g.iter().copied().collect();
        let wv: Vec<f64> = want.output.iter().copied().collect();
        let bits = PrecisionStats::relative_to_largest(&gv, &wv).min_bits;
        worst = worst.min(bits);
        assert_eq!(
            argmax(g.row(0)),
            argmax(want.output.row(0)),
            "{label} sample {j}: {gv:?} vs {wv:?}"
        );
    }
    println!(
        "{label}: batch {batch} ({} encrypted), {} column blocks, {} rotations and {} attention \
         products per batch, worst {worst:.1} bits over the samples",
        samples.len(),
        plan.column_blocks(),
        cost.rotations,
        cost.attention_products
    );
    worst
}

#[test]
fn owc_block_batch_matches_the_twin_on_every_sample() {
    // T = 12 pads to 16 (padding tokens inside each block), R = 16 >= dh: one chunk per head
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let sh = OwcShape {
        tokens: 12,
        d: 16,
        r: 8,
        heads: 2,
        taps: 1,
        classes: 3,
    };
    let ad = random_owc(&mut rng, sh).unwrap();
    let p = params(12, TokenPlan::depth_of(&ad));
    let samples = uniform_tokens(&mut rng, &ad, 3);
    let bits = run_batch("OWC s=1 T=12 H=2, 3 samples", &ad, &p, 3, &samples);
    assert!(bits > 14.0, "{bits}");
}

#[test]
fn fused_two_tap_batch_with_chunked_heads_matches_the_twin() {
    // two taps, H = 1 (dh = 4) at N = 2^11: a batch of 20 pads to 32 blocks of 2T' = 16
    // slots, R = 2 column blocks, so each head takes 2 chunks; 17 samples encrypted
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let sh = OwcShape {
        tokens: 8,
        d: 8,
        r: 4,
        heads: 1,
        taps: 2,
        classes: 3,
    };
    let ad = fuse_tokens(&random_owc(&mut rng, sh).unwrap()).unwrap();
    let p = params(11, TokenPlan::depth_of(&ad));
    let plan = TokenBatchPlan::compile(&ad, &p, 20).unwrap();
    assert_eq!(plan.column_blocks(), 2);
    let samples = uniform_tokens(&mut rng, &ad, 17);
    let bits = run_batch("fused OWC s=2 T=8 H=1, 17 of 20", &ad, &p, 20, &samples);
    assert!(bits > 12.0, "{bits}");
}

#[test]
fn full_batch_one_column_block_matches_the_twin() {
    // the largest batch N / (4T') = 32 at N = 2^10, T = 8: R = 1, one (c, e) pair per
    // ciphertext
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let sh = OwcShape {
        tokens: 8,
        d: 4,
        r: 4,
        heads: 2,
        taps: 1,
        classes: 2,
    };
    let ad = fuse_tokens(&random_owc(&mut rng, sh).unwrap()).unwrap();
    let p = params(10, TokenPlan::depth_of(&ad));
    let cap = TokenBatchPlan::capacity(&ad, &p);
    assert_eq!(cap, 32);
    assert_eq!(
        TokenBatchPlan::compile(&ad, &p, cap)
            .unwrap()
            .column_blocks(),
        1
    );
    let samples = uniform_tokens(&mut rng, &ad, cap);
    let bits = run_batch("fused OWC s=1 T=8, full batch", &ad, &p, cap, &samples);
    assert!(bits > 12.0, "{bits}");
}

#[test]
fn batch_sizes_outside_the_capacity_are_refused_with_a_reason() {
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let sh = OwcShape {
        tokens: 8,
        d: 4,
        r: 4,
        heads: 1,
        taps: 1,
        classes: 2,
    };
    let ad = random_owc(&mut rng, sh).unwrap();
    let p = params(10, TokenPlan::depth_of(&ad));
    for b in [0, 33] {
        let e = TokenBatchPlan::compile(&ad, &p, b).unwrap_err().to_string();
        assert!(e.contains("1..=32"), "{e}");
    }
}

#[test]
fn batch_cost_per_sample_at_minilm_sizes() {
    // key-switching counts only (no encryption): MiniLM sizes, s = 1, H = 2, r = 32, T = 32
    // at N = 2^15 with the depth of the fused block
    let mut rng = ChaCha20Rng::seed_from_u64(25);
    let sh = OwcShape {
        tokens: 32,
        d: 384,
        r: 32,
        heads: 2,
        taps: 1,
        classes: 2,
    };
    let ad = fuse_tokens(&random_owc(&mut rng, sh).unwrap()).unwrap();
    let p = params(15, TokenPlan::depth_of(&ad));
    let lat = TokenPlan::compile(&ad, &p).unwrap().cost(&ad);
    for b in [16, 64, 256] {
        let plan = TokenBatchPlan::compile(&ad, &p, b).unwrap();
        let c = plan.cost(&ad);
        println!(
            "batch {b}: R = {}, {} rotations + {} attention products per batch, {:.1} + {:.2} per \
             sample (latency: {} + {}); query {} ciphertexts",
            plan.column_blocks(),
            c.rotations,
            c.attention_products,
            c.rotations as f64 / b as f64,
            c.attention_products as f64 / b as f64,
            lat.rotations,
            lat.attention_products,
            plan.query_ciphertexts(&ad)
        );
        assert!(c.rotations < lat.rotations * b, "batch {b}");
    }
}

#[test]
fn sanitized_batch_keeps_only_the_outputs() {
    use hepeft::plan::{FloodingConfig, SanitizeConfig};
    // a 55-bit scale over a 30-bit output prime (the chain select_token_flooded builds),
    // one level more than the adapter for the mask
    let mut rng = ChaCha20Rng::seed_from_u64(26);
    let sh = OwcShape {
        tokens: 8,
        d: 8,
        r: 4,
        heads: 1,
        taps: 1,
        classes: 3,
    };
    let ad = fuse_tokens(&random_owc(&mut rng, sh).unwrap()).unwrap();
    let depth = TokenPlan::depth_of(&ad);
    let lit = CkksParamsLiteral::new(
        11,
        [vec![30, 55], vec![55; depth + 1]].concat(),
        vec![60; 3],
        55,
    );
    let p = CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap();
    let batch = 5;
    let plan = TokenBatchPlan::compile(&ad, &p, batch).unwrap();
    let kg = KeyGenerator::new(&p);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng).unwrap();
    let keys = kg
        .gen_evaluation_keys(&sk, &plan.galois_elements(&p), plan.needs_relin(), &mut rng)
        .unwrap();
    let encoder = Encoder::new(&p).unwrap();
    let enc = Encryptor::new(&p, EncryptionKey::Secret(&sk)).unwrap();
    let dec = Decryptor::new(&p, &sk).unwrap();
    let ev = Evaluator::with_keys(&p, Arc::new(keys)).unwrap();
    let samples = uniform_tokens(&mut rng, &ad, batch);
    let cts = plan
        .encrypt_inputs(&ad, &encoder, &enc, &samples, &mut rng)
        .unwrap();
    let out = plan.evaluate(&ad, &ev, &encoder, &cts).unwrap();
    let want: Vec<Array2<f64>> = samples
        .iter()
        .map(|xs| evaluate_tokens(&ad, xs).unwrap().output)
        .collect();
    let period = ad.tokens().next_power_of_two();
    // without flooding: every slot but the outputs is zero
    let (clean, rep) = plan
        .sanitize(
            &ev,
            out.clone(),
            &pk,
            &SanitizeConfig::without_flooding(),
            &mut rng,
        )
        .unwrap();
    assert!(rep.masked && rep.flooding.is_none());
    let mut gap = 0f64;
    for (c, ct) in clean.iter().enumerate() {
        assert_eq!(ct.level(), p.output_floor_level());
        let v = encoder.decode(&dec.decrypt(ct).unwrap()).unwrap();
        for (s, x) in v.iter().enumerate() {
            let (t, j) = (s % (2 * period), s / (2 * period));
            if t == 0 && j < batch {
                assert!((x - want[j][[0, c]]).abs() < 1e-4, "sample {j} class {c}");
            } else {
                gap = gap.max(x.abs());
            }
        }
    }
    println!("sanitized batch: largest non-output slot {gap:.2e}");
    assert!(gap < 1e-6, "{gap}");
    // flooded (40 bits): argmax kept
    let (flooded, rep) = plan
        .sanitize(
            &ev,
            out,
            &pk,
            &SanitizeConfig {
                flooding: Some(FloodingConfig::new(40, 1)),
            },
            &mut rng,
        )
        .unwrap();
    assert!(rep.flooding.is_some());
    let got = plan
        .decrypt_output(&encoder, &dec, &flooded, batch)
        .unwrap();
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        let gv: Vec<f64> = g.iter().copied().collect();
        let wv: Vec<f64> = w.iter().copied().collect();
        let bits = PrecisionStats::relative_to_largest(&gv, &wv).min_bits;
        println!("flooded batch sample {j}: {bits:.1} bits");
        assert_eq!(argmax(g.row(0)), argmax(w.row(0)), "sample {j}");
    }
}
