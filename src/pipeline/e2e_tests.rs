//! End-to-end tests of the real stages: espeak-ng, ffmpeg and ffprobe run for real (they must be
//! installed; a missing tool fails these tests, it never skips them), at a tiny render size.
//!
//! A fake [`EventSink`] collects the events in memory and can fire the stop signal when the render
//! reports progress, to prove that a stop kills ffmpeg's whole process group within a second.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::event::{Kind, NewEvent};

/// Collects events; optionally fires `stop` at the first render progress above zero, noting the
/// process group of the ffmpeg working in `marker` (a path only this test's ffmpeg has in its
/// command line) at that moment.
/// A test's action at a point of the run.
type Hook = Box<dyn FnOnce()>;

pub(super) struct Recorder {
    events: RefCell<Vec<NewEvent>>,
    stop_on_progress: RefCell<Option<StopHandle>>,
    marker: String,
    stopped_at: Cell<Option<Instant>>,
    ffmpeg_pgid: Cell<Option<i32>>,
    next_id: Cell<u64>,
    /// Runs once, when the named stage's `stage_completed` event is emitted.
    after_stage: RefCell<Option<(&'static str, Hook)>>,
}

impl Recorder {
    pub(super) fn new(marker: &Path, stop: Option<StopHandle>) -> Rc<Recorder> {
        Rc::new(Recorder {
            events: RefCell::new(Vec::new()),
            stop_on_progress: RefCell::new(stop),
            marker: marker.display().to_string(),
            stopped_at: Cell::new(None),
            ffmpeg_pgid: Cell::new(None),
            next_id: Cell::new(1),
            after_stage: RefCell::new(None),
        })
    }

    /// Runs `f` once the stage `stage` has completed (before the next stage starts).
    pub(super) fn after_stage(&self, stage: &'static str, f: impl FnOnce() + 'static) {
        *self.after_stage.borrow_mut() = Some((stage, Box::new(f)));
    }

    pub(super) fn messages(&self) -> Vec<String> {
        self.events
            .borrow()
            .iter()
            .map(|e| e.message.clone())
            .collect()
    }
}

impl EventSink for Recorder {
    fn emit(&self, event: NewEvent) -> LocalBoxFuture<'_, Result<EventId, SinkError>> {
        let progress = event
            .payload
            .as_ref()
            .and_then(|p| p.get("progress"))
            .and_then(Value::as_f64);
        if event.kind == Kind::Progress && progress.is_some_and(|p| p > 0.0) {
            if let Some(handle) = self.stop_on_progress.borrow_mut().take() {
                self.ffmpeg_pgid.set(find_pgid("ffmpeg", &self.marker));
                self.stopped_at.set(Some(Instant::now()));
                handle.stop(StopReason::Cancelled);
            }
        }
        let stage_done = event.kind == Kind::StageCompleted;
        let done_stage = event.stage.clone();
        self.events.borrow_mut().push(event);
        if stage_done {
            let due = matches!(&*self.after_stage.borrow(), Some((s, _)) if done_stage.as_deref() == Some(*s));
            if due {
                if let Some((_, f)) = self.after_stage.borrow_mut().take() {
                    f();
                }
            }
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Box::pin(async move { Ok(id as EventId) })
    }
}

/// The process group of a running `name` whose command line mentions `marker`.
fn find_pgid(name: &str, marker: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.split(' ').next().is_some_and(|p| p.ends_with(name))
            || !cmdline.contains(marker)
        {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name: state ppid pgrp ...
        let rest = &stat[stat.rfind(')')? + 2..];
        return rest.split(' ').nth(2)?.parse().ok();
    }
    None
}

fn group_exists(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists; nothing is sent.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

pub(super) fn tiny_config(state: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.daemon.state_dir = state.display().to_string();
    cfg.render.width = 180;
    cfg.render.height = 320;
    cfg.render.preset = crate::config::Preset::Ultrafast;
    cfg.render.threads = 1;
    cfg.footage.clips = 3;
    cfg.footage.seconds_per_clip = 2.0;
    cfg.voice.speed_wpm = 220;
    cfg
}

pub(super) fn context(
    cfg: Config,
    body: Value,
    root: &Path,
    events: Rc<dyn EventSink>,
    stop: StopSignal,
) -> JobContext {
    let job = JobId::new();
    let request = JobRequest::parse(&body, &cfg).unwrap_or_else(|e| panic!("request refused: {e}"));
    JobContext {
        job,
        request,
        config: Arc::new(cfg),
        work_dir: root.join("jobs").join(job.0.to_string()),
        output_path: root.join("output").join(format!("{}.mp4", job.0)),
        songs_dir: root.join("songs"),
        events,
        stop,
        artifacts: Artifacts::default(),
        completed: Vec::new(),
    }
}

pub(super) fn ffprobe_json(path: &Path) -> Value {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed (apt-get install ffmpeg)");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Mean volume (dB) of `path`'s audio between `from` and `from + len` seconds.
fn mean_volume(path: &Path, from: f64, len: f64) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-ss",
            &format!("{from}"),
            "-t",
            &format!("{len}"),
            "-i",
        ])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or(-91.0)
}

