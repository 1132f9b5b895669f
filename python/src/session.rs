//! `hepeft.Client`, `hepeft.Server` and the objects that travel between them
//! (`EvalKeys`, `Query`, `Result`). The protocol steps are in [`crate::protocol`].

use std::sync::{Arc, OnceLock};

use hepeft::ckks::{
    from_bytes, from_bytes_bound, to_bytes, to_bytes_bound, CiphertextBundle, CkksParams, Encoder,
    EvaluationKeys, PublicKey, SecretKey,
};
use hepeft::io::binding::{Binding, Role};
use hepeft::plan::{Mode, Plan, PreparedPlan};
use hepeft::serve::client::ClientKeys;
use hepeft::Error;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors::{to_py, IntoPy as _};
use crate::model::{Inputs, Model};
use crate::pack::{pack, unpack, Kind};
use crate::params::{to_python, Params};
use crate::protocol;

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Latency => "latency",
        Mode::Batch => "batch",
    }
}

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
            .detach(|| to_bytes_bound(&self.params, &*self.keys, &self.binding))
            .py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Reads evaluation keys made under `params`.
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
        let binding = hepeft::session::require_binding(binding, "the evaluation keys").py_err()?;
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

/// Encrypted ciphertexts with their binding: a query (client -> server) or a result
/// (server -> client).
pub struct Bundle {
    pub params: CkksParams,
    pub bundle: CiphertextBundle,
    pub binding: Binding,
}

impl Bundle {
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py
            .detach(|| to_bytes_bound(&self.params, &self.bundle, &self.binding))
            .py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn from_bytes(py: Python<'_>, params: &Params, data: &[u8], role: Role) -> PyResult<Self> {
        let (bundle, binding): (CiphertextBundle, _) = py
            .detach(|| from_bytes_bound(&params.inner, data))
            .py_err()?;
        let what = match role {
            Role::Query => "the query",
            _ => "the result",
        };
        let binding = hepeft::session::require_binding(binding, what).py_err()?;
        if binding.role != role {
            return Err(to_py(Error::mismatch(
                "role",
                format!(
                    "these bytes are bound as a {} but a {role} is expected",
                    binding.role
                ),
            )));
        }
        Ok(Bundle {
            params: params.inner.clone(),
            bundle,
            binding,
        })
    }

    fn samples(&self) -> usize {
        self.binding.queries.iter().map(|&q| q as usize).sum()
    }
}

/// An encrypted query: what `Client.encrypt` returns and `Server.evaluate` takes.
/// `to_bytes()` is the same envelope `hepeft encrypt` writes.
#[pyclass(module = "hepeft", name = "Query", frozen)]
pub struct Query(pub Bundle);

#[pymethods]
impl Query {
    /// The envelope bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.0.to_bytes(py)
    }

    /// Reads a query made under `params`.
    #[classmethod]
    fn from_bytes(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        params: &Params,
        data: &[u8],
    ) -> PyResult<Self> {
        Ok(Query(Bundle::from_bytes(py, params, data, Role::Query)?))
    }

    /// Number of samples.
    #[getter]
    fn samples(&self) -> usize {
        self.0.samples()
    }

    /// Number of ciphertexts.
    #[getter]
    fn ciphertexts(&self) -> usize {
        self.0.bundle.items.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Query({} samples, {} ciphertexts, key set {})",
            self.0.samples(),
            self.0.bundle.items.len(),
            self.0.binding.key_set
        )
    }
}

/// An encrypted result: what `Server.evaluate` returns and `Client.decrypt` takes.
/// `to_bytes()` is the same envelope `hepeft evaluate` writes.
#[pyclass(module = "hepeft", name = "Result", frozen)]
pub struct EncryptedResult {
    pub inner: Bundle,
    pub sanitize: Option<hepeft::plan::SanitizeReport>,
}

