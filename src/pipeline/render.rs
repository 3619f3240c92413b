//! Render stage: clips, voice, music and subtitles to the final MP4, in one ffmpeg process or in
//! `render.parts` at once (one per core by default: one ffmpeg decodes and filters on one thread).
//! A part renders a stretch of the timeline, video only, with the same chains as the whole: its
//! clips resume where the part before left them (`trim=start_frame`), its captions are shifted to
//! their place in the video; the parts are joined by the concat demuxer without re-encoding, with
//! the audio mixed and encoded once (lossless parts give the one-process render's frames exactly).
//! The chains, in one process or in a part:
//!
//! Each clip is one looped input (`-stream_loop -1`, few decoder threads; two at least for a clip of
//! more than twice the frame's pixels); its chain drops the frames of a clip faster than the video
//! before anything else, crops to the
//! video's aspect ratio (the request's `aspectRatio`; centre crop: no letterbox, no stretch),
//! scales, sets the frame rate, and is cut by the `segment` filter into the consecutive pieces of the timeline it fills, so a clip shown twice
//! continues where it left off and only the clip on screen is decoded. Segments of
//! `seconds_per_clip` cycle through the clips and add up to exactly the voiceover's frame count; the
//! concatenation gets the subtitles burnt in (`ass`), the voice is mixed with the looped music at
//! `music.volume` (`amix`, `duration=first`, no normalisation, so the voice keeps its level), and the
//! output is H.264 + AAC with `+faststart`, cut with `-t` to the voice's duration. It is written to a
//! temporary file in the job folder and renamed onto `output_path` only when ffmpeg succeeded.
//! Progress events come from `-progress pipe:1`, monotonic in [0, 1], at most four per second.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::info;

use super::process::{self, Tool};
use super::{JobContext, StageError, StopReason, StopSignal};
use crate::config::Preset;
use crate::event::NewEvent;

/// Least time between two progress events.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// A centred crop window, in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub w: u32,
    pub h: u32,
    pub x: u32,
    pub y: u32,
}

/// The largest centred window of a `sw`x`sh` source with the `dw`:`dh` aspect (even sides, within
/// the source): scaling it to `dw`x`dh` neither letterboxes nor stretches.
pub fn crop_for(sw: u32, sh: u32, dw: u32, dh: u32) -> Crop {
    let (sw64, sh64, dw64, dh64) = (
        u64::from(sw),
        u64::from(sh),
        u64::from(dw.max(1)),
        u64::from(dh.max(1)),
    );
    let even_within = |v: u64, max: u64| -> u32 {
        let e = (v + 1) & !1; // round half up to even
        let e = if e > max { max & !1 } else { e };
        e.max(2.min(max)) as u32
    };
    if sw64 * dh64 > sh64 * dw64 {
        // Wider than the target: keep the full height, cut the sides.
        let w = even_within((sh64 * dw64 + dh64 / 2) / dh64, sw64);
        Crop {
            w,
            h: sh,
            x: (sw - w) / 2,
            y: 0,
        }
    } else {
        // Taller (or equal): keep the full width, cut top and bottom.
        let h = even_within((sw64 * dh64 + dw64 / 2) / dw64, sh64);
        let h = if sw64 * dh64 == sh64 * dw64 { sh } else { h };
        Crop {
            w: sw,
            h,
            x: 0,
            y: (sh - h) / 2,
        }
    }
}

/// One stretch of the timeline: `frames` frames of clip `clip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub clip: usize,
    pub frames: u64,
}

/// Segments of `seconds_per_clip` cycling through `clips` clips, whose frames add up to exactly
/// `ceil(duration * fps)`; the last one takes the remainder.
pub fn plan_segments(duration: f64, seconds_per_clip: f64, fps: u32, clips: usize) -> Vec<Segment> {
    let total = (duration.max(0.0) * f64::from(fps) - 1e-6).ceil().max(1.0) as u64;
    let per = (seconds_per_clip * f64::from(fps)).round().max(1.0) as u64;
    let clips = clips.max(1);
    let mut out = Vec::new();
    let mut done = 0;
    while done < total {
        let frames = per.min(total - done);
        out.push(Segment {
            clip: out.len() % clips,
            frames,
        });
        done += frames;
    }
    out
}

/// A probed footage clip.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipInfo {
    pub path: PathBuf,
    /// Displayed size (after rotation metadata).
    pub width: u32,
    pub height: u32,
    /// Average frame rate; 0 when unknown.
    pub fps: f64,
}

/// Escapes a path for use as a filter option inside a filtergraph (two levels: the option value,
/// then the graph).
pub fn filter_escape_path(p: &str) -> String {
    let mut level1 = String::with_capacity(p.len() + 8);
    for c in p.chars() {
        if matches!(c, '\\' | ':' | '\'') {
            level1.push('\\');
        }
        level1.push(c);
    }
    let mut level2 = String::with_capacity(level1.len() + 8);
    for c in level1.chars() {
        if matches!(c, '\\' | '\'' | '[' | ']' | ',' | ';') {
            level2.push('\\');
        }
        level2.push(c);
    }
    level2
}

/// Everything one render needs.
#[derive(Clone, Debug)]
pub struct RenderPlan {
    pub clips: Vec<ClipInfo>,
    pub voice: PathBuf,
    /// Song and its volume (0..1).
    pub music: Option<(PathBuf, f64)>,
    pub subtitles: Option<PathBuf>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds_per_clip: f64,
    pub duration: f64,
    pub preset: Preset,
    pub crf: u32,
    /// Encoder threads; 0 lets ffmpeg decide.
    pub threads: u32,
    /// Decoder threads per clip input; 0 lets ffmpeg decide.
    pub decoder_threads: u32,
    /// Extra libx264 options (`-x264-params`); empty for none.
    pub x264_params: String,
    /// ffmpeg processes that render stretches of the timeline at once (1: one process).
    pub parts: u32,
    pub audio_bitrate: String,
    pub output: PathBuf,
}

