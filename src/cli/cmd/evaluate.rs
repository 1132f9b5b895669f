//! `hepeft evaluate`: the server's step. Needs the model with its weights, the client's
//! evaluation keys and parameters, and the encrypted query; never a secret key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use hepeft::ckks::{load, save, CiphertextBundle, EvaluationKeys, Evaluator};
use hepeft::io::format::{digest_hex, FileKind};
use hepeft::plan::Plan;

use crate::cli::args::EvaluateArgs;
use crate::cli::common::*;
use crate::cli::Ui;

/// What evaluate did.
#[derive(Debug, Serialize)]
pub struct EvaluateReport {
    pub out: PathBuf,
    pub mode: String,
    pub samples: usize,
    pub queries: usize,
    pub key_switches_per_query: usize,
    pub result_ciphertexts: usize,
    pub result_bytes: u64,
    pub load_seconds: f64,
    pub prepare_seconds: f64,
    pub evaluate_seconds: f64,
    pub write_seconds: f64,
}

/// `hepeft evaluate`.
pub fn run(args: &EvaluateArgs, ui: &Ui) -> Result<EvaluateReport> {
    let t_load = Instant::now();
    let params = args
        .params
        .as_ref()
        .context("--params is required with --backend ckks")?
        .load()?;

    // The evaluation keys: the kind first (a secret key must never get here), then the
    // parameters they were made for.
    let header = read_header(&args.eval_keys)
        .with_context(|| format!("reading evaluation keys {}", args.eval_keys.display()))?;
    if header.kind == FileKind::SecretKey {
        bail!(
            "{} is a secret key: the server must never receive the secret key; pass the {EVAL_KEYS} file written by \
             `hepeft keygen` (and delete this copy from the server)",
            args.eval_keys.display()
        );
    }
    check_envelope(
        &args.eval_keys,
        FileKind::EvaluationKeys,
        &params,
        "evaluation keys",
    )?;

    // The query: its metadata, then its header.
    let meta = read_meta(&args.input, "query", &params)?;
    let mode = parse_mode(&meta.mode)?;
    check_envelope(&args.input, FileKind::Ciphertext, &params, "query")?;

    // The model: the client compiled its plan from the public structure; so do we, to check
    // we agree, then compile the real adapter (same structure) to evaluate.
    let adapter = load_model(&args.model, args.weights.as_deref())?;
    if all_weights_zero(&adapter) {
        ui.note(&format!(
            "warning: every weight of {} is zero (is this the public card?); the result will be zero\n",
            args.model.display()
        ));
    }
    let public = public_plan(&adapter, &params, mode)?;
    let public_digest = digest_hex(&public.structure_digest());
    if public_digest != meta.structure_digest {
        bail!(
            "model mismatch: the query was encrypted for a plan with structure digest {}, but {} compiles to {} \
             ({} mode, parameters {}): the client used another model card or mode",
            meta.structure_digest.chars().take(16).collect::<String>(),
            args.model.display(),
            &public_digest[..16],
            meta.mode,
            params.digest_short()
        );
    }
    let plan =
        Plan::compile(&adapter, &params, plan_options(mode)).context("compiling the model")?;
    if plan.structure_digest() != public.structure_digest() {
        bail!("internal error: the model and its public structure compile to different plans");
    }
    if meta.ciphertexts_per_query != plan.input_ciphertexts() {
        bail!(
            "the query metadata announces {} ciphertexts per query, the plan takes {}",
            meta.ciphertexts_per_query,
            plan.input_ciphertexts()
        );
    }

    let keys: EvaluationKeys = load(&args.eval_keys, &params)
        .with_context(|| format!("reading evaluation keys {}", args.eval_keys.display()))?;
    let have = keys.galois_elements();
    let missing: Vec<u64> = plan
        .galois_elements()
        .into_iter()
        .filter(|g| !have.contains(g))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing Galois keys: the plan rotates with Galois elements {missing:?}, which {} lacks ({} of {} present); \
             the keys were generated for another model or mode: run keygen with this model card",
            args.eval_keys.display(),
            plan.galois_elements().len() - missing.len(),
            plan.galois_elements().len()
        );
    }
    if plan.needs_relin() && keys.relin().is_none() {
        bail!(
            "missing relinearization key: the plan multiplies ciphertexts but {} has no relinearization key; \
             the keys were generated for another model: run keygen with this model card",
            args.eval_keys.display()
        );
    }
    let query: CiphertextBundle = load(&args.input, &params)
        .with_context(|| format!("reading query {}", args.input.display()))?;
    let per = plan.input_ciphertexts();
    if query.items.len() != meta.queries.len() * per {
        bail!(
            "{} holds {} ciphertexts, its metadata announces {} quer(ies) of {per}",
            args.input.display(),
            query.items.len(),
            meta.queries.len()
        );
    }
    let load_time = t_load.elapsed();

    let t = Instant::now();
    let prepared = plan.prepare().context("preparing the model's weights")?;
    let ev = Evaluator::with_keys(&params, Arc::new(keys))?;
    let prepare_time = t.elapsed();

    let stages = plan.report().len().max(1);
    let total = (meta.queries.len() * stages) as u64;
    let bar = if ui.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "evaluate [{elapsed_precise}] {bar:30} {pos}/{len} stages ({msg})",
        ) {
            b.set_style(style);
        }
        b
    };
    let t = Instant::now();
    let mut out = Vec::with_capacity(meta.queries.len() * plan.output_ciphertexts());
    for (qi, cts) in query.items.chunks(per.max(1)).enumerate() {
        bar.set_message(format!("query {}/{}", qi + 1, meta.queries.len()));
        let base = (qi * stages) as u64;
        let progress = |done: usize, _total: usize| bar.set_position(base + done as u64);
        let res = prepared
            .evaluate_with_progress(&ev, cts, &progress)
            .with_context(|| format!("evaluating query {qi}"))?;
        out.extend(res);
    }
    bar.finish_and_clear();
    let evaluate_time = t.elapsed();

    let t = Instant::now();
    let bundle = CiphertextBundle {
        digest: params.digest(),
        items: out,
    };
    save(&args.out, &params, &bundle).with_context(|| format!("writing {}", args.out.display()))?;
    let result_meta = CtMeta {
        content: "result".into(),
        ciphertexts_per_query: plan.output_ciphertexts(),
        ..meta.clone()
    };
    write_json(&meta_path(&args.out), &result_meta)?;
    let write_time = t.elapsed();

    let report = EvaluateReport {
        out: args.out.clone(),
        mode: meta.mode.clone(),
        samples: meta.samples,
        queries: meta.queries.len(),
        key_switches_per_query: plan.key_switches(),
        result_ciphertexts: bundle.items.len(),
        result_bytes: file_size(&args.out),
        load_seconds: load_time.as_secs_f64(),
        prepare_seconds: prepare_time.as_secs_f64(),
        evaluate_seconds: evaluate_time.as_secs_f64(),
        write_seconds: write_time.as_secs_f64(),
    };
    let text = format!(
        "evaluate: {} sample(s) in {} {} quer{}, {} key switches per query\n  load {}, prepare {}, evaluate {}, write {}\n  wrote {} ({} ciphertexts, {}) and {}\n",
        report.samples,
        report.queries,
        report.mode,
        if report.queries == 1 { "y" } else { "ies" },
        report.key_switches_per_query,
        secs(load_time),
        secs(prepare_time),
        secs(evaluate_time),
        secs(write_time),
        args.out.display(),
        report.result_ciphertexts,
        human_bytes(report.result_bytes),
        meta_path(&args.out).display()
    );
    ui.report(&report, &text, false)?;
    Ok(report)
}
