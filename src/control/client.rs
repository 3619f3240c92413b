//! `reelsmith ctl`: parses an admin command, sends it as one JSON line over the control socket and
//! prints the reply as a readable table (or the raw JSON lines with `--json`).
//!
//! Exit codes: 0 when the daemon answered `ok`, 1 when it refused (its message on stderr) or cannot be
//! reached, 2 for a command line that is not a command (usage on stderr).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::protocol::{self, Request, DAEMON_JOB, DEFAULT_LIMIT};
use crate::cli::CtlArgs;
use crate::config::Config;
use crate::event::{iso8601, JobState};

/// How long a quick command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

pub const USAGE: &str = "\
usage: reelsmith ctl [--socket PATH] [--json] <command>

commands:
  status                             daemon version, uptime, queue, counts, disk
  jobs [--state S] [--limit N]       newest jobs first (S: queued|running|completed|failed|cancelled)
  show ID                            one job
  events ID [--after N] [--follow]   a job's events; --follow streams until the job ends
  events daemon [--after N]          the daemon's admin events (who paused, drained, ...)
  cancel ID                          cancel a queued or running job
  retry ID                           put a failed or cancelled job back in the queue
  pause | resume                     stop / start taking jobs from the queue
  concurrency N                      jobs running at once (1..64), effective immediately
  drain                              finish running jobs, start no new ones, then exit 0
  backup PATH                        consistent copy of the event log to a new file
  reload                             re-read the config file; names keys that need a restart";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
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

/// A parsed `ctl` command line.
#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub request: Request,
    pub json: bool,
    pub socket: Option<PathBuf>,
}

/// Runs one `ctl` command. `cfg` is only needed to find the socket when no `--socket` is given.
pub fn run(cfg: anyhow::Result<Config>, args: CtlArgs) -> anyhow::Result<ExitCode> {
    let inv = match parse_args(&args.command) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("reelsmith ctl: {e}\n\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    if inv.request == Request::Help {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let json = args.json || inv.json;
    let path = match inv.socket.or(args.socket) {
        Some(p) => p,
        None => default_socket(&cfg?),
    };
    match execute(&path, &inv.request, json) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(ClientError::Usage(u)) => {
            eprintln!("reelsmith ctl: {u}\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
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

fn usage(msg: impl Into<String>) -> ClientError {
    ClientError::Usage(msg.into())
}

/// Parses the words after `ctl` (global `--json` / `--socket` may appear among them).
pub fn parse_args(words: &[String]) -> Result<Invocation, ClientError> {
    let mut json = false;
    let mut socket = None;
    let mut rest: Vec<&str> = Vec::new();
    let mut it = words.iter().map(String::as_str);
    while let Some(w) = it.next() {
        match w {
            "--json" => json = true,
            "--socket" => {
                let p = it.next().ok_or_else(|| usage("--socket needs a path"))?;
                socket = Some(PathBuf::from(p));
            }
            _ if w.starts_with("--socket=") => {
                socket = Some(PathBuf::from(&w["--socket=".len()..]));
            }
            _ => rest.push(w),
        }
    }
    let Some((&cmd, args)) = rest.split_first() else {
        return Err(usage("missing command"));
    };
    let mut flags = Flags::parse(cmd, args)?;
    let request = match cmd {
        "status" => Request::Status,
        "pause" => Request::Pause,
        "resume" => Request::Resume,
        "drain" => Request::Drain,
        "reload" => Request::Reload,
        "ping" => Request::Ping,
        "help" | "--help" | "-h" => Request::Help,
        "jobs" => {
            let state = match flags.value("--state")? {
                None => None,
                Some(s) => Some(JobState::parse(&s).ok_or_else(|| {
                    usage(format!(
                        "--state `{s}`: expected queued, running, completed, failed or cancelled"
                    ))
                })?),
            };
            let limit = flags.number("--limit")?.unwrap_or(DEFAULT_LIMIT as u64);
            if !(1..=protocol::MAX_LIMIT as u64).contains(&limit) {
                return Err(usage("--limit must be between 1 and 1000"));
            }
            Request::Jobs {
                state,
                limit: limit as usize,
            }
        }
        "show" => Request::Show {
            job: job_id(cmd, flags.positional("ID")?)?,
        },
        "cancel" => Request::Cancel {
            job: job_id(cmd, flags.positional("ID")?)?,
        },
        "retry" => Request::Retry {
            job: job_id(cmd, flags.positional("ID")?)?,
        },
        "events" => {
            let id = flags.positional("ID")?;
            let job = if id == DAEMON_JOB {
                None
            } else {
                Some(job_id(cmd, id)?)
            };
            let follow = flags.switch("--follow") | flags.switch("-f");
            if follow && job.is_none() {
                return Err(usage("--follow needs a job id"));
            }
            let limit = flags.number("--limit")?.unwrap_or(DEFAULT_LIMIT as u64);
            if !(1..=protocol::MAX_LIMIT as u64).contains(&limit) {
                return Err(usage("--limit must be between 1 and 1000"));
            }
            Request::Events {
                job,
                after: flags.number("--after")?.unwrap_or(0),
                limit: limit as usize,
                follow,
            }
        }
        "concurrency" => {
            let raw = flags.positional("N")?;
            let value: u32 = raw
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| usage(format!("concurrency `{raw}`: expected 1..64")))?;
            Request::Concurrency { value }
        }
        "backup" => {
            let raw = flags.positional("PATH")?;
            // The daemon does not share our working directory.
            let path = std::path::absolute(Path::new(&raw))
                .map_err(|e| usage(format!("backup path `{raw}`: {e}")))?;
            Request::Backup {
                path: path.display().to_string(),
            }
        }
        other => return Err(usage(format!("unknown command `{other}`"))),
    };
    flags.finish()?;
    Ok(Invocation {
        request,
        json,
        socket,
    })
}

fn job_id(cmd: &str, raw: String) -> Result<crate::event::JobId, ClientError> {
    raw.parse()
        .map_err(|_| usage(format!("{cmd}: `{raw}` is not a job id")))
}

/// The arguments of one command: flags taken by name, positionals in order, leftovers refused.
struct Flags {
    cmd: String,
    words: Vec<String>,
}

impl Flags {
    fn parse(cmd: &str, args: &[&str]) -> Result<Flags, ClientError> {
        let mut words = Vec::new();
        for a in args {
            // `--after=5` is `--after 5`.
            match a.split_once('=') {
                Some((k, v)) if k.starts_with("--") => {
                    words.push(k.to_string());
                    words.push(v.to_string());
                }
                _ => words.push(a.to_string()),
            }
        }
        Ok(Flags {
            cmd: cmd.to_string(),
            words,
        })
    }

    fn switch(&mut self, name: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| w != name);
        self.words.len() != before
    }

    fn value(&mut self, name: &str) -> Result<Option<String>, ClientError> {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(usage(format!("{} {name} needs a value", self.cmd)));
        }
        let v = self.words.remove(i + 1);
        self.words.remove(i);
        Ok(Some(v))
    }

    fn number(&mut self, name: &str) -> Result<Option<u64>, ClientError> {
        match self.value(name)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                usage(format!(
                    "{} {name} `{v}`: expected a non-negative integer",
                    self.cmd
                ))
            }),
        }
    }

    fn positional(&mut self, what: &str) -> Result<String, ClientError> {
        match self.words.iter().position(|w| !w.starts_with('-')) {
            Some(i) => Ok(self.words.remove(i)),
            None => Err(usage(format!("{} needs {what}", self.cmd))),
        }
    }

    fn finish(self) -> Result<(), ClientError> {
        match self.words.first() {
            None => Ok(()),
            Some(w) => Err(usage(format!("{}: unexpected argument `{w}`", self.cmd))),
        }
    }
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

