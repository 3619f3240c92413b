//! Retention against the real binary: `ctl purge --older-than D` and the daemon's own sweep
//! (`retention.keep_days`) remove finished jobs with their events, folders and outputs, leave live
//! ones alone, never let an id be given out twice, and a start removes what crashed jobs left.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reelsmith::event::{Event, JobId, Kind, Level};
use reelsmith::store::{Store, FILE_NAME};
use serde_json::{json, Value};

fn ctl(d: &Daemon, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x").unwrap();
}

fn max_id(events: &[Value]) -> u64 {
    events
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn ctl_purge_removes_finished_jobs_with_their_files_and_keeps_ids_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config("[retention]\nkeep_days = 0\n");
    let mut d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let live = d.submit(&json!({ "videoSubject": "stays queued" }));
    let gone: Vec<String> = (0..3)
        .map(|i| d.submit(&json!({ "videoSubject": format!("finished {i}") })))
        .collect();
    for id in &gone {
        d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    }
    let newest = max_id(&d.events(&gone[2]));
    let state = d.state_dir();
    for id in gone.iter().chain([&live]) {
        touch(&state.join("jobs").join(id).join("voice.wav"));
        touch(&state.join("output").join(format!("{id}.mp4")));
        touch(&state.join("output").join(format!("{id}.srt")));
    }

    // Fresh jobs are not older than a day.
    let (ok, out) = ctl(&d, &["purge", "--older-than", "1"]);
    assert!(ok && out.contains("Purged 0 finished job(s)"), "{out}");
    assert_eq!(d.job(&gone[0])["state"], "cancelled");

    let (ok, out) = ctl(&d, &["purge", "--older-than", "0"]);
    assert!(
        ok && out.contains("Purged 3 finished job(s) older than 0 day(s)"),
        "{out}"
    );
    for id in &gone {
        let (s, v) = d.get(&format!("/api/jobs/{id}"));
        assert_eq!(s, 404, "{v}");
        let (s, _) = d.get(&format!("/api/jobs/{id}/events?after=0"));
        assert_eq!(s, 404);
        assert!(!state.join("jobs").join(id).exists());
        assert!(!state.join("output").join(format!("{id}.mp4")).exists());
        assert!(!state.join("output").join(format!("{id}.srt")).exists());
    }
    assert_eq!(d.job(&live)["state"], "queued");
    assert!(state.join("jobs").join(&live).join("voice.wav").exists());
    assert!(state.join("output").join(format!("{live}.mp4")).exists());
    let (_, v) = d.get("/api/jobs?limit=100");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1, "{v}");
    // Who purged is in the daemon's history.
    let (ok, out) = ctl(&d, &["events", "daemon"]);
    assert!(ok && out.contains("Purged 3 finished job(s)"), "{out}");

    // The purged events were the newest; their ids are never given out again, even after a restart.
    assert!(d.terminate(Duration::from_secs(10)).success());
    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let (s, _) = d.get(&format!("/api/jobs/{}", gone[2]));
    assert_eq!(s, 404);
    let fresh = d.submit(&json!({ "videoSubject": "after the purge" }));
    let first = d.events(&fresh)[0]["id"].as_u64().unwrap();
    assert!(
        first > newest,
        "id {first} reuses a purged one (<= {newest})"
    );
    let out = Command::new(BIN)
        .args(["store", "check"])
        .arg(state.join(FILE_NAME))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the daemon holds the log: the check must say so"
    );
}

/// A finished job of `age_days` ago, written into the log as a run would have.
fn old_job(store: &Store, first_id: u64, age_days: i64) -> JobId {
    let job = JobId::new();
    let at = reelsmith::event::now_ms() - age_days * 86_400_000;
    let ev = |i: u64, kind: Kind, payload: Option<Value>| Event {
        id: first_id + i,
        job,
        kind,
        level: Level::Info,
        message: format!("event {i}"),
        payload,
        timestamp_ms: at + i as i64,
        stage: None,
    };
    store
        .append(&[
            ev(
                0,
                Kind::Queued,
                Some(json!({ "maxAttempts": 1, "request": { "videoSubject": "old" } })),
            ),
            ev(1, Kind::Running, None),
            ev(2, Kind::Complete, Some(json!({ "outputPath": "/x.mp4" }))),
        ])
        .unwrap();
    job
}

#[test]
fn the_daemon_sweeps_jobs_older_than_keep_days_and_what_crashes_left() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let queued = JobId::new();
    let (old, recent) = {
        let store = Store::open(&state.join(FILE_NAME)).unwrap();
        let jobs = (old_job(&store, 1, 40), old_job(&store, 4, 10));
        let q = Event {
            id: 7,
            job: queued,
            kind: Kind::Queued,
            level: Level::Info,
            message: "Job queued.".into(),
            payload: Some(json!({ "maxAttempts": 1, "request": { "videoSubject": "q" } })),
            timestamp_ms: reelsmith::event::now_ms() - 50 * 86_400_000,
            stage: None,
        };
        store.append(&[q]).unwrap();
        jobs
    };
    let qdir = state.join("jobs").join(queued.to_string());
    touch(&qdir.join("voice.wav"));
    touch(&qdir.join("render.partial.mp4"));
    // What a crash left: the folder and output of a job the log does not know, a half-written
    // render in the folder of a job that will run again.
    let stray = JobId::new().to_string();
    touch(&state.join("jobs").join(&stray).join("voice.wav"));
    touch(&state.join("output").join(format!("{stray}.mp4")));
    touch(&state.join("jobs").join(old.to_string()).join("voice.wav"));

    let d = Daemon::start_in(tmp.path(), &offline_config(""), &["--paused"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get(&format!("/api/jobs/{old}")).0 != 404 {
        assert!(
            Instant::now() < deadline,
            "the 40-day-old job was not swept:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!state.join("jobs").join(old.to_string()).exists());
    assert_eq!(d.job(&recent.to_string())["state"], "completed");
    assert!(!state.join("jobs").join(&stray).exists());
    assert!(!state.join("output").join(format!("{stray}.mp4")).exists());
    // A queued job is never swept, however old; its kept stage results stay, half a render goes.
    assert_eq!(d.job(&queued.to_string())["state"], "queued");
    assert!(qdir.join("voice.wav").exists());
    assert!(!qdir.join("render.partial.mp4").exists());
    drop(d);

    // keep_days = 0 keeps every job.
    let d = Daemon::start_in(
        tmp.path(),
        &offline_config("[retention]\nkeep_days = 0\n"),
        &["--paused"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.job(&recent.to_string())["state"], "completed");
}
