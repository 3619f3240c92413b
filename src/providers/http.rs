//! The providers' HTTP client: JSON requests, form posts, redirects, streamed downloads with a size cap,
//! a deadline on every request.
//!
//! Stack: hyper 1 with hyper-util's pooled legacy `Client` and hyper-rustls (rustls with the `ring`
//! crypto provider and the compiled-in webpki root set). It stays on the hyper stack the daemon already
//! serves with (no second HTTP implementation in the binary), TLS is pure Rust (no OpenSSL, no aws-lc
//! C/cmake build), and the roots ship with the binary, so a minimal systemd sandbox without
//! `/etc/ssl` still reaches Pexels, TikTok and Google.
//!
//! Invariants: an [`HttpError`] never carries a query string, a header value or a request body (that is
//! where keys live); every collected answer is scrubbed of the installed secrets (every secret the
//! config holds, see `secret::install`) and a body quoted in an error also of the request's sensitive
//! header values, before it is cut short; every request ends by its deadline, body included.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Largest answer [`HttpClient::send`] collects in memory (downloads stream instead).
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid request to {url}: {reason}")]
    BadRequest { url: String, reason: String },
    #[error("cannot set up TLS: {reason}")]
    Tls { reason: String },
    /// Nothing listens at `origin` (`scheme://host:port`).
    #[error("connection refused at {origin}")]
    ConnectionRefused { origin: String },
    #[error("connection to {origin} failed: {reason}")]
    Connect { origin: String, reason: String },
    #[error("{url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    /// A non-success status. `body` is a short, scrubbed excerpt.
    #[error("{url} answered HTTP {status}{}", excerpt(body))]
    Status {
        url: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("{url} answered something unexpected: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url} sent more than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn excerpt(body: &str) -> String {
    if body.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", body.trim())
    }
}

