//! Black-box tests of the HTTP API: the real binary on port 0, a real redb log in a temp dir, real
//! HTTP over loopback. Every endpoint and every message of DESIGN.md's table, the seed's event shape,
//! parameter validation, long polling, CORS, uploads, and the daemon surviving bad input.
//! Most daemons run `--paused`, so jobs stay queued and no media tool runs.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn paused() -> (Daemon, tempfile::TempDir) {
    Daemon::start(&offline_config(""), &["--paused"])
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_message: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["message"], want_message, "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "error body has extra keys: {body}"
    );
}

/// A 400 whose message names `field`.
fn assert_400_naming(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{field}: {body}");
    assert_eq!(body["status"], "error", "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(field),
        "message does not name `{field}`: {msg}"
    );
}

fn is_iso8601_utc(s: &str) -> bool {
    // 2024-03-15T10:50:45.789Z
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
}

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn generate_queues_a_job_and_reports_it() {
    let (d, _tmp) = paused();
    let (s, v) = d.post(
        "/api/generate",
        &json!({ "videoSubject": "Why octopuses have three hearts" }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["message"], "Video generation queued.");
    let id = v["jobId"].as_str().expect("jobId");
    assert_eq!(id.len(), 36, "jobId is a hyphenated uuid: {id}");
    assert_eq!(id.matches('-').count(), 4);

    let (s, v) = d.get(&format!("/api/jobs/{id}"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    let job = &v["job"];
    assert_eq!(job["id"], id);
    assert_eq!(job["state"], "queued");
    assert_eq!(job["cancelRequested"], false);
    assert_eq!(job["resultPath"], Value::Null);
    assert_eq!(job["errorMessage"], Value::Null);
    assert!(is_iso8601_utc(job["createdAt"].as_str().unwrap()), "{job}");
    assert_eq!(job["startedAt"], Value::Null);
    assert_eq!(job["completedAt"], Value::Null);
    assert_eq!(job["attempt"], 0);
    assert_eq!(job["maxAttempts"], 2);

    let events = d.events(id);
    assert_eq!(events.len(), 1, "{events:?}");
    let q = &events[0];
    assert_eq!(q["type"], "queued");
    assert_eq!(q["level"], "info");
    assert_eq!(q["message"], "Job queued.");
    assert_eq!(q["payload"]["maxAttempts"], 2);
    assert_eq!(
        q["payload"]["request"]["videoSubject"],
        "Why octopuses have three hearts"
    );
    assert_eq!(job["lastEventId"], q["id"]);
}

#[test]
fn event_records_have_exactly_the_seed_shape() {
    let (d, _tmp) = paused();
    let before = unix_now();
    let id = d.submit(&json!({ "videoSubject": "shape" }));
    let (s, _) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(s, 200);
    let after = unix_now();
    let (s, raw) = http(d.addr, "GET", &format!("/api/jobs/{id}/events"), &[], b"");
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["status"], "success");
    let events = v["events"].as_array().unwrap();
    assert_eq!(types(events), ["queued", "cancel_requested", "cancelled"]);
    let want: HashSet<&str> = ["id", "type", "level", "message", "payload", "timestamp"].into();
    for e in events {
        let keys: HashSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, want, "{e}");
        assert!(e["id"].is_u64(), "{e}");
        assert!(e["type"].is_string() && e["message"].is_string(), "{e}");
        assert!(
            ["info", "success", "warning", "error"].contains(&e["level"].as_str().unwrap()),
            "{e}"
        );
        assert!(e["payload"].is_object() || e["payload"].is_null(), "{e}");
        let ts = e["timestamp"].as_f64().expect("timestamp is a number");
        assert!(
            ts >= before - 1.0 && ts <= after + 1.0,
            "timestamp {ts} not in [{before}, {after}]"
        );
        // Millisecond precision: at most three decimals.
        assert!(
            ((ts * 1000.0).round() - ts * 1000.0).abs() < 1e-3,
            "timestamp {ts} has sub-ms digits"
        );
    }
    // The wire text carries the timestamp as a float (seconds.millis), like the seed's 1710499805.123.
    let text = String::from_utf8_lossy(&raw);
    let at = text.find("\"timestamp\":").unwrap() + "\"timestamp\":".len();
    let num: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    assert!(
        num.contains('.') || num.len() == 10,
        "timestamp not in seconds: {num}"
    );
}

#[test]
fn event_ids_increase_strictly_across_jobs() {
    let (d, _tmp) = paused();
    let a = d.submit(&json!({ "videoSubject": "a" }));
    let b = d.submit(&json!({ "videoSubject": "b" }));
    d.post(&format!("/api/jobs/{a}/cancel"), &json!({}));
    let c = d.submit(&json!({ "videoSubject": "c" }));
    d.post(&format!("/api/jobs/{b}/cancel"), &json!({}));
    let (ea, eb, ec) = (d.events(&a), d.events(&b), d.events(&c));
    let ids = |evs: &[Value]| {
        evs.iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let (ia, ib, ic) = (ids(&ea), ids(&eb), ids(&ec));
    for v in [&ia, &ib, &ic] {
        assert!(
            v.windows(2).all(|w| w[0] < w[1]),
            "not ascending within a job: {v:?}"
        );
    }
    // One global sequence, in commit order: a.queued < b.queued < a.cancel.. < c.queued < b.cancel..
    let mut order = vec![ia[0], ib[0], ia[1], ia[2], ic[0], ib[1], ib[2]];
    let sorted = {
        let mut s = order.clone();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(
        order, sorted,
        "ids do not follow the commit order across jobs"
    );
    order.dedup();
    assert_eq!(order.len(), 7, "an id was given twice");
    // GET /healthz reports the global last id.
    let (_, h) = d.get("/healthz");
    assert_eq!(h["lastEventId"].as_u64(), Some(ib[2]));
}

#[test]
fn unknown_fields_are_accepted_answered_with_warnings_and_logged_first() {
    let (d, _tmp) = paused();
    let (s, v) = d.post(
        "/api/generate",
        &json!({ "videoSubject": "Octopus hearts", "subtitlePosition": "center,top", "aspect_ratio": "9:16", "frobnicate": true }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    let want = [
        // `aspect_ratio` is the request's `aspectRatio` in another spelling.
        "unknown field aspect_ratio ignored; did you mean aspectRatio?",
        "unknown field frobnicate ignored",
        "unknown field subtitlePosition ignored; did you mean subtitlesPosition?",
    ];
    assert_eq!(v["warnings"], json!(want), "{v}");
    let id = v["jobId"].as_str().expect("jobId");

    // The same warnings are the job's first log events, committed with `queued`.
    let events = d.events(id);
    assert_eq!(
        types(&events),
        vec!["queued", "log", "log", "log"],
        "{events:#?}"
    );
    assert_eq!(messages(&events[1..]), want);
    for e in &events[1..] {
        assert_eq!(e["level"], "warning", "{e}");
    }
    assert_eq!(
        events[3]["payload"],
        json!({"field": "subtitlePosition", "suggestion": "subtitlesPosition"})
    );
    // The job runs what it knows: the default position, not the one in the typo.
    assert_eq!(
        events[0]["payload"]["request"]["subtitlesPosition"],
        json!(["center", "bottom"])
    );
    assert!(events[0]["payload"]["request"]
        .get("subtitlePosition")
        .is_none());

    // A body with only known fields is answered as before.
    let (s, v) = d.post(
        "/api/generate",
        &json!({ "videoSubject": "Clean", "zipUrl": "" }),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v.get("warnings").is_none(), "{v}");
    assert_eq!(d.events(v["jobId"].as_str().unwrap()).len(), 1);
}

#[test]
fn numeric_and_boolean_strings_are_accepted() {
    let (d, _tmp) = paused();
    let as_strings = d.submit(&json!({
        "videoSubject": "strings", "paragraphNumber": "3", "threads": "4", "useMusic": "true",
        "automateYoutubeUpload": "false", "subtitlesPosition": "left,top", "color": "#FF0000",
        "voice": "en_us_001", "aiModel": "llama3.1:8b", "customPrompt": "be brief"
    }));
    let as_numbers = d.submit(&json!({
        "videoSubject": "numbers", "paragraphNumber": 3, "threads": 4, "useMusic": true,
        "automateYoutubeUpload": false, "color": "yellow"
    }));
    for (id, subject) in [(&as_strings, "strings"), (&as_numbers, "numbers")] {
        let req = d.events(id)[0]["payload"]["request"].clone();
        assert_eq!(req["videoSubject"], subject, "{req}");
        assert_eq!(req["paragraphNumber"], 3, "{req}");
        assert_eq!(req["threads"], 4, "{req}");
        assert_eq!(req["useMusic"], true, "{req}");
        assert_eq!(req["automateYoutubeUpload"], false, "{req}");
    }
    let job = d.job(&as_strings);
    assert_eq!(job["subject"], "strings");
}

#[test]
fn generate_rejects_bad_bodies_naming_the_field() {
    let (d, _tmp) = paused();
    for body in [
        json!({}),
        json!({ "videoSubject": "" }),
        json!({ "videoSubject": "   " }),
        json!({ "videoSubject": null }),
    ] {
        let (s, v) = d.post("/api/generate", &body);
        assert_error(s, &v, 400, "videoSubject is required.");
    }
    let cases = [
        (json!({ "videoSubject": 42 }), "videoSubject"),
        (
            json!({ "videoSubject": "x", "paragraphNumber": "abc" }),
            "paragraphNumber",
        ),
        (
            json!({ "videoSubject": "x", "paragraphNumber": 0 }),
            "paragraphNumber",
        ),
        (
            json!({ "videoSubject": "x", "paragraphNumber": "101" }),
            "paragraphNumber",
        ),
        (
            json!({ "videoSubject": "x", "paragraphNumber": 2.5 }),
            "paragraphNumber",
        ),
        (json!({ "videoSubject": "x", "threads": "many" }), "threads"),
        (json!({ "videoSubject": "x", "threads": 0 }), "threads"),
        (
            json!({ "videoSubject": "x", "useMusic": "perhaps" }),
            "useMusic",
        ),
        (
            json!({ "videoSubject": "x", "automateYoutubeUpload": [] }),
            "automateYoutubeUpload",
        ),
        (
            json!({ "videoSubject": "x", "subtitlesPosition": "middle,nowhere" }),
            "subtitlesPosition",
        ),
        (
            json!({ "videoSubject": "x", "color": "not-a-colour" }),
            "color",
        ),
        (json!({ "videoSubject": "x", "color": "#GGHHII" }), "color"),
        (
            json!({ "videoSubject": "x", "voice": "klingon_007" }),
            "voice",
        ),
        (json!({ "videoSubject": "x", "aiModel": 7 }), "aiModel"),
        (
            json!({ "videoSubject": "x", "customPrompt": {} }),
            "customPrompt",
        ),
        (json!({ "videoSubject": "x", "script": 12 }), "script"),
        (json!({ "videoSubject": "x".repeat(501) }), "videoSubject"),
    ];
    for (body, field) in cases {
        let (s, v) = d.post("/api/generate", &body);
        assert_400_naming(s, &v, field);
    }
    // Not JSON, or JSON that is not an object.
    for raw in [
        &b"videoSubject=x"[..],
        b"{\"videoSubject\": ",
        b"[1,2]",
        b"\"x\"",
        b"",
        b"\xff\xfe",
    ] {
        let (s, v) = d.request("POST", "/api/generate", "application/json", raw);
        assert_eq!(s, 400, "{:?}: {v}", String::from_utf8_lossy(raw));
        assert_eq!(v["status"], "error");
        assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
    }
    // Nothing was queued by any of that.
    let (_, list) = d.get("/api/jobs");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    d.assert_serving();
    d.submit(&json!({ "videoSubject": "good after bad" }));
}

#[test]
fn oversized_json_body_is_refused_with_413() {
    let (d, _tmp) = paused();
    // Just over 1 MiB of valid JSON.
    let big = json!({ "videoSubject": "x", "customPrompt": "a".repeat(1 << 20) }).to_string();
    assert!(big.len() > 1 << 20);
    let (s, v) = d.request("POST", "/api/generate", "application/json", big.as_bytes());
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["status"], "error");
    assert!(v["message"].as_str().unwrap().contains("1048576"), "{v}");
    // A body that lies about its length (chunked, no Content-Length) is cut off at the limit too.
    let mut conn = TcpStream::connect(d.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(conn, "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..20 {
        if write!(conn, "{:x}\r\n", chunk.len()).is_err()
            || conn.write_all(&chunk).is_err()
            || conn.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let head = String::from_utf8_lossy(&raw);
    assert!(head.starts_with("HTTP/1.1 413"), "chunked oversize: {head}");
    // Exactly at the limit is fine (it is parsed, and here valid).
    let mut at_limit = json!({ "videoSubject": "limit", "customPrompt": "b" }).to_string();
    let pad = (1 << 20) - at_limit.len();
    at_limit.push_str(&" ".repeat(pad));
    assert_eq!(at_limit.len(), 1 << 20);
    let (s, v) = d.request(
        "POST",
        "/api/generate",
        "application/json",
        at_limit.as_bytes(),
    );
    assert_eq!(s, 200, "{v}");
    d.assert_serving();
}

#[test]
fn unknown_jobs_are_404_everywhere() {
    let (d, _tmp) = paused();
    let ghost = "6f1c1d3e-8a5b-4c1e-9d2f-0a1b2c3d4e5f";
    for (m, p) in [
        ("GET", format!("/api/jobs/{ghost}")),
        ("GET", format!("/api/jobs/{ghost}/events")),
        ("GET", format!("/api/jobs/{ghost}/events?after=0&wait=5")),
        ("POST", format!("/api/jobs/{ghost}/cancel")),
        ("GET", "/api/jobs/not-a-uuid".to_string()),
        ("GET", "/api/jobs/not-a-uuid/events".to_string()),
        ("POST", "/api/jobs/not-a-uuid/cancel".to_string()),
        // The nil uuid names the daemon's own admin history, not a job.
        (
            "GET",
            "/api/jobs/00000000-0000-0000-0000-000000000000".to_string(),
        ),
        (
            "GET",
            "/api/jobs/00000000-0000-0000-0000-000000000000/events".to_string(),
        ),
    ] {
        let t = Instant::now();
        let (s, v) = d.request(m, &p, "application/json", b"");
        assert_error(s, &v, 404, "Job not found.");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{p} waited for a job that does not exist"
        );
    }
    // Unknown routes and wrong methods get the error shape too.
    let (s, v) = d.get("/api/nope");
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["status"], "error");
    let (s, v) = d.get("/api/generate");
    assert_eq!(s, 405, "{v}");
    assert_eq!(v["status"], "error");
    d.assert_serving();
}

#[test]
fn event_query_parameters_are_validated() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "params" }));
    for (q, name) in [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("after=1.5", "after"),
        ("after=", "after"),
        ("after=99999999999999999999999", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("wait=61", "wait"),
        ("wait=-5", "wait"),
        ("wait=soon", "wait"),
    ] {
        let (s, v) = d.get(&format!("/api/jobs/{id}/events?{q}"));
        assert_400_naming(s, &v, name);
    }
    for q in [
        "after=0",
        "limit=1",
        "limit=1000",
        "wait=0",
        "after=0&limit=200&wait=0",
    ] {
        let (s, v) = d.get(&format!("/api/jobs/{id}/events?{q}"));
        assert_eq!(s, 200, "{q}: {v}");
    }
    for (q, name) in [
        ("state=bogus", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let (s, v) = d.get(&format!("/api/jobs?{q}"));
        assert_400_naming(s, &v, name);
    }
    d.assert_serving();
}

#[test]
fn event_pages_follow_after_and_limit() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "paging" }));
    d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    let all = d.events(&id);
    assert_eq!(all.len(), 3);
    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().unwrap()).collect();

    let (_, p1) = d.get(&format!("/api/jobs/{id}/events?limit=1"));
    assert_eq!(p1["events"].as_array().unwrap().len(), 1);
    assert_eq!(p1["events"][0]["id"], ids[0]);
    assert_eq!(p1["lastEventId"], ids[0]);
    assert_eq!(p1["more"], true);
    assert_eq!(p1["state"], "cancelled");

    let (_, p2) = d.get(&format!("/api/jobs/{id}/events?after={}&limit=2", ids[0]));
    let got: Vec<u64> = p2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[1..]);
    assert_eq!(p2["more"], false);
    assert_eq!(p2["lastEventId"], ids[2]);

    // After the last event: an empty page that still tells the state and the last id.
    let (_, p3) = d.get(&format!("/api/jobs/{id}/events?after={}", ids[2]));
    assert_eq!(p3["events"], json!([]));
    assert_eq!(p3["more"], false);
    assert_eq!(p3["lastEventId"], ids[2]);
    assert_eq!(p3["state"], "cancelled");
    // `after` beyond anything stored is not an error.
    let (s, p4) = d.get(&format!("/api/jobs/{id}/events?after={}", ids[2] + 1000));
    assert_eq!(s, 200);
    assert_eq!(p4["events"], json!([]));
    // Another job's events never leak into this job's pages.
    let other = d.submit(&json!({ "videoSubject": "other" }));
    let (_, p5) = d.get(&format!("/api/jobs/{id}/events?after={}", ids[2]));
    assert_eq!(p5["events"], json!([]));
    assert_eq!(d.events(&other).len(), 1);
}

