//! The media a job is made of, end to end against the real daemon: the Piper neural voice (the real
//! engine, installed by `.ci/install-piper`), `auto`'s fall-back to espeak-ng, the generated
//! backgrounds, local footage folders, and media brought with the request (local paths under
//! `footage.allowed_dirs`, URLs served by a test server on 127.0.0.1).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const JOB_TIMEOUT: Duration = Duration::from_secs(240);

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

fn find<'a>(events: &'a [Value], prefix: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no event `{prefix}...` in {:#?}", messages(events)))
}

fn run_job(d: &Daemon, body: Value) -> (String, Value, Vec<Value>) {
    let id = d.submit(&body);
    let job = d.wait_for_state(&id, &["completed", "failed", "cancelled"], JOB_TIMEOUT);
    let events = d.events(&id);
    assert_eq!(
        job["state"],
        "completed",
        "{job}\n{:#?}\nlogs:\n{}",
        messages(&events),
        d.logs()
    );
    (id, job, events)
}

const TWO_SENTENCES: &str =
    "Octopuses have three hearts. Two of them pump blood through the gills, and the third serves the body.";

#[test]
fn piper_speaks_a_job_in_one_process_and_its_events_name_it() {
    require_media_tools();
    let piper = piper_program();
    let cfg = format!(
        "{SMALL_RENDER}[llm]\nprovider = \"offline\"\n[voice]\nprovider = \"piper\"\n[tools]\npiper = \"{piper}\"\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_env(tmp.path(), &cfg, &[], &[("RUST_LOG", "reelsmith=debug")]);
    let (id, job, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": TWO_SENTENCES}),
    );
    let voice = find(&events, "Generating voiceover with ");
    assert_eq!(voice["message"], "Generating voiceover with Piper");
    assert_eq!(voice["payload"]["model"], "en_US-joe-medium");
    // One piper process spoke both sentences.
    let runs = d
        .logs()
        .lines()
        .filter(|l| l.contains("tool started") && l.contains("piper"))
        .count();
    assert_eq!(runs, 1, "{}", d.logs());
    let done = events
        .iter()
        .find(|e| e["type"] == "stage_completed" && e["payload"]["stage"] == "voice")
        .expect("voice completed");
    assert_eq!(done["payload"]["sentences"], 2);
    let seconds = done["payload"]["duration"].as_f64().unwrap_or(0.0);
    assert!((3.0..15.0).contains(&seconds), "voiceover of {seconds} s");
    // It is speech, not silence.
    let out = PathBuf::from(job["resultPath"].as_str().expect("resultPath"));
    let db = mean_volume_db(&out);
    assert!(db > -35.0, "the voice is silent: {db} dB");
    assert!(!id.is_empty());

    // A request names a Piper model with `piper:<name>`; an unknown one is a 400 naming the field.
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": "Three hearts.", "voice": "piper:en_US-joe-medium"}),
    );
    assert_eq!(
        find(&events, "Generating voiceover with ")["message"],
        "Generating voiceover with Piper"
    );
    let (s, v) = d.post(
        "/api/generate",
        &json!({"videoSubject": "x", "voice": "piper:xx_XX-nobody-low"}),
    );
    assert_eq!(s, 400, "{v}");
    let msg = v["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("voice `piper:xx_XX-nobody-low`") && msg.contains("en_US-joe-medium"),
        "{v}"
    );
}

#[test]
fn auto_uses_piper_when_installed_and_falls_back_to_espeak_saying_so() {
    require_media_tools();
    let piper = piper_program();
    let base = format!("{SMALL_RENDER}[llm]\nprovider = \"offline\"\n");
    let tmp = tempfile::tempdir().unwrap();
    // Without the executable: espeak-ng, and an info event says why.
    let d = Daemon::start_in(
        tmp.path(),
        &format!("{base}[tools]\npiper = \"/nonexistent/bin/piper\"\n"),
        &[],
    );
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": TWO_SENTENCES}),
    );
    assert_eq!(
        find(&events, "Generating voiceover with ")["message"],
        "Generating voiceover with espeak-ng"
    );
    let note = find(&events, "Voice: ");
    assert_eq!(note["level"], "info");
    assert_eq!(
        note["message"],
        "Voice: espeak-ng (voice.provider = auto): Piper is not installed (tools.piper = \"/nonexistent/bin/piper\" was not found). Install Piper for a natural voice (see the README)."
    );
    assert_eq!(note["payload"]["provider"], "espeak-ng");
    drop(d);

    // With it (and the default voice, American English): Piper.
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(
        tmp.path(),
        &format!("{base}[tools]\npiper = \"{piper}\"\n"),
        &[],
    );
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": "Three hearts."}),
    );
    assert_eq!(
        find(&events, "Voice: ")["message"],
        "Voice: Piper with the model en_US-joe-medium (voice.provider = auto)."
    );
    // A voice whose language no installed model speaks: espeak-ng, saying so.
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Coeurs", "script": "Trois coeurs.", "voice": "fr_001"}),
    );
    assert_eq!(
        find(&events, "Generating voiceover with ")["message"],
        "Generating voiceover with espeak-ng"
    );
    assert!(
        find(&events, "Voice: ")["message"]
            .as_str()
            .is_some_and(|m| m
                .contains("Piper has no model for voice `fr_001` (installed: en_US-joe-medium)")),
        "{:#?}",
        messages(&events)
    );
}

