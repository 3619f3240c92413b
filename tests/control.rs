//! The control socket, end to end: a real daemon, its real Unix socket, and the `reelsmith ctl`
//! binary. Every command goes through the socket; permissions, framing limits, drain, backup and
//! sd_notify are checked from the outside.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{long_script, Daemon, BIN, SMALL_RENDER};
use serde_json::{json, Value};

/// Offline, small and fast: no LLM, generated footage, a tiny render.
fn config() -> String {
    format!("[llm]\nprovider = \"offline\"\n{SMALL_RENDER}")
}

/// One control connection (std, blocking), as a script would hold it.
struct Ctl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Ctl {
    fn connect(path: &Path) -> Ctl {
        let s = UnixStream::connect(path).expect("connect to the control socket");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        Ctl {
            writer: s.try_clone().expect("clone"),
            reader: BufReader::new(s),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to the control socket");
    }

    /// The next reply line, parsed; `None` at end of stream.
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(line.trim_end())
                    .unwrap_or_else(|e| panic!("reply {line:?}: {e}")),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    fn request(&mut self, req: Value) -> Value {
        self.send_raw(format!("{req}\n").as_bytes());
        self.next().expect("a reply line")
    }
}

/// One request on a fresh connection.
fn ctl(d: &Daemon, req: Value) -> Value {
    Ctl::connect(&d.socket).request(req)
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "expected ok: {reply}");
    reply
}

fn err(reply: &Value, needle: &str) {
    assert_eq!(reply["ok"], false, "expected an error: {reply}");
    let msg = reply["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "error {msg:?} does not mention {needle:?}"
    );
}

fn job_body(subject: &str, sentences: usize) -> Value {
    json!({ "videoSubject": subject, "script": long_script(sentences) })
}

