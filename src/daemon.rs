//! The boot and shutdown sequences of `reelsmith serve`, read top to bottom.
//!
//! Boot: state dir -> event log -> replay into views -> core (journal on its own Arbiter thread,
//! recovery of jobs the previous run left running, scheduler) -> HTTP listener -> webhook dispatcher
//! -> control socket -> status/watchdog task -> READY=1.
//! Shutdown (SIGTERM/SIGINT, or a finished drain), in a fixed order, each step awaited:
//! 1. stop accepting: `stopping` turns true, STOPPING=1; the HTTP and control accept loops end;
//! 2. the scheduler admits nothing and running jobs record their interruption (`CoreTasks`);
//! 3. HTTP connections finish within [`HTTP_GRACE`] (long polls are woken by `stopping`), control
//!    connections end;
//! 4. the status/watchdog task, the webhook dispatcher and the retention sweep end;
//! 5. the journal commits and answers what is pending, stops, and its thread is joined;
//! 6. the socket file is removed. A restart replays the log and picks the jobs up.
//!
//! A failed event log (the journal's first failed commit; redb refuses every write after one) stops
//! the daemon too, and it exits non-zero so that systemd's `Restart=on-failure` starts it again on
//! a freshly opened log (we restart rather than reopen in place: a new process proves the log
//! opens and replays, and recovery re-queues the jobs whose end could not be recorded). Until then
//! every write is answered 503/507 and `/healthz` 503 with the reason, the watchdog is no longer
//! pinged, and the running jobs are stopped (their subprocesses killed) before the listeners close.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigSource};
use crate::service::{self, open_local, prepare_state_dir, system, Core};
use crate::store::Store;
use crate::views::Views;

/// Time running jobs get to record their interruption.
const JOBS_GRACE: Duration = Duration::from_secs(7);
/// Time HTTP requests in flight get to finish once the listener has closed.
pub const HTTP_GRACE: Duration = Duration::from_secs(3);

/// Flags of `reelsmith serve` that override the config.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub paused: bool,
    /// What a reload reads again.
    pub source: ConfigSource,
}

/// `reelsmith serve`.
pub fn run_server(config: Config, opts: ServeOptions) -> anyhow::Result<()> {
    crate::providers::hide_secrets(&config);
    let config = Arc::new(config);
    let state_dir = config.state_dir();
    prepare_state_dir(&state_dir)?;
    let local = open_local(&config, &state_dir)?;
    if local.is_some() {
        // The log's lock is ours: no other daemon (and so no upload) is using this state dir.
        let swept = crate::songs::sweep_staging(&crate::songs::resolve(&config.songs_dir()));
        if swept > 0 {
            info!(folders = swept, "cleared song uploads a crash cut off");
        }
    }
    let result = system().block_on(serve(config, state_dir, local, opts));
    System::current().stop();
    result
}

