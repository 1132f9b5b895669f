//! A private adapter head through library calls only: build a bottleneck adapter in code,
//! choose 128-bit parameters that carry the default 40-bit noise flooding (`hepeft::select`),
//! generate the client's keys from the *public* structure, encrypt features, evaluate and
//! sanitize (flooding included) on the server side, decrypt, and compare with the plaintext
//! twin.
//!
//! Run: `cargo run --release --example private_head`

use hepeft::ckks::{Decryptor, Encoder, EncryptionKey, Evaluator, KeyGenerator};
use hepeft::model::{reference, zoo, ActivationFn};
use hepeft::plan::{public_structure, FloodingConfig, Plan, PlanOptions, SanitizeConfig};
use hepeft::select::{select, SelectRequest};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

/// Runs one query; returns (measured bits, absolute; predicted bits after flooding).
fn run(d: usize, hidden: usize, classes: usize) -> hepeft::Result<(f64, f64)> {
    // --- model owner: a trained adapter (random weights here) -----------------------------
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let adapter = zoo::bottleneck(
        &mut rng,
        d,
        hidden,
        ActivationFn::Gelu,
        7,
        (-4.0, 4.0),
        classes,
    )?;
    // Parameters from the public structure, for 16 bits after 40-bit flooding of one query
    // (the selector raises the scale to about 2^57 and reserves a prime for the output).
    let flooding = FloodingConfig::default();
    let selection = select(
        &public_structure(&adapter)?,
        &SelectRequest {
            flooding: Some(flooding),
            ..Default::default()
        },
    )?;
    let predicted = selection.report.flooded_precision_bits.unwrap_or(f64::NAN);
    let params = selection.params;
    println!("adapter: {}", adapter.summary());
    println!("parameters: {}", params.describe());

    // --- client: compiles the plan from the public structure, makes keys ------------------
    let public = public_structure(&adapter)?;
    let client_plan = Plan::compile(&public, &params, PlanOptions::default())?;
    let kg = KeyGenerator::new(&params);
    let mut client_rng = ChaCha20Rng::from_os_rng();
    let sk = kg.gen_secret_key(&mut client_rng);
    let pk = kg.gen_public_key(&sk, &mut client_rng)?;
    let eval_keys = kg.gen_evaluation_keys(
        &sk,
        &client_plan.galois_elements(),
        client_plan.needs_relin(),
        &mut client_rng,
    )?;
    let encoder = Encoder::new(&params)?;
    let features = zoo::uniform_inputs(&mut rng, &adapter, 1);
    let views: Vec<ArrayView2<f64>> = features.iter().map(|a| a.view()).collect();
    let query = client_plan.encrypt_query(
        &encoder,
        EncryptionKey::Public(&pk),
        &views,
        &mut client_rng,
    )?;

    // --- server: the real plan, the same structure, weights encoded once ------------------
    let server_plan = Plan::compile(&adapter, &params, PlanOptions::default())?;
    assert_eq!(
        server_plan.structure_digest(),
        client_plan.structure_digest()
    );
    println!("{}", server_plan.summary());
    let prepared = server_plan.prepare()?;
    let evaluator = Evaluator::with_keys(&params, Arc::new(eval_keys))?;
    let start = Instant::now();
    let result = prepared.evaluate(&evaluator, &query)?;
    // Before anything leaves the server: mask the non-output slots, drop to the output
    // level, re-randomize under the client's public key (it travels in eval.keys) and flood
    // at 40 bits (docs/threat-model.md).
    let mut server_rng = ChaCha20Rng::from_os_rng();
    let (result, _) = server_plan.sanitize(
        &evaluator,
        result,
        &pk,
        &SanitizeConfig {
            flooding: Some(flooding),
        },
        &mut server_rng,
    )?;
    println!(
        "server evaluation and sanitization: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    // --- client: decrypt and compare with the plaintext twin ------------------------------
    let logits =
        client_plan.decrypt_result(&encoder, &Decryptor::new(&params, &sk)?, &result, 1)?;
    let (want, report) = reference::evaluate_batch(&adapter, &views)?;
    report.check()?;
    let got: Vec<f64> = logits.iter().copied().collect();
    let want: Vec<f64> = want.iter().copied().collect();
    let stats = hepeft::ckks::PrecisionStats::relative_to_largest(&got, &want);
    let abs = hepeft::ckks::PrecisionStats::compare(&got, &want);
    let (err, bits) = (stats.max_abs_error, stats.min_bits);
    println!(
        "max |error| {err:.2e}: {:.1} bits (predicted after flooding {predicted:.1}), {bits:.1} bits relative to the largest logit",
        abs.min_bits
    );
    Ok((abs.min_bits, predicted))
}

fn main() -> hepeft::Result<()> {
    run(768, 64, 100)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn example_runs_and_is_precise() -> hepeft::Result<()> {
        let (bits, predicted) = super::run(96, 16, 10)?;
        assert!(predicted >= 16.0, "predicted {predicted:.1} bits");
        assert!(
            bits >= predicted,
            "{bits:.1} bits < predicted {predicted:.1}"
        );
        Ok(())
    }
}
