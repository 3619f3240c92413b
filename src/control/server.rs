//! The control socket server: binding, access control and line framing.
//!
//! Invariants: at most one daemon listens on a path (a live socket is detected by connecting to it;
//! only a stale one is replaced); the socket is mode 0600, or 0660 with the configured group; every
//! peer's credentials (`SO_PEERCRED`) are checked before its first line is read, and a refused peer
//! gets one error line and is closed. Each connection is its own task with bounded reads (64 KiB a
//! line, 10 s to finish a started line, an idle limit) and bounded writes (a timeout), so a slow or
//! silent client holds up nobody. The accept loop ends when the daemon starts stopping.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::commands::Commands;
use super::protocol::{self, ProtocolError, MAX_LINE};
use super::unix_users::{lookup_group, lookup_user};
use crate::config::{Config, ConfigSource};
use crate::service::Core;

/// Time allowed to finish a line once its first byte arrived.
const PARTIAL_LINE: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(600);
/// Time allowed for one reply line to be taken by the client.
const WRITE: Duration = Duration::from_secs(10);
/// Connections served at once; more are told so and closed.
const MAX_CONNECTIONS: usize = 64;
/// Time connections get to end once the daemon stops (they see `stopping` and say so).
const CLOSE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another reelsmith daemon is already listening on {path}; stop it first (`reelsmith ctl --socket {path} drain`) or choose another socket (--socket / daemon.socket)")]
    AlreadyRunning { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it (daemon.socket)")]
    NotASocket { path: PathBuf },
    #[error("cannot check the existing socket {path}: {source}")]
    Probe { path: PathBuf, source: io::Error },
    #[error("cannot remove the stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot create the socket directory {path}: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("cannot bind the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set the permissions of the control socket {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
    #[error("daemon.socket_group: no group named `{group}`")]
    UnknownGroup { group: String },
    #[error("daemon.socket_group: cannot look up `{group}`: {source}")]
    GroupLookup { group: String, source: io::Error },
}

/// Who may talk to the daemon: root, the daemon's own user, and the configured group's members.
#[derive(Clone, Debug)]
pub struct Access {
    own_uid: u32,
    group: Option<GroupAccess>,
}

#[derive(Clone, Debug)]
struct GroupAccess {
    gid: u32,
    /// Users listed as members in the group database (their primary group may differ).
    members: Vec<u32>,
}

impl Access {
    fn new(group: &str) -> Result<Access, ControlError> {
        // SAFETY: geteuid cannot fail and has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        let group = if group.is_empty() {
            None
        } else {
            let lookup = |source| ControlError::GroupLookup {
                group: group.to_string(),
                source,
            };
            let (gid, names) = match group.parse::<u32>() {
                Ok(gid) => (gid, Vec::new()),
                Err(_) => lookup_group(group).map_err(lookup)?.ok_or_else(|| {
                    ControlError::UnknownGroup {
                        group: group.to_string(),
                    }
                })?,
            };
            let mut members = Vec::new();
            for name in names {
                if let Ok(Some(uid)) = lookup_user(&name) {
                    members.push(uid);
                }
            }
            Some(GroupAccess { gid, members })
        };
        Ok(Access { own_uid, group })
    }

    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0
            || uid == self.own_uid
            || self
                .group
                .as_ref()
                .is_some_and(|g| gid == g.gid || g.members.contains(&uid))
    }
}

/// A bound control socket, not yet serving.
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
    access: Access,
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the socket at `config.socket_path()`: replaces a stale socket file, refuses when a daemon
/// answers there, and sets mode 0600 (0660 and the group when `daemon.socket_group` is set).
pub fn bind(config: &Config) -> Result<Listener, ControlError> {
    let path = config.socket_path();
    let access = Access::new(&config.daemon.socket_group)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| ControlError::Directory {
            path: parent.to_owned(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ControlError::NotASocket { path });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Err(ControlError::AlreadyRunning { path }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                info!(socket = %path.display(), "replacing a stale control socket");
                std::fs::remove_file(&path).map_err(|source| ControlError::RemoveStale {
                    path: path.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(ControlError::Probe { path, source }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ControlError::Probe { path, source }),
    }
    let inner = UnixListener::bind(&path).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ControlError::AlreadyRunning { path: path.clone() },
        _ => ControlError::Bind {
            path: path.clone(),
            source,
        },
    })?;
    let perm_err = |source| ControlError::Permissions {
        path: path.clone(),
        source,
    };
    let mode = if access.group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(perm_err)?;
    if let Some(g) = &access.group {
        std::os::unix::fs::chown(&path, None, Some(g.gid)).map_err(perm_err)?;
    }
    info!(socket = %path.display(), mode = format!("{mode:o}"), "control socket bound");
    Ok(Listener {
        inner,
        path,
        access,
    })
}

/// The serving control socket: its path and the task to join at shutdown.
pub struct Serving {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the accept loop and its connections to end (they end once the daemon stops),
    /// then removes the socket file.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            warn!(error = %e, "the control socket task failed");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `listener` until the daemon stops; `source` is what `reload` reads again.
pub fn start(listener: Listener, core: Core, source: ConfigSource) -> Serving {
    let path = listener.path.clone();
    let commands = Arc::new(Commands::new(core.clone(), path.clone(), source));
    let task = tokio::spawn(accept_loop(listener, core, commands));
    Serving { path, task }
}

async fn accept_loop(listener: Listener, core: Core, commands: Arc<Commands>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let access = Arc::new(listener.access);
    let mut stopping = core.stopping();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.inner.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next() => continue,
            _ = crate::wait_true(&mut stopping) => break,
        };
        let permit = slots.clone().try_acquire_owned().ok();
        let (access, commands, core) = (access.clone(), commands.clone(), core.clone());
        conns.spawn(async move {
            let admitted = permit.is_some();
            serve_connection(stream, &access, &commands, &core, admitted).await;
            drop(permit);
        });
    }
    drop(listener.inner);
    info!("control socket no longer accepting");
    let closing = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
        warn!("control connections still open after the grace period; closing them");
        conns.shutdown().await;
    }
}

