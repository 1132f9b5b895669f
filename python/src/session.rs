//! `hepeft.Client`, `hepeft.Server` and the objects that travel between them
//! (`EvalKeys`, `Query`, `Result`): thin wrappers of `hepeft::session`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hepeft::ckks::{from_bytes_bound, CkksParams, EvaluationKeys};
use hepeft::io::binding::{Binding, Role};
use hepeft::plan::{FloodingConfig, Mode, SanitizeConfig, SanitizeReport};
use hepeft::session::{self, Ciphertexts, ClientKeys, KeyDir};
use hepeft::Error;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors::IntoPy as _;
use crate::model::{Inputs, Model};
use crate::pack::{pack, unpack, Kind};
use crate::params::{to_python, Params};

/// The evaluation keys a client sends to the server (relinearization and Galois keys,
/// plus the client's public key for re-randomizing results). Never the secret key.
///
/// `to_bytes()` is the library's envelope, the same bytes as `eval.keys` of
/// `hepeft keygen`; `EvalKeys.from_bytes(params, data)` reads either.
#[pyclass(module = "hepeft", name = "EvalKeys", frozen)]
pub struct EvalKeys {
    pub params: CkksParams,
    pub keys: Arc<EvaluationKeys>,
    pub binding: Binding,
}

#[pymethods]
impl EvalKeys {
    /// The envelope bytes (bound to the key set and plan).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py
            .detach(|| hepeft::ckks::to_bytes_bound(&self.params, &*self.keys, &self.binding))
            .py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Reads evaluation keys made under `params` (the server checks them against its plan
    /// in `Server.evaluate`).
    #[classmethod]
    fn from_bytes(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        params: &Params,
        data: &[u8],
    ) -> PyResult<Self> {
        let (keys, binding): (EvaluationKeys, _) = py
            .detach(|| from_bytes_bound(&params.inner, data))
            .py_err()?;
        let binding = session::require_binding(binding, "the evaluation keys").py_err()?;
        Ok(EvalKeys {
            params: params.inner.clone(),
            keys: Arc::new(keys),
            binding,
        })
    }

    /// The key-set id (hex): that of the client's public key.
    #[getter]
    fn key_set(&self) -> String {
        self.binding.key_set.hex()
    }

    /// Number of Galois (rotation) keys.
    #[getter]
    fn galois_keys(&self) -> usize {
        self.keys.galois_elements().len()
    }

    /// Bytes as stored.
    #[getter]
    fn stored_bytes(&self) -> usize {
        self.keys.stored_bytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "EvalKeys(key set {}, {} Galois keys, relinearization {})",
            self.binding.key_set,
            self.keys.galois_elements().len(),
            self.keys.relin().is_some()
        )
    }
}

/// Ciphertexts with their parameters (`session::Ciphertexts` is parameter-free).
pub struct Bundle {
    pub params: CkksParams,
    pub cts: Ciphertexts,
}

impl Bundle {
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.cts.to_bytes(&self.params)).py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn from_bytes(py: Python<'_>, params: &Params, data: &[u8], role: Role) -> PyResult<Self> {
        let cts = py
            .detach(|| Ciphertexts::from_bytes(&params.inner, data, role))
            .py_err()?;
        Ok(Bundle {
            params: params.inner.clone(),
            cts,
        })
    }
}

/// A class that wraps one ciphertext bundle ([`Query`], [`EncryptedResult`]).
trait HasBundle {
    fn bundle(&self) -> &Bundle;
    fn from_bundle(bundle: Bundle) -> Self;
}

