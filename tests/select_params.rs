//! Parameter selection: secure choices that run, refusals with reasons.

use hepeft::ckks::Security;
use hepeft::model::{zoo, ActivationFn};
use hepeft::select::{required_depth, select, SelectRequest};
use rand::SeedableRng;

#[test]
fn selects_secure_parameters_with_enough_depth() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let lora = zoo::lora_head(&mut rng, 768, 8, 10).unwrap();
    let s = select(&lora, &SelectRequest::default()).unwrap();
    println!("{}", s.report.to_text());
    // the LoRA product fuses with the head: one dense map, depth 1
    assert_eq!(s.report.depth, 1);
    assert_eq!(s.report.depth_lower_bound, 1);
    assert_eq!(
        s.params.log_n(),
        13,
        "a depth-1 head at 16 bits fits N = 2^13"
    );
    assert!(s.report.log_qp <= s.report.max_log_qp as f64);
    assert!(s.report.predicted_precision_bits >= 16.0);

    let bottleneck =
        zoo::bottleneck(&mut rng, 768, 64, ActivationFn::Gelu, 7, (-4.0, 4.0), 100).unwrap();
    assert_eq!(
        required_depth(&bottleneck, Default::default()).unwrap(),
        5,
        "linear + GELU7 (3) + (up and head fused across the residual)"
    );
    let s = select(&bottleneck, &SelectRequest::default()).unwrap();
    println!("{}", s.report.to_text());
    assert!(s.params.log_n() >= 14);
    assert_eq!(s.plan.depth(), 5);
    assert_eq!(s.report.depth_lower_bound, 5);
}

#[test]
fn refuses_what_cannot_be_reached() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let lora = zoo::lora_head(&mut rng, 64, 4, 10).unwrap();
    // too much precision for a 60-bit scale
    let err = select(
        &lora,
        &SelectRequest {
            precision_bits: 50,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("precision"), "{err}");
    // the unchecked opt-out is not a security level
    let err = select(
        &lora,
        &SelectRequest {
            security: Security::Unchecked,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("security"), "{err}");
    // 256-bit security with a deep adapter still works, but on a larger ring
    let s = select(
        &lora,
        &SelectRequest {
            security: Security::Bits256,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.params.log_n() >= 14, "{}", s.report.to_text());
}

#[test]
fn the_selected_parameters_deliver_the_predicted_precision() {
    use hepeft::ckks::*;
    use hepeft::model::reference;
    use ndarray::ArrayView2;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let lora = zoo::lora_head(&mut rng, 768, 8, 10).unwrap();
    let s = select(&lora, &SelectRequest::default()).unwrap();
    let (params, plan) = (&s.params, &s.plan);
    let inputs = zoo::uniform_inputs(&mut rng, &lora, 1);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(&lora, &views).unwrap();
    let kg = KeyGenerator::new(params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng).unwrap();
    let keys = kg
        .gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), &mut rng)
        .unwrap();
    let ev = Evaluator::with_keys(params, std::sync::Arc::new(keys)).unwrap();
    let enc = Encoder::new(params).unwrap();
    let q = plan
        .encrypt_query(&enc, EncryptionKey::Public(&pk), &views, &mut rng)
        .unwrap();
    let out = plan.prepare().unwrap().evaluate(&ev, &q).unwrap();
    let got = plan
        .decrypt_result(&enc, &Decryptor::new(params, &sk).unwrap(), &out, 1)
        .unwrap();
    let got: Vec<f64> = got.iter().copied().collect();
    let want: Vec<f64> = want.iter().copied().collect();
    let bits = PrecisionStats::relative_to_largest(&got, &want).min_bits;
    println!(
        "selected N = 2^{}: measured {bits:.1} bits, predicted {:.1}",
        params.log_n(),
        s.report.predicted_precision_bits
    );
    assert!(bits >= 16.0, "measured {bits:.1} bits");
}

