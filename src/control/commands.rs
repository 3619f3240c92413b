//! What each control command does against the running core.
//!
//! Every state change made here goes through the core (`service::Core`), whose scheduler records it
//! as an event with the peer's uid (`by: {uid, via: "socket"}`): pause, resume, concurrency, drain,
//! cancel, retry, and the `admin` events of backup and reload. Reads (status, jobs, show, events)
//! use the core's reads, the same ones HTTP uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{oneshot, Mutex};
use tracing::{info, warn};

use super::protocol::{self, Request, COMMANDS, DEFAULT_LIMIT};
use super::server::Conn;
use crate::actors::scheduler::CancelOutcome;
use crate::config::{Config, ConfigSource};
use crate::event::{Event, EventId, JobId};
use crate::service::Core;

/// How often a waiting drain asks systemd for more time, and how much.
const EXTEND_EVERY: Duration = Duration::from_secs(5);
const EXTEND_BY_USEC: u64 = 15_000_000;

/// Config keys a running daemon cannot change; a reload names them and leaves them alone.
/// (`server.*` is read by the HTTP listener at start; the folders by the jobs and the upload route.)
const RESTART_KEYS: [&str; 6] = [
    "server.",
    "daemon.state_dir",
    "daemon.socket",
    "daemon.socket_group",
    "daemon.paused",
    "music.songs_dir",
];

/// The command executor shared by every connection.
pub struct Commands {
    core: Core,
    socket: PathBuf,
    /// Where `reload` reads the config again from.
    source: ConfigSource,
    /// The config as last loaded (start or reload), minus keys that need a restart. A reload
    /// compares the file against this, so a runtime `concurrency` change survives a reload that
    /// does not touch `daemon.concurrency`. The lock also serialises reloads.
    live: Mutex<Arc<Config>>,
}

impl Commands {
    pub fn new(core: Core, socket: PathBuf, source: ConfigSource) -> Commands {
        let live = Mutex::new(core.config());
        Commands {
            core,
            socket,
            source,
            live,
        }
    }

    /// Runs one request and writes its reply (several lines for `events` with `follow`).
    pub async fn run(&self, req: Request, uid: u32, conn: &mut Conn) -> std::io::Result<()> {
        match req {
            Request::Events {
                job: Some(job),
                after,
                follow: true,
                ..
            } => self.follow(job, after, conn).await,
            Request::Drain => self.drain(uid, conn).await,
            other => {
                let reply = self.reply(other, uid).await;
                conn.send(&reply).await
            }
        }
    }

