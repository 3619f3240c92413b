//! Operations on a PostgreSQL store, black box (real `reelsmith` processes, real PostgreSQL started
//! by the test, real HTTP and control sockets): retention purges finished jobs on PG as on redb,
//! and every daemon's cache (and state directory) drops them; `ctl backup` refuses a PG store with
//! a message naming pg_dump and the daemon stays up; `generate --store-url` claims its job with a
//! lease like a daemon, so no daemon claims or rescues it while it runs, and one rescues it once a
//! kill -9 of `generate` lets the lease expire.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::{self, PgServer};
use common::*;
use reelsmith::event::{Event, JobId, Kind, Level};
use reelsmith::store::{Store, FILE_NAME};
use serde_json::{json, Value};

/// A daemon of the cluster: its own state dir (outputs, socket), the shared store.
fn member(dir: &Path, url: &str, name: &str, extra: &str, args: &[&str]) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = offline_config(&format!(
        "{SMALL_RENDER}\n[daemon]\nname = \"{name}\"\nlease_secs = 3\nrenew_secs = 1\n{extra}"
    ));
    let mut all = vec!["--store-url", url];
    all.extend_from_slice(args);
    Daemon::start_in(dir, &cfg, &all)
}

/// `reelsmith ctl` on `d`: (exit status success, stdout + stderr).
fn ctl(d: &Daemon, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("reelsmith ctl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x").unwrap();
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `timeout`.
fn until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn max_id(events: &[Value]) -> u64 {
    events
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .unwrap_or(0)
}

fn listed(d: &Daemon) -> Vec<String> {
    let (_, v) = d.get("/api/jobs?limit=100");
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ctl_purge_on_postgres_removes_finished_jobs_from_every_daemon() {
    if !pg::available() {
        return;
    }
    let server = PgServer::start();
    let url = server.create_db("purge");
    let tmp = tempfile::tempdir().unwrap();
    let keep = "[retention]\nkeep_days = 0\n";
    let a = member(&tmp.path().join("a"), &url, "alpha", keep, &["--paused"]);
    let b = member(&tmp.path().join("b"), &url, "beta", keep, &["--paused"]);
    let live = a.submit(&json!({ "videoSubject": "stays queued" }));
    let gone: Vec<String> = (0..2)
        .map(|i| a.submit(&json!({ "videoSubject": format!("finished {i}") })))
        .collect();
    for id in &gone {
        a.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    }
    let newest = max_id(&a.events(&gone[1]));
    // B caches them as cancelled and holds files of theirs (as if it had rendered them).
    until(Duration::from_secs(10), "B sees the cancels", || {
        gone.iter().all(|id| b.job(id)["state"] == "cancelled")
    });
    let bstate = b.state_dir();
    for id in gone.iter().chain([&live]) {
        touch(&bstate.join("jobs").join(id).join("voice.wav"));
        touch(&bstate.join("output").join(format!("{id}.mp4")));
    }

    let (ok, out) = ctl(&a, &["purge", "--older-than", "1"]);
    assert!(ok && out.contains("Purged 0 finished job(s)"), "{out}");
    let (ok, out) = ctl(&a, &["purge", "--older-than", "0"]);
    assert!(
        ok && out.contains("Purged 2 finished job(s) older than 0 day(s)"),
        "{out}"
    );
    // The purging daemon reads its own purge at once.
    for id in &gone {
        assert_eq!(a.get(&format!("/api/jobs/{id}")).0, 404);
        assert_eq!(a.get(&format!("/api/jobs/{id}/events?after=0")).0, 404);
    }
    // The other daemon's follower drops them from its cache, and their files from its state dir.
    until(Duration::from_secs(10), "B drops the purged jobs", || {
        gone.iter()
            .all(|id| b.get(&format!("/api/jobs/{id}")).0 == 404)
    });
    for id in &gone {
        assert_eq!(b.get(&format!("/api/jobs/{id}/events?after=0")).0, 404);
    }
    until(Duration::from_secs(10), "B removes their files", || {
        gone.iter().all(|id| {
            !bstate.join("jobs").join(id).exists()
                && !bstate.join("output").join(format!("{id}.mp4")).exists()
        })
    });
    assert_eq!(listed(&a), vec![live.clone()]);
    assert_eq!(listed(&b), vec![live.clone()]);
    assert_eq!(b.job(&live)["state"], "queued");
    assert!(bstate.join("jobs").join(&live).join("voice.wav").exists());
    assert!(bstate.join("output").join(format!("{live}.mp4")).exists());
    // Recorded once, with who asked, in the history both daemons show.
    for d in [&a, &b] {
        let (ok, out) = ctl(d, &["events", "daemon"]);
        assert!(ok, "{out}");
        assert_eq!(out.matches("Purged 2 finished job(s)").count(), 1, "{out}");
    }
    // Purging again (the other daemon) finds nothing; ids are never given out twice.
    let (ok, out) = ctl(&b, &["purge", "--older-than", "0"]);
    assert!(ok && out.contains("Purged 0 finished job(s)"), "{out}");
    let fresh = b.submit(&json!({ "videoSubject": "after the purge" }));
    let first = b.events(&fresh)[0]["id"].as_u64().unwrap();
    assert!(
        first > newest,
        "id {first} reuses a purged one (<= {newest})"
    );
    a.assert_serving();
    b.assert_serving();
}

/// The purge records (admin events whose payload's action is `purge`) anywhere inside `v`.
fn collect_purges(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if v["payload"]["action"] == "purge" {
                out.push(v.clone());
            }
            m.values().for_each(|x| collect_purges(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_purges(x, out)),
        _ => {}
    }
}

/// A finished job of `age_days` ago, written into a redb log as a run would have.
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
fn every_daemon_on_postgres_sweeps_old_jobs_and_each_is_purged_once() {
    if !pg::available() {
        return;
    }
    // Old history (40 and 10 days) copied from a redb log into PostgreSQL.
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join(FILE_NAME);
    let (old, older, recent) = {
        let store = Store::open(&log).unwrap();
        (
            old_job(&store, 1, 40),
            old_job(&store, 4, 35),
            old_job(&store, 7, 10),
        )
    };
    let server = PgServer::start();
    let url = server.create_db("sweep");
    let out = Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(&log)
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Two daemons with the default keep_days (30), both sweeping at start.
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let (ua, ub) = (url.clone(), url.clone());
    let a = std::thread::spawn(move || member(&da, &ua, "alpha", "", &["--paused"]));
    let b = std::thread::spawn(move || member(&db, &ub, "beta", "", &["--paused"]));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for d in [&a, &b] {
        until(Duration::from_secs(20), "the old jobs are swept", || {
            [old, older]
                .iter()
                .all(|j| d.get(&format!("/api/jobs/{j}")).0 == 404)
        });
        assert_eq!(d.job(&recent.to_string())["state"], "completed");
    }
    // However many daemons swept, each job was deleted and recorded once.
    let (ok, out) = ctl(&a, &["events", "daemon", "--json"]);
    assert!(ok, "{out}");
    let mut records = Vec::new();
    for doc in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
        collect_purges(&doc.unwrap(), &mut records);
    }
    let named: Vec<String> = records
        .iter()
        .flat_map(|e| {
            e["payload"]["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut want = vec![old.to_string(), older.to_string()];
    want.sort();
    let mut got = named.clone();
    got.sort();
    assert_eq!(got, want, "{out}");
    assert_eq!(
        server.sql("sweep", "SELECT count(*) FROM jobs"),
        "1",
        "only the recent job is left"
    );
    assert_eq!(
        server.sql(
            "sweep",
            &format!("SELECT count(*) FROM events WHERE job IN ('{old}', '{older}')")
        ),
        "0"
    );
}

#[test]
fn ctl_backup_of_a_postgres_store_fails_naming_pg_dump_and_the_daemon_stays_up() {
    if !pg::available() {
        return;
    }
    let server = PgServer::start();
    let url = server.create_db("backup");
    let tmp = tempfile::tempdir().unwrap();
    let a = member(&tmp.path().join("a"), &url, "alpha", "", &["--paused"]);
    let job = a.submit(&json!({ "videoSubject": "kept" }));
    let dest = tmp.path().join("copy.redb");
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&a.socket)
        .arg("backup")
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("store is PostgreSQL") && stderr.contains("pg_dump --format=custom"),
        "{stderr}"
    );
    assert!(!dest.exists(), "no file is written");
    // --json: the daemon's error reply, naming pg_dump too.
    let (ok, text) = ctl(&a, &["--json", "backup", dest.to_str().unwrap()]);
    assert!(
        !ok && text.contains("pg_dump") && text.contains("error"),
        "{text}"
    );
    // Nothing was recorded as a backup, and the daemon serves on.
    let (ok, events) = ctl(&a, &["events", "daemon"]);
    assert!(ok && !events.contains("Backup written"), "{events}");
    a.assert_serving();
    assert_eq!(a.job(&job)["state"], "queued");
    let (ok, status) = ctl(&a, &["status"]);
    assert!(ok, "{status}");
}

/// Starts `reelsmith generate --store-url url` (as daemon `gen`, lease 3 s renewed every 1 s,
/// three attempts) on its own state directory under `dir`, rendering `sentences` sentences.
fn generate(dir: &Path, url: &str, sentences: usize) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("gen-config.toml");
    std::fs::write(
        &cfg,
        offline_config(&format!(
            "{SMALL_RENDER}\n[daemon]\nname = \"gen\"\nlease_secs = 3\nrenew_secs = 1\nmax_attempts = 3\n"
        )),
    )
    .unwrap();
    let script = dir.join("script.txt");
    std::fs::write(&script, long_script(sentences)).unwrap();
    Command::new(BIN)
        .arg("generate")
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--store-url", url])
        .arg("--script")
        .arg(&script)
        .arg("--out")
        .arg(dir.join("own.mp4"))
        .arg("--json")
        .arg("made by generate")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reelsmith generate")
}

/// The newest job `d` lists, once there is one not in `known`.
fn newest_job(d: &Daemon, known: &[&str]) -> String {
    let mut id = None;
    until(Duration::from_secs(30), "generate's job appears", || {
        id = listed(d)
            .into_iter()
            .next()
            .filter(|j| !known.contains(&j.as_str()));
        id.is_some()
    });
    id.unwrap()
}

#[test]
fn generate_on_postgres_claims_its_job_with_a_lease_and_a_daemon_rescues_it_after_a_kill() {
    if !pg::available() {
        return;
    }
    require_media_tools();
    let server = PgServer::start();
    let url = server.create_db("generate");
    let tmp = tempfile::tempdir().unwrap();
    // An idle daemon, free to claim anything queued, and to rescue anything whose lease expires.
    let a = member(
        &tmp.path().join("a"),
        &url,
        "alpha",
        "max_attempts = 3\n",
        &[],
    );

    // 1. generate runs its own job, well past the lease: alpha neither claims nor rescues it.
    let mut child = generate(&tmp.path().join("g1"), &url, 90);
    let first = newest_job(&a, &[]);
    let id = first.clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("generate did not finish its job within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "generate failed: {stderr}");
    assert!(
        std::fs::metadata(tmp.path().join("g1").join("own.mp4"))
            .unwrap()
            .len()
            > 1000
    );
    let evs = a.events(&id);
    let running: Vec<&Value> = evs.iter().filter(|e| e["type"] == "running").collect();
    assert_eq!(running.len(), 1, "{evs:?}");
    let p = &running[0]["payload"];
    assert_eq!(p["owner"]["daemon"], "gen", "{evs:?}");
    assert_eq!(p["epoch"], 1);
    assert!(p["leaseUntilMs"].as_i64().is_some(), "{p}");
    // Created and claimed in one commit: the queued and running events are adjacent ids, so
    // nobody ever saw the job queued.
    assert_eq!(evs[0]["type"], "queued");
    assert_eq!(
        running[0]["id"].as_u64(),
        evs[0]["id"].as_u64().map(|i| i + 1)
    );
    assert_eq!(evs.last().unwrap()["type"], "complete", "{evs:?}");
    assert!(
        !evs.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Job interrupted"))),
        "{evs:?}"
    );
    // It ran longer than two leases: only the renewals kept alpha from rescuing it.
    let ran = evs.last().unwrap()["timestamp"].as_f64().unwrap()
        - running[0]["timestamp"].as_f64().unwrap();
    assert!(
        ran > 6.0,
        "the render took {ran} s, not longer than two leases"
    );
    assert!(stderr.contains("job claimed"), "{stderr}");

    // 2. kill -9 of generate (and its tools) mid-run: alpha rescues the job once the lease
    // expires, and completes it.
    let mut child = generate(&tmp.path().join("g2"), &url, 40);
    let id = newest_job(&a, &[&first]);
    until(Duration::from_secs(60), "generate's tools run", || {
        !processes_mentioning(&id).is_empty()
    });
    let kids = descendants(child.id());
    child.kill().unwrap();
    let _ = child.wait();
    for k in kids {
        // SAFETY: signalling processes this test started (generate's descendants), by pid.
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    let killed = Instant::now();
    let rescue = a.wait_for_event(&id, Duration::from_secs(30), |e| {
        e["message"] == "Job interrupted: daemon gen stopped renewing its lease."
    });
    eprintln!(
        "rescued {:?} after the kill -9 of generate",
        killed.elapsed()
    );
    let j = a.wait_for_state(&id, &["completed", "failed"], Duration::from_secs(240));
    assert_eq!(j["state"], "completed", "{j}");
    let evs = a.events(&id);
    let running: Vec<&Value> = evs.iter().filter(|e| e["type"] == "running").collect();
    assert_eq!(running.len(), 2, "{evs:?}");
    assert_eq!(running[0]["payload"]["owner"]["daemon"], "gen");
    assert_eq!(running[1]["payload"]["owner"]["daemon"], "alpha");
    assert_eq!(running[1]["payload"]["epoch"], 2);
    assert!(running[1]["id"].as_u64() > rescue["id"].as_u64());
}
