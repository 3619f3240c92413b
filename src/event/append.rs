//! Staging an append: the legality check and id assignment every store engine runs inside its write
//! transaction. Pure: an engine passes the job's current view (its head) and the next free id; on
//! success it writes the returned events and keeps the updated view as the job's new head.

use serde_json::json;

use super::{Event, EventId, IllegalEvent, JobId, JobState, JobView, Kind, Level, NewEvent};

/// Why one append was refused before anything was written (the log is fine; the append is not).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Illegal(#[from] IllegalEvent),
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("an append must carry at least one event")]
    Empty,
    /// The runner of an older attempt: it lost its lease and the job moved on without it.
    #[error("job {job}: attempt {epoch} is no longer the job's running attempt ({current}); it must stop")]
    StaleEpoch {
        job: JobId,
        epoch: u32,
        current: String,
    },
    /// The `Idempotency-Key` of a new job's submit is already bound to another submit.
    #[error("Idempotency-Key `{key}` is already in use")]
    KeyInUse { key: String },
    /// One append of a unit (a batch submit) was refused, so none of the unit was written.
    #[error("append {index} of the batch: {source}")]
    InBatch {
        index: usize,
        #[source]
        source: Box<Refusal>,
    },
}

/// Checks `events` against `view` (`None`: the job does not exist yet; the daemon pseudo-job takes
/// only admin events), gives them ids from `next_id` and stamps them `now`. `epoch`, when given, is
/// the attempt the appender runs: it must still be the job's running attempt. On success `view`
/// holds the job's state after the events; on refusal it is untouched.
pub fn stage(
    view: &mut Option<JobView>,
    job: JobId,
    events: Vec<NewEvent>,
    epoch: Option<u32>,
    next_id: EventId,
    now: i64,
) -> Result<Vec<Event>, Refusal> {
    if events.is_empty() {
        return Err(Refusal::Empty);
    }
    let daemon = job == JobId::DAEMON;
    if let (Some(epoch), false) = (epoch, daemon) {
        let current = match view {
            Some(v) if v.state == JobState::Running && v.attempt == epoch => None,
            Some(v) => Some(format!("{} attempt {}", v.state.as_str(), v.attempt)),
            None => return Err(Refusal::UnknownJob(job)),
        };
        if let Some(current) = current {
            return Err(Refusal::StaleEpoch {
                job,
                epoch,
                current,
            });
        }
    }
    let mut copy = view.clone();
    let mut out = Vec::with_capacity(events.len());
    for (id, new) in (next_id..).zip(events) {
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
                None => return Err(Refusal::UnknownJob(job)),
            }
        }
        let ev = new.into_event(id, job, now);
        if !daemon {
            match &mut copy {
                Some(v) => v.apply(&ev),
                None => copy = JobView::create(&ev),
            }
        }
        out.push(ev);
    }
    *view = copy;
    Ok(out)
}

/// The events that close an attempt stopped by a restart or shutdown: back to the queue while
/// attempts remain, else a failure.
pub fn interruption_events(view: &JobView, reason: &str) -> Vec<NewEvent> {
    let mut out = vec![NewEvent::warning(reason)
        .with_payload(json!({ "attempt": view.attempt, "maxAttempts": view.max_attempts }))];
    if view.attempt < view.max_attempts {
        out.push(
            NewEvent::new(Kind::Queued, Level::Info, "Job queued.")
                .with_payload(json!({ "attempt": view.attempt, "requeued": true })),
        );
    } else {
        out.push(
            NewEvent::new(
                Kind::Error,
                Level::Error,
                format!(
                    "{reason} No attempts left ({} of {}).",
                    view.attempt, view.max_attempts
                ),
            )
            .with_payload(
                json!({ "error": "Interrupted", "retryable": true, "stage": view.stage }),
            ),
        );
    }
    out
}
