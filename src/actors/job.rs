//! `JobActor`: one per running job. It records the start of an attempt, drives the pipeline stages
//! through a journal-backed `EventSink`, turns a stop into the right terminal events, and tells the
//! scheduler when it is done. The stage work itself lives in `pipeline` (no actix types there).
//!
//! A cancel reaches the job two ways: the scheduler's `Stop`, and the log itself: the actor follows
//! its job's committed view and stops as soon as it shows `cancel_requested` (or `cancelled`) for
//! this attempt, whichever path wrote it. So a cancel committed in any interleaving with the start
//! stops the job and kills its subprocesses.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::json;
use tracing::{info, warn};

use crate::actors::journal::{Append, JournalError, Refusal};
use crate::config::Config;
use crate::event::{EventId, JobId, JobState, JobView, Kind, Level, NewEvent};
use crate::pipeline::{
    self, Artifacts, EventSink, JobContext, LocalBoxFuture, Outcome, SinkError, StopHandle,
    StopReason, StopSignal,
};
use crate::request::JobRequest;
use crate::views::Views;

/// Asks the job to stop at its next check (and kills its subprocesses).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop(pub StopReason);

/// Sent to the scheduler when a job actor is done, whatever the outcome.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobEnded {
    pub job: JobId,
    /// The attempt the actor ran (its `running` event's), whether or not that event committed.
    pub attempt: u32,
    /// Why the `running` event could not be recorded, when it could not (nothing ran).
    pub start_failed: Option<String>,
}

/// The job's events, through the journal: `emit` resolves after the durable commit.
struct JournalSink {
    journal: Recipient<Append>,
    job: JobId,
    /// The attempt this runner runs: its appends are refused once the attempt is over.
    epoch: u32,
}

impl EventSink for JournalSink {
    fn emit(&self, event: NewEvent) -> LocalBoxFuture<'_, Result<EventId, SinkError>> {
        Box::pin(async move {
            let mut append = Append::one(self.job, event);
            append.epoch = Some(self.epoch);
            match self.journal.send(append).await {
                Ok(Ok(ids)) => Ok(ids.last().copied().unwrap_or(0)),
                Ok(Err(e)) => Err(SinkError(e.to_string())),
                Err(e) => Err(SinkError(e.to_string())),
            }
        })
    }
}

/// How an attempt begins.
#[derive(Clone, Debug)]
pub enum Start {
    /// The actor records the `running` event itself (one daemon on its own log).
    Record,
    /// A shared store's claim recorded it already (with this owner's lease).
    Claimed,
}

/// Where a job's files go.
pub struct JobPaths {
    pub state_dir: PathBuf,
    pub songs_dir: PathBuf,
}

pub struct JobActor {
    view: Arc<JobView>,
    journal: Recipient<Append>,
    views: Arc<Views>,
    scheduler: Recipient<JobEnded>,
    config: Arc<Config>,
    paths: Arc<JobPaths>,
    stop: StopHandle,
    signal: StopSignal,
    start: Start,
}

impl JobActor {
    pub fn new(
        view: Arc<JobView>,
        journal: Recipient<Append>,
        views: Arc<Views>,
        scheduler: Recipient<JobEnded>,
        config: Arc<Config>,
        paths: Arc<JobPaths>,
    ) -> JobActor {
        let (stop, signal) = StopSignal::pair();
        JobActor {
            view,
            journal,
            views,
            scheduler,
            config,
            paths,
            stop,
            signal,
            start: Start::Record,
        }
    }

    /// An actor for an attempt a shared store's claim already started: `view` is the job as it
    /// was before the claim's `running` event.
    pub fn claimed(mut self) -> JobActor {
        self.start = Start::Claimed;
        self
    }
}

pub use crate::event::interruption_events;

