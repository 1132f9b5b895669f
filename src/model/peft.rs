//! Hugging Face PEFT LoRA-family checkpoints ([`PeftLora`]), read with PEFT's exact
//! inference semantics or refused.
//!
//! The config is parsed in [`peft_config`](super::peft_config) (re-exported here). Every
//! field of `adapter_config.json` and every tensor of `adapter_model.safetensors` that
//! PEFT (0.21) writes for LoRA-family adapters is either applied as PEFT's forward applies it,
//! ignored because it cannot change inference (metadata, dropout, adapter initialisation), or
//! refused with an error naming it. Anything else (an unknown field or tensor) is an error
//! unless the caller opts out with [`PeftOptions::allow_unknown`], in which case it is listed
//! in [`PeftLora::warnings`]. The full table is in `docs/model-card.md`.
//!
//! What PEFT computes, per adapted `nn.Linear` with base weight `W` [out, in] and bias `b`:
//!
//! * LoRA: `W x + b + s (B (A x) + b_B)`, `s = alpha / r` (`alpha / sqrt(r)` with rsLoRA),
//!   `r` and `alpha` from `rank_pattern` / `alpha_pattern` matched as PEFT matches them;
//!   `b_B` only with `lora_bias`.
//! * DoRA (`lora_magnitude_vector` `m`): `k ⊙ (W x + s B A x) + b` with
//!   `k = m / ||W + s B A||_row` (the norm is a constant at inference).
//! * KaSA (`lora_diag` `d`): `W_t x + b + s B (d ⊙ (A x))`, where `W_t` is `W` with its `r`
//!   smallest singular components removed (PEFT truncates the base weight when it loads the
//!   adapter).
//!
//! The LoRA part alone is [`LoraPair::to_op`]; the whole adapted layer, which DoRA and KaSA
//! need, is [`LoraPair::adapt`].
//!
//! Size: one concern (reading a PEFT LoRA-family checkpoint with PEFT's exact semantics, tensor by tensor); about 75 lines are unit tests, and the `adapter_config.json` half already lives in `peft_config.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::layer::Op;
use super::tensors::TensorStore;
use crate::{Error, Result};

pub use super::peft_config::*;

/// The prefix PEFT puts before module names in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// Raw tensor names of one LoRA pair in `adapter_model.safetensors`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoraTensorNames {
    /// `lora_A` weight.
    pub a: String,
    /// `lora_B` weight.
    pub b: String,
    /// `lora_B` bias (`lora_bias`).
    pub bias: Option<String>,
    /// DoRA `lora_magnitude_vector`.
    pub magnitude: Option<String>,
    /// KaSA `lora_diag`.
    pub diag: Option<String>,
}

/// One adapted layer of a PEFT checkpoint. For plain LoRA its update is
/// `delta(x) = scale * (B (A x) + bias)`; DoRA and KaSA also change how the base weight is
/// used (see [`LoraPair::adapt`]).
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
    /// DoRA magnitude `m` (length `out`).
    pub magnitude: Option<Array1<f64>>,
    /// KaSA diagonal `d` (length `r`).
    pub diag: Option<Array1<f64>>,
    /// Where the tensors came from.
    pub tensors: LoraTensorNames,
}

