//! A model card from a Hugging Face PEFT checkpoint and the base model's weights: what
//! `hepeft import-peft` writes.
//!
//! The head is a chain of base linear modules (`--head dense,classifier`) with one named
//! activation between consecutive modules. For each module the card takes, in this order:
//!
//! * the weight: the `modules_to_save` copy if the checkpoint has one, else the base
//!   `<module>.weight` (transposed if the checkpoint is `fan_in_fan_out`);
//! * the bias: a saved one (`modules_to_save`, or `bias = "all" / "lora_only"`) if any,
//!   else the base `<module>.bias` if present;
//! * the LoRA update if the module is adapted, exactly as PEFT computes it
//!   ([`LoraPair::adapt`](super::peft::LoraPair::adapt): DoRA and KaSA change the weight and fold into the factors).
//!
//! Tensors used as stored are referenced in the base file and in `adapter_model.safetensors`
//! directly (the card lists both as `weights`, card version 2); tensors hepeft computes
//! (transposes, DoRA / KaSA weights and factors, scaled `lora_B` biases) go into
//! `<card stem>.safetensors` beside the card, named `import.<module>.<what>`.
//!
//! Every adapted module, saved module and saved bias of the checkpoint must belong to the
//! head: the card would otherwise compute something other than PEFT, so that is an error.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use ndarray::{Array1, Array2};

use super::activation::ActivationFn;
use super::card::{CardFormat, InputCard, ModelCard, NodeCard, OpKind, WeightFiles};
use super::layer::Op;
use super::peft::{resolve_adapter_dir, PeftLora, PeftOptions};
use super::tensors::TensorStore;
use crate::{Error, Result};

/// The activation between consecutive head modules, as a `poly` node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationSpec {
    /// The function.
    pub func: ActivationFn,
    /// Its interval `[lo, hi]`.
    pub interval: [f64; 2],
    /// The Chebyshev degree (`square` and `identity` are exact from degree 2 / 1).
    pub degree: usize,
}

/// Options of [`import_peft`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportOptions {
    /// How the checkpoint is read (unknown fields / tensors, adapter name).
    pub peft: PeftOptions,
    /// Base modules forming the head, input first. Empty: the only module of the base file
    /// with a 2-D `<module>.weight`.
    pub head: Vec<String>,
    /// The activation between consecutive head modules (required with two or more).
    pub activation: Option<ActivationSpec>,
    /// The card's `name`.
    pub name: Option<String>,
}

/// What [`build_card`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportedCard {
    /// The card; its `weights` are left for the caller to fill.
    pub card: ModelCard,
    /// Tensors hepeft computed (empty if none).
    pub derived: TensorStore,
    /// One line per head module: what the card does with it.
    pub summary: Vec<String>,
    /// What was ignored under `allow_unknown` (see [`PeftLora::warnings`]).
    pub warnings: Vec<String>,
}

/// What [`import_peft`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    /// The card written.
    pub card: PathBuf,
    /// The derived tensors file, if any tensor was derived.
    pub derived: Option<PathBuf>,
    /// The checkpoint directory used and the adapter's name.
    pub adapter_dir: PathBuf,
    /// `"default"` or the subfolder's name.
    pub adapter_name: String,
    /// One line per head module.
    pub summary: Vec<String>,
    /// Ignored unknown fields / tensors (only with `allow_unknown`).
    pub warnings: Vec<String>,
}

fn put_matrix(store: &mut TensorStore, name: String, m: &Array2<f64>) -> Result<String> {
    store.insert(
        &name,
        vec![m.nrows(), m.ncols()],
        m.iter().copied().collect(),
    )?;
    Ok(name)
}

fn put_vector(store: &mut TensorStore, name: String, v: &Array1<f64>) -> Result<String> {
    store.insert(&name, vec![v.len()], v.to_vec())?;
    Ok(name)
}

