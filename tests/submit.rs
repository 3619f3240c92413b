//! Black-box tests of batch and idempotent submits: the real daemon on port 0 (paused, so jobs stay
//! queued and no media tool runs), real HTTP, and restarts on the same state directory.

mod common;

use common::*;
use serde_json::{json, Value};

fn job_count(d: &Daemon) -> usize {
    let (s, v) = d.get("/api/jobs?limit=1000");
    assert_eq!(s, 200, "{v}");
    v["jobs"].as_array().unwrap().len()
}

fn assert_400_naming(status: u16, body: &Value, needles: &[&str]) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "message does not name `{n}`: {msg}");
    }
}

#[test]
fn a_batch_queues_every_job_in_order_in_one_commit_and_survives_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(tmp.path(), &offline_config(""), &["--paused"]);
    let jobs: Vec<Value> = (0..100)
        .map(|i| json!({ "videoSubject": format!("subject {i}"), "paragraphNumber": "1" }))
        .collect();
    let (s, v) = d.post("/api/generate/batch", &json!({ "jobs": jobs }));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["message"], "100 video generations queued.");
    let ids: Vec<String> = v["jobIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 100);
    assert!(v.get("warnings").is_none(), "{v}");
    // In the requests' order, with consecutive event ids: nothing came between them.
    let mut last = None;
    for (i, id) in ids.iter().enumerate() {
        let job = d.job(id);
        assert_eq!(job["subject"], format!("subject {i}"));
        assert_eq!(job["state"], "queued");
        let first = d.events(id)[0]["id"].as_u64().unwrap();
        if let Some(prev) = last {
            assert_eq!(first, prev + 1, "job {i}");
        }
        last = Some(first);
    }
    // Durable: a kill -9 right after the answer loses nothing.
    d.kill9();
    let d = Daemon::start_in(tmp.path(), &offline_config(""), &["--paused"]);
    assert_eq!(job_count(&d), 100);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(d.job(id)["subject"], format!("subject {i}"));
    }
}

#[test]
fn a_batch_is_validated_whole_before_anything_is_queued() {
    let (d, _tmp) = Daemon::start(&offline_config(""), &["--paused"]);
    let mut jobs: Vec<Value> = (0..80)
        .map(|i| json!({ "videoSubject": format!("subject {i}") }))
        .collect();
    jobs[57]["paragraphNumber"] = json!("two");
    let (s, v) = d.post("/api/generate/batch", &json!({ "jobs": jobs }));
    assert_400_naming(s, &v, &["jobs[57]", "paragraphNumber"]);
    jobs[57] = json!({ "videoSubject": "" });
    let (s, v) = d.post("/api/generate/batch", &json!({ "jobs": jobs }));
    assert_400_naming(s, &v, &["jobs[57]", "videoSubject is required."]);
    jobs[57] = json!({ "videoSubject": "ok", "voice": "xx_404" });
    let (s, v) = d.post("/api/generate/batch", &json!({ "jobs": jobs }));
    assert_400_naming(s, &v, &["jobs[57]", "voice"]);

    let too_many: Vec<Value> = (0..101).map(|_| json!({ "videoSubject": "x" })).collect();
    let (s, v) = d.post("/api/generate/batch", &json!({ "jobs": too_many }));
    assert_400_naming(s, &v, &["jobs", "101", "at most 100"]);
    for bad in [
        json!({}),
        json!({ "jobs": [] }),
        json!({ "jobs": {"a": 1} }),
        json!([1]),
    ] {
        let (s, v) = d.post("/api/generate/batch", &bad);
        assert_400_naming(s, &v, &["jobs"]);
    }
    let (s, v) = d.request("POST", "/api/generate/batch", "application/json", b"{nope");
    assert_400_naming(s, &v, &["not valid JSON"]);
    let (s, _) = d.get("/api/generate/batch");
    assert_eq!(s, 405);
    assert_eq!(job_count(&d), 0, "a refused batch queues nothing");

    // Warnings name the job they belong to.
    let (s, v) = d.post(
        "/api/generate/batch",
        &json!({ "jobs": [{ "videoSubject": "a" }, { "videoSubject": "b", "colour": "red" }] }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["warnings"],
        json!(["jobs[1]: unknown field colour ignored; did you mean color?"])
    );
    assert_eq!(job_count(&d), 2);
}

/// POST with an `Idempotency-Key`: (status, header block, JSON body).
fn post_keyed(d: &Daemon, path: &str, key: &str, body: &str) -> (u16, String, Value) {
    let (s, head, bytes) = http_full(
        d.addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        body.as_bytes(),
    );
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
    (s, head.to_ascii_lowercase(), v)
}

fn assert_conflict(s: u16, v: &Value, key: &str) {
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains(&format!("`{key}`")),
        "{v}"
    );
}

