//! Loading adapters and features from files.
//!
//! * [`TensorStore`]: the tensors of a safetensors file as `f64` (F64, F32, F16 and BF16
//!   are converted; other dtypes are listed but refuse to load).
//! * [`PeftLora`]: a Hugging Face PEFT LoRA checkpoint (`adapter_model.safetensors` plus
//!   `adapter_config.json`) as LoRA pairs by module name.
//! * [`ModelCard`]: a TOML or JSON description of an adapter graph whose weights live in a
//!   safetensors file (and/or come from a PEFT checkpoint); see `docs/model-card.md`.
//!   [`load_card`] turns a card into an [`Adapter`], [`save_adapter`] does the reverse.
//! * [`load_features_npy`] / [`save_features_npy`]: feature matrices as `.npy`.
//!
//! Every read is size-limited (see the `MAX_*` constants) and every malformed, truncated
//! or foreign file is reported as an error, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayD, ArrayView2, Ix1, Ix2};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::activation::{Activation, ActivationFn};
use super::adapter::{Adapter, AdapterBuilder};
use super::layer::{NodeRef, Op};
use crate::{Error, Result};

/// Largest safetensors file read (4 GiB).
pub const MAX_WEIGHTS_BYTES: u64 = 4 << 30;
/// Largest `.npy` feature file read (4 GiB).
pub const MAX_NPY_BYTES: u64 = 4 << 30;
/// Largest model card read (1 MiB).
pub const MAX_CARD_BYTES: u64 = 1 << 20;
/// Largest `adapter_config.json` read (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The model card format version this code reads and writes.
pub const CARD_VERSION: u32 = 1;

/// Deserializes `[lo, hi]`, refusing a list of any other length (serde's `[f64; 2]`
/// would silently ignore a third element in some formats).
fn exactly_two<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<[f64; 2]>, D::Error> {
    let v: Option<Vec<f64>> = Option::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(v) => match v.as_slice() {
            [lo, hi] => Ok(Some([*lo, *hi])),
            other => Err(serde::de::Error::custom(format!(
                "`interval` must be two numbers [lo, hi], found {} ({other:?})",
                other.len()
            ))),
        },
    }
}