fn run_ctl(d: &Daemon, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run reelsmith ctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn is_terminal(t: &str) -> bool {
    matches!(t, "complete" | "error" | "cancelled")
}

/// Submits a job if the daemon still takes HTTP requests (it may be exiting): the job id, if accepted.
fn try_submit(d: &Daemon, body: &Value) -> Option<String> {
    let (addr, body) = (d.addr, body.to_string());
    let res = std::panic::catch_unwind(move || {
        common::http(
            addr,
            "POST",
            "/api/generate",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    });
    match res {
        Ok((200, b)) => serde_json::from_slice::<Value>(&b).ok()?["jobId"]
            .as_str()
            .map(String::from),
        _ => None,
    }
}

/// Waits for the child to exit; panics after `timeout`.
fn wait_exit(d: &mut Daemon, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = d.child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit within {timeout:?}:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_reports_the_daemon_on_a_0600_socket() {
    let (d, _tmp) = Daemon::start(&config(), &[]);
    let mode = std::fs::metadata(&d.socket)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {:o}", mode & 0o777);

    let st = ctl(&d, json!({"cmd": "status"}));
    ok(&st);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["uptimeSeconds"].is_u64());
    assert_eq!(st["paused"], false);
    assert_eq!(st["concurrency"], 1);
    for k in [
        "queued",
        "running",
        "finished",
        "lastEventId",
        "databaseBytes",
        "freeDiskBytes",
    ] {
        assert!(st[k].is_u64(), "status lacks {k}: {st}");
    }
    assert!(st["databaseBytes"].as_u64().unwrap() > 0);
    assert!(st["freeDiskBytes"].as_u64().unwrap() > 0);
    assert_eq!(st["socket"], d.socket.display().to_string());

    let pong = ctl(&d, json!({"cmd": "ping"}));
    assert_eq!(ok(&pong)["pong"], true);
}

#[test]
fn malformed_unknown_and_incomplete_requests_get_errors_and_the_connection_lives_on() {
    let (d, _tmp) = Daemon::start(&config(), &[]);
    let mut c = Ctl::connect(&d.socket);
    c.send_raw(b"{nope\n");
    err(&c.next().unwrap(), "not valid JSON");
    err(&c.request(json!([1, 2])), "JSON object");
    err(&c.request(json!({"verb": "status"})), "\"cmd\"");
    err(&c.request(json!({"cmd": "fly"})), "unknown command `fly`");
    err(&c.request(json!({"cmd": "show"})), "\"id\"");
    err(
        &c.request(json!({"cmd": "cancel", "id": "not-a-uuid"})),
        "job id",
    );
    err(&c.request(json!({"cmd": "concurrency"})), "\"value\"");
    err(
        &c.request(json!({"cmd": "concurrency", "value": 0})),
        "between 1 and 64",
    );
    err(
        &c.request(json!({"cmd": "jobs", "state": "done"})),
        "one of queued",
    );
    err(
        &c.request(json!({"cmd": "backup", "path": "relative.redb"})),
        "absolute",
    );
    err(
        &c.request(json!({"cmd": "show", "id": "3f2b6c1e-8d2a-4c3b-9e1f-0a1b2c3d4e5f"})),
        "Job not found.",
    );
    c.send_raw(b"\n\r\n");
    // The same connection still answers.
    ok(&c.request(json!({"cmd": "status"})));

    // A silent client with half a line holds nobody up.
    let mut slow = Ctl::connect(&d.socket);
    slow.send_raw(b"{\"cmd\":");
    ok(&ctl(&d, json!({"cmd": "status"})));

    // A line over 64 KiB is refused and that connection closed; the daemon lives on.
    let mut big = Ctl::connect(&d.socket);
    let mut line = vec![b'a'; 70 * 1024];
    line.push(b'\n');
    // The daemon may close before it has read everything: ignore a broken pipe.
    let _ = big.writer.write_all(&line);
    err(&big.next().expect("a refusal"), "longer than 65536 bytes");
    assert!(
        big.next().is_none(),
        "connection stays open after an oversized line"
    );
    ok(&c.request(json!({"cmd": "status"})));
    let (s, _) = d.get("/api/jobs?limit=1");
    assert_eq!(s, 200);
    drop(slow);
}

#[test]
fn jobs_show_events_cancel_and_retry_through_the_socket() {
    let (d, _tmp) = Daemon::start(&config(), &["--paused"]);
    let a = d.submit(&json!({"videoSubject": "first"}));
    let b = d.submit(&json!({"videoSubject": "second"}));

    let jobs = ctl(&d, json!({"cmd": "jobs"}));
    let ids: Vec<&str> = ok(&jobs)["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b.as_str(), a.as_str()], "newest first");
    let one = ctl(&d, json!({"cmd": "jobs", "state": "queued", "limit": 1}));
    assert_eq!(ok(&one)["jobs"].as_array().unwrap().len(), 1);
    let none = ctl(&d, json!({"cmd": "jobs", "state": "running"}));
    assert!(ok(&none)["jobs"].as_array().unwrap().is_empty());

    let show = ctl(&d, json!({"cmd": "show", "id": a}));
    assert_eq!(ok(&show)["job"]["state"], "queued");
    assert_eq!(show["job"]["subject"], "first");
    assert_eq!(show["job"]["request"]["videoSubject"], "first");

    let evs = ctl(&d, json!({"cmd": "events", "id": a}));
    let list = ok(&evs)["events"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["type"], "queued");
    assert_eq!(list[0]["message"], "Job queued.");
    assert_eq!(evs["state"], "queued");
    let after = list[0]["id"].as_u64().unwrap();
    let empty = ctl(&d, json!({"cmd": "events", "id": a, "after": after}));
    assert!(ok(&empty)["events"].as_array().unwrap().is_empty());

    let cancel = ctl(&d, json!({"cmd": "cancel", "id": a}));
    assert_eq!(ok(&cancel)["outcome"], "cancelled");
    assert_eq!(d.job(&a)["state"], "cancelled");
    let again = ctl(&d, json!({"cmd": "cancel", "id": a}));
    assert_eq!(ok(&again)["outcome"], "noop");
    // Who cancelled is in the log: the peer's uid, via the socket.
    let evs = d.events(&a);
    let req = evs
        .iter()
        .find(|e| e["type"] == "cancel_requested")
        .expect("cancel_requested event");
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!(req["payload"]["by"], json!({"uid": me, "via": "socket"}));

    err(
        &ctl(&d, json!({"cmd": "retry", "id": b})),
        "only failed or cancelled",
    );
    ok(&ctl(&d, json!({"cmd": "retry", "id": a})));
    assert_eq!(d.job(&a)["state"], "queued");
    let retried = d.events(&a);
    let last = retried.last().unwrap();
    assert_eq!(last["type"], "queued");
    assert_eq!(last["payload"]["by"]["uid"], me);
    err(
        &ctl(
            &d,
            json!({"cmd": "cancel", "id": "3f2b6c1e-8d2a-4c3b-9e1f-0a1b2c3d4e5f"}),
        ),
        "Job not found.",
    );
}

#[test]
fn follow_streams_a_running_jobs_events_in_order_until_it_ends() {
    let (d, _tmp) = Daemon::start(&config(), &["--paused"]);
    let id = d.submit(&job_body("octopus hearts", 2));
    let mut follow = Ctl::connect(&d.socket);
    follow
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(240)))
        .ok();
    follow.send_raw(format!("{}\n", json!({"cmd": "events", "id": id, "follow": true})).as_bytes());
    // The job is queued: its first event arrives at once, then nothing until the queue resumes.
    let first = follow.next().expect("first event");
    assert_eq!(ok(&first)["event"]["type"], "queued");
    ok(&ctl(&d, json!({"cmd": "resume"})));

    let mut seen = vec![first["event"].clone()];
    let end = loop {
        let line = follow.next().expect("follow ended without an end line");
        ok(&line);
        if line["end"] == true {
            break line;
        }
        seen.push(line["event"].clone());
    };
    let ids: Vec<u64> = seen.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not ascending: {ids:?}"
    );
    let types: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[1], "running", "{types:?}");
    let last = *types.last().unwrap();
    assert!(is_terminal(last), "stream ended on {last}: {types:?}");
    let want_state = match last {
        "complete" => "completed",
        "error" => "failed",
        _ => "cancelled",
    };
    assert_eq!(end["state"], want_state);
    assert_eq!(end["lastEventId"], *ids.last().unwrap());
    // Exactly the log's story, nothing missed or repeated.
    let http: Vec<u64> = d
        .events(&id)
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, http);
    // The connection is reusable after the stream.
    ok(&follow.request(json!({"cmd": "status"})));
    // Following a finished job replays it and ends at once.
    let mut again = Ctl::connect(&d.socket);
    again.send_raw(
        format!(
            "{}\n",
            json!({"cmd": "events", "id": id, "follow": true, "after": ids[ids.len() - 2]})
        )
        .as_bytes(),
    );
    assert_eq!(again.next().unwrap()["event"]["id"], *ids.last().unwrap());
    assert_eq!(again.next().unwrap()["end"], true);
}

