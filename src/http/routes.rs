//! Routing and the JSON shapes of every endpoint. MoneyPrinter's messages and status codes are kept
//! to the letter (`Video generation queued.`, `Job not found.`, ...); our extensions only add fields.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::error::ApiError;
use super::idempotency;
use super::{media, page, sse, upload};
use crate::event::{JobId, JobState};
use crate::request::JobRequest;
use crate::service::Core;

/// Every answer's body: a whole buffer (`full`) or a stream (files, event streams).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body that is one buffer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Default and largest page of events.
const DEFAULT_LIMIT: u64 = 200;
const MAX_LIMIT: u64 = 1000;
/// Longest long poll, seconds.
const MAX_WAIT: u64 = 60;
/// Most jobs in one `POST /api/generate/batch`.
pub(crate) const MAX_BATCH: usize = 100;
/// A batch body may be this many times `server.max_body_bytes`.
const BATCH_BODY_FACTOR: u64 = 16;

pub async fn handle(st: Core, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let config = st.config();
    let origin = super::guard::request_origin(&req);
    let mut resp = if let Err(e) = super::guard::check(&config, &req) {
        debug!(%method, %path, %peer, error = %e, "request refused by a guard");
        error_response(&e)
    } else if method == Method::OPTIONS {
        preflight(&req)
    } else {
        match route(&st, req).await {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    warn!(%method, %path, %peer, error = %e, "request failed");
                } else {
                    debug!(%method, %path, %peer, error = %e, "request refused");
                }
                error_response(&e)
            }
        }
    };
    super::guard::cors_headers(&config, origin.as_deref(), resp.headers_mut());
    let route = template_of(path.trim_end_matches('/')).unwrap_or("unmatched");
    crate::metrics::get().http(
        route,
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

fn preflight(req: &Request<Incoming>) -> Response<Body> {
    let allow_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("Content-Type"));
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn ok(body: Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, &body))
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(
        e.status(),
        &json!({ "status": "error", "message": e.to_string() }),
    );
    if matches!(e, ApiError::Unauthorized(_)) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"reelsmith\""),
        );
    }
    r
}

/// What a route does; [`ROUTES`] names each one's method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Generate,
    GenerateBatch,
    ListJobs,
    GetJob,
    Events,
    CancelJob,
    CancelActive,
    Models,
    UploadSongs,
    Health,
    Metrics,
    OpenApi,
    Video,
    Thumbnail,
    Subtitles,
    JobStream,
    AllStream,
    Retry,
    OpenSession,
    EndSession,
    Page,
    Asset,
}

/// One served route: a method and a path template whose `:name` segments match any one segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn r(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// Every route the daemon serves, in one place: the router matches requests against it, metrics
/// label requests by its templates, and the OpenAPI document describes exactly these (a test keeps
/// the two equal).
pub(crate) const ROUTES: &[Route] = &[
    r("POST", "/api/generate", Endpoint::Generate),
    r("POST", "/api/generate/batch", Endpoint::GenerateBatch),
    r("GET", "/api/jobs", Endpoint::ListJobs),
    r("GET", "/api/jobs/:id", Endpoint::GetJob),
    r("GET", "/api/jobs/:id/events", Endpoint::Events),
    r("POST", "/api/jobs/:id/cancel", Endpoint::CancelJob),
    r("POST", "/api/cancel", Endpoint::CancelActive),
    r("GET", "/api/models", Endpoint::Models),
    r("POST", "/api/upload-songs", Endpoint::UploadSongs),
    r("GET", "/healthz", Endpoint::Health),
    r("GET", "/metrics", Endpoint::Metrics),
    r("GET", "/api/openapi.json", Endpoint::OpenApi),
    r("GET", "/api/jobs/:id/video", Endpoint::Video),
    r("HEAD", "/api/jobs/:id/video", Endpoint::Video),
    r("GET", "/api/jobs/:id/thumbnail", Endpoint::Thumbnail),
    r("HEAD", "/api/jobs/:id/thumbnail", Endpoint::Thumbnail),
    r("GET", "/api/jobs/:id/subtitles", Endpoint::Subtitles),
    r("HEAD", "/api/jobs/:id/subtitles", Endpoint::Subtitles),
    r("GET", "/api/jobs/:id/events/stream", Endpoint::JobStream),
    r("GET", "/api/events/stream", Endpoint::AllStream),
    r("POST", "/api/jobs/:id/retry", Endpoint::Retry),
    r("POST", "/api/session", Endpoint::OpenSession),
    r("DELETE", "/api/session", Endpoint::EndSession),
    r("GET", "/", Endpoint::Page),
    r("GET", "/assets/:name", Endpoint::Asset),
];