#[test]
fn paused_daemon_keeps_jobs_queued() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "waiting" }));
    // A 1 s long poll that comes back empty proves nothing happened to the job meanwhile.
    let after = d.events(&id)[0]["id"].as_u64().unwrap();
    let (s, v) = d.get(&format!("/api/jobs/{id}/events?after={after}&wait=1"));
    assert_eq!(s, 200);
    assert_eq!(v["events"], json!([]), "{v}");
    assert_eq!(v["state"], "queued");
    let job = d.job(&id);
    assert_eq!(job["state"], "queued");
    assert_eq!(job["startedAt"], Value::Null);
    assert_eq!(types(&d.events(&id)), ["queued"]);
    let (_, h) = d.get("/healthz");
    assert_eq!(h["jobs"]["queued"], 1, "{h}");
    assert_eq!(h["jobs"]["running"], 0, "{h}");
}

#[test]
fn cancel_of_queued_job_ends_it_without_running() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "never runs" }));
    let (s, v) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["message"], "Cancellation requested.");
    let events = d.events(&id);
    assert_eq!(types(&events), ["queued", "cancel_requested", "cancelled"]);
    assert_eq!(events[2]["message"], "Job cancelled before execution.");
    let job = d.job(&id);
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["cancelRequested"], true);
    assert_eq!(job["startedAt"], Value::Null);
    assert!(
        is_iso8601_utc(job["completedAt"].as_str().unwrap()),
        "{job}"
    );

    // Cancelling a finished job is a 200 no-op: no new event.
    let (s, v) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Cancellation requested.");
    assert_eq!(d.events(&id).len(), 3);
    assert_eq!(d.job(&id)["state"], "cancelled");
}

