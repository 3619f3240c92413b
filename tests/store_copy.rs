//! `reelsmith store copy`, black box: a real daemon on redb makes jobs in every state (completed by
//! a real offline render, failed, cancelled while running and while queued, retried, queued behind a
//! pause) and admin events (pause, resume, pause); it stops cleanly; the real binary copies its log
//! into a PostgreSQL store (started by the test, see `common::pg`); a daemon started on the copy
//! (`serve --store-url`) must answer every read exactly as the redb daemon did: job lists (each
//! limit, each state), each job, each job's events (every page, small limits, every cursor), the
//! job and daemon-wide event streams, the daemon's admin events, `/healthz` and `ctl status` (the
//! pause is a cluster setting: the copy keeps the queue paused). A second copy into the now
//! non-empty store is refused and changes nothing. A `ctl backup` taken while a job ran, copied,
//! has its running job rescued by the first daemon on the copy.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pg::{self, PgServer};
use common::*;
use serde_json::{json, Value};

const SHORT: &str = "Octopuses have three hearts. They taste with their arms.";

/// Runs `reelsmith ctl --json` against `d`: whether it succeeded, stdout (as JSON when it is), stderr.
fn ctl_answer(d: &Daemon, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .arg("--json")
        .args(args)
        .output()
        .expect("reelsmith ctl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    json!({
        "success": out.status.success(),
        "stdout": serde_json::from_str(&text).unwrap_or(Value::String(text)),
        "stderr": String::from_utf8_lossy(&out.stderr),
    })
}

/// `ctl_answer` of a command that must succeed: its stdout.
fn ctl(d: &Daemon, args: &[&str]) -> Value {
    let v = ctl_answer(d, args);
    assert_eq!(v["success"], true, "ctl {args:?}: {v}");
    v["stdout"].clone()
}

fn store_copy(from: &Path, to: &str) -> Output {
    Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(from)
        .args(["--to", to])
        .output()
        .expect("reelsmith store copy")
}

/// A GET answer as one value: status and body (JSON, or the text when it is not JSON).
fn get(d: &Daemon, path: &str) -> Value {
    let (status, body) = http(d.addr, "GET", path, &[], b"");
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    json!({ "status": status, "body": body })
}

/// The body of a chunked response received so far (a partial last chunk counts).
fn dechunk_partial(mut b: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16) else {
            break;
        };
        let data = &b[eol + 2..];
        if size == 0 || data.len() < size {
            body.extend_from_slice(&data[..data.len().min(size)]);
            break;
        }
        body.extend_from_slice(&data[..size]);
        b = data.get(size + 2..).unwrap_or_default();
    }
    body
}

/// The text of a server-sent event stream that does not end by itself (the daemon-wide one), read
/// until the message with id `last` has arrived whole; then the connection is dropped.
fn sse_until(addr: SocketAddr, path: &str, last: u64) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let (mut raw, mut buf) = (Vec::new(), [0u8; 8192]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let marker = format!("\n\nid: {last}\n");
    loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("{path}: the stream ended before event {last}"),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{path}: read: {e}"),
        }
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
            let text = String::from_utf8_lossy(&dechunk_partial(&raw[split + 4..])).to_string();
            if let Some(at) = text.find(&marker) {
                if let Some(end) = text[at + 2..].find("\n\n") {
                    return text[..at + 2 + end + 2].to_string();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path}: no event {last} within 30 s: {}",
            String::from_utf8_lossy(&raw)
        );
    }
}

/// Follows a job's events from the start in pages of `limit` until `more` is false (or the job is
/// not found); records each page.
fn event_pages(d: &Daemon, id: &str, limit: usize, out: &mut BTreeMap<String, Value>) {
    let mut after = 0;
    loop {
        let path = format!("/api/jobs/{id}/events?after={after}&limit={limit}");
        let page = get(d, &path);
        let body = page["body"].clone();
        out.insert(format!("GET {path}"), page);
        if let Some(last) = body["events"].as_array().and_then(|e| e.last()) {
            after = last["id"].as_u64().expect("event id");
        }
        if body["more"] != true {
            return;
        }
    }
}

