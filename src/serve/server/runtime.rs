//! Binding, running and stopping the server (tokio runtime, graceful shutdown).

use super::handlers::*;
use super::state::*;
use crate::ckks::serialize::params_to_bytes;
use crate::ckks::CkksParams;
use crate::model::load::ModelCard;
use crate::model::Adapter;
use crate::plan::{public_structure, Plan};
use crate::serve::access::RateLimiter;
use crate::serve::keystore::KeyStore;
use crate::serve::metrics::Metrics;
use crate::serve::{ModelDescription, ServerConfig};
use crate::session;
use crate::{Error, Result};
use axum::body::Bytes;
use axum::middleware::{self};
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

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
                Some(t) => Some(crate::serve::tune::TuneRuns::new(
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
                    .unwrap_or(crate::serve::DEFAULT_KEY_STORE_DISK_BYTES),
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
        crate::serve::conn::serve(
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