/// The `#[pymethods]` of a bundle class: `to_bytes`, `from_bytes` (under `$role`, with the
/// doc line `$from_doc`), the `samples` and `ciphertexts` getters and `__repr__` (`$label`),
/// followed by the class's own methods.
macro_rules! bundle_pymethods {
    ($ty:ident, $label:literal, $role:expr, $from_doc:literal, { $($extra:tt)* }) => {
        #[pymethods]
        impl $ty {
            /// The envelope bytes.
            fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
                self.bundle().to_bytes(py)
            }

            #[doc = $from_doc]
            #[classmethod]
            fn from_bytes(
                _cls: &Bound<'_, PyType>,
                py: Python<'_>,
                params: &Params,
                data: &[u8],
            ) -> PyResult<Self> {
                Ok(<$ty>::from_bundle(Bundle::from_bytes(py, params, data, $role)?))
            }

            /// Number of samples.
            #[getter]
            fn samples(&self) -> usize {
                self.bundle().cts.samples()
            }

            /// Number of ciphertexts.
            #[getter]
            fn ciphertexts(&self) -> usize {
                self.bundle().cts.items.len()
            }

            fn __repr__(&self) -> String {
                let cts = &self.bundle().cts;
                format!(
                    concat!($label, "({} samples, {} ciphertexts, key set {})"),
                    cts.samples(),
                    cts.items.len(),
                    cts.binding.key_set
                )
            }

            $($extra)*
        }
    };
}

/// An encrypted query: what `Client.encrypt` returns and `Server.evaluate` takes.
/// `to_bytes()` is the same envelope `hepeft encrypt` writes.
#[pyclass(module = "hepeft", name = "Query", frozen)]
pub struct Query(pub Bundle);

impl HasBundle for Query {
    fn bundle(&self) -> &Bundle {
        &self.0
    }
    fn from_bundle(bundle: Bundle) -> Self {
        Query(bundle)
    }
}

bundle_pymethods!(
    Query,
    "Query",
    Role::Query,
    "Reads a query made under `params` (refuses a result or keys).",
    {}
);

/// An encrypted result: what `Server.evaluate` returns and `Client.decrypt` takes.
/// `to_bytes()` is the same envelope `hepeft evaluate` writes.
#[pyclass(module = "hepeft", name = "Result", frozen)]
pub struct EncryptedResult {
    pub inner: Bundle,
    pub sanitize: Option<SanitizeReport>,
}

impl HasBundle for EncryptedResult {
    fn bundle(&self) -> &Bundle {
        &self.inner
    }
    fn from_bundle(inner: Bundle) -> Self {
        EncryptedResult {
            inner,
            sanitize: None,
        }
    }
}

bundle_pymethods!(
    EncryptedResult,
    "Result",
    Role::Result,
    "Reads a result made under `params` (refuses a query or keys).",
    {
        /// What the server did to the result (mask, level, flooding figures), as a dict;
        /// None for a result read from bytes.
        #[getter]
        fn sanitize_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
            self.sanitize.as_ref().map(|r| to_python(py, r)).transpose()
        }
    }
);

/// The client: holds the secret key, encrypts features and decrypts results
/// (`hepeft::session::Client`).
///
/// ```python
/// client = hepeft.Client.keygen(public_model, params)      # mode="latency" or "batch"
/// query = client.encrypt(features)                           # samples x dim, float64
/// result = server.evaluate(query, client.eval_keys())        # on the server
/// logits = client.decrypt(result)                            # samples x classes
/// ```
///
/// `save(dir)` writes the key directory `hepeft keygen` writes (the CLI reads it);
/// `to_bytes()` is that directory in one byte string. Both hold the SECRET KEY.
#[pyclass(module = "hepeft", name = "Client", frozen)]
pub struct Client {
    pub inner: session::Client,
    eval: OnceLock<Arc<EvaluationKeys>>,
}

impl Client {
    pub fn new(inner: session::Client) -> Self {
        Client {
            inner,
            eval: OnceLock::new(),
        }
    }

    fn mode(&self) -> Mode {
        self.inner.plan().options().mode
    }

    /// Opens a key directory written by `save` or `hepeft keygen` for `model`'s plan.
    fn open(dir: &Path, model: &hepeft::model::Adapter) -> hepeft::Result<Client> {
        let kd = KeyDir::open(dir)?;
        let plan = session::public_plan(model, &kd.params, kd.mode)?;
        kd.check_plan(&plan, Path::new("the public model"))?;
        let keys = ClientKeys::load_dir(dir, &kd.params)?;
        Ok(Client::new(session::Client::from_keys(plan, keys)?))
    }