/// A file server on 127.0.0.1: `files` by path (200, with a Content-Length), 404 for the rest.
/// Counts the requests per path.
fn file_server(
    files: Vec<(&'static str, Vec<u8>)>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            seen.lock().unwrap().push(path.clone());
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(body);
                }
                None => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
                    );
                }
            }
        }
    });
    (addr, hits)
}

/// Makes a media file with ffmpeg from a lavfi `source`.
fn make_media(source: &str, seconds: f64, out: &std::path::Path) -> Vec<u8> {
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", source, "-t"])
        .arg(format!("{seconds}"))
        .arg(out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg could not make {}", out.display());
    std::fs::read(out).unwrap()
}

/// The mean (r, g, b) of the frame at `at` seconds of `video`.
fn mean_rgb(video: &std::path::Path, at: f64) -> (f64, f64, f64) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-ss"])
        .arg(format!("{at}"))
        .arg("-i")
        .arg(video)
        .args([
            "-frames:v",
            "1",
            "-vf",
            "scale=8:8",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .unwrap();
    let px = out.stdout;
    assert_eq!(
        px.len(),
        8 * 8 * 3,
        "no frame at {at} s of {}",
        video.display()
    );
    let mean = |c: usize| {
        px.iter()
            .skip(c)
            .step_by(3)
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / 64.0
    };
    (mean(0), mean(1), mean(2))
}

fn own_media_daemon(tmp: &std::path::Path, media: &std::path::Path, extra: &str) -> Daemon {
    let cfg = format!(
        "{}[llm]\nprovider = \"offline\"\n[voice]\nprovider = \"espeak\"\n[footage]\nallowed_dirs = [\"{}\"]\nseconds_per_clip = 2.0\nclips = 2\n{extra}",
        SMALL_RENDER.split("[footage]").next().unwrap_or_default(),
        media.display()
    );
    Daemon::start_in(tmp, &cfg, &[])
}

#[test]
fn a_job_renders_your_own_clips_and_song_from_a_folder_and_a_url() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    // A red clip on disk, a blue clip and a song served over HTTP.
    make_media("color=c=red:s=180x320:r=15", 3.0, &media.join("red.mp4"));
    let scratch = tempfile::tempdir().unwrap();
    let blue = make_media(
        "color=c=blue:s=180x320:r=15",
        3.0,
        &scratch.path().join("blue.mp4"),
    );
    let song = make_media(
        "sine=frequency=440:sample_rate=44100",
        20.0,
        &scratch.path().join("song.mp3"),
    );
    let (addr, hits) = file_server(vec![("/blue.mp4", blue), ("/song.mp3", song)]);
    let d = own_media_daemon(tmp.path(), &media, "");
    let body = json!({
        "videoSubject": "Octopus hearts",
        "script": TWO_SENTENCES,
        "footage": [media.join("red.mp4").display().to_string(), format!("http://{addr}/blue.mp4")],
        "music": format!("http://{addr}/song.mp3"),
    });
    // The request validates against the published OpenAPI schema; a footage that is not a list
    // does not.
    let (s, doc) = d.get("/api/openapi.json");
    assert_eq!(s, 200);
    let wrapper = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "$ref": "#/components/schemas/GenerateRequest",
    });
    let schema = jsonschema::validator_for(&wrapper).expect("the schema compiles");
    let errors: Vec<String> = schema.iter_errors(&body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!schema.is_valid(&json!({"videoSubject": "x", "footage": "a.mp4"})));
    let (id, _job, events) = run_job(&d, body);
    let used: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Using your footage: "))
        })
        .collect();
    assert_eq!(used.len(), 2, "{:#?}", messages(&events));
    assert_eq!(used[1]["payload"]["index"], 1);
    assert!(!messages(&events)
        .iter()
        .any(|m| m.starts_with("Searching for footage")));
    assert!(messages(&events)
        .iter()
        .any(|m| m.starts_with("Adding background music: http://")));
    let hits = hits.lock().unwrap().clone();
    assert_eq!(
        hits.iter().filter(|p| *p == "/blue.mp4").count(),
        1,
        "{hits:?}"
    );
    assert_eq!(
        hits.iter().filter(|p| *p == "/song.mp3").count(),
        1,
        "{hits:?}"
    );
    // The video shows the red clip first, then the blue one, and the song is in it.
    let video = d.state_dir().join("output").join(format!("{id}.mp4"));
    let (r, g, b) = mean_rgb(&video, 0.5);
    assert!(
        r > 150.0 && g < 80.0 && b < 80.0,
        "first clip is not red: {r} {g} {b}"
    );
    let (r, g, b) = mean_rgb(&video, 2.6);
    assert!(
        b > 150.0 && r < 80.0 && g < 80.0,
        "second clip is not blue: {r} {g} {b}"
    );
    assert!(
        mean_volume_db(&video) > -40.0,
        "no sound in {}",
        video.display()
    );
}

