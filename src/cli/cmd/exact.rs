//! `--backend exact` for `params select`, `keygen`, `encrypt`, `evaluate` and `decrypt`:
//! thin wrappers over `hepeft::exact` and `hepeft::plan::{quantize, QuantizedPlan}`.
//!
//! Files: `params select` writes the public quantization file (JSON, no weights); `keygen`
//! writes `secret.key`, `eval.keys` and `exact.params` (`HeObject` envelopes carrying the exact
//! parameter digest); queries and results are envelopes of LWE ciphertexts.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use ndarray::Array2;
use serde::Serialize;

use hepeft::exact::{generate_key_set, io as xio, ClientKey, ExactParams, KeySet};
use hepeft::io::object::{load, save};
use hepeft::model::load::load_features_npy;
use hepeft::plan::{quantize, QuantPublic, QuantizeOptions};

use crate::cli::args::{DecryptArgs, EncryptArgs, EvaluateArgs, KeygenArgs, SelectArgs};
use crate::cli::common::*;
use crate::cli::Ui;

/// Name of the exact parameter file in a key directory.
pub const EXACT_PARAMS: &str = "exact.params";

fn read_quant(path: &Path) -> Result<(QuantPublic, ExactParams)> {
    let q: QuantPublic = read_json(path, "exact quantization file")?;
    let p = q
        .checked_params()
        .with_context(|| format!("quantization file {}", path.display()))?;
    Ok((q, p))
}

fn client_key(dir: &Path, params: &ExactParams) -> Result<ClientKey> {
    let path = dir.join(SECRET_KEY);
    load(&path, params).with_context(|| format!("reading {}", path.display()))
}

fn read_cts(
    path: &Path,
    params: &ExactParams,
) -> Result<(u32, Vec<hepeft::exact::ExactCiphertext>)> {
    let cts: xio::ExactCiphertexts =
        load(path, params).with_context(|| format!("reading {}", path.display()))?;
    Ok((cts.p, cts.items))
}

/// `params select --backend exact`: quantize with calibration features, write the public
/// quantization file, report key sizes and the predicted bootstrapping count.
pub fn select(a: &SelectArgs, ui: &Ui) -> Result<()> {
    let adapter = load_model(&a.model, None)?;
    let calib_path = a
        .calib
        .as_ref()
        .context("--calib is required with --backend exact")?;
    let calib = load_features_npy(calib_path)?;
    let base = QuantizeOptions {
        stages: a.stages,
        argmax: a.argmax,
        ..QuantizeOptions::default()
    };
    let (params, opts, choice) = match a.min_agreement {
        None => (ExactParams::default_2m128()?, base, String::new()),
        Some(min) => {
            ensure!(
                (0.0..=1.0).contains(&min),
                "--min-agreement {min} must be a fraction in [0, 1]"
            );
            let max_bytes = a.max_key_mb.map_or(u64::MAX, |mb| (mb * 1e6) as u64);
            let base = QuantizeOptions { stages: 2, ..base };
            let (cands, i, met) =
                hepeft::plan::exact::select(&adapter, calib.view(), &base, min, max_bytes)?;
            let mut text = String::from("candidates (agreement with f64 on the calibration set, estimated cost in coarse bootstrappings, keys transferred):\n");
            for (k, c) in cands.iter().enumerate() {
                let agree = match &c.agreement {
                    Ok(v) => format!("{v:.3}"),
                    Err(e) => format!("refused ({e})"),
                };
                text.push_str(&format!(
                    "  {} {:<11} agreement {agree}, cost {:.0}, keys {}\n",
                    if k == i { "*" } else { " " },
                    c.name,
                    c.cost,
                    human_bytes(c.key_bytes)
                ));
            }
            if !met {
                text.push_str(&format!(
                    "no candidate reaches {min} within the key budget: chose the most accurate\n"
                ));
            }
            let c = cands
                .into_iter()
                .nth(i)
                .context("internal: chosen candidate missing")?;
            (c.params, c.options, text)
        }
    };
    let plan = quantize(&adapter, calib.view(), &opts, &params)?;
    let public = plan.public(&params, &opts);
    write_json(&a.out, &public)?;
    let text = format!(
        "{choice}exact backend: {} (digest {})\n\
         layers: {}, input {} bits at modulus 2^{}, output modulus 2^{}\n\
         predicted PBS per sample: {}\n\
         evaluation keys: {} transferred (seeded), {} in server memory\n\
         ciphertext: {} each ({} per query, {} per result)\n\
         failure probability: per PBS {}, per sample {}\n\
         calibration overflows per hidden layer: {:?}\n\
         wrote {}\n",
        params.vetted_name(),
        params.short_digest(),
        plan.layers.len(),
        public.input_bits,
        public.input_log_modulus,
        public.output_log_modulus,
        public.predicted_pbs,
        human_bytes(public.key_bytes_transferred),
        human_bytes(public.key_bytes_memory),
        human_bytes(public.ciphertext_bytes as u64),
        human_bytes((public.ciphertext_bytes * public.input_dim) as u64),
        human_bytes((public.ciphertext_bytes * public.output_dim) as u64),
        public
            .max_log2_p_fail_pbs
            .map_or("(no bootstrapping)".to_string(), log2_probability),
        log2_probability(public.log2_p_fail_sample),
        plan.report.overflows,
        a.out.display()
    );
    ui.report(&public, &text, true)
}