#[pymethods]
impl EncryptedResult {
    /// The envelope bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.inner.to_bytes(py)
    }

    /// Reads a result made under `params`.
    #[classmethod]
    fn from_bytes(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        params: &Params,
        data: &[u8],
    ) -> PyResult<Self> {
        Ok(EncryptedResult {
            inner: Bundle::from_bytes(py, params, data, Role::Result)?,
            sanitize: None,
        })
    }

    /// Number of samples.
    #[getter]
    fn samples(&self) -> usize {
        self.inner.samples()
    }

    /// Number of ciphertexts.
    #[getter]
    fn ciphertexts(&self) -> usize {
        self.inner.bundle.items.len()
    }

    /// What the server did to the result (mask, level, flooding figures), as a dict;
    /// None for a result read from bytes.
    #[getter]
    fn sanitize_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.sanitize.as_ref().map(|r| to_python(py, r)).transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "Result({} samples, {} ciphertexts, key set {})",
            self.inner.samples(),
            self.inner.bundle.items.len(),
            self.inner.binding.key_set
        )
    }
}

/// The client: holds the secret key, encrypts features and decrypts results.
///
/// ```python
/// client = hepeft.Client.keygen(public_model, params)      # mode="latency" or "batch"
/// query = client.encrypt(features)                           # samples x dim, float64
/// result = server.evaluate(query, client.eval_keys())        # on the server
/// logits = client.decrypt(result)                            # samples x classes
/// ```
///
/// `to_bytes()` holds the secret key: keep it private.
#[pyclass(module = "hepeft", name = "Client", frozen)]
pub struct Client {
    pub plan: Plan,
    pub encoder: Encoder,
    pub keys: ClientKeys,
    eval: OnceLock<Arc<EvaluationKeys>>,
}

impl Client {
    pub fn new(plan: Plan, keys: ClientKeys) -> hepeft::Result<Self> {
        let encoder = Encoder::new(plan.params())?;
        Ok(Client {
            plan,
            encoder,
            keys,
            eval: OnceLock::new(),
        })
    }

    fn ckks(&self) -> &CkksParams {
        self.plan.params()
    }
}

#[pymethods]
impl Client {
    /// Fresh keys for the plan of `public_model` (the server's published structure; a
    /// model with weights gives the same plan) under `params`, in `mode`. Cost: one key
    /// switching key per rotation the plan needs (seconds at N = 2^14).
    #[classmethod]
    #[pyo3(signature = (public_model, params, mode = "latency"))]
    fn keygen(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        public_model: &Model,
        params: &Params,
        mode: &str,
    ) -> PyResult<Self> {
        let mode = Mode::parse(mode).py_err()?;
        let adapter = &public_model.inner;
        let params = &params.inner;
        py.detach(|| {
            let plan = protocol::client_plan(adapter, params, mode)?;
            let keys = protocol::keygen(&plan)?;
            Client::new(plan, keys)
        })
        .py_err()
    }

    /// The evaluation keys to send to the server (computed once, then shared).
    fn eval_keys(&self) -> EvalKeys {
        let keys = self
            .eval
            .get_or_init(|| Arc::new(self.keys.eval.clone()))
            .clone();
        EvalKeys {
            params: self.ckks().clone(),
            keys,
            binding: self.keys.binding.clone(),
        }
    }

