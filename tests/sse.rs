//! Server-sent event streams on the real daemon, read by a client that drops its connection at
//! random byte offsets (mid-message, mid-chunk, mid-header) and resumes with `Last-Event-ID`, as an
//! `EventSource` does: across every reconnect nothing is skipped and nothing is repeated. Also: a
//! job's stream ends by itself after the terminal event and then answers 204; the daemon-wide stream
//! carries `jobId` and honours the `type` filter; a quiet stream gets heartbeat comments, spaced by
//! `server.sse_heartbeat_ms`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{offline_config, Daemon, SMALL_RENDER};
use serde_json::{json, Value};

/// What one connection produced.
#[derive(Default)]
struct Read1 {
    status: u16,
    /// Complete messages: (id, data JSON).
    messages: Vec<(u64, Value)>,
    /// Comment lines seen (heartbeats, the preamble).
    comments: Vec<String>,
    /// The server ended the stream (the terminal chunk or EOF) before the client dropped it.
    ended: bool,
    head: String,
}

/// Parses what a connection received so far: status line, headers, chunked body (a partial last
/// chunk counts: a real client sees those bytes), then SSE messages (only complete ones).
fn parse(raw: &[u8], eof: bool) -> Read1 {
    let mut out = Read1::default();
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return out;
    };
    out.head = String::from_utf8_lossy(&raw[..split]).to_string();
    out.status = out
        .head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut b = &raw[split + 4..];
    let mut body = Vec::new();
    let mut last_chunk = false;
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .expect("chunk size");
        if size == 0 {
            last_chunk = true;
            break;
        }
        let data = &b[eol + 2..];
        if data.len() < size {
            body.extend_from_slice(data);
            break;
        }
        body.extend_from_slice(&data[..size]);
        b = &data[size..];
        if b.len() < 2 {
            break;
        }
        b = &b[2..];
    }
    out.ended = last_chunk || (eof && out.status == 200);
    let text = String::from_utf8(body).unwrap_or_else(|e| {
        String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]).to_string()
    });
    // Only blocks followed by a blank line are dispatched.
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop();
    for block in blocks {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                out.comments.push(c.trim().to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse::<u64>().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(v).expect("data is JSON"));
            }
        }
        if let (Some(id), Some(data)) = (id, data) {
            out.messages.push((id, data));
        }
    }
    out
}

/// One connection: sends the request, reads at most `budget` raw bytes (then drops the
/// connection), or until the server ends the stream, or until `enough` says stop.
fn connect(
    addr: SocketAddr,
    path: &str,
    last_id: Option<u64>,
    budget: usize,
    enough: &dyn Fn(&Read1) -> bool,
    timeout: Duration,
) -> Read1 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    if let Some(id) = last_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let want = budget.saturating_sub(raw.len()).min(buf.len());
        if want == 0 {
            return parse(&raw, false);
        }
        match s.read(&mut buf[..want]) {
            Ok(0) => return parse(&raw, true),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        let r = parse(&raw, false);
        if r.ended || enough(&r) {
            return r;
        }
        // Hitting the deadline with a quiet stream is fine: the caller reconnects.
        if Instant::now() > deadline {
            return r;
        }
    }
}

/// Whether a follow is complete, given every message so far and the current connection's read.
type Done<'a> = dyn Fn(&[(u64, Value)], &Read1) -> bool + 'a;

/// Follows `path` with random drops until `done` holds for what was collected; returns every
/// message in arrival order and the number of connections used.
fn follow(
    addr: SocketAddr,
    path: &str,
    rng: &mut fastrand::Rng,
    done: &Done<'_>,
    limit: Duration,
) -> (Vec<(u64, Value)>, usize) {
    let start = Instant::now();
    let mut got: Vec<(u64, Value)> = Vec::new();
    let mut conns = 0;
    loop {
        assert!(
            start.elapsed() < limit,
            "stream not done after {limit:?}: {} messages over {conns} connections",
            got.len()
        );
        let last = got.last().map(|(id, _)| *id);
        // Mostly small budgets (drops inside headers, chunk sizes and messages), sometimes large;
        // the first three always small, so the client drops several times even when the job is
        // done before a large budget would run out (a quiet machine renders it in a second).
        let budget = if conns >= 3 && rng.u8(..) < 40 {
            rng.usize(2_000..20_000)
        } else {
            rng.usize(1..600)
        };
        let seen = got.len();
        let r = connect(
            addr,
            path,
            last,
            budget,
            &|r| done(&got, r),
            Duration::from_secs(2),
        );
        conns += 1;
        if r.status == 204 {
            assert!(done(&got, &r), "204 before the stream was complete");
            return (got, conns);
        }
        if r.status != 0 {
            assert_eq!(r.status, 200, "{}", r.head);
        }
        got.extend(r.messages.iter().cloned());
        if done(&got, &r) && got.len() >= seen {
            return (got, conns);
        }
    }
}