#[test]
fn cancel_active_takes_the_newest_queued_job_then_404s() {
    let (d, _tmp) = paused();
    let (s, v) = d.post("/api/cancel", &json!({}));
    assert_error(s, &v, 404, "No active job found.");
    let a = d.submit(&json!({ "videoSubject": "older" }));
    let b = d.submit(&json!({ "videoSubject": "newer" }));
    let (s, v) = d.post("/api/cancel", &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Cancellation requested.");
    assert_eq!(v["jobId"], b.as_str());
    assert_eq!(d.job(&b)["state"], "cancelled");
    assert_eq!(d.job(&a)["state"], "queued");
    let (s, v) = d.post("/api/cancel", &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobId"], a.as_str());
    assert_eq!(
        types(&d.events(&a)),
        ["queued", "cancel_requested", "cancelled"]
    );
    let (s, v) = d.post("/api/cancel", &json!({}));
    assert_error(s, &v, 404, "No active job found.");
}

#[test]
fn jobs_are_listed_newest_first_and_by_state() {
    let (d, _tmp) = paused();
    let ids: Vec<String> = (0..4)
        .map(|i| d.submit(&json!({ "videoSubject": format!("job {i}") })))
        .collect();
    d.post(&format!("/api/jobs/{}/cancel", ids[1]), &json!({}));
    let listed = |q: &str| -> Vec<String> {
        let (s, v) = d.get(&format!("/api/jobs{q}"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "success");
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    let rev: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed(""), rev);
    assert_eq!(listed("?limit=2"), rev[..2]);
    assert_eq!(listed("?state=cancelled"), [ids[1].clone()]);
    assert_eq!(
        listed("?state=queued"),
        [ids[3].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(listed("?state=queued&limit=1"), [ids[3].clone()]);
    assert!(listed("?state=running").is_empty());
    assert!(listed("?state=completed").is_empty());
    assert!(listed("?state=failed").is_empty());
    // Each listed job has the job JSON's shape.
    let (_, v) = d.get("/api/jobs?limit=1");
    let j = &v["jobs"][0];
    for k in [
        "id",
        "state",
        "cancelRequested",
        "resultPath",
        "errorMessage",
        "createdAt",
        "startedAt",
        "completedAt",
    ] {
        assert!(j.get(k).is_some(), "listed job lacks {k}: {j}");
    }
}

#[test]
fn models_fall_back_when_ollama_is_unreachable() {
    let (d, _tmp) = Daemon::start(&offline_config("model = \"tiny:1b\"\n"), &["--paused"]);
    let (s, v) = d.get("/api/models");
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({
            "status": "error",
            "message": "Could not fetch Ollama models. Is Ollama running?",
            "models": ["tiny:1b"],
            "default": "tiny:1b",
        })
    );
}

/// A one-shot fake Ollama: answers every connection with `body` until the test ends.
fn fake_ollama(body: &'static str) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn models_come_from_ollama_tags() {
    let ollama =
        fake_ollama(r#"{"models":[{"name":"llama3.1:8b","size":1},{"name":"qwen2.5:0.5b"}]}"#);
    let cfg = format!("[llm]\nollama_base_url = \"http://{ollama}\"\nmodel = \"llama3.1:8b\"\n");
    let (d, _tmp) = Daemon::start(&cfg, &["--paused"]);
    let (s, v) = d.get("/api/models");
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({ "status": "success", "models": ["llama3.1:8b", "qwen2.5:0.5b"], "default": "llama3.1:8b" })
    );
}

fn multipart(files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----reelsmithTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (field, name, data) in files {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: audio/mpeg\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn dir_names(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn song_uploads_replace_the_library_with_safe_names() {
    let (d, tmp) = Daemon::start(
        &offline_config("[server]\nmax_upload_bytes = 4096\n"),
        &["--paused"],
    );
    let songs = d.state_dir().join("songs");

    // Not multipart at all, or multipart without a `songs` file.
    let (s, v) = d.request("POST", "/api/upload-songs", "application/json", b"{}");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("No files uploaded."),
        "{v}"
    );
    let (ct, body) = multipart(&[("other", "a.mp3", b"ID3")]);
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_error(s, &v, 400, "No files uploaded.");
    let (ct, body) = multipart(&[
        ("songs", "notes.txt", b"hello"),
        ("songs", "cover.jpg", b"\xff\xd8"),
    ]);
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_error(s, &v, 400, "No MP3 files found.");

    // Two songs, one with a path-traversal name and one with a Windows path.
    let (ct, body) = multipart(&[
        ("songs", "../../../escape.mp3", b"ID3-one"),
        ("songs", "..\\..\\win.MP3", b"ID3-two"),
        ("songs", "readme.txt", b"skip me"),
    ]);
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["message"], "Uploaded 2 song(s).");
    assert_eq!(dir_names(&songs), ["escape.mp3", "win.MP3"]);
    assert_eq!(std::fs::read(songs.join("escape.mp3")).unwrap(), b"ID3-one");
    // Nothing landed outside the library.
    assert!(!tmp.path().join("escape.mp3").exists());
    assert!(!d.state_dir().join("escape.mp3").exists());
    assert!(!tmp.path().parent().unwrap().join("escape.mp3").exists());

    // Over the configured upload limit: 413, and the old library is untouched.
    let big = vec![b'x'; 8192];
    let (ct, body) = multipart(&[("songs", "huge.mp3", &big)]);
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(dir_names(&songs), ["escape.mp3", "win.MP3"]);

    // A new upload replaces the library.
    let (ct, body) = multipart(&[("songs", "fresh.mp3", b"ID3-new")]);
    let (s, v) = d.request("POST", "/api/upload-songs", &ct, &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Uploaded 1 song(s).");
    assert_eq!(dir_names(&songs), ["fresh.mp3"]);
    // No staging folder left behind.
    let leftovers: Vec<String> = dir_names(&d.state_dir())
        .into_iter()
        .filter(|n| n.starts_with(".songs-upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    d.assert_serving();
}

#[test]
fn cors_preflight_and_allow_origin() {
    let (d, _tmp) = paused();
    let (s, head, _) = http_full(
        d.addr,
        "OPTIONS",
        "/api/generate",
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    );
    assert!(s == 204 || s == 200, "preflight status {s}");
    let h = head.to_ascii_lowercase();
    // The default allows loopback pages (issue 10, item 13): the allowed origin is echoed.
    assert!(
        h.contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    assert!(h.contains("vary: origin"), "{head}");
    assert!(
        h.contains("access-control-allow-methods:") && h.contains("post"),
        "{head}"
    );
    assert!(
        h.contains("access-control-allow-headers: content-type"),
        "{head}"
    );
    // Ordinary answers, errors included, carry the header too.
    let (_, head, _) = http_full(
        d.addr,
        "GET",
        "/api/jobs",
        &[("Origin", "http://localhost:3000")],
        b"",
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    let (s, head, _) = http_full(
        d.addr,
        "GET",
        "/api/jobs/nope",
        &[("Origin", "http://localhost:3000")],
        b"",
    );
    assert_eq!(s, 404);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );

    // A configured origin is sent as configured.
    let (d2, _t2) = Daemon::start(
        &offline_config("[server]\ncors_origin = \"http://studio.example\"\n"),
        &["--paused"],
    );
    let (_, head, _) = http_full(d2.addr, "GET", "/healthz", &[], b"");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://studio.example"),
        "{head}"
    );
}

#[test]
fn healthz_reports_counts_and_last_id() {
    let (d, _tmp) = paused();
    let (s, v) = d.get("/healthz");
    assert_eq!(s, 200, "{v}");
    assert!(v["status"] == "ok" || v["status"] == "degraded", "{v}");
    assert_eq!(v["lastEventId"], 0, "{v}");
    let id = d.submit(&json!({ "videoSubject": "h" }));
    d.submit(&json!({ "videoSubject": "h2" }));
    d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    let (_, v) = d.get("/healthz");
    assert_eq!(v["jobs"]["queued"], 1, "{v}");
    assert_eq!(v["jobs"]["cancelled"], 1, "{v}");
    assert_eq!(v["lastEventId"], 4, "{v}");
}

#[test]
fn long_poll_returns_soon_after_an_append() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "wake me" }));
    let first = d.events(&id)[0]["id"].as_u64().unwrap();
    let addr = d.addr;
    let path = format!("/api/jobs/{id}/events?after={first}&wait=10");
    let waiter = std::thread::spawn(move || {
        let (s, body) = http(addr, "GET", &path, &[], b"");
        (
            s,
            serde_json::from_slice::<Value>(&body).unwrap(),
            Instant::now(),
        )
    });
    // Let the waiter park first: it is parked once a 300 ms gap passes with it unanswered.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "the long poll answered before any event"
    );
    let t0 = Instant::now();
    let (s, _) = d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    let acked = Instant::now();
    assert_eq!(s, 200);
    let (s, v, answered) = waiter.join().unwrap();
    assert_eq!(s, 200, "{v}");
    let wake = answered.saturating_duration_since(t0);
    eprintln!(
        "long-poll wake-up: {:?} after the cancel was sent ({:?} after its 200)",
        wake,
        answered.saturating_duration_since(acked)
    );
    assert!(
        wake < Duration::from_secs(2),
        "long poll answered {wake:?} after the append"
    );
    let evs = v["events"].as_array().unwrap();
    assert!(!evs.is_empty(), "{v}");
    assert_eq!(evs[0]["type"], "cancel_requested");
    assert!(evs.iter().all(|e| e["id"].as_u64().unwrap() > first));
}

#[test]
fn long_poll_times_out_with_an_empty_page() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "quiet" }));
    let last = d.job(&id)["lastEventId"].as_u64().unwrap();
    let t = Instant::now();
    let (s, v) = d.get(&format!("/api/jobs/{id}/events?after={last}&wait=1"));
    let took = t.elapsed();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["state"], "queued");
    assert_eq!(v["lastEventId"], last);
    assert!(
        took >= Duration::from_millis(900),
        "returned after {took:?}, before the wait ended"
    );
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    // Events already there: answered at once, whatever the wait.
    let t = Instant::now();
    let (_, v) = d.get(&format!("/api/jobs/{id}/events?after=0&wait=30"));
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert!(t.elapsed() < Duration::from_secs(1));
    // A terminal job: answered at once even with nothing new.
    d.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    let end = d.job(&id)["lastEventId"].as_u64().unwrap();
    let t = Instant::now();
    let (_, v) = d.get(&format!("/api/jobs/{id}/events?after={end}&wait=30"));
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["state"], "cancelled");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a finished job's long poll waited {:?}",
        t.elapsed()
    );
}

