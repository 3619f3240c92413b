//! The readable forms of the daemon's replies for `reelsmith ctl`: the status sheet, the jobs table,
//! one job, one event per line. Pure functions of the reply JSON; a missing field renders as `?` or
//! `-`, never as a panic.

use serde_json::Value;

use super::protocol::Request;
use crate::event::iso8601;

/// The readable form of a successful reply.
pub fn render(req: &Request, v: &Value) -> String {
    match req {
        Request::Status => render_status(v),
        Request::Jobs { .. } => render_jobs(v["jobs"].as_array().map(Vec::as_slice).unwrap_or(&[])),
        Request::Show { .. } => render_job(&v["job"]),
        Request::Backup { .. } => format!(
            "Backup written: {} ({} events, {})\n",
            v["path"].as_str().unwrap_or("?"),
            v["events"].as_u64().unwrap_or(0),
            bytes(v["bytes"].as_u64().unwrap_or(0))
        ),
        Request::Reload => {
            let mut s = format!("{}\n", v["message"].as_str().unwrap_or("Config reloaded."));
            if let Some(note) = v["note"].as_str() {
                s.push_str(&format!("note: {note}\n"));
            }
            s
        }
        Request::Ping => "pong\n".to_string(),
        _ => format!("{}\n", v["message"].as_str().unwrap_or("ok")),
    }
}

fn render_status(v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let queue = if v["draining"] == Value::Bool(true) {
        "draining"
    } else if v["paused"] == Value::Bool(true) {
        "paused"
    } else {
        "taking jobs"
    };
    let mut rows = vec![
        ("version", v["version"].as_str().unwrap_or("?").to_string()),
        ("uptime", duration(n("uptimeSeconds"))),
        (
            "queue",
            format!("{queue}, concurrency {}", n("concurrency")),
        ),
        (
            "jobs",
            format!(
                "{} queued, {} running, {} finished ({} completed, {} failed, {} cancelled)",
                n("queued"),
                n("running"),
                n("finished"),
                n("completed"),
                n("failed"),
                n("cancelled")
            ),
        ),
        ("last event", n("lastEventId").to_string()),
        ("database", bytes(n("databaseBytes"))),
        (
            "free disk",
            match v["freeDiskBytes"].as_u64() {
                Some(b) => bytes(b),
                None => "unknown".into(),
            },
        ),
        (
            "state dir",
            v["stateDir"].as_str().unwrap_or("?").to_string(),
        ),
        ("socket", v["socket"].as_str().unwrap_or("?").to_string()),
    ];
    if let Some(c) = v["configPath"].as_str() {
        rows.push(("config", c.to_string()));
    }
    rows.iter()
        .map(|(k, val)| format!("{:<11} {val}\n", format!("{k}:")))
        .collect()
}

fn render_jobs(jobs: &[Value]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_string();
    }
    let mut s = format!(
        "{:<36}  {:<9}  {:>3}  {:<24}  {:<10}  {}\n",
        "ID", "STATE", "TRY", "CREATED", "STAGE", "SUBJECT"
    );
    for j in jobs {
        let stage = match (j["stage"].as_str(), j["progress"].as_f64()) {
            (Some(st), Some(p)) if j["state"] == "running" => format!("{st} {:.0}%", p * 100.0),
            (Some(st), _) if j["state"] == "running" => st.to_string(),
            _ => "-".to_string(),
        };
        s.push_str(&format!(
            "{:<36}  {:<9}  {:>3}  {:<24}  {:<10}  {}\n",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            j["attempt"].as_u64().unwrap_or(0),
            j["createdAt"].as_str().unwrap_or("-"),
            stage,
            clip(j["subject"].as_str().unwrap_or(""), 48),
        ));
    }
    s
}

fn render_job(j: &Value) -> String {
    let keys = [
        ("id", "id"),
        ("state", "state"),
        ("subject", "subject"),
        ("attempt", "attempt"),
        ("maxAttempts", "max attempts"),
        ("cancelRequested", "cancel req."),
        ("stage", "stage"),
        ("progress", "progress"),
        ("createdAt", "created"),
        ("startedAt", "started"),
        ("completedAt", "completed"),
        ("resultPath", "result"),
        ("errorMessage", "error"),
        ("lastEventId", "last event"),
    ];
    keys.iter()
        .filter(|(k, _)| !j[*k].is_null())
        .map(|(k, label)| {
            let v = match &j[*k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{:<13} {v}\n", format!("{label}:"))
        })
        .collect()
}

/// `#12  2024-03-15T10:50:45.789Z  info     log               Rendering ...`
pub fn event_line(ev: &Value) -> String {
    let ts = ev["timestamp"]
        .as_f64()
        .map(|t| iso8601((t * 1000.0).round() as i64))
        .unwrap_or_default();
    let mut line = format!(
        "#{:<6} {}  {:<7}  {:<16}  {}",
        ev["id"].as_u64().unwrap_or(0),
        ts,
        ev["level"].as_str().unwrap_or("?"),
        ev["type"].as_str().unwrap_or("?"),
        ev["message"].as_str().unwrap_or(""),
    );
    if let Some(p) = ev["payload"].as_object().filter(|p| !p.is_empty()) {
        // The full payload is one `--json` away; keep the line readable.
        line.push_str(&format!(
            "  {}",
            clip(&Value::Object(p.clone()).to_string(), 160)
        ));
    }
    line
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3_723), "1h 2m 3s");
    }
}
