//! The boot and shutdown sequences, read top to bottom.
//!
//! Boot: state dir -> event log -> replay into views -> journal (own Arbiter thread) -> recovery of
//! jobs the previous run left running -> scheduler -> HTTP listener -> control socket -> READY=1.
//! Shutdown (SIGTERM/SIGINT, or a finished drain), in a fixed order: stop accepting (HTTP, socket),
//! STOPPING=1; the scheduler admits nothing and running jobs record their interruption; the journal
//! answers every pending append; the system stops. A restart replays the log and picks the jobs up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::actors::job::{interruption_events, JobPaths};
use crate::actors::journal::{Append, Journal, Ping};
use crate::actors::scheduler::{GetStatus, Scheduler, Shutdown};
use crate::config::Config;
use crate::event::{JobState, Kind, Level, NewEvent};
use crate::store::{self, Store};
use crate::views::Views;

/// Flags of `reelsmith serve` that override the config.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub paused: bool,
    /// The config file the daemon was started with; `reload` reads it again.
    pub config_path: Option<PathBuf>,
    /// Command-line values that win over the file, at start and at every reload.
    pub overrides: Overrides,
}

/// Config values given on the command line (`--state-dir`, `--listen`, `--socket`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(d) = &self.state_dir {
            cfg.daemon.state_dir = d.display().to_string();
        }
        if let Some(l) = &self.listen {
            cfg.server.listen = l.clone();
        }
        if let Some(s) = &self.socket {
            cfg.daemon.socket = s.display().to_string();
        }
    }
}

/// The running core: what the HTTP layer, the control socket and the CLI talk to.
#[derive(Clone)]
pub struct Core {
    pub config: Arc<Config>,
    pub state_dir: PathBuf,
    pub store: Arc<Store>,
    pub views: Arc<Views>,
    pub journal: Addr<Journal>,
    pub scheduler: Addr<Scheduler>,
    pub started: Instant,
    /// Turns `true` when the daemon begins to stop.
    pub stopping: watch::Receiver<bool>,
    /// Asks the daemon to stop (used by a finished drain and by signals).
    pub stop: Arc<watch::Sender<bool>>,
    /// The config file the daemon was started with (`None`: defaults and environment only).
    pub config_path: Option<PathBuf>,
    /// Command-line values a reload must keep.
    pub overrides: Overrides,
}

/// Creates the state directory and proves it writable; the error names the path.
pub fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "state directory {} cannot be created (daemon.state_dir)",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"ok").with_context(|| {
        format!(
            "state directory {} is not writable (daemon.state_dir)",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    for sub in ["output", "jobs"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    Ok(())
}

/// Opens the log and rebuilds the views (outside any runtime: this is blocking work).
pub fn open_log(dir: &Path) -> anyhow::Result<(Arc<Store>, Arc<Views>)> {
    let path = dir.join(store::FILE_NAME);
    let store = Store::open(&path)?;
    let t = Instant::now();
    let (views, report) = Views::replay(&store)
        .with_context(|| format!("cannot replay the event log {}", path.display()))?;
    info!(
        events = report.events,
        jobs = report.jobs,
        orphans = report.orphans,
        millis = t.elapsed().as_millis() as u64,
        "event log replayed"
    );
    if report.orphans > 0 {
        warn!(
            orphans = report.orphans,
            "events without a job history were skipped"
        );
    }
    Ok((Arc::new(store), Arc::new(views)))
}

/// Starts the journal and scheduler (inside a running actix System) after recovering the jobs a
/// previous run left running.
pub async fn start_core(
    config: Arc<Config>,
    state_dir: PathBuf,
    store: Arc<Store>,
    views: Arc<Views>,
    opts: &ServeOptions,
) -> anyhow::Result<Core> {
    let journal_arbiter = Arbiter::new();
    let (s, v) = (store.clone(), views.clone());
    let journal = Journal::start_in_arbiter(&journal_arbiter.handle(), move |_| Journal::new(s, v));
    recover(&journal, &views).await?;
    let songs_dir = config.songs_dir();
    let paths = JobPaths {
        state_dir: state_dir.clone(),
        songs_dir,
    };
    let paused = opts.paused || config.daemon.paused;
    let scheduler = Scheduler::new(
        journal.clone(),
        views.clone(),
        config.clone(),
        paths,
        views.queued_fifo(),
        paused,
    )
    .start();
    let (stop_tx, stop_rx) = watch::channel(false);
    Ok(Core {
        config,
        state_dir,
        store,
        views,
        journal,
        scheduler,
        started: Instant::now(),
        stopping: stop_rx,
        stop: Arc::new(stop_tx),
        config_path: opts.config_path.clone(),
        overrides: opts.overrides.clone(),
    })
}

/// Jobs that were running when the previous run died: interrupted, then requeued or failed.
async fn recover(journal: &Addr<Journal>, views: &Views) -> anyhow::Result<()> {
    for view in views.list(Some(JobState::Running), usize::MAX) {
        let events = if view.cancel_requested {
            vec![NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled.",
            )]
        } else {
            interruption_events(&view, "Job interrupted by a daemon restart.")
        };
        warn!(job = %view.id, attempt = view.attempt, "job was interrupted by a restart");
        journal
            .send(Append {
                job: view.id,
                events,
            })
            .await
            .context("journal unreachable during recovery")?
            .with_context(|| format!("cannot record the interruption of job {}", view.id))?;
    }
    Ok(())
}

/// Stops the core in order: nothing new admitted, running jobs interrupted and recorded.
pub async fn stop_core(core: &Core, deadline: Duration) {
    let _ = core.stop.send(true);
    match tokio::time::timeout(deadline, core.scheduler.send(Shutdown)).await {
        Ok(_) => info!("all jobs stopped"),
        Err(_) => warn!("jobs still stopping at the deadline; the next start will recover them"),
    }
}

/// The actix System on a multi-thread tokio runtime: actors live on the System thread and on
/// Arbiters, hyper's connections on the tokio workers.
pub fn system() -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            // Building a runtime fails only when the OS refuses threads; nothing to recover then.
            .expect("cannot start the tokio runtime")
    })
}

