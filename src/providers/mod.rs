//! Clients of outside services, each usable by a pipeline stage in place of its offline provider.
//!
//! Layout:
//! - `http`: the HTTP client (hyper + rustls/ring + webpki roots), redaction of URLs, `Retry-After`.
//! - `retry`: bounded exponential backoff with jitter and an `on_retry` hook for warning events.
//! - `secret`: [`Secret`], a key that never prints; [`Redactor`], which hides secrets in any text;
//!   [`config_secrets`] is the list of every secret a config holds.
//! - `llm`: the [`llm::Llm`] trait, MoneyPrinter's prompts, script cleaning, tolerant parsing.
//! - `ollama`, `openai`: the two LLM clients.
//! - `pexels`: stock video search and rendition choice; `cache`: the shared clip cache.
//! - `tiktok`: TikTok text-to-speech; `youtube`: OAuth refresh and resumable upload.
//!
//! Every network operation makes one attempt and returns a [`ProviderError`] that knows whether a
//! retry may help ([`ProviderError::retryable`]); callers wrap the call in [`retry::retry`] with
//! their policy and their warning-event hook. Messages name the service and what to do; they never
//! contain a key, a token or a query string.

pub mod cache;
pub mod http;
pub mod llm;
pub mod ollama;
pub mod openai;
pub mod pexels;
pub mod retry;
pub mod tiktok;
pub mod youtube;

#[cfg(test)]
pub(crate) mod fake;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use crate::secret::{Redactor, Secret};
pub use http::HttpError;
pub use retry::{retry, RetryPolicy, Retryable};

use crate::config::Config;

/// Every secret `cfg` holds, to be hidden from every answer, event, error and log line: each
/// [`Secret`] key of the config (found by type: a new key joins by being a `Secret`), the
/// OpenAI-compatible server's key (from the environment variable the config names) and the YouTube
/// credentials kept in files.
pub fn config_secrets(cfg: &Config) -> Vec<Secret> {
    let mut out = crate::secret::collect(cfg);
    out.extend(openai::api_key(&cfg.llm));
    out.extend(youtube::secrets(&cfg.youtube));
    out.retain(|s| !s.is_empty());
    out
}

/// A [`Redactor`] of [`config_secrets`].
pub fn redactor(cfg: &Config) -> Redactor {
    Redactor::new(&config_secrets(cfg))
}

/// Hides `cfg`'s secrets process-wide from now on (log lines, provider answers): the first step
/// of `serve` and `generate`.
pub fn hide_secrets(cfg: &Config) {
    crate::secret::install(&redactor(cfg));
}

/// A boxed future that may move between threads (the providers' trait methods return these).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a message says about a service: its name and what to check when it fails.
#[derive(Debug, PartialEq, Eq)]
pub struct Service {
    pub name: &'static str,
    /// Advice when the service cannot be reached.
    pub unreachable: &'static str,
    /// Advice when it refuses the credentials.
    pub auth: &'static str,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

pub const OLLAMA: Service = Service {
    name: "Ollama",
    unreachable: "Is Ollama running?",
    auth: "Check the access settings of the Ollama server.",
};
pub const OPENAI: Service = Service {
    name: "OpenAI-compatible server",
    unreachable: "Is the server at llm.openai_base_url running?",
    auth: "Check the API key in the environment variable named by llm.openai_api_key_env.",
};
pub const PEXELS: Service = Service {
    name: "Pexels",
    unreachable: "Check the network connection and footage.pexels_base_url.",
    auth: "Check PEXELS_API_KEY (footage.pexels_api_key).",
};
pub const TIKTOK: Service = Service {
    name: "TikTok TTS",
    unreachable: "Check the network connection and voice.tiktok_endpoints.",
    auth: "Check TIKTOK_SESSION_ID (voice.tiktok_session_id).",
};
pub const YOUTUBE: Service = Service {
    name: "YouTube",
    unreachable: "Check the network connection and youtube.upload_url.",
    auth: "Check the YouTube OAuth credentials (youtube.client_id, client_secret, refresh token).",
};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Credentials or endpoints are missing: the caller warns and skips (or uses the offline provider).
    #[error("{service} is not configured: {hint}")]
    NotConfigured { service: &'static str, hint: String },
    /// The exchange failed; the message depends on how.
    #[error("{}", describe_http(service, source))]
    Http {
        service: &'static Service,
        source: HttpError,
    },
    /// The model asked for is not installed on the server.
    #[error(
        "{service} has no model `{model}`. Installed models: {}. {hint}",
        list(installed)
    )]
    ModelNotFound {
        service: &'static str,
        model: String,
        installed: Vec<String>,
        hint: String,
    },
    /// The service answered, but not with what was asked for.
    #[error("{service} gave an unusable answer: {message}")]
    BadAnswer {
        service: &'static str,
        message: String,
    },
    #[error("{service}: cannot use {path}: {source}")]
    Io {
        service: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A local tool (ffmpeg) failed while finishing the provider's output.
    #[error("{service}: {message}")]
    Tool {
        service: &'static str,
        message: String,
    },
    /// The service asked (`Retry-After`) to wait longer than the call may take: not waited for.
    #[error(
        "{} asked to wait {} before trying again{}, longer than the {} this call may take; try again later.",
        source.service(),
        seconds(*asked),
        answered_with(source),
        seconds(*budget)
    )]
    WaitTooLong {
        asked: Duration,
        budget: Duration,
        source: Box<ProviderError>,
    },
}

