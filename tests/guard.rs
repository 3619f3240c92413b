//! Hostile and unusual conditions, end to end against the real daemon: odd environments, stored
//! requests from other versions, HTTP abuse (slow or oversized clients, too many connections),
//! cross-site and rebinding requests, the API token, reloads and concurrent song uploads.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{offline_config, Daemon, BIN};
use reelsmith::event::{Event, JobId, Kind, Level};
use reelsmith::store::Store;
use serde_json::{json, Value};

/// Collects every datagram sent to a notify socket at `path` until dropped.
struct NotifySink {
    got: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySink {
    fn bind(path: &std::path::Path) -> NotifySink {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (g, d) = (got.clone(), done.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !d.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).to_string());
                }
            }
        });
        NotifySink {
            got,
            done,
            reader: Some(reader),
        }
    }

    fn count(&self, msg: &str) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|m| *m == msg)
            .count()
    }
}

impl Drop for NotifySink {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[test]
fn a_one_microsecond_watchdog_and_non_utf8_variables_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sink = NotifySink::bind(&path);
    let p = path.display().to_string();
    let d = Daemon::start_with_env(
        tmp.path(),
        &offline_config(""),
        &["--paused"],
        &[("NOTIFY_SOCKET", p.as_str()), ("WATCHDOG_USEC", "1")],
    );
    // The watchdog keeps pinging (tokio's `interval` panics on a zero period).
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.count("WATCHDOG=1") < 3 {
        assert!(
            Instant::now() < deadline,
            "no watchdog pings; logs:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.assert_serving();
    assert!(!d.logs().contains("panicked"), "{}", d.logs());

    // A variable that is not UTF-8: someone else's is ignored, one of ours is refused by name.
    let bad = OsString::from_vec(b"caf\xe9".to_vec());
    let serve = |name: &str| {
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(tmp.path().join(format!("state-{name}")))
            .arg("--socket")
            .arg(tmp.path().join(format!("{name}.sock")))
            .env(name, &bad)
            .env("REELSMITH_LLM_PROVIDER", "offline")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut theirs = serve("SOME_OTHER_TOOL_SETTING");
    let stderr = BufReader::new(theirs.stderr.take().unwrap());
    let mut started = false;
    let mut seen = String::new();
    for line in stderr.lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("reelsmith listening on") {
            started = true;
            break;
        }
    }
    let _ = theirs.kill();
    let _ = theirs.wait();
    assert!(started, "daemon did not start:\n{seen}");
    assert!(!seen.contains("panicked"), "{seen}");

    let ours = serve("REELSMITH_LLM_MODEL").wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(!ours.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("REELSMITH_LLM_MODEL") && err.contains("UTF-8"),
        "{err}"
    );
}

/// Writes a log holding one queued job whose stored request is `request`, as an older (or newer)
/// daemon would have left it.
fn log_with_queued_job(state: &std::path::Path, request: Value) -> JobId {
    std::fs::create_dir_all(state).unwrap();
    let store = Store::open(&state.join(reelsmith::store::FILE_NAME)).unwrap();
    let job = JobId::new();
    store
        .append(&[Event {
            id: 1,
            job,
            kind: Kind::Queued,
            level: Level::Info,
            message: "Job queued.".into(),
            payload: Some(json!({ "maxAttempts": 1, "request": request })),
            timestamp_ms: 1_710_499_845_789,
            stage: None,
        }])
        .unwrap();
    job
}

/// A request exactly as daemons before request versions stored it (`src/request.rs` keeps the
/// same golden text for the unit test).
const GOLDEN_V1_REQUEST: &str = r##"{"videoSubject":"Why octopuses have three hearts","aiModel":"llama3.1:8b","voice":"en_us_001","paragraphNumber":2,"customPrompt":null,"script":"Octopuses have three hearts. Two pump blood to the gills.","useMusic":true,"automateYoutubeUpload":false,"threads":2,"subtitlesPosition":["center","bottom"],"color":"#FFFF00","colorRgb":[255,255,0]}"##;

#[test]
fn a_version_1_queued_job_starts_and_a_newer_one_is_refused_naming_its_version() {
    let tmp = tempfile::tempdir().unwrap();
    let v1: Value = serde_json::from_str(GOLDEN_V1_REQUEST).unwrap();
    let job = log_with_queued_job(&tmp.path().join("state"), v1.clone());
    let mut d = Daemon::start_in(tmp.path(), &offline_config(common::SMALL_RENDER), &[]);
    let id = job.to_string();
    // It starts and runs its first stage with the stored request (the caller's script).
    let ev = d.wait_for_event(&id, Duration::from_secs(60), |e| {
        e["type"] == "error" || e["message"] == "Starting video generation..."
    });
    assert_eq!(ev["message"], "Starting video generation...", "{ev}");
    d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    d.wait_for_state(
        &id,
        &["cancelled", "completed", "failed"],
        Duration::from_secs(60),
    );
    d.terminate(Duration::from_secs(20));

    // A request written by a newer daemon (version 2, a field this one does not know): the job
    // fails at start with a message naming the version, instead of running without that field.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut v2 = v1;
    v2["version"] = json!(2);
    v2["futureField"] = json!("only version 2 knows me");
    let job = log_with_queued_job(&tmp2.path().join("state"), v2);
    let d = Daemon::start_in(tmp2.path(), &offline_config(common::SMALL_RENDER), &[]);
    let id = job.to_string();
    let view = d.wait_for_state(&id, &["failed", "completed"], Duration::from_secs(60));
    assert_eq!(view["state"], "failed", "{view}");
    let evs = d.events(&id);
    let last = evs.last().unwrap();
    let msg = last["message"].as_str().unwrap();
    assert!(msg.contains("version 2"), "{last}");
    assert!(
        !evs.iter()
            .any(|e| e["message"] == "Starting video generation..."),
        "{evs:?}"
    );
}

/// Reads one HTTP/1.1 response (head, then Content-Length bytes) from `c`.
fn read_response(c: &mut TcpStream) -> std::io::Result<(u16, String, Value)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body)?;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&body) }));
    Ok((status, head, v))
}

