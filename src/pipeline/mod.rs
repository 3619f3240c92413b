//! The media pipeline: the stages that turn a request into an MP4, and the runner that drives them.
//!
//! Each stage is a module with one `async fn run(&mut JobContext)`, named by the [`Stage`] enum that
//! [`run`] walks in order; stages share a [`JobContext`] (the request, the
//! config, the job's own folder, the artifacts made so far) and report through an [`EventSink`], whose
//! `emit` returns only once the event is durable. No actix types live here: the job actor adapts the
//! journal to `EventSink` and a cancel or shutdown to [`StopSignal`]. Every stage checks the stop signal
//! between steps, and subprocesses are killed by process group when it fires (see `process`).
//! After each stage its result is kept in the job's folder and a `stage_completed` event pins it;
//! a run skips the stages an earlier attempt completed whose kept results are intact (`resume`).

pub mod backgrounds;
pub mod captions;
pub mod espeak;
pub mod footage;
pub mod metadata;
pub mod music;
pub mod online;
pub mod own_media;
pub mod piper;
pub mod process;
pub mod render;
pub mod resume;
pub mod script;
pub mod sink;
pub mod subtitles;
pub mod text;
pub mod timing;
pub mod voice;

#[cfg(test)]
mod caption_tests;
#[cfg(test)]
mod e2e_tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tracing::warn;

use crate::config::Config;
use crate::event::{CompletedStage, EventId, JobId, Kind, Level, NewEvent};
use crate::providers::llm::Metadata;
use crate::providers::ProviderError;
use crate::request::JobRequest;
use timing::SpokenWord;

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Why the events of a job could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not record event: {0}")]
pub struct SinkError(pub String);

/// Where a running job's events go. `emit` resolves once the event is durable.
pub trait EventSink {
    fn emit(&self, event: NewEvent) -> LocalBoxFuture<'_, Result<EventId, SinkError>>;
}

/// Why a job was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled the job.
    Cancelled,
    /// The daemon is shutting down: the job goes back to the queue.
    Shutdown,
}

/// The sending half of a stop signal, held by the job actor.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<Option<StopReason>>);

impl StopHandle {
    /// Fires the signal; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        self.0.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// The receiving half: cheap to clone, checked by every stage.
#[derive(Clone, Debug)]
pub struct StopSignal(watch::Receiver<Option<StopReason>>);

impl StopSignal {
    pub fn pair() -> (StopHandle, StopSignal) {
        let (tx, rx) = watch::channel(None);
        (StopHandle(tx), StopSignal(rx))
    }

    /// The reason, if the signal has fired.
    pub fn reason(&self) -> Option<StopReason> {
        *self.0.borrow()
    }

    /// `Err(StageError::Stopped)` once the signal has fired: put `cx.stop.check()?` between steps.
    pub fn check(&self) -> Result<(), StageError> {
        match self.reason() {
            Some(r) => Err(StageError::Stopped(r)),
            None => Ok(()),
        }
    }

    /// Resolves when the signal fires (never, if the handle is dropped without firing).
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.0.clone();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How a stage failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StageError {
    /// The stop signal fired.
    #[error("stopped: {0:?}")]
    Stopped(StopReason),
    /// The stage failed. `message` is the cause as a person reads it (the event says
    /// `Failed to <action>: <message>`); `error` a short machine name (`ConnectionTimeout`, `ToolFailed`);
    /// `provider` the outside service that failed (`ollama`, `pexels`, ...), when one did.
    #[error("{message}")]
    Failed {
        error: String,
        message: String,
        retryable: bool,
        provider: Option<String>,
    },
}

impl StageError {
    pub fn failed(error: impl Into<String>, message: impl Into<String>) -> StageError {
        StageError::Failed {
            error: error.into(),
            message: message.into(),
            retryable: false,
            provider: None,
        }
    }

    pub fn retryable(error: impl Into<String>, message: impl Into<String>) -> StageError {
        StageError::Failed {
            error: error.into(),
            message: message.into(),
            retryable: true,
            provider: None,
        }
    }

