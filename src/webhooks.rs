//! The webhook dispatcher: a follower of the log that POSTs a job's events to its webhook URL.
//!
//! A job's URL is its request's `webhookUrl`, else `webhooks.url`. The events delivered are
//! `complete`, `error` and `cancelled` (every event but webhook records with
//! `webhooks.all_events`). The body is `{"jobId","event":{...}}` (the event in the seed's shape),
//! with `X-Reelsmith-Event-Id` and, when `webhooks.secret` is set,
//! `X-Reelsmith-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! Invariants: delivery is at least once. Each attempt and its outcome is a `webhook` event of the
//! job (`payload {eventId, event, url, attempt, outcome, status?, error?, nextAttemptAt?}`), and the
//! fold keeps how far deliveries are settled ([`crate::event::WebhookMarks`]), so a restarted
//! daemon resumes what is pending from the log alone. A job's deliveries go one at a time, in event
//! order; a failure is retried with doubling backoff until `webhooks.give_up_secs` after the event,
//! then abandoned (`gave_up`). The secret is only ever used to sign: it is in no event and no log
//! line, and URLs are shown without their query or user info.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{Config, WebhooksConfig};
use crate::event::{now_ms, Event, EventId, JobId, JobView, Kind, Level, NewEvent};
use crate::providers::http::{redact_url, HttpClient, HttpRequest};
use crate::service::Core;

/// Attempts in flight at once, over all jobs.
const MAX_IN_FLIGHT: usize = 16;
/// Events read from the log per page while following it.
const PAGE: usize = 500;

/// One event waiting for its delivery.
struct Delivery {
    event: Event,
    /// Failed attempts so far.
    failed: u32,
    due: Instant,
}

/// A job's deliveries, in event order.
struct JobQueue {
    url: String,
    queue: VecDeque<Delivery>,
    /// The largest event id queued so far (the feed and the resume may both see one).
    upto: EventId,
    busy: bool,
}

/// What one attempt came to.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
}

impl Attempt {
    fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// Starts the dispatcher; it ends when the daemon begins to stop (attempts in flight are
/// abandoned: a restart delivers them again).
pub fn start(core: Core) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(core))
}

