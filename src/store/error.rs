//! The store's errors: one enum per operation, each keeping redb's error as its source.
//!
//! The class matters more than the text: every [`AppendError`] is *fatal* (the log could not be
//! written: I/O error, corruption, disk full; redb refuses later writes after one), while a *refused*
//! append (illegal for its job's state) never reaches the store: the journal decides that before it
//! writes (`actors::journal::JournalError::Refused`).

use std::path::PathBuf;

use crate::event::EventId;

pub use super::codec::DecodeError;

/// Opening the log at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the event log {path} is in use by another reelsmith process (a running `reelsmith serve`?); stop it or use another state directory")]
    Locked { path: PathBuf },
    #[error("the event log {path} is damaged ({reason}). {}", damage_advice(path))]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot open the event log {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

impl OpenError {
    /// `Damaged` for what a broken file causes (corruption, a truncated file, a table definition
    /// that is not ours, a panic of the engine), `Database` for the rest (permissions, I/O).
    pub(super) fn classify(path: &std::path::Path, e: redb::Error) -> OpenError {
        let damaged = match &e {
            redb::Error::Corrupted(_) => true,
            // reelsmith always writes the same tables with the same types: a table whose stored
            // definition differs was written over by damage (a flipped byte in the table tree).
            redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_) => true,
            redb::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ),
            _ => false,
        };
        if damaged {
            OpenError::Damaged {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        } else {
            OpenError::Database {
                path: path.to_owned(),
                source: e,
            }
        }
    }
}

/// What to do about a damaged log at `path`.
pub fn damage_advice(path: &std::path::Path) -> String {
    format!(
        "reelsmith will not use it. To recover: stop reelsmith, move {p} aside (keep it for \
         inspection), copy your latest backup (made with `reelsmith ctl backup FILE`) to {p}, \
         check it with `reelsmith store check {p}`, and start again.",
        p = path.display()
    )
}

/// Writing one batch (always fatal: see the module comment).
#[derive(Debug, thiserror::Error)]
#[error("the event log {path} could not be written: {source}")]
pub struct AppendError {
    pub path: PathBuf,
    #[source]
    pub source: redb::Error,
}

impl AppendError {
    /// Whether the file system holding the log is full (ENOSPC / EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        io_error(&self.source)
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT)
    }

    /// What went wrong, in a few words a person can act on: names the disk when it is full.
    pub fn cause(&self) -> String {
        if self.is_disk_full() {
            let dir = self.path.parent().unwrap_or(&self.path);
            return format!("no space left on the disk holding {}", dir.display());
        }
        match &self.source {
            redb::Error::PreviousIo => {
                format!("{}: an earlier write failed", self.path.display())
            }
            e => format!("{}: {e}", self.path.display()),
        }
    }

    /// The line every refused write answers once the log has failed (HTTP 503/507, the control
    /// socket's error line, `/healthz`).
    pub fn restart_message(&self) -> String {
        format!(
            "The event log cannot be written ({}); the daemon is restarting.",
            self.cause()
        )
    }
}

/// Reading records back (range reads, the start-up scan).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("event log read failed: {source}")]
    Storage {
        #[source]
        source: redb::Error,
    },
    #[error("the job index names event {id}, which is missing from the log")]
    MissingEvent { id: EventId },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl ReadError {
    pub(super) fn storage(e: impl Into<redb::Error>) -> ReadError {
        ReadError::Storage { source: e.into() }
    }

    /// Whether the file itself is damaged (a bad record, a broken index, a corrupt page), as
    /// opposed to a failing read.
    pub fn is_damage(&self) -> bool {
        match self {
            ReadError::Decode(_) | ReadError::MissingEvent { .. } => true,
            ReadError::Storage { source } => matches!(source, redb::Error::Corrupted(_)),
        }
    }
}

/// `ctl backup`.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup to {path} failed: the file already exists; choose a new path")]
    Exists { path: PathBuf },
    #[error("backup to {path} failed: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

fn io_error(e: &redb::Error) -> Option<&std::io::Error> {
    match e {
        redb::Error::Io(io) => Some(io),
        _ => None,
    }
}