fn make_song(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let song = dir.join("tone.mp3");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=3",
        ])
        .args(["-c:a", "libmp3lame", "-b:a", "64k"])
        .arg(&song)
        .status()
        .expect("ffmpeg must be installed")
        .success();
    assert!(ok, "could not make a test song");
    song
}

const SCRIPT: &str = "Octopuses have three hearts! Two of them pump blood {through} the gills. \
    \"Really?\" Yes: the path is C:\\New\\folder. 心臓は三つ。 The third heart serves the body.";

#[tokio::test]
async fn a_caller_script_becomes_a_vertical_mp4_and_tells_the_story_in_order() {
    // Quotes, brackets, a comma and a colon in the folder name exercise the filtergraph escaping.
    let root = tempfile::Builder::new()
        .prefix("reel's [e2e], a:b ")
        .tempdir()
        .unwrap();
    let cfg = tiny_config(root.path());
    make_song(&root.path().join("songs"));
    let (_handle, stop) = StopSignal::pair();
    let rec = Recorder::new(root.path(), None);
    let body = json!({
        "videoSubject": "Why octopuses have three hearts",
        "script": SCRIPT,
        "voice": "en_us_006",
        "useMusic": true,
        "subtitlesPosition": "center,bottom",
        "color": "#FFFF00",
    });
    let mut cx = context(cfg.clone(), body, root.path(), rec.clone(), stop);
    let outcome = run(&mut cx).await;
    let messages = rec.messages();
    assert!(
        matches!(outcome, Outcome::Completed),
        "{outcome:?}\n{messages:#?}"
    );

    // The output: one H.264 stream of the configured size, one AAC stream, the voice's length.
    let out = cx.artifacts.output.clone().expect("output path");
    assert!(out.is_absolute() && out.ends_with(cx.output_path.file_name().unwrap()));
    let probe = ffprobe_json(&out);
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let video: Vec<_> = streams
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .collect();
    let audio: Vec<_> = streams
        .iter()
        .filter(|s| s["codec_type"] == "audio")
        .collect();
    assert_eq!(video.len(), 1, "{probe}");
    assert_eq!(audio.len(), 1, "{probe}");
    assert_eq!(video[0]["codec_name"], "h264");
    assert_eq!(
        (video[0]["width"].as_u64(), video[0]["height"].as_u64()),
        (Some(180), Some(320))
    );
    assert_eq!(audio[0]["codec_name"], "aac");
    let voice = cx.artifacts.voice_track.clone().expect("voice track");
    let voice_len: f64 = ffprobe_json(&voice)["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let out_len: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(voice_len > 3.0, "voice is {voice_len} s");
    assert!(
        (out_len - voice_len).abs() < 0.3,
        "video {out_len} s, voice {voice_len} s"
    );

    // Music under the voice: during the pause between the first two sentences there is sound.
    let s = &cx.artifacts.sentences;
    let gap_start = s[0].start + s[0].duration + 0.02;
    let gap = s[1].start - gap_start - 0.02;
    assert!(gap > 0.1, "no pause between sentences: {s:?}");
    let music_level = mean_volume(&out, gap_start, gap);
    let speech_level = mean_volume(&out, s[1].start, s[1].duration);
    assert!(
        music_level > -45.0,
        "no music in the pause: {music_level} dB"
    );
    assert!(
        speech_level > music_level,
        "music ({music_level} dB) louder than the voice ({speech_level} dB)"
    );

    // The story, in order.
    // The story is told by the log events; each stage also records `stage_completed` (below).
    let story: Vec<&str> = messages
        .iter()
        .filter(|m| {
            !m.starts_with("Rendering: ")
                && !m.starts_with("Completed stage: ")
                && !m.starts_with("Voice: ")
        })
        .map(String::as_str)
        .collect();
    let completed: Vec<String> = rec
        .events
        .borrow()
        .iter()
        .filter(|e| e.kind == Kind::StageCompleted)
        .filter_map(|e| e.payload.as_ref()?["stage"].as_str().map(str::to_owned))
        .collect();
    let every: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(completed, every);
    let expected_prefix = [
        "Starting video generation...",
        "Generating script with model: caller script",
        "Script generated successfully",
    ];
    assert_eq!(&story[..3], &expected_prefix, "{story:#?}");
    let searches = story
        .iter()
        .filter(|m| m.starts_with("Searching for footage: "))
        .count();
    assert_eq!(searches, 3, "{story:#?}");
    assert_eq!(
        &story[3 + searches..],
        &[
            "Downloaded 3 video clips",
            "Generating voiceover with espeak-ng",
            "Adding background music",
            "Generating subtitles",
            "Rendering final video with subtitles...",
            "Generated title, description and keywords",
            "Video generation complete",
        ],
        "{story:#?}"
    );
    let events = rec.events.borrow();
    let payload = |msg: &str| {
        events
            .iter()
            .find(|e| e.message.starts_with(msg))
            .and_then(|e| e.payload.clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(payload("Searching for footage")["searchTerm"], "octopuses");
    assert_eq!(payload("Downloaded")["clipCount"], 3);
    assert_eq!(payload("Generating voiceover")["voice"], "en_us_006");
    assert!(payload("Script generated")["wordCount"]
        .as_u64()
        .is_some_and(|n| n > 20));
    assert_eq!(
        payload("Rendering final")["subtitlesPosition"],
        "center,bottom"
    );
    assert_eq!(payload("Rendering final")["color"], "#FFFF00");
    assert_eq!(
        payload("Video generation complete")["outputPath"],
        out.display().to_string()
    );

    // Progress: only during the render, monotonic in [0, 1], ending at 1.
    let render_at = messages
        .iter()
        .position(|m| m == "Rendering final video with subtitles...")
        .unwrap_or(0);
    let progress: Vec<(usize, f64)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == Kind::Progress)
        .map(|(i, e)| {
            (
                i,
                e.payload
                    .as_ref()
                    .and_then(|p| p["progress"].as_f64())
                    .unwrap_or(-1.0),
            )
        })
        .collect();
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(
        progress
            .iter()
            .all(|&(i, p)| i > render_at && (0.0..=1.0).contains(&p)),
        "{progress:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0].1 <= w[1].1),
        "not monotonic: {progress:?}"
    );
    assert_eq!(progress.last().map(|p| p.1), Some(1.0));

    // The subtitles carry the tricky text escaped, timed within the video.
    let ass = std::fs::read_to_string(cx.artifacts.subtitles.as_ref().unwrap()).unwrap();
    assert!(
        ass.contains("\\{through\\}") && ass.contains("C:\\\u{2060}New"),
        "{ass}"
    );
    assert!(ass.contains("心臓は"), "{ass}");
}

#[tokio::test]
async fn the_offline_writer_and_generated_footage_make_a_video_without_a_script() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(root.path());
    cfg.footage.clips = 2;
    let (_handle, stop) = StopSignal::pair();
    let rec = Recorder::new(root.path(), None);
    let body = json!({ "videoSubject": "Honey bees", "paragraphNumber": 1, "voice": "fr_001" });
    let mut cx = context(cfg.clone(), body, root.path(), rec.clone(), stop);
    let outcome = run(&mut cx).await;
    let messages = rec.messages();
    assert!(
        matches!(outcome, Outcome::Completed),
        "{outcome:?}\n{messages:#?}"
    );
    assert!(
        messages.contains(&"Generating script with model: offline".to_string()),
        "{messages:#?}"
    );
    let warning = rec
        .events
        .borrow()
        .iter()
        .any(|e| e.level == Level::Warning && e.message.contains("offline writer"));
    assert!(warning, "{messages:#?}");
    assert!(
        !messages.iter().any(|m| m == "Adding background music"),
        "music is off: {messages:#?}"
    );
    assert!(cx
        .artifacts
        .script
        .as_deref()
        .is_some_and(|s| s.contains("Honey bees")));
}

#[tokio::test]
async fn a_missing_tool_fails_the_job_naming_the_stage_and_the_package() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(root.path());
    cfg.tools.espeak = root.path().join("no-such-espeak").display().to_string();
    let (_handle, stop) = StopSignal::pair();
    let rec = Recorder::new(root.path(), None);
    let body = json!({ "videoSubject": "Rain", "script": "It rains." });
    let mut cx = context(cfg.clone(), body, root.path(), rec.clone(), stop);
    let outcome = run(&mut cx).await;
    assert!(matches!(outcome, Outcome::Failed), "{outcome:?}");
    let events = rec.events.borrow();
    let last = events.last().expect("an error event");
    assert_eq!(last.kind, Kind::Error);
    assert!(
        last.message
            .starts_with("Failed to generate voiceover: espeak-ng was not found"),
        "{}",
        last.message
    );
    assert!(
        last.message.contains("apt-get install espeak-ng"),
        "{}",
        last.message
    );
    let p = last.payload.clone().unwrap_or(Value::Null);
    assert_eq!(
        (p["stage"].as_str(), p["error"].as_str()),
        (Some("voice"), Some("ToolMissing"))
    );
}

