//! `hepeft demo`: the whole pipeline on an embedded example, through the same code as the
//! file commands (publish, keygen, encrypt, evaluate, decrypt), then checked against the
//! plaintext twin. Needs no external file: the default is a real task (a trained adapter and
//! held-out features from `assets/real/`, embedded in the binary).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

use crate::cli::args::FloodingArgs;
use serde::Serialize;

use hepeft::ckks::{CkksParams, PrecisionStats};
use hepeft::model::load::{features_from_npy_bytes, save_adapter};
use hepeft::model::{reference, zoo, ActivationFn, Adapter};
use hepeft::plan::Mode;

use super::{decrypt, encrypt, evaluate, keygen, publish};
use crate::cli::args::{
    Backend, DecryptArgs, DemoArgs, DemoModel, EncryptArgs, EvaluateArgs, KeygenArgs, ParamsSource,
};
use crate::cli::common::*;
use crate::cli::Ui;

/// Seed of the demo adapters' weights (fixed: the demo is reproducible up to encryption noise).
const MODEL_SEED: u64 = 0x4845_5045_4654;
/// Seed of the demo features.
const FEATURE_SEED: u64 = 2024;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("hepeft-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Serialize)]
struct Timings {
    publish: f64,
    keygen: f64,
    encrypt: f64,
    evaluate: f64,
    decrypt: f64,
}

#[derive(Debug, Serialize)]
struct Bytes {
    evaluation_keys: u64,
    public_key: u64,
    query: u64,
    result: u64,
}

#[derive(Debug, Serialize)]
struct Accuracy {
    samples: usize,
    argmax_agree: usize,
    max_abs_error: f64,
    max_abs_logit: f64,
    precision_bits_min: f64,
    precision_bits_median: f64,
}

#[derive(Debug, Serialize)]
struct DemoReport {
    model: String,
    adapter: String,
    params: String,
    /// Noise flooding applied to the result ("OFF" or its settings).
    flooding: String,
    plan: String,
    mode: String,
    seconds: Timings,
    bytes: Bytes,
    accuracy: Accuracy,
    predictions: Vec<(usize, usize)>,
    /// Real tasks: the held-out labels, class names, and the accuracy of the decrypted
    /// predictions against the labels.
    labels: Option<Vec<usize>>,
    classes: Option<Vec<String>>,
    label_accuracy: Option<f64>,
    kept: Option<PathBuf>,
}

/// A trained adapter with held-out data, embedded from `assets/real/<task>/`.
pub(crate) struct RealTask {
    pub(crate) card_toml: &'static str,
    /// Written next to the card under [`REAL_WEIGHTS_FILE`], the name its `weights` field gives.
    pub(crate) weights: &'static [u8],
    pub(crate) features: &'static [u8],
    pub(crate) labels: &'static [u8],
    pub(crate) classes: &'static [&'static str],
}

/// The weights file name every shipped card (`assets/real/*/*/card.toml`) refers to.
const REAL_WEIGHTS_FILE: &str = "adapter.safetensors";

const REVIEWS: RealTask = RealTask {
    card_toml: include_str!("../../../assets/real/finefoods/bottleneck/card.toml"),
    weights: include_bytes!("../../../assets/real/finefoods/bottleneck/adapter.safetensors"),
    features: include_bytes!("../../../assets/real/finefoods/features/emb.npy"),
    labels: include_bytes!("../../../assets/real/finefoods/features/labels.npy"),
    classes: &["other", "great"],
};

const DIGITS: RealTask = RealTask {
    card_toml: include_str!("../../../assets/real/digits/bottleneck/card.toml"),
    weights: include_bytes!("../../../assets/real/digits/bottleneck/adapter.safetensors"),
    features: include_bytes!("../../../assets/real/digits/features/pixels.npy"),
    labels: include_bytes!("../../../assets/real/digits/features/labels.npy"),
    classes: &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
};

/// What the demo runs: an adapter, its card on disk, and the client's features.
struct DemoCase {
    adapter: Adapter,
    label: &'static str,
    preset: &'static str,
    features: Vec<Array2<f64>>,
    /// True labels and class names of a real task.
    truth: Option<(Vec<usize>, &'static [&'static str])>,
}

