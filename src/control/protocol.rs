//! The control protocol: one JSON request per line in, one JSON reply per line out.
//!
//! A request is an object with a `cmd` string and that command's arguments; a reply is an object with
//! `"ok": true` plus the command's fields, or `{"ok": false, "error": "..."}`. Only `events` with
//! `follow` answers with several lines (one per event, then a final `end` line). Parsing never panics
//! and every refusal names what was wrong, so that a person typing at `socat` can fix the line.

use serde_json::{json, Map, Value};

use crate::event::{JobId, JobState};

/// The longest request line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest page of `jobs` and `events`.
pub const MAX_LIMIT: usize = 1000;
/// Default page of `jobs` and `events`.
pub const DEFAULT_LIMIT: usize = 200;

/// The name `events` accepts for the daemon's own history (admin events).
pub const DAEMON_JOB: &str = "daemon";

/// Every command, as the `cmd` field names it.
pub const COMMANDS: [&str; 15] = [
    "status",
    "jobs",
    "show",
    "events",
    "cancel",
    "retry",
    "pause",
    "resume",
    "concurrency",
    "drain",
    "backup",
    "purge",
    "reload",
    "ping",
    "help",
];

/// A parsed request.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Status,
    Jobs {
        state: Option<JobState>,
        limit: usize,
    },
    Show {
        job: JobId,
    },
    Events {
        /// `None`: the daemon's own (admin) history.
        job: Option<JobId>,
        after: u64,
        limit: usize,
        follow: bool,
    },
    Cancel {
        job: JobId,
    },
    Retry {
        job: JobId,
    },
    Pause,
    Resume,
    Concurrency {
        value: u32,
    },
    Drain,
    Backup {
        path: String,
    },
    /// Removes finished jobs older than this many days (retention, now).
    Purge {
        older_than_days: u32,
    },
    Reload,
    Ping,
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request is not valid JSON ({0}); send one JSON object per line, e.g. {{\"cmd\":\"status\"}}")]
    NotJson(String),
    #[error("request must be a JSON object with a \"cmd\" field, e.g. {{\"cmd\":\"status\"}}")]
    NotObject,
    #[error("request has no \"cmd\" string; commands: {}", COMMANDS.join(", "))]
    MissingCmd,
    #[error("unknown command `{0}`; commands: {list}", list = COMMANDS.join(", "))]
    UnknownCommand(String),
    #[error("`{cmd}` needs the argument \"{arg}\" ({what})")]
    MissingArgument {
        cmd: &'static str,
        arg: &'static str,
        what: &'static str,
    },
    #[error("`{cmd}`: \"{arg}\" must be {what}")]
    BadArgument {
        cmd: &'static str,
        arg: &'static str,
        what: &'static str,
    },
    #[error("request line longer than {MAX_LINE} bytes; refused")]
    TooLong,
    #[error("request line is not UTF-8")]
    NotUtf8,
}

