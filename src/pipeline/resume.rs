//! Stage results kept in the job's folder, so a job that runs again (after a crash, a shutdown, a
//! lease loss or a retry) resumes after its last completed stage instead of starting over.
//!
//! After each stage the runner writes `<work_dir>/stages/<stage>.json`: the artifacts as they stand
//! (a full snapshot) and the size and SHA-256 of every file the stage added (clips, voice track,
//! subtitles, song, video). The `stage_completed` event then pins that file's own size and digest
//! in the log. A later attempt walks the stages in order and reuses the longest prefix whose kept
//! results are intact: the file the event pinned, unchanged, and every file it lists, unchanged.
//! The first stage that fails the check is redone, and so is every stage after it (they were made
//! from its old result). Invariants: the result file is complete and synced before its event is
//! recorded (written to a temporary name, then renamed); nothing here ever trusts a file that the
//! log did not pin.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::text::word_count;
use super::{Artifacts, JobContext, Stage};
use crate::event::{CompletedStage, Kind, Level, NewEvent};

/// The folder of the kept results, inside the job's folder.
pub const RESULTS_DIR: &str = "stages";
const FORMAT: u32 = 1;

/// A file a stage made or chose, as it was when the stage completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// What `stages/<stage>.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct StageResult {
    format: u32,
    stage: String,
    /// Every artifact as it stood after the stage.
    artifacts: Artifacts,
    /// The files this stage added to the artifacts.
    files: Vec<FileDigest>,
}