async fn run(core: Core) {
    let client = match HttpClient::new() {
        Ok(c) => c,
        Err(e) => return warn!(error = %e, "webhooks disabled: no HTTP client"),
    };
    let mut commits = core.subscribe_all();
    let mut cursor = core.last_id();
    let mut jobs: HashMap<JobId, JobQueue> = HashMap::new();
    resume(&core, &mut jobs).await;
    let mut flying: JoinSet<(JobId, Attempt)> = JoinSet::new();
    let mut stopping = core.stopping();
    loop {
        let cfg = core.config();
        expire_and_start(&core, &cfg, &client, &mut jobs, &mut flying).await;
        let next_due = jobs
            .values()
            .filter(|q| !q.busy)
            .filter_map(|q| q.queue.front().map(|d| d.due))
            .min();
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    break;
                }
                cursor = follow(&core, &cfg, cursor, &mut jobs).await;
            }
            Some(done) = flying.join_next(), if !flying.is_empty() => match done {
                Ok((job, attempt)) => settle(&core, &cfg.webhooks, &mut jobs, job, attempt).await,
                Err(e) => warn!(error = %e, "a webhook attempt task failed"),
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(far_future)), if next_due.is_some() => {}
            _ = crate::wait_true(&mut stopping) => break,
        }
    }
    let pending: usize = jobs.values().map(|q| q.queue.len()).sum();
    info!(pending, "webhook dispatcher stopped");
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// The URL `job`'s webhooks go to, if any.
fn url_for(view: &JobView, cfg: &Config) -> Option<String> {
    let from_request = serde_json::from_str::<Value>(&view.request)
        .ok()
        .and_then(|r| {
            r.get("webhookUrl")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    from_request
        .or_else(|| Some(cfg.webhooks.url.clone()))
        .filter(|u| !u.is_empty())
}

/// Whether `ev` is delivered under `cfg`.
fn triggers(ev: &Event, cfg: &WebhooksConfig) -> bool {
    ev.job != JobId::DAEMON && ev.kind != Kind::Webhook && (cfg.all_events || ev.kind.ends_job())
}

/// Queues `ev` for its job (created on first use), unless it is queued already.
fn enqueue(jobs: &mut HashMap<JobId, JobQueue>, url: impl FnOnce() -> Option<String>, d: Delivery) {
    let job = d.event.job;
    let q = match jobs.get_mut(&job) {
        Some(q) => q,
        None => {
            let Some(url) = url() else { return };
            jobs.entry(job).or_insert(JobQueue {
                url,
                queue: VecDeque::new(),
                upto: 0,
                busy: false,
            })
        }
    };
    if d.event.id > q.upto {
        q.upto = d.event.id;
        q.queue.push_back(d);
    }
}

/// Rebuilds the pending deliveries from the views and the log (start-up).
async fn resume(core: &Core, jobs: &mut HashMap<JobId, JobQueue>) {
    let cfg = core.config();
    let w = &cfg.webhooks;
    let window = (w.give_up_secs as i64).saturating_mul(1000);
    let now = now_ms();
    let mut resumed = 0;
    // Finished jobs older than the give-up window owe nothing; an old finished job is folded
    // from the log only when a URL applies to it (its queued event alone says so when
    // `webhooks.url` is empty), so a start on a long history decodes little, one job at a time.
    for (job, head, folded) in core.webhook_candidates(now.saturating_sub(window)) {
        if folded && w.url.is_empty() {
            let names_url = match core.read_events(job, 0, head.first_event_id, 1).await {
                Ok(first) => first.first().is_some_and(|ev| {
                    ev.payload
                        .as_ref()
                        .and_then(|p| p.get("request"))
                        .and_then(|r| r.get("webhookUrl"))
                        .and_then(Value::as_str)
                        .is_some_and(|u| !u.is_empty())
                }),
                Err(e) => {
                    warn!(job = %job, error = %e, "cannot read a job's request to resume its webhooks");
                    continue;
                }
            };
            if !names_url {
                continue;
            }
        }
        let view = match core.job_view(job).await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                warn!(job = %job, error = %e, "cannot read a job to resume its webhooks");
                continue;
            }
        };
        let marks = view.webhooks;
        let target = if w.all_events {
            marks.any
        } else {
            marks.terminal
        };
        let Some((id, ms)) = target else { continue };
        if id <= marks.settled || ms.saturating_add(window) < now {
            continue;
        }
        let Some(url) = url_for(&view, &cfg) else {
            continue;
        };
        let events = match core
            .read_events(view.id, marks.settled, view.last_event_id, usize::MAX)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                warn!(job = %view.id, error = %e, "cannot read a job's events to resume its webhooks");
                continue;
            }
        };
        for ev in events.iter().filter(|e| triggers(e, w)) {
            // Earlier attempts at this event: how many failed, and when the next one is due.
            let mut failed = 0;
            let mut next_at_ms = None;
            for rec in events.iter().filter(|r| r.kind == Kind::Webhook) {
                let p = rec.payload.as_ref();
                let of = p.and_then(|p| p.get("eventId")).and_then(Value::as_u64);
                if of == Some(ev.id) {
                    failed += 1;
                    next_at_ms = p
                        .and_then(|p| p.get("nextAttemptAt"))
                        .and_then(Value::as_f64)
                        .map(|s| (s * 1000.0) as i64);
                }
            }
            let wait_ms = next_at_ms.map(|t| t - now).unwrap_or(0).max(0) as u64;
            let d = Delivery {
                event: ev.clone(),
                failed,
                due: Instant::now() + Duration::from_millis(wait_ms),
            };
            enqueue(jobs, || Some(url.clone()), d);
            resumed += 1;
        }
    }
    if resumed > 0 {
        info!(deliveries = resumed, "resuming pending webhook deliveries");
    }
}

