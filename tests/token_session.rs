//! Token adapters through the session layer (issue 15): keys, queries and results bound
//! like pooled ones, every result sanitized by default (mask to the output slots, output
//! level, re-randomization, noise flooding), selection reserving the mask level and the
//! flooding's precision. Precision printed in bits (run with `--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use hepeft::ckks::*;
use hepeft::model::reference::argmax;
use hepeft::model::token::{evaluate_tokens, random_owc, uniform_tokens, OwcShape, TokenAdapter};
use hepeft::plan::token::fuse_tokens;
use hepeft::plan::{FloodingConfig, SanitizeConfig};
use hepeft::select::token::{select_token, select_token_flooded};
use hepeft::session::token::client::TokenKeys;
use hepeft::session::token::{TokenClient, TokenModel, TokenServer};
use hepeft::Error;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn adapter(seed: u64) -> TokenAdapter {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    random_owc(
        &mut rng,
        OwcShape {
            tokens: 4,
            d: 8,
            r: 4,
            heads: 2,
            taps: 1,
            classes: 3,
        },
    )
    .unwrap()
}

/// N = 2^11 (insecure, tests only), a 30-bit prime and one at the scale for the output
/// (output level 1), `levels` more primes at scale 2^55 (the depth plus the mask level).
fn params(levels: usize) -> CkksParams {
    let lit = CkksParamsLiteral::new(
        11,
        [vec![30, 55], vec![55; levels]].concat(),
        vec![60; 3],
        55,
    );
    CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap()
}

fn bits(got: &Array2<f64>, want: &Array2<f64>) -> f64 {
    let g: Vec<f64> = got.iter().copied().collect();
    let w: Vec<f64> = want.iter().copied().collect();
    PrecisionStats::relative_to_largest(&g, &w).min_bits
}

#[test]
fn flooded_session_round_trip_matches_the_twin() {
    let ad = adapter(1);
    let depth = hepeft::plan::token::TokenPlan::depth_of(&fuse_tokens(&ad).unwrap());
    let p = params(depth + 1);
    let model = TokenModel::compile(&ad, &p).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let keys = TokenKeys::generate(&model, &mut rng).unwrap();
    let (client, eval) = TokenClient::from_keys(model.clone(), keys).unwrap();
    let f = FloodingConfig::new(40, 1);
    let server = TokenServer::new(model.clone(), SanitizeConfig { flooding: Some(f) }).unwrap();
    let eval = Arc::new(eval);
    server.check_keys(&eval, None).unwrap_err(); // no binding: refused
    let samples = uniform_tokens(&mut rng, &ad, 3);
    let query = client.encrypt_samples(&samples, &mut rng).unwrap();
    assert_eq!(query.items.len(), 3 * model.query_ciphertexts());
    let (result, report) = server
        .evaluate_queries(eval.clone(), &query, &mut rng, &|_, _| {})
        .unwrap();
    let report = report.unwrap();
    assert!(report.masked);
    let fl = report.flooding.clone().unwrap();
    assert_eq!(fl.statistical_security, 40);
    assert!(result
        .items
        .iter()
        .all(|c| c.level() == p.output_floor_level()));
    let got = client.decrypt(&result).unwrap();
    let mut want = Array2::zeros(got.dim());
    for (s, x) in samples.iter().enumerate() {
        let w = evaluate_tokens(&ad, x).unwrap().output;
        want.row_mut(s).assign(&w.row(0));
    }
    let b = bits(&got, &want);
    let predicted = model.plan.flooded_precision_bits(&f, 55.0, 11);
    println!(
        "flooded (40 bits) token session: {b:.1} bits relative to the largest logit (largest {:.3}); \
         predicted {predicted:.1} bits at a unit logit; flooding noise 2^{:.1} per slot",
        want.iter().fold(0f64, |m, v| m.max(v.abs())),
        fl.slot_std_log2
    );
    assert!(b > 6.0, "{b}");
    for s in 0..3 {
        assert_eq!(argmax(got.row(s)), argmax(want.row(s)), "sample {s}");
    }
    // a query replayed as a result, and a result evaluated again, are refused
    assert!(client.decrypt(&query).is_err());
    assert!(server
        .evaluate_queries(eval, &result, &mut rng, &|_, _| {})
        .is_err());
}

