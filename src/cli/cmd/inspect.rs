//! `hepeft inspect FILE`: what a file is and what it holds (never key material).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use hepeft::ckks::serialize::params_from_bytes;
use hepeft::ckks::{
    galois_element_for_rotation, load, CiphertextBundle, CkksParams, EvaluationKeys, Plaintext,
    PublicKey,
};
use hepeft::io::format::{digest_hex, FileKind, Header, MAGIC};
use hepeft::model::load::{load_card, load_features_npy, ModelCard, TensorStore};

use crate::cli::args::InspectArgs;
use crate::cli::common::*;
use crate::cli::Ui;

/// Lines of text plus the same facts as JSON.
struct Out {
    text: String,
    json: serde_json::Map<String, Value>,
}

impl Out {
    fn new() -> Self {
        Out {
            text: String::new(),
            json: serde_json::Map::new(),
        }
    }
    fn put(&mut self, key: &str, label: &str, shown: impl std::fmt::Display, value: Value) {
        self.text.push_str(&format!("{label:<18} {shown}\n"));
        self.json.insert(key.to_string(), value);
    }
}

/// `hepeft inspect`.
pub fn run(args: &InspectArgs, ui: &Ui) -> Result<()> {
    let path = &args.file;
    let mut prefix = Vec::new();
    {
        use std::io::Read as _;
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(MAGIC.len() as u64)
            .read_to_end(&mut prefix)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    let mut out = Out::new();
    out.put("file", "file", path.display(), json!(path));
    out.put(
        "size",
        "size",
        format!("{} bytes", file_size(path)),
        json!(file_size(path)),
    );
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let result = if prefix == MAGIC {
        envelope(path, args, &mut out)
    } else {
        match ext.as_deref() {
            Some("toml") => toml_file(path, &mut out),
            Some("json") => json_file(path, &mut out),
            Some("npy") => npy_file(path, &mut out),
            Some("safetensors") => safetensors_file(path, &mut out),
            _ => {
                // Let the envelope reader name the problem (bad magic, too short).
                read_header(path)
                    .with_context(|| format!("{} is not a file hepeft knows", path.display()))?;
                Ok(())
            }
        }
    };
    // Print what was learned even when decoding failed part-way.
    if ui.json {
        if let Err(e) = &result {
            out.json.insert("error".into(), json!(format!("{e:#}")));
        }
        ui.report(&Value::Object(out.json), "", true)?;
    } else {
        ui.out(&out.text)?;
    }
    result
}

fn envelope(path: &Path, args: &InspectArgs, out: &mut Out) -> Result<()> {
    let header = read_header(path).with_context(|| format!("reading {}", path.display()))?;
    out.put("kind", "kind", header.kind, json!(header.kind.name()));
    out.put(
        "format_version",
        "format version",
        header.version,
        json!(header.version),
    );
    let size = file_size(path);
    out.put(
        "payload_bytes",
        "payload",
        format!(
            "{} bytes ({})",
            header.payload_len,
            human_bytes(header.payload_len)
        ),
        json!(header.payload_len),
    );
    let params = find_params(path, args, &header)?;
    let digest = digest_hex(&header.params_digest);
    let source = match &params {
        Some((_, src)) => src.clone(),
        None => "unknown: pass --params to decode the payload".to_string(),
    };
    out.put(
        "params_digest",
        "parameter digest",
        format!("{digest} ({source})"),
        json!(digest),
    );
    if let Some(total) = header.total_len() {
        if size < total {
            bail!(
                "{} is truncated: the file is {size} bytes, its header declares {total}",
                path.display()
            );
        }
        if size > total {
            bail!(
                "{} has {} trailing bytes after the envelope",
                path.display(),
                size - total
            );
        }
    }
    let Some((params, _)) = params else {
        if header.kind == FileKind::Parameters {
            let bytes = std::fs::read(path)?;
            let p = params_from_bytes(&bytes).context("decoding the parameters")?;
            out.put(
                "parameters",
                "parameters",
                p.describe(),
                json!(p.describe()),
            );
        }
        return Ok(());
    };
    match header.kind {
        FileKind::Parameters => {
            let bytes = std::fs::read(path)?;
            let p = params_from_bytes(&bytes).context("decoding the parameters")?;
            out.put(
                "parameters",
                "parameters",
                p.describe(),
                json!(p.describe()),
            );
        }
        FileKind::SecretKey => {
            let mode = permissions(path);
            out.put(
                "secret_key",
                "secret key",
                format!(
                    "contents not shown; permissions {mode}; keep it on the client, never send it"
                ),
                json!({ "permissions": mode }),
            );
        }
        FileKind::PublicKey => {
            let _pk: PublicKey = load(path, &params).context("decoding the public key")?;
            out.put(
                "public_key",
                "public key",
                format!("valid, level {}", params.max_level()),
                json!(true),
            );
            out.put("key_id", "key id", file_id(path)?, json!(file_id(path)?));
        }
        FileKind::EvaluationKeys => {
            let keys: EvaluationKeys =
                load(path, &params).context("decoding the evaluation keys")?;
            let steps = rotation_steps_of(&params);
            let elements = keys.galois_elements();
            let per_key =
                keys.stored_bytes() / (elements.len() + usize::from(keys.relin().is_some())).max(1);
            out.put(
                "relinearization",
                "relinearization",
                if keys.relin().is_some() { "yes" } else { "no" },
                json!(keys.relin().is_some()),
            );
            out.put(
                "public_key",
                "public key",
                if keys.public_key().is_some() {
                    "yes"
                } else {
                    "no: evaluate and serve refuse this key set"
                },
                json!(keys.public_key().is_some()),
            );
            let shown: Vec<String> = elements
                .iter()
                .map(|g| match steps.get(&g.get()) {
                    Some(s) => format!("{g} (rotate {s})"),
                    None => format!("{g}"),
                })
                .collect();
            out.put(
                "galois_elements",
                "Galois keys",
                format!(
                    "{}: {}",
                    elements.len(),
                    if shown.is_empty() {
                        "none".into()
                    } else {
                        shown.join(", ")
                    }
                ),
                json!(elements),
            );
            out.put(
                "key_bytes",
                "key size",
                format!(
                    "{} each, {} in all",
                    human_bytes(per_key as u64),
                    human_bytes(keys.stored_bytes() as u64)
                ),
                json!({ "each": per_key, "total": keys.stored_bytes() }),
            );
        }
        FileKind::Ciphertext => {
            let b: CiphertextBundle = load(path, &params).context("decoding the ciphertexts")?;
            let levels: std::collections::BTreeSet<hepeft::ckks::Level> =
                b.items.iter().map(|c| c.level()).collect();
            let scales: std::collections::BTreeSet<String> = b
                .items
                .iter()
                .map(|c| format!("2^{:.2}", c.scale().log2()))
                .collect();
            let seeded = b.items.iter().filter(|c| c.seed().is_some()).count();
            out.put(
                "ciphertexts",
                "ciphertexts",
                b.items.len(),
                json!(b.items.len()),
            );
            out.put(
                "levels",
                "levels",
                format!("{levels:?} (of {})", params.max_level()),
                json!(levels),
            );
            out.put(
                "scales",
                "scales",
                scales.iter().cloned().collect::<Vec<_>>().join(", "),
                json!(scales),
            );
            out.put(
                "seeded",
                "seeded (half size)",
                format!("{seeded} of {}", b.items.len()),
                json!(seeded),
            );
            let mp = meta_path(path);
            if mp.is_file() {
                if let Ok(m) = read_json::<CtMeta>(&mp, "metadata") {
                    out.put(
                        "meta",
                        "metadata",
                        format!(
                            "{} ({} mode): {} sample(s) in {} quer(ies), plan {}, key id {}",
                            m.content,
                            m.mode,
                            m.samples,
                            m.queries.len(),
                            m.structure_digest.chars().take(16).collect::<String>(),
                            m.key_id
                        ),
                        serde_json::to_value(&m)?,
                    );
                }
            }
        }
        FileKind::Plaintext => {
            let pt: Plaintext = load(path, &params).context("decoding the plaintext")?;
            out.put("level", "level", pt.level(), json!(pt.level()));
            out.put(
                "scale",
                "scale",
                format!("2^{:.2}", pt.scale().log2()),
                json!(pt.scale()),
            );
        }
        _ => {}
    }
    Ok(())
}

/// Parameters to decode with: `--params`, else a preset with the file's digest, else a
/// `params.toml` in the file's directory with that digest.
fn find_params(
    path: &Path,
    args: &InspectArgs,
    header: &Header,
) -> Result<Option<(CkksParams, String)>> {
    if let Some(src) = &args.params {
        let p = src.load()?;
        if p.digest() != header.params_digest {
            bail!(
                "parameter mismatch: {} was made for parameters {}, --params {} is {}",
                path.display(),
                short(&header.params_digest),
                src.label(),
                p.digest_short()
            );
        }
        return Ok(Some((p, format!("--params {}", src.label()))));
    }
    if let Some(name) = preset_name_for(&header.params_digest) {
        return Ok(CkksParams::preset(name)
            .ok()
            .map(|p| (p, format!("preset {name}"))));
    }
    let sibling = path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(PARAMS_TOML);
    if let Ok(text) = std::fs::read_to_string(&sibling) {
        if let Ok(p) = CkksParams::from_toml(&text) {
            if p.digest() == header.params_digest {
                return Ok(Some((p, sibling.display().to_string())));
            }
        }
    }
    Ok(None)
}

fn rotation_steps_of(params: &CkksParams) -> BTreeMap<u64, i64> {
    let slots = params.slots() as i64;
    let mut m = BTreeMap::new();
    for k in 1..slots {
        let g = galois_element_for_rotation(params, k);
        let step = if k > slots / 2 { k - slots } else { k };
        m.entry(g).or_insert(step);
    }
    m
}

fn permissions(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map_or_else(
            |_| "?".into(),
            |m| format!("{:04o}", m.permissions().mode() & 0o7777),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        "n/a".into()
    }
}

fn toml_file(path: &Path, out: &mut Out) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(p) = CkksParams::from_toml(&text) {
        out.put("kind", "kind", "parameters (TOML)", json!("parameters"));
        out.put(
            "parameters",
            "parameters",
            p.describe(),
            json!(p.describe()),
        );
        out.put(
            "digest",
            "digest",
            digest_hex(&p.digest()),
            json!(digest_hex(&p.digest())),
        );
        return Ok(());
    }
    model_card(path, out)
}

