//! The `reelsmith ctl` command line: clap subcommands, each of which builds one
//! [`protocol::Request`](super::protocol::Request).
//!
//! Every argument is checked by its clap value parser (job ids, states, ranges, paths), so a command
//! line that parses is a request the daemon's own parser accepts; the one rule clap cannot say
//! (`--follow` needs a job) is checked by [`CtlCommand::request`].

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::protocol::{Request, DAEMON_JOB, DEFAULT_LIMIT, MAX_LIMIT};
use crate::event::{JobId, JobState};

/// The help and usage text of `ctl` (set on the `ctl` subcommand in `crate::cli`). Lower-case
/// headings: it is also printed after every command-line error.
pub const HELP_TEMPLATE: &str = "\
usage: {usage}

{about}

commands:
{subcommands}

options:
{options}";

/// `ctl`'s own flags and its command. `--socket` and `--json` may come before or after the command.
#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    /// Control socket path (default: as the daemon computes it from the config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON replies instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// One admin command.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum CtlCommand {
    /// Daemon version, uptime, queue, counts, disk.
    Status,
    /// Newest jobs first.
    Jobs {
        /// Only jobs in this state: queued, running, completed, failed or cancelled.
        #[arg(long, value_name = "S", value_parser = job_state)]
        state: Option<JobState>,
        /// At most this many jobs (1..1000).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT as u64,
              value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT as u64))]
        limit: u64,
    },
    /// One job.
    Show {
        #[arg(value_name = "ID", value_parser = job_id)]
        job: JobId,
    },
    /// A job's events (`events daemon`: the daemon's admin events: who paused, drained, ...).
    Events {
        /// A job id, or `daemon`.
        #[arg(value_name = "ID", value_parser = events_of)]
        of: EventsOf,
        /// Only events after this id.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: u64,
        /// Events per page (1..1000); every page is fetched.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT as u64,
              value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT as u64))]
        limit: u64,
        /// Stream the job's events until it ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a queued or running job.
    Cancel {
        #[arg(value_name = "ID", value_parser = job_id)]
        job: JobId,
    },
    /// Put a failed or cancelled job back in the queue.
    Retry {
        #[arg(value_name = "ID", value_parser = job_id)]
        job: JobId,
    },
    /// Stop taking jobs from the queue.
    Pause,
    /// Start taking jobs from the queue again.
    Resume,
    /// Jobs running at once (1..64), effective immediately.
    Concurrency {
        #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
        value: u32,
    },
    /// Finish running jobs, start no new ones, then exit 0.
    Drain,
    /// Consistent copy of the event log to a new file.
    Backup {
        /// The new file (made absolute here: the daemon does not share our working directory).
        #[arg(value_name = "PATH", value_parser = absolute_path)]
        path: PathBuf,
    },
    /// Remove finished jobs older than D days now: events, job folders and outputs.
    Purge {
        /// Days since the job ended (0: every finished job).
        #[arg(long = "older-than", value_name = "D",
              value_parser = clap::value_parser!(u32).range(0..=36_500))]
        older_than: u32,
    },
    /// Re-read the config file; names keys that need a restart.
    Reload,
    /// Checks that the daemon answers.
    #[command(hide = true)]
    Ping,
}

/// Whose events `events` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventsOf {
    Daemon,
    Job(JobId),
}

/// A command line that clap accepted but that is still not a request.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CtlUsageError {
    #[error("events daemon --follow: --follow needs a job id (the daemon's history has no end)")]
    FollowDaemon,
}

impl CtlCommand {
    /// The request this command sends.
    pub fn request(self) -> Result<Request, CtlUsageError> {
        // `limit` is at most MAX_LIMIT (its value parser), so it fits a usize.
        Ok(match self {
            CtlCommand::Status => Request::Status,
            CtlCommand::Jobs { state, limit } => Request::Jobs {
                state,
                limit: limit as usize,
            },
            CtlCommand::Show { job } => Request::Show { job },
            CtlCommand::Events {
                of,
                after,
                limit,
                follow,
            } => {
                let job = match of {
                    EventsOf::Daemon if follow => return Err(CtlUsageError::FollowDaemon),
                    EventsOf::Daemon => None,
                    EventsOf::Job(j) => Some(j),
                };
                Request::Events {
                    job,
                    after,
                    limit: limit as usize,
                    follow,
                }
            }
            CtlCommand::Cancel { job } => Request::Cancel { job },
            CtlCommand::Retry { job } => Request::Retry { job },
            CtlCommand::Pause => Request::Pause,
            CtlCommand::Resume => Request::Resume,
            CtlCommand::Concurrency { value } => Request::Concurrency { value },
            CtlCommand::Drain => Request::Drain,
            CtlCommand::Backup { path } => Request::Backup {
                path: path.display().to_string(),
            },
            CtlCommand::Purge { older_than } => Request::Purge {
                older_than_days: older_than,
            },
            CtlCommand::Reload => Request::Reload,
            CtlCommand::Ping => Request::Ping,
        })
    }
}

