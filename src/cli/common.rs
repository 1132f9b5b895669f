//! Helpers shared by the commands: loading models and key directories, the JSON metadata
//! written next to queries and results, atomic writes, and up-front consistency checks.

use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use ndarray::ArrayView2;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use hepeft::ckks::CkksParams;
use hepeft::io::format::{
    digest_hex, peek_header, write_bytes_atomic, FileKind, Header, HEADER_LEN,
};
use hepeft::model::load::{features_to_npy_bytes, load_card, ModelCard, PeftLora, TensorStore};
use hepeft::model::{Adapter, Op};
use hepeft::plan::{Mode, Plan};

pub use hepeft::session::{
    meta_path, plan_options, CtMeta, EVAL_KEYS, META_FORMAT, PARAMS_TOML, PLAN_FORMAT, PLAN_JSON,
    PUBLIC_KEY, SECRET_KEY,
};

/// Loads the adapter a card describes, optionally with another weights file.
pub fn load_model(card: &Path, weights: Option<&Path>) -> Result<Adapter> {
    let adapter = match weights {
        None => {
            load_card(card).with_context(|| format!("loading model card {}", card.display()))?
        }
        Some(w) => {
            let parsed = ModelCard::from_path(card)
                .with_context(|| format!("reading model card {}", card.display()))?;
            let store = TensorStore::from_path(w)
                .with_context(|| format!("reading weights {}", w.display()))?;
            let base = card.parent().unwrap_or_else(|| Path::new("."));
            let peft = match &parsed.peft {
                Some(p) => Some(
                    PeftLora::load(base.join(&p.weights), base.join(&p.config))
                        .context("reading the card's PEFT checkpoint")?,
                ),
                None => None,
            };
            parsed
                .to_adapter(Some(&store), peft.as_ref())
                .with_context(|| {
                    format!(
                        "building the model of {} with weights {}",
                        card.display(),
                        w.display()
                    )
                })?
        }
    };
    Ok(adapter)
}

/// Whether every weight, bias and affine vector of `adapter` is zero (a public card).
pub fn all_weights_zero(adapter: &Adapter) -> bool {
    adapter.nodes().iter().all(|n| match &n.op {
        Op::Linear { weight, bias } => {
            weight.iter().all(|v| *v == 0.0)
                && bias.as_ref().is_none_or(|b| b.iter().all(|v| *v == 0.0))
        }
        Op::LowRank { a, b, bias, .. } => {
            (a.iter().all(|v| *v == 0.0) || b.iter().all(|v| *v == 0.0))
                && bias.as_ref().is_none_or(|b| b.iter().all(|v| *v == 0.0))
        }
        Op::Affine { mul, add } => mul.iter().all(|v| *v == 0.0) && add.iter().all(|v| *v == 0.0),
        _ => true,
    })
}

/// The plan a client compiles: from the public structure of the card's adapter, so a public
/// and a private card give the same plan.
pub fn public_plan(adapter: &Adapter, params: &CkksParams, mode: Mode) -> Result<Plan> {
    public_plan_with(adapter, params, plan_options(mode))
}

/// [`public_plan`] with every plan option (the input layout among them) given.
pub fn public_plan_with(
    adapter: &Adapter,
    params: &CkksParams,
    options: hepeft::plan::PlanOptions,
) -> Result<Plan> {
    hepeft::session::public_plan_with(adapter, params, options).with_context(|| {
        format!(
            "compiling the model for parameters {} in {} mode{}",
            params.digest_short(),
            options.mode,
            if options.pre_rotate > 1 {
                format!(
                    " with up to {} pre-rotated input copies",
                    options.pre_rotate
                )
            } else {
                String::new()
            }
        )
    })
}

/// First 16 hex digits of a digest.
pub fn short(digest: &[u8; 32]) -> String {
    digest_hex(digest).chars().take(16).collect()
}

/// SHA-256 of a file's bytes, first 16 hex digits: identifies a public key.
pub fn file_id(path: &Path) -> Result<String> {
    let bytes = hepeft::io::limits::read_bounded(path, 64 << 30, "key file")
        .with_context(|| format!("reading {}", path.display()))?;
    let d: [u8; 32] = Sha256::digest(&bytes).into();
    Ok(short(&d))
}