/// `reelsmith serve`.
pub fn run_server(config: Config, opts: ServeOptions) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let state_dir = config.state_dir();
    prepare_state_dir(&state_dir)?;
    let (store, views) = open_log(&state_dir)?;
    let result = system().block_on(serve(config, state_dir, store, views, opts));
    System::current().stop();
    result
}

async fn serve(
    config: Arc<Config>,
    state_dir: PathBuf,
    store: Arc<Store>,
    views: Arc<Views>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let listener = crate::http::bind(config.listen_addr()).await?;
    let local = listener.local_addr()?;
    // Bound before the core starts, so that a second daemon on the same socket stops here.
    let control = crate::control::bind(&config)?;
    let core = start_core(config.clone(), state_dir, store, views, &opts).await?;
    let control = crate::control::start(control, &core);
    let state = Arc::new(crate::http::AppState {
        config: config.clone(),
        views: core.views.clone(),
        store: core.store.clone(),
        scheduler: core.scheduler.clone(),
        songs_dir: config.songs_dir(),
        started: core.started,
        stopping: core.stopping.clone(),
    });
    let http = tokio::spawn(crate::http::serve(listener, state, Duration::from_secs(3)));
    info!(
        listen = %local,
        socket = %control.display(),
        state_dir = %core.state_dir.display(),
        "reelsmith ready"
    );
    for missing in crate::pipeline::process::check_tools(&config) {
        warn!(tool = %missing, "media tool missing: jobs will fail until it is installed");
    }
    // Tests and scripts read this line to learn the bound port.
    eprintln!("reelsmith listening on http://{local}");
    crate::systemd::notify("READY=1");
    let status = tokio::spawn(report_status(core.clone()));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut stopping = core.stopping.clone();
    tokio::select! {
        _ = sigterm.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = sigint.recv() => info!(signal = "SIGINT", "shutting down"),
        _ = crate::wait_true(&mut stopping) => info!("shutting down after a drain"),
    }
    crate::systemd::notify("STOPPING=1");
    // 1. Stop accepting: the HTTP loop and the control socket watch `stopping`.
    let _ = core.stop.send(true);
    // 2. Jobs record their interruption.
    stop_core(&core, Duration::from_secs(7)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    status.abort();
    let _ = std::fs::remove_file(&control);
    // 3. Every append was answered after its commit; the journal has nothing left to flush.
    info!("stopped");
    Ok(())
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
    let mut commits = core.views.subscribe_all();
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = status_tick.tick() => {}
            Ok(()) = commits.changed() => tokio::time::sleep(Duration::from_millis(250)).await,
            _ = dog_tick.tick(), if watchdog.is_some() => {
                match liveness(&core, ping_timeout).await {
                    Ok(()) => {
                        crate::systemd::notify("WATCHDOG=1");
                    }
                    Err(who) => warn!(unresponsive = who, "watchdog ping withheld"),
                }
                continue;
            }
        }
        let text = match tokio::time::timeout(
            Duration::from_secs(1),
            core.scheduler.send(GetStatus),
        )
        .await
        {
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

/// Whether the journal and the scheduler both answer a message within `timeout`; else who did not.
async fn liveness(core: &Core, timeout: Duration) -> Result<(), &'static str> {
    match tokio::time::timeout(timeout, core.journal.send(Ping)).await {
        Ok(Ok(())) => {}
        _ => return Err("journal"),
    }
    match tokio::time::timeout(timeout, core.scheduler.send(GetStatus)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err("scheduler"),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path` (statvfs).
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the right
    // type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0, so statvfs initialised `st`.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are 32-bit on some targets.
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize) = (st.f_bavail as u64, st.f_frsize as u64);
    Some(avail.saturating_mul(frsize))
}

/// A JSON summary of the daemon, shared by `/healthz`-like callers and the control socket.
pub async fn status_json(core: &Core) -> serde_json::Value {
    let sched = core.scheduler.send(GetStatus).await.ok();
    let counts = core.views.counts();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": core.started.elapsed().as_secs(),
        "paused": sched.as_ref().map(|s| s.paused),
        "draining": sched.as_ref().map(|s| s.draining),
        "concurrency": sched.as_ref().map(|s| s.concurrency),
        "queued": counts.queued,
        "running": counts.running,
        "finished": counts.completed + counts.failed + counts.cancelled,
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "lastEventId": core.views.last_id(),
        "databaseBytes": core.store.size_bytes(),
        "freeDiskBytes": free_disk_bytes(&core.state_dir),
        "stateDir": core.state_dir.display().to_string(),
    })
}
