//! `hepeft.Params` and `hepeft.params.select` (over `hepeft::select`).

use hepeft::ckks::{CkksParams, Security, PRESETS};
use hepeft::io::format::digest_hex;
use hepeft::plan::{FloodingConfig, Mode};
use hepeft::select::{select as select_params, SelectRequest};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors::IntoPy as _;
use crate::model::Model;
use hepeft::session::plan_options;

/// Turns a serializable report into Python objects (through JSON).
pub fn to_python<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| crate::errors::to_py(hepeft::Error::format("report", e.to_string())))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A checked CKKS parameter set (ring degree, modulus chain, scale, security level).
///
/// Build one with `Params.preset(name)`, `Params.from_toml(text)` or
/// `hepeft.params.select(model, ...)`. Immutable; `to_bytes()` is its TOML text.
#[pyclass(module = "hepeft", name = "Params", frozen)]
#[derive(Clone)]
pub struct Params {
    pub inner: CkksParams,
}

#[pymethods]
impl Params {
    /// A named preset (see `Params.presets()`), e.g. `"CKKS_N13_QP200_128"`.
    #[classmethod]
    fn preset(_cls: &Bound<'_, PyType>, name: &str) -> PyResult<Self> {
        Ok(Params {
            inner: CkksParams::preset(name).py_err()?,
        })
    }

    /// The names of the presets.
    #[classmethod]
    fn presets(_cls: &Bound<'_, PyType>) -> Vec<&'static str> {
        PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// Parses and checks a parameter file's text (TOML, as `hepeft params` writes it).
    #[classmethod]
    fn from_toml(_cls: &Bound<'_, PyType>, text: &str) -> PyResult<Self> {
        Ok(Params {
            inner: CkksParams::from_toml(text).py_err()?,
        })
    }

    /// The parameter file's text (TOML).
    fn to_toml(&self) -> PyResult<String> {
        self.inner.to_toml().py_err()
    }

    /// The TOML text as UTF-8 bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.inner.to_toml().py_err()?.as_bytes()))
    }

    /// Inverse of `to_bytes`.
    #[classmethod]
    fn from_bytes(_cls: &Bound<'_, PyType>, data: &[u8]) -> PyResult<Self> {
        let text = std::str::from_utf8(data).map_err(|e| {
            crate::errors::to_py(hepeft::Error::format("parameter set", e.to_string()))
        })?;
        Ok(Params {
            inner: CkksParams::from_toml(text).py_err()?,
        })
    }

    /// log2 of the ring degree N.
    #[getter]
    fn log_n(&self) -> u32 {
        self.inner.log_n()
    }

    /// Slots per ciphertext (N/2).
    #[getter]
    fn slots(&self) -> usize {
        self.inner.slots()
    }

    /// Levels of the modulus chain (multiplicative depth available).
    #[getter]
    fn max_level(&self) -> usize {
        self.inner.max_level().get()
    }

    /// log2 of the default scale.
    #[getter]
    fn log_scale(&self) -> f64 {
        self.inner.default_scale().log2()
    }

    /// log2 of Q*P.
    #[getter]
    fn log_qp(&self) -> f64 {
        self.inner.log_qp()
    }

    /// Security level in bits, `None` for an unchecked set.
    #[getter]
    fn security_bits(&self) -> Option<u32> {
        self.inner.security().bits()
    }

    /// SHA-256 of the parameter set, hex (what every key and ciphertext is bound to).
    #[getter]
    fn digest(&self) -> String {
        digest_hex(&self.inner.digest())
    }

    /// A one-line description (N, chain, scale, security).
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner.digest() == other.inner.digest()
    }

    fn __hash__(&self) -> u64 {
        let d = self.inner.digest();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }

    fn __repr__(&self) -> String {
        format!(
            "Params({}, digest {})",
            self.inner.describe(),
            self.inner.digest_short()
        )
    }
}

/// The outcome of `hepeft.params.select`: the chosen parameters and the report
/// `hepeft params select` prints.
#[pyclass(module = "hepeft", name = "Selection", frozen)]
pub struct Selection {
    params: CkksParams,
    report: hepeft::select::SelectionReport,
}

#[pymethods]
impl Selection {
    /// The chosen parameters.
    #[getter]
    fn params(&self) -> Params {
        Params {
            inner: self.params.clone(),
        }
    }

    /// Every figure of the selection (depth, predicted precision, key and ciphertext
    /// sizes, refused candidates) as a dict.
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.report)
    }

    /// The report as text.
    fn to_text(&self) -> String {
        self.report.to_text()
    }

    fn __repr__(&self) -> String {
        format!(
            "Selection(N = 2^{}, depth {}, predicted {:.1} bits)",
            self.report.log_n, self.report.depth, self.report.predicted_precision_bits
        )
    }
}

/// Chooses the fastest parameter set for `model` (smallest N, then the most special
/// primes) that reaches `precision` bits at the output, at `security` bits, surviving
/// noise flooding at `flooding_bits` (None: no flooding), in `mode` ("latency" or "batch",
/// with up to `samples` samples per query). Only the model's structure is used.
///
/// Raises InvalidParametersError when nothing fits, with every refused candidate.
#[pyfunction]
#[pyo3(signature = (model, precision = 16, flooding_bits = None, mode = "latency", security = 128, samples = None))]
pub fn select(
    py: Python<'_>,
    model: &Model,
    precision: u32,
    flooding_bits: Option<u32>,
    mode: &str,
    security: u32,
    samples: Option<usize>,
) -> PyResult<Selection> {
    let mode = Mode::parse(mode).py_err()?;
    let security = Security::parse(&security.to_string()).py_err()?;
    let req = SelectRequest {
        precision_bits: precision,
        security,
        options: plan_options(mode),
        batch: samples,
        flooding: flooding_bits.map(|s| FloodingConfig::new(s, 1)),
        // the structure only here (public by design): the unit-weight error model
        profile: None,
    };
    let adapter = &model.inner;
    let sel = py
        .detach(|| {
            let public = hepeft::plan::public_structure(adapter)?;
            select_params(&public, &req)
        })
        .py_err()?;
    Ok(Selection {
        params: sel.params,
        report: sel.report,
    })
}
