//! Hugging Face PEFT LoRA checkpoints ([`PeftLora`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::layer::Op;
use super::load::read_text_limited;
use super::tensors::TensorStore;
use crate::{Error, Result};

/// Largest `adapter_config.json` read (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The fields of a PEFT `adapter_config.json` that matter here (others are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// `peft_type`, must be `"LORA"` when present.
    #[serde(default)]
    pub peft_type: Option<String>,
    /// Default rank.
    pub r: usize,
    /// Default alpha.
    pub lora_alpha: f64,
    /// rsLoRA: scale `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA is not supported (its magnitude normalisation is not a linear map).
    #[serde(default)]
    pub use_dora: bool,
    /// Per-module rank overrides, keyed by a module name suffix.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, keyed by a module name suffix.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
}

fn pattern_match<'a, V>(patterns: &'a BTreeMap<String, V>, module: &str) -> Option<&'a V> {
    // PEFT matches the keys as regular expressions against the end of the module name;
    // here they are matched literally, as a whole dotted suffix.
    patterns
        .iter()
        .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
        .map(|(_, v)| v)
}

impl PeftConfig {
    /// Parses `adapter_config.json` text.
    ///
    /// # Errors
    /// [`Error::Format`] for invalid JSON or missing `r` / `lora_alpha`; [`Error::Model`]
    /// for a non-LoRA `peft_type`, DoRA, `r == 0` or a non-finite alpha.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: PeftConfig = serde_json::from_str(text)
            .map_err(|e| Error::format("adapter_config.json", e.to_string()))?;
        if let Some(t) = &cfg.peft_type {
            if !t.eq_ignore_ascii_case("lora") {
                return Err(Error::model(format!(
                    "adapter_config.json: peft_type is {t}, only LORA is supported"
                )));
            }
        }
        if cfg.use_dora {
            return Err(Error::model(
                "adapter_config.json: use_dora = true is not supported",
            ));
        }
        if cfg.r == 0 || cfg.rank_pattern.values().any(|&r| r == 0) {
            return Err(Error::model("adapter_config.json: rank 0"));
        }
        if !cfg.lora_alpha.is_finite() || cfg.alpha_pattern.values().any(|a| !a.is_finite()) {
            return Err(Error::model("adapter_config.json: non-finite lora_alpha"));
        }
        Ok(cfg)
    }

    /// Reads `adapter_config.json` (at most [`MAX_CONFIG_BYTES`]).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] on read failure, else as [`PeftConfig::from_json`].
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(&read_text_limited(
            path,
            MAX_CONFIG_BYTES,
            "adapter_config.json",
        )?)
    }

    /// The LoRA scale of `module` whose tensors have rank `rank`: `alpha / r`, or
    /// `alpha / sqrt(r)` with rsLoRA, where `r` and `alpha` honour `rank_pattern` and
    /// `alpha_pattern`.
    ///
    /// # Errors
    /// [`Error::Model`] if `rank` disagrees with the configured rank of the module.
    pub fn scale_for(&self, module: &str, rank: usize) -> Result<f64> {
        let r = pattern_match(&self.rank_pattern, module)
            .copied()
            .unwrap_or(self.r);
        if r != rank {
            return Err(Error::model(format!(
                "PEFT module '{module}': tensors have rank {rank}, adapter_config.json says {r}"
            )));
        }
        let alpha = pattern_match(&self.alpha_pattern, module)
            .copied()
            .unwrap_or(self.lora_alpha);
        let r = r as f64;
        Ok(if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        })
    }
}

/// One LoRA update `delta(x) = scale * B (A x)` (+ `scale * bias` when the checkpoint has
/// a `lora_B` bias).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    /// Normalised module name (no `base_model.model.` prefix, no adapter name).
    pub module: String,
    /// `lora_A.weight`, `r x in`.
    pub a: Array2<f64>,
    /// `lora_B.weight`, `out x r`.
    pub b: Array2<f64>,
    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub scale: f64,
    /// `lora_B.bias` if present (PEFT `lora_bias = true`), unscaled as stored.
    pub bias: Option<Array1<f64>>,
}

