//! The scheduler: the FIFO queue, the concurrency limit, pause/resume/drain, and cancel/retry routing.
//!
//! Every decision is first recorded through the journal and only then acted on: a job is in the
//! queue because its `queued` event committed (the queue itself is `Views::queued`, derived from the
//! committed views; the scheduler keeps no copy of it); a queued job is cancelled by committing
//! `cancel_requested` + `cancelled`; a running job is cancelled by committing `cancel_requested` and
//! then telling its actor to stop (the actor records `cancelled`). Admin changes (pause, resume,
//! concurrency, and the control socket's backup and reload through [`RecordAdmin`]) are recorded as
//! `admin` events of the daemon pseudo-job, with the caller's uid: the scheduler is the one path by
//! which the rest of the daemon writes. On a shared store the writes that need the store's own
//! transaction go to it directly: claims (and `generate`'s submit, created and claimed at once),
//! lease renewals and rescues, and retention's purges.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::actors::job::{interruption_events, JobActor, JobEnded, JobPaths, Stop};
use crate::actors::journal::{Append, AppendAll, Fault, JournalError, Purge, Refusal};
use crate::cluster::{Cluster, Remote};
use crate::config::Config;
use crate::event::{now_ms, EventId, IdempotencyTag, JobId, JobState, Kind, Level, NewEvent};
use crate::pipeline::StopReason;
use crate::request::JobRequest;
use crate::store::contract::{Claimed, PurgeNote};
use crate::views::Views;

/// Who asked for a change: `None` for HTTP callers, else the Unix uid of a control-socket peer.
pub type Caller = Option<u32>;

/// Queues new jobs (one, or a batch) in one durable commit, all or none. Replies with the jobs'
/// ids, in the requests' order, once their `queued` events are durable. Under an idempotency key
/// already bound to the same body it creates nothing and replies with that submit's jobs.
#[derive(Message)]
#[rtype(result = "Result<Submitted, SchedulerError>")]
pub struct Submit {
    jobs: Vec<NewJob>,
    key: Option<IdempotencyKey>,
}

/// An `Idempotency-Key` and the digest of the body it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub digest: String,
}

/// What a submit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub jobs: Vec<JobId>,
    /// The key was bound to this body already: these are that submit's jobs, nothing was created.
    pub replayed: bool,
}

/// One job of a [`Submit`], encoded by the caller (off the scheduler's thread).
struct NewJob {
    /// The validated request as stored in the `queued` event.
    request: serde_json::Value,
    /// The request's warnings (ignored fields): the job's first log events, committed with
    /// the `queued` event.
    warnings: Vec<NewEvent>,
}

impl Submit {
    pub fn new<'a>(
        requests: impl IntoIterator<Item = &'a JobRequest>,
        key: Option<IdempotencyKey>,
    ) -> Submit {
        let jobs = requests
            .into_iter()
            .map(|request| NewJob {
                request: request.to_json(),
                warnings: request
                    .warnings
                    .iter()
                    .map(|w| NewEvent::warning(w.to_string()).with_payload(w.payload()))
                    .collect(),
            })
            .collect();
        Submit { jobs, key }
    }
}

/// Cancels one job.
#[derive(Message)]
#[rtype(result = "Result<CancelOutcome, SchedulerError>")]
pub struct Cancel {
    pub job: JobId,
    pub by: Caller,
}

/// Cancels the running job, else the newest queued one (MoneyPrinter's `POST /api/cancel`).
#[derive(Message)]
#[rtype(result = "Result<JobId, SchedulerError>")]
pub struct CancelActive {
    pub by: Caller,
}

/// Puts a failed or cancelled job back in the queue as a new attempt.
#[derive(Message)]
#[rtype(result = "Result<(), SchedulerError>")]
pub struct Retry {
    pub job: JobId,
    pub by: Caller,
}

#[derive(Message)]
#[rtype(result = "Result<(), SchedulerError>")]
pub struct SetPaused {
    pub paused: bool,
    pub by: Caller,
}

#[derive(Message)]
#[rtype(result = "Result<(), SchedulerError>")]
pub struct SetConcurrency {
    pub limit: u32,
    pub by: Caller,
}

/// Starts no new job; resolves when no job runs any more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub by: Caller,
}

/// Stops admitting jobs, tells running ones to stop (they record the interruption) and resolves
/// when they all have.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Removes finished jobs whose end is older than `older_than_days` days: their events (through
/// the journal), job folders and outputs; then records an admin event saying how many.
#[derive(Message)]
#[rtype(result = "Result<PurgeReport, SchedulerError>")]
pub struct PurgeFinished {
    pub older_than_days: u32,
    pub by: Caller,
    /// The hourly retention sweep (recorded as `via: retention`), not a person.
    pub automatic: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub jobs: u64,
    pub events: u64,
}

/// Jobs purged in one journal transaction.
const PURGE_CHUNK: usize = 1000;

/// Records an admin event of the daemon pseudo-job (backup, reload) with the caller.
#[derive(Message)]
#[rtype(result = "Result<(), SchedulerError>")]
pub struct RecordAdmin {
    pub message: String,
    /// The event's payload; `by` is added to it.
    pub payload: Value,
    pub by: Caller,
}

/// Records one webhook attempt (a `webhook` event) of a job; the reply is its event id.
#[derive(Message)]
#[rtype(result = "Result<EventId, SchedulerError>")]
pub struct RecordWebhook {
    pub job: JobId,
    pub event: NewEvent,
}

/// A snapshot of the scheduler's own state (also the watchdog's liveness ping).
#[derive(Message)]
#[rtype(result = "SchedulerStatus")]
pub struct GetStatus;

