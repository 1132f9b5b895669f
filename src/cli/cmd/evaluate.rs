//! `hepeft evaluate`: the server's step. Needs the model with its weights, the client's
//! evaluation keys and parameters, and the encrypted query; never a secret key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use hepeft::ckks::{load_bound, EvaluationKeys};
use hepeft::io::format::{digest_hex, FileKind};
use hepeft::plan::Plan;
use hepeft::select::record::{self, SelectContext};
use hepeft::session::{self, CtMeta, Query, Role, Server};

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
    let params_file = required_params_file(args.params.as_ref(), ui)?;
    let params = params_file.params.clone();
    session::check_params_secure(&params)?;
    check_eval_keys_file(args, &params)?;
    let meta = CtMeta::read(&args.input, "query", &params)?;
    let mode = meta.mode()?;
    check_envelope(&args.input, FileKind::Ciphertext, &params, "query")?;
    let adapter = load_model(&args.model, args.weights.as_deref())?;
    let plan = server_plan(args, &adapter, &params, &meta, ui)?;
    check_output(&args.out)?;
    check_output(&meta_path(&args.out))?;
    let (keys, key_binding): (EvaluationKeys, _) = load_bound(&args.eval_keys, &params)
        .with_context(|| format!("reading evaluation keys {}", args.eval_keys.display()))?;
    // Carrying their public key, bound to it and this plan, covering every key it uses.
    let key_set = session::server::check_keys(&plan, &keys, key_binding.as_ref())
        .with_context(|| format!("checking evaluation keys {}", args.eval_keys.display()))?;
    let sanitize = sanitize_config(args, &params_file, &adapter, mode, &plan, ui)?;
    session::check_flooding(&plan, sanitize.flooding.as_ref())?;
    let query = Query::load(&args.input, &params, Role::Query)
        .with_context(|| format!("reading query {}", args.input.display()))?;
    // A query under these keys' key set, for this plan; its sidecar agrees with it.
    let binding =
        session::check_query_matches_keys(Some(&query.binding), key_set, &plan, query.items.len())
            .with_context(|| format!("checking query {}", args.input.display()))?;
    meta.check_binding(&args.input, &binding, mode)?;
    let load_time = t_load.elapsed();

    let t = Instant::now();
    let server = Server::new(plan, sanitize).context("preparing the model's weights")?;
    let prepare_time = t.elapsed();

    let stages = server.plan().report().len().max(1);
    let bar = progress_bar(ui, (meta.queries.len() * stages) as u64);
    let progress = |q: usize, done: usize, _total: usize| {
        bar.set_message(format!("query {}/{}", q + 1, meta.queries.len()));
        bar.set_position((q * stages + done) as u64);
    };
    let t = Instant::now();
    let (result, sanitize_report) = server
        .evaluate_queries(Arc::new(keys), &query, &mut session::os_rng()?, &progress)
        .context("evaluating the query")?;
    bar.finish_and_clear();
    let evaluate_time = t.elapsed();

    let t = Instant::now();
    result
        .save(&args.out, &params)
        .with_context(|| format!("writing {}", args.out.display()))?;
    result.meta(server.plan()).write(&args.out)?;
    let report = EvaluateReport {
        out: args.out.clone(),
        mode: meta.mode.clone(),
        samples: meta.samples,
        queries: meta.queries.len(),
        key_switches_per_query: server.plan().key_switches(),
        result_ciphertexts: result.items.len(),
        result_bytes: file_size(&args.out),
        load_seconds: load_time.as_secs_f64(),
        prepare_seconds: prepare_time.as_secs_f64(),
        evaluate_seconds: evaluate_time.as_secs_f64(),
        write_seconds: t.elapsed().as_secs_f64(),
        sanitize: sanitize_report,
    };
    ui.report(&report, &report_text(&report), false)?;
    Ok(report)
}