    async fn reply(&self, req: Request, uid: u32) -> Value {
        let core = &self.core;
        match req {
            Request::Status => {
                let mut st = core.status_json().await;
                st["socket"] = json!(self.socket.display().to_string());
                st["configPath"] =
                    json!(self.source.path.as_ref().map(|p| p.display().to_string()));
                protocol::ok(st)
            }
            Request::Jobs { state, limit } => match core.list_jobs(state, None, limit).await {
                Ok(list) => {
                    let jobs: Vec<Value> = list.iter().map(|v| v.to_json()).collect();
                    protocol::ok(json!({ "jobs": jobs }))
                }
                Err(e) => protocol::error(e),
            },
            Request::Show { job } => match core.job_view(job).await {
                Ok(Some(v)) => {
                    let mut j = v.to_json();
                    j["request"] = serde_json::from_str(&v.request).unwrap_or(Value::Null);
                    protocol::ok(json!({ "job": j }))
                }
                Ok(None) => protocol::error("Job not found."),
                Err(e) => protocol::error(e),
            },
            Request::Events {
                job, after, limit, ..
            } => self.events_page(job, after, limit).await,
            Request::Cancel { job } => match core.cancel(job, Some(uid)).await {
                Ok(outcome) => {
                    let (name, message) = match outcome {
                        CancelOutcome::CancelledQueued => {
                            ("cancelled", "Job cancelled before execution.")
                        }
                        CancelOutcome::Requested => ("requested", "Cancellation requested."),
                        CancelOutcome::NoOp => (
                            "noop",
                            "Nothing to cancel: the job has ended or is already being cancelled.",
                        ),
                    };
                    protocol::ok(json!({ "outcome": name, "message": message }))
                }
                Err(e) => protocol::error(e),
            },
            Request::Retry { job } => match core.retry(job, Some(uid)).await {
                Ok(()) => protocol::ok(json!({ "message": "Job queued for retry." })),
                Err(e) => protocol::error(e),
            },
            Request::Pause | Request::Resume => {
                let paused = req == Request::Pause;
                match core.set_paused(paused, Some(uid)).await {
                    Ok(()) => protocol::ok(json!({
                        "paused": paused,
                        "message": if paused { "Queue paused." } else { "Queue resumed." },
                    })),
                    Err(e) => protocol::error(e),
                }
            }
            Request::Concurrency { value } => match core.set_concurrency(value, Some(uid)).await {
                Ok(()) => protocol::ok(json!({
                    "concurrency": value,
                    "message": format!("Concurrency set to {value}."),
                })),
                Err(e) => protocol::error(e),
            },
            Request::Backup { path } => self.backup(PathBuf::from(path), uid).await,
            Request::Purge { older_than_days } => {
                match core.purge(older_than_days, Some(uid), false).await {
                    Ok(r) => protocol::ok(json!({
                        "jobs": r.jobs,
                        "events": r.events,
                        "message": format!(
                            "Purged {} finished job(s) older than {older_than_days} day(s) ({} events).",
                            r.jobs, r.events
                        ),
                    })),
                    Err(e) => protocol::error(e),
                }
            }
            Request::Reload => self.reload(uid).await,
            Request::Ping => protocol::ok(json!({ "pong": true })),
            Request::Help => protocol::ok(json!({ "commands": COMMANDS })),
            // Handled by `run`.
            Request::Drain => protocol::error("internal error: drain"),
        }
    }

    /// One page of a job's events (`job: None`: the daemon's admin events): `Core::events_page`,
    /// the same page HTTP answers.
    async fn events_page(&self, job: Option<JobId>, after: EventId, limit: usize) -> Value {
        let page = match self.core.events_page(job, after, limit, b"").await {
            Ok(p) => p,
            Err(e) => return protocol::error(e),
        };
        let events: Value = match serde_json::from_slice(&page.body) {
            Ok(v) => v,
            Err(e) => return protocol::error(format!("internal error: events page: {e}")),
        };
        protocol::ok(json!({
            "events": events,
            "state": page.state.map(|s| s.as_str()),
            "lastEventId": page.last_event_id,
            "more": page.more,
        }))
    }

    async fn read(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, String> {
        self.core
            .read_events(job, after, upto, limit)
            .await
            .map_err(|e| e.to_string())
    }

    /// Streams a job's events after `after` as they commit, one line each, until the job reaches a
    /// terminal state; then one `{"ok":true,"end":true,"state":...}` line.
    async fn follow(&self, job: JobId, mut after: EventId, conn: &mut Conn) -> std::io::Result<()> {
        let core = &self.core;
        // Subscribe before reading, so that a commit between a read and the wait is not missed.
        let Some(mut rx) = core.subscribe(job) else {
            return conn.send(&protocol::error("Job not found.")).await;
        };
        let mut stopping = core.stopping();
        enum Wake {
            Commit(bool),
            Stopping,
            Gone,
        }
        loop {
            // The head is enough (state and last id): an old finished job is not read whole.
            let Some(view) = core.head(job) else {
                return conn.send(&protocol::error("Job not found.")).await;
            };
            while after < view.last_event_id {
                let page = match self
                    .read(job, after, view.last_event_id, DEFAULT_LIMIT)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => return conn.send(&protocol::error(e)).await,
                };
                let Some(last) = page.last().map(|e| e.id) else {
                    break;
                };
                for ev in &page {
                    conn.send(&protocol::ok(json!({ "event": ev.to_wire() })))
                        .await?;
                }
                after = last;
            }
            if view.state.is_terminal() {
                return conn
                    .send(&protocol::ok(json!({
                        "end": true,
                        "state": view.state.as_str(),
                        "lastEventId": after,
                    })))
                    .await;
            }
            let wake = tokio::select! {
                r = rx.changed() => Wake::Commit(r.is_ok()),
                _ = crate::wait_true(&mut stopping) => Wake::Stopping,
                _ = conn.closed() => Wake::Gone,
            };
            match wake {
                Wake::Commit(true) => {}
                Wake::Commit(false) => {
                    return conn
                        .send(&protocol::error("the job's event stream closed"))
                        .await
                }
                Wake::Stopping => {
                    let msg = "the daemon is stopping; the job has not ended (it resumes after a restart)";
                    return conn.send(&protocol::error(msg)).await;
                }
                Wake::Gone => return Ok(()),
            }
        }
    }

