//! The journal: the only writer of the event log.
//!
//! Appends arrive as messages; the handler only queues them and schedules one `Flush`. Because actix
//! drains the whole mailbox before it polls the flush, every append that arrived meanwhile lands in the
//! same write transaction (group commit: one fdatasync for many events). Each append is checked against
//! its job's folded view before anything is written; an illegal one is refused alone. An [`AppendAll`]
//! (a batch submit) is checked as a unit: one refusal refuses all of it, and it is never split across
//! transactions. Callers are
//! answered only after the commit is durable, then the views are published and followers woken.
//! The journal runs on its own Arbiter thread, so its blocking commits never stall async workers.
//! The first failed commit is *fatal*: redb refuses every later write, so the journal writes
//! nothing more, answers every later append with the same error, and publishes it on its fault
//! channel (the scheduler stops its jobs, `Core` answers 503 and withholds the watchdog, and the
//! daemon exits non-zero so systemd restarts it on a freshly opened log).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error};

pub use crate::event::Refusal;
use crate::event::{now_ms, Event, EventId, IdempotencyTag, JobId, JobView, Kind, NewEvent};
use crate::store::{AppendError, Store};
use crate::views::Views;

/// Appends events to one job, all or none. The reply carries the committed events' ids.
#[derive(Message)]
#[rtype(result = "Result<Vec<EventId>, JournalError>")]
pub struct Append {
    pub job: JobId,
    pub events: Vec<NewEvent>,
    /// The attempt a job runner runs (fencing: refused once that attempt is over), `None` for
    /// everyone else.
    pub epoch: Option<u32>,
}

impl Append {
    pub fn one(job: JobId, event: NewEvent) -> Append {
        Append::new(job, vec![event])
    }

    pub fn new(job: JobId, events: Vec<NewEvent>) -> Append {
        Append {
            job,
            events,
            epoch: None,
        }
    }
}

/// Appends to several jobs in one durable commit, all or none: when one append is refused, every
/// one is (`Refusal::InBatch` names the first refused by its index). The reply carries each
/// append's ids, in order.
#[derive(Message)]
#[rtype(result = "Result<Vec<Vec<EventId>>, JournalError>")]
pub struct AppendAll {
    pub appends: Vec<Append>,
}

/// Deletes the events of finished jobs (retention), after writing what is pending. Jobs that are
/// not finished (any more) are left alone. The reply names the jobs deleted.
#[derive(Message)]
#[rtype(result = "Result<Purged, JournalError>")]
pub struct Purge {
    pub jobs: Vec<JobId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: Vec<JobId>,
    pub events: u64,
}

/// Answers at once: the watchdog's proof that the journal's thread is not stuck in a commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Writes what is pending, answers it, and stops the journal (the last step of a shutdown). Appends
/// that arrive afterwards are answered `Closed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Writes everything queued so far (sent by the journal to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Why an append was not written. `Refused` concerns that append alone (the log is fine); `Fatal`
/// means the log could not be written at all and every later append will fail the same way.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{}", .0.restart_message())]
    Fatal(Fault),
    #[error("the journal has stopped")]
    Closed,
    /// A shared store cannot be reached now (nothing was written; the daemon keeps running).
    #[error("{0}")]
    Unavailable(String),
}

impl JournalError {
    /// Whether the event log itself failed (as opposed to this one append being refused).
    pub fn is_fatal(&self) -> bool {
        matches!(self, JournalError::Fatal(_))
    }
}

/// The error that broke the event log (see the module comment).
pub type Fault = Arc<AppendError>;

/// Who waits for an append: one caller of [`Append`] or of [`AppendAll`].
enum Reply {
    One(oneshot::Sender<Result<Vec<EventId>, JournalError>>),
    All(oneshot::Sender<Result<Vec<Vec<EventId>>, JournalError>>),
}

