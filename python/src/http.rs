//! `hepeft.HttpClient`: a blocking client of `hepeft serve`, over
//! `hepeft::serve::client::QueryClient`.

use std::time::Duration;

use hepeft::serve::client::QueryClient;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

use crate::errors::IntoPy as _;
use crate::model::{Inputs, Model};
use crate::params::{to_python, Params};
use crate::session::{Client, EvalKeys};

/// A client of one `hepeft serve` instance.
///
/// ```python
/// http = hepeft.HttpClient("http://127.0.0.1:8080")
/// client = http.keygen()                 # keys for the served model's plan
/// logits = http.query(client, features)  # encrypt, upload keys once, evaluate, decrypt
/// ```
///
/// Error answers of the server raise RemoteError (status in `e.status`, the server's
/// message in `str(e)`). The GIL is released during every request.
#[pyclass(module = "hepeft", name = "HttpClient", frozen)]
pub struct HttpClient {
    inner: QueryClient,
}

#[pymethods]
impl HttpClient {
    /// `url` is `http://host:port`; `token` is sent as `Authorization: Bearer` (servers
    /// started with access tokens need it); `timeout` in seconds (default 600);
    /// `params_digest` refuses a server whose parameter digest does not start with it.
    #[new]
    #[pyo3(signature = (url, token = None, timeout = None, params_digest = None))]
    fn new(
        url: &str,
        token: Option<&str>,
        timeout: Option<f64>,
        params_digest: Option<&str>,
    ) -> PyResult<Self> {
        let mut c = QueryClient::new(url).py_err()?;
        if let Some(t) = token {
            c = c.with_token(t);
        }
        if let Some(s) = timeout {
            c = c.with_timeout(Duration::from_secs_f64(s.max(0.001)));
        }
        if let Some(d) = params_digest {
            c = c.expect_params_digest(d);
        }
        Ok(HttpClient { inner: c })
    }

    /// `GET /healthz`; raises on failure.
    fn health(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.health()).py_err()
    }

    /// The server's model description (`GET /v1/model`) as a dict.
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let d = py.detach(|| self.inner.model()).py_err()?;
        to_python(py, &d)
    }

    /// The served model's public structure (zero weights), checked against the
    /// description.
    fn public_model(&self, py: Python<'_>) -> PyResult<Model> {
        let m = py.detach(|| self.inner.connect()).py_err()?;
        Ok(Model {
            inner: m.public_adapter().clone(),
        })
    }

    /// The server's parameter set (its digest checked).
    fn params(&self, py: Python<'_>) -> PyResult<Params> {
        let m = py.detach(|| self.inner.connect()).py_err()?;
        Ok(Params {
            inner: m.params().clone(),
        })
    }

    /// Fresh client keys for the served model's plan (compiled locally from the public
    /// structure; its digest equals the server's).
    fn keygen(&self, py: Python<'_>) -> PyResult<Client> {
        py.detach(|| -> hepeft::Result<Client> {
            let plan = self.inner.connect()?.plan().clone();
            let c = hepeft::session::Client::keygen(plan, &mut hepeft::session::os_rng()?)?;
            Ok(Client::new(c))
        })
        .py_err()
    }

    /// Uploads evaluation keys unless the server has them; returns their id.
    fn register_keys(&self, py: Python<'_>, eval_keys: &EvalKeys) -> PyResult<String> {
        py.detach(|| self.inner.register_keys(&eval_keys.keys))
            .py_err()
    }

    /// The whole round trip: checks `client` was made for the served plan, uploads its
    /// evaluation keys unless the server has them, encrypts `x` (as `Client.encrypt`),
    /// evaluates each query remotely (re-uploading the keys once if the server dropped
    /// them), and decrypts. Returns `samples x output_dim`.
    fn query<'py>(
        &self,
        py: Python<'py>,
        client: &Client,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let inputs = Inputs::extract(x)?;
        let views = inputs.views();
        let out = py
            .detach(|| -> hepeft::Result<_> {
                let remote = self.inner.connect()?;
                let c = &client.inner;
                if c.plan().structure_digest() != remote.plan().structure_digest()
                    || c.params().digest() != remote.params().digest()
                {
                    return Err(hepeft::Error::mismatch(
                        "plan",
                        "the client's keys were made for another model, mode or parameter set \
                         than the server's: make them with HttpClient.keygen()",
                    ));
                }
                let keys = client.eval_arc()?;
                let mut id = self.inner.register_keys(&keys)?;
                let query = c.encrypt_samples(&views, &mut hepeft::session::os_rng()?)?;
                let mut items = Vec::with_capacity(
                    query.binding.queries.len() * remote.plan().output_ciphertexts(),
                );
                for cts in query.chunks() {
                    let res = match self.inner.evaluate(&id, cts) {
                        // The server dropped the keys (restart, disk budget): upload again, once.
                        Err(e) if hepeft::serve::client::remote_status(&e) == Some(404) => {
                            id = self.inner.register_keys(&keys)?;
                            self.inner.evaluate(&id, cts)?
                        }
                        r => r?,
                    };
                    items.extend(res);
                }
                // Each query's result (checked by the query client: this key set, plan and
                // level 0), bound as the result of this query, then checked and decrypted.
                let result = hepeft::session::QueryResult {
                    items,
                    binding: hepeft::session::result_binding(&query.binding, c.plan()),
                };
                c.decrypt(&result)
            })
            .py_err()?;
        Ok(out.into_pyarray(py))
    }

    /// The server's base URL.
    #[getter]
    fn url(&self) -> &str {
        self.inner.base_url()
    }

    fn __repr__(&self) -> String {
        format!("HttpClient({:?})", self.inner.base_url())
    }
}