    /// The disk holding `dir` is full. Retryable: freeing space is all another attempt needs.
    pub fn disk_full(dir: &Path) -> StageError {
        StageError::retryable(DISK_FULL, no_space_on(dir))
    }

    /// The failure of an outside service (`provider` is its short name: `ollama`, `pexels`, ...):
    /// the error's code, its message (which never holds a key) and whether a retry may help.
    pub fn provider(provider: &str, e: &ProviderError) -> StageError {
        StageError::Failed {
            error: e.code().to_string(),
            message: e.to_string(),
            retryable: e.retryable(),
            provider: Some(provider.to_string()),
        }
    }
}

impl From<SinkError> for StageError {
    fn from(e: SinkError) -> Self {
        StageError::failed("JournalUnavailable", e.0)
    }
}

/// One sentence of the voiceover, with its audio and timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpokenSentence {
    pub text: String,
    /// Start within the voice track, seconds.
    pub start: f64,
    /// Duration of its audio, seconds.
    pub duration: f64,
    /// Its words with their times in the voice track (see `timing`), inside its audio. A kept
    /// result written before words had times reads as none (the captions fall back to classic).
    #[serde(default)]
    pub words: Vec<SpokenWord>,
    /// Whether the voice engine reported the word times (else they are estimated).
    #[serde(default)]
    pub exact_words: bool,
}

/// What the stages have made so far; each stage reads its inputs here and adds its output. Kept
/// in the job's folder after each stage (see `resume`), so every field must serialise.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Artifacts {
    pub script: Option<String>,
    pub search_terms: Vec<String>,
    /// Footage clips, in the order they are shown.
    pub clips: Vec<PathBuf>,
    /// The joined voice track.
    pub voice_track: Option<PathBuf>,
    pub sentences: Vec<SpokenSentence>,
    /// Length of the voice track, seconds: the video's length.
    pub duration: f64,
    pub subtitles: Option<PathBuf>,
    pub music: Option<PathBuf>,
    pub output: Option<PathBuf>,
    /// The language model that wrote the script, if one did (the metadata stage asks it too).
    pub llm: Option<LlmChoice>,
    /// Title, description and keywords of the finished video.
    pub metadata: Option<Metadata>,
}

impl Artifacts {
    /// Every file the artifacts name, in stage order, each once.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let all = self
            .clips
            .iter()
            .chain(&self.voice_track)
            .chain(&self.subtitles)
            .chain(&self.music)
            .chain(&self.output);
        for f in all {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
        out
    }
}

/// A language model in use by a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmChoice {
    /// `ollama` or `openai`.
    pub provider: String,
    pub model: String,
}

/// Everything a stage may use.
pub struct JobContext {
    pub job: JobId,
    pub request: JobRequest,
    pub config: Arc<Config>,
    /// The job's own folder (`<state>/jobs/<id>`), created before the first stage.
    pub work_dir: PathBuf,
    /// Where the finished video goes (`<state>/output/<id>.mp4`).
    pub output_path: PathBuf,
    pub songs_dir: PathBuf,
    pub events: Rc<dyn EventSink>,
    pub stop: StopSignal,
    pub artifacts: Artifacts,
    /// The stages an earlier attempt completed (from the job's view): the run reuses the ones
    /// whose kept results are intact.
    pub completed: Vec<CompletedStage>,
}

impl JobContext {
    /// The video's frame (width, height): the configured 9:16 frame in the request's aspect ratio.
    pub fn frame(&self) -> (u32, u32) {
        self.config.render.frame(self.request.aspect_ratio)
    }

    /// Emits an event tagged with `stage`.
    pub async fn emit(&self, stage: &str, event: NewEvent) -> Result<EventId, StageError> {
        Ok(self.events.emit(event.with_stage(stage)).await?)
    }
}

/// One step of the pipeline. The stages run in the order of [`Stage::ALL`], the order of the story
/// the events tell: script (and search terms), footage, voice, music (a no-op unless the request
/// asks for it), subtitles (timed from the voice), render, metadata (title, description, keywords),
/// upload (a no-op unless the request asks for it). Each is a plain async function of its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Script,
    Footage,
    Voice,
    Music,
    Subtitles,
    Render,
    Metadata,
    Upload,
}