/// Swaps the config that jobs started from now on receive (a reload). Concurrency is not taken
/// from it: that changes only through `SetConcurrency`, which records an admin event.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetConfig {
    pub config: Arc<Config>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerStatus {
    pub paused: bool,
    pub draining: bool,
    pub concurrency: u32,
    pub queue_depth: usize,
    pub running: Vec<JobId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    CancelledQueued,
    /// The job is running and has been told to stop.
    Requested,
    /// The job had already ended or a cancel was already under way: nothing to do.
    NoOp,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SchedulerError {
    #[error("Job not found.")]
    NotFound,
    #[error("No active job found.")]
    NoActive,
    #[error("job {job} is {state}: only failed or cancelled jobs can be retried")]
    NotRetryable { job: JobId, state: &'static str },
    #[error("the daemon is shutting down and accepts no new jobs")]
    ShuttingDown,
    #[error("concurrency must be between 1 and 64")]
    BadConcurrency,
    #[error("Idempotency-Key `{key}` was already used with a different request body in the last 24 hours; use a new key for a new request.")]
    KeyConflict { key: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MailboxError> for SchedulerError {
    fn from(e: MailboxError) -> Self {
        SchedulerError::Internal(format!("journal unreachable: {e}"))
    }
}

/// The first wait after a failed start or an end that could not be recorded; it doubles each time.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait before try number `tries + 1`.
fn backoff(tries: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// A job whose `running` event could not be recorded.
struct StartFailures {
    tries: u32,
    /// When it may be started again; `None`: never in this run (given up).
    not_before: Option<Instant>,
}

/// An attempt that ended without its end being recorded (the log still shows it `running`).
struct Unrecorded {
    attempt: u32,
    tries: u32,
}

/// The event log failed (sent by the scheduler's fault watcher to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct LogFailed;

pub struct Scheduler {
    journal: Recipient<Append>,
    /// The journal's fault channel: once it holds an error, nothing starts and every write is
    /// answered with it.
    faults: watch::Receiver<Option<Fault>>,
    /// The journal again, for units of appends (batch submits).
    journal_all: Recipient<AppendAll>,
    views: Arc<Views>,
    config: Arc<Config>,
    paths: Arc<JobPaths>,
    running: HashMap<JobId, Addr<JobActor>>,
    /// Queued jobs whose cancel is being recorded: not started meanwhile (a start racing the
    /// cancel would run a job the log says was cancelled before execution).
    cancelling: HashSet<JobId>,
    /// `Some`: run only these jobs (the ones submitted here: `reelsmith generate`); `None`: all.
    own: Option<HashSet<JobId>>,
    /// Jobs whose start could not be recorded: held back with a growing wait, and failed once
    /// they have had as many tries as attempts (no hot loop of starts).
    start_failures: HashMap<JobId, StartFailures>,
    /// Attempts whose end could not be recorded: recorded here (interrupted, or cancelled) as soon
    /// as the log accepts it; until then they count as running for `CancelActive`.
    unrecorded: HashMap<JobId, Unrecorded>,
    /// The journal's purge (retention); `None` where nothing is ever purged.
    purger: Option<Recipient<Purge>>,
    paused: bool,
    /// `Some` on a shared store: jobs are claimed there (with leases), not picked from the views.
    cluster: Option<Cluster>,
    /// Claims sent to the shared store and not answered yet (they count against the limit).
    claiming: usize,
    /// `generate` on a shared store: its own jobs with a claim in flight.
    claiming_own: HashSet<JobId>,
    /// The epoch (attempt) of each running job claimed from the shared store, for its lease.
    epochs: HashMap<JobId, u32>,
    concurrency: u32,
    draining: bool,
    shutting_down: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl Scheduler {
    /// The jobs left queued by the previous run are in `views` already.
    pub fn new(
        journal: Recipient<Append>,
        faults: watch::Receiver<Option<Fault>>,
        journal_all: Recipient<AppendAll>,
        views: Arc<Views>,
        config: Arc<Config>,
        paths: JobPaths,
        paused: bool,
    ) -> Scheduler {
        Scheduler {
            own: None,
            start_failures: HashMap::new(),
            unrecorded: HashMap::new(),
            purger: None,
            journal,
            faults,
            journal_all,
            views,
            concurrency: config.daemon.concurrency,
            config,
            paths: Arc::new(paths),
            running: HashMap::new(),
            paused,
            cluster: None,
            claiming: 0,
            claiming_own: HashSet::new(),
            epochs: HashMap::new(),
            draining: false,
            shutting_down: false,
            idle_waiters: Vec::new(),
            cancelling: HashSet::new(),
        }
    }

    /// Where retention sends its deletions (the journal).
    pub fn with_purger(mut self, purger: Recipient<Purge>) -> Scheduler {
        self.purger = Some(purger);
        self
    }

    /// Runs only the jobs submitted through this scheduler (`reelsmith generate`).
    pub fn own_jobs_only(mut self) -> Scheduler {
        self.own = Some(HashSet::new());
        self
    }

    /// Claims jobs from a shared store (cluster mode) instead of picking them from the views.
    pub fn in_cluster(mut self, cluster: Cluster) -> Scheduler {
        self.cluster = Some(cluster);
        self
    }

    /// Cluster mode: claims up to the free slots from the shared store.
    fn claim(&mut self, cluster: Cluster, ctx: &mut Context<Self>) {
        let free = (self.concurrency as usize).saturating_sub(self.running.len() + self.claiming);
        if !self.admits() || self.views.queue_len() == 0 {
            return;
        }
        for _ in 0..free.min(self.views.queue_len()) {
            self.claiming += 1;
            let c = cluster.clone();
            let work = async move {
                let claimed = c.store.claim(&c.owner, c.lease).await;
                if let Ok(Some(cl)) = &claimed {
                    c.follower.catch_up(cl.view.last_event_id).await;
                }
                claimed
            };
            ctx.spawn(work.into_actor(self).map(|claimed, act, ctx| {
                act.claiming -= 1;
                match claimed {
                    Ok(Some(cl)) => {
                        act.start_claimed(cl, ctx);
                        act.pump(ctx);
                    }
                    Ok(None) => act.wake_idle(),
                    Err(e) => {
                        warn!(error = %e, "cannot claim a job from the shared store; trying again");
                        ctx.run_later(Duration::from_secs(1), |act, ctx| act.pump(ctx));
                    }
                }
            }));
        }
    }

    /// `generate` on a shared store: claims its own queued jobs by id (an attempt's end put one
    /// back in the queue), with a lease like a daemon's; a job another daemon claimed first is
    /// followed, not run.
    fn claim_own(&mut self, cluster: Cluster, ctx: &mut Context<Self>) {
        let free = (self.concurrency as usize).saturating_sub(self.running.len() + self.claiming);
        if !self.admits() || free == 0 {
            return;
        }
        let (running, claiming, own) = (&self.running, &self.claiming_own, &self.own);
        let (failures, now) = (&self.start_failures, Instant::now());
        let busy = |j| {
            running.contains_key(&j)
                || claiming.contains(&j)
                || own.as_ref().is_some_and(|o| !o.contains(&j))
                || failures
                    .get(&j)
                    .is_some_and(|f| f.not_before.is_none_or(|t| t > now))
        };
        let picked: Vec<JobId> = self
            .views
            .queued(free, busy)
            .iter()
            .filter(|v| !v.cancel_requested)
            .map(|v| v.id)
            .collect();
        for job in picked {
            self.claiming += 1;
            self.claiming_own.insert(job);
            let c = cluster.clone();
            let work = async move {
                let claimed = c.store.claim_job(job, Vec::new(), &c.owner, c.lease).await;
                if let Ok(Some(cl)) = &claimed {
                    c.follower.catch_up(cl.view.last_event_id).await;
                }
                claimed
            };
            ctx.spawn(work.into_actor(self).map(move |claimed, act, ctx| {
                act.claiming -= 1;
                act.claiming_own.remove(&job);
                match claimed {
                    Ok(Some(cl)) => act.start_claimed(cl, ctx),
                    Ok(None) => info!(job = %job, "the job was claimed elsewhere; following it"),
                    Err(e) => {
                        warn!(job = %job, error = %e, "cannot claim the job from the shared store; trying again");
                        ctx.run_later(Duration::from_secs(1), |act, ctx| act.pump(ctx));
                    }
                }
                act.wake_idle();
            }));
        }
    }

    /// `generate` on a shared store: each job is created and claimed (its `running` event, owner,
    /// epoch and lease) in one store transaction, so no daemon ever sees it queued, and runs here
    /// under a lease it renews like a daemon; if this process dies, a daemon rescues the job once
    /// the lease expires.
    fn submit_claimed(
        &mut self,
        c: Cluster,
        appends: Vec<Append>,
        jobs: Vec<JobId>,
    ) -> impl ActorFuture<Self, Output = Result<Submitted, SchedulerError>> {
        let n = appends.len();
        self.claiming += n;
        let work = async move {
            let mut claimed = Vec::with_capacity(n);
            for a in appends {
                match c.store.claim_job(a.job, a.events, &c.owner, c.lease).await {
                    Ok(Some(cl)) => {
                        c.follower.catch_up(cl.view.last_event_id).await;
                        claimed.push(cl);
                    }
                    Ok(None) => {
                        let e =
                            SchedulerError::Internal("the event store refused the new job".into());
                        return (claimed, Err(e));
                    }
                    Err(e) => {
                        let e = JournalError::Unavailable(format!(
                            "The event store is unreachable ({e}); try again."
                        ));
                        return (claimed, Err(e.into()));
                    }
                }
            }
            (claimed, Ok(()))
        };
        work.into_actor(self).map(move |(claimed, res), act, ctx| {
            act.claiming -= n;
            for cl in claimed {
                act.start_claimed(cl, ctx);
            }
            act.pump(ctx);
            res.map(|()| Submitted {
                jobs,
                replayed: false,
            })
        })
    }

    /// Runs a job the shared store gave this daemon.
    fn start_claimed(&mut self, claimed: Claimed, ctx: &mut Context<Self>) {
        let job = claimed.view.id;
        info!(job = %job, attempt = claimed.epoch, lease_until_ms = claimed.lease_until_ms, "job claimed");
        // The actor takes the job as it was before the claim's `running` event.
        let mut before = claimed.view;
        before.attempt = claimed.epoch.saturating_sub(1);
        let actor = JobActor::new(
            Arc::new(before),
            self.journal.clone(),
            self.views.clone(),
            ctx.address().recipient(),
            self.config.clone(),
            self.paths.clone(),
        )
        .claimed()
        .start();
        if self.shutting_down {
            actor.do_send(Stop(StopReason::Shutdown));
        }
        self.running.insert(job, actor);
        self.epochs.insert(job, claimed.epoch);
    }

    /// Cluster mode, every `renew_every`: renews the leases of the jobs running here (a lease
    /// found lost stops its job: another daemon took it over) and rescues expired ones.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        for (&job, &epoch) in &self.epochs {
            let c = c.clone();
            let work = async move { c.store.renew(job, epoch, c.lease).await };
            ctx.spawn(work.into_actor(self).map(move |held, act, _ctx| match held {
                Ok(true) => {}
                Ok(false) => {
                    if let Some(actor) = act.running.get(&job) {
                        warn!(job = %job, epoch, "the job's lease was lost; stopping its attempt here");
                        actor.do_send(Stop(StopReason::Shutdown));
                    }
                }
                Err(e) => warn!(job = %job, error = %e, "cannot renew the job's lease"),
            }));
        }
        let rescue = async move { c.store.rescue_expired().await };
        ctx.spawn(rescue.into_actor(self).map(|rescued, act, ctx| match rescued {
            Ok(jobs) if !jobs.is_empty() => {
                for j in &jobs {
                    warn!(job = %j, "rescued a job whose daemon stopped renewing its lease");
                }
                act.pump(ctx);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot look for expired leases"),
        }));
    }

    fn admits(&self) -> bool {
        !self.paused && !self.draining && !self.shutting_down && self.fault().is_none()
    }

    /// The error that broke the event log, if it has failed.
    fn fault(&self) -> Option<Fault> {
        self.faults.borrow().clone()
    }

    /// Refuses a write at once when the log has failed (the journal would refuse it anyway).
    fn refuse_if_failed(&self) -> Result<(), SchedulerError> {
        match self.fault() {
            Some(f) => Err(SchedulerError::Journal(JournalError::Fatal(f))),
            None => Ok(()),
        }
    }

    /// Starts queued jobs, oldest first, while the limit allows.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(c) = self.cluster.clone() {
            match self.own {
                None => self.claim(c, ctx),
                Some(_) => self.claim_own(c, ctx),
            }
            self.wake_idle();
            return;
        }
        let free = (self.concurrency as usize).saturating_sub(self.running.len());
        if self.admits() && free > 0 {
            let (running, cancelling, own) = (&self.running, &self.cancelling, &self.own);
            let (failures, now) = (&self.start_failures, Instant::now());
            let busy = |j| {
                running.contains_key(&j)
                    || cancelling.contains(&j)
                    || own.as_ref().is_some_and(|o| !o.contains(&j))
                    || failures
                        .get(&j)
                        .is_some_and(|f| f.not_before.is_none_or(|t| t > now))
            };
            for view in self.views.queued(free, busy) {
                if view.cancel_requested {
                    continue;
                }
                let job = view.id;
                info!(job = %job, attempt = view.attempt + 1, "job starting");
                let actor = JobActor::new(
                    view,
                    self.journal.clone(),
                    self.views.clone(),
                    ctx.address().recipient(),
                    self.config.clone(),
                    self.paths.clone(),
                )
                .start();
                self.running.insert(job, actor);
            }
        }
        self.wake_idle();
    }

    /// Queued jobs not yet being started.
    fn queue_depth(&self) -> usize {
        let starting = self
            .running
            .keys()
            .filter(|j| {
                self.views
                    .view(**j)
                    .is_some_and(|v| v.state == JobState::Queued)
            })
            .count();
        self.views.queue_len().saturating_sub(starting)
    }

    fn wake_idle(&mut self) {
        if self.running.is_empty() && self.claiming == 0 && (self.draining || self.shutting_down) {
            for w in self.idle_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// A job's `running` event could not be recorded: try again after a growing wait, and fail
    /// the job once it has had as many tries as it has attempts left.
    fn start_failed(&mut self, job: JobId, cause: String, ctx: &mut Context<Self>) {
        let Some(view) = self.views.view(job) else {
            return;
        };
        let allowed = view.max_attempts.saturating_sub(view.attempt).max(1);
        let f = self.start_failures.entry(job).or_insert(StartFailures {
            tries: 0,
            not_before: None,
        });
        f.tries += 1;
        if f.tries < allowed {
            let wait = backoff(f.tries);
            f.not_before = Some(Instant::now() + wait);
            warn!(job = %job, tries = f.tries, wait_ms = wait.as_millis() as u64, %cause, "the job's start could not be recorded; trying again later");
            ctx.run_later(wait, |act, ctx| act.pump(ctx));
            return;
        }
        f.not_before = None;
        let tries = f.tries;
        error!(job = %job, tries, %cause, "the job's start could not be recorded; giving up");
        let ev = NewEvent::new(
            Kind::Error,
            Level::Error,
            format!("Failed to start job: its start could not be recorded ({cause}); gave up after {tries} tries."),
        )
        .with_payload(json!({ "error": "StartNotRecorded", "retryable": true, "stage": "start" }));
        let send = self.journal.send(Append::one(job, ev));
        ctx.spawn(send.into_actor(self).map(move |res, act, _ctx| match res {
            Ok(Ok(_)) => {
                act.start_failures.remove(&job);
            }
            // Held back for the rest of this run; a restart tries again.
            _ => warn!(job = %job, "the job's failure could not be recorded either"),
        }));
    }

    /// Records the end of an attempt whose actor could not (`Job interrupted: ...`, back to the
    /// queue while attempts remain; or `cancelled` when a cancel was requested), retrying with a
    /// growing wait until the log accepts it.
    fn record_unrecorded(&mut self, job: JobId, ctx: &mut Context<Self>) {
        let Some(u) = self.unrecorded.get(&job) else {
            return;
        };
        let view = match self.views.view(job) {
            Some(v) if v.state == JobState::Running && v.attempt == u.attempt => v,
            // Someone recorded an end meanwhile (a cancel, another daemon).
            _ => {
                self.unrecorded.remove(&job);
                return;
            }
        };
        if self.shutting_down || self.fault().is_some() {
            // The next start's recovery records it.
            return;
        }
        let events = if view.cancel_requested {
            vec![NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled.",
            )]
        } else {
            interruption_events(&view, "Job interrupted: its outcome could not be recorded.")
        };
        let send = self.journal.send(Append::new(job, events));
        ctx.spawn(send.into_actor(self).map(move |res, act, ctx| {
            if let Ok(Ok(_)) = res {
                info!(job = %job, "recorded the end of an attempt that could not record it");
                act.unrecorded.remove(&job);
                act.pump(ctx);
                return;
            }
            let Some(u) = act.unrecorded.get_mut(&job) else {
                return;
            };
            u.tries += 1;
            let wait = backoff(u.tries);
            warn!(job = %job, tries = u.tries, wait_ms = wait.as_millis() as u64, "the end of the attempt is still not recorded; trying again later");
            ctx.run_later(wait, move |act, ctx| act.record_unrecorded(job, ctx));
        }));
    }

    fn admin_event(&self, message: String, payload: Value) -> Append {
        Append::one(
            JobId::DAEMON,
            NewEvent::new(Kind::Admin, Level::Info, message).with_payload(payload),
        )
    }
}

fn by_json(by: Caller) -> Value {
    match by {
        Some(uid) => json!({ "uid": uid, "via": "socket" }),
        None => json!({ "via": "http" }),
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let mut faults = self.faults.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                if faults.wait_for(Option::is_some).await.is_ok() {
                    me.do_send(LogFailed);
                }
            }
            .into_actor(self),
        );
        if let Some(c) = &self.cluster {
            c.follower.listen(ctx.address().recipient());
            ctx.run_interval(c.renew_every, |act, ctx| act.renew(ctx));
        }
        self.pump(ctx);
    }
}

impl Handler<LogFailed> for Scheduler {
    type Result = ();

    /// Nothing starts any more; running jobs are stopped (their subprocesses killed). They try to
    /// record the interruption, which the failed log refuses: the restart's recovery records it.
    fn handle(&mut self, _: LogFailed, _ctx: &mut Self::Context) {
        let cause = self.fault().map(|f| f.cause()).unwrap_or_default();
        error!(%cause, running = self.running.len(), "event log failed: stopping every job");
        for actor in self.running.values() {
            actor.do_send(Stop(StopReason::Shutdown));
        }
    }
}

/// The answer to a submit under `key` when the key is bound already: its jobs for the same body,
/// a conflict for another; `None` when the key is free.
fn bound_key(views: &Views, key: &IdempotencyKey) -> Option<Result<Submitted, SchedulerError>> {
    let used = views.key_use(&key.key, now_ms())?;
    Some(if used.digest == key.digest {
        Ok(Submitted {
            jobs: used.jobs,
            replayed: true,
        })
    } else {
        Err(SchedulerError::KeyConflict {
            key: key.key.clone(),
        })
    })
}

impl Handler<Submit> for Scheduler {
    type Result = ResponseActFuture<Self, Result<Submitted, SchedulerError>>;

    fn handle(&mut self, msg: Submit, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(answer) = msg.key.as_ref().and_then(|k| bound_key(&self.views, k)) {
            return Box::pin(fut::ready(answer));
        }
        if let Err(e) = self.refuse_if_failed() {
            return Box::pin(fut::ready(Err(e)));
        }
        if self.shutting_down {
            return Box::pin(fut::ready(Err(SchedulerError::ShuttingDown)));
        }
        let count = msg.jobs.len() as u32;
        let mut jobs = Vec::with_capacity(msg.jobs.len());
        let mut appends = Vec::with_capacity(msg.jobs.len());
        for (index, new) in (0u32..).zip(msg.jobs) {
            let job = JobId::new();
            let mut payload = json!({
                "maxAttempts": self.config.daemon.max_attempts,
                "request": new.request,
            });
            if let Some(k) = &msg.key {
                let tag = IdempotencyTag {
                    key: k.key.clone(),
                    digest: k.digest.clone(),
                    index,
                    count,
                };
                payload["idempotency"] = tag.to_json();
            }
            let queued =
                NewEvent::new(Kind::Queued, Level::Info, "Job queued.").with_payload(payload);
            let mut events = vec![queued];
            events.extend(new.warnings);
            if let Some(own) = self.own.as_mut() {
                own.insert(job);
            }
            jobs.push(job);
            appends.push(Append::new(job, events));
        }
        if let (Some(c), Some(_)) = (self.cluster.clone(), &self.own) {
            return Box::pin(self.submit_claimed(c, appends, jobs));
        }
        let key = msg.key;
        let send = self.journal_all.send(AppendAll { appends });
        Box::pin(send.into_actor(self).map(move |res, act, ctx| {
            match res? {
                Ok(_) => {}
                // Another submit bound the key first (committed before this one was staged).
                Err(JournalError::Refused(Refusal::KeyInUse { .. })) => {
                    let bound = key.as_ref().and_then(|k| bound_key(&act.views, k));
                    return bound.unwrap_or_else(|| {
                        Err(SchedulerError::Internal(
                            "the idempotency key is being bound by a submit that did not commit; try again".into(),
                        ))
                    });
                }
                Err(e) => return Err(e.into()),
            }
            act.pump(ctx);
            Ok(Submitted {
                jobs,
                replayed: false,
            })
        }))
    }
}

impl Handler<Cancel> for Scheduler {
    type Result = ResponseActFuture<Self, Result<CancelOutcome, SchedulerError>>;

    fn handle(&mut self, msg: Cancel, _ctx: &mut Self::Context) -> Self::Result {
        let Some(view) = self.views.view(msg.job) else {
            return Box::pin(fut::ready(Err(SchedulerError::NotFound)));
        };
        if view.state.is_terminal() || view.cancel_requested {
            return Box::pin(fut::ready(Ok(CancelOutcome::NoOp)));
        }
        let job = msg.job;
        let requested = NewEvent::new(
            Kind::CancelRequested,
            Level::Warning,
            "Cancellation requested.",
        )
        .with_payload(json!({ "by": by_json(msg.by) }));
        if let Some(actor) = self.running.get(&job).cloned() {
            let send = self.journal.send(Append::one(job, requested));
            return Box::pin(send.into_actor(self).map(move |res, _act, _ctx| {
                match res? {
                    Ok(_) => {
                        actor.do_send(Stop(StopReason::Cancelled));
                        Ok(CancelOutcome::Requested)
                    }
                    // The job ended (its terminal event committed) before the request: a no-op.
                    Err(JournalError::Refused(Refusal::Illegal(_))) => Ok(CancelOutcome::NoOp),
                    Err(e) => Err(e.into()),
                }
            }));
        }
        if self.cluster.is_some() && view.state == JobState::Running {
            // Another daemon runs it: its actor follows the log and stops at the request, then
            // records `cancelled` (a dead owner's rescue records it).
            let send = self.journal.send(Append::one(job, requested));
            return Box::pin(
                send.into_actor(self)
                    .map(move |res, _act, _ctx| match res? {
                        Ok(_) => Ok(CancelOutcome::Requested),
                        Err(JournalError::Refused(Refusal::Illegal(_))) => Ok(CancelOutcome::NoOp),
                        Err(e) => Err(e.into()),
                    }),
            );
        }
        // Not running: it is queued (or about to be). Cancel it in one append, then drop it.
        // (Or its attempt ended without recording its end: then it ran.)
        let cancelled = if view.state == JobState::Running {
            NewEvent::new(Kind::Cancelled, Level::Warning, "Job cancelled.")
        } else {
            NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled before execution.",
            )
        };
        self.cancelling.insert(job);
        let send = self
            .journal
            .send(Append::new(job, vec![requested, cancelled]));
        Box::pin(send.into_actor(self).map(move |res, act, ctx| {
            act.cancelling.remove(&job);
            // Held back while the cancel was written: startable again if it did not commit.
            act.pump(ctx);
            match res? {
                Ok(_) => Ok(CancelOutcome::CancelledQueued),
                // It ended (or started and was cancelled) meanwhile.
                Err(JournalError::Refused(Refusal::Illegal(_))) => Ok(CancelOutcome::NoOp),
                Err(e) => Err(e.into()),
            }
        }))
    }
}

impl Handler<CancelActive> for Scheduler {
    type Result = ResponseActFuture<Self, Result<JobId, SchedulerError>>;

    fn handle(&mut self, msg: CancelActive, ctx: &mut Self::Context) -> Self::Result {
        let running = self
            .running
            .keys()
            .chain(self.unrecorded.keys())
            .filter_map(|j| self.views.view(*j))
            .filter(|v| !v.cancel_requested)
            .max_by_key(|v| v.first_event_id)
            .map(|v| v.id);
        // In a cluster, the newest job running anywhere when none runs here.
        let running = running.or_else(|| {
            self.cluster.as_ref()?;
            self.views
                .list(Some(JobState::Running), usize::MAX)
                .into_iter()
                .filter(|v| !v.cancel_requested)
                .max_by_key(|v| v.first_event_id)
                .map(|v| v.id)
        });
        let target = running.or_else(|| {
            let running = &self.running;
            self.views
                .newest_queued(|j| running.contains_key(&j))
                .map(|v| v.id)
        });
        let Some(job) = target else {
            return Box::pin(fut::ready(Err(SchedulerError::NoActive)));
        };
        let cancel = <Self as Handler<Cancel>>::handle(self, Cancel { job, by: msg.by }, ctx);
        Box::pin(cancel.map(move |res, _, _| res.map(|_| job)))
    }
}

impl Handler<Retry> for Scheduler {
    type Result = ResponseActFuture<Self, Result<(), SchedulerError>>;

    fn handle(&mut self, msg: Retry, _ctx: &mut Self::Context) -> Self::Result {
        let Some(view) = self.views.view(msg.job) else {
            return Box::pin(fut::ready(Err(SchedulerError::NotFound)));
        };
        if !matches!(view.state, JobState::Failed | JobState::Cancelled) {
            return Box::pin(fut::ready(Err(SchedulerError::NotRetryable {
                job: msg.job,
                state: view.state.as_str(),
            })));
        }
        let job = msg.job;
        let ev =
            NewEvent::new(Kind::Queued, Level::Info, "Job queued for retry.").with_payload(json!({
                "retry": true,
                "by": by_json(msg.by),
                "maxAttempts": view.attempt + self.config.daemon.max_attempts,
            }));
        let send = self.journal.send(Append::one(job, ev));
        Box::pin(send.into_actor(self).map(move |res, act, ctx| {
            res??;
            act.pump(ctx);
            Ok(())
        }))
    }
}

impl Handler<SetPaused> for Scheduler {
    type Result = ResponseActFuture<Self, Result<(), SchedulerError>>;

    fn handle(&mut self, msg: SetPaused, _ctx: &mut Self::Context) -> Self::Result {
        let ev = crate::store::contract::pause_event(msg.paused, by_json(msg.by));
        let send = self.journal.send(Append::one(JobId::DAEMON, ev));
        Box::pin(send.into_actor(self).map(move |res, act, ctx| {
            res??;
            act.paused = msg.paused;
            act.pump(ctx);
            Ok(())
        }))
    }
}

impl Handler<SetConcurrency> for Scheduler {
    type Result = ResponseActFuture<Self, Result<(), SchedulerError>>;

    fn handle(&mut self, msg: SetConcurrency, _ctx: &mut Self::Context) -> Self::Result {
        if !(1..=64).contains(&msg.limit) {
            return Box::pin(fut::ready(Err(SchedulerError::BadConcurrency)));
        }
        let ev = self.admin_event(
            format!("Concurrency set to {}.", msg.limit),
            json!({ "action": "concurrency", "value": msg.limit, "by": by_json(msg.by) }),
        );
        let send = self.journal.send(ev);
        Box::pin(send.into_actor(self).map(move |res, act, ctx| {
            res??;
            act.concurrency = msg.limit;
            act.pump(ctx);
            Ok(())
        }))
    }
}

impl Handler<Drain> for Scheduler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.wake_idle();
        let record = self.journal.send(self.admin_event(
            "Drain requested.".into(),
            json!({ "action": "drain", "by": by_json(msg.by) }),
        ));
        Box::pin(async move {
            let _ = record.await;
            let _ = rx.await;
        })
    }
}

