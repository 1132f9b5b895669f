//! A trained adapter on real backbone features, end to end through library calls: the
//! client loads held-out backbone features (by default MiniLM features of fine-food reviews),
//! encrypts them (batch mode: one
//! ciphertext per feature, samples in slots, no rotation keys), the server evaluates the
//! private adapter, and the client decrypts logits and turns them into labels.
//!
//! Run: `cargo run --release --example real_task -- [adapter] [samples] [task]`
//! (adapter: probe | lora | bottleneck | side, default bottleneck; task: a directory under
//! assets/real, default finefoods; e.g. `-- side 300 mnist` for EfficientNet-Lite0 features).

use hepeft::ckks::{Decryptor, Encoder, EncryptionKey, Evaluator, KeyGenerator};
use hepeft::model::load::{load_card, load_features_npy};
use hepeft::model::reference;
use hepeft::model::reference::argmax;
use hepeft::plan::{public_structure, Mode, Plan, PlanOptions};
use hepeft::select::{select, SelectRequest};
use ndarray::{ArrayView2, Axis, Slice};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() -> hepeft::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("bottleneck", String::as_str);
    let task = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/real")
        .join(args.get(3).map_or("finefoods", String::as_str));
    let bad_manifest = |reason: &str| hepeft::Error::Format {
        what: "manifest.json".into(),
        reason: reason.into(),
    };
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(task.join("manifest.json"))?)
            .map_err(|e| bad_manifest(&e.to_string()))?;

    // --- server side owns the trained adapter (card + safetensors) -------------------------
    let adapter = load_card(task.join(name).join("card.toml"))?;
    println!("adapter: {}", adapter.summary());

    // --- client side: features from the public backbone (precomputed here) ----------------
    let mut feats = Vec::new();
    for spec in adapter.inputs() {
        let file = manifest["features"][&spec.name]
            .as_str()
            .ok_or_else(|| bad_manifest(&format!("no feature file for input {}", spec.name)))?;
        feats.push(load_features_npy(task.join(file))?);
    }
    let labels = load_features_npy(task.join("features/labels.npy"))?;
    let total = labels.len();
    let n: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(total)
        .min(total);
    let feats: Vec<_> = feats
        .iter()
        .map(|f| f.slice_axis(Axis(0), Slice::from(..n)).to_owned())
        .collect();
    let views: Vec<ArrayView2<f64>> = feats.iter().map(|a| a.view()).collect();

    let options = PlanOptions {
        mode: Mode::Batch,
        ..Default::default()
    };
    let selection = select(
        &adapter,
        &SelectRequest {
            options,
            batch: Some(n),
            // 4 bits over the default: the default's error model assumes unit-sized
            // weights, and the folded standardisation makes some rows ~40x larger.
            precision_bits: 20,
            ..Default::default()
        },
    )?;
    let params = selection.params;
    println!("parameters: {}", params.describe());

    let client_plan = Plan::compile(&public_structure(&adapter)?, &params, options)?;
    let mut rng = ChaCha20Rng::from_os_rng();
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng)?;
    let keys = kg.gen_evaluation_keys(
        &sk,
        &client_plan.galois_elements(),
        client_plan.needs_relin(),
        &mut rng,
    )?;
    let encoder = Encoder::new(&params)?;
    let t = Instant::now();
    let query =
        client_plan.encrypt_query(&encoder, EncryptionKey::Public(&pk), &views, &mut rng)?;
    println!(
        "client: encrypted {n} samples in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // --- server -----------------------------------------------------------------------------
    let server_plan = Plan::compile(&adapter, &params, options)?;
    let prepared = server_plan.prepare()?;
    let evaluator = Evaluator::with_keys(&params, Arc::new(keys))?;
    let t = Instant::now();
    let result = prepared.evaluate(&evaluator, &query)?;
    println!("server: evaluated in {:.2} s", t.elapsed().as_secs_f64());

    // --- client: decrypt, labels ------------------------------------------------------------
    let logits =
        client_plan.decrypt_result(&encoder, &Decryptor::new(&params, &sk)?, &result, n)?;
    let classes: Vec<&str> = manifest["classes"]
        .as_array()
        .ok_or_else(|| bad_manifest("no class list"))?
        .iter()
        .map(|c| c.as_str().ok_or_else(|| bad_manifest("class name")))
        .collect::<Result<_, _>>()?;
    let predicted: Vec<usize> = logits.axis_iter(Axis(0)).map(argmax).collect();
    for (i, &p) in predicted.iter().take(5).enumerate() {
        let row: Vec<String> = logits.row(i).iter().map(|z| format!("{z:+.4}")).collect();
        println!(
            "sample {i}: logits [{}] -> {} (label {})",
            row.join(", "),
            classes[p],
            classes[labels[[0, i]] as usize]
        );
    }
    let correct = (0..n)
        .filter(|&i| predicted[i] == labels[[0, i]] as usize)
        .count();
    let (want, _) = reference::evaluate_batch(&adapter, &views)?;
    let agree = want
        .axis_iter(Axis(0))
        .zip(&predicted)
        .filter(|(w, &p)| argmax(*w) == p)
        .count();
    println!(
        "encrypted accuracy {correct}/{n} = {:.4}; argmax equal to the plaintext model on {agree}/{n}",
        correct as f64 / n as f64
    );
    Ok(())
}