/// A PEFT-adapted linear layer as plain operations: `weight x (+ base bias) + lora(x)`,
/// equal to PEFT's forward at inference.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptedLinear {
    /// The base weight as PEFT uses it, `[out, in]`: scaled by the DoRA factor, or
    /// KaSA-truncated, or the base weight itself.
    pub weight: Array2<f64>,
    /// The update, an [`Op::LowRank`] (DoRA's factor folded into `B`, KaSA's diagonal into `A`).
    pub lora: Op,
    /// Whether `weight` differs from the base weight given.
    pub weight_changed: bool,
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

    /// Whether this is plain LoRA (no DoRA magnitude, no KaSA diagonal): its update does not
    /// depend on the base weight.
    pub fn is_plain(&self) -> bool {
        self.magnitude.is_none() && self.diag.is_none()
    }

    /// The LoRA update as an [`Op::LowRank`] (the bias, if any, is multiplied by `scale` as
    /// PEFT does).
    ///
    /// # Errors
    /// [`Error::Model`] for DoRA and KaSA layers, whose output depends on the base weight:
    /// use [`LoraPair::adapt`] (which `hepeft import-peft` does).
    pub fn to_op(&self) -> Result<Op> {
        if !self.is_plain() {
            let (what, t) = match (&self.tensors.magnitude, &self.tensors.diag) {
                (Some(t), _) => ("DoRA", t),
                (_, Some(t)) => ("KaSA", t),
                _ => ("", &self.tensors.a),
            };
            return Err(Error::model(format!(
                "PEFT module '{}' is {what} ('{t}'): its output depends on the base weight, so it \
                 is not a stand-alone LoRA update; write the card with `hepeft import-peft`, which \
                 folds it into the base layer",
                self.module
            )));
        }
        Ok(Op::LowRank {
            a: self.a.clone(),
            b: self.b.clone(),
            scale: self.scale,
            bias: self.bias.as_ref().map(|b| b * self.scale),
        })
    }

    /// The whole adapted layer given its base weight `w` (`[out, in]`, already transposed if
    /// the checkpoint is `fan_in_fan_out`). The base bias is unchanged by every variant.
    ///
    /// * LoRA: `w` and the update of [`LoraPair::to_op`].
    /// * DoRA: `k = m / ||w + s B A||_row`; weight `diag(k) w`, update `s diag(k) B (A x)`.
    ///   Cost `O(out * in * r)`.
    /// * KaSA: weight = `w` without its `r` smallest singular components (one-sided Jacobi
    ///   SVD in f64, `O(sweeps * in^2 * out)`; PEFT computes it in f32, so results agree to
    ///   about 1e-7 relative), update `s B (d ⊙ (A x))`.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] if `w` is not `out x in`; [`Error::Model`] for a zero
    /// row norm (DoRA) or `r >= min(out, in)` (KaSA, as PEFT).
    pub fn adapt(&self, w: ArrayView2<f64>) -> Result<AdaptedLinear> {
        let ctx = format!("PEFT module '{}': base weight", self.module);
        if w.nrows() != self.out_dim() {
            return Err(Error::dims(
                format!("{ctx} rows"),
                self.out_dim(),
                w.nrows(),
            ));
        }
        if w.ncols() != self.in_dim() {
            return Err(Error::dims(
                format!("{ctx} columns"),
                self.in_dim(),
                w.ncols(),
            ));
        }
        if let Some(m) = &self.magnitude {
            let merged = &w + &(self.b.dot(&self.a) * self.scale);
            let norms = merged.map_axis(Axis(1), |row| row.dot(&row).sqrt());
            if let Some(i) = norms.iter().position(|&n| n == 0.0) {
                return Err(Error::model(format!(
                    "PEFT module '{}': DoRA row {i} of W + s B A is zero",
                    self.module
                )));
            }
            let k = m / &norms;
            let kcol = k.view().insert_axis(Axis(1));
            return Ok(AdaptedLinear {
                weight: &w * &kcol,
                lora: Op::LowRank {
                    a: self.a.clone(),
                    b: &self.b * &kcol,
                    scale: self.scale,
                    bias: None,
                },
                weight_changed: true,
            });
        }
        if let Some(d) = &self.diag {
            let r = self.rank();
            let kmin = w.nrows().min(w.ncols());
            if r >= kmin {
                return Err(Error::model(format!(
                    "PEFT module '{}': KaSA needs r ({r}) < min(in, out) ({kmin})",
                    self.module
                )));
            }
            return Ok(AdaptedLinear {
                weight: drop_smallest_singular(w, r),
                lora: Op::LowRank {
                    a: &self.a * &d.view().insert_axis(Axis(1)),
                    b: self.b.clone(),
                    scale: self.scale,
                    bias: None,
                },
                weight_changed: true,
            });
        }
        Ok(AdaptedLinear {
            weight: w.to_owned(),
            lora: self.to_op()?,
            weight_changed: false,
        })
    }
}

