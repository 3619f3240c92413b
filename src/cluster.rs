//! Cluster mode: several daemons on one shared event store (PostgreSQL), behaving as one service.
//!
//! The shared store is the truth; each daemon's `Views` are a cache of it, fed by one [`Follower`]
//! that tails the store's global feed in id order (`read_since`; the store assigns ids in commit
//! order, so a cursor never skips an event that commits later). Every write goes to the store
//! through the [`SharedJournal`], which batches the appends that arrive while one transaction is in
//! flight (group commit), and answers a caller only once the follower has applied its ids, so a
//! daemon always reads its own writes. Its own commits reach the views straight from the store's
//! commit (no read-back) when they follow the views' last id without a gap; otherwise the follower
//! reads the gap and them in order. Events written by other daemons reach the views the same
//! way (woken by the store's notifications, or its one-second poll), and with them the cancels,
//! pauses and new jobs the scheduler reacts to ([`Remote`]).
//!
//! The views keep older finished jobs folded to heads (as on redb): a new event of such a job (a
//! retry, a webhook attempt, from any daemon) is folded into its whole view, which the follower
//! first reads from the store ([`whole_of`]); the job is then whole again and folded in its turn.
//!
//! A store that cannot be reached is not fatal here (unlike a failed redb commit): writes are
//! answered `503` while it is down, `/healthz` says so, and everything resumes when it answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch, Notify};
use tracing::{error, info, warn};

use crate::actors::journal::{Append, AppendAll, Close, JournalError, Ping};
use crate::event::{fold, Event, EventId, IdempotencyTag, JobId, JobView, Kind, Refusal};
use crate::store::contract::{
    pause_state, purged_jobs, AppendRequest, EventStore, Owner, StoreFault,
};
use crate::views::{view_of_head, Cached, Head, Views};

/// Events read from the store per round trip of the follower.
const PAGE: usize = 2_000;
/// How long a writer waits for its own commit to reach the views before answering anyway.
const CATCH_UP: Duration = Duration::from_secs(10);

/// What other daemons changed that the scheduler acts on (sent after each applied page).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Remote {
    /// The queue's pause state, when an applied event set it.
    pub paused: Option<bool>,
    /// Jobs a purge (retention, on any daemon) deleted: gone from the views already; their files
    /// in this daemon's state directory go too.
    pub purged: Vec<JobId>,
}

/// This daemon's place in the cluster.
#[derive(Clone)]
pub struct Cluster {
    pub store: Arc<dyn EventStore>,
    pub follower: Arc<Follower>,
    pub owner: Owner,
    /// How long a claim or a renewal holds a job.
    pub lease: Duration,
    /// How often running jobs' leases are renewed (and expired ones looked for).
    pub renew_every: Duration,
}

/// Tails the shared store into the views.
pub struct Follower {
    store: Arc<dyn EventStore>,
    views: Arc<Views>,
    kick: Notify,
    applied: watch::Sender<EventId>,
    /// `Some(cause)` while the store cannot be read.
    down: watch::Sender<Option<String>>,
    listeners: Mutex<Vec<Recipient<Remote>>>,
    /// Held while events are applied, so the store's pages and this daemon's own commits reach
    /// the views once each, in id order.
    applying: Mutex<()>,
}

impl Follower {
    /// A follower whose views already hold the store's heads up to `views.last_id()`.
    pub fn new(store: Arc<dyn EventStore>, views: Arc<Views>) -> Arc<Follower> {
        let last = views.last_id();
        Arc::new(Follower {
            store,
            views,
            kick: Notify::new(),
            applied: watch::channel(last).0,
            down: watch::channel(None).0,
            listeners: Mutex::new(Vec::new()),
            applying: Mutex::new(()),
        })
    }

    /// Starts taking this daemon's own commits straight from the store (no read-back): a commit
    /// that follows the views' last id without a gap is applied at once; one behind another
    /// daemon's unread commit is left to the tailing task, which reads both in order.
    pub fn take_own_commits(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.store.on_commit(Arc::new(move |events: &[Event]| {
            if let Some(me) = me.upgrade() {
                me.own_commit(events);
            }
        }));
    }

    fn own_commit(&self, events: &[Event]) {
        let _held = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        if events.first().map(|e| e.id) == Some(self.views.last_id() + 1)
            && self.apply(events, &HashMap::new()).is_err()
        {
            // It touches a job the cache holds folded: the tailing task reads that job's whole
            // view from the store (this hook cannot wait for a read) and applies the commit then.
            self.kick.notify_one();
        }
    }