impl Handler<Shutdown> for Scheduler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        for (job, actor) in &self.running {
            info!(job = %job, "stopping job for shutdown");
            actor.do_send(Stop(StopReason::Shutdown));
        }
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.wake_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<JobEnded> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: JobEnded, ctx: &mut Self::Context) {
        let job = msg.job;
        self.running.remove(&job);
        if let (Some(epoch), Some(c)) = (self.epochs.remove(&job), self.cluster.clone()) {
            let release = async move { c.store.release(job, epoch).await };
            ctx.spawn(release.into_actor(self).map(move |r, _act, _ctx| {
                if let Err(e) = r {
                    warn!(job = %job, error = %e, "cannot release the job's lease; it expires on its own");
                }
            }));
        }
        if let Some(cause) = msg.start_failed {
            self.start_failed(job, cause, ctx);
        } else if let Some(v) = self.views.view(job) {
            // A job re-queued by its attempt's end is back in the (derived) queue already; during a
            // shutdown it waits there for the next run.
            info!(job = %job, state = v.state.as_str(), "job ended");
            if v.attempt == msg.attempt {
                self.start_failures.remove(&job);
            }
            if v.state == JobState::Running && v.attempt == msg.attempt {
                warn!(job = %job, "the attempt ended without recording its end");
                self.unrecorded.insert(
                    job,
                    Unrecorded {
                        attempt: msg.attempt,
                        tries: 0,
                    },
                );
                self.record_unrecorded(job, ctx);
            }
        } else {
            warn!(job = %job, "ended job has no view");
        }
        self.pump(ctx);
    }
}