/// The `:name` segments of `template` taken from `segs`, if the path matches the template.
fn match_template<'a>(template: &str, segs: &[&'a str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segs.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in parts.iter().zip(segs) {
        if p.starts_with(':') {
            params.push(*s);
        } else if p != s {
            return None;
        }
    }
    Some(params)
}

/// The template of the route(s) serving `path`, whatever the method (the metrics' `route` label).
pub(crate) fn template_of(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    ROUTES
        .iter()
        .find(|r| match_template(r.path, &segs).is_some())
        .map(|r| r.path)
}

/// The route serving `method` on `path` with its path parameters; `Err(true)` when the path exists
/// with other methods only.
pub(crate) fn find_route<'a>(
    method: &str,
    path: &'a str,
) -> Result<(&'static Route, Vec<&'a str>), bool> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut path_known = false;
    for route in ROUTES {
        if let Some(params) = match_template(route.path, &segs) {
            if route.method == method {
                return Ok((route, params));
            }
            path_known = true;
        }
    }
    Err(path_known)
}

async fn route(st: &Core, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let (route, params) = match find_route(method.as_str(), &path) {
        Ok(found) => found,
        Err(true) => {
            return Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                path,
            })
        }
        Err(false) => {
            return Err(ApiError::NoRoute {
                method: method.to_string(),
                path: req.uri().path().to_string(),
            })
        }
    };
    let id = params.first().copied().unwrap_or("");
    match route.endpoint {
        Endpoint::Generate => generate(st, req).await,
        Endpoint::GenerateBatch => generate_batch(st, req).await,
        Endpoint::ListJobs => list_jobs(st, &query).await,
        Endpoint::GetJob => get_job(st, id).await,
        Endpoint::Events => events(st, id, &query).await,
        Endpoint::CancelJob => cancel(st, id).await,
        Endpoint::CancelActive => cancel_active(st).await,
        Endpoint::Models => models(st).await,
        Endpoint::UploadSongs => upload::upload_songs(st, req).await,
        Endpoint::Health => health(st).await,
        Endpoint::Metrics => metrics(st).await,
        Endpoint::OpenApi => ok(super::openapi::document().clone()),
        Endpoint::Video => media::video(st, &req, id, &query).await,
        Endpoint::Thumbnail => media::thumbnail(st, &req, id).await,
        Endpoint::Subtitles => media::subtitles(st, &req, id, &query).await,
        Endpoint::JobStream => sse::job_stream(st, &req, id, &query).await,
        Endpoint::AllStream => sse::all_stream(st, &req, &query).await,
        Endpoint::Retry => retry(st, id).await,
        Endpoint::OpenSession => session(st, true),
        Endpoint::EndSession => session(st, false),
        Endpoint::Page => page::page(),
        Endpoint::Asset => page::assets(id),
    }
}

/// Refuses a request whose declared length is over `limit` before reading any of it.
pub fn check_declared_length(req: &Request<Incoming>, limit: u64) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => Err(ApiError::TooLarge { limit }),
        _ => Ok(()),
    }
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(req: Request<Incoming>, limit: u64) -> Result<Bytes, ApiError> {
    check_declared_length(&req, limit)?;
    let body = Limited::new(req.into_body(), limit as usize);
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "Could not read the request body: {e}"
        ))),
    }
}

/// A submission's body as JSON, or a 400 saying where it is not.
fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("The request body is not valid JSON: {e}.")))
}

async fn generate(st: &Core, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let config = st.config();
    let headers = req.headers().clone();
    let bytes = read_body(req, config.server.max_body_bytes).await?;
    let body = json_body(&bytes)?;
    let key = idempotency::key_of(&headers, "/api/generate", &body)?;
    let request = JobRequest::parse(&body, &config).map_err(|e| ApiError::BadRequest(e.0))?;
    let done = st.submit_batch(std::slice::from_ref(&request), key).await?;
    let job = done
        .jobs
        .first()
        .ok_or_else(|| ApiError::Internal("the submit created no job".into()))?;
    let mut answer = json!({
        "status": "success",
        "message": "Video generation queued.",
        "jobId": job.to_string(),
    });
    if !request.warnings.is_empty() {
        let warnings: Vec<String> = request.warnings.iter().map(|w| w.to_string()).collect();
        answer["warnings"] = json!(warnings);
    }
    Ok(submitted(answer, done.replayed))
}

