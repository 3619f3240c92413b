//! In-memory views of the log: every job's state, in creation order, with a wake-up channel per
//! job. Rebuilt from the log at start-up; afterwards only the journal writes here, right after each
//! commit, so a view never shows an event that is not durable. Readers (HTTP, control socket, the
//! scheduler) take cheap snapshots (`Arc<JobView>`).
//!
//! Memory does not grow with history: live jobs (queued, running) and the [`RECENT_FINISHED`]
//! most recently finished ones are kept whole; every older finished job keeps only a [`Head`]
//! (state, ids, times: a few dozen bytes), and its whole view is folded from the log when someone
//! reads it. A job's wake-up channel is made when someone first follows it. The start-up replay
//! reads every record's head without parsing payload JSON, then folds the live and recent jobs
//! from their own events.
//!
//! On a shared store (PostgreSQL) the views are the same cache with no log of their own
//! ([`Views::from_heads`]): they start from the store's head columns and the whole views of the
//! jobs kept whole, fold finished jobs the same way, and a folded job's whole view is read from the
//! store asynchronously by its readers (`Core::job_view`, `Core::list_jobs`; the cluster's follower
//! before it applies a new event of such a job). [`Views::view`] shows such a job's head fields.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;
use tracing::warn;

use crate::event::{
    fold, now_ms, Event, EventId, JobId, JobState, JobView, Kind, Level, IDEMPOTENCY_WINDOW_MS,
};
use crate::store::{ReadError, Store};

/// Finished jobs kept whole (the most recently finished), beside the live ones.
pub const RECENT_FINISHED: usize = 256;

/// What is kept of every job, whole or not: enough for lists, counts and the events page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub state: JobState,
    pub cancel_requested: bool,
    pub attempt: u32,
    pub first_event_id: EventId,
    pub last_event_id: EventId,
    pub created_ms: i64,
    pub completed_ms: Option<i64>,
}

impl Head {
    pub(crate) fn of(v: &JobView) -> Head {
        Head {
            state: v.state,
            cancel_requested: v.cancel_requested,
            attempt: v.attempt,
            first_event_id: v.first_event_id,
            last_event_id: v.last_event_id,
            created_ms: v.created_ms,
            completed_ms: v.completed_ms,
        }
    }

    /// The head after its first event (`queued`).
    fn create(id: EventId, timestamp_ms: i64) -> Head {
        Head {
            state: JobState::Queued,
            cancel_requested: false,
            attempt: 0,
            first_event_id: id,
            last_event_id: id,
            created_ms: timestamp_ms,
            completed_ms: None,
        }
    }

    /// Folds one more event in: the same rules as [`JobView::apply`] for these fields.
    fn apply(&mut self, id: EventId, kind: Kind, timestamp_ms: i64) {
        self.last_event_id = id;
        match kind {
            Kind::Queued => {
                self.state = JobState::Queued;
                self.cancel_requested = false;
                self.completed_ms = None;
            }
            Kind::Running => {
                self.state = JobState::Running;
                self.attempt += 1;
            }
            Kind::CancelRequested => self.cancel_requested = true,
            Kind::Cancelled => {
                self.state = JobState::Cancelled;
                self.completed_ms = Some(timestamp_ms);
            }
            Kind::Error => {
                self.state = JobState::Failed;
                self.completed_ms = Some(timestamp_ms);
            }
            Kind::Complete => {
                self.state = JobState::Completed;
                self.completed_ms = Some(timestamp_ms);
            }
            Kind::Log
            | Kind::Progress
            | Kind::Metadata
            | Kind::Admin
            | Kind::StageCompleted
            | Kind::Webhook => {}
        }
    }
}

enum Entry {
    Whole(Arc<JobView>),
    /// A finished job; its view is folded from the log when read.
    Folded(Head),
}

/// A job as the cache holds it: its whole view, or (an older finished job) its head, whose whole
/// view the caller reads from the store ([`Views::fold_local`] for a redb log; a shared store's
/// stored head otherwise).
#[derive(Clone, Debug)]
pub enum Cached {
    Whole(Arc<JobView>),
    Folded(Head),
}

impl Entry {
    fn cached(&self) -> Cached {
        match self {
            Entry::Whole(v) => Cached::Whole(v.clone()),
            Entry::Folded(h) => Cached::Folded(*h),
        }
    }

