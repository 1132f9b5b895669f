//! Query size and peak memory of a batch-layout query, unpacked (one ciphertext per feature)
//! against packed (`PlanOptions::batch_pack = G` features per ciphertext), through the
//! session layer: the client encrypts `samples` samples of `d`-wide features for a
//! `d -> 64 -> square -> 10` head, the server evaluates and sanitizes (no flooding: the
//! batch layout cannot carry the default 40-bit flooding yet, issue 14), the client decrypts
//! and the logits are compared with the plaintext twin.
//!
//! Run one layout per process, so that each peak is its own:
//! `cargo run --release --example batch_query -- 1000 1280 1` (unpacked) and
//! `cargo run --release --example batch_query -- 1000 1280 4` (four features per ciphertext).
//! Prints the parameters, the query bytes, the process's peak resident memory after
//! encryption (the client's peak) and after evaluation, times, and the precision.

use hepeft::model::{reference, zoo};
use hepeft::plan::{Mode, PlanOptions, SanitizeConfig};
use hepeft::select::{select, SelectRequest};
use hepeft::session::{Client, Server};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

/// Peak resident set size of this process so far (`VmHWM`), MiB; NaN where /proc is absent.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> hepeft::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    let samples = args.first().copied().filter(|&s| s > 0).unwrap_or(1000);
    let d = args.get(1).copied().filter(|&s| s > 0).unwrap_or(1280);
    let batch_pack = args.get(2).copied().filter(|&s| s > 0).unwrap_or(1);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let adapter = zoo::square_mlp(&mut rng, d, 64, 10)?;
    let options = PlanOptions {
        mode: Mode::Batch,
        batch_pack,
        ..Default::default()
    };
    let selection = select(
        &hepeft::plan::public_structure(&adapter)?,
        &SelectRequest {
            options,
            flooding: None,
            ..Default::default()
        },
    )?;
    let params = selection.params;
    let plan = hepeft::session::public_plan_with(&adapter, &params, options)?;
    println!(
        "batch_query: {samples} samples x {d} features, batch_pack {batch_pack}, {}",
        params.describe()
    );
    print!("{}", plan.summary());

    let t = Instant::now();
    let client = Client::keygen(plan.clone(), &mut ChaCha20Rng::seed_from_u64(12))?;
    let keygen = t.elapsed();
    let inputs = zoo::uniform_inputs(&mut rng, &adapter, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let t = Instant::now();
    let query = client.encrypt_samples(&views, &mut ChaCha20Rng::seed_from_u64(13))?;
    let query_bytes = query.to_bytes(&params)?.len();
    let encrypt = t.elapsed();
    let client_peak = peak_mib();

    let server_plan = hepeft::plan::Plan::compile(&adapter, &params, options)?;
    let server = Server::new(server_plan, SanitizeConfig::without_flooding())?;
    let keys = Arc::new(
        client
            .eval_keys()
            .cloned()
            .ok_or_else(|| hepeft::Error::model("no evaluation keys"))?,
    );
    let t = Instant::now();
    let (result, _) = server.evaluate_queries(
        keys,
        &query,
        &mut ChaCha20Rng::seed_from_u64(14),
        &|_, _, _| {},
    )?;
    let evaluate = t.elapsed();
    let result_bytes = result.to_bytes(&params)?.len();
    let total_peak = peak_mib();
    let got = client.decrypt(&result)?;
    let (want, _) = reference::evaluate_batch(&adapter, &views)?;
    let stats = hepeft::ckks::PrecisionStats::relative_to_largest(
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
    );
    println!(
        "batch_query: pack {batch_pack}: {} queries of at most {} samples, {} ciphertexts per query, query {:.1} MiB, result {:.1} MiB, \
         peak RSS {client_peak:.0} MiB after encryption, {total_peak:.0} MiB after evaluation; \
         keygen {:.1} s, encrypt {:.1} s, evaluate + sanitize {:.1} s ({} threads); {:.1} bits relative to the largest logit",
        query.queries().len(),
        plan.samples_per_query(),
        plan.input_ciphertexts(),
        query_bytes as f64 / (1 << 20) as f64,
        result_bytes as f64 / (1 << 20) as f64,
        keygen.as_secs_f64(),
        encrypt.as_secs_f64(),
        evaluate.as_secs_f64(),
        rayon::current_num_threads(),
        stats.min_bits
    );
    Ok(())
}