/// A stretch of the timeline that one ffmpeg process renders: frames `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

/// One clip's share of a span: `frames` frames of `clip`, from frame `offset` of its looped stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    clip: usize,
    offset: u64,
    frames: u64,
}

/// The pieces of `segments` inside `span`, in timeline order.
fn pieces(segments: &[Segment], clips: usize, span: Span) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut used = vec![0_u64; clips.max(1)];
    let mut at = 0_u64;
    for s in segments {
        let (from, to) = (at.max(span.start), (at + s.frames).min(span.end));
        if from < to {
            out.push(Piece {
                clip: s.clip,
                offset: used[s.clip] + (from - at),
                frames: to - from,
            });
        }
        used[s.clip] += s.frames;
        at += s.frames;
    }
    out
}

/// `parts` spans of near-equal length covering `total` frames, each at least `min_frames` long
/// (fewer spans when the timeline is short; one at least).
pub fn plan_spans(total: u64, parts: u32, min_frames: u64) -> Vec<Span> {
    let by_length = (total / min_frames.max(1)).max(1);
    let n = u64::from(parts.max(1)).min(by_length);
    (0..n)
        .map(|i| Span {
            start: total * i / n,
            end: total * (i + 1) / n,
        })
        .collect()
}

/// Total frames of `plan`'s timeline and its segments.
fn timeline(plan: &RenderPlan) -> (u64, Vec<Segment>) {
    let segments = plan_segments(
        plan.duration,
        plan.seconds_per_clip,
        plan.fps,
        plan.clips.len(),
    );
    (segments.iter().map(|s| s.frames).sum(), segments)
}

/// The video chains of `span` (clip chains, pieces, concat, subtitles), ending in `[vout]`, and the
/// clips they read, in input order. With `every_input`, input `i` is clip `i` (unused clips are
/// opened and ignored); else the inputs are the clips the span reads.
fn video_graph(
    plan: &RenderPlan,
    segments: &[Segment],
    span: Span,
    every_input: bool,
) -> (Vec<String>, Vec<usize>) {
    let n_clips = plan.clips.len();
    let pieces = pieces(segments, n_clips, span);
    // Per clip: which pieces it fills, in order (consecutive stretches of its looped stream).
    let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n_clips];
    for (k, p) in pieces.iter().enumerate() {
        uses[p.clip].push(k);
    }
    let inputs: Vec<usize> = (0..n_clips)
        .filter(|&c| every_input || !uses[c].is_empty())
        .collect();
    let mut parts: Vec<String> = Vec::new();
    for (input, &c) in inputs.iter().enumerate() {
        if uses[c].is_empty() {
            continue;
        }
        let clip = &plan.clips[c];
        let crop = crop_for(clip.width, clip.height, plan.width, plan.height);
        let resize = format!(
            "crop={}:{}:{}:{},scale={}:{}:flags=bicubic,setsar=1",
            crop.w, crop.h, crop.x, crop.y, plan.width, plan.height
        );
        // A clip faster than the video drops its extra frames before they are scaled (a 60 fps
        // clip: half the scaling); a slower or unknown one repeats frames after, so each source
        // frame is scaled once. Either way the frames are the same.
        let mut chain = if clip.fps > f64::from(plan.fps) + 0.01 {
            format!("[{input}:v]fps={},{resize},format=yuv420p", plan.fps)
        } else {
            format!("[{input}:v]{resize},fps={},format=yuv420p", plan.fps)
        };
        // A later span starts where the clip's earlier pieces (in earlier spans) left off.
        let skip = pieces[uses[c][0]].offset;
        if skip > 0 {
            chain.push_str(&format!(",trim=start_frame={skip}"));
        }
        let labels: Vec<String> = uses[c].iter().map(|k| format!("[c{c}s{k}]")).collect();
        if uses[c].len() > 1 {
            // Cut points: cumulative frame counts of this clip's pieces but the last.
            let mut acc = 0;
            let cuts: Vec<String> = uses[c][..uses[c].len() - 1]
                .iter()
                .map(|&k| {
                    acc += pieces[k].frames;
                    acc.to_string()
                })
                .collect();
            chain.push_str(&format!(",segment=frames={}", cuts.join("|")));
        }
        chain.push_str(&labels.concat());
        parts.push(chain);
    }
    let mut concat_inputs = String::new();
    for (k, p) in pieces.iter().enumerate() {
        parts.push(format!(
            "[c{}s{k}]trim=end_frame={},setpts=N/FRAME_RATE/TB[v{k}]",
            p.clip, p.frames
        ));
        concat_inputs.push_str(&format!("[v{k}]"));
    }
    let after_concat = match &plan.subtitles {
        // The subtitles are timed on the whole video: a later span is shifted to its place on
        // the timeline for them, then back to start at zero.
        Some(path) if span.start > 0 => format!(
            ",setpts=PTS+{}/{}/TB,ass=filename={},setpts=PTS-STARTPTS",
            span.start,
            plan.fps,
            filter_escape_path(&path.to_string_lossy())
        ),
        Some(path) => format!(
            ",ass=filename={}",
            filter_escape_path(&path.to_string_lossy())
        ),
        None => String::new(),
    };
    parts.push(format!(
        "{concat_inputs}concat=n={}:v=1:a=0{after_concat}[vout]",
        pieces.len()
    ));
    (parts, inputs)
}

/// The audio chains, voice at input `voice_idx` and the song after it: `[aout]`.
fn audio_graph(plan: &RenderPlan, voice_idx: usize) -> Vec<String> {
    let voice_chain =
        format!("[{voice_idx}:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo");
    match &plan.music {
        Some((_, volume)) => vec![
            format!("{voice_chain}[voice]"),
            format!(
                "[{}:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,volume={volume:.3}[music]",
                voice_idx + 1
            ),
            "[voice][music]amix=inputs=2:duration=first:dropout_transition=0:normalize=0[aout]"
                .into(),
        ],
        None => vec![format!("{voice_chain}[aout]")],
    }
}