/// Builds the card of `peft` applied to the base weights `base` (see the module docs).
/// Tensor fields name tensors of `base`, of the checkpoint's `adapter_model.safetensors`
/// (raw names) or of the returned derived store.
///
/// # Errors
/// [`Error::Model`] for a head module missing from the base file (listing the candidates),
/// no head given when the base file has several linear modules, two or more head modules
/// without an activation, a `fan_in_fan_out` module without LoRA (its layout is unknown),
/// adapted / saved modules or saved biases outside the head, and every error of
/// [`crate::model::Adapter`] construction (checked here by building the adapter).
pub fn build_card(
    peft: &PeftLora,
    base: &TensorStore,
    opts: &ImportOptions,
) -> Result<ImportedCard> {
    let linear_modules: Vec<String> = base
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".weight"))
        .filter(|m| {
            base.get(&format!("{m}.weight"))
                .is_ok_and(|t| t.shape.len() == 2)
        })
        .map(str::to_string)
        .collect();
    let head: Vec<String> = if opts.head.is_empty() {
        match linear_modules.as_slice() {
            [one] => vec![one.clone()],
            _ => {
                return Err(Error::model(format!(
                    "the base file has {} linear modules ({}); say which form the head, input first (--head a,b)",
                    linear_modules.len(),
                    linear_modules.join(", ")
                )))
            }
        }
    } else {
        opts.head.clone()
    };
    if head.len() > 1 && opts.activation.is_none() {
        return Err(Error::model(format!(
            "the head has {} modules ({}); name the activation between them (--activation FUNC \
             --interval LO,HI --degree D)",
            head.len(),
            head.join(", ")
        )));
    }
    // Everything the checkpoint changes must be inside the head.
    let in_head: BTreeSet<&str> = head.iter().map(String::as_str).collect();
    let mut outside = Vec::new();
    for (keys, what) in [
        (peft.modules.keys().collect::<Vec<_>>(), "LoRA"),
        (peft.saved_modules.keys().collect(), "modules_to_save"),
        (peft.biases.keys().collect(), "saved bias"),
    ] {
        for m in keys {
            if !in_head.contains(m.as_str()) {
                outside.push(format!("'{m}' ({what})"));
            }
        }
    }
    if !outside.is_empty() {
        return Err(Error::model(format!(
            "the checkpoint changes modules outside the head [{}]: {}; the card would not compute \
             what PEFT computes (add them to --head, or evaluate them on the client)",
            head.join(", "),
            outside.join(", ")
        )));
    }
    let fan = peft.config.fan_in_fan_out;
    let mut derived = TensorStore::new();
    let mut nodes: Vec<NodeCard> = Vec::new();
    let mut summary = Vec::new();
    // The input's name: "x" unless a node would clash with it.
    let mut input = "x".to_string();
    while head.iter().any(|m| {
        [String::new(), ".lora".into(), ".out".into(), ".act".into()]
            .iter()
            .any(|suffix| format!("{m}{suffix}") == input)
    }) {
        input.push('_');
    }
    let mut prev = input.clone();
    let mut in_dim = None;
    for (i, m) in head.iter().enumerate() {
        let lora = peft.modules.get(m);
        let saved = peft.saved_modules.get(m);
        let mut what = Vec::new();
        // Weight.
        let (weight_name, weight): (String, Array2<f64>) = match saved
            .and_then(|s| s.weight.as_ref())
        {
            Some((n, _)) if fan => {
                return Err(Error::model(format!(
                    "head module '{m}': the checkpoint is fan_in_fan_out and '{n}' is a saved \
                     copy whose layout ([in, out] or [out, in]) is unknown"
                )))
            }
            Some((n, w)) => {
                what.push(format!("weight from modules_to_save '{n}'"));
                (n.clone(), w.clone())
            }
            None => {
                let n = format!("{m}.weight");
                let w = base.matrix(&n).map_err(|_| {
                    Error::model(format!(
                        "head module '{m}': no 2-D tensor '{n}' in the base file (its linear modules: {})",
                        linear_modules.join(", ")
                    ))
                })?;
                if fan {
                    if lora.is_none() {
                        return Err(Error::model(format!(
                            "head module '{m}': the checkpoint is fan_in_fan_out (Conv1D layers, \
                             weight stored [in, out]) but '{m}' has no LoRA, so its layout is unknown"
                        )));
                    }
                    let t = w.t().to_owned();
                    what.push(format!("base weight '{n}' transposed (fan_in_fan_out)"));
                    (
                        put_matrix(&mut derived, format!("import.{m}.weight"), &t)?,
                        t,
                    )
                } else {
                    what.push(format!("base weight '{n}'"));
                    (n, w)
                }
            }
        };
        if i == 0 {
            in_dim = Some(weight.ncols());
        }
        // Bias.
        let bias_name = match (saved.and_then(|s| s.bias.as_ref()), peft.biases.get(m)) {
            (Some((n, _)), _) | (None, Some((n, _))) => {
                what.push(format!("bias '{n}' from the checkpoint"));
                Some(n.clone())
            }
            (None, None) => {
                let n = format!("{m}.bias");
                if base.names().contains(&n.as_str()) {
                    what.push(format!("base bias '{n}'"));
                    Some(n)
                } else {
                    None
                }
            }
        };
        let mut linear = NodeCard {
            name: m.clone(),
            op: Some(OpKind::Linear),
            inputs: vec![prev.clone()],
            weight: Some(weight_name),
            bias: bias_name,
            ..NodeCard::default()
        };
        match lora {
            None => {
                nodes.push(linear);
                prev = m.clone();
            }
            Some(pair) => {
                let adapted = pair.adapt(weight.view())?;
                if adapted.weight_changed {
                    linear.weight = Some(put_matrix(
                        &mut derived,
                        format!("import.{m}.weight"),
                        &adapted.weight,
                    )?);
                }
                let Op::LowRank { a, b, scale, bias } = &adapted.lora else {
                    return Err(Error::model(format!(
                        "head module '{m}': unexpected LoRA form"
                    )));
                };
                let a_name = if *a == pair.a {
                    pair.tensors.a.clone()
                } else {
                    put_matrix(&mut derived, format!("import.{m}.lora_A"), a)?
                };
                let b_name = if *b == pair.b {
                    pair.tensors.b.clone()
                } else {
                    put_matrix(&mut derived, format!("import.{m}.lora_B"), b)?
                };
                let lb_name = match bias {
                    Some(v) => Some(put_vector(
                        &mut derived,
                        format!("import.{m}.lora_bias"),
                        v,
                    )?),
                    None => None,
                };
                what.push(match (&pair.magnitude, &pair.diag) {
                    (Some(_), _) => format!(
                        "DoRA: weight and lora_B scaled by m / ||W + s B A||_row (rank {}, scale {scale})",
                        pair.rank()
                    ),
                    (_, Some(_)) => format!(
                        "KaSA: weight truncated by its {} smallest singular components, lora_diag folded into lora_A (scale {scale})",
                        pair.rank()
                    ),
                    _ => format!("LoRA rank {}, scale {scale}{}", pair.rank(), if lb_name.is_some() { ", lora_B bias" } else { "" }),
                });
                let lora_node = NodeCard {
                    name: format!("{m}.lora"),
                    op: Some(OpKind::LowRank),
                    inputs: vec![prev.clone()],
                    a: Some(a_name),
                    b: Some(b_name),
                    scale: Some(*scale),
                    bias: lb_name,
                    ..NodeCard::default()
                };
                let add = NodeCard {
                    name: format!("{m}.out"),
                    op: Some(OpKind::Add),
                    inputs: vec![m.clone(), format!("{m}.lora")],
                    ..NodeCard::default()
                };
                nodes.push(linear);
                nodes.push(lora_node);
                nodes.push(add);
                prev = format!("{m}.out");
            }
        }
        summary.push(format!("{m}: {}", what.join("; ")));
        if i + 1 < head.len() {
            if let Some(act) = opts.activation {
                nodes.push(NodeCard {
                    name: format!("{m}.act"),
                    op: Some(OpKind::Poly),
                    inputs: vec![prev.clone()],
                    func: Some(act.func),
                    interval: Some(act.interval),
                    degree: Some(act.degree),
                    ..NodeCard::default()
                });
                prev = format!("{m}.act");
            }
        }
    }
    let card = ModelCard {
        version: 2,
        name: opts.name.clone(),
        weights: None,
        peft: None,
        inputs: vec![InputCard {
            name: input,
            dim: in_dim.unwrap_or(0),
        }],
        nodes,
    };
    Ok(ImportedCard {
        card,
        derived,
        summary,
        warnings: peft.warnings(),
    })
}

