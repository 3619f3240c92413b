//! The kill -9 storm: a real daemon on a real redb file, with clients submitting and cancelling
//! and jobs rendering (small offline renders), is SIGKILLed at seeded random moments and started
//! again, round after round. After every kill: `reelsmith store check` passes on the log as the
//! kill left it; then, on a paused restart, every acknowledged submission is there with `queued`
//! first, each job's event ids strictly increase, an id seen once always names the same event
//! (ids are never reused), and no job is left `running`.
//!
//! Budget: `REELSMITH_STORM_ROUNDS` kills (default 10, what CI runs), `REELSMITH_STORM_CLIENTS`
//! submitting clients (default 4), `REELSMITH_STORM_SEED` (default fixed; printed, so a failing
//! storm can be replayed). Only processes this test started are killed: the daemon and its
//! descendants by pid, and leftover tools whose command line names this test's state directory.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// splitmix64: a small seeded generator (the storm must be replayable from its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// What an event id named when it was first seen: (job, type, message, timestamp).
type Seen = HashMap<u64, (String, String, String, String)>;

fn store_check(state: &Path) {
    let out = Command::new(BIN)
        .args(["store", "check"])
        .arg(state.join("reelsmith.redb"))
        .output()
        .expect("run reelsmith store check");
    assert!(
        out.status.success(),
        "store check failed after a kill: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The checks after a restart (the daemon is paused: nothing may be running).
fn verify(d: &Daemon, acked: &[String], seen: &mut Seen) -> u64 {
    let mut max = 0;
    for id in acked {
        let (s, v) = d.get(&format!("/api/jobs/{id}"));
        assert_eq!(s, 200, "acknowledged job {id} lost: {v}");
        let state = v["job"]["state"].as_str().unwrap_or_default().to_string();
        assert!(
            ["queued", "completed", "failed", "cancelled"].contains(&state.as_str()),
            "job {id} is {state} after a restart of a paused daemon: {v}"
        );
        let events = d.events(id);
        assert_eq!(
            events.first().map(|e| &e["type"]),
            Some(&json!("queued")),
            "{id}: {events:?}"
        );
        let mut last = 0;
        for e in &events {
            let eid = e["id"].as_u64().expect("event id");
            assert!(eid > last, "job {id}: ids not increasing: {events:?}");
            last = eid;
            let named = (
                id.clone(),
                e["type"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
                e["timestamp"].to_string(),
            );
            match seen.get(&eid) {
                Some(before) => assert_eq!(before, &named, "event id {eid} reused"),
                None => {
                    seen.insert(eid, named);
                }
            }
        }
        max = max.max(last);
    }
    let (s, v) = d.get("/api/jobs?state=running&limit=1000");
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["jobs"],
        json!([]),
        "jobs left running after a restart: {v}"
    );
    let (_, h) = d.get("/healthz");
    let last = h["lastEventId"].as_u64().unwrap_or(0);
    assert!(
        last >= max,
        "healthz lastEventId {last} below a visible id {max}"
    );
    max
}

/// Kill -9 of the daemon, its descendants, and any tool still naming this test's directory.
fn crash(d: &mut Daemon, dir: &Path) {
    d.kill9_with_children();
    for p in processes_mentioning(&dir.display().to_string()) {
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
        }
    }
}

#[test]
fn kill9_storm_loses_nothing_acknowledged_and_reuses_no_id() {
    require_media_tools();
    let rounds = env_u64("REELSMITH_STORM_ROUNDS", 10);
    let clients = env_u64("REELSMITH_STORM_CLIENTS", 4);
    let seed = env_u64("REELSMITH_STORM_SEED", 0x5EED_2026);
    eprintln!("storm: {rounds} kills, {clients} clients, REELSMITH_STORM_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = offline_config(&format!("{SMALL_RENDER}\n[daemon]\nmax_attempts = 3\n"));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut seen = Seen::new();
    let (mut attempted, mut completed, mut mid_job) = (0u64, 0usize, 0u32);
    let started = Instant::now();
    for round in 0..rounds {
        // A paused start: check what the last kill left, then let jobs run.
        let d = Daemon::start_in(dir, &cfg, &["--paused"]);
        let snapshot = acked.lock().unwrap().clone();
        verify(&d, &snapshot, &mut seen);
        let out = Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&d.socket)
            .arg("resume")
            .output()
            .expect("run reelsmith ctl resume");
        assert!(
            out.status.success(),
            "ctl resume: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut d = d;

        let stop = Arc::new(AtomicBool::new(false));
        let addr = d.addr;
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let mut rng = Rng(rng.next());
                std::thread::spawn(move || {
                    let mut tried = 0u64;
                    let mut mine: Vec<String> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        tried += 1;
                        if !mine.is_empty() && rng.range(0, 5) == 0 {
                            let id = &mine[rng.range(0, mine.len() as u64) as usize];
                            match try_http(addr, "POST", &format!("/api/jobs/{id}/cancel"), b"{}") {
                                Ok((200 | 409, _)) => {}
                                Ok((s, raw)) => panic!("cancel of {id} answered {s}: {}", String::from_utf8_lossy(&raw)),
                                Err(_) => return tried,
                            }
                        } else {
                            let body = json!({
                                "videoSubject": format!("storm round {round} client {c} job {tried}"),
                                "script": "A short storm. It renders fast.",
                            });
                            match try_http(addr, "POST", "/api/generate", body.to_string().as_bytes()) {
                                Ok((200, raw)) => {
                                    let v: Value = serde_json::from_slice(&raw).expect("200 with JSON");
                                    let id = v["jobId"].as_str().expect("jobId").to_string();
                                    acked.lock().unwrap().push(id.clone());
                                    mine.push(id);
                                }
                                Ok((s, raw)) => panic!("submit answered {s}: {}", String::from_utf8_lossy(&raw)),
                                // The daemon is gone: this one was never acknowledged.
                                Err(_) => return tried,
                            }
                        }
                        std::thread::sleep(Duration::from_millis(rng.range(30, 250)));
                    }
                    tried
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(300, 4000)));
        // Informational (racy by nature): whether this kill lands while a job runs.
        if let Ok((200, raw)) = try_http(addr, "GET", "/api/jobs?state=running", b"") {
            let v: Value = serde_json::from_slice(&raw).unwrap_or_default();
            if v["jobs"].as_array().is_some_and(|a| !a.is_empty()) {
                mid_job += 1;
            }
        }
        crash(&mut d, dir);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            attempted += t.join().expect("a client failed");
        }
        store_check(&d.state_dir());
        eprintln!(
            "round {round}: killed after {:?} total, {} acknowledged",
            started.elapsed(),
            acked.lock().unwrap().len()
        );
    }
    let d = Daemon::start_in(dir, &cfg, &["--paused"]);
    let acked = acked.lock().unwrap().clone();
    verify(&d, &acked, &mut seen);
    for id in &acked {
        if d.job(id)["state"] == "completed" {
            completed += 1;
        }
    }
    // Ids keep increasing after the storm.
    let fresh = d.submit(&json!({ "videoSubject": "after the storm" }));
    let first = d.events(&fresh)[0]["id"].as_u64().unwrap();
    let top = seen.keys().copied().max().unwrap_or(0);
    assert!(first > top, "new id {first} not above {top}");
    eprintln!(
        "storm: {rounds} kills survived ({mid_job} with a job running), {} submissions acknowledged of {attempted} client calls, \
         0 lost, {completed} completed, {} event ids checked, {:?}",
        acked.len(),
        seen.len(),
        started.elapsed()
    );
}
