//! Black-box test of `GET /api/openapi.json`: every route the document names (and a unit test keeps
//! that equal to the routes the router serves) is called on the real daemon, for its success and its
//! documented failures, and each real answer is checked against the document: the status is
//! documented, the media type is the documented one, and JSON bodies validate against their schema
//! (JSON Schema 2020-12, with the `jsonschema` crate). Media routes are called on a real render.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

struct Checker {
    doc: Value,
    exercised: BTreeSet<(String, String)>,
}

impl Checker {
    /// Calls `method path` and checks the answer against the operation of `template`.
    fn call(
        &mut self,
        d: &Daemon,
        method: &str,
        template: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let (status, head, bytes) = http_full(d.addr, method, path, headers, body);
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let code = status.to_string();
        let response = match op["responses"].get(&code) {
            Some(r) => r,
            None if status >= 400 => op["responses"]
                .get("default")
                .unwrap_or_else(|| panic!("{method} {path}: {status} is not documented")),
            None => panic!("{method} {path}: {status} is not documented"),
        };
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let mut json_body = Value::Null;
        if let Some(content) = response.get("content").and_then(Value::as_object) {
            let media = content_type.split(';').next().unwrap_or("").trim();
            let documented = content
                .keys()
                .any(|k| k.split(';').next().unwrap_or("").trim() == media);
            assert!(
                documented,
                "{method} {path} answered {media}, documented {:?}",
                content.keys().collect::<Vec<_>>()
            );
            if media == "application/json" {
                json_body = serde_json::from_slice(&bytes).expect("a JSON body");
                let schema = &content["application/json"]["schema"];
                let errors = self.validate(schema, &json_body);
                assert!(
                    errors.is_empty(),
                    "{method} {path} -> {status}: {errors:?}\n{json_body}"
                );
            } else {
                assert!(
                    !bytes.is_empty() || method == "HEAD",
                    "{method} {path}: empty body"
                );
            }
        } else if method != "HEAD" && status != 416 && status != 204 {
            panic!("{method} {path} -> {status}: the document names no content");
        }
        self.exercised
            .insert((method.to_string(), template.to_string()));
        (status, json_body)
    }

    fn validate(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let wrapper = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let v = jsonschema::validator_for(&wrapper).expect("the schema compiles");
        v.iter_errors(instance).map(|e| e.to_string()).collect()
    }

    fn get(&mut self, d: &Daemon, template: &str, path: &str) -> (u16, Value) {
        self.call(d, "GET", template, path, &[], b"")
    }

