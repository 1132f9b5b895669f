//! The network service: a model owner serves an adapter over HTTP; clients send encrypted
//! features and get encrypted logits back. Feature `serve` (on by default).
//!
//! The server holds the adapter's weights and the clients' *evaluation* keys; it never sees
//! a secret key, a plaintext feature or a plaintext logit. The client fetches the public
//! description of the model ([`ModelDescription`]: structure with zero weights, parameter
//! set, plan digest), compiles the same [`Plan`](crate::plan::Plan) locally, checks both
//! digests, uploads its evaluation keys once, then sends queries.
//!
//! # Endpoints
//!
//! | method | path | body in | body out |
//! | --- | --- | --- | --- |
//! | `GET` | `/v1/model` | | JSON [`ModelDescription`] |
//! | `GET` | `/v1/model/weights` | | zero-weight safetensors of the public card |
//! | `GET` | `/v1/model/params` | | parameter envelope ([`params_to_bytes`](crate::ckks::serialize::params_to_bytes)) |
//! | `POST` | `/v1/keys` | `EvaluationKeys` envelope | JSON [`KeyInfo`] (201, or 200 if known) |
//! | `GET`, `HEAD` | `/v1/keys/{id}` | | JSON [`KeyInfo`], 404 if unknown |
//! | `DELETE` | `/v1/keys/{id}` | | 204 |
//! | `POST` | `/v1/evaluate/{id}` | one or more `CiphertextBundle` envelopes back to back | one result bundle |
//! | `POST`, `GET`, `DELETE` | `/v1/tune/{id}[/step, /reply]` | see [`tune`] (with [`ServerConfig::tune`]) | |
//! | `GET` | `/healthz` | | `ok` |
//! | `GET` | `/metrics` | | Prometheus text |
//!
//! A key id is the lower-case SHA-256 hex of the uploaded envelope (content addressed: the
//! same keys always get the same id, on every instance). An evaluate body holds `k >= 1`
//! queries: each bundle carries a multiple of
//! [`ModelDescription::input_ciphertexts`] ciphertexts; the answer is one bundle with the
//! `k` results in order (`k * output_ciphertexts` ciphertexts), and the response header
//! `x-hepeft-queries` says `k`.
//!
//! With [`ServerConfig::auth`] set, every `/v1/*` request needs `Authorization: Bearer
//! <token>` (401 otherwise); with [`ServerConfig::rate_limit`] set, each client (its token,
//! or its IP address without authentication) gets a token bucket (429 with `Retry-After`
//! when empty). `/healthz` and `/metrics` are always open.
//!
//! Errors are JSON `{"status": .., "error": ".."}` with: 400 malformed body or key id,
//! 401 missing or wrong token, 404 unknown key id, 429 rate limit, 409 object made for other parameters, 413 body too large,
//! 422 keys lacking a Galois or relinearization key the plan needs, 503 (with
//! `Retry-After`) when every evaluation slot and queue place is taken, 504 past the
//! request timeout, 500 for the server's own failures.
//!
//! # Example
//!
//! ```no_run
//! use hepeft::serve::{self, client::{ClientKeys, QueryClient}, ServerConfig};
//! # fn demo(adapter: hepeft::model::Adapter, features: ndarray::Array2<f64>) -> hepeft::Result<()> {
//! let params = hepeft::ckks::CkksParams::preset("CKKS_N13_QP200_128")?;
//! let server = serve::spawn(adapter, params, ServerConfig::default())?; // 127.0.0.1:8080
//! let client = QueryClient::new(&server.url())?;
//! let remote = client.connect()?; // fetches and checks the public description
//! let keys = ClientKeys::generate(remote.plan(), &mut rand::rng())?;
//! let logits = client.query(&keys, &[features.view()])?;
//! server.shutdown()?;
//! # let _ = logits; Ok(()) }
//! ```

mod access;
pub mod client;
mod conn;
mod keystore;
mod metrics;
mod server;
pub mod tune;
mod wire;

pub use access::{AuthTokens, RateLimit, MIN_TOKEN_CHARS};
pub use server::{run, run_until_signal, shutdown_signal, spawn, Server, ServerHandle};

use crate::plan::PlanOptions;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::session::description::{sha256_hex, ModelDescription, DESCRIPTION_FORMAT};