/// A submit's answer; a replay under an idempotency key says so in `Idempotent-Replayed: true`.
fn submitted(answer: Value, replayed: bool) -> Response<Body> {
    let mut r = json_response(StatusCode::OK, &answer);
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// `POST /api/generate/batch` `{"jobs":[{...},...]}`: every request is validated first (a refusal
/// names the index and the field), then all are queued in one durable commit.
async fn generate_batch(st: &Core, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let config = st.config();
    let limit = config
        .server
        .max_body_bytes
        .saturating_mul(BATCH_BODY_FACTOR);
    let headers = req.headers().clone();
    let bytes = read_body(req, limit).await?;
    let body = json_body(&bytes)?;
    let key = idempotency::key_of(&headers, "/api/generate/batch", &body)?;
    let shape = || {
        ApiError::BadRequest(format!(
            "jobs is required: an array of 1 to {MAX_BATCH} job requests, as POST /api/generate takes them."
        ))
    };
    let list = body
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or_else(shape)?;
    if list.is_empty() {
        return Err(shape());
    }
    if list.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "jobs holds {} requests: at most {MAX_BATCH} per batch.",
            list.len()
        )));
    }
    let mut requests = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let request = JobRequest::parse(item, &config)
            .map_err(|e| ApiError::BadRequest(format!("jobs[{i}]: {}", e.0)))?;
        requests.push(request);
    }
    let done = st.submit_batch(&requests, key).await?;
    let ids: Vec<String> = done.jobs.iter().map(|j| j.to_string()).collect();
    let mut answer = json!({
        "status": "success",
        "message": format!("{} video generations queued.", ids.len()),
        "jobIds": ids,
    });
    let warnings: Vec<String> = requests
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.warnings.iter().map(move |w| format!("jobs[{i}]: {w}")))
        .collect();
    if !warnings.is_empty() {
        answer["warnings"] = json!(warnings);
    }
    Ok(submitted(answer, done.replayed))
}

pub(crate) fn parse_job_id(id: &str) -> Result<JobId, ApiError> {
    // An id that is not a UUID cannot name a job: MoneyPrinter answers 404 for it.
    id.parse::<JobId>()
        .ok()
        .filter(|j| *j != JobId::DAEMON)
        .ok_or(ApiError::JobNotFound)
}

async fn get_job(st: &Core, id: &str) -> Result<Response<Body>, ApiError> {
    let job = parse_job_id(id)?;
    let view = st.job_view(job).await?.ok_or(ApiError::JobNotFound)?;
    ok(json!({ "status": "success", "job": view.to_json() }))
}

/// Query parameters as (name, value) pairs, percent-decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (crate::percent::decode(k), crate::percent::decode(v))
        })
        .collect()
}

fn param_u64(
    pairs: &[(String, String)],
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some((_, raw)) = pairs.iter().rev().find(|(k, _)| k == name) else {
        return Ok(default);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "Query parameter `{name}` must be a whole number from {min} to {max}; got `{raw}`."
        ))
    };
    if raw.is_empty() || !raw.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let v: u64 = raw.parse().map_err(|_| bad())?;
    if v < min || v > max {
        return Err(bad());
    }
    Ok(v)
}

/// The query of `GET /api/jobs`: (`limit`, `state`, `before`). A bad value is a 400 naming the
/// parameter.
fn list_query(query: &str) -> Result<(u64, Option<JobState>, Option<JobId>), ApiError> {
    let pairs = query_pairs(query);
    let limit = param_u64(&pairs, "limit", 50, 1, MAX_LIMIT)?;
    let state = match pairs.iter().rev().find(|(k, _)| k == "state") {
        None => None,
        Some((_, s)) if s.is_empty() => None,
        Some((_, s)) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Query parameter `state` must be one of queued, running, completed, failed, cancelled; got `{s}`."
            ))
        })?),
    };
    let before = match pairs.iter().rev().find(|(k, _)| k == "before") {
        None => None,
        Some((_, b)) if b.is_empty() => None,
        Some((_, b)) => Some(b.parse::<JobId>().ok().filter(|j| *j != JobId::DAEMON).ok_or_else(
            || {
                ApiError::BadRequest(format!(
                    "Query parameter `before` must be a job id (the last job of the previous page); got `{b}`."
                ))
            },
        )?),
    };
    Ok((limit, state, before))
}

