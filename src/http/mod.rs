//! The HTTP API on hyper 1: MoneyPrinter's endpoints and our extensions (see `routes`).
//!
//! `serve` is the accept loop: one task per connection, HTTP/1.1 keep-alive, and graceful shutdown
//! (stop accepting, let requests in flight finish; long polls are woken by the same signal). Handlers
//! reach the core only through `service::Core`; its reads go straight to redb read transactions
//! (MVCC: they never wait for the journal).

pub mod error;
mod idempotency;
mod media;
mod routes;
mod upload;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::service::Core;

pub use routes::handle;

/// Accepts connections until the core starts stopping, then waits (at most `grace`) for requests in
/// flight; returns when every connection has ended or been closed.
pub async fn serve(listener: TcpListener, core: Core, grace: Duration) {
    let graceful = GracefulShutdown::new();
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
                let _ = stream.set_nodelay(true);
                let st = core.clone();
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(st, req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = crate::wait_true(&mut stopping) => break,
        }
    }
    drop(listener);
    info!("HTTP listener closed");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP connections still open after the grace period; closing them");
    }
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