/// The filtergraph of `plan` in one process (video chains, concat, subtitles, audio mix): outputs
/// `[vout]`, `[aout]`.
pub fn build_filtergraph(plan: &RenderPlan) -> String {
    let (total, segments) = timeline(plan);
    let (mut parts, inputs) = video_graph(
        plan,
        &segments,
        Span {
            start: 0,
            end: total,
        },
        true,
    );
    parts.extend(audio_graph(plan, inputs.len()));
    parts.join(";")
}

/// Decoder threads of `clip`: `plan.decoder_threads`, but at least 2 for a clip of more than twice
/// the frame's pixels (4K footage in a 1080p video), whose decoding is then the slowest step of the
/// render (8 s of 3840x2160 at 60 fps: 10.6-17 CPU seconds to decode, against 3 for 8 s of a
/// 1080p clip decoded and scaled) and would otherwise run on one core while the other waits.
fn decoder_threads(plan: &RenderPlan, clip: &ClipInfo) -> u32 {
    let big = u64::from(clip.width) * u64::from(clip.height)
        > 2 * u64::from(plan.width) * u64::from(plan.height);
    if big && plan.decoder_threads > 0 {
        plan.decoder_threads.max(2)
    } else {
        plan.decoder_threads
    }
}

/// `-threads N -stream_loop -1 -i <clip>` of each clip of `inputs`.
fn clip_inputs(plan: &RenderPlan, inputs: &[usize]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for &c in inputs {
        let clip = &plan.clips[c];
        let threads = decoder_threads(plan, clip);
        if threads > 0 {
            a.push("-threads".into());
            a.push(threads.to_string().into());
        }
        a.extend([
            "-stream_loop".into(),
            "-1".into(),
            "-i".into(),
            clip.path.clone().into_os_string(),
        ]);
    }
    a
}

/// The voice and the looped song as inputs.
fn audio_inputs(plan: &RenderPlan) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-i".into(), plan.voice.clone().into_os_string()];
    if let Some((song, _)) = &plan.music {
        a.extend([
            "-stream_loop".into(),
            "-1".into(),
            "-i".into(),
            song.clone().into_os_string(),
        ]);
    }
    a
}

/// The quiet prelude and `-progress pipe:1`.
fn prelude() -> Vec<OsString> {
    process::FFMPEG_QUIET
        .iter()
        .chain(["-nostats", "-progress", "pipe:1"].iter())
        .map(OsString::from)
        .collect()
}

/// libx264 as configured, at the video's frame rate.
fn video_encoder(plan: &RenderPlan) -> Vec<OsString> {
    let mut a: Vec<String> = vec![
        "-c:v".into(),
        "libx264".into(),
        "-preset".into(),
        plan.preset.as_str().into(),
        "-crf".into(),
        plan.crf.to_string(),
    ];
    if !plan.x264_params.is_empty() {
        a.extend(["-x264-params".into(), plan.x264_params.clone()]);
    }
    a.extend([
        "-pix_fmt".into(),
        "yuv420p".into(),
        "-r".into(),
        plan.fps.to_string(),
    ]);
    a.into_iter().map(OsString::from).collect()
}