async fn list_jobs(st: &Core, query: &str) -> Result<Response<Body>, ApiError> {
    let (limit, state, before) = list_query(query)?;
    let before = match before {
        None => None,
        Some(j) => Some(
            st.head(j)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Query parameter `before` names job {j}, which does not exist."
                    ))
                })?
                .first_event_id,
        ),
    };
    let jobs: Vec<Value> = st
        .list_jobs(state, before, limit as usize)
        .await?
        .iter()
        .map(|v| v.to_json())
        .collect();
    ok(json!({ "status": "success", "jobs": jobs }))
}

/// The query of `GET /api/jobs/:id/events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EventsQuery {
    after: u64,
    limit: usize,
    wait: u64,
}

/// Parses `after`, `limit` and `wait` (the last of each wins; unknown names are ignored). A bad
/// value is a 400 naming the parameter and its range.
fn events_query(query: &str) -> Result<EventsQuery, ApiError> {
    let pairs = query_pairs(query);
    Ok(EventsQuery {
        after: param_u64(&pairs, "after", 0, 0, i64::MAX as u64)?,
        limit: param_u64(&pairs, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)? as usize,
        wait: param_u64(&pairs, "wait", 0, 0, MAX_WAIT)?,
    })
}

async fn events(st: &Core, id: &str, query: &str) -> Result<Response<Body>, ApiError> {
    let job = parse_job_id(id)?;
    let EventsQuery { after, limit, wait } = events_query(query)?;
    // The head is enough (state and last id): an old finished job is not read whole.
    let view = st.head(job).ok_or(ApiError::JobNotFound)?;
    if wait > 0 && view.last_event_id <= after && !view.state.is_terminal() {
        // Subscribe, then look again, so that a commit between the look and the wait is not missed.
        let mut rx = st.subscribe(job).ok_or(ApiError::JobNotFound)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut stopping = st.stopping();
        loop {
            let view = st.head(job).ok_or(ApiError::JobNotFound)?;
            if view.last_event_id > after || view.state.is_terminal() || *stopping.borrow() {
                break;
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, rx.changed()) => {
                    if let Ok(Ok(())) = changed {
                        continue;
                    }
                    // Timed out, or the job's channel closed: answer with what there is.
                }
                _ = crate::wait_true(&mut stopping) => {}
            }
            break;
        }
    }
    events_page(st, job, after, limit).await
}