impl Stage {
    /// Every stage, in the order a job runs them.
    pub const ALL: [Stage; 8] = [
        Stage::Script,
        Stage::Footage,
        Stage::Voice,
        Stage::Music,
        Stage::Subtitles,
        Stage::Render,
        Stage::Metadata,
        Stage::Upload,
    ];

    /// Short name, used in events (`stage` payload key) and in the job view.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Script => "script",
            Stage::Footage => "footage",
            Stage::Voice => "voice",
            Stage::Music => "music",
            Stage::Subtitles => "subtitles",
            Stage::Render => "render",
            Stage::Metadata => "metadata",
            Stage::Upload => "upload",
        }
    }

    /// What the failure message says the stage was doing: `Failed to <action>: ...`.
    pub fn action(self) -> &'static str {
        match self {
            Stage::Script => "generate script",
            Stage::Footage => "find footage",
            Stage::Voice => "generate voiceover",
            Stage::Music => "add background music",
            Stage::Subtitles => "generate subtitles",
            Stage::Render => "render video",
            Stage::Metadata => "generate metadata",
            Stage::Upload => "upload video",
        }
    }

    async fn run(self, cx: &mut JobContext) -> Result<(), StageError> {
        match self {
            Stage::Script => script::run(cx).await,
            Stage::Footage => footage::run(cx).await,
            Stage::Voice => voice::run(cx).await,
            Stage::Music => music::run(cx).await,
            Stage::Subtitles => subtitles::run(cx).await,
            Stage::Render => render::run(cx).await,
            Stage::Metadata => metadata::run(cx).await,
            Stage::Upload => metadata::upload(cx).await,
        }
    }
}

/// How a run ended; the job actor turns it into the terminal events.
#[derive(Debug)]
pub enum Outcome {
    /// `Video generation complete` has been recorded.
    Completed,
    /// The failure event has been recorded.
    Failed,
    /// The stop signal fired; nothing terminal recorded yet.
    Stopped(StopReason),
    /// An event could not be recorded: the journal is gone (shutdown or disk failure).
    Lost(SinkError),
}

/// How glibc's strerror words ENOSPC: in an `io::Error`, and in what ffmpeg and espeak-ng print.
pub(crate) const NO_SPACE: &str = "No space left on device";

/// The error code of a full disk.
const DISK_FULL: &str = "DiskFull";

fn no_space_on(dir: &Path) -> String {
    format!("no space left on {}", dir.display())
}

/// Whether a stage's failure is this machine's disk filling up: a local write, a local tool, or a
/// provider's local file or tool (an outside service's own answer may say so of its own disk).
fn ran_out_of_space(message: &str, error: &str, provider: Option<&str>) -> bool {
    message.contains(NO_SPACE) && (provider.is_none() || matches!(error, "IoError" | "ToolFailed"))
}

/// The folder to name when a stage ran out of space: of the places a stage writes before the
/// render (the job's folder, the shared clip cache), the one with the least room left; the job's
/// folder when they share a disk or none can be measured.
fn fullest_dir(cx: &JobContext) -> PathBuf {
    let cache = crate::providers::cache::ClipCache::for_config(&cx.config);
    [cx.work_dir.clone(), cache.dir().to_path_buf()]
        .into_iter()
        .min_by_key(|d| {
            // A folder not made yet is on its nearest existing parent's disk.
            d.ancestors()
                .find(|a| a.exists())
                .and_then(available_bytes)
                .unwrap_or(u64::MAX)
        })
        .unwrap_or_else(|| cx.work_dir.clone())
}