#[test]
fn pause_keeps_a_submission_queued_and_resume_runs_it() {
    let (d, _tmp) = Daemon::start(&config(), &[]);
    let paused = ctl(&d, json!({"cmd": "pause"}));
    assert_eq!(ok(&paused)["paused"], true);
    assert_eq!(ctl(&d, json!({"cmd": "status"}))["paused"], true);
    let id = d.submit(&job_body("paused", 2));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.job(&id)["state"], "queued");
    ok(&ctl(&d, json!({"cmd": "resume"})));
    d.wait_for_state(
        &id,
        &["running", "completed", "failed"],
        Duration::from_secs(30),
    );
    assert!(d.events(&id).iter().any(|e| e["type"] == "running"));

    // Both changes are admin events of the daemon, with the caller's uid.
    let admin = ctl(&d, json!({"cmd": "events", "id": "daemon"}));
    let msgs: Vec<(String, Value)> = ok(&admin)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap().to_string(),
                e["payload"]["by"]["uid"].clone(),
            )
        })
        .collect();
    // SAFETY: geteuid has no preconditions.
    let me = json!(unsafe { libc::geteuid() });
    assert!(
        msgs.contains(&("Queue paused.".into(), me.clone())),
        "{msgs:?}"
    );
    assert!(msgs.contains(&("Queue resumed.".into(), me)), "{msgs:?}");
    let _ = ctl(&d, json!({"cmd": "cancel", "id": id}));
}