/// AAC at the configured bitrate, `+faststart`, cut to the voice's duration.
fn audio_encoder_and_cut(plan: &RenderPlan) -> Vec<OsString> {
    [
        "-c:a".into(),
        "aac".into(),
        "-b:a".into(),
        plan.audio_bitrate.clone(),
        "-movflags".into(),
        "+faststart".into(),
        "-t".into(),
        format!("{:.3}", plan.duration),
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// `-threads N` of the encoder, when set.
fn encoder_threads(threads: u32) -> Vec<OsString> {
    if threads > 0 {
        vec!["-threads".into(), threads.to_string().into()]
    } else {
        Vec::new()
    }
}

/// The full ffmpeg argument list of `plan` in one process, writing to `plan.output`.
pub fn build_args(plan: &RenderPlan) -> Vec<OsString> {
    let mut a = prelude();
    let every: Vec<usize> = (0..plan.clips.len()).collect();
    a.extend(clip_inputs(plan, &every));
    a.extend(audio_inputs(plan));
    a.push("-filter_complex".into());
    a.push(build_filtergraph(plan).into());
    a.extend(["-map", "[vout]", "-map", "[aout]"].map(OsString::from));
    a.extend(video_encoder(plan));
    a.extend(audio_encoder_and_cut(plan));
    a.extend(encoder_threads(plan.threads));
    a.extend([
        "-f".into(),
        "mp4".into(),
        plan.output.clone().into_os_string(),
    ]);
    a
}

/// How `plan` is rendered: the spans of its timeline, one ffmpeg process each, run at once. One
/// span renders the whole video in one process as [`build_args`] says; more write each span's
/// video to a part file, then [`build_mux_args`] joins them (stream copy) with the audio.
pub fn plan_render(plan: &RenderPlan) -> Vec<Span> {
    let (total, _) = timeline(plan);
    // A part shorter than two seconds gains less than its process and its seek cost.
    plan_spans(total, plan.parts.max(1), u64::from(plan.fps) * 2)
}

/// The ffmpeg argument list of `span`'s part: its video alone, to `out`. Each part encodes on
/// `plan.threads` threads, or on its share of the machine's cores when that is 0.
pub fn build_part_args(plan: &RenderPlan, span: Span, parts: usize, out: &Path) -> Vec<OsString> {
    let (_, segments) = timeline(plan);
    let (graph, inputs) = video_graph(plan, &segments, span, false);
    let mut a = prelude();
    a.extend(clip_inputs(plan, &inputs));
    a.push("-filter_complex".into());
    a.push(graph.join(";").into());
    a.extend(["-map", "[vout]"].map(OsString::from));
    a.extend(video_encoder(plan));
    let threads = if plan.threads > 0 {
        plan.threads
    } else {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / parts.max(1)).max(1) as u32
    };
    a.extend(encoder_threads(threads));
    a.extend(["-f".into(), "mp4".into(), out.as_os_str().to_owned()]);
    a
}

/// The ffmpeg argument list that joins the parts listed in `list` (ffmpeg's concat demuxer, the
/// video copied) with the voice and music, writing to `plan.output`.
pub fn build_mux_args(plan: &RenderPlan, list: &Path) -> Vec<OsString> {
    let mut a = prelude();
    a.extend(["-f", "concat", "-safe", "0", "-i"].map(OsString::from));
    a.push(list.as_os_str().to_owned());
    a.extend(audio_inputs(plan));
    a.push("-filter_complex".into());
    a.push(audio_graph(plan, 1).join(";").into());
    a.extend(["-map", "0:v", "-map", "[aout]", "-c:v", "copy"].map(OsString::from));
    a.extend(audio_encoder_and_cut(plan));
    a.extend([
        "-f".into(),
        "mp4".into(),
        plan.output.clone().into_os_string(),
    ]);
    a
}

/// Width and height of the first video stream of `path`, as displayed (rotation applied).
pub async fn probe_clip(
    stop: &StopSignal,
    ffprobe: &Tool,
    path: &Path,
) -> Result<ClipInfo, StageError> {
    let args: Vec<OsString> = vec![
        "-v".into(),
        "error".into(),
        "-select_streams".into(),
        "v:0".into(),
        "-show_entries".into(),
        "stream=width,height,avg_frame_rate:stream_tags=rotate:stream_side_data=rotation".into(),
        "-of".into(),
        "json".into(),
        path.as_os_str().to_owned(),
    ];
    let out = process::run(stop, ffprobe, &args).await?;
    parse_probe(&out.stdout)
        .ok_or_else(|| {
            StageError::failed(
                "BadFootage",
                format!("{} has no readable video stream", path.display()),
            )
        })
        .map(|(width, height, fps)| ClipInfo {
            path: path.to_path_buf(),
            width,
            height,
            fps,
        })
}

/// (width, height, frame rate) from ffprobe's JSON, the sides swapped for a ±90° rotation; the
/// rate 0 when it is missing or not a positive `num/den`.
fn parse_probe(json_bytes: &[u8]) -> Option<(u32, u32, f64)> {
    let v: Value = serde_json::from_slice(json_bytes).ok()?;
    let s = v.get("streams")?.get(0)?;
    let w = u32::try_from(s.get("width")?.as_u64()?).ok()?;
    let h = u32::try_from(s.get("height")?.as_u64()?).ok()?;
    if w == 0 || h == 0 {
        return None;
    }
    let tag = s
        .get("tags")
        .and_then(|t| t.get("rotate"))
        .and_then(|r| r.as_str())
        .and_then(|r| r.parse::<i64>().ok());
    let side = s
        .get("side_data_list")
        .and_then(|l| l.as_array())
        .and_then(|l| {
            l.iter()
                .find_map(|d| d.get("rotation").and_then(Value::as_i64))
        });
    let rot = side.or(tag).unwrap_or(0).rem_euclid(180);
    let fps = s
        .get("avg_frame_rate")
        .and_then(Value::as_str)
        .and_then(|r| r.split_once('/'))
        .and_then(|(n, d)| Some((n.parse::<f64>().ok()?, d.parse::<f64>().ok()?)))
        .filter(|&(n, d)| n > 0.0 && d > 0.0)
        .map_or(0.0, |(n, d)| n / d);
    let (w, h) = if rot == 90 { (h, w) } else { (w, h) };
    Some((w, h, fps))
}

/// An I/O failure on `path`; a full disk is named as such (the folder, or the file's folder).
fn io_failed(what: &str, path: &Path, e: std::io::Error) -> StageError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        return StageError::disk_full(dir);
    }
    StageError::failed("Io", format!("cannot {what} {}: {e}", path.display()))
}

/// `Failed to render video: no space left on <dir>` instead of ffmpeg's own lines, when the disk
/// ffmpeg wrote to filled up.
fn out_of_space(e: StageError, dir: &Path) -> StageError {
    match &e {
        StageError::Failed { message, .. } if message.contains(super::NO_SPACE) => {
            StageError::disk_full(dir)
        }
        _ => e,
    }
}

/// Moves `from` onto `to`, copying when they are on different file systems.
async fn move_file(from: &Path, to: &Path) -> Result<(), StageError> {
    match tokio::fs::rename(from, to).await {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            tokio::fs::copy(from, to)
                .await
                .map_err(|e| io_failed("write", to, e))?;
            let _ = tokio::fs::remove_file(from).await;
            Ok(())
        }
        Err(e) => Err(io_failed("move the video to", to, e)),
    }
}

