//! A private adapter head through library calls only: build a bottleneck adapter in code,
//! compile it for a 128-bit preset, generate the client's keys from the *public* structure,
//! encrypt features, evaluate on the server side, decrypt, and compare with the plaintext twin.
//!
//! Run: `cargo run --release --example private_head`

use hepeft::ckks::{CkksParams, Decryptor, Encoder, EncryptionKey, Evaluator, KeyGenerator};
use hepeft::model::{reference, zoo, ActivationFn};
use hepeft::plan::{public_structure, Plan, PlanOptions, SanitizeConfig};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

fn run(d: usize, hidden: usize, classes: usize, preset: &str) -> hepeft::Result<f64> {
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
    let params = CkksParams::preset(preset)?;
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
    // Before anything leaves the server: mask the non-output slots, drop to level 0 and
    // re-randomize under the client's public key (it travels in eval.keys). Noise flooding
    // is off here: at 40 bits it needs a larger scale than this preset carries
    // (docs/threat-model.md); `SanitizeConfig::flooded()` turns it on where it fits.
    let mut server_rng = ChaCha20Rng::from_os_rng();
    let (result, _) = server_plan.sanitize(
        &evaluator,
        result,
        &pk,
        &SanitizeConfig::without_flooding(),
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
    let (err, bits) = (stats.max_abs_error, stats.min_bits);
    println!("max |error| {err:.2e}, {bits:.1} bits relative to the largest logit");
    Ok(bits)
}

fn main() -> hepeft::Result<()> {
    run(768, 64, 100, "CKKS_N14_QP430_128")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn example_runs_and_is_precise() -> hepeft::Result<()> {
        let bits = super::run(96, 16, 10, "CKKS_N14_QP430_128")?;
        assert!(bits >= 16.0, "{bits:.1} bits");
        Ok(())
    }
}
