//! Helpers shared by the commands: loading models and key directories, the JSON metadata
//! written next to queries and results, atomic writes, and up-front consistency checks.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use hepeft::ckks::CkksParams;
use hepeft::io::format::{digest_hex, peek_header, FileKind, Header, HEADER_LEN};
use hepeft::model::load::{load_card, save_features_npy, ModelCard, PeftLora, TensorStore};
use hepeft::model::{Adapter, Op};
use hepeft::plan::{public_structure, Mode, Plan, PlanOptions};

/// File names inside a key directory.
pub const SECRET_KEY: &str = "secret.key";
/// Public encryption key.
pub const PUBLIC_KEY: &str = "public.key";
/// Evaluation keys (the only key file the server receives).
pub const EVAL_KEYS: &str = "eval.keys";
/// Parameter set (TOML, frozen primes).
pub const PARAMS_TOML: &str = "params.toml";
/// Plan metadata (JSON).
pub const PLAN_JSON: &str = "plan.json";

/// Version tag of `plan.json`.
pub const PLAN_FORMAT: &str = "hepeft-plan/1";
/// Version tag of the query / result metadata.
pub const META_FORMAT: &str = "hepeft-ciphertext-meta/1";

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

/// Options of the plans the CLI compiles.
pub fn plan_options(mode: Mode) -> PlanOptions {
    PlanOptions {
        mode,
        ..PlanOptions::default()
    }
}

/// The plan a client compiles: from the public structure of the card's adapter, so a public
/// and a private card give the same plan.
pub fn public_plan(adapter: &Adapter, params: &CkksParams, mode: Mode) -> Result<Plan> {
    let public = public_structure(adapter).context("deriving the public structure of the model")?;
    Plan::compile(&public, params, plan_options(mode)).with_context(|| {
        format!(
            "compiling the model for parameters {} in {} mode",
            params.digest_short(),
            mode_name(mode)
        )
    })
}

/// `latency` or `batch`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Latency => "latency",
        Mode::Batch => "batch",
    }
}

/// Parses a mode name written by this tool.
pub fn parse_mode(s: &str) -> Result<Mode> {
    Ok(Mode::parse(s)?)
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

/// `plan.json` of a key directory: what the keys were made for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInfo {
    /// [`PLAN_FORMAT`].
    pub format: String,
    /// `latency` or `batch`.
    pub mode: String,
    /// Plan structure digest (hex).
    pub structure_digest: String,
    /// Parameter digest (hex).
    pub params_digest: String,
    /// Identifier of public.key (first 16 hex digits of its SHA-256).
    pub key_id: String,
    /// Galois elements of the evaluation keys (exactly the plan's).
    pub galois_elements: Vec<u64>,
    /// Rotation steps behind them.
    pub rotation_steps: Vec<i64>,
    /// Whether eval.keys holds a relinearization key.
    pub relinearization: bool,
    /// Widths of the adapter inputs.
    pub input_dims: Vec<usize>,
    /// Width of the output.
    pub output_dim: usize,
}

/// Metadata written next to a query (`query.ct.json`) or a result (`result.ct.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CtMeta {
    /// [`META_FORMAT`].
    pub format: String,
    /// `query` or `result`.
    pub content: String,
    /// `latency` or `batch`.
    pub mode: String,
    /// Total number of samples.
    pub samples: usize,
    /// Samples in each query, in order (latency: all 1; batch: at most N/2 each).
    pub queries: Vec<usize>,
    /// Ciphertexts per query; the bundle holds `queries.len() * ciphertexts_per_query`.
    pub ciphertexts_per_query: usize,
    /// Plan structure digest (hex) the client compiled.
    pub structure_digest: String,
    /// Parameter digest (hex).
    pub params_digest: String,
    /// Identifier of the public key the query was encrypted under.
    pub key_id: String,
}

