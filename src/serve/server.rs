//! The axum server: routes, admission control, timeouts, graceful shutdown.

use super::access::RateLimiter;
use super::keystore::KeyStore;
use super::metrics::{Metrics, StoreGauges};
use super::{is_key_id, sha256_hex, wire, KeyInfo, ModelDescription, ServerConfig, QUERIES_HEADER};
use crate::ckks::serialize::params_to_bytes;
use crate::ckks::{CkksParams, Evaluator, PublicKey};
use crate::io::binding::KeySetId;
use crate::io::format::digest_hex;
use crate::io::FileKind;
use crate::model::load::ModelCard;
use crate::model::Adapter;
use crate::plan::{public_structure, Plan};
use crate::session;
use crate::{Error, Result};
use axum::body::{Bytes, HttpBody as _};
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

// ------------------------------------------------------------------ errors

/// An HTTP error answer: status and a message for the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    /// Answer with `Connection: close` (the request body was not read to its end).
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            close: false,
        }
    }
}

/// Status for a library error: the client's fault (4xx) or the server's (5xx).
pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Format { .. }
        | Error::DimensionMismatch { .. }
        | Error::InvalidValue { .. }
        | Error::ScaleMismatch { .. }
        | Error::InvalidLevel { .. }
        | Error::LevelExhausted { .. }
        | Error::OutOfInterval { .. }
        | Error::InvalidParameters { .. } => StatusCode::BAD_REQUEST,
        Error::ParameterMismatch { .. } | Error::Mismatch { .. } => StatusCode::CONFLICT,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::MissingKey { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = status_of(&e);
        let message = if status.is_server_error() {
            // Server-side failures are logged in full, answered briefly.
            eprintln!("hepeft serve: internal error: {e}");
            "internal error (see the server log)".to_string()
        } else {
            e.to_string()
        };
        ApiError::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "status": self.status.as_u16(), "error": self.message });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

// ------------------------------------------------------------------ state

struct AppState {
    cfg: ServerConfig,
    params: CkksParams,
    /// The prepared plan and its sanitization: the evaluate-then-sanitize loop.
    session: session::Server,
    description_json: Bytes,
    weights: Bytes,
    params_envelope: Bytes,
    keys: KeyStore,
    metrics: Metrics,
    /// Admission: slots plus queue places; a request that cannot take one gets 503.
    admission: Arc<Semaphore>,
    /// Execution slots.
    slots: Arc<Semaphore>,
    /// Per-client buckets when a rate limit is configured.
    limiter: Option<RateLimiter>,
    /// Private tuning runs, when the owner serves tuning.
    tune: Option<super::tune::TuneRuns>,
}

/// Both permits of an admitted request; the queue gauge is kept by the holder.
struct Admitted {
    _admission: OwnedSemaphorePermit,
}

impl AppState {
    /// The evaluator, key set and public key of the evaluation keys registered as `id`.
    /// Cost: an evaluator over keys already in memory (or one read from the key directory).
    fn client_context(&self, id: &str) -> Result<(Evaluator, KeySetId, PublicKey)> {
        let keys = self.keys.load(id)?.ok_or_else(|| Error::MissingKey {
            what: format!("key id {id} (dropped while the request waited)"),
        })?;
        let key_set = crate::session::eval_keys_id(&self.params, &keys)?;
        let pk = keys
            .public_key()
            .cloned()
            .ok_or_else(|| Error::MissingKey {
                what: format!(
                    "public key in the evaluation keys of {id} (needed to re-randomize results; \
                 register keys generated by this version)"
                ),
            })?;
        Ok((Evaluator::with_keys(&self.params, keys)?, key_set, pk))
    }