/// Reads a whole regular file (no device, FIFO or directory, also behind a symlink),
/// refusing files larger than `limit` bytes.
fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let (file, len) = crate::io::limits::open_regular(path)?;
    if len > limit {
        return Err(Error::format(
            what,
            format!(
                "{} is {len} bytes, more than the limit of {limit}",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::format(
            what,
            format!("{} grew past the limit of {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

fn read_text_limited(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_limited(path, limit, what)?;
    String::from_utf8(bytes)
        .map_err(|e| Error::format(what, format!("{} is not UTF-8: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------

/// One tensor converted to `f64`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f64>,
}

/// The tensors of a safetensors file, converted to `f64`, by name.
///
/// F64, F32, F16 and BF16 tensors are converted on load (F16/BF16 by hand, exactly).
/// Tensors of other dtypes are remembered by name and dtype, and asking for one is an
/// error. Values are checked finite when a tensor is taken out with [`TensorStore::matrix`]
/// or [`TensorStore::vector`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorStore {
    tensors: BTreeMap<String, Tensor>,
    unsupported: BTreeMap<String, String>,
    source: String,
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    match exp {
        0 => sign * mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => sign * (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    }
}

fn bf16_to_f64(h: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(h) << 16))
}

fn convert(view: &TensorView<'_>) -> Option<Vec<f64>> {
    let d = view.data();
    Some(match view.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| bf16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => return None,
    })
}

impl TensorStore {
    /// An empty store (to fill with [`TensorStore::insert`] and write with
    /// [`TensorStore::write`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a safetensors buffer.
    ///
    /// # Errors
    /// [`Error::Format`] if the buffer is not a valid safetensors file (truncated, bad
    /// header, overlapping or out-of-range offsets).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_named(bytes, "<bytes>")
    }

    fn from_bytes_named(bytes: &[u8], source: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format("safetensors file", format!("{source}: {e}")))?;
        let mut store = TensorStore {
            source: source.to_string(),
            ..Self::default()
        };
        for (name, view) in st.tensors() {
            match convert(&view) {
                Some(data) => {
                    let expected: usize = view.shape().iter().product();
                    if data.len() != expected {
                        return Err(Error::format(
                            "safetensors file",
                            format!(
                                "{source}: tensor '{name}' holds {} values for shape {:?}",
                                data.len(),
                                view.shape()
                            ),
                        ));
                    }
                    store.tensors.insert(
                        name,
                        Tensor {
                            shape: view.shape().to_vec(),
                            data,
                        },
                    );
                }
                None => {
                    store.unsupported.insert(name, view.dtype().to_string());
                }
            }
        }
        Ok(store)
    }

    /// Reads and parses a safetensors file of at most [`MAX_WEIGHTS_BYTES`].
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Format`] if it is too large or malformed.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_limited(path, MAX_WEIGHTS_BYTES, "safetensors file")?;
        Self::from_bytes_named(&bytes, &path.display().to_string())
    }

    /// Names of all tensors (convertible or not), sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .tensors
            .keys()
            .chain(self.unsupported.keys())
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }

    /// Number of tensors (convertible or not).
    pub fn len(&self) -> usize {
        self.tensors.len() + self.unsupported.len()
    }

    /// True if the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor named `name`.
    ///
    /// # Errors
    /// [`Error::Model`] if there is no such tensor or its dtype is not F64/F32/F16/BF16.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        if let Some(t) = self.tensors.get(name) {
            return Ok(t);
        }
        if let Some(dtype) = self.unsupported.get(name) {
            return Err(Error::model(format!(
                "tensor '{name}' in {} has dtype {dtype}; only F64, F32, F16 and BF16 are supported",
                self.source
            )));
        }
        let mut known: Vec<&str> = self.names();
        let more = known.len() > 12;
        known.truncate(12);
        Err(Error::model(format!(
            "no tensor '{name}' in {} (it has: {}{})",
            self.source,
            known.join(", "),
            if more { ", ..." } else { "" }
        )))
    }

    /// The 2-D tensor `name` as a matrix, checked finite.
    ///
    /// # Errors
    /// As [`TensorStore::get`], plus [`Error::Model`] if it is not 2-D and
    /// [`Error::InvalidValue`] if it holds NaN or infinity.
    pub fn matrix(&self, name: &str) -> Result<Array2<f64>> {
        let t = self.get(name)?;
        let arr = self.finite_array(name, t)?;
        arr.into_dimensionality::<Ix2>().map_err(|_| {
            Error::model(format!(
                "tensor '{name}' has shape {:?}, expected 2-D",
                t.shape
            ))
        })
    }

    /// The 1-D tensor `name` as a vector, checked finite.
    ///
    /// # Errors
    /// As [`TensorStore::matrix`], for 1-D.
    pub fn vector(&self, name: &str) -> Result<Array1<f64>> {
        let t = self.get(name)?;
        let arr = self.finite_array(name, t)?;
        arr.into_dimensionality::<Ix1>().map_err(|_| {
            Error::model(format!(
                "tensor '{name}' has shape {:?}, expected 1-D",
                t.shape
            ))
        })
    }

    fn finite_array(&self, name: &str, t: &Tensor) -> Result<ArrayD<f64>> {
        if let Some((i, v)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidValue {
                context: format!("tensor '{name}' in {}", self.source),
                reason: format!("element {i} is {v}"),
            });
        }
        ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
            .map_err(|e| Error::model(format!("tensor '{name}': {e}")))
    }

    /// Adds (or replaces) a tensor.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] if `data.len()` is not the product of `shape`.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f64>) -> Result<()> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::dims(format!("tensor '{name}'"), n, data.len()));
        }
        self.unsupported.remove(name);
        self.tensors
            .insert(name.to_string(), Tensor { shape, data });
        Ok(())
    }

    /// Serializes all convertible tensors as F64 safetensors.
    ///
    /// # Errors
    /// [`Error::Format`] if safetensors refuses the data.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let raw: Vec<(&String, &Tensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n, t, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let mut views = Vec::with_capacity(raw.len());
        for (name, t, bytes) in &raw {
            let view = TensorView::new(Dtype::F64, t.shape.clone(), bytes)
                .map_err(|e| Error::format("safetensors tensor", format!("{name}: {e}")))?;
            views.push((name.as_str(), view));
        }
        safetensors::serialize(views, None)
            .map_err(|e| Error::format("safetensors file", e.to_string()))
    }

    /// Writes [`TensorStore::to_bytes`] to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] on write failure, else as [`TensorStore::to_bytes`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

// ---------------------------------------------------------------------------------------
// Hugging Face PEFT LoRA
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Model card
// ---------------------------------------------------------------------------------------

/// Paths of a PEFT checkpoint referenced by a card (relative to the card's directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeftFiles {
    /// Path of `adapter_model.safetensors`.
    pub weights: String,
    /// Path of `adapter_config.json`.
    pub config: String,
}

/// An adapter input in a card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputCard {
    /// Unique name.
    pub name: String,
    /// Width.
    pub dim: usize,
}

/// Operation kinds of a card node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// [`Op::Linear`]: fields `weight`, optional `bias`.
    Linear,
    /// [`Op::LowRank`]: fields `a`, `b`, one of `scale` or `alpha` (with optional
    /// `use_rslora`), optional `bias`.
    LowRank,
    /// A LoRA pair from the card's PEFT checkpoint: field `peft_module`.
    Lora,
    /// [`Op::Affine`]: fields `mul`, `add`.
    Affine,
    /// [`Op::Scale`]: field `factor`.
    Scale,
    /// [`Op::Poly`]: `interval` and one of (`func` + `degree`), `coeffs` or `cheb`
    /// (`func` optional with `coeffs` / `cheb`).
    Poly,
    /// [`Op::Add`]: no fields.
    Add,
    /// [`Op::Concat`]: no fields.
    Concat,
}

/// One node of a card. Only the fields of its `op` may be set (see [`OpKind`]); tensor
/// fields hold names of tensors in the card's weights file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCard {
    /// Unique name.
    pub name: String,
    /// Operation kind.
    pub op: Option<OpKind>,
    /// Operand names: inputs or earlier nodes.
    pub inputs: Vec<String>,
    /// `linear`: weight tensor, `out x in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    /// `linear` / `low_rank`: bias tensor, length `out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    /// `low_rank`: A tensor, `r x in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// `low_rank`: B tensor, `out x r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    /// `low_rank`: the scale itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// `low_rank`: LoRA alpha; scale = `alpha / r` (`alpha / sqrt(r)` with `use_rslora`),
    /// `r` = rows of A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// `low_rank`: with `alpha`, use the rsLoRA scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_rslora: Option<bool>,
    /// `affine`: multiplier tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mul: Option<String>,
    /// `affine`: offset tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    /// `scale`: the factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `poly`: the named function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub func: Option<ActivationFn>,
    /// `poly`: the interval `[lo, hi]` (exactly two numbers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exactly_two"
    )]
    pub interval: Option<[f64; 2]>,
    /// `poly`: the Chebyshev fit degree (with `func`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degree: Option<usize>,
    /// `poly`: explicit power coefficients in `x`, constant first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coeffs: Option<Vec<f64>>,
    /// `poly`: explicit Chebyshev coefficients in `t`, `c_0` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cheb: Option<Vec<f64>>,
    /// `lora`: module name in the card's PEFT checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft_module: Option<String>,
}

/// A model card: an adapter graph whose weights are named tensors.
///
/// See `docs/model-card.md` for the schema with examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Card format version, must be [`CARD_VERSION`].
    pub version: u32,
    /// Optional human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path of the safetensors weights file, relative to the card's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// PEFT checkpoint used by `lora` nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft: Option<PeftFiles>,
    /// Inputs, in evaluation order.
    pub inputs: Vec<InputCard>,
    /// Nodes in topological order; the last one is the output.
    pub nodes: Vec<NodeCard>,
}

/// Serialization format of a card, chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardFormat {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl CardFormat {
    /// The format for `path`'s extension (`toml` or `json`, case-insensitive).
    ///
    /// # Errors
    /// [`Error::Format`] for any other extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Ok(CardFormat::Toml),
            Some("json") => Ok(CardFormat::Json),
            _ => Err(Error::format(
                "model card",
                format!("{}: extension must be .toml or .json", path.display()),
            )),
        }
    }
}