impl Handler<PurgeFinished> for Scheduler {
    type Result = ResponseActFuture<Self, Result<PurgeReport, SchedulerError>>;

    fn handle(&mut self, msg: PurgeFinished, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.refuse_if_failed() {
            return Box::pin(fut::ready(Err(e)));
        }
        let days = msg.older_than_days;
        let cutoff = now_ms().saturating_sub(i64::from(days) * 86_400_000);
        let state_dir = self.paths.state_dir.clone();
        let by = if msg.automatic {
            json!({ "via": "retention" })
        } else {
            by_json(msg.by)
        };
        if let (Some(c), None) = (self.cluster.clone(), &self.own) {
            let jobs = self.views.finished_before(cutoff, usize::MAX);
            return Box::pin(purge_shared(c, jobs, days, by, state_dir).into_actor(self));
        }
        let Some(purger) = self.purger.clone() else {
            return Box::pin(fut::ready(Err(SchedulerError::Internal(
                "retention is not available here".into(),
            ))));
        };
        let jobs = self.views.finished_before(cutoff, usize::MAX);
        let journal = self.journal.clone();
        Box::pin(
            async move {
                let mut report = PurgeReport::default();
                for chunk in jobs.chunks(PURGE_CHUNK) {
                    let purged = purger
                        .send(Purge {
                            jobs: chunk.to_vec(),
                        })
                        .await??;
                    report.jobs += purged.jobs.len() as u64;
                    report.events += purged.events;
                    let dir = state_dir.clone();
                    // Files after the events: a crash between leaves files the start-up sweep
                    // removes, never a job whose files are gone.
                    let _ =
                        tokio::task::spawn_blocking(move || remove_job_files(&dir, &purged.jobs))
                            .await;
                }
                if report.jobs > 0 {
                    info!(
                        jobs = report.jobs,
                        events = report.events,
                        days,
                        "purged finished jobs"
                    );
                    let ev = NewEvent::new(
                        Kind::Admin,
                        Level::Info,
                        format!(
                            "Purged {} finished job(s) older than {days} day(s).",
                            report.jobs
                        ),
                    )
                    .with_payload(json!({
                        "action": "purge",
                        "olderThanDays": days,
                        "jobs": report.jobs,
                        "events": report.events,
                        "by": by,
                    }));
                    journal.send(Append::one(JobId::DAEMON, ev)).await??;
                }
                Ok(report)
            }
            .into_actor(self),
        )
    }
}

