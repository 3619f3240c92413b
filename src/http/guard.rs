//! Checks every request passes before it is routed, for an API that any web page the user opens can
//! reach on 127.0.0.1:
//! - **Host** (DNS rebinding): while the daemon listens on a loopback address, the request's host
//!   must be a loopback name or address (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`), else 421.
//! - **Origin** (cross-site requests): a request that can change state (anything but GET and HEAD),
//!   and a preflight, from a page whose origin is not in `server.cors_origins` gets 403 naming the
//!   origin and the key. Clients that send no `Origin` (curl, scripts) are not browsers' pages.
//! - **Token**: when `server.api_token` is set, every `/api/` request but `OPTIONS` carries
//!   `Authorization: Bearer <token>`, compared in constant time and never logged, else 401. A GET or
//!   HEAD may carry the `reelsmith_session` cookie instead, as the web page's streams, video and
//!   links do (a browser adds no header to those). `POST /api/session` (with the header) sets it:
//!   `HttpOnly`, so no script (of this page or of another port of the same host) reads it, and a
//!   digest of the token rather than the token, so it opens reads but never passes as a bearer.
//! - **Content type**: job submissions are JSON (`application/json` or `*/*+json`), else 415: a
//!   form post or a `no-cors` fetch (which need no preflight) cannot queue a job.
//!
//! Answers to an allowed origin carry `Access-Control-Allow-Origin` (the origin itself, with
//! `Vary: Origin`; `*` when `*` is allowed).

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request};

use super::error::ApiError;
use crate::config::Config;

/// Runs the checks in order (host, origin, token, content type).
pub(crate) fn check<B>(cfg: &Config, req: &Request<B>) -> Result<(), ApiError> {
    check_host(cfg, req)?;
    check_origin(cfg, req)?;
    check_token(cfg, req)?;
    check_content_type(req)
}

fn check_host<B>(cfg: &Config, req: &Request<B>) -> Result<(), ApiError> {
    let listen = cfg.listen_addr();
    if !listen.ip().is_loopback() {
        return Ok(());
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
    match host {
        // HTTP/1.0 without a Host: not a browser (they always send one).
        None => Ok(()),
        Some(h) if is_loopback_host(&h) => Ok(()),
        Some(h) => Err(ApiError::Misdirected(format!(
            "Host `{}` is not a loopback name or address: this daemon listens on {} for local clients only (DNS rebinding protection). Call it as localhost or 127.0.0.1.",
            clip(&h),
            listen.ip(),
        ))),
    }
}

/// Whether `host` (a Host header: name or address, with an optional port) names this machine's
/// loopback interface.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || is_colon_port(port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok_and(|a| {
                    a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                });
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_digits(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_loopback())
}

/// A port number: one to five digits.
fn is_digits(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// `:` and a port number.
fn is_colon_port(s: &str) -> bool {
    s.strip_prefix(':').is_some_and(is_digits)
}

/// Whether `origin` is allowed by `patterns` (see `server.cors_origins`).
pub(crate) fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    let origin = origin.trim();
    patterns.iter().any(|p| {
        let p = p.trim();
        if p == "*" || p.eq_ignore_ascii_case(origin) {
            return true;
        }
        let Some(prefix) = p.strip_suffix(":*") else {
            return false;
        };
        match (origin.get(..prefix.len()), origin.get(prefix.len()..)) {
            (Some(head), Some(rest)) => {
                head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || is_colon_port(rest))
            }
            _ => false,
        }
    })
}

/// The request's `Origin`, as text.
fn origin_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

fn check_origin<B>(cfg: &Config, req: &Request<B>) -> Result<(), ApiError> {
    if !changes_state(req.method()) {
        return Ok(());
    }
    let Some(origin) = origin_of(req.headers()) else {
        return Ok(());
    };
    let allowed = cfg.allowed_origins();
    if origin_allowed(&allowed, &origin) {
        return Ok(());
    }
    let key = if cfg.server.cors_origin.trim().is_empty() {
        "server.cors_origins"
    } else {
        "server.cors_origin"
    };
    Err(ApiError::Forbidden(format!(
        "Origin `{}` may not call this API: a web page may only if its origin is listed in {key} (now: {}). Add it there to allow it.",
        clip(&origin),
        if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        }
    )))
}

/// The cookie `POST /api/session` sets for what a browser fetches without a script: `EventSource`
/// streams, `<video>`, thumbnails and download links.
pub(crate) const SESSION_COOKIE: &str = "reelsmith_session";