    /// The evaluation keys, shared (one copy made on first use).
    pub fn eval_arc(&self) -> hepeft::Result<Arc<EvaluationKeys>> {
        if let Some(k) = self.eval.get() {
            return Ok(Arc::clone(k));
        }
        let keys = self.inner.eval_keys().ok_or_else(|| Error::MissingKey {
            what: "evaluation keys (this client was opened without them)".into(),
        })?;
        Ok(Arc::clone(self.eval.get_or_init(|| Arc::new(keys.clone()))))
    }
}

/// A private temporary directory, removed on drop (holds a secret key briefly).
struct PrivateTemp(PathBuf);

impl PrivateTemp {
    fn new() -> hepeft::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "hepeft-py-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            b.mode(0o700);
        }
        b.create(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(PrivateTemp(dir))
    }
}

impl Drop for PrivateTemp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files of a key directory, in the order of the byte string.
const KEY_DIR_FILES: [&str; 5] = [
    session::PARAMS_TOML,
    session::PLAN_JSON,
    session::SECRET_KEY,
    session::PUBLIC_KEY,
    session::EVAL_KEYS,
];

#[pymethods]
impl Client {
    /// Fresh keys for the plan of `public_model` (the server's published structure; a
    /// model with weights gives the same plan) under `params`, in `mode`. Cost: one key
    /// switching key per rotation the plan needs (about a second at N = 2^14).
    #[classmethod]
    #[pyo3(signature = (public_model, params, mode = "latency"))]
    fn keygen(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        public_model: &Model,
        params: &Params,
        mode: &str,
    ) -> PyResult<Self> {
        let mode: Mode = Mode::parse(mode).py_err()?;
        let adapter = &public_model.inner;
        let params = &params.inner;
        py.detach(|| {
            let plan = session::public_plan(adapter, params, mode)?;
            session::Client::keygen(plan, &mut session::os_rng()?)
        })
        .map(Client::new)
        .py_err()
    }

    /// The evaluation keys to send to the server (copied once, then shared).
    fn eval_keys(&self) -> PyResult<EvalKeys> {
        Ok(EvalKeys {
            params: self.inner.params().clone(),
            keys: self.eval_arc().py_err()?,
            binding: self.inner.binding().clone(),
        })
    }

    /// Encrypts features: a `samples x dim` array (or a 1-D array for one sample), or a
    /// list of such arrays for a model with several inputs. float64 arrays are read in
    /// place. Latency mode makes one query per sample, batch mode packs up to N/2 samples
    /// per query.
    fn encrypt(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Query> {
        let inputs = Inputs::extract(x)?;
        let views = inputs.views();
        let cts = py
            .detach(|| self.inner.encrypt_samples(&views, &mut session::os_rng()?))
            .py_err()?;
        Ok(Query(Bundle {
            params: self.inner.params().clone(),
            cts,
        }))
    }

    /// Decrypts a result into a `samples x output_dim` float64 array. Raises
    /// MismatchError for a result of other keys or another model.
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        result: &EncryptedResult,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let out = py
            .detach(|| self.inner.decrypt(&result.inner.cts))
            .py_err()?;
        Ok(out.into_pyarray(py))
    }

    /// The parameters.
    #[getter(params)]
    fn py_params(&self) -> Params {
        Params {
            inner: self.inner.params().clone(),
        }
    }

    /// `"latency"` or `"batch"`.
    #[getter(mode)]
    fn py_mode(&self) -> String {
        self.mode().to_string()
    }

    /// The key-set id (hex).
    #[getter]
    fn key_set(&self) -> String {
        self.inner.key_set().hex()
    }

    /// Widths of the model's inputs.
    #[getter]
    fn input_dims(&self) -> Vec<usize> {
        self.inner.plan().input_dims().to_vec()
    }

    /// Width of the output.
    #[getter]
    fn output_dim(&self) -> usize {
        self.inner.plan().output_dim()
    }