impl HttpError {
    /// Worth another attempt: timeouts, connection failures, 408, 429 and 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            HttpError::ConnectionRefused { .. }
            | HttpError::Connect { .. }
            | HttpError::Timeout { .. } => true,
            HttpError::Status { status, .. } => {
                *status == 408 || *status == 429 || (500..=599).contains(status)
            }
            _ => false,
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The (scrubbed, shortened) body of a non-success answer.
    pub fn body(&self) -> Option<&str> {
        match self {
            HttpError::Status { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// One request. Build with [`HttpRequest::get`] / [`HttpRequest::post`] / [`HttpRequest::put`] and the
/// chained setters; the client reports problems (a bad header value) when it is sent.
#[derive(Clone)]
pub struct HttpRequest {
    method: Method,
    url: String,
    headers: Vec<(&'static str, String, bool)>,
    body: Bytes,
    timeout: Duration,
    follow_redirects: bool,
    max_body: usize,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpRequest {
    pub fn new(method: Method, url: impl Into<String>) -> HttpRequest {
        let follow_redirects = method == Method::GET;
        HttpRequest {
            method,
            url: url.into(),
            headers: vec![(
                "user-agent",
                concat!("reelsmith/", env!("CARGO_PKG_VERSION")).into(),
                false,
            )],
            body: Bytes::new(),
            timeout: Duration::from_secs(30),
            follow_redirects,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest::new(Method::GET, url)
    }

    pub fn post(url: impl Into<String>) -> HttpRequest {
        HttpRequest::new(Method::POST, url)
    }

    pub fn put(url: impl Into<String>) -> HttpRequest {
        HttpRequest::new(Method::PUT, url)
    }

    /// Sets (replaces) a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> HttpRequest {
        self.headers
            .retain(|(n, _, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.into(), false));
        self
    }

    /// A header whose value is a secret: marked sensitive for hyper, never followed across origins on
    /// a redirect, scrubbed from any body excerpt an error quotes.
    pub fn secret_header(mut self, name: &'static str, value: impl Into<String>) -> HttpRequest {
        self.headers
            .retain(|(n, _, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.into(), true));
        self
    }

    pub fn json(self, value: &Value) -> HttpRequest {
        self.body_bytes("application/json", Bytes::from(value.to_string()))
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(self, pairs: &[(&str, &str)]) -> HttpRequest {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.body_bytes("application/x-www-form-urlencoded", Bytes::from(body))
    }

    pub fn body_bytes(self, content_type: &str, body: Bytes) -> HttpRequest {
        let mut r = self.header("content-type", content_type);
        r.body = body;
        r
    }

    /// Deadline of the whole exchange, body included.
    pub fn timeout(mut self, timeout: Duration) -> HttpRequest {
        self.timeout = timeout;
        self
    }

    pub fn follow_redirects(mut self, follow: bool) -> HttpRequest {
        self.follow_redirects = follow;
        self
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (_, v, secret) in &self.headers {
            if *secret {
                // Scrub the whole value and its token part (`Bearer <token>`, `sessionid=<id>`).
                for part in std::iter::once(v.as_str()).chain(v.split([' ', '='])) {
                    if part.len() >= 4 {
                        out = out.replace(part, "[redacted]");
                    }
                }
            }
        }
        out
    }
}

/// A collected answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The URL that answered (after redirects), without its query.
    pub url: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Result<Value, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            url: self.url.clone(),
            reason: format!("not JSON ({e})"),
        })
    }
}

/// A pooled HTTP/1.1 client for `http://` and `https://`. Cheap to clone (the pool is shared).
/// Make one per runtime: pooled connections are driven by tasks of the runtime that opened them.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    pub fn new() -> Result<HttpClient, HttpError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| HttpError::Tls {
                reason: e.to_string(),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(HttpClient { client })
    }

    /// Sends the request and collects the answer, whatever its status.
    pub async fn send_raw(&self, req: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let deadline = req.timeout;
        let fut = async {
            let (resp, url) = self.exchange(req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = scrub_body(collect_capped(resp, &url, req.max_body).await?);
            Ok(HttpResponse {
                status,
                headers,
                body,
                url,
            })
        };
        with_deadline(&req.url, deadline, fut).await
    }

    /// Sends the request; any status outside 2xx is an [`HttpError::Status`].
    pub async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let resp = self.send_raw(req).await?;
        if (200..300).contains(&resp.status) {
            Ok(resp)
        } else {
            Err(status_error(req, &resp))
        }
    }

    /// Sends the request and decodes a JSON answer.
    pub async fn json(&self, req: &HttpRequest) -> Result<Value, HttpError> {
        self.send(req).await?.json()
    }

    /// Streams the answer into `dest` (created or truncated), refusing more than `max_bytes`.
    /// On any failure the partial file is removed. Returns the bytes written.
    pub async fn download(
        &self,
        req: &HttpRequest,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, HttpError> {
        let fut = async {
            let (resp, url) = self.exchange(req).await?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let headers = resp.headers().clone();
                let body = collect_capped(resp, &url, 4096).await.unwrap_or_default();
                return Err(status_error(
                    req,
                    &HttpResponse {
                        status,
                        headers,
                        body,
                        url,
                    },
                ));
            }
            let announced = resp
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|n| n > max_bytes) {
                return Err(HttpError::TooLarge {
                    url,
                    limit: max_bytes,
                });
            }
            let io = |source| HttpError::Io {
                path: dest.to_owned(),
                source,
            };
            let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
            let mut body = resp.into_body();
            let mut written: u64 = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| HttpError::Connect {
                    origin: origin_of(&url),
                    reason: root_cause(&e),
                })?;
                if let Ok(data) = frame.into_data() {
                    written += data.len() as u64;
                    if written > max_bytes {
                        return Err(HttpError::TooLarge {
                            url,
                            limit: max_bytes,
                        });
                    }
                    file.write_all(&data).await.map_err(io)?;
                }
            }
            file.flush().await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            Ok(written)
        };
        let result = with_deadline(&req.url, req.timeout, fut).await;
        if result.is_err() {
            // The file may be partly written; nothing else refers to it.
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    /// One exchange, following redirects when the request allows it. Returns the answer and the
    /// redacted URL that gave it.
    async fn exchange(
        &self,
        req: &HttpRequest,
    ) -> Result<(Response<hyper::body::Incoming>, String), HttpError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        let mut send_secrets = true;
        for _ in 0..=MAX_REDIRECTS {
            let shown = redact_url(&url);
            let uri: hyper::Uri =
                url.parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| HttpError::BadRequest {
                        url: shown.clone(),
                        reason: e.to_string(),
                    })?;
            if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
                return Err(HttpError::BadRequest {
                    url: shown,
                    reason: "only http:// and https:// URLs are supported".into(),
                });
            }
            let mut builder = Request::builder().method(method.clone()).uri(uri);
            for (name, value, secret) in &req.headers {
                if *secret && !send_secrets {
                    continue;
                }
                let mut v = HeaderValue::from_str(value).map_err(|_| HttpError::BadRequest {
                    url: shown.clone(),
                    reason: format!("header {name} has a value that is not allowed in HTTP"),
                })?;
                v.set_sensitive(*secret);
                builder = builder.header(HeaderName::from_static(name), v);
            }
            let request =
                builder
                    .body(Full::new(body.clone()))
                    .map_err(|e| HttpError::BadRequest {
                        url: shown.clone(),
                        reason: e.to_string(),
                    })?;
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| connect_error(&shown, &e))?;
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match (req.follow_redirects, status, location) {
                (true, 301 | 302 | 303 | 307 | 308, Some(loc)) => {
                    let next = resolve(&url, &loc);
                    if origin_of(&next) != origin_of(&url) {
                        send_secrets = false;
                    }
                    if status == 303 {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                    url = next;
                }
                _ => return Ok((resp, shown)),
            }
        }
        Err(HttpError::BadRequest {
            url: redact_url(&req.url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

async fn with_deadline<T>(
    url: &str,
    deadline: Duration,
    fut: impl std::future::Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| HttpError::Timeout {
            url: redact_url(url),
            secs: deadline
                .as_secs()
                .max(u64::from(deadline.subsec_nanos() > 0)),
        })?
}

async fn collect_capped(
    resp: Response<hyper::body::Incoming>,
    url: &str,
    max: usize,
) -> Result<Bytes, HttpError> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Connect {
            origin: origin_of(url),
            reason: root_cause(&e),
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(HttpError::TooLarge {
                    url: url.to_string(),
                    limit: max as u64,
                });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// `body` without the installed secrets, when it is text that holds one.
fn scrub_body(body: Bytes) -> Bytes {
    let redactor = crate::secret::installed();
    match std::str::from_utf8(&body).map(|text| redactor.scrub(text)) {
        Ok(std::borrow::Cow::Owned(clean)) => Bytes::from(clean),
        _ => body,
    }
}

fn status_error(req: &HttpRequest, resp: &HttpResponse) -> HttpError {
    // Scrubbed before it is cut, so that no part of a secret survives at the cut.
    let text = String::from_utf8_lossy(&resp.body);
    let clean = req.scrub(&crate::secret::installed().scrub(&text));
    let short: String = clean.chars().take(300).collect();
    HttpError::Status {
        url: resp.url.clone(),
        status: resp.status,
        body: short,
        retry_after: resp
            .header("retry-after")
            .and_then(|v| parse_retry_after(v, SystemTime::now())),
    }
}

fn connect_error(url: &str, e: &hyper_util::client::legacy::Error) -> HttpError {
    let origin = origin_of(url);
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return HttpError::ConnectionRefused { origin };
            }
        }
        cur = err.source();
    }
    HttpError::Connect {
        origin,
        reason: root_cause(e),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `Retry-After` as a delay: either delta-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The URL without query, fragment or user info: safe to show.
pub fn redact_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let base = &url[..cut];
    match (base.find("://"), base.find('@')) {
        (Some(s), Some(at)) if at > s && !base[s + 3..at].contains('/') => {
            format!("{}{}", &base[..s + 3], &base[at + 1..])
        }
        _ => base.to_string(),
    }
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    let url = redact_url(url);
    match url.find("://") {
        Some(s) => {
            let rest = &url[s + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            format!("{}{}", &url[..s + 3], &rest[..end])
        }
        None => url,
    }
}

fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{}", origin_of(base), location)
    } else {
        let cut = base.find(['?', '#']).unwrap_or(base.len());
        let dir = base[..cut].rsplit_once('/').map(|(d, _)| d).unwrap_or(base);
        format!("{dir}/{location}")
    }
}