async fn serve_connection(
    stream: UnixStream,
    access: &Access,
    commands: &Commands,
    core: &Core,
    admitted: bool,
) {
    let cred = stream.peer_cred();
    let (rd, wr) = stream.into_split();
    let mut conn = Conn {
        reader: BufReader::new(rd),
        writer: wr,
    };
    if !admitted {
        let msg = format!("too many control connections (limit {MAX_CONNECTIONS}); try again");
        let _ = conn.send(&protocol::error(msg)).await;
        return;
    }
    let uid = match cred {
        Ok(c) if access.allows(c.uid(), c.gid()) => c.uid(),
        Ok(c) => {
            warn!(uid = c.uid(), gid = c.gid(), "control connection refused");
            let msg = format!(
                "permission denied: uid {} may not use this socket; run as root or as the daemon's user (uid {})",
                c.uid(),
                access.own_uid
            );
            let _ = conn.send(&protocol::error(msg)).await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot read the peer's credentials");
            let _ = conn
                .send(&protocol::error("cannot read your credentials; refused"))
                .await;
            return;
        }
    };
    debug!(uid, "control connection");
    let mut stopping = core.stopping();
    let mut line = Vec::new();
    loop {
        let read = tokio::select! {
            r = conn.read_line(&mut line) => r,
            _ = crate::wait_true(&mut stopping) => {
                let _ = conn.send(&protocol::error("the daemon is stopping")).await;
                return;
            }
        };
        let text = match read {
            Ok(false) => return,
            Ok(true) => match std::str::from_utf8(&line) {
                Ok(t) => t.trim(),
                Err(_) => {
                    if conn
                        .send(&protocol::error(ProtocolError::NotUtf8))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            },
            Err(ReadError::TooLong) => {
                warn!(uid, "control request line over the limit");
                let _ = conn.send(&protocol::error(ProtocolError::TooLong)).await;
                return;
            }
            Err(ReadError::Partial) => {
                let msg = format!(
                    "incomplete request line: no newline within {} s; closing",
                    PARTIAL_LINE.as_secs()
                );
                let _ = conn.send(&protocol::error(msg)).await;
                return;
            }
            Err(ReadError::Idle) => return,
            Err(ReadError::Io(e)) => {
                debug!(uid, error = %e, "control connection read failed");
                return;
            }
        };
        if text.is_empty() {
            continue;
        }
        let result = match protocol::parse(text) {
            Ok(req) => commands.run(req, uid, &mut conn).await,
            Err(e) => conn.send(&protocol::error(e)).await,
        };
        if let Err(e) = result {
            debug!(uid, error = %e, "control connection ended while replying");
            return;
        }
    }
}

enum ReadError {
    TooLong,
    Partial,
    Idle,
    Io(io::Error),
}

/// One client connection: a bounded line reader and a writer with a timeout.
pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    /// Reads one line (newline and a trailing `\r` removed) into `buf`. `Ok(false)` at a clean end of
    /// stream; a last line without a newline still counts.
    async fn read_line(&mut self, buf: &mut Vec<u8>) -> Result<bool, ReadError> {
        buf.clear();
        let mut deadline = None;
        loop {
            let fill = self.reader.fill_buf();
            let avail = match deadline {
                None => tokio::time::timeout(IDLE, fill)
                    .await
                    .map_err(|_| ReadError::Idle)?,
                Some(d) => tokio::time::timeout_at(d, fill)
                    .await
                    .map_err(|_| ReadError::Partial)?,
            }
            .map_err(ReadError::Io)?;
            if avail.is_empty() {
                return Ok(!buf.is_empty());
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + PARTIAL_LINE);
            let (take, done) = match avail.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            if buf.len() + take > MAX_LINE {
                return Err(ReadError::TooLong);
            }
            buf.extend_from_slice(&avail[..take]);
            self.reader.consume(take + usize::from(done));
            if done {
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(true);
            }
        }
    }

    /// Writes one reply line; fails when the client does not take it within the write timeout.
    pub async fn send(&mut self, reply: &Value) -> io::Result<()> {
        let mut bytes = reply.to_string().into_bytes();
        bytes.push(b'\n');
        match tokio::time::timeout(WRITE, self.writer.write_all(&bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read its reply",
            )),
        }
    }

    /// Resolves when the client hangs up (or sends something, which a streaming reply ignores:
    /// after that it never resolves).
    pub async fn closed(&mut self) {
        match self.reader.fill_buf().await {
            Ok([]) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemon_user_are_allowed_others_not() {
        let a = Access::new("").unwrap();
        assert!(a.allows(0, 0));
        assert!(a.allows(a.own_uid, 12345));
        let other = if a.own_uid == 4242 { 4343 } else { 4242 };
        assert!(!a.allows(other, other));
    }

    #[test]
    fn a_configured_group_admits_its_gid() {
        let a = Access::new("4711").unwrap();
        let other = if a.own_uid == 4242 { 4343 } else { 4242 };
        assert!(a.allows(other, 4711));
        assert!(!a.allows(other, 4712));
        assert!(matches!(
            Access::new("no-such-group-reelsmith"),
            Err(ControlError::UnknownGroup { .. })
        ));
    }
}