async fn serve(
    config: Arc<Config>,
    state_dir: PathBuf,
    local: Option<(Arc<Store>, Arc<Views>)>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let (log, views) = service::open_any(&config, local).await?;
    let listener = crate::http::bind(config.listen_addr()).await?;
    let local = listener.local_addr()?;
    // Bound before the core starts, so that a second daemon on the same socket stops here.
    let control = crate::control::bind(&config)?;
    let (core, tasks) = service::start(
        config.clone(),
        state_dir,
        log,
        views,
        opts.paused,
        service::Scope::All,
    )
    .await?;
    let control = crate::control::start(control, core.clone(), opts.source.clone());
    let http = tokio::spawn(crate::http::serve(listener, core.clone(), HTTP_GRACE));
    let webhooks = crate::webhooks::start(core.clone());
    info!(
        listen = %local,
        socket = %control.path().display(),
        state_dir = %core.state_dir().display(),
        "reelsmith ready"
    );
    for missing in crate::pipeline::process::check_tools(&config) {
        warn!(tool = %missing, "media tool missing: jobs will fail until it is installed");
    }
    // Tests and scripts read this line to learn the bound port.
    eprintln!("reelsmith listening on http://{local}");
    crate::systemd::notify("READY=1");
    let status = tokio::spawn(report_status(core.clone()));
    let retention = tokio::spawn(retention(core.clone()));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut stopping = core.stopping();
    let mut failed = None;
    tokio::select! {
        _ = sigterm.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = sigint.recv() => info!(signal = "SIGINT", "shutting down"),
        _ = crate::wait_true(&mut stopping) => info!("shutting down after a drain"),
        fault = core.log_failed() => failed = Some(fault),
    }
    if let Some(fault) = &failed {
        error!(cause = %fault.cause(), "the event log cannot be written: stopping to be restarted");
        crate::systemd::notify(&format!("STATUS={}", fault.restart_message()));
        // The scheduler has told the jobs to stop; the listeners keep answering 503 meanwhile.
        tasks.stop_jobs(JOBS_GRACE).await;
    }
    // 1. Stop accepting: the HTTP loop and the control socket watch `stopping`.
    crate::systemd::notify("STOPPING=1");
    core.request_stop();
    // 2. Jobs record their interruption; the scheduler admits nothing more.
    tasks.stop_jobs(JOBS_GRACE).await;
    // 3. HTTP connections (the server waits at most HTTP_GRACE for them), then control ones.
    if let Err(e) = http.await {
        warn!(error = %e, "the HTTP server task failed");
    }
    control.join().await;
    // 4. The status/watchdog task, the webhook dispatcher (it ends at `stopping`; attempts in
    //    flight are abandoned and delivered again after the restart) and the retention sweep (a
    //    purge it had sent completes in the journal; files it had not removed yet go at the next
    //    start).
    status.abort();
    let _ = status.await;
    if let Err(e) = webhooks.await {
        warn!(error = %e, "the webhook dispatcher task failed");
    }
    retention.abort();
    let _ = retention.await;
    // 5. The journal's final flush, then its thread.
    tasks.close_journal().await;
    if let Some(fault) = failed {
        info!("stopped after an event log failure");
        anyhow::bail!("{}", fault.restart_message());
    }
    info!("stopped");
    Ok(())
}

/// How often finished jobs older than `retention.keep_days` are removed (and once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The retention sweep: at start, then every [`RETENTION_EVERY`], with the config in force then
/// (a reload changes `retention.keep_days`; 0 keeps everything).
async fn retention(core: Core) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let days = core.config().retention.keep_days;
        // On a shared store every daemon sweeps: the store deletes each job once (a job another
        // daemon purged first is skipped) and records it once.
        if days == 0 || core.log_fault().is_some() || core.store_fault().is_some() {
            continue;
        }
        match core.purge(days, None, true).await {
            Ok(r) if r.jobs > 0 => info!(jobs = r.jobs, events = r.events, days, "retention sweep"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retention sweep failed"),
        }
    }
}

/// Keeps systemd's STATUS= current (after commits, at most four times a second, and every 5 s), and
/// sends WATCHDOG=1 at half of `WatchdogSec` only while the journal and the scheduler both answer.
async fn report_status(core: Core) {
    let watchdog = crate::systemd::watchdog_interval();
    let mut status_tick = tokio::time::interval(Duration::from_secs(5));
    let mut dog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    dog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping_timeout = watchdog
        .map(|w| (w / 2).clamp(Duration::from_millis(100), Duration::from_secs(5)))
        .unwrap_or(Duration::from_secs(5));
    let mut commits = core.subscribe_all();
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = status_tick.tick() => {}
            Ok(()) = commits.changed() => tokio::time::sleep(Duration::from_millis(250)).await,
            _ = dog_tick.tick(), if watchdog.is_some() => {
                match core.liveness(ping_timeout).await {
                    Ok(()) => {
                        crate::systemd::notify("WATCHDOG=1");
                    }
                    Err(who) => warn!(unresponsive = who, "watchdog ping withheld"),
                }
                continue;
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(1), core.scheduler_status()).await;
        let text = match status {
            _ if core.log_fault().is_some() => "STATUS=the event log cannot be written".to_string(),
            Ok(Ok(st)) => format!(
                "STATUS={} running, {} queued{}{}",
                st.running.len(),
                st.queue_depth,
                if st.paused { ", paused" } else { "" },
                if st.draining { ", draining" } else { "" },
            ),
            _ => "STATUS=scheduler not answering".to_string(),
        };
        if text != last {
            crate::systemd::notify(&text);
            last = text;
        }
    }
}
