//! `ApiError`: every failure an HTTP caller can see, mapped to a status in one place. Every error
//! body is `{"status":"error","message":...}` with a message a person can act on.

use hyper::StatusCode;

use crate::actors::journal::JournalError;
use crate::actors::scheduler::SchedulerError;
use crate::service::CoreError;
use crate::store::AppendError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Job not found.")]
    JobNotFound,
    /// A job exists but what was asked of it is not there (yet): its media before completion.
    #[error("{0}")]
    NotReady(String),
    #[error("No active job found.")]
    NoActiveJob,
    #[error("Not found: {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    Conflict(String),
    #[error("Request body is too large: the limit is {limit} bytes.")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The event log cannot be written: 507 when its disk is full, else 503.
    #[error("{message}")]
    LogFailed { message: String, disk_full: bool },
    /// The request's origin may not call the API (`http::guard`).
    #[error("{0}")]
    Forbidden(String),
    /// The request's host is not this daemon's (DNS rebinding, `http::guard`).
    #[error("{0}")]
    Misdirected(String),
    /// No or a wrong bearer token (`server.api_token`).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::JobNotFound
            | ApiError::NotReady(_)
            | ApiError::NoActiveJob
            | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::LogFailed {
                disk_full: true, ..
            } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::LogFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The answer to every write once the event log has failed.
    pub fn log_failed(fault: &AppendError) -> ApiError {
        ApiError::LogFailed {
            message: fault.restart_message(),
            disk_full: fault.is_disk_full(),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::NotFound => ApiError::JobNotFound,
            SchedulerError::NoActive => ApiError::NoActiveJob,
            SchedulerError::ShuttingDown => ApiError::Unavailable(
                "The daemon is shutting down and accepts no new jobs; try again once it has restarted."
                    .into(),
            ),
            SchedulerError::NotRetryable { .. } | SchedulerError::BadConcurrency => {
                ApiError::BadRequest(e.to_string())
            }
            SchedulerError::KeyConflict { .. } => ApiError::Conflict(e.to_string()),
            SchedulerError::Journal(JournalError::Fatal(f)) => ApiError::log_failed(&f),
            SchedulerError::Journal(JournalError::Unavailable(m)) => ApiError::Unavailable(m),
            SchedulerError::Journal(_) | SchedulerError::Internal(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Unavailable(format!(
            "The scheduler is not answering ({e}); the daemon may be stopping."
        ))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Scheduler(e) => e.into(),
            CoreError::JobNotFound => ApiError::JobNotFound,
            CoreError::Unreachable(e) => e.into(),
            CoreError::Store(_) => ApiError::Unavailable(e.to_string()),
            CoreError::Unsupported(_) => ApiError::BadRequest(e.to_string()),
            CoreError::Read(_) | CoreError::Backup(_) | CoreError::Task(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}