impl Reply {
    /// Answers with the ids of each append's events in `batch[range]`, or with `err`.
    fn send(self, result: Result<&[std::ops::Range<usize>], JournalError>, batch: &[Event]) {
        let ids = |r: &std::ops::Range<usize>| batch[r.clone()].iter().map(|e| e.id).collect();
        match self {
            Reply::One(tx) => {
                let _ = tx.send(result.map(|rs| rs.first().map(ids).unwrap_or_default()));
            }
            Reply::All(tx) => {
                let _ = tx.send(result.map(|rs| rs.iter().map(ids).collect()));
            }
        }
    }
}

struct Pending {
    /// One append, or the appends of one `AppendAll` (staged all or none).
    appends: Vec<Append>,
    reply: Reply,
}

pub struct Journal {
    store: Arc<Store>,
    views: Arc<Views>,
    next_id: EventId,
    pending: Vec<Pending>,
    flush_scheduled: bool,
    /// `Some` once a commit has failed: nothing is written any more.
    fault: watch::Sender<Option<Fault>>,
}

impl Journal {
    pub fn new(store: Arc<Store>, views: Arc<Views>) -> Journal {
        let next_id = views.last_id() + 1;
        Journal {
            store,
            views,
            next_id,
            pending: Vec::new(),
            flush_scheduled: false,
            fault: watch::channel(None).0,
        }
    }

    /// Turns `Some` when the log fails (take it before the journal starts).
    pub fn faults(&self) -> watch::Receiver<Option<Fault>> {
        self.fault.subscribe()
    }

    /// Checks one append against the working views (`event::stage`) and gives its events ids;
    /// `None` views are jobs that do not exist yet. Also says whether the append creates its job.
    fn stage(
        &mut self,
        append: Append,
        work: &mut HashMap<JobId, Option<JobView>>,
        now: i64,
    ) -> Result<(Vec<Event>, bool), Refusal> {
        let job = append.job;
        let slot = work
            .entry(job)
            .or_insert_with(|| self.views.view(job).map(|v| (*v).clone()));
        let creates = slot.is_none() && job != JobId::DAEMON;
        let out = crate::event::stage(slot, job, append.events, append.epoch, self.next_id, now)?;
        self.next_id += out.len() as u64;
        Ok((out, creates))
    }

    /// Stages a unit of appends all or none: on a refusal, the working views and the id counter
    /// are as they were before.
    fn stage_all(
        &mut self,
        appends: Vec<Append>,
        work: &mut HashMap<JobId, Option<JobView>>,
        now: i64,
    ) -> Result<Vec<(Vec<Event>, bool)>, Refusal> {
        let single = appends.len() == 1;
        let first_id = self.next_id;
        // Only a unit of several needs undoing: `stage` itself changes nothing when it refuses.
        let mut saved: Vec<(JobId, Option<Option<JobView>>)> = Vec::new();
        let mut out = Vec::with_capacity(appends.len());
        for (index, append) in appends.into_iter().enumerate() {
            if !single && !saved.iter().any(|(j, _)| *j == append.job) {
                saved.push((append.job, work.get(&append.job).cloned()));
            }
            match self.stage(append, work, now) {
                Ok(staged) => out.push(staged),
                Err(e) => {
                    for (job, before) in saved {
                        match before {
                            Some(v) => work.insert(job, v),
                            None => work.remove(&job),
                        };
                    }
                    self.next_id = first_id;
                    return Err(if single {
                        e
                    } else {
                        Refusal::InBatch {
                            index,
                            source: Box::new(e),
                        }
                    });
                }
            }
        }
        Ok(out)
    }