/// Resolves once the log shows a cancel of `attempt` of `job` (committed by any path).
async fn cancel_committed(views: Arc<Views>, job: JobId, attempt: u32) {
    let Some(mut rx) = views.subscribe(job) else {
        return std::future::pending().await;
    };
    loop {
        let cancelled = views.view(job).is_some_and(|v| {
            v.attempt == attempt && (v.cancel_requested || v.state == JobState::Cancelled)
        });
        if cancelled {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Runs one attempt; answers why its start could not be recorded, if it could not.
async fn drive(
    view: Arc<JobView>,
    journal: Recipient<Append>,
    views: Arc<Views>,
    config: Arc<Config>,
    paths: Arc<JobPaths>,
    signal: StopSignal,
    start: Start,
) -> Option<String> {
    let job = view.id;
    let epoch = view.attempt + 1;
    // Ownership is explicit in the log: which daemon runs this attempt.
    let running = NewEvent::new(Kind::Running, Level::Info, "Job started.").with_payload(json!({
        "attempt": view.attempt + 1,
        "maxAttempts": view.max_attempts,
        "owner": crate::systemd::owner(),
    }));
    let recorded = match start {
        Start::Claimed => Ok(Ok(Vec::new())),
        Start::Record => journal.send(Append::one(job, running)).await,
    };
    match recorded {
        Ok(Ok(_)) => {}
        Ok(Err(JournalError::Refused(Refusal::Illegal(_)))) => {
            // A cancel was recorded before the start: finish the cancellation here.
            let ev = NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled before execution.",
            );
            let _ = journal.send(Append::one(job, ev)).await;
            return None;
        }
        Ok(Err(e)) => {
            warn!(job = %job, error = %e, "could not record the job's start");
            return Some(e.to_string());
        }
        Err(e) => {
            warn!(job = %job, error = %e, "journal unreachable");
            return Some(format!("the journal is unreachable: {e}"));
        }
    }
    let stored = serde_json::from_str(&view.request).unwrap_or(serde_json::Value::Null);
    let request = match JobRequest::from_json(&stored) {
        Ok(r) => r,
        Err(e) => {
            let ev = NewEvent::new(
                Kind::Error,
                Level::Error,
                format!("Failed to start job: {e}"),
            )
            .with_payload(json!({ "error": "BadRequest", "retryable": false, "stage": "start" }));
            let _ = journal.send(Append::one(job, ev)).await;
            return None;
        }
    };
    let sink: Rc<dyn EventSink> = Rc::new(JournalSink {
        journal: journal.clone(),
        job,
        epoch,
    });
    let mut cx = JobContext {
        job,
        request,
        work_dir: paths.state_dir.join("jobs").join(job.to_string()),
        output_path: paths.state_dir.join("output").join(format!("{job}.mp4")),
        songs_dir: paths.songs_dir.clone(),
        events: sink,
        stop: signal,
        artifacts: Artifacts::default(),
        completed: view.completed_stages.clone(),
        config: config.clone(),
    };
    let outcome = pipeline::run(&mut cx).await;
    info!(job = %job, outcome = ?outcome, "attempt ended");
    let outcome_done = matches!(outcome, Outcome::Completed);
    let closing = match outcome {
        Outcome::Completed | Outcome::Failed => Vec::new(),
        Outcome::Lost(e) => {
            warn!(job = %job, error = %e.0, "the job's events can no longer be recorded");
            Vec::new()
        }
        Outcome::Stopped(StopReason::Cancelled) => vec![NewEvent::new(
            Kind::Cancelled,
            Level::Warning,
            "Job cancelled.",
        )],
        Outcome::Stopped(StopReason::Shutdown) => {
            let mut v = (*view).clone();
            v.attempt += 1;
            interruption_events(&v, "Job interrupted by a daemon shutdown.")
        }
    };
    // A cancel recorded for the job as a whole (`cancelled` already committed) needs no closing.
    let ended = views.view(job).is_some_and(|v| v.state.is_terminal());
    if !closing.is_empty() && !ended {
        let mut append = Append::new(job, closing);
        append.epoch = Some(epoch);
        if let Ok(Err(e)) = journal.send(append).await {
            warn!(job = %job, error = %e, "could not record the end of the job");
        }
    }
    // The job's folder holds the kept stage results: it stays while the job can run again (an
    // interrupted job is re-queued; `retry` re-opens failed and cancelled ones). A completed job
    // never runs again, so its intermediate files go; the output stays.
    if outcome_done {
        let _ = tokio::fs::remove_dir_all(&cx.work_dir).await;
    }
    None
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let watch = cancel_committed(self.views.clone(), self.view.id, self.view.attempt + 1);
        ctx.spawn(watch.into_actor(self).map(|(), act, _ctx| {
            info!(job = %act.view.id, "cancel found in the log; stopping the job");
            act.stop.stop(StopReason::Cancelled);
        }));
        let fut = drive(
            self.view.clone(),
            self.journal.clone(),
            self.views.clone(),
            self.config.clone(),
            self.paths.clone(),
            self.signal.clone(),
            self.start.clone(),
        );
        ctx.spawn(fut.into_actor(self).map(|start_failed, act, ctx| {
            act.scheduler.do_send(JobEnded {
                job: act.view.id,
                attempt: act.view.attempt + 1,
                start_failed,
            });
            ctx.stop();
        }));
    }
}

impl Handler<Stop> for JobActor {
    type Result = ();

    fn handle(&mut self, msg: Stop, _ctx: &mut Self::Context) {
        self.stop.stop(msg.0);
    }
}