/// Parses one request line (without its newline).
pub fn parse(line: &str) -> Result<Request, ProtocolError> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let obj = value.as_object().ok_or(ProtocolError::NotObject)?;
    let cmd = obj
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or(ProtocolError::MissingCmd)?;
    let args = Args { cmd: "", obj };
    Ok(match cmd {
        "status" => Request::Status,
        "jobs" => {
            let a = args.named("jobs");
            let state = match a.opt_str("state", "a job state")? {
                None => None,
                Some(s) => Some(JobState::parse(s).ok_or(ProtocolError::BadArgument {
                    cmd: "jobs",
                    arg: "state",
                    what: "one of queued, running, completed, failed, cancelled",
                })?),
            };
            Request::Jobs {
                state,
                limit: a.limit()?,
            }
        }
        "show" => Request::Show {
            job: args.named("show").job()?,
        },
        "events" => {
            let a = args.named("events");
            let raw = a.req_str("id", "a job id, or \"daemon\"")?;
            let job = if raw == DAEMON_JOB {
                None
            } else {
                Some(a.job()?)
            };
            let follow = a.opt_bool("follow")?.unwrap_or(false);
            if follow && job.is_none() {
                return Err(ProtocolError::BadArgument {
                    cmd: "events",
                    arg: "follow",
                    what: "false for the daemon's history (follow needs a job)",
                });
            }
            Request::Events {
                job,
                after: a.opt_u64("after", "a non-negative integer")?.unwrap_or(0),
                limit: a.limit()?,
                follow,
            }
        }
        "cancel" => Request::Cancel {
            job: args.named("cancel").job()?,
        },
        "retry" => Request::Retry {
            job: args.named("retry").job()?,
        },
        "pause" => Request::Pause,
        "resume" => Request::Resume,
        "concurrency" => {
            let a = args.named("concurrency");
            let what = "an integer between 1 and 64";
            let value = a
                .opt_u64("value", what)?
                .ok_or(ProtocolError::MissingArgument {
                    cmd: "concurrency",
                    arg: "value",
                    what,
                })?;
            if !(1..=64).contains(&value) {
                return Err(ProtocolError::BadArgument {
                    cmd: "concurrency",
                    arg: "value",
                    what,
                });
            }
            Request::Concurrency {
                value: value as u32,
            }
        }
        "drain" => Request::Drain,
        "backup" => {
            let a = args.named("backup");
            let path = a.req_str("path", "an absolute path for the new copy")?;
            if !path.starts_with('/') {
                return Err(ProtocolError::BadArgument {
                    cmd: "backup",
                    arg: "path",
                    what: "an absolute path (the daemon does not share your working directory)",
                });
            }
            Request::Backup {
                path: path.to_string(),
            }
        }
        "purge" => {
            let a = args.named("purge");
            let what = "a whole number of days (0 removes every finished job)";
            let days = a
                .present("olderThanDays")
                .ok_or(ProtocolError::MissingArgument {
                    cmd: "purge",
                    arg: "olderThanDays",
                    what,
                })?
                .as_u64()
                .filter(|d| *d <= 36_500)
                .ok_or(a.bad("olderThanDays", what))?;
            Request::Purge {
                older_than_days: days as u32,
            }
        }
        "reload" => Request::Reload,
        "ping" => Request::Ping,
        "help" => Request::Help,
        other => return Err(ProtocolError::UnknownCommand(truncate(other, 64))),
    })
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

struct Args<'a> {
    cmd: &'static str,
    obj: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    fn named(&self, cmd: &'static str) -> Args<'a> {
        Args { cmd, obj: self.obj }
    }

    fn bad(&self, arg: &'static str, what: &'static str) -> ProtocolError {
        ProtocolError::BadArgument {
            cmd: self.cmd,
            arg,
            what,
        }
    }

    fn present(&self, arg: &str) -> Option<&'a Value> {
        self.obj.get(arg).filter(|v| !v.is_null())
    }

    fn opt_str(
        &self,
        arg: &'static str,
        what: &'static str,
    ) -> Result<Option<&'a str>, ProtocolError> {
        match self.present(arg) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(arg, what)),
        }
    }

    fn req_str(&self, arg: &'static str, what: &'static str) -> Result<&'a str, ProtocolError> {
        self.opt_str(arg, what)?
            .ok_or(ProtocolError::MissingArgument {
                cmd: self.cmd,
                arg,
                what,
            })
    }

    /// A non-negative integer, also accepted as a string of digits (shell scripts quote everything).
    fn opt_u64(&self, arg: &'static str, what: &'static str) -> Result<Option<u64>, ProtocolError> {
        match self.present(arg) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| self.bad(arg, what)),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| self.bad(arg, what)),
            Some(_) => Err(self.bad(arg, what)),
        }
    }

    fn opt_bool(&self, arg: &'static str) -> Result<Option<bool>, ProtocolError> {
        match self.present(arg) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(arg, "true or false")),
        }
    }

    fn limit(&self) -> Result<usize, ProtocolError> {
        let what = "an integer between 1 and 1000";
        match self.opt_u64("limit", what)? {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
            Some(_) => Err(self.bad("limit", what)),
        }
    }

    fn job(&self) -> Result<JobId, ProtocolError> {
        let raw = self.req_str("id", "a job id")?;
        raw.trim()
            .parse()
            .map_err(|_| self.bad("id", "a job id (a UUID such as 3f2b...-...)"))
    }
}

/// `{"ok": true, ...fields}`; `fields` must be an object (anything else is put under `"result"`).
pub fn ok(fields: Value) -> Value {
    let mut out = Map::new();
    out.insert("ok".into(), Value::Bool(true));
    match fields {
        Value::Object(m) => out.extend(m),
        Value::Null => {}
        other => {
            out.insert("result".into(), other);
        }
    }
    Value::Object(out)
}

