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
