//! Server-sent events: `GET /api/jobs/:id/events/stream` (one job) and `GET /api/events/stream`
//! (every job, for dashboards; each event's JSON gains `jobId`, `null` for the daemon's own events).
//!
//! Each event is one SSE message: `id:` its event id, `data:` its JSON in the seed's shape. A stream
//! starts after the `Last-Event-ID` header (what a reconnecting `EventSource` sends), else the `after`
//! query parameter, else at the job's start (job stream) or at the present (daemon-wide stream). An
//! optional `type` filter (`type=complete,error`) keeps only those event types. A comment heartbeat
//! goes out after `server.sse_heartbeat_ms` (15 s) without a write, so proxies and clients see a
//! live connection.
//!
//! Invariants: events come from the log in id order, each exactly once per connection, and only
//! events whose commit is published (read up to the views' last id), so a client that resumes with the
//! last id it fully received neither skips nor repeats one. The stream subscribes before its first
//! read, so a commit between a read and the wait still wakes it. A job's stream ends after the event
//! that makes the job terminal; asked to start past that point it answers 204, which tells an
//! `EventSource` to stop reconnecting. Every stream ends when the daemon begins to stop.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::ApiError;
use super::routes::{full, parse_job_id, query_pairs, Body};
use crate::event::{Event, EventId, JobId, Kind};
use crate::service::Core;

/// Events read from the log at a time.
const PAGE: usize = 200;
/// What a reconnecting client waits before it tries again, milliseconds (the SSE `retry:` field).
const RETRY_MS: u64 = 1000;

/// What a stream follows.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Job(JobId),
    All,
}

/// One open stream: where it stands and what wakes it.
struct Pump {
    core: Core,
    scope: Scope,
    /// Event types to keep (`None`: all).
    types: Option<Vec<Kind>>,
    /// The last event id sent (or skipped by the filter).
    after: EventId,
    commits: watch::Receiver<EventId>,
    stopping: watch::Receiver<bool>,
    /// Longest silence before a comment line is sent.
    heartbeat: Duration,
    /// When the stream last wrote anything.
    last_write: Instant,
    preamble: bool,
    done: bool,
}

