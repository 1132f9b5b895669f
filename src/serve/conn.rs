//! The accept loop: a connection limit, a header-read timeout (hyper), an idle timeout on
//! the socket, a bounded lingering close, and a shutdown bounded by a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::ServerConfig;
use crate::{Error, Result};

/// A socket that fails with `TimedOut` once no byte has moved for `idle` while no request
/// is in flight on it (`busy == 0`): an evaluation that takes longer than `idle` is not
/// cut off, an idle keep-alive or a stalled client is.
///
/// Closing is a *lingering close*: the write half is shut first, then whatever the peer
/// still sends is read and discarded until it closes, for at most [`LINGER_TIME`] and
/// `linger_bytes` bytes. A request refused before its body was read (401, 413, a malformed
/// envelope) would otherwise be closed with unread bytes in the kernel buffer, which makes
/// the kernel answer with a reset: a client still writing its body then sees "broken pipe"
/// or "connection reset" instead of the error the server sent.
struct IdleStream<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    busy: Arc<AtomicUsize>,
    linger: Linger,
}

/// How long a closing connection keeps draining what its peer still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The state of a lingering close.
enum Linger {
    /// Not closing yet; the byte budget for draining.
    Open {
        budget: u64,
    },
    /// Write half shut; draining until EOF, the deadline or the budget.
    Draining {
        until: Pin<Box<Sleep>>,
        left: u64,
    },
    Done,
}

impl<S> IdleStream<S> {
    fn new(inner: S, idle: Duration, busy: Arc<AtomicUsize>, linger_bytes: u64) -> Self {
        IdleStream {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            busy,
            linger: Linger::Open {
                budget: linger_bytes,
            },
        }
    }

    fn touch(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    /// `Ready(Err)` when the idle deadline passed with no request in flight.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match self.deadline.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.busy.load(Ordering::Acquire) > 0 => {
                    // A request is being evaluated: not idle; look again later.
                    self.touch();
                }
                Poll::Ready(()) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle past the server's idle timeout",
                    )))
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.expired(cx),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.expired(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shuts the write half, then drains the peer (see [`IdleStream`]); never fails once
    /// the write half is shut, since the response has been sent by then.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.linger {
                Linger::Open { budget } => {
                    let left = *budget;
                    std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    let until = Box::pin(tokio::time::sleep(LINGER_TIME.min(this.idle)));
                    this.linger = Linger::Draining { until, left };
                }
                Linger::Draining { until, left } => {
                    if until.as_mut().poll(cx).is_ready() || *left == 0 {
                        this.linger = Linger::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 16 << 10];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            *left = left.saturating_sub(buf.filled().len() as u64);
                        }
                        // EOF or an error: the peer is gone.
                        Poll::Ready(_) => this.linger = Linger::Done,
                    }
                }
                Linger::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Counts a request in flight on its connection until dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, asks
/// every connection to finish its request in flight, and waits at most
/// `cfg.shutdown_grace` before dropping what remains. Connections beyond
/// `cfg.max_connections` are closed at once (counted in `refused`).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cfg: &ServerConfig,
    refused: Arc<std::sync::atomic::AtomicU64>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Per-connection failures (a reset before accept, too many open files)
                // must not end the server: pause briefly and go on.
                Err(e) => {
                    eprintln!("hepeft serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let linger_bytes = cfg.max_body_bytes as u64 + (64 << 10);
        let io = TokioIo::new(IdleStream::new(
            stream,
            cfg.idle_timeout,
            busy.clone(),
            linger_bytes,
        ));
        let app = router.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                busy.fetch_add(1, Ordering::AcqRel);
                let guard = Busy(busy.clone());
                let mut app = app.clone();
                async move {
                    let r = tower_service::Service::call(&mut app, req).await;
                    drop(guard);
                    r
                }
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(io, svc);
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await.map(|_| ());
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "hepeft serve: {} connection(s) still open after the {:?} grace period: dropped",
            conns.len(),
            cfg.shutdown_grace
        );
        conns.abort_all();
    }
    Ok::<(), Error>(())
}