/// Retention on a shared store: each chunk of `jobs` is deleted, and recorded with the ids it
/// deleted, in one store transaction (every daemon's follower drops them from its cache on that
/// record; a job another daemon purged first, or that is not finished any more, is skipped by the
/// store). Answers once this daemon's views have dropped them; then removes their files here.
async fn purge_shared(
    c: Cluster,
    jobs: Vec<JobId>,
    days: u32,
    by: Value,
    state_dir: std::path::PathBuf,
) -> Result<PurgeReport, SchedulerError> {
    let mut report = PurgeReport::default();
    let note = PurgeNote {
        older_than_days: days,
        by,
    };
    for chunk in jobs.chunks(PURGE_CHUNK) {
        let purged = c
            .store
            .purge(chunk.to_vec(), note.clone())
            .await
            .map_err(|e| {
                SchedulerError::Journal(JournalError::Unavailable(format!(
                    "The event store is unreachable ({e}); try again."
                )))
            })?;
        if purged.recorded > 0 {
            c.follower.catch_up(purged.recorded).await;
        }
        report.jobs += purged.jobs.len() as u64;
        report.events += purged.events;
        let dir = state_dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_job_files(&dir, &purged.jobs)).await;
    }
    if report.jobs > 0 {
        info!(
            jobs = report.jobs,
            events = report.events,
            days,
            "purged finished jobs from the shared store"
        );
    }
    Ok(report)
}