/// The bytes an unprivileged writer may still use on the file system holding `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statvfs the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Runs every stage in order and records the story's start and its end (complete or failure).
/// Every event goes through a [`sink::GuardedSink`], which hides the config's secrets and logs
/// failures, retries and fallbacks. The job's secrets join the process-wide redactor (the log and
/// the HTTP client's answers), so a key a reload brought in is hidden there too.
pub async fn run(cx: &mut JobContext) -> Outcome {
    crate::providers::hide_secrets(&cx.config);
    let secrets = crate::secret::installed();
    cx.events = Rc::new(sink::GuardedSink::new(cx.job, secrets, cx.events.clone()));
    match run_inner(cx).await {
        Ok(()) => Outcome::Completed,
        Err((_, StageError::Stopped(r))) => Outcome::Stopped(r),
        Err((
            stage,
            StageError::Failed {
                error,
                message,
                retryable,
                provider,
            },
        )) => {
            let (name, action) = stage
                .map(|s| (s.name(), s.action()))
                .unwrap_or(("pipeline", "generate video"));
            let (error, message, retryable) =
                if error != DISK_FULL && ran_out_of_space(&message, &error, provider.as_deref()) {
                    let dir = fullest_dir(cx);
                    warn!(job = %cx.job, stage = name, error = %message, dir = %dir.display(),
                        "a stage ran out of disk space");
                    (DISK_FULL.to_string(), no_space_on(&dir), true)
                } else {
                    (error, message, retryable)
                };
            let mut payload = json!({ "error": error, "retryable": retryable, "stage": name });
            if let Some(p) = provider {
                payload["provider"] = json!(p);
            }
            let ev = NewEvent::new(
                Kind::Error,
                Level::Error,
                format!("Failed to {action}: {message}"),
            )
            .with_payload(payload)
            .with_stage(name);
            match cx.events.emit(ev).await {
                Ok(_) => Outcome::Failed,
                Err(e) => Outcome::Lost(e),
            }
        }
    }
}

async fn run_inner(cx: &mut JobContext) -> Result<(), (Option<Stage>, StageError)> {
    let start = NewEvent::info("Starting video generation...");
    cx.emit("start", start).await.map_err(|e| (None, e))?;
    std::fs::create_dir_all(&cx.work_dir).map_err(|e| {
        (
            None,
            StageError::failed(
                "Io",
                format!("cannot create job folder {}: {e}", cx.work_dir.display()),
            ),
        )
    })?;
    let restored = resume::restore(&cx.work_dir, &cx.completed).await;
    if let Some((stage, why)) = &restored.damaged {
        warn!(job = %cx.job, stage = stage.name(), error = %why, "kept stage result damaged; redoing it");
        let ev = resume::damaged_event(*stage, why);
        cx.emit(stage.name(), ev).await.map_err(|e| (None, e))?;
    }
    if !restored.reused.is_empty() {
        let ev = resume::resuming_event(&restored.reused, &restored.artifacts);
        cx.emit("start", ev).await.map_err(|e| (None, e))?;
        cx.artifacts = restored.artifacts;
    }
    for stage in Stage::ALL {
        if restored.reused.contains(&stage) {
            continue;
        }
        cx.stop.check().map_err(|e| (Some(stage), e))?;
        let before = cx.artifacts.clone();
        let started = std::time::Instant::now();
        stage.run(cx).await.map_err(|e| (Some(stage), e))?;
        crate::metrics::get().stage(stage.name(), started.elapsed());
        // A result that cannot be kept costs only the resume: the job goes on.
        match resume::save(cx, stage, before).await {
            Ok(ev) => {
                cx.emit(stage.name(), ev)
                    .await
                    .map_err(|e| (Some(stage), e))?;
            }
            Err(e) => {
                warn!(job = %cx.job, stage = stage.name(), error = %e, "stage result not kept")
            }
        }
    }
    cx.stop.check().map_err(|e| (None, e))?;
    let output = cx
        .artifacts
        .output
        .clone()
        .unwrap_or_else(|| cx.output_path.clone());
    let done = NewEvent::new(Kind::Complete, Level::Success, "Video generation complete")
        .with_payload(json!({
            "outputPath": output.display().to_string(),
            "duration": (cx.artifacts.duration * 100.0).round() / 100.0,
        }));
    cx.emit("done", done).await.map_err(|e| (None, e))?;
    Ok(())
}
