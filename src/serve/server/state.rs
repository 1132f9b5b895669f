//! Shared state of the service: errors as HTTP answers, admission and execution slots,
//! body reading with early refusal.

use crate::ckks::{CkksParams, Evaluator, PublicKey};
use crate::io::binding::KeySetId;
use crate::io::format::digest_hex;
use crate::io::FileKind;
use crate::serve::access::RateLimiter;
use crate::serve::keystore::KeyStore;
use crate::serve::metrics::Metrics;
use crate::serve::{is_key_id, ServerConfig};
use crate::session;
use crate::{Error, Result};
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

// ------------------------------------------------------------------ errors

/// An HTTP error answer: status and a message for the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) retry_after: Option<u64>,
    /// Answer with `Connection: close` (the request body was not read to its end).
    pub(super) close: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
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

pub(super) type ApiResult<T> = std::result::Result<T, ApiError>;

// ------------------------------------------------------------------ state

pub(super) struct AppState {
    pub(super) cfg: ServerConfig,
    pub(super) params: CkksParams,
    /// The prepared plan and its sanitization: the evaluate-then-sanitize loop.
    pub(super) session: session::Server,
    pub(super) description_json: Bytes,
    pub(super) weights: Bytes,
    pub(super) params_envelope: Bytes,
    pub(super) keys: KeyStore,
    pub(super) metrics: Metrics,
    /// Admission: slots plus queue places; a request that cannot take one gets 503.
    pub(super) admission: Arc<Semaphore>,
    /// Execution slots.
    pub(super) slots: Arc<Semaphore>,
    /// Per-client buckets when a rate limit is configured.
    pub(super) limiter: Option<RateLimiter>,
    /// Private tuning runs, when the owner serves tuning.
    pub(super) tune: Option<crate::serve::tune::TuneRuns>,
}

/// Both permits of an admitted request; the queue gauge is kept by the holder.
pub(super) struct Admitted {
    _admission: OwnedSemaphorePermit,
}

impl AppState {
    /// The evaluator, key set and public key of the evaluation keys registered as `id`.
    /// Cost: an evaluator over keys already in memory (or one read from the key directory).
    pub(super) fn client_context(&self, id: &str) -> Result<(Evaluator, KeySetId, PublicKey)> {
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
    pub(super) fn tune_runs(&self) -> ApiResult<&crate::serve::tune::TuneRuns> {
        self.tune.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this server does not serve private tuning (its owner starts it with `hepeft serve --tune`)",
            )
        })
    }

    pub(super) fn admit(&self) -> ApiResult<Admitted> {
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
    pub(super) async fn slot(&self) -> ApiResult<OwnedSemaphorePermit> {
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
    pub(super) async fn compute<T: Send + 'static>(
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
    pub(super) async fn read_body(&self, req: Request, expect: FileKind) -> ApiResult<Bytes> {
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
    pub(super) fn check_head(&self, head: &[u8], expect: FileKind) -> ApiResult<()> {
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
    pub(super) async fn reject(&self, req: Request, err: ApiError) -> ApiError {
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
pub(super) fn close(mut e: ApiError) -> ApiError {
    e.close = true;
    e
}

pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than the server's limit of {limit} bytes"),
    )
}

pub(super) fn check_id(id: &str) -> ApiResult<()> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed key id: expected 64 lower-case hex digits (the SHA-256 of the key envelope)",
        ))
    }
}

pub(super) fn unknown_key(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("unknown key id {id}: upload the evaluation keys with POST /v1/keys first"),
    )
}

pub(super) fn no_run(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no tuning run for key id {id}: start one with POST /v1/tune/{id}"),
    )
}

pub(super) fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
