//! The media pipeline end to end through the real daemon and real HTTP (issue 3): a caller's script
//! becomes a playable vertical MP4 of the configured size whose length is the voiceover's; the story
//! is told in the seed's order; a cancel during the render ends the job and its tools; an uploaded
//! song is mixed under the voice; a missing tool fails the job naming the stage.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SCRIPT: &str = "Octopuses have three hearts. Two of them pump blood through the gills. \
The third one feeds the rest of the body. Their blood is blue, because it carries copper.";

fn probe(path: &str, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Index of the first message starting with `prefix` at or after `from`.
fn find_from(msgs: &[String], from: usize, prefix: &str) -> usize {
    msgs.iter()
        .skip(from)
        .position(|m| m.starts_with(prefix))
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no `{prefix}` after position {from} in {msgs:#?}"))
}

#[test]
fn a_callers_script_becomes_a_vertical_mp4_of_the_voiceovers_length() {
    require_media_tools();
    let (d, _tmp) = Daemon::start(&offline_config(SMALL_RENDER), &[]);
    let id = d.submit(&json!({
        "videoSubject": "Octopus hearts",
        "script": SCRIPT,
        "voice": "en_us_001",
        "subtitlesPosition": "center,bottom",
        "color": "yellow",
    }));
    let job = d.wait_for_state(
        &id,
        &["completed", "failed", "cancelled"],
        Duration::from_secs(120),
    );
    assert_eq!(job["state"], "completed", "{job}\n{}", d.logs());
    let path = job["resultPath"].as_str().expect("resultPath");
    assert!(Path::new(path).is_absolute(), "{path}");
    assert!(path.ends_with(&format!("output/{id}.mp4")), "{path}");
    assert!(Path::new(path).starts_with(d.state_dir()), "{path}");

    let streams = probe(
        path,
        &[
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "csv=p=0",
        ],
    );
    let lines: Vec<&str> = streams.lines().collect();
    assert_eq!(lines.len(), 2, "{streams}");
    assert!(lines.contains(&"h264,video,180,320"), "{streams}");
    assert!(lines.contains(&"aac,audio"), "{streams}");

    let events = d.events(&id);
    let msgs = messages(&events);
    // The seed's story, in order.
    let mut at = find_from(&msgs, 0, "Job queued.");
    for step in [
        "Job started.",
        "Starting video generation...",
        "Generating script with model:",
        "Script generated successfully",
        "Searching for footage:",
        "Downloaded 2 video clips",
        "Generating voiceover with",
        "Generating subtitles",
        "Rendering final video with subtitles...",
        "Video generation complete",
    ] {
        at = find_from(&msgs, at, step);
    }
    assert_eq!(
        at,
        msgs.len() - 1,
        "the story ends with the completion: {msgs:#?}"
    );
    assert!(
        !msgs.iter().any(|m| m == "Adding background music"),
        "music was off"
    );
    let render = &events[find_from(&msgs, 0, "Rendering final video")];
    assert_eq!(render["payload"]["subtitlesPosition"], "center,bottom");
    assert_eq!(render["payload"]["color"], "yellow");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "complete");
    assert_eq!(done["level"], "success");
    assert_eq!(done["payload"]["outputPath"], path);

    // The video lasts as long as the voiceover (the completion's duration).
    let voice = done["payload"]["duration"].as_f64().expect("duration");
    let video: f64 = probe(
        path,
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
    )
    .parse()
    .unwrap();
    assert!(
        voice > 3.0,
        "voiceover of {voice} s is too short for this script"
    );
    assert!(
        (video - voice).abs() <= 0.3,
        "video {video} s vs voiceover {voice} s"
    );

    // Progress: only during the render, monotonic, within [0, 1].
    let progress: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["payload"]["progress"].as_f64().unwrap())
        .collect();
    assert!(!progress.is_empty(), "no progress events");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(
        progress.iter().all(|p| (0.0..=1.0).contains(p)),
        "{progress:?}"
    );
    assert_eq!(progress.last().copied(), Some(1.0));
    let first_progress = events.iter().position(|e| e["type"] == "progress").unwrap();
    assert!(first_progress > find_from(&msgs, 0, "Rendering final video"));

    let job = d.job(&id);
    assert_eq!(job["state"], "completed");
    assert_eq!(job["progress"], 1.0);
    assert!(job["completedAt"].is_string());
}

#[test]
fn cancel_during_the_render_ends_the_job_and_its_tools() {
    require_media_tools();
    // A full-size render with a slow preset keeps ffmpeg busy long enough to be cancelled mid-way.
    let cfg = offline_config("[render]\npreset = \"veryslow\"\n[footage]\nclips = 2\n");
    let (d, _tmp) = Daemon::start(&cfg, &[]);
    let id = d.submit(&json!({ "videoSubject": "Octopus hearts", "script": SCRIPT }));
    // A progress above 0 comes from ffmpeg's own report: the encoder is running.
    d.wait_for_event(&id, Duration::from_secs(120), |e| {
        e["type"] == "progress" && e["payload"]["progress"].as_f64().unwrap_or(0.0) > 0.0
    });
    let tools_before: Vec<u32> = descendants(d.pid());
    assert!(
        !tools_before.is_empty(),
        "ffmpeg should be running during the render"
    );

    let asked = Instant::now();
    let (s, v) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Cancellation requested.");
    let job = d.wait_for_state(
        &id,
        &["cancelled", "completed", "failed"],
        Duration::from_secs(5),
    );
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    let left = descendants(d.pid());
    assert!(
        left.is_empty(),
        "tools left running after the cancel: {left:?}"
    );
    let events = d.events(&id);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let n = kinds.len();
    assert_eq!(
        &kinds[n - 2..],
        ["cancel_requested", "cancelled"],
        "{kinds:?}"
    );
    assert!(!Path::new(&d.state_dir().join(format!("output/{id}.mp4"))).exists());
    d.assert_serving();
}

