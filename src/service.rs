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
use crate::actors::journal::{Append, AppendAll, Close, Fault, Journal, JournalError, Ping, Purge};
use crate::actors::scheduler::{
    Caller, Cancel, CancelActive, CancelOutcome, Drain, GetStatus, IdempotencyKey, PurgeFinished,
    PurgeReport, RecordAdmin, RecordWebhook, Retry, Scheduler, SchedulerError, SchedulerStatus,
    SetConcurrency, SetConfig, SetPaused, Shutdown, Submit, Submitted,
};
use crate::cluster::{Cluster, Follower, SharedJournal};
use crate::config::Config;
use crate::event::{Event, EventId, JobId, JobState, JobView, Kind, Level, NewEvent};
use crate::request::JobRequest;
use crate::store::contract::{EventStore, Owner};
use crate::store::postgres::PgStore;
use crate::store::{self, BackupError, ReadError, Store};
use crate::views::{Cached, Counts, Head, Views};

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
    /// The shared store could not answer a read.
    #[error("The event store is unreachable ({0}); try again.")]
    Store(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Where the core's history lives.
#[derive(Clone)]
pub enum Log {
    /// The embedded redb log of this daemon alone.
    Local(Arc<Store>),
    /// A store several daemons share.
    Shared(Arc<SharedLog>),
}

/// A shared store and this daemon's place on it.
pub struct SharedLog {
    pub store: Arc<PgStore>,
    pub follower: Arc<Follower>,
    pub owner: Owner,
    pub started_ms: i64,
}

/// Connects to the shared store of `config.store.url` (applying its migrations), loads every job's
/// head (no event, no jsonb decoded) and the whole views of the live, recently finished and
/// idempotency-keyed jobs, and starts following it. Inside the runtime.
pub async fn open_shared(config: &Config) -> anyhow::Result<(Log, Arc<Views>)> {
    let url = &config.store.url;
    let pg = PgStore::connect(url).await.with_context(|| {
        format!(
            "cannot open the event store {}",
            crate::store::redact_url(url)
        )
    })?;
    let pg = Arc::new(pg);
    let t = Instant::now();
    let keys_since = crate::event::now_ms().saturating_sub(crate::event::IDEMPOTENCY_WINDOW_MS);
    let start = pg
        .load_cache(crate::views::RECENT_FINISHED, keys_since)
        .await?;
    let (jobs, whole, last) = (start.heads.len(), start.whole.len(), start.last);
    let views = Arc::new(Views::from_heads(start.heads, start.whole, last));
    info!(
        jobs,
        whole,
        last_id = last,
        millis = t.elapsed().as_millis() as u64,
        "shared store heads loaded"
    );
    let store: Arc<dyn EventStore> = pg.clone();
    let follower = Follower::new(store, views.clone());
    follower.take_own_commits();
    follower.spawn();
    let owner = Owner {
        daemon: config.daemon_name(),
        host: crate::systemd::hostname(),
        pid: std::process::id(),
    };
    let shared = SharedLog {
        store: pg,
        follower,
        owner,
        started_ms: crate::event::now_ms(),
    };
    Ok((Log::Shared(Arc::new(shared)), views))
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
    log: Log,
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
    /// For tests that write behind the scheduler's back.
    #[cfg_attr(not(test), allow(dead_code))]
    journal: Recipient<Append>,
    close: Recipient<Close>,
    /// The redb journal's thread (a shared store's journal lives on the System thread).
    journal_arbiter: Option<Arbiter>,
    /// A shared store's heartbeat task and the store, to leave the cluster at the end.
    heartbeat: Option<(tokio::task::JoinHandle<()>, Arc<SharedLog>)>,
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
    log: Log,
    views: Arc<Views>,
    paused: bool,
    scope: Scope,
) -> anyhow::Result<(Core, CoreTasks)> {
    // Pause is recorded in the log; a restart keeps it (as do the `--paused` flag and config).
    let recorded_pause = match &log {
        Log::Local(store) => store
            .read_job(JobId::DAEMON, 0, u64::MAX, usize::MAX)?
            .iter()
            .filter_map(crate::store::contract::pause_state)
            .next_back()
            .unwrap_or(false),
        Log::Shared(sh) => sh.store.paused().await?,
    };
    let was_paused = scope == Scope::All && (config.daemon.paused || recorded_pause);
    let paths = JobPaths {
        state_dir: state_dir.clone(),
        songs_dir: config.songs_dir(),
    };
    let (journal, journal_all, close, liveness, faults, journal_arbiter, cluster, purger) =
        match &log {
            Log::Local(store) => {
                let arbiter = Arbiter::new();
                let journal = Journal::new(store.clone(), views.clone());
                let faults = journal.faults();
                let journal = Journal::start_in_arbiter(&arbiter.handle(), move |_| journal);
                if scope == Scope::All {
                    recover(&journal.clone().recipient(), &views).await?;
                    let (dir, v) = (state_dir.clone(), views.clone());
                    if let Err(e) =
                        tokio::task::spawn_blocking(move || sweep_job_files(&dir, &v)).await
                    {
                        warn!(error = %e, "the start-up sweep of job folders failed");
                    }
                }
                (
                    journal.clone().recipient::<Append>(),
                    journal.clone().recipient::<AppendAll>(),
                    journal.clone().recipient::<Close>(),
                    journal.clone().recipient::<Ping>(),
                    faults,
                    Some(arbiter),
                    None,
                    Some(journal.recipient::<Purge>()),
                )
            }
            Log::Shared(sh) => {
                // Jobs left running by a daemon that died are rescued once their leases expire.
                let store: Arc<dyn EventStore> = sh.store.clone();
                let journal =
                    SharedJournal::new(store.clone(), sh.follower.clone(), views.clone()).start();
                let cluster = Cluster {
                    store,
                    follower: sh.follower.clone(),
                    owner: sh.owner.clone(),
                    lease: Duration::from_secs(config.daemon.lease_secs),
                    renew_every: Duration::from_secs(config.daemon.renew_secs),
                };
                (
                    journal.clone().recipient::<Append>(),
                    journal.clone().recipient::<AppendAll>(),
                    journal.clone().recipient::<Close>(),
                    journal.recipient::<Ping>(),
                    // A shared store's outage is not fatal: the channel never fires.
                    watch::channel(None).1,
                    None,
                    Some(cluster),
                    // Retention purges through the store itself (the scheduler's cluster).
                    None,
                )
            }
        };
    let scheduler = Scheduler::new(
        journal.clone(),
        faults.clone(),
        journal_all,
        views.clone(),
        config.clone(),
        paths,
        paused || was_paused,
    );
    let scheduler = match scope {
        Scope::All => match purger {
            Some(p) => scheduler.with_purger(p),
            None => scheduler,
        },
        Scope::Own => scheduler.own_jobs_only(),
    };
    let scheduler = match cluster {
        Some(c) => scheduler.in_cluster(c),
        None => scheduler,
    }
    .start();
    let heartbeat = match &log {
        Log::Shared(sh) => Some((
            tokio::spawn(heartbeat(
                sh.clone(),
                views.clone(),
                Duration::from_secs(config.daemon.renew_secs),
            )),
            sh.clone(),
        )),
        Log::Local(_) => None,
    };
    let (stop, stopping) = watch::channel(false);
    let core = Core {
        inner: Arc::new(Inner {
            log,
            views,
            scheduler: scheduler.clone(),
            liveness,
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
        close,
        journal_arbiter,
        heartbeat,
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

/// A shared store: records every `every` that this daemon is alive and which jobs it runs.
async fn heartbeat(shared: Arc<SharedLog>, views: Arc<Views>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mine: Vec<JobId> = views
            .list(Some(JobState::Running), usize::MAX)
            .iter()
            .filter(|v| owner_name(v) == Some(shared.owner.daemon.as_str()))
            .map(|v| v.id)
            .collect();
        if let Err(e) = shared
            .store
            .heartbeat(&shared.owner, shared.started_ms, &mine)
            .await
        {
            warn!(error = %e, "cannot record this daemon's heartbeat");
        }
    }
}

/// The daemon named by a running job's owner (`None` for a single daemon's jobs).
pub fn owner_name(view: &JobView) -> Option<&str> {
    view.owner.as_ref()?.get("daemon")?.as_str()
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
            .send(Append::new(view.id, events))
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
        self.journal.clone()
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
        if self.close.send(Close).await.is_err() {
            warn!("the journal had already stopped");
        }
        if let Some(arbiter) = self.journal_arbiter {
            arbiter.stop();
            let joined = tokio::task::spawn_blocking(move || arbiter.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                warn!("the journal thread did not end cleanly");
            }
        }
        if let Some((task, shared)) = self.heartbeat {
            task.abort();
            let _ = task.await;
            if let Err(e) = shared.store.leave(&shared.owner.daemon).await {
                warn!(error = %e, "cannot remove this daemon's heartbeat");
            }
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

    /// A job's view from the cache (synchronous; a redb log's folded job is folded from it
    /// inline). On a shared store an older finished job shows its head's fields only (state, ids,
    /// attempt, times): readers that show a job whole use [`Core::job_view`].
    pub fn job(&self, job: JobId) -> Option<Arc<JobView>> {
        self.inner.views.view(job)
    }

    /// A job's whole view: from the cache, or (an older finished job the cache holds as a head)
    /// read from the log, off the async workers: a redb log on the blocking pool, a shared store
    /// by its async client.
    pub async fn job_view(&self, job: JobId) -> Result<Option<Arc<JobView>>, CoreError> {
        let head = match self.inner.views.cached(job) {
            None => return Ok(None),
            Some(Cached::Whole(v)) => return Ok(Some(v)),
            Some(Cached::Folded(h)) => h,
        };
        self.unfold(job, head).await.map(Some)
    }

    /// The whole view of a job the cache holds as `head`.
    async fn unfold(&self, job: JobId, head: Head) -> Result<Arc<JobView>, CoreError> {
        match &self.inner.log {
            Log::Shared(sh) => {
                let v = crate::cluster::whole_of(sh.store.as_ref(), job, &head, head.last_event_id)
                    .await
                    .map_err(|e| CoreError::Store(e.to_string()))?;
                Ok(Arc::new(v))
            }
            Log::Local(_) => {
                let views = self.inner.views.clone();
                let v = tokio::task::spawn_blocking(move || views.fold_local(job, &head)).await?;
                Ok(Arc::new(v))
            }
        }
    }

    /// Jobs newest first, optionally of one state, created before the job whose first event is
    /// `before` (paging), whole: the older finished ones read from the log, only those returned.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        before: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Arc<JobView>>, CoreError> {
        let page = self.inner.views.list_cached(state, before, limit);
        let mut out = Vec::with_capacity(page.len());
        for (id, c) in page {
            out.push(match c {
                Cached::Whole(v) => v,
                Cached::Folded(h) => self.unfold(id, h).await?,
            });
        }
        Ok(out)
    }

    /// A job's head (state, ids, times), whole or folded: no log is read.
    pub fn head(&self, job: JobId) -> Option<Head> {
        self.inner.views.head(job)
    }

    /// How many jobs the cache holds whole (live and recently finished); the others are heads.
    pub fn whole_len(&self) -> usize {
        self.inner.views.whole_len()
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
        let cap = 128 + prefix.len() + limit.min(upto.saturating_sub(after) as usize) * 160;
        let (body, count, last) = match &self.inner.log {
            Log::Local(_) => {
                self.blocking_read(limit, move |store| {
                    let mut out = Vec::with_capacity(cap);
                    out.extend_from_slice(prefix);
                    out.push(b'[');
                    let (n, last) = store.read_job_wire(target, after, upto, limit, &mut out)?;
                    out.push(b']');
                    Ok((out, n, last))
                })
                .await?
            }
            Log::Shared(sh) => {
                let mut out = Vec::with_capacity(cap);
                out.extend_from_slice(prefix);
                out.push(b'[');
                let (n, last) = sh
                    .store
                    .read_job_wire(target, after, upto, limit, &mut out)
                    .await
                    .map_err(|e| CoreError::Store(e.to_string()))?;
                out.push(b']');
                (out, n, last)
            }
        };
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
        if let Log::Shared(sh) = &self.inner.log {
            let mut evs = sh
                .store
                .read_job(job, after, limit)
                .await
                .map_err(|e| CoreError::Store(e.to_string()))?;
            evs.retain(|e| e.id <= upto);
            return Ok(evs);
        }
        self.blocking_read(limit, move |store| store.read_job(job, after, upto, limit))
            .await
    }

    /// Decoded events of every job with id > `after`, ascending, at most `limit` (the daemon-wide
    /// feed followers such as the webhook dispatcher read).
    pub async fn read_since(&self, after: EventId, limit: usize) -> Result<Vec<Event>, CoreError> {
        if let Log::Shared(sh) = &self.inner.log {
            return sh
                .store
                .read_since(after, limit)
                .await
                .map_err(|e| CoreError::Store(e.to_string()));
        }
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
        let Log::Local(store) = &self.inner.log else {
            return Err(CoreError::Unsupported("not a redb log"));
        };
        if limit <= INLINE_READ_LIMIT {
            return Ok(read(store)?);
        }
        let store = store.clone();
        Ok(tokio::task::spawn_blocking(move || read(&store)).await??)
    }

    /// Writes a consistent copy of the log to `dest` (a new file); answers the events copied.
    pub async fn backup(&self, dest: PathBuf) -> Result<u64, CoreError> {
        let Log::Local(store) = &self.inner.log else {
            return Err(CoreError::Unsupported(
                "backup copies a redb event log, and this daemon's store is PostgreSQL: back it up \
                 with pg_dump (e.g. `pg_dump --format=custom --file=reelsmith.dump <database>`)",
            ));
        };
        let store = store.clone();
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

    /// Whether the core runs on a store several daemons share.
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.log, Log::Shared(_))
    }

    /// Why a shared store cannot be reached now (it is not fatal: the daemon waits for it).
    pub fn store_fault(&self) -> Option<String> {
        match &self.inner.log {
            Log::Local(_) => None,
            Log::Shared(sh) => sh.follower.fault(),
        }
    }

    /// The store engine (`redb`, `postgres`) and, for a shared store, its schema version and the
    /// live daemons with the jobs each runs.
    pub async fn store_json(&self) -> Value {
        match &self.inner.log {
            Log::Local(_) => {
                json!({ "engine": "redb", "schemaVersion": crate::store::codec::VERSION_1 })
            }
            Log::Shared(sh) => {
                let lease = Duration::from_secs(self.config().daemon.lease_secs);
                let daemons = match sh.store.live_daemons(lease).await {
                    Ok(d) => serde_json::to_value(d).unwrap_or(Value::Null),
                    Err(e) => json!({ "error": e.to_string() }),
                };
                json!({
                    "engine": "postgres",
                    "schemaVersion": crate::store::postgres::SCHEMA_VERSION,
                    "daemon": sh.owner.daemon,
                    "reachable": sh.follower.fault().is_none(),
                    "error": sh.follower.fault(),
                    "daemons": daemons,
                })
            }
        }
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
        if self.store_fault().is_some() {
            return Err("event store");
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
            "jobsKeptWhole": self.whole_len(),
            "eventLog": match self.log_fault() {
                None => "ok".to_string(),
                Some(f) => f.restart_message(),
            },
            "databaseBytes": match &self.inner.log {
                Log::Local(store) => Some(store.size_bytes()),
                Log::Shared(_) => None,
            },
            "store": self.store_json().await,
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

/// The log a config names: the redb log opened by [`open_log`] before the runtime (`local`), or
/// the shared store of `store.url`, opened here.
pub async fn open_any(
    config: &Config,
    local: Option<(Arc<Store>, Arc<Views>)>,
) -> anyhow::Result<(Log, Arc<Views>)> {
    match local {
        Some((store, views)) => Ok((Log::Local(store), views)),
        None => open_shared(config).await,
    }
}

/// Opens the redb log, unless the config names a shared store (then `None`: [`open_any`] opens
/// that inside the runtime).
pub fn open_local(config: &Config, dir: &Path) -> anyhow::Result<Option<(Arc<Store>, Arc<Views>)>> {
    if config.store.url.is_empty() {
        open_log(dir).map(Some)
    } else {
        Ok(None)
    }
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
