//! Store-fault tests against the in-process core: the real journal, scheduler, HTTP server and
//! control socket on a log whose disk fails on demand (`store::faulty`). The daemon's exit after a
//! failure is tested against the real binary (tests/faults.rs).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::config::{Config, ConfigSource};
use crate::event::JobState;
use crate::service::{self, Core, CoreTasks};
use crate::store::faulty::{Fault, FaultSwitch, FaultyDisk};
use crate::store::{Store, FILE_NAME};
use crate::views::Views;

pub(crate) fn test_config(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.daemon.state_dir = dir.join("state").display().to_string();
    cfg.daemon.socket = dir.join("ctl.sock").display().to_string();
    cfg.llm.provider = crate::config::LlmProvider::Offline;
    cfg.llm.ollama_base_url = "http://127.0.0.1:1".into();
    cfg
}

/// A core on a faulty disk (queue paused), its HTTP address and its control socket.
pub(crate) async fn faulty_core(
    dir: &Path,
) -> (
    Core,
    CoreTasks,
    FaultSwitch,
    std::net::SocketAddr,
    std::path::PathBuf,
) {
    let cfg = Arc::new(test_config(dir));
    let state = cfg.state_dir();
    service::prepare_state_dir(&state).unwrap();
    let path = state.join(FILE_NAME);
    let (disk, switch) = FaultyDisk::open(&path);
    let store = Arc::new(Store::open_with_backend(&path, disk).unwrap());
    let views = Arc::new(Views::new());
    let (core, tasks) = service::start(cfg.clone(), state, store, views, true)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::http::serve(
        listener,
        core.clone(),
        Duration::from_secs(1),
    ));
    let control = crate::control::bind(&cfg).unwrap();
    let socket = control.path().to_path_buf();
    crate::control::start(control, core.clone(), ConfigSource::default());
    (core, tasks, switch, addr, socket)
}

/// One HTTP/1.1 request on a fresh connection: (status, JSON body).
pub(crate) async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// One control request: its reply line.
pub(crate) async fn control(socket: &Path, request: Value) -> Value {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_failed_log_answers_every_write_with_the_restart_line_and_fails_health() {
    let dir = tempfile::tempdir().unwrap();
    service::system().block_on(async {
        let (core, tasks, switch, addr, socket) = faulty_core(dir.path()).await;
        let (s, v) = http(
            addr,
            "POST",
            "/api/generate",
            &json!({"videoSubject": "kept"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let kept = v["jobId"].as_str().unwrap().to_string();
        let (s, v) = http(addr, "GET", "/healthz", &Value::Null).await;
        assert_eq!((s, &v["status"]), (200, &json!("ok")), "{v}");
        assert!(core.liveness(Duration::from_secs(1)).await.is_ok());

        switch.set(Some(Fault::Io));
        let expected_start = "The event log cannot be written (";
        let expected_end = "); the daemon is restarting.";
        let (s, v) = http(
            addr,
            "POST",
            "/api/generate",
            &json!({"videoSubject": "lost"}),
        )
        .await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["status"], "error");
        let msg = v["message"].as_str().unwrap().to_string();
        assert!(
            msg.starts_with(expected_start) && msg.ends_with(expected_end),
            "{msg}"
        );
        assert!(msg.contains(FILE_NAME), "the message names the log: {msg}");
        // The daemon's exit is triggered by this.
        let fault = tokio::time::timeout(Duration::from_secs(5), core.log_failed())
            .await
            .expect("log_failed resolves");
        assert_eq!(fault.restart_message(), msg);

        // Every later write says the same, over HTTP and the control socket; health says so too.
        switch.set(None);
        let (s, v) = http(addr, "POST", "/api/generate", &json!({"videoSubject": "x"})).await;
        assert_eq!((s, v["message"].as_str()), (503, Some(msg.as_str())), "{v}");
        let (s, v) = http(
            addr,
            "POST",
            &format!("/api/jobs/{kept}/cancel"),
            &json!({}),
        )
        .await;
        assert_eq!((s, v["message"].as_str()), (503, Some(msg.as_str())), "{v}");
        let (s, v) = http(addr, "GET", "/healthz", &Value::Null).await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["message"].as_str(), Some(msg.as_str()));
        for req in [
            json!({"cmd": "resume"}),
            json!({"cmd": "cancel", "id": kept}),
        ] {
            let r = control(&socket, req.clone()).await;
            assert_eq!(r["ok"], false, "{req}: {r}");
            assert_eq!(r["error"].as_str(), Some(msg.as_str()), "{req}: {r}");
        }
        let st = control(&socket, json!({"cmd": "status"})).await;
        assert_eq!(st["eventLog"].as_str(), Some(msg.as_str()), "{st}");
        // No watchdog ping: the liveness check fails, naming the log.
        assert_eq!(
            core.liveness(Duration::from_secs(1)).await,
            Err("event log")
        );
        // Reads still work.
        let (s, v) = http(addr, "GET", &format!("/api/jobs/{kept}"), &Value::Null).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            core.job(kept.parse().unwrap()).unwrap().state,
            JobState::Queued
        );
        core.request_stop();
        tasks.stop_jobs(Duration::from_secs(5)).await;
        tasks.close_journal().await;
    });
    actix::System::current().stop();
}

#[test]
fn a_full_disk_is_answered_507_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    service::system().block_on(async {
        let (core, tasks, switch, addr, _socket) = faulty_core(dir.path()).await;
        switch.set(Some(Fault::Full));
        let (s, v) = http(addr, "POST", "/api/generate", &json!({"videoSubject": "lost"})).await;
        assert_eq!(s, 507, "{v}");
        let state = dir.path().join("state");
        assert_eq!(
            v["message"],
            format!(
                "The event log cannot be written (no space left on the disk holding {}); the daemon is restarting.",
                state.display()
            )
        );
        core.request_stop();
        tasks.stop_jobs(Duration::from_secs(5)).await;
        tasks.close_journal().await;
    });
    actix::System::current().stop();
}