fn job_id(raw: &str) -> Result<JobId, String> {
    raw.trim()
        .parse()
        .map_err(|_| "not a job id (a UUID such as 3f2b6c1e-8d2a-4c3b-9e1f-0a1b2c3d4e5f)".into())
}

fn job_state(raw: &str) -> Result<JobState, String> {
    JobState::parse(raw)
        .ok_or_else(|| "expected queued, running, completed, failed or cancelled".into())
}

fn events_of(raw: &str) -> Result<EventsOf, String> {
    if raw == DAEMON_JOB {
        Ok(EventsOf::Daemon)
    } else {
        job_id(raw)
            .map(EventsOf::Job)
            .map_err(|e| format!("{e}, or `{DAEMON_JOB}`"))
    }
}

fn absolute_path(raw: &str) -> Result<PathBuf, String> {
    std::path::absolute(raw).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `ctl` alone, as `crate::cli` mounts it.
    #[derive(Parser, Debug)]
    #[command(name = "ctl")]
    struct Ctl {
        #[command(flatten)]
        args: CtlArgs,
    }

    fn parse(line: &str) -> Result<CtlArgs, String> {
        Ctl::try_parse_from(std::iter::once("ctl").chain(line.split_whitespace()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    fn request(line: &str) -> Request {
        parse(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .command
            .request()
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn command_lines_build_requests() {
        let id = "3f2b6c1e-8d2a-4c3b-9e1f-0a1b2c3d4e5f";
        let job = id.parse().unwrap();
        let cases = [
            ("status", Request::Status),
            (
                "jobs --state running --limit 10",
                Request::Jobs {
                    state: Some(JobState::Running),
                    limit: 10,
                },
            ),
            (
                "jobs",
                Request::Jobs {
                    state: None,
                    limit: DEFAULT_LIMIT,
                },
            ),
            (&format!("show {id}"), Request::Show { job }),
            (
                &format!("events {id} --after=5 --follow"),
                Request::Events {
                    job: Some(job),
                    after: 5,
                    limit: DEFAULT_LIMIT,
                    follow: true,
                },
            ),
            (
                &format!("events {id} -f --limit 3"),
                Request::Events {
                    job: Some(job),
                    after: 0,
                    limit: 3,
                    follow: true,
                },
            ),
            (
                "events daemon",
                Request::Events {
                    job: None,
                    after: 0,
                    limit: DEFAULT_LIMIT,
                    follow: false,
                },
            ),
            (&format!("cancel {id}"), Request::Cancel { job }),
            (&format!("retry {id}"), Request::Retry { job }),
            ("pause", Request::Pause),
            ("resume", Request::Resume),
            ("concurrency 2", Request::Concurrency { value: 2 }),
            (
                "backup /tmp/b.redb",
                Request::Backup {
                    path: "/tmp/b.redb".into(),
                },
            ),
            ("drain", Request::Drain),
            ("reload", Request::Reload),
            ("ping", Request::Ping),
        ];
        for (line, want) in cases {
            assert_eq!(request(line), want, "{line}");
        }
        for line in [
            "status --json --socket /x.sock",
            "--json --socket=/x.sock status",
        ] {
            let args = parse(line).unwrap();
            assert!(args.json, "{line}");
            assert_eq!(args.socket, Some(PathBuf::from("/x.sock")), "{line}");
        }
    }

    #[test]
    fn a_relative_backup_path_is_made_absolute() {
        let Request::Backup { path } = request("backup b.redb") else {
            panic!("not a backup");
        };
        let want = std::env::current_dir().unwrap().join("b.redb");
        assert_eq!(PathBuf::from(path), want);
    }

    #[test]
    fn bad_command_lines_name_the_problem() {
        let cases = [
            ("", "<COMMAND>"),
            ("fly", "'fly'"),
            ("show", "<ID>"),
            ("show nope", "not a job id"),
            ("events nope", "or `daemon`"),
            ("concurrency", "<N>"),
            ("concurrency 0", "1..=64"),
            ("concurrency many", "'many'"),
            ("jobs --state done", "expected queued"),
            ("jobs --limit", "--limit"),
            ("jobs --limit 1001", "1..=1000"),
            ("status extra", "'extra'"),
        ];
        for (line, needle) in cases {
            let err = parse(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
        let follow = parse("events daemon --follow").unwrap().command.request();
        assert_eq!(follow, Err(CtlUsageError::FollowDaemon));
    }
}
