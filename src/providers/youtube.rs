//! YouTube upload: an access token from the OAuth refresh-token flow (`POST token_url` with
//! `grant_type=refresh_token`), then the resumable upload protocol of the Data API v3: a `POST
//! upload_url?uploadType=resumable&part=snippet,status` with the metadata opens a session (its URL in
//! `Location`), and `PUT`s of `chunk_bytes` with `Content-Range` send the file; `308 Resume Incomplete`
//! with `Range: bytes=0-N` says how much arrived. After a failed chunk the session is asked where it
//! stands (`Content-Range: bytes */size`) and the upload resumes from there.
//!
//! Without credentials, [`YouTube::from_config`] is [`ProviderError::NotConfigured`]: the job warns
//! and completes. Tokens and the client secret never appear in errors or `Debug` output.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use super::llm::Metadata;
use super::retry::{RetryPolicy, Retryable};
use super::{ProviderError, Secret, YOUTUBE};
use crate::config::YoutubeConfig;

#[derive(Clone, Debug)]
pub struct YouTubeSettings {
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    pub token_url: String,
    pub upload_url: String,
    pub privacy_status: String,
    pub category_id: String,
    /// Bytes per `PUT` (YouTube wants multiples of 256 KiB, except the last).
    pub chunk_bytes: u64,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl YouTubeSettings {
    /// Credentials from the keys, else from `client_secrets_file` / `refresh_token_file`.
    pub fn from_config(cfg: &YoutubeConfig) -> Result<YouTubeSettings, ProviderError> {
        let (client_id, client_secret, refresh_token) = credentials(cfg)?;
        let missing: Vec<&str> = [
            ("client id", client_id.is_empty()),
            ("client secret", client_secret.is_empty()),
            ("refresh token", refresh_token.is_empty()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            return Err(ProviderError::NotConfigured {
                service: YOUTUBE.name,
                hint: format!(
                    "no OAuth {}; set youtube.client_id/client_secret (or client_secrets_file) and \
                     youtube.refresh_token (or refresh_token_file)",
                    missing.join(", ")
                ),
            });
        }
        Ok(YouTubeSettings {
            client_id,
            client_secret,
            refresh_token,
            token_url: cfg.token_url.clone(),
            upload_url: cfg.upload_url.clone(),
            privacy_status: cfg.privacy_status.to_string(),
            category_id: cfg.category_id.clone(),
            chunk_bytes: cfg.chunk_bytes.max(1),
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
            retry: RetryPolicy::for_provider(
                cfg.retries,
                Duration::from_secs(cfg.timeout_secs.max(1)),
            ),
        })
    }
}

/// The OAuth client id and secret and the refresh token: from the keys, else from
/// `client_secrets_file` / `refresh_token_file`; empty when neither sets them.
fn credentials(cfg: &YoutubeConfig) -> Result<(String, Secret, Secret), ProviderError> {
    let mut client_id = cfg.client_id.trim().to_string();
    let mut client_secret = cfg.client_secret.clone();
    if (client_id.is_empty() || client_secret.is_empty()) && !cfg.client_secrets_file.is_empty() {
        let v = read_json(&cfg.client_secrets_file)?;
        let app = v.get("installed").or_else(|| v.get("web")).unwrap_or(&v);
        let field = |k: &str| app.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if client_id.is_empty() {
            client_id = field("client_id");
        }
        if client_secret.is_empty() {
            client_secret = Secret::from(field("client_secret"));
        }
    }
    let mut refresh_token = cfg.refresh_token.clone();
    if refresh_token.is_empty() && !cfg.refresh_token_file.is_empty() {
        let text = std::fs::read_to_string(&cfg.refresh_token_file).map_err(|source| {
            ProviderError::Io {
                service: YOUTUBE.name,
                path: cfg.refresh_token_file.clone().into(),
                source,
            }
        })?;
        refresh_token = match serde_json::from_str::<Value>(&text) {
            Ok(v) => Secret::from(
                v.get("refresh_token")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            Err(_) => Secret::from(text.trim().to_string()),
        };
    }
    Ok((client_id, client_secret, refresh_token))
}

/// The client secret and refresh token the YouTube keys or files hold (to hide them); none when
/// the files cannot be read (then no upload can use them either).
pub fn secrets(cfg: &YoutubeConfig) -> Vec<Secret> {
    credentials(cfg)
        .map(|(_, secret, token)| vec![secret, token])
        .unwrap_or_default()
}

fn read_json(path: &str) -> Result<Value, ProviderError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProviderError::Io {
        service: YOUTUBE.name,
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ProviderError::NotConfigured {
        service: YOUTUBE.name,
        hint: format!("{path} is not JSON ({e})"),
    })
}

/// A finished upload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Uploaded {
    pub video_id: String,
    pub url: String,
}

#[derive(Clone, Debug)]
pub struct YouTube {
    http: HttpClient,
    s: YouTubeSettings,
}

impl YouTube {
    pub fn new(settings: YouTubeSettings) -> Result<YouTube, ProviderError> {
        Ok(YouTube {
            http: HttpClient::new().map_err(|e| ProviderError::http(&YOUTUBE, e))?,
            s: settings,
        })
    }

