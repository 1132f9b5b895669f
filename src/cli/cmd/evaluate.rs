//! `hepeft evaluate`: the server's step. Needs the model with its weights, the client's
//! evaluation keys and parameters, and the encrypted query; never a secret key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use hepeft::ckks::{load_bound, save_bound, CiphertextBundle, EvaluationKeys, Evaluator};
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
    /// What was done to the results before writing them (mask, level, flooding figures).
    pub sanitize: Option<hepeft::plan::SanitizeReport>,
}

/// `hepeft evaluate`.
pub fn run(args: &EvaluateArgs, ui: &Ui) -> Result<EvaluateReport> {
    let t_load = Instant::now();
    let (params_file, params_warning) = args
        .params
        .as_ref()
        .context("--params is required with --backend ckks")?
        .load_file()?;
    if let Some(w) = params_warning {
        ui.note(&w);
    }
    let params = params_file.params.clone();
    // The adapter's privacy rests on RLWE under the client's parameters too (the
    // re-randomization hides the evaluation's c_1 only if RLWE is hard): refuse a set that
    // opted out of the security check.
    if params.security().bits().is_none() {
        bail!(
            "the parameter set is marked `security = \"unchecked\"`: the server refuses it, because re-randomizing \
             results (and the client's own privacy) relies on RLWE at a checked security level; use a preset or \
             `hepeft params select`"
        );
    }

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

    check_output(&args.out)?;
    check_output(&meta_path(&args.out))?;
    let (keys, key_binding): (EvaluationKeys, _) = load_bound(&args.eval_keys, &params)
        .with_context(|| format!("reading evaluation keys {}", args.eval_keys.display()))?;
    if keys.public_key().is_none() {
        bail!(
            "{} carries no public key: the server re-randomizes every result with a fresh encryption of zero \
             under the client's public key; regenerate the keys with this version of `hepeft keygen`",
            args.eval_keys.display()
        );
    }
    // Bound to their public key and this plan, covering every key the plan uses.
    let key_set =
        hepeft::session::check_eval_keys(&params, &keys, key_binding.as_ref(), Some(&plan))
            .with_context(|| format!("checking evaluation keys {}", args.eval_keys.display()))?;
    let Some(client_pk) = keys.public_key().cloned() else {
        bail!("{} carries no public key", args.eval_keys.display());
    };
    // The layout and flooding the parameters were selected for, unless told otherwise;
    // refused before any work when the flooding would leave less precision than the set
    // was selected for (the advice names only settings that work).
    let public_adapter = hepeft::plan::public_structure(&adapter)?;
    let ctx = hepeft::select::record::SelectContext {
        adapter: &public_adapter,
        command: "hepeft params select --model <public card>",
    };
    hepeft::select::record::resolve_mode(params_file.record.as_ref(), Some(mode), Some(&ctx))
        .context("the query's layout")?;
    let resolved = hepeft::select::record::resolve_sanitize(
        params_file.record.as_ref(),
        &args.flooding.request(),
        &plan,
        Some(&ctx),
    )?;
    let sanitize_cfg = resolved.config;
    if args.flooding.no_flooding {
        ui.note(crate::cli::args::FloodingArgs::WARNING);
    }
    for w in &resolved.warnings {
        ui.note(w);
    }
    let (query, query_binding): (CiphertextBundle, _) = load_bound(&args.input, &params)
        .with_context(|| format!("reading query {}", args.input.display()))?;
    let per = plan.input_ciphertexts();
    // The query must be a query, under these evaluation keys' key set, for this plan; its
    // sidecar must agree with the envelope.
    let query_binding = hepeft::session::check_query_matches_keys(
        query_binding.as_ref(),
        key_set,
        &plan,
        query.items.len(),
    )
    .with_context(|| format!("checking query {}", args.input.display()))?;
    check_meta_binding(&args.input, &meta, &query_binding, mode)?;
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
    let mut rng = super::keygen::os_rng()?;
    let mut sanitize_report = None;
    let mut out = Vec::with_capacity(meta.queries.len() * plan.output_ciphertexts());
    for (qi, cts) in query.items.chunks(per.max(1)).enumerate() {
        bar.set_message(format!("query {}/{}", qi + 1, meta.queries.len()));
        let base = (qi * stages) as u64;
        let progress = |done: usize, _total: usize| bar.set_position(base + done as u64);
        let res = prepared
            .evaluate_with_progress(&ev, cts, &progress)
            .with_context(|| format!("evaluating query {qi}"))?;
        let (clean, rep) = plan
            .sanitize(&ev, res, &client_pk, &sanitize_cfg, &mut rng)
            .with_context(|| format!("sanitizing the result of query {qi}"))?;
        sanitize_report = Some(rep);
        out.extend(clean);
    }
    bar.finish_and_clear();
    let evaluate_time = t.elapsed();

    let t = Instant::now();
    let bundle = CiphertextBundle {
        digest: params.digest(),
        items: out,
    };
    let result_binding = hepeft::session::result_binding(&query_binding, &plan);
    save_bound(&args.out, &params, &bundle, &result_binding)
        .with_context(|| format!("writing {}", args.out.display()))?;
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
        sanitize: sanitize_report,
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
    let text =
        match report.sanitize.as_ref().and_then(|r| r.flooding.as_ref()) {
            Some(f) => format!(
            "{text}  sanitized: level 0, re-randomized, {}; flooding at {} bits for {} quer(ies): \
             noise 2^{:.1} per slot, about {:.1} bits of precision left ({:.1} bits spent)\n",
            report.sanitize.as_ref().map_or("", |r| r.mask_note.as_str()),
            f.statistical_security,
            f.queries,
            f.slot_std_log2,
            f.precision_bits_after,
            f.cost_bits
        ),
            None => format!(
                "{text}  sanitized: level 0, re-randomized, {}; NO noise flooding\n",
                report
                    .sanitize
                    .as_ref()
                    .map_or("", |r| r.mask_note.as_str())
            ),
        };
    ui.report(&report, &text, false)?;
    Ok(report)
}