/// Reads the log after `cursor` and queues what triggers; answers the new cursor.
async fn follow(
    core: &Core,
    cfg: &Config,
    mut cursor: EventId,
    jobs: &mut HashMap<JobId, JobQueue>,
) -> EventId {
    loop {
        let page = match core.read_since(cursor, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, after = cursor, "webhook dispatcher cannot read the log");
                return cursor;
            }
        };
        let n = page.len();
        for ev in page {
            cursor = ev.id;
            if !triggers(&ev, &cfg.webhooks) {
                continue;
            }
            let job = ev.job;
            // Settled already (the start-up resume may have delivered it). The job just had an
            // event, so the cache holds it whole (it is read from the log only if not).
            let view = match core.job_view(job).await {
                Ok(v) => v,
                Err(e) => {
                    warn!(job = %job, error = %e, "webhook dispatcher cannot read a job");
                    None
                }
            };
            if view.as_ref().is_some_and(|v| v.webhooks.settled >= ev.id) {
                continue;
            }
            let d = Delivery {
                event: ev,
                failed: 0,
                due: Instant::now(),
            };
            enqueue(jobs, || view.and_then(|v| url_for(&v, cfg)), d);
        }
        if n < PAGE {
            return cursor;
        }
    }
}

/// Abandons deliveries whose window has passed, and starts the attempts that are due.
async fn expire_and_start(
    core: &Core,
    cfg: &Config,
    client: &HttpClient,
    jobs: &mut HashMap<JobId, JobQueue>,
    flying: &mut JoinSet<(JobId, Attempt)>,
) {
    let w = &cfg.webhooks;
    let window = (w.give_up_secs as i64).saturating_mul(1000);
    let now = Instant::now();
    let mut expired = Vec::new();
    for (job, q) in jobs.iter_mut() {
        if q.busy {
            continue;
        }
        let Some(d) = q.queue.front() else { continue };
        if d.event.timestamp_ms.saturating_add(window) < now_ms() {
            expired.push(*job);
            continue;
        }
        if d.due > now || flying.len() >= MAX_IN_FLIGHT {
            continue;
        }
        q.busy = true;
        let body = body_of(&d.event);
        let req = request(&q.url, &d.event, body, w);
        let client = client.clone();
        let job = *job;
        flying.spawn(async move {
            let attempt = match client.send_raw(&req).await {
                Ok(r) if (200..300).contains(&r.status) => Attempt {
                    status: Some(r.status),
                    error: None,
                },
                Ok(r) => Attempt {
                    status: Some(r.status),
                    error: Some(format!("HTTP {}", r.status)),
                },
                Err(e) => Attempt {
                    status: e.status(),
                    error: Some(e.to_string()),
                },
            };
            (job, attempt)
        });
    }
    for job in expired {
        let Some(q) = jobs.get_mut(&job) else {
            continue;
        };
        let Some(d) = q.queue.pop_front() else {
            continue;
        };
        crate::metrics::get().webhook("gave_up");
        let record = record(&q.url, &d, "gave_up", None, Some("expired"), None);
        if let Err(e) = core.record_webhook(job, record).await {
            warn!(job = %job, error = %e, "cannot record an abandoned webhook");
        }
        if q.queue.is_empty() {
            jobs.remove(&job);
        }
    }
}

/// Records an attempt's outcome and moves the job's queue on.
async fn settle(
    core: &Core,
    w: &WebhooksConfig,
    jobs: &mut HashMap<JobId, JobQueue>,
    job: JobId,
    attempt: Attempt,
) {
    let Some(q) = jobs.get_mut(&job) else { return };
    q.busy = false;
    let Some(d) = q.queue.front_mut() else { return };
    let url = redact_url(&q.url);
    let event = if attempt.delivered() {
        debug!(job = %job, event = d.event.id, url = %url, "webhook delivered");
        crate::metrics::get().webhook("delivered");
        let ev = record(&q.url, d, "delivered", attempt.status, None, None);
        q.queue.pop_front();
        ev
    } else {
        d.failed += 1;
        let delay = backoff(w, d.failed);
        let next_ms = now_ms().saturating_add(delay.as_millis() as i64);
        let window = (w.give_up_secs as i64).saturating_mul(1000);
        let error = attempt.error.as_deref();
        if next_ms > d.event.timestamp_ms.saturating_add(window) {
            warn!(job = %job, event = d.event.id, url = %url, attempts = d.failed, "webhook abandoned");
            crate::metrics::get().webhook("gave_up");
            let ev = record(&q.url, d, "gave_up", attempt.status, error, None);
            q.queue.pop_front();
            ev
        } else {
            info!(job = %job, event = d.event.id, url = %url, attempt = d.failed, error = error.unwrap_or(""), retry_in_ms = delay.as_millis() as u64, "webhook delivery failed");
            crate::metrics::get().webhook("failed");
            d.due = Instant::now() + delay;
            record(&q.url, d, "failed", attempt.status, error, Some(next_ms))
        }
    };
    if q.queue.is_empty() {
        jobs.remove(&job);
    }
    if let Err(e) = core.record_webhook(job, event).await {
        warn!(job = %job, error = %e, "cannot record a webhook attempt");
    }
}