fn tensor_field<'a>(field: &'a Option<String>, node: &str, what: &str) -> Result<&'a str> {
    field
        .as_deref()
        .ok_or_else(|| Error::model(format!("card node '{node}': missing field '{what}'")))
}

fn need_store<'a>(store: Option<&'a TensorStore>, node: &str) -> Result<&'a TensorStore> {
    store.ok_or_else(|| {
        Error::model(format!(
            "card node '{node}' needs tensors but the card has no weights file"
        ))
    })
}

impl NodeCard {
    fn set_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut f = |name: &'static str, set: bool| {
            if set {
                v.push(name)
            }
        };
        f("weight", self.weight.is_some());
        f("bias", self.bias.is_some());
        f("a", self.a.is_some());
        f("b", self.b.is_some());
        f("scale", self.scale.is_some());
        f("alpha", self.alpha.is_some());
        f("use_rslora", self.use_rslora.is_some());
        f("mul", self.mul.is_some());
        f("add", self.add.is_some());
        f("factor", self.factor.is_some());
        f("func", self.func.is_some());
        f("interval", self.interval.is_some());
        f("degree", self.degree.is_some());
        f("coeffs", self.coeffs.is_some());
        f("cheb", self.cheb.is_some());
        f("peft_module", self.peft_module.is_some());
        v
    }

    fn to_op(&self, store: Option<&TensorStore>, peft: Option<&PeftLora>) -> Result<Op> {
        let name = self.name.as_str();
        let op = self
            .op
            .ok_or_else(|| Error::model(format!("card node '{name}': missing field 'op'")))?;
        let allowed: &[&str] = match op {
            OpKind::Linear => &["weight", "bias"],
            OpKind::LowRank => &["a", "b", "scale", "alpha", "use_rslora", "bias"],
            OpKind::Lora => &["peft_module"],
            OpKind::Affine => &["mul", "add"],
            OpKind::Scale => &["factor"],
            OpKind::Poly => &["func", "interval", "degree", "coeffs", "cheb"],
            OpKind::Add | OpKind::Concat => &[],
        };
        if let Some(bad) = self.set_fields().into_iter().find(|f| !allowed.contains(f)) {
            return Err(Error::model(format!(
                "card node '{name}': field '{bad}' does not belong to op {op:?} (allowed: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let bias = |store: Option<&TensorStore>| -> Result<Option<Array1<f64>>> {
            match &self.bias {
                Some(t) => Ok(Some(need_store(store, name)?.vector(t)?)),
                None => Ok(None),
            }
        };
        Ok(match op {
            OpKind::Linear => {
                let s = need_store(store, name)?;
                Op::Linear {
                    weight: s.matrix(tensor_field(&self.weight, name, "weight")?)?,
                    bias: bias(store)?,
                }
            }
            OpKind::LowRank => {
                let s = need_store(store, name)?;
                let a = s.matrix(tensor_field(&self.a, name, "a")?)?;
                let b = s.matrix(tensor_field(&self.b, name, "b")?)?;
                let r = a.nrows() as f64;
                let scale = match (self.scale, self.alpha) {
                    (Some(sc), None) => {
                        if self.use_rslora.is_some() {
                            return Err(Error::model(format!(
                                "card node '{name}': use_rslora only goes with alpha"
                            )));
                        }
                        sc
                    }
                    (None, Some(alpha)) => {
                        if self.use_rslora.unwrap_or(false) {
                            alpha / r.sqrt()
                        } else {
                            alpha / r
                        }
                    }
                    _ => {
                        return Err(Error::model(format!(
                            "card node '{name}': low_rank needs exactly one of 'scale' or 'alpha'"
                        )))
                    }
                };
                Op::LowRank {
                    a,
                    b,
                    scale,
                    bias: bias(store)?,
                }
            }
            OpKind::Lora => {
                let module = tensor_field(&self.peft_module, name, "peft_module")?;
                let peft = peft.ok_or_else(|| {
                    Error::model(format!(
                        "card node '{name}': op lora needs a [peft] checkpoint in the card"
                    ))
                })?;
                peft.get(module)?.to_op()
            }
            OpKind::Affine => {
                let s = need_store(store, name)?;
                Op::Affine {
                    mul: s.vector(tensor_field(&self.mul, name, "mul")?)?,
                    add: s.vector(tensor_field(&self.add, name, "add")?)?,
                }
            }
            OpKind::Scale => Op::Scale(self.factor.ok_or_else(|| {
                Error::model(format!("card node '{name}': missing field 'factor'"))
            })?),
            OpKind::Poly => {
                let [lo, hi] = self.interval.ok_or_else(|| {
                    Error::model(format!("card node '{name}': missing field 'interval'"))
                })?;
                let act = match (&self.coeffs, &self.cheb, self.degree) {
                    (None, None, Some(degree)) => {
                        let func = self.func.ok_or_else(|| {
                            Error::model(format!("card node '{name}': 'degree' needs 'func'"))
                        })?;
                        Activation::fit(func, lo, hi, degree)?
                    }
                    (Some(c), None, None) => {
                        let mut a = Activation::from_power_coeffs(c, lo, hi)?;
                        a.func = self.func;
                        a
                    }
                    (None, Some(c), None) => {
                        let mut a = Activation::from_chebyshev(c.clone(), lo, hi)?;
                        a.func = self.func;
                        a
                    }
                    _ => {
                        return Err(Error::model(format!(
                            "card node '{name}': poly needs exactly one of 'degree' (with 'func'), 'coeffs' or 'cheb'"
                        )))
                    }
                };
                Op::Poly(act)
            }
            OpKind::Add => Op::Add,
            OpKind::Concat => Op::Concat,
        })
    }
}

impl ModelCard {
    /// Parses a card from TOML text.
    ///
    /// # Errors
    /// [`Error::Format`] for invalid TOML or unknown / missing fields.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::format("model card (TOML)", e.to_string()))
    }

    /// Parses a card from JSON text.
    ///
    /// # Errors
    /// [`Error::Format`] for invalid JSON or unknown / missing fields.
    pub fn from_json_str(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::format("model card (JSON)", e.to_string()))
    }

    /// Reads a card (at most [`MAX_CARD_BYTES`]), TOML or JSON by extension.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable, [`Error::Format`] if too large, of another extension,
    /// or malformed.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let format = CardFormat::from_path(path)?;
        let text = read_text_limited(path, MAX_CARD_BYTES, "model card")?;
        match format {
            CardFormat::Toml => Self::from_toml_str(&text),
            CardFormat::Json => Self::from_json_str(&text),
        }
        .map_err(|e| match e {
            Error::Format { what, reason } => {
                Error::format(what, format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }

    /// Serializes the card in `format`.
    ///
    /// # Errors
    /// [`Error::Format`] if the serializer fails (for example a non-finite number in TOML).
    pub fn to_string(&self, format: CardFormat) -> Result<String> {
        match format {
            CardFormat::Toml => {
                toml::to_string(self).map_err(|e| Error::format("model card (TOML)", e.to_string()))
            }
            CardFormat::Json => serde_json::to_string_pretty(self)
                .map_err(|e| Error::format("model card (JSON)", e.to_string())),
        }
    }

    /// Builds the adapter from the card, taking tensors from `weights` and LoRA pairs from
    /// `peft`.
    ///
    /// # Errors
    /// [`Error::Model`] for a wrong version, a missing / misplaced field, an unknown
    /// operand or tensor; plus every shape and value error of [`AdapterBuilder`].
    pub fn to_adapter(
        &self,
        weights: Option<&TensorStore>,
        peft: Option<&PeftLora>,
    ) -> Result<Adapter> {
        if self.version != CARD_VERSION {
            return Err(Error::model(format!(
                "model card version {} is not supported (expected {CARD_VERSION})",
                self.version
            )));
        }
        let mut builder = AdapterBuilder::new();
        let mut refs: BTreeMap<&str, NodeRef> = BTreeMap::new();
        for input in &self.inputs {
            let r = builder.input(&input.name, input.dim)?;
            refs.insert(input.name.as_str(), r);
        }
        for node in &self.nodes {
            let op = node.to_op(weights, peft)?;
            let mut operands = Vec::with_capacity(node.inputs.len());
            for i in &node.inputs {
                let r = refs.get(i.as_str()).copied().ok_or_else(|| {
                    Error::model(format!(
                        "card node '{}': operand '{i}' is not an input or an earlier node",
                        node.name
                    ))
                })?;
                operands.push(r);
            }
            let r = builder.node(&node.name, op, &operands)?;
            refs.insert(node.name.as_str(), r);
        }
        builder.build()
    }

    /// Describes `adapter` as a card plus the tensors it names (`<node>.weight`,
    /// `<node>.bias`, `<node>.a`, `<node>.b`, `<node>.mul`, `<node>.add`). Activations are
    /// stored as their exact Chebyshev coefficients (with `func` kept for reference); PEFT
    /// LoRA nodes become `low_rank` nodes with an explicit `scale`. The card's `weights`
    /// field is left unset.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] only if the adapter is internally inconsistent.
    pub fn from_adapter(adapter: &Adapter, name: Option<&str>) -> Result<(ModelCard, TensorStore)> {
        let mut store = TensorStore::new();
        let mut nodes = Vec::with_capacity(adapter.nodes().len());
        let put_matrix =
            |store: &mut TensorStore, key: String, m: &Array2<f64>| -> Result<String> {
                store.insert(
                    &key,
                    vec![m.nrows(), m.ncols()],
                    m.iter().copied().collect(),
                )?;
                Ok(key)
            };
        let put_vector =
            |store: &mut TensorStore, key: String, v: &Array1<f64>| -> Result<String> {
                store.insert(&key, vec![v.len()], v.to_vec())?;
                Ok(key)
            };
        for node in adapter.nodes() {
            let n = &node.name;
            let mut card = NodeCard {
                name: n.clone(),
                inputs: node
                    .inputs
                    .iter()
                    .map(|&r| adapter.name_of(r).to_string())
                    .collect(),
                ..NodeCard::default()
            };
            match &node.op {
                Op::Linear { weight, bias } => {
                    card.op = Some(OpKind::Linear);
                    card.weight = Some(put_matrix(&mut store, format!("{n}.weight"), weight)?);
                    if let Some(b) = bias {
                        card.bias = Some(put_vector(&mut store, format!("{n}.bias"), b)?);
                    }
                }
                Op::LowRank { a, b, scale, bias } => {
                    card.op = Some(OpKind::LowRank);
                    card.a = Some(put_matrix(&mut store, format!("{n}.a"), a)?);
                    card.b = Some(put_matrix(&mut store, format!("{n}.b"), b)?);
                    card.scale = Some(*scale);
                    if let Some(bv) = bias {
                        card.bias = Some(put_vector(&mut store, format!("{n}.bias"), bv)?);
                    }
                }
                Op::Affine { mul, add } => {
                    card.op = Some(OpKind::Affine);
                    card.mul = Some(put_vector(&mut store, format!("{n}.mul"), mul)?);
                    card.add = Some(put_vector(&mut store, format!("{n}.add"), add)?);
                }
                Op::Scale(s) => {
                    card.op = Some(OpKind::Scale);
                    card.factor = Some(*s);
                }
                Op::Poly(act) => {
                    card.op = Some(OpKind::Poly);
                    card.func = act.func;
                    card.interval = Some([act.lo, act.hi]);
                    card.cheb = Some(act.cheb.clone());
                }
                Op::Add => card.op = Some(OpKind::Add),
                Op::Concat => card.op = Some(OpKind::Concat),
            }
            nodes.push(card);
        }
        let card = ModelCard {
            version: CARD_VERSION,
            name: name.map(str::to_string),
            weights: None,
            peft: None,
            inputs: adapter
                .inputs()
                .iter()
                .map(|i| InputCard {
                    name: i.name.clone(),
                    dim: i.dim,
                })
                .collect(),
            nodes,
        };
        Ok((card, store))
    }
}

fn resolve(base: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Loads the adapter a card describes: reads the card (TOML or JSON by extension), its
/// `weights` file and its `peft` checkpoint (paths relative to the card's directory), and
/// builds the [`Adapter`].
///
/// # Errors
/// As [`ModelCard::from_path`], [`TensorStore::from_path`], [`PeftLora::load`] and
/// [`ModelCard::to_adapter`].
pub fn load_card(path: impl AsRef<Path>) -> Result<Adapter> {
    let path = path.as_ref();
    let card = ModelCard::from_path(path)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let store = match &card.weights {
        Some(w) => Some(TensorStore::from_path(resolve(base, w))?),
        None => None,
    };
    let peft = match &card.peft {
        Some(p) => Some(PeftLora::load(
            resolve(base, &p.weights),
            resolve(base, &p.config),
        )?),
        None => None,
    };
    card.to_adapter(store.as_ref(), peft.as_ref())
}

/// Writes `adapter` as a card at `card_path` (TOML or JSON by extension) and its tensors
/// as F64 safetensors next to it, named `<card stem>.safetensors`; returns the weights
/// path. [`load_card`] reads the pair back into an equal adapter.
///
/// # Errors
/// [`Error::Format`] for an unsupported extension, [`Error::Io`] on write failure.
pub fn save_adapter(
    adapter: &Adapter,
    card_path: impl AsRef<Path>,
    name: Option<&str>,
) -> Result<PathBuf> {
    let card_path = card_path.as_ref();
    let format = CardFormat::from_path(card_path)?;
    let stem = card_path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| {
            Error::format(
                "model card",
                format!("{}: no usable file name", card_path.display()),
            )
        })?;
    let weights_name = format!("{stem}.safetensors");
    let weights_path = card_path.with_file_name(&weights_name);
    let (mut card, store) = ModelCard::from_adapter(adapter, name)?;
    card.weights = Some(weights_name);
    store.write(&weights_path)?;
    let text = card.to_string(format)?;
    std::fs::write(card_path, text).map_err(|e| Error::io(card_path, e))?;
    Ok(weights_path)
}

// ---------------------------------------------------------------------------------------
// .npy features
// ---------------------------------------------------------------------------------------

/// Parses `.npy` bytes holding f32 or f64 features: 2-D is `samples x features`, 1-D is
/// one sample. Little- and big-endian, C and Fortran order are accepted.
///
/// # Errors
/// [`Error::Format`] for a malformed or truncated file, another dtype, or another number
/// of dimensions; [`Error::InvalidValue`] for an empty array or a NaN/infinite value.
pub fn features_from_npy_bytes(bytes: &[u8]) -> Result<Array2<f64>> {
    use ndarray_npy::ReadNpyExt;
    let what = "npy features";
    check_npy_preamble(bytes)?;
    let mut cursor = std::io::Cursor::new(bytes);
    let header = ndarray_npy::npy::header::Header::from_reader(&mut cursor)
        .map_err(|e| Error::format(what, e.to_string()))?;
    let ndim = header.shape.len();
    if ndim == 0 || ndim > 2 {
        return Err(Error::format(
            what,
            format!("shape {:?}: expected 1-D or 2-D", header.shape),
        ));
    }
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(what, format!("shape {:?} overflows", header.shape)))?;
    if count == 0 {
        return Err(Error::InvalidValue {
            context: what.into(),
            reason: format!("empty array, shape {:?}", header.shape),
        });
    }
    let data_len = bytes.len() as u64 - cursor.position();
    // Bound what the reader will allocate by what the file actually holds.
    let data: ArrayD<f64> = if Some(data_len) == (count as u64).checked_mul(8) {
        ArrayD::<f64>::read_npy(bytes)
            .map_err(|e| Error::format(what, format!("{e} (expected f32 or f64)")))?
    } else if Some(data_len) == (count as u64).checked_mul(4) {
        ArrayD::<f32>::read_npy(bytes)
            .map_err(|e| Error::format(what, format!("{e} (expected f32 or f64)")))?
            .mapv(f64::from)
    } else {
        return Err(Error::format(
            what,
            format!(
                "shape {:?} with dtype {} does not match the {data_len} data bytes (truncated, or not f32/f64)",
                header.shape, header.type_descriptor
            ),
        ));
    };
    let m = match data.ndim() {
        1 => {
            let n = data.len();
            data.into_shape_with_order((1, n))
                .map_err(|e| Error::format(what, e.to_string()))?
        }
        _ => data
            .into_dimensionality::<Ix2>()
            .map_err(|e| Error::format(what, e.to_string()))?,
    };
    if let Some(((r, c), v)) = m.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: format!("{what}, sample {r}, feature {c}"),
            reason: format!("value is {v}"),
        });
    }
    Ok(m)
}