    fn head(&self) -> Head {
        match self {
            Entry::Whole(v) => Head::of(v),
            Entry::Folded(h) => *h,
        }
    }
}

struct Slot {
    entry: Entry,
    /// Carries the job's last event id; changes after every commit that touches the job. Made when
    /// someone first follows the job.
    tx: Option<watch::Sender<EventId>>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<JobId, Slot>,
    /// Jobs in creation order (append-only, but for purged jobs).
    order: Vec<JobId>,
    /// The queue: every job whose state is `queued`, keyed by the id of the event that queued it
    /// (oldest first). Derived from the views in `publish` and `replay`, never edited elsewhere.
    queue: BTreeMap<EventId, JobId>,
    /// Idempotency keys in use: derived from the tags of the jobs' first `queued` events.
    keys: HashMap<String, KeyEntry>,
    /// The keys by creation time, oldest first, to forget them once their window has passed.
    key_order: VecDeque<(i64, String)>,
    /// Finished jobs kept whole, oldest first (at most [`RECENT_FINISHED`] when there is a log to
    /// fold the others from).
    recent: VecDeque<JobId>,
}

/// The jobs one `Idempotency-Key` created.
struct KeyEntry {
    digest: String,
    created_ms: i64,
    /// By index in the submit; `None` until that job's view is known.
    jobs: Vec<Option<JobId>>,
}

/// A key in use: the digest of the body it came with and the jobs it created, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUse {
    pub digest: String,
    pub jobs: Vec<JobId>,
}

impl Inner {
    /// Records the key of a newly created job (`now`: the current time, to forget old keys).
    fn index_key(&mut self, view: &JobView, now: i64) {
        let Some(tag) = view.idempotency.as_deref() else {
            return;
        };
        while let Some((created, _)) = self.key_order.front() {
            if created + IDEMPOTENCY_WINDOW_MS > now {
                break;
            }
            if let Some((created, key)) = self.key_order.pop_front() {
                if self.keys.get(&key).is_some_and(|e| e.created_ms == created) {
                    self.keys.remove(&key);
                }
            }
        }
        if view.created_ms + IDEMPOTENCY_WINDOW_MS <= now {
            return;
        }
        let entry = self
            .keys
            .entry(tag.key.clone())
            .or_insert_with(|| KeyEntry {
                digest: tag.digest.clone(),
                created_ms: view.created_ms,
                jobs: Vec::new(),
            });
        if entry.created_ms != view.created_ms || entry.digest != tag.digest {
            // A key reused after its window (the journal refuses it within the window).
            *entry = KeyEntry {
                digest: tag.digest.clone(),
                created_ms: view.created_ms,
                jobs: Vec::new(),
            };
        }
        if entry.jobs.is_empty() {
            entry.jobs = vec![None; tag.count as usize];
            self.key_order.push_back((view.created_ms, tag.key.clone()));
        }
        if let Some(slot) = entry.jobs.get_mut(tag.index as usize) {
            *slot = Some(view.id);
        }
    }

    /// Keeps `queue` in step with one view's change (`old_queued_at`: where the job was queued
    /// before, if it was).
    fn requeue(&mut self, old_queued_at: Option<EventId>, new: &JobView) {
        if let Some(at) = old_queued_at {
            self.queue.remove(&at);
        }
        if new.state == JobState::Queued {
            self.queue.insert(new.queued_at, new.id);
        }
    }

    /// Keeps at most `RECENT_FINISHED` finished jobs whole: the oldest others become heads.
    fn trim_recent(&mut self) {
        while self.recent.len() > RECENT_FINISHED {
            let Some(id) = self.recent.pop_front() else {
                break;
            };
            if let Some(slot) = self.jobs.get_mut(&id) {
                if let Entry::Whole(v) = &slot.entry {
                    if v.state.is_terminal() {
                        slot.entry = Entry::Folded(Head::of(v));
                    }
                }
                if slot.tx.as_ref().is_some_and(|t| t.receiver_count() == 0) {
                    slot.tx = None;
                }
            }
        }
    }
}