/// `<file>.json`.
pub fn meta_path(ct: &Path) -> PathBuf {
    let mut s = ct.as_os_str().to_os_string();
    s.push(".json");
    PathBuf::from(s)
}

/// Reads a JSON file: a regular file of at most `MAX_TEXT_FILE` (1 MiB).
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text = hepeft::io::limits::read_text(path, hepeft::io::limits::MAX_TEXT_FILE, what)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} {} is malformed", path.display()))
}

/// Checks every field of a query or result sidecar against the binding inside the
/// ciphertext envelope (the envelope is authoritative: a ciphertext swapped under an
/// untouched sidecar, or an edited sidecar, is refused here).
pub fn check_meta_binding(
    ct: &Path,
    meta: &CtMeta,
    binding: &hepeft::io::Binding,
    mode: hepeft::plan::Mode,
) -> Result<()> {
    let path = meta_path(ct);
    let mismatch = |field: &str, side: String, env: String| -> Result<()> {
        if side != env {
            bail!(
                "{}: field `{field}` is {side}, but the ciphertext in {} is bound to {env}: the two files \
                 do not belong together (keep each ciphertext with its own .json)",
                path.display(),
                ct.display()
            );
        }
        Ok(())
    };
    mismatch("key_id", meta.key_id.clone(), binding.key_set.hex())?;
    mismatch(
        "structure_digest",
        meta.structure_digest.clone(),
        digest_hex(&binding.structure),
    )?;
    mismatch(
        "ciphertexts_per_query",
        meta.ciphertexts_per_query.to_string(),
        binding.per_query.to_string(),
    )?;
    mismatch(
        "queries",
        format!("{:?}", meta.queries),
        format!("{:?}", binding.queries),
    )?;
    mismatch(
        "content",
        meta.content.clone(),
        binding.role.name().to_string(),
    )?;
    mismatch("mode", meta.mode.clone(), mode_name(mode).to_string())?;
    Ok(())
}

/// Refuses an output path that holds a key file (`--out keys/secret.key`).
pub fn check_output(path: &Path) -> Result<()> {
    hepeft::io::limits::refuse_key_overwrite(path, None)?;
    Ok(())
}

/// Reads the metadata of a query or result and checks it against `params` and its content.
pub fn read_meta(ct: &Path, content: &str, params: &CkksParams) -> Result<CtMeta> {
    let path = meta_path(ct);
    if !path.is_file() {
        bail!(
            "missing {}: the {content} metadata written next to {} by hepeft (keep the two files together)",
            path.display(),
            ct.display()
        );
    }
    let meta: CtMeta = read_json(&path, &format!("{content} metadata"))?;
    if meta.format != META_FORMAT {
        bail!(
            "{}: unsupported metadata format {:?} (expected {META_FORMAT})",
            path.display(),
            meta.format
        );
    }
    if meta.content != content {
        bail!(
            "{} describes a {}, expected a {content}",
            ct.display(),
            meta.content
        );
    }
    if meta.params_digest != digest_hex(&params.digest()) {
        bail!(
            "parameter mismatch: {} was made for parameters {}, expected {}",
            ct.display(),
            meta.params_digest.chars().take(16).collect::<String>(),
            params.digest_short()
        );
    }
    if meta.queries.iter().sum::<usize>() != meta.samples || meta.queries.contains(&0) {
        bail!("{}: inconsistent sample counts", path.display());
    }
    Ok(meta)
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

/// Writes bytes to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_output(path)?;
    let tmp = temp_sibling(path)?;
    let res = (|| -> Result<()> {
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Writes a features / logits matrix as an f64 `.npy` file atomically.
pub fn save_npy_atomic(path: &Path, m: ArrayView2<f64>) -> Result<()> {
    check_output(path)?;
    let tmp = temp_sibling(path)?;
    let res = (|| -> Result<()> {
        save_features_npy(&tmp, m).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?
        .to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Ok(path.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id())))
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