/// `params select` accounts for noise flooding: the default (40 bits, 16 bits of precision)
/// takes a scale near 2^57 with a prime reserved for the output, 30 bits after 40-bit
/// flooding would need a scale beyond 2^60 and is refused with the reason; at 20 bits,
/// 8 bits of precision are chosen and then measured on sanitized (masked, re-randomized,
/// flooded) results.
#[test]
fn selection_accounts_for_noise_flooding() {
    use hepeft::ckks::*;
    use hepeft::model::reference;
    use hepeft::plan::{FloodingConfig, SanitizeConfig};
    use ndarray::ArrayView2;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let lora = zoo::lora_head(&mut rng, 64, 4, 10).unwrap();
    let s = select(
        &lora,
        &SelectRequest {
            flooding: Some(FloodingConfig::default()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.report.flooded_precision_bits.unwrap() >= 16.0);
    assert!(s.report.log_scale > 50, "{}", s.report.to_text());
    assert_eq!(s.params.output_floor_level(), 1, "{}", s.report.to_text());
    let err = select(
        &lora,
        &SelectRequest {
            precision_bits: 30,
            flooding: Some(FloodingConfig::default()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("flooding"), "{err}");
    assert!(err.contains("at most 2^60"), "{err}");

    let flooding = FloodingConfig::new(20, 1);
    let s = select(
        &lora,
        &SelectRequest {
            precision_bits: 8,
            flooding: Some(flooding),
            ..Default::default()
        },
    )
    .unwrap();
    let predicted = s.report.flooded_precision_bits.unwrap();
    assert!(predicted >= 8.0, "{}", s.report.to_text());
    let (params, plan) = (&s.params, &s.plan);
    assert!(plan.output_level() >= 1, "a level is reserved for the mask");
    let kg = KeyGenerator::new(params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng).unwrap();
    let keys = kg
        .gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), &mut rng)
        .unwrap();
    let ev = Evaluator::with_keys(params, std::sync::Arc::new(keys)).unwrap();
    let enc = Encoder::new(params).unwrap();
    let prepared = plan.prepare().unwrap();
    let dec = Decryptor::new(params, &sk).unwrap();
    let mut worst = f64::INFINITY;
    for _ in 0..4 {
        let inputs = zoo::uniform_inputs(&mut rng, &lora, 1);
        let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
        let (want, _) = reference::evaluate_batch(&lora, &views).unwrap();
        let q = plan
            .encrypt_query(&enc, EncryptionKey::Public(&pk), &views, &mut rng)
            .unwrap();
        let out = prepared.evaluate(&ev, &q).unwrap();
        let cfg = SanitizeConfig {
            flooding: Some(flooding),
        };
        let (clean, rep) = plan.sanitize(&ev, out, &pk, &cfg, &mut rng).unwrap();
        let f = rep.flooding.unwrap();
        assert!((f.precision_bits_after - predicted).abs() < 1e-9);
        let got = plan.decrypt_result(&enc, &dec, &clean, 1).unwrap();
        let got: Vec<f64> = got.iter().copied().collect();
        let want: Vec<f64> = want.iter().copied().collect();
        // Absolute error against a unit-sized output, as the precision model counts.
        let bits = -got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max)
            .log2();
        worst = worst.min(bits);
    }
    println!(
        "flooding 20 bits: selected N = 2^{} scale 2^{}: predicted {predicted:.1} bits (3 std per slot), worst measured {worst:.1} bits (max over 4 x 10 logits)",
        params.log_n(),
        s.report.log_scale
    );
    // The prediction counts three standard deviations; the largest of 40 Gaussian draws is
    // below that with probability about 0.9, and below 4 (0.4 bits more) almost surely.
    assert!(worst >= predicted - 0.5, "measured {worst:.1} bits");
}

/// A batch selection for fewer samples than slots names the packing that fits them; a
/// packed request, or samples that fill the slots, get no hint.
#[test]
fn batch_selection_names_the_packing_that_fits_the_samples() {
    use hepeft::plan::{Mode, PlanOptions};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let head = zoo::square_mlp(&mut rng, 256, 16, 10).unwrap();
    let req = |samples: usize, batch_pack: usize| SelectRequest {
        options: PlanOptions {
            mode: Mode::Batch,
            batch_pack,
            ..Default::default()
        },
        batch: Some(samples),
        flooding: None,
        ..Default::default()
    };
    let s = select(&head, &req(1000, 1)).unwrap();
    let slots = s.params.slots();
    let hint = s.report.batch_pack_hint.expect("a hint for 1000 samples");
    // the largest packing whose blocks still hold the 1000 samples
    assert!(hint > 1 && 1000 <= slots / hint && 1000 > slots / (2 * hint));
    assert!(s.report.to_text().contains(&format!("--batch-pack {hint}")));
    assert_eq!(
        select(&head, &req(slots, 1))
            .unwrap()
            .report
            .batch_pack_hint,
        None
    );
    assert_eq!(
        select(&head, &req(10, 2)).unwrap().report.batch_pack_hint,
        None
    );
    // ten samples: capped at the most features a ciphertext packs
    assert_eq!(
        select(&head, &req(10, 1)).unwrap().report.batch_pack_hint,
        Some(hepeft::plan::MAX_BATCH_PACK)
    );
}

/// With flooding (scales near 2^59, N = 2^14), the selector folds the output mask into the
/// last layer (no mask level) and sizes the special primes to the largest key-switching
/// digit plus `KEYSWITCH_MARGIN_BITS`, choosing the digit count by its cost proxy: fewer
/// digits than q primes, and P above every digit.
#[test]
fn flooded_selection_folds_the_mask_and_sizes_the_special_primes() {
    use hepeft::plan::FloodingConfig;
    use hepeft::select::{keyswitch_cost, KEYSWITCH_MARGIN_BITS};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let head_b = zoo::square_mlp(&mut rng, 384, 8, 10).unwrap();
    let s = select(
        &head_b,
        &SelectRequest {
            flooding: Some(FloodingConfig::default()),
            ..Default::default()
        },
    )
    .unwrap();
    let r = &s.report;
    println!("{}", r.to_text());
    assert!(s.plan.output_mask_folded(), "{}", s.plan.summary());
    // q_0, the 30-bit prime reserved for the output, one prime per level of the adapter
    assert_eq!(r.log_q.len(), 2 + r.depth, "no level reserved for the mask");
    let nq = r.log_q.len();
    assert!(r.dnum < nq, "dnum {} of {nq} primes", r.dnum);
    let alpha = nq.div_ceil(r.dnum);
    let log_p: u32 = r.log_p.iter().sum();
    for digit in r.log_q.chunks(alpha) {
        let bits: u32 = digit.iter().sum();
        let margin = if digit.len() > 1 {
            KEYSWITCH_MARGIN_BITS
        } else {
            0
        };
        assert!(
            bits + margin <= log_p,
            "digit {digit:?} against P 2^{log_p}"
        );
    }
    // cheaper than one digit per prime with one special prime (the layout before issue 14)
    assert!(
        keyswitch_cost(nq, r.dnum, r.log_p.len()) < keyswitch_cost(nq, nq, 1),
        "{}",
        r.to_text()
    );
    assert!(r.log_qp <= r.max_log_qp as f64);
}