    fn flush(&mut self) {
        self.flush_scheduled = false;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        if let Some(fault) = self.fault.borrow().clone() {
            for p in pending {
                p.reply.send(Err(JournalError::Fatal(fault.clone())), &[]);
            }
            return;
        }
        let now = now_ms();
        let first_id = self.next_id;
        let mut work: HashMap<JobId, Option<JobView>> = HashMap::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut created: Vec<JobId> = Vec::new();
        let mut replies = Vec::with_capacity(pending.len());
        // Idempotency keys bound by this flush so far.
        let mut keys: HashSet<String> = HashSet::new();
        for p in pending {
            let jobs: Vec<JobId> = p.appends.iter().map(|a| a.job).collect();
            let unit_keys = idempotency_keys(&p.appends);
            if let Some(key) = unit_keys
                .iter()
                .find(|k| keys.contains(*k) || self.views.key_in_use(k, now))
            {
                let refusal = Refusal::KeyInUse { key: key.clone() };
                replies.push((p.reply, Err(JournalError::Refused(refusal))));
                continue;
            }
            let staged = self.stage_all(p.appends, &mut work, now);
            if staged.is_ok() {
                keys.extend(unit_keys);
            }
            match staged {
                Ok(staged) => {
                    let mut ranges = Vec::with_capacity(staged.len());
                    for (job, (events, creates)) in jobs.into_iter().zip(staged) {
                        if creates {
                            created.push(job);
                        }
                        ranges.push(batch.len()..batch.len() + events.len());
                        batch.extend(events);
                    }
                    replies.push((p.reply, Ok(ranges)));
                }
                Err(e) => replies.push((p.reply, Err(JournalError::Refused(e)))),
            }
        }
        if batch.is_empty() {
            for (reply, r) in replies {
                reply.send(r.as_deref().map_err(Clone::clone), &batch);
            }
            return;
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.store.append(&batch) {
            error!(
                error = %e,
                disk_full = e.is_disk_full(),
                events = batch.len(),
                "event log commit failed; the log is closed to writes"
            );
            // Nothing of this batch is durable or visible: the ids may be given out again.
            self.next_id = first_id;
            let fault: Fault = Arc::new(e);
            self.fault.send_replace(Some(fault.clone()));
            let err = JournalError::Fatal(fault);
            for (reply, r) in replies {
                let e = match r {
                    Ok(_) => err.clone(),
                    Err(refused) => refused,
                };
                reply.send(Err(e), &batch);
            }
            return;
        }
        crate::metrics::get().commit(batch.len(), replies.len(), started.elapsed());
        debug!(
            events = batch.len(),
            appends = replies.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        let last = batch.last().map(|e| e.id).unwrap_or(first_id);
        let changed: Vec<JobView> = work.into_values().flatten().collect();
        self.views.publish(changed, &created, last);
        for (reply, r) in replies {
            reply.send(r.as_deref().map_err(Clone::clone), &batch);
        }
    }
}

/// The idempotency keys a unit of appends binds: those of the tagged `queued` events that open
/// its appends (only a new job's first event carries a tag).
fn idempotency_keys(appends: &[Append]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in appends {
        let tag = a
            .events
            .first()
            .filter(|e| e.kind == Kind::Queued)
            .and_then(|e| e.payload.as_ref())
            .and_then(IdempotencyTag::from_payload);
        if let Some(t) = tag {
            if !out.contains(&t.key) {
                out.push(t.key);
            }
        }
    }
    out
}

impl Journal {
    /// Queues a unit of appends for the next flush, scheduling one if none is.
    fn queue(&mut self, appends: Vec<Append>, reply: Reply, ctx: &mut Context<Self>) {
        self.pending.push(Pending { appends, reply });
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }
}

impl Actor for Journal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Many clients append at once; let them queue rather than bounce.
        ctx.set_mailbox_capacity(4096);
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        // However the journal stops, no accepted append is left unanswered.
        self.flush();
        Running::Stop
    }
}

impl Handler<Append> for Journal {
    type Result = ResponseFuture<Result<Vec<EventId>, JournalError>>;

    fn handle(&mut self, append: Append, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue(vec![append], Reply::One(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(JournalError::Closed)) })
    }
}

impl Handler<AppendAll> for Journal {
    type Result = ResponseFuture<Result<Vec<Vec<EventId>>, JournalError>>;

