//! `reelsmith generate` against a state directory a daemon used: it makes its own video and leaves
//! every other job exactly as it was (a queued job is not run, a job a dead daemon left running is
//! not interrupted, the daemon's recorded pause does not hold its own job back).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use reelsmith::event::JobId;
use reelsmith::store::{Store, FILE_NAME};
use serde_json::{json, Value};

/// The stored events of `job` (read through the library, without starting a daemon, whose recovery
/// would record the interruption of the running one).
fn stored(state: &std::path::Path, job: &str) -> Vec<(u64, String)> {
    let store = Store::open(&state.join(FILE_NAME)).unwrap();
    let job: JobId = job.parse().unwrap();
    store
        .read_job(job, 0, u64::MAX, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.message))
        .collect()
}

#[test]
fn generate_runs_only_its_own_job() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config(SMALL_RENDER);
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    let running = d.submit(&json!({ "videoSubject": "left running", "script": long_script(200) }));
    d.wait_for_state(&running, &["running"], Duration::from_secs(60));
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .arg("pause")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let queued = d.submit(&json!({ "videoSubject": "left queued" }));
    d.kill9_with_children();
    let state = d.state_dir();
    let (before_running, before_queued) = (stored(&state, &running), stored(&state, &queued));

    let script = tmp.path().join("script.txt");
    std::fs::write(
        &script,
        "Octopuses have three hearts. Two pump blood to the gills.",
    )
    .unwrap();
    let video = tmp.path().join("own.mp4");
    let out = Command::new(BIN)
        .arg("generate")
        .arg("--config")
        .arg(tmp.path().join("test-config.toml"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--script")
        .arg(&script)
        .arg("--out")
        .arg(&video)
        .arg("--json")
        .arg("its own job")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut child = out;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("generate did not finish its own job within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "generate failed: {stderr}");
    assert!(std::fs::metadata(&video).unwrap().len() > 1000);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["type"], "complete", "{lines:?}");

    assert_eq!(
        stored(&state, &running),
        before_running,
        "the running job was touched"
    );
    assert_eq!(
        stored(&state, &queued),
        before_queued,
        "the queued job was touched"
    );
    // The daemon, started again, still has them to run and to recover.
    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    assert_eq!(d.job(&queued)["state"], "queued");
    let j = d.job(&running);
    assert_eq!(
        (j["state"].as_str(), j["attempt"].as_u64()),
        (Some("queued"), Some(1)),
        "{j}"
    );
    let events = d.events(&running);
    assert_eq!(
        events[events.len() - 2]["message"],
        "Job interrupted by a daemon restart."
    );
}