/// The `--params` a CKKS command requires, loaded with its `[selected_for]` record; the
/// warning for a file without one (`ParamsSource::load_file`) goes to `ui`.
pub fn required_params_file(
    params: Option<&crate::cli::args::ParamsSource>,
    ui: &crate::cli::Ui,
) -> Result<hepeft::select::ParamsFile> {
    let (file, warning) = params
        .context("--params is required with --backend ckks")?
        .load_file()?;
    if let Some(w) = warning {
        ui.note(&w);
    }
    Ok(file)
}

/// Reads a JSON file: a regular file of at most `MAX_TEXT_FILE` (1 MiB).
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text = hepeft::io::limits::read_text(path, hepeft::io::limits::MAX_TEXT_FILE, what)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} {} is malformed", path.display()))
}

/// Refuses an output path that holds a key file (`--out keys/secret.key`).
pub fn check_output(path: &Path) -> Result<()> {
    hepeft::io::limits::refuse_key_overwrite(path, None)?;
    Ok(())
}

/// Reads the header of an envelope file, checks its kind and parameter digest.
pub fn check_envelope(
    path: &Path,
    kind: FileKind,
    params: &CkksParams,
    what: &str,
) -> Result<Header> {
    let header = read_header(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if header.kind != kind {
        bail!(
            "{} is a {} file, expected {what} ({kind})",
            path.display(),
            header.kind
        );
    }
    if let Some(total) = header.total_len() {
        let size = file_size(path);
        if size < total {
            bail!(
                "{what} {} is truncated: the file is {size} bytes, its header declares {total}",
                path.display()
            );
        }
    }
    if header.params_digest != params.digest() {
        bail!(
            "parameter mismatch: {what} {} was made for parameters {}, expected {} ({})",
            path.display(),
            short(&header.params_digest),
            params.digest_short(),
            preset_name_for(&header.params_digest)
                .map(|n| format!("the file's digest is preset {n}"))
                .unwrap_or_else(|| "the file's digest is no preset".into())
        );
    }
    Ok(header)
}

/// Decodes the first bytes of a file as an envelope header.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(peek_header(&buf)?)
}

/// The preset whose digest is `digest`, if any.
pub fn preset_name_for(digest: &[u8; 32]) -> Option<&'static str> {
    hepeft::ckks::PRESETS.iter().find_map(|(name, _)| {
        CkksParams::preset(name)
            .ok()
            .filter(|p| &p.digest() == digest)
            .map(|_| *name)
    })
}

/// Writes bytes to `path` atomically ([`write_bytes_atomic`]: temporary file, sync,
/// rename); refuses to replace a key file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_bytes_atomic(path, bytes, None).with_context(|| format!("writing {}", path.display()))
}

/// Writes a features / logits matrix as an f64 `.npy` file atomically.
pub fn save_npy_atomic(path: &Path, m: ArrayView2<f64>) -> Result<()> {
    let bytes = features_to_npy_bytes(m).with_context(|| format!("writing {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Serializes `value` as pretty JSON and writes it atomically.
#[cfg(feature = "exact")]
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Size of a file in bytes (0 if unreadable).
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `1.23 MiB`, `456.0 KiB` or `789 B`.
pub fn human_bytes(b: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = b as f64;
    if f >= KIB * KIB {
        format!("{:.2} MiB", f / (KIB * KIB))
    } else if f >= KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{b} B")
    }
}

/// Seconds with millisecond resolution.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

pub use hepeft::model::reference::argmax;

/// Calibration features for a one-input adapter's error profile (`--calib`), if given.
pub fn calibration_features(
    adapter: &hepeft::model::Adapter,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Vec<ndarray::Array2<f64>>>> {
    use anyhow::Context as _;
    let Some(path) = path else {
        return Ok(None);
    };
    if adapter.inputs().len() != 1 {
        anyhow::bail!(
            "--calib takes the features of a one-input adapter; this one has {} inputs (leave --calib out: \
             the adapter is then calibrated on inputs uniform in [-1, 1])",
            adapter.inputs().len()
        );
    }
    Ok(Some(vec![hepeft::model::load::load_features_npy(path)
        .with_context(|| {
            format!("reading calibration features {}", path.display())
        })?]))
}