/// A client that sends its request head one byte a second; records when the server closed it.
struct Slowloris {
    opened: Instant,
    closed: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Slowloris {
    fn start(addr: std::net::SocketAddr) -> Slowloris {
        let c = TcpStream::connect(addr).unwrap();
        let opened = Instant::now();
        let closed = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = c.try_clone().unwrap();
        let cl = closed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Returns on EOF or an error: the server closed the connection.
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
            *cl.lock().unwrap() = Some(Instant::now());
        });
        let (st, cl) = (stop.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut c = c;
            let head = b"GET /api/jobs?limit=1&padding=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: localhost\r\n\r\n";
            for b in head {
                if st.load(Ordering::Relaxed) || cl.lock().unwrap().is_some() {
                    return;
                }
                if c.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Slowloris {
            opened,
            closed,
            stop,
        }
    }

    fn closed_after(&self) -> Option<Duration> {
        self.closed.lock().unwrap().map(|t| t - self.opened)
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn slowloris_clients_hold_no_more_than_their_share_and_others_are_answered() {
    let (d, _tmp) = Daemon::start(
        &offline_config(
            "[server]\nmax_connections = 4\nheader_read_timeout_secs = 3\nkeep_alive_timeout_secs = 1\n",
        ),
        &["--paused"],
    );
    // More slow clients than there are connections.
    let slow: Vec<Slowloris> = (0..6).map(|_| Slowloris::start(d.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Others are answered at once all along, each on a fresh connection.
    let t0 = Instant::now();
    let mut answered = 0;
    while t0.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let (s, v) = d.get("/api/jobs?limit=1");
        assert_eq!(s, 200, "{v}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a request waited {:?} behind slow clients",
            t.elapsed()
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answered >= 10);
    // Every slow client was cut off: evicted for a newcomer, or at the header read timeout.
    for (i, s) in slow.iter().enumerate() {
        let after = s.closed_after();
        assert!(
            after.is_some_and(|a| a < Duration::from_millis(4500)),
            "slow client {i} still open (or closed late: {after:?})"
        );
    }

    // A keep-alive connection serves several requests, then is closed once idle for 1 s.
    let mut c = TcpStream::connect(d.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let (s, _, _) = read_response(&mut c).unwrap();
        assert_eq!(s, 200);
    }
    // Idle from the last answer on.
    let idle = Instant::now();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection got data");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "idle connection closed after {waited:?}"
    );
    d.assert_serving();
}

#[test]
fn at_the_cap_with_every_connection_busy_a_newcomer_gets_503() {
    let (d, _tmp) = Daemon::start(
        &offline_config("[server]\nmax_connections = 2\n"),
        &["--paused"],
    );
    let id = d.submit(&json!({ "videoSubject": "held" }));
    let last = d.job(&id)["lastEventId"].as_u64().unwrap();
    // Two long polls hold both connections.
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(d.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            write!(
                c,
                "GET /api/jobs/{id}/events?after={last}&wait=4 HTTP/1.1\r\nHost: localhost\r\n\r\n"
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (s, v) = d.get("/healthz");
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["status"], "error");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("server.max_connections"),
        "{v}"
    );
    // The long polls are answered, and the daemon serves again.
    for mut c in polls {
        let (s, _, v) = read_response(&mut c).unwrap();
        assert_eq!(s, 200, "{v}");
    }
    d.assert_serving();
}

/// Writes a request whose body is `body_len` bytes, all of it, before reading anything (as Python's
/// `urllib` and `requests` do); returns whether the whole body was written and the answer.
fn send_whole_body_then_read(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (std::io::Result<()>, std::io::Result<(u16, String, Value)>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let wrote = c.write_all(head.as_bytes()).and_then(|_| c.write_all(body));
    (wrote, read_response(&mut c))
}

#[test]
fn an_oversized_body_sent_whole_before_reading_gets_a_readable_413() {
    let (d, _tmp) = Daemon::start(
        &offline_config("[server]\nmax_upload_bytes = 65536\n"),
        &["--paused"],
    );
    // 8 MiB of JSON against the 1 MiB limit.
    let big = json!({ "videoSubject": "x", "customPrompt": "a".repeat(8 << 20) }).to_string();
    let (wrote, answer) =
        send_whole_body_then_read(d.addr, "/api/generate", "application/json", big.as_bytes());
    wrote.expect("the client could not send its whole body");
    let (s, _, v) = answer.expect("no readable answer");
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["status"], "error");
    assert!(v["message"].as_str().unwrap().contains("1048576"), "{v}");

    // An 8 MiB song upload against a 64 KiB limit.
    let boundary = "guardBoundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"songs\"; filename=\"big.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'x', 8 << 20));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (wrote, answer) = send_whole_body_then_read(
        d.addr,
        "/api/upload-songs",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    );
    wrote.expect("the client could not send its whole upload");
    let (s, _, v) = answer.expect("no readable answer");
    assert_eq!(s, 413, "{v}");
    assert!(v["message"].as_str().unwrap().contains("65536"), "{v}");
    d.assert_serving();
}

/// One request with the given headers (Host is the daemon's address unless given); returns
/// (status, lower-cased head, JSON body).
fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Value) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    c.write_all(req.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let (s, head, v) = read_response(&mut c).unwrap();
    (s, head.to_ascii_lowercase(), v)
}

fn job_count(d: &Daemon) -> usize {
    let (_, v) = d.get("/api/jobs?limit=1000");
    v["jobs"].as_array().map(Vec::len).unwrap_or(0)
}

fn assert_refused(got: (u16, String, Value), status: u16, needles: &[&str]) {
    let (s, _, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    let m = v["message"].as_str().unwrap_or("");
    for n in needles {
        assert!(m.contains(n), "`{n}` missing from {v}");
    }
}

const SUBJECT: &[u8] = br#"{"videoSubject": "Why octopuses have three hearts"}"#;

#[test]
fn cross_site_pages_cannot_queue_jobs_or_replace_songs_but_loopback_pages_can() {
    let (d, _tmp) = Daemon::start(&offline_config(""), &["--paused"]);
    let evil = [
        ("Origin", "https://evil.example"),
        ("Content-Type", "application/json"),
    ];
    assert_refused(
        call(d.addr, "POST", "/api/generate", &evil, SUBJECT),
        403,
        &["https://evil.example", "server.cors_origins"],
    );
    assert_refused(
        call(d.addr, "POST", "/api/cancel", &evil, b""),
        403,
        &["server.cors_origins"],
    );
    let boundary = "b0undary";
    let upload = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"songs\"; filename=\"evil.mp3\"\r\n\r\nID3\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    assert_refused(
        call(
            d.addr,
            "POST",
            "/api/upload-songs",
            &[("Origin", "http://evil.example"), ("Content-Type", &ct)],
            upload.as_bytes(),
        ),
        403,
        &["http://evil.example"],
    );
    assert!(!d.state_dir().join("songs").join("evil.mp3").exists());
    // A look-alike of an allowed origin is not allowed.
    assert_refused(
        call(
            d.addr,
            "POST",
            "/api/generate",
            &[
                ("Origin", "http://localhost.evil.example"),
                ("Content-Type", "application/json"),
            ],
            SUBJECT,
        ),
        403,
        &["localhost.evil.example"],
    );
    // Its preflight is refused too, and its reads carry no Access-Control-Allow-Origin.
    let (s, _, _) = call(
        d.addr,
        "OPTIONS",
        "/api/generate",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(s, 403);
    let (s, head, _) = call(
        d.addr,
        "GET",
        "/api/jobs",
        &[("Origin", "https://evil.example")],
        b"",
    );
    assert_eq!(s, 200);
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    // Bodies a page can send without a preflight (a form post, a no-cors fetch) cannot queue.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        assert_refused(
            call(
                d.addr,
                "POST",
                "/api/generate",
                &[("Content-Type", ct)],
                SUBJECT,
            ),
            415,
            &["application/json", ct.split(';').next().unwrap()],
        );
    }
    assert_refused(
        call(d.addr, "POST", "/api/generate", &[], SUBJECT),
        415,
        &["none"],
    );
    assert_eq!(job_count(&d), 0, "a refused request queued a job");

    // MoneyPrinter's page as it calls the API (fetch, JSON), served from other loopback ports or
    // opened from a file (Origin: null): the preflight and the request pass, the origin is echoed.
    for origin in ["http://localhost:5500", "http://127.0.0.1:3000", "null"] {
        let (s, head, _) = call(
            d.addr,
            "OPTIONS",
            "/api/generate",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        );
        assert_eq!(s, 204, "{origin}: {head}");
        assert!(
            head.contains(&format!("access-control-allow-origin: {origin}")),
            "{head}"
        );
        let (s, head, v) = call(
            d.addr,
            "POST",
            "/api/generate",
            &[
                ("Host", "localhost:8080"),
                ("Origin", origin),
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            SUBJECT,
        );
        assert_eq!(s, 200, "{origin}: {v}");
        assert_eq!(v["message"], "Video generation queued.");
        assert!(
            head.contains(&format!("access-control-allow-origin: {origin}")),
            "{head}"
        );
        let (s, _, _) = call(
            d.addr,
            "POST",
            "/api/cancel",
            &[("Origin", origin), ("Content-Type", "application/json")],
            b"",
        );
        assert_eq!(s, 200);
    }
    // Clients without an Origin (curl, scripts) and a JSON type with parameters pass.
    let (s, _, v) = call(
        d.addr,
        "POST",
        "/api/generate",
        &[("Content-Type", "application/json; charset=utf-8")],
        SUBJECT,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(job_count(&d), 4);
    drop(d);

    // A configured list replaces the default; the former single key still works as an alias.
    let (d, _tmp) = Daemon::start(
        &offline_config("[server]\ncors_origins = [\"https://studio.example\"]\n"),
        &["--paused"],
    );
    let json_from = |o: &'static str| [("Origin", o), ("Content-Type", "application/json")];
    assert_eq!(
        call(
            d.addr,
            "POST",
            "/api/generate",
            &json_from("https://studio.example"),
            SUBJECT
        )
        .0,
        200
    );
    assert_eq!(
        call(
            d.addr,
            "POST",
            "/api/generate",
            &json_from("http://localhost:5500"),
            SUBJECT
        )
        .0,
        403
    );
    drop(d);
    let (d, _tmp) = Daemon::start(
        &offline_config("[server]\ncors_origin = \"*\"\n"),
        &["--paused"],
    );
    let (s, head, _) = call(
        d.addr,
        "POST",
        "/api/generate",
        &json_from("https://anyone.example"),
        SUBJECT,
    );
    assert_eq!(s, 200);
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    // A bad pattern is refused at start, naming the key.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\ncors_origins = [\"localhost:3000/app\"]\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.cors_origins"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_rebinding_host_is_misdirected_while_listening_on_loopback() {
    let (d, _tmp) = Daemon::start(&offline_config(""), &["--paused"]);
    let port = d.addr.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1.nip.io:{port}"),
        format!("10.1.2.3:{port}"),
    ] {
        for (method, path) in [
            ("GET", "/api/jobs"),
            ("GET", "/healthz"),
            ("POST", "/api/generate"),
        ] {
            let got = call(
                d.addr,
                method,
                path,
                &[("Host", &host), ("Content-Type", "application/json")],
                SUBJECT,
            );
            assert_refused(got, 421, &[host.as_str(), "loopback"]);
        }
    }
    // The request target can carry the host too (absolute form).
    let got = call(
        d.addr,
        "GET",
        &format!("http://evil.example:{port}/api/jobs"),
        &[("Host", "localhost")],
        b"",
    );
    assert_refused(got, 421, &["evil.example"]);
    assert_eq!(job_count(&d), 0);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("studio.localhost:{port}"),
        "LOCALHOST".to_string(),
    ] {
        let (s, _, v) = call(d.addr, "GET", "/api/jobs", &[("Host", &host)], b"");
        assert_eq!(s, 200, "{host}: {v}");
    }
}

/// Starts the daemon on `listen` (the common harness always listens on 127.0.0.1:0).
fn start_listening(
    dir: &std::path::Path,
    listen: &str,
    config: &str,
    env: &[(&str, &str)],
) -> Daemon {
    let cfg = dir.join("test-config.toml");
    std::fs::write(&cfg, config).unwrap();
    let socket = dir.join("reelsmith.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--listen")
        .arg(listen)
        .arg("--paused")
        .env("RUST_LOG", "debug")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("REELSMITH_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("reelsmith listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
            let mut g = l.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!("daemon did not start:\n{}", log.lock().unwrap());
    };
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    // 0.0.0.0 is where it listens; 127.0.0.1 is how this test reaches it.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    Daemon {
        child,
        addr,
        dir: dir.to_path_buf(),
        socket,
        log,
    }
}