/// Writes the private card of `which` into `server` and returns the case with `samples`
/// feature rows (held-out rows for a real task, seeded uniform ones otherwise).
fn demo_case(which: DemoModel, server: &Path, samples: usize) -> Result<DemoCase> {
    let private_card = server.join("adapter.toml");
    let real = match which {
        DemoModel::Reviews => Some((
            &REVIEWS,
            "fine-food reviews (real): bottleneck adapter on all-MiniLM-L6-v2 embeddings, 5 stars vs the rest",
        )),
        DemoModel::Digits => Some((
            &DIGITS,
            "8x8 digits (real): bottleneck adapter on pixels, 10 classes",
        )),
        DemoModel::Lora | DemoModel::Bottleneck => None,
    };
    if let Some((task, label)) = real {
        std::fs::write(&private_card, task.card_toml)
            .with_context(|| format!("writing {}", private_card.display()))?;
        let w = server.join(REAL_WEIGHTS_FILE);
        std::fs::write(&w, task.weights).with_context(|| format!("writing {}", w.display()))?;
        let adapter = load_model(&private_card, None)?;
        let all = features_from_npy_bytes(task.features).context("embedded features")?;
        let labels = features_from_npy_bytes(task.labels).context("embedded labels")?;
        if samples > all.nrows() {
            bail!(
                "this task ships {} held-out samples; ask for at most that many",
                all.nrows()
            );
        }
        let rows = all
            .slice_axis(Axis(0), ndarray::Slice::from(0..samples))
            .to_owned();
        let truth: Vec<usize> = labels.iter().take(samples).map(|&y| y as usize).collect();
        return Ok(DemoCase {
            adapter,
            label,
            preset: "CKKS_N14_QP430_128",
            features: vec![rows],
            truth: Some((truth, task.classes)),
        });
    }
    let (adapter, label, preset) = demo_adapter(which)?;
    save_adapter(&adapter, &private_card, Some("hepeft demo"))?;
    let mut frng = ChaCha20Rng::seed_from_u64(FEATURE_SEED);
    let features = zoo::uniform_inputs(&mut frng, &adapter, samples);
    Ok(DemoCase {
        adapter,
        label,
        preset,
        features,
        truth: None,
    })
}

fn demo_adapter(which: DemoModel) -> Result<(Adapter, &'static str, &'static str)> {
    let mut rng = ChaCha20Rng::seed_from_u64(MODEL_SEED);
    Ok(match which {
        DemoModel::Lora => (
            zoo::lora_head(&mut rng, 384, 8, 10)?,
            "LoRA classifier head (d = 384, rank 8, 10 classes)",
            "CKKS_N13_QP200_128",
        ),
        DemoModel::Bottleneck => (
            zoo::bottleneck(&mut rng, 128, 16, ActivationFn::Gelu, 7, (-4.0, 4.0), 10)?,
            "bottleneck adapter (d = 128, hidden 16, GELU degree 7 on [-4, 4], residual, 10 classes)",
            "CKKS_N14_QP430_128",
        ),
        DemoModel::Reviews | DemoModel::Digits => bail!("a real task is not a synthetic adapter"),
    })
}

/// The embedded real task of `which` (`None` for the synthetic adapters).
#[cfg(feature = "exact")]
pub(crate) fn real_task(which: DemoModel) -> Option<&'static RealTask> {
    match which {
        DemoModel::Reviews => Some(&REVIEWS),
        DemoModel::Digits => Some(&DIGITS),
        DemoModel::Lora | DemoModel::Bottleneck => None,
    }
}

