//! Crash and restart tests against the real binary: kill -9 under concurrent submissions (nothing
//! acknowledged is lost, ids keep increasing), a running job interrupted by restarts (requeued, then
//! failed once its attempts are used up), and a graceful SIGTERM with a job running.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn max_id(events: &[Value]) -> u64 {
    events
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn kill9_during_concurrent_submissions_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config("");
    let mut d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let addr = d.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (stop, acked, attempts) = (stop.clone(), acked.clone(), attempts.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let body = json!({ "videoSubject": format!("client {c} job {i}"), "paragraphNumber": "2" });
                    match try_http(addr, "POST", "/api/generate", body.to_string().as_bytes()) {
                        Ok((200, raw)) => {
                            let v: Value = serde_json::from_slice(&raw).expect("200 with a JSON body");
                            assert_eq!(v["message"], "Video generation queued.");
                            acked.lock().unwrap().push(v["jobId"].as_str().unwrap().to_string());
                        }
                        Ok((s, raw)) => panic!("submit answered {s}: {}", String::from_utf8_lossy(&raw)),
                        // The daemon is gone: this POST was never acknowledged.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    // Let submissions pile up, read part of the log as a client saw it, keep submitting, then kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "submissions too slow:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sample: Vec<String> = acked.lock().unwrap().iter().step_by(7).cloned().collect();
    let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
    for id in &sample {
        seen.insert(id.clone(), d.events(id));
    }
    // Cancel a few, so histories longer than one event are in the log too.
    for id in sample.iter().take(10) {
        let (s, _) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
        assert_eq!(s, 200);
        seen.insert(id.clone(), d.events(id));
    }
    let before = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < before + 200 {
        assert!(
            Instant::now() < deadline,
            "submissions stalled:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9(); // mid-flight: the clients are still submitting
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    let tried = attempts.load(Ordering::Relaxed);
    eprintln!(
        "{} submissions acknowledged of {tried} attempted before the kill",
        acked.len()
    );
    let old_max = seen.values().map(|e| max_id(e)).max().unwrap();

    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let mut highest = 0;
    for id in &acked {
        let (s, v) = d.get(&format!("/api/jobs/{id}"));
        assert_eq!(s, 200, "acknowledged job {id} lost after kill -9: {v}");
        let events = d.events(id);
        assert!(!events.is_empty(), "job {id} has no events");
        assert_eq!(events[0]["type"], "queued");
        assert_eq!(events[0]["message"], "Job queued.");
        assert_eq!(events[0]["payload"]["request"]["paragraphNumber"], 2);
        if let Some(before) = seen.get(id) {
            assert_eq!(
                &events, before,
                "job {id}'s events changed across the crash"
            );
        } else {
            assert_eq!(v["job"]["state"], "queued", "{v}");
        }
        highest = highest.max(max_id(&events));
    }
    // The daemon knows every acknowledged job (and possibly a few whose answer was lost in flight).
    let (_, list) = d.get("/api/jobs?limit=1000");
    let listed = list["jobs"].as_array().unwrap().len();
    assert!(
        listed >= acked.len().min(1000),
        "{listed} jobs listed, {} acknowledged",
        acked.len()
    );
    let (_, h) = d.get("/healthz");
    let last = h["lastEventId"].as_u64().unwrap();
    assert!(
        last >= highest && highest >= old_max,
        "last {last}, highest {highest}, old max {old_max}"
    );

    // New ids are larger than every old one.
    let fresh = d.submit(&json!({ "videoSubject": "after the crash" }));
    let ev = d.events(&fresh);
    let new_id = ev[0]["id"].as_u64().unwrap();
    assert!(
        new_id > last,
        "new id {new_id} not above the old last id {last}"
    );
    d.post(&format!("/api/jobs/{fresh}/cancel"), &json!({}));
    let ids: Vec<u64> = d
        .events(&fresh)
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(ids.iter().all(|&i| i > last), "{ids:?}");
}

#[test]
fn restart_replays_the_log_and_keeps_ids_increasing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config("");
    let mut d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let a = d.submit(&json!({ "videoSubject": "survives" }));
    let b = d.submit(&json!({ "videoSubject": "cancelled before" }));
    d.post(&format!("/api/jobs/{b}/cancel"), &json!({}));
    let (ja, jb) = (d.job(&a), d.job(&b));
    let (ea, eb) = (d.events(&a), d.events(&b));
    let st = d.terminate(Duration::from_secs(10));
    assert!(st.success(), "SIGTERM exit: {st:?}");

    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    assert!(d.logs().contains("event log replayed"), "{}", d.logs());
    assert_eq!(d.job(&a), ja);
    assert_eq!(d.job(&b), jb);
    assert_eq!(d.events(&a), ea);
    assert_eq!(d.events(&b), eb);
    let (_, list) = d.get("/api/jobs");
    let order: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [b.as_str(), a.as_str()],
        "creation order lost across the restart"
    );
    // The replayed queue still answers POST /api/cancel with the newest queued job.
    let (s, v) = d.post("/api/cancel", &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobId"], a.as_str());
    let ids: Vec<u64> = d
        .events(&a)
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(ids[1] > max_id(&eb), "{ids:?} vs {eb:?}");
}

/// Waits until `job` is running and has emitted an event whose message starts with `stage_msg`;
/// returns the job JSON seen in `running`.
fn wait_running(d: &Daemon, job: &str, stage_msg: &str) -> Value {
    let j = d.wait_for_state(job, &["running"], Duration::from_secs(60));
    d.wait_for_event(job, Duration::from_secs(120), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(stage_msg))
    });
    j
}

