//! The blocking query client (on `ureq`): fetch and check the model description, register
//! evaluation keys, send encrypted queries, decrypt the answers.
//!
//! ```no_run
//! use hepeft::serve::client::{ClientKeys, QueryClient};
//! # fn demo(features: ndarray::Array2<f64>) -> hepeft::Result<()> {
//! let client = QueryClient::new("http://127.0.0.1:8080")?;
//! let keys = ClientKeys::generate(client.connect()?.plan(), &mut rand::rng())?;
//! let logits = client.query(&keys, &[features.view()])?; // samples x classes
//! # let _ = logits; Ok(()) }
//! ```
//!
//! Errors from the server arrive as [`Error::Io`] whose source is a [`RemoteError`]
//! carrying the HTTP status and the server's message ([`remote_status`] extracts it).

use super::{is_key_id, sha256_hex, wire, KeyInfo, ModelDescription};
use crate::ckks::{
    to_bytes_bound, Ciphertext, CkksParams, Decryptor, Encoder, EncryptionKey, EvaluationKeys,
};
use crate::io::binding::{Binding, KeySetId};
use crate::model::Adapter;
use crate::plan::Plan;
use crate::session;
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2, Axis, Slice};

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// Key-directory file names (the session layer's).
pub use crate::session::keydir::{
    EVAL_KEYS as EVAL_KEYS_FILE, PUBLIC_KEY as PUBLIC_KEY_FILE, SECRET_KEY as SECRET_KEY_FILE,
};
pub use crate::session::ClientKeys;

/// Largest response the client reads (result bundles, the description, zero weights).
pub const MAX_RESPONSE_BYTES: u64 = 4 << 30;

/// An HTTP error answer from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// HTTP status.
    pub status: u16,
    /// The server's message (or the raw body when it was not the JSON error form).
    pub message: String,
    /// `Retry-After` seconds, when the server sent it (503).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server answered {}: {}", self.status, self.message)
    }
}

impl std::error::Error for RemoteError {}

/// The HTTP status when `e` is an error answer of the server.
pub fn remote_status(e: &Error) -> Option<u16> {
    remote_error(e).map(|r| r.status)
}

/// The server's error answer inside `e`, if that is what `e` is.
pub fn remote_error(e: &Error) -> Option<&RemoteError> {
    match e {
        Error::Io { source, .. } => source
            .get_ref()
            .and_then(|s| s.downcast_ref::<RemoteError>()),
        _ => None,
    }
}

fn transport(url: &str, e: ureq::Error) -> Error {
    Error::Io {
        path: None,
        source: std::io::Error::other(format!("HTTP request to {url} failed: {e}")),
    }
}

/// A served model as the client sees it, checked: the parameter set, the public adapter
/// and the plan compiled locally from it (its structure digest equals the server's).
pub struct RemoteModel {
    description: ModelDescription,
    params: CkksParams,
    adapter: Adapter,
    plan: Plan,
    encoder: Encoder,
}

impl RemoteModel {
    /// The server's description.
    pub fn description(&self) -> &ModelDescription {
        &self.description
    }
    /// The parameter set (its digest checked against the description).
    pub fn params(&self) -> &CkksParams {
        &self.params
    }
    /// The public, zero-weight adapter.
    pub fn public_adapter(&self) -> &Adapter {
        &self.adapter
    }
    /// The plan compiled locally (same structure digest as the server's).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    /// An encoder for the parameters.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Checks a description and zero weights, and compiles the plan from them.
    ///
    /// # Errors
    /// [`Error::Format`] for an unknown format or a weights digest that does not match;
    /// [`Error::ParameterMismatch`] if the parameter set does not hash to the advertised
    /// digest (or to `expected_params`); [`Error::Model`] if the local plan differs from
    /// the server's.
    pub fn from_parts(
        description: ModelDescription,
        weights: &[u8],
        expected_params: Option<&str>,
    ) -> Result<Self> {
        let (params, adapter, plan) = description.check(weights, expected_params)?;
        let encoder = Encoder::new(&params)?;
        Ok(RemoteModel {
            description,
            params,
            adapter,
            plan,
            encoder,
        })
    }
}

