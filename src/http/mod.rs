//! The HTTP API on hyper 1: MoneyPrinter's endpoints and our extensions (see `routes`).
//!
//! `serve` is the accept loop: one task per connection, HTTP/1.1 keep-alive, and graceful shutdown
//! (stop accepting, let requests in flight finish; long polls are woken by the same signal). Each
//! connection lives under the limits of `limits`: a cap on open connections, a header read timeout,
//! an idle keep-alive timeout, and a lingering close after the answer. Handlers
//! reach the core only through `service::Core`; its reads go straight to redb read transactions
//! (MVCC: they never wait for the journal).

pub mod error;
mod guard;
mod idempotency;
mod limits;
mod media;
mod openapi;
mod page;
mod routes;
mod sse;
mod upload;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use self::error::ApiError;
use self::limits::{ConnTable, Limits, Slot, Tracked};
use self::routes::Body;
use crate::service::Core;

pub use routes::handle;

/// Connections refused at the cap that may wait for their 503 at once; beyond, they are closed.
const MAX_REFUSING: usize = 64;
/// Longest a refused connection is kept to send its 503.
const REFUSAL_TIME: Duration = Duration::from_secs(5);

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Accepts connections until the core starts stopping, then waits (at most `grace`) for requests in
/// flight; returns when every connection has ended or been closed. Connection limits
/// (`server.max_connections`, `header_read_timeout_secs`, `keep_alive_timeout_secs`) are read once,
/// here.
pub async fn serve(listener: TcpListener, core: Core, grace: Duration) {
    let config = core.config();
    let limits = Limits::from_config(&config.server);
    if let Ok(bound) = listener.local_addr() {
        if let Some(w) = guard::exposure_warning(&config, bound) {
            warn!(listen = %bound, "{w}");
        }
    }
    let table = ConnTable::new(limits.max_connections);
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    let mut stopping = core.stopping();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                let _ = stream.set_nodelay(true);
                match table.admit() {
                    Some(slot) => {
                        connections.spawn(connection(stream, peer, core.clone(), slot, limits.clone()));
                    }
                    None if refusing.load(Ordering::Acquire) < MAX_REFUSING => {
                        refusing.fetch_add(1, Ordering::AcqRel);
                        let refusing = refusing.clone();
                        let max = limits.max_connections;
                        connections.spawn(async move {
                            refuse(stream, max).await;
                            refusing.fetch_sub(1, Ordering::AcqRel);
                        });
                    }
                    None => debug!(peer = %peer, "connection closed at once: too many open"),
                }
            }
            _ = crate::wait_true(&mut stopping) => break,
        }
    }
    drop(listener);
    info!("HTTP listener closed");
    // Every connection watches `stopping` itself: idle ones close, requests in flight finish.
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("HTTP connections still open after the grace period; closing them");
        connections.shutdown().await;
    }
}

/// How a connection's HTTP part ended.
enum End {
    Done(hyper::Result<()>),
    /// The table needed its slot for a newcomer.
    Evicted,
    /// Idle for `keep_alive_timeout`.
    Idle,
}

/// Serves one connection: HTTP/1.1 keep-alive under the limits, then a lingering close.
async fn connection(stream: TcpStream, peer: SocketAddr, core: Core, slot: Slot, limits: Limits) {
    let state = slot.state.clone();
    let svc = {
        let (core, state) = (core.clone(), state.clone());
        service_fn(move |req: Request<Incoming>| -> ResponseFuture {
            let busy = state.begin();
            let core = core.clone();
            Box::pin(async move {
                let answer = handle(core, req, peer).await;
                drop(busy);
                Ok(answer)
            })
        })
    };
    let mut conn = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(Tracked::new(stream, state.clone())), svc);
    let mut stopping = core.stopping();
    let end = {
        let mut stop = Box::pin(crate::wait_true(&mut stopping));
        let evicted = state.evict.notified();
        tokio::pin!(evicted);
        let idle = tokio::time::sleep(limits.keep_alive_timeout);
        tokio::pin!(idle);
        let mut shutting = false;
        std::future::poll_fn(|cx| {
            if !shutting && stop.as_mut().poll(cx).is_ready() {
                // Finish the request in flight, if any, then end: idle connections end at once.
                Pin::new(&mut conn).graceful_shutdown();
                shutting = true;
            }
            if evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Evicted);
            }
            if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(End::Done(r));
            }
            // Every change of the connection's state happens inside the poll above.
            if let Some(at) = state.idle_deadline(limits.keep_alive_timeout) {
                if idle.deadline() != at {
                    idle.as_mut().reset(at);
                }
                if idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(End::Idle);
                }
            }
            Poll::Pending
        })
        .await
    };
    match end {
        End::Done(result) => {
            if let Err(e) = &result {
                if e.is_timeout() {
                    debug!(peer = %peer, "request head not received in time; connection closed");
                    return;
                }
                debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            let parts = conn.into_parts();
            let io = parts.io.into_inner().into_inner();
            let discarded = limits::linger(
                io,
                parts.read_buf.len(),
                limits.linger,
                &state.evict,
                &mut stopping,
            )
            .await;
            if discarded > 0 {
                debug!(peer = %peer, bytes = discarded, "unread request bytes discarded before closing");
            }
        }
        End::Evicted => {
            debug!(peer = %peer, "connection closed for a newcomer (server.max_connections)")
        }
        End::Idle => {
            debug!(peer = %peer, "idle connection closed (server.keep_alive_timeout_secs)")
        }
    }
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse(stream: TcpStream, max: usize) {
    let svc = service_fn(move |_req: Request<Incoming>| async move {
        let e = ApiError::Unavailable(format!(
            "Too many open connections (server.max_connections = {max}), all serving requests; try again shortly."
        ));
        Ok::<_, Infallible>(routes::error_response(&e))
    });
    let conn = http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2))
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(REFUSAL_TIME, conn).await;
}

/// Binds the listen address, with a message that names it on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (server.listen): {e}"),
        )
    })
}