    /// Encrypts features: a `samples x dim` array (or a 1-D array for one sample), or a
    /// list of such arrays for a model with several inputs. float64 arrays are read in
    /// place. Latency mode makes one query per sample, batch mode packs up to N/2 samples
    /// per query.
    fn encrypt(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Query> {
        let inputs = Inputs::extract(x)?;
        let views = inputs.views();
        let (bundle, binding) = py
            .detach(|| protocol::encrypt(&self.plan, &self.encoder, &self.keys, &views))
            .py_err()?;
        Ok(Query(Bundle {
            params: self.ckks().clone(),
            bundle,
            binding,
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
            .detach(|| {
                protocol::decrypt(
                    &self.plan,
                    &self.encoder,
                    &self.keys,
                    &result.inner.bundle,
                    &result.inner.binding,
                )
            })
            .py_err()?;
        Ok(out.into_pyarray(py))
    }

    /// The parameters.
    #[getter(params)]
    fn py_params(&self) -> Params {
        Params {
            inner: self.ckks().clone(),
        }
    }

    /// `"latency"` or `"batch"`.
    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.plan.options().mode)
    }

    /// The key-set id (hex).
    #[getter]
    fn key_set(&self) -> String {
        self.keys.binding.key_set.hex()
    }

    /// Widths of the model's inputs.
    #[getter]
    fn input_dims(&self) -> Vec<usize> {
        self.plan.input_dims().to_vec()
    }

    /// Width of the output.
    #[getter]
    fn output_dim(&self) -> usize {
        self.plan.output_dim()
    }

    /// The plan's summary (stages, levels, rotations).
    fn plan_summary(&self) -> String {
        self.plan.summary()
    }

    /// Parameters, mode, secret key, public key and evaluation keys (library envelopes)
    /// in one byte string. Contains the SECRET KEY.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let params = self.ckks();
        let bytes = py
            .detach(|| -> hepeft::Result<Vec<u8>> {
                let toml = params.to_toml()?;
                let sk = to_bytes_bound(params, &self.keys.secret, &self.keys.binding)?;
                let pk = match &self.keys.public {
                    Some(pk) => to_bytes(params, pk)?,
                    None => Vec::new(),
                };
                let ek = to_bytes_bound(params, &self.keys.eval, &self.keys.binding)?;
                Ok(pack(
                    Kind::Client,
                    &[
                        toml.as_bytes(),
                        mode_name(self.plan.options().mode).as_bytes(),
                        &sk,
                        &pk,
                        &ek,
                    ],
                ))
            })
            .py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Inverse of `to_bytes`, for the same public model. The keys are checked to belong
    /// together and to the model's plan.
    #[classmethod]
    fn from_bytes(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        public_model: &Model,
        data: &[u8],
    ) -> PyResult<Self> {
        let adapter = &public_model.inner;
        py.detach(|| -> hepeft::Result<Client> {
            let parts = unpack(Kind::Client, data, 5)?;
            let text = |b: &[u8], what: &str| -> hepeft::Result<String> {
                String::from_utf8(b.to_vec()).map_err(|e| Error::format(what, e.to_string()))
            };
            let params = CkksParams::from_toml(&text(parts[0], "parameter set")?)?;
            let mode = Mode::parse(&text(parts[1], "mode")?)?;
            let plan = protocol::client_plan(adapter, &params, mode)?;
            let (secret, sk_binding): (SecretKey, _) = from_bytes_bound(&params, parts[2])?;
            let (eval, ek_binding): (EvaluationKeys, _) = from_bytes_bound(&params, parts[4])?;
            let key_set =
                hepeft::session::check_eval_keys(&params, &eval, ek_binding.as_ref(), Some(&plan))?;
            let binding = hepeft::session::check_secret_matches_public(
                sk_binding.as_ref(),
                key_set,
                Some(&plan),
            )?;
            let public = if parts[3].is_empty() {
                None
            } else {
                let pk: PublicKey = from_bytes(&params, parts[3])?;
                if hepeft::session::key_set_id(&params, &pk)? != key_set {
                    return Err(Error::mismatch(
                        "key set",
                        "the public key is not the one the evaluation keys carry",
                    ));
                }
                Some(pk)
            };
            Client::new(
                plan,
                ClientKeys {
                    secret,
                    public,
                    eval,
                    binding,
                },
            )
        })
        .py_err()
    }

    fn __repr__(&self) -> String {
        format!(
            "Client({} mode, key set {}, {})",
            mode_name(self.plan.options().mode),
            self.keys.binding.key_set,
            self.ckks().describe()
        )
    }
}

/// The server: holds the private model (weights encoded once) and evaluates queries.
/// Needs only the client's evaluation keys, never its secret key.
#[pyclass(module = "hepeft", name = "Server", frozen)]
pub struct Server {
    pub prepared: PreparedPlan,
}

#[pymethods]
impl Server {
    /// Compiles `model` (with its weights) under `params` in `mode` and encodes the
    /// weights. Refuses parameters that opted out of the security check.
    #[new]
    #[pyo3(signature = (model, params, mode = "latency"))]
    fn new(py: Python<'_>, model: &Model, params: &Params, mode: &str) -> PyResult<Self> {
        let mode = Mode::parse(mode).py_err()?;
        let adapter = &model.inner;
        let params = &params.inner;
        let prepared = py
            .detach(|| protocol::server_plan(adapter, params, mode))
            .py_err()?;
        Ok(Server { prepared })
    }

    /// Evaluates every query of `query` under the client's `eval_keys` and sanitizes the
    /// results (mask, level 0, re-randomization, noise flooding at `flooding_bits` bits of
    /// statistical security for `flooded_queries` decryptions; `flooding_bits=None` turns
    /// flooding off, for a trusted client only). The GIL is released meanwhile.
    ///
    /// Raises MismatchError for keys or a query of another key set or model.
    #[pyo3(signature = (query, eval_keys, flooding_bits = Some(40), flooded_queries = 1))]
    fn evaluate(
        &self,
        py: Python<'_>,
        query: &Query,
        eval_keys: &EvalKeys,
        flooding_bits: Option<u32>,
        flooded_queries: u64,
    ) -> PyResult<EncryptedResult> {
        let cfg = protocol::sanitize_config(flooding_bits, flooded_queries);
        let (bundle, binding, report) = py
            .detach(|| {
                protocol::evaluate(
                    &self.prepared,
                    &eval_keys.keys,
                    &eval_keys.binding,
                    &query.0.bundle,
                    &query.0.binding,
                    &cfg,
                )
            })
            .py_err()?;
        Ok(EncryptedResult {
            inner: Bundle {
                params: self.prepared.plan().params().clone(),
                bundle,
                binding,
            },
            sanitize: report,
        })
    }

    /// Predicted precision in bits after flooding at `flooding_bits` (None: the
    /// parameters' precision model without flooding).
    #[pyo3(signature = (flooding_bits = Some(40)))]
    fn predicted_precision_bits(&self, flooding_bits: Option<u32>) -> f64 {
        let plan = self.prepared.plan();
        let params = plan.params();
        match flooding_bits {
            Some(s) => plan.flooded_precision_bits(&hepeft::plan::FloodingConfig::new(s, 1)),
            None => hepeft::select::predicted_precision_bits(
                params.default_scale().log2().round() as u32,
                params.log_n(),
            ),
        }
    }

    /// `"latency"` or `"batch"`.
    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.prepared.plan().options().mode)
    }