/// Counts by state, for status displays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// What a replay found.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayReport {
    pub events: u64,
    pub jobs: u64,
    /// Events that could not be folded (a history not starting with `queued`): skipped, logged.
    pub orphans: u64,
}

#[derive(Default)]
pub struct Views {
    inner: RwLock<Inner>,
    last_id: AtomicU64,
    /// Wakes daemon-wide followers (admin events, any commit).
    any: watch::Sender<EventId>,
    /// The log that finished jobs are folded from (`None`: a shared store, or none).
    store: Option<Arc<Store>>,
    /// Whether older finished jobs are folded to heads (a redb log, or a shared store whose
    /// stored heads their whole views are read from); else every job is kept whole.
    folds: bool,
}

/// A job's state from its head alone (what a view folded from a damaged log falls back to).
pub(crate) fn view_of_head(job: JobId, h: &Head) -> JobView {
    let first = Event {
        id: h.first_event_id,
        job,
        kind: Kind::Queued,
        level: Level::Info,
        message: String::new(),
        payload: None,
        timestamp_ms: h.created_ms,
        stage: None,
    };
    // `create` of a `queued` event cannot fail.
    let mut v = JobView::create(&first).unwrap_or_else(|| unreachable!("a queued event"));
    v.state = h.state;
    v.cancel_requested = h.cancel_requested;
    v.attempt = h.attempt;
    v.last_event_id = h.last_event_id;
    v.completed_ms = h.completed_ms;
    v
}

