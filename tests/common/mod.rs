//! Test support: start the real `reelsmith` binary on port 0 with a temporary state directory, and
//! talk to it over real HTTP (a minimal HTTP/1.1 client on `TcpStream`, one connection a request).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_reelsmith");

/// A small, fast render for tests.
pub const SMALL_RENDER: &str = r#"
[render]
width = 180
height = 320
fps = 15
preset = "ultrafast"
crf = 30
[footage]
clips = 2
seconds_per_clip = 2.0
"#;

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts a daemon on a fresh temporary state directory. `config` is extra TOML.
    pub fn start(config: &str, args: &[&str]) -> (Daemon, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Daemon::start_in(tmp.path(), config, args);
        (d, tmp)
    }

    /// Starts a daemon on `dir` (kept between restarts).
    pub fn start_in(dir: &Path, config: &str, args: &[&str]) -> Daemon {
        Daemon::start_with_env(dir, config, args, &[])
    }

    pub fn start_with_env(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let cfg_path = dir.join("test-config.toml");
        std::fs::write(&cfg_path, config).expect("write config");
        let state = dir.join("state");
        let socket = dir.join("reelsmith.sock");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn reelsmith");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("reelsmith listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("address"),
            Err(_) => {
                let _ = child.kill();
                panic!("daemon did not start:\n{}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            addr,
            dir: dir.to_path_buf(),
            socket,
            log,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let (status, bytes) = http(
            self.addr,
            method,
            path,
            &[("Content-Type", content_type)],
            body,
        );
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
        (status, v)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, "application/json", b"")
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    /// Submits a job; panics unless it was accepted.
    pub fn submit(&self, body: &Value) -> String {
        let (s, v) = self.post("/api/generate", body);
        assert_eq!(s, 200, "submit failed: {v}");
        v["jobId"].as_str().expect("jobId").to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/api/jobs/{id}"));
        assert_eq!(s, 200, "{v}");
        v["job"].clone()
    }

    /// All events of a job, following `more` pages.
    pub fn events(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (s, v) = self.get(&format!("/api/jobs/{id}/events?after={after}&limit=1000"));
            assert_eq!(s, 200, "{v}");
            let page = v["events"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            after = page.last().unwrap()["id"].as_u64().unwrap();
            out.extend(page);
        }
    }

    /// Long-polls until the job is in one of `states`; panics after `timeout`.
    pub fn wait_for_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut after = 0;
        loop {
            let job = self.job(id);
            if states.iter().any(|s| job["state"] == *s) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {} after {timeout:?}; logs:\n{}",
                job["state"],
                self.logs()
            );
            let (_, v) = self.get(&format!(
                "/api/jobs/{id}/events?after={after}&wait=2&limit=1000"
            ));
            if let Some(last) = v["events"].as_array().and_then(|e| e.last()) {
                after = last["id"].as_u64().unwrap_or(after);
            }
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not exit within {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// Like `http` but returns the raw header block too.
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    // The server may answer (e.g. 413) before reading the whole body and close: ignore write errors.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    // parse_response panics with the raw bytes when there is no header block.
    let (status, body) = parse_response(&raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    (status, head, body)
}

fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// A script long enough that the voice stage runs for a while (for interruption tests).
pub fn long_script(sentences: usize) -> String {
    (0..sentences)
        .map(|i| {
            format!(
                "This is sentence number {i} of a long and careful test script about octopuses."
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- Added for the api/recovery suites ----

/// Config TOML that points the LLM at a closed loopback port (so `/api/models` takes its fallback
/// and nothing ever talks to a real Ollama), plus `extra`.
pub fn offline_config(extra: &str) -> String {
    format!("[llm]\nollama_base_url = \"http://127.0.0.1:1\"\nprovider = \"offline\"\n{extra}")
}

/// Like `http`, but returns an error instead of panicking when the daemon is gone (kill -9 tests).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "truncated response",
        ));
    }
    Ok(parse_response(&raw))
}

/// Pids of every live descendant of `pid` (children, grandchildren, ...), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state ppid ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill -9 of the daemon, then of the subprocesses (espeak-ng, ffmpeg) it had started: a
    /// SIGKILLed daemon cannot clean up after itself, and systemd's cgroup would do this in production.
    /// Only processes this test started (the daemon and its descendants) are signalled, by pid.
    pub fn kill9_with_children(&mut self) {
        let kids = descendants(self.pid());
        self.kill9();
        for k in kids {
            unsafe {
                libc::kill(k as i32, libc::SIGKILL);
            }
        }
    }

    /// Polls the job's events (long poll) until one satisfies `pred`; returns it.
    pub fn wait_for_event(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut after = 0;
        loop {
            let (s, v) = self.get(&format!(
                "/api/jobs/{id}/events?after={after}&wait=2&limit=1000"
            ));
            assert_eq!(s, 200, "{v}");
            for e in v["events"].as_array().cloned().unwrap_or_default() {
                if pred(&e) {
                    return e;
                }
                after = e["id"].as_u64().unwrap_or(after);
            }
            assert!(
                Instant::now() < deadline,
                "job {id}: no matching event after {timeout:?}; logs:\n{}",
                self.logs()
            );
        }
    }

    /// Asserts the daemon still answers a good request (after bad input).
    pub fn assert_serving(&self) {
        let (s, v) = self.get("/healthz");
        assert_eq!(s, 200, "daemon stopped serving: {v}");
        let (s, v) = self.get("/api/jobs?limit=1");
        assert_eq!(s, 200, "daemon refuses good requests: {v}");
        assert_eq!(v["status"], "success", "{v}");
    }
}

/// Pids of live (non-zombie) processes whose command line contains `needle` (e.g. a job id: every
/// tool a job runs names a file in the job's folder).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let me = std::process::id();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if p == me {
                continue;
            }
            let zombie = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            let Ok(cmd) = std::fs::read(format!("/proc/{p}/cmdline")) else {
                continue;
            };
            if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(p);
            }
        }
    }
    out
}

/// Fails the test (never skips it) when a media tool is missing, naming the package to install.
pub fn require_media_tools() {
    for (tool, package) in [
        ("espeak-ng", "espeak-ng"),
        ("ffmpeg", "ffmpeg"),
        ("ffprobe", "ffmpeg"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "{tool} is missing: install the Debian package `{package}` (see .ci/run)"
        );
    }
}

/// The Piper executable the tests use: `$REELSMITH_TEST_PIPER`, else `/opt/reelsmith-piper/bin/piper`
/// (where `.ci/install-piper` puts it). Fails the test (never skips it) when it is missing.
pub fn piper_program() -> String {
    let p = std::env::var("REELSMITH_TEST_PIPER")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/opt/reelsmith-piper/bin/piper".to_string());
    assert!(
        Path::new(&p).is_file(),
        "Piper is missing at {p}: install it with `sudo bash .ci/install-piper` (or set REELSMITH_TEST_PIPER)"
    );
    p
}

/// The mean volume (dB) of a media file's audio, from ffmpeg's `volumedetect`.
pub fn mean_volume_db(path: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or(-100.0)
}
pub mod pg;