#[test]
fn the_same_key_and_body_answer_the_same_job_even_after_a_kill_and_another_body_is_409() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(tmp.path(), &offline_config(""), &["--paused"]);
    let body = r#"{"videoSubject": "octopus hearts", "paragraphNumber": 2, "colour": "red"}"#;
    let (s, head, first) = post_keyed(&d, "/api/generate", "key-1", body);
    assert_eq!(s, 200, "{first}");
    assert!(!head.contains("idempotent-replayed"), "{head}");
    let id = first["jobId"].as_str().unwrap().to_string();
    // The same body written differently is the same body.
    let same = r#"{ "colour":"red","paragraphNumber":2,  "videoSubject":"octopus hearts" }"#;
    let (s, head, again) = post_keyed(&d, "/api/generate", "key-1", same);
    assert_eq!(s, 200, "{again}");
    assert_eq!(again, first, "the same answer, warnings included");
    assert!(head.contains("idempotent-replayed: true"), "{head}");
    assert_eq!(job_count(&d), 1);
    assert_eq!(
        d.events(&id).len(),
        2,
        "queued + the warning: nothing was added"
    );

    let (s, _, v) = post_keyed(&d, "/api/generate", "key-1", r#"{"videoSubject": "squid"}"#);
    assert_conflict(s, &v, "key-1");
    // A key is bound to its route too.
    let (s, _, v) = post_keyed(
        &d,
        "/api/generate/batch",
        "key-1",
        &format!(r#"{{"jobs":[{body}]}}"#),
    );
    assert_conflict(s, &v, "key-1");
    // Refused bodies bind nothing: the key stays free after a 400.
    let (s, _, v) = post_keyed(&d, "/api/generate", "key-2", r#"{"videoSubject": ""}"#);
    assert_eq!(s, 400, "{v}");
    for bad in ["", &"k".repeat(256), "tab\there"] {
        let (s, _, v) = post_keyed(&d, "/api/generate", bad, body);
        assert_eq!(s, 400, "{bad:?}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("Idempotency-Key"),
            "{v}"
        );
    }
    assert_eq!(job_count(&d), 1);

    // The binding is in the log: it survives a kill -9.
    d.kill9();
    let d = Daemon::start_in(tmp.path(), &offline_config(""), &["--paused"]);
    let (s, head, again) = post_keyed(&d, "/api/generate", "key-1", same);
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["jobId"], id);
    assert!(head.contains("idempotent-replayed: true"), "{head}");
    let (s, _, v) = post_keyed(&d, "/api/generate", "key-1", r#"{"videoSubject": "squid"}"#);
    assert_conflict(s, &v, "key-1");
    let (s, _, v) = post_keyed(&d, "/api/generate", "key-2", body);
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["jobId"], id);
    assert_eq!(job_count(&d), 2);
}

#[test]
fn a_keyed_batch_replays_its_job_ids_in_order_and_racing_retries_create_one_submit() {
    let (d, _tmp) = Daemon::start(&offline_config(""), &["--paused"]);
    let batch = json!({ "jobs": [{ "videoSubject": "a" }, { "videoSubject": "b" }, { "videoSubject": "c" }] })
        .to_string();
    let (s, _, first) = post_keyed(&d, "/api/generate/batch", "batch-1", &batch);
    assert_eq!(s, 200, "{first}");
    let (s, head, again) = post_keyed(&d, "/api/generate/batch", "batch-1", &batch);
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["jobIds"], first["jobIds"]);
    assert!(head.contains("idempotent-replayed: true"));
    let (s, _, v) = post_keyed(
        &d,
        "/api/generate/batch",
        "batch-1",
        &json!({ "jobs": [{ "videoSubject": "a" }] }).to_string(),
    );
    assert_conflict(s, &v, "batch-1");
    assert_eq!(job_count(&d), 3);

    // Sixteen clients retry the same submit at once: one submit is made, all get its job.
    let body = r#"{"videoSubject": "race"}"#;
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let (st, _, v) = post_keyed(&d, "/api/generate", "race-key", body);
                    (st, v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 200, "{v}");
            v["jobId"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(job_count(&d), 4);
}