impl LoraPair {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.nrows()
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.a.ncols()
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.b.nrows()
    }

    /// The equivalent [`Op::LowRank`] (the bias, if any, is multiplied by `scale` as PEFT
    /// does).
    pub fn to_op(&self) -> Op {
        Op::LowRank {
            a: self.a.clone(),
            b: self.b.clone(),
            scale: self.scale,
            bias: self.bias.as_ref().map(|b| b * self.scale),
        }
    }
}

/// A PEFT LoRA checkpoint: its config and its LoRA pairs by normalised module name.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftLora {
    /// The parsed `adapter_config.json`.
    pub config: PeftConfig,
    /// LoRA pairs by normalised module name (e.g. `"bert.encoder.layer.0.attention.self.query"`).
    pub modules: BTreeMap<String, LoraPair>,
    /// Names of tensors in the file that are not LoRA A/B weights or biases (for example
    /// `modules_to_save` copies or DoRA magnitudes), as stored.
    pub other_tensors: Vec<String>,
}

/// Which half of a LoRA pair a tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Half {
    A,
    B,
}

/// Splits a PEFT tensor name into (module, half, is_bias, adapter name).
///
/// Accepts `[base_model.model.]<module>.lora_{A,B}[.<adapter>].{weight,bias}`.
fn parse_peft_name(name: &str) -> Option<(String, Half, bool, Option<String>)> {
    let stripped = name.strip_prefix("base_model.model.").unwrap_or(name);
    let (pos, half) = match (stripped.rfind(".lora_A."), stripped.rfind(".lora_B.")) {
        (Some(a), Some(b)) => {
            if a > b {
                (a, Half::A)
            } else {
                (b, Half::B)
            }
        }
        (Some(a), None) => (a, Half::A),
        (None, Some(b)) => (b, Half::B),
        (None, None) => return None,
    };
    let module = &stripped[..pos];
    let rest = &stripped[pos + ".lora_A.".len()..];
    let parts: Vec<&str> = rest.split('.').collect();
    let (adapter, kind) = match parts.as_slice() {
        [kind] => (None, *kind),
        [adapter, kind] => (Some((*adapter).to_string()), *kind),
        _ => return None,
    };
    let is_bias = match kind {
        "weight" => false,
        "bias" => true,
        _ => return None,
    };
    if module.is_empty() {
        return None;
    }
    Some((module.to_string(), half, is_bias, adapter))
}