    pub fn from_config(cfg: &YoutubeConfig) -> Result<YouTube, ProviderError> {
        YouTube::new(YouTubeSettings::from_config(cfg)?)
    }

    /// A fresh access token from the refresh token.
    pub async fn access_token(&self) -> Result<Secret, ProviderError> {
        let req = HttpRequest::post(self.s.token_url.clone())
            .form(&[
                ("client_id", &self.s.client_id),
                ("client_secret", self.s.client_secret.expose()),
                ("refresh_token", self.s.refresh_token.expose()),
                ("grant_type", "refresh_token"),
            ])
            .timeout(self.s.timeout.min(Duration::from_secs(60)));
        let v = match self.http.json(&req).await {
            Ok(v) => v,
            Err(
                e @ HttpError::Status {
                    status: 400 | 401, ..
                },
            ) => {
                let body = e.body().unwrap_or("");
                let reason = serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| format!("HTTP {}", e.status().unwrap_or(0)));
                let reason = self
                    .s
                    .refresh_token
                    .scrub(&self.s.client_secret.scrub(&reason));
                return Err(ProviderError::BadAnswer {
                    service: YOUTUBE.name,
                    message: format!(
                        "the OAuth server refused the refresh token ({reason}). {}",
                        YOUTUBE.auth
                    ),
                });
            }
            Err(e) => return Err(ProviderError::http(&YOUTUBE, e)),
        };
        match v.get("access_token").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => Ok(Secret::from(t.to_string())),
            _ => Err(ProviderError::bad_answer(
                YOUTUBE.name,
                "the OAuth answer has no access_token",
            )),
        }
    }

    /// Uploads `video` (MP4) with `meta`; resumes after failed chunks within the retry policy.
    pub async fn upload(&self, video: &Path, meta: &Metadata) -> Result<Uploaded, ProviderError> {
        let io = |source| ProviderError::Io {
            service: YOUTUBE.name,
            path: video.to_owned(),
            source,
        };
        let size = tokio::fs::metadata(video).await.map_err(io)?.len();
        if size == 0 {
            return Err(ProviderError::Io {
                service: YOUTUBE.name,
                path: video.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the video is empty"),
            });
        }
        let token = self.access_token().await?;
        let bearer = format!("Bearer {}", token.expose());
        let sep = if self.s.upload_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let open = HttpRequest::post(format!(
            "{}{sep}uploadType=resumable&part=snippet,status",
            self.s.upload_url
        ))
        .secret_header("authorization", bearer.clone())
        .header("x-upload-content-type", "video/mp4")
        .header("x-upload-content-length", size.to_string())
        .json(&self.resource(meta))
        .timeout(self.s.timeout.min(Duration::from_secs(60)));
        let resp = self
            .http
            .send(&open)
            .await
            .map_err(|e| ProviderError::http(&YOUTUBE, e))?;
        let session = resp.header("location").map(str::to_owned).ok_or_else(|| {
            ProviderError::bad_answer(
                YOUTUBE.name,
                "no upload session URL (Location) in the answer",
            )
        })?;
        tracing::info!(service = "youtube", bytes = size, "upload session opened");

        let mut file = tokio::fs::File::open(video).await.map_err(io)?;
        let mut offset = 0u64;
        let mut failures = 0u32;
        loop {
            let end = (offset + self.s.chunk_bytes).min(size);
            let mut buf = vec![0u8; (end - offset) as usize];
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io)?;
            file.read_exact(&mut buf).await.map_err(io)?;
            let put = HttpRequest::put(session.clone())
                .secret_header("authorization", bearer.clone())
                .header(
                    "content-range",
                    format!("bytes {offset}-{}/{size}", end - 1),
                )
                .body_bytes("video/mp4", Bytes::from(buf))
                .follow_redirects(false)
                .timeout(self.s.timeout);
            let outcome = match self.http.send_raw(&put).await {
                Ok(r) => self.progress(r),
                Err(e) => Err(ProviderError::http(&YOUTUBE, e)),
            };
            match outcome {
                Ok(Progress::Done(up)) => {
                    tracing::info!(service = "youtube", video = %up.video_id, "upload complete");
                    return Ok(up);
                }
                Ok(Progress::Next(next)) => {
                    if next > offset {
                        failures = 0;
                    }
                    offset = next.min(size);
                }
                Err(e) if e.retryable() && self.s.retry.refuses(&e).is_some() => {
                    let asked = self.s.retry.refuses(&e).unwrap_or_default();
                    let budget = self.s.retry.max_retry_after;
                    return Err(Retryable::wait_refused(e, asked, budget));
                }
                Err(e) if e.retryable() && failures + 1 < self.s.retry.attempts.max(1) => {
                    failures += 1;
                    let delay = self.s.retry.delay(failures, &e);
                    tracing::warn!(service = "youtube", error = %e, retry = failures, ?delay, "upload chunk failed; resuming");
                    tokio::time::sleep(delay).await;
                    let ask = HttpRequest::put(session.clone())
                        .secret_header("authorization", bearer.clone())
                        .header("content-range", format!("bytes */{size}"))
                        .follow_redirects(false)
                        .timeout(self.s.timeout.min(Duration::from_secs(60)));
                    match self
                        .http
                        .send_raw(&ask)
                        .await
                        .map_err(|e| ProviderError::http(&YOUTUBE, e))
                    {
                        Ok(r) => match self.progress(r)? {
                            Progress::Done(up) => return Ok(up),
                            Progress::Next(n) => offset = n.min(size),
                        },
                        // Keep the offset; the next round retries the same chunk.
                        Err(e) if e.retryable() => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn resource(&self, meta: &Metadata) -> Value {
        // YouTube: title at most 100 characters, no angle brackets; description at most 5000 bytes.
        let clean = |s: &str| s.replace(['<', '>'], "");
        let title: String = clean(&meta.title).chars().take(100).collect();
        let mut description = clean(&meta.description);
        while description.len() > 5000 {
            description.pop();
        }
        json!({
            "snippet": {
                "title": title,
                "description": description,
                "tags": meta.keywords,
                "categoryId": self.s.category_id,
            },
            "status": {
                "privacyStatus": self.s.privacy_status,
                "selfDeclaredMadeForKids": false,
            }
        })
    }

    fn progress(&self, r: HttpResponse) -> Result<Progress, ProviderError> {
        match r.status {
            200 | 201 => {
                let v = r.json().map_err(|e| ProviderError::http(&YOUTUBE, e))?;
                let id = v.get("id").and_then(Value::as_str).ok_or_else(|| {
                    ProviderError::bad_answer(YOUTUBE.name, "the finished upload has no video id")
                })?;
                Ok(Progress::Done(Uploaded {
                    video_id: id.to_string(),
                    url: format!("https://www.youtube.com/shorts/{id}"),
                }))
            }
            308 => Ok(Progress::Next(
                r.header("range")
                    .and_then(|v| v.trim().strip_prefix("bytes="))
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(_, last)| last.trim().parse::<u64>().ok())
                    .map_or(0, |last| last + 1),
            )),
            status => Err(ProviderError::http(
                &YOUTUBE,
                HttpError::Status {
                    url: r.url.clone(),
                    status,
                    body: String::from_utf8_lossy(&r.body).chars().take(300).collect(),
                    retry_after: r.header("retry-after").and_then(|v| {
                        super::http::parse_retry_after(v, std::time::SystemTime::now())
                    }),
                },
            )),
        }
    }
}

enum Progress {
    Done(Uploaded),
    /// The next byte the server wants.
    Next(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fake::{FakeServer, Reply};
    use std::sync::{Arc, Mutex, OnceLock};

    const SECRET: &str = "client-secret-xyz987";
    const REFRESH: &str = "1//refresh-token-abc123";
    const ACCESS: &str = "ya29.access-token-777";

    #[derive(Default)]
    struct Upload {
        received: Vec<u8>,
        total: usize,
        failed_once: bool,
        puts: usize,
    }

    fn settings(base: &str) -> YouTubeSettings {
        YouTubeSettings {
            client_id: "client-1".into(),
            client_secret: Secret::from(SECRET),
            refresh_token: Secret::from(REFRESH),
            token_url: format!("{base}/token"),
            upload_url: format!("{base}/upload/youtube/v3/videos"),
            privacy_status: "private".into(),
            category_id: "22".into(),
            chunk_bytes: 256 << 10,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
                max_retry_after: Duration::from_millis(5),
            },
        }
    }

    #[tokio::test]
    async fn refresh_then_resumable_upload_in_chunks_resuming_after_a_failure() {
        let base = Arc::new(OnceLock::<String>::new());
        let state = Arc::new(Mutex::new(Upload::default()));
        let (b2, s2) = (base.clone(), state.clone());
        let fake = FakeServer::start(move |req| {
            let mut st = s2.lock().unwrap();
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/token") => {
                    let form = String::from_utf8_lossy(&req.body).to_string();
                    assert!(form.contains("grant_type=refresh_token"), "{form}");
                    assert!(form.contains("client_id=client-1"));
                    assert!(form.contains(&format!("client_secret={SECRET}")));
                    if !form.contains("refresh_token=1%2F%2Frefresh-token-abc123") {
                        return Reply::json(400, r#"{"error":"invalid_grant","error_description":"Bad Request"}"#);
                    }
                    Reply::json(200, &format!(r#"{{"access_token":"{ACCESS}","expires_in":3599,"token_type":"Bearer"}}"#))
                }
                ("POST", "/upload/youtube/v3/videos") => {
                    assert_eq!(req.param("uploadType").as_deref(), Some("resumable"));
                    assert_eq!(req.param("part").as_deref(), Some("snippet,status"));
                    assert_eq!(req.header("authorization"), Some(format!("Bearer {ACCESS}").as_str()));
                    let meta: Value = serde_json::from_slice(&req.body).unwrap();
                    assert_eq!(meta["snippet"]["title"], "Three hearts");
                    assert_eq!(meta["snippet"]["tags"][0], "octopus");
                    assert_eq!(meta["status"]["privacyStatus"], "private");
                    st.total = req.header("x-upload-content-length").unwrap().parse().unwrap();
                    let loc = format!("{}/upload/session/1?upload_id=secret-session", b2.get().unwrap());
                    Reply::json(200, "{}").header("location", &loc)
                }
                ("PUT", "/upload/session/1") => {
                    st.puts += 1;
                    let range = req.header("content-range").unwrap().to_string();
                    let have = st.received.len();
                    let progress = |have: usize| {
                        if have == 0 {
                            Reply::status(308)
                        } else {
                            Reply::status(308).header("range", &format!("bytes=0-{}", have - 1))
                        }
                    };
                    if range.starts_with("bytes */") {
                        return progress(have);
                    }
                    // The second chunk fails once, after the server kept half of it.
                    if have == 256 << 10 && !st.failed_once {
                        st.failed_once = true;
                        let half = req.body.len() / 2;
                        st.received.extend_from_slice(&req.body[..half]);
                        return Reply::status(503);
                    }
                    let start: usize = range["bytes ".len()..].split('-').next().unwrap().parse().unwrap();
                    assert_eq!(start, have, "client resent from the wrong offset");
                    st.received.extend_from_slice(&req.body);
                    if st.received.len() == st.total {
                        Reply::json(201, r#"{"id":"vid123","snippet":{}}"#)
                    } else {
                        progress(st.received.len())
                    }
                }
                _ => Reply::status(404),
            }
        })
        .await;
        base.set(fake.url("")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("out.mp4");
        let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&video, &content).unwrap();
        let yt = YouTube::new(settings(&fake.url(""))).unwrap();
        let meta = Metadata {
            title: "Three hearts".into(),
            description: "Why octopuses have three hearts.".into(),
            keywords: vec!["octopus".into()],
        };
        let up = yt.upload(&video, &meta).await.unwrap();
        assert_eq!(up.video_id, "vid123");
        {
            let st = state.lock().unwrap();
            assert_eq!(st.received, content, "uploaded bytes differ");
            assert!(st.failed_once);
            // 3 chunks + the failed one + one status query + the resent remainder.
            assert_eq!(st.puts, 5);
        }

        // A refused refresh token: a clear, non-retryable error without any secret.
        let yt = YouTube::new(YouTubeSettings {
            refresh_token: Secret::from("1//wrong-refresh-555"),
            ..settings(&fake.url(""))
        })
        .unwrap();
        let err = yt.upload(&video, &meta).await.unwrap_err();
        let shown = format!("{err} {err:?} {yt:?}");
        assert!(shown.contains("invalid_grant"), "{shown}");
        assert!(!err.retryable());
        for secret in [SECRET, "1//wrong-refresh-555", REFRESH, ACCESS] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn without_credentials_upload_is_not_configured() {
        let err = YouTube::from_config(&YoutubeConfig::default()).unwrap_err();
        assert!(err.is_not_configured());
        assert!(err.to_string().contains("refresh token"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("client_secrets.json");
        std::fs::write(
            &secrets,
            r#"{"installed":{"client_id":"cid","client_secret":"csecret-1234"}}"#,
        )
        .unwrap();
        let token = dir.path().join("token.json");
        std::fs::write(
            &token,
            r#"{"refresh_token":"rt-5678","access_token":"old"}"#,
        )
        .unwrap();
        let cfg = YoutubeConfig {
            client_secrets_file: secrets.display().to_string(),
            refresh_token_file: token.display().to_string(),
            ..YoutubeConfig::default()
        };
        let s = YouTubeSettings::from_config(&cfg).unwrap();
        assert_eq!(s.client_id, "cid");
        assert_eq!(s.client_secret, "csecret-1234");
        assert_eq!(s.refresh_token, "rt-5678");
        assert!(!format!("{s:?}").contains("csecret-1234"));
    }
}
