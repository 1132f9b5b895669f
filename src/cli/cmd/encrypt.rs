//! `hepeft encrypt`: features -> encrypted query (client side, public key only).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ndarray::{Array2, ArrayView2, Axis, Slice};
use serde::Serialize;

use hepeft::ckks::{load, save_bound, CiphertextBundle, Encoder, EncryptionKey, PublicKey};
use hepeft::io::format::{digest_hex, FileKind};
use hepeft::model::load::load_features_npy;
use hepeft::plan::Mode;

use super::keygen::{os_rng, KeyDir};
use crate::cli::args::EncryptArgs;
use crate::cli::common::*;
use crate::cli::Ui;

/// What encrypt wrote.
#[derive(Debug, Serialize)]
pub struct EncryptReport {
    pub out: PathBuf,
    pub mode: String,
    pub samples: usize,
    pub queries: usize,
    pub ciphertexts: usize,
    pub bytes: u64,
    pub encrypt_seconds: f64,
}

/// `hepeft encrypt`.
pub fn run(args: &EncryptArgs, ui: &Ui) -> Result<EncryptReport> {
    let keys = KeyDir::open(&args.keys)?;
    let params = &keys.params;
    let adapter = load_model(&args.model, None)?;
    let plan = public_plan(&adapter, params, keys.mode)?;
    keys.check_plan(&plan, &args.model)?;

    let pk_path = keys.path(PUBLIC_KEY);
    check_envelope(&pk_path, FileKind::PublicKey, params, "public key")?;
    check_output(&args.out)?;
    check_output(&meta_path(&args.out))?;
    let pk: PublicKey =
        load(&pk_path, params).with_context(|| format!("reading {}", pk_path.display()))?;
    let key_set = hepeft::session::key_set_id(params, &pk)?;
    let key_id = key_set.hex();
    if key_id != keys.info.key_id {
        bail!(
            "key set mismatch: {} (key id {key_id}) is not the public key {} was written with (key id {})",
            pk_path.display(),
            keys.path(PLAN_JSON).display(),
            keys.info.key_id
        );
    }

    let specs = adapter.inputs();
    if args.input.len() != specs.len() {
        let names: Vec<String> = specs
            .iter()
            .map(|s| format!("{}[{}]", s.name, s.dim))
            .collect();
        bail!(
            "the model has {} input(s) ({}) but {} --input file(s) were given: pass one .npy per input, in that order",
            specs.len(),
            names.join(", "),
            args.input.len()
        );
    }
    let mut features: Vec<Array2<f64>> = Vec::with_capacity(specs.len());
    for (path, spec) in args.input.iter().zip(specs) {
        let m = load_features_npy(path)
            .with_context(|| format!("reading features {}", path.display()))?;
        if m.ncols() != spec.dim {
            bail!(
                "{} has {} features per sample, but the model's input '{}' takes {}",
                path.display(),
                m.ncols(),
                spec.name,
                spec.dim
            );
        }
        features.push(m);
    }
    let samples = features.first().map_or(0, |m| m.nrows());
    if samples == 0 {
        bail!(
            "no samples in {}",
            args.input
                .first()
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    if let Some((p, m)) = args
        .input
        .iter()
        .zip(&features)
        .find(|(_, m)| m.nrows() != samples)
    {
        bail!(
            "{} has {} samples, {} has {samples}",
            p.display(),
            m.nrows(),
            args.input[0].display()
        );
    }

    let t = Instant::now();
    let encoder = Encoder::new(params)?;
    let mut rng = os_rng()?;
    let chunk = match keys.mode {
        Mode::Latency => 1,
        Mode::Batch => params.slots(),
    };
    let mut items = Vec::new();
    let mut queries = Vec::new();
    let mut start = 0;
    while start < samples {
        let end = (start + chunk).min(samples);
        let views: Vec<ArrayView2<f64>> = features
            .iter()
            .map(|m| m.slice_axis(Axis(0), Slice::from(start..end)))
            .collect();
        let cts = plan
            .encrypt_query(&encoder, EncryptionKey::Public(&pk), &views, &mut rng)
            .with_context(|| format!("encrypting samples {start}..{end}"))?;
        items.extend(cts);
        queries.push(end - start);
        start = end;
    }
    let encrypt_time = t.elapsed();

    let bundle = CiphertextBundle {
        digest: params.digest(),
        items,
    };
    // The query's binding (key set, plan, role, shape) travels inside the envelope.
    let binding = hepeft::session::query_binding(key_set, &plan, &queries);
    save_bound(&args.out, params, &bundle, &binding)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let meta = CtMeta {
        format: META_FORMAT.into(),
        content: "query".into(),
        mode: mode_name(keys.mode).into(),
        samples,
        queries: queries.clone(),
        ciphertexts_per_query: plan.input_ciphertexts(),
        structure_digest: digest_hex(&plan.structure_digest()),
        params_digest: digest_hex(&params.digest()),
        key_id,
    };
    write_json(&meta_path(&args.out), &meta)?;
    let report = EncryptReport {
        out: args.out.clone(),
        mode: meta.mode.clone(),
        samples,
        queries: queries.len(),
        ciphertexts: bundle.items.len(),
        bytes: file_size(&args.out),
        encrypt_seconds: encrypt_time.as_secs_f64(),
    };
    let text = format!(
        "encrypt: {samples} sample(s) in {} {} quer{} ({} ciphertexts, {}) in {}\n  wrote {} and {}\n",
        report.queries,
        report.mode,
        if report.queries == 1 { "y" } else { "ies" },
        report.ciphertexts,
        human_bytes(report.bytes),
        secs(encrypt_time),
        args.out.display(),
        meta_path(&args.out).display()
    );
    ui.report(&report, &text, false)?;
    Ok(report)
}