/// Every read a client or an admin makes, keyed by what was asked. Fields that legitimately differ
/// between the engines are removed here, each named.
fn reads(d: &Daemon, jobs: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let put = |out: &mut BTreeMap<String, Value>, path: String| {
        let v = get(d, &path);
        out.insert(format!("GET {path}"), v);
    };
    // Job lists: each limit up to past the end, each state filter (all, and one).
    for limit in 1..=jobs.len() + 1 {
        put(&mut out, format!("/api/jobs?limit={limit}"));
    }
    put(&mut out, "/api/jobs".into());
    for state in ["queued", "running", "completed", "failed", "cancelled"] {
        put(&mut out, format!("/api/jobs?state={state}&limit=1000"));
        put(&mut out, format!("/api/jobs?state={state}&limit=1"));
    }
    let health = get(d, "/healthz");
    let last = health["body"]["lastEventId"].as_u64().expect("lastEventId");
    for id in jobs {
        put(&mut out, format!("/api/jobs/{id}"));
        put(&mut out, format!("/api/jobs/{id}/events"));
        for limit in [1, 3, 1000] {
            event_pages(d, id, limit, &mut out);
        }
        // Every cursor, also ids of other jobs and past the end.
        for after in 0..=last + 1 {
            put(
                &mut out,
                format!("/api/jobs/{id}/events?after={after}&limit=2"),
            );
        }
        let job = get(d, &format!("/api/jobs/{id}"));
        let state = job["body"]["job"]["state"].as_str().unwrap_or_default();
        if matches!(state, "completed" | "failed" | "cancelled") {
            // A finished job's stream ends by itself (then 204 past its end).
            put(&mut out, format!("/api/jobs/{id}/events/stream"));
            put(&mut out, format!("/api/jobs/{id}/events/stream?after=3"));
            let end = job["body"]["job"]["lastEventId"].as_u64().unwrap_or(0);
            put(
                &mut out,
                format!("/api/jobs/{id}/events/stream?after={end}"),
            );
        }
        if state == "completed" {
            put(&mut out, format!("/api/jobs/{id}/subtitles"));
            let (s, head, _) =
                http_full(d.addr, "HEAD", &format!("/api/jobs/{id}/video"), &[], b"");
            let length = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
                .map(str::to_string);
            out.insert(format!("HEAD /api/jobs/{id}/video"), json!([s, length]));
        }
    }
    // The admin events (who paused and resumed, ...), every page, and each job through `ctl show`.
    let admin = ctl(d, &["events", "daemon"]);
    let last_admin = admin["lastEventId"].as_u64().expect("admin lastEventId");
    out.insert("ctl events daemon".into(), admin);
    // The daemon-wide feed, from the start and from a cursor, with and without a type filter.
    for (path, upto) in [
        ("/api/events/stream?after=0".to_string(), last),
        (format!("/api/events/stream?after={}", last / 2), last),
        (
            "/api/events/stream?after=0&type=admin".to_string(),
            last_admin,
        ),
    ] {
        out.insert(format!("SSE {path}"), json!(sse_until(d.addr, &path, upto)));
    }
    out.insert(
        "ctl events daemon --limit 1".into(),
        ctl(d, &["events", "daemon", "--limit", "1"]),
    );
    out.insert("ctl jobs".into(), ctl(d, &["jobs", "--limit", "1000"]));
    for id in jobs {
        out.insert(format!("ctl show {id}"), ctl_answer(d, &["show", id]));
    }
    let mut health = health;
    // Differ legitimately: how long each daemon has run, and the store's description (engine,
    // schema version, the live daemons of a PostgreSQL store).
    for field in ["uptimeSeconds", "store"] {
        health["body"]
            .as_object_mut()
            .expect("healthz is an object")
            .remove(field);
    }
    out.insert("GET /healthz".into(), health);
    let mut status = ctl(d, &["status"]);
    // Differ legitimately: uptime, the store's description, the redb file's size (no file on
    // PostgreSQL), the free disk space (the test writes files meanwhile).
    for field in ["uptimeSeconds", "store", "databaseBytes", "freeDiskBytes"] {
        status
            .as_object_mut()
            .expect("ctl status is an object")
            .remove(field);
    }
    out.insert("ctl status".into(), status);
    out
}

/// Where two JSON values first differ (a path like `body.jobs[2].state`), if they do.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let (p, q) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if x.contains_key(k) != y.contains_key(k) {
                    return Some(format!("{at}.{k}: {p} / {q}"));
                }
                first_difference(p, q, &format!("{at}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} / {b}")),
    }
}