/// Runs one ffmpeg process per argument list at once (each holds `-progress pipe:1`) and reports
/// their progress, the sum of their output times, as fractions of `duration` through `report`:
/// monotonic, below 1.0 (sent once the file is in place), at most one per [`PROGRESS_INTERVAL`].
/// The processes run under a signal of their own, fired by the job's stop, by the first process
/// to fail and by a report that fails (the event was refused: the job was cancelled or taken
/// over): each then kills its process group and reaps its ffmpeg, and this returns only once all
/// have, with the first real error (a failure before a stop it caused).
async fn encode_reporting<F, Fut>(
    stop: &StopSignal,
    ffmpeg: &Tool,
    runs: &[Vec<OsString>],
    duration: f64,
    mut report: F,
) -> Result<(), StageError>
where
    F: FnMut(f64) -> Fut,
    Fut: std::future::Future<Output = Result<(), StageError>>,
{
    let (halt, parts_stop) = StopSignal::pair();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, f64)>();
    let (halt, parts_stop) = (&halt, &parts_stop);
    let encode = futures_util::future::join_all(runs.iter().enumerate().map(|(i, args)| {
        let tx = tx.clone();
        async move {
            let mut on_time = |t: f64| {
                let _ = tx.send((i, t));
            };
            let r = process::run_with_progress(parts_stop, ffmpeg, args, &mut on_time).await;
            if r.is_err() {
                // The reason is not reported: the others' `Stopped` gives way to this error.
                halt.stop(StopReason::Cancelled);
            }
            r
        }
    }));
    drop(tx);
    let n = runs.len();
    let reporter = async move {
        let mut times = vec![0.0_f64; n];
        let mut last = 0.0_f64;
        let mut last_at = Instant::now();
        while let Some((i, t)) = rx.recv().await {
            times[i] = t;
            let f = (times.iter().sum::<f64>() / duration).clamp(0.0, 0.99);
            if f >= last + 0.001 && last_at.elapsed() >= PROGRESS_INTERVAL {
                if let Err(e) = report(f).await {
                    halt.stop(StopReason::Cancelled);
                    return Err(e);
                }
                last = f;
                last_at = Instant::now();
            }
        }
        Ok::<(), StageError>(())
    };
    let forward = async {
        let reason = stop.stopped().await;
        halt.stop(reason);
        std::future::pending::<()>().await
    };
    let (results, reported) = tokio::select! {
        both = async { tokio::join!(encode, reporter) } => both,
        _ = forward => unreachable!("forwarding a stop never ends"),
    };
    reported?;
    let mut stopped = None;
    for r in results {
        match r {
            Ok(_) => {}
            Err(StageError::Stopped(reason)) => stopped = stopped.or(Some(reason)),
            Err(e) => return Err(e),
        }
    }
    match stopped {
        // The job's own reason when it was the job's stop.
        Some(reason) => Err(StageError::Stopped(stop.reason().unwrap_or(reason))),
        None => Ok(()),
    }
}

/// The part files of a render in `work_dir` and the concat list naming them; removed when dropped.
struct Parts {
    files: Vec<PathBuf>,
    list: PathBuf,
}

impl Parts {
    fn new(work_dir: &Path, n: usize) -> Parts {
        Parts {
            files: (0..n)
                .map(|i| work_dir.join(format!("render.part{i}.mp4")))
                .collect(),
            list: work_dir.join("render.parts.txt"),
        }
    }

    /// The concat demuxer's list: the parts by file name (they sit next to it).
    fn list_text(&self) -> String {
        self.files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|f| format!("file '{}'\n", f.to_string_lossy()))
            .collect()
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        for f in self.files.iter().chain(std::iter::once(&self.list)) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The render stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    let cfg = cx.config.clone();
    cx.emit(
        "render",
        NewEvent::info("Rendering final video with subtitles...").with_payload(json!({
            "subtitlesPosition": cx.request.position_text(),
            "subtitlesStyle": cx.request.subtitles_style.as_str(),
            "aspectRatio": cx.request.aspect_ratio.as_str(),
            "color": cx.request.color,
        })),
    )
    .await?;
    let voice = cx
        .artifacts
        .voice_track
        .clone()
        .ok_or_else(|| StageError::failed("NoVoice", "there is no voiceover to render"))?;
    if cx.artifacts.clips.is_empty() {
        return Err(StageError::failed(
            "NoFootage",
            "there is no footage to render",
        ));
    }
    let duration = cx.artifacts.duration;
    if duration.is_nan() || duration <= 0.0 {
        return Err(StageError::failed("NoVoice", "the voiceover is empty"));
    }
    let ffprobe = Tool::ffprobe(&cfg);
    let mut clips = Vec::with_capacity(cx.artifacts.clips.len());
    for path in &cx.artifacts.clips {
        cx.stop.check()?;
        clips.push(probe_clip(&cx.stop, &ffprobe, path).await?);
    }
    let partial = cx.work_dir.join("render.partial.mp4");
    let (width, height) = cx.frame();
    let plan = RenderPlan {
        clips,
        voice,
        music: cx.artifacts.music.clone().map(|m| (m, cfg.music.volume)),
        subtitles: cx.artifacts.subtitles.clone(),
        width,
        height,
        fps: cfg.render.fps,
        seconds_per_clip: cfg.footage.seconds_per_clip,
        duration,
        preset: cfg.render.preset,
        crf: cfg.render.crf,
        threads: cx.request.threads.unwrap_or(cfg.render.threads),
        decoder_threads: cfg.render.decoder_threads,
        x264_params: cfg.render.x264_params.clone(),
        parts: cfg.render.parts_in_force(),
        audio_bitrate: cfg.render.audio_bitrate.clone(),
        output: partial.clone(),
    };
    let spans = plan_render(&plan);
    cx.emit("render", NewEvent::progress(0.0)).await?;

    let ffmpeg = Tool::ffmpeg(&cfg);
    let cxr: &JobContext = cx;
    let encoding = std::time::Instant::now();
    let progress = |f| async move { cxr.emit("render", NewEvent::progress(f)).await.map(|_| ()) };
    let encoded = if spans.len() == 1 {
        encode_reporting(&cx.stop, &ffmpeg, &[build_args(&plan)], duration, progress).await
    } else {
        let parts = Parts::new(&cx.work_dir, spans.len());
        let runs: Vec<Vec<OsString>> = spans
            .iter()
            .zip(&parts.files)
            .map(|(span, file)| build_part_args(&plan, *span, spans.len(), file))
            .collect();
        match encode_reporting(&cx.stop, &ffmpeg, &runs, duration, progress).await {
            Ok(()) => match tokio::fs::write(&parts.list, parts.list_text()).await {
                Ok(()) => process::run(&cx.stop, &ffmpeg, &build_mux_args(&plan, &parts.list))
                    .await
                    .map(|_| ()),
                Err(e) => Err(io_failed("write", &parts.list, e)),
            },
            Err(e) => Err(e),
        }
    };
    if let Err(e) = encoded {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(out_of_space(e, &cx.work_dir));
    }
    let took = encoding.elapsed().as_secs_f64();
    if took > 0.0 {
        crate::metrics::get().render_speed.observe(duration / took);
    }
    cx.stop.check()?;

