//! The web page at `/` in a real browser: starts the real daemon (offline providers, a small render)
//! and runs `tests/browser/page.cjs` (Node with `playwright-core`, driving the system's headless
//! Chromium). The script submits a job through the form (filled by the controls' labels), and this
//! test checks what it saw: the event log filled with every event of the job in order and coloured
//! by level, the progress bar moved up to 100, the `<video>` loaded the result with the duration
//! ffprobe reads from the file and played, the download links answer, the page fits a phone's
//! width, cancel (and retry) work on a second job, the page says so when the daemon is down, and
//! nothing was fetched from outside the daemon. Screenshots go to `target/browser/`.
//!
//! Chromium: `$REELSMITH_TEST_BROWSER` (CI sets it; then the test never skips), else
//! `/usr/bin/chromium`; without either the test is skipped with a message. `playwright-core` is
//! looked for in `$REELSMITH_PLAYWRIGHT` (a `node_modules` directory), else
//! `/opt/reelsmith-playwright/node_modules` (where `.ci/run` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn chromium() -> Option<PathBuf> {
    match std::env::var("REELSMITH_TEST_BROWSER") {
        Ok(v) if !v.is_empty() && v != "1" => Some(PathBuf::from(v)),
        Ok(_) => Some(PathBuf::from("/usr/bin/chromium")),
        Err(_) => Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.exists()),
    }
}

fn playwright_modules() -> PathBuf {
    std::env::var_os("REELSMITH_PLAYWRIGHT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/reelsmith-playwright/node_modules"))
}

fn ffprobe_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe read no duration from {}", path.display()))
}

/// What a browser test needs: Chromium, playwright-core and the media tools. `None` (after a
/// message) when Chromium is not installed and CI did not ask for it.
struct Browser {
    chromium: PathBuf,
    modules: PathBuf,
    root: PathBuf,
    shots: PathBuf,
}

fn browser(test: &str) -> Option<Browser> {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED {test}: no /usr/bin/chromium and REELSMITH_TEST_BROWSER unset (install \
             Debian's chromium, nodejs, npm and `npm install playwright-core` into \
             /opt/reelsmith-playwright, as .ci/run does)"
        );
        return None;
    };
    assert!(
        chromium.exists(),
        "REELSMITH_TEST_BROWSER names {}, which does not exist",
        chromium.display()
    );
    let modules = playwright_modules();
    assert!(
        modules.join("playwright-core").is_dir(),
        "playwright-core is not in {} (npm install --prefix /opt/reelsmith-playwright playwright-core, \
         or set REELSMITH_PLAYWRIGHT to a node_modules directory holding it)",
        modules.display()
    );
    require_media_tools();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("browser");
    std::fs::create_dir_all(&shots).expect("create target/browser");
    Some(Browser {
        chromium,
        modules,
        root,
        shots,
    })
}

impl Browser {
    /// Runs `tests/browser/<script>` with `env`, and returns the JSON line of findings it printed.
    fn run(&self, script: &str, base: &str, env: &[(&str, String)], d: &Daemon) -> Value {
        let mut cmd = Command::new("node");
        cmd.arg(self.root.join("tests/browser").join(script))
            .env("NODE_PATH", &self.modules)
            .env("BASE_URL", base)
            .env("CHROMIUM", &self.chromium)
            .env("SHOTS", &self.shots)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run node (install Debian's nodejs)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the browser script {script} failed: {stderr}\ndaemon log:\n{}",
            d.logs()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(
            stdout
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .unwrap_or_else(|| panic!("no findings on stdout: {stdout}\n{stderr}")),
        )
        .expect("findings JSON")
    }
}

#[test]
fn the_page_submits_follows_plays_and_cancels_a_job_in_chromium() {
    let Some(b) = browser("the_page_submits_follows_plays_and_cancels_a_job_in_chromium") else {
        return;
    };
    let cfg = offline_config(&format!(
        "{SMALL_RENDER}[voice]\nprovider = \"espeak\"\n[daemon]\nconcurrency = 1\n"
    ));
    let (mut d, _tmp) = Daemon::start(&cfg, &[]);
    let base = format!("http://{}", d.addr);

    let r = b.run(
        "page.cjs",
        &base,
        &[
            ("DAEMON_PID", d.child.id().to_string()),
            ("LONG_SCRIPT", long_script(60)),
        ],
        &d,
    );
    // The script stopped the daemon (to see the offline message); it has exited cleanly.
    let status = d.terminate(Duration::from_secs(30));
    assert!(status.success(), "the daemon's exit: {status:?}");

    assert_eq!(r["problems"], json!([]), "errors in the page");
    assert_eq!(
        r["outside"],
        json!([]),
        "the page fetched from outside the daemon"
    );
    assert!(
        !r["models"].as_array().unwrap().is_empty(),
        "no models listed"
    );
    assert!(
        r["voices"].as_u64().unwrap() > 3,
        "the voice list: {}",
        r["voices"]
    );
    assert_eq!(
        r["firstFocus"], "skip",
        "the first Tab stop is the skip link"
    );

    // The finished job as the daemon has it.
    let d2 = Daemon::start_in(&d.dir, &cfg, &["--paused"]);
    let job_id = r["jobId"].as_str().unwrap();
    let job = d2.job(job_id);
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["subject"], "Why octopuses have three hearts");
    let events = d2.events(job_id);

