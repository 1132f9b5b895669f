//! Private tuning on a real task (issue 16): the model owner adapts the LoRA factor `B` of its
//! fine-food review classifier (all-MiniLM-L6-v2 embeddings, `assets/real/finefoods/lora`) to
//! a client's private labelled reviews, with encrypted forward passes only. The run starts
//! from PEFT's initialisation (`B = 0`: the frozen random base head alone), tunes on 150 of
//! the shipped held-out reviews and validates on the other 150, and prints, step by step, the
//! encrypted run beside its plaintext twin (same seeds), then the accuracy before and after
//! beside first-order gradient descent on the same parameters.
//!
//! `cargo run --release --example private_tuning [steps] [learning-rate] [plain]` (default 30
//! steps at 0.5; `plain` runs only the plaintext twin and the first-order baseline).

use anyhow::{Context as _, Result};
use hepeft::model::load::{load_card, load_features_npy};
use hepeft::model::{reference, Adapter, Op};
use hepeft::plan::SanitizeConfig;
use hepeft::tune::{
    run_local, run_plain, LocalRun, ReplyPrivacy, ThetaLayout, Trainable, TuneConfig,
};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;

fn main() -> Result<()> {
    let steps: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30);
    let lr: f64 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0.5);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/finefoods");
    let trained = load_card(root.join("lora/card.toml"))?;
    let x = load_features_npy(root.join("features/emb.npy"))?;
    let y: Array1<f32> =
        ndarray_npy::read_npy(root.join("features/labels.npy")).context("reading the labels")?;
    let y: Vec<usize> = y.iter().map(|&v| v as usize).collect();
    let (train_x, val_x) = x.view().split_at(Axis(0), 150);
    let (train_y, val_y) = (&y[..150], &y[150..]);

    // PEFT's initialisation: B = 0, the frozen base head alone
    let layout = ThetaLayout::new(&trained, Trainable::LoraB)?;
    let start = layout.write(&trained, &vec![0.0; layout.dim()])?;
    let run = LocalRun {
        tune: TuneConfig {
            directions: 4,
            perturbation: 1e-2,
            learning_rate: lr,
            trainable: Trainable::LoraB,
        },
        privacy: ReplyPrivacy::default(),
        steps,
        // Flooding off, loudly: at 40 bits the flooding noise leaves about 5 bits in the
        // batch layout, too little for finite differences (see docs/tuning.md).
        sanitize: SanitizeConfig::without_flooding(),
        precision_bits: 16,
        state_dir: None,
    };
    eprintln!("WARNING: noise flooding is off in this example (see docs/tuning.md)");
    let accuracy = |a: &Adapter, x: ArrayView2<f64>, y: &[usize]| -> Result<f64> {
        let (l, _) = reference::evaluate_batch(a, &[x])?;
        Ok(hepeft::tune::loss_and_accuracy(l.view(), y)?.1)
    };
    println!(
        "fine-food reviews, LoRA r=8 on a frozen random 384 -> 2 head, tuning B ({} values) on 150 reviews, validating on 150",
        layout.dim()
    );
    println!(
        "accuracy at B = 0: train {:.3}, validation {:.3}; the owner's first-order-trained adapter: validation {:.3}",
        accuracy(&start, train_x, train_y)?,
        accuracy(&start, val_x, val_y)?,
        accuracy(&trained, val_x, val_y)?
    );

    let (_, twin) = run_plain(
        &start,
        train_x,
        train_y,
        Some((val_x, val_y)),
        &run,
        &mut ChaCha20Rng::seed_from_u64(1),
    )?;
    if std::env::args().nth(3).as_deref() == Some("plain") {
        for r in &twin {
            let (vl, va) = r.validation.unwrap_or((f64::NAN, f64::NAN));
            println!(
                "{:>4} | train loss {:.6} | val loss {vl:.4} | val acc {va:.3}",
                r.step, r.train_loss
            );
        }
        let fo = first_order(&start, train_x, train_y, steps, lr)?;
        println!(
            "first-order: validation accuracy {:.3}",
            accuracy(&fo, val_x, val_y)?
        );
        return Ok(());
    }
    println!("step | train loss (encrypted) | plaintext twin | |diff|   | val loss | val acc | s/step | down KiB | up B");
    let mut i = 0;
    let mut worst = 0f64;
    let (tuned, report) = run_local(
        &start,
        train_x,
        train_y,
        Some((val_x, val_y)),
        &run,
        &mut |r| {
            let t = &twin[i];
            let d = (r.train_loss - t.train_loss).abs();
            worst = worst.max(d);
            let (vl, va) = r.validation.unwrap_or((f64::NAN, f64::NAN));
            println!(
                "{:>4} | {:>22.6} | {:>14.6} | {d:.1e} | {vl:>8.4} | {va:>7.3} | {:>6.2} | {:>8.1} | {:>4}",
                r.step,
                r.train_loss,
                t.train_loss,
                r.seconds,
                r.bytes_down as f64 / 1024.0,
                r.bytes_up
            );
            i += 1;
        },
        &mut ChaCha20Rng::seed_from_u64(1),
        &mut ChaCha20Rng::from_os_rng(),
    )?;
    let secs: f64 = report.steps.iter().map(|r| r.seconds).sum();
    println!(
        "\nN = 2^{}, {} encrypted passes per step, {:.2} s per step (one thread pool of {}), {:.1} KiB down and {} B up per step, query {:.1} MiB and keys {:.1} MiB once",
        report.log_n,
        report.passes_per_step,
        secs / report.steps.len().max(1) as f64,
        rayon::current_num_threads(),
        report.steps.first().map_or(0, |r| r.bytes_down) as f64 / 1024.0,
        report.steps.first().map_or(0, |r| r.bytes_up),
        report.query_bytes as f64 / (1 << 20) as f64,
        report.key_bytes as f64 / (1 << 20) as f64,
    );
    println!("largest |encrypted - plaintext| training loss over the run: {worst:.2e}");

    let fo = first_order(&start, train_x, train_y, steps, lr)?;
    println!(
        "validation accuracy after {steps} steps: private zeroth-order {:.3} (plaintext twin {:.3}), first-order gradient descent on B {:.3}",
        accuracy(&tuned, val_x, val_y)?,
        twin.last().and_then(|r| r.validation).map_or(f64::NAN, |v| v.1),
        accuracy(&fo, val_x, val_y)?
    );
    Ok(())
}

