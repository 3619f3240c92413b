//! A small HTTP/1 client on hyper-util for the providers: plain JSON requests with a timeout.
//! (TLS endpoints come with the online-providers work; local services such as Ollama speak plain HTTP.)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("connection to {url} failed: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered something that is not JSON: {reason}")]
    Decode { url: String, reason: String },
}

/// Sends `body` (or nothing) and decodes a JSON answer.
pub async fn json(
    method: Method,
    url: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, HttpError> {
    let uri: hyper::Uri =
        url.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::BadUrl {
                url: url.into(),
                reason: e.to_string(),
            })?;
    if uri.scheme_str() != Some("http") {
        return Err(HttpError::BadUrl {
            url: url.into(),
            reason: "only http:// URLs are supported here".into(),
        });
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| HttpError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
    let secs = timeout.as_secs();
    let fut = async {
        let resp = client.request(req).await.map_err(|e| HttpError::Connect {
            url: url.into(),
            reason: root_cause(&e),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Connect {
                url: url.into(),
                reason: e.to_string(),
            })?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(HttpError::Status {
                url: url.into(),
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Decode {
            url: url.into(),
            reason: e.to_string(),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.into(),
            secs,
        })?
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