/// Why a kept result cannot be saved or reused.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} changed ({what})")]
    Changed { path: PathBuf, what: &'static str },
    #[error("{path} cannot be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResultError + '_ {
    move |source| ResultError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Hex SHA-256 and size of a file, read in blocks.
fn digest_file(path: &Path) -> Result<(u64, String), ResultError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((total, hex(ctx.finish().as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn result_path(work_dir: &Path, stage: Stage) -> PathBuf {
    work_dir
        .join(RESULTS_DIR)
        .join(format!("{}.json", stage.name()))
}

/// Writes the result of `stage` (the artifacts now, and the files added since `before`) and
/// returns its `stage_completed` event. Blocking: call through `spawn_blocking`.
fn save_blocking(
    work_dir: &Path,
    stage: Stage,
    before: &Artifacts,
    artifacts: &Artifacts,
) -> Result<NewEvent, ResultError> {
    let old = before.files();
    let mut files = Vec::new();
    for path in artifacts.files().into_iter().filter(|f| !old.contains(f)) {
        let (bytes, sha256) = digest_file(&path)?;
        files.push(FileDigest {
            path,
            bytes,
            sha256,
        });
    }
    let result = StageResult {
        format: FORMAT,
        stage: stage.name().to_string(),
        artifacts: artifacts.clone(),
        files,
    };
    // Plain data: serialising it cannot fail.
    let text = serde_json::to_vec_pretty(&result).unwrap_or_default();
    let path = result_path(work_dir, stage);
    let dir = work_dir.join(RESULTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join(format!(".{}.json.tmp", stage.name()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    let sha = hex(ring::digest::digest(&ring::digest::SHA256, &text).as_ref());
    let mut payload = produced(stage, artifacts);
    payload["stage"] = json!(stage.name());
    payload["result"] = json!({ "bytes": text.len(), "sha256": sha });
    Ok(NewEvent::new(
        Kind::StageCompleted,
        Level::Info,
        format!("Completed stage: {}", stage.name()),
    )
    .with_payload(payload)
    .with_stage(stage.name()))
}

/// Keeps the result of `stage`, which has just run (its inputs were `before`), and returns the
/// `stage_completed` event to record once it is on disk.
pub async fn save(
    cx: &JobContext,
    stage: Stage,
    before: Artifacts,
) -> Result<NewEvent, ResultError> {
    let (dir, now) = (cx.work_dir.clone(), cx.artifacts.clone());
    tokio::task::spawn_blocking(move || save_blocking(&dir, stage, &before, &now))
        .await
        .unwrap_or_else(|e| {
            Err(ResultError::Unreadable {
                path: PathBuf::from(RESULTS_DIR),
                reason: format!("the digest task failed: {e}"),
            })
        })
}

/// What a stage made, in short, for its `stage_completed` payload.
fn produced(stage: Stage, a: &Artifacts) -> Value {
    let name = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
    };
    match stage {
        Stage::Script => json!({
            "wordCount": a.script.as_deref().map(word_count).unwrap_or(0),
            "searchTerms": a.search_terms,
        }),
        Stage::Footage => json!({ "clips": a.clips.len() }),
        Stage::Voice => json!({
            "sentences": a.sentences.len(),
            "duration": (a.duration * 100.0).round() / 100.0,
        }),
        Stage::Music => json!({ "song": name(&a.music) }),
        Stage::Subtitles => json!({ "subtitles": name(&a.subtitles) }),
        Stage::Render => json!({
            "outputPath": a.output.as_ref().map(|p| p.display().to_string()),
        }),
        Stage::Metadata => json!({ "title": a.metadata.as_ref().map(|m| m.title.clone()) }),
        Stage::Upload => json!({}),
    }
}

/// What an earlier attempt left that this one may reuse.
#[derive(Debug, Default)]
pub struct Restored {
    /// The artifacts after the last reused stage.
    pub artifacts: Artifacts,
    /// The stages to skip, in order (a prefix of [`Stage::ALL`]).
    pub reused: Vec<Stage>,
    /// The first kept result that was found damaged, and why; it and the stages after it are redone.
    pub damaged: Option<(Stage, ResultError)>,
}

/// Checks one stage's kept result against what its event pinned; returns its artifacts.
fn check_stage(
    work_dir: &Path,
    stage: Stage,
    pinned: &CompletedStage,
) -> Result<Artifacts, ResultError> {
    let path = result_path(work_dir, stage);
    let text = std::fs::read(&path).map_err(io(&path))?;
    let sha = hex(ring::digest::digest(&ring::digest::SHA256, &text).as_ref());
    if text.len() as u64 != pinned.bytes || sha != pinned.sha256 {
        return Err(ResultError::Changed {
            path,
            what: "its size or digest differs from the one recorded",
        });
    }
    let result: StageResult =
        serde_json::from_slice(&text).map_err(|e| ResultError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if result.format != FORMAT || result.stage != stage.name() {
        return Err(ResultError::Unreadable {
            path,
            reason: format!("format {} of stage {}", result.format, result.stage),
        });
    }
    for f in &result.files {
        let len = std::fs::metadata(&f.path).map_err(io(&f.path))?.len();
        if len != f.bytes {
            return Err(ResultError::Changed {
                path: f.path.clone(),
                what: "its size differs",
            });
        }
        if digest_file(&f.path)?.1 != f.sha256 {
            return Err(ResultError::Changed {
                path: f.path.clone(),
                what: "its digest differs",
            });
        }
    }
    Ok(result.artifacts)
}

fn restore_blocking(work_dir: &Path, completed: &[CompletedStage]) -> Restored {
    let mut out = Restored::default();
    for (stage, pinned) in Stage::ALL.into_iter().zip(completed) {
        if pinned.stage != stage.name() {
            break;
        }
        match check_stage(work_dir, stage, pinned) {
            Ok(a) => {
                out.artifacts = a;
                out.reused.push(stage);
            }
            Err(e) => {
                out.damaged = Some((stage, e));
                break;
            }
        }
    }
    if out.reused.is_empty() {
        out.artifacts = Artifacts::default();
    }
    out
}

/// The stages of `completed` (from the job's events) whose kept results are intact, in order.
pub async fn restore(work_dir: &Path, completed: &[CompletedStage]) -> Restored {
    if completed.is_empty() {
        return Restored::default();
    }
    let (dir, completed) = (work_dir.to_owned(), completed.to_vec());
    tokio::task::spawn_blocking(move || restore_blocking(&dir, &completed))
        .await
        .unwrap_or_default()
}

/// `Resuming after <stage>: reusing <what>.` for the reused stages (at least one).
pub fn resuming_event(reused: &[Stage], a: &Artifacts) -> NewEvent {
    let what: Vec<String> = reused
        .iter()
        .filter_map(|s| match s {
            Stage::Script => Some(format!(
                "the script and {} search terms",
                a.search_terms.len()
            )),
            Stage::Footage => Some(format!("{} footage clips", a.clips.len())),
            Stage::Voice => Some(format!("the voiceover ({} sentences)", a.sentences.len())),
            Stage::Music => a.music.as_ref().map(|_| "the song".to_string()),
            Stage::Subtitles => a.subtitles.as_ref().map(|_| "the subtitles".to_string()),
            Stage::Render => Some("the rendered video".to_string()),
            Stage::Metadata => Some("the title and description".to_string()),
            Stage::Upload => None,
        })
        .collect();
    let last = reused.last().map(|s| s.name()).unwrap_or("start");
    let list = match what.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [init @ .., tail] => format!("{} and {tail}", init.join(", ")),
    };
    NewEvent::info(format!("Resuming after {last}: reusing {list}.")).with_payload(json!({
        "stage": last,
        "reused": reused.iter().map(|s| s.name()).collect::<Vec<_>>(),
    }))
}

/// The warning for a kept result that is not reused.
pub fn damaged_event(stage: Stage, e: &ResultError) -> NewEvent {
    NewEvent::warning(format!(
        "The kept result of the {} stage is damaged ({e}); redoing it.",
        stage.name()
    ))
    .with_payload(json!({ "stage": stage.name(), "error": "DamagedResult" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(ev: &NewEvent) -> CompletedStage {
        let p = ev.payload.as_ref().unwrap();
        CompletedStage {
            stage: p["stage"].as_str().unwrap().to_string(),
            bytes: p["result"]["bytes"].as_u64().unwrap(),
            sha256: p["result"]["sha256"].as_str().unwrap().to_string(),
        }
    }

    #[test]
    fn an_intact_prefix_is_reused_and_a_damaged_file_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path();
        let script = Artifacts {
            script: Some("Octopuses have three hearts.".into()),
            search_terms: vec!["octopus".into()],
            ..Artifacts::default()
        };
        let clip = work.join("clip.mp4");
        std::fs::write(&clip, b"clip bytes").unwrap();
        let footage = Artifacts {
            clips: vec![clip.clone()],
            ..script.clone()
        };
        let track = work.join("voice.wav");
        std::fs::write(&track, b"voice bytes").unwrap();
        let voice = Artifacts {
            voice_track: Some(track.clone()),
            duration: 2.5,
            ..footage.clone()
        };
        let e1 = save_blocking(work, Stage::Script, &Artifacts::default(), &script).unwrap();
        let e2 = save_blocking(work, Stage::Footage, &script, &footage).unwrap();
        let e3 = save_blocking(work, Stage::Voice, &footage, &voice).unwrap();
        assert_eq!(e1.kind, Kind::StageCompleted);
        assert_eq!(
            e1.payload.as_ref().unwrap()["searchTerms"],
            json!(["octopus"])
        );
        assert_eq!(e3.payload.as_ref().unwrap()["duration"], json!(2.5));
        let completed = vec![pinned(&e1), pinned(&e2), pinned(&e3)];

        let r = restore_blocking(work, &completed);
        assert_eq!(r.reused, [Stage::Script, Stage::Footage, Stage::Voice]);
        assert!(r.damaged.is_none());
        assert_eq!(r.artifacts.voice_track.as_deref(), Some(track.as_path()));
        assert_eq!(r.artifacts.duration, 2.5);
        let msg = resuming_event(&r.reused, &r.artifacts).message;
        assert_eq!(
            msg,
            "Resuming after voice: reusing the script and 1 search terms, 1 footage clips and the voiceover (0 sentences)."
        );

        // The voice track changes (same size): voice is redone, script and footage are reused.
        std::fs::write(&track, b"voice BYTES").unwrap();
        let r = restore_blocking(work, &completed);
        assert_eq!(r.reused, [Stage::Script, Stage::Footage]);
        let (stage, err) = r.damaged.unwrap();
        assert_eq!(stage, Stage::Voice);
        assert!(err.to_string().contains("voice.wav"), "{err}");
        assert!(r.artifacts.voice_track.is_none());

        // An edited result file no longer matches its event: nothing from there on is trusted.
        let p = result_path(work, Stage::Script);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("three", "four!")).unwrap();
        let r = restore_blocking(work, &completed);
        assert!(r.reused.is_empty());
        assert_eq!(r.damaged.unwrap().0, Stage::Script);
        assert!(r.artifacts.script.is_none());

        // A missing clip, and a list that skips a stage, stop the prefix too.
        std::fs::write(&p, text).unwrap();
        std::fs::remove_file(&clip).unwrap();
        let r = restore_blocking(work, &completed);
        assert_eq!(r.reused, [Stage::Script]);
        let r = restore_blocking(work, &[pinned(&e1), pinned(&e3)]);
        assert_eq!(r.reused, [Stage::Script]);
        assert!(r.damaged.is_none());
    }
}