/// Removes the folders and outputs of `jobs` (`jobs/<id>/`, `output/<id>.*`).
pub(crate) fn remove_job_files(state_dir: &std::path::Path, jobs: &[JobId]) {
    let names: HashSet<String> = jobs.iter().map(|j| j.to_string()).collect();
    for name in &names {
        let dir = state_dir.join("jobs").join(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %dir.display(), error = %e, "cannot remove a purged job's folder");
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(state_dir.join("output")) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let stem = file.to_string_lossy();
        let id = stem.split('.').next().unwrap_or_default();
        if names.contains(id) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Handler<RecordAdmin> for Scheduler {
    type Result = ResponseFuture<Result<(), SchedulerError>>;

    fn handle(&mut self, msg: RecordAdmin, _ctx: &mut Self::Context) -> Self::Result {
        let mut payload = msg.payload;
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("by".into(), by_json(msg.by));
        }
        let send = self.journal.send(self.admin_event(msg.message, payload));
        Box::pin(async move {
            send.await??;
            Ok(())
        })
    }
}

impl Handler<RecordWebhook> for Scheduler {
    type Result = ResponseFuture<Result<EventId, SchedulerError>>;

    fn handle(&mut self, msg: RecordWebhook, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.refuse_if_failed() {
            return Box::pin(async move { Err(e) });
        }
        if msg.event.kind != Kind::Webhook {
            return Box::pin(async {
                Err(SchedulerError::Internal(
                    "only webhook events are recorded here".into(),
                ))
            });
        }
        let send = self.journal.send(Append::one(msg.job, msg.event));
        Box::pin(async move {
            let ids = send.await??;
            Ok(ids.last().copied().unwrap_or_default())
        })
    }
}

impl Handler<SetConfig> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: SetConfig, _ctx: &mut Self::Context) {
        self.config = msg.config;
    }
}

