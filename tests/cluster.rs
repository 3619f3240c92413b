//! Several daemons on one PostgreSQL store, black box: real `reelsmith serve` processes on real
//! PostgreSQL (started by the test, see `common::pg`), real HTTP, real control sockets, real renders.
//! They must behave as one service: one queue, one history, any daemon answers any client.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::{self, PgServer};
use common::*;
use serde_json::{json, Value};

/// A daemon of the cluster: its own state dir (outputs, socket), the shared store.
fn member(dir: &Path, url: &str, name: &str, extra: &str) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = offline_config(&format!(
        "{SMALL_RENDER}\n[daemon]\nname = \"{name}\"\nlease_secs = 3\nrenew_secs = 1\n{extra}"
    ));
    Daemon::start_in(dir, &cfg, &["--store-url", url])
}

fn ctl(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("reelsmith ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn job_body(subject: &str, sentences: usize) -> Value {
    json!({ "videoSubject": subject, "script": long_script(sentences) })
}

/// Every event of the store, by id, read through `d` (job by job), checking per-job order.
fn histories(d: &Daemon, jobs: &[String]) -> HashMap<u64, String> {
    let mut all = HashMap::new();
    for j in jobs {
        let evs = d.events(j);
        let ids: Vec<u64> = evs.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "job {j}: ids not strictly increasing: {ids:?}"
        );
        for id in ids {
            assert!(
                all.insert(id, j.clone()).is_none(),
                "event id {id} appears twice"
            );
        }
    }
    all
}

