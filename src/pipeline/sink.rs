//! The sink every event of a run passes through on its way to the journal ([`super::run`] installs
//! it around the job's own sink).
//!
//! It hides every secret of its [`Redactor`] (all that the config holds, see
//! `providers::config_secrets`) in the event's message and payload, so no event, `errorMessage` or
//! reply built from them can show one, whatever a provider answered. Then it mirrors to the daemon's log what an operator reading `journalctl -u reelsmith` needs, one line
//! each with tracing fields: a job's failure at `error` (job, stage, provider, retryable, code, and
//! the error: the same text as the job's `errorMessage`), and every retry and fallback of an outside
//! service at `warn` with the same fields. The line is written before the event is forwarded, so it
//! is there even when the journal can no longer record the event.

use std::rc::Rc;

use serde_json::Value;
use tracing::{error, warn};

use super::{EventSink, LocalBoxFuture, SinkError};
use crate::event::{EventId, JobId, Kind, Level, NewEvent};
use crate::providers::Redactor;

/// Wraps a job's sink; see the module comment.
pub struct GuardedSink {
    job: JobId,
    secrets: Redactor,
    inner: Rc<dyn EventSink>,
}

impl GuardedSink {
    pub fn new(job: JobId, secrets: Redactor, inner: Rc<dyn EventSink>) -> GuardedSink {
        GuardedSink {
            job,
            secrets,
            inner,
        }
    }
}

impl EventSink for GuardedSink {
    fn emit(&self, mut event: NewEvent) -> LocalBoxFuture<'_, Result<EventId, SinkError>> {
        if let std::borrow::Cow::Owned(clean) = self.secrets.scrub(&event.message) {
            event.message = clean;
        }
        if let Some(p) = event.payload.as_mut() {
            self.secrets.scrub_json(p);
        }
        mirror(self.job, &event);
        self.inner.emit(event)
    }
}

/// Logs `ev` when it is a failure, or a retry or fallback of an outside service.
fn mirror(job: JobId, ev: &NewEvent) {
    let payload = ev.payload.as_ref();
    let text = |key: &str| payload.and_then(|p| p.get(key)).and_then(Value::as_str);
    let stage = text("stage").or(ev.stage.as_deref()).unwrap_or("none");
    let code = text("error").unwrap_or("none");
    let retryable = payload
        .and_then(|p| p.get("retryable"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match (ev.kind, ev.level, text("provider")) {
        (Kind::Error, _, provider) => error!(
            job = %job,
            stage,
            provider = provider.unwrap_or("none"),
            retryable,
            code,
            error = %ev.message,
            "job failed"
        ),
        // Retries carry the attempt they announce and the full error as `detail`.
        (_, Level::Warning, Some(provider))
            if payload.is_some_and(|p| p.get("attempt").is_some()) =>
        {
            warn!(
                job = %job,
                stage,
                provider,
                retryable,
                code,
                error = %text("detail").unwrap_or(&ev.message),
                "provider call failed; retrying"
            )
        }
        (_, Level::Warning, Some(provider)) => warn!(
            job = %job,
            stage,
            provider,
            retryable,
            code,
            error = %ev.message,
            "provider failed; falling back"
        ),
        _ => {}
    }
}