    /// Starts no new job, waits for the running ones to end, replies, then stops the daemon (exit 0).
    /// The drain goes on if the client hangs up; systemd is asked for more time while it waits.
    async fn drain(&self, uid: u32, conn: &mut Conn) -> std::io::Result<()> {
        let core = self.core.clone();
        let (reply_tx, reply_rx) = oneshot::channel::<(Value, oneshot::Sender<()>)>();
        tokio::spawn(async move {
            let started = Instant::now();
            info!(uid, "drain requested");
            let wait = core.drain(Some(uid));
            tokio::pin!(wait);
            let mut extend = tokio::time::interval(EXTEND_EVERY);
            let result = loop {
                tokio::select! {
                    r = &mut wait => break r,
                    _ = extend.tick() => {
                        crate::systemd::notify(&format!("EXTEND_TIMEOUT_USEC={EXTEND_BY_USEC}"));
                    }
                }
            };
            let (ack_tx, ack_rx) = oneshot::channel();
            let ok = result.is_ok();
            let reply = match result {
                Ok(()) => protocol::ok(json!({
                    "message": "Drained: no job is running; the daemon is exiting.",
                    "waitedSeconds": started.elapsed().as_secs_f64(),
                })),
                Err(e) => protocol::error(format!("drain failed: scheduler unreachable ({e})")),
            };
            if reply_tx.send((reply, ack_tx)).is_ok() {
                // Let the reply reach the client before the daemon goes away.
                let _ = tokio::time::timeout(Duration::from_secs(5), ack_rx).await;
            }
            if ok {
                info!(
                    uid,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "drain complete; stopping"
                );
                core.request_stop();
            }
        });
        match reply_rx.await {
            Ok((reply, ack)) => {
                let sent = conn.send(&reply).await;
                let _ = ack.send(());
                sent
            }
            Err(_) => Ok(()),
        }
    }

    async fn backup(&self, path: PathBuf, uid: u32) -> Value {
        let started = Instant::now();
        let events = match self.core.backup(path.clone()).await {
            Ok(n) => n,
            Err(e) => return protocol::error(e),
        };
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let shown = path.display().to_string();
        info!(path = %shown, events, bytes, "backup written");
        self.record(
            format!("Backup written to {shown}."),
            json!({ "action": "backup", "path": shown, "events": events }),
            uid,
        )
        .await;
        protocol::ok(json!({
            "path": shown,
            "events": events,
            "bytes": bytes,
            "millis": started.elapsed().as_millis() as u64,
        }))
    }

