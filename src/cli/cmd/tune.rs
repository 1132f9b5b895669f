//! `hepeft tune`: both parties of a private tuning run in one process ([`run_local`]), a
//! progress bar with the client's loss and validation accuracy, the tuned card written at the
//! end.

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use hepeft::model::load::{load_card, load_features_npy, load_labels_npy, save_adapter};
use hepeft::plan::{FloodingConfig, SanitizeConfig};
use hepeft::tune::{run_local, LocalRun, ReplyPrivacy, Trainable, TuneConfig};
use ndarray::{ArrayView2, Axis};

use crate::cli::args::TuneArgs;
use crate::cli::common::human_bytes;
use crate::cli::Ui;

fn privacy(a: &TuneArgs) -> ReplyPrivacy {
    ReplyPrivacy {
        clip: Some(a.clip),
        noise_multiplier: a.noise_multiplier,
        delta: a.delta,
    }
}

fn progress(a: &TuneArgs, ui: &Ui) -> Result<ProgressBar> {
    let bar = ProgressBar::new(a.steps);
    if ui.quiet || ui.json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps {msg}",
    )?);
    Ok(bar)
}

/// The local run the flags describe (flooding at 40 bits for every encrypted pass unless
/// `--no-flooding`).
fn local_run(a: &TuneArgs) -> Result<LocalRun> {
    Ok(LocalRun {
        tune: TuneConfig {
            directions: a.directions,
            perturbation: a.perturbation,
            learning_rate: a.learning_rate,
            trainable: Trainable::parse(&a.trainable)?,
        },
        privacy: privacy(a),
        steps: a.steps,
        sanitize: if a.no_flooding {
            SanitizeConfig::without_flooding()
        } else {
            SanitizeConfig {
                flooding: Some(FloodingConfig::new(40, 2 * a.directions as u64 * a.steps)),
            }
        },
        precision_bits: a.precision,
        state_dir: a.state.clone(),
    })
}

/// Runs the command.
pub fn run(a: &TuneArgs, ui: &Ui) -> Result<()> {
    let x = load_features_npy(&a.features).context("loading the features")?;
    let y = load_labels_npy(&a.labels).context("loading the labels")?;
    if x.nrows() != y.len() {
        bail!("{} feature rows but {} labels", x.nrows(), y.len());
    }
    let (Some(model), Some(out)) = (&a.model, &a.out) else {
        return run_remote(a, x.view(), &y, ui);
    };
    let adapter = load_card(model).context("loading the model card")?;
    if !(0.0..1.0).contains(&a.validation_split) {
        bail!("--validation-split must be in [0, 1)");
    }
    let n_val = (x.nrows() as f64 * a.validation_split).round() as usize;
    let n_train = x.nrows() - n_val;
    if n_train == 0 {
        bail!("no training sample left after the validation split");
    }
    let (train_x, val_x) = x.view().split_at(Axis(0), n_train);
    let (train_y, val_y) = y.split_at(n_train);
    if a.no_flooding {
        ui.note("WARNING: --no-flooding: results are not flooded; the decrypted error depends on the weights (docs/threat-model.md)\n");
    }
    let run = local_run(a)?;
    let bar = progress(a, ui)?;
    let validation = (n_val > 0).then_some((val_x, val_y));
    let (mut party_rng, mut rng) = (hepeft::session::os_rng()?, hepeft::session::os_rng()?);
    let (tuned, report) = run_local(
        &adapter,
        train_x,
        train_y,
        validation,
        &run,
        &mut |r| {
            let v = r.validation.map_or(String::new(), |(l, acc)| {
                format!(", validation loss {l:.4} accuracy {acc:.3}")
            });
            bar.set_position(r.step + 1);
            bar.set_message(format!("train loss {:.4}{v}", r.train_loss));
        },
        &mut party_rng,
        &mut rng,
    )?;
    bar.finish();
    let weights = save_adapter(&tuned, out, None).context("writing the tuned card")?;
    let per_step =
        report.steps.iter().map(|r| r.seconds).sum::<f64>() / report.steps.len().max(1) as f64;
    let down = report.steps.first().map_or(0, |r| r.bytes_down) as u64;
    let up = report.steps.first().map_or(0, |r| r.bytes_up);
    let dp = report
        .dp_epsilon
        .map_or("none (no noise on the replies)".into(), |e| {
            format!("epsilon = {e:.3} at delta = {}", a.delta)
        });
    let text = format!(
        "tuned {} steps at N = 2^{} ({} encrypted passes per step): {per_step:.2} s, {} down and {up} B up per step; query {} and keys {} once\n\
         differential privacy of the replies: {dp}\n\
         wrote {} and {}\n",
        report.steps.len(),
        report.log_n,
        report.passes_per_step,
        human_bytes(down),
        human_bytes(report.query_bytes as u64),
        human_bytes(report.key_bytes as u64),
        out.display(),
        weights.display()
    );
    ui.report(&report, &text, true)
}