/// Asserts two read sets are equal, naming each read that differs and where (redb / pg).
fn assert_same_reads(redb: &BTreeMap<String, Value>, pg: &BTreeMap<String, Value>) {
    let mut wrong: Vec<String> = Vec::new();
    for (what, a) in redb {
        match pg.get(what) {
            None => wrong.push(format!("{what}: not asked of the copy")),
            Some(b) => wrong.extend(first_difference(a, b, "").map(|d| format!("{what}: {d}"))),
        }
    }
    for what in pg.keys().filter(|k| !redb.contains_key(*k)) {
        wrong.push(format!("{what}: asked of the copy only"));
    }
    assert!(
        wrong.is_empty(),
        "the copy answers {} read(s) differently (redb / pg):\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A job that fails at its footage stage at once: its clip is on a closed port.
fn failing(subject: &str) -> Value {
    json!({
        "videoSubject": subject,
        "script": SHORT,
        "footage": ["http://127.0.0.1:1/gone.mp4"],
    })
}

fn post(d: &Daemon, path: &str, body: &Value) -> Value {
    let (s, v) = d.post(path, body);
    assert_eq!(s, 200, "POST {path}: {v}");
    v
}

#[test]
fn store_copy_of_a_redb_log_with_jobs_in_every_state_answers_the_same_api_reads() {
    if !pg::available() {
        return;
    }
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    // Downloads fail at once (the failed jobs' footage is on a closed port).
    let cfg = offline_config(&format!("{SMALL_RENDER}retries = 0\n"));
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);

    // Purged: a finished job removed by `ctl purge` leaves a gap in the ids (and an admin event).
    let purged = d.submit(&failing("purged before the copy"));
    d.wait_for_state(&purged, &["failed"], Duration::from_secs(120));
    let reply = ctl(&d, &["purge", "--older-than", "0"]);
    assert_eq!(reply["jobs"], 1, "{reply}");

    // Completed: a real offline render, submitted under an idempotency key.
    let done_body = json!({ "videoSubject": "copied and complete", "script": SHORT });
    let keyed = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "copy-1"),
    ];
    let (s, v) = http(
        d.addr,
        "POST",
        "/api/generate",
        &keyed,
        done_body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&v));
    let done: Value = serde_json::from_slice(&v).unwrap();
    let done = done["jobId"].as_str().unwrap().to_string();
    let j = d.wait_for_state(&done, &["completed", "failed"], Duration::from_secs(180));
    assert_eq!(j["state"], "completed", "{j}");

    // Failed (twice: one stays failed, one is retried into the paused queue).
    let failed = d.submit(&failing("copied and failed"));
    let retried = d.submit(&failing("copied, failed and retried"));
    for id in [&failed, &retried] {
        let j = d.wait_for_state(id, &["completed", "failed"], Duration::from_secs(120));
        assert_eq!(j["state"], "failed", "{j}");
    }

    // Cancelled while running (its voice stage is under way).
    let stopped =
        d.submit(&json!({ "videoSubject": "cancelled mid-run", "script": long_script(200) }));
    d.wait_for_event(&stopped, Duration::from_secs(60), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Generating voiceover with"))
    });
    post(&d, &format!("/api/jobs/{stopped}/cancel"), &json!({}));
    let j = d.wait_for_state(&stopped, &["cancelled"], Duration::from_secs(30));
    assert_eq!(j["state"], "cancelled", "{j}");

    // Admin events: pause, resume (nothing is queued), pause again; the queue stays paused.
    ctl(&d, &["pause"]);
    ctl(&d, &["resume"]);
    // More admin events: a concurrency change (per daemon: both start from the config's).
    ctl(&d, &["concurrency", "2"]);
    ctl(&d, &["concurrency", "1"]);
    // Interrupted: running when the daemon stops (after the second pause), so re-queued.
    let interrupted =
        d.submit(&json!({ "videoSubject": "interrupted by the stop", "script": long_script(200) }));
    d.wait_for_event(&interrupted, Duration::from_secs(60), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Generating voiceover with"))
    });
    ctl(&d, &["pause"]);
    // A backup (an admin event) while that job runs: a log with a job `running` in it.
    let backup = tmp.path().join("backup.redb");
    ctl(&d, &["backup", backup.to_str().unwrap()]);
    // Queued behind the pause: a retried failure, a batch of two, and one cancelled while queued.
    ctl(&d, &["retry", &retried]);
    let batch = post(
        &d,
        "/api/generate/batch",
        &json!({ "jobs": [
            { "videoSubject": "queued first", "script": SHORT },
            { "videoSubject": "queued second", "script": SHORT, "voice": "en_uk_001" },
        ]}),
    );
    let queued: Vec<String> = batch["jobIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect();
    let dropped = d.submit(&json!({ "videoSubject": "cancelled in the queue", "script": SHORT }));
    let reply = ctl(&d, &["cancel", &dropped]);
    assert_eq!(reply["outcome"], "cancelled", "{reply}");
    let first_pid = d.pid();
    let st = d.terminate(Duration::from_secs(30));
    assert!(st.success(), "the redb daemon did not stop cleanly: {st:?}");

    let mut jobs = vec![
        purged.clone(),
        done.clone(),
        failed,
        retried.clone(),
        stopped,
        dropped,
        interrupted.clone(),
    ];
    jobs.extend(queued.iter().cloned());
    // The reads of the redb daemon, restarted on its log (paused still), then stopped for the copy.
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    for id in queued.iter().chain([&retried, &interrupted]) {
        assert_eq!(d.job(id)["state"], "queued", "{id}");
    }
    assert_eq!(d.get(&format!("/api/jobs/{purged}")).0, 404);
    assert!(
        d.events(&interrupted)
            .iter()
            .any(|e| e["message"] == "Job interrupted by a daemon shutdown."),
        "{:?}",
        d.events(&interrupted)
    );
    let before = reads(&d, &jobs);
    assert_eq!(
        before["ctl status"]["paused"], true,
        "a restart resumed the queue"
    );
    let last_id = before["GET /healthz"]["body"]["lastEventId"]
        .as_u64()
        .unwrap();
    let events = before["SSE /api/events/stream?after=0"]
        .as_str()
        .unwrap()
        .matches("\n\nid: ")
        .count();
    let st = d.terminate(Duration::from_secs(30));
    assert!(st.success(), "the redb daemon did not stop cleanly: {st:?}");

    // The copy, by the real binary.
    let server = PgServer::start();
    let url = server.create_db("copied");
    let log = d.state_dir().join("reelsmith.redb");
    let out = store_copy(&log, &url);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "store copy failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.sql("copied", "SELECT count(*) FROM events"),
        events.to_string()
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "copied {events} events of {} jobs from {} and verified the counts",
            jobs.len() - 1,
            log.display()
        )
    );
    assert_eq!(
        server.sql("copied", "SELECT last_id FROM log_head"),
        last_id.to_string()
    );

    // A daemon on the copy, on the same state directory (the outputs stay where they were made).
    let pgd = Daemon::start_in(tmp.path(), &cfg, &["--store-url", &url]);
    let after = reads(&pgd, &jobs);
    assert_same_reads(&before, &after);
    assert_eq!(
        after["ctl status"]["paused"], true,
        "the copy resumed the queue"
    );
    assert_eq!(after["GET /healthz"]["body"]["lastEventId"], last_id);
    let (_, h) = pgd.get("/healthz");
    assert_eq!(h["store"]["engine"], "postgres", "{h}");
    // The idempotency key still names its job: a retry of the submission is a replay.
    let (s, head, v) = http_full(
        pgd.addr,
        "POST",
        "/api/generate",
        &keyed,
        done_body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&v));
    let v: Value = serde_json::from_slice(&v).unwrap();
    assert_eq!(v["jobId"], done.as_str(), "{v}");
    assert!(
        head.to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{head}"
    );

    // A second copy into the now non-empty store is refused, clearly, and changes nothing.
    let counts = "SELECT (SELECT count(*) FROM events) || ' ' || (SELECT count(*) FROM jobs) || ' ' || (SELECT last_id FROM log_head)";
    let stored = server.sql("copied", counts);
    let out = store_copy(&log, &url);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a second copy succeeded: {stderr}");
    assert!(
        stderr.contains("the target store is not empty; copy into a new database"),
        "{stderr}"
    );
    assert_eq!(server.sql("copied", counts), stored);
    assert_same_reads(&before, &reads(&pgd, &jobs));

    // A mistyped source is refused (not created, not copied as an empty history).
    let typo = tmp.path().join("typo.redb");
    let out = store_copy(&typo, &server.create_db("untouched"));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "copied a missing log: {stderr}");
    assert!(stderr.contains("no event log at"), "{stderr}");
    assert!(!typo.exists());
    assert_eq!(
        server.sql(
            "untouched",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // The backup, copied: its running job has nobody renewing it, so the first daemon on the copy
    // rescues it like any job of a daemon that stopped (re-queued: the backup's queue is paused).
    let from_backup = server.create_db("from_backup");
    let out = store_copy(&backup, &from_backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join("from-backup");
    std::fs::create_dir_all(&dir).unwrap();
    let fast = format!("{cfg}\n[daemon]\nlease_secs = 3\nrenew_secs = 1\n");
    let b = Daemon::start_in(&dir, &fast, &["--store-url", &from_backup]);
    let evs = b.events(&interrupted);
    let running = evs.iter().rfind(|e| e["type"] == "running").unwrap();
    let ran_by = &running["payload"]["owner"];
    assert_eq!(ran_by["pid"], first_pid, "{running}");
    let rescue = format!(
        "Job interrupted: daemon {}-{first_pid} stopped renewing its lease.",
        ran_by["host"].as_str().unwrap()
    );
    b.wait_for_event(&interrupted, Duration::from_secs(30), |e| {
        e["message"] == rescue
    });
    let j = b.wait_for_state(&interrupted, &["queued"], Duration::from_secs(10));
    assert_eq!(j["attempt"], 1, "{j}");
    let (_, h) = b.get("/healthz");
    assert_eq!(h["jobs"]["running"], 0, "{h}");

    // The copied queue is live: a queued job cancels; resumed on PostgreSQL, the others run.
    let reply = ctl(&pgd, &["cancel", &interrupted]);
    assert_eq!(reply["outcome"], "cancelled", "{reply}");
    ctl(&pgd, &["resume"]);
    for id in &queued {
        let j = pgd.wait_for_state(id, &["completed", "failed"], Duration::from_secs(180));
        assert_eq!(j["state"], "completed", "{j}");
    }
}

fn store_check(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["store", "check"])
        .args(args)
        .env_remove("REELSMITH_STORE_URL")
        .envs(env.iter().copied())
        .output()
        .expect("reelsmith store check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// `store check` on PostgreSQL, black box, with the daemon running on the store (a job that ran and
/// failed, one queued, a batch of two, one cancelled in the queue): a good store
/// passes (by `--store-url` and by `REELSMITH_STORE_URL`; a FILE still means redb); a head changed
/// behind the events' back (its JSON, then a column the queue reads) fails naming the job and the
/// field; a damaged record fails naming its event; so do an id above the log head, a head without
/// events and events without a head.
#[test]
fn store_check_on_postgres_compares_every_stored_head_with_the_fold_of_its_events() {
    if !pg::available() {
        return;
    }
    let server = PgServer::start();
    let url = server.create_db("checked");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config(&format!("{SMALL_RENDER}retries = 0\n"));
    let d = Daemon::start_in(tmp.path(), &cfg, &["--store-url", &url]);
    // One job that ran (claimed with a lease, then failed: its footage is on a closed port), then
    // the queue paused behind it.
    let failed = d.submit(&failing("checked, ran and failed"));
    let j = d.wait_for_state(&failed, &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(j["state"], "failed", "{j}");
    ctl(&d, &["pause"]);
    let queued = d.submit(&json!({ "videoSubject": "checked, queued", "script": SHORT }));
    let batch = post(
        &d,
        "/api/generate/batch",
        &json!({ "jobs": [
            { "videoSubject": "checked first", "script": SHORT },
            { "videoSubject": "checked second", "script": SHORT },
        ]}),
    );
    let second = batch["jobIds"][1].as_str().unwrap().to_string();
    let dropped = d.submit(&json!({ "videoSubject": "checked, cancelled", "script": SHORT }));
    let reply = ctl(&d, &["cancel", &dropped]);
    assert_eq!(reply["outcome"], "cancelled", "{reply}");
    assert_eq!(d.job(&dropped)["state"], "cancelled");

    let events = server.sql("checked", "SELECT count(*) FROM events");
    let name = format!("postgres://postgres@127.0.0.1:{}/checked", server.port);
    let summary = format!("ok: {name}: {events} events of 5 jobs (");
    let (ok, out, err) = store_check(&["--store-url", &url], &[]);
    assert!(ok, "a good store failed its check: {err}");
    assert!(out.starts_with(&summary), "{out}");
    // The configured store, when no FILE is given; a FILE is always a redb log.
    let state = tmp.path().join("nothing-here");
    let state = state.to_str().unwrap();
    let (ok, out, err) = store_check(
        &["--state-dir", state],
        &[("REELSMITH_STORE_URL", url.as_str())],
    );
    assert!(ok, "the configured store failed its check: {err}");
    assert!(out.starts_with(&summary), "{out}");
    let file = tmp.path().join("no.redb");
    let (ok, _, err) = store_check(
        &[file.to_str().unwrap()],
        &[("REELSMITH_STORE_URL", url.as_str())],
    );
    assert!(!ok && err.contains("there is no event log at"), "{err}");

    // A head whose JSON says `completed` while the events say `queued`.
    let saved = server.sql(
        "checked",
        &format!("SELECT head::text FROM jobs WHERE id = '{queued}'"),
    );
    server.sql(
        "checked",
        &format!(
            "UPDATE jobs SET head = jsonb_set(head, '{{state}}', '\"completed\"') WHERE id = '{queued}'"
        ),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(!ok, "a damaged head passed");
    assert!(
        err.contains(&format!("job {queued}"))
            && err.contains("the stored head's `state` is \"completed\", the fold of its events gives \"queued\""),
        "{err}"
    );
    // Put back, the store passes again; then the `state` column (what claims read) is changed.
    server.sql(
        "checked",
        &format!(
            "UPDATE jobs SET head = '{}'::jsonb WHERE id = '{queued}'",
            saved.replace('\'', "''")
        ),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(ok, "{err}");
    server.sql(
        "checked",
        &format!("UPDATE jobs SET state = 'completed' WHERE id = '{dropped}'"),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(
        !ok && err.contains(&format!("job {dropped}")) && err.contains("`jobs.state` column"),
        "{err}"
    );
    server.sql(
        "checked",
        &format!("UPDATE jobs SET state = 'cancelled' WHERE id = '{dropped}'"),
    );

    // A damaged record (a length prefix past its end): the check names that event.
    let record = server.sql(
        "checked",
        &format!("SELECT max(id) FROM events WHERE job = '{second}'"),
    );
    let bytes = server.sql(
        "checked",
        &format!("SELECT encode(record, 'hex') FROM events WHERE id = {record}"),
    );
    server.sql(
        "checked",
        &format!("UPDATE events SET record = '\\x01ffffffff'::bytea WHERE id = {record}"),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(!ok, "a damaged record passed");
    assert!(
        err.contains(&format!("event record {record} is damaged"))
            && err.contains(&format!("job {second}")),
        "{err}"
    );
    server.sql(
        "checked",
        &format!("UPDATE events SET record = decode('{bytes}', 'hex') WHERE id = {record}"),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(ok, "{err}");

    // An id the log head never gave out: the newest event is named.
    let newest = server.sql("checked", "SELECT max(id) FROM events");
    server.sql("checked", "UPDATE log_head SET last_id = last_id - 1");
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(
        !ok && err.contains(&format!("event record {newest} "))
            && err.contains("above the log head's last id"),
        "{err}"
    );
    server.sql("checked", "UPDATE log_head SET last_id = last_id + 1");
    // A head without events, and events without a head.
    server.sql(
        "checked",
        &format!("DELETE FROM events WHERE job = '{queued}'"),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(
        !ok && err.contains(&format!("job {queued} has a row in `jobs` but no events")),
        "{err}"
    );
    server.sql(
        "checked",
        &format!("DELETE FROM jobs WHERE id = '{dropped}'"),
    );
    server.sql(
        "checked",
        &format!("DELETE FROM jobs WHERE id = '{queued}'"),
    );
    let (ok, _, err) = store_check(&["--store-url", &url], &[]);
    assert!(
        !ok && err.contains(&format!("job {dropped} has events but no row in `jobs`")),
        "{err}"
    );
    d.assert_serving();
}
