//! `Core`: the one face of the running core that HTTP, the control socket and `generate` use.
//!
//! Writes (submit, cancel, retry, pause/resume, concurrency, drain, admin events) all go to the
//! scheduler, which records them through the journal before acting: there is no second writer path.
//! Reads (a job, a list, a range of events, subscriptions) come from the views and the log: a view
//! never shows an event that is not durable, and a page of events is read up to the view's last id so
//! the page and the state it reports describe the same moment. Nothing here imports `http`,
//! `control`, `generate` or `daemon`; `start`, [`CoreTasks::stop_jobs`] and [`CoreTasks::close_journal`] are the core's
//! boot and shutdown steps, which `daemon::serve` and `generate` call in their documented order.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::actors::job::{interruption_events, JobPaths};
use crate::actors::journal::{Append, Close, Fault, Journal, JournalError, Ping};
use crate::actors::scheduler::{
    Caller, Cancel, CancelActive, CancelOutcome, Drain, GetStatus, IdempotencyKey, PurgeFinished,
    PurgeReport, RecordAdmin, RecordWebhook, Retry, Scheduler, SchedulerError, SchedulerStatus,
    SetConcurrency, SetConfig, SetPaused, Shutdown, Submit, Submitted,
};
use crate::config::Config;
use crate::event::{Event, EventId, JobId, JobState, JobView, Kind, Level, NewEvent};
use crate::request::JobRequest;
use crate::store::{self, BackupError, ReadError, Store};
use crate::views::{Counts, Views};

/// Pages larger than this are read on the blocking pool; smaller ones inline (microseconds).
const INLINE_READ_LIMIT: usize = 200;

/// Why a core call failed, in the words a caller shows.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("Job not found.")]
    JobNotFound,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("the core is not answering ({0}); the daemon may be stopping")]
    Unreachable(#[from] MailboxError),
    #[error("a blocking read failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One page of a job's events, as wire JSON, with the state it was read against.
#[derive(Clone, Debug)]
pub struct EventsPage {
    /// The caller's prefix, then a JSON array of the events in the seed's shape, written straight
    /// from the stored records (one buffer: an answer is built without copying the page).
    pub body: Vec<u8>,
    pub count: usize,
    /// The cursor to pass as `after` next: the last id returned, or the job's last id (the upper
    /// bound the page was read to) when the page is empty.
    pub last_event_id: EventId,
    /// `limit` cut the page: more events are already there.
    pub more: bool,
    /// The job's state at the page's upper bound (`None` for the daemon's own history).
    pub state: Option<JobState>,
}

/// The running core. Cheap to clone; every clone is the same core.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    views: Arc<Views>,
    scheduler: Addr<Scheduler>,
    liveness: Recipient<Ping>,
    /// The journal's fault channel: `Some` once the event log has failed.
    faults: watch::Receiver<Option<Fault>>,
    /// The config jobs and handlers use now (replaced by a reload).
    config: RwLock<Arc<Config>>,
    state_dir: PathBuf,
    started: Instant,
    /// Turns `true` when the daemon begins to stop.
    stopping: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

/// What only the owner of the core's lifetime holds: the actors to stop, in order.
pub struct CoreTasks {
    scheduler: Addr<Scheduler>,
    journal: Addr<Journal>,
    journal_arbiter: Arbiter,
}

/// Starts the journal (on its own Arbiter thread) and the scheduler, inside a running actix
/// System, after recording the end of every job a previous run left running.
/// Which jobs a core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The daemon: every queued job, after recovering the jobs a previous run left running.
    All,
    /// `reelsmith generate`: only the jobs submitted through this core. The state directory's
    /// other jobs (queued, or left running by a daemon that died) are left as they are, for the
    /// daemon to run or recover, and the daemon's recorded pause does not apply.
    Own,
}