/// The wait before the attempt after `failed` failures: `retry_base_ms` doubling, at most
/// `retry_max_secs`, less up to a quarter at random (so many receivers coming back spread out).
fn backoff(w: &WebhooksConfig, failed: u32) -> Duration {
    let base = Duration::from_millis(w.retry_base_ms);
    let exp = base
        .saturating_mul(
            1u32.checked_shl(failed.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(Duration::from_secs(w.retry_max_secs));
    exp.mul_f64(0.75 + fastrand::f64() * 0.25)
}

/// `{"jobId","event":{...}}`, the bytes signed and sent.
fn body_of(ev: &Event) -> Bytes {
    let event = ev.to_wire().to_string();
    Bytes::from(format!(r#"{{"jobId":"{}","event":{event}}}"#, ev.job))
}

/// The hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn request(url: &str, ev: &Event, body: Bytes, w: &WebhooksConfig) -> HttpRequest {
    let mut req = HttpRequest::post(url)
        .header("x-reelsmith-event-id", ev.id.to_string())
        .timeout(Duration::from_secs(w.timeout_secs))
        .follow_redirects(false);
    if let Some(secret) = w.secret.non_empty() {
        req = req.header(
            "x-reelsmith-signature",
            format!("sha256={}", signature(secret.expose(), &body)),
        );
    }
    req.body_bytes("application/json", body)
}

/// The `webhook` event recording one attempt (or the abandonment) of `d`'s delivery.
fn record(
    url: &str,
    d: &Delivery,
    outcome: &str,
    status: Option<u16>,
    error: Option<&str>,
    next_at_ms: Option<i64>,
) -> NewEvent {
    let shown = redact_url(url);
    let (id, kind) = (d.event.id, d.event.kind.as_str());
    let attempts = d.failed.max(1);
    let (level, message) = match outcome {
        "delivered" => (
            Level::Success,
            format!("Webhook delivered: event {id} ({kind}) to {shown}."),
        ),
        "failed" => (
            Level::Warning,
            format!(
                "Webhook delivery failed (attempt {attempts}): event {id} ({kind}) to {shown}: {}; retrying.",
                error.unwrap_or("unknown error")
            ),
        ),
        _ => (
            Level::Error,
            format!(
                "Webhook abandoned after {} attempt(s): event {id} ({kind}) to {shown}: {}.",
                d.failed,
                error.unwrap_or("no answer")
            ),
        ),
    };
    let mut payload = json!({
        "eventId": id,
        "event": kind,
        "url": shown,
        "attempt": if outcome == "delivered" { d.failed + 1 } else { d.failed },
        "outcome": outcome,
        "status": status,
        "error": error,
    });
    if let Some(t) = next_at_ms {
        payload["nextAttemptAt"] = json!(t as f64 / 1000.0);
    }
    NewEvent::new(Kind::Webhook, level, message).with_payload(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let w = WebhooksConfig {
            retry_base_ms: 1000,
            retry_max_secs: 5,
            ..WebhooksConfig::default()
        };
        let ms = |n| backoff(&w, n).as_millis() as u64;
        assert!((750..=1000).contains(&ms(1)));
        assert!((1500..=2000).contains(&ms(2)));
        assert!((3000..=4000).contains(&ms(3)));
        assert!((3750..=5000).contains(&ms(10)));
        assert!((3750..=5000).contains(&ms(u32::MAX)));
    }

    #[test]
    fn the_body_is_job_id_then_the_seeds_event() {
        let ev =
            NewEvent::new(Kind::Complete, Level::Success, "done").into_event(7, JobId::new(), 1500);
        let body = body_of(&ev);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["jobId"], ev.job.to_string());
        assert_eq!(v["event"], ev.to_wire());
        assert!(body.starts_with(b"{\"jobId\""));
    }
}
