//! Black-box tests of webhooks: the real daemon (paused, so jobs are cancelled without running any
//! media tool), a small HTTP receiver on 127.0.0.1 inside the test that fails when told to, checks
//! of the signature with the HMAC recomputed here, and daemon restarts in the middle of a delivery.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "whsec-test-7c1d2f9e";

/// One request the receiver got.
#[derive(Debug)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver: answers each request with the next status of `statuses` (then 200) and
/// sends what it got down the channel. Serves at most `max` requests, then stops.
fn receiver(statuses: Vec<u16>, max: usize) -> (SocketAddr, mpsc::Receiver<Hit>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().take(max).enumerate() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let status = statuses.get(i).copied().unwrap_or(200);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            let _ = tx.send(Hit {
                path,
                headers,
                body,
            });
        }
    });
    (addr, rx)
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    ring::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config() -> String {
    offline_config(&format!(
        "[webhooks]\nsecret = \"{SECRET}\"\nretry_base_ms = 4000\n"
    ))
}

fn webhook_events(d: &Daemon, job: &str) -> Vec<Value> {
    d.events(job)
        .into_iter()
        .filter(|e| e["type"] == "webhook")
        .collect()
}

/// Checks the signature and the body of a hit against the job's event.
fn check_hit(hit: &Hit, job: &str, event: &Value) {
    assert_eq!(hit.headers["x-reelsmith-event-id"], event["id"].to_string());
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(
        hit.headers["x-reelsmith-signature"],
        format!("sha256={}", hmac_hex(SECRET, &hit.body)),
        "the signature is the HMAC of the exact body"
    );
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(body, json!({ "jobId": job, "event": event }));
}

#[test]
fn a_failed_delivery_is_retried_after_a_kill_and_delivered_once_signed() {
    let (hook, hits) = receiver(vec![500], 3);
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(tmp.path(), &config(), &["--paused"]);
    let url = format!("http://{hook}/hook?token=query-token-3141");
    let (s, v) = d.post(
        "/api/generate",
        &json!({ "videoSubject": "x", "webhookUrl": "ftp://example.com/x" }),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("webhookUrl"), "{v}");
    let job = d.submit(&json!({ "videoSubject": "webhooks", "webhookUrl": url }));
    let (s, v) = d.post(&format!("/api/jobs/{job}/cancel"), &json!({}));
    assert_eq!(s, 200, "{v}");
    let cancelled = d
        .events(&job)
        .into_iter()
        .find(|e| e["type"] == "cancelled")
        .expect("cancelled event");

    // Attempt 1: the receiver answers 500; the attempt is recorded with its outcome.
    let first = hits
        .recv_timeout(Duration::from_secs(20))
        .expect("first attempt");
    assert_eq!(first.path, "/hook?token=query-token-3141");
    check_hit(&first, &job, &cancelled);
    let failed = d.wait_for_event(&job, Duration::from_secs(20), |e| e["type"] == "webhook");
    assert_eq!(failed["level"], "warning", "{failed}");
    let p = &failed["payload"];
    assert_eq!(p["outcome"], "failed", "{failed}");
    assert_eq!(p["eventId"], cancelled["id"]);
    assert_eq!(p["event"], "cancelled");
    assert_eq!(p["attempt"], 1);
    assert_eq!(p["status"], 500);
    assert_eq!(
        p["url"],
        format!("http://{hook}/hook"),
        "shown without its query"
    );
    assert!(p["nextAttemptAt"].as_f64().unwrap() > failed["timestamp"].as_f64().unwrap());

    // The daemon dies before the retry is due; the restarted one resumes it from the log.
    d.kill9();
    let d = Daemon::start_in(tmp.path(), &config(), &["--paused"]);
    let second = hits
        .recv_timeout(Duration::from_secs(30))
        .expect("retry after restart");
    check_hit(&second, &job, &cancelled);
    assert_eq!(first.body, second.body, "the same delivery, byte for byte");
    let delivered = d.wait_for_event(&job, Duration::from_secs(20), |e| {
        e["type"] == "webhook" && e["payload"]["outcome"] == "delivered"
    });
    assert_eq!(delivered["level"], "success");
    assert_eq!(delivered["payload"]["attempt"], 2);
    assert_eq!(delivered["payload"]["status"], 200);
    // Webhook records change nothing of the job.
    let view = d.job(&job);
    assert_eq!(view["state"], "cancelled");
    assert_eq!(webhook_events(&d, &job).len(), 2);

    // A delivered event is never sent again: after one more restart the next request the
    // receiver gets is the new job's, not the old one's.
    let mut d = d;
    d.terminate(Duration::from_secs(20));
    let d = Daemon::start_in(tmp.path(), &config(), &["--paused"]);
    let other =
        d.submit(&json!({ "videoSubject": "second", "webhookUrl": format!("http://{hook}/b") }));
    d.post(&format!("/api/jobs/{other}/cancel"), &json!({}));
    let third = hits
        .recv_timeout(Duration::from_secs(20))
        .expect("the new job's webhook");
    assert_eq!(third.path, "/b");
    assert_eq!(
        serde_json::from_slice::<Value>(&third.body).unwrap()["jobId"],
        other
    );
    d.wait_for_event(&other, Duration::from_secs(20), |e| {
        e["payload"]["outcome"] == "delivered"
    });

    // The secret is in no event and no log line; webhook records show the URL without its query
    // (the request itself keeps the URL as the caller sent it).
    for j in [&job, &other] {
        let text = serde_json::to_string(&d.events(j)).unwrap();
        assert!(!text.contains(SECRET), "secret in events: {text}");
        let hooks = serde_json::to_string(&webhook_events(&d, j)).unwrap();
        assert!(
            !hooks.contains("query-token-3141"),
            "query in webhook events: {hooks}"
        );
    }
    let logs = d.logs();
    assert!(!logs.contains(SECRET), "secret in the log:\n{logs}");
}

#[test]
fn the_config_url_is_the_default_and_a_dead_receiver_is_abandoned_after_the_window() {
    // Nothing listens on this port: every attempt fails at once.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = offline_config(&format!(
        "[webhooks]\nurl = \"http://{closed}/dead\"\nretry_base_ms = 200\ngive_up_secs = 1\n"
    ));
    let (d, _tmp) = Daemon::start(&cfg, &["--paused"]);
    let job = d.submit(&json!({ "videoSubject": "nobody listens" }));
    d.post(&format!("/api/jobs/{job}/cancel"), &json!({}));
    let gave_up = d.wait_for_event(&job, Duration::from_secs(20), |e| {
        e["type"] == "webhook" && e["payload"]["outcome"] == "gave_up"
    });
    assert_eq!(gave_up["level"], "error", "{gave_up}");
    let hooks = webhook_events(&d, &job);
    assert!(
        hooks.len() >= 2,
        "at least one retry before giving up: {hooks:?}"
    );
    for h in &hooks[..hooks.len() - 1] {
        assert_eq!(h["payload"]["outcome"], "failed", "{h}");
    }
    assert!(hooks.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("abandoned"));
    // A bad config URL stops the start naming the key.
    let state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .arg("--socket")
        .arg(state.path().join("s.sock"))
        .env("REELSMITH_WEBHOOKS_URL", "gopher://x")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a daemon with a gopher:// webhooks.url started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("webhooks.url"), "{stderr}");
}