/// `3600 s`, `0.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// ` (HTTP 429 at <url>)` for a refused request.
fn answered_with(e: &ProviderError) -> String {
    match e {
        ProviderError::Http {
            source: HttpError::Status { url, status, .. },
            ..
        } => format!(" (HTTP {status} at {url})"),
        _ => String::new(),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn describe_http(service: &Service, e: &HttpError) -> String {
    match e {
        HttpError::ConnectionRefused { origin } => {
            format!(
                "{service} connection refused at {origin}. {}",
                service.unreachable
            )
        }
        HttpError::Connect { origin, reason } => format!(
            "{service} connection failed at {origin} ({reason}). {}",
            service.unreachable
        ),
        HttpError::Timeout { url, secs } => format!(
            "{service} connection timeout: {url} did not answer within {secs} s. {}",
            service.unreachable
        ),
        HttpError::Status { url, status, .. } if *status == 401 || *status == 403 => format!(
            "{service} refused the credentials (HTTP {status} at {url}). {}",
            service.auth
        ),
        HttpError::Status { url, status, .. } if *status == 429 => {
            format!("{service} rate limit reached (HTTP 429 at {url}); try again later.")
        }
        HttpError::Status {
            url, status, body, ..
        } if *status >= 500 => {
            format!(
                "{service} server error (HTTP {status} at {url}){}",
                excerpt(body)
            )
        }
        HttpError::Status {
            url, status, body, ..
        } => format!("{service} answered HTTP {status} at {url}{}", excerpt(body)),
        other => format!("{service}: {other}"),
    }
}

fn excerpt(body: &str) -> String {
    let b = body.trim();
    if b.is_empty() {
        String::new()
    } else {
        format!(": {}", b.chars().take(200).collect::<String>())
    }
}

impl ProviderError {
    pub fn http(service: &'static Service, source: HttpError) -> ProviderError {
        ProviderError::Http { service, source }
    }

    pub fn bad_answer(service: &'static str, message: impl Into<String>) -> ProviderError {
        ProviderError::BadAnswer {
            service,
            message: message.into(),
        }
    }

    /// Timeouts, connection failures, 408, 429 and 5xx (but not a wait longer than the call may take).
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Http { source, .. } => source.retryable(),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Http { source, .. } => source.retry_after(),
            ProviderError::WaitTooLong { asked, .. } => Some(*asked),
            _ => None,
        }
    }

    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Http { source, .. } => source.status(),
            ProviderError::WaitTooLong { source, .. } => source.status(),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn is_not_configured(&self) -> bool {
        matches!(self, ProviderError::NotConfigured { .. })
    }

    /// The service's name (the `provider` key of a failure event).
    pub fn service(&self) -> &'static str {
        match self {
            ProviderError::Http { service, .. } => service.name,
            ProviderError::WaitTooLong { source, .. } => source.service(),
            ProviderError::NotConfigured { service, .. }
            | ProviderError::ModelNotFound { service, .. }
            | ProviderError::BadAnswer { service, .. }
            | ProviderError::Io { service, .. }
            | ProviderError::Tool { service, .. } => service,
        }
    }

    /// A short machine name (the `error` key of a failure event).
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::NotConfigured { .. } => "NotConfigured",
            ProviderError::ModelNotFound { .. } => "ModelNotFound",
            ProviderError::BadAnswer { .. } => "BadAnswer",
            ProviderError::Io { .. } => "IoError",
            ProviderError::Tool { .. } => "ToolFailed",
            ProviderError::WaitTooLong { .. } => "RetryAfterTooLong",
            ProviderError::Http { source, .. } => match source {
                HttpError::ConnectionRefused { .. } => "ConnectionRefused",
                HttpError::Connect { .. } => "ConnectionFailed",
                HttpError::Timeout { .. } => "ConnectionTimeout",
                HttpError::Status {
                    status: 401 | 403, ..
                } => "Unauthorized",
                HttpError::Status { status: 429, .. } => "RateLimited",
                HttpError::Status { status, .. } if *status >= 500 => "ServerError",
                HttpError::Status { .. } => "HttpStatus",
                HttpError::TooLarge { .. } => "TooLarge",
                HttpError::Decode { .. } => "BadAnswer",
                HttpError::Io { .. } => "IoError",
                HttpError::BadRequest { .. } | HttpError::Tls { .. } => "BadRequest",
            },
        }
    }
}