#[tokio::test]
async fn a_stop_during_the_render_kills_ffmpeg_within_a_second() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(root.path());
    // Big and slow enough that the render is still running when progress first shows.
    cfg.render.width = 540;
    cfg.render.height = 960;
    cfg.render.preset = crate::config::Preset::Medium;
    // Three ffmpeg processes render a third of the video each: the stop kills them all.
    cfg.render.parts = 3;
    let (handle, stop) = StopSignal::pair();
    let rec = Recorder::new(root.path(), Some(handle));
    let script = "Bees dance to tell each other where flowers are. ".repeat(6);
    let body = json!({ "videoSubject": "Bees", "script": script });
    let mut cx = context(cfg.clone(), body, root.path(), rec.clone(), stop);
    let outcome = run(&mut cx).await;
    let returned = Instant::now();
    let messages = rec.messages();
    assert!(
        matches!(outcome, Outcome::Stopped(StopReason::Cancelled)),
        "{outcome:?}\n{messages:#?}"
    );
    let stopped_at = rec
        .stopped_at
        .get()
        .expect("the stop fired during the render");
    assert!(
        returned - stopped_at < Duration::from_secs(1),
        "took {:?}",
        returned - stopped_at
    );
    let pgid = rec
        .ffmpeg_pgid
        .get()
        .expect("ffmpeg was running when the stop fired");
    assert!(
        !group_exists(pgid),
        "ffmpeg's process group {pgid} is still alive"
    );
    assert_eq!(
        find_pgid("ffmpeg", &rec.marker),
        None,
        "an ffmpeg of the render is still running"
    );
    assert!(!cx.output_path.exists(), "no output for a stopped render");
    let left = render_leftovers(&cx.work_dir);
    assert!(left.is_empty(), "partial files left: {left:?}");
    assert!(!messages.iter().any(|m| m == "Video generation complete"));
}

