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

#[allow(dead_code)]
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}