/// The readable form of a successful reply.
pub fn render(req: &Request, v: &Value) -> String {
    match req {
        Request::Status => render_status(v),
        Request::Jobs { .. } => render_jobs(v["jobs"].as_array().map(Vec::as_slice).unwrap_or(&[])),
        Request::Show { .. } => render_job(&v["job"]),
        Request::Backup { .. } => format!(
            "Backup written: {} ({} events, {})\n",
            v["path"].as_str().unwrap_or("?"),
            v["events"].as_u64().unwrap_or(0),
            bytes(v["bytes"].as_u64().unwrap_or(0))
        ),
        Request::Reload => {
            let mut s = format!("{}\n", v["message"].as_str().unwrap_or("Config reloaded."));
            if let Some(note) = v["note"].as_str() {
                s.push_str(&format!("note: {note}\n"));
            }
            s
        }
        Request::Ping => "pong\n".to_string(),
        _ => format!("{}\n", v["message"].as_str().unwrap_or("ok")),
    }
}

fn render_status(v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let queue = if v["draining"] == Value::Bool(true) {
        "draining"
    } else if v["paused"] == Value::Bool(true) {
        "paused"
    } else {
        "taking jobs"
    };
    let mut rows = vec![
        ("version", v["version"].as_str().unwrap_or("?").to_string()),
        ("uptime", duration(n("uptimeSeconds"))),
        (
            "queue",
            format!("{queue}, concurrency {}", n("concurrency")),
        ),
        (
            "jobs",
            format!(
                "{} queued, {} running, {} finished ({} completed, {} failed, {} cancelled)",
                n("queued"),
                n("running"),
                n("finished"),
                n("completed"),
                n("failed"),
                n("cancelled")
            ),
        ),
        ("last event", n("lastEventId").to_string()),
        ("database", bytes(n("databaseBytes"))),
        (
            "free disk",
            match v["freeDiskBytes"].as_u64() {
                Some(b) => bytes(b),
                None => "unknown".into(),
            },
        ),
        (
            "state dir",
            v["stateDir"].as_str().unwrap_or("?").to_string(),
        ),
        ("socket", v["socket"].as_str().unwrap_or("?").to_string()),
    ];
    if let Some(c) = v["configPath"].as_str() {
        rows.push(("config", c.to_string()));
    }
    rows.iter()
        .map(|(k, val)| format!("{:<11} {val}\n", format!("{k}:")))
        .collect()
}