/// The session cookie's value for `token`: HMAC-SHA256 keyed by the token, in hex. It proves the
/// browser was given the token without being it.
pub(crate) fn session_value(token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    let tag = ring::hmac::sign(&key, b"reelsmith session cookie v1");
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Set-Cookie` value that gives a browser the session cookie for `token` (or, for `None`,
/// removes it). Scoped to the API, kept from scripts, sent only with same-site requests; it lasts
/// the browser's session, and the page asks for it again at each load.
pub(crate) fn session_cookie(token: Option<&str>) -> String {
    let attrs = "Path=/api/; HttpOnly; SameSite=Strict";
    match token {
        Some(t) => format!("{SESSION_COOKIE}={}; {attrs}", session_value(t)),
        None => format!("{SESSION_COOKIE}=; {attrs}; Max-Age=0"),
    }
}

fn check_token<B>(cfg: &Config, req: &Request<B>) -> Result<(), ApiError> {
    let token = cfg.server.api_token.expose();
    if token.is_empty() || req.method() == Method::OPTIONS || !req.uri().path().starts_with("/api/")
    {
        return Ok(());
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, value) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
        });
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "The bearer token is not this daemon's server.api_token.".into(),
        )),
        // The cookie opens reads only: a request that changes state needs the header, which no
        // other page can make a browser send (a cookie rides along with any same-site request).
        None if !changes_state(req.method()) => match session_cookie_of(req.headers()) {
            Some(c) if constant_time_eq(c.as_bytes(), session_value(token).as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized(format!(
                "The `{SESSION_COOKIE}` cookie was not made from this daemon's server.api_token: enter the token again."
            ))),
            None => Err(no_token()),
        },
        None => Err(no_token()),
    }
}

fn no_token() -> ApiError {
    ApiError::Unauthorized(
        "This API needs a bearer token: send `Authorization: Bearer <server.api_token>`.".into(),
    )
}

/// The session cookie's value from any `Cookie` header of the request.
fn session_cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name.trim() == SESSION_COOKIE).then(|| value.trim())
        })
}

/// Compares SHA-256 digests byte by byte without stopping early: the time taken says nothing about
/// where the values differ, nor their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// Paths whose POST body is a job request (JSON only).
const JSON_ONLY: [&str; 2] = ["/api/generate", "/api/generate/batch"];

fn check_content_type<B>(req: &Request<B>) -> Result<(), ApiError> {
    let path = req.uri().path().trim_end_matches('/');
    if req.method() != Method::POST || !JSON_ONLY.contains(&path) {
        return Ok(());
    }
    let given = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = given.as_deref().is_some_and(|ct| {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == "application/json" || (media.contains('/') && media.ends_with("+json"))
    });
    if is_json {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "POST {path} takes a JSON body: send `Content-Type: application/json` (got {}).",
        match &given {
            Some(ct) => format!("`{}`", clip(ct)),
            None => "none".into(),
        }
    )))
}

/// Adds `Access-Control-Allow-Origin` for an allowed origin (and `Vary: Origin` when it depends on
/// it). A config of one plain origin sends it always, as the former `cors_origin` did.
pub(crate) fn cors_headers(cfg: &Config, request_origin: Option<&str>, out: &mut HeaderMap) {
    let allowed = cfg.allowed_origins();
    let value = if allowed.iter().any(|p| p.trim() == "*") {
        Some("*".to_string())
    } else {
        out.append(header::VARY, HeaderValue::from_static("Origin"));
        match request_origin {
            Some(o) if origin_allowed(&allowed, o) => Some(o.trim().to_string()),
            _ => match allowed.as_slice() {
                [one] if !one.ends_with(":*") && one != "null" => Some(one.clone()),
                _ => None,
            },
        }
    };
    if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

/// The request's origin, for [`cors_headers`] after the request was consumed.
pub(crate) fn request_origin<B>(req: &Request<B>) -> Option<String> {
    origin_of(req.headers())
}

/// A value quoted in a message, cut to a readable length.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(100).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

/// A warning for the log when the API is reachable from other machines without a token.
pub(crate) fn exposure_warning(cfg: &Config, bound: std::net::SocketAddr) -> Option<String> {
    if bound.ip().is_loopback() || !cfg.server.api_token.expose().is_empty() {
        return None;
    }
    Some(format!(
        "listening on {bound}, which is not a loopback address, and the API has no authentication: anyone who can reach it can queue jobs and replace the song library. Set server.api_token (or REELSMITH_API_TOKEN), or listen on 127.0.0.1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LocalHost.:8080",
            "studio.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "10.0.0.1:8080",
            "[::2]:8080",
            "[::1]x",
            "localhost:80a",
            "localhost:",
            "",
            "0.0.0.0:8080",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn origin_patterns() {
        let p: Vec<String> = ["http://localhost:*", "null", "https://studio.example"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for ok in [
            "http://localhost:5500",
            "http://localhost",
            "HTTP://LOCALHOST:3000",
            "null",
            "https://studio.example",
        ] {
            assert!(origin_allowed(&p, ok), "{ok}");
        }
        for bad in [
            "http://localhost.evil.example",
            "http://localhost:5500.evil.example",
            "https://localhost:5500",
            "http://evil.example",
            "https://studio.example:444",
            "",
        ] {
            assert!(!origin_allowed(&p, bad), "{bad}");
        }
        assert!(origin_allowed(&["*".to_string()], "http://anything"));
        assert!(!origin_allowed(&[], "null"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokem"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