impl Views {
    pub fn new() -> Views {
        Views::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-updated map (updates are single inserts),
        // so a poisoned lock is still safe to use.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds every view from the log. First pass: every record's head (no payload JSON), folded
    /// into each job's [`Head`]. Second pass: the live jobs, the most recently finished ones and
    /// those that may hold an idempotency key still in its window are folded whole from their own
    /// events (the per-job index).
    pub fn replay(store: &Arc<Store>) -> Result<(Views, ReplayReport), ReadError> {
        struct Light {
            head: Head,
            /// The first event's payload mentions an idempotency tag.
            keyed: bool,
        }
        let mut heads: HashMap<JobId, Light> = HashMap::new();
        let mut order = Vec::new();
        let mut report = ReplayReport::default();
        let mut last = 0;
        report.events = store.scan_heads(|id, h| {
            last = id;
            if h.job == JobId::DAEMON {
                return;
            }
            match heads.get_mut(&h.job) {
                Some(l) => l.head.apply(id, h.kind, h.timestamp_ms),
                None if h.kind == Kind::Queued => {
                    order.push(h.job);
                    let keyed = h.payload.is_some_and(|p| p.contains("\"idempotency\""));
                    let head = Head::create(id, h.timestamp_ms);
                    heads.insert(h.job, Light { head, keyed });
                }
                None => report.orphans += 1,
            }
        })?;
        report.jobs = order.len() as u64;
        // Ids of purged events stay given out.
        let last = last.max(store.last_id()?);
        let now = now_ms();
        // The finished jobs to keep whole: the most recently finished.
        let mut finished: Vec<(EventId, JobId)> = heads
            .iter()
            .filter(|(_, l)| l.head.state.is_terminal())
            .map(|(id, l)| (l.head.last_event_id, *id))
            .collect();
        finished.sort_unstable();
        let recent: VecDeque<JobId> = finished
            .iter()
            .rev()
            .take(RECENT_FINISHED)
            .rev()
            .map(|(_, id)| *id)
            .collect();
        drop(finished);
        let mut inner = Inner {
            jobs: HashMap::with_capacity(heads.len()),
            order: Vec::new(),
            queue: BTreeMap::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            recent: VecDeque::new(),
        };
        let whole_recent: std::collections::HashSet<JobId> = recent.iter().copied().collect();
        for id in &order {
            let Some(l) = heads.get(id) else { continue };
            let live = !l.head.state.is_terminal();
            let key_window = l.keyed && l.head.created_ms + IDEMPOTENCY_WINDOW_MS > now;
            let entry = if live || key_window || whole_recent.contains(id) {
                let events = store.read_job(*id, 0, l.head.last_event_id, usize::MAX)?;
                match fold(&events) {
                    Some(view) => {
                        inner.index_key(&view, now);
                        inner.requeue(None, &view);
                        if live || whole_recent.contains(id) {
                            Entry::Whole(Arc::new(view))
                        } else {
                            Entry::Folded(l.head)
                        }
                    }
                    None => Entry::Folded(l.head),
                }
            } else {
                Entry::Folded(l.head)
            };
            inner.jobs.insert(*id, Slot { entry, tx: None });
        }
        drop(heads);
        inner.order = order;
        inner.recent = recent;
        trim_heap();
        let out = Views {
            inner: RwLock::new(inner),
            last_id: AtomicU64::new(last),
            any: watch::channel(last).0,
            store: Some(store.clone()),
            folds: true,
        };
        Ok((out, report))
    }

    /// The cache of a shared store, built from what it loaded at start ([`crate::store::postgres::PgStore::load_cache`]):
    /// every job's head (creation order), and the views to keep whole (live jobs, the most
    /// recently finished, and those whose idempotency key may still be in its window), up to
    /// `last`. Finished jobs beyond the [`RECENT_FINISHED`] most recent are kept as heads, as a
    /// replay of a redb log keeps them; their whole views are read from the store on demand.
    pub fn from_heads(heads: Vec<(JobId, Head)>, whole: Vec<JobView>, last: EventId) -> Views {
        let now = now_ms();
        let mut inner = Inner::default();
        inner.jobs.reserve(heads.len());
        inner.order.reserve(heads.len());
        for (id, head) in heads {
            inner.order.push(id);
            inner.jobs.insert(
                id,
                Slot {
                    entry: Entry::Folded(head),
                    tx: None,
                },
            );
        }
        let mut finished: Vec<(EventId, JobId)> = Vec::new();
        for view in whole {
            let id = view.id;
            inner.index_key(&view, now);
            inner.requeue(None, &view);
            if view.state.is_terminal() {
                finished.push((view.last_event_id, id));
            }
            if let Some(slot) = inner.jobs.get_mut(&id) {
                slot.entry = Entry::Whole(Arc::new(view));
            }
        }
        finished.sort_unstable();
        let keep = finished.len().saturating_sub(RECENT_FINISHED);
        for (_, id) in &finished[..keep] {
            if let Some(slot) = inner.jobs.get_mut(id) {
                slot.entry = Entry::Folded(slot.entry.head());
            }
        }
        inner.recent = finished[keep..].iter().map(|(_, id)| *id).collect();
        Views {
            inner: RwLock::new(inner),
            last_id: AtomicU64::new(last),
            any: watch::channel(last).0,
            store: None,
            folds: true,
        }
    }

    /// A job's whole view (folded from the log for an older finished job). On a shared store a
    /// folded job shows its head's fields only: read it whole with `Core::job_view`.
    pub fn view(&self, job: JobId) -> Option<Arc<JobView>> {
        let head = match &self.read().jobs.get(&job)?.entry {
            Entry::Whole(v) => return Some(v.clone()),
            Entry::Folded(h) => *h,
        };
        Some(Arc::new(self.fold_from_log(job, &head)))
    }

    /// A job as the cache holds it (no read of any log).
    pub fn cached(&self, job: JobId) -> Option<Cached> {
        self.read().jobs.get(&job).map(|s| s.entry.cached())
    }

    /// Whether this cache folds from a redb log ([`Views::fold_local`] reads it).
    pub fn has_local_log(&self) -> bool {
        self.store.is_some()
    }

    /// The whole view of a folded job, from the redb log (blocking: call it off the async
    /// workers); its head's fields alone without a log.
    pub fn fold_local(&self, job: JobId, head: &Head) -> JobView {
        self.fold_from_log(job, head)
    }

    /// The jobs that may still owe a webhook delivery, oldest first: every job kept whole, and the
    /// folded (finished) ones that ended at or after `since_ms`; `true` marks a folded one.
    pub fn webhook_candidates(&self, since_ms: i64) -> Vec<(JobId, Head, bool)> {
        let inner = self.read();
        inner
            .order
            .iter()
            .filter_map(|id| inner.jobs.get(id).map(|s| (*id, s)))
            .filter_map(|(id, s)| match &s.entry {
                Entry::Whole(v) => Some((id, Head::of(v), false)),
                Entry::Folded(h) => h
                    .completed_ms
                    .is_none_or(|t| t >= since_ms)
                    .then_some((id, *h, true)),
            })
            .collect()
    }

    /// A job's head: cheap for every job, whole or not.
    pub fn head(&self, job: JobId) -> Option<Head> {
        self.read().jobs.get(&job).map(|s| s.entry.head())
    }

    fn fold_from_log(&self, job: JobId, head: &Head) -> JobView {
        let Some(store) = &self.store else {
            return view_of_head(job, head);
        };
        match store.read_job(job, 0, head.last_event_id, usize::MAX) {
            Ok(events) => match fold(&events) {
                Some(v) => v,
                None => view_of_head(job, head),
            },
            Err(e) => {
                warn!(job = %job, error = %e, "cannot fold a finished job from the log; showing its head");
                view_of_head(job, head)
            }
        }
    }

    /// A receiver that changes whenever `job` gets a new event.
    pub fn subscribe(&self, job: JobId) -> Option<watch::Receiver<EventId>> {
        if let Some(tx) = self.read().jobs.get(&job)?.tx.as_ref() {
            return Some(tx.subscribe());
        }
        let mut inner = self.write();
        let slot = inner.jobs.get_mut(&job)?;
        let last = slot.entry.head().last_event_id;
        Some(
            slot.tx
                .get_or_insert_with(|| watch::channel(last).0)
                .subscribe(),
        )
    }

    /// A receiver that changes after every commit.
    pub fn subscribe_all(&self) -> watch::Receiver<EventId> {
        self.any.subscribe()
    }

    pub fn last_id(&self) -> EventId {
        self.last_id.load(Ordering::Acquire)
    }

    /// Jobs newest first, optionally of one state.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Vec<Arc<JobView>> {
        self.list_before(state, None, limit)
    }