fn render_jobs(jobs: &[Value]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_string();
    }
    let mut s = format!(
        "{:<36}  {:<9}  {:>3}  {:<24}  {:<10}  {}\n",
        "ID", "STATE", "TRY", "CREATED", "STAGE", "SUBJECT"
    );
    for j in jobs {
        let stage = match (j["stage"].as_str(), j["progress"].as_f64()) {
            (Some(st), Some(p)) if j["state"] == "running" => format!("{st} {:.0}%", p * 100.0),
            (Some(st), _) if j["state"] == "running" => st.to_string(),
            _ => "-".to_string(),
        };
        s.push_str(&format!(
            "{:<36}  {:<9}  {:>3}  {:<24}  {:<10}  {}\n",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            j["attempt"].as_u64().unwrap_or(0),
            j["createdAt"].as_str().unwrap_or("-"),
            stage,
            clip(j["subject"].as_str().unwrap_or(""), 48),
        ));
    }
    s
}

fn render_job(j: &Value) -> String {
    let keys = [
        ("id", "id"),
        ("state", "state"),
        ("subject", "subject"),
        ("attempt", "attempt"),
        ("maxAttempts", "max attempts"),
        ("cancelRequested", "cancel req."),
        ("stage", "stage"),
        ("progress", "progress"),
        ("createdAt", "created"),
        ("startedAt", "started"),
        ("completedAt", "completed"),
        ("resultPath", "result"),
        ("errorMessage", "error"),
        ("lastEventId", "last event"),
    ];
    keys.iter()
        .filter(|(k, _)| !j[*k].is_null())
        .map(|(k, label)| {
            let v = match &j[*k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{:<13} {v}\n", format!("{label}:"))
        })
        .collect()
}

/// `#12  2024-03-15T10:50:45.789Z  info     log               Rendering ...`
pub fn event_line(ev: &Value) -> String {
    let ts = ev["timestamp"]
        .as_f64()
        .map(|t| iso8601((t * 1000.0).round() as i64))
        .unwrap_or_default();
    let mut line = format!(
        "#{:<6} {}  {:<7}  {:<16}  {}",
        ev["id"].as_u64().unwrap_or(0),
        ts,
        ev["level"].as_str().unwrap_or("?"),
        ev["type"].as_str().unwrap_or("?"),
        ev["message"].as_str().unwrap_or(""),
    );
    if let Some(p) = ev["payload"].as_object().filter(|p| !p.is_empty()) {
        // The full payload is one `--json` away; keep the line readable.
        line.push_str(&format!(
            "  {}",
            clip(&Value::Object(p.clone()).to_string(), 160)
        ));
    }
    line
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines_parse_into_requests() {
        let id = "3f2b6c1e-8d2a-4c3b-9e1f-0a1b2c3d4e5f";
        let job = id.parse().unwrap();
        let cases = [
            ("status", Request::Status),
            (
                "jobs --state running --limit 10",
                Request::Jobs {
                    state: Some(JobState::Running),
                    limit: 10,
                },
            ),
            (
                "jobs",
                Request::Jobs {
                    state: None,
                    limit: DEFAULT_LIMIT,
                },
            ),
            (&format!("show {id}"), Request::Show { job }),
            (
                &format!("events {id} --after=5 --follow"),
                Request::Events {
                    job: Some(job),
                    after: 5,
                    limit: DEFAULT_LIMIT,
                    follow: true,
                },
            ),
            (&format!("cancel {id}"), Request::Cancel { job }),
            (&format!("retry {id}"), Request::Retry { job }),
            ("concurrency 2", Request::Concurrency { value: 2 }),
            (
                "backup /tmp/b.redb",
                Request::Backup {
                    path: "/tmp/b.redb".into(),
                },
            ),
            ("drain", Request::Drain),
            ("reload", Request::Reload),
        ];
        for (line, want) in cases {
            assert_eq!(parse_args(&words(line)).unwrap().request, want, "{line}");
        }
        let inv = parse_args(&words("status --json --socket /x.sock")).unwrap();
        assert!(inv.json);
        assert_eq!(inv.socket, Some(PathBuf::from("/x.sock")));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for line in [
            "",
            "fly",
            "show",
            "show nope",
            "concurrency",
            "concurrency 0",
            "jobs --state done",
            "jobs --limit",
            "status extra",
            "events daemon --follow",
        ] {
            assert!(
                matches!(parse_args(&words(line)), Err(ClientError::Usage(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3_723), "1h 2m 3s");
    }
}