    /// The plan's summary (stages, levels, rotations).
    fn plan_summary(&self) -> String {
        self.inner.plan().summary()
    }

    /// Writes the key directory (`secret.key` mode 0600, `public.key`, `eval.keys`,
    /// `params.toml`, `plan.json`), as `hepeft keygen --out dir` does; refuses to replace
    /// a secret key unless `force`.
    #[pyo3(signature = (dir, force = false))]
    fn save(&self, py: Python<'_>, dir: PathBuf, force: bool) -> PyResult<()> {
        py.detach(|| self.inner.save(&dir, force).map(|_| ()))
            .py_err()
    }

    /// Opens a key directory written by `save` or `hepeft keygen`, for `public_model`
    /// (checked against the directory's `plan.json`).
    #[classmethod]
    fn load(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        dir: PathBuf,
        public_model: &Model,
    ) -> PyResult<Self> {
        let adapter = &public_model.inner;
        py.detach(|| Client::open(&dir, adapter)).py_err()
    }

    /// The key directory's files in one byte string (see `docs/python.md`). Contains the
    /// SECRET KEY.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py
            .detach(|| -> hepeft::Result<Vec<u8>> {
                let tmp = PrivateTemp::new()?;
                let dir = tmp.0.join("keys");
                self.inner.save(&dir, false)?;
                let files = KEY_DIR_FILES
                    .iter()
                    .map(|f| {
                        let p = dir.join(f);
                        std::fs::read(&p).map_err(|e| Error::io(&p, e))
                    })
                    .collect::<hepeft::Result<Vec<Vec<u8>>>>()?;
                let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
                Ok(pack(Kind::Client, &parts))
            })
            .py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Inverse of `to_bytes`, for the same public model (checked as in `load`).
    #[classmethod]
    fn from_bytes(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        public_model: &Model,
        data: &[u8],
    ) -> PyResult<Self> {
        let adapter = &public_model.inner;
        py.detach(|| -> hepeft::Result<Client> {
            let parts = unpack(Kind::Client, data, KEY_DIR_FILES.len())?;
            let tmp = PrivateTemp::new()?;
            for (name, bytes) in KEY_DIR_FILES.iter().zip(parts) {
                let p = tmp.0.join(name);
                std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
            }
            Client::open(&tmp.0, adapter)
        })
        .py_err()
    }

    fn __repr__(&self) -> String {
        format!(
            "Client({} mode, key set {}, {})",
            self.mode(),
            self.inner.key_set(),
            self.inner.params().describe()
        )
    }
}

/// The server: holds the private model (weights encoded once) and evaluates queries
/// (`hepeft::session::Server`). Needs only the client's evaluation keys.
#[pyclass(module = "hepeft", name = "Server", frozen)]
pub struct Server {
    pub inner: session::Server,
}

impl Server {
    /// Checks `keys` against the plan, evaluates and sanitizes: the work of
    /// `Server.evaluate`, without Python objects.
    pub fn run(
        &self,
        keys: &EvalKeys,
        query: &Ciphertexts,
    ) -> hepeft::Result<(Ciphertexts, Option<SanitizeReport>)> {
        self.inner.check_keys(&keys.keys, Some(&keys.binding))?;
        self.inner.evaluate_queries(
            Arc::clone(&keys.keys),
            query,
            &mut session::os_rng()?,
            &|_, _, _| {},
        )
    }
}