    fn handle(&mut self, msg: AppendAll, ctx: &mut Self::Context) -> Self::Result {
        if msg.appends.is_empty() {
            return Box::pin(async { Err(JournalError::Refused(Refusal::Empty)) });
        }
        let (tx, rx) = oneshot::channel();
        self.queue(msg.appends, Reply::All(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(JournalError::Closed)) })
    }
}

impl Handler<Purge> for Journal {
    type Result = Result<Purged, JournalError>;

    fn handle(&mut self, msg: Purge, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        if let Some(fault) = self.fault.borrow().clone() {
            return Err(JournalError::Fatal(fault));
        }
        let jobs: Vec<JobId> = msg
            .jobs
            .into_iter()
            .filter(|j| {
                *j != JobId::DAEMON && self.views.head(*j).is_some_and(|h| h.state.is_terminal())
            })
            .collect();
        if jobs.is_empty() {
            return Ok(Purged::default());
        }
        match self.store.purge(&jobs) {
            Ok(events) => {
                self.views.remove(&jobs);
                debug!(jobs = jobs.len(), events, "purged finished jobs");
                Ok(Purged { jobs, events })
            }
            Err(e) => {
                error!(error = %e, "event log purge failed; the log is closed to writes");
                let fault: Fault = Arc::new(e);
                self.fault.send_replace(Some(fault.clone()));
                Err(JournalError::Fatal(fault))
            }
        }
    }
}

impl Handler<Ping> for Journal {
    type Result = ();

    fn handle(&mut self, _: Ping, _ctx: &mut Self::Context) {}
}

impl Handler<Close> for Journal {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        self.flush();
        ctx.stop();
    }
}

impl Handler<Flush> for Journal {
    type Result = ();

