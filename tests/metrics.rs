//! Black-box test of `GET /metrics`: one real job through the real daemon (a small real render,
//! Pexels unreachable so the footage stage retries and falls back, a webhook to a receiver on
//! 127.0.0.1), then the scrape parsed with a real parser of the text format and checked against what
//! the job and the requests did.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::json;

/// A receiver that answers every request 200 and counts them.
fn receiver() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(10) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

fn scrape(d: &Daemon) -> (String, Vec<Sample>) {
    let (s, head, body) = http_full(d.addr, "GET", "/metrics", &[], b"");
    assert_eq!(s, 200);
    let text = String::from_utf8(body).unwrap();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    (head.to_ascii_lowercase(), parsed.samples)
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// The buckets of the histogram `name` with `labels` (cumulative counts, by upper bound).
fn buckets(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    let Metric::Histogram(h) = &found[0].value else {
        panic!("{name} is not a histogram")
    };
    let mut out: Vec<(f64, f64)> = h.iter().map(|b| (b.less_than, b.count)).collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Cumulative: never decreasing, ending at +Inf.
    assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "{name}: {out:?}");
    assert_eq!(out.last().map(|b| b.0), Some(f64::INFINITY), "{name}");
    out
}

fn total(b: &[(f64, f64)]) -> f64 {
    b.last().map(|x| x.1).unwrap_or(0.0)
}

#[test]
fn metrics_describe_a_real_job_its_commits_requests_stages_providers_and_webhook() {
    require_media_tools();
    let (hook, hits) = receiver();
    // Nothing listens here: Pexels is unreachable, retried once, then generated footage stands in.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = offline_config(&format!(
        r#"
[render]
width = 180
height = 320
fps = 15
preset = "ultrafast"
crf = 30
[footage]
provider = "pexels"
pexels_base_url = "http://{closed}"
retries = 1
fallback = true
clips = 2
seconds_per_clip = 2.0
"#
    ));
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_env(
        tmp.path(),
        &cfg,
        &[],
        &[("PEXELS_API_KEY", "pexels-key-for-metrics")],
    );
    let (_, fresh) = scrape(&d);
    assert_eq!(value(&fresh, "reelsmith_events_appended_total", &[]), 0.0);

    let job = d.submit(&json!({
        "videoSubject": "Octopus hearts",
        "script": "Octopuses have three hearts. Two of them pump blood to the gills.",
        "webhookUrl": format!("http://{hook}/done"),
    }));
    let done = d.wait_for_state(&job, &["completed", "failed"], Duration::from_secs(300));
    assert_eq!(done["state"], "completed", "{done}\n{}", d.logs());
    hits.recv_timeout(Duration::from_secs(30))
        .expect("webhook delivered");
    d.wait_for_event(&job, Duration::from_secs(20), |e| {
        e["payload"]["outcome"] == "delivered"
    });
    let (s, _) = d.get("/no/such/route");
    assert_eq!(s, 404);

    let (head, m) = scrape(&d);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    // Jobs by state and the queue, from the views.
    assert_eq!(value(&m, "reelsmith_jobs", &[("state", "completed")]), 1.0);
    assert_eq!(value(&m, "reelsmith_jobs", &[("state", "queued")]), 0.0);
    assert_eq!(value(&m, "reelsmith_queue_depth", &[]), 0.0);
    // Every committed event is counted once, and the commits add up.
    let (_, health) = d.get("/healthz");
    let appended = value(&m, "reelsmith_events_appended_total", &[]);
    assert_eq!(appended, health["lastEventId"].as_f64().unwrap());
    assert_eq!(appended as usize, d.events(&job).len());
    let commits = value(&m, "reelsmith_journal_commits_total", &[]);
    assert!(commits >= 1.0 && commits <= appended, "{commits} commits");
    let sizes = buckets(&m, "reelsmith_journal_commit_events", &[]);
    assert_eq!(total(&sizes), commits);
    assert_eq!(
        value(&m, "reelsmith_journal_commit_events_sum", &[]),
        appended
    );
    assert_eq!(
        total(&buckets(&m, "reelsmith_journal_commit_seconds", &[])),
        commits
    );
    assert_eq!(
        total(&buckets(&m, "reelsmith_journal_commit_appends", &[])),
        commits
    );
    // HTTP by route template and status, with latency.
    let generate = [("route", "/api/generate"), ("method", "POST")];
    assert_eq!(
        value(
            &m,
            "reelsmith_http_requests_total",
            &[generate[0], generate[1], ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        total(&buckets(&m, "reelsmith_http_request_seconds", &generate)),
        1.0
    );
    assert!(
        value(
            &m,
            "reelsmith_http_requests_total",
            &[
                ("route", "/api/jobs/:id/events"),
                ("method", "GET"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &m,
            "reelsmith_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    // Each stage that ran, once; the render's speed.
    for stage in [
        "script",
        "footage",
        "voice",
        "subtitles",
        "render",
        "metadata",
    ] {
        let b = buckets(&m, "reelsmith_stage_seconds", &[("stage", stage)]);
        assert_eq!(total(&b), 1.0, "{stage}");
    }
    assert_eq!(
        total(&buckets(&m, "reelsmith_render_speed_ratio", &[])),
        1.0
    );
    assert!(value(&m, "reelsmith_render_speed_ratio_sum", &[]) > 0.0);
    // Pexels: retried, then failed for good (the fallback stood in).
    assert!(
        value(
            &m,
            "reelsmith_provider_retries_total",
            &[("provider", "pexels")]
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "reelsmith_provider_failures_total",
            &[("provider", "pexels")]
        ) >= 1.0
    );
    // The webhook.
    assert_eq!(
        value(
            &m,
            "reelsmith_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "reelsmith_webhook_deliveries_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    let names: HashMap<&str, ()> = m.iter().map(|s| (s.metric.as_str(), ())).collect();
    assert!(
        !names.keys().any(|n| !n.starts_with("reelsmith_")),
        "{names:?}"
    );
}
