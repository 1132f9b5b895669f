//! `hepeft.Model` (an adapter), `hepeft.Builder` (a card from numpy arrays) and
//! `hepeft.publish`.

use std::sync::Mutex;

use hepeft::model::card::{CardFormat, ModelCard};
use hepeft::model::load::{load_card, save_adapter};
use hepeft::model::tensors::TensorStore;
use hepeft::model::{reference, Activation, ActivationFn, Adapter, AdapterBuilder, NodeRef};
use hepeft::Error;
use numpy::{AllowTypeChange, IntoPyArray, PyArray2, PyArrayLike1, PyArrayLike2};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors::{to_py, IntoPy as _};
use crate::pack::{pack, unpack, Kind};

/// Features as a list of `samples x dim` views: a 2-D array, a 1-D array (one sample),
/// anything `numpy.asarray` makes one of (nested lists of numbers), or a list / tuple of
/// numpy arrays (one per adapter input).
pub struct Inputs<'py> {
    arrays: Vec<PyArrayLike2<'py, f64, AllowTypeChange>>,
}

impl<'py> Inputs<'py> {
    /// Reads `x` (see the type docs); values are converted to float64 only if they are not
    /// already (a C- or Fortran-ordered float64 array is read in place).
    pub fn extract(x: &Bound<'py, PyAny>) -> PyResult<Self> {
        let one = |a: &Bound<'py, PyAny>| -> PyResult<PyArrayLike2<'py, f64, AllowTypeChange>> {
            if let Ok(m) = a.extract::<PyArrayLike2<'py, f64, AllowTypeChange>>() {
                return Ok(m);
            }
            // One sample as a vector: a 1 x dim view.
            let v = a.extract::<PyArrayLike1<'py, f64, AllowTypeChange>>()?;
            let np = a.py().import("numpy")?;
            let row = np.call_method1("atleast_2d", (v.as_any(),))?;
            row.extract::<PyArrayLike2<'py, f64, AllowTypeChange>>()
        };
        // A list or tuple of numpy arrays is one array per input; any other list (of
        // numbers, of rows) is one array.
        let ndarray_type = x.py().import("numpy")?.getattr("ndarray")?;
        let per_input = (x.is_instance_of::<pyo3::types::PyList>()
            || x.is_instance_of::<pyo3::types::PyTuple>())
            && x.len()? > 0
            && x.try_iter()?
                .map(|a| a.and_then(|a| a.is_instance(&ndarray_type)))
                .collect::<PyResult<Vec<bool>>>()?
                .into_iter()
                .all(|b| b);
        let arrays = if per_input {
            x.try_iter()?
                .map(|a| one(&a?))
                .collect::<PyResult<Vec<_>>>()?
        } else {
            vec![one(x)?]
        };
        Ok(Inputs { arrays })
    }

    /// The views (no copy).
    pub fn views(&self) -> Vec<ndarray::ArrayView2<'_, f64>> {
        self.arrays.iter().map(|a| a.as_array()).collect()
    }
}

/// An adapter: an ordered graph of linear, low-rank (LoRA), affine, scale, polynomial
/// activation, add and concat nodes, with its weights.
///
/// `Model.load(card_path)` reads a model card (TOML or JSON) and the weights it names;
/// `Builder` makes one from numpy arrays; `hepeft.peft.load` from a PEFT checkpoint.
#[pyclass(module = "hepeft", name = "Model", frozen)]
#[derive(Clone)]
pub struct Model {
    pub inner: Adapter,
}

#[pymethods]
impl Model {
    /// Reads a model card and the safetensors weights it names.
    #[classmethod]
    fn load(_cls: &Bound<'_, PyType>, path: std::path::PathBuf) -> PyResult<Self> {
        Ok(Model {
            inner: load_card(&path).py_err()?,
        })
    }

    /// Writes the model as a card at `path` (`.toml` or `.json`) plus
    /// `<stem>.safetensors` beside it; returns the weights path.
    #[pyo3(signature = (path, name = None))]
    fn save(&self, path: std::path::PathBuf, name: Option<&str>) -> PyResult<std::path::PathBuf> {
        save_adapter(&self.inner, &path, name).py_err()
    }

