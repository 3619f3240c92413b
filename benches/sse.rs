//! The event streams' benchmark: starts the release daemon (`--paused`, port 0, temp state dir) and
//! measures, over loopback with raw sockets:
//! - delivery latency with 100 job streams open: each job is cancelled in turn and the time to its
//!   stream's message is taken from the cancel request sent, from the cancel's 200 (after the
//!   commit), and from the event's own timestamp (the commit, 1 ms resolution);
//! - fan-out: 100 daemon-wide streams, one commit;
//! - RSS of the daemon with 1,000 idle streams open (against the same daemon before).
//!
//! Run: `cargo bench --bench sse`. Every phase is bounded in count and time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The daemon built with the bench profile alongside this bench (Cargo sets the path).
fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reelsmith"))
}

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let cfg = dir.join("bench.toml");
        std::fs::write(
            &cfg,
            "[llm]\nollama_base_url = \"http://127.0.0.1:1\"\nprovider = \"offline\"\n",
        )
        .unwrap();
        let mut child = Command::new(daemon_binary())
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("reelsmith.sock"))
            .args(["--listen", "127.0.0.1:0", "--paused"])
            .env("RUST_LOG", "warn")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.strip_prefix("reelsmith listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon did not print its listening line")
            .parse()
            .unwrap();
        Daemon { child, addr }
    }

    fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon we spawned; no memory is touched.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain request on a fresh connection; the JSON answer.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Value {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null)
}

/// An open event stream, read up to its `: stream open` preamble.
struct Stream {
    r: BufReader<TcpStream>,
}

impl Stream {
    async fn open(addr: SocketAddr, path: &str) -> Stream {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line).await.unwrap();
            assert!(n > 0, "stream closed before its preamble");
            if line.starts_with(": stream open") {
                return Stream { r };
            }
        }
    }

    /// Waits for the next `data:` line; its arrival time and the event's timestamp (Unix ms).
    async fn next_event(&mut self) -> (Instant, i64) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.r.read_line(&mut line).await.unwrap();
            assert!(n > 0, "stream closed");
            if let Some(d) = line.strip_prefix("data: ") {
                let at = Instant::now();
                let v: Value = serde_json::from_str(d.trim()).unwrap();
                let ts = (v["timestamp"].as_f64().unwrap() * 1000.0).round() as i64;
                return (at, ts);
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let addr = d.addr;
    println!("daemon {} on {addr}", daemon_binary().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    rt.block_on(async {
        // ---- 100 job streams, one cancel each.
        let mut jobs = Vec::new();
        for i in 0..100 {
            let v = request(addr, "POST", "/api/generate", &format!("{{\"videoSubject\":\"stream {i}\"}}")).await;
            let id = v["jobId"].as_str().unwrap().to_string();
            let j = request(addr, "GET", &format!("/api/jobs/{id}"), "").await;
            jobs.push((id, j["job"]["lastEventId"].as_u64().unwrap()));
        }
        let mut streams = Vec::new();
        for (id, last) in &jobs {
            streams.push(Stream::open(addr, &format!("/api/jobs/{id}/events/stream?after={last}")).await);
        }
        let mut readers = Vec::new();
        for mut s in streams {
            readers.push(tokio::spawn(async move {
                let first = s.next_event().await;
                let wall = now_ms();
                (first, wall)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut from_send = Vec::new();
        let mut from_ack = Vec::new();
        let mut from_commit = Vec::new();
        for ((id, _), reader) in jobs.iter().zip(readers) {
            let sent = Instant::now();
            request(addr, "POST", &format!("/api/jobs/{id}/cancel"), "{}").await;
            let ack = Instant::now();
            let ((at, ts), wall) = reader.await.unwrap();
            from_send.push(at.saturating_duration_since(sent).as_micros() as u64);
            from_ack.push(at.saturating_duration_since(ack).as_micros() as u64);
            from_commit.push(((wall - ts).max(0) * 1000) as u64);
        }
        for v in [&mut from_send, &mut from_ack, &mut from_commit] {
            v.sort_unstable();
        }
        rows.push((
            "SSE delivery, 100 job streams open (one cancel at a time)".into(),
            format!(
                "from cancel sent: p50 {} p99 {}; from the cancel's 200 (after commit; 0 when the event came first): p50 {} p99 {}; from the event's commit timestamp (1 ms resolution): p50 {} p99 {}",
                ms(pct(&from_send, 0.5)), ms(pct(&from_send, 0.99)),
                ms(pct(&from_ack, 0.5)), ms(pct(&from_ack, 0.99)),
                ms(pct(&from_commit, 0.5)), ms(pct(&from_commit, 0.99)),
            ),
            "p99 < 10 ms from commit".into(),
        ));

        // ---- fan-out: 100 daemon-wide streams, one commit.
        let mut streams = Vec::new();
        for _ in 0..100 {
            streams.push(Stream::open(addr, "/api/events/stream").await);
        }
        let mut readers = Vec::new();
        for mut s in streams {
            readers.push(tokio::spawn(async move { s.next_event().await.0 }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        request(addr, "POST", "/api/generate", "{\"videoSubject\":\"fan-out\"}").await;
        let mut fan = Vec::new();
        for r in readers {
            fan.push(r.await.unwrap().saturating_duration_since(sent).as_micros() as u64);
        }
        fan.sort_unstable();
        rows.push((
            "SSE fan-out, 100 daemon-wide streams, 1 submit".into(),
            format!("from submit sent: p50 {} p99 {} (max {})", ms(pct(&fan, 0.5)), ms(pct(&fan, 0.99)), ms(pct(&fan, 1.0))),
            "(extra)".into(),
        ));
    });
    // ---- 1,000 idle streams.
    std::thread::sleep(Duration::from_millis(500));
    let before = d.rss_kb();
    let held = rt.block_on(async {
        let last = request(addr, "GET", "/healthz", "").await["lastEventId"]
            .as_u64()
            .unwrap();
        let mut jobs = Vec::new();
        for i in 0..10 {
            let v = request(
                addr,
                "POST",
                "/api/generate",
                &format!("{{\"videoSubject\":\"idle {i}\"}}"),
            )
            .await;
            jobs.push(v["jobId"].as_str().unwrap().to_string());
        }
        let mut held = Vec::new();
        for i in 0..1000 {
            // Half on the daemon-wide stream, half on the streams of 10 queued (quiet) jobs.
            let path = if i % 2 == 0 {
                format!("/api/events/stream?after={last}")
            } else {
                let id = &jobs[i % jobs.len()];
                format!("/api/jobs/{id}/events/stream?after={last}")
            };
            held.push(Stream::open(addr, &path).await);
        }
        held
    });
    std::thread::sleep(Duration::from_millis(1000));
    let after = d.rss_kb();
    rows.push((
        "RSS with 1,000 idle streams".into(),
        format!(
            "{:.1} MB before, {:.1} MB with them: +{:.1} MB ({:.1} KB a stream)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after.saturating_sub(before)) as f64 / 1024.0,
            after.saturating_sub(before) as f64 / 1000.0
        ),
        "< 50 MB".into(),
    ));
    drop(held);
    println!("\n| measure | figure | target |\n|---|---|---|");
    for (what, figure, target) in &rows {
        println!("| {what} | {figure} | {target} |");
    }
}
