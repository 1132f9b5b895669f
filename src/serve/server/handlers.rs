//! The route handlers and middleware (access control, tracking).

use super::state::*;
use crate::io::FileKind;
use crate::serve::metrics::StoreGauges;
use crate::serve::{sha256_hex, wire, KeyInfo, QUERIES_HEADER};
use crate::session;
use crate::Error;
use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

// ------------------------------------------------------------------ handlers

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn model(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.description_json.clone(),
    )
        .into_response()
}

pub(super) async fn model_weights(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        st.weights.clone(),
    )
        .into_response()
}

pub(super) async fn model_params(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        st.params_envelope.clone(),
    )
        .into_response()
}

pub(super) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
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

pub(super) async fn key_info(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
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

pub(super) async fn key_delete(
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

pub(super) async fn keys_upload(
    State(st): State<Arc<AppState>>,
    req: Request,
) -> ApiResult<Response> {
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
        let resident = crate::serve::keystore::resident_bytes(&keys);
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

pub(super) async fn evaluate(
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
            let key_set = session::eval_keys_id(&st.params, &keys)?;
            let query = wire::read_queries(&st.params, &body, plan, key_set)?;
            let (result, _) = st.session.evaluate_queries(
                keys,
                &query,
                &mut session::os_rng()?,
                &|_, _, _| {},
            )?;
            Ok((result.to_bytes(&st.params)?, result.binding.queries.len()))
        })
        .await?;
    let m = &st.metrics;
    m.evaluations.fetch_add(1, Ordering::Relaxed);
    m.queries.fetch_add(queries as u64, Ordering::Relaxed);
    m.eval_seconds_micros
        .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(octets(out, QUERIES_HEADER, queries))
}

pub(super) fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

/// `POST /v1/tune/{id}`: starts or resumes the tuning run of key id `id` on the batch query
/// in the body.
pub(super) async fn tune_start(
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
pub(super) async fn tune_status(
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
pub(super) async fn tune_delete(
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
pub(super) async fn tune_step(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
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
    Ok(octets(body, crate::serve::tune::TUNE_STEP_HEADER, step))
}

/// `POST /v1/tune/{id}/reply`: applies the client's `k` scalars.
pub(super) async fn tune_reply(
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
pub(super) async fn access(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
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
pub(super) async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
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

pub(super) async fn fallback() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint (see /v1/model, /v1/keys, /v1/evaluate/{key_id}, /v1/tune/{key_id}, /healthz, /metrics)",
    )
}

/// A binary answer (`application/octet-stream`) with one count header.
fn octets<B: axum::response::IntoResponse, V: Into<HeaderValue>>(
    body: B,
    name: &'static str,
    value: V,
) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::HeaderName::from_static(name), value.into()),
        ],
        body,
    )
        .into_response()
}