    /// The model as bytes: its card (JSON) and its tensors (safetensors, float64), in the
    /// container described in `docs/python.md`.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let (card, store) = ModelCard::from_adapter(&self.inner, None).py_err()?;
        let json = card.to_string(CardFormat::Json).py_err()?;
        let tensors = store.to_bytes().py_err()?;
        Ok(PyBytes::new(
            py,
            &pack(Kind::Model, &[json.as_bytes(), &tensors]),
        ))
    }

    /// Inverse of `to_bytes`.
    #[classmethod]
    fn from_bytes(_cls: &Bound<'_, PyType>, data: &[u8]) -> PyResult<Self> {
        let parts = unpack(Kind::Model, data, 2).py_err()?;
        let text = std::str::from_utf8(parts[0])
            .map_err(|e| to_py(Error::format("model card", e.to_string())))?;
        let card = ModelCard::from_json_str(text).py_err()?;
        let store = TensorStore::from_bytes(parts[1]).py_err()?;
        Ok(Model {
            inner: card.to_adapter(Some(&store), None).py_err()?,
        })
    }

    /// The public structure (what `hepeft publish` writes): same graph and shapes, every
    /// weight, scale and activation coefficient zero. Clients compile their plan from it.
    fn public(&self) -> PyResult<Model> {
        Ok(Model {
            inner: hepeft::plan::public_structure(&self.inner).py_err()?,
        })
    }

    /// Widths of the inputs, in order.
    #[getter]
    fn input_dims(&self) -> Vec<usize> {
        self.inner.input_dims()
    }

    /// Names of the inputs, in order.
    #[getter]
    fn input_names(&self) -> Vec<String> {
        self.inner.inputs().iter().map(|i| i.name.clone()).collect()
    }

    /// Width of the output.
    #[getter]
    fn output_dim(&self) -> usize {
        self.inner.output_dim()
    }

    /// Number of parameters (weights, biases, coefficients).
    #[getter]
    fn param_count(&self) -> usize {
        self.inner.param_count()
    }

    /// The node list, one line per node.
    fn summary(&self) -> String {
        self.inner.summary()
    }

    /// The plaintext twin: evaluates the model in float64 exactly as the encrypted plan
    /// computes it (activations as their polynomials). `x` as for `Client.encrypt`;
    /// returns `samples x output_dim`.
    ///
    /// Raises OutOfIntervalError if a value leaves an activation's interval.
    fn reference<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let inputs = Inputs::extract(x)?;
        let views = inputs.views();
        let adapter = &self.inner;
        let out = py
            .detach(|| -> hepeft::Result<_> {
                let (out, report) = reference::evaluate_batch(adapter, &views)?;
                report.check()?;
                Ok(out)
            })
            .py_err()?;
        Ok(out.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(inputs {:?}, output {}, {} nodes, {} parameters)",
            self.inner.input_dims(),
            self.inner.output_dim(),
            self.inner.nodes().len(),
            self.inner.param_count()
        )
    }
}

/// A reference to an input or node of a `Builder`.
#[pyclass(module = "hepeft", name = "Node", frozen)]
#[derive(Clone, Copy)]
pub struct Node {
    r: NodeRef,
    builder: usize,
}

#[pymethods]
impl Node {
    fn __repr__(&self) -> String {
        format!("Node({:?})", self.r)
    }
}

/// Builds a `Model` from numpy arrays, node by node, checking shapes as it goes.
///
/// ```python
/// b = hepeft.Builder()
/// x = b.input("x", 64)
/// h = b.linear(x, W1, b1)                       # W1: 16 x 64
/// h = b.poly(h, func="gelu", interval=(-4, 4), degree=7)
/// y = b.low_rank(h, A, B, scale=2.0, bias=b2)   # LoRA: A r x 16, B classes x r
/// model = b.build()                              # output: the last node
/// ```
#[pyclass(module = "hepeft", name = "Builder", frozen)]
pub struct Builder {
    inner: Mutex<Option<AdapterBuilder>>,
    id: usize,
    /// Nodes added so far (auto names are `<kind><k>`, k this count).
    count: std::sync::atomic::AtomicUsize,
}