#[test]
fn an_exposed_daemon_warns_and_an_api_token_guards_every_api_route() {
    // Every address: a warning that the API has no authentication.
    let tmp = tempfile::tempdir().unwrap();
    let d = start_listening(tmp.path(), "0.0.0.0:0", &offline_config(""), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.logs().contains("no authentication") {
        assert!(Instant::now() < deadline, "no warning:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Not bound to loopback: no Host check (other machines name it as they like).
    let (s, _, _) = call(
        d.addr,
        "GET",
        "/api/jobs",
        &[("Host", "studio.lan:8080")],
        b"",
    );
    assert_eq!(s, 200);
    drop(d);

    // With a token (from REELSMITH_API_TOKEN), on every address.
    const TOKEN: &str = "s3cret-token-7f2a91";
    let tmp = tempfile::tempdir().unwrap();
    let d = start_listening(
        tmp.path(),
        "0.0.0.0:0",
        &offline_config(""),
        &[("REELSMITH_API_TOKEN", TOKEN)],
    );
    let bearer = format!("Bearer {TOKEN}");
    let json = ("Content-Type", "application/json");
    for (method, path) in [
        ("GET", "/api/jobs"),
        ("GET", "/api/models"),
        ("POST", "/api/generate"),
        ("POST", "/api/cancel"),
        ("GET", "/api/jobs/00000000-0000-0000-0000-000000000001"),
    ] {
        let (s, head, v) = call(d.addr, method, path, &[json], SUBJECT);
        assert_eq!(s, 401, "{method} {path}: {v}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        assert!(
            v["message"].as_str().unwrap().contains("server.api_token"),
            "{v}"
        );
        let wrong = call(
            d.addr,
            method,
            path,
            &[json, ("Authorization", "Bearer s3cret-token-7f2a9")],
            SUBJECT,
        );
        assert_eq!(wrong.0, 401, "{method} {path} with a wrong token");
        let basic = call(
            d.addr,
            method,
            path,
            &[json, ("Authorization", &format!("Basic {TOKEN}"))],
            SUBJECT,
        );
        assert_eq!(basic.0, 401);
    }
    assert_eq!(
        call(
            d.addr,
            "POST",
            "/api/generate",
            &[json, ("Authorization", &bearer)],
            SUBJECT
        )
        .0,
        200
    );
    let (s, _, v) = call(
        d.addr,
        "GET",
        "/api/jobs",
        &[("Authorization", &format!("bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
    // The page's session cookie: only the bearer token gets it; kept from scripts; not the token.
    let (s, _, v) = call(d.addr, "POST", "/api/session", &[], b"");
    assert_eq!(s, 401, "{v}");
    let (s, head, v) = call(
        d.addr,
        "POST",
        "/api/session",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!((s, &v["status"]), (200, &json!("success")), "{v}");
    let set = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no set-cookie: {head}"));
    assert!(
        set.contains("httponly") && set.contains("samesite=strict") && set.contains("path=/api/"),
        "{set}"
    );
    let value = set
        .strip_prefix("reelsmith_session=")
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("{set}"));
    assert!(value.len() == 64 && !value.contains(TOKEN), "{set}");
    // It opens reads (found among other cookies), not changes, and it is no bearer token.
    let cookie = format!("theme=dark; reelsmith_session={value}; x=1");
    let (s, _, v) = call(d.addr, "GET", "/api/jobs", &[("Cookie", &cookie)], b"");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
    for wrong in [
        format!("reelsmith_session={TOKEN}"),
        "reelsmith_session=".into(),
    ] {
        let (s, _, v) = call(d.addr, "GET", "/api/jobs", &[("Cookie", &wrong)], b"");
        assert_eq!(s, 401, "{wrong}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("reelsmith_session"),
            "{v}"
        );
    }
    let as_bearer = format!("Bearer {value}");
    let (s, _, _) = call(
        d.addr,
        "GET",
        "/api/jobs",
        &[("Authorization", &as_bearer)],
        b"",
    );
    assert_eq!(s, 401, "the cookie's value passed as a bearer token");
    for (method, path) in [
        ("POST", "/api/generate"),
        ("POST", "/api/cancel"),
        ("POST", "/api/session"),
        ("DELETE", "/api/session"),
    ] {
        let (s, _, v) = call(d.addr, method, path, &[json, ("Cookie", &cookie)], SUBJECT);
        assert_eq!(s, 401, "{method} {path} with only the cookie: {v}");
    }
    let (s, head, _) = call(
        d.addr,
        "DELETE",
        "/api/session",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(s, 200);
    assert!(
        head.contains("set-cookie: reelsmith_session=; ") && head.contains("max-age=0"),
        "{head}"
    );
    // Nothing was queued by the cookie-only POSTs.
    let (_, _, v) = call(
        d.addr,
        "GET",
        "/api/jobs?limit=1000",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1, "{v}");
    // Preflights (browsers send them without credentials) and /healthz need no token.
    let (s, _, _) = call(
        d.addr,
        "OPTIONS",
        "/api/generate",
        &[
            ("Origin", "http://localhost:5500"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(s, 204);
    assert_eq!(call(d.addr, "GET", "/healthz", &[], b"").0, 200);
    // No warning with a token, and the token never reaches the log (even at debug level).
    let logs = d.logs();
    assert!(!logs.contains("no authentication"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token was logged:\n{logs}");
}

/// One control-socket request on a fresh connection.
fn ctl(d: &Daemon, req: Value) -> Value {
    let s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// The request a job was queued with, as stored (`ctl show`).
fn stored_request(d: &Daemon, id: &str) -> Value {
    let r = ctl(d, json!({ "cmd": "show", "id": id }));
    assert_eq!(r["ok"], true, "{r}");
    r["job"]["request"].clone()
}

#[test]
fn a_reload_reaches_the_http_layer_job_defaults_and_the_model_list() {
    let base = "[llm]\nollama_base_url = \"http://127.0.0.1:1\"\nprovider = \"offline\"\nmodel = \"llama3.1:8b\"\n";
    let (d, tmp) = Daemon::start(base, &["--paused"]);
    let before = d.submit(&json!({ "videoSubject": "before the reload" }));
    let r = stored_request(&d, &before);
    assert_eq!(
        (&r["voice"], &r["color"], &r["subtitlesPosition"]),
        (
            &json!("en_us_001"),
            &json!("#FFFF00"),
            &json!(["center", "bottom"])
        ),
        "{r}"
    );
    assert_eq!(d.get("/api/models").1["default"], "llama3.1:8b");

    std::fs::write(
        tmp.path().join("test-config.toml"),
        base.replace("llama3.1:8b", "qwen2.5:0.5b")
            + "[voice]\ndefault_voice = \"fr_001\"\n[subtitles]\ncolor = \"red\"\nposition = \"left,top\"\n",
    )
    .unwrap();
    let reply = ctl(&d, json!({ "cmd": "reload" }));
    assert_eq!(reply["ok"], true, "{reply}");
    for key in [
        "voice.default_voice",
        "subtitles.color",
        "subtitles.position",
        "llm.model",
    ] {
        assert!(
            reply["applied"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == key),
            "{key} not applied: {reply}"
        );
    }
    assert!(reply.get("note").is_none(), "{reply}");

    // What the reload says it applied, a submission over HTTP gets.
    let after = d.submit(&json!({ "videoSubject": "after the reload" }));
    let r = stored_request(&d, &after);
    assert_eq!(
        (&r["voice"], &r["color"], &r["subtitlesPosition"]),
        (&json!("fr_001"), &json!("red"), &json!(["left", "top"])),
        "{r}"
    );
    // The caller's own values still win, and the job queued before keeps its request.
    let own = d.submit(&json!({ "videoSubject": "own", "voice": "en_us_001", "color": "#00FF00" }));
    let r = stored_request(&d, &own);
    assert_eq!(
        (&r["voice"], &r["color"]),
        (&json!("en_us_001"), &json!("#00FF00"))
    );
    assert_eq!(stored_request(&d, &before)["voice"], "en_us_001");
    assert_eq!(d.get("/api/models").1["default"], "qwen2.5:0.5b");
}

/// A multipart body with one `songs` file per entry.
fn songs_body(files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "----reelsmithGuardBoundary";
    let mut body = Vec::new();
    for (name, data) in files {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"songs\"; filename=\"{name}\"\r\nContent-Type: audio/mpeg\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn song_files(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}-{i:03}.mp3"),
                prefix.repeat(32).into_bytes(),
            )
        })
        .collect()
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Staging folders an upload left next to the library.
fn staging_leftovers(d: &Daemon) -> Vec<String> {
    names_in(&d.state_dir())
        .into_iter()
        .filter(|n| n.starts_with(".songs-upload"))
        .collect()
}

/// Writes an upload's head and all of its body but the last bytes, waits at `barrier`, then sends
/// the rest and reads the answer: two such uploads finish at the same moment.
fn upload_at_barrier(
    addr: std::net::SocketAddr,
    files: Vec<(String, Vec<u8>)>,
    barrier: Arc<std::sync::Barrier>,
) -> (u16, Value) {
    let (ct, body) = songs_body(&files);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST /api/upload-songs HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (most, tail) = body.split_at(body.len() - 8);
    c.write_all(most).unwrap();
    barrier.wait();
    c.write_all(tail).unwrap();
    let (s, _, v) = read_response(&mut c).unwrap();
    (s, v)
}

#[test]
fn concurrent_song_uploads_end_as_exactly_one_of_them() {
    let (d, _tmp) = Daemon::start(&offline_config(""), &["--paused"]);
    let songs = d.state_dir().join("songs");
    for round in 0..8 {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let uploads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|p| {
                let (addr, barrier) = (d.addr, barrier.clone());
                std::thread::spawn(move || upload_at_barrier(addr, song_files(p, 60), barrier))
            })
            .collect();
        for u in uploads {
            let (s, v) = u.join().unwrap();
            assert_eq!(s, 200, "round {round}: {v}");
            assert_eq!(v["message"], "Uploaded 60 song(s).", "{v}");
        }
        let got = names_in(&songs);
        let a = song_files("a", 60)
            .into_iter()
            .map(|f| f.0)
            .collect::<Vec<_>>();
        let b = song_files("b", 60)
            .into_iter()
            .map(|f| f.0)
            .collect::<Vec<_>>();
        assert!(
            got == a || got == b,
            "round {round}: the library is not exactly one upload: {got:?}"
        );
        assert!(
            staging_leftovers(&d).is_empty(),
            "{:?}",
            staging_leftovers(&d)
        );
    }
    d.assert_serving();
}

#[test]
fn a_failed_song_upload_leaves_the_library_whole_and_a_replace_keeps_what_is_not_a_song() {
    let (d, _tmp) = Daemon::start(&offline_config(""), &["--paused"]);
    let songs = d.state_dir().join("songs");
    let (ct, body) = songs_body(&song_files("old", 30));
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_eq!(s, 200, "{v}");
    // The user keeps other things in the library folder (a folder named like a song, a note).
    std::fs::create_dir(songs.join("keep.mp3")).unwrap();
    std::fs::write(songs.join("keep.mp3").join("inside.txt"), b"mine").unwrap();
    std::fs::write(songs.join("notes.txt"), b"mine too").unwrap();
    let before = names_in(&songs);
    assert_eq!(before.len(), 32, "{before:?}");

    // A client that goes away halfway through its upload: the library is exactly as it was.
    let (ct, body) = songs_body(&song_files("half", 30));
    let mut c = TcpStream::connect(d.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST /api/upload-songs HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body[..body.len() / 2]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !staging_leftovers(&d).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", staging_leftovers(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(names_in(&songs), before);

    // A whole upload replaces every song, and keeps what is not a song.
    let (ct, body) = songs_body(&song_files("new", 2));
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        names_in(&songs),
        ["keep.mp3", "new-000.mp3", "new-001.mp3", "notes.txt"]
    );
    assert_eq!(
        std::fs::read(songs.join("keep.mp3").join("inside.txt")).unwrap(),
        b"mine"
    );
    assert!(
        staging_leftovers(&d).is_empty(),
        "{:?}",
        staging_leftovers(&d)
    );
    d.assert_serving();
}

#[test]
fn a_song_upload_cut_off_by_a_crash_is_swept_at_start_and_the_library_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let cut_off = state.join(".songs-upload-0b4f3c1e-left-by-a-crash");
    std::fs::create_dir_all(&cut_off).unwrap();
    std::fs::write(cut_off.join("half.mp3"), b"ID3-half").unwrap();
    std::fs::create_dir_all(state.join("songs")).unwrap();
    std::fs::write(state.join("songs").join("kept.mp3"), b"ID3-kept").unwrap();
    let d = Daemon::start_in(tmp.path(), &offline_config(""), &["--paused"]);
    assert!(!cut_off.exists(), "{}", d.logs());
    assert_eq!(names_in(&state.join("songs")), ["kept.mp3"]);
    assert!(
        d.logs().contains("cleared song uploads a crash cut off"),
        "{}",
        d.logs()
    );
}