    /// Jobs newest first, optionally of one state, created before the job whose first event is
    /// `before` (paging). Older finished jobs are folded from the log, only those returned.
    pub fn list_before(
        &self,
        state: Option<JobState>,
        before: Option<EventId>,
        limit: usize,
    ) -> Vec<Arc<JobView>> {
        self.list_cached(state, before, limit)
            .into_iter()
            .map(|(id, c)| match c {
                Cached::Whole(v) => v,
                Cached::Folded(h) => Arc::new(self.fold_from_log(id, &h)),
            })
            .collect()
    }

    /// The page [`Views::list_before`] answers, as the cache holds it (folded jobs as heads).
    pub fn list_cached(
        &self,
        state: Option<JobState>,
        before: Option<EventId>,
        limit: usize,
    ) -> Vec<(JobId, Cached)> {
        let inner = self.read();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.jobs.get(id).map(|s| (*id, s)))
            .filter(|(_, s)| {
                let h = s.entry.head();
                state.is_none_or(|st| h.state == st) && before.is_none_or(|b| h.first_event_id < b)
            })
            .take(limit)
            .map(|(id, s)| (id, s.entry.cached()))
            .collect()
    }

    /// Up to `limit` queued jobs, oldest first (the order the queue takes them in), leaving out those
    /// `skip` names (jobs being started whose `running` event has not committed yet).
    pub fn queued(&self, limit: usize, skip: impl Fn(JobId) -> bool) -> Vec<Arc<JobView>> {
        let inner = self.read();
        inner
            .queue
            .values()
            .filter(|id| !skip(**id))
            .filter_map(|id| inner.jobs.get(id))
            .filter_map(|s| match &s.entry {
                Entry::Whole(v) => Some(v.clone()),
                Entry::Folded(_) => None,
            })
            .take(limit)
            .collect()
    }

    /// The most recently queued job that `skip` does not name.
    pub fn newest_queued(&self, skip: impl Fn(JobId) -> bool) -> Option<Arc<JobView>> {
        let inner = self.read();
        let id = inner.queue.values().rev().find(|id| !skip(**id))?;
        match &inner.jobs.get(id)?.entry {
            Entry::Whole(v) => Some(v.clone()),
            Entry::Folded(_) => None,
        }
    }

    /// The use of `key` if it is in use at `now` (created within the window, every job known).
    pub fn key_use(&self, key: &str, now: i64) -> Option<KeyUse> {
        let inner = self.read();
        let e = inner.keys.get(key)?;
        if e.created_ms + IDEMPOTENCY_WINDOW_MS <= now {
            return None;
        }
        let jobs = e.jobs.iter().copied().collect::<Option<Vec<JobId>>>()?;
        Some(KeyUse {
            digest: e.digest.clone(),
            jobs,
        })
    }

    /// Whether `key` is bound at `now`, complete or not (the journal's check).
    pub(crate) fn key_in_use(&self, key: &str, now: i64) -> bool {
        self.read()
            .keys
            .get(key)
            .is_some_and(|e| e.created_ms + IDEMPOTENCY_WINDOW_MS > now)
    }

    /// How many jobs are queued.
    pub fn queue_len(&self) -> usize {
        self.read().queue.len()
    }

    /// How many jobs are kept whole (live and recently finished): the rest are heads.
    pub fn whole_len(&self) -> usize {
        self.read()
            .jobs
            .values()
            .filter(|s| matches!(s.entry, Entry::Whole(_)))
            .count()
    }

    pub fn counts(&self) -> Counts {
        let inner = self.read();
        let mut c = Counts::default();
        for s in inner.jobs.values() {
            match s.entry.head().state {
                JobState::Queued => c.queued += 1,
                JobState::Running => c.running += 1,
                JobState::Completed => c.completed += 1,
                JobState::Failed => c.failed += 1,
                JobState::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    /// Finished jobs (`completed`, `failed`, `cancelled`) whose end is older than `cutoff_ms`,
    /// oldest first, at most `limit` (retention).
    pub fn finished_before(&self, cutoff_ms: i64, limit: usize) -> Vec<JobId> {
        let inner = self.read();
        inner
            .order
            .iter()
            .filter(|id| {
                inner.jobs.get(id).is_some_and(|s| {
                    let h = s.entry.head();
                    h.state.is_terminal() && h.completed_ms.is_some_and(|t| t < cutoff_ms)
                })
            })
            .take(limit)
            .copied()
            .collect()
    }

    /// Forgets purged jobs (journal only, after their events were deleted).
    pub(crate) fn remove(&self, jobs: &[JobId]) {
        let gone: std::collections::HashSet<JobId> = jobs.iter().copied().collect();
        let mut inner = self.write();
        for id in jobs {
            inner.jobs.remove(id);
        }
        inner.order.retain(|id| !gone.contains(id));
        inner.recent.retain(|id| !gone.contains(id));
        inner.queue.retain(|_, id| !gone.contains(id));
        for e in inner.keys.values_mut() {
            for j in e.jobs.iter_mut() {
                if j.is_some_and(|j| gone.contains(&j)) {
                    *j = None;
                }
            }
        }
    }

    /// Publishes the views changed by one commit (journal only), then wakes their followers.
    pub(crate) fn publish(&self, changed: Vec<JobView>, created: &[JobId], last: EventId) {
        let mut woken = Vec::with_capacity(changed.len());
        let now = now_ms();
        {
            let mut inner = self.write();
            inner.order.extend_from_slice(created);
            let mut finished = false;
            for view in changed {
                let id = view.id;
                let last_of_job = view.last_event_id;
                let old = inner.jobs.get(&id).map(|s| s.entry.head());
                let old_queued_at = match inner.jobs.get(&id).map(|s| &s.entry) {
                    Some(Entry::Whole(v)) if v.state == JobState::Queued => Some(v.queued_at),
                    _ => None,
                };
                inner.requeue(old_queued_at, &view);
                // A folded job written to again (a webhook attempt, a retry) is whole again: it
                // joins the recent ones (it is not among them), to be folded again in its turn.
                let was_folded = matches!(
                    inner.jobs.get(&id).map(|s| &s.entry),
                    Some(Entry::Folded(_))
                );
                let ends = view.state.is_terminal()
                    && (was_folded || old.is_none_or(|o| !o.state.is_terminal()));
                let view = Arc::new(view);
                match inner.jobs.get_mut(&id) {
                    Some(slot) => {
                        slot.entry = Entry::Whole(view);
                        if let Some(tx) = &slot.tx {
                            woken.push((tx.clone(), last_of_job));
                        }
                    }
                    None => {
                        inner.index_key(&view, now);
                        inner.jobs.insert(
                            id,
                            Slot {
                                entry: Entry::Whole(view),
                                tx: None,
                            },
                        );
                    }
                }
                if ends {
                    inner.recent.push_back(id);
                    finished = true;
                }
            }
            if finished && self.folds {
                inner.trim_recent();
            }
        }
        self.last_id.store(last, Ordering::Release);
        for (tx, v) in woken {
            tx.send_replace(v);
        }
        self.any.send_replace(last);
    }
}

/// Gives the memory the replay's passes used back to the system (glibc keeps freed heap otherwise,
/// and the resident size would remember the replay instead of the history kept).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::journal::{Append, Journal};
    use crate::event::NewEvent;
    use crate::store::FILE_NAME;
    use actix::Actor;

    fn queued() -> NewEvent {
        NewEvent::new(Kind::Queued, Level::Info, "Job queued.").with_payload(serde_json::json!({
            "maxAttempts": 2,
            "request": { "videoSubject": "history" },
        }))
    }

    /// A finished job's story (or a cut of it: `n` picks where it stops).
    fn story(n: usize) -> Vec<NewEvent> {
        let mut out = vec![
            NewEvent::new(Kind::Running, Level::Info, "Job started.")
                .with_payload(serde_json::json!({ "owner": { "host": "h", "pid": 1 } })),
            NewEvent::info("Starting video generation..."),
            NewEvent::progress(0.5),
        ];
        out.push(match n % 3 {
            0 => NewEvent::new(Kind::Metadata, Level::Info, "Metadata")
                .with_payload(serde_json::json!({ "title": "t" })),
            _ => NewEvent::info("no metadata"),
        });
        out.push(match n % 3 {
            0 => NewEvent::new(Kind::Complete, Level::Success, "Video generation complete")
                .with_payload(serde_json::json!({ "outputPath": "/o.mp4" })),
            1 => NewEvent::new(Kind::Error, Level::Error, "Failed to render video: boom"),
            _ => NewEvent::new(Kind::Cancelled, Level::Warning, "Job cancelled."),
        });
        out
    }

    /// Every job's view equals the fold of its events; counts and order agree.
    fn assert_views_are_folds(views: &Views, store: &Store, jobs: &[JobId]) {
        for job in jobs {
            let events = store.read_job(*job, 0, u64::MAX, usize::MAX).unwrap();
            let folded = fold(&events).unwrap();
            assert_eq!(*views.view(*job).unwrap(), folded, "job {job}");
            assert_eq!(views.head(*job).unwrap(), Head::of(&folded));
        }
        let listed: Vec<JobId> = views.list(None, usize::MAX).iter().map(|v| v.id).collect();
        let mut newest_first = jobs.to_vec();
        newest_first.reverse();
        assert_eq!(listed, newest_first);
    }

    /// 600 jobs (finished, queued, running): live and recent ones are whole, the rest heads, and
    /// every view (whole, folded on demand, or rebuilt by a replay) is the fold of its events.
    #[test]
    fn finished_jobs_beyond_the_recent_ones_are_heads_folded_from_the_log_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join(FILE_NAME)).unwrap());
        let (views, _) = Views::replay(&store).unwrap();
        let views = Arc::new(views);
        let mut jobs = Vec::new();
        actix::System::new().block_on(async {
            let journal = Journal::new(store.clone(), views.clone()).start();
            for n in 0..600 {
                let job = JobId::new();
                jobs.push(job);
                let mut events = vec![queued()];
                match n % 10 {
                    8 => {}
                    9 => events.extend(story(0).into_iter().take(2)),
                    _ => events.extend(story(n)),
                }
                journal
                    .send(Append::new(job, events))
                    .await
                    .unwrap()
                    .unwrap();
            }
            // A folded job re-opened by a retry is whole again and wakes its followers.
            let old = jobs[0];
            assert!(views.whole_len() < 600 - 200);
            let rx = views.subscribe(old).unwrap();
            journal
                .send(Append::one(old, queued()))
                .await
                .unwrap()
                .unwrap_err(); // completed: a retry is refused
            let failed = jobs[1];
            let mut rx_failed = views.subscribe(failed).unwrap();
            journal
                .send(Append::one(failed, queued()))
                .await
                .unwrap()
                .unwrap();
            rx_failed.changed().await.unwrap();
            assert_eq!(views.view(failed).unwrap().state, JobState::Queued);
            assert!(!rx.has_changed().unwrap());
        });
        let expected_whole = 60 + 60 + 1 + RECENT_FINISHED;
        assert_eq!(views.whole_len(), expected_whole);
        assert_views_are_folds(&views, &store, &jobs);
        let c = views.counts();
        assert_eq!((c.queued, c.running), (61, 60));
        assert_eq!(c.completed + c.failed + c.cancelled, 479);

        let (replayed, report) = Views::replay(&store).unwrap();
        assert_eq!(report.jobs, 600);
        assert_eq!(replayed.whole_len(), 121 + RECENT_FINISHED);
        assert_eq!(replayed.counts(), c);
        assert_views_are_folds(&replayed, &store, &jobs);
        let queue: Vec<JobId> = replayed
            .queued(1000, |_| false)
            .iter()
            .map(|v| v.id)
            .collect();
        let before: Vec<JobId> = views.queued(1000, |_| false).iter().map(|v| v.id).collect();
        assert_eq!(queue, before);
    }

    fn stored(
        id: EventId,
        job: JobId,
        kind: Kind,
        timestamp_ms: i64,
        payload: Option<serde_json::Value>,
    ) -> Event {
        Event {
            id,
            job,
            kind,
            level: Level::Info,
            message: kind.as_str().into(),
            payload,
            timestamp_ms,
            stage: None,
        }
    }

    /// The start-up replay reads old finished jobs' record heads only: a job whose payload JSON
    /// is unreadable (it would fail any fold) still replays to the right head, and only the
    /// recent finished jobs are folded. Old finished jobs outside the webhook window are not
    /// webhook candidates (the dispatcher's resume folds none of them).
    #[test]
    fn the_replay_never_parses_old_finished_jobs_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join(FILE_NAME)).unwrap());
        let old_ms = now_ms() - 40 * 86_400_000;
        let old = JobId::new();
        let queued = stored(
            1,
            old,
            Kind::Queued,
            old_ms,
            Some(serde_json::json!({ "request": {} })),
        );
        let log = stored(2, old, Kind::Log, old_ms, None);
        let done = stored(3, old, Kind::Complete, old_ms + 5, None);
        store
            .append_raw(&[
                (1, old, crate::store::codec::encode(&queued)),
                (
                    2,
                    old,
                    crate::store::codec::encode_with_payload_text(&log, "{\"not json"),
                ),
                (3, old, crate::store::codec::encode(&done)),
            ])
            .unwrap();
        assert!(store.read_job(old, 0, u64::MAX, usize::MAX).is_err());
        let mut recent = Vec::new();
        let mut id = 3;
        for _ in 0..RECENT_FINISHED {
            let job = JobId::new();
            recent.push(job);
            let batch: Vec<Event> = [Kind::Queued, Kind::Running, Kind::Complete]
                .into_iter()
                .map(|kind| {
                    id += 1;
                    stored(
                        id,
                        job,
                        kind,
                        now_ms(),
                        (kind == Kind::Queued).then(|| serde_json::json!({ "request": {} })),
                    )
                })
                .collect();
            store.append(&batch).unwrap();
        }
        let (views, report) = Views::replay(&store).unwrap();
        assert_eq!(report.jobs, 1 + RECENT_FINISHED as u64);
        assert_eq!(views.whole_len(), RECENT_FINISHED);
        let head = views.head(old).unwrap();
        assert_eq!(head.state, JobState::Completed);
        assert_eq!((head.first_event_id, head.last_event_id), (1, 3));
        assert_eq!(head.completed_ms, Some(old_ms + 5));
        assert_eq!(views.counts().completed, 1 + RECENT_FINISHED as u64);
        // Read on demand, the damaged job shows its head rather than failing.
        assert_eq!(views.view(old).unwrap().state, JobState::Completed);
        let since = now_ms() - 86_400_000;
        let candidates = views.webhook_candidates(since);
        assert_eq!(candidates.len(), RECENT_FINISHED);
        assert!(candidates.iter().all(|(j, _, folded)| *j != old && !folded));
        let all = views.webhook_candidates(i64::MIN);
        assert_eq!(all.first().map(|c| (c.0, c.2)), Some((old, true)));
    }
}