    fn handle(&mut self, _: Flush, _ctx: &mut Self::Context) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Level};
    use crate::store::faulty::{Fault as DiskFault, FaultyDisk};
    use crate::store::FILE_NAME;

    fn queued() -> NewEvent {
        NewEvent::new(Kind::Queued, Level::Info, "Job queued.")
            .with_payload(serde_json::json!({ "maxAttempts": 1, "request": {} }))
    }

    fn log(msg: &str) -> NewEvent {
        NewEvent::info(msg)
    }

    fn open(dir: &std::path::Path) -> (Arc<Store>, Arc<Views>) {
        let store = Arc::new(Store::open(&dir.join(FILE_NAME)).unwrap());
        let (views, _) = Views::replay(&store).unwrap();
        (store, Arc::new(views))
    }

    #[test]
    fn concurrent_appends_share_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, views) = open(dir.path());
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone()).start();
            // Every request is in the mailbox before the journal runs once.
            let sent: Vec<_> = (0..100)
                .map(|_| journal.send(Append::one(JobId::new(), queued())))
                .collect();
            let mut ids = Vec::new();
            for r in futures_util::future::join_all(sent).await {
                ids.extend(r.unwrap().unwrap());
            }
            assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        });
        assert_eq!(store.commits(), 1, "100 appends, one write transaction");
        assert_eq!(views.last_id(), 100);
        assert_eq!(views.counts().queued, 100);
    }

    #[test]
    fn an_illegal_append_is_refused_alone_and_uses_no_id() {
        let dir = tempfile::tempdir().unwrap();
        let (store, views) = open(dir.path());
        let (a, b, unknown) = (JobId::new(), JobId::new(), JobId::new());
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone()).start();
            journal
                .send(Append::one(a, queued()))
                .await
                .unwrap()
                .unwrap();
            let complete = NewEvent::new(Kind::Complete, Level::Success, "done");
            let sent = vec![
                journal.send(Append::one(b, queued())),
                journal.send(Append::one(a, complete)),
                journal.send(Append::one(a, log("legal"))),
                journal.send(Append::one(unknown, log("nobody"))),
                journal.send(Append::new(a, Vec::new())),
            ];
            let r: Vec<_> = futures_util::future::join_all(sent)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(r[0].as_ref().unwrap(), &vec![2]);
            assert!(matches!(
                r[1],
                Err(JournalError::Refused(Refusal::Illegal(_)))
            ));
            // The refused append took no id: the next legal one is contiguous.
            assert_eq!(r[2].as_ref().unwrap(), &vec![3]);
            assert!(matches!(
                r[3],
                Err(JournalError::Refused(Refusal::UnknownJob(j))) if j == unknown
            ));
            assert!(matches!(r[4], Err(JournalError::Refused(Refusal::Empty))));
            assert!(!r[1].as_ref().unwrap_err().is_fatal());
        });
        assert_eq!(store.commits(), 2);
        let ids: Vec<_> = store
            .read_job(a, 0, u64::MAX, 10)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(views.view(a).unwrap().state, crate::event::JobState::Queued);
        assert!(views.view(unknown).is_none());
    }

    #[test]
    fn a_unit_of_appends_commits_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (store, views) = open(dir.path());
        let existing = JobId::new();
        let fresh: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone()).start();
            journal
                .send(Append::one(existing, queued()))
                .await
                .unwrap()
                .unwrap();
            // The third append is illegal (a second `queued` for a queued job): nothing is written.
            let mut appends: Vec<Append> =
                fresh.iter().map(|j| Append::one(*j, queued())).collect();
            appends.insert(2, Append::one(existing, queued()));
            let sent = vec![
                journal.send(AppendAll { appends }),
                journal.send(AppendAll {
                    appends: fresh.iter().map(|j| Append::one(*j, queued())).collect(),
                }),
            ];
            let lone = journal.send(Append::one(existing, log("alongside")));
            let (r, lone) =
                futures_util::future::join(futures_util::future::join_all(sent), lone).await;
            match &r[0] {
                Ok(Err(JournalError::Refused(Refusal::InBatch { index: 2, source }))) => {
                    assert!(matches!(**source, Refusal::Illegal(_)), "{source}")
                }
                other => panic!("{other:?}"),
            }
            // The refused unit used no id and left no trace in the views: the same jobs are
            // created by the next unit, with contiguous ids, in the same commit as the lone append.
            let ids = r[1].as_ref().unwrap().as_ref().unwrap();
            assert_eq!(ids, &vec![vec![2], vec![3], vec![4]]);
            assert_eq!(lone.unwrap().unwrap(), vec![5]);
            assert!(journal
                .send(AppendAll {
                    appends: Vec::new()
                })
                .await
                .unwrap()
                .is_err());
        });
        assert_eq!(
            store.commits(),
            2,
            "the unit and the lone append share one commit"
        );
        let order: Vec<JobId> = views.list(None, 10).iter().rev().map(|v| v.id).collect();
        assert_eq!(order[1..], fresh[..], "jobs listed in the unit's order");
    }

    #[test]
    fn an_idempotency_key_binds_one_submit_even_within_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (store, views) = open(dir.path());
        let tagged = |index: u32, count: u32| {
            let tag = IdempotencyTag {
                key: "k".into(),
                digest: "d".into(),
                index,
                count,
            };
            NewEvent::new(Kind::Queued, Level::Info, "Job queued.").with_payload(
                serde_json::json!({ "maxAttempts": 1, "request": {}, "idempotency": tag.to_json() }),
            )
        };
        let (a, b, c) = (JobId::new(), JobId::new(), JobId::new());
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone()).start();
            let unit = AppendAll {
                appends: vec![Append::one(a, tagged(0, 2)), Append::one(b, tagged(1, 2))],
            };
            let (first, second) = futures_util::future::join(
                journal.send(unit),
                journal.send(Append::one(c, tagged(0, 1))),
            )
            .await;
            assert_eq!(first.unwrap().unwrap(), vec![vec![1], vec![2]]);
            assert!(matches!(
                second.unwrap(),
                Err(JournalError::Refused(Refusal::KeyInUse { key })) if key == "k"
            ));
            // Bound in the views too, for a later flush.
            let again = journal.send(Append::one(c, tagged(0, 1))).await.unwrap();
            assert!(matches!(
                again,
                Err(JournalError::Refused(Refusal::KeyInUse { .. }))
            ));
        });
        let used = views.key_use("k", now_ms()).unwrap();
        assert_eq!(used.jobs, vec![a, b]);
        assert!(views.view(c).is_none());
        // Replayed from the log, and forgotten once the window has passed.
        let (store2, views2) = {
            // (The views hold the log too: they fold old jobs from it.)
            drop((store, views));
            open(dir.path())
        };
        assert_eq!(views2.key_use("k", now_ms()).unwrap().jobs, vec![a, b]);
        let later = now_ms() + crate::event::IDEMPOTENCY_WINDOW_MS;
        assert_eq!(views2.key_use("k", later), None);
        assert!(!views2.key_in_use("k", later));
        drop(store2);
    }

    #[test]
    fn ids_of_a_failed_commit_are_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (a, b) = (JobId::new(), JobId::new());
        {
            let (disk, switch) = FaultyDisk::open(&path);
            let store = Arc::new(Store::open_with_backend(&path, disk).unwrap());
            let views = Arc::new(Views::new());
            actix::System::new().block_on(async {
                let journal = Journal::new(store.clone(), views.clone()).start();
                let first = journal.send(Append::one(a, queued())).await.unwrap();
                assert_eq!(first.unwrap(), vec![1]);
                switch.set(Some(DiskFault::Io));
                let sent = vec![
                    journal.send(Append::one(b, queued())),
                    journal.send(Append::one(a, log("lost"))),
                ];
                for r in futures_util::future::join_all(sent).await {
                    let err = r.unwrap().unwrap_err();
                    assert!(err.is_fatal(), "{err}");
                }
            });
            // Nothing of the failed batch is visible to readers.
            assert_eq!(views.last_id(), 1);
            assert!(views.view(b).is_none());
            assert_eq!(views.view(a).unwrap().last_event_id, 1);
            switch.set(None);
        }
        // Nor after a restart; the next append may reuse the ids nobody ever saw.
        let (store, views) = open(dir.path());
        assert_eq!(store.last_id().unwrap(), 1);
        assert!(views.view(b).is_none());
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone()).start();
            let r = journal.send(Append::one(a, log("kept"))).await.unwrap();
            assert_eq!(r.unwrap(), vec![2]);
        });
        let msgs: Vec<_> = store
            .read_job(a, 0, u64::MAX, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(msgs, vec!["Job queued.", "kept"]);
    }

    #[test]
    fn after_a_failed_commit_nothing_is_written_and_every_append_names_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (disk, switch) = FaultyDisk::open(&path);
        let store = Arc::new(Store::open_with_backend(&path, disk).unwrap());
        let views = Arc::new(Views::new());
        let a = JobId::new();
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone());
            let mut faults = journal.faults();
            let journal = journal.start();
            journal
                .send(Append::one(a, queued()))
                .await
                .unwrap()
                .unwrap();
            assert!(faults.borrow().is_none());
            switch.set(Some(DiskFault::Full));
            let err = journal
                .send(Append::one(a, log("lost")))
                .await
                .unwrap()
                .unwrap_err();
            let JournalError::Fatal(fault) = &err else {
                panic!("{err:?}")
            };
            assert!(fault.is_disk_full(), "{fault}");
            let expected = format!(
                "The event log cannot be written (no space left on the disk holding {}); the daemon is restarting.",
                dir.path().display()
            );
            assert_eq!(err.to_string(), expected);
            faults.changed().await.unwrap();
            assert!(faults.borrow().is_some());
            // The disk works again, but the journal tries no more writes: redb would refuse them
            // (or worse, half-apply them); the restart opens the log afresh.
            switch.set(None);
            let tried = switch.writes();
            for _ in 0..50 {
                let r = journal
                    .send(Append::one(a, log("later")))
                    .await
                    .unwrap();
                assert_eq!(r.unwrap_err().to_string(), expected);
            }
            assert_eq!(switch.writes(), tried, "the journal kept writing");
        });
        assert_eq!(views.last_id(), 1);
    }
}