/// Plaintext first-order baseline: `steps` of full-batch gradient descent on the LoRA `B`
/// factor with the exact cross-entropy gradient `dL/dB = s/n sum_i (p_i - e_{y_i}) (A x_i)^T`.
fn first_order(
    start: &Adapter,
    x: ArrayView2<f64>,
    y: &[usize],
    steps: u64,
    lr: f64,
) -> Result<Adapter> {
    let layout = ThetaLayout::new(start, Trainable::LoraB)?;
    let (a, scale) = start
        .nodes()
        .iter()
        .find_map(|n| match &n.op {
            Op::LowRank { a, scale, .. } => Some((a.clone(), *scale)),
            _ => None,
        })
        .context("the adapter has a low-rank node")?;
    let h = x.dot(&a.t()); // n x r
    let mut theta = layout.read(start)?;
    let mut current = start.clone();
    for _ in 0..steps {
        let (logits, _) = reference::evaluate_batch(&current, &[x])?;
        let mut p: Array2<f64> = logits.clone();
        for (mut row, &label) in p.axis_iter_mut(Axis(0)).zip(y) {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.mapv_inplace(|v| (v - m).exp());
            let z = row.sum();
            row.mapv_inplace(|v| v / z);
            row[label] -= 1.0;
        }
        let grad = p.t().dot(&h) * (scale / x.nrows() as f64); // classes x r
        for (t, g) in theta.iter_mut().zip(grad.iter()) {
            *t -= lr * g;
        }
        current = layout.write(start, &theta)?;
    }
    Ok(current)
}
