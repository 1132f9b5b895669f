//! Model cards: TOML / JSON descriptions of an adapter graph ([`ModelCard`]), [`load_card`]
//! and [`save_adapter`]. The format is documented in `docs/model-card.md`.
//!
//! Size: one format (the model card: its serde types, the graph they describe, loading and saving); the PEFT import is in `peft*.rs`, tensors in `tensors.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::activation::{Activation, ActivationFn};
use super::adapter::{Adapter, AdapterBuilder};
use super::layer::{NodeRef, Op};
use super::load::read_text_limited;
use super::peft::PeftLora;
use super::tensors::TensorStore;
use crate::{Error, Result};

/// Largest model card read (1 MiB).
pub const MAX_CARD_BYTES: u64 = 1 << 20;
/// The model card format version [`save_adapter`] writes (one weights file).
pub const CARD_VERSION: u32 = 1;
/// The newest card format version this code reads: version 2 allows `weights` to be a list
/// of files (written by `hepeft import-peft`).
pub const CARD_VERSION_MAX: u32 = 2;

/// The `weights` field of a card: one safetensors file, or (version 2) several, whose tensor
/// names must be unique across the files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WeightFiles {
    /// `weights = "adapter.safetensors"`.
    One(String),
    /// `weights = ["base.safetensors", "adapter_model.safetensors"]` (card version 2).
    Many(Vec<String>),
}

impl WeightFiles {
    /// The file paths, as written in the card.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            WeightFiles::One(p) => vec![p.as_str()],
            WeightFiles::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl From<String> for WeightFiles {
    fn from(p: String) -> Self {
        WeightFiles::One(p)
    }
}

impl From<&str> for WeightFiles {
    fn from(p: &str) -> Self {
        WeightFiles::One(p.to_string())
    }
}

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
    /// Card format version, 1 or 2 ([`CARD_VERSION`] ..= [`CARD_VERSION_MAX`]).
    pub version: u32,
    /// Optional human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path(s) of the safetensors weights file(s), relative to the card's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightFiles>,
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
    /// Names of the tensors this node takes from the weights files.
    pub fn tensor_names(&self) -> Vec<&str> {
        [
            &self.weight,
            &self.bias,
            &self.a,
            &self.b,
            &self.mul,
            &self.add,
        ]
        .into_iter()
        .filter_map(|f| f.as_deref())
        .collect()
    }

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
                peft.get(module)?.to_op()?
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
        if !(CARD_VERSION..=CARD_VERSION_MAX).contains(&self.version) {
            return Err(Error::model(format!(
                "model card version {} is not supported (expected {CARD_VERSION} to {CARD_VERSION_MAX})",
                self.version
            )));
        }
        if self.version < 2 && matches!(self.weights, Some(WeightFiles::Many(_))) {
            return Err(Error::model(
                "model card: a list of weights files needs version = 2",
            ));
        }
        if let Some(p) = peft {
            // A checkpoint that replaces base tensors (modules_to_save, saved biases) must have
            // them used, or the card computes something other than PEFT.
            let used: BTreeSet<&str> = self.nodes.iter().flat_map(NodeCard::tensor_names).collect();
            let missing: Vec<String> = p
                .replacements()
                .into_iter()
                .filter(|(raw, _)| !used.contains(raw.as_str()))
                .map(|(raw, what)| format!("'{raw}' (replaces {what})"))
                .collect();
            if !missing.is_empty() {
                return Err(Error::model(format!(
                    "the card's PEFT checkpoint replaces base tensors the card does not use: {}; \
                     list adapter_model.safetensors among the card's weights and use these tensors \
                     in place of the base ones, or write the card with `hepeft import-peft`",
                    missing.join(", ")
                )));
            }
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
        Some(w) => {
            let mut store = TensorStore::new();
            for p in w.paths() {
                store.merge(TensorStore::from_path(resolve(base, p))?)?;
            }
            Some(store)
        }
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
    let files = adapter_files(adapter, card_path, name)?;
    std::fs::write(&files.weights_path, &files.weights)
        .map_err(|e| Error::io(&files.weights_path, e))?;
    std::fs::write(card_path, &files.card).map_err(|e| Error::io(card_path, e))?;
    Ok(files.weights_path)
}

/// The two files [`save_adapter`] writes, in memory.
#[derive(Debug, Clone)]
pub struct AdapterFiles {
    /// `<card stem>.safetensors` next to the card.
    pub weights_path: PathBuf,
    /// F64 safetensors of every tensor.
    pub weights: Vec<u8>,
    /// The card (TOML or JSON by the card path's extension), naming the weights file.
    pub card: String,
}

/// The card and weights of `adapter` as [`save_adapter`] would write them for
/// `card_path`, without writing (callers choose how: atomically, over the network).
/// Costs one serialization of every tensor.
///
/// # Errors
/// [`Error::Format`] for an unsupported extension or a path without a file name.
pub fn adapter_files(
    adapter: &Adapter,
    card_path: &Path,
    name: Option<&str>,
) -> Result<AdapterFiles> {
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
    card.weights = Some(WeightFiles::One(weights_name));
    Ok(AdapterFiles {
        weights_path,
        weights: store.to_bytes()?,
        card: card.to_string(format)?,
    })
}

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