pub async fn start(
    config: Arc<Config>,
    state_dir: PathBuf,
    store: Arc<Store>,
    views: Arc<Views>,
    paused: bool,
    scope: Scope,
) -> anyhow::Result<(Core, CoreTasks)> {
    // Pause is recorded in the log; a restart keeps it (as do the `--paused` flag and config).
    let admin = store.read_job(JobId::DAEMON, 0, u64::MAX, usize::MAX)?;
    let was_paused = scope == Scope::All
        && (config.daemon.paused
            || admin
                .iter()
                .filter_map(crate::store::contract::pause_state)
                .next_back()
                .unwrap_or(false));
    let journal_arbiter = Arbiter::new();
    let journal = Journal::new(store.clone(), views.clone());
    let faults = journal.faults();
    let journal = Journal::start_in_arbiter(&journal_arbiter.handle(), move |_| journal);
    if scope == Scope::All {
        recover(&journal.clone().recipient(), &views).await?;
        let (dir, v) = (state_dir.clone(), views.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || sweep_job_files(&dir, &v)).await {
            warn!(error = %e, "the start-up sweep of job folders failed");
        }
    }
    let paths = JobPaths {
        state_dir: state_dir.clone(),
        songs_dir: config.songs_dir(),
    };
    let scheduler = Scheduler::new(
        journal.clone().recipient(),
        faults.clone(),
        journal.clone().recipient(),
        views.clone(),
        config.clone(),
        paths,
        paused || was_paused,
    );
    let scheduler = match scope {
        Scope::All => scheduler.with_purger(journal.clone().recipient()),
        Scope::Own => scheduler.own_jobs_only(),
    }
    .start();
    let (stop, stopping) = watch::channel(false);
    let core = Core {
        inner: Arc::new(Inner {
            store,
            views,
            scheduler: scheduler.clone(),
            liveness: journal.clone().recipient(),
            faults,
            config: RwLock::new(config),
            state_dir,
            started: Instant::now(),
            stopping,
            stop,
        }),
    };
    let tasks = CoreTasks {
        scheduler,
        journal,
        journal_arbiter,
    };
    Ok((core, tasks))
}