/// Checks the fixed `.npy` preamble (magic, version, header length) against the buffer
/// before `ndarray-npy` parses the header: its reader allocates the declared header length
/// up front, so a 26-byte file declaring a 4 GiB header made it allocate 4 GiB (found by
/// the `model_files` fuzz target, docs/fuzzing.md).
fn check_npy_preamble(bytes: &[u8]) -> Result<()> {
    let what = "npy features";
    let magic = b"\x93NUMPY";
    if bytes.get(..magic.len()) != Some(&magic[..]) {
        return Err(Error::format(what, "not an npy file (bad magic)"));
    }
    let (header_len, start) = match bytes.get(6) {
        Some(1) => (
            bytes
                .get(8..10)
                .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))),
            10usize,
        ),
        Some(2 | 3) => (
            bytes
                .get(8..12)
                .and_then(|b| usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()),
            12usize,
        ),
        Some(v) => {
            return Err(Error::format(
                what,
                format!("unsupported npy format version {v}"),
            ))
        }
        None => return Err(Error::format(what, "truncated npy preamble")),
    };
    let header_len = header_len.ok_or_else(|| Error::format(what, "truncated npy preamble"))?;
    match start.checked_add(header_len) {
        Some(end) if end <= bytes.len() => Ok(()),
        _ => Err(Error::format(
            what,
            format!(
                "truncated: the npy header declares {header_len} bytes, the file has {} after the preamble",
                bytes.len().saturating_sub(start)
            ),
        )),
    }
}