#[test]
fn the_mask_zeroes_every_non_output_slot() {
    let ad = adapter(3);
    let depth = hepeft::plan::token::TokenPlan::depth_of(&fuse_tokens(&ad).unwrap());
    let p = params(depth + 1);
    let model = TokenModel::compile(&ad, &p).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let keys = TokenKeys::generate(&model, &mut rng).unwrap();
    let dec = Decryptor::new(&p, &keys.secret).unwrap();
    let encoder = Encoder::new(&p).unwrap();
    let ev = Evaluator::with_keys(&p, Arc::new(keys.eval)).unwrap();
    let enc = Encryptor::new(&p, EncryptionKey::Secret(&keys.secret)).unwrap();
    let x = uniform_tokens(&mut rng, &ad, 1).remove(0);
    let cts = model
        .plan
        .encrypt_inputs(&model.adapter, &encoder, &enc, &x, &mut rng)
        .unwrap();
    let out = model
        .plan
        .evaluate(&model.adapter, &ev, &encoder, &cts)
        .unwrap();
    // unsanitized: the bias fills every slot of an output column
    let raw = encoder.decode(&dec.decrypt(&out[0]).unwrap()).unwrap();
    let gap_raw = raw[1..].iter().fold(0f64, |m, v| m.max(v.abs()));
    let (clean, rep) = model
        .plan
        .sanitize(
            &ev,
            out,
            &keys.public,
            &SanitizeConfig::without_flooding(),
            &mut rng,
        )
        .unwrap();
    assert!(rep.masked && rep.flooding.is_none());
    let want = evaluate_tokens(&ad, &x).unwrap().output;
    for (j, ct) in clean.iter().enumerate() {
        assert_eq!(ct.level(), p.output_floor_level());
        let v = encoder.decode(&dec.decrypt(ct).unwrap()).unwrap();
        let gap = v[1..].iter().fold(0f64, |m, x| m.max(x.abs()));
        println!(
            "output {j}: value {:.5} (twin {:.5}), largest non-output slot {gap:.2e} (unsanitized column 0: {gap_raw:.2e})",
            v[0],
            want[[0, j]]
        );
        assert!(gap < 1e-6, "non-output slot {gap}");
        assert!((v[0] - want[[0, j]]).abs() < 1e-4);
    }
    assert!(
        gap_raw > 1e-3,
        "the unsanitized output had clean gaps: {gap_raw}"
    );
}

#[test]
fn no_mask_level_or_too_much_flooding_is_refused_with_a_reason() {
    let ad = adapter(5);
    let depth = hepeft::plan::token::TokenPlan::depth_of(&fuse_tokens(&ad).unwrap());
    // exactly the adapter's depth above the output level: no level for the mask
    let lit = CkksParamsLiteral::new(11, [vec![50], vec![40; depth]].concat(), vec![60; 3], 40);
    let p = CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap();
    let model = TokenModel::compile(&ad, &p).unwrap();
    let e = TokenServer::new(model, SanitizeConfig::without_flooding()).unwrap_err();
    assert!(matches!(e, Error::LevelExhausted { .. }), "{e}");
    assert!(e.to_string().contains("params select"), "{e}");
    // a mask level but a 40-bit scale: 40-bit flooding leaves nothing
    let lit = CkksParamsLiteral::new(
        11,
        [vec![50], vec![40; depth + 1]].concat(),
        vec![60; 3],
        40,
    );
    let p = CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap();
    let model = TokenModel::compile(&ad, &p).unwrap();
    let e = TokenServer::new(model.clone(), SanitizeConfig::flooded()).unwrap_err();
    assert!(e.to_string().contains("--flooding-bits"), "{e}");
    TokenServer::new(model, SanitizeConfig::without_flooding()).unwrap();
}

#[test]
fn selection_reserves_the_mask_level_and_the_flooding() {
    let ad = fuse_tokens(&adapter(7)).unwrap();
    let depth = hepeft::plan::token::TokenPlan::depth_of(&ad);
    let plain = select_token(&ad, 12, Security::Bits128).unwrap();
    assert_eq!(plain.params.max_level(), depth);
    assert!(plain.report.flooding.is_none());
    let f = FloodingConfig::new(40, 1);
    let sel = select_token_flooded(&ad, 12, Security::Bits128, &f).unwrap();
    let floor = sel.params.output_floor_level();
    assert_eq!(sel.params.max_level(), depth + 1 + floor.get());
    assert_eq!(sel.plan.output_level().get(), floor.get() + 1);
    let (_, predicted) = sel.report.flooding.unwrap();
    assert!(predicted >= 12.0, "{predicted}");
    println!("{}", sel.report.to_text());
    let model = TokenModel::compile(&ad, &sel.params).unwrap();
    TokenServer::new(model, SanitizeConfig { flooding: Some(f) }).unwrap();
}
