//! `LocalStore`: the store contract on redb, in-process (one daemon). The redb file holds the events;
//! `Views` hold the heads and the queue (rebuilt from the events at open); leases live in memory,
//! since only this process can hold them. One async mutex plays the part of the write transaction:
//! check, id assignment, commit and publication happen under it, in that order.
//!
//! Step one of the scale-out work: the contract and both engines exist and pass one suite; the
//! daemon's core (journal, scheduler, views) moves onto it next. Until then parts are used only by
//! that suite, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Mutex};

use super::contract::{
    lease_lost_reason, pause_event, pause_state, purge_event, running_event, stage_batch,
    AppendOutcome, AppendRequest, Claimed, EventStore, Owner, PurgeNote, Purged, Staged,
    StoreFault, StoreFuture,
};
use super::{OpenError, Store};
use crate::event::{
    interruption_events, now_ms, Event, EventId, JobId, JobState, JobView, NewEvent,
};
use crate::views::Views;

const ENGINE: &str = "redb";

struct Lease {
    owner: Owner,
    epoch: u32,
    until_ms: i64,
}

struct State {
    next_id: EventId,
    leases: HashMap<JobId, Lease>,
    paused: bool,
}

pub struct LocalStore {
    store: Arc<Store>,
    views: Arc<Views>,
    state: Mutex<State>,
}

fn read_fault(e: impl std::error::Error + Send + Sync + 'static) -> StoreFault {
    StoreFault::Read {
        engine: ENGINE,
        source: Box::new(e),
    }
}

impl LocalStore {
    /// Opens the log at `path` and rebuilds the heads, the queue and the pause state from it.
    pub fn open(path: &Path) -> Result<LocalStore, StoreFault> {
        let open = |e: OpenError| StoreFault::Unavailable {
            engine: ENGINE,
            source: Box::new(e),
        };
        let store = Arc::new(Store::open(path).map_err(open)?);
        let (views, _) = Views::replay(&store).map_err(read_fault)?;
        let admin = store
            .read_job(JobId::DAEMON, 0, u64::MAX, usize::MAX)
            .map_err(read_fault)?;
        let paused = admin
            .iter()
            .filter_map(pause_state)
            .next_back()
            .unwrap_or(false);
        Ok(LocalStore {
            state: Mutex::new(State {
                next_id: views.last_id() + 1,
                leases: HashMap::new(),
                paused,
            }),
            store,
            views: Arc::new(views),
        })
    }

    /// Records the `running` event of queued `view` for `owner` and takes its lease; the caller
    /// holds the state lock.
    async fn take_locked(
        &self,
        st: &mut State,
        view: &JobView,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<Claimed>, StoreFault> {
        let until = now_ms() + lease.as_millis() as i64;
        let req = AppendRequest::new(view.id, vec![running_event(view, owner, until)], None);
        let out = self.append_locked(st, vec![req]).await?;
        if out.first().is_none_or(|r| r.is_err()) {
            return Ok(None);
        }
        let epoch = view.attempt + 1;
        st.leases.insert(
            view.id,
            Lease {
                owner: owner.clone(),
                epoch,
                until_ms: until,
            },
        );
        let view = self.views.view(view.id).map(|v| (*v).clone());
        Ok(view.map(|view| Claimed {
            view,
            epoch,
            lease_until_ms: until,
        }))
    }

    /// Checks, commits and publishes a batch; the caller holds the state lock.
    async fn append_locked(
        &self,
        st: &mut State,
        batch: Vec<AppendRequest>,
    ) -> Result<Vec<AppendOutcome>, StoreFault> {
        let now = now_ms();
        let first = st.next_id;
        let mut work: HashMap<JobId, Option<JobView>> = HashMap::new();
        let views = &self.views;
        let Staged {
            outcomes,
            events,
            created,
            bound: _,
        } = stage_batch(
            &mut work,
            |job| views.view(job).map(|v| (*v).clone()),
            batch,
            st.next_id,
            now,
            |key| views.key_in_use(key, now),
        );
        st.next_id += events.len() as u64;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(outcomes);
        };
        let store = self.store.clone();
        let committed = tokio::task::spawn_blocking(move || store.append(&events).map(|()| events))
            .await
            .map_err(|e| StoreFault::Write {
                engine: ENGINE,
                source: Box::new(e),
            })?;
        let events = match committed {
            Ok(events) => events,
            Err(e) => {
                // Nothing is durable or visible: the ids may be given out again.
                st.next_id = first;
                return Err(StoreFault::Write {
                    engine: ENGINE,
                    source: Box::new(e),
                });
            }
        };
        for ev in &events {
            if let Some(p) = pause_state(ev) {
                st.paused = p;
            }
        }
        let changed: Vec<JobView> = work.into_values().flatten().collect();
        for v in &changed {
            if v.state != JobState::Running {
                st.leases.remove(&v.id);
            }
        }
        self.views.publish(changed, &created, last);
        Ok(outcomes)
    }
}