    /// The tuning runs, or 404 when this server does not serve tuning.
    fn tune_runs(&self) -> ApiResult<&super::tune::TuneRuns> {
        self.tune.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this server does not serve private tuning (its owner starts it with `hepeft serve --tune`)",
            )
        })
    }

    fn admit(&self) -> ApiResult<Admitted> {
        match self.admission.clone().try_acquire_owned() {
            Ok(p) => Ok(Admitted { _admission: p }),
            Err(_) => {
                self.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "server busy: {} evaluations running and {} waiting; retry later",
                        self.cfg.max_concurrent_evaluations, self.cfg.queue_depth
                    ),
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    /// Waits for an execution slot (counted as queued meanwhile).
    async fn slot(&self) -> ApiResult<OwnedSemaphorePermit> {
        struct Queued<'a>(&'a Metrics);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let waiting = Queued(&self.metrics);
        let p = self.slots.clone().acquire_owned().await;
        drop(waiting);
        p.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server shutting down"))
    }

    /// Runs CPU-bound `f` on the blocking pool holding `slot` (released when `f` returns,
    /// even if the request timed out meanwhile).
    async fn compute<T: Send + 'static>(
        self: &Arc<Self>,
        admitted: Admitted,
        slot: OwnedSemaphorePermit,
        f: impl FnOnce(&AppState) -> Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let st = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _held = (admitted, slot);
            struct InFlight<'a>(&'a Metrics);
            impl Drop for InFlight<'_> {
                fn drop(&mut self) {
                    self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
                }
            }
            st.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
            let _counted = InFlight(&st.metrics);
            f(&st)
        })
        .await;
        match joined {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => {
                eprintln!("hepeft serve: evaluation task failed: {e}");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the server log)",
                ))
            }
        }
    }

    /// Reads the body of `req` up to `max_body_bytes`, refusing early what it can:
    /// a `Content-Length` over the limit (413 before reading a byte), a first 56 bytes that
    /// are not an envelope header of kind `expect` under the server's parameters (400 /
    /// 409 after 56 bytes), a declared envelope length over the limit (413), and a body
    /// that does not arrive within `body_timeout` (408). Memory: at most the limit.
    async fn read_body(&self, req: Request, expect: FileKind) -> ApiResult<Bytes> {
        let limit = self.cfg.max_body_bytes;
        if content_length(req.headers()).is_some_and(|n| n > limit as u64) {
            return Err(self.reject(req, too_large(limit)).await);
        }
        let mut body = req.into_body();
        let read = async {
            let mut buf: Vec<u8> = Vec::new();
            let mut checked = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body: {e}"),
                    )
                })?;
                if let Ok(data) = frame.into_data() {
                    if buf.len().saturating_add(data.len()) > limit {
                        return Err(too_large(limit));
                    }
                    buf.extend_from_slice(&data);
                    if !checked && buf.len() >= crate::io::format::HEADER_LEN {
                        checked = true;
                        self.check_head(&buf, expect)?;
                    }
                }
            }
            Ok(buf)
        };
        match tokio::time::timeout(self.cfg.body_timeout, read).await {
            Ok(r) => r.map(Bytes::from).map_err(close),
            Err(_) => Err(close(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within the server's body timeout of {:?}",
                    self.cfg.body_timeout
                ),
            ))),
        }
    }

    /// Checks the first envelope header of a body: magic, kind, parameters, length.
    fn check_head(&self, head: &[u8], expect: FileKind) -> ApiResult<()> {
        let h = crate::io::format::peek_header(head).map_err(ApiError::from)?;
        if h.kind == FileKind::SecretKey {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "this is a secret key: the server must never receive it; upload eval.keys \
                 (and consider the secret key compromised)",
            ));
        }
        if h.kind != expect {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("malformed body: a {} envelope, expected {expect}", h.kind),
            ));
        }
        if h.params_digest != self.params.digest() {
            return Err(ApiError::from(Error::ParameterMismatch {
                what: format!("the uploaded {expect}"),
                expected: self.params.digest_short(),
                found: digest_hex(&h.params_digest).chars().take(16).collect(),
            }));
        }
        if h.total_len()
            .is_none_or(|t| t > self.cfg.max_body_bytes as u64)
        {
            return Err(too_large(self.cfg.max_body_bytes));
        }
        Ok(())
    }

    /// Answers `err` for `req` without buffering its body. A client waiting for
    /// `100 Continue` gets the answer at once (it has sent no body); otherwise up to
    /// `min(Content-Length, 2 x max_body_bytes)` bytes are discarded within the body
    /// timeout, so that a client writing its whole body before reading sees the answer,
    /// not a reset. The connection is closed after the answer.
    async fn reject(&self, req: Request, err: ApiError) -> ApiError {
        let expects_continue = req
            .headers()
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if !expects_continue {
            let cap = self.cfg.max_body_bytes.saturating_mul(2);
            let mut body = req.into_body();
            let drain = async {
                let mut seen = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        seen = seen.saturating_add(data.len());
                        if seen > cap {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(self.cfg.body_timeout, drain).await;
        }
        close(err)
    }
}

/// Marks an error answer `Connection: close` (the rest of the body is not read).
fn close(mut e: ApiError) -> ApiError {
    e.close = true;
    e
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than the server's limit of {limit} bytes"),
    )
}