    // The log: every event of the job, in order, coloured by level.
    let log = r["log"].as_array().unwrap();
    let ids: Vec<u64> = log.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    let want: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, want, "the log is not the job's events");
    let colour = |level: &str| -> Vec<&str> {
        log.iter()
            .filter(|l| l["level"] == level)
            .map(|l| l["color"].as_str().unwrap())
            .collect()
    };
    let (info, success) = (colour("info"), colour("success"));
    assert!(!info.is_empty() && !success.is_empty(), "{log:?}");
    // The page's palette: info grey, success green, warning amber, error red.
    assert!(info.iter().all(|c| *c == "rgb(201, 209, 217)"), "{info:?}");
    assert!(
        success.iter().all(|c| *c == "rgb(86, 211, 100)"),
        "{success:?}"
    );
    assert_eq!(
        log.last().unwrap()["type"],
        "complete",
        "the log ends at the terminal event"
    );
    for (l, e) in log.iter().zip(&events) {
        assert_eq!(l["level"], e["level"]);
        assert_eq!(l["type"], e["type"]);
    }

    // The progress bar moved, never back, to 100, through the render's progress events.
    let progress: Vec<f64> = r["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let renders = events.iter().filter(|e| e["type"] == "progress").count();
    assert!(renders >= 2, "{renders} progress events");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "the bar went back: {progress:?}"
    );
    let distinct = {
        let mut v = progress.clone();
        v.dedup();
        v
    };
    assert!(distinct.len() >= 4, "the bar hardly moved: {progress:?}");
    assert_eq!(progress.last().copied(), Some(100.0), "{progress:?}");
    assert!(
        r["stageText"].as_str().unwrap().starts_with("Done"),
        "{}",
        r["stageText"]
    );
    assert_eq!(r["listRow"], "completed", "the job list's row");

    // The video: the result file, its duration, frames decoded.
    let file = PathBuf::from(job["resultPath"].as_str().unwrap());
    let seconds = ffprobe_duration(&file);
    let shown = r["video"]["duration"].as_f64().unwrap();
    assert!(
        (shown - seconds).abs() < 0.1,
        "the <video> says {shown} s, the file {seconds} s"
    );
    assert_eq!(
        (r["video"]["width"].as_u64(), r["video"]["height"].as_u64()),
        (Some(180), Some(320))
    );
    assert!(
        r["video"]["src"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/jobs/{job_id}/video")),
        "{}",
        r["video"]["src"]
    );
    assert!(
        r["played"].as_f64().is_some_and(|t| t > 0.1),
        "the video did not play: {}",
        r["played"]
    );
    // Download links: the video, the subtitles (SRT and WebVTT), the thumbnail; each answers.
    let links: Vec<&str> = r["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(links.len(), 4, "{links:?}");
    for link in &links {
        let (s, body) = http(d2.addr, "GET", link, &[], b"");
        assert_eq!(s, 200, "{link}");
        assert!(!body.is_empty(), "{link}");
    }
    assert!(links.iter().any(|l| l.contains("/video")));
    assert!(links.iter().any(|l| l.contains("format=srt")));
    assert!(links.iter().any(|l| l.contains("format=vtt")));

    // Phone width: nothing sticks out sideways.
    assert!(
        r["phoneOverflow"].as_i64().unwrap() <= 0,
        "{}",
        r["phoneOverflow"]
    );
    assert!(
        r["phoneFormOverflow"].as_i64().unwrap() <= 0,
        "{}",
        r["phoneFormOverflow"]
    );

    // The second job: cancelled from the page, retried, cancelled again.
    let second_id = r["second"].as_str().unwrap();
    let second = d2.job(second_id);
    assert_eq!(second["state"], "cancelled", "{second}");
    let cancels = d2
        .events(second_id)
        .iter()
        .filter(|e| e["type"] == "cancelled")
        .count();
    assert_eq!(cancels, 2, "cancelled, retried, cancelled again");
    assert_eq!(
        r["cancelLevel"], "warning",
        "the cancelled event's colour class"
    );
    assert!(
        ["queued", "running"].contains(&r["stateAfterRetry"].as_str().unwrap_or("")),
        "{}",
        r["stateAfterRetry"]
    );

    // The daemon down: a banner, the header says so, and the submit button is off.
    assert!(
        r["offline"]
            .as_str()
            .unwrap()
            .contains("The reelsmith daemon is not answering."),
        "{}",
        r["offline"]
    );
    assert!(r["conn"].as_str().unwrap().contains("unreachable"));
    assert_eq!(r["submitDisabled"], true);
    eprintln!("screenshots in {}", b.shots.display());
}

/// With `server.api_token` set, the page asks for the token (and refuses a wrong one), then works
/// as without one: fetches carry `Authorization: Bearer`, and what the browser fetches by itself
/// (the event streams, the `<video>`, the download links) carries the session cookie, which no
/// script can read and which is not the token.
#[test]
fn the_page_asks_for_the_api_token_then_streams_and_plays_with_it() {
    let Some(b) = browser("the_page_asks_for_the_api_token_then_streams_and_plays_with_it") else {
        return;
    };
    const TOKEN: &str = "page-token; with spaces & symbols=7";
    let plain = offline_config(&format!(
        "{SMALL_RENDER}[voice]\nprovider = \"espeak\"\n[daemon]\nconcurrency = 1\n"
    ));
    let cfg = format!("{plain}[server]\napi_token = {TOKEN:?}\n");
    let (mut d, _tmp) = Daemon::start(&cfg, &[]);
    let base = format!("http://{}", d.addr);
    let r = b.run("token.cjs", &base, &[("TOKEN", TOKEN.to_string())], &d);
    let status = d.terminate(Duration::from_secs(30));
    assert!(status.success(), "the daemon's exit: {status:?}");

    assert_eq!(r["problems"], json!([]), "errors in the page");
    // Locked: the form has the focus, the rest of the page is hidden.
    assert_eq!(r["locked"]["conn"], "API token needed", "{}", r["locked"]);
    assert_eq!(r["locked"]["mainHidden"], true);
    assert_eq!(r["locked"]["focus"], "token");
    assert!(
        r["wrong"].as_str().unwrap().contains("refused this token"),
        "{}",
        r["wrong"]
    );
    assert_eq!(r["stillLocked"], true, "a wrong token unlocked the page");
    assert_eq!(r["authHidden"], true);
    assert_eq!(r["forgetShown"], true);
    let cookies = r["session"]["cookies"].as_array().unwrap();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert_eq!(
        (&c["name"], &c["httpOnly"], &c["sameSite"], &c["path"]),
        (
            &json!("reelsmith_session"),
            &json!(true),
            &json!("Strict"),
            &json!("/api/")
        ),
        "{c}"
    );
    let value = c["value"].as_str().unwrap();
    assert!(
        value.len() == 64 && !value.contains("page-token"),
        "the cookie is not a digest: {c}"
    );
    assert_eq!(r["session"]["scriptSees"], "", "a script reads the cookie");
    assert!(
        r["modelsHelp"]
            .as_str()
            .unwrap()
            .contains("built-in writer"),
        "{}",
        r["modelsHelp"]
    );
    // Once unlocked, nothing the page asked of the API was refused.
    let answers = r["answers"].as_array().unwrap();
    assert!(answers.len() > 5, "{answers:?}");
    let refused: Vec<&Value> = answers.iter().filter(|a| a[1] != 200).collect();
    assert!(
        refused
            .iter()
            .all(|a| a[1] == 204 || a[1] == 206 || a[1] == 304),
        "refused: {refused:?}"
    );
    for want in ["/api/events/stream", "/events/stream?after=", "/video"] {
        assert!(
            answers
                .iter()
                .any(|a| a[0].as_str().unwrap().contains(want)),
            "no request for {want}: {answers:?}"
        );
    }

    // What the page showed, against the daemon's own record (read without a token from a restart).
    let d2 = Daemon::start_in(&d.dir, &plain, &["--paused"]);
    let job_id = r["jobId"].as_str().unwrap();
    let job = d2.job(job_id);
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(r["listRow"], "completed");
    let want: Vec<u64> = d2
        .events(job_id)
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let shown: Vec<u64> = r["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(shown, want, "the log is not the job's events");
    let seconds = ffprobe_duration(Path::new(job["resultPath"].as_str().unwrap()));
    let shown = r["duration"].as_f64().unwrap();
    assert!((shown - seconds).abs() < 0.1, "{shown} s vs {seconds} s");
    assert!(
        r["played"].as_f64().is_some_and(|t| t > 0.1),
        "{}",
        r["played"]
    );
    assert_eq!(r["srt"]["status"], 200, "{}", r["srt"]);
    assert!(
        r["srt"]["body"].as_str().unwrap().contains("-->"),
        "{}",
        r["srt"]
    );
    assert_eq!(
        r["afterReload"], true,
        "the reload asked for the token again"
    );
    // A lost cookie: the refused stream made the page ask for a new one, and it streams again.
    let seen = &r["renewed"]["seen"];
    for want in [
        json!(["/api/events/stream", 401]),
        json!(["/api/session", 200]),
    ] {
        assert!(
            seen.as_array().unwrap().contains(&want),
            "no {want} in {seen}"
        );
    }
    assert_eq!(
        r["renewed"]["cookies"],
        json!(["reelsmith_session"]),
        "{}",
        r["renewed"]
    );
    assert_eq!(r["renewed"]["authHidden"], true, "{}", r["renewed"]);
    assert_eq!(r["forgotten"]["stored"], Value::Null);
    assert_eq!(r["forgotten"]["cookies"], json!([]), "{}", r["forgotten"]);
}