/// Response header carrying the number of queries in an evaluate request.
pub const QUERIES_HEADER: &str = "x-hepeft-queries";

/// How a server listens, what it accepts and how much it does at once.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Largest request body accepted (413 above). Must cover an evaluation key upload.
    pub max_body_bytes: usize,
    /// Evaluations (and key verifications) running at once; each runs on the blocking pool
    /// and uses rayon inside.
    pub max_concurrent_evaluations: usize,
    /// Requests allowed to wait for a slot; beyond `max_concurrent_evaluations +
    /// queue_depth` the server answers 503 with `Retry-After`.
    pub queue_depth: usize,
    /// Whole-request deadline (reading the body, waiting, evaluating): 504 past it. An
    /// evaluation already running finishes in the background and keeps its slot until then.
    pub request_timeout: Duration,
    /// Memory budget of the key store (resident size of the parsed keys); least recently
    /// used key sets are dropped from memory above it.
    pub key_store_max_bytes: usize,
    /// Directory where uploaded keys are kept (`<id>.evk`, the uploaded envelope) so that a
    /// restart, or another instance sharing the directory, finds them. `None`: memory only.
    pub key_store_dir: Option<PathBuf>,
    /// Disk budget of `key_store_dir`: after each upload the least recently used key files
    /// (by modification time, which a read-back refreshes) are deleted until the directory's
    /// `.evk` files fit. Keys resident in memory are deleted last. `None`: the default
    /// budget, [`DEFAULT_KEY_STORE_DISK_BYTES`] (4 GiB).
    pub key_store_max_disk_bytes: Option<u64>,
    /// Bearer tokens required on every `/v1/*` request (401 without a valid one).
    /// Empty: no authentication (bind to loopback or put an authenticating proxy in front).
    /// `/healthz` and `/metrics` stay open for probes and scrapers.
    pub auth: AuthTokens,
    /// Per-client request rate on `/v1/*` (429 above it). `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Plan compilation options (latency or batch layout).
    pub mode: PlanOptions,
    /// Name shown in the model description.
    pub model_name: Option<String>,
    /// What is done to every result before it leaves (mask, level 0, re-randomization,
    /// noise flooding); see [`crate::plan::sanitize`]. Flooding is on by default.
    pub sanitize: crate::plan::SanitizeConfig,
    /// Private tuning for clients with labelled data (`/v1/tune/...`, see [`tune`]); off
    /// when `None` (the default). Tuning results are sanitized with `sanitize`; each step
    /// is `2k` results on one query, which counts against the flooding query budget.
    pub tune: Option<tune::TuneServiceConfig>,
    /// Time a client has to send a request's headers once it starts (connection closed
    /// past it). Default 10 s.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no byte moving for this long is closed.
    /// Default 30 s.
    pub idle_timeout: Duration,
    /// Time a client has to send a whole request body (408 past it). Default 60 s.
    pub body_timeout: Duration,
    /// Connections open at once; further connections are closed at once. Default 256.
    pub max_connections: usize,
    /// After a shutdown signal, time given to requests in flight before their connections
    /// are dropped. Default 30 s.
    pub shutdown_grace: Duration,
}

/// Disk budget of a key directory when none is given (4 GiB).
pub const DEFAULT_KEY_STORE_DISK_BYTES: u64 = 4 << 30;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 512 << 20,
            max_concurrent_evaluations: std::thread::available_parallelism().map_or(1, usize::from),
            queue_depth: 64,
            request_timeout: Duration::from_secs(120),
            key_store_max_bytes: 4 << 30,
            key_store_dir: None,
            key_store_max_disk_bytes: None,
            auth: AuthTokens::none(),
            rate_limit: None,
            mode: PlanOptions::default(),
            model_name: None,
            sanitize: crate::plan::SanitizeConfig::flooded(),
            tune: None,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What the server knows about a key set (`POST /v1/keys`, `GET /v1/keys/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// Content address: SHA-256 hex of the envelope.
    pub id: String,
    /// Envelope size in bytes.
    pub bytes: u64,
    /// Whether the keys were already known before this request.
    pub existing: bool,
    /// Key-set id (16 hex digits) of the public key the keys carry: queries evaluated
    /// under them must be bound to it (issue 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_set: Option<String>,
}

/// Whether `id` has the shape of a key id (64 lower-case hex digits).
pub fn is_key_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