fn check_id(id: &str) -> ApiResult<()> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed key id: expected 64 lower-case hex digits (the SHA-256 of the key envelope)",
        ))
    }
}

fn unknown_key(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("unknown key id {id}: upload the evaluation keys with POST /v1/keys first"),
    )
}

fn no_run(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no tuning run for key id {id}: start one with POST /v1/tune/{id}"),
    )
}

fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

// ------------------------------------------------------------------ handlers

async fn healthz() -> &'static str {
    "ok\n"
}

async fn model(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.description_json.clone(),
    )
        .into_response()
}

async fn model_weights(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        st.weights.clone(),
    )
        .into_response()
}

async fn model_params(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        st.params_envelope.clone(),
    )
        .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let s = st.keys.stats();
    let text = st.metrics.render(&StoreGauges {
        resident_bytes: s.resident_bytes,
        capacity_bytes: st.keys.capacity(),
        entries: s.entries,
        evictions: s.evictions,
        disk_deletions: s.disk_deletions,
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn key_info(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Response> {
    check_id(&id)?;
    let st2 = st.clone();
    let id2 = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        let bytes = st2.keys.lookup(&id2)?;
        let key_set = st2
            .keys
            .load(&id2)
            .ok()
            .flatten()
            .and_then(|k| crate::session::eval_keys_id(&st2.params, &k).ok())
            .map(|k| k.hex());
        Some((bytes, key_set))
    })
    .await
    .ok()
    .flatten();
    let (bytes, key_set) = found.ok_or_else(|| unknown_key(&id))?;
    Ok(axum::Json(KeyInfo {
        id,
        bytes,
        existing: true,
        key_set,
    })
    .into_response())
}

async fn key_delete(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    check_id(&id)?;
    let st2 = st.clone();
    let id2 = id.clone();
    let known = tokio::task::spawn_blocking(move || st2.keys.remove(&id2))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))??;
    if known {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(unknown_key(&id))
    }
}

async fn keys_upload(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let body = st.read_body(req, FileKind::EvaluationKeys).await?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty body: expected an evaluation key envelope",
        ));
    }
    // A secret key must never reach the server: say so, and keep nothing of it.
    if crate::io::format::peek_header(&body)
        .is_ok_and(|h| h.kind == crate::io::format::FileKind::SecretKey)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "this is a secret key: the server must never receive it; upload eval.keys \
             (and consider the secret key compromised)",
        ));
    }
    let id = sha256_hex(&body);
    if let Some(bytes) = st.keys.lookup(&id) {
        return Ok((
            StatusCode::OK,
            axum::Json(KeyInfo {
                id,
                bytes,
                existing: true,
                key_set: None,
            }),
        )
            .into_response());
    }
    let admitted = st.admit()?;
    let slot = st.slot().await?;
    let id2 = id.clone();
    let bytes = body.len() as u64;
    st.compute(admitted, slot, move |st| {
        // Bound to the public key they carry and to the served plan, and covering it.
        let keys = st.session.read_keys(&body)?;
        let resident = super::keystore::resident_bytes(&keys);
        if resident > st.keys.capacity() {
            return Err(Error::InvalidValue {
                context: "evaluation keys".into(),
                reason: format!(
                    "{resident} bytes in memory exceed the key store's capacity of {} bytes",
                    st.keys.capacity()
                ),
            });
        }
        st.keys.insert(&id2, keys, &body)?;
        Ok(())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyInfo {
            id,
            bytes,
            existing: false,
            key_set: None,
        }),
    )
        .into_response())
}

