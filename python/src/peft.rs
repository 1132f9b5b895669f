//! `hepeft.peft.load`: a Hugging Face PEFT checkpoint plus the base layers' weights ->
//! `Model`, over `hepeft::model::{peft, import}` (what `hepeft import-peft` does, without
//! writing a card).

use hepeft::model::import::{build_card, ActivationSpec, ImportOptions};
use hepeft::model::peft::{resolve_adapter_dir, PeftLora, PeftOptions};
use hepeft::model::tensors::TensorStore;
use hepeft::model::ActivationFn;
use numpy::{AllowTypeChange, PyArrayLikeDyn};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::IntoPy as _;
use crate::model::Model;

/// The base weights: a dict of name -> array (anything numpy.asarray accepts, such as
/// a CPU torch tensor), or the path of a safetensors file.
fn base_store(base: &Bound<'_, PyAny>) -> PyResult<TensorStore> {
    if let Ok(d) = base.cast::<PyDict>() {
        let mut store = TensorStore::new();
        for (k, v) in d.iter() {
            let name: String = k.extract()?;
            let a: PyArrayLikeDyn<'_, f64, AllowTypeChange> = v.extract()?;
            let a = a.as_array();
            store
                .insert(&name, a.shape().to_vec(), a.iter().copied().collect())
                .py_err()?;
        }
        Ok(store)
    } else {
        let path: std::path::PathBuf = base.extract()?;
        TensorStore::from_path(path).py_err()
    }
}

/// Reads the PEFT checkpoint in `path` (`adapter_model.safetensors` and
/// `adapter_config.json`, as `save_pretrained` writes them; `adapter_name` picks one of
/// several named adapters) and applies it to the base layers in `base_weights` (a dict
/// of `"<module>.weight"` / `"<module>.bias"` arrays, or a safetensors path), exactly as
/// PEFT computes it (LoRA, rsLoRA, DoRA, KaSA, modules_to_save, saved biases).
///
/// `head` lists the base modules forming the head, input first (default: the only 2-D
/// weight in `base_weights`); with two or more, `activation` (`"gelu"`, `"relu"`,
/// `"square"`, ...) is fitted between them on `interval` with a Chebyshev polynomial of
/// `degree`. Warnings about ignored fields (with `allow_unknown=True`) are issued with
/// Python's `warnings` module.
#[pyfunction]
#[pyo3(signature = (path, base_weights, head = None, activation = None, interval = None, degree = 7, adapter_name = None, allow_unknown = false))]
#[allow(clippy::too_many_arguments)]
pub fn load(
    py: Python<'_>,
    path: std::path::PathBuf,
    base_weights: &Bound<'_, PyAny>,
    head: Option<Vec<String>>,
    activation: Option<&str>,
    interval: Option<(f64, f64)>,
    degree: usize,
    adapter_name: Option<String>,
    allow_unknown: bool,
) -> PyResult<Model> {
    let base = base_store(base_weights)?;
    let activation = match activation {
        None => None,
        Some(f) => {
            let (lo, hi) = interval.ok_or_else(|| {
                crate::errors::to_py(hepeft::Error::model(
                    "activation= needs interval=(lo, hi): the range the head's hidden values stay in",
                ))
            })?;
            Some(ActivationSpec {
                func: ActivationFn::from_name(f).py_err()?,
                interval: [lo, hi],
                degree,
            })
        }
    };
    let opts = ImportOptions {
        peft: PeftOptions {
            allow_unknown,
            adapter_name: adapter_name.clone(),
        },
        head: head.unwrap_or_default(),
        activation,
        name: None,
    };
    let (adapter, warnings) = py
        .detach(|| -> hepeft::Result<_> {
            let (dir, _name) = resolve_adapter_dir(&path, adapter_name.as_deref())?;
            let peft_opts = PeftOptions {
                adapter_name: None,
                ..opts.peft.clone()
            };
            let weights = dir.join("adapter_model.safetensors");
            let peft = PeftLora::load_with(&weights, dir.join("adapter_config.json"), &peft_opts)?;
            let imported = build_card(&peft, &base, &opts)?;
            // The card names tensors of the base, of the checkpoint (raw names) and the
            // derived ones: one store holding all three.
            let mut store = base.clone();
            store.merge(TensorStore::from_path(&weights)?)?;
            store.merge(imported.derived.clone())?;
            let adapter = imported.card.to_adapter(Some(&store), Some(&peft))?;
            Ok((adapter, imported.warnings))
        })
        .py_err()?;
    if !warnings.is_empty() {
        let w = py.import("warnings")?;
        for msg in warnings {
            w.call_method1("warn", (msg,))?;
        }
    }
    Ok(Model { inner: adapter })
}