#[tokio::test]
async fn a_song_library_replaced_after_the_music_stage_does_not_break_the_render() {
    let root = tempfile::tempdir().unwrap();
    let cfg = tiny_config(root.path());
    let library = root.path().join("songs");
    make_song(&library);
    let (_handle, stop) = StopSignal::pair();
    let rec = Recorder::new(root.path(), None);
    // Right after the music stage chose its song, an upload replaces the whole library.
    let (lib, staged) = (library.clone(), root.path().join("staged-song"));
    rec.after_stage("music", move || {
        let staging = crate::songs::staging_dir(&lib);
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("other.mp3"), b"not even audio").unwrap();
        crate::songs::replace(&staging, &lib).unwrap();
        std::fs::write(staged, b"replaced").unwrap();
    });
    let body = json!({
        "videoSubject": "Songs",
        "script": "Octopuses have three hearts. The third one serves the body.",
        "useMusic": true,
    });
    let mut cx = context(cfg, body, root.path(), rec.clone(), stop);
    let outcome = run(&mut cx).await;
    assert!(
        root.path().join("staged-song").exists(),
        "the hook never ran"
    );
    assert!(
        matches!(outcome, Outcome::Completed),
        "{outcome:?}\n{:#?}",
        rec.messages()
    );
    // The job rendered its own link to the song it chose, inside its folder.
    let song = cx.artifacts.music.clone().expect("a song");
    assert!(song.starts_with(&cx.work_dir), "{}", song.display());
    assert_eq!(song.file_name().unwrap(), "tone.mp3");
    assert!(!library.join("tone.mp3").exists());
    let probe = ffprobe_json(cx.artifacts.output.as_ref().unwrap());
    assert_eq!(
        probe["streams"].as_array().map(Vec::len),
        Some(2),
        "{probe}"
    );
}

