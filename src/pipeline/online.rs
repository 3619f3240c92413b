//! Calls to outside services from a stage: bounded retries with a warning event per retry, and the
//! job's stop signal honoured while waiting.
//!
//! Every provider client makes one attempt per call; [`call`] wraps it in the retry policy and records
//! each retry as a warning event {error, retryable, stage, provider, attempt, attempts, delaySeconds,
//! detail}, e.g. `Pexels returned HTTP 429; retrying in 1.0 s (attempt 2 of 4)`. Messages come from
//! [`ProviderError`], which never holds a key or a query string.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use serde_json::json;

use super::{EventSink, StageError, StopSignal};
use crate::event::NewEvent;
use crate::providers::{retry, ProviderError, RetryPolicy};

/// Short names of the outside services, as failure and warning payloads carry them (`provider`).
pub const OLLAMA: &str = "ollama";
pub const OPENAI: &str = "openai";
pub const PEXELS: &str = "pexels";
pub const TIKTOK: &str = "tiktok";
pub const YOUTUBE: &str = "youtube";

/// Where retry warnings go and what they name.
#[derive(Clone, Copy)]
pub struct CallSite<'a> {
    pub events: &'a dyn EventSink,
    pub stop: &'a StopSignal,
    /// The stage, as events name it (`script`, `footage`, ...).
    pub stage: &'static str,
    /// The service's short name ([`OLLAMA`], [`PEXELS`], ...).
    pub provider: &'static str,
}

/// Runs `op(attempt)` under `policy` until it succeeds or fails for good. A warning event is recorded
/// before each retry. The outer `Err` is the job being stopped (or its events no longer being
/// recorded); the inner one the service's last error, for the caller to fail or fall back on.
pub async fn call<T, Op, Fut>(
    site: CallSite<'_>,
    policy: &RetryPolicy,
    op: Op,
) -> Result<Result<T, ProviderError>, StageError>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    site.stop.check()?;
    let attempts = policy.attempts.max(1);
    let on_retry = |retry: u32, e: &ProviderError, delay: Duration| {
        crate::metrics::get().provider_retry(site.provider);
        let ev = retry_event(site, e, retry + 1, attempts, delay);
        async move {
            // A lost journal shows at the stage's next emit; a retry warning is not worth failing on.
            let _ = site.events.emit(ev).await;
        }
    };
    let r = tokio::select! {
        r = retry::retry(policy, op, on_retry) => r,
        reason = site.stop.stopped() => return Err(StageError::Stopped(reason)),
    };
    if r.is_err() {
        crate::metrics::get().provider_failure(site.provider);
    }
    Ok(r)
}

/// The warning recorded before attempt `next` of `attempts`.
pub fn retry_event(
    site: CallSite<'_>,
    e: &ProviderError,
    next: u32,
    attempts: u32,
    delay: Duration,
) -> NewEvent {
    let secs = (delay.as_secs_f64() * 10.0).round() / 10.0;
    NewEvent::warning(format!(
        "{}; retrying in {secs:.1} s (attempt {next} of {attempts})",
        short_reason(e)
    ))
    .with_payload(json!({
        "error": e.code(),
        "retryable": true,
        "stage": site.stage,
        "provider": site.provider,
        "attempt": next,
        "attempts": attempts,
        "delaySeconds": secs,
        "detail": e.to_string(),
    }))
    .with_stage(site.stage)
}

/// What went wrong, in a few words: `Pexels returned HTTP 429`, `Ollama refused the connection`.
pub fn short_reason(e: &ProviderError) -> String {
    let service = e.service();
    if let Some(status) = e.status() {
        return format!("{service} returned HTTP {status}");
    }
    match e.code() {
        "ConnectionRefused" => format!("{service} refused the connection"),
        "ConnectionTimeout" => format!("{service} did not answer in time"),
        "ConnectionFailed" => format!("{service} could not be reached"),
        _ => e.to_string(),
    }
}

/// `first` and `then` as two sentences (`first` may or may not end with a full stop).
pub fn and_then(first: &str, then: &str) -> String {
    let first = first.trim_end();
    if first.ends_with(['.', '!', '?']) {
        format!("{first} {then}")
    } else {
        format!("{first}. {then}")
    }
}