async fn evaluate(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    if let Err(e) = check_id(&id) {
        return Err(st.reject(req, e).await);
    }
    if st.keys.lookup(&id).is_none() {
        return Err(st.reject(req, unknown_key(&id)).await);
    }
    let admitted = match st.admit() {
        Ok(a) => a,
        Err(e) => return Err(st.reject(req, e).await),
    };
    let body = st.read_body(req, FileKind::Ciphertext).await?;
    let slot = st.slot().await?;
    let t0 = Instant::now();
    let (out, queries) = st
        .compute(admitted, slot, move |st| {
            let keys = st.keys.load(&id)?.ok_or_else(|| Error::MissingKey {
                what: format!("key id {id} (dropped while the request waited)"),
            })?;
            let plan = st.session.plan();
            // Every query must be encrypted under the key set of these evaluation keys.
            let key_set = crate::session::eval_keys_id(&st.params, &keys)?;
            let query = wire::read_queries(&st.params, &body, plan, key_set)?;
            let mut rng = session::os_rng()?;
            let (result, _) = st
                .session
                .evaluate_queries(keys, &query, &mut rng, &|_, _, _| {})?;
            Ok((result.to_bytes(&st.params)?, result.binding.queries.len()))
        })
        .await?;
    let m = &st.metrics;
    m.evaluations.fetch_add(1, Ordering::Relaxed);
    m.queries.fetch_add(queries as u64, Ordering::Relaxed);
    m.eval_seconds_micros
        .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(QUERIES_HEADER),
                HeaderValue::from(queries),
            ),
        ],
        out,
    )
        .into_response())
}

/// A ChaCha20 generator seeded by the operating system.
pub(super) fn os_rng() -> Result<rand_chacha::ChaCha20Rng> {
    <rand_chacha::ChaCha20Rng as rand::SeedableRng>::try_from_os_rng().map_err(|e| Error::Io {
        path: None,
        source: std::io::Error::other(format!("operating-system randomness: {e}")),
    })
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

/// `POST /v1/tune/{id}`: starts or resumes the tuning run of key id `id` on the batch query
/// in the body.
async fn tune_start(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let checked = check_id(&id)
        .and_then(|()| st.tune_runs().map(|_| ()))
        .and_then(|()| match st.keys.lookup(&id) {
            Some(_) => Ok(()),
            None => Err(unknown_key(&id)),
        });
    if let Err(e) = checked {
        return Err(st.reject(req, e).await);
    }
    let admitted = match st.admit() {
        Ok(a) => a,
        Err(e) => return Err(st.reject(req, e).await),
    };
    let body = st.read_body(req, FileKind::Ciphertext).await?;
    let slot = st.slot().await?;
    let status = st
        .compute(admitted, slot, move |st| {
            let keys = st.keys.load(&id)?.ok_or_else(|| Error::MissingKey {
                what: format!("key id {id} (dropped while the request waited)"),
            })?;
            let key_set = crate::session::eval_keys_id(&st.params, &keys)?;
            let runs = st
                .tune
                .as_ref()
                .ok_or_else(|| Error::model("tuning is off"))?;
            runs.start(&st.params, &id, key_set, &body)
        })
        .await?;
    Ok(json(StatusCode::OK, &status))
}

/// `GET /v1/tune/{id}`: the run's status.
async fn tune_status(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    check_id(&id)?;
    let runs = st.tune_runs()?;
    if !runs.exists(&id) {
        return Err(no_run(&id));
    }
    Ok(json(StatusCode::OK, &runs.status_of(&id)?))
}

/// `DELETE /v1/tune/{id}`: forgets the run (its checkpoint stays with the owner).
async fn tune_delete(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    check_id(&id)?;
    if st.tune_runs()?.remove(&id)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_run(&id))
    }
}

/// `POST /v1/tune/{id}/step`: the `2k` sanitized results of the run's current step.
async fn tune_step(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Response> {
    check_id(&id)?;
    if !st.tune_runs()?.exists(&id) {
        return Err(no_run(&id));
    }
    let admitted = st.admit()?;
    let slot = st.slot().await?;
    let t0 = Instant::now();
    let (body, step) = st
        .compute(admitted, slot, move |st| {
            let (ev, _, pk) = st.client_context(&id)?;
            let runs = st
                .tune
                .as_ref()
                .ok_or_else(|| Error::model("tuning is off"))?;
            runs.step(&st.params, &id, &ev, &pk, &st.cfg.sanitize)
        })
        .await?;
    st.metrics.evaluations.fetch_add(1, Ordering::Relaxed);
    st.metrics
        .eval_seconds_micros
        .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(super::tune::TUNE_STEP_HEADER),
                HeaderValue::from(step),
            ),
        ],
        body,
    )
        .into_response())
}

/// `POST /v1/tune/{id}/reply`: applies the client's `k` scalars.
async fn tune_reply(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    check_id(&id)?;
    let runs = st.tune_runs()?;
    if !runs.exists(&id) {
        return Err(st.reject(req, no_run(&id)).await);
    }
    // 18 + 8k bytes, k <= 256: nothing larger is a reply.
    let limit = 18 + 8 * 256;
    if content_length(req.headers()).is_some_and(|n| n > limit as u64) {
        return Err(st.reject(req, too_large(limit)).await);
    }
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| close(too_large(limit)))?;
    let status = runs.reply(&id, &body)?;
    Ok(json(StatusCode::OK, &status))
}

