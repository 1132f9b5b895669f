//! `hepeft publish`: the public model card (structure only) the server gives its clients.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use hepeft::model::load::{adapter_files, load_card, ModelCard};
use hepeft::model::Adapter;
use hepeft::plan::public_structure;

use crate::cli::args::PublishArgs;
use crate::cli::common::*;
use crate::cli::Ui;

/// Card file name inside the output directory.
pub const PUBLIC_CARD: &str = "public.toml";

/// What publish wrote.
#[derive(Debug, Serialize)]
pub struct PublishReport {
    pub card: PathBuf,
    pub weights: PathBuf,
    pub inputs: Vec<(String, usize)>,
    pub output_dim: usize,
    pub nodes: usize,
    pub summary: String,
}

/// Writes `public_structure(adapter)` as `dir/public.toml` + `dir/public.safetensors`, each
/// atomically (weights first: the card names them).
pub fn write_public(
    adapter: &Adapter,
    dir: &Path,
    name: Option<&str>,
) -> Result<(PathBuf, PathBuf, Adapter)> {
    let public = public_structure(adapter).context("deriving the public structure")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let card = dir.join(PUBLIC_CARD);
    let files = adapter_files(&public, &card, name).context("writing the public card")?;
    write_atomic(&files.weights_path, &files.weights)?;
    write_atomic(&card, files.card.as_bytes())?;
    // Read it back: the client will.
    let reread = load_card(&card).with_context(|| format!("re-reading {}", card.display()))?;
    Ok((card, files.weights_path, reread))
}

/// `hepeft publish`.
pub fn run(args: &PublishArgs, ui: &Ui) -> Result<PublishReport> {
    let adapter = load_model(&args.model, None)?;
    let name = match &args.name {
        Some(n) => Some(n.clone()),
        None => ModelCard::from_path(&args.model).ok().and_then(|c| c.name),
    };
    let (card, weights, public) = write_public(&adapter, &args.out, name.as_deref())?;
    let report = PublishReport {
        card: card.clone(),
        weights: weights.clone(),
        inputs: public
            .inputs()
            .iter()
            .map(|i| (i.name.clone(), i.dim))
            .collect(),
        output_dim: public.output_dim(),
        nodes: public.nodes().len(),
        summary: public.summary(),
    };
    let text = format!(
        "publish: wrote {} and {} (structure only: every weight, scale and activation coefficient is zero)\n{}",
        card.display(),
        weights.display(),
        report.summary
    );
    ui.report(&report, &text, true)?;
    Ok(report)
}