/// The id to start after: `Last-Event-ID` wins over `after` (a reconnecting `EventSource` keeps
/// its first URL and sends the header).
fn start_after(
    req: &Request<Incoming>,
    pairs: &[(String, String)],
) -> Result<Option<EventId>, ApiError> {
    let header = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_string())
        .filter(|v| !v.is_empty());
    let (name, raw) = match header {
        Some(h) => ("Last-Event-ID", h),
        None => match pairs.iter().rev().find(|(k, _)| k == "after") {
            Some((_, v)) => ("after", v.clone()),
            None => return Ok(None),
        },
    };
    parse_id(&raw).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{name}` must be a whole number (an event id); got `{raw}`."
        ))
    })
}

fn parse_id(raw: &str) -> Option<EventId> {
    if raw.is_empty() || !raw.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    raw.parse::<EventId>()
        .ok()
        .filter(|v| *v <= i64::MAX as u64)
}

/// The `type` filter: a comma-separated list of event types.
fn type_filter(pairs: &[(String, String)]) -> Result<Option<Vec<Kind>>, ApiError> {
    let Some((_, raw)) = pairs.iter().rev().find(|(k, _)| k == "type") else {
        return Ok(None);
    };
    let mut kinds = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::BadRequest(format!(
                    "Query parameter `type` must list event types among {}; got `{name}`.",
                    known.join(", ")
                ))
            })?;
        kinds.push(kind);
    }
    Ok((!kinds.is_empty()).then_some(kinds))
}

/// Appends one SSE message for `ev` to `out`.
fn write_message(out: &mut Vec<u8>, ev: &Event, with_job: bool) {
    let mut wire = ev.to_wire();
    if with_job {
        if let Value::Object(m) = &mut wire {
            let job = (ev.job != JobId::DAEMON).then(|| ev.job.to_string());
            m.insert("jobId".into(), job.map_or(Value::Null, Value::String));
        }
    }
    // serde_json escapes every newline inside strings, so `data:` is one line.
    out.extend_from_slice(format!("id: {}\ndata: {wire}\n\n", ev.id).as_bytes());
}

impl Pump {
    /// The next piece of the stream: a batch of messages, a heartbeat, or `None` at its end.
    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        if self.preamble {
            self.preamble = false;
            out.extend_from_slice(format!("retry: {RETRY_MS}\n: stream open\n\n").as_bytes());
        }
        loop {
            let (events, upto, terminal) = match self.read().await {
                Ok(x) => x,
                Err(e) => {
                    self.done = true;
                    return Some(Err(io::Error::other(e.to_string())));
                }
            };
            if let Some(last) = events.last() {
                self.after = last.id;
            }
            for ev in &events {
                if self.types.as_ref().is_none_or(|t| t.contains(&ev.kind)) {
                    write_message(&mut out, ev, matches!(self.scope, Scope::All));
                }
            }
            if terminal && self.after >= upto {
                // The terminal event (and anything before it) is in `out` or was sent already.
                self.done = true;
                return (!out.is_empty()).then(|| Ok(Bytes::from(out)));
            }
            if !out.is_empty() {
                self.last_write = Instant::now();
                return Some(Ok(Bytes::from(out)));
            }
            if !events.is_empty() {
                // All filtered out: read on.
                continue;
            }
            tokio::select! {
                changed = self.commits.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(self.last_write + self.heartbeat) => {
                    self.last_write = Instant::now();
                    return Some(Ok(Bytes::from_static(b": heartbeat\n\n")));
                }
                _ = crate::wait_true(&mut self.stopping) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    /// Events after `self.after` up to what is published, the bound read to, and whether the job
    /// is terminal at that bound.
    async fn read(&self) -> Result<(Vec<Event>, EventId, bool), crate::service::CoreError> {
        match self.scope {
            Scope::Job(job) => {
                let view = self
                    .core
                    .head(job)
                    .ok_or(crate::service::CoreError::JobNotFound)?;
                let upto = view.last_event_id;
                let events = self.core.read_events(job, self.after, upto, PAGE).await?;
                Ok((events, upto, view.state.is_terminal()))
            }
            Scope::All => {
                let upto = self.core.last_id();
                let events = self.core.read_all_events(self.after, upto, PAGE).await?;
                Ok((events, upto, false))
            }
        }
    }
}

fn stream_response(pump: Pump) -> Response<Body> {
    let chunks = stream::unfold(pump, |mut p| async move {
        let item = p.next().await?;
        Some((item.map(Frame::data), p))
    });
    let mut r = Response::new(StreamBody::new(chunks).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-like proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `GET /api/jobs/:id/events/stream`.
pub async fn job_stream(
    st: &Core,
    req: &Request<Incoming>,
    id: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let job = parse_job_id(id)?;
    let pairs = query_pairs(query);
    let after = start_after(req, &pairs)?.unwrap_or(0);
    let types = type_filter(&pairs)?;
    // Subscribe before the first read: a commit in between still wakes the stream.
    let commits = st.subscribe(job).ok_or(ApiError::JobNotFound)?;
    let view = st.head(job).ok_or(ApiError::JobNotFound)?;
    if view.state.is_terminal() && after >= view.last_event_id {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    }
    Ok(stream_response(Pump {
        core: st.clone(),
        scope: Scope::Job(job),
        types,
        after,
        commits,
        stopping: st.stopping(),
        heartbeat: Duration::from_millis(st.config().server.sse_heartbeat_ms),
        last_write: Instant::now(),
        preamble: true,
        done: false,
    }))
}

/// `GET /api/events/stream`.
pub async fn all_stream(
    st: &Core,
    req: &Request<Incoming>,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(query);
    let types = type_filter(&pairs)?;
    let commits = st.subscribe_all();
    let after = start_after(req, &pairs)?.unwrap_or_else(|| st.last_id());
    Ok(stream_response(Pump {
        core: st.clone(),
        scope: Scope::All,
        types,
        after,
        commits,
        stopping: st.stopping(),
        heartbeat: Duration::from_millis(st.config().server.sse_heartbeat_ms),
        last_write: Instant::now(),
        preamble: true,
        done: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Level;
    use serde_json::json;

    fn ev(id: EventId, job: JobId, message: &str) -> Event {
        Event {
            id,
            job,
            kind: Kind::Log,
            level: Level::Info,
            message: message.into(),
            payload: Some(json!({"text": "two\nlines"})),
            timestamp_ms: 1_710_499_845_789,
            stage: Some("render".into()),
        }
    }

    #[test]
    fn a_message_is_an_id_and_one_data_line_of_the_seed_shape() {
        let job = JobId::new();
        let mut out = Vec::new();
        write_message(&mut out, &ev(7, job, "Line\nbreak"), false);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "id: 7");
        assert!(text.ends_with("\n\n"));
        let data: Value = serde_json::from_str(lines[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data, ev(7, job, "Line\nbreak").to_wire());

        let mut out = Vec::new();
        write_message(&mut out, &ev(8, job, "x"), true);
        write_message(&mut out, &ev(9, JobId::DAEMON, "admin"), true);
        let text = String::from_utf8(out).unwrap();
        let datas: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(datas[0]["jobId"], job.to_string());
        assert_eq!(datas[1]["jobId"], Value::Null);
    }

    #[test]
    fn ids_and_type_filters_are_strict() {
        assert_eq!(parse_id("42"), Some(42));
        for bad in ["", "-1", "4 2", "x", "99999999999999999999"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        let p = query_pairs("type=complete,%20error");
        assert_eq!(
            type_filter(&p).unwrap(),
            Some(vec![Kind::Complete, Kind::Error])
        );
        assert_eq!(type_filter(&query_pairs("type=")).unwrap(), None);
        let e = type_filter(&query_pairs("type=nope")).unwrap_err();
        assert!(e.to_string().contains("`type`") && e.to_string().contains("progress"));
    }
}