#[test]
fn daemon_keeps_serving_after_malformed_http() {
    let (d, _tmp) = paused();
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02\x03 nonsense\r\n\r\n",
        b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: banana\r\n\r\n",
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"videoSub", // then hang up
        b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /api/jobs?limit=%ZZ&state=%00 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /api/jobs/%2e%2e%2f%2e%2e/events?after=%31 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ];
    for g in garbage {
        let mut c = TcpStream::connect(d.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(g);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.starts_with("HTTP/1.1 5"),
            "server error for {:?}: {text}",
            String::from_utf8_lossy(g)
        );
    }
    // A connection that opens and says nothing does not block others.
    let _idle = TcpStream::connect(d.addr).unwrap();
    d.assert_serving();
    d.submit(&json!({ "videoSubject": "after garbage" }));
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let (d, _tmp) = paused();
    let id = d.submit(&json!({ "videoSubject": "keep-alive" }));
    let mut c = TcpStream::connect(d.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    for _ in 0..20 {
        write!(
            c,
            "GET /api/jobs/{id}/events?after=0 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        // Read one response: headers, then Content-Length bytes.
        buf.clear();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
    }
}

// ---- With the media pipeline (real espeak-ng + ffmpeg; tiny renders) ----

/// Whether this machine has the tools the real pipeline needs.

#[test]
fn cancel_active_prefers_the_running_job_and_stops_it() {
    require_media_tools();
    let (d, _tmp) = Daemon::start(&offline_config(SMALL_RENDER), &[]);
    let long = d.submit(&json!({ "videoSubject": "long one", "script": long_script(200) }));
    d.wait_for_state(&long, &["running"], Duration::from_secs(60));
    // Cancel while its tools run (espeak-ng, then ffmpeg).
    d.wait_for_event(&long, Duration::from_secs(60), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Generating voiceover with"))
    });
    let newer = d.submit(&json!({ "videoSubject": "queued behind" }));
    assert_eq!(d.job(&newer)["state"], "queued");
    let t = Instant::now();
    let (s, v) = d.post("/api/cancel", &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["jobId"],
        long.as_str(),
        "POST /api/cancel must pick the running job"
    );
    let job = d.wait_for_state(&long, &["cancelled"], Duration::from_secs(20));
    eprintln!("running job cancelled in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        t.elapsed()
    );
    assert_eq!(job["cancelRequested"], true);
    // The cancel killed the job's tools (every one names a file in the job's folder).
    let alive = processes_mentioning(&long);
    assert!(
        alive.is_empty(),
        "tools of a cancelled job still run: {alive:?}"
    );
    let evs = d.events(&long);
    let ty = types(&evs);
    assert_eq!(&ty[..2], ["queued", "running"]);
    let cr = ty
        .iter()
        .position(|t| t == "cancel_requested")
        .expect("cancel_requested");
    assert_eq!(ty.last().unwrap(), "cancelled", "{:?}", messages(&evs));
    assert!(cr < ty.len() - 1);
    assert_eq!(ty.iter().filter(|t| *t == "cancelled").count(), 1);
    // Then the queue moves on: the newer job starts (and is cancelled by us to end the test).
    d.wait_for_state(
        &newer,
        &["running", "completed", "failed"],
        Duration::from_secs(30),
    );
    d.post(&format!("/api/jobs/{newer}/cancel"), &json!({}));
    d.wait_for_state(
        &newer,
        &["cancelled", "completed", "failed"],
        Duration::from_secs(30),
    );
}