impl PeftLora {
    /// Builds the LoRA pairs from a loaded `adapter_model.safetensors` and its config.
    ///
    /// Tensor names may carry the `base_model.model.` prefix or not, and an adapter name
    /// such as `.default` before `.weight` or not; both are normalised away.
    ///
    /// # Errors
    /// [`Error::Model`] for a module with only one of `lora_A` / `lora_B`, duplicate
    /// tensors after normalisation, several adapter names in one file, non-2-D weights
    /// (LoRA on convolutions), ranks that disagree, or non-finite values.
    pub fn from_store(store: &TensorStore, config: PeftConfig) -> Result<Self> {
        type Parts = BTreeMap<(Half, bool), String>;
        let mut by_module: BTreeMap<String, Parts> = BTreeMap::new();
        let mut adapters: BTreeSet<String> = BTreeSet::new();
        let mut other = Vec::new();
        for name in store.names() {
            match parse_peft_name(name) {
                Some((module, half, is_bias, adapter)) => {
                    if let Some(a) = adapter {
                        adapters.insert(a);
                    }
                    let parts = by_module.entry(module.clone()).or_default();
                    if let Some(prev) = parts.insert((half, is_bias), name.to_string()) {
                        return Err(Error::model(format!(
                            "PEFT tensors '{prev}' and '{name}' both normalise to module '{module}'"
                        )));
                    }
                }
                None => other.push(name.to_string()),
            }
        }
        if adapters.len() > 1 {
            return Err(Error::model(format!(
                "PEFT file holds several adapters ({}); save one adapter per file",
                adapters.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let mut modules = BTreeMap::new();
        for (module, parts) in by_module {
            let a_name = parts.get(&(Half::A, false)).ok_or_else(|| {
                Error::model(format!("PEFT module '{module}' has no lora_A weight"))
            })?;
            let b_name = parts.get(&(Half::B, false)).ok_or_else(|| {
                Error::model(format!("PEFT module '{module}' has no lora_B weight"))
            })?;
            if let Some(n) = parts.get(&(Half::A, true)) {
                return Err(Error::model(format!(
                    "PEFT tensor '{n}': a lora_A bias is not supported"
                )));
            }
            let a = store.matrix(a_name)?;
            let b = store.matrix(b_name)?;
            if b.ncols() != a.nrows() {
                return Err(Error::dims(
                    format!("PEFT module '{module}': lora_B columns vs lora_A rows"),
                    a.nrows(),
                    b.ncols(),
                ));
            }
            if a.is_empty() || b.is_empty() {
                return Err(Error::model(format!(
                    "PEFT module '{module}' has an empty matrix"
                )));
            }
            let bias = match parts.get(&(Half::B, true)) {
                Some(n) => {
                    let v = store.vector(n)?;
                    if v.len() != b.nrows() {
                        return Err(Error::dims(
                            format!("PEFT module '{module}': lora_B bias"),
                            b.nrows(),
                            v.len(),
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            let scale = config.scale_for(&module, a.nrows())?;
            modules.insert(
                module.clone(),
                LoraPair {
                    module,
                    a,
                    b,
                    scale,
                    bias,
                },
            );
        }
        if modules.is_empty() {
            return Err(Error::model("PEFT file holds no lora_A / lora_B tensors"));
        }
        Ok(PeftLora {
            config,
            modules,
            other_tensors: other,
        })
    }

    /// Parses a PEFT checkpoint from the bytes of `adapter_model.safetensors` and the text
    /// of `adapter_config.json`.
    ///
    /// # Errors
    /// As [`TensorStore::from_bytes`], [`PeftConfig::from_json`] and
    /// [`PeftLora::from_store`].
    pub fn from_bytes(weights: &[u8], config_json: &str) -> Result<Self> {
        let store = TensorStore::from_bytes_named(weights, "adapter_model.safetensors")?;
        Self::from_store(&store, PeftConfig::from_json(config_json)?)
    }

    /// Loads a PEFT checkpoint from its two files.
    ///
    /// # Errors
    /// As [`PeftLora::from_bytes`], plus I/O and size-limit errors.
    pub fn load(weights: impl AsRef<Path>, config: impl AsRef<Path>) -> Result<Self> {
        let store = TensorStore::from_path(weights)?;
        Self::from_store(&store, PeftConfig::from_path(config)?)
    }

    /// Loads `adapter_model.safetensors` and `adapter_config.json` from a directory.
    ///
    /// # Errors
    /// As [`PeftLora::load`].
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::load(
            dir.join("adapter_model.safetensors"),
            dir.join("adapter_config.json"),
        )
    }

    /// The pair of `module` (a normalised name; a `base_model.model.` prefix is accepted).
    ///
    /// # Errors
    /// [`Error::Model`] listing the available modules if there is none.
    pub fn get(&self, module: &str) -> Result<&LoraPair> {
        let key = module.strip_prefix("base_model.model.").unwrap_or(module);
        self.modules.get(key).ok_or_else(|| {
            Error::model(format!(
                "no PEFT LoRA module '{module}' (available: {})",
                self.modules.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peft_names() {
        let p = parse_peft_name(
            "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight",
        )
        .unwrap();
        assert_eq!(
            p,
            (
                "bert.encoder.layer.0.attention.self.query".into(),
                Half::A,
                false,
                Some("default".into())
            )
        );
        let p = parse_peft_name("classifier.lora_B.weight").unwrap();
        assert_eq!(p, ("classifier".into(), Half::B, false, None));
        let p = parse_peft_name("base_model.model.classifier.lora_B.bias").unwrap();
        assert_eq!(p, ("classifier".into(), Half::B, true, None));
        assert!(parse_peft_name("classifier.weight").is_none());
        assert!(parse_peft_name("x.lora_A.a.b.weight").is_none());
        assert!(parse_peft_name("x.lora_magnitude_vector.default").is_none());
    }
}
