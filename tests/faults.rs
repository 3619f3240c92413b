//! Store and disk faults against the real binary, on small file systems this test mounts (tmpfs
//! with `size=`; needs root, as CI runs): the log's disk fills during a submit storm (the daemon
//! answers 507 naming the disk, exits non-zero, and a restart after space is freed has lost nothing
//! and re-queues the interrupted job), the whole state dir fills during a render and a storm (nothing
//! acknowledged is lost), a render that runs out of space fails naming the folder, and so does a job
//! whose first stage finds its folder's disk full (a retry after space is freed completes). Without root
//! (no mount) each of these says it is skipped.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A mount this test made; unmounted on drop, which also runs when the test panics (the guard is
/// declared before the daemon, so the daemon is dropped, and killed, first).
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` on `at`; `None` (the test says it is skipped, and why) when this process
    /// is not root and so cannot mount. As root, a mount that fails fails the test.
    fn tmpfs(test: &str, at: &Path, size: &str) -> Option<Mount> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIPPED {test}: it mounts a tmpfs as its small disk, which needs root (CI runs as \
                 root); nothing was checked"
            );
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "cannot mount a tmpfs on {} although running as root",
            at.display()
        );
        Some(Mount(at.to_path_buf()))
    }

    fn bind(from: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(from).unwrap();
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "cannot bind-mount onto {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 << 10];
    let mut n = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
    n
}

fn wait_exit(d: &mut Daemon, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit after its log failed:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_log_disk_is_answered_507_then_the_daemon_restarts_having_lost_nothing() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // The log on a small disk; the job folders on the big one (so the running job is not
    // failed by its own writes, only interrupted by the daemon's exit).
    let Some(_log_disk) = Mount::tmpfs(
        "a_full_log_disk_is_answered_507_then_the_daemon_restarts_having_lost_nothing",
        &state,
        "20m",
    ) else {
        return;
    };
    let _jobs = Mount::bind(&tmp.path().join("jobs-elsewhere"), &state.join("jobs"));
    let cfg = offline_config(&format!("{SMALL_RENDER}\n[daemon]\nmax_attempts = 2\n"));
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    let running = d.submit(&json!({ "videoSubject": "interrupted", "script": long_script(200) }));
    d.wait_for_state(&running, &["running"], Duration::from_secs(60));

    let addr = d.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = json!({ "videoSubject": format!("client {c} job {i}") });
                    match try_http(addr, "POST", "/api/generate", body.to_string().as_bytes()) {
                        Ok((200, raw)) => {
                            let v: Value = serde_json::from_slice(&raw).unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push(v["jobId"].as_str().unwrap().into());
                        }
                        Ok((s, raw)) => refused
                            .lock()
                            .unwrap()
                            .push((s, serde_json::from_slice(&raw).unwrap_or(Value::Null))),
                        // The daemon has gone: nothing more to ask.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "submissions too slow:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let filled = fill(&state.join("filler"));
    eprintln!("filled the log's disk with {filled} bytes");
    let status = wait_exit(&mut d, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let expected = format!(
        "The event log cannot be written (no space left on the disk holding {}); the daemon is restarting.",
        state.display()
    );
    assert_eq!(status.code(), Some(1), "{status:?}:\n{}", d.logs());
    assert!(d.logs().contains(&expected), "{}", d.logs());
    let refused = refused.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} submissions acknowledged, {} refused before the exit",
        acked.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "no submission saw the full disk");
    for (s, v) in &refused {
        assert_eq!(*s, 507, "{v}");
        assert_eq!(v["status"], "error", "{v}");
        assert_eq!(v["message"], expected.as_str(), "{v}");
    }

    // Space freed; systemd's restart, paused so that the queue stays as it was.
    std::fs::remove_file(state.join("filler")).unwrap();
    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    for id in &acked {
        let (s, v) = d.get(&format!("/api/jobs/{id}"));
        assert_eq!(s, 200, "acknowledged job {id} lost: {v}");
        assert_eq!(v["job"]["state"], "queued", "{v}");
        assert_eq!(d.events(id)[0]["type"], "queued");
    }
    let job = d.job(&running);
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    let events = d.events(&running);
    let n = events.len();
    assert_eq!(
        events[n - 2]["message"],
        "Job interrupted by a daemon restart."
    );
    assert_eq!(events[n - 1]["type"], "queued");
    let (s, h) = d.get("/healthz");
    assert_eq!((s, &h["status"]), (200, &json!("ok")), "{h}");
    d.submit(&json!({ "videoSubject": "after the disk was freed" }));
}

#[test]
fn a_render_that_runs_out_of_space_fails_naming_the_folder() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let jobs = state.join("jobs");
    let Some(_jobs_disk) = Mount::tmpfs(
        "a_render_that_runs_out_of_space_fails_naming_the_folder",
        &jobs,
        "20m",
    ) else {
        return;
    };
    let mut d = Daemon::start_in(tmp.path(), &offline_config(SMALL_RENDER), &[]);
    let id = d.submit(&json!({ "videoSubject": "too big", "script": long_script(40) }));
    d.wait_for_event(&id, Duration::from_secs(180), |e| {
        e["message"] == "Rendering final video with subtitles..."
    });
    fill(&jobs.join("filler"));
    let job = d.wait_for_state(&id, &["failed", "completed"], Duration::from_secs(120));
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        job["errorMessage"],
        format!(
            "Failed to render video: no space left on {}",
            jobs.join(&id).display()
        ),
        "{job}"
    );
    let last = d.events(&id).pop().unwrap();
    assert_eq!(last["payload"]["error"], "DiskFull", "{last}");
    assert_eq!(last["payload"]["stage"], "render", "{last}");
    std::fs::remove_file(jobs.join("filler")).unwrap();
    d.assert_serving();
    assert!(d.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_job_folder_on_a_full_disk_fails_as_disk_full_and_a_retry_after_freeing_it_completes() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let jobs = state.join("jobs");
    let Some(_jobs_disk) = Mount::tmpfs(
        "a_job_folder_on_a_full_disk_fails_as_disk_full_and_a_retry_after_freeing_it_completes",
        &jobs,
        "20m",
    ) else {
        return;
    };
    // Full before the job starts: the first stage's first write (the footage) hits it.
    fill(&jobs.join("filler"));
    let cfg = offline_config(&format!("{SMALL_RENDER}\n[daemon]\nmax_attempts = 1\n"));
    let d = Daemon::start_in(tmp.path(), &cfg, &[]);
    let id = d.submit(&json!({ "videoSubject": "no room" }));
    let job = d.wait_for_state(&id, &["failed", "completed"], Duration::from_secs(120));
    assert_eq!(job["state"], "failed", "{job}");
    let folder = jobs.join(&id);
    let message = job["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("Failed to ")
            && message.ends_with(&format!(": no space left on {}", folder.display())),
        "{job}"
    );
    let last = d.events(&id).pop().unwrap();
    assert_eq!(last["payload"]["error"], "DiskFull", "{last}");
    assert_eq!(last["payload"]["retryable"], true, "{last}");
    assert_ne!(last["payload"]["stage"], "render", "{last}");

    std::fs::remove_file(jobs.join("filler")).unwrap();
    let (s, v) = d.post(&format!("/api/jobs/{id}/retry"), &json!({}));
    assert_eq!(s, 200, "{v}");
    let job = d.wait_for_state(&id, &["failed", "completed"], Duration::from_secs(180));
    assert_eq!(job["state"], "completed", "{job}");
    d.assert_serving();
}

/// Submits from 8 clients until `stop` (or the daemon is gone); answers the acknowledged job ids
/// and the refusals.
struct Storm {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<(u16, Value)>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Storm {
    fn start(addr: std::net::SocketAddr) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
        let clients = (0..8)
            .map(|c| {
                let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let body = json!({ "videoSubject": format!("storm {c}-{i}") });
                        match try_http(addr, "POST", "/api/generate", body.to_string().as_bytes()) {
                            Ok((200, raw)) => {
                                let v: Value = serde_json::from_slice(&raw).unwrap();
                                acked
                                    .lock()
                                    .unwrap()
                                    .push(v["jobId"].as_str().unwrap().into());
                            }
                            Ok((s, raw)) => refused
                                .lock()
                                .unwrap()
                                .push((s, serde_json::from_slice(&raw).unwrap_or(Value::Null))),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        Storm {
            stop,
            acked,
            refused,
            clients,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(self) -> (Vec<String>, Vec<(u16, Value)>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let refused = self.refused.lock().unwrap().clone();
        (acked, refused)
    }
}

/// `ctl pause` over the control socket: no queued job starts from now on.
fn pause(d: &Daemon) {
    use std::io::{BufRead, BufReader};
    let s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    writeln!(&s, "{}", json!({ "cmd": "pause" })).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_full_state_disk_during_a_render_and_a_submit_storm_loses_nothing_acknowledged() {
    require_media_tools();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // Everything on one small disk: the log, the job folders, the outputs.
    let Some(_disk) = Mount::tmpfs(
        "a_full_state_disk_during_a_render_and_a_submit_storm_loses_nothing_acknowledged",
        &state,
        "20m",
    ) else {
        return;
    };
    let cfg = offline_config(&format!("{SMALL_RENDER}\n[daemon]\nmax_attempts = 2\n"));
    let mut d = Daemon::start_in(tmp.path(), &cfg, &[]);
    let rendering = d.submit(&json!({ "videoSubject": "rendering", "script": long_script(40) }));
    let before = d.events(&rendering).len();
    d.wait_for_event(&rendering, Duration::from_secs(180), |e| {
        e["message"] == "Rendering final video with subtitles..."
    });
    // The storm's jobs stay queued (a job started on a full disk fails at its first write).
    pause(&d);
    let storm = Storm::start(d.addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while storm.acked() < 50 {
        assert!(
            Instant::now() < deadline,
            "submissions too slow:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The render's ffmpeg and the storm's appends now race for the last bytes.
    let filled = fill(&state.join("filler"));
    eprintln!("filled the state disk with {filled} bytes during the render");
    let status = wait_exit(&mut d, Duration::from_secs(120));
    let (acked, refused) = storm.finish();
    eprintln!(
        "{} submissions acknowledged, {} refused",
        acked.len(),
        refused.len()
    );
    let expected = format!(
        "The event log cannot be written (no space left on the disk holding {}); the daemon is restarting.",
        state.display()
    );
    assert_eq!(status.code(), Some(1), "{status:?}:\n{}", d.logs());
    assert!(d.logs().contains(&expected), "{}", d.logs());
    assert!(!d.logs().contains("panicked"), "{}", d.logs());
    for (s, v) in &refused {
        assert_eq!(*s, 507, "{v}");
        assert_eq!(v["message"], expected.as_str(), "{v}");
    }

    // Space freed; the restart (paused, so the queue stays as it was) has lost nothing.
    std::fs::remove_file(state.join("filler")).unwrap();
    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    for id in &acked {
        let (s, v) = d.get(&format!("/api/jobs/{id}"));
        assert_eq!(s, 200, "acknowledged job {id} lost: {v}");
        assert_eq!(v["job"]["state"], "queued", "{v}");
        assert_eq!(d.events(id)[0]["type"], "queued");
    }
    // The rendering job: failed naming its folder's disk if that was recorded before the log
    // filled, else interrupted by the exit and queued again. Never a generic ffmpeg error.
    let job = d.job(&rendering);
    let events = d.events(&rendering);
    assert!(events.len() > before, "{events:?}");
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    eprintln!("the rendering job after the restart: {}", job["state"]);
    match job["state"].as_str() {
        Some("failed") => assert_eq!(
            job["errorMessage"],
            format!(
                "Failed to render video: no space left on {}",
                state.join("jobs").join(&rendering).display()
            ),
            "{job}"
        ),
        Some("queued") => {
            let n = events.len();
            assert_eq!(
                events[n - 2]["message"],
                "Job interrupted by a daemon restart.",
                "{events:?}"
            );
            assert_eq!(events[n - 1]["type"], "queued");
        }
        _ => panic!("the rendering job is neither failed nor queued again: {job}"),
    }
    let (s, h) = d.get("/healthz");
    assert_eq!((s, &h["status"]), (200, &json!("ok")), "{h}");
    let after = d.submit(&json!({ "videoSubject": "after the disk was freed" }));
    assert_eq!(d.job(&after)["state"], "queued");
}

/// `reelsmith serve` on `dir` that is expected to refuse to start: its exit status and stderr.
fn serve_refused(dir: &Path, cfg: &str) -> (std::process::ExitStatus, String) {
    let cfg_path = dir.join("test-config.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("reelsmith.sock"))
        .args(["--listen", "127.0.0.1:0", "--paused"])
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started on a damaged log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn store_check(path: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["store", "check"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn a_damaged_log_is_refused_naming_the_file_and_the_backup_and_store_check_names_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_config("");
    let mut d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    let marker = "MARKER-of-the-damaged-record-0123456789";
    let damaged = d.submit(&json!({ "videoSubject": marker }));
    let kept = d.submit(&json!({ "videoSubject": "kept" }));
    let backup = tmp.path().join("backup.redb");
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .arg("backup")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let record = d.events(&damaged)[0]["id"].as_u64().unwrap();
    assert!(d.terminate(Duration::from_secs(10)).success());
    let log = d.state_dir().join("reelsmith.redb");

    // One byte of the record's payload flipped to invalid UTF-8, in every copy of its page.
    let mut bytes = std::fs::read(&log).unwrap();
    let mut flipped = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..]
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
    {
        bytes[at + i + 7] = 0xff;
        flipped += 1;
        at += i + marker.len();
    }
    assert!(flipped > 0, "the marker is not in the file");
    std::fs::write(&log, &bytes).unwrap();

    let (status, stderr) = serve_refused(tmp.path(), &cfg);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!("the event log {} is damaged", log.display()))
            && stderr.contains(&format!("event record {record} is damaged"))
            && stderr.contains("reelsmith ctl backup"),
        "{stderr}"
    );
    let out = store_check(&log);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("event record {record} is damaged")),
        "{err}"
    );

    // Truncated: refused too, never a panic.
    std::fs::write(&log, &bytes[..bytes.len() / 2]).unwrap();
    let (status, stderr) = serve_refused(tmp.path(), &cfg);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!("the event log {} is damaged", log.display()))
            && stderr.contains("reelsmith ctl backup"),
        "{stderr}"
    );
    assert_eq!(store_check(&log).status.code(), Some(1));

    // Restored from the backup: the check passes and the daemon starts with both jobs.
    std::fs::copy(&backup, &log).unwrap();
    let out = store_check(&log);
    assert!(out.status.success(), "{out:?}");
    let ok = String::from_utf8_lossy(&out.stdout);
    assert!(ok.starts_with("ok: ") && ok.contains("2 jobs"), "{ok}");
    let d = Daemon::start_in(tmp.path(), &cfg, &["--paused"]);
    assert_eq!(d.job(&damaged)["subject"], marker);
    assert_eq!(d.job(&kept)["state"], "queued");
}

/// Waits (at most 5 s from now) until `id` is cancelled and no process mentions it.
fn assert_stops_within_5s(d: &Daemon, id: &str, round: usize) {
    let t0 = Instant::now();
    loop {
        let state = d.job(id)["state"].clone();
        let tools = processes_mentioning(id);
        if state == "cancelled" && tools.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "round {round}: job {id} is {state} with tools {tools:?} 5 s after its cancel:\n{:?}",
            d.events(id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cancels_racing_starts_stop_every_job_and_its_tools_within_5s() {
    require_media_tools();
    let (d, _tmp) = Daemon::start(&offline_config(SMALL_RENDER), &[]);
    let mut rng = fastrand::Rng::with_seed(0xcace1);
    let mut started = 0;
    for round in 0..20 {
        // A runs (concurrency 1), B waits; A's cancel frees the slot, so B starts while its own
        // cancel is being recorded.
        let a =
            d.submit(&json!({ "videoSubject": format!("a{round}"), "script": long_script(60) }));
        let b =
            d.submit(&json!({ "videoSubject": format!("b{round}"), "script": long_script(60) }));
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        let gap = Duration::from_millis(rng.u64(0..30));
        let addr = d.addr;
        let cancel_a = if round % 2 == 0 {
            format!("/api/jobs/{a}/cancel")
        } else {
            "/api/cancel".to_string()
        };
        let ta = std::thread::spawn(move || try_http(addr, "POST", &cancel_a, b"{}").unwrap());
        std::thread::sleep(gap);
        let (s, v) = d.post(&format!("/api/jobs/{b}/cancel"), &json!({}));
        assert_eq!(s, 200, "{v}");
        let (s, raw) = ta.join().unwrap();
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&raw));
        assert_stops_within_5s(&d, &a, round);
        assert_stops_within_5s(&d, &b, round);
        for id in [&a, &b] {
            let events = d.events(id);
            if events.iter().any(|e| e["type"] == "running") {
                started += 1;
            }
            // The story ends with the cancellation: nothing is recorded after it.
            assert_eq!(events.last().unwrap()["type"], "cancelled", "{events:?}");
        }
    }
    eprintln!("40 jobs cancelled, {started} of them after they had started");
    d.assert_serving();
}