fn model_card(path: &Path, out: &mut Out) -> Result<()> {
    let card = ModelCard::from_path(path)
        .with_context(|| format!("{} is neither parameters nor a model card", path.display()))?;
    out.put("kind", "kind", "model card", json!("model card"));
    if let Some(n) = &card.name {
        out.put("name", "name", n, json!(n));
    }
    let adapter =
        load_card(path).with_context(|| format!("loading model card {}", path.display()))?;
    let public = all_weights_zero(&adapter);
    out.put(
        "public",
        "weights",
        if public {
            "all zero (a public card: structure only)"
        } else {
            "present (a private card)"
        },
        json!(!public),
    );
    out.put(
        "summary",
        "adapter",
        format!("\n{}", adapter.summary().trim_end()),
        json!(adapter.summary()),
    );
    Ok(())
}

fn json_file(path: &Path, out: &mut Out) -> Result<()> {
    let v: Value = read_json(path, "JSON file")?;
    match v.get("format").and_then(Value::as_str) {
        Some(f) if f == PLAN_FORMAT || f == META_FORMAT => {
            let what = if f == PLAN_FORMAT {
                "plan metadata (key directory)"
            } else {
                "ciphertext metadata"
            };
            out.put("kind", "kind", what, json!(f));
            if let Value::Object(map) = &v {
                for (k, val) in map {
                    if k != "format" {
                        out.put(k, k, val, val.clone());
                    }
                }
            }
            Ok(())
        }
        _ => model_card(path, out),
    }
}