impl EventStore for LocalStore {
    fn engine(&self) -> &'static str {
        ENGINE
    }

    fn append(
        &self,
        batch: Vec<AppendRequest>,
    ) -> StoreFuture<'_, Result<Vec<AppendOutcome>, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            self.append_locked(&mut st, batch).await
        })
    }

    fn read_job(
        &self,
        job: JobId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<Event>, StoreFault>> {
        Box::pin(async move {
            self.store
                .read_job(job, after, u64::MAX, limit)
                .map_err(read_fault)
        })
    }

    fn read_since(
        &self,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<Event>, StoreFault>> {
        Box::pin(async move { self.store.read_since(after, limit).map_err(read_fault) })
    }

    fn head(&self, job: JobId) -> StoreFuture<'_, Result<Option<JobView>, StoreFault>> {
        Box::pin(async move { Ok(self.views.view(job).map(|v| (*v).clone())) })
    }

    fn list(
        &self,
        state: Option<JobState>,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<JobView>, StoreFault>> {
        Box::pin(async move {
            let page = self.views.list_before(state, before, limit);
            Ok(page.iter().map(|v| (**v).clone()).collect())
        })
    }

    fn last_id(&self) -> StoreFuture<'_, Result<EventId, StoreFault>> {
        Box::pin(async move { Ok(self.views.last_id()) })
    }

    fn claim<'a>(
        &'a self,
        owner: &'a Owner,
        lease: Duration,
    ) -> StoreFuture<'a, Result<Option<Claimed>, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            let Some(view) = self
                .views
                .queued(usize::MAX, |_| false)
                .into_iter()
                .find(|v| !v.cancel_requested)
            else {
                return Ok(None);
            };
            self.take_locked(&mut st, &view, owner, lease).await
        })
    }

    fn claim_job<'a>(
        &'a self,
        job: JobId,
        first: Vec<NewEvent>,
        owner: &'a Owner,
        lease: Duration,
    ) -> StoreFuture<'a, Result<Option<Claimed>, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            if !first.is_empty() {
                let out = self
                    .append_locked(&mut st, vec![AppendRequest::new(job, first, None)])
                    .await?;
                if out.first().is_none_or(|r| r.is_err()) {
                    return Ok(None);
                }
            }
            let Some(view) = self
                .views
                .view(job)
                .filter(|v| v.state == JobState::Queued && !v.cancel_requested)
            else {
                return Ok(None);
            };
            self.take_locked(&mut st, &view, owner, lease).await
        })
    }

    fn purge(
        &self,
        jobs: Vec<JobId>,
        note: PurgeNote,
    ) -> StoreFuture<'_, Result<Purged, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            let mut gone: Vec<JobId> = jobs
                .into_iter()
                .filter(|j| {
                    *j != JobId::DAEMON
                        && self.views.head(*j).is_some_and(|h| h.state.is_terminal())
                })
                .collect();
            gone.sort();
            gone.dedup();
            if gone.is_empty() {
                return Ok(Purged::default());
            }
            let id = st.next_id;
            let (store, list) = (self.store.clone(), gone.clone());
            let done = tokio::task::spawn_blocking(move || {
                store.purge_recording(&list, |events| {
                    let ev = purge_event(&list, events, &note);
                    vec![Event {
                        id,
                        job: JobId::DAEMON,
                        kind: ev.kind,
                        level: ev.level,
                        message: ev.message,
                        payload: ev.payload,
                        timestamp_ms: now_ms(),
                        stage: ev.stage,
                    }]
                })
            })
            .await
            .map_err(|e| StoreFault::Write {
                engine: ENGINE,
                source: Box::new(e),
            })?;
            let events = done.map_err(|e| StoreFault::Write {
                engine: ENGINE,
                source: Box::new(e),
            })?;
            st.next_id = id + 1;
            for j in &gone {
                st.leases.remove(j);
            }
            self.views.remove(&gone);
            self.views.publish(Vec::new(), &[], id);
            Ok(Purged {
                jobs: gone,
                events,
                recorded: id,
            })
        })
    }

    fn renew(
        &self,
        job: JobId,
        epoch: u32,
        lease: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            match st.leases.get_mut(&job) {
                Some(l) if l.epoch == epoch => {
                    l.until_ms = now_ms() + lease.as_millis() as i64;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn release(&self, job: JobId, epoch: u32) -> StoreFuture<'_, Result<(), StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            if st.leases.get(&job).is_some_and(|l| l.epoch == epoch) {
                st.leases.remove(&job);
            }
            Ok(())
        })
    }

    fn rescue_expired(&self) -> StoreFuture<'_, Result<Vec<JobId>, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            let now = now_ms();
            let expired: Vec<(JobId, u32, Owner)> = st
                .leases
                .iter()
                .filter(|(_, l)| l.until_ms < now)
                .map(|(j, l)| (*j, l.epoch, l.owner.clone()))
                .collect();
            let mut batch = Vec::new();
            let mut rescued = Vec::new();
            for (job, epoch, owner) in expired {
                st.leases.remove(&job);
                let Some(view) = self.views.view(job) else {
                    continue;
                };
                if view.state == JobState::Running && view.attempt == epoch {
                    batch.push(AppendRequest {
                        job,
                        events: interruption_events(&view, &lease_lost_reason(&owner)),
                        epoch: Some(epoch),
                        with_next: false,
                    });
                    rescued.push(job);
                }
            }
            if !batch.is_empty() {
                self.append_locked(&mut st, batch).await?;
            }
            Ok(rescued)
        })
    }

    fn paused(&self) -> StoreFuture<'_, Result<bool, StoreFault>> {
        Box::pin(async move { Ok(self.state.lock().await.paused) })
    }

    fn set_paused(&self, paused: bool, by: Value) -> StoreFuture<'_, Result<EventId, StoreFault>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            let req = AppendRequest {
                job: JobId::DAEMON,
                events: vec![pause_event(paused, by)],
                epoch: None,
                with_next: false,
            };
            let out = self.append_locked(&mut st, vec![req]).await?;
            match out.into_iter().next() {
                Some(Ok(ids)) => Ok(ids.last().copied().unwrap_or(0)),
                Some(Err(r)) => Err(StoreFault::Write {
                    engine: ENGINE,
                    source: Box::new(r),
                }),
                None => Ok(0),
            }
        })
    }

    fn subscribe(&self, job: JobId) -> watch::Receiver<EventId> {
        self.views
            .subscribe(job)
            .unwrap_or_else(|| watch::channel(0).1)
    }

    fn subscribe_all(&self) -> watch::Receiver<EventId> {
        self.views.subscribe_all()
    }
}
