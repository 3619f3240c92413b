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
    v2["aspectRatio"] = json!("16:9");
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

#[allow(dead_code)]
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}
