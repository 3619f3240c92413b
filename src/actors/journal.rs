//! The journal: the only writer of the event log.
//!
//! Appends arrive as messages; the handler only queues them and schedules one `Flush`. Because actix
//! drains the whole mailbox before it polls the flush, every append that arrived meanwhile lands in the
//! same write transaction (group commit: one fdatasync for many events). Each append is checked against
//! its job's folded view before anything is written; an illegal one is refused alone. Callers are
//! answered only after the commit is durable, then the views are published and followers woken.
//! The journal runs on its own Arbiter thread, so its blocking commits never stall async workers.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, error};

use crate::event::{now_ms, Event, EventId, IllegalEvent, JobId, JobView, Kind, NewEvent};
use crate::store::Store;
use crate::views::{fold_into, Views};

/// Appends events to one job, all or none. The reply carries the committed events' ids.
#[derive(Message)]
#[rtype(result = "Result<Vec<EventId>, JournalError>")]
pub struct Append {
    pub job: JobId,
    pub events: Vec<NewEvent>,
}

impl Append {
    pub fn one(job: JobId, event: NewEvent) -> Append {
        Append {
            job,
            events: vec![event],
        }
    }
}

/// Answers at once: the watchdog's proof that the journal's thread is not stuck in a commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Writes everything queued so far (sent by the journal to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Illegal(#[from] IllegalEvent),
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("an append must carry at least one event")]
    Empty,
    #[error("the event log could not be written: {0}")]
    Store(String),
    #[error("the journal has stopped")]
    Closed,
}

struct Pending {
    append: Append,
    reply: oneshot::Sender<Result<Vec<EventId>, JournalError>>,
}

pub struct Journal {
    store: Arc<Store>,
    views: Arc<Views>,
    next_id: EventId,
    pending: Vec<Pending>,
    flush_scheduled: bool,
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
        }
    }

    /// Checks one append against the working views and gives its events ids; `None` views are jobs
    /// that do not exist yet. Also says whether the append creates its job.
    fn stage(
        &mut self,
        append: Append,
        work: &mut HashMap<JobId, Option<JobView>>,
        now: i64,
    ) -> Result<(Vec<Event>, bool), JournalError> {
        if append.events.is_empty() {
            return Err(JournalError::Empty);
        }
        let job = append.job;
        let daemon = job == JobId::DAEMON;
        let slot = work
            .entry(job)
            .or_insert_with(|| self.views.view(job).map(|v| (*v).clone()));
        let creates = slot.is_none() && !daemon;
        let mut copy = slot.clone();
        let mut out = Vec::with_capacity(append.events.len());
        let mut id = self.next_id;
        for new in append.events {
            if daemon {
                if new.kind != Kind::Admin {
                    return Err(IllegalEvent {
                        job,
                        kind: new.kind.as_str(),
                        state: "daemon",
                    }
                    .into());
                }
            } else {
                match &copy {
                    Some(v) => v.check(&new)?,
                    None if new.kind == Kind::Queued => {}
                    None => return Err(JournalError::UnknownJob(job)),
                }
            }
            let ev = Event {
                id,
                job,
                kind: new.kind,
                level: new.level,
                message: new.message,
                payload: new.payload,
                timestamp_ms: now,
                stage: new.stage,
            };
            if !daemon {
                fold_into(&mut copy, &ev);
            }
            id += 1;
            out.push(ev);
        }
        *slot = copy;
        self.next_id = id;
        Ok((out, creates))
    }

    fn flush(&mut self) {
        self.flush_scheduled = false;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let now = now_ms();
        let first_id = self.next_id;
        let mut work: HashMap<JobId, Option<JobView>> = HashMap::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut created: Vec<(EventId, JobId)> = Vec::new();
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending {
            let job = p.append.job;
            match self.stage(p.append, &mut work, now) {
                Ok((events, creates)) => {
                    if creates {
                        created.push((events[0].id, job));
                    }
                    let range = batch.len()..batch.len() + events.len();
                    batch.extend(events);
                    replies.push((p.reply, Ok(range)));
                }
                Err(e) => replies.push((p.reply, Err(e))),
            }
        }
        if batch.is_empty() {
            for (reply, r) in replies {
                let _ = reply.send(r.map(|_| Vec::new()));
            }
            return;
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.store.append(&batch, &created) {
            error!(error = %e, events = batch.len(), "event log commit failed");
            // Nothing of this batch is durable: the ids may be given out again.
            self.next_id = first_id;
            let err = JournalError::Store(e.to_string());
            for (reply, r) in replies {
                let _ = reply.send(r.and(Err(err.clone())));
            }
            return;
        }
        debug!(
            events = batch.len(),
            appends = replies.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        let last = batch.last().map(|e| e.id).unwrap_or(first_id);
        let changed: Vec<JobView> = work.into_values().flatten().collect();
        let created_jobs: Vec<JobId> = created.iter().map(|(_, j)| *j).collect();
        self.views.publish(changed, &created_jobs, last);
        for (reply, r) in replies {
            let _ = reply.send(r.map(|range| batch[range].iter().map(|e| e.id).collect()));
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
        // Never leave an accepted append unanswered.
        self.flush();
        Running::Stop
    }
}

impl Handler<Append> for Journal {
    type Result = ResponseFuture<Result<Vec<EventId>, JournalError>>;

    fn handle(&mut self, append: Append, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.pending.push(Pending { append, reply: tx });
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(JournalError::Closed)) })
    }
}

impl Handler<Ping> for Journal {
    type Result = ();

    fn handle(&mut self, _: Ping, _ctx: &mut Self::Context) {}
}

impl Handler<Flush> for Journal {
    type Result = ();

    fn handle(&mut self, _: Flush, _ctx: &mut Self::Context) {
        self.flush();
    }
}