#[test]
fn concurrency_two_runs_two_jobs_at_once() {
    let (d, _tmp) = Daemon::start(&config(), &["--paused"]);
    let a = d.submit(&job_body("first of two", 8));
    let b = d.submit(&job_body("second of two", 8));
    let set = ctl(&d, json!({"cmd": "concurrency", "value": 2}));
    assert_eq!(ok(&set)["concurrency"], 2);
    assert_eq!(ctl(&d, json!({"cmd": "status"}))["concurrency"], 2);
    ok(&ctl(&d, json!({"cmd": "resume"})));
    // Both start before either ends: in the one global sequence, both `running` events come
    // before the first terminal event.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ra, rb) = loop {
        let (ea, eb) = (d.events(&a), d.events(&b));
        let running = |evs: &[Value]| {
            evs.iter()
                .find(|e| e["type"] == "running")
                .map(|e| e["id"].as_u64().unwrap())
        };
        if let (Some(x), Some(y)) = (running(&ea), running(&eb)) {
            break (x, y);
        }
        assert!(
            Instant::now() < deadline,
            "both jobs did not start:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for id in [&a, &b] {
        let _ = ctl(&d, json!({"cmd": "cancel", "id": id}));
        d.wait_for_state(
            id,
            &["completed", "failed", "cancelled"],
            Duration::from_secs(60),
        );
    }
    let first_end = [&a, &b]
        .iter()
        .flat_map(|id| d.events(id))
        .filter(|e| is_terminal(e["type"].as_str().unwrap()))
        .map(|e| e["id"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(
        ra < first_end && rb < first_end,
        "running {ra},{rb}; first end {first_end}"
    );
    let admin = ctl(&d, json!({"cmd": "events", "id": "daemon"}));
    assert!(admin["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["payload"]["action"] == "concurrency" && e["payload"]["value"] == 2));
}

#[test]
fn backup_during_a_storm_holds_every_acknowledged_job() {
    let (d, tmp) = Daemon::start(&config(), &["--paused"]);
    let addr = d.addr;
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let storm: Vec<_> = (0..3)
        .map(|t| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"videoSubject": format!("storm {t}-{n}")}).to_string();
                    let (s, b) = common::http(
                        addr,
                        "POST",
                        "/api/generate",
                        &[("Content-Type", "application/json")],
                        body.as_bytes(),
                    );
                    assert_eq!(s, 200, "{}", text(&b));
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .push(v["jobId"].as_str().unwrap().to_string());
                    n += 1;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 30 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before: Vec<String> = acked.lock().unwrap().clone();
    let dest = tmp.path().join("backup.redb");
    let reply = ctl(
        &d,
        json!({"cmd": "backup", "path": dest.display().to_string()}),
    );
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.join().unwrap();
    }
    ok(&reply);
    assert_eq!(reply["path"], dest.display().to_string());
    let copied = reply["events"].as_u64().unwrap();
    assert!(copied as usize >= before.len(), "{reply}");
    assert!(reply["bytes"].as_u64().unwrap() > 0);

    let store =
        std::sync::Arc::new(reelsmith::store::Store::open(&dest).expect("the backup opens"));
    assert_eq!(store.len().unwrap(), copied);
    for id in &before {
        let job = id.parse().unwrap();
        let evs = store.read_job(job, 0, u64::MAX, 10).unwrap();
        assert!(
            !evs.is_empty(),
            "job {id} acknowledged before the backup is missing from it"
        );
        assert_eq!(evs[0].kind.as_str(), "queued");
    }
    let (views, report) = reelsmith::views::Views::replay(&store).expect("the backup replays");
    assert_eq!(report.orphans, 0);
    assert!(views.counts().queued as usize >= before.len());
    // The live daemon is unharmed and refuses to overwrite.
    err(
        &ctl(
            &d,
            json!({"cmd": "backup", "path": dest.display().to_string()}),
        ),
        "already exists",
    );
    ok(&ctl(&d, json!({"cmd": "status"})));
}

#[test]
fn drain_waits_for_the_running_job_then_exits_zero_starting_nothing_new() {
    let tmp = tempfile::tempdir().unwrap();
    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let np = notify_path.display().to_string();
    // Read the notifications as they come, as systemd does (a socket nobody reads fills up after
    // a few datagrams).
    let got = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let got = got.clone();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match notify.recv(&mut buf) {
                    Ok(n) => {
                        let m = text(&buf[..n]);
                        let stop = m == "STOPPING=1";
                        got.lock().unwrap().push(m);
                        if stop {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        })
    };
    let mut d = Daemon::start_with_env(
        tmp.path(),
        &config(),
        &[],
        &[("NOTIFY_SOCKET", np.as_str())],
    );
    let a = d.submit(&job_body("drained", 20));
    let state = d.wait_for_state(
        &a,
        &["running", "completed", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(
        state["state"], "running",
        "the job must still run when the drain starts"
    );

    let socket = d.socket.clone();
    let drain = std::thread::spawn(move || {
        let mut c = Ctl::connect(&socket);
        c.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(300)))
            .ok();
        let reply = c.request(json!({"cmd": "drain"}));
        (reply, Instant::now())
    });
    // Submitted during the drain: it queues but must not start.
    std::thread::sleep(Duration::from_millis(300));
    let late = try_submit(&d, &job_body("too late", 1));

    let (reply, replied) = drain.join().unwrap();
    ok(&reply);
    let status = wait_exit(&mut d, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "drain must exit 0:\n{}", d.logs());

    let store = reelsmith::store::Store::open(&d.state_dir().join("reelsmith.redb")).unwrap();
    let job = |id: &str| {
        store
            .read_job(id.parse().unwrap(), 0, u64::MAX, 10_000)
            .unwrap()
    };
    let ev_a = job(&a);
    let last = ev_a.last().unwrap();
    assert!(
        is_terminal(last.kind.as_str()),
        "job a ended with {:?}",
        last.kind
    );
    assert_ne!(last.message, "Job interrupted by a daemon shutdown.");
    // The reply came after the job's end was recorded.
    let end_ms = last.timestamp_ms;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let replied_ms = now_ms - replied.elapsed().as_millis() as i64;
    assert!(
        end_ms <= replied_ms + 5,
        "drain replied at {replied_ms} before the job ended at {end_ms}"
    );
    if let Some(late) = late {
        assert!(
            job(&late).iter().all(|e| e.kind.as_str() != "running"),
            "a job started during the drain"
        );
    }
    // systemd was asked for more time while the drain waited.
    reader.join().unwrap();
    let got = got.lock().unwrap().clone();
    assert!(
        got.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")),
        "{got:?}"
    );
    assert!(got.iter().any(|m| m == "STOPPING=1"), "{got:?}");
}

#[test]
fn sd_notify_sends_ready_status_watchdog_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (got, done) = (got.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    got.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).to_string());
                }
            }
        })
    };
    let p = path.display().to_string();
    let mut d = Daemon::start_with_env(
        tmp.path(),
        &config(),
        &["--paused"],
        &[("NOTIFY_SOCKET", p.as_str()), ("WATCHDOG_USEC", "1000000")],
    );
    let has = |pred: &dyn Fn(&str) -> bool| got.lock().unwrap().iter().any(|m| pred(m));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(has(&|m| m == "READY=1")
        && has(&|m| m.starts_with("STATUS="))
        && has(&|m| m == "WATCHDOG=1"))
    {
        assert!(
            Instant::now() < deadline,
            "missing notifications: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // STATUS= follows the queue.
    d.submit(&json!({"videoSubject": "status"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has(&|m| m.starts_with("STATUS=") && m.contains("1 queued")) {
        assert!(
            Instant::now() < deadline,
            "STATUS= did not follow the queue: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = d.terminate(Duration::from_secs(20));
    assert!(st.success(), "{st:?}");
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let msgs = got.lock().unwrap().clone();
    let ready = msgs.iter().position(|m| m == "READY=1").unwrap();
    let stopping = msgs
        .iter()
        .position(|m| m == "STOPPING=1")
        .expect("STOPPING=1");
    assert!(ready < stopping, "{msgs:?}");
    assert!(
        !d.socket.exists(),
        "socket file left behind after a clean stop"
    );
}

#[test]
fn another_uid_is_refused() {
    let (d, tmp) = Daemon::start(&config(), &[]);
    // Let the other user reach the socket file; the file mode still keeps them out.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
    sys.exit(0)
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#;
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv");
        assert!(
            out.status.success() || args[0] == BIN,
            "{}",
            text(&out.stderr)
        );
        out
    };
    let sock = d.socket.display().to_string();
    // A python outside root's home (pyenv shims under /root are not readable by uid 65534).
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a system python3");
    let out = as_nobody(&[python, "-c", script, &sock]);
    assert_eq!(
        text(&out.stdout).trim(),
        "EACCES",
        "mode 0600 must keep other users out"
    );

    // Even with the file mode opened up, SO_PEERCRED refuses them: one error line, then close.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&[python, "-c", script, &sock]);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    err(&v, "permission denied: uid 65534");
    let out = as_nobody(&[BIN, "ctl", "--socket", &sock, "pause"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    // Nothing changed, and root still gets in.
    assert_eq!(ok(&ctl(&d, json!({"cmd": "status"})))["paused"], false);
}

#[test]
fn a_live_socket_is_kept_and_a_stale_one_replaced() {
    let (d, tmp) = Daemon::start(&config(), &[]);
    let other = tmp.path().join("other-state");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&other)
        .arg("--socket")
        .arg(&d.socket)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("already listening on"), "{e}");
    ok(&ctl(&d, json!({"cmd": "status"})));

    // A socket file nobody listens on is replaced.
    let dir = tempfile::tempdir().unwrap();
    drop(UnixListener::bind(dir.path().join("reelsmith.sock")).unwrap());
    assert!(dir.path().join("reelsmith.sock").exists());
    let d2 = Daemon::start_in(dir.path(), &config(), &[]);
    ok(&ctl(&d2, json!({"cmd": "status"})));

    // Something that is not a socket is left alone.
    let dir3 = tempfile::tempdir().unwrap();
    let path = dir3.path().join("reelsmith.sock");
    std::fs::write(&path, b"precious").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir3.path().join("state"))
        .arg("--socket")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a socket"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn reload_applies_live_keys_names_restart_keys_and_survives_a_bad_file() {
    let (d, tmp) = Daemon::start(&config(), &[]);
    let cfg = tmp.path().join("test-config.toml");
    let unchanged = ctl(&d, json!({"cmd": "reload"}));
    assert_eq!(ok(&unchanged)["applied"], json!([]));
    assert_eq!(unchanged["restartRequired"], json!([]));

    std::fs::write(&cfg, format!("{}\n[daemon]\nconcurrency = 3\nmax_attempts = 5\n[server]\ncors_origin = \"http://example.test\"\n", config())).unwrap();
    let r = ctl(&d, json!({"cmd": "reload"}));
    ok(&r);
    assert_eq!(
        r["applied"],
        json!(["daemon.concurrency", "daemon.max_attempts"]),
        "{r}"
    );
    assert_eq!(r["restartRequired"], json!(["server.cors_origin"]), "{r}");
    assert_eq!(ctl(&d, json!({"cmd": "status"}))["concurrency"], 3);
    // New jobs get the new settings.
    let id = d.submit(&json!({"videoSubject": "after reload"}));
    assert_eq!(d.job(&id)["maxAttempts"], 5);
    // Restart keys were left alone: the HTTP layer still sends the old origin.
    let (_, head, _) = common::http_full(
        d.addr,
        "GET",
        "/api/jobs?limit=1",
        &[("Origin", "http://x.test")],
        b"",
    );
    assert!(!head.contains("example.test"), "{head}");

    std::fs::write(&cfg, "[daemon]\nconcurrency = 0\n").unwrap();
    err(&ctl(&d, json!({"cmd": "reload"})), "daemon.concurrency");
    std::fs::write(&cfg, "[daemon\nconcurrency = ").unwrap();
    err(&ctl(&d, json!({"cmd": "reload"})), "nothing changed");
    assert_eq!(ctl(&d, json!({"cmd": "status"}))["concurrency"], 3);

    let admin = ctl(&d, json!({"cmd": "events", "id": "daemon"}));
    assert!(admin["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["payload"]["action"] == "reload"));
}

#[test]
fn ctl_prints_tables_json_and_exit_codes() {
    let (d, _tmp) = Daemon::start(&config(), &["--paused"]);
    let id = d.submit(&json!({"videoSubject": "a subject for the table"}));

    let out = run_ctl(&d, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("version:") && s.contains("1 queued") && s.contains("paused"),
        "{s}"
    );

    let out = run_ctl(&d, &["--json", "status"]);
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["ok"], true);
    let out = run_ctl(&d, &["status", "--json"]);
    assert!(serde_json::from_str::<Value>(text(&out.stdout).trim()).is_ok());

    let out = run_ctl(&d, &["jobs", "--state", "queued"]);
    let s = text(&out.stdout);
    assert!(
        s.starts_with("ID") && s.contains(&id) && s.contains("a subject for the table"),
        "{s}"
    );

    let out = run_ctl(&d, &["show", &id]);
    assert!(text(&out.stdout).contains("queued"));
    let out = run_ctl(&d, &["events", &id]);
    assert!(
        text(&out.stdout).contains("Job queued."),
        "{}",
        text(&out.stdout)
    );

    let out = run_ctl(&d, &["concurrency", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).trim(), "Concurrency set to 2.");

    // The daemon's refusal: exit 1 with its message.
    let out = run_ctl(&d, &["show", "3f2b6c1e-8d2a-4c3b-9e1f-0a1b2c3d4e5f"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Job not found."),
        "{}",
        text(&out.stderr)
    );

    // Not a command: exit 2 with usage.
    for args in [
        &["fly"][..],
        &["show"],
        &["concurrency", "many"],
        &["jobs", "--limit"],
    ] {
        let out = run_ctl(&d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("usage: reelsmith ctl"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // Nobody listening.
    let out = Command::new(BIN)
        .args(["ctl", "--socket", "/nonexistent/reelsmith.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no reelsmith daemon is listening on /nonexistent/reelsmith.sock (is `reelsmith serve` running?)"),
        "{}",
        text(&out.stderr)
    );

    // backup through the client: a relative path is made absolute.
    let dest = d.dir.join("via-ctl.redb");
    let out = Command::new(BIN)
        .current_dir(&d.dir)
        .args(["ctl", "--socket"])
        .arg(&d.socket)
        .args(["backup", "via-ctl.redb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let store = reelsmith::store::Store::open(&dest).expect("the backup opens");
    assert_eq!(
        store
            .read_job(id.parse().unwrap(), 0, u64::MAX, 10)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn http_and_socket_answer_the_same_events_page() {
    let (d, _tmp) = Daemon::start(&config(), &["--paused"]);
    let id = d.submit(&json!({"videoSubject": "one page, two doors"}));
    ok(&ctl(&d, json!({"cmd": "cancel", "id": id})));
    let pages = |after: u64, limit: u64| {
        let (status, http) = d.get(&format!(
            "/api/jobs/{id}/events?after={after}&limit={limit}"
        ));
        assert_eq!(status, 200, "{http}");
        let sock = ctl(
            &d,
            json!({"cmd": "events", "id": id, "after": after, "limit": limit}),
        );
        ok(&sock);
        for k in ["events", "state", "lastEventId", "more"] {
            assert_eq!(http[k], sock[k], "`{k}` after={after} limit={limit}");
        }
        http
    };
    let all = pages(0, 200);
    let events = all["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        3,
        "queued, cancel_requested, cancelled: {all}"
    );
    let last = events[2]["id"].as_u64().unwrap();
    assert_eq!(all["lastEventId"], last);
    assert_eq!(all["state"], "cancelled");
    // A page cut by `limit` says so, and its cursor is the last id returned.
    let cut = pages(0, 1);
    assert_eq!(cut["more"], true);
    assert_eq!(cut["lastEventId"], events[0]["id"]);
    // An empty page answers the job's last id as the cursor, through both doors.
    for after in [last, last + 1_000] {
        let empty = pages(after, 200);
        assert!(empty["events"].as_array().unwrap().is_empty());
        assert_eq!(empty["lastEventId"], last);
        assert_eq!(empty["more"], false);
    }
}

#[test]
fn a_paused_queue_stays_paused_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(dir.path(), &config(), &[]);
    ok(&ctl(&d, json!({"cmd": "pause"})));
    let id = d.submit(&json!({"videoSubject": "waits for a resume"}));
    let st = d.terminate(Duration::from_secs(20));
    assert!(st.success(), "{st:?}");

    // No `--paused` this time: the log says the queue is paused.
    let d = Daemon::start_in(dir.path(), &config(), &[]);
    let st = ctl(&d, json!({"cmd": "status"}));
    assert_eq!(ok(&st)["paused"], true, "{st}");
    assert_eq!(d.job(&id)["state"], "queued");
    ok(&ctl(&d, json!({"cmd": "resume"})));
    let job = d.wait_for_state(&id, &["completed"], Duration::from_secs(120));
    assert_eq!(job["state"], "completed");
}