    /// Re-reads the config file the daemon started with (plus the environment and command-line
    /// values); applies what can change live and names the keys that need a restart.
    async fn reload(&self, uid: u32) -> Value {
        let core = &self.core;
        let mut live = self.live.lock().await;
        let source = self.source.clone();
        let loaded = tokio::task::spawn_blocking(move || source.load()).await;
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return protocol::error(format!("config not reloaded, nothing changed: {e}"))
            }
            Err(e) => return protocol::error(format!("reload task failed: {e}")),
        };
        let changed = match changed_keys(&live, &new) {
            Ok(c) => c,
            Err(e) => return protocol::error(format!("config not reloaded: {e}")),
        };
        let (restart, apply): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| RESTART_KEYS.iter().any(|r| k.starts_with(r)));
        let effective = match merge(&live, &new, &apply) {
            Ok(c) => Arc::new(c),
            Err(e) => return protocol::error(format!("config not reloaded: {e}")),
        };
        if effective.daemon.concurrency != live.daemon.concurrency {
            if let Err(e) = core
                .set_concurrency(effective.daemon.concurrency, Some(uid))
                .await
            {
                return protocol::error(e);
            }
        }
        if let Err(e) = core.set_config(effective.clone()).await {
            return protocol::error(e);
        }
        *live = effective;
        drop(live);
        let source = self.source.path.as_ref().map(|p| p.display().to_string());
        info!(applied = ?apply, restart_required = ?restart, "config reloaded");
        self.record(
            "Config reloaded.".into(),
            json!({
                "action": "reload",
                "configPath": source,
                "applied": apply,
                "restartRequired": restart,
            }),
            uid,
        )
        .await;
        let message = match (apply.is_empty(), restart.is_empty()) {
            (true, true) => "Config reloaded: nothing changed.".to_string(),
            (_, true) => format!("Config reloaded: applied {}.", apply.join(", ")),
            (true, _) => format!(
                "Config reloaded: nothing applied; a restart is required for {}.",
                restart.join(", ")
            ),
            (false, false) => format!(
                "Config reloaded: applied {}; a restart is required for {}.",
                apply.join(", "),
                restart.join(", ")
            ),
        };
        // What is applied is true everywhere: the HTTP layer reads `Core::config` per request.
        protocol::ok(json!({
            "configPath": source,
            "applied": apply,
            "restartRequired": restart,
            "message": message,
        }))
    }

    /// Records an admin event of the daemon pseudo-job; a failure is logged, not fatal.
    async fn record(&self, message: String, payload: Value, uid: u32) {
        if let Err(e) = self.core.admin_event(message, payload, Some(uid)).await {
            warn!(error = %e, "cannot record an admin event");
        }
    }
}

fn as_table(cfg: &Config) -> Result<toml::Table, String> {
    match toml::Value::try_from(cfg) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err("the config is not a table".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Dotted keys whose values differ between two configs, sorted.
fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>, String> {
    let (a, b) = (as_table(old)?, as_table(new)?);
    let mut out = Vec::new();
    for (section, new_keys) in &b {
        let Some(new_keys) = new_keys.as_table() else {
            continue;
        };
        let old_keys = a.get(section).and_then(|s| s.as_table());
        for (key, v) in new_keys {
            if old_keys.and_then(|t| t.get(key)) != Some(v) {
                out.push(format!("{section}.{key}"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `old` with the values of `keys` taken from `new`.
fn merge(old: &Config, new: &Config, keys: &[String]) -> Result<Config, String> {
    let mut out = as_table(old)?;
    let from = as_table(new)?;
    for dotted in keys {
        let Some((section, key)) = dotted.split_once('.') else {
            continue;
        };
        let Some(v) = from.get(section).and_then(|s| s.get(key)) else {
            continue;
        };
        if let Some(t) = out.get_mut(section).and_then(|s| s.as_table_mut()) {
            t.insert(key.to_string(), v.clone());
        }
    }
    toml::Value::Table(out)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_applies_live_keys_and_keeps_restart_keys() {
        let old = Config::default();
        let mut new = Config::default();
        new.daemon.concurrency = 3;
        new.render.preset = crate::config::Preset::Fast;
        new.server.listen = "127.0.0.1:9999".into();
        let changed = changed_keys(&old, &new).unwrap();
        assert_eq!(
            changed,
            vec!["daemon.concurrency", "render.preset", "server.listen"]
        );
        let (restart, apply): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| RESTART_KEYS.iter().any(|r| k.starts_with(r)));
        assert_eq!(restart, vec!["server.listen"]);
        let merged = merge(&old, &new, &apply).unwrap();
        assert_eq!(merged.daemon.concurrency, 3);
        assert_eq!(merged.render.preset, "fast");
        assert_eq!(merged.server.listen, old.server.listen);
    }

    #[test]
    fn identical_configs_change_nothing() {
        let c = Config::default();
        assert!(changed_keys(&c, &c).unwrap().is_empty());
    }
}