/// Waits (up to 30 s) until a tool of `job` (espeak-ng, ffmpeg: they name its folder) runs.
fn wait_for_tools(job: &str) {
    let t = Instant::now();
    while processes_mentioning(job).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no tool of job {job} is running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kinds(evs: &[Value], kind: &str) -> usize {
    evs.iter().filter(|e| e["type"] == kind).count()
}

#[test]
fn two_daemons_share_one_queue_and_every_accepted_job_runs_once() {
    if !pg::available() {
        return;
    }
    require_media_tools();
    let server = PgServer::start();
    let url = server.create_db("shared_queue");
    let tmp = tempfile::tempdir().unwrap();
    let a = member(&tmp.path().join("a"), &url, "alpha", "concurrency = 2\n");
    let b = member(&tmp.path().join("b"), &url, "beta", "concurrency = 2\n");
    // 8 clients, each submitting 2 jobs, alternating between the daemons.
    let mut ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|c| {
                let (a, b) = (&a, &b);
                s.spawn(move || {
                    (0..2)
                        .map(|i| {
                            let d = if (c + i) % 2 == 0 { a } else { b };
                            d.submit(&job_body(&format!("client {c} job {i}"), 2))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 16);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 16, "a job id was answered twice");
    // Any daemon answers for any job; every one completes.
    for (i, id) in ids.iter().enumerate() {
        let d = if i % 2 == 0 { &b } else { &a };
        let j = d.wait_for_state(id, &["completed", "failed"], Duration::from_secs(300));
        assert_eq!(j["state"], "completed", "{j}");
    }
    ids.sort();
    // Both daemons list the same 16 jobs.
    for d in [&a, &b] {
        let (s, v) = d.get("/api/jobs?limit=100");
        assert_eq!(s, 200, "{v}");
        let mut listed: Vec<String> = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, ids);
    }
    // Each ran once (one `running`, one `complete`), ids unique and increasing per job, the
    // same history through either daemon.
    let through_a = histories(&a, &ids);
    let through_b = histories(&b, &ids);
    assert_eq!(through_a, through_b);
    let mut owners = HashSet::new();
    for id in &ids {
        let evs = a.events(id);
        assert_eq!(
            kinds(&evs, "running"),
            1,
            "job {id} ran more than once: {evs:?}"
        );
        assert_eq!(kinds(&evs, "complete"), 1, "{evs:?}");
        let running = evs.iter().find(|e| e["type"] == "running").unwrap();
        owners.insert(
            running["payload"]["owner"]["daemon"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        owners,
        HashSet::from(["alpha".to_string(), "beta".to_string()]),
        "both daemons should have run jobs"
    );
    // ctl status and /healthz name the engine and the live daemons.
    let (s, h) = a.get("/healthz");
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["store"]["engine"], "postgres", "{h}");
    let names: Vec<&str> = h["store"]["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"], "{h}");
    let status = ctl(&b, &["status", "--json"]);
    assert!(status.contains("\"postgres\""), "{status}");
}

#[test]
fn a_cancel_on_one_daemon_stops_the_job_running_on_the_other() {
    if !pg::available() {
        return;
    }
    require_media_tools();
    let server = PgServer::start();
    let url = server.create_db("cross_cancel");
    let tmp = tempfile::tempdir().unwrap();
    // Only B runs jobs (A is a front door with nothing to claim while B holds it).
    let b = member(&tmp.path().join("b"), &url, "beta", "");
    let id = b.submit(&job_body("cancel me from elsewhere", 200));
    b.wait_for_event(&id, Duration::from_secs(60), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Generating voiceover with"))
    });
    let a = member(&tmp.path().join("a"), &url, "alpha", "");
    wait_for_tools(&id);
    // A poller on A follows the job run by B, with long polls from a cursor, while B's progress
    // and A's cancel race: it must see every event, in order, none twice.
    let poller = {
        let (addr, id) = (a.addr, id.clone());
        std::thread::spawn(move || {
            let mut seen: Vec<Value> = Vec::new();
            let mut after = 0;
            loop {
                let (s, body) = http(
                    addr,
                    "GET",
                    &format!("/api/jobs/{id}/events?after={after}&wait=2&limit=7"),
                    &[],
                    b"",
                );
                assert_eq!(s, 200);
                let v: Value = serde_json::from_slice(&body).unwrap();
                let page = v["events"].as_array().cloned().unwrap_or_default();
                if let Some(last) = page.last() {
                    after = last["id"].as_u64().unwrap();
                }
                seen.extend(page);
                if v["state"] == "cancelled" && v["more"] == false {
                    return seen;
                }
            }
        })
    };
    // A poller on A follows the job's history while the cancel races B's progress.
    let (s, v) = a.post("/api/cancel", &json!({ "jobId": id }));
    assert_eq!(s, 200, "{v}");
    let t = Instant::now();
    let j = a.wait_for_state(&id, &["cancelled"], Duration::from_secs(10));
    assert_eq!(j["state"], "cancelled", "{j}");
    loop {
        let left = processes_mentioning(&id);
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "B's tools still running 5 s after the cancel: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.events(&id), b.events(&id));
    let seen = poller.join().unwrap();
    assert_eq!(
        seen,
        a.events(&id),
        "the poller on A missed or repeated events"
    );
}

#[test]
fn a_killed_daemons_job_is_rescued_by_another_and_a_revived_stale_runner_cannot_write() {
    if !pg::available() {
        return;
    }
    require_media_tools();
    let server = PgServer::start();
    let url = server.create_db("rescue");
    let tmp = tempfile::tempdir().unwrap();
    // kill -9: B dies while running the job; A rescues it once the lease (3 s) expires.
    let mut b = member(&tmp.path().join("b"), &url, "beta", "max_attempts = 3\n");
    let id = b.submit(&job_body("rescued after a crash", 4));
    b.wait_for_state(&id, &["running"], Duration::from_secs(60));
    b.kill9_with_children();
    let killed = Instant::now();
    let a = member(&tmp.path().join("a"), &url, "alpha", "max_attempts = 3\n");
    let rescue = a.wait_for_event(&id, Duration::from_secs(30), |e| {
        e["message"] == "Job interrupted: daemon beta stopped renewing its lease."
    });
    eprintln!("rescued {:?} after the kill -9", killed.elapsed());
    let j = a.wait_for_state(&id, &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(j["state"], "completed", "{j}");
    let evs = a.events(&id);
    let running: Vec<&Value> = evs.iter().filter(|e| e["type"] == "running").collect();
    assert_eq!(running.len(), 2, "{evs:?}");
    assert_eq!(running[1]["payload"]["owner"]["daemon"], "alpha");
    assert!(running[1]["id"].as_u64() > rescue["id"].as_u64());

    // SIGSTOP: A's runner freezes past its lease; C rescues and completes the job; A, revived,
    // is refused (stale epoch) and stops its attempt: nothing of A's lands after the rescue.
    let id = a.submit(&job_body("frozen runner", 40));
    a.wait_for_event(&id, Duration::from_secs(60), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Generating voiceover with"))
    });
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(a.pid() as i32, libc::SIGSTOP) };
    let c = member(&tmp.path().join("c"), &url, "gamma", "max_attempts = 3\n");
    c.wait_for_event(&id, Duration::from_secs(30), |e| {
        e["message"] == "Job interrupted: daemon alpha stopped renewing its lease."
    });
    c.wait_for_event(&id, Duration::from_secs(30), |e| {
        e["type"] == "running" && e["payload"]["owner"]["daemon"] == "gamma"
    });
    unsafe { libc::kill(a.pid() as i32, libc::SIGCONT) };
    let j = c.wait_for_state(&id, &["completed", "failed"], Duration::from_secs(180));
    assert_eq!(j["state"], "completed", "{j}");
    let evs = c.events(&id);
    assert_eq!(kinds(&evs, "complete"), 1, "{evs:?}");
    // After gamma's start, every event is gamma's attempt: the epoch in progress payloads and
    // stage events never goes back to alpha's.
    let start = evs
        .iter()
        .position(|e| e["type"] == "running" && e["payload"]["owner"]["daemon"] == "gamma")
        .unwrap();
    assert!(
        !evs[start..]
            .iter()
            .any(|e| e["message"] == "Job interrupted by a daemon shutdown."),
        "{evs:?}"
    );
    // A is alive and serving, and says its lease was lost.
    a.assert_serving();
    let t = Instant::now();
    while !a.logs().contains("lease was lost")
        && !a.logs().contains("no longer the job's running attempt")
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "A never noticed: {}",
            a.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_pause_on_one_daemon_stops_claims_on_all_and_survives_their_restarts() {
    if !pg::available() {
        return;
    }
    let server = PgServer::start();
    let url = server.create_db("pause");
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = member(&da, &url, "alpha", "");
    let mut b = member(&db, &url, "beta", "");
    ctl(&a, &["pause"]);
    let id = b.submit(&job_body("held by a pause elsewhere", 2));
    // B learns of the pause through the store: its job stays queued. A full lease period lets
    // any claim happen if it were going to.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.job(&id)["state"], "queued");
    a.terminate(Duration::from_secs(20));
    b.terminate(Duration::from_secs(20));
    let a = member(&da, &url, "alpha", "");
    let b = member(&db, &url, "beta", "");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.job(&id)["state"], "queued", "a restart resumed the queue");
    let st = ctl(&b, &["status", "--json"]);
    assert!(
        st.contains("\"paused\": true") || st.contains("\"paused\":true"),
        "{st}"
    );
    ctl(&b, &["resume"]);
    if std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok()
    {
        let j = a.wait_for_state(&id, &["completed", "failed"], Duration::from_secs(120));
        assert_eq!(j["state"], "completed", "{j}");
    }
}

#[test]
fn postgres_restarted_under_a_daemon_is_reported_and_nothing_acknowledged_is_lost() {
    if !pg::available() {
        return;
    }
    let mut server = PgServer::start();
    let url = server.create_db("outage");
    let tmp = tempfile::tempdir().unwrap();
    let d = member(&tmp.path().join("a"), &url, "alpha", "");
    ctl(&d, &["pause"]);
    let before: Vec<String> = (0..5)
        .map(|i| d.submit(&job_body(&format!("before {i}"), 2)))
        .collect();
    server.stop();
    // Unhealthy while the store is down; submissions are refused with a clear 503.
    let t = Instant::now();
    loop {
        let (s, h) = d.get("/healthz");
        if s == 503 {
            assert!(
                h["message"].as_str().unwrap().contains("event store"),
                "{h}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "still healthy: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, v) = d.post("/api/generate", &job_body("during", 2));
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["status"], "error");
    server.run();
    // Back without a restart of the daemon.
    let t = Instant::now();
    loop {
        let (s, _) = d.get("/healthz");
        if s == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never healthy again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = d.submit(&job_body("after", 2));
    for id in before.iter().chain([&after]) {
        assert_eq!(d.job(id)["state"], "queued", "{id}");
    }
}

#[test]
fn one_idempotency_key_sent_to_both_daemons_at_once_makes_one_submit() {
    if !pg::available() {
        return;
    }
    let server = PgServer::start();
    let url = server.create_db("one_key");
    let tmp = tempfile::tempdir().unwrap();
    let a = member(&tmp.path().join("a"), &url, "alpha", "");
    let b = member(&tmp.path().join("b"), &url, "beta", "");
    // Held in the queue: the test is about the submit, not the render.
    ctl(&a, &["pause"]);
    let body = json!({ "jobs": [job_body("keyed one", 1), job_body("keyed two", 1)] }).to_string();
    for round in 0..5 {
        let key = format!("storm-{round}");
        let barrier = std::sync::Barrier::new(8);
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|c| {
                    let d = if c % 2 == 0 { &a } else { &b };
                    let (body, key, barrier) = (&body, &key, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let (st, _, bytes) = http_full(
                            d.addr,
                            "POST",
                            "/api/generate/batch",
                            &[
                                ("Content-Type", "application/json"),
                                ("Idempotency-Key", key),
                            ],
                            body.as_bytes(),
                        );
                        (st, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Every client gets the one submit's two jobs, from whichever daemon it asked.
        let first = &answers[0].1["jobIds"];
        assert_eq!(first.as_array().map(Vec::len), Some(2), "{answers:?}");
        for (st, v) in &answers {
            assert_eq!(*st, 200, "{v}");
            assert_eq!(&v["jobIds"], first, "round {round}: {answers:?}");
        }
    }
    // Five submits of two jobs: ten jobs, listed alike by both daemons.
    for d in [&a, &b] {
        let (s, v) = d.get("/api/jobs?limit=100");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["jobs"].as_array().unwrap().len(), 10, "{v}");
    }
}

/// `ctl --json ARGS` on `d`, parsed.
fn ctl_json(d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(d, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out}"))
}

/// A job as every reader shows it: its HTTP view, its events, its finished stream, `ctl show`
/// (with the request).
fn whole_reads(d: &Daemon, id: &str) -> Value {
    let (s, _, stream) = http_full(
        d.addr,
        "GET",
        &format!("/api/jobs/{id}/events/stream"),
        &[],
        b"",
    );
    json!({
        "job": d.job(id),
        "events": d.events(id),
        "stream": [s, String::from_utf8_lossy(&stream)],
        "show": ctl_json(d, &["show", id]),
    })
}

/// Every page of `GET /api/jobs` of `size` (and `state`), following `before` to the end.
fn list_pages(d: &Daemon, size: usize, state: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut before = String::new();
    loop {
        let (s, v) = d.get(&format!(
            "/api/jobs?limit={size}&state={state}&before={before}"
        ));
        assert_eq!(s, 200, "{v}");
        let ids: Vec<String> = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        let Some(last) = ids.last().cloned() else {
            return pages;
        };
        assert!(ids.len() <= size);
        pages.push(ids);
        before = last;
    }
}

/// The in-memory views are a cache of the shared store: a daemon keeps live jobs and the 256 most
/// recently finished whole, and older finished jobs as heads, before and after a restart (it
/// loads only heads and those jobs at start). An old finished job's every read (its view with
/// result and error, its events, its stream, `ctl show` with the request) is read from the store
/// and is identical to what the daemon answered while it held the job whole; the list pages by
/// `before` through folded and whole jobs alike, in the same order before and after the restart.
#[test]
fn a_daemon_keeps_old_finished_jobs_folded_and_reads_them_whole_from_the_store() {
    if !pg::available() {
        return;
    }
    require_media_tools();
    let server = PgServer::start();
    let url = server.create_db("cache");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    // Downloads fail at once (the failed job's footage is on a closed port).
    let cfg = offline_config(&format!(
        "{SMALL_RENDER}retries = 0\n[daemon]\nname = \"alpha\"\nlease_secs = 3\nrenew_secs = 1\n"
    ));
    let start = || Daemon::start_in(&dir, &cfg, &["--store-url", &url]);
    let mut d = start();
    let done = d.submit(&job_body("folded and complete", 2));
    let failed = d.submit(&json!({
        "videoSubject": "folded and failed",
        "script": long_script(1),
        "footage": ["http://127.0.0.1:1/gone.mp4"],
    }));
    for (id, want) in [(&done, "completed"), (&failed, "failed")] {
        let j = d.wait_for_state(id, &["completed", "failed"], Duration::from_secs(180));
        assert_eq!(j["state"], want, "{j}");
    }
    // Read while the daemon holds them whole.
    let whole: Vec<Value> = [&done, &failed]
        .iter()
        .map(|id| whole_reads(&d, id))
        .collect();
    assert!(whole[0]["job"]["resultPath"].is_string(), "{}", whole[0]);
    assert!(whole[1]["job"]["errorMessage"].is_string(), "{}", whole[1]);
    assert_eq!(
        whole[0]["show"]["job"]["request"]["videoSubject"],
        "folded and complete"
    );

    // 300 jobs cancelled in the queue finish after them, then two stay queued.
    ctl(&d, &["pause"]);
    for b in 0..3 {
        let jobs: Vec<Value> = (0..100)
            .map(|i| json!({ "videoSubject": format!("filler {b}-{i}"), "script": "One." }))
            .collect();
        let (s, v) = d.post("/api/generate/batch", &json!({ "jobs": jobs }));
        assert_eq!(s, 200, "{v}");
        for id in v["jobIds"].as_array().unwrap() {
            let id = id.as_str().unwrap();
            let (s, v) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
            assert_eq!(s, 200, "{v}");
        }
    }
    let queued = [
        d.submit(&job_body("left queued 1", 1)),
        d.submit(&job_body("left queued 2", 1)),
    ];
    // Live (2) and the 256 most recently finished are whole: the follower folded the others.
    let kept = |d: &Daemon| ctl_json(d, &["status"])["jobsKeptWhole"].clone();
    assert_eq!(kept(&d), json!(2 + 256));
    let reads_of = |d: &Daemon| -> Vec<Value> {
        [&done, &failed]
            .iter()
            .map(|id| whole_reads(d, id))
            .collect()
    };
    assert_eq!(reads_of(&d), whole, "read from the store while running");
    let pages = |d: &Daemon| {
        json!({
            "all37": list_pages(d, 37, ""),
            "all1000": list_pages(d, 1000, ""),
            "cancelled100": list_pages(d, 100, "cancelled"),
            "failed1": list_pages(d, 1, "failed"),
            "queued1": list_pages(d, 1, "queued"),
        })
    };
    let before = pages(&d);
    let all: Vec<String> = before["all1000"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 304);
    assert_eq!(all[..2], [queued[1].clone(), queued[0].clone()]);
    assert_eq!(all[302..], [failed.clone(), done.clone()]);
    let paged: Vec<String> = before["all37"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p.as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paged, all,
        "pages of 37 follow each other without gaps or repeats"
    );
    assert_eq!(before["failed1"], json!([[failed.clone()]]));
    let listed = d.get("/api/jobs?limit=1000").1;
    let oldest = &listed["jobs"][303];
    assert_eq!(oldest, &whole[0]["job"], "a folded job listed whole");

    d.terminate(Duration::from_secs(30));
    let d = start();
    assert_eq!(
        kept(&d),
        json!(2 + 256),
        "a restart loads live and recent jobs only"
    );
    assert_eq!(reads_of(&d), whole, "read from the store after a restart");
    assert_eq!(pages(&d), before);
    for id in &queued {
        assert_eq!(d.job(id)["state"], "queued");
    }

    // A retry here of the folded failed job (the queue is still paused): this daemon's own commit
    // touches a job it holds folded, so its follower reads the job whole before applying it.
    ctl(&d, &["retry", &failed]);
    assert_eq!(d.job(&failed)["state"], "queued");
    let show = ctl_json(&d, &["show", &failed]);
    assert_eq!(show["job"]["request"], whole[1]["show"]["job"]["request"]);
    assert_eq!(show["job"]["attempt"], whole[1]["show"]["job"]["attempt"]);
    assert_eq!(kept(&d), json!(2 + 256 + 1));
    let events = d.events(&failed);
    let old = whole[1]["events"].as_array().unwrap();
    assert_eq!(events[..old.len()], old[..]);
    assert_eq!(events[old.len()]["type"], "queued", "{events:?}");
    // Cancelled in the queue, it ends again: the oldest recent job is folded in its place.
    ctl(&d, &["cancel", &failed]);
    assert_eq!(d.job(&failed)["state"], "cancelled");
    assert_eq!(kept(&d), json!(2 + 256));
}