/// The layout and flooding the parameters were selected for, unless the flags say
/// otherwise; refused before any work when the flooding would leave less precision than
/// the set was selected for (the advice names only settings that work).
fn sanitize_config(
    args: &EvaluateArgs,
    params_file: &hepeft::select::ParamsFile,
    adapter: &hepeft::model::Adapter,
    mode: hepeft::plan::Mode,
    plan: &Plan,
    ui: &Ui,
) -> Result<hepeft::plan::SanitizeConfig> {
    let public_adapter = hepeft::plan::public_structure(adapter)?;
    let ctx = SelectContext {
        adapter: &public_adapter,
        command: "hepeft params select --model <public card>",
    };
    record::resolve_mode(params_file.record.as_ref(), Some(mode), Some(&ctx))
        .context("the query's layout")?;
    // The flooding is sized from this adapter's calibrated public error bound, computed
    // here from the weights (never taken from the parameter record).
    let profile = if args.flooding.no_flooding {
        None
    } else {
        let calib = crate::cli::common::calibration_features(adapter, args.calib.as_deref())?;
        hepeft::select::calibrate(adapter, calib.as_deref())
            .context("calibrating the adapter's error bound")?
    };
    let resolved = record::resolve_sanitize(
        params_file.record.as_ref(),
        &record::FloodingRequest {
            profile,
            ..args.flooding.request()
        },
        plan,
        Some(&ctx),
    )?;
    if args.flooding.no_flooding {
        ui.note(crate::cli::args::FloodingArgs::WARNING);
    }
    for w in &resolved.warnings {
        ui.note(w);
    }
    Ok(resolved.config)
}

/// The evaluation keys' file: never a secret key (the kind is read first), then the
/// parameters they were made for.
pub(crate) fn check_eval_keys_file(
    args: &EvaluateArgs,
    params: &hepeft::ckks::CkksParams,
) -> Result<()> {
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
        params,
        "evaluation keys",
    )?;
    Ok(())
}

/// The plan to evaluate: the client compiled its plan from the public structure; so do
/// we, to check we agree, then compile the real adapter (same structure).
fn server_plan(
    args: &EvaluateArgs,
    adapter: &hepeft::model::Adapter,
    params: &hepeft::ckks::CkksParams,
    meta: &CtMeta,
    ui: &Ui,
) -> Result<Plan> {
    if all_weights_zero(adapter) {
        ui.note(&format!(
            "warning: every weight of {} is zero (is this the public card?); the result will be zero\n",
            args.model.display()
        ));
    }
    let options = meta.plan_options()?;
    let public = public_plan_with(adapter, params, options)?;
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
    let plan = Plan::compile(adapter, params, options).context("compiling the model")?;
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
    Ok(plan)
}

fn progress_bar(ui: &Ui, total: u64) -> ProgressBar {
    if ui.quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "evaluate [{elapsed_precise}] {bar:30} {pos}/{len} stages ({msg})",
    ) {
        b.set_style(style);
    }
    b
}

fn report_text(report: &EvaluateReport) -> String {
    let text = format!(
        "evaluate: {} sample(s) in {} {} quer{}, {} key switches per query\n  load {}, prepare {}, evaluate {}, write {}\n  wrote {} ({} ciphertexts, {}) and {}\n",
        report.samples,
        report.queries,
        report.mode,
        if report.queries == 1 { "y" } else { "ies" },
        report.key_switches_per_query,
        secs_f(report.load_seconds),
        secs_f(report.prepare_seconds),
        secs_f(report.evaluate_seconds),
        secs_f(report.write_seconds),
        report.out.display(),
        report.result_ciphertexts,
        human_bytes(report.result_bytes),
        meta_path(&report.out).display()
    );
    let mask = report
        .sanitize
        .as_ref()
        .map_or("", |r| r.mask_note.as_str());
    let level = report.sanitize.as_ref().map_or(0, |r| r.output_level.get());
    match report.sanitize.as_ref().and_then(|r| r.flooding.as_ref()) {
        Some(f) => format!(
            "{text}  sanitized: level {level}, re-randomized, {mask}; flooding at {} bits for {} quer(ies): \
             noise 2^{:.1} per slot, about {:.1} bits of precision left ({:.1} bits spent)\n",
            f.statistical_security, f.queries, f.slot_std_log2, f.precision_bits_after, f.cost_bits
        ),
        None => format!(
            "{text}  sanitized: level {level}, re-randomized, {mask}; NO noise flooding\n"
        ),
    }
}

fn secs_f(s: f64) -> String {
    secs(std::time::Duration::from_secs_f64(s))
}
