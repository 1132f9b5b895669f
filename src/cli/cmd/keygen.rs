//! `hepeft keygen`: the client's keys for one model, parameter set and layout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::Serialize;

use hepeft::plan::Mode;
use hepeft::session::{self, ClientKeys, KeyDir};

use crate::cli::args::KeygenArgs;
use crate::cli::common::*;
use crate::cli::Ui;

/// What keygen wrote.
#[derive(Debug, Serialize)]
pub struct KeygenReport {
    pub dir: PathBuf,
    pub params: String,
    pub params_digest: String,
    pub mode: String,
    /// Most client pre-rotated copies per input segment (1: replicated layout).
    pub pre_rotate: usize,
    /// Batch mode: input features per query ciphertext (1: one per feature).
    pub batch_pack: usize,
    /// Ciphertexts per query.
    pub query_ciphertexts: usize,
    pub structure_digest: String,
    pub key_id: String,
    pub galois_keys: usize,
    pub relinearization: bool,
    pub secret_key_bytes: u64,
    pub public_key_bytes: u64,
    pub eval_keys_bytes: u64,
    pub keygen_seconds: f64,
    pub write_seconds: f64,
}

/// `hepeft keygen`.
pub fn run(args: &KeygenArgs, ui: &Ui) -> Result<KeygenReport> {
    let file = required_params_file(args.params.as_ref(), ui)?;
    let params = file.params.clone();
    let adapter = load_model(&args.model, None)?;
    // The layout the parameters were selected for, unless told otherwise (a different one
    // is refused, naming the flag that works).
    let public_adapter = hepeft::plan::public_structure(&adapter)?;
    let command = format!("hepeft params select --model {}", args.model.display());
    let mode = hepeft::select::record::resolve_mode(
        file.record.as_ref(),
        args.mode.map(Mode::from),
        Some(&hepeft::select::record::SelectContext {
            adapter: &public_adapter,
            command: &command,
        }),
    )?;
    let options = hepeft::plan::PlanOptions {
        mode,
        pre_rotate: args.pre_rotate.unwrap_or(hepeft::plan::PRE_ROTATE_AUTO),
        batch_pack: args.batch_pack,
        ..Default::default()
    };
    let plan = public_plan_with(&adapter, &params, options)?;
    session::keydir::check_writable(&args.out, args.force)?;
    let t = Instant::now();
    let keys =
        ClientKeys::generate(&plan, &mut session::os_rng()?).context("generating the keys")?;
    let keygen_time = t.elapsed();
    let t = Instant::now();
    // The record travels with the parameters to the server; parameters without one get the
    // layout of these keys recorded.
    let record = file
        .record
        .clone()
        .unwrap_or_else(|| hepeft::select::SelectionRecord::keygen(mode));
    let keydir = KeyDir::create_with_record(&args.out, &plan, &keys, args.force, Some(&record))?;
    let write_time = t.elapsed();

    let dir = &args.out;
    let info = &keydir.info;
    let report = KeygenReport {
        dir: dir.clone(),
        params: args.params.as_ref().map(|p| p.label()).unwrap_or_default(),
        params_digest: params.digest_short(),
        mode: info.mode.clone(),
        pre_rotate: info.pre_rotate,
        batch_pack: info.batch_pack,
        query_ciphertexts: plan.input_ciphertexts(),
        structure_digest: info.structure_digest[..16].to_string(),
        key_id: info.key_id.clone(),
        galois_keys: info.galois_elements.len(),
        relinearization: info.relinearization,
        secret_key_bytes: file_size(&keydir.path(SECRET_KEY)),
        public_key_bytes: file_size(&keydir.path(PUBLIC_KEY)),
        eval_keys_bytes: file_size(&keydir.path(EVAL_KEYS)),
        keygen_seconds: keygen_time.as_secs_f64(),
        write_seconds: write_time.as_secs_f64(),
    };
    let text = format!(
        "keygen: {} ({} mode{}), {} Galois key(s){}, in {}\n  wrote {}: {SECRET_KEY} ({}, mode 0600), {PUBLIC_KEY} ({}), {EVAL_KEYS} ({}), {PARAMS_TOML}, {PLAN_JSON}\n  send {EVAL_KEYS} and {PARAMS_TOML} to the server; never {SECRET_KEY}\n",
        params.describe(),
        report.mode,
        layout_note(&report, &plan),
        report.galois_keys,
        if report.relinearization { " + relinearization key" } else { "" },
        secs(keygen_time),
        dir.display(),
        human_bytes(report.secret_key_bytes),
        human_bytes(report.public_key_bytes),
        human_bytes(report.eval_keys_bytes),
    );
    ui.report(&report, &text, false)?;
    Ok(report)
}

/// The input layout's part of keygen's summary line (empty for the default layouts).
fn layout_note(report: &KeygenReport, plan: &hepeft::plan::Plan) -> String {
    if report.pre_rotate > 1 {
        format!(
            ", client pre-rotated input: {} ciphertexts per query",
            report.query_ciphertexts
        )
    } else if report.batch_pack > 1 {
        format!(
            ", {} features per query ciphertext: {} ciphertexts and at most {} samples per query",
            report.batch_pack,
            report.query_ciphertexts,
            plan.samples_per_query()
        )
    } else {
        String::new()
    }
}