/// `{"ok": false, "error": message}`.
pub fn error(message: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": message.to_string() })
}

/// A request as the client sends it (the inverse of [`parse`]).
pub fn encode(req: &Request) -> Value {
    match req {
        Request::Status => json!({ "cmd": "status" }),
        Request::Jobs { state, limit } => {
            json!({ "cmd": "jobs", "state": state.map(|s| s.as_str()), "limit": limit })
        }
        Request::Show { job } => json!({ "cmd": "show", "id": job.to_string() }),
        Request::Events {
            job,
            after,
            limit,
            follow,
        } => json!({
            "cmd": "events",
            "id": job.map(|j| j.to_string()).unwrap_or_else(|| DAEMON_JOB.to_string()),
            "after": after,
            "limit": limit,
            "follow": follow,
        }),
        Request::Cancel { job } => json!({ "cmd": "cancel", "id": job.to_string() }),
        Request::Retry { job } => json!({ "cmd": "retry", "id": job.to_string() }),
        Request::Pause => json!({ "cmd": "pause" }),
        Request::Resume => json!({ "cmd": "resume" }),
        Request::Concurrency { value } => json!({ "cmd": "concurrency", "value": value }),
        Request::Drain => json!({ "cmd": "drain" }),
        Request::Backup { path } => json!({ "cmd": "backup", "path": path }),
        Request::Purge { older_than_days } => {
            json!({ "cmd": "purge", "olderThanDays": older_than_days })
        }
        Request::Reload => json!({ "cmd": "reload" }),
        Request::Ping => json!({ "cmd": "ping" }),
        Request::Help => json!({ "cmd": "help" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_round_trips_through_its_encoding() {
        let job = JobId::new();
        let all = [
            Request::Status,
            Request::Jobs {
                state: Some(JobState::Running),
                limit: 10,
            },
            Request::Jobs {
                state: None,
                limit: DEFAULT_LIMIT,
            },
            Request::Show { job },
            Request::Events {
                job: Some(job),
                after: 7,
                limit: 5,
                follow: true,
            },
            Request::Events {
                job: None,
                after: 0,
                limit: DEFAULT_LIMIT,
                follow: false,
            },
            Request::Cancel { job },
            Request::Retry { job },
            Request::Pause,
            Request::Resume,
            Request::Concurrency { value: 2 },
            Request::Drain,
            Request::Backup {
                path: "/tmp/x.redb".into(),
            },
            Request::Purge {
                older_than_days: 30,
            },
            Request::Reload,
            Request::Ping,
            Request::Help,
        ];
        for req in all {
            let line = encode(&req).to_string();
            assert_eq!(parse(&line), Ok(req), "{line}");
        }
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let cases = [
            ("{nope", "not valid JSON"),
            ("[1]", "JSON object"),
            ("{}", "\"cmd\""),
            (r#"{"cmd":"fly"}"#, "unknown command `fly`"),
            (r#"{"cmd":"show"}"#, "\"id\""),
            (r#"{"cmd":"show","id":"x"}"#, "job id"),
            (r#"{"cmd":"concurrency"}"#, "\"value\""),
            (r#"{"cmd":"concurrency","value":0}"#, "between 1 and 64"),
            (r#"{"cmd":"concurrency","value":-3}"#, "between 1 and 64"),
            (r#"{"cmd":"jobs","state":"done"}"#, "one of queued"),
            (r#"{"cmd":"jobs","limit":0}"#, "between 1 and 1000"),
            (r#"{"cmd":"backup","path":"rel.redb"}"#, "absolute"),
            (r#"{"cmd":"events","id":"daemon","follow":true}"#, "follow"),
        ];
        for (line, needle) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn numbers_may_come_as_strings() {
        assert_eq!(
            parse(r#"{"cmd":"concurrency","value":"3"}"#),
            Ok(Request::Concurrency { value: 3 })
        );
    }

    #[test]
    fn replies_carry_ok() {
        assert_eq!(ok(json!({"a": 1})), json!({"ok": true, "a": 1}));
        assert_eq!(error("boom"), json!({"ok": false, "error": "boom"}));
    }
}