/// The events answer, written straight from the stored records (`Core::events_page`: the page and
/// the state describe the same moment).
async fn events_page(
    st: &Core,
    job: JobId,
    after: u64,
    limit: usize,
) -> Result<Response<Body>, ApiError> {
    let prefix: &[u8] = br#"{"status":"success","events":"#;
    let mut page = st.events_page(Some(job), after, limit, prefix).await?;
    let mut out = std::mem::take(&mut page.body);
    page.write_tail(&mut out);
    out.push(b'}');
    let mut r = Response::new(full(out));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn cancel(st: &Core, id: &str) -> Result<Response<Body>, ApiError> {
    let job = parse_job_id(id)?;
    st.cancel(job, None).await?;
    ok(
        json!({ "status": "success", "message": "Cancellation requested.", "jobId": job.to_string() }),
    )
}

async fn retry(st: &Core, id: &str) -> Result<Response<Body>, ApiError> {
    let job = parse_job_id(id)?;
    st.retry(job, None).await?;
    ok(json!({ "status": "success", "message": "Job queued for retry.", "jobId": job.to_string() }))
}

async fn cancel_active(st: &Core) -> Result<Response<Body>, ApiError> {
    let job = st.cancel_active(None).await?;
    ok(
        json!({ "status": "success", "message": "Cancellation requested.", "jobId": job.to_string() }),
    )
}

/// `POST /api/session` gives this browser the session cookie (the guard has checked the bearer
/// token, which a cookie alone cannot pass for); `DELETE` takes it back. Only a browser needs it: for
/// what it fetches without a script (streams, `<video>`, links), which carries no header.
fn session(st: &Core, open: bool) -> Result<Response<Body>, ApiError> {
    let config = st.config();
    let token = config.server.api_token.expose();
    let (cookie, message) = match (open, token.is_empty()) {
        (true, true) => (
            None,
            "This daemon has no API token: every request is served without one.",
        ),
        (true, false) => (
            Some(super::guard::session_cookie(Some(token))),
            "This browser may now follow the event streams and fetch the media.",
        ),
        (false, _) => (
            Some(super::guard::session_cookie(None)),
            "This browser's session cookie is removed.",
        ),
    };
    let mut r = json_response(
        StatusCode::OK,
        &json!({ "status": "success", "message": message }),
    );
    if let Some(c) = cookie {
        let value = HeaderValue::try_from(c)
            .map_err(|e| ApiError::Internal(format!("session cookie: {e}")))?;
        r.headers_mut().insert(header::SET_COOKIE, value);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn models(st: &Core) -> Result<Response<Body>, ApiError> {
    let config = st.config();
    let llm = &config.llm;
    let default = crate::providers::llm::model_for(llm, None).to_string();
    // `openai` lists its server's /v1/models; every other setting (auto, ollama, offline) asks Ollama.
    let (listed, fallback_message) = if llm.provider == "openai" {
        let listed = match crate::providers::openai::OpenAi::from_config(llm) {
            Ok(client) => {
                use crate::providers::llm::Llm;
                client.list_models().await
            }
            Err(e) => Err(e),
        };
        (
            listed,
            "Could not fetch models from the OpenAI-compatible server. Is it running?",
        )
    } else {
        (
            crate::providers::ollama::list_models(llm).await,
            "Could not fetch Ollama models. Is Ollama running?",
        )
    };
    match listed {
        Ok(models) => ok(json!({ "status": "success", "models": models, "default": default })),
        Err(e) => {
            debug!(error = %e, "model list unavailable");
            ok(json!({
                "status": "error",
                "message": fallback_message,
                "models": [default],
                "default": default,
            }))
        }
    }
}

/// 200 while the daemon works (`degraded` when a media tool is missing); 503 with the reason once
/// the event log has failed.
/// `GET /metrics`: the scrape, with the state gauges read from the views now.
async fn metrics(st: &Core) -> Result<Response<Body>, ApiError> {
    let c = st.counts();
    let depth = match st.scheduler_status().await {
        Ok(s) => s.queue_depth as u64,
        Err(_) => c.queued,
    };
    let text = crate::metrics::get().render(
        [c.queued, c.running, c.completed, c.failed, c.cancelled],
        depth,
    );
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(r)
}

async fn health(st: &Core) -> Result<Response<Body>, ApiError> {
    let missing = crate::pipeline::process::check_tools(&st.config());
    let counts = st.counts();
    let fault = st.log_fault();
    let store_down = st.store_fault();
    let status = match (&fault, &store_down, missing.is_empty()) {
        (Some(_), _, _) | (None, Some(_), _) => "error",
        (None, None, true) => "ok",
        (None, None, false) => "degraded",
    };
    let mut body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": st.started().elapsed().as_secs(),
        "lastEventId": st.last_id(),
        "jobs": {
            "queued": counts.queued, "running": counts.running, "completed": counts.completed,
            "failed": counts.failed, "cancelled": counts.cancelled,
        },
        "missingTools": missing,
        "store": st.store_json().await,
    });
    let code = match (&fault, &store_down) {
        (Some(f), _) => {
            body["message"] = json!(f.restart_message());
            StatusCode::SERVICE_UNAVAILABLE
        }
        (None, Some(cause)) => {
            body["message"] = json!(format!(
                "The event store is unreachable ({cause}); the daemon waits for it."
            ));
            StatusCode::SERVICE_UNAVAILABLE
        }
        (None, None) => StatusCode::OK,
    };
    Ok(json_response(code, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let p = query_pairs("after=5&state=queued&x=a%20b+c&flag");
        assert_eq!(p[0], ("after".into(), "5".into()));
        assert_eq!(p[2], ("x".into(), "a b c".into()));
        assert_eq!(p[3], ("flag".into(), "".into()));
        assert_eq!(crate::percent::decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn numeric_parameters_are_strict() {
        let p = query_pairs("after=abc&limit=0&wait=61&ok=7&neg=-1");
        assert!(param_u64(&p, "after", 0, 0, 10)
            .unwrap_err()
            .to_string()
            .contains("`after`"));
        assert!(param_u64(&p, "limit", 200, 1, 1000).is_err());
        assert!(param_u64(&p, "wait", 0, 0, 60).is_err());
        assert!(param_u64(&p, "neg", 0, 0, 60).is_err());
        assert_eq!(param_u64(&p, "ok", 0, 0, 60).unwrap(), 7);
        assert_eq!(param_u64(&p, "missing", 3, 0, 60).unwrap(), 3);
    }

    #[test]
    fn routes_match_templates_and_tell_a_wrong_method_from_no_route() {
        let (r, p) = find_route("GET", "/api/jobs/abc/events").unwrap();
        assert_eq!(r.endpoint, Endpoint::Events);
        assert_eq!(p, vec!["abc"]);
        assert_eq!(
            find_route("GET", "/api/jobs").unwrap().0.endpoint,
            Endpoint::ListJobs
        );
        assert!(matches!(find_route("DELETE", "/api/jobs/abc"), Err(true)));
        assert!(matches!(find_route("GET", "/api/nope"), Err(false)));
        assert!(matches!(find_route("GET", "/api/jobs/a/b/c"), Err(false)));
        // No two routes share a method and a template.
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(a.method != b.method || a.path != b.path, "{a:?}");
            }
        }
    }

    mod properties {
        use super::*;
        use crate::config::Config;
        use crate::request::JobRequest;
        use proptest::prelude::*;

        const FIELDS: [&str; 17] = [
            "videoSubject",
            "aiModel",
            "voice",
            "paragraphNumber",
            "customPrompt",
            "script",
            "useMusic",
            "automateYoutubeUpload",
            "threads",
            "subtitlesPosition",
            "color",
            "subtitlesStyle",
            "aspectRatio",
            "webhookUrl",
            "zipUrl",
            "footage",
            "music",
        ];

        fn text(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
        }

        fn digits(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(prop::char::range('0', '9'), 0..max).prop_map(String::from_iter)
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                text(16).prop_map(Value::String),
                digits(4).prop_map(Value::String),
                prop::sample::select(vec![
                    "",
                    " ",
                    "true",
                    "false",
                    "2",
                    "0",
                    "101",
                    "-1",
                    "1.5",
                    "en_us_001",
                    "piper:x",
                    "center,bottom",
                    "nowhere,top",
                    "#FFFF00",
                    "yellow",
                    "#GG",
                    "9:16",
                    "7:3",
                    "karaoke",
                    "http://127.0.0.1:1/hook",
                    "ftp://x",
                    "/no/such/file.mp4",
                ])
                .prop_map(|s| Value::String(s.into())),
            ];
            leaf.prop_recursive(2, 12, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((text(6), inner), 0..3)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        /// A body: known fields (and a stranger) with values of every shape.
        fn body() -> impl Strategy<Value = Value> {
            let name = prop_oneof![
                8 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
                1 => text(10),
            ];
            (
                prop::collection::vec((name, json_value()), 0..8),
                prop::option::of(text(30)),
            )
                .prop_map(|(fields, subject)| {
                    let mut m: serde_json::Map<String, Value> = fields.into_iter().collect();
                    if let Some(s) = subject {
                        m.insert("videoSubject".into(), Value::String(s));
                    }
                    Value::Object(m)
                })
        }

        /// A query built from the parameters' names and values of every kind.
        fn query() -> impl Strategy<Value = String> {
            let name =
                prop::sample::select(vec!["after", "limit", "wait", "state", "x", "AFTER", ""]);
            let value = prop_oneof![
                digits(4),
                digits(25),
                text(6),
                prop::sample::select(vec![
                    "",
                    "-1",
                    "0",
                    "1000",
                    "1001",
                    "60",
                    "61",
                    "+5",
                    "%35",
                    "queued",
                    "9223372036854775808"
                ])
                .prop_map(str::to_owned),
            ];
            let pair = (name, value, any::<bool>()).prop_map(|(n, v, eq)| {
                if eq {
                    format!("{n}={v}")
                } else {
                    n.to_owned()
                }
            });
            prop::collection::vec(pair, 0..6).prop_map(|p| p.join("&"))
        }

        /// The reference: the value of `name` (the last one given) if it is valid.
        fn expected(query: &str, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ()> {
            let pairs = query_pairs(query);
            match pairs.iter().rev().find(|(k, _)| k == name) {
                None => Ok(default),
                Some((_, raw)) => {
                    let ok = !raw.is_empty() && raw.bytes().all(|c| c.is_ascii_digit());
                    match raw.parse::<u64>() {
                        Ok(v) if ok && (min..=max).contains(&v) => Ok(v),
                        _ => Err(()),
                    }
                }
            }
        }

        fn check_events_query(q: &str) -> Result<(), TestCaseError> {
            let want = [
                ("after", expected(q, "after", 0, 0, i64::MAX as u64)),
                ("limit", expected(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)),
                ("wait", expected(q, "wait", 0, 0, MAX_WAIT)),
            ];
            match events_query(q) {
                Ok(got) => {
                    prop_assert_eq!(
                        (Ok(got.after), Ok(got.limit as u64), Ok(got.wait)),
                        (want[0].1, want[1].1, want[2].1),
                        "query {:?}",
                        q
                    );
                }
                Err(e) => {
                    prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                    // The first bad parameter is the one named.
                    let (name, _) = want
                        .iter()
                        .find(|(_, w)| w.is_err())
                        .copied()
                        .unwrap_or(("none", Ok(0)));
                    let msg = e.to_string();
                    prop_assert!(msg.contains(&format!("`{name}`")), "query {:?}: {}", q, msg);
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Any query string gives the events page's parameters or a 400 naming the first bad
            /// one; a valid value is taken as given, the last of a repeated name wins.
            #[test]
            fn events_queries_give_a_value_or_a_400_naming_the_parameter(q in query()) {
                check_events_query(&q)?;
            }

            #[test]
            fn arbitrary_query_strings_never_panic(q in text(40)) {
                check_events_query(&q)?;
                if let Err(e) = list_query(&q) {
                    prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                    let msg = e.to_string();
                    prop_assert!(msg.contains("`limit`") || msg.contains("`state`") || msg.contains("`before`"), "{}", msg);
                }
            }

            #[test]
            fn list_queries_give_a_value_or_a_400_naming_the_parameter(q in query()) {
                match list_query(&q) {
                    Ok((limit, _, _)) => prop_assert_eq!(Ok(limit), expected(&q, "limit", 50, 1, MAX_LIMIT)),
                    Err(e) => {
                        let msg = e.to_string();
                        let named = if expected(&q, "limit", 50, 1, MAX_LIMIT).is_err() { "`limit`" } else { "`state`" };
                        prop_assert!(msg.contains(named), "query {:?}: {}", q, msg);
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

            /// Arbitrary bytes as a submission body: JSON or a 400 saying it is not.
            #[test]
            fn arbitrary_bodies_are_json_or_a_400(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                if let Err(e) = json_body(&bytes) {
                    prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                    prop_assert!(e.to_string().starts_with("The request body is not valid JSON"));
                }
            }

            /// Any JSON body is a request or a refusal that names the field it is about (the body
            /// itself when it is not an object); never a panic.
            #[test]
            fn submissions_are_accepted_or_refused_naming_the_field(v in prop_oneof![1 => json_value(), 6 => body()]) {
                let cfg = Config::default();
                let bytes = serde_json::to_vec(&v).unwrap();
                let body = json_body(&bytes).unwrap();
                match JobRequest::parse(&body, &cfg) {
                    Ok(r) => {
                        prop_assert!(!r.video_subject.trim().is_empty());
                        prop_assert!(JobRequest::from_json(&r.to_json()).is_ok());
                    }
                    Err(e) => {
                        let msg = e.0;
                        match body.as_object() {
                            None => prop_assert_eq!(msg.as_str(), "The request body must be a JSON object."),
                            Some(obj) => {
                                let named = FIELDS
                                    .iter()
                                    .any(|f| msg.contains(f) && (obj.contains_key(*f) || *f == "videoSubject"));
                                prop_assert!(named, "body {} refused without naming a field: {}", body, msg);
                            }
                        }
                    }
                }
            }
        }
    }
}