/// `hepeft demo`.
pub fn run(args: &DemoArgs, ui: &Ui) -> Result<()> {
    if args.backend == Backend::Exact {
        #[cfg(feature = "exact")]
        return super::exact::demo(args, ui);
        #[cfg(not(feature = "exact"))]
        bail!("this build has no exact backend (feature `exact`)");
    }
    let samples = usize::try_from(args.samples).unwrap_or(1);
    let mode = Mode::from(args.mode);
    let _tmp;
    let dir: PathBuf = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            let t = TempDir::new()?;
            let d = t.0.clone();
            _tmp = t;
            d
        }
    };
    let quiet = Ui {
        json: false,
        quiet: true,
    };

    // Server: the private card, and the public card it publishes.
    let server = dir.join("server");
    let client = dir.join("client");
    std::fs::create_dir_all(&server).with_context(|| format!("creating {}", server.display()))?;
    std::fs::create_dir_all(&client).with_context(|| format!("creating {}", client.display()))?;
    let private_card = server.join("adapter.toml");
    let DemoCase {
        adapter,
        label,
        preset,
        features,
        truth,
    } = demo_case(args.model, &server, samples)?;
    // Latency mode floods at the default 40 bits, on parameters chosen for it by `select`
    // (scales near 2^57, a prime reserved for the output); batch mode cannot carry flooding
    // at useful precision (docs/threat-model.md) and runs on the preset without it.
    let flood = mode == Mode::Latency && !args.no_flooding;
    let (params, params_source, params_name) = if flood {
        let sel = hepeft::select::select(
            &hepeft::plan::public_structure(&adapter)?,
            &hepeft::select::SelectRequest {
                flooding: Some(hepeft::plan::FloodingConfig::default()),
                ..Default::default()
            },
        )
        .context("selecting parameters for 40-bit noise flooding")?;
        let path = client.join("params.toml");
        write_atomic(&path, sel.params.to_toml()?.as_bytes())?;
        (
            sel.params,
            ParamsSource::File(path),
            "selected for 40-bit flooding".to_string(),
        )
    } else {
        (
            CkksParams::preset(preset)?,
            ParamsSource::Preset(preset.into()),
            preset.to_string(),
        )
    };
    if mode == Mode::Batch && samples > params.slots() {
        bail!(
            "batch mode takes at most {} samples with {preset}",
            params.slots()
        );
    }
    ui.note(&format!(
        "demo: {label}, {samples} sample(s), working in {}\n",
        dir.display()
    ));
    let t = Instant::now();
    let (public_card, _, _) =
        publish::write_public(&adapter, &dir.join("public"), Some("hepeft demo (public)"))?;
    let t_publish = t.elapsed().as_secs_f64();

    // Client: features.
    let mut inputs = Vec::new();
    for (i, m) in features.iter().enumerate() {
        let p = client.join(if features.len() == 1 {
            "features.npy".to_string()
        } else {
            format!("features{i}.npy")
        });
        save_npy_atomic(&p, m.view())?;
        inputs.push(p);
    }

    let keys_dir = client.join("keys");
    let kg = keygen::run(
        &KeygenArgs {
            params: Some(params_source.clone()),
            backend: Backend::Ckks,
            model: public_card.clone(),
            mode: Some(args.mode),
            out: keys_dir.clone(),
            force: true,
            no_flooding: false,
        },
        &quiet,
    )?;
    let query = client.join("query.ct");
    let enc = encrypt::run(
        &EncryptArgs {
            keys: keys_dir.clone(),
            backend: Backend::Ckks,
            model: public_card.clone(),
            input: inputs,
            out: query.clone(),
        },
        &quiet,
    )?;
    // Server: only eval.keys, params.toml and the query cross over.
    let result = server.join("result.ct");
    let ev = evaluate::run(
        &EvaluateArgs {
            model: private_card.clone(),
            weights: None,
            eval_keys: keys_dir.join(EVAL_KEYS),
            params: Some(ParamsSource::File(keys_dir.join(PARAMS_TOML))),
            backend: Backend::Ckks,
            quant: None,
            calib: None,
            input: query.clone(),
            out: result.clone(),
            flooding: FloodingArgs {
                no_flooding: !flood,
                ..FloodingArgs::default()
            },
        },
        &quiet,
    )?;
    let logits_path = client.join("logits.npy");
    let dec = decrypt::run(
        &DecryptArgs {
            keys: keys_dir.clone(),
            backend: Backend::Ckks,
            model: public_card.clone(),
            input: result.clone(),
            out: logits_path,
            top_k: 1,
        },
        &quiet,
    )?;

    // The plaintext twin.
    let views: Vec<ArrayView2<f64>> = features.iter().map(|m| m.view()).collect();
    let (want, rep) = reference::evaluate_batch(&adapter, &views)?;
    if !rep.is_clean() {
        ui.note("warning: some values left an activation interval; the encrypted result differs there\n");
    }
    let got: &Array2<f64> = &dec.logits;
    let got_flat: Vec<f64> = got.iter().copied().collect();
    let want_flat: Vec<f64> = want.iter().copied().collect();
    let stats = PrecisionStats::relative_to_largest(&got_flat, &want_flat);
    let max_logit = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let predictions: Vec<(usize, usize)> = got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .map(|(g, w)| (argmax(g), argmax(w)))
        .collect();
    let agree = predictions.iter().filter(|(g, w)| g == w).count();
    let plan = public_plan(&adapter, &params, mode)?;

    let report = DemoReport {
        model: label.into(),
        adapter: adapter.summary(),
        params: format!("{params_name}: {}", params.describe()),
        flooding: if flood {
            "40-bit noise flooding, 1 query".into()
        } else {
            "OFF".into()
        },
        plan: plan.summary(),
        mode: mode.name().into(),
        seconds: Timings {
            publish: t_publish,
            keygen: kg.keygen_seconds + kg.write_seconds,
            encrypt: enc.encrypt_seconds,
            evaluate: ev.evaluate_seconds,
            decrypt: dec.decrypt_seconds,
        },
        bytes: Bytes {
            evaluation_keys: kg.eval_keys_bytes,
            public_key: kg.public_key_bytes,
            query: enc.bytes,
            result: ev.result_bytes,
        },
        accuracy: Accuracy {
            samples,
            argmax_agree: agree,
            max_abs_error: stats.max_abs_error,
            max_abs_logit: max_logit,
            precision_bits_min: stats.min_bits,
            precision_bits_median: stats.median_bits,
        },
        label_accuracy: truth.as_ref().map(|(y, _)| {
            let hits = predictions
                .iter()
                .zip(y)
                .filter(|((g, _), t)| g == *t)
                .count();
            hits as f64 / y.len().max(1) as f64
        }),
        labels: truth.as_ref().map(|(y, _)| y.clone()),
        classes: truth
            .as_ref()
            .map(|(_, c)| c.iter().map(|s| s.to_string()).collect()),
        predictions,
        kept: args.keep.clone(),
    };
    let text = render(&report, &ev, &dir, args.keep.is_some());
    ui.report(&report, &text, true)?;
    if agree != samples {
        bail!(
            "the encrypted and plaintext predictions differ on {} sample(s)",
            samples - agree
        );
    }
    Ok(())
}