/// Reads features from a `.npy` file of at most [`MAX_NPY_BYTES`]; see
/// [`features_from_npy_bytes`].
///
/// # Errors
/// [`Error::Io`] if unreadable, else as [`features_from_npy_bytes`] (messages name the path).
pub fn load_features_npy(path: impl AsRef<Path>) -> Result<Array2<f64>> {
    let path = path.as_ref();
    let bytes = read_limited(path, MAX_NPY_BYTES, "npy features")?;
    features_from_npy_bytes(&bytes).map_err(|e| match e {
        Error::Format { what, reason } => {
            Error::format(what, format!("{}: {reason}", path.display()))
        }
        Error::InvalidValue { context, reason } => Error::InvalidValue {
            context: format!("{}: {context}", path.display()),
            reason,
        },
        other => other,
    })
}

/// Writes `samples x features` as an f64 `.npy` file (C order).
///
/// # Errors
/// [`Error::InvalidValue`] for NaN/infinite values, [`Error::Io`] / [`Error::Format`] on
/// write failure.
pub fn save_features_npy(path: impl AsRef<Path>, features: ArrayView2<f64>) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let path = path.as_ref();
    if let Some(((r, c), v)) = features.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: format!("features to save, sample {r}, feature {c}"),
            reason: format!("value is {v}"),
        });
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    features
        .as_standard_layout()
        .write_npy(&mut w)
        .map_err(|e| match e {
            ndarray_npy::WriteNpyError::Io(e) => Error::io(path, e),
            other => Error::format("npy features", format!("{}: {other}", path.display())),
        })?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333_251_953_125);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f64(0x7bff), 65504.0); // largest finite
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(bf16_to_f64(0x3f80), 1.0);
        assert_eq!(bf16_to_f64(0xc0a0), -5.0);
    }

    #[test]
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