#[test]
fn bad_paths_and_urls_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(media.join("ok.mp4"), b"x").unwrap();
    std::fs::write(outside.join("secret.mp4"), b"s").unwrap();
    std::fs::write(outside.join("secret.mp3"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.mp4"), media.join("link.mp4")).unwrap();
    std::os::unix::fs::symlink(&outside, media.join("door")).unwrap();
    let d = own_media_daemon(tmp.path(), &media, "");
    let ok = media.join("ok.mp4").display().to_string();
    let m = media.display();
    for (second, why) in [
        (
            json!(outside.join("secret.mp4").display().to_string()),
            "outside footage.allowed_dirs",
        ),
        (json!(format!("{m}/../outside/secret.mp4")), "`..`"),
        (json!(format!("{m}/link.mp4")), "symbolic link"),
        (json!(format!("{m}/door/secret.mp4")), "symbolic link"),
        (json!(format!("{m}/missing.mp4")), "No such file"),
        (json!("media/ok.mp4"), "absolute"),
        (json!("file:///etc/passwd"), "http://"),
        (json!(7), "must be a string"),
    ] {
        let (s, v) = d.post(
            "/api/generate",
            &json!({ "videoSubject": "x", "footage": [ok, second] }),
        );
        let msg = v["message"].as_str().unwrap_or_default();
        assert_eq!(s, 400, "{second}: {v}");
        assert!(
            msg.starts_with("footage[1] ") && msg.contains(why),
            "{second}: {msg}"
        );
    }
    for (music, why) in [
        (outside.join("secret.mp3").display().to_string(), "outside"),
        ("no such song".to_string(), "not a song of the library"),
        ("gopher://example.com/a.mp3".to_string(), "http://"),
    ] {
        let (s, v) = d.post(
            "/api/generate",
            &json!({ "videoSubject": "x", "music": music }),
        );
        let msg = v["message"].as_str().unwrap_or_default();
        assert_eq!(s, 400, "{music}: {v}");
        assert!(
            msg.starts_with("music ") && msg.contains(why),
            "{music}: {msg}"
        );
    }
    let (s, v) = d.post(
        "/api/generate",
        &json!({ "videoSubject": "x", "footage": "one.mp4" }),
    );
    assert_eq!(s, 400, "{v}");
    // Nothing was queued.
    let (_, jobs) = d.get("/api/jobs");
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "{jobs}");
}

#[test]
fn a_url_that_is_missing_or_too_big_fails_the_job_naming_the_item() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let (addr, _hits) = file_server(vec![("/big.mp4", vec![0u8; 300_000])]);
    let d = own_media_daemon(
        tmp.path(),
        &media,
        "download_max_bytes = 100000\nretries = 0\n",
    );
    for (footage, want) in [
        (json!([format!("http://{addr}/big.mp4")]), "footage[0] "),
        (
            json!([
                format!("http://{addr}/big.mp4").replace("big", "gone"),
                format!("http://{addr}/nope.mp4")
            ]),
            "footage[0] ",
        ),
    ] {
        let id = d
            .submit(&json!({ "videoSubject": "x", "script": "Three hearts.", "footage": footage }));
        let job = d.wait_for_state(&id, &["completed", "failed", "cancelled"], JOB_TIMEOUT);
        assert_eq!(job["state"], "failed", "{job}");
        let events = d.events(&id);
        let failure = events
            .iter()
            .rev()
            .find(|e| e["level"] == "error")
            .unwrap_or_else(|| panic!("no error event: {:#?}", messages(&events)));
        let msg = failure["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{msg}");
        let detail = if msg.contains("big") { "limit" } else { "404" };
        assert!(msg.contains(detail), "{msg}");
    }
}