fn render(r: &DemoReport, ev: &evaluate::EvaluateReport, dir: &Path, kept: bool) -> String {
    let mut s = format!(
        "hepeft demo: {}, {} sample(s), {} mode\n\n",
        r.model, r.accuracy.samples, r.mode
    );
    s.push_str(&r.adapter);
    s.push_str(&format!("parameters: {}\n", r.params));
    s.push_str(&r.plan);
    s.push_str("\nstep                         time\n");
    let rows = [
        ("publish (server)", r.seconds.publish),
        ("keygen (client)", r.seconds.keygen),
        ("encrypt (client)", r.seconds.encrypt),
        ("evaluate (server)", r.seconds.evaluate),
        ("decrypt (client)", r.seconds.decrypt),
    ];
    for (name, t) in rows {
        s.push_str(&format!("  {name:<24} {t:>8.3} s\n"));
    }
    s.push_str(&format!(
        "  (server also spent {:.3} s loading and {:.3} s preparing the weights)\n",
        ev.load_seconds, ev.prepare_seconds
    ));
    s.push_str("\nbytes exchanged\n");
    s.push_str(&format!(
        "  evaluation keys  client -> server, once   {:>12}\n",
        human_bytes(r.bytes.evaluation_keys)
    ));
    s.push_str(&format!(
        "  query            client -> server         {:>12}\n",
        human_bytes(r.bytes.query)
    ));
    s.push_str(&format!(
        "  result           server -> client         {:>12}\n",
        human_bytes(r.bytes.result)
    ));
    let a = &r.accuracy;
    if r.flooding == "OFF" {
        s.push_str(
            "\noutput sanitization: non-output slots masked, result dropped to the output level and\n  \
             re-randomized under the client's public key; NOISE FLOODING OFF (--no-flooding or batch\n  \
             mode): the decryption error depends on the weights (docs/threat-model.md)\n",
        );
    } else {
        s.push_str(&format!(
            "\noutput sanitization: non-output slots masked, result dropped to the output level,\n  \
             re-randomized under the client's public key, {} (docs/threat-model.md)\n",
            r.flooding
        ));
    }
    s.push_str("\naccuracy against the plaintext twin\n");
    s.push_str(&format!(
        "  argmax agreement   {}/{}\n",
        a.argmax_agree, a.samples
    ));
    s.push_str(&format!(
        "  max |error|        {:.3e} (largest |logit| {:.3})\n",
        a.max_abs_error, a.max_abs_logit
    ));
    s.push_str(&format!(
        "  precision          {:.1} bits relative to the largest logit (median {:.1})\n",
        a.precision_bits_min, a.precision_bits_median
    ));
    let name = |c: usize| match &r.classes {
        Some(names) => names.get(c).cloned().unwrap_or_else(|| c.to_string()),
        None => c.to_string(),
    };
    let preds: Vec<String> = r
        .predictions
        .iter()
        .take(16)
        .map(|(g, _)| name(*g))
        .collect();
    s.push_str(&format!(
        "  predicted classes  {}{}\n",
        preds.join(" "),
        if r.predictions.len() > 16 { " ..." } else { "" }
    ));
    if let (Some(labels), Some(acc)) = (&r.labels, r.label_accuracy) {
        let truth: Vec<String> = labels.iter().take(16).map(|&y| name(y)).collect();
        s.push_str(&format!(
            "  true labels        {}{}\n  accuracy           {:.3} on these held-out samples (decrypted predictions vs labels)\n",
            truth.join(" "),
            if labels.len() > 16 { " ..." } else { "" },
            acc
        ));
    }
    if kept {
        s.push_str(&format!(
            "\nfiles kept in {}: server/ (private card, result.ct), public/ (public card), client/ (keys/, features.npy, query.ct, logits.npy)\n",
            dir.display()
        ));
    }
    s
}