/// The render's own files (`render.*`: partial output, parts, their list) left in `work_dir`.
fn render_leftovers(work_dir: &Path) -> Vec<String> {
    std::fs::read_dir(work_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("render."))
                .collect()
        })
        .unwrap_or_default()
}

/// Per-frame SSIM ("All") of `a` against `b`, in frame order.
fn ssim_per_frame(a: &Path, b: &Path, stats: &Path) -> Vec<f64> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .arg("-lavfi")
        .arg(format!(
            "[0:v][1:v]ssim=stats_file={}",
            super::render::filter_escape_path(&stats.to_string_lossy())
        ))
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(stats)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split("All:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test]
async fn a_render_in_parts_shows_the_frames_of_one_process_render() {
    // Lossless renders of one composition (clips cycling, music, captions throughout), in one
    // process and in three parts joined by copy: every frame is the same, so each part starts its
    // clips where the one before left off and its captions at their place on the timeline.
    let root = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(root.path());
    cfg.render.crf = 0;
    cfg.render.parts = 1;
    cfg.footage.seconds_per_clip = 1.5;
    make_song(&root.path().join("songs"));
    let (_handle, stop) = StopSignal::pair();
    let rec = Recorder::new(root.path(), None);
    let body = json!({
        "videoSubject": "Why octopuses have three hearts",
        "script": SCRIPT,
        "useMusic": true,
        "subtitlesPosition": "center,center",
    });
    let mut cx = context(cfg.clone(), body, root.path(), rec.clone(), stop);
    let outcome = run(&mut cx).await;
    assert!(
        matches!(outcome, Outcome::Completed),
        "{outcome:?}\n{:#?}",
        rec.messages()
    );
    let whole = root.path().join("one-process.mp4");
    std::fs::rename(&cx.output_path, &whole).unwrap();

    cfg.render.parts = 3;
    cx.config = Arc::new(cfg);
    let parted = cx.output_path.clone();
    super::render::run(&mut cx).await.expect("render in parts");
    let frames = |p: &Path| {
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v", "-count_packets"])
            .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
            .arg(p)
            .output()
            .expect("ffprobe runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let n = frames(&whole);
    assert!(n > 90, "{n} frames");
    assert_eq!(frames(&parted), n);
    let ssim = ssim_per_frame(&parted, &whole, &root.path().join("ssim.log"));
    assert_eq!(ssim.len() as u64, n);
    let worst = ssim
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, v)| (i, *v));
    assert!(
        ssim.iter().all(|&v| v > 0.9999),
        "frames differ; worst (frame, SSIM): {worst:?}"
    );
    let probe = ffprobe_json(&parted);
    assert!(
        probe["streams"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["codec_type"] == "audio")),
        "{probe}"
    );
    let left = render_leftovers(&cx.work_dir);
    assert!(left.is_empty(), "part files left: {left:?}");
}