#[pymethods]
impl Server {
    /// Compiles `model` (with its weights) under `params` in `mode` and encodes the
    /// weights once. Every result is sanitized: non-output slots masked, dropped to level
    /// 0, re-randomized, and flooded with noise at `flooding_bits` bits of statistical
    /// security for `flooded_queries` decryptions (`flooding_bits=None` turns flooding
    /// off, for a trusted client only). Refuses parameters that opted out of the security
    /// check, and a flooding that would leave no precision.
    #[new]
    #[pyo3(signature = (model, params, mode = "latency", flooding_bits = Some(40), flooded_queries = 1))]
    fn new(
        py: Python<'_>,
        model: &Model,
        params: &Params,
        mode: &str,
        flooding_bits: Option<u32>,
        flooded_queries: u64,
    ) -> PyResult<Self> {
        let mode = Mode::parse(mode).py_err()?;
        let adapter = &model.inner;
        let params = &params.inner;
        let sanitize = SanitizeConfig {
            flooding: flooding_bits.map(|s| FloodingConfig::new(s, flooded_queries.max(1))),
        };
        let inner = py
            .detach(|| -> hepeft::Result<session::Server> {
                session::check_params_secure(params)?;
                let plan = hepeft::plan::Plan::compile(adapter, params, session::plan_options(mode))?;
                let public = session::public_plan(adapter, params, mode)?;
                if plan.structure_digest() != public.structure_digest() {
                    return Err(Error::model(
                        "internal error: the model and its public structure compile to different plans",
                    ));
                }
                session::Server::new(plan, sanitize)
            })
            .py_err()?;
        Ok(Server { inner })
    }

    /// Evaluates every query of `query` under the client's `eval_keys` (checked: bound to
    /// the client's public key and this plan, covering every key it uses) and sanitizes
    /// the results. The GIL is released meanwhile.
    ///
    /// Raises MismatchError for keys or a query of another key set or model,
    /// MissingKeyError for keys that do not cover the plan.
    fn evaluate(
        &self,
        py: Python<'_>,
        query: &Query,
        eval_keys: &EvalKeys,
    ) -> PyResult<EncryptedResult> {
        let (cts, report) = py.detach(|| self.run(eval_keys, &query.0.cts)).py_err()?;
        Ok(EncryptedResult {
            inner: Bundle {
                params: self.inner.params().clone(),
                cts,
            },
            sanitize: report,
        })
    }

    /// Predicted output precision in bits after this server's sanitization.
    fn predicted_precision_bits(&self) -> f64 {
        let plan = self.inner.plan();
        match &self.inner.sanitize_config().flooding {
            Some(f) => plan.flooded_precision_bits(f),
            None => {
                let params = plan.params();
                hepeft::select::predicted_precision_bits(
                    params.default_scale().log2().round() as u32,
                    params.log_n(),
                )
            }
        }
    }

    /// The parameters.
    #[getter]
    fn params(&self) -> Params {
        Params {
            inner: self.inner.params().clone(),
        }
    }

    /// `"latency"` or `"batch"`.
    #[getter]
    fn mode(&self) -> String {
        self.inner.plan().options().mode.to_string()
    }

    /// Key switches (rotations and relinearizations) per query.
    #[getter]
    fn key_switches(&self) -> usize {
        self.inner.plan().key_switches()
    }

    /// The plan's summary (stages, levels, rotations).
    fn plan_summary(&self) -> String {
        self.inner.plan().summary()
    }

    fn __repr__(&self) -> String {
        let plan = self.inner.plan();
        format!(
            "Server({} mode, depth {}, {} key switches per query, flooding {}, {})",
            plan.options().mode,
            plan.depth(),
            plan.key_switches(),
            self.inner
                .sanitize_config()
                .flooding
                .map_or("off".to_string(), |f| format!(
                    "{} bits",
                    f.statistical_security
                )),
            plan.params().describe()
        )
    }
}

/// Times `iterations` calls of the Rust work behind `Server.evaluate` (key check,
/// evaluation, sanitization) in one Rust loop, with no Python in between, and returns
/// the seconds per call: the baseline of `bench/python_overhead.py`.
#[pyfunction]
pub fn _rust_evaluate_seconds(
    py: Python<'_>,
    server: &Server,
    query: &Query,
    eval_keys: &EvalKeys,
    iterations: usize,
) -> PyResult<f64> {
    py.detach(|| -> hepeft::Result<f64> {
        let n = iterations.max(1);
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(server.run(eval_keys, &query.0.cts)?);
        }
        Ok(t.elapsed().as_secs_f64() / n as f64)
    })
    .py_err()
}