/// Authentication and rate limiting of `/v1/*` (see [`ServerConfig::auth`] and
/// [`ServerConfig::rate_limit`]). Runs before the body is read.
async fn access(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let mut client = None;
    if st.cfg.auth.is_required() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match st.cfg.auth.check(presented) {
            Some(i) => client = Some(format!("token#{i}")),
            None => {
                st.metrics.rejected_auth.fetch_add(1, Ordering::Relaxed);
                let e = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or invalid access token: send `Authorization: Bearer <token>`",
                );
                let mut r = st.reject(req, e).await.into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"hepeft\""),
                );
                return r;
            }
        }
    }
    if let Some(limiter) = &st.limiter {
        let who = client.unwrap_or_else(|| {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
        });
        if let Err(wait) = limiter.take(&who, Instant::now()) {
            st.metrics.rejected_rate.fetch_add(1, Ordering::Relaxed);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit of {} requests/s exceeded; retry in {wait} s",
                    limiter.per_second()
                ),
            );
            e.retry_after = Some(wait);
            return st.reject(req, e).await.into_response();
        }
    }
    next.run(req).await
}

/// Per-request accounting and the request deadline.
async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let bytes_in = content_length(req.headers()).unwrap_or(0);
    let t0 = Instant::now();
    let resp = match tokio::time::timeout(st.cfg.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            st.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "request took longer than the server's timeout of {:?}",
                    st.cfg.request_timeout
                ),
            )
            .into_response()
        }
    };
    let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
    st.metrics.observe(
        &endpoint,
        resp.status().as_u16(),
        t0.elapsed().as_secs_f64(),
        bytes_in,
        bytes_out,
    );
    resp
}

async fn fallback() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint (see /v1/model, /v1/keys, /v1/evaluate/{key_id}, /v1/tune/{key_id}, /healthz, /metrics)",
    )
}

// ------------------------------------------------------------------ server

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    addr: SocketAddr,
    cfg: ServerConfig,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl Server {
    /// Compiles and prepares the plan (on the blocking pool), opens the key store and binds
    /// the listener. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// Plan compilation errors; [`Error::Io`] if the address cannot be bound or the key
    /// directory cannot be created; [`Error::InvalidParameters`] for a zero limit;
    /// [`Error::InvalidValue`] when the configured noise flooding would leave less than one
    /// bit of precision under these parameters.
    pub async fn bind(adapter: Adapter, params: CkksParams, cfg: ServerConfig) -> Result<Server> {
        if cfg.max_concurrent_evaluations == 0
            || cfg.max_body_bytes == 0
            || cfg.key_store_max_bytes == 0
        {
            return Err(Error::params(
                "server limits must be positive (max_concurrent_evaluations, max_body_bytes, key_store_max_bytes)",
            ));
        }
        let cfg2 = cfg.clone();
        let state = tokio::task::spawn_blocking(move || -> Result<AppState> {
            let cfg = cfg2;
            let plan = Plan::compile(&adapter, &params, cfg.mode)?;
            session::check_flooding(&plan, cfg.sanitize.flooding.as_ref())?;
            let public = public_structure(&adapter)?;
            let (card, zeros) = ModelCard::from_adapter(&public, cfg.model_name.as_deref())?;
            let weights = zeros.to_bytes()?;
            let description = ModelDescription::for_plan(
                &plan,
                cfg.model_name.clone(),
                card,
                &weights,
                cfg.max_body_bytes,
                &cfg.sanitize,
            )?;
            let description_json = description.to_bytes()?;
            let session = session::Server::new(plan, cfg.sanitize)?;
            let tune = match &cfg.tune {
                Some(t) => Some(super::tune::TuneRuns::new(
                    &adapter,
                    &params,
                    cfg.mode,
                    t.clone(),
                )?),
                None => None,
            };
            let keys = KeyStore::new(
                params.clone(),
                cfg.key_store_max_bytes,
                cfg.key_store_dir.clone(),
            )?
            .with_disk_budget(Some(
                cfg.key_store_max_disk_bytes
                    .unwrap_or(super::DEFAULT_KEY_STORE_DISK_BYTES),
            ));
            let admission = cfg
                .max_concurrent_evaluations
                .saturating_add(cfg.queue_depth)
                .min(Semaphore::MAX_PERMITS);
            Ok(AppState {
                params_envelope: Bytes::from(params_to_bytes(&params)?),
                params,
                session,
                description_json: Bytes::from(description_json),
                weights: Bytes::from(weights),
                keys,
                metrics: Metrics::default(),
                admission: Arc::new(Semaphore::new(admission)),
                slots: Arc::new(Semaphore::new(cfg.max_concurrent_evaluations)),
                limiter: cfg.rate_limit.map(RateLimiter::new),
                tune,
                cfg,
            })
        })
        .await
        .map_err(|e| Error::model(format!("preparing the plan failed: {e}")))??;
        let state = Arc::new(state);
        let refused = state.metrics.refused_connections.clone();
        let api = Router::new()
            .route("/v1/model", get(model))
            .route("/v1/model/weights", get(model_weights))
            .route("/v1/model/params", get(model_params))
            .route("/v1/keys", post(keys_upload))
            .route("/v1/keys/{id}", get(key_info).delete(key_delete))
            .route("/v1/evaluate/{id}", post(evaluate))
            .route(
                "/v1/tune/{id}",
                post(tune_start).get(tune_status).delete(tune_delete),
            )
            .route("/v1/tune/{id}/step", post(tune_step))
            .route("/v1/tune/{id}/reply", post(tune_reply))
            .route_layer(middleware::from_fn_with_state(state.clone(), access));
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .merge(api)
            .fallback(fallback)
            .layer(middleware::from_fn_with_state(state.clone(), track))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::Io {
                path: None,
                source: e,
            })?;
        let addr = listener.local_addr()?;
        Ok(Server {
            listener,
            router,
            addr,
            cfg,
            refused,
        })
    }

    /// The address actually bound (the port when `listen` named port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting connections and waits for the
    /// requests in flight to finish.
    ///
    /// # Errors
    /// [`Error::Io`] if the listener fails.
    ///
    /// Connections are bounded in number (`max_connections`) and time (header-read and
    /// idle timeouts); the wait for requests in flight is bounded by `shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        super::conn::serve(
            self.listener,
            self.router,
            &self.cfg,
            self.refused,
            shutdown,
        )
        .await
    }
}