    fn post(&mut self, d: &Daemon, template: &str, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        self.call(
            d,
            "POST",
            template,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }
}

fn socket(d: &Daemon, req: Value) -> Value {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn every_documented_route_answers_as_its_schema_says() {
    require_media_tools();
    let cfg = offline_config(SMALL_RENDER);
    let (d, _tmp) = Daemon::start(&cfg, &["--paused"]);
    let (s, doc) = d.get("/api/openapi.json");
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut c = Checker {
        doc,
        exercised: BTreeSet::new(),
    };
    c.get(&d, "/api/openapi.json", "/api/openapi.json");
    // The checker rejects what the schemas forbid (so a pass below means something).
    let answer = json!({ "$ref": "#/components/schemas/GenerateAnswer" });
    assert!(!c
        .validate(&answer, &json!({ "status": "success", "jobId": "x" }))
        .is_empty());
    let events = json!({ "$ref": "#/components/schemas/EventsAnswer" });
    let bad_event = json!({ "status": "success", "events": [{ "id": 1, "type": "nope", "level": "info",
        "message": "m", "payload": null, "timestamp": 1.0 }], "state": "queued", "lastEventId": 1, "more": false });
    assert!(!c.validate(&events, &bad_event).is_empty());
    const JOB: &str = "/api/jobs/{id}";
    const EVENTS: &str = "/api/jobs/{id}/events";
    let nobody = "00000000-0000-4000-8000-000000000001";

    // Submits (the queue is paused: nothing runs yet).
    let (s, a) = c.post(
        &d,
        "/api/generate",
        "/api/generate",
        &json!({ "videoSubject": "a", "colour": "red" }),
    );
    assert_eq!(s, 200, "{a}");
    let a = a["jobId"].as_str().unwrap().to_string();
    let (s, _) = c.post(
        &d,
        "/api/generate",
        "/api/generate",
        &json!({ "videoSubject": "" }),
    );
    assert_eq!(s, 400);
    let keyed = |body: &str| {
        http_full(
            d.addr,
            "POST",
            "/api/generate",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "oa-1"),
            ],
            body.as_bytes(),
        )
    };
    keyed(r#"{"videoSubject": "k"}"#);
    let (s, _) = c.call(
        &d,
        "POST",
        "/api/generate",
        "/api/generate",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "oa-1"),
        ],
        br#"{"videoSubject": "other"}"#,
    );
    assert_eq!(s, 409);
    let big = format!(r#"{{"videoSubject": "{}"}}"#, "x".repeat(1_100_000));
    let (s, _) = c.call(
        &d,
        "POST",
        "/api/generate",
        "/api/generate",
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    );
    assert_eq!(s, 413);
    let (s, b) = c.post(
        &d,
        "/api/generate/batch",
        "/api/generate/batch",
        &json!({ "jobs": [{ "videoSubject": "b1" }, { "videoSubject": "b2", "vioce": "x" }] }),
    );
    assert_eq!(s, 200, "{b}");
    let (s, _) = c.post(
        &d,
        "/api/generate/batch",
        "/api/generate/batch",
        &json!({ "jobs": [] }),
    );
    assert_eq!(s, 400);

    // Reads.
    let (s, _) = c.get(&d, "/api/jobs", "/api/jobs?limit=10");
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, "/api/jobs", "/api/jobs?state=bogus");
    assert_eq!(s, 400);
    let (s, _) = c.get(&d, JOB, &format!("/api/jobs/{a}"));
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, JOB, &format!("/api/jobs/{nobody}"));
    assert_eq!(s, 404);
    let (s, _) = c.get(&d, EVENTS, &format!("/api/jobs/{a}/events?after=0"));
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, EVENTS, &format!("/api/jobs/{a}/events?after=x"));
    assert_eq!(s, 400);
    let (s, _) = c.get(&d, EVENTS, &format!("/api/jobs/{nobody}/events"));
    assert_eq!(s, 404);
    let (s, _) = c.get(&d, "/api/models", "/api/models");
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, "/healthz", "/healthz");
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, "/metrics", "/metrics");
    assert_eq!(s, 200);

    // Media of a job that has not completed: 404 with the error body; HEAD too.
    for what in ["video", "thumbnail", "subtitles"] {
        let t = format!("/api/jobs/{{id}}/{what}");
        let (s, _) = c.get(&d, &t, &format!("/api/jobs/{a}/{what}"));
        assert_eq!(s, 404);
        let (s, _) = c.call(&d, "HEAD", &t, &format!("/api/jobs/{a}/{what}"), &[], b"");
        assert_eq!(s, 404);
    }

    // Songs.
    let boundary = "oaBOUNDARY";
    let mut form = Vec::new();
    write!(
        form,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"songs\"; filename=\"tune.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3fake\r\n--{boundary}--\r\n"
    )
    .unwrap();
    let ct = format!("multipart/form-data; boundary={boundary}");
    let (s, v) = c.call(
        &d,
        "POST",
        "/api/upload-songs",
        "/api/upload-songs",
        &[("Content-Type", &ct)],
        &form,
    );
    assert_eq!(s, 200, "{v}");
    let empty = format!("--{boundary}--\r\n");
    let (s, _) = c.call(
        &d,
        "POST",
        "/api/upload-songs",
        "/api/upload-songs",
        &[("Content-Type", &ct)],
        empty.as_bytes(),
    );
    assert_eq!(s, 400);

    // Cancels: one by id, then the newest queued until none is left.
    let (s, _) = c.post(
        &d,
        "/api/jobs/{id}/cancel",
        &format!("/api/jobs/{a}/cancel"),
        &json!({}),
    );
    assert_eq!(s, 200);
    let (s, _) = c.post(
        &d,
        "/api/jobs/{id}/cancel",
        &format!("/api/jobs/{nobody}/cancel"),
        &json!({}),
    );
    assert_eq!(s, 404);
    let mut cancelled = 0;
    loop {
        let (s, _) = c.post(&d, "/api/cancel", "/api/cancel", &json!({}));
        if s == 404 {
            break;
        }
        assert_eq!(s, 200);
        cancelled += 1;
        assert!(cancelled < 10);
    }
    assert_eq!(cancelled, 3, "the keyed job and the batch's two");

    // A real render for the media routes.
    let job = d.submit(&json!({ "videoSubject": "Octopus hearts", "script": "Octopuses have three hearts. They are clever." }));
    assert_eq!(socket(&d, json!({ "cmd": "resume" }))["ok"], true);
    let done = d.wait_for_state(&job, &["completed", "failed"], Duration::from_secs(300));
    assert_eq!(done["state"], "completed", "{done}");
    let (s, _) = c.get(&d, JOB, &format!("/api/jobs/{job}"));
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, EVENTS, &format!("/api/jobs/{job}/events?limit=1000"));
    assert_eq!(s, 200);
    let video = "/api/jobs/{id}/video";
    let (s, _) = c.get(&d, video, &format!("/api/jobs/{job}/video"));
    assert_eq!(s, 200);
    let (s, _) = c.call(
        &d,
        "GET",
        video,
        &format!("/api/jobs/{job}/video"),
        &[("Range", "bytes=0-99")],
        b"",
    );
    assert_eq!(s, 206);
    let (s, _) = c.call(
        &d,
        "GET",
        video,
        &format!("/api/jobs/{job}/video"),
        &[("Range", "bytes=999999999-")],
        b"",
    );
    assert_eq!(s, 416);
    let (s, _) = c.call(
        &d,
        "HEAD",
        video,
        &format!("/api/jobs/{job}/video"),
        &[],
        b"",
    );
    assert_eq!(s, 200);
    let thumb = "/api/jobs/{id}/thumbnail";
    let (s, _) = c.get(&d, thumb, &format!("/api/jobs/{job}/thumbnail"));
    assert_eq!(s, 200);
    let (s, _) = c.call(
        &d,
        "HEAD",
        thumb,
        &format!("/api/jobs/{job}/thumbnail"),
        &[],
        b"",
    );
    assert_eq!(s, 200);
    let subs = "/api/jobs/{id}/subtitles";
    let (s, _) = c.get(&d, subs, &format!("/api/jobs/{job}/subtitles"));
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, subs, &format!("/api/jobs/{job}/subtitles?format=vtt"));
    assert_eq!(s, 200);
    let (s, _) = c.get(&d, subs, &format!("/api/jobs/{job}/subtitles?format=ass"));
    assert_eq!(s, 400);
    let (s, _) = c.call(
        &d,
        "HEAD",
        subs,
        &format!("/api/jobs/{job}/subtitles"),
        &[],
        b"",
    );
    assert_eq!(s, 200);

    // The event streams: the finished job's stream ends by itself after its terminal event.
    let stream = "/api/jobs/{id}/events/stream";
    let (s, _) = c.get(&d, stream, &format!("/api/jobs/{job}/events/stream"));
    assert_eq!(s, 200);
    let last = d.job(&job)["lastEventId"].as_u64().unwrap().to_string();
    let (s, _) = c.call(
        &d,
        "GET",
        stream,
        &format!("/api/jobs/{job}/events/stream"),
        &[("Last-Event-ID", &last)],
        b"",
    );
    assert_eq!(s, 204);
    let (s, _) = c.get(
        &d,
        stream,
        &format!("/api/jobs/{job}/events/stream?after=x"),
    );
    assert_eq!(s, 400);
    let (s, _) = c.get(&d, stream, &format!("/api/jobs/{nobody}/events/stream"));
    assert_eq!(s, 404);
    // The daemon-wide stream never ends: its error through the checker, its success head by hand.
    let all = "/api/events/stream";
    let (s, _) = c.get(&d, all, "/api/events/stream?type=bogus");
    assert_eq!(s, 400);
    let mut sock = std::net::TcpStream::connect(d.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        sock,
        "GET /api/events/stream HTTP/1.1\r\nHost: {}\r\n\r\n",
        d.addr
    )
    .unwrap();
    let mut head = String::new();
    let mut r = BufReader::new(sock);
    while r.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let documented = &c.doc["paths"][all]["get"]["responses"]["200"]["content"];
    assert!(documented.get("text/event-stream").is_some());
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );

    // Retry: a cancelled job is queued again (and cancelled at once), a completed one is refused.
    let retry = "/api/jobs/{id}/retry";
    let (s, v) = c.post(&d, retry, &format!("/api/jobs/{a}/retry"), &json!({}));
    assert_eq!(s, 200, "{v}");
    let (s, _) = c.post(
        &d,
        "/api/jobs/{id}/cancel",
        &format!("/api/jobs/{a}/cancel"),
        &json!({}),
    );
    assert_eq!(s, 200);
    let (s, _) = c.post(&d, retry, &format!("/api/jobs/{job}/retry"), &json!({}));
    assert_eq!(s, 400);
    let (s, _) = c.post(&d, retry, &format!("/api/jobs/{nobody}/retry"), &json!({}));
    assert_eq!(s, 404);
    // The page's session (this daemon has no token: no cookie, but the answer is as documented).
    for method in ["POST", "DELETE"] {
        let (s, v) = c.call(&d, method, "/api/session", "/api/session", &[], b"");
        assert_eq!(s, 200, "{method}: {v}");
    }
    // The page and its assets.
    let (s, _) = c.get(&d, "/", "/");
    assert_eq!(s, 200);
    for asset in ["app.js", "app.css"] {
        let (s, _) = c.get(&d, "/assets/{name}", &format!("/assets/{asset}"));
        assert_eq!(s, 200);
    }
    let (s, _) = c.get(&d, "/assets/{name}", "/assets/nope.js");
    assert_eq!(s, 404);

    // Every documented operation was called and checked.
    let documented: BTreeSet<(String, String)> = c.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_ascii_uppercase(), p.clone()))
        })
        .collect();
    let missing: Vec<_> = documented.difference(&c.exercised).collect();
    assert!(missing.is_empty(), "not exercised: {missing:?}");
    // And a path the document does not name is not served.
    let (s, _) = d.get("/api/not-documented");
    assert_eq!(s, 404);
}
