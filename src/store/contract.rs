//! The store contract: what the core needs from an event store, free of engine types, so that one
//! machine (redb, in-process: [`super::local::LocalStore`]) and many (PostgreSQL:
//! [`super::postgres::PgStore`]) look the same to it. One test suite (`contract_tests`) runs
//! against both.
//!
//! Invariants every engine keeps:
//! - An append is checked against the job's current head *inside* its write transaction
//!   (`event::stage`), and its ids are assigned there: one global, strictly increasing sequence in
//!   commit order, never reused for a visible event. A reader at `after = N` never misses an event
//!   that commits later.
//! - A job's head is a projection of its events (`event::fold` of them gives the same view).
//! - A running job has one lease (owner, epoch = its attempt number, expiry). Appends that carry an
//!   epoch are refused once it is not the job's running attempt any more (fencing).
//! - Cluster settings (paused) are recorded as admin events and survive restarts.
//! - A purge deletes finished jobs only, whole (events and head), and records the jobs it deleted
//!   in an admin event of the same transaction; purging what is gone is a no-op.
//!
//! Step one of the scale-out work: the contract and both engines exist and pass one suite; the
//! daemon's core (journal, scheduler, views) moves onto it next. Until then parts are used only by
//! that suite, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::event::{Event, EventId, JobId, JobState, JobView, NewEvent, Refusal};

/// What a store call returns: a boxed `Send` future (the trait stays object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An engine's own error, kept as the source of a [`StoreFault`].
pub type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// One job's events, all or none. `epoch`: the attempt the appender runs (job runners), `None` for
/// everyone else (submissions, cancels, admin). `with_next`: this request stands or falls with the
/// next one of the batch (a batch submit's jobs form one such chain, a unit).
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub job: JobId,
    pub events: Vec<NewEvent>,
    pub epoch: Option<u32>,
    pub with_next: bool,
}

impl AppendRequest {
    pub fn new(job: JobId, events: Vec<NewEvent>, epoch: Option<u32>) -> AppendRequest {
        AppendRequest {
            job,
            events,
            epoch,
            with_next: false,
        }
    }
}

/// Called by an engine with the events of each of this process's commits, in commit order, right
/// after the commit (before the writer is answered).
pub type CommitHook = std::sync::Arc<dyn Fn(&[Event]) + Send + Sync>;

/// One append's answer inside a batch: its ids, or why it alone was refused.
pub type AppendOutcome = Result<Vec<EventId>, Refusal>;

/// Who runs a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub daemon: String,
    pub host: String,
    pub pid: u32,
}

/// A job this daemon now runs: its view after the `running` event, its epoch and lease expiry.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub view: JobView,
    pub epoch: u32,
    pub lease_until_ms: i64,
}

/// What a purge removed: the finished jobs deleted (of those asked), their events, and the id of
/// the admin event that records it (0 when nothing was deleted and nothing was recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: Vec<JobId>,
    pub events: u64,
    pub recorded: EventId,
}

/// Who purges and why, for the admin event a purge records.
#[derive(Clone, Debug)]
pub struct PurgeNote {
    pub older_than_days: u32,
    pub by: Value,
}

/// Why a store call failed as a whole (as opposed to one append being refused). Every variant means
/// the caller cannot rely on the store until it answers again.
#[derive(Debug, thiserror::Error)]
pub enum StoreFault {
    #[error("the {engine} event store could not be written: {source}")]
    Write {
        engine: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("the {engine} event store could not be read: {source}")]
    Read {
        engine: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("the {engine} event store is unreachable: {source}")]
    Unavailable {
        engine: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("the event store's schema is version {found}, newer than this reelsmith knows ({known}); upgrade reelsmith or use another database")]
    SchemaTooNew { found: i64, known: i64 },
}

/// The contract. Every method is one transaction of the engine.
pub trait EventStore: Send + Sync {
    /// `"redb"` or `"postgres"`.
    fn engine(&self) -> &'static str;

    /// Appends a batch: each request checked and given ids inside one transaction; refused ones are
    /// left out and answered alone. The outer error means nothing of the batch was written.
    fn append(
        &self,
        batch: Vec<AppendRequest>,
    ) -> StoreFuture<'_, Result<Vec<AppendOutcome>, StoreFault>>;