static NEXT_BUILDER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

fn arr2(a: &PyArrayLike2<'_, f64, AllowTypeChange>) -> ndarray::Array2<f64> {
    a.as_array().to_owned()
}

fn arr1(a: &PyArrayLike1<'_, f64, AllowTypeChange>) -> ndarray::Array1<f64> {
    a.as_array().to_owned()
}

impl Builder {
    fn with<T>(
        &self,
        nodes: &[&Node],
        f: impl FnOnce(&mut AdapterBuilder, Vec<NodeRef>) -> hepeft::Result<T>,
    ) -> PyResult<T> {
        if let Some(n) = nodes.iter().find(|n| n.builder != self.id) {
            return Err(to_py(Error::model(format!(
                "node {:?} belongs to another Builder",
                n.r
            ))));
        }
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| to_py(Error::model("the builder is poisoned")))?;
        let b = guard
            .as_mut()
            .ok_or_else(|| to_py(Error::model("build() was already called on this Builder")))?;
        f(b, nodes.iter().map(|n| n.r).collect()).py_err()
    }

    fn node(&self, r: NodeRef) -> Node {
        Node {
            r,
            builder: self.id,
        }
    }
}

#[pymethods]
impl Builder {
    #[new]
    fn new() -> Self {
        Builder {
            inner: Mutex::new(Some(AdapterBuilder::new())),
            id: NEXT_BUILDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Declares an input vector of width `dim`.
    fn input(&self, name: &str, dim: usize) -> PyResult<Node> {
        let r = self.with(&[], |b, _| b.input(name, dim))?;
        Ok(self.node(r))
    }

    /// `y = weight @ x + bias`; `weight` is `out x in` (PyTorch's `nn.Linear.weight`).
    #[pyo3(signature = (x, weight, bias = None, name = None))]
    fn linear(
        &self,
        x: &Node,
        weight: PyArrayLike2<'_, f64, AllowTypeChange>,
        bias: Option<PyArrayLike1<'_, f64, AllowTypeChange>>,
        name: Option<&str>,
    ) -> PyResult<Node> {
        let op = hepeft::model::Op::Linear {
            weight: arr2(&weight),
            bias: bias.as_ref().map(arr1),
        };
        self.op(x, op, name, "linear")
    }

    /// LoRA: `y = scale * b @ (a @ x) + bias`, never densified; `a` is `r x in`, `b` is
    /// `out x r` (PEFT's `lora_A.weight` and `lora_B.weight`; `scale` = alpha / r).
    #[pyo3(signature = (x, a, b, scale = 1.0, bias = None, name = None))]
    fn low_rank(
        &self,
        x: &Node,
        a: PyArrayLike2<'_, f64, AllowTypeChange>,
        b: PyArrayLike2<'_, f64, AllowTypeChange>,
        scale: f64,
        bias: Option<PyArrayLike1<'_, f64, AllowTypeChange>>,
        name: Option<&str>,
    ) -> PyResult<Node> {
        let op = hepeft::model::Op::LowRank {
            a: arr2(&a),
            b: arr2(&b),
            scale,
            bias: bias.as_ref().map(arr1),
        };
        self.op(x, op, name, "low_rank")
    }

    /// Per-feature `y_i = mul_i * x_i + add_i` (a folded LayerNorm / BatchNorm).
    #[pyo3(signature = (x, mul, add, name = None))]
    fn affine(
        &self,
        x: &Node,
        mul: PyArrayLike1<'_, f64, AllowTypeChange>,
        add: PyArrayLike1<'_, f64, AllowTypeChange>,
        name: Option<&str>,
    ) -> PyResult<Node> {
        let op = hepeft::model::Op::Affine {
            mul: arr1(&mul),
            add: arr1(&add),
        };
        self.op(x, op, name, "affine")
    }

    /// `y = s * x`.
    #[pyo3(signature = (x, s, name = None))]
    fn scale(&self, x: &Node, s: f64, name: Option<&str>) -> PyResult<Node> {
        self.op(x, hepeft::model::Op::Scale(s), name, "scale")
    }

    /// An elementwise polynomial activation on the interval `[lo, hi]` the inputs stay in:
    /// either `coeffs` (power basis in x, lowest degree first: `[0, 0, 1]` is x^2), or a
    /// named function (`relu`, `gelu`, `sigmoid`, `tanh`, `silu`, `square`, `identity`)
    /// fitted by Chebyshev interpolation of `degree`. Costs ceil(log2(degree)) levels.
    #[pyo3(signature = (x, coeffs = None, func = None, interval = (-1.0, 1.0), degree = 7, name = None))]
    fn poly(
        &self,
        x: &Node,
        coeffs: Option<Vec<f64>>,
        func: Option<&str>,
        interval: (f64, f64),
        degree: usize,
        name: Option<&str>,
    ) -> PyResult<Node> {
        let (lo, hi) = interval;
        let act = match (coeffs, func) {
            (Some(c), None) => Activation::from_power_coeffs(&c, lo, hi),
            (None, Some(f)) => {
                ActivationFn::from_name(f).and_then(|f| Activation::fit(f, lo, hi, degree))
            }
            _ => Err(Error::model(
                "poly() takes exactly one of coeffs= (power basis) or func= (a named function)",
            )),
        }
        .py_err()?;
        self.op(x, hepeft::model::Op::Poly(act), name, "poly")
    }

    /// Elementwise sum of equal-width nodes (a residual connection).
    #[pyo3(signature = (xs, name = None))]
    fn add(&self, xs: Vec<PyRef<'_, Node>>, name: Option<&str>) -> PyResult<Node> {
        self.multi(xs, hepeft::model::Op::Add, name, "add")
    }

    /// Concatenation of nodes, in order.
    #[pyo3(signature = (xs, name = None))]
    fn concat(&self, xs: Vec<PyRef<'_, Node>>, name: Option<&str>) -> PyResult<Node> {
        self.multi(xs, hepeft::model::Op::Concat, name, "concat")
    }

    /// Checks the graph and returns the model; its output is the last node. The builder
    /// cannot be used afterwards.
    fn build(&self) -> PyResult<Model> {
        let b = self
            .inner
            .lock()
            .map_err(|_| to_py(Error::model("the builder is poisoned")))?
            .take()
            .ok_or_else(|| to_py(Error::model("build() was already called on this Builder")))?;
        Ok(Model {
            inner: b.build().py_err()?,
        })
    }
}

impl Builder {
    /// `<kind><k>`, k the number of nodes added before (as the library's own helpers).
    fn auto_name(&self, kind: &str) -> String {
        let k = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{kind}{k}")
    }

    fn op(
        &self,
        x: &Node,
        op: hepeft::model::Op,
        name: Option<&str>,
        kind: &str,
    ) -> PyResult<Node> {
        let r = self.with(&[x], |b, refs| {
            let name = match name {
                Some(n) => n.to_string(),
                None => self.auto_name(kind),
            };
            b.node(&name, op, &refs)
        })?;
        Ok(self.node(r))
    }

    fn multi(
        &self,
        xs: Vec<PyRef<'_, Node>>,
        op: hepeft::model::Op,
        name: Option<&str>,
        kind: &str,
    ) -> PyResult<Node> {
        let nodes: Vec<&Node> = xs.iter().map(|n| &**n).collect();
        let r = self.with(&nodes, |b, refs| {
            let name = match name {
                Some(n) => n.to_string(),
                None => self.auto_name(kind),
            };
            b.node(&name, op, &refs)
        })?;
        Ok(self.node(r))
    }
}

/// The public structure of `model` (same as `model.public()`): what a server publishes to
/// its clients.
#[pyfunction]
pub fn publish(model: &Model) -> PyResult<Model> {
    model.public()
}