/// What a crash leaves in the state directory, removed at start: the folders and outputs of jobs
/// the log does not know (purged by retention just before a crash), the folders of completed jobs
/// (the crash came between the `complete` event and the folder's removal), and half-written files
/// (`*.partial*`) in the folders of jobs that will run again (they keep their stage results, which
/// a resumed job reuses).
fn sweep_job_files(state_dir: &Path, views: &Views) {
    let known = |name: &str| -> Option<Option<JobState>> {
        let id: JobId = name.parse().ok()?;
        Some(views.head(id).map(|h| h.state))
    };
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(state_dir.join("jobs")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match known(&name) {
                Some(None) | Some(Some(JobState::Completed))
                    if std::fs::remove_dir_all(&path).is_ok() =>
                {
                    removed += 1;
                }
                Some(None) | Some(Some(JobState::Completed)) => {}
                Some(Some(_)) => {
                    for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                        if f.file_name().to_string_lossy().contains(".partial") {
                            let _ = std::fs::remove_file(f.path());
                        }
                    }
                }
                None => {}
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(state_dir.join("output")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or_default();
            if known(stem) == Some(None) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        info!(
            removed,
            "removed what crashed jobs left in the state directory"
        );
    }
}

/// Jobs that were running when the previous run died: interrupted, then requeued or failed.
async fn recover(journal: &Recipient<Append>, views: &Views) -> anyhow::Result<()> {
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

impl CoreTasks {
    /// The journal itself, for tests that write behind the scheduler's back.
    #[cfg(test)]
    pub(crate) fn journal(&self) -> Recipient<Append> {
        self.journal.clone().recipient()
    }

    /// Shutdown step 2: the scheduler admits nothing and running jobs record their interruption
    /// (waiting at most `deadline`; the next start recovers jobs still running then).
    pub async fn stop_jobs(&self, deadline: Duration) {
        match tokio::time::timeout(deadline, self.scheduler.send(Shutdown)).await {
            Ok(_) => info!("all jobs stopped"),
            Err(_) => {
                warn!("jobs still stopping at the deadline; the next start will recover them")
            }
        }
    }

    /// Shutdown's last step: the journal commits and answers every append accepted so far (the
    /// final flush), stops, and its thread is joined.
    pub async fn close_journal(self) {
        if self.journal.send(Close).await.is_err() {
            warn!("the journal had already stopped");
        }
        let arbiter = self.journal_arbiter;
        arbiter.stop();
        let joined = tokio::task::spawn_blocking(move || arbiter.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            warn!("the journal thread did not end cleanly");
        }
        info!("journal closed");
    }
}

impl Core {
    // ---- writes: all through the scheduler ----

    /// Queues a job; answers once its `queued` event is durable.
    pub async fn submit(&self, request: &JobRequest) -> Result<JobId, CoreError> {
        let done = self
            .submit_batch(std::slice::from_ref(request), None)
            .await?;
        done.jobs
            .first()
            .copied()
            .ok_or_else(|| SchedulerError::Internal("a submit created no job".into()).into())
    }

    /// Queues jobs in one durable commit, all or none; answers their ids in the requests' order.
    /// Under `key` (an `Idempotency-Key` and the body's digest) a key already bound to the same
    /// body answers that submit's jobs and creates nothing; to another body, `KeyConflict`.
    pub async fn submit_batch(
        &self,
        requests: &[JobRequest],
        key: Option<IdempotencyKey>,
    ) -> Result<Submitted, CoreError> {
        Ok(self
            .inner
            .scheduler
            .send(Submit::new(requests, key))
            .await??)
    }

    pub async fn cancel(&self, job: JobId, by: Caller) -> Result<CancelOutcome, CoreError> {
        Ok(self.inner.scheduler.send(Cancel { job, by }).await??)
    }

    /// Cancels the running job, else the newest queued one.
    pub async fn cancel_active(&self, by: Caller) -> Result<JobId, CoreError> {
        Ok(self.inner.scheduler.send(CancelActive { by }).await??)
    }

    pub async fn retry(&self, job: JobId, by: Caller) -> Result<(), CoreError> {
        Ok(self.inner.scheduler.send(Retry { job, by }).await??)
    }

    pub async fn set_paused(&self, paused: bool, by: Caller) -> Result<(), CoreError> {
        Ok(self
            .inner
            .scheduler
            .send(SetPaused { paused, by })
            .await??)
    }

    pub async fn set_concurrency(&self, limit: u32, by: Caller) -> Result<(), CoreError> {
        Ok(self
            .inner
            .scheduler
            .send(SetConcurrency { limit, by })
            .await??)
    }

    /// Starts no new job; resolves when none runs any more.
    pub async fn drain(&self, by: Caller) -> Result<(), CoreError> {
        Ok(self.inner.scheduler.send(Drain { by }).await?)
    }

    /// Records an admin event of the daemon pseudo-job (`by` is added to the payload).
    pub async fn admin_event(
        &self,
        message: String,
        payload: Value,
        by: Caller,
    ) -> Result<(), CoreError> {
        let msg = RecordAdmin {
            message,
            payload,
            by,
        };
        Ok(self.inner.scheduler.send(msg).await??)
    }

    /// Records one webhook attempt of `job` (a `webhook` event); answers its id.
    pub async fn record_webhook(&self, job: JobId, event: NewEvent) -> Result<EventId, CoreError> {
        Ok(self
            .inner
            .scheduler
            .send(RecordWebhook { job, event })
            .await??)
    }

    /// Removes finished jobs older than `older_than_days` days with their events, folders and
    /// outputs (retention; `automatic` for the daemon's own sweep).
    pub async fn purge(
        &self,
        older_than_days: u32,
        by: Caller,
        automatic: bool,
    ) -> Result<PurgeReport, CoreError> {
        let msg = PurgeFinished {
            older_than_days,
            by,
            automatic,
        };
        Ok(self.inner.scheduler.send(msg).await??)
    }

    /// Makes `config` the one new jobs and handlers use.
    pub async fn set_config(&self, config: Arc<Config>) -> Result<(), CoreError> {
        self.inner
            .scheduler
            .send(SetConfig {
                config: config.clone(),
            })
            .await?;
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Asks the daemon to stop (signals, a finished drain).
    pub fn request_stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    // ---- reads ----

    pub fn job(&self, job: JobId) -> Option<Arc<JobView>> {
        self.inner.views.view(job)
    }

    /// See [`Views::webhook_candidates`].
    pub fn webhook_candidates(&self, since_ms: i64) -> Vec<(JobId, crate::views::Head, bool)> {
        self.inner.views.webhook_candidates(since_ms)
    }

    /// Jobs newest first, optionally of one state.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Vec<Arc<JobView>> {
        self.inner.views.list(state, limit)
    }

    pub fn counts(&self) -> Counts {
        self.inner.views.counts()
    }

    /// The largest committed event id.
    pub fn last_id(&self) -> EventId {
        self.inner.views.last_id()
    }

    /// A receiver that changes whenever `job` gets a new event.
    pub fn subscribe(&self, job: JobId) -> Option<watch::Receiver<EventId>> {
        self.inner.views.subscribe(job)
    }

    /// A receiver that changes after every commit.
    pub fn subscribe_all(&self) -> watch::Receiver<EventId> {
        self.inner.views.subscribe_all()
    }

    /// The events page of `job` (`None`: the daemon's admin history) after `after`, at most
    /// `limit`: the one implementation behind `GET /api/jobs/:id/events` and `ctl events`. The
    /// page's `body` starts with `prefix`.
    pub async fn events_page(
        &self,
        job: Option<JobId>,
        after: EventId,
        limit: usize,
        prefix: &'static [u8],
    ) -> Result<EventsPage, CoreError> {
        let (target, upto, state) = match job {
            Some(j) => {
                // The head is enough: an old finished job is not folded for a page of its events.
                let h = self.inner.views.head(j).ok_or(CoreError::JobNotFound)?;
                (j, h.last_event_id, Some(h.state))
            }
            None => (JobId::DAEMON, self.last_id(), None),
        };
        let (body, count, last) = self
            .blocking_read(limit, move |store| {
                let cap = 128 + prefix.len() + limit.min(upto.saturating_sub(after) as usize) * 160;
                let mut out = Vec::with_capacity(cap);
                out.extend_from_slice(prefix);
                out.push(b'[');
                let (n, last) = store.read_job_wire(target, after, upto, limit, &mut out)?;
                out.push(b']');
                Ok((out, n, last))
            })
            .await?;
        let last_event_id = if count == 0 { upto } else { last };
        Ok(EventsPage {
            body,
            count,
            last_event_id,
            more: count >= limit && last_event_id < upto,
            state,
        })
    }

    /// Decoded events of `job` with `after < id <= upto`, at most `limit` (for followers that
    /// look at each event).
    pub async fn read_events(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, CoreError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        self.blocking_read(limit, move |store| store.read_job(job, after, upto, limit))
            .await
    }

    /// Decoded events of every job with id > `after`, ascending, at most `limit` (the daemon-wide
    /// feed followers such as the webhook dispatcher read).
    pub async fn read_since(&self, after: EventId, limit: usize) -> Result<Vec<Event>, CoreError> {
        self.blocking_read(limit, move |store| store.read_since(after, limit))
            .await
    }

    /// Decoded events of every job with `after < id <= upto`, ascending, at most `limit` (the
    /// daemon-wide SSE stream, which reads only what the views have published).
    pub async fn read_all_events(
        &self,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, CoreError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let span = usize::try_from(upto - after).unwrap_or(usize::MAX);
        let mut events = self.read_since(after, limit.min(span)).await?;
        events.retain(|e| e.id <= upto);
        Ok(events)
    }

    /// Runs a read of the log: inline when the page is small, else on the blocking pool.
    async fn blocking_read<T: Send + 'static>(
        &self,
        limit: usize,
        read: impl FnOnce(&Store) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, CoreError> {
        if limit <= INLINE_READ_LIMIT {
            return Ok(read(&self.inner.store)?);
        }
        let store = self.inner.store.clone();
        Ok(tokio::task::spawn_blocking(move || read(&store)).await??)
    }

    /// Writes a consistent copy of the log to `dest` (a new file); answers the events copied.
    pub async fn backup(&self, dest: PathBuf) -> Result<u64, CoreError> {
        let store = self.inner.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.backup(&dest)).await??)
    }

    // ---- the daemon's own state ----

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// A receiver that turns `true` when the daemon begins to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.clone()
    }

    pub async fn scheduler_status(&self) -> Result<SchedulerStatus, CoreError> {
        Ok(self.inner.scheduler.send(GetStatus).await?)
    }

    /// The error that broke the event log, once it has failed (the daemon then stops and exits
    /// non-zero; every write is answered with [`crate::store::AppendError::restart_message`]).
    pub fn log_fault(&self) -> Option<Fault> {
        self.inner.faults.borrow().clone()
    }

    /// Resolves with the fault when the event log fails.
    pub async fn log_failed(&self) -> Fault {
        let mut rx = self.inner.faults.clone();
        let fault = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|f| f.clone());
        match fault {
            Some(f) => f,
            // The journal is gone without a fault (a normal shutdown): nothing to report.
            None => std::future::pending().await,
        }
    }

    /// Whether the event log is writable and the journal and the scheduler both answer within
    /// `timeout`; else who is not well (the watchdog's test).
    pub async fn liveness(&self, timeout: Duration) -> Result<(), &'static str> {
        if self.log_fault().is_some() {
            return Err("event log");
        }
        match tokio::time::timeout(timeout, self.inner.liveness.send(Ping)).await {
            Ok(Ok(())) => {}
            _ => return Err("journal"),
        }
        match tokio::time::timeout(timeout, self.inner.scheduler.send(GetStatus)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err("scheduler"),
        }
    }

    /// A JSON summary of the daemon (`ctl status`).
    pub async fn status_json(&self) -> Value {
        let sched = self.scheduler_status().await.ok();
        let counts = self.counts();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": self.started().elapsed().as_secs(),
            "paused": sched.as_ref().map(|s| s.paused),
            "draining": sched.as_ref().map(|s| s.draining),
            "concurrency": sched.as_ref().map(|s| s.concurrency),
            "queued": counts.queued,
            "running": counts.running,
            "finished": counts.completed + counts.failed + counts.cancelled,
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "lastEventId": self.last_id(),
            "eventLog": match self.log_fault() {
                None => "ok".to_string(),
                Some(f) => f.restart_message(),
            },
            "databaseBytes": self.inner.store.size_bytes(),
            "freeDiskBytes": free_disk_bytes(self.state_dir()),
            "stateDir": self.state_dir().display().to_string(),
        })
    }
}

impl EventsPage {
    /// Appends `,"state":...,"lastEventId":N,"more":b` (the fields every events answer ends with).
    pub fn write_tail(&self, out: &mut Vec<u8>) {
        let state = match self.state {
            Some(s) => format!("\"{}\"", s.as_str()),
            None => "null".into(),
        };
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            r#","state":{state},"lastEventId":{},"more":{}"#,
            self.last_event_id, self.more
        );
    }
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
    let store = Arc::new(Store::open(&path)?);
    let t = Instant::now();
    let (views, report) = Views::replay(&store).map_err(|e| {
        if e.is_damage() {
            anyhow::Error::new(store::OpenError::Damaged {
                path: path.clone(),
                reason: e.to_string(),
            })
        } else {
            anyhow::Error::new(e).context(format!("cannot replay the event log {}", path.display()))
        }
    })?;
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
    Ok((store, Arc::new(views)))
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

impl From<JournalError> for CoreError {
    fn from(e: JournalError) -> Self {
        CoreError::Scheduler(SchedulerError::Journal(e))
    }
}