/// `target` relative to the directory `from` (both made absolute first); `target` itself if
/// they share no root.
fn relative_path(target: &Path, from: &Path) -> Result<String> {
    let abs =
        |p: &Path| -> Result<PathBuf> { std::fs::canonicalize(p).map_err(|e| Error::io(p, e)) };
    let t = abs(target)?;
    let f = abs(from)?;
    let tc: Vec<Component> = t.components().collect();
    let fc: Vec<Component> = f.components().collect();
    let common = tc.iter().zip(&fc).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return Ok(t.display().to_string());
    }
    let mut rel = PathBuf::new();
    for _ in common..fc.len() {
        rel.push("..");
    }
    for c in &tc[common..] {
        rel.push(c.as_os_str());
    }
    Ok(rel.display().to_string())
}

/// Writes the card of the PEFT checkpoint in `adapter_dir` (a named adapter chosen by
/// `opts.peft.adapter_name`, see [`resolve_adapter_dir`]) applied to `base_weights`, at
/// `out` (TOML or JSON by extension), with derived tensors in `<out stem>.safetensors`.
/// The card is checked by loading it back before this returns. Cost: reading the files,
/// plus one SVD per KaSA module.
///
/// # Errors
/// As [`PeftLora::load_dir_with`], [`TensorStore::from_path`] and [`build_card`];
/// [`Error::Io`] on write failure.
pub fn import_peft(
    adapter_dir: &Path,
    base_weights: &Path,
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    let format = CardFormat::from_path(out)?;
    let (dir, adapter_name) = resolve_adapter_dir(adapter_dir, opts.peft.adapter_name.as_deref())?;
    let peft_opts = PeftOptions {
        adapter_name: None,
        ..opts.peft.clone()
    };
    let adapter_file = dir.join("adapter_model.safetensors");
    let peft = PeftLora::load_with(&adapter_file, dir.join("adapter_config.json"), &peft_opts)?;
    let base = TensorStore::from_path(base_weights)?;
    let mut imported = build_card(&peft, &base, opts)?;
    let card_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut files = vec![
        relative_path(base_weights, &card_dir)?,
        relative_path(&adapter_file, &card_dir)?,
    ];
    let derived_path = if imported.derived.is_empty() {
        None
    } else {
        let stem = out.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
            Error::format(
                "model card",
                format!("{}: no usable file name", out.display()),
            )
        })?;
        let p = card_dir.join(format!("{stem}.safetensors"));
        imported.derived.write(&p)?;
        files.push(format!("{stem}.safetensors"));
        Some(p)
    };
    imported.card.weights = Some(WeightFiles::Many(files));
    let text = imported.card.to_string(format)?;
    std::fs::write(out, text).map_err(|e| Error::io(out, e))?;
    // Check what was written loads into a well-formed adapter.
    super::card::load_card(out)?;
    Ok(ImportReport {
        card: out.to_path_buf(),
        derived: derived_path,
        adapter_dir: dir,
        adapter_name,
        summary: imported.summary,
        warnings: imported.warnings,
    })
}