/// Binds and serves `adapter` until `shutdown` completes (see [`Server`]).
///
/// # Errors
/// As [`Server::bind`] and [`Server::run`].
pub async fn run(
    adapter: Adapter,
    params: CkksParams,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Server::bind(adapter, params, cfg)
        .await?
        .run(shutdown)
        .await
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hepeft-serve")
        .build()
        .map_err(Error::from)
}

/// For a binary: builds a runtime, binds, calls `on_ready` with the bound address, and
/// serves until SIGINT or SIGTERM, finishing the requests in flight.
///
/// # Errors
/// As [`Server::bind`] and [`Server::run`].
pub fn run_until_signal(
    adapter: Adapter,
    params: CkksParams,
    cfg: ServerConfig,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let server = Server::bind(adapter, params, cfg).await?;
        on_ready(server.local_addr());
        server.run(shutdown_signal()).await
    })
}

/// A server running on its own runtime thread (tests, embedding in a synchronous program).
/// Dropping the handle shuts the server down gracefully and waits for it.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, and returns the server's result.
    ///
    /// # Errors
    /// What the server loop returned; [`Error::Model`] if its thread panicked.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::model("server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Starts a server on a new thread with its own runtime and returns once it is bound (use
/// port 0 in `cfg.listen` to let the system pick one; [`ServerHandle::addr`] tells).
///
/// # Errors
/// As [`Server::bind`].
pub fn spawn(adapter: Adapter, params: CkksParams, cfg: ServerConfig) -> Result<ServerHandle> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("hepeft-serve".into())
        .spawn(move || -> Result<()> {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::model(format!("tokio runtime: {e}"))));
                    return Err(e);
                }
            };
            rt.block_on(async move {
                let server = match Server::bind(adapter, params, cfg).await {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready_tx.send(Err(e));
                        return Err(Error::model(msg));
                    }
                };
                let _ = ready_tx.send(Ok(server.local_addr()));
                server
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        })
        .map_err(Error::from)?;
    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok(ServerHandle {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let r = thread.join();
            Err(match r {
                Ok(Err(e)) => e,
                _ => Error::model("server thread ended before binding"),
            })
        }
    }
}
