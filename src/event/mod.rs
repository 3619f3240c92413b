//! The event model: what a job's history is made of, and the pure fold that turns that history into
//! the job's state.
//!
//! Invariants: a job's first event is `queued`; terminal states (`completed`, `failed`) never change;
//! `cancelled` and `failed` change only through an explicit retry (a `queued` event marked as such).
//! [`JobView::check`] rejects every other transition, and the journal calls it before anything is written,
//! so the log never holds an illegal sequence. No actix or redb types live here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

mod append;
mod idempotency;
mod view;

pub use append::{interruption_events, stage, Refusal};
pub use idempotency::{IdempotencyTag, WINDOW_MS as IDEMPOTENCY_WINDOW_MS};
pub use view::{fold, CompletedStage, IllegalEvent, JobState, JobView};

/// A job's identity: a random UUID, written on the wire in its hyphenated form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub Uuid);

impl JobId {
    /// The pseudo-job that carries daemon-wide admin events (pause, resume, concurrency...).
    pub const DAEMON: JobId = JobId(Uuid::nil());

    pub fn new() -> JobId {
        JobId(Uuid::new_v4())
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    pub fn from_u128(v: u128) -> JobId {
        JobId(Uuid::from_u128(v))
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// One global sequence for the whole daemon: strictly increasing, never reused.
pub type EventId = u64;

/// What happened. The wire names are MoneyPrinter's (`log`, `progress`, `error`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The job entered the queue: at creation, after an interruption, or on a retry.
    Queued,
    /// An attempt started.
    Running,
    /// A progress message.
    Log,
    /// A percentage update: `payload.progress` in 0..=1.
    Progress,
    /// The job failed for good (terminal).
    Error,
    CancelRequested,
    /// Terminal (until a retry).
    Cancelled,
    /// The job finished with a video (terminal).
    Complete,
    /// Title, description and keywords of the finished video.
    Metadata,
    /// A daemon-wide change made by an administrator (pause, resume, concurrency...).
    Admin,
    /// A pipeline stage finished and kept its result in the job's folder: `payload.stage`, the
    /// size and digest of the kept result (`payload.result`), and a summary of what it made.
    StageCompleted,
    /// One attempt to deliver a webhook and its outcome (`payload.eventId`, `outcome`: delivered,
    /// failed or gave_up). Legal in every state of a job, and changes none.
    Webhook,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Queued,
        Kind::Running,
        Kind::Log,
        Kind::Progress,
        Kind::Error,
        Kind::CancelRequested,
        Kind::Cancelled,
        Kind::Complete,
        Kind::Metadata,
        Kind::Admin,
        Kind::StageCompleted,
        Kind::Webhook,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Queued => "queued",
            Kind::Running => "running",
            Kind::Log => "log",
            Kind::Progress => "progress",
            Kind::Error => "error",
            Kind::CancelRequested => "cancel_requested",
            Kind::Cancelled => "cancelled",
            Kind::Complete => "complete",
            Kind::Metadata => "metadata",
            Kind::Admin => "admin",
            Kind::StageCompleted => "stage_completed",
            Kind::Webhook => "webhook",
        }
    }

    /// The stable one-byte code used by the record codec. Never renumber.
    pub fn code(&self) -> u8 {
        match self {
            Kind::Queued => 1,
            Kind::Running => 2,
            Kind::Log => 3,
            Kind::Progress => 4,
            Kind::Error => 5,
            Kind::CancelRequested => 6,
            Kind::Cancelled => 7,
            Kind::Complete => 8,
            Kind::Metadata => 9,
            Kind::Admin => 10,
            Kind::StageCompleted => 11,
            Kind::Webhook => 12,
        }
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.code() == code)
    }
}

/// Severity, as MoneyPrinter's page colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Success,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    /// The stable one-byte code used by the record codec. Never renumber.
    pub fn code(&self) -> u8 {
        match self {
            Level::Info => 1,
            Level::Success => 2,
            Level::Warning => 3,
            Level::Error => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Level> {
        [Level::Info, Level::Success, Level::Warning, Level::Error]
            .into_iter()
            .find(|l| l.code() == code)
    }
}

/// An event before the journal gives it an id and a timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub kind: Kind,
    pub level: Level,
    pub message: String,
    pub payload: Option<Value>,
    /// The pipeline stage that emitted it (not on the wire; feeds `JobView::stage`).
    pub stage: Option<String>,
}