impl Handler<GetStatus> for Scheduler {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(SchedulerStatus {
            paused: self.paused,
            draining: self.draining,
            concurrency: self.concurrency,
            queue_depth: self.queue_depth(),
            running: self.running.keys().copied().collect(),
        })
    }
}

impl Handler<Remote> for Scheduler {
    type Result = ();

    /// Other daemons wrote: new jobs may be queued, the pause state may have changed, finished
    /// jobs may have been purged (their files here go too; a job this daemon never ran has none).
    fn handle(&mut self, msg: Remote, ctx: &mut Self::Context) {
        // `generate` runs its own job whatever the daemons' recorded pause (as on redb).
        if let (Some(p), None) = (msg.paused, &self.own) {
            self.paused = p;
        }
        if !msg.purged.is_empty() && self.own.is_none() {
            let dir = self.paths.state_dir.clone();
            let jobs = msg.purged;
            ctx.spawn(
                async move {
                    let _ =
                        tokio::task::spawn_blocking(move || remove_job_files(&dir, &jobs)).await;
                }
                .into_actor(self),
            );
        }
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::actors::journal::Journal;
    use crate::store::{Store, FILE_NAME};

    /// Stands in front of the real journal and refuses, while `refuse` is set, every append of a
    /// kind in `kinds` (answering `Closed`, a failure that is not the log's), counting them.
    struct Gate {
        inner: Addr<Journal>,
        kinds: Vec<Kind>,
        refuse: Arc<AtomicBool>,
        refused: Arc<AtomicU32>,
    }

    impl Actor for Gate {
        type Context = Context<Self>;
    }

    impl Handler<Append> for Gate {
        type Result = ResponseFuture<Result<Vec<crate::event::EventId>, JournalError>>;

        fn handle(&mut self, msg: Append, _ctx: &mut Self::Context) -> Self::Result {
            let gated = msg.events.iter().any(|e| self.kinds.contains(&e.kind));
            if gated && self.refuse.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Box::pin(async { Err(JournalError::Closed) });
            }
            let send = self.inner.send(msg);
            Box::pin(async move { send.await.unwrap_or(Err(JournalError::Closed)) })
        }
    }