/// The client's side of a run served by `hepeft serve --mode batch --tune`.
#[cfg(feature = "serve")]
fn run_remote(a: &TuneArgs, x: ArrayView2<f64>, y: &[usize], ui: &Ui) -> Result<()> {
    use hepeft::serve::client::{ClientKeys, QueryClient};
    let (Some(url), Some(dir)) = (&a.server, &a.keys) else {
        bail!("--server needs --keys DIR (a key directory for the served batch plan)");
    };
    let mut client = QueryClient::new(url)?;
    if let Some(token) = super::serve::read_token(a.token_file.as_deref())? {
        client = client.with_token(&token);
    }
    let plan = client.tune_plan().context("the server's tuning plan")?;
    let mut rng = hepeft::session::os_rng()?;
    let keys = if dir.join(hepeft::session::SECRET_KEY).exists() {
        ClientKeys::load_dir(dir, plan.params()).context("loading the keys")?
    } else {
        let keys = ClientKeys::generate(plan, &mut rng)?;
        keys.save_dir(dir, plan.params())
            .context("writing the keys")?;
        ui.note(&format!(
            "generated keys for the served batch plan in {}\n",
            dir.display()
        ));
        keys
    };
    keys.check_for(plan)
        .context("the keys do not cover the served plan")?;
    let id = client.register_keys(&keys.eval)?;
    let state = a.state.as_ref().map(|d| d.join("client.tune.json"));
    if let Some(d) = &a.state {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let bar = progress(a, ui)?;
    let report = hepeft::serve::tune::run_remote(
        &client,
        &keys,
        &id,
        x,
        y,
        privacy(a),
        a.steps,
        state.as_deref(),
        &mut |r| {
            bar.set_position(r.step + 1);
            bar.set_message(format!("train loss {:.4}", r.train_loss));
        },
        &mut rng,
    )?;
    bar.finish();
    let per_step =
        report.steps.iter().map(|r| r.seconds).sum::<f64>() / report.steps.len().max(1) as f64;
    let down = report.steps.first().map_or(0, |r| r.bytes_down) as u64;
    let dp = report
        .dp_epsilon
        .map_or("none (no noise on the replies)".into(), |e| {
            format!("epsilon = {e:.3} at delta = {}", a.delta)
        });
    let text = format!(
        "run at step {} of {} on {url}: {} steps here, {per_step:.2} s and {} down per step; batch {} uploaded once\n\
         differential privacy of the replies: {dp}\n\
         the tuned weights stay with the model owner\n",
        report.status.step,
        a.steps,
        report.steps.len(),
        human_bytes(down),
        human_bytes(report.query_bytes as u64),
    );
    ui.report(&report, &text, true)
}

#[cfg(not(feature = "serve"))]
fn run_remote(_: &TuneArgs, _: ArrayView2<f64>, _: &[usize], _: &Ui) -> Result<()> {
    bail!("--server needs hepeft built with the `serve` feature")
}