    if let Some(parent) = cx.output_path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_failed("create", parent, e))?;
    }
    move_file(&partial, &cx.output_path).await?;
    let output = std::path::absolute(&cx.output_path).unwrap_or_else(|_| cx.output_path.clone());
    cx.emit("render", NewEvent::progress(1.0)).await?;
    info!(job = %cx.job.0, stage = "render", output = %output.display(), duration, "video rendered");
    cx.artifacts.output = Some(output);
    cx.artifacts.duration = duration;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused progress event (the job was cancelled behind the stage's back) stops the encoder
    /// at once instead of letting it run to the end.
    #[tokio::test]
    async fn a_refused_progress_report_kills_the_encoder() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "echo $$ > '{}'; i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo out_time_us=$((i*100000)); sleep 0.05; done",
            pidfile.display()
        );
        let fake = Tool {
            name: "ffmpeg",
            program: "sh".into(),
            key: "tools.ffmpeg",
            package: "ffmpeg",
        };
        let args: Vec<OsString> = vec!["-c".into(), script.into()];
        let (_h, stop) = StopSignal::pair();
        let mut reports = 0;
        let t0 = Instant::now();
        let r = encode_reporting(&stop, &fake, &[args], 60.0, |_| {
            reports += 1;
            let refuse = reports > 1;
            async move {
                if refuse {
                    Err(StageError::failed("JournalUnavailable", "event refused"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(r.unwrap_err().to_string().contains("event refused"));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the encoder outlived the refusal: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_full_disk_is_named_instead_of_quoting_ffmpeg() {
        let full = StageError::failed(
            "ToolFailed",
            "ffmpeg exited with status 1:\n[out#0/mp4 @ 0x5] Error muxing a packet\nav_interleaved_write_frame(): No space left on device",
        );
        let e = out_of_space(full, Path::new("/srv/state/jobs/j1"));
        assert_eq!(e.to_string(), "no space left on /srv/state/jobs/j1");
        assert!(matches!(e, StageError::Failed { ref error, .. } if error == "DiskFull"));
        // The render's own writes (the output folder, the move across disks) name it too.
        let dir = tempfile::tempdir().unwrap();
        let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = io_failed("create", dir.path(), full());
        assert_eq!(
            e.to_string(),
            format!("no space left on {}", dir.path().display())
        );
        let e = io_failed("write", &dir.path().join("out.mp4"), full());
        assert_eq!(
            e.to_string(),
            format!("no space left on {}", dir.path().display())
        );
        let other = StageError::failed("ToolFailed", "ffmpeg exited with status 1:\nInvalid data");
        assert_eq!(
            out_of_space(other, Path::new("/x")).to_string(),
            "ffmpeg exited with status 1:\nInvalid data"
        );
    }

    #[test]
    fn crops_fill_nine_sixteen_without_letterbox_or_stretch() {
        // 16:9 landscape: full height, sides cut.
        assert_eq!(
            crop_for(1920, 1080, 1080, 1920),
            Crop {
                w: 608,
                h: 1080,
                x: 656,
                y: 0
            }
        );
        // 4:3: full height, sides cut.
        assert_eq!(
            crop_for(1440, 1080, 1080, 1920),
            Crop {
                w: 608,
                h: 1080,
                x: 416,
                y: 0
            }
        );
        assert_eq!(
            crop_for(640, 480, 1080, 1920),
            Crop {
                w: 270,
                h: 480,
                x: 185,
                y: 0
            }
        );
        // 9:16 already: untouched.
        assert_eq!(
            crop_for(1080, 1920, 1080, 1920),
            Crop {
                w: 1080,
                h: 1920,
                x: 0,
                y: 0
            }
        );
        assert_eq!(
            crop_for(720, 1280, 1080, 1920),
            Crop {
                w: 720,
                h: 1280,
                x: 0,
                y: 0
            }
        );
        // Taller than 9:16: full width, top and bottom cut.
        assert_eq!(
            crop_for(1080, 2400, 1080, 1920),
            Crop {
                w: 1080,
                h: 1920,
                x: 0,
                y: 240
            }
        );
        // The aspect error after cropping is below one pixel.
        for (sw, sh) in [
            (1920, 1080),
            (1440, 1080),
            (1280, 720),
            (3840, 2160),
            (1000, 1000),
            (54, 96),
        ] {
            let c = crop_for(sw, sh, 180, 320);
            assert!(c.x + c.w <= sw && c.y + c.h <= sh);
            let want_w = f64::from(c.h) * 180.0 / 320.0;
            assert!((f64::from(c.w) - want_w).abs() <= 1.5, "{sw}x{sh}: {c:?}");
        }
    }

    #[test]
    fn segments_cycle_clips_and_cover_the_voice_exactly() {
        let s = plan_segments(14.5, 6.0, 30, 2);
        assert_eq!(
            s,
            vec![
                Segment {
                    clip: 0,
                    frames: 180
                },
                Segment {
                    clip: 1,
                    frames: 180
                },
                Segment {
                    clip: 0,
                    frames: 75
                },
            ]
        );
        let total: u64 = plan_segments(40.0, 6.0, 30, 5)
            .iter()
            .map(|s| s.frames)
            .sum();
        assert_eq!(total, 1200);
        let total: u64 = plan_segments(3.01, 6.0, 30, 5)
            .iter()
            .map(|s| s.frames)
            .sum();
        assert_eq!(total, 91);
    }

    #[test]
    fn filter_paths_are_escaped_for_both_levels() {
        assert_eq!(filter_escape_path("/tmp/a b/sub.ass"), "/tmp/a b/sub.ass");
        assert_eq!(
            filter_escape_path("/t/it's:[x],y;z"),
            r"/t/it\\\'s\\:\[x\]\,y\;z"
        );
    }

    fn plan(music: bool) -> RenderPlan {
        RenderPlan {
            clips: vec![
                ClipInfo {
                    path: "/c/a.mp4".into(),
                    width: 1920,
                    height: 1080,
                    fps: 0.0,
                },
                ClipInfo {
                    path: "/c/b.mp4".into(),
                    width: 1080,
                    height: 1920,
                    fps: 30.0,
                },
            ],
            voice: "/j/voice.wav".into(),
            music: music.then(|| (PathBuf::from("/s/song.mp3"), 0.1)),
            subtitles: Some("/j/subtitles.ass".into()),
            width: 1080,
            height: 1920,
            fps: 30,
            seconds_per_clip: 6.0,
            duration: 14.5,
            preset: Preset::Veryfast,
            crf: 23,
            threads: 2,
            decoder_threads: 1,
            x264_params: String::new(),
            parts: 1,
            audio_bitrate: "192k".into(),
            output: "/j/out.mp4".into(),
        }
    }

    #[test]
    fn the_filtergraph_segments_clips_and_mixes_audio() {
        let g = build_filtergraph(&plan(true));
        assert!(g.contains("[0:v]crop=608:1080:656:0,scale=1080:1920:flags=bicubic,setsar=1,fps=30,format=yuv420p,segment=frames=180[c0s0][c0s2]"), "{g}");
        assert!(g.contains("[1:v]crop=1080:1920:0:0,scale=1080:1920:flags=bicubic,setsar=1,fps=30,format=yuv420p[c1s1]"), "{g}");
        assert!(
            g.contains("[c0s2]trim=end_frame=75,setpts=N/FRAME_RATE/TB[v2]"),
            "{g}"
        );
        assert!(
            g.contains("[v0][v1][v2]concat=n=3:v=1:a=0,ass=filename=/j/subtitles.ass[vout]"),
            "{g}"
        );
        assert!(g.contains("[3:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,volume=0.100[music]"), "{g}");
        assert!(
            g.contains(
                "[voice][music]amix=inputs=2:duration=first:dropout_transition=0:normalize=0[aout]"
            ),
            "{g}"
        );
        let g = build_filtergraph(&plan(false));
        assert!(
            g.ends_with(
                "[2:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo[aout]"
            ),
            "{g}"
        );
    }

    #[test]
    fn a_clip_faster_than_the_video_drops_frames_before_it_is_scaled() {
        let mut p = plan(false);
        p.clips[0].fps = 59.94;
        p.clips[1].fps = 24.0;
        let g = build_filtergraph(&p);
        assert!(g.contains("[0:v]fps=30,crop=608:1080:656:0,scale=1080:1920:flags=bicubic,setsar=1,format=yuv420p,segment="), "{g}");
        assert!(g.contains("[1:v]crop=1080:1920:0:0,scale=1080:1920:flags=bicubic,setsar=1,fps=30,format=yuv420p[c1s1]"), "{g}");
    }

    #[test]
    fn the_arguments_loop_inputs_and_encode_as_configured() {
        let args: Vec<String> = build_args(&plan(true))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("-nostdin -y -hide_banner"), "{joined}");
        assert!(joined.contains("-threads 1 -stream_loop -1 -i /c/a.mp4 -threads 1 -stream_loop -1 -i /c/b.mp4 -i /j/voice.wav -stream_loop -1 -i /s/song.mp3 -filter_complex"), "{joined}");
        for want in [
            "-c:v libx264 -preset veryfast -crf 23",
            "-c:a aac -b:a 192k",
            "-movflags +faststart",
            "-t 14.500",
            "-threads 2 -f mp4 /j/out.mp4",
            "-progress pipe:1",
        ] {
            assert!(joined.contains(want), "{want}: {joined}");
        }
    }

    #[test]
    fn spans_split_the_timeline_evenly_and_never_below_the_least_length() {
        let spans = plan_spans(435, 2, 60);
        assert_eq!(
            spans,
            vec![
                Span { start: 0, end: 217 },
                Span {
                    start: 217,
                    end: 435
                }
            ]
        );
        // Too short for three parts of two seconds: two.
        assert_eq!(plan_spans(150, 3, 60).len(), 2);
        assert_eq!(plan_spans(10, 8, 60), vec![Span { start: 0, end: 10 }]);
        assert_eq!(plan_spans(435, 0, 60).len(), 1);
        for (total, parts) in [(1157, 2), (1157, 3), (1157, 8), (61, 2), (1, 4)] {
            let spans = plan_spans(total, parts, 30);
            assert_eq!(spans[0].start, 0);
            assert_eq!(spans.last().map(|s| s.end), Some(total));
            assert!(spans.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn the_parts_together_show_every_clip_frame_the_whole_timeline_shows() {
        // Five segments over two clips, cut into spans at many places: the pieces of the spans,
        // joined, are the whole timeline's pieces (each clip continues where it left off).
        let segments = plan_segments(14.5, 3.0, 30, 2);
        let total: u64 = segments.iter().map(|s| s.frames).sum();
        let whole = pieces(
            &segments,
            2,
            Span {
                start: 0,
                end: total,
            },
        );
        for parts in 1..=7 {
            let mut joined: Vec<Piece> = Vec::new();
            for span in plan_spans(total, parts, 1) {
                for p in pieces(&segments, 2, span) {
                    match joined.last_mut() {
                        Some(l) if l.clip == p.clip && l.offset + l.frames == p.offset => {
                            l.frames += p.frames
                        }
                        _ => joined.push(p),
                    }
                }
            }
            assert_eq!(joined, whole, "{parts} parts");
        }
    }

    #[test]
    fn a_later_part_starts_its_clips_where_they_left_off_and_shifts_the_subtitles() {
        let p = plan(true);
        // Segments: clip 0 for 180 frames, clip 1 for 180, clip 0 for 75; 435 frames.
        let spans = plan_render(&RenderPlan {
            parts: 2,
            ..p.clone()
        });
        assert_eq!(spans.len(), 2);
        let args: Vec<String> = build_part_args(&p, spans[1], 2, Path::new("/j/render.part1.mp4"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        // Both clips, in clip order; no audio input.
        assert!(joined.contains("-threads 1 -stream_loop -1 -i /c/a.mp4 -threads 1 -stream_loop -1 -i /c/b.mp4 -filter_complex"), "{joined}");
        assert!(
            !joined.contains("voice.wav") && !joined.contains("song.mp3"),
            "{joined}"
        );
        let g = &args[args.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        // Clip 1 resumes 37 frames in (frames 180..217 went to the first part), clip 0 after its
        // first 180.
        assert!(g.contains("[1:v]crop=1080:1920:0:0,scale=1080:1920:flags=bicubic,setsar=1,fps=30,format=yuv420p,trim=start_frame=37[c1s0]"), "{g}");
        assert!(
            g.contains("format=yuv420p,trim=start_frame=180[c0s1]"),
            "{g}"
        );
        assert!(
            g.contains("[c1s0]trim=end_frame=143,setpts=N/FRAME_RATE/TB[v0]"),
            "{g}"
        );
        assert!(
            g.contains("[c0s1]trim=end_frame=75,setpts=N/FRAME_RATE/TB[v1]"),
            "{g}"
        );
        assert!(g.ends_with("[v0][v1]concat=n=2:v=1:a=0,setpts=PTS+217/30/TB,ass=filename=/j/subtitles.ass,setpts=PTS-STARTPTS[vout]"), "{g}");
        for want in [
            "-map [vout] -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p -r 30",
            "-threads 2 -f mp4 /j/render.part1.mp4",
        ] {
            assert!(joined.contains(want), "{want}: {joined}");
        }
        // The first part: clip 0 from its start, clip 1's first 37 frames, subtitles unshifted.
        let first: Vec<String> = build_part_args(&p, spans[0], 2, Path::new("/j/render.part0.mp4"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let g0 = &first[first.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert!(!g0.contains("start_frame"), "{g0}");
        assert!(
            g0.ends_with("[v0][v1]concat=n=2:v=1:a=0,ass=filename=/j/subtitles.ass[vout]"),
            "{g0}"
        );
    }

    #[test]
    fn the_parts_are_joined_by_copy_with_the_mixed_audio() {
        let p = RenderPlan {
            x264_params: "deblock=0,0:bframes=3".into(),
            ..plan(true)
        };
        let joined = build_mux_args(&p, Path::new("/j/render.parts.txt"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("-f concat -safe 0 -i /j/render.parts.txt -i /j/voice.wav -stream_loop -1 -i /s/song.mp3 -filter_complex [1:a]aresample"), "{joined}");
        assert!(joined.contains("[2:a]aresample=48000"), "{joined}");
        let want = "-map 0:v -map [aout] -c:v copy -c:a aac -b:a 192k -movflags +faststart -t 14.500 -f mp4 /j/out.mp4";
        assert!(joined.contains(want), "{want}: {joined}");
        assert!(!joined.contains("libx264"), "{joined}");
        // The encoder options go to the parts.
        let part = build_part_args(&p, Span { start: 0, end: 10 }, 2, Path::new("/j/p.mp4"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            part.contains("-crf 23 -x264-params deblock=0,0:bframes=3 -pix_fmt"),
            "{part}"
        );
        let parts = Parts::new(Path::new("/j"), 2);
        assert_eq!(
            parts.list_text(),
            "file 'render.part0.mp4'\nfile 'render.part1.mp4'\n"
        );
    }

    #[test]
    fn a_clip_far_bigger_than_the_frame_decodes_on_two_threads() {
        let mut p = plan(false);
        p.clips[0].width = 3840;
        p.clips[0].height = 2160;
        let joined = build_args(&p)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains(
                "-threads 2 -stream_loop -1 -i /c/a.mp4 -threads 1 -stream_loop -1 -i /c/b.mp4"
            ),
            "{joined}"
        );
        p.decoder_threads = 0;
        let joined = build_args(&p)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains(
                "-progress pipe:1 -stream_loop -1 -i /c/a.mp4 -stream_loop -1 -i /c/b.mp4"
            ),
            "{joined}"
        );
    }

    #[test]
    fn probe_output_is_read_with_rotation() {
        let plain = br#"{"streams":[{"width":1920,"height":1080}]}"#;
        assert_eq!(parse_probe(plain), Some((1920, 1080, 0.0)));
        let rotated =
            br#"{"streams":[{"width":1920,"height":1080,"side_data_list":[{"rotation":-90}]}]}"#;
        assert_eq!(parse_probe(rotated), Some((1080, 1920, 0.0)));
        let tagged = br#"{"streams":[{"width":1920,"height":1080,"tags":{"rotate":"270"}}]}"#;
        assert_eq!(parse_probe(tagged), Some((1080, 1920, 0.0)));
        let rated = br#"{"streams":[{"width":3840,"height":2160,"avg_frame_rate":"60000/1001"}]}"#;
        assert_eq!(parse_probe(rated), Some((3840, 2160, 60000.0 / 1001.0)));
        let unknown = br#"{"streams":[{"width":640,"height":360,"avg_frame_rate":"0/0"}]}"#;
        assert_eq!(parse_probe(unknown), Some((640, 360, 0.0)));
        assert_eq!(parse_probe(br#"{"streams":[]}"#), None);
    }
}