    /// Events of `job` with id > `after`, ascending, at most `limit`.
    fn read_job(
        &self,
        job: JobId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<Event>, StoreFault>>;

    /// Events of every job (the daemon pseudo-job included) with id > `after`, ascending.
    fn read_since(
        &self,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<Event>, StoreFault>>;

    /// The job's head: its folded view.
    fn head(&self, job: JobId) -> StoreFuture<'_, Result<Option<JobView>, StoreFault>>;

    /// Jobs newest first (by their first event), optionally of one state, created before the job
    /// whose first event is `before` (paging).
    fn list(
        &self,
        state: Option<JobState>,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<JobView>, StoreFault>>;

    /// The largest committed id (0 for an empty store).
    fn last_id(&self) -> StoreFuture<'_, Result<EventId, StoreFault>>;

    /// Claims the oldest queued job (not cancel-requested) for `owner`: records its `running`
    /// event with owner, epoch and lease expiry, and takes the lease. `None` when none is queued.
    fn claim<'a>(
        &'a self,
        owner: &'a Owner,
        lease: Duration,
    ) -> StoreFuture<'a, Result<Option<Claimed>, StoreFault>>;

    /// Extends the lease of `job` held at `epoch`; `false` when it is not held any more.
    fn renew(
        &self,
        job: JobId,
        epoch: u32,
        lease: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreFault>>;

    /// Gives the lease up (the attempt's end has been recorded).
    fn release(&self, job: JobId, epoch: u32) -> StoreFuture<'_, Result<(), StoreFault>>;

    /// Interrupts every running job whose lease expired: `Job interrupted: daemon <name> stopped
    /// renewing its lease.`, then back to the queue while attempts remain, else failed. Answers the
    /// jobs rescued.
    fn rescue_expired(&self) -> StoreFuture<'_, Result<Vec<JobId>, StoreFault>>;

    /// Claims `job` itself for `owner`, as [`EventStore::claim`] does the oldest queued job: first
    /// appends `first` to it (a submit's events: the job is then created and claimed in one
    /// transaction, so no other daemon ever sees it queued), then records its `running` event and
    /// takes the lease, if it is queued and not cancel-requested. `None` when it is not claimable
    /// (another daemon took it, it ended, or `first` was refused); nothing is written then.
    fn claim_job<'a>(
        &'a self,
        job: JobId,
        first: Vec<NewEvent>,
        owner: &'a Owner,
        lease: Duration,
    ) -> StoreFuture<'a, Result<Option<Claimed>, StoreFault>>;

    /// Deletes the finished jobs among `jobs` (completed, failed or cancelled when the transaction
    /// runs: a job that is queued or running is left alone) with all their events and heads, and
    /// records [`purge_event`] (naming them, so every daemon's cache drops them) in the same
    /// transaction. The largest id given out stays given out. Deleting what is gone already is a
    /// no-op, so two daemons purging at once are safe: each job is deleted and recorded once.
    fn purge(
        &self,
        jobs: Vec<JobId>,
        note: PurgeNote,
    ) -> StoreFuture<'_, Result<Purged, StoreFault>>;

    /// Whether the queue is paused (cluster-wide, kept across restarts).
    fn paused(&self) -> StoreFuture<'_, Result<bool, StoreFault>>;

    /// Pauses or resumes the queue, recorded as an admin event with `by`.
    fn set_paused(&self, paused: bool, by: Value) -> StoreFuture<'_, Result<EventId, StoreFault>>;

    /// A receiver that changes after every commit touching `job` (whichever daemon wrote it).
    fn subscribe(&self, job: JobId) -> watch::Receiver<EventId>;

    /// A receiver that changes after every commit.
    fn subscribe_all(&self) -> watch::Receiver<EventId>;

    /// Hands this process's own commits to `hook` as they happen (one hook; a later call replaces
    /// it). Engines without a use for it ignore it.
    fn on_commit(&self, hook: CommitHook) {
        let _ = hook;
    }
}

/// A batch staged against the heads inside an engine's write transaction.
pub(crate) struct Staged {
    /// One per request, in order.
    pub outcomes: Vec<AppendOutcome>,
    /// The accepted events, ids ascending.
    pub events: Vec<Event>,
    /// Jobs the batch creates.
    pub created: Vec<JobId>,
    /// Idempotency keys the batch binds, with the job of their first `queued` event.
    pub bound: Vec<(String, JobId)>,
}

/// Stages `batch` unit by unit (a unit is a chain of requests joined by `with_next`, all or none)
/// against `work` (the heads, filled on demand by `head`), giving ids from `next` and stamping
/// `now`. A unit whose `queued` events carry an idempotency key that `key_live` says is bound, or
/// that an earlier unit of this batch binds, is refused whole with `KeyInUse`; a unit with an
/// illegal request is refused whole, each of its requests answered `InBatch` naming the first bad
/// one (a unit of one request gets that request's own refusal). A refused unit leaves `work` and
/// the ids untouched. Both engines call this inside their write transaction, so the checks and the
/// ids are those of the commit.
pub(crate) fn stage_batch(
    work: &mut std::collections::HashMap<JobId, Option<JobView>>,
    mut head: impl FnMut(JobId) -> Option<JobView>,
    batch: Vec<AppendRequest>,
    mut next: EventId,
    now: i64,
    key_live: impl Fn(&str) -> bool,
) -> Staged {
    let mut out = Staged {
        outcomes: Vec::with_capacity(batch.len()),
        events: Vec::new(),
        created: Vec::new(),
        bound: Vec::new(),
    };
    let mut units: Vec<Vec<AppendRequest>> = Vec::new();
    let mut open = false;
    for req in batch {
        let joins = req.with_next;
        match units.last_mut() {
            Some(u) if open => u.push(req),
            _ => units.push(vec![req]),
        }
        open = joins;
    }
    for unit in units {
        let n = unit.len();
        let key = unit.iter().find_map(|r| {
            r.events
                .first()
                .filter(|e| e.kind == crate::event::Kind::Queued)
                .and_then(|e| e.payload.as_ref())
                .and_then(crate::event::IdempotencyTag::from_payload)
                .map(|t| (t.key, r.job))
        });
        if let Some((k, _)) = &key {
            if key_live(k) || out.bound.iter().any(|(b, _)| b == k) {
                let r = Refusal::KeyInUse { key: k.clone() };
                out.outcomes.extend((0..n).map(|_| Err(r.clone())));
                continue;
            }
        }
        let mut saved: Vec<(JobId, Option<JobView>)> = Vec::new();
        let mut staged: Vec<Vec<Event>> = Vec::with_capacity(n);
        let mut created = Vec::new();
        let mut refused = None;
        let mut at = next;
        for (index, req) in unit.into_iter().enumerate() {
            let job = req.job;
            let slot = work.entry(job).or_insert_with(|| head(job));
            if !saved.iter().any(|(j, _)| *j == job) {
                saved.push((job, slot.clone()));
            }
            let creates = slot.is_none() && job != JobId::DAEMON;
            match crate::event::stage(slot, job, req.events, req.epoch, at, now) {
                Ok(evs) => {
                    at += evs.len() as u64;
                    if creates {
                        created.push(job);
                    }
                    staged.push(evs);
                }
                Err(r) => {
                    refused = Some((index, r));
                    break;
                }
            }
        }
        match refused {
            None => {
                next = at;
                for evs in staged {
                    out.outcomes.push(Ok(evs.iter().map(|e| e.id).collect()));
                    out.events.extend(evs);
                }
                out.created.extend(created);
                out.bound.extend(key);
            }
            Some((index, r)) => {
                for (job, before) in saved {
                    work.insert(job, before);
                }
                if n == 1 {
                    out.outcomes.push(Err(r));
                } else {
                    let r = Refusal::InBatch {
                        index,
                        source: Box::new(r),
                    };
                    out.outcomes.extend((0..n).map(|_| Err(r.clone())));
                }
            }
        }
    }
    out
}

/// The admin event of a pause or resume.
pub(crate) fn pause_event(paused: bool, by: Value) -> NewEvent {
    let (what, action) = if paused {
        ("Queue paused.", "pause")
    } else {
        ("Queue resumed.", "resume")
    };
    NewEvent::new(crate::event::Kind::Admin, crate::event::Level::Info, what)
        .with_payload(serde_json::json!({ "action": action, "by": by }))
}

/// Whether an admin event changes the pause state: `Some(paused)` for pause/resume.
pub(crate) fn pause_state(ev: &Event) -> Option<bool> {
    if ev.job != JobId::DAEMON {
        return None;
    }
    match ev.payload.as_ref()?.get("action")?.as_str()? {
        "pause" => Some(true),
        "resume" => Some(false),
        _ => None,
    }
}

/// The admin event of a purge: the jobs deleted are listed (`ids`) so that followers drop them.
pub(crate) fn purge_event(jobs: &[JobId], events: u64, note: &PurgeNote) -> NewEvent {
    let days = note.older_than_days;
    let ids: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
    NewEvent::new(
        crate::event::Kind::Admin,
        crate::event::Level::Info,
        format!(
            "Purged {} finished job(s) older than {days} day(s).",
            jobs.len()
        ),
    )
    .with_payload(serde_json::json!({
        "action": "purge",
        "olderThanDays": days,
        "jobs": jobs.len(),
        "events": events,
        "by": note.by,
        "ids": ids,
    }))
}

/// The jobs a purge's admin event deleted (`None` for any other event).
pub(crate) fn purged_jobs(ev: &Event) -> Option<Vec<JobId>> {
    if ev.job != JobId::DAEMON {
        return None;
    }
    let p = ev.payload.as_ref()?;
    if p.get("action")?.as_str()? != "purge" {
        return None;
    }
    let ids = p.get("ids")?.as_array()?;
    Some(
        ids.iter()
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect(),
    )
}

/// The `running` event of a claim.
pub(crate) fn running_event(view: &JobView, owner: &Owner, lease_until_ms: i64) -> NewEvent {
    NewEvent::new(
        crate::event::Kind::Running,
        crate::event::Level::Info,
        "Job started.",
    )
    .with_payload(serde_json::json!({
        "attempt": view.attempt + 1,
        "maxAttempts": view.max_attempts,
        "owner": owner,
        "epoch": view.attempt + 1,
        "leaseUntilMs": lease_until_ms,
    }))
}

/// The message a rescue records.
pub(crate) fn lease_lost_reason(owner: &Owner) -> String {
    format!(
        "Job interrupted: daemon {} stopped renewing its lease.",
        owner.daemon
    )
}
