//! A CryptPEFT-style token-level adapter (issue 15) through library calls: a random OWC side
//! network on `T x d` token states of one tapped layer (plus the last hidden state), fused,
//! parameters selected at 128-bit security, then keygen, encryption of the packed token
//! matrices, evaluation on the server side, decryption, and the comparison with the twin.
//!
//! Run: `cargo run --release --example token_owc`

use hepeft::ckks::{Decryptor, Encoder, EncryptionKey, Encryptor, Evaluator, KeyGenerator};
use hepeft::ckks::{PrecisionStats, Security};
use hepeft::model::reference::argmax;
use hepeft::model::token::{evaluate_tokens, random_owc, uniform_tokens, OwcShape};
use hepeft::plan::token::fuse_tokens;
use hepeft::select::token::select_token;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

fn main() -> hepeft::Result<()> {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let shape = OwcShape {
        tokens: 16,
        d: 32,
        r: 8,
        heads: 2,
        taps: 1,
        classes: 3,
    };
    // --- model owner: the adapter, fused to save levels -----------------------------------
    let adapter = random_owc(&mut rng, shape)?;
    let fused = fuse_tokens(&adapter)?;
    print!("{}", fused.summary());
    let sel = select_token(&fused, 16, Security::Bits128)?;
    print!("{}", sel.report.to_text());
    let (params, plan) = (sel.params, sel.plan);

    // --- client: keys from the plan, packed token states encrypted -------------------------
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let t = Instant::now();
    let keys = kg.gen_evaluation_keys(
        &sk,
        &plan.galois_elements(&params),
        plan.needs_relin(),
        &mut rng,
    )?;
    println!("keygen: {:.2} s", t.elapsed().as_secs_f64());
    let encoder = Encoder::new(&params)?;
    let encryptor = Encryptor::new(&params, EncryptionKey::Secret(&sk))?;
    let sample = uniform_tokens(&mut rng, &adapter, 1).remove(0);
    let query = plan.encrypt_inputs(&fused, &encoder, &encryptor, &sample, &mut rng)?;

    // --- server ----------------------------------------------------------------------------
    let ev = Evaluator::with_keys(&params, Arc::new(keys))?;
    let t = Instant::now();
    let out = plan.evaluate(&fused, &ev, &encoder, &query)?;
    println!("server evaluation: {:.2} s", t.elapsed().as_secs_f64());

    // --- client ----------------------------------------------------------------------------
    let logits = plan.decrypt_output(&encoder, &Decryptor::new(&params, &sk)?, &out)?;
    let want = evaluate_tokens(&adapter, &sample)?.output;
    let g: Vec<f64> = logits.iter().copied().collect();
    let w: Vec<f64> = want.iter().copied().collect();
    let p = PrecisionStats::relative_to_largest(&g, &w);
    println!("encrypted logits {g:.5?}\nplaintext twin   {w:.5?}");
    println!(
        "precision {:.1} bits (worst, relative to the largest logit); argmax {} vs {}",
        p.min_bits,
        argmax(logits.row(0)),
        argmax(want.row(0))
    );
    Ok(())
}