    /// Key switches (rotations and relinearizations) per query.
    #[getter]
    fn key_switches(&self) -> usize {
        self.prepared.plan().key_switches()
    }

    /// The plan's summary (stages, levels, rotations).
    fn plan_summary(&self) -> String {
        self.prepared.plan().summary()
    }

    fn __repr__(&self) -> String {
        let plan = self.prepared.plan();
        format!(
            "Server({} mode, depth {}, {} key switches per query, {})",
            mode_name(plan.options().mode),
            plan.depth(),
            plan.key_switches(),
            plan.params().describe()
        )
    }
}

/// Times `iterations` calls of the Rust evaluation behind `Server.evaluate` in one Rust
/// loop (no Python in between) and returns the seconds per call: the baseline of
/// `bench/python_overhead.py`.
#[pyfunction]
#[pyo3(signature = (server, query, eval_keys, iterations, flooding_bits = Some(40)))]
pub fn _rust_evaluate_seconds(
    py: Python<'_>,
    server: &Server,
    query: &Query,
    eval_keys: &EvalKeys,
    iterations: usize,
    flooding_bits: Option<u32>,
) -> PyResult<f64> {
    let cfg = protocol::sanitize_config(flooding_bits, 1);
    py.detach(|| -> hepeft::Result<f64> {
        let t = std::time::Instant::now();
        for _ in 0..iterations.max(1) {
            let r = protocol::evaluate(
                &server.prepared,
                &eval_keys.keys,
                &eval_keys.binding,
                &query.0.bundle,
                &query.0.binding,
                &cfg,
            )?;
            std::hint::black_box(r);
        }
        Ok(t.elapsed().as_secs_f64() / iterations.max(1) as f64)
    })
    .py_err()
}
