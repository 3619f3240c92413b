//! `reelsmith ctl`: sends one [`Request`] (built by the clap subcommands of `control::cli`) as a JSON
//! line over the control socket and prints the reply as a readable table (`control::table`) or as
//! the raw JSON lines with `--json`.
//!
//! Exit codes: 0 when the daemon answered `ok`, 1 when it refused (its message on stderr) or cannot be
//! reached, 2 for a command line that is not a command (clap's errors, and [`CtlUsageError`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::cli::{CtlArgs, CtlUsageError};
use super::protocol::{self, Request};
use super::table::{event_line, render};
use crate::config::Config;

/// How long a quick command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no reelsmith daemon is listening on {path} (is `reelsmith serve` running?)")]
    NotListening { path: PathBuf },
    #[error("permission denied on {path}: run as root or as the daemon's user")]
    Denied { path: PathBuf },
    #[error("cannot talk to the daemon on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon closed the connection without a complete reply")]
    Closed,
    #[error("the daemon sent a reply that is not JSON: {0}")]
    BadReply(String),
    #[error("{0}")]
    Daemon(String),
}

/// Runs one `ctl` command. `cfg` is only needed to find the socket when no `--socket` is given.
pub fn run(cfg: anyhow::Result<Config>, args: CtlArgs) -> anyhow::Result<ExitCode> {
    let request = match args.command.request() {
        Ok(r) => r,
        Err(e @ CtlUsageError::FollowDaemon) => {
            eprintln!("reelsmith ctl: {e}\n\nusage: see `reelsmith ctl --help`");
            return Ok(ExitCode::from(2));
        }
    };
    let path = match args.socket {
        Some(p) => p,
        None => default_socket(&cfg?),
    };
    match execute(&path, &request, args.json) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("reelsmith: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Where the systemd unit's daemon listens (`RuntimeDirectory=reelsmith`).
const SYSTEMD_SOCKET: &str = "/run/reelsmith/reelsmith.sock";

/// The socket the daemon would use with this config. An admin's shell has no `$RUNTIME_DIRECTORY`,
/// so when the config names no socket and the systemd unit's socket exists, that one is meant.
fn default_socket(cfg: &Config) -> PathBuf {
    let runtime = std::env::var_os("RUNTIME_DIRECTORY").is_some_and(|d| !d.is_empty());
    if cfg.daemon.socket.is_empty() && !runtime && Path::new(SYSTEMD_SOCKET).exists() {
        return PathBuf::from(SYSTEMD_SOCKET);
    }
    cfg.socket_path()
}

/// A connection to the daemon, one request at a time.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotListening {
                    path: path.to_owned(),
                }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Denied {
                path: path.to_owned(),
            },
            _ => ClientError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
        let writer = stream.try_clone().map_err(|e| io(path, e))?;
        Ok(Client {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request line. `timeout: None` waits as long as the daemon needs (drain, follow).
    pub fn send(&mut self, req: &Request, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|e| io(&self.path, e))?;
        let mut line = protocol::encode(req).to_string();
        line.push('\n');
        match self.writer.write_all(line.as_bytes()) {
            // The daemon may have refused us (and closed) before reading: its reply is still
            // there to read, and `recv` reports a close without one.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(|e| io(&self.path, e)),
        }
    }

    /// Reads one reply line: `(raw line, parsed)`.
    pub fn recv(&mut self) -> Result<(String, Value), ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| io(&self.path, e))?;
        if n == 0 || !line.ends_with('\n') {
            return Err(ClientError::Closed);
        }
        let raw = line.trim_end().to_string();
        let v: Value =
            serde_json::from_str(&raw).map_err(|_| ClientError::BadReply(raw.clone()))?;
        Ok((raw, v))
    }
}

fn io(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check(v: &Value) -> Result<(), ClientError> {
    if v["ok"] == Value::Bool(true) {
        Ok(())
    } else {
        let msg = v["error"]
            .as_str()
            .unwrap_or("the daemon refused the request");
        Err(ClientError::Daemon(msg.to_string()))
    }
}

fn execute(path: &Path, req: &Request, json: bool) -> Result<(), ClientError> {
    let mut client = Client::connect(path)?;
    let long = matches!(
        req,
        Request::Drain | Request::Backup { .. } | Request::Events { follow: true, .. }
    );
    let timeout = (!long).then_some(REPLY_TIMEOUT);
    let out = &mut std::io::stdout().lock();
    match req {
        Request::Events {
            job,
            after,
            limit,
            follow: false,
        } => {
            // Pages until the end, so that `events ID` shows the whole history.
            let mut after = *after;
            loop {
                let page = Request::Events {
                    job: *job,
                    after,
                    limit: *limit,
                    follow: false,
                };
                client.send(&page, timeout)?;
                let (raw, v) = client.recv()?;
                if json {
                    let _ = writeln!(out, "{raw}");
                }
                check(&v)?;
                let events = v["events"].as_array().cloned().unwrap_or_default();
                if !json {
                    for ev in &events {
                        let _ = writeln!(out, "{}", event_line(ev));
                    }
                }
                let last = v["lastEventId"].as_u64().unwrap_or(after);
                if v["more"] != Value::Bool(true) || last <= after {
                    return Ok(());
                }
                after = last;
            }
        }
        Request::Events { follow: true, .. } => {
            client.send(req, timeout)?;
            loop {
                let (raw, v) = client.recv()?;
                if json {
                    let _ = writeln!(out, "{raw}");
                    let _ = out.flush();
                }
                check(&v)?;
                if v["end"] == Value::Bool(true) {
                    if !json {
                        let state = v["state"].as_str().unwrap_or("?");
                        let _ = writeln!(out, "-- job {state}");
                    }
                    return Ok(());
                }
                if !json {
                    let _ = writeln!(out, "{}", event_line(&v["event"]));
                    let _ = out.flush();
                }
            }
        }
        _ => {
            client.send(req, timeout)?;
            let (raw, v) = client.recv()?;
            if json {
                let _ = writeln!(out, "{raw}");
            }
            check(&v)?;
            if !json {
                let _ = write!(out, "{}", render(req, &v));
            }
            Ok(())
        }
    }
}