/// `w` without its `r` smallest singular components (of the `min(out, in)`), as KaSA's
/// `_truncate_base_weight`: one-sided Jacobi SVD on the columns of `w`, in f64.
fn drop_smallest_singular(w: ArrayView2<f64>, r: usize) -> Array2<f64> {
    // Work on the wider side's transpose so that the rotated matrix has min(out, in) columns.
    let transpose = w.ncols() > w.nrows();
    let mut g: Array2<f64> = if transpose {
        w.t().to_owned()
    } else {
        w.to_owned()
    };
    let n = g.ncols();
    let mut v = Array2::<f64>::eye(n);
    for _sweep in 0..100 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let gp = g.column(p);
                let gq = g.column(q);
                let alpha = gp.dot(&gp);
                let beta = gq.dot(&gq);
                let gamma = gp.dot(&gq);
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for m in [&mut g, &mut v] {
                    for i in 0..m.nrows() {
                        let (x, y) = (m[[i, p]], m[[i, q]]);
                        m[[i, p]] = c * x - s * y;
                        m[[i, q]] = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    // Columns of g are sigma_i u_i; v's columns are v_i. Keep the n - r largest.
    let norms: Vec<f64> = (0..n).map(|j| g.column(j).dot(&g.column(j))).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let mut out = Array2::<f64>::zeros((g.nrows(), n));
    for &j in order.iter().take(n - r) {
        let gj = g.column(j);
        let vj = v.column(j);
        for i in 0..g.nrows() {
            for k in 0..n {
                out[[i, k]] += gj[i] * vj[k];
            }
        }
    }
    if transpose {
        out.t().to_owned()
    } else {
        out
    }
}

/// A module `modules_to_save` replaces: its saved tensors (raw names) and values.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModule {
    /// Normalised module name.
    pub module: String,
    /// Saved weight (raw name, value), `[out, in]` for a linear layer.
    pub weight: Option<(String, Array2<f64>)>,
    /// Saved bias (raw name, value).
    pub bias: Option<(String, Array1<f64>)>,
}

/// A PEFT LoRA checkpoint read with PEFT's inference semantics.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftLora {
    /// The parsed `adapter_config.json`.
    pub config: PeftConfig,
    /// Adapted layers by normalised module name (e.g. `"bert.encoder.layer.0.attention.self.query"`).
    pub modules: BTreeMap<String, LoraPair>,
    /// Modules saved in full (`modules_to_save`), by normalised name; each replaces the base
    /// module.
    pub saved_modules: BTreeMap<String, SavedModule>,
    /// Biases saved by `bias = "all"` / `"lora_only"`, by normalised module name: (raw tensor
    /// name, value); each replaces the base module's bias.
    pub biases: BTreeMap<String, (String, Array1<f64>)>,
    /// Unknown tensors, ignored because [`PeftOptions::allow_unknown`] was set (empty
    /// otherwise: an unknown tensor is an error).
    pub other_tensors: Vec<String>,
}

/// What a tensor of a PEFT file is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    LoraA,
    LoraB,
    LoraABias,
    LoraBBias,
    Magnitude,
    Diag,
    Embedding,
    BaseLayerBias,
    SavedWeight,
    SavedBias,
    PlainWeight,
    PlainBias,
}

/// Splits a PEFT tensor name into (module, part, adapter name).
fn parse_peft_name(name: &str) -> Option<(String, Part, Option<String>)> {
    let stripped = name.strip_prefix(PEFT_PREFIX).unwrap_or(name);
    let parts: Vec<&str> = stripped.split('.').collect();
    // The last segment that names a PEFT tensor kind.
    let pos = parts.iter().rposition(|p| {
        matches!(
            *p,
            "lora_A"
                | "lora_B"
                | "lora_magnitude_vector"
                | "lora_diag"
                | "lora_embedding_A"
                | "lora_embedding_B"
                | "base_layer"
                | "modules_to_save"
        )
    });
    let Some(pos) = pos else {
        return match parts.split_last() {
            Some((&"weight", m)) if !m.is_empty() => Some((m.join("."), Part::PlainWeight, None)),
            Some((&"bias", m)) if !m.is_empty() => Some((m.join("."), Part::PlainBias, None)),
            _ => None,
        };
    };
    let module = parts[..pos].join(".");
    if module.is_empty() {
        return None;
    }
    let rest = &parts[pos + 1..];
    let (adapter, kind) = match parts[pos] {
        "lora_magnitude_vector" | "lora_diag" | "lora_embedding_A" | "lora_embedding_B" => {
            match rest {
                [] | ["weight"] => (None, None),
                [a] | [a, "weight"] => (Some((*a).to_string()), None),
                _ => return None,
            }
        }
        _ => match rest {
            [kind] => (None, Some(*kind)),
            [a, kind] => (Some((*a).to_string()), Some(*kind)),
            _ => return None,
        },
    };
    let part = match (parts[pos], kind) {
        ("lora_A", Some("weight")) => Part::LoraA,
        ("lora_B", Some("weight")) => Part::LoraB,
        ("lora_A", Some("bias")) => Part::LoraABias,
        ("lora_B", Some("bias")) => Part::LoraBBias,
        ("lora_magnitude_vector", None) => Part::Magnitude,
        ("lora_diag", None) => Part::Diag,
        ("lora_embedding_A" | "lora_embedding_B", None) => Part::Embedding,
        ("base_layer", Some("bias")) if adapter.is_none() => Part::BaseLayerBias,
        ("modules_to_save", Some("weight")) => Part::SavedWeight,
        ("modules_to_save", Some("bias")) => Part::SavedBias,
        _ => return None,
    };
    Some((module, part, adapter))
}