/// A blocking client of one server.
pub struct QueryClient {
    base: String,
    agent: ureq::Agent,
    expected_params: Option<String>,
    remote: OnceLock<RemoteModel>,
    /// `Bearer <token>` when the server requires authentication (zeroized on drop).
    authorization: Option<zeroize::Zeroizing<String>>,
    /// Key set of each key id this client registered (bound into its queries).
    key_sets: std::sync::Mutex<std::collections::HashMap<String, KeySetId>>,
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

fn read_response(url: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| transport(url, e))?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    Err(Error::Io {
        path: None,
        source: std::io::Error::other(RemoteError {
            status,
            message,
            retry_after,
        }),
    })
}

impl QueryClient {
    /// A client of the server at `base_url` (`http://host:port`, or `https://` with the
    /// `serve-tls` feature). Nothing is sent yet.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a URL that is not `http(s)://...`.
    pub fn new(base_url: &str) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_string();
        let host = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .unwrap_or("");
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(Error::InvalidValue {
                context: "server URL".into(),
                reason: format!("{base_url:?} is not an http:// or https:// URL"),
            });
        }
        Ok(QueryClient {
            base,
            agent: agent(Some(Duration::from_secs(600))),
            expected_params: None,
            remote: OnceLock::new(),
            authorization: None,
            key_sets: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request (servers started with
    /// access tokens answer 401 without it). The token is never printed.
    pub fn with_token(mut self, token: &str) -> Self {
        self.authorization = Some(zeroize::Zeroizing::new(format!("Bearer {}", token.trim())));
        self
    }

    /// Sets the whole-request timeout (default 600 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = agent(Some(timeout));
        self
    }

    /// Refuses servers whose parameter digest does not start with `hex` (a full digest or
    /// a prefix such as [`CkksParams::digest_short`]).
    pub fn expect_params_digest(mut self, hex: &str) -> Self {
        self.expected_params = Some(hex.to_string());
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(super) fn get(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a.as_str());
        }
        let resp = req.call().map_err(|e| transport(&url, e))?;
        read_response(&url, resp)
    }

    pub(super) fn delete(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.delete(&url);
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a.as_str());
        }
        let resp = req.call().map_err(|e| transport(&url, e))?;
        read_response(&url, resp)
    }

    pub(super) fn post(&self, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/octet-stream");
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a.as_str());
        }
        let resp = req.send(body).map_err(|e| transport(&url, e))?;
        read_response(&url, resp)
    }

    /// `GET /healthz`.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub fn health(&self) -> Result<()> {
        self.get("/healthz").map(|_| ())
    }

    /// `GET /v1/model`, unchecked.
    ///
    /// # Errors
    /// Transport errors, a non-2xx answer, or [`Error::Format`] for malformed JSON.
    pub fn model(&self) -> Result<ModelDescription> {
        let body = self.get("/v1/model")?;
        serde_json::from_slice(&body).map_err(|e| Error::format("model description", e.to_string()))
    }

    /// Fetches the description and the zero weights, checks them and compiles the plan
    /// locally (once; later calls return the cached model).
    ///
    /// # Errors
    /// As [`QueryClient::model`] and [`RemoteModel::from_parts`].
    pub fn connect(&self) -> Result<&RemoteModel> {
        if let Some(r) = self.remote.get() {
            return Ok(r);
        }
        let description = self.model()?;
        let weights = self.get("/v1/model/weights")?;
        let remote =
            RemoteModel::from_parts(description, &weights, self.expected_params.as_deref())?;
        Ok(self.remote.get_or_init(|| remote))
    }

    /// Whether the server knows key id `id` (`GET /v1/keys/{id}`).
    ///
    /// # Errors
    /// Transport errors, or an answer other than 200 / 404.
    pub fn has_keys(&self, id: &str) -> Result<bool> {
        if !is_key_id(id) {
            return Ok(false);
        }
        match self.get(&format!("/v1/keys/{id}")) {
            Ok(_) => Ok(true),
            Err(e) if remote_status(&e) == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads `keys` unless the server already has them, and returns their id (the
    /// SHA-256 hex of the envelope, computed locally and checked against the server's).
    ///
    /// # Errors
    /// As [`QueryClient::connect`]; [`Error::ParameterMismatch`] for keys of other
    /// parameters; the server's 4xx answers (409, 413, 422) as [`RemoteError`].
    ///
    /// The upload is bound (issue 20) to the key set of the public key the keys carry and
    /// to the served plan; this client remembers the key set under the returned id, so
    /// the queries it sends under that id carry it.
    pub fn register_keys(&self, keys: &EvaluationKeys) -> Result<String> {
        let remote = self.connect()?;
        let bytes = match session::eval_keys_id(remote.params(), keys) {
            Ok(key_set) => {
                let binding = Binding::keys(key_set, remote.plan().structure_digest());
                to_bytes_bound(remote.params(), keys, &binding)?
            }
            // Keys without a public key: the server refuses them and says why (422).
            Err(_) => crate::ckks::to_bytes(remote.params(), keys)?,
        };
        self.register_key_bytes(&bytes)
    }

    /// [`QueryClient::register_keys`] for an envelope already serialized.
    ///
    /// # Errors
    /// As [`QueryClient::register_keys`].
    pub fn register_key_bytes(&self, envelope: &[u8]) -> Result<String> {
        let id = sha256_hex(envelope);
        if let Ok(remote) = self.connect() {
            if let Ok((keys, _)) =
                crate::ckks::from_bytes_bound::<EvaluationKeys>(remote.params(), envelope)
            {
                if let Ok(ks) = session::eval_keys_id(remote.params(), &keys) {
                    self.remember(&id, ks);
                }
            }
        }
        if self.has_keys(&id)? {
            return Ok(id);
        }
        let body = self.post("/v1/keys", envelope)?;
        let info: KeyInfo = serde_json::from_slice(&body)
            .map_err(|e| Error::format("key registration answer", e.to_string()))?;
        if info.id != id {
            return Err(Error::format(
                "key registration answer",
                format!("server named the keys {}, expected {id}", info.id),
            ));
        }
        Ok(id)
    }

    /// Evaluates one query (the ciphertexts of [`Plan::encrypt_query`]) under key id `id`.
    ///
    /// # Errors
    /// As [`QueryClient::evaluate_many`].
    pub fn evaluate(&self, id: &str, query: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        let mut out = self.evaluate_many(id, &[query.to_vec()])?;
        out.pop()
            .ok_or_else(|| Error::format("result bundle", "no result"))
    }

    /// Evaluates several queries in one request; one result per query, in order.
    ///
    /// # Errors
    /// As [`QueryClient::connect`]; the server's answers (404 unknown id, 400 malformed,
    /// 409 other parameters, 503 busy, 504 timeout) as [`RemoteError`]; [`Error::Format`]
    /// for a result of the wrong size.
    pub fn evaluate_many(
        &self,
        id: &str,
        queries: &[Vec<Ciphertext>],
    ) -> Result<Vec<Vec<Ciphertext>>> {
        let remote = self.connect()?;
        // Queries carry the key set of the keys registered under `id` (all zero for an id
        // this client did not register: the server then refuses them as another key set).
        let key_set = self.key_set_of(id);
        let mut body = Vec::new();
        for q in queries {
            let binding = session::query_binding(key_set, remote.plan(), &[1]);
            body.extend(wire::write_bundle(remote.params(), q.clone(), &binding)?);
        }
        self.evaluate_raw(id, &body, queries.len(), key_set)
    }

    fn remember(&self, id: &str, key_set: KeySetId) {
        if let Ok(mut m) = self.key_sets.lock() {
            m.insert(id.to_string(), key_set);
        }
    }

    /// The key set of key id `id`: remembered from [`QueryClient::register_keys`], else
    /// the server's word (`GET /v1/keys/{id}`), else all zero (the server then answers
    /// 404 for an unknown id, or refuses the queries).
    pub(super) fn key_set_of(&self, id: &str) -> KeySetId {
        if let Some(k) = self.key_sets.lock().ok().and_then(|m| m.get(id).copied()) {
            return k;
        }
        let from_server = is_key_id(id)
            .then(|| self.get(&format!("/v1/keys/{id}")).ok())
            .flatten()
            .and_then(|body| serde_json::from_slice::<KeyInfo>(&body).ok())
            .and_then(|info| info.key_set)
            .and_then(|h| KeySetId::from_hex(&h).ok());
        match from_server {
            Some(k) => {
                self.remember(id, k);
                k
            }
            None => KeySetId::default(),
        }
    }

    fn evaluate_raw(
        &self,
        id: &str,
        body: &[u8],
        queries: usize,
        key_set: KeySetId,
    ) -> Result<Vec<Vec<Ciphertext>>> {
        let remote = self.connect()?;
        if !is_key_id(id) {
            return Err(Error::InvalidValue {
                context: "key id".into(),
                reason: "expected 64 lower-case hex digits".into(),
            });
        }
        let answer = self.post(&format!("/v1/evaluate/{id}"), body)?;
        let (cts, binding) = wire::read_bundle(remote.params(), &answer)?;
        let per = remote.plan().output_ciphertexts();
        if cts.len() != per * queries {
            return Err(Error::dims("result ciphertexts", per * queries, cts.len()));
        }
        // A result of this key set and plan, at level 0.
        let mine = Binding::keys(key_set, remote.plan().structure_digest());
        session::check_result_matches_secret(binding.as_ref(), &mine, remote.plan(), &cts)?;
        let mut it = cts.into_iter();
        Ok((0..queries)
            .map(|_| it.by_ref().take(per).collect())
            .collect())
    }

    /// The whole flow: connect and check the model, check the keys against the local plan,
    /// register them if the server lacks them, encrypt `inputs` (one `samples x dim`
    /// matrix per adapter input), evaluate remotely (requests packed up to the server's
    /// body limit), decrypt. Returns `samples x output_dim` logits.
    ///
    /// Latency mode sends one query per sample; batch mode packs up to N/2 samples per
    /// query.
    ///
    /// # Errors
    /// As [`QueryClient::connect`], [`ClientKeys::check_for`], [`Plan::encrypt_query`],
    /// [`QueryClient::evaluate_many`].
    pub fn query(&self, keys: &ClientKeys, inputs: &[ArrayView2<f64>]) -> Result<Array2<f64>> {
        let remote = self.connect()?;
        let plan = remote.plan();
        keys.check_for(plan)?;
        let key_set = keys.binding.key_set;
        let mut rng = session::os_rng()?;
        let query = session::encrypt_samples(
            plan,
            remote.encoder(),
            EncryptionKey::Secret(&keys.secret),
            key_set,
            inputs,
            &mut rng,
        )?;
        let samples = query.samples();
        let id = self.register_keys(&keys.eval)?;
        // Each query in its own envelope; envelopes are packed into requests.
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        let mut envelopes: Vec<Vec<u8>> = Vec::new();
        let mut start = 0;
        for (n, cts) in query.queries().into_iter().zip(query.chunks()) {
            let binding = session::query_binding(key_set, plan, &[n]);
            envelopes.push(wire::write_bundle(remote.params(), cts.to_vec(), &binding)?);
            chunks.push((start, start + n));
            start += n;
        }
        let limit = remote.description().max_body_bytes.max(1);
        let dec = Decryptor::new(remote.params(), &keys.secret)?;
        let mut out = Array2::zeros((samples, plan.output_dim()));
        let mut i = 0;
        while i < envelopes.len() {
            let mut body = envelopes[i].clone();
            let mut j = i + 1;
            while j < envelopes.len() && body.len() + envelopes[j].len() <= limit {
                body.extend_from_slice(&envelopes[j]);
                j += 1;
            }
            let results = match self.evaluate_raw(&id, &body, j - i, key_set) {
                // The server dropped the keys meanwhile (disk budget, restart without a
                // key directory, another instance): upload them again and retry once.
                Err(e) if remote_status(&e) == Some(404) => {
                    self.register_keys(&keys.eval)?;
                    self.evaluate_raw(&id, &body, j - i, key_set)?
                }
                r => r?,
            };
            let sizes: Vec<usize> = chunks[i..j].iter().map(|(a, b)| b - a).collect();
            let flat: Vec<Ciphertext> = results.into_iter().flatten().collect();
            let got = session::decrypt_queries(plan, remote.encoder(), &dec, &flat, &sizes)?;
            let (a, b) = (chunks[i].0, chunks[j - 1].1);
            out.slice_axis_mut(Axis(0), Slice::from(a..b)).assign(&got);
            i = j;
        }
        Ok(out)
    }

    /// [`QueryClient::query`] with the keys of a key directory (`secret.key`, `eval.keys`).
    ///
    /// # Errors
    /// As [`ClientKeys::load_dir`] and [`QueryClient::query`].
    pub fn query_with_key_dir(
        &self,
        dir: impl AsRef<Path>,
        inputs: &[ArrayView2<f64>],
    ) -> Result<Array2<f64>> {
        let remote = self.connect()?;
        let keys = ClientKeys::load_dir(dir, remote.params())?;
        self.query(&keys, inputs)
    }
}