    struct Rig {
        scheduler: Addr<Scheduler>,
        views: Arc<Views>,
        refuse: Arc<AtomicBool>,
        refused: Arc<AtomicU32>,
        _dir: tempfile::TempDir,
    }

    fn rig(kinds: Vec<Kind>, max_attempts: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join(FILE_NAME)).unwrap());
        let views = Arc::new(Views::new());
        let journal = Journal::new(store, views.clone());
        let faults = journal.faults();
        let journal = journal.start();
        let (refuse, refused) = (Arc::new(AtomicBool::new(true)), Arc::default());
        let gate = Gate {
            inner: journal.clone(),
            kinds,
            refuse: Arc::clone(&refuse),
            refused: Arc::clone(&refused),
        }
        .start();
        let mut cfg = crate::fault_tests::test_config(dir.path());
        cfg.daemon.max_attempts = max_attempts;
        let paths = JobPaths {
            state_dir: dir.path().join("state"),
            songs_dir: dir.path().join("songs"),
        };
        let scheduler = Scheduler::new(
            gate.recipient(),
            faults,
            journal.recipient(),
            views.clone(),
            Arc::new(cfg),
            paths,
            false,
        )
        .start();
        Rig {
            scheduler,
            views,
            refuse,
            refused,
            _dir: dir,
        }
    }

    async fn submit(r: &Rig) -> JobId {
        let cfg = crate::config::Config::default();
        let req = JobRequest::parse(&json!({ "videoSubject": "gated" }), &cfg).unwrap();
        let done = r.scheduler.send(Submit::new([&req], None)).await.unwrap();
        done.unwrap().jobs[0]
    }

    async fn wait_state(r: &Rig, job: JobId, state: JobState, within: Duration) {
        let t0 = Instant::now();
        while r.views.view(job).map(|v| v.state) != Some(state) {
            assert!(
                t0.elapsed() < within,
                "job still {:?}",
                r.views.view(job).map(|v| v.state)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `running` append keeps failing: the job is started again after a growing wait, not at
    /// once, and failed once it has had as many tries as attempts.
    #[test]
    fn a_start_that_cannot_be_recorded_backs_off_and_gives_up_after_its_attempts() {
        actix::System::new().block_on(async {
            let r = rig(vec![Kind::Running], 2);
            let job = submit(&r).await;
            wait_state(&r, job, JobState::Failed, Duration::from_secs(10)).await;
            let v = r.views.view(job).unwrap();
            assert_eq!(r.refused.load(Ordering::SeqCst), 2, "one try per attempt");
            let msg = v.error_message.clone().unwrap();
            assert!(
                msg.starts_with("Failed to start job: its start could not be recorded (")
                    && msg.ends_with("gave up after 2 tries."),
                "{msg}"
            );
            // Nothing more is tried.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(r.refused.load(Ordering::SeqCst), 2);
        });
    }

    /// Every event of the attempt after its start is refused: the attempt ends unrecorded. It is
    /// recorded (here: failed, no attempts left) as soon as the log takes it, not left `running`.
    #[test]
    fn an_outcome_that_could_not_be_recorded_is_recorded_once_the_log_takes_it() {
        actix::System::new().block_on(async {
            let r = rig(vec![Kind::Log, Kind::Error, Kind::Queued], 1);
            r.refuse.store(false, Ordering::SeqCst);
            let job = submit(&r).await;
            r.refuse.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            while r.refused.load(Ordering::SeqCst) < 3 {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "nothing was refused"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(r.views.view(job).unwrap().state, JobState::Running);
            r.refuse.store(false, Ordering::SeqCst);
            wait_state(&r, job, JobState::Failed, Duration::from_secs(10)).await;
            let v = r.views.view(job).unwrap();
            assert!(
                v.error_message
                    .as_deref()
                    .unwrap()
                    .contains("Job interrupted: its outcome could not be recorded."),
                "{v:?}"
            );
        });
    }

    /// Until then it counts as running: `POST /api/cancel` finds it and cancels it.
    #[test]
    fn an_attempt_whose_end_was_not_recorded_is_still_found_by_cancel_active() {
        actix::System::new().block_on(async {
            let r = rig(vec![Kind::Log, Kind::Error, Kind::Queued], 2);
            r.refuse.store(false, Ordering::SeqCst);
            let job = submit(&r).await;
            r.refuse.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            loop {
                let st = r.scheduler.send(GetStatus).await.unwrap();
                if st.running.is_empty() && r.refused.load(Ordering::SeqCst) >= 3 {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(10), "{st:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(r.views.view(job).unwrap().state, JobState::Running);
            let cancelled = r.scheduler.send(CancelActive { by: None }).await.unwrap();
            assert_eq!(cancelled.unwrap(), job);
            wait_state(&r, job, JobState::Cancelled, Duration::from_secs(5)).await;
        });
    }
}