/// Kill -9 of the daemon, then of any tool of `job` it left behind (a SIGKILLed daemon cannot;
/// systemd's cgroup does it in production). Returns how many were left.
fn crash(d: &mut Daemon, job: &str) -> usize {
    d.kill9_with_children();
    let left = processes_mentioning(job);
    for p in &left {
        unsafe {
            libc::kill(*p as i32, libc::SIGKILL);
        }
    }
    left.len()
}

#[test]
fn running_job_interrupted_by_restarts_is_requeued_then_failed() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config(&format!("{SMALL_RENDER}\n[daemon]\nmax_attempts = 2\n"));
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    let id = d.submit(&json!({ "videoSubject": "interrupted twice", "script": long_script(200) }));
    // Crash during the voice stage (espeak-ng, one process a sentence), once the voice choice
    // (`Voice: ...`, recorded just after `Generating voiceover with`) is in the history too.
    let j = wait_running(&d, &id, "Voice: ");
    assert_eq!(j["attempt"], 1, "{j}");
    let before = d.events(&id);
    let orphans = crash(&mut d, &id);
    eprintln!("tools of the job left running by kill -9: {orphans}");

    // 1st restart, paused: the job is back in the queue, with the warning, and stays there.
    let mut d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let job = d.job(&id);
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["maxAttempts"], 2, "{job}");
    let events = d.events(&id);
    assert_eq!(
        &events[..before.len()],
        &before[..],
        "history before the crash changed"
    );
    let tail = &events[before.len()..];
    assert_eq!(types(tail), ["log", "queued"], "{tail:?}");
    assert_eq!(tail[0]["level"], "warning");
    assert_eq!(tail[0]["message"], "Job interrupted by a daemon restart.");
    assert_eq!(tail[0]["payload"]["attempt"], 1);
    assert_eq!(tail[0]["payload"]["maxAttempts"], 2);
    assert_eq!(tail[1]["message"], "Job queued.");
    assert!(tail[0]["id"].as_u64().unwrap() > max_id(&before));
    // Paused: nothing starts it.
    let last = max_id(&events);
    let (_, v) = d.get(&format!("/api/jobs/{id}/events?after={last}&wait=1"));
    assert_eq!(v["events"], json!([]), "{v}");
    assert_eq!(v["state"], "queued");
    // A clean stop of a paused daemon records nothing for a queued job.
    assert!(d.terminate(Duration::from_secs(10)).success());

    // 2nd run, not paused: attempt 2 starts; kill -9 it mid-run again.
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    // Crash during the render (one long ffmpeg) this time.
    let j = wait_running(&d, &id, "Rendering final video");
    assert_eq!(j["attempt"], 2, "{j}");
    let before = d.events(&id);
    assert_eq!(before.iter().filter(|e| e["type"] == "running").count(), 2);
    let orphans = crash(&mut d, &id);
    eprintln!("tools of the job left running by kill -9: {orphans}");

    // 3rd start: attempts are used up, so the job fails with the interruption as its reason.
    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let job = d.job(&id);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    let msg = job["errorMessage"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Job interrupted by a daemon restart."),
        "{job}"
    );
    let events = d.events(&id);
    let tail = &events[before.len()..];
    assert_eq!(types(tail), ["log", "error"], "{tail:?}");
    assert_eq!(tail[0]["message"], "Job interrupted by a daemon restart.");
    assert_eq!(tail[1]["level"], "error");
    assert_eq!(tail[1]["payload"]["error"], "Interrupted", "{}", tail[1]);
    assert!(
        tail[1]["payload"].get("retryable").is_some() && tail[1]["payload"].get("stage").is_some()
    );
    assert!(is_ascending(&events));
    // Terminal: it is not requeued by further restarts.
    drop(d);
    let d = Daemon::start_in(tmp.path(), &cfg, &[]);
    assert_eq!(d.job(&id)["state"], "failed");
    assert_eq!(d.events(&id).len(), events.len());
}

fn is_ascending(events: &[Value]) -> bool {
    events
        .windows(2)
        .all(|w| w[0]["id"].as_u64() < w[1]["id"].as_u64())
}

#[test]
fn sigterm_with_a_running_job_exits_zero_and_records_the_interruption() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config(SMALL_RENDER);
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    let id = d.submit(&json!({ "videoSubject": "stopped politely", "script": long_script(200) }));
    // Stop it during the render, while a long ffmpeg runs.
    wait_running(&d, &id, "Rendering final video");
    let t = Instant::now();
    let status = d.terminate(Duration::from_secs(10));
    let took = t.elapsed();
    eprintln!("SIGTERM with a running job: exit {status:?} after {took:?}");
    assert!(status.success(), "exit status {status:?}:\n{}", d.logs());
    assert!(took < Duration::from_secs(10));
    // The job's subprocesses did not outlive the daemon.
    let alive = processes_mentioning(&id);
    assert!(
        alive.is_empty(),
        "tools of the job survived the shutdown: {alive:?}"
    );

    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let job = d.job(&id);
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    let events = d.events(&id);
    let ty = types(&events);
    let n = ty.len();
    assert_eq!(&ty[n - 2..], ["log", "queued"], "{events:?}");
    assert_eq!(events[n - 2]["level"], "warning");
    assert_eq!(
        events[n - 2]["message"],
        "Job interrupted by a daemon shutdown."
    );
    // The shutdown recorded it, so the restart had nothing to recover.
    assert!(
        !events
            .iter()
            .any(|e| e["message"] == "Job interrupted by a daemon restart."),
        "{events:?}"
    );
    assert!(is_ascending(&events));
}
