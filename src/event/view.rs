//! `JobView`: a job's state as a pure fold over its events, and the legality check that guards the log.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{iso8601, Event, EventId, IdempotencyTag, JobId, Kind, Level, NewEvent};

/// The lifecycle states of DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Completed,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Why an event was refused before it was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("event `{kind}` is not allowed for job {job} in state `{state}`")]
pub struct IllegalEvent {
    pub job: JobId,
    pub kind: &'static str,
    pub state: &'static str,
}

/// A stage whose result the job's folder keeps, as its `stage_completed` event pinned it: the
/// size and SHA-256 (hex) of the kept result, so a later attempt reuses it only when it is intact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedStage {
    pub stage: String,
    pub bytes: u64,
    pub sha256: String,
}

impl CompletedStage {
    fn of(ev: &Event) -> Option<CompletedStage> {
        let p = ev.payload.as_ref()?;
        let result = p.get("result");
        Some(CompletedStage {
            stage: p.get("stage")?.as_str()?.to_string(),
            bytes: result
                .and_then(|r| r.get("bytes"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            sha256: result
                .and_then(|r| r.get("sha256"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// What `GET /api/jobs/:id` shows: a fold of the job's events. An engine may store it as the job's
/// head (serde: its internal form, rebuildable from the events), never as a second truth.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub state: JobState,
    pub cancel_requested: bool,
    /// Attempts started so far (1 during the first run).
    pub attempt: u32,
    pub max_attempts: u32,
    pub result_path: Option<String>,
    pub error_message: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    pub stage: Option<String>,
    pub progress: Option<f64>,
    pub first_event_id: EventId,
    pub last_event_id: EventId,
    /// Id of the `queued` event that put the job in the queue last: the queue's order.
    pub queued_at: EventId,
    /// The submitted request as JSON text, as the first `queued` event's payload holds it (text, not a
    /// `Value`: cheap to keep for every job and to clone with the view).
    pub request: Arc<str>,
    /// The request's `videoSubject`.
    pub subject: Option<String>,
    pub metadata: Option<Value>,
    /// The daemon running the current attempt (`{host, pid}` from its `running` event).
    pub owner: Option<Value>,
    /// The stages whose results the job's folder keeps, in the order they ran. A stage completed
    /// again replaces its entry and drops the ones after it (they were made from the old result).
    /// Kept across attempts and retries: a job that runs again resumes after them. (Heads stored
    /// before this field existed decode with none.)
    #[serde(default)]
    pub completed_stages: Vec<CompletedStage>,
    /// The `Idempotency-Key` the job was submitted under, from its first `queued` event.
    #[serde(default)]
    pub idempotency: Option<Arc<IdempotencyTag>>,
    /// Where the job's webhook deliveries stand (for the dispatcher's resume at start-up).
    #[serde(default)]
    pub webhooks: WebhookMarks,
}

/// What the fold knows of a job's webhooks: the last events that may need a delivery, and how
/// far deliveries are settled. Deliveries of one job go in event order, so one id says it all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookMarks {
    /// The last `complete`, `error` or `cancelled` event: (id, Unix ms).
    pub terminal: Option<(EventId, i64)>,
    /// The last event that is not a `webhook` record: (id, Unix ms).
    pub any: Option<(EventId, i64)>,
    /// Deliveries of the events up to this id are settled (delivered or given up).
    pub settled: EventId,
}

impl Kind {
    /// Whether an event of this kind ends a job's attempt for good (a webhook's default trigger).
    pub fn ends_job(&self) -> bool {
        matches!(self, Kind::Complete | Kind::Error | Kind::Cancelled)
    }
}

impl JobView {
    /// The view after a job's first event; `None` unless that event is `queued`.
    pub fn create(ev: &Event) -> Option<JobView> {
        if ev.kind != Kind::Queued {
            return None;
        }
        let payload = ev.payload.clone().unwrap_or(Value::Null);
        let max_attempts = max_attempts_of(&payload).unwrap_or(1);
        let request = payload.get("request").unwrap_or(&Value::Null);
        let subject = request
            .get("videoSubject")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let request: Arc<str> = Arc::from(request.to_string());
        let idempotency = IdempotencyTag::from_payload(&payload).map(Arc::new);
        Some(JobView {
            id: ev.job,
            state: JobState::Queued,
            cancel_requested: false,
            attempt: 0,
            max_attempts,
            result_path: None,
            error_message: None,
            created_ms: ev.timestamp_ms,
            started_ms: None,
            completed_ms: None,
            stage: None,
            progress: None,
            first_event_id: ev.id,
            last_event_id: ev.id,
            queued_at: ev.id,
            request,
            subject,
            metadata: None,
            owner: None,
            completed_stages: Vec::new(),
            idempotency,
            webhooks: WebhookMarks {
                any: Some((ev.id, ev.timestamp_ms)),
                ..WebhookMarks::default()
            },
        })
    }

    /// Whether `ev` may follow the events folded so far.
    pub fn check(&self, ev: &NewEvent) -> Result<(), IllegalEvent> {
        use JobState::*;
        let ok = match (self.state, ev.kind) {
            // A webhook attempt records a delivery: legal whatever the state, and changes none.
            (_, Kind::Webhook) => true,
            (Completed, _) => false,
            // A retry re-opens a failed or cancelled job.
            (Failed | Cancelled, Kind::Queued) => true,
            (Failed | Cancelled, _) => false,
            (Queued, Kind::Running) => !self.cancel_requested,
            (Running, Kind::Running) => false,
            // Back to the queue after an interruption.
            (Running, Kind::Queued) => true,
            (Queued, Kind::Queued) => false,
            (Queued, Kind::Progress | Kind::Complete) => false,
            (_, Kind::CancelRequested) => !self.cancel_requested,
            (_, Kind::Admin) => false,
            (state, Kind::StageCompleted) => state == Running,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(IllegalEvent {
                job: self.id,
                kind: ev.kind.as_str(),
                state: self.state.as_str(),
            })
        }
    }

    /// Folds one more event in. The caller has checked it (or is replaying a log that was checked).
    pub fn apply(&mut self, ev: &Event) {
        self.last_event_id = ev.id;
        if ev.kind != Kind::Webhook {
            self.webhooks.any = Some((ev.id, ev.timestamp_ms));
        }
        if ev.kind.ends_job() {
            self.webhooks.terminal = Some((ev.id, ev.timestamp_ms));
        }
        if let Some(stage) = &ev.stage {
            self.stage = Some(stage.clone());
        }
        match ev.kind {
            Kind::Queued => {
                if self.state.is_terminal() {
                    // A retry: a fresh attempt budget, a clean slate.
                    self.error_message = None;
                    self.completed_ms = None;
                    self.result_path = None;
                }
                if let Some(max) = ev.payload.as_ref().and_then(max_attempts_of) {
                    self.max_attempts = max;
                }
                self.state = JobState::Queued;
                self.queued_at = ev.id;
                self.cancel_requested = false;
                self.progress = None;
                self.owner = None;
            }
            Kind::Running => {
                self.state = JobState::Running;
                self.attempt += 1;
                self.owner = ev.payload.as_ref().and_then(|p| p.get("owner")).cloned();
                self.started_ms = Some(ev.timestamp_ms);
                self.progress = None;
            }
            Kind::Progress => {
                if let Some(p) = payload_f64(ev, "progress") {
                    self.progress = Some(p);
                }
            }
            Kind::CancelRequested => self.cancel_requested = true,
            Kind::Cancelled => {
                self.state = JobState::Cancelled;
                self.completed_ms = Some(ev.timestamp_ms);
            }
            Kind::Error => {
                self.state = JobState::Failed;
                self.completed_ms = Some(ev.timestamp_ms);
                self.error_message = Some(ev.message.clone());
            }
            Kind::Complete => {
                self.state = JobState::Completed;
                self.completed_ms = Some(ev.timestamp_ms);
                self.progress = Some(1.0);
                self.result_path = ev
                    .payload
                    .as_ref()
                    .and_then(|p| p.get("outputPath"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            Kind::Metadata => self.metadata = ev.payload.clone(),
            Kind::StageCompleted => {
                if let Some(done) = CompletedStage::of(ev) {
                    if let Some(i) = self
                        .completed_stages
                        .iter()
                        .position(|c| c.stage == done.stage)
                    {
                        self.completed_stages.truncate(i);
                    }
                    self.completed_stages.push(done);
                }
            }
            Kind::Webhook => {
                let p = ev.payload.as_ref();
                let settled = p
                    .and_then(|p| p.get("outcome"))
                    .and_then(Value::as_str)
                    .is_some_and(|o| o == "delivered" || o == "gave_up");
                let of = p.and_then(|p| p.get("eventId")).and_then(Value::as_u64);
                if let (true, Some(id)) = (settled, of) {
                    self.webhooks.settled = self.webhooks.settled.max(id);
                }
            }
            Kind::Log | Kind::Admin => {
                if ev.level == Level::Error && self.error_message.is_none() {
                    // A non-fatal error stays visible until the job ends.
                    self.error_message = Some(ev.message.clone());
                }
            }
        }
    }

    /// The job JSON: MoneyPrinter's fields first, then ours.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "state": self.state.as_str(),
            "cancelRequested": self.cancel_requested,
            "resultPath": self.result_path,
            "errorMessage": self.error_message,
            "createdAt": iso8601(self.created_ms),
            "startedAt": self.started_ms.map(iso8601),
            "completedAt": self.completed_ms.map(iso8601),
            "attempt": self.attempt,
            "maxAttempts": self.max_attempts,
            "stage": self.stage,
            "progress": self.progress,
            "lastEventId": self.last_event_id,
            "subject": self.subject,
            "metadata": self.metadata,
            "owner": self.owner,
            "completedStages": self
                .completed_stages
                .iter()
                .map(|c| c.stage.as_str())
                .collect::<Vec<_>>(),
        })
    }
}

fn max_attempts_of(payload: &Value) -> Option<u32> {
    payload
        .get("maxAttempts")
        .and_then(Value::as_u64)
        .map(|n| n.clamp(1, 1000) as u32)
}

fn payload_f64(ev: &Event, key: &str) -> Option<f64> {
    ev.payload.as_ref()?.get(key)?.as_f64()
}

/// Folds a whole history; `None` when it does not start with `queued`.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<JobView> {
    let mut it = events.into_iter();
    let mut view = JobView::create(it.next()?)?;
    for ev in it {
        view.apply(ev);
    }
    Some(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, job: JobId, new: NewEvent) -> Event {
        new.into_event(id, job, 1_000 * id as i64)
    }

    fn queued(max: u32) -> NewEvent {
        NewEvent::new(Kind::Queued, Level::Info, "Job queued.")
            .with_payload(json!({"maxAttempts": max, "request": {"videoSubject": "octopus"}}))
    }

    /// Applies events one by one through `check`, as the journal does; returns the first refusal.
    fn run(events: Vec<NewEvent>) -> (Option<JobView>, Option<IllegalEvent>) {
        let job = JobId::new();
        let mut view: Option<JobView> = None;
        for (i, new) in events.into_iter().enumerate() {
            let e = ev(i as u64 + 1, job, new.clone());
            match &mut view {
                None => view = JobView::create(&e),
                Some(v) => {
                    if let Err(err) = v.check(&new) {
                        return (view, Some(err));
                    }
                    v.apply(&e);
                }
            }
        }
        (view, None)
    }

    #[test]
    fn a_successful_story_ends_completed_with_the_result_path() {
        let (view, err) = run(vec![
            queued(2),
            NewEvent::new(Kind::Running, Level::Info, "Job started.")
                .with_payload(json!({"owner": {"host": "h", "pid": 7}})),
            NewEvent::info("Starting video generation...").with_stage("script"),
            NewEvent::progress(0.5).with_stage("render"),
            NewEvent::new(Kind::Complete, Level::Success, "Video generation complete")
                .with_payload(json!({"outputPath": "/x/out.mp4", "duration": 3.0})),
        ]);
        assert!(err.is_none());
        let v = view.unwrap();
        assert_eq!(v.state, JobState::Completed);
        assert_eq!(v.attempt, 1);
        assert_eq!(v.result_path.as_deref(), Some("/x/out.mp4"));
        assert_eq!(v.stage.as_deref(), Some("render"));
        assert_eq!(v.progress, Some(1.0));
        assert_eq!(v.subject.as_deref(), Some("octopus"));
        let request: Value = serde_json::from_str(&v.request).unwrap();
        assert_eq!(request["videoSubject"], "octopus");
        assert_eq!(v.created_ms, 1000);
        assert_eq!(v.completed_ms, Some(5000));
        assert_eq!(v.owner, Some(json!({"host": "h", "pid": 7})));
    }

    #[test]
    fn nothing_follows_a_completed_job() {
        let complete = NewEvent::new(Kind::Complete, Level::Success, "done");
        for next in [
            NewEvent::info("late"),
            queued(2),
            NewEvent::new(Kind::CancelRequested, Level::Info, "c"),
        ] {
            let (view, err) = run(vec![
                queued(2),
                NewEvent::new(Kind::Running, Level::Info, "Job started."),
                complete.clone(),
                next,
            ]);
            assert!(err.is_some());
            assert_eq!(view.unwrap().state, JobState::Completed);
        }
    }

    #[test]
    fn a_second_running_needs_a_requeue() {
        let running = NewEvent::new(Kind::Running, Level::Info, "Job started.");
        let (_, err) = run(vec![queued(2), running.clone(), running.clone()]);
        assert_eq!(err.unwrap().state, "running");
        let (view, err) = run(vec![
            queued(2),
            running.clone(),
            NewEvent::warning("Job interrupted by a daemon restart."),
            NewEvent::new(Kind::Queued, Level::Info, "Job queued."),
            running,
        ]);
        assert!(err.is_none());
        assert_eq!(view.unwrap().attempt, 2);
    }

    #[test]
    fn cancel_of_queued_job_ends_it_without_running() {
        let (view, err) = run(vec![
            queued(2),
            NewEvent::new(
                Kind::CancelRequested,
                Level::Warning,
                "Cancellation requested.",
            ),
            NewEvent::new(Kind::Running, Level::Info, "Job started."),
        ]);
        assert_eq!(err.unwrap().kind, "running");
        assert!(view.unwrap().cancel_requested);
        let (view, err) = run(vec![
            queued(2),
            NewEvent::new(
                Kind::CancelRequested,
                Level::Warning,
                "Cancellation requested.",
            ),
            NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled before execution.",
            ),
        ]);
        assert!(err.is_none());
        let v = view.unwrap();
        assert_eq!(v.state, JobState::Cancelled);
        assert_eq!(v.attempt, 0);
    }

    #[test]
    fn a_failure_records_its_message_and_a_retry_clears_it() {
        let (view, err) = run(vec![
            queued(1),
            NewEvent::new(Kind::Running, Level::Info, "Job started."),
            NewEvent::new(Kind::Error, Level::Error, "Failed to render video: boom"),
            NewEvent::new(Kind::Queued, Level::Info, "Job queued for retry.")
                .with_payload(json!({"maxAttempts": 2})),
        ]);
        assert!(err.is_none());
        let v = view.unwrap();
        assert_eq!(v.state, JobState::Queued);
        assert_eq!(v.error_message, None);
        assert_eq!(v.max_attempts, 2);
    }

    fn stage_done(stage: &str, sha: &str) -> NewEvent {
        NewEvent::new(
            Kind::StageCompleted,
            Level::Info,
            format!("Completed stage: {stage}"),
        )
        .with_payload(json!({"stage": stage, "result": {"bytes": 3, "sha256": sha}}))
    }

    #[test]
    fn completed_stages_survive_attempts_and_a_redone_stage_drops_the_later_ones() {
        let running = NewEvent::new(Kind::Running, Level::Info, "Job started.");
        let (view, err) = run(vec![
            queued(3),
            running.clone(),
            stage_done("script", "a"),
            stage_done("footage", "b"),
            stage_done("voice", "c"),
            NewEvent::warning("Job interrupted by a daemon restart."),
            NewEvent::new(Kind::Queued, Level::Info, "Job queued."),
            // Not while queued.
            stage_done("music", "x"),
        ]);
        assert_eq!(err.unwrap().kind, "stage_completed");
        let v = view.unwrap();
        let names = |v: &JobView| -> Vec<String> {
            v.completed_stages.iter().map(|c| c.stage.clone()).collect()
        };
        assert_eq!(names(&v), ["script", "footage", "voice"]);
        assert_eq!(
            v.to_json()["completedStages"],
            json!(["script", "footage", "voice"])
        );
        assert_eq!(v.completed_stages[1].sha256, "b");
        assert_eq!(v.completed_stages[1].bytes, 3);
        // The next attempt reuses script and redoes footage: voice was made before it, so it goes.
        let (view, err) = run(vec![
            queued(3),
            running.clone(),
            stage_done("script", "a"),
            stage_done("footage", "b"),
            stage_done("voice", "c"),
            NewEvent::new(Kind::Error, Level::Error, "Failed to render video: boom"),
            NewEvent::new(Kind::Queued, Level::Info, "Job queued for retry."),
            running,
            stage_done("footage", "b2"),
        ]);
        assert!(err.is_none());
        let v = view.unwrap();
        assert_eq!(names(&v), ["script", "footage"]);
        assert_eq!(v.completed_stages[1].sha256, "b2");
    }

    #[test]
    fn history_must_start_with_queued() {
        let job = JobId::new();
        let first = ev(1, job, NewEvent::info("hello"));
        assert!(fold([&first]).is_none());
    }

    /// The lifecycle as DESIGN.md states it, written independently of `check`/`apply`.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Model {
        state: JobState,
        cancel_requested: bool,
        attempts: u32,
        last: EventId,
        queued_at: EventId,
    }

    impl Model {
        fn allows(&self, kind: Kind) -> bool {
            use JobState::*;
            match (self.state, kind) {
                // A webhook record is legal in every state, after the end too.
                (_, Kind::Webhook) => true,
                // A completed job never changes; admin events belong to the daemon only.
                (Completed, _) | (_, Kind::Admin) => false,
                // `retry` re-opens a failed or cancelled job, and nothing else may follow them.
                (Failed | Cancelled, k) => k == Kind::Queued,
                (s, Kind::StageCompleted) => s == Running,
                (_, Kind::CancelRequested) => !self.cancel_requested,
                (Queued, Kind::Running) => !self.cancel_requested,
                (Queued, Kind::Queued | Kind::Progress | Kind::Complete) => false,
                (Running, Kind::Running) => false,
                _ => true,
            }
        }

        fn apply(&mut self, kind: Kind, id: EventId) {
            self.last = id;
            match kind {
                Kind::Queued => {
                    self.state = JobState::Queued;
                    self.cancel_requested = false;
                    self.queued_at = id;
                }
                Kind::Running => {
                    self.state = JobState::Running;
                    self.attempts += 1;
                }
                Kind::CancelRequested => self.cancel_requested = true,
                Kind::Cancelled => self.state = JobState::Cancelled,
                Kind::Error => self.state = JobState::Failed,
                Kind::Complete => self.state = JobState::Completed,
                Kind::Log
                | Kind::Progress
                | Kind::Metadata
                | Kind::Admin
                | Kind::StageCompleted
                | Kind::Webhook => {}
            }
        }
    }

    fn new_event(kind: Kind) -> NewEvent {
        match kind {
            Kind::Queued => queued(3),
            Kind::Progress => NewEvent::progress(0.5),
            Kind::Complete => NewEvent::new(kind, Level::Success, "done")
                .with_payload(json!({"outputPath": "/out.mp4"})),
            Kind::Error => NewEvent::new(kind, Level::Error, "Failed to render video: boom"),
            Kind::StageCompleted => NewEvent::new(kind, Level::Info, "Completed stage: script")
                .with_payload(json!({"stage": "script", "result": {"bytes": 10, "sha256": "ab"}})),
            Kind::Webhook => NewEvent::new(kind, Level::Success, "Webhook delivered.")
                .with_payload(json!({"eventId": 1, "outcome": "delivered"})),
            k => NewEvent::new(k, Level::Info, "m"),
        }
    }

    #[test]
    fn webhook_records_follow_the_end_without_changing_the_job_and_settle_deliveries() {
        let job = JobId::new();
        let mut view = JobView::create(&ev(1, job, queued(1))).unwrap();
        let hook = |event: u64, outcome: &str| {
            NewEvent::new(Kind::Webhook, Level::Info, "Webhook attempt.")
                .with_payload(json!({"eventId": event, "outcome": outcome}))
        };
        let mut id = 1;
        let mut push = |view: &mut JobView, new: NewEvent| {
            view.check(&new).unwrap();
            id += 1;
            view.apply(&ev(id, job, new));
        };
        push(
            &mut view,
            NewEvent::new(Kind::Running, Level::Info, "Job started."),
        );
        push(&mut view, new_event(Kind::Complete));
        let done = view.clone();
        assert_eq!(view.webhooks.terminal, Some((3, 3000)));
        push(&mut view, hook(3, "failed"));
        assert_eq!(view.webhooks.settled, 0, "a failed attempt settles nothing");
        push(&mut view, hook(3, "delivered"));
        assert_eq!(view.webhooks.settled, 3);
        assert_eq!(
            view.webhooks.any,
            Some((3, 3000)),
            "webhook records are not triggers"
        );
        // Nothing else of the job changed.
        let mut same = view.clone();
        same.last_event_id = done.last_event_id;
        same.webhooks = done.webhooks;
        assert_eq!(same, done);
        assert!(
            view.check(&NewEvent::info("late")).is_err(),
            "still completed"
        );
        // A daemon job takes none.
        let mut daemon = None;
        assert!(crate::event::stage(
            &mut daemon,
            JobId::DAEMON,
            vec![hook(1, "delivered")],
            None,
            1,
            0
        )
        .is_err());
    }

    #[test]
    fn the_fold_agrees_with_a_reference_model_over_random_histories() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_f01d);
        let (mut accepted, mut refused) = (0u32, 0u32);
        for _ in 0..2_000 {
            let job = JobId::new();
            let first = ev(1, job, queued(3));
            let mut view = JobView::create(&first).unwrap();
            let mut model = Model {
                state: JobState::Queued,
                cancel_requested: false,
                attempts: 0,
                last: 1,
                queued_at: 1,
            };
            let mut id = 1;
            for _ in 0..rng.usize(1..40) {
                let kind = Kind::ALL[rng.usize(..Kind::ALL.len())];
                let new = new_event(kind);
                let legal = view.check(&new).is_ok();
                assert_eq!(legal, model.allows(kind), "{kind:?} after {model:?}");
                if !legal {
                    refused += 1;
                    continue;
                }
                accepted += 1;
                id += 1;
                view.apply(&ev(id, job, new));
                model.apply(kind, id);
                assert_eq!(view.state, model.state, "{kind:?}");
                assert_eq!(view.cancel_requested, model.cancel_requested);
                assert_eq!(view.attempt, model.attempts);
                assert_eq!(view.last_event_id, model.last);
                assert_eq!(view.queued_at, model.queued_at);
                assert_eq!(
                    view.result_path.is_some(),
                    view.state == JobState::Completed
                );
                assert_eq!(view.completed_ms.is_some(), view.state.is_terminal());
            }
        }
        // The generator reaches both sides of the rules.
        assert!(
            accepted > 10_000 && refused > 10_000,
            "{accepted} / {refused}"
        );
    }
}
