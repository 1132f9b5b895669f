//! `hepeft encrypt`: features -> encrypted query (client side, public key only).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use hepeft::io::format::FileKind;
use hepeft::model::load::load_features_npy;
use hepeft::model::InputSpec;
use hepeft::session::{self, Client, KeyDir};

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
    let plan = public_plan_with(&adapter, params, keys.info.plan_options()?)?;
    check_envelope(
        &keys.path(PUBLIC_KEY),
        FileKind::PublicKey,
        params,
        "public key",
    )?;
    check_output(&args.out)?;
    check_output(&meta_path(&args.out))?;
    let client = Client::for_encryption(&keys, plan, &args.model)?;
    let features = read_features(&args.input, adapter.inputs())?;

    let t = Instant::now();
    let views: Vec<ArrayView2<f64>> = features.iter().map(|m| m.view()).collect();
    let query = client
        .encrypt_samples(&views, &mut session::os_rng()?)
        .context("encrypting the samples")?;
    let encrypt_time = t.elapsed();

    // The query's binding (key set, plan, role, shape) travels inside the envelope.
    query
        .save(&args.out, params)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let meta = query.meta(client.plan());
    meta.write(&args.out)?;
    let report = EncryptReport {
        out: args.out.clone(),
        mode: meta.mode.clone(),
        samples: meta.samples,
        queries: meta.queries.len(),
        ciphertexts: query.items.len(),
        bytes: file_size(&args.out),
        encrypt_seconds: encrypt_time.as_secs_f64(),
    };
    let text = format!(
        "encrypt: {} sample(s) in {} {} quer{} ({} ciphertexts, {}) in {}\n  wrote {} and {}\n",
        report.samples,
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

/// Reads one `.npy` feature matrix per model input, checking the count, each width and
/// that every file has the same, non-zero number of samples.
fn read_features(paths: &[PathBuf], specs: &[InputSpec]) -> Result<Vec<Array2<f64>>> {
    if paths.len() != specs.len() {
        let names: Vec<String> = specs
            .iter()
            .map(|s| format!("{}[{}]", s.name, s.dim))
            .collect();
        bail!(
            "the model has {} input(s) ({}) but {} --input file(s) were given: pass one .npy per input, in that order",
            specs.len(),
            names.join(", "),
            paths.len()
        );
    }
    let mut features: Vec<Array2<f64>> = Vec::with_capacity(specs.len());
    for (path, spec) in paths.iter().zip(specs) {
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
    let first = paths.first().map_or(Path::new(""), |p| p.as_path());
    let samples = features.first().map_or(0, |m| m.nrows());
    if samples == 0 {
        bail!("no samples in {}", first.display());
    }
    if let Some((p, m)) = paths
        .iter()
        .zip(&features)
        .find(|(_, m)| m.nrows() != samples)
    {
        bail!(
            "{} has {} samples, {} has {samples}",
            p.display(),
            m.nrows(),
            first.display()
        );
    }
    Ok(features)
}