/// A warning that `provider` failed and the job goes on without it (a fallback stands in, or the
/// step is skipped): payload {error, retryable, stage, provider}.
pub fn provider_warning(
    message: impl Into<String>,
    e: &ProviderError,
    stage: &'static str,
    provider: &'static str,
) -> NewEvent {
    NewEvent::warning(message)
        .with_payload(json!({
            "error": e.code(),
            "retryable": e.retryable(),
            "stage": stage,
            "provider": provider,
        }))
        .with_stage(stage)
}

/// The warning that `provider` failed for good and `then` says what stands in: `<error>. <then>`.
pub fn fallback_warning(
    e: &ProviderError,
    then: &str,
    stage: &'static str,
    provider: &'static str,
) -> NewEvent {
    provider_warning(and_then(&e.to_string(), then), e, stage, provider)
}

/// An online provider with an offline stand-in: once the provider fails for good, one warning says
/// so and the stand-in serves every later call of the job; without a stand-in the failure fails
/// the stage {stage, provider}.
#[derive(Debug)]
pub struct Failover {
    stage: &'static str,
    provider: &'static str,
    /// What the warning says stands in; `None` when the fallback is off.
    then: Option<&'static str>,
    failed: Cell<bool>,
}

impl Failover {
    pub fn new(
        stage: &'static str,
        provider: &'static str,
        then: Option<&'static str>,
    ) -> Failover {
        Failover {
            stage,
            provider,
            then,
            failed: Cell::new(false),
        }
    }

    /// Whether the online provider is still in use.
    pub fn online(&self) -> bool {
        !self.failed.get()
    }

    /// The online provider failed for good with `e`: the stage's failure when there is no
    /// stand-in, else `Ok` (the first time with the warning recorded) and the stand-in takes over.
    pub async fn give_up(
        &self,
        events: &dyn EventSink,
        e: &ProviderError,
    ) -> Result<(), StageError> {
        let Some(then) = self.then else {
            return Err(StageError::provider(self.provider, e));
        };
        if !self.failed.replace(true) {
            events
                .emit(fallback_warning(e, then, self.stage, self.provider))
                .await?;
        }
        Ok(())
    }
}

/// Why a service could not be reached, for a fallback warning: `connection refused`, `timeout`,
/// `HTTP 502`, else the error's message.
pub fn unreachable_reason(e: &ProviderError) -> String {
    if let Some(status) = e.status() {
        return format!("HTTP {status}");
    }
    match e.code() {
        "ConnectionRefused" => "connection refused".into(),
        "ConnectionTimeout" => "no answer in time".into(),
        "ConnectionFailed" => "connection failed".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::HttpError;

    #[test]
    fn retry_warnings_name_the_service_the_status_and_the_attempt() {
        let e = ProviderError::http(
            &crate::providers::PEXELS,
            HttpError::Status {
                url: "http://127.0.0.1:9/videos/search".into(),
                status: 429,
                body: String::new(),
                retry_after: None,
            },
        );
        let (_h, stop) = StopSignal::pair();
        struct Nowhere;
        impl EventSink for Nowhere {
            fn emit(
                &self,
                _: NewEvent,
            ) -> super::super::LocalBoxFuture<'_, Result<u64, super::super::SinkError>>
            {
                Box::pin(async { Ok(0) })
            }
        }
        let site = CallSite {
            events: &Nowhere,
            stop: &stop,
            stage: "footage",
            provider: PEXELS,
        };
        let ev = retry_event(site, &e, 2, 4, Duration::from_millis(1040));
        assert_eq!(
            ev.message,
            "Pexels returned HTTP 429; retrying in 1.0 s (attempt 2 of 4)"
        );
        let p = ev.payload.unwrap_or_default();
        assert_eq!(
            (&p["error"], &p["provider"], &p["stage"], &p["retryable"]),
            (
                &json!("RateLimited"),
                &json!("pexels"),
                &json!("footage"),
                &json!(true)
            )
        );
    }
}