impl NewEvent {
    pub fn new(kind: Kind, level: Level, message: impl Into<String>) -> NewEvent {
        NewEvent {
            kind,
            level,
            message: message.into(),
            payload: None,
            stage: None,
        }
    }

    /// A `log` event at `info`.
    pub fn info(message: impl Into<String>) -> NewEvent {
        NewEvent::new(Kind::Log, Level::Info, message)
    }

    /// A `log` event at `success`.
    pub fn success(message: impl Into<String>) -> NewEvent {
        NewEvent::new(Kind::Log, Level::Success, message)
    }

    /// A `log` event at `warning`.
    pub fn warning(message: impl Into<String>) -> NewEvent {
        NewEvent::new(Kind::Log, Level::Warning, message)
    }

    /// A `progress` event: `fraction` is clamped to 0..=1.
    pub fn progress(fraction: f64) -> NewEvent {
        let p = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let p = (p * 1000.0).round() / 1000.0;
        NewEvent::new(
            Kind::Progress,
            Level::Info,
            format!("Rendering: {:.0}%", p * 100.0),
        )
        .with_payload(json!({ "progress": p }))
    }

    pub fn with_payload(mut self, payload: Value) -> NewEvent {
        self.payload = Some(payload);
        self
    }

    /// The event as committed: its id, job and commit time.
    pub fn into_event(self, id: EventId, job: JobId, timestamp_ms: i64) -> Event {
        Event {
            id,
            job,
            kind: self.kind,
            level: self.level,
            message: self.message,
            payload: self.payload,
            timestamp_ms,
            stage: self.stage,
        }
    }

    pub fn with_stage(mut self, stage: impl Into<String>) -> NewEvent {
        self.stage = Some(stage.into());
        self
    }
}

/// A committed event: what the log holds and what `GET /api/jobs/:id/events` returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub job: JobId,
    pub kind: Kind,
    pub level: Level,
    pub message: String,
    pub payload: Option<Value>,
    /// Unix time in milliseconds (the wire shows seconds with millisecond precision).
    pub timestamp_ms: i64,
    pub stage: Option<String>,
}

impl Event {
    pub fn timestamp(&self) -> f64 {
        self.timestamp_ms as f64 / 1000.0
    }

    /// The seed's wire shape: {id, type, level, message, payload, timestamp}.
    pub fn to_wire(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind.as_str(),
            "level": self.level.as_str(),
            "message": self.message,
            "payload": self.payload,
            "timestamp": self.timestamp(),
        })
    }
}

/// The current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as i64
}

/// ISO-8601 UTC with milliseconds, as the job JSON shows times (`2024-03-15T10:50:00.123Z`).
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_710_499_845_789), "2024-03-15T10:50:45.789Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn wire_shape_is_the_seeds() {
        let ev = Event {
            id: 7,
            job: JobId::new(),
            kind: Kind::Log,
            level: Level::Info,
            message: "Rendering final video with subtitles...".into(),
            payload: Some(json!({"subtitlesPosition": "center", "color": "yellow"})),
            timestamp_ms: 1_710_499_845_789,
            stage: Some("render".into()),
        };
        let w = ev.to_wire();
        let keys: Vec<_> = w.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 6);
        assert_eq!(w["type"], "log");
        assert_eq!(w["timestamp"], 1710499845.789);
    }

    #[test]
    fn codes_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
        assert_eq!(Kind::from_code(0), None);
        assert_eq!(Level::from_code(3), Some(Level::Warning));
    }

    #[test]
    fn progress_is_clamped() {
        assert_eq!(NewEvent::progress(1.7).payload.unwrap()["progress"], 1.0);
        assert_eq!(
            NewEvent::progress(f64::NAN).payload.unwrap()["progress"],
            0.0
        );
    }
}