/// Mean volume (dB) of `path` between `start` and `end` seconds.
fn mean_volume(path: &str, start: f64, end: f64) -> f64 {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-ss",
            &format!("{start:.3}"),
            "-to",
            &format!("{end:.3}"),
            "-i",
            path,
        ])
        .args(["-map", "0:a", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or(-91.0)
}

/// Silent stretches (start, end) of the audio of `path`, by ffmpeg's silencedetect.
fn silences(path: &str) -> Vec<(f64, f64)> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-i",
            path,
            "-map",
            "0:a",
            "-af",
            "silencedetect=n=-50dB:d=0.15",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr);
    let mut starts = Vec::new();
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(v) = l.split("silence_start:").nth(1) {
            starts.push(v.trim().parse::<f64>().unwrap_or(0.0));
        }
        if let Some(v) = l.split("silence_end:").nth(1) {
            let end: f64 = v
                .split('|')
                .next()
                .unwrap_or("0")
                .trim()
                .parse()
                .unwrap_or(0.0);
            if let Some(s) = starts.pop() {
                out.push((s, end));
            }
        }
    }
    out
}

fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "reelsmithtestboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"songs\"; filename=\"{name}\"\r\nContent-Type: audio/mpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn an_uploaded_song_plays_under_the_voice() {
    require_media_tools();
    let (d, tmp) = Daemon::start(&offline_config(SMALL_RENDER), &[]);
    // A steady 440 Hz tone as the song.
    let song = tmp.path().join("tone.mp3");
    let st = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=4",
            "-c:a",
            "libmp3lame",
        ])
        .arg(&song)
        .status()
        .expect("ffmpeg");
    assert!(st.success());
    let (ct, body) = multipart("tone.mp3", &std::fs::read(&song).unwrap());
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Uploaded 1 song(s).");

    let run = |music: bool| {
        let id = d.submit(
            &json!({ "videoSubject": "Octopus hearts", "script": SCRIPT, "useMusic": music }),
        );
        let job = d.wait_for_state(
            &id,
            &["completed", "failed", "cancelled"],
            Duration::from_secs(120),
        );
        assert_eq!(job["state"], "completed", "{job}\n{}", d.logs());
        (id, job["resultPath"].as_str().unwrap().to_string())
    };
    let (_, plain) = run(false);
    let (with_id, with_music) = run(true);
    assert!(messages(&d.events(&with_id))
        .iter()
        .any(|m| m == "Adding background music"));

    // Where the plain render is silent (between sentences), the music render carries the song.
    let gaps = silences(&plain);
    let (a, b) = gaps
        .iter()
        .copied()
        .find(|(a, b)| b - a >= 0.15 && *a > 0.05)
        .unwrap_or_else(|| panic!("no pause between sentences found: {gaps:?}"));
    let quiet = mean_volume(&plain, a + 0.02, b - 0.02);
    let music = mean_volume(&with_music, a + 0.02, b - 0.02);
    assert!(
        quiet < -50.0,
        "the plain render is not silent there: {quiet} dB"
    );
    assert!(music > -45.0, "no music under the voice: {music} dB");
    // About 10% volume: clearly under the speech.
    let speech = mean_volume(&with_music, 0.0, 3.0);
    assert!(
        music < speech - 6.0,
        "music {music} dB is not under the speech {speech} dB"
    );
}

#[test]
fn a_missing_tool_fails_the_job_naming_the_stage() {
    require_media_tools();
    let cfg = offline_config(&format!(
        "{SMALL_RENDER}\n[tools]\nespeak = \"/nonexistent/espeak-ng\"\n"
    ));
    let (d, _tmp) = Daemon::start(&cfg, &[]);
    let (s, health) = d.get("/healthz");
    assert_eq!(s, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["missingTools"].to_string().contains("espeak-ng"),
        "{health}"
    );

    let id = d.submit(&json!({ "videoSubject": "Octopus hearts", "script": SCRIPT }));
    let job = d.wait_for_state(
        &id,
        &["completed", "failed", "cancelled"],
        Duration::from_secs(60),
    );
    assert_eq!(job["state"], "failed", "{job}");
    let last = d.events(&id).pop().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["level"], "error");
    assert_eq!(last["payload"]["stage"], "voice", "{last}");
    let msg = last["message"].as_str().unwrap();
    assert!(msg.starts_with("Failed to generate voiceover:"), "{msg}");
    assert!(msg.contains("espeak-ng"), "{msg}");
    assert_eq!(job["errorMessage"], msg);
    d.assert_serving();
}