    /// Starts the tailing task (inside the runtime).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    /// Who hears of [`Remote`] changes.
    pub fn listen(&self, to: Recipient<Remote>) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(to);
    }

    /// Why the store cannot be read now, if it cannot.
    pub fn fault(&self) -> Option<String> {
        self.down.borrow().clone()
    }

    /// Resolves once the views hold every event up to `id` (or after [`CATCH_UP`]).
    pub async fn catch_up(&self, id: EventId) {
        if self.views.last_id() >= id {
            return;
        }
        self.kick.notify_one();
        let mut rx = self.applied.subscribe();
        if tokio::time::timeout(CATCH_UP, rx.wait_for(|a| *a >= id))
            .await
            .is_err()
        {
            warn!(id, "the views did not catch up with a commit in time");
        }
    }

    async fn run(&self) {
        let mut any = self.store.subscribe_all();
        let mut backoff = Duration::from_millis(100);
        // Set when the wake-up was a commit the views already hold (this daemon's own, applied
        // straight from the commit): nothing to read.
        let mut held = false;
        loop {
            let drained = if held { Ok(()) } else { self.drain().await };
            held = false;
            match drained {
                Ok(()) => {
                    if self.down.borrow().is_some() {
                        info!("the event store answers again");
                        self.down.send_replace(None);
                    }
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = any.changed() => {
                            held = *any.borrow_and_update() <= self.views.last_id();
                        }
                        _ = self.kick.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(cause) => {
                    if self.down.borrow().is_none() {
                        error!(%cause, "the event store cannot be read");
                        self.down.send_replace(Some(cause));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Applies every event committed after the views' last id.
    async fn drain(&self) -> Result<(), String> {
        loop {
            let cursor = self.views.last_id();
            let events = self
                .store
                .read_since(cursor, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let n = events.len();
            let page_last = events.last().map_or(cursor, |e| e.id);
            // Whole views of the folded jobs this page touches, read from the store.
            let mut wholes: HashMap<JobId, JobView> = HashMap::new();
            if n > 0 {
                loop {
                    let missing = {
                        let _held = self.applying.lock().unwrap_or_else(|p| p.into_inner());
                        // Own commits may have been applied since the read.
                        let cur = self.views.last_id();
                        let fresh = events.partition_point(|e| e.id <= cur);
                        match self.apply(&events[fresh..], &wholes) {
                            Ok(()) => break,
                            Err(missing) => missing,
                        }
                    };
                    for (job, head) in missing {
                        let v = whole_of(self.store.as_ref(), job, &head, page_last)
                            .await
                            .map_err(|e| e.to_string())?;
                        wholes.insert(job, v);
                    }
                }
            }
            if n < PAGE {
                return Ok(());
            }
        }
    }

    /// Applies `events` (ids following the views' last), or applies nothing and answers the jobs
    /// the cache holds folded (with their heads) whose whole views `wholes` lacks: a job's new
    /// event is folded into its whole view, never into a head.
    fn apply(
        &self,
        events: &[Event],
        wholes: &HashMap<JobId, JobView>,
    ) -> Result<(), Vec<(JobId, Head)>> {
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(());
        };
        let mut missing: Vec<(JobId, Head)> = Vec::new();
        let mut base: HashMap<JobId, Option<JobView>> = HashMap::new();
        for ev in events {
            if ev.job == JobId::DAEMON || base.contains_key(&ev.job) {
                continue;
            }
            let view = match self.views.cached(ev.job) {
                None => None,
                Some(Cached::Whole(v)) => Some((*v).clone()),
                Some(Cached::Folded(h)) => match wholes.get(&ev.job) {
                    Some(v) if v.last_event_id >= h.last_event_id => Some(v.clone()),
                    _ => {
                        missing.push((ev.job, h));
                        None
                    }
                },
            };
            base.insert(ev.job, view);
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        let mut work: HashMap<JobId, Option<JobView>> = HashMap::new();
        let mut created = Vec::new();
        let mut paused = None;
        let mut purged = Vec::new();
        for ev in events {
            if ev.job == JobId::DAEMON {
                if let Some(p) = pause_state(ev) {
                    paused = Some(p);
                }
                // A purge's record names the jobs it deleted (finished ones: no later event of
                // theirs can follow it).
                if let Some(gone) = purged_jobs(ev) {
                    for j in &gone {
                        work.remove(j);
                    }
                    created.retain(|j| !gone.contains(j));
                    purged.extend(gone);
                }
                continue;
            }
            let slot = work
                .entry(ev.job)
                .or_insert_with(|| base.remove(&ev.job).flatten());
            match slot {
                Some(v) if ev.id > v.last_event_id => v.apply(ev),
                Some(_) => {}
                None => {
                    *slot = JobView::create(ev);
                    if slot.is_some() {
                        created.push(ev.job);
                    }
                }
            }
        }
        if !purged.is_empty() {
            self.views.remove(&purged);
        }
        self.views
            .publish(work.into_values().flatten().collect(), &created, last);
        self.applied.send_replace(last);
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for l in listeners {
            l.do_send(Remote {
                paused,
                purged: purged.clone(),
            });
        }
        Ok(())
    }
}

/// The whole view of a job the cache holds as `head`, read from the shared store: its stored head
/// when that is at `head` or later but not past `upto` (the events between are then already in
/// it), else the fold of its events up to `head`'s last. A job the store does not know (purged)
/// or whose events do not fold shows `head`'s fields alone.
pub async fn whole_of(
    store: &dyn EventStore,
    job: JobId,
    head: &Head,
    upto: EventId,
) -> Result<JobView, StoreFault> {
    if let Some(v) = store.head(job).await? {
        if v.last_event_id >= head.last_event_id && v.last_event_id <= upto.max(head.last_event_id)
        {
            return Ok(v);
        }
    }
    let mut events = store.read_job(job, 0, usize::MAX).await?;
    events.retain(|e| e.id <= head.last_event_id);
    Ok(fold(&events)
        .filter(|v| v.last_event_id == head.last_event_id)
        .unwrap_or_else(|| view_of_head(job, head)))
}

/// Who waits for a unit of appends.
enum Reply {
    One(oneshot::Sender<Result<Vec<EventId>, JournalError>>),
    All(oneshot::Sender<Result<Vec<Vec<EventId>>, JournalError>>),
}

struct Unit {
    appends: Vec<Append>,
    reply: Reply,
}

/// The writer of a shared store: the journal's messages, group-committed into store transactions.
pub struct SharedJournal {
    store: Arc<dyn EventStore>,
    follower: Arc<Follower>,
    views: Arc<Views>,
    pending: Vec<Unit>,
    in_flight: bool,
    closing: Vec<oneshot::Sender<()>>,
}

impl SharedJournal {
    pub fn new(store: Arc<dyn EventStore>, follower: Arc<Follower>, views: Arc<Views>) -> Self {
        SharedJournal {
            store,
            follower,
            views,
            pending: Vec::new(),
            in_flight: false,
            closing: Vec::new(),
        }
    }

    fn queue(&mut self, appends: Vec<Append>, reply: Reply, ctx: &mut Context<Self>) {
        self.pending.push(Unit { appends, reply });
        if !self.in_flight {
            self.in_flight = true;
            ctx.notify(Flush);
        }
    }

    /// Refuses, before the transaction, a submit whose idempotency key the cached views already
    /// know as bound (the store checks again inside the transaction, against every commit).
    fn precheck(&self, unit: &Unit, now: i64) -> Result<(), Refusal> {
        for a in &unit.appends {
            let tag = a
                .events
                .first()
                .filter(|e| e.kind == Kind::Queued)
                .and_then(|e| e.payload.as_ref())
                .and_then(IdempotencyTag::from_payload);
            if let Some(t) = tag {
                if self.views.key_in_use(&t.key, now) {
                    return Err(Refusal::KeyInUse { key: t.key });
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let units = std::mem::take(&mut self.pending);
        if units.is_empty() {
            self.in_flight = false;
            for c in self.closing.drain(..) {
                let _ = c.send(());
            }
            return;
        }
        let now = crate::event::now_ms();
        let mut requests = Vec::new();
        let mut plan = Vec::with_capacity(units.len());
        for unit in units {
            if let Err(r) = self.precheck(&unit, now) {
                answer(unit.reply, Err(JournalError::Refused(r)));
                continue;
            }
            let start = requests.len();
            let n = unit.appends.len();
            for (i, a) in unit.appends.into_iter().enumerate() {
                // A batch submit's appends are one unit in the store: all or none.
                requests.push(AppendRequest {
                    with_next: matches!(unit.reply, Reply::All(_)) && i + 1 < n,
                    ..AppendRequest::new(a.job, a.events, a.epoch)
                });
            }
            plan.push((start..requests.len(), unit.reply));
        }
        let store = self.store.clone();
        let follower = self.follower.clone();
        let started = std::time::Instant::now();
        let n = requests.len();
        let work = async move {
            let outcomes = if n == 0 {
                Ok(Vec::new())
            } else {
                // On a tokio worker, not on this actor's thread (the System's, shared with the
                // scheduler): the transaction holds the log head's lock from its reads to its
                // commit, and its staging between them must not wait behind other actors' work.
                let (store, engine) = (store.clone(), store.engine());
                match tokio::spawn(async move { store.append(requests).await }).await {
                    Ok(r) => r,
                    Err(e) => Err(StoreFault::Write {
                        engine,
                        source: Box::new(e),
                    }),
                }
            };
            if let Ok(outcomes) = &outcomes {
                let mut last = outcomes
                    .iter()
                    .filter_map(|o| o.as_ref().ok())
                    .filter_map(|ids| ids.last().copied())
                    .max();
                if outcomes
                    .iter()
                    .any(|o| matches!(o, Err(Refusal::KeyInUse { .. })))
                {
                    // The submit that bound the key committed before this transaction, perhaps on
                    // another daemon: the refused caller looks it up in the views.
                    if let Ok(id) = store.last_id().await {
                        last = last.max(Some(id));
                    }
                }
                if let Some(last) = last {
                    follower.catch_up(last).await;
                }
            }
            outcomes
        };
        ctx.spawn(work.into_actor(self).map(move |outcomes, act, ctx| {
            match outcomes {
                Ok(outcomes) => {
                    crate::metrics::get().commit(n, plan.len(), started.elapsed());
                    for (range, reply) in plan {
                        let mine = &outcomes[range];
                        match reply {
                            Reply::One(_) => {
                                let r = mine
                                    .first()
                                    .cloned()
                                    .unwrap_or(Err(Refusal::Empty))
                                    .map_err(JournalError::Refused);
                                answer(reply, r.map(Answer::One));
                            }
                            Reply::All(_) => {
                                // The store refuses a unit whole: each of its appends carries the
                                // unit's refusal (`InBatch` naming the bad one, or `KeyInUse`).
                                let refused = mine
                                    .iter()
                                    .enumerate()
                                    .find_map(|(i, o)| o.as_ref().err().map(|e| (i, e.clone())));
                                let r = match refused {
                                    None => Ok(Answer::All(
                                        mine.iter().filter_map(|o| o.clone().ok()).collect(),
                                    )),
                                    Some((
                                        _,
                                        e @ (Refusal::InBatch { .. } | Refusal::KeyInUse { .. }),
                                    )) => Err(JournalError::Refused(e)),
                                    Some((index, e)) => {
                                        Err(JournalError::Refused(Refusal::InBatch {
                                            index,
                                            source: Box::new(e),
                                        }))
                                    }
                                };
                                answer(reply, r);
                            }
                        }
                    }
                }
                Err(fault) => {
                    warn!(error = %fault, "the event store refused a commit");
                    let msg = format!("The event store is unreachable ({fault}); try again.");
                    for (_, reply) in plan {
                        answer(reply, Err(JournalError::Unavailable(msg.clone())));
                    }
                }
            }
            act.flush(ctx);
        }));
    }
}

/// A unit's ids, of the reply's shape.
enum Answer {
    One(Vec<EventId>),
    All(Vec<Vec<EventId>>),
}

fn answer(reply: Reply, r: Result<Answer, JournalError>) {
    match reply {
        Reply::One(tx) => {
            let _ = tx.send(r.map(|a| match a {
                Answer::One(ids) => ids,
                Answer::All(mut all) => all.pop().unwrap_or_default(),
            }));
        }
        Reply::All(tx) => {
            let _ = tx.send(r.map(|a| match a {
                Answer::All(all) => all,
                Answer::One(ids) => vec![ids],
            }));
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Actor for SharedJournal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Flush> for SharedJournal {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush(ctx);
    }
}

impl Handler<Append> for SharedJournal {
    type Result = ResponseFuture<Result<Vec<EventId>, JournalError>>;
    fn handle(&mut self, append: Append, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue(vec![append], Reply::One(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(JournalError::Closed)) })
    }
}

impl Handler<AppendAll> for SharedJournal {
    type Result = ResponseFuture<Result<Vec<Vec<EventId>>, JournalError>>;
    fn handle(&mut self, msg: AppendAll, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue(msg.appends, Reply::All(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(JournalError::Closed)) })
    }
}

impl Handler<Ping> for SharedJournal {
    type Result = ();
    fn handle(&mut self, _: Ping, _ctx: &mut Self::Context) {}
}

impl Handler<Close> for SharedJournal {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Close, _ctx: &mut Self::Context) -> Self::Result {
        if !self.in_flight {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.closing.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