/// What `--no-flooding` prints on the exact path.
const EXACT_NO_SANITIZE_WARNING: &str = "WARNING: exact results are NOT sanitized (--no-flooding): \
     a result's mask and noise are functions of the weights, and a client can solve for a \
     linear head's weights from one query (docs/threat-model.md). For tests and trusted clients only.\n";

#[derive(Debug, Serialize)]
struct ExactKeygenReport {
    dir: std::path::PathBuf,
    params_digest: String,
    secret_key_bytes: u64,
    eval_keys_bytes: u64,
    keygen_seconds: f64,
}

/// `keygen --backend exact --model quant.json --out DIR`.
pub fn keygen(a: &KeygenArgs, ui: &Ui) -> Result<()> {
    let (q, params) = read_quant(&a.model)?;
    // results are sanitized by default (bootstrappings of re-randomized outputs: every
    // plan needs the bootstrapping keys and the public key); without sanitization a plan
    // with no bootstrapping (a linear probe) needs neither
    let set = if !a.no_flooding {
        KeySet::Sanitizing
    } else if q.predicted_pbs == 0 {
        KeySet::NoBootstrapping
    } else {
        KeySet::Full
    };
    if a.no_flooding {
        ui.note(EXACT_NO_SANITIZE_WARNING);
    }
    if a.out.join(SECRET_KEY).exists() && !a.force {
        bail!(
            "{} already holds a secret key; pass --force to replace it",
            a.out.display()
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut rng = hepeft::session::os_rng().context("seeding the key generator from the OS")?;
    let t = Instant::now();
    let (ck, sk) = generate_key_set(&params, set, &mut rng)?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    save(a.out.join(SECRET_KEY), &params, &ck)?;
    save(a.out.join(EVAL_KEYS), &params, &sk)?;
    save(a.out.join(EXACT_PARAMS), &params, &params)?;
    let r = ExactKeygenReport {
        dir: a.out.clone(),
        params_digest: params.short_digest(),
        secret_key_bytes: file_size(&a.out.join(SECRET_KEY)),
        eval_keys_bytes: file_size(&a.out.join(EVAL_KEYS)),
        keygen_seconds,
    };
    let text = format!(
        "exact keys in {} ({}): eval.keys {}, secret.key {}, keygen {:.2} s\n",
        r.dir.display(),
        r.params_digest,
        human_bytes(r.eval_keys_bytes),
        human_bytes(r.secret_key_bytes),
        r.keygen_seconds
    );
    ui.report(&r, &text, false)
}

/// `encrypt --backend exact --keys DIR --model quant.json --input x.npy --out q.ct`.
pub fn encrypt(a: &EncryptArgs, ui: &Ui) -> Result<()> {
    let (q, params) = read_quant(&a.model)?;
    ensure!(!a.input.is_empty(), "the exact backend needs an --input");
    let ck = client_key(&a.keys, &params)?;
    // several inputs (an adapter with several taps) are concatenated in the order given,
    // which must be the model card's input order
    let mut parts = Vec::with_capacity(a.input.len());
    for path in &a.input {
        parts.push(load_features_npy(path)?);
    }
    let rows = parts.first().map_or(0, |x| x.nrows());
    ensure!(
        parts.iter().all(|x| x.nrows() == rows),
        "the --input files hold different numbers of samples"
    );
    let views: Vec<_> = parts.iter().map(|x| x.view()).collect();
    let x = ndarray::concatenate(ndarray::Axis(1), &views).context("concatenating the inputs")?;
    let mut rng = hepeft::session::os_rng().context("seeding the encryptor from the OS")?;
    let mut xs = Vec::with_capacity(x.nrows() * q.input_dim);
    for row in x.rows() {
        xs.extend(q.quantize_input(row)?);
    }
    let cts = ck.encrypt_seeded(&xs, q.input_log_modulus, &mut rng)?;
    let query = xio::SeededQuery {
        p: q.input_log_modulus,
        cts,
    };
    save(&a.out, &params, &query)?;
    ui.note(&format!(
        "encrypted {} sample(s) x {} features into {} ({})\n",
        x.nrows(),
        q.input_dim,
        a.out.display(),
        human_bytes(file_size(&a.out))
    ));
    Ok(())
}

#[derive(Debug, Serialize)]
struct ExactEvalReport {
    samples: usize,
    /// Results sanitized (re-randomized, re-bootstrapped, flooded; `--no-flooding` turns
    /// it off).
    sanitized: bool,
    /// Bootstrappings of the sanitization (included in `pbs`).
    sanitize_pbs: u64,
    sanitize_seconds: f64,
    pbs: u64,
    predicted_pbs_per_sample: u64,
    expand_seconds: f64,
    evaluate_seconds: f64,
}

/// `evaluate --backend exact --model CARD --calib NPY --quant quant.json --eval-keys FILE
/// --input q.ct --out r.ct`: re-quantizes the model (deterministic), checks it matches the
/// client's quantization file, then evaluates every sample.
pub fn evaluate(a: &EvaluateArgs, ui: &Ui) -> Result<()> {
    let quant = a
        .quant
        .as_ref()
        .context("--quant is required with --backend exact")?;
    let (q, params) = read_quant(quant)?;
    let adapter = load_model(&a.model, a.weights.as_deref())?;
    let calib = load_features_npy(
        a.calib
            .as_ref()
            .context("--calib is required with --backend exact")?,
    )?;
    let plan = quantize(&adapter, calib.view(), &q.options, &params)?;
    ensure!(
        plan.public(&params, &q.options) == q,
        "the model and calibration features do not reproduce {}: re-run `params select --backend exact`",
        quant.display()
    );
    let compressed: hepeft::exact::CompressedServerKey = load(&a.eval_keys, &params)
        .with_context(|| format!("reading {}", a.eval_keys.display()))?;
    let t = Instant::now();
    let sk = compressed.expand(&params)?;
    let expand_seconds = t.elapsed().as_secs_f64();
    let sanitize = !a.flooding.no_flooding;
    if sanitize {
        ensure!(
            sk.public_key().is_some() && sk.has_bootstrapping(),
            "{} were made with `keygen --no-flooding` and cannot sanitize results: re-run \
             `hepeft keygen --backend exact` without it, or evaluate with --no-flooding \
             (results then leak the weights)",
            a.eval_keys.display()
        );
    } else {
        ui.note(EXACT_NO_SANITIZE_WARNING);
    }
    let (p, cts) = read_cts(&a.input, &params)?;
    ensure!(
        p == plan.input_log_modulus(),
        "query modulus 2^{p} != plan input modulus 2^{}",
        plan.input_log_modulus()
    );
    ensure!(
        !cts.is_empty() && cts.len() % plan.input_dim() == 0,
        "query holds {} ciphertexts, not a multiple of the input width {}",
        cts.len(),
        plan.input_dim()
    );
    let t = Instant::now();
    let mut out = Vec::new();
    let mut pbs = 0;
    let mut sanitize_pbs = 0;
    let mut sanitize_seconds = 0.0;
    let mut rng = hepeft::session::os_rng().context("seeding the sanitizer from the OS")?;
    for sample in cts.chunks(plan.input_dim()) {
        let run = plan.evaluate(&sk, sample)?;
        pbs += run.pbs;
        match sk.public_key().filter(|_| sanitize) {
            Some(pk) => {
                let ts = Instant::now();
                let (clean, n) = plan.sanitize_outputs(&sk, pk, &run.outputs, &mut rng)?;
                sanitize_seconds += ts.elapsed().as_secs_f64();
                sanitize_pbs += n;
                pbs += n;
                out.extend(clean);
            }
            None => out.extend(run.outputs),
        }
    }
    let evaluate_seconds = t.elapsed().as_secs_f64();
    let result = xio::ExactCiphertexts {
        p: plan.output_log_modulus(),
        items: out,
    };
    save(&a.out, &params, &result)?;
    let r = ExactEvalReport {
        samples: cts.len() / plan.input_dim(),
        sanitized: sanitize,
        sanitize_pbs,
        sanitize_seconds,
        pbs,
        predicted_pbs_per_sample: plan.predicted_pbs(),
        expand_seconds,
        evaluate_seconds,
    };
    let text = format!(
        "evaluated {} sample(s): {} PBS ({} predicted per sample, {} to sanitize), keys expanded in {:.2} s, evaluation {:.2} s ({:.2} s sanitizing){}\n",
        r.samples,
        r.pbs,
        r.predicted_pbs_per_sample,
        r.sanitize_pbs,
        r.expand_seconds,
        r.evaluate_seconds,
        r.sanitize_seconds,
        if r.sanitized { "" } else { "; results NOT sanitized" }
    );
    ui.report(&r, &text, false)
}

/// `decrypt --backend exact --keys DIR --model quant.json --input r.ct --out logits.npy`.
pub fn decrypt(a: &DecryptArgs, ui: &Ui) -> Result<()> {
    let (q, params) = read_quant(&a.model)?;
    let ck = client_key(&a.keys, &params)?;
    let (p, cts) = read_cts(&a.input, &params)?;
    ensure!(
        p == q.output_log_modulus,
        "result modulus 2^{p} != output modulus 2^{}",
        q.output_log_modulus
    );
    ensure!(
        !cts.is_empty() && cts.len() % q.output_dim == 0,
        "result holds {} ciphertexts, not a multiple of the output width {}",
        cts.len(),
        q.output_dim
    );
    let samples = cts.len() / q.output_dim;
    let ints = ck.decrypt(&cts, p)?;
    let mut logits = Array2::zeros((samples, q.output_dim));
    for (i, chunk) in ints.chunks(q.output_dim).enumerate() {
        for (dst, v) in logits.row_mut(i).iter_mut().zip(q.dequantize(chunk)) {
            *dst = v;
        }
    }
    save_npy_atomic(&a.out, logits.view())?;
    let top = crate::cli::cmd::decrypt::top_k(&logits, a.top_k.max(1));
    let mut text = String::new();
    for (i, t) in top.iter().enumerate() {
        text.push_str(&format!("sample {i}: {t:?}\n"));
    }
    ui.report(&top, &text, true)
}

/// `<= 2^x` for a log2 probability, with bounds below 2^-1000 shown as `< 2^-1000` (a bound that
/// small says only "never"; its digits carry no information).
fn log2_probability(log2_p: f64) -> String {
    if log2_p < -1000.0 {
        "< 2^-1000".to_string()
    } else {
        format!("<= 2^{log2_p:.1}")
    }
}

#[derive(Debug, Serialize)]
struct ExactDemoReport {
    model: String,
    samples: usize,
    calibration_samples: usize,
    predicted_pbs_per_sample: u64,
    pbs: u64,
    eval_keys_bytes: u64,
    query_bytes: u64,
    keygen_seconds: f64,
    evaluate_seconds: f64,
    bit_exact: bool,
    argmax_agree_f64: usize,
    label_accuracy: f64,
    predictions: Vec<usize>,
    labels: Vec<usize>,
}

/// `hepeft demo --backend exact`: the embedded real task (`--model reviews|digits`) on the
/// exact path, in memory: quantize on the last 100 held-out rows, keygen, encrypt the first
/// `--samples` rows (seeded queries), evaluate, decrypt; checked bit for bit against the
/// integer twin and compared with the f64 model and the labels. Cost: keygen (seconds) plus
/// the plan's bootstrappings per sample.
pub fn demo(args: &crate::cli::args::DemoArgs, ui: &Ui) -> Result<()> {
    use hepeft::model::load::{features_from_npy_bytes, load_card};
    let Some(task) = crate::cli::cmd::demo::real_task(args.model) else {
        bail!("demo --backend exact runs the embedded real tasks: --model reviews or digits");
    };
    let dir = tempfile_dir()?;
    let card_path = dir.join("adapter.toml");
    let (feats, labels, classes) = (task.features, task.labels, task.classes);
    std::fs::write(&card_path, task.card_toml)
        .with_context(|| format!("writing {}", card_path.display()))?;
    std::fs::write(dir.join("adapter.safetensors"), task.weights).context("writing the weights")?;
    let adapter = load_card(&card_path)?;
    let all = features_from_npy_bytes(feats).context("embedded features")?;
    let labels = features_from_npy_bytes(labels).context("embedded labels")?;
    let calib_rows = 100usize;
    let samples = usize::try_from(args.samples).unwrap_or(1);
    ensure!(
        samples + calib_rows <= all.nrows(),
        "this task ships {} held-out samples, {calib_rows} of which calibrate: ask for at most {}",
        all.nrows(),
        all.nrows().saturating_sub(calib_rows)
    );
    let calib = all.select(
        ndarray::Axis(0),
        &(all.nrows() - calib_rows..all.nrows()).collect::<Vec<_>>(),
    );
    let x = all.select(ndarray::Axis(0), &(0..samples).collect::<Vec<_>>());
    let params = ExactParams::default_2m128()?;
    let opts = QuantizeOptions::default();
    let plan = quantize(&adapter, calib.view(), &opts, &params)?;
    ui.note(&format!(
        "demo (exact): {}, {samples} sample(s), {} PBS per sample\n",
        adapter.summary().lines().next().unwrap_or("adapter"),
        plan.predicted_pbs()
    ));
    let mut rng = hepeft::session::os_rng().context("seeding the key generator from the OS")?;
    // results sanitized as `evaluate --backend exact` does, unless --no-flooding
    let sanitize = !args.no_flooding;
    if !sanitize {
        ui.note(EXACT_NO_SANITIZE_WARNING);
    }
    let set = match (sanitize, plan.predicted_pbs()) {
        (true, _) => KeySet::Sanitizing,
        (false, 0) => KeySet::NoBootstrapping,
        (false, _) => KeySet::Full,
    };
    let t = Instant::now();
    let (ck, compressed) = generate_key_set(&params, set, &mut rng)?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    let eval_keys_bytes = xio::server_key_to_payload(&compressed)?.len() as u64;
    let sk = compressed.expand(&params)?;
    let (want, _) = hepeft::model::evaluate_exact_fn_batch(&adapter, &[x.view()])?;
    let mut predictions = Vec::with_capacity(samples);
    let mut bit_exact = true;
    let mut pbs = 0;
    let mut query_bytes = 0u64;
    let mut evaluate_seconds = 0.0;
    let mut agree = 0usize;
    for (i, row) in x.rows().into_iter().enumerate() {
        let xq = plan.quantize_input(row)?;
        let q = ck.encrypt_seeded(&xq, plan.input_log_modulus(), &mut rng)?;
        query_bytes += xio::seeded_to_payload(plan.input_log_modulus(), &q)?.len() as u64;
        let cts = q.expand(&params)?;
        let t = Instant::now();
        let run = plan.evaluate(&sk, &cts)?;
        pbs += run.pbs;
        let outputs = match sk.public_key().filter(|_| sanitize) {
            Some(pk) => {
                let (clean, n) = plan.sanitize_outputs(&sk, pk, &run.outputs, &mut rng)?;
                pbs += n;
                clean
            }
            None => run.outputs,
        };
        evaluate_seconds += t.elapsed().as_secs_f64();
        let y = plan.decrypt_output(&ck, &outputs)?;
        bit_exact &= y == plan.reference(&xq)?;
        let got = argmax_i64(&y);
        let f64_class =
            want.row(i)
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (k, &v)| {
                        if v > b.1 {
                            (k, v)
                        } else {
                            b
                        }
                    },
                );
        agree += usize::from(got == f64_class.0);
        predictions.push(got);
    }
    let truth: Vec<usize> = labels.iter().take(samples).map(|&y| y as usize).collect();
    let hits = predictions
        .iter()
        .zip(&truth)
        .filter(|(a, b)| a == b)
        .count();
    let r = ExactDemoReport {
        model: adapter
            .summary()
            .lines()
            .next()
            .unwrap_or("adapter")
            .to_string(),
        samples,
        calibration_samples: calib_rows,
        predicted_pbs_per_sample: plan.predicted_pbs(),
        pbs,
        eval_keys_bytes,
        query_bytes,
        keygen_seconds,
        evaluate_seconds,
        bit_exact,
        argmax_agree_f64: agree,
        label_accuracy: hits as f64 / samples.max(1) as f64,
        predictions,
        labels: truth,
    };
    let name = |k: usize| classes.get(k).copied().unwrap_or("?");
    let mut text = format!(
        "exact backend ({}), {} PBS per sample{}\n\
         keys: eval.keys {} (keygen {:.2} s); queries {} in all\n",
        params.vetted_name(),
        r.predicted_pbs_per_sample,
        if sanitize {
            ", results sanitized"
        } else {
            ", results NOT sanitized (--no-flooding)"
        },
        human_bytes(r.eval_keys_bytes),
        r.keygen_seconds,
        human_bytes(r.query_bytes)
    );
    for (i, (p, t)) in r.predictions.iter().zip(&r.labels).enumerate() {
        text.push_str(&format!(
            "sample {i}: predicted {}, label {}\n",
            name(*p),
            name(*t)
        ));
    }
    text.push_str(&format!(
        "evaluation {:.2} s ({} PBS); decrypted = integer twin: {}; argmax = f64 on {}/{}; label accuracy {:.3}\n",
        r.evaluate_seconds, r.pbs, r.bit_exact, r.argmax_agree_f64, r.samples, r.label_accuracy
    ));
    let _ = std::fs::remove_dir_all(&dir);
    ui.report(&r, &text, true)?;
    ensure!(
        r.bit_exact,
        "the decrypted outputs differ from the integer twin"
    );
    Ok(())
}

fn argmax_i64(y: &[i64]) -> usize {
    y.iter()
        .enumerate()
        .fold(
            (0usize, i64::MIN),
            |b, (k, &v)| if v > b.1 { (k, v) } else { b },
        )
        .0
}

/// A fresh private directory under the system temporary directory.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let mut rng = hepeft::session::os_rng().context("seeding the temporary name from the OS")?;
    let n: u64 = rand::Rng::random(&mut rng);
    let d = std::env::temp_dir().join(format!("hepeft-exact-demo-{n:016x}"));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
