//! In-memory views of the log: every job's folded state, in creation order, with a wake-up channel per
//! job. Rebuilt from the log at start-up; afterwards only the journal writes here, right after each
//! commit, so a view never shows an event that is not durable. Readers (HTTP, control socket, the
//! scheduler) take cheap snapshots (`Arc<JobView>`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::event::{now_ms, EventId, JobId, JobState, JobView, IDEMPOTENCY_WINDOW_MS};
use crate::store::{ReadError, Store};

struct Slot {
    view: Arc<JobView>,
    /// Carries the job's last event id; changes after every commit that touches the job.
    tx: watch::Sender<EventId>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<JobId, Slot>,
    /// Jobs in creation order (append-only).
    order: Vec<JobId>,
    /// The queue: every job whose state is `queued`, keyed by the id of the event that queued it
    /// (oldest first). Derived from the views in `publish` and `replay`, never edited elsewhere.
    queue: BTreeMap<EventId, JobId>,
    /// Idempotency keys in use: derived from the tags of the jobs' first `queued` events.
    keys: HashMap<String, KeyEntry>,
    /// The keys by creation time, oldest first, to forget them once their window has passed.
    key_order: VecDeque<(i64, String)>,
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

    /// Keeps `queue` in step with one view's change (`old` is `None` for a new job).
    fn requeue(&mut self, old: Option<&JobView>, new: &JobView) {
        if let Some(o) = old.filter(|o| o.state == JobState::Queued) {
            self.queue.remove(&o.queued_at);
        }
        if new.state == JobState::Queued {
            self.queue.insert(new.queued_at, new.id);
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

    /// Rebuilds every view from the log.
    pub fn replay(store: &Store) -> Result<(Views, ReplayReport), ReadError> {
        let mut views: HashMap<JobId, JobView> = HashMap::new();
        let mut order = Vec::new();
        let mut report = ReplayReport::default();
        let mut last = 0;
        report.events = store.scan(|ev| {
            last = ev.id;
            if ev.job == JobId::DAEMON {
                return;
            }
            match views.get_mut(&ev.job) {
                Some(v) => v.apply(&ev),
                None => match JobView::create(&ev) {
                    Some(v) => {
                        order.push(ev.job);
                        views.insert(ev.job, v);
                    }
                    None => report.orphans += 1,
                },
            }
        })?;
        report.jobs = order.len() as u64;
        let mut inner = Inner {
            jobs: HashMap::with_capacity(views.len()),
            order,
            queue: BTreeMap::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
        };
        let now = now_ms();
        for id in inner.order.clone() {
            if let Some(view) = views.get(&id) {
                inner.index_key(view, now);
            }
        }
        for (id, view) in views {
            inner.requeue(None, &view);
            let (tx, _) = watch::channel(view.last_event_id);
            inner.jobs.insert(
                id,
                Slot {
                    view: Arc::new(view),
                    tx,
                },
            );
        }
        let out = Views {
            inner: RwLock::new(inner),
            last_id: AtomicU64::new(last),
            any: watch::channel(last).0,
        };
        Ok((out, report))
    }

    pub fn view(&self, job: JobId) -> Option<Arc<JobView>> {
        self.read().jobs.get(&job).map(|s| s.view.clone())
    }

    /// A receiver that changes whenever `job` gets a new event.
    pub fn subscribe(&self, job: JobId) -> Option<watch::Receiver<EventId>> {
        self.read().jobs.get(&job).map(|s| s.tx.subscribe())
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
        let inner = self.read();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.jobs.get(id))
            .map(|s| &s.view)
            .filter(|v| state.is_none_or(|st| v.state == st))
            .take(limit)
            .cloned()
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
            .map(|s| s.view.clone())
            .take(limit)
            .collect()
    }

    /// The most recently queued job that `skip` does not name.
    pub fn newest_queued(&self, skip: impl Fn(JobId) -> bool) -> Option<Arc<JobView>> {
        let inner = self.read();
        let id = inner.queue.values().rev().find(|id| !skip(**id))?;
        inner.jobs.get(id).map(|s| s.view.clone())
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

    pub fn counts(&self) -> Counts {
        let inner = self.read();
        let mut c = Counts::default();
        for s in inner.jobs.values() {
            match s.view.state {
                JobState::Queued => c.queued += 1,
                JobState::Running => c.running += 1,
                JobState::Completed => c.completed += 1,
                JobState::Failed => c.failed += 1,
                JobState::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    /// Publishes the views changed by one commit (journal only), then wakes their followers.
    pub(crate) fn publish(&self, changed: Vec<JobView>, created: &[JobId], last: EventId) {
        let mut woken = Vec::with_capacity(changed.len());
        let now = now_ms();
        {
            let mut inner = self.write();
            inner.order.extend_from_slice(created);
            for view in changed {
                let id = view.id;
                let last_of_job = view.last_event_id;
                let old = inner.jobs.get(&id).map(|s| s.view.clone());
                inner.requeue(old.as_deref(), &view);
                match inner.jobs.get_mut(&id) {
                    Some(slot) => {
                        slot.view = Arc::new(view);
                        woken.push((slot.tx.clone(), last_of_job));
                    }
                    None => {
                        inner.index_key(&view, now);
                        let (tx, _) = watch::channel(last_of_job);
                        inner.jobs.insert(
                            id,
                            Slot {
                                view: Arc::new(view),
                                tx,
                            },
                        );
                    }
                }
            }
        }
        self.last_id.store(last, Ordering::Release);
        for (tx, v) in woken {
            tx.send_replace(v);
        }
        self.any.send_replace(last);
    }
}
