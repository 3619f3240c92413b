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
    faulty_core_with(dir, |_| {}).await
}

/// [`faulty_core`] with `tweak` applied to its config.
pub(crate) async fn faulty_core_with(
    dir: &Path,
    tweak: impl FnOnce(&mut Config),
) -> (
    Core,
    CoreTasks,
    FaultSwitch,
    std::net::SocketAddr,
    std::path::PathBuf,
) {
    let mut cfg = test_config(dir);
    tweak(&mut cfg);
    let cfg = Arc::new(cfg);
    let state = cfg.state_dir();
    service::prepare_state_dir(&state).unwrap();
    let path = state.join(FILE_NAME);
    let (disk, switch) = FaultyDisk::open(&path);
    let store = Arc::new(Store::open_with_backend(&path, disk).unwrap());
    let views = Arc::new(Views::new());
    let (core, tasks) = service::start(
        cfg.clone(),
        state,
        service::Log::Local(store),
        views,
        true,
        service::Scope::All,
    )
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

/// Live processes whose command line mentions `needle` (every tool of a job names its folder).
pub(crate) fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

fn long_script(sentences: usize) -> String {
    (0..sentences)
        .map(|i| format!("This is sentence number {i} of a long and careful test script."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome of a cancel racing a start (the log says the job was cancelled while its actor runs
/// on): the actor finds the cancel in the log and stops, killing its tools, within 5 s, even in a
/// stage that records nothing for a long time (a voice engine that takes 60 s).
#[test]
fn a_cancel_committed_behind_the_schedulers_back_stops_the_job_and_its_tools() {
    use crate::actors::journal::Append;
    use crate::event::{Kind, Level, NewEvent};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow-espeak");
    std::fs::write(&slow, "#!/bin/sh\nsleep 60\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    service::system().block_on(async {
        let (core, tasks, _switch, _addr, _socket) =
            faulty_core_with(dir.path(), |c| c.tools.espeak = slow.display().to_string()).await;
        let body = json!({ "videoSubject": "cancelled in the log", "script": long_script(20) });
        let request = crate::request::JobRequest::parse(&body, &core.config()).unwrap();
        let job = core.submit(&request).await.unwrap();
        core.set_paused(false, None).await.unwrap();
        let name = job.to_string();
        // In the voice stage: one silent stretch of espeak-ng runs, no event until it ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let last = core.job(job).unwrap().last_event_id;
            let events = core.read_events(job, 0, last, 1000).await.unwrap();
            let voice = events
                .iter()
                .any(|e| e.message.starts_with("Generating voiceover with"));
            if voice && !processes_mentioning(&name).is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the voice stage never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(core.job(job).unwrap().state, JobState::Running);
        let events = vec![
            NewEvent::new(
                Kind::CancelRequested,
                Level::Warning,
                "Cancellation requested.",
            ),
            NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled before execution.",
            ),
        ];
        tasks
            .journal()
            .send(Append::new(job, events))
            .await
            .unwrap()
            .unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let idle = core.scheduler_status().await.unwrap().running.is_empty();
            let tools = processes_mentioning(&name);
            if idle && tools.is_empty() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "still running after 5 s (actor running: {}, tools {tools:?})",
                !idle
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("stopped {:?} after the cancel committed", t0.elapsed());
        let v = core.job(job).unwrap();
        assert_eq!(v.state, JobState::Cancelled);
        let events = core
            .read_events(job, 0, v.last_event_id, 1000)
            .await
            .unwrap();
        assert_eq!(events.last().unwrap().kind, Kind::Cancelled, "{events:?}");
        core.request_stop();
        tasks.stop_jobs(Duration::from_secs(5)).await;
        tasks.close_journal().await;
    });
    actix::System::current().stop();
}