#[test]
fn a_job_stream_resumed_at_random_drops_delivers_every_event_once_then_ends() {
    // Frequent heartbeats interleave comments with the messages the client parses.
    let cfg = offline_config(&format!("[server]\nsse_heartbeat_ms = 150\n{SMALL_RENDER}"));
    let (d, _tmp) = Daemon::start(&cfg, &[]);
    let id = d.submit(&json!({
        "videoSubject": "Why octopuses have three hearts",
        "script": "Octopuses have three hearts. Two pump blood through the gills. One pumps it through the body.",
    }));
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let path = format!("/api/jobs/{id}/events/stream");
    let terminal = |got: &[(u64, Value)], _: &Read1| {
        got.last().is_some_and(|(_, e)| {
            ["complete", "error", "cancelled"].contains(&e["type"].as_str().unwrap_or(""))
        })
    };
    let (got, conns) = follow(d.addr, &path, &mut rng, &terminal, Duration::from_secs(240));
    let events = d.events(&id);
    let ids: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
    let want: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids, want,
        "skipped or repeated events over {conns} connections"
    );
    for ((i, data), ev) in got.iter().zip(&events) {
        assert_eq!(data, ev, "event {i} differs from the events page");
    }
    assert_eq!(
        got.last().unwrap().1["type"],
        "complete",
        "{:?}",
        got.last()
    );
    assert!(
        conns > 3,
        "the client should have dropped several times ({conns})"
    );

    // A fresh reader gets the whole story in one connection that the server ends itself.
    let r = connect(
        d.addr,
        &path,
        None,
        usize::MAX,
        &|_| false,
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 200);
    assert!(r.ended, "the stream did not end after the terminal event");
    assert!(r
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    assert_eq!(r.messages.len(), events.len());
    // Past the terminal event: 204, which stops an EventSource from reconnecting.
    let last = *want.last().unwrap();
    let r = connect(
        d.addr,
        &path,
        Some(last),
        usize::MAX,
        &|_| false,
        Duration::from_secs(5),
    );
    assert_eq!(r.status, 204);
    // `Last-Event-ID` wins over `after` (a reconnecting EventSource keeps its first URL).
    let r = connect(
        d.addr,
        &format!("{path}?after=0"),
        Some(want[want.len() - 2]),
        usize::MAX,
        &|_| false,
        Duration::from_secs(5),
    );
    assert_eq!(
        r.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![last]
    );
    // The `type` filter on a job stream, and errors.
    let r = connect(
        d.addr,
        &format!("{path}?type=queued,complete"),
        None,
        usize::MAX,
        &|_| false,
        Duration::from_secs(5),
    );
    let types: Vec<&str> = r
        .messages
        .iter()
        .map(|m| m.1["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["queued", "complete"]);
    let (s, v) = d.get(&format!("{path}?after=x"));
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("`after`"));
    let (s, v) = d.get("/api/jobs/00000000-0000-4000-8000-000000000000/events/stream");
    assert_eq!((s, v["message"].as_str()), (404, Some("Job not found.")));
    let (s, v) = d.get("/api/events/stream?type=bogus");
    assert_eq!(s, 400, "{v}");
}

#[test]
fn the_daemon_stream_under_concurrent_writes_skips_and_repeats_nothing_and_beats_when_quiet() {
    let cfg = offline_config("[server]\nsse_heartbeat_ms = 400\n");
    let (d, _tmp) = Daemon::start(&cfg, &["--paused"]);
    let d = Arc::new(d);
    // A quiet job for the heartbeat: queued, never started (the queue is paused).
    let quiet = d.submit(&json!({ "videoSubject": "quiet" }));
    let start = d.job(&quiet)["lastEventId"].as_u64().unwrap();
    let addr = d.addr;
    let heartbeat = std::thread::spawn(move || {
        let t = Instant::now();
        let r = connect(
            addr,
            &format!("/api/jobs/{quiet}/events/stream?after={start}"),
            None,
            usize::MAX,
            &|r| r.comments.iter().filter(|c| *c == "heartbeat").count() >= 2,
            Duration::from_secs(20),
        );
        assert_eq!(
            r.comments,
            vec!["stream open", "heartbeat", "heartbeat"],
            "the preamble, then a heartbeat per quiet period"
        );
        assert!(r.messages.is_empty());
        t.elapsed()
    });

    // Writers: 60 jobs submitted and cancelled (queued, cancel_requested, cancelled each), at
    // random moments, while the readers drop and resume.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let jobs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (d, target, jobs) = (d.clone(), target.clone(), jobs.clone());
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(7);
            for i in 0..60 {
                let id = d.submit(&json!({ "videoSubject": format!("job {i}") }));
                std::thread::sleep(Duration::from_millis(rng.u64(0..30)));
                let (s, _) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
                assert_eq!(s, 200);
                jobs.lock().unwrap().push(id);
            }
            let (_, h) = d.get("/healthz");
            target.store(h["lastEventId"].as_u64().unwrap(), Ordering::SeqCst);
        })
    };
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let path = format!("/api/events/stream?after={start}");
    let reached = |got: &[(u64, Value)], r: &Read1| {
        let t = target.load(Ordering::SeqCst);
        let last = r.messages.last().or(got.last()).map(|m| m.0).unwrap_or(0);
        t != u64::MAX && last >= t
    };
    let (got, conns) = follow(d.addr, &path, &mut rng, &reached, Duration::from_secs(120));
    writer.join().unwrap();
    let ids: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "repeated or out of order over {conns} connections"
    );
    let mut expected = Vec::new();
    for job in jobs.lock().unwrap().iter() {
        for ev in d.events(job) {
            expected.push((ev["id"].as_u64().unwrap(), job.clone(), ev));
        }
    }
    expected.sort_by_key(|e| e.0);
    assert_eq!(expected.len(), 180);
    let by_id: std::collections::HashMap<u64, &Value> = got.iter().map(|(i, v)| (*i, v)).collect();
    for (id, job, ev) in &expected {
        let data = by_id
            .get(id)
            .unwrap_or_else(|| panic!("event {id} of job {job} was skipped"));
        assert_eq!(data["jobId"], job.as_str());
        let mut plain = (*data).clone();
        plain.as_object_mut().unwrap().remove("jobId");
        assert_eq!(&plain, ev);
    }
    // Nothing but those jobs' events (and daemon-wide ones, with a null jobId) came.
    assert_eq!(
        got.iter().filter(|m| !m.1["jobId"].is_null()).count(),
        expected.len()
    );
    assert!(conns > 10, "the client should have dropped often ({conns})");

    // The type filter: exactly the 60 cancellations, in order.
    let r = connect(
        d.addr,
        &format!("/api/events/stream?type=cancelled&after={start}"),
        None,
        usize::MAX,
        &|r| r.messages.len() >= 60,
        Duration::from_secs(10),
    );
    let want: Vec<u64> = expected
        .iter()
        .filter(|e| e.2["type"] == "cancelled")
        .map(|e| e.0)
        .collect();
    assert_eq!(r.messages.iter().map(|m| m.0).collect::<Vec<_>>(), want);
    // Without `after`, the daemon-wide stream starts at the present: the next event is new.
    let before = d.get("/healthz").1["lastEventId"].as_u64().unwrap();
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        connect(
            addr,
            "/api/events/stream",
            None,
            usize::MAX,
            &|r| {
                if r.comments.iter().any(|c| c == "stream open") {
                    let _ = open_tx.send(());
                }
                !r.messages.is_empty()
            },
            Duration::from_secs(10),
        )
    });
    // The start point is fixed once the stream's head and preamble are out.
    open_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream opened");
    d.submit(&json!({ "videoSubject": "one more" }));
    let r = reader.join().unwrap();
    assert!(
        r.messages.first().is_some_and(|m| m.0 > before),
        "{:?}",
        r.messages.first()
    );

    let waited = heartbeat.join().unwrap();
    // Two quiet periods of 400 ms each (and not much more: nothing else held the stream).
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(15),
        "two heartbeats after {waited:?}"
    );
}