fn npy_file(path: &Path, out: &mut Out) -> Result<()> {
    let m = load_features_npy(path).with_context(|| format!("reading {}", path.display()))?;
    out.put("kind", "kind", "matrix (.npy)", json!("npy"));
    out.put(
        "shape",
        "shape",
        format!("{} x {} (samples x width)", m.nrows(), m.ncols()),
        json!([m.nrows(), m.ncols()]),
    );
    let (lo, hi) = m
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    out.put(
        "range",
        "range",
        format!("[{lo:.4}, {hi:.4}]"),
        json!([lo, hi]),
    );
    Ok(())
}

fn safetensors_file(path: &Path, out: &mut Out) -> Result<()> {
    let store =
        TensorStore::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    out.put(
        "kind",
        "kind",
        "tensors (.safetensors)",
        json!("safetensors"),
    );
    let mut shapes = serde_json::Map::new();
    let mut lines = Vec::new();
    for name in store.names() {
        if let Ok(t) = store.get(name) {
            lines.push(format!("{name} {:?}", t.shape));
            shapes.insert(name.to_string(), json!(t.shape));
        } else {
            lines.push(format!("{name} (unsupported dtype)"));
        }
    }
    out.put(
        "tensors",
        "tensors",
        format!("{}\n  {}", lines.len(), lines.join("\n  ")),
        Value::Object(shapes),
    );
    Ok(())
}