impl Retryable for ProviderError {
    fn retryable(&self) -> bool {
        ProviderError::retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        ProviderError::retry_after(self)
    }
    fn wait_refused(self, asked: Duration, budget: Duration) -> Self {
        ProviderError::WaitTooLong {
            asked,
            budget,
            source: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_secrets_has_every_key_and_the_youtube_files() {
        let dir = tempfile::tempdir().unwrap();
        let client = dir.path().join("client_secrets.json");
        std::fs::write(
            &client,
            r#"{"installed": {"client_id": "id", "client_secret": "from-client-file-3"}}"#,
        )
        .unwrap();
        let token = dir.path().join("token.json");
        std::fs::write(&token, r#"{"refresh_token": "from-token-file-4"}"#).unwrap();
        let mut cfg = Config::default();
        cfg.footage.pexels_api_key = Secret::new("pexels-key-1");
        cfg.voice.tiktok_session_id = Secret::new("tiktok-session-2");
        cfg.youtube.client_secrets_file = client.display().to_string();
        cfg.youtube.refresh_token_file = token.display().to_string();
        cfg.llm.openai_api_key_env = "REELSMITH_TEST_NO_SUCH_VARIABLE".into();
        let found: Vec<String> = config_secrets(&cfg)
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        for want in [
            "pexels-key-1",
            "tiktok-session-2",
            "from-client-file-3",
            "from-token-file-4",
        ] {
            assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
        }
        // Keys set in the config itself win over the files, and both are secrets.
        cfg.youtube.client_secret = Secret::new("from-config-5");
        let r = redactor(&cfg);
        assert_eq!(
            r.scrub("from-config-5 pexels-key-1 from-token-file-4"),
            "[redacted] [redacted] [redacted]"
        );
        assert!(redactor(&Config::default()).is_empty());
    }

    #[test]
    fn a_refused_wait_names_the_service_the_answer_the_wait_and_the_budget() {
        let busy = ProviderError::http(
            &TIKTOK,
            HttpError::Status {
                url: "https://tts.example/invoke".into(),
                status: 503,
                body: String::new(),
                retry_after: Some(Duration::from_secs(900)),
            },
        );
        assert!(busy.retryable());
        let e = Retryable::wait_refused(
            busy,
            Duration::from_secs(900),
            Duration::from_millis(30_500),
        );
        assert_eq!(
            e.to_string(),
            "TikTok TTS asked to wait 900 s before trying again (HTTP 503 at https://tts.example/invoke), longer than the 30.5 s this call may take; try again later."
        );
        assert_eq!(
            (e.code(), e.service(), e.status(), e.retryable()),
            ("RetryAfterTooLong", "TikTok TTS", Some(503), false)
        );
    }
}