/// The modules of `modules_to_save` that `module` belongs to (PEFT's
/// `(^|.*\.)m($|\..*)`), as a bool.
fn is_saved_module(cfg: &PeftConfig, module: &str) -> bool {
    cfg.modules_to_save.iter().any(|m| saved_match(m, module))
}

/// PEFT's `(^|.*\.)m($|\..*)` for a literal `m`: `module` is `m`, or `m` is one of its
/// dotted segments' runs (`a.m`, `m.b`, `a.m.b`).
fn saved_match(m: &str, module: &str) -> bool {
    module == m
        || module.ends_with(&format!(".{m}"))
        || module.starts_with(&format!("{m}."))
        || module.contains(&format!(".{m}."))
}

impl PeftLora {
    /// Builds the checkpoint from a loaded `adapter_model.safetensors` and its config,
    /// refusing unknown tensors.
    ///
    /// # Errors
    /// As [`PeftLora::from_store_with`].
    pub fn from_store(store: &TensorStore, config: PeftConfig) -> Result<Self> {
        Self::from_store_with(store, config, &PeftOptions::default())
    }

    /// Builds the checkpoint from a loaded `adapter_model.safetensors` and its config.
    ///
    /// Tensor names may carry the `base_model.model.` prefix or not, and an adapter name
    /// such as `.default` before `.weight` or not; both are normalised away.
    ///
    /// # Errors
    /// [`Error::Model`], naming the tensor, for: a module with only one of `lora_A` /
    /// `lora_B`; duplicate tensors after normalisation; several adapter names in one file;
    /// non-2-D weights (LoRA on convolutions) or LoRA on embeddings; ranks that disagree
    /// with the config; a `lora_A` bias; a DoRA magnitude / KaSA diagonal / `lora_B` bias /
    /// saved bias that the config does not announce (or announced and missing); a tensor
    /// that is none of these (unless `opts.allow_unknown`); a tensor that disagrees with
    /// `target_modules` / `layers_to_transform`; non-finite values.
    pub fn from_store_with(
        store: &TensorStore,
        config: PeftConfig,
        opts: &PeftOptions,
    ) -> Result<Self> {
        #[derive(Default)]
        struct Parts {
            a: Option<String>,
            b: Option<String>,
            bias: Option<String>,
            magnitude: Option<String>,
            diag: Option<String>,
        }
        let mut by_module: BTreeMap<String, Parts> = BTreeMap::new();
        let mut saved: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        let mut base_biases: BTreeMap<String, String> = BTreeMap::new();
        let mut plain_biases: BTreeMap<String, String> = BTreeMap::new();
        let mut adapters: BTreeSet<String> = BTreeSet::new();
        let mut other = Vec::new();
        let dup = |prev: Option<String>, name: &str, module: &str| -> Result<()> {
            match prev {
                Some(p) => Err(Error::model(format!(
                    "PEFT tensors '{p}' and '{name}' both normalise to module '{module}'"
                ))),
                None => Ok(()),
            }
        };
        for name in store.names() {
            let Some((module, part, adapter)) = parse_peft_name(name) else {
                other.push(name.to_string());
                continue;
            };
            if let Some(a) = adapter {
                adapters.insert(a);
            }
            let n = Some(name.to_string());
            match part {
                Part::LoraA => dup(std::mem::replace(&mut by_module.entry(module.clone()).or_default().a, n), name, &module)?,
                Part::LoraB => dup(std::mem::replace(&mut by_module.entry(module.clone()).or_default().b, n), name, &module)?,
                Part::LoraBBias => dup(std::mem::replace(&mut by_module.entry(module.clone()).or_default().bias, n), name, &module)?,
                Part::Magnitude => dup(std::mem::replace(&mut by_module.entry(module.clone()).or_default().magnitude, n), name, &module)?,
                Part::Diag => dup(std::mem::replace(&mut by_module.entry(module.clone()).or_default().diag, n), name, &module)?,
                Part::LoraABias => {
                    return Err(Error::model(format!(
                        "PEFT tensor '{name}': a lora_A bias is not something PEFT writes; refused"
                    )))
                }
                Part::Embedding => {
                    return Err(Error::model(format!(
                        "PEFT tensor '{name}': LoRA on an embedding layer is not supported (embeddings run on the client)"
                    )))
                }
                Part::BaseLayerBias => dup(base_biases.insert(module.clone(), name.to_string()), name, &module)?,
                Part::SavedWeight => dup(std::mem::replace(&mut saved.entry(module.clone()).or_default().0, n), name, &module)?,
                Part::SavedBias => dup(std::mem::replace(&mut saved.entry(module.clone()).or_default().1, n), name, &module)?,
                Part::PlainWeight | Part::PlainBias if is_saved_module(&config, &module) => {
                    let e = saved.entry(module.clone()).or_default();
                    let slot = if part == Part::PlainWeight { &mut e.0 } else { &mut e.1 };
                    dup(std::mem::replace(slot, n), name, &module)?
                }
                Part::PlainBias => dup(plain_biases.insert(module.clone(), name.to_string()), name, &module)?,
                Part::PlainWeight => other.push(name.to_string()),
            }
        }
        if !other.is_empty() && !opts.allow_unknown {
            return Err(Error::model(format!(
                "PEFT checkpoint: unknown tensor(s) {} (not LoRA factors, DoRA magnitudes, KaSA \
                 diagonals, modules_to_save copies or saved biases under this config); they might \
                 change the output, so the checkpoint is refused (--allow-unknown / \
                 PeftOptions::allow_unknown ignores them)",
                other
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if adapters.len() > 1 {
            return Err(Error::model(format!(
                "PEFT file holds several adapters ({}); save one adapter per file",
                adapters.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        // Biases: which ones the `bias` mode allows.
        let mut biases = BTreeMap::new();
        for (module, name) in base_biases {
            if config.bias == BiasMode::None {
                return Err(Error::model(format!(
                    "PEFT tensor '{name}': a saved base-layer bias, but adapter_config.json says bias = \"none\""
                )));
            }
            if !by_module.contains_key(&module) {
                return Err(Error::model(format!(
                    "PEFT tensor '{name}': a base_layer bias of a module without LoRA factors"
                )));
            }
            let v = store.vector(&name)?;
            biases.insert(module, (name, v));
        }
        for (module, name) in plain_biases {
            if config.bias != BiasMode::All {
                return Err(Error::model(format!(
                    "PEFT tensor '{name}': a bias of module '{module}', which is neither adapted nor \
                     in modules_to_save, and adapter_config.json says bias = {:?} (only \"all\" saves those)",
                    config.bias
                )));
            }
            let v = store.vector(&name)?;
            biases.insert(module, (name, v));
        }
        let mut saved_modules = BTreeMap::new();
        for (module, (w, b)) in saved {
            if !is_saved_module(&config, &module) {
                let n = w.as_deref().or(b.as_deref()).unwrap_or_default();
                return Err(Error::model(format!(
                    "PEFT tensor '{n}': a modules_to_save copy of '{module}', which is not in modules_to_save {:?}",
                    config.modules_to_save
                )));
            }
            if by_module.contains_key(&module) {
                return Err(Error::model(format!(
                    "PEFT module '{module}' has both LoRA factors and a modules_to_save copy"
                )));
            }
            let weight = match w {
                Some(n) => {
                    let m = store.matrix(&n)?;
                    Some((n, m))
                }
                None => None,
            };
            let bias = match b {
                Some(n) => {
                    let v = store.vector(&n)?;
                    Some((n, v))
                }
                None => None,
            };
            saved_modules.insert(
                module.clone(),
                SavedModule {
                    module,
                    weight,
                    bias,
                },
            );
        }
        let mut modules = BTreeMap::new();
        for (module, parts) in by_module {
            let a_name = parts.a.ok_or_else(|| {
                Error::model(format!("PEFT module '{module}' has no lora_A weight"))
            })?;
            let b_name = parts.b.ok_or_else(|| {
                Error::model(format!("PEFT module '{module}' has no lora_B weight"))
            })?;
            let a = store.matrix(&a_name)?;
            let b = store.matrix(&b_name)?;
            if a.is_empty() || b.is_empty() {
                return Err(Error::model(format!(
                    "PEFT module '{module}' has an empty matrix"
                )));
            }
            if b.ncols() != a.nrows() {
                return Err(Error::model(format!(
                    "PEFT module '{module}': '{b_name}' is {}x{} but '{a_name}' is {}x{}: lora_B \
                     columns must equal lora_A rows (the rank)",
                    b.nrows(),
                    b.ncols(),
                    a.nrows(),
                    a.ncols(),
                )));
            }
            if let (Some(t), Some(false)) = (&config.target_modules, config.targets(&module)?) {
                return Err(Error::model(format!(
                        "PEFT module '{module}' has LoRA tensors ('{a_name}') but adapter_config.json \
                         does not target it (target_modules {t:?}, exclude_modules {:?}, \
                         layers_to_transform {:?}, layers_pattern {:?}); the checkpoint is inconsistent",
                        config.exclude_modules, config.layers_to_transform, config.layers_pattern
                )));
            }
            let vec_of =
                |n: &Option<String>, len: usize, what: &str| -> Result<Option<Array1<f64>>> {
                    match n {
                        Some(n) => {
                            let v = store.vector(n)?;
                            if v.len() != len {
                                return Err(Error::model(format!(
                                    "PEFT tensor '{n}' ({what}) has length {}, expected {len}",
                                    v.len()
                                )));
                            }
                            Ok(Some(v))
                        }
                        None => Ok(None),
                    }
                };
            let bias = vec_of(&parts.bias, b.nrows(), "lora_B bias")?;
            let magnitude = vec_of(&parts.magnitude, b.nrows(), "DoRA magnitude")?;
            let diag = vec_of(&parts.diag, a.nrows(), "KaSA diagonal")?;
            let announce = |present: bool,
                            cfg: bool,
                            field: &str,
                            t: &Option<String>|
             -> Result<()> {
                match (present, cfg) {
                    (true, false) => Err(Error::model(format!(
                        "PEFT tensor '{}' but adapter_config.json does not set {field}",
                        t.as_deref().unwrap_or_default()
                    ))),
                    (false, true) => Err(Error::model(format!(
                        "adapter_config.json sets {field} but PEFT module '{module}' has no such tensor"
                    ))),
                    _ => Ok(()),
                }
            };
            announce(bias.is_some(), config.lora_bias, "lora_bias", &parts.bias)?;
            announce(
                magnitude.is_some(),
                config.use_dora,
                "use_dora",
                &parts.magnitude,
            )?;
            announce(diag.is_some(), config.kasa, "kasa_config", &parts.diag)?;
            let scale = config.scale_for(&module, a.nrows())?;
            modules.insert(
                module.clone(),
                LoraPair {
                    module,
                    a,
                    b,
                    scale,
                    bias,
                    magnitude,
                    diag,
                    tensors: LoraTensorNames {
                        a: a_name,
                        b: b_name,
                        bias: parts.bias,
                        magnitude: parts.magnitude,
                        diag: parts.diag,
                    },
                },
            );
        }
        if modules.is_empty() {
            return Err(Error::model("PEFT file holds no lora_A / lora_B tensors"));
        }
        // A module listed in modules_to_save without a saved copy is not an error: PEFT
        // ignores names that match no module (its sequence-classification models list
        // "classifier" and "score"), and uses the base module when the copy is absent.
        Ok(PeftLora {
            config,
            modules,
            saved_modules,
            biases,
            other_tensors: other,
        })
    }

    /// What was ignored under [`PeftOptions::allow_unknown`]: one line per unknown config
    /// field or tensor. Empty when nothing was ignored.
    pub fn warnings(&self) -> Vec<String> {
        self.config
            .unknown_fields
            .iter()
            .map(|f| format!("ignored unknown adapter_config.json field '{f}'"))
            .chain(
                self.other_tensors
                    .iter()
                    .map(|t| format!("ignored unknown tensor '{t}'")),
            )
            .collect()
    }

    /// Parses a PEFT checkpoint from the bytes of `adapter_model.safetensors` and the text
    /// of `adapter_config.json`, refusing unknown fields and tensors.
    ///
    /// # Errors
    /// As [`TensorStore::from_bytes`], [`PeftConfig::from_json`] and
    /// [`PeftLora::from_store`].
    pub fn from_bytes(weights: &[u8], config_json: &str) -> Result<Self> {
        Self::from_bytes_with(weights, config_json, &PeftOptions::default())
    }

    /// [`PeftLora::from_bytes`] with options.
    ///
    /// # Errors
    /// As [`PeftLora::from_bytes`].
    pub fn from_bytes_with(weights: &[u8], config_json: &str, opts: &PeftOptions) -> Result<Self> {
        let store = TensorStore::from_bytes_named(weights, "adapter_model.safetensors")?;
        Self::from_store_with(&store, PeftConfig::from_json_with(config_json, opts)?, opts)
    }

    /// Loads a PEFT checkpoint from its two files, refusing unknown fields and tensors.
    ///
    /// # Errors
    /// As [`PeftLora::load_with`].
    pub fn load(weights: impl AsRef<Path>, config: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(weights, config, &PeftOptions::default())
    }

    /// Loads a PEFT checkpoint from its two files.
    ///
    /// # Errors
    /// [`Error::Model`] for a `.bin` (pickle) weights file; as [`PeftLora::from_bytes`],
    /// plus I/O and size-limit errors.
    pub fn load_with(
        weights: impl AsRef<Path>,
        config: impl AsRef<Path>,
        opts: &PeftOptions,
    ) -> Result<Self> {
        let weights = weights.as_ref();
        refuse_pickle(weights)?;
        let store = TensorStore::from_path(weights)?;
        Self::from_store_with(&store, PeftConfig::from_path_with(config, opts)?, opts)
    }

    /// Loads `adapter_model.safetensors` and `adapter_config.json` from a directory,
    /// refusing unknown fields and tensors.
    ///
    /// # Errors
    /// As [`PeftLora::load_dir_with`].
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_dir_with(dir, &PeftOptions::default())
    }

    /// Loads the checkpoint of a directory; see [`resolve_adapter_dir`] for how a named
    /// adapter is found.
    ///
    /// # Errors
    /// As [`resolve_adapter_dir`] and [`PeftLora::load_with`].
    pub fn load_dir_with(dir: impl AsRef<Path>, opts: &PeftOptions) -> Result<Self> {
        let (dir, _) = resolve_adapter_dir(dir.as_ref(), opts.adapter_name.as_deref())?;
        Self::load_with(
            dir.join("adapter_model.safetensors"),
            dir.join("adapter_config.json"),
            opts,
        )
    }

    /// The plain-LoRA pair of `module` (a normalised name; a `base_model.model.` prefix is
    /// accepted).
    ///
    /// # Errors
    /// [`Error::Model`] listing the available modules if there is none.
    pub fn get(&self, module: &str) -> Result<&LoraPair> {
        let key = module.strip_prefix(PEFT_PREFIX).unwrap_or(module);
        self.modules.get(key).ok_or_else(|| {
            Error::model(format!(
                "no PEFT LoRA module '{module}' (available: {})",
                self.modules.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Raw names of the tensors that replace base-model tensors (saved modules and saved
    /// biases), with what each replaces (`"<module>.weight"` / `"<module>.bias"`). A card
    /// using this checkpoint must use these tensors in place of the base ones.
    pub fn replacements(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for s in self.saved_modules.values() {
            if let Some((n, _)) = &s.weight {
                v.push((n.clone(), format!("{}.weight", s.module)));
            }
            if let Some((n, _)) = &s.bias {
                v.push((n.clone(), format!("{}.bias", s.module)));
            }
        }
        for (m, (n, _)) in &self.biases {
            v.push((n.clone(), format!("{m}.bias")));
        }
        v
    }
}

fn refuse_pickle(weights: &Path) -> Result<()> {
    let ext = weights
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("bin" | "pt" | "pth" | "ckpt" | "pkl")) {
        return Err(Error::model(format!(
            "{}: a pickle checkpoint is refused (loading pickle can run arbitrary code); save the \
             adapter as safetensors: model.save_pretrained(dir, safe_serialization=True), or \
             convert it with safetensors.torch.save_file(torch.load(path, weights_only=True), \
             'adapter_model.safetensors')",
            weights.display()
        )));
    }
    Ok(())
}

/// Finds the checkpoint directory of `dir`: `dir` itself if it holds
/// `adapter_config.json` (and `name` is `None` or `"default"`, or there is no subfolder
/// `name`), else the subfolder `name`, else the only subfolder holding an
/// `adapter_config.json`. Returns the directory and the adapter name (`"default"` for the
/// top level).
///
/// # Errors
/// [`Error::Model`] if `name` names no adapter, if there are several adapters and no
/// `name` (both list the names), if nothing is found, or if the directory holds
/// `adapter_model.bin` (pickle) instead of `adapter_model.safetensors`.
pub fn resolve_adapter_dir(dir: &Path, name: Option<&str>) -> Result<(PathBuf, String)> {
    let mut named: Vec<String> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.join("adapter_config.json").is_file() {
                if let Some(n) = p.file_name().and_then(|s| s.to_str()) {
                    named.push(n.to_string());
                }
            }
        }
    }
    named.sort();
    let top = dir.join("adapter_config.json").is_file();
    let chosen = match name {
        Some(n) if named.iter().any(|x| x == n) => (dir.join(n), n.to_string()),
        Some(n) if top && n == "default" => (dir.to_path_buf(), n.to_string()),
        Some(n) => {
            let mut all = named.clone();
            if top {
                all.insert(0, "default".into());
            }
            return Err(Error::model(format!(
                "{}: no adapter named '{n}' (adapters here: {})",
                dir.display(),
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            )));
        }
        None if top => (dir.to_path_buf(), "default".to_string()),
        None => match named.as_slice() {
            [one] => (dir.join(one), one.clone()),
            [] => {
                return Err(Error::model(format!(
                    "{}: no adapter_config.json here or in a subfolder",
                    dir.display()
                )))
            }
            many => {
                return Err(Error::model(format!(
                    "{}: holds several adapters ({}); choose one by name (--adapter-name)",
                    dir.display(),
                    many.join(", ")
                )))
            }
        },
    };
    let (d, _) = &chosen;
    if !d.join("adapter_model.safetensors").exists() && d.join("adapter_model.bin").exists() {
        refuse_pickle(&d.join("adapter_model.bin"))?;
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                Part::LoraA,
                Some("default".into())
            )
        );
        let p = parse_peft_name("classifier.lora_B.weight").unwrap();
        assert_eq!(p, ("classifier".into(), Part::LoraB, None));
        let p = parse_peft_name("base_model.model.classifier.lora_B.bias").unwrap();
        assert_eq!(p, ("classifier".into(), Part::LoraBBias, None));
        assert_eq!(
            parse_peft_name("classifier.weight").unwrap(),
            ("classifier".into(), Part::PlainWeight, None)
        );
        assert!(parse_peft_name("x.lora_A.a.b.weight").is_none());
        assert_eq!(
            parse_peft_name("x.lora_magnitude_vector").unwrap(),
            ("x".into(), Part::Magnitude, None)
        );
        assert_eq!(
            parse_peft_name("x.lora_magnitude_vector.default.weight").unwrap(),
            ("x".into(), Part::Magnitude, Some("default".into()))
        );
        assert_eq!(
            parse_peft_name("base_model.model.dense.base_layer.bias").unwrap(),
            ("dense".into(), Part::BaseLayerBias, None)
        );
        assert_eq!(
            parse_peft_name("m.modules_to_save.default.weight").unwrap(),
            ("m".into(), Part::SavedWeight, Some("default".into()))
        );
    }

    #[test]
    fn jacobi_truncation_matches_rank() {
        // w = U diag(s) V^T with known orthonormal U (5x4) and V (4x4): dropping the smallest
        // component gives U diag(s') V^T with the last singular value zeroed.
        let rot = |n: usize, a: f64| {
            let mut m = Array2::<f64>::eye(n);
            let (c, s) = (a.cos(), a.sin());
            for (p, q) in [(0, 1), (2, 3)] {
                m[[p, p]] = c;
                m[[q, q]] = c;
                m[[p, q]] = -s;
                m[[q, p]] = s;
            }
            m
        };
        let u = Array2::from_shape_fn((5, 4), |(i, j)| rot(5, 0.3)[[i, j]]);
        let v = rot(4, 1.1);
        let sig = Array2::from_diag(&ndarray::arr1(&[5.0, 3.0, 0.5, 2.0]));
        let sig_t = Array2::from_diag(&ndarray::arr1(&[5.0, 3.0, 0.0, 2.0]));
        let w = u.dot(&sig).dot(&v.t());
        let expect = u.dot(&sig_t).dot(&v.t());
        let t = drop_smallest_singular(w.view(), 1);
        assert!(
            (&t - &expect).iter().all(|x| x.abs() < 1e-12),
            "{t} vs {expect}"
        );
        let tt = drop_smallest_singular(w.t(), 1);
        assert!((&tt.t() - &expect).iter().all(|x| x.abs() < 1e-12));
    }
}
