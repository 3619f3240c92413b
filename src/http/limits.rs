//! Connection limits of the HTTP server: the connection table (a cap, and who makes room for a
//! newcomer), the I/O wrapper that tells an idle connection from one still sending its head, and the
//! lingering close.
//!
//! Invariants: at most `max_connections` connections hold a [`Slot`]; a connection serving a request
//! is never evicted; at the cap the connection that has gone longest without serving a request
//! (idle keep-alive, or trickling its head: a slowloris) is closed for the newcomer, so a slow client
//! holds a slot only while nobody else needs it, and at most `header_read_timeout` anyway. After an
//! answer the server closes its side and keeps reading and discarding what the client still sends
//! (at most [`LingerLimits`]), so that a client that writes a whole refused body before reading (as
//! Python's `urllib` and `requests` do) reads the `413` instead of a reset.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use crate::config::ServerConfig;

/// Longest a lingering close waits in all, and for the next bytes (nginx's `lingering_time` and
/// `lingering_timeout`).
const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// The limits, read from the config when the server starts.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub linger: LingerLimits,
}

/// How much a lingering close reads and discards before it gives up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LingerLimits {
    pub max_bytes: u64,
    pub max_time: Duration,
    pub idle: Duration,
}

impl Limits {
    pub fn from_config(s: &ServerConfig) -> Limits {
        Limits {
            max_connections: s.max_connections as usize,
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(s.keep_alive_timeout_secs),
            linger: LingerLimits {
                // Enough for any refused body a client of ours is likely to send whole.
                max_bytes: s.max_upload_bytes.max(s.max_body_bytes.saturating_mul(16)),
                max_time: LINGER_TIME,
                idle: LINGER_IDLE,
            },
        }
    }
}

/// What the table knows of one connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// A request is being served (from its head to the end of its handler).
    busy: AtomicBool,
    /// Bytes arrived since the connection last finished serving a request (or was accepted).
    received: AtomicBool,
    /// When the connection last stopped serving a request (or was accepted), ms after `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
    /// Told when the table closes this connection for a newcomer.
    pub evict: Notify,
}

impl ConnState {
    fn new(epoch: Instant) -> ConnState {
        ConnState {
            busy: AtomicBool::new(false),
            received: AtomicBool::new(false),
            since_ms: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            epoch,
            evict: Notify::new(),
        }
    }

    /// Marks the start of serving a request; the guard marks its end when dropped.
    pub fn begin(self: &Arc<Self>) -> BusyGuard {
        self.busy.store(true, Ordering::Release);
        BusyGuard(self.clone())
    }

    /// When this connection, idle since its last request, is to be closed; `None` while it serves
    /// a request or a new one is arriving.
    pub fn idle_deadline(&self, keep_alive: Duration) -> Option<tokio::time::Instant> {
        if self.busy.load(Ordering::Acquire) || self.received.load(Ordering::Acquire) {
            return None;
        }
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        Some(tokio::time::Instant::from_std(since + keep_alive))
    }
}

/// Ends the busy period of a connection when dropped (the handler finished or was dropped).
pub(crate) struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.since_ms
            .store(s.epoch.elapsed().as_millis() as u64, Ordering::Release);
        s.received.store(false, Ordering::Release);
        s.busy.store(false, Ordering::Release);
    }
}

/// The open connections.
#[derive(Debug)]
pub(crate) struct ConnTable {
    max: usize,
    epoch: Instant,
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    next: u64,
    conns: HashMap<u64, Arc<ConnState>>,
}

/// A connection's place in the table; dropping it frees the place.
pub(crate) struct Slot {
    id: u64,
    pub state: Arc<ConnState>,
    table: Arc<ConnTable>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().conns.remove(&self.id);
    }
}

impl ConnTable {
    pub fn new(max: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            max: max.max(1),
            epoch: Instant::now(),
            inner: Mutex::new(TableInner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        // The table holds no invariant a panicking holder could break half-way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection. At the cap, the connection that has gone longest without
    /// serving a request is told to close and its slot is reused; `None` when every connection is
    /// serving one.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut t = self.lock();
        if t.conns.len() >= self.max {
            let victim = t
                .conns
                .iter()
                .filter(|(_, c)| !c.busy.load(Ordering::Acquire))
                .min_by_key(|(id, c)| (c.since_ms.load(Ordering::Acquire), **id))
                .map(|(id, _)| *id)?;
            if let Some(c) = t.conns.remove(&victim) {
                c.evict.notify_one();
            }
        }
        let id = t.next;
        t.next += 1;
        let state = Arc::new(ConnState::new(self.epoch));
        t.conns.insert(id, state.clone());
        Some(Slot {
            id,
            state,
            table: self.clone(),
        })
    }

    /// Connections holding a slot.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

/// The socket, noting in its connection's state when bytes arrive.
pub(crate) struct Tracked {
    io: TcpStream,
    state: Arc<ConnState>,
}

impl Tracked {
    pub fn new(io: TcpStream, state: Arc<ConnState>) -> Tracked {
        Tracked { io, state }
    }

    pub fn into_inner(self) -> TcpStream {
        self.io
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.received.store(true, Ordering::Release);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Closes our side (the answer is complete), then reads and discards what the client still sends
/// until it closes too, it pauses for `idle`, or `max_bytes` / `max_time` run out. Returns the bytes
/// discarded.
pub(crate) async fn linger(
    mut io: TcpStream,
    already: usize,
    limits: LingerLimits,
    evict: &Notify,
    stopping: &mut watch::Receiver<bool>,
) -> u64 {
    let mut discarded = already as u64;
    if io.shutdown().await.is_err() {
        return discarded;
    }
    let deadline = tokio::time::Instant::now() + limits.max_time;
    let mut buf = vec![0u8; 64 << 10];
    while discarded <= limits.max_bytes {
        let wait = tokio::time::Instant::now() + limits.idle;
        tokio::select! {
            read = tokio::time::timeout_at(wait.min(deadline), io.read(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => discarded += n as u64,
                _ => break,
            },
            _ = evict.notified() => break,
            _ = crate::wait_true(stopping) => break,
        }
    }
    discarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_waiting_idle_connection_makes_room() {
        let table = ConnTable::new(2);
        let a = table.admit().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let b = table.admit().unwrap();
        // `a` is the oldest without a request: it is told to close and `c` takes its place.
        let c = table.admit().unwrap();
        assert_eq!(table.len(), 2);
        assert!(
            futures_util::FutureExt::now_or_never(a.state.evict.notified()).is_some(),
            "the oldest idle connection was not evicted"
        );
        // A connection serving a request is never evicted: with both busy, a newcomer is refused.
        let _busy_b = b.state.begin();
        let _busy_c = c.state.begin();
        assert!(table.admit().is_none());
        drop(_busy_c);
        let d = table.admit();
        assert!(d.is_some(), "c is idle again and makes room");
        drop(a);
        assert_eq!(table.len(), 2, "a's slot was already reused");
    }

    #[test]
    fn an_idle_deadline_only_while_nothing_is_served_or_arriving() {
        let state = Arc::new(ConnState::new(Instant::now()));
        let ka = Duration::from_secs(5);
        assert!(state.idle_deadline(ka).is_some());
        state.received.store(true, Ordering::Release);
        assert!(state.idle_deadline(ka).is_none(), "a head is arriving");
        let guard = state.begin();
        assert!(state.idle_deadline(ka).is_none(), "a request is served");
        drop(guard);
        assert!(
            state.idle_deadline(ka).is_some(),
            "idle again after the answer"
        );
    }
}