pub use crate::percent::encode as urlencode;

/// `base` joined with `path` without doubling or dropping the slash.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(20));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(20))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(20));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn urls_lose_their_query_and_credentials() {
        assert_eq!(
            redact_url("https://api.x/v?key=abc&q=1#f"),
            "https://api.x/v"
        );
        assert_eq!(redact_url("https://user:pw@host:8/p?x"), "https://host:8/p");
        assert_eq!(
            origin_of("http://127.0.0.1:11434/api/chat"),
            "http://127.0.0.1:11434"
        );
        assert_eq!(resolve("http://a/b/c?x", "/d"), "http://a/d");
        assert_eq!(resolve("http://a/b/c?x", "e"), "http://a/b/e");
        assert_eq!(resolve("https://a/b", "//cdn/f"), "https://cdn/f");
        assert_eq!(urlencode("a b&c=é"), "a%20b%26c%3D%C3%A9");
    }

    #[test]
    fn retryable_classification() {
        let status = |s| HttpError::Status {
            url: "u".into(),
            status: s,
            body: String::new(),
            retry_after: None,
        };
        assert!(status(429).retryable());
        assert!(status(503).retryable());
        assert!(!status(401).retryable());
        assert!(!status(404).retryable());
        assert!(HttpError::Timeout {
            url: "u".into(),
            secs: 1
        }
        .retryable());
        assert!(HttpError::ConnectionRefused { origin: "o".into() }.retryable());
        assert!(!HttpError::TooLarge {
            url: "u".into(),
            limit: 1
        }
        .retryable());
    }
}
