//! `reelsmith generate "<subject>"`: one video, now, in this process. It runs the same actors as the
//! daemon (journal, scheduler, job) on the same state directory, follows the job's events as they
//! commit, and copies the MP4 to `--out`. On a terminal the last line is a progress bar (stage,
//! percentage, time spent, ETA) redrawn in place under the event lines; otherwise (a pipe, a file)
//! it prints plain lines only, and `--json` prints the events as JSON lines. Ctrl-C cancels the job cleanly.
//! It runs only its own job (`service::Scope::Own`): the directory's queued jobs stay queued and
//! jobs a dead daemon left running stay as they are, for the daemon to run or recover. On a shared
//! store (`--store-url postgres://...`) it claims its job like a daemon: created and claimed in one
//! store transaction, under a lease it renews (see `Scheduler::submit_claimed`), so the daemons on
//! that store neither claim nor rescue it while it runs, and rescue it once a dead `generate`'s
//! lease expires.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::cli::GenerateArgs;
use crate::config::Config;
use crate::event::{Event, JobState, Kind, Level};
use crate::request::JobRequest;
use crate::service::{self, prepare_state_dir};

pub fn run(config: Config, args: GenerateArgs) -> anyhow::Result<ExitCode> {
    crate::providers::hide_secrets(&config);
    let mut body = json!({ "videoSubject": args.subject });
    let obj = body.as_object_mut().context("request body")?;
    if let Some(path) = &args.script {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the script file {}", path.display()))?;
        obj.insert("script".into(), Value::String(text));
    }
    if let Some(v) = &args.voice {
        obj.insert("voice".into(), json!(v));
    }
    if let Some(n) = args.paragraphs {
        obj.insert("paragraphNumber".into(), json!(n));
    }
    if let Some(m) = &args.model {
        obj.insert("aiModel".into(), json!(m));
    }
    if let Some(c) = &args.color {
        obj.insert("color".into(), json!(c));
    }
    if let Some(p) = &args.position {
        obj.insert("subtitlesPosition".into(), json!(p));
    }
    if let Some(s) = &args.subtitles_style {
        obj.insert("subtitlesStyle".into(), json!(s));
    }
    if let Some(a) = &args.aspect {
        obj.insert("aspectRatio".into(), json!(a));
    }
    obj.insert("useMusic".into(), json!(args.music));
    // Refuse bad input before touching the state directory.
    let request = JobRequest::parse(&body, &config).map_err(|e| anyhow::anyhow!(e.0))?;
    let missing = crate::pipeline::process::check_tools(&config);
    if !missing.is_empty() {
        anyhow::bail!("missing tools:\n  {}", missing.join("\n  "));
    }
    let out = match &args.out {
        Some(p) => p.clone(),
        None => PathBuf::from(format!("{}.mp4", slug(&args.subject))),
    };

    let config = Arc::new(config);
    let state_dir = config.state_dir();
    prepare_state_dir(&state_dir)?;
    let local = service::open_local(&config, &state_dir)?;
    let system = service::system();
    let json_out = args.json;
    let result = system.block_on(async move {
        let (log, views) = service::open_any(&config, local).await?;
        let (core, tasks) =
            service::start(config, state_dir, log, views, false, service::Scope::Own).await?;
        let job = core.submit(&request).await?;
        if !json_out {
            eprintln!("Job {job} queued (state: {})", core.state_dir().display());
        }
        let mut rx = core.subscribe(job).context("job vanished")?;
        let mut after = 0;
        let mut bar = Bar::new(!json_out && std::io::stderr().is_terminal());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut interrupted = false;
        loop {
            let view = core.head(job).context("job vanished")?;
            let page = core
                .read_events(job, after, view.last_event_id, 1000)
                .await?;
            for ev in &page {
                after = ev.id;
                if json_out {
                    println!("{}", ev.to_wire());
                } else {
                    bar.show(ev);
                }
            }
            if view.state.is_terminal() && after >= view.last_event_id {
                bar.finish(view.state);
                break;
            }
            tokio::select! {
                _ = rx.changed() => {}
                // The clock and the time left move on between events.
                _ = tick.tick(), if bar.tty => bar.draw(),
                _ = sigint.recv(), if !interrupted => {
                    interrupted = true;
                    bar.clear();
                    eprintln!("Cancelling...");
                    let _ = core.cancel(job, None).await;
                }
            }
        }
        let view = core.job_view(job).await?.context("job vanished")?;
        core.request_stop();
        tasks.stop_jobs(Duration::from_secs(5)).await;
        tasks.close_journal().await;
        anyhow::Ok(view)
    });
    actix::System::current().stop();
    let view = result?;
    match view.state {
        JobState::Completed => {
            let src = view
                .result_path
                .clone()
                .context("completed job has no result path")?;
            std::fs::copy(&src, &out)
                .with_context(|| format!("cannot write the video to {}", out.display()))?;
            eprintln!("Wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        JobState::Cancelled => {
            eprintln!("Cancelled.");
            Ok(ExitCode::from(130))
        }
        _ => {
            eprintln!(
                "Failed: {}",
                view.error_message
                    .as_deref()
                    .unwrap_or("the job did not complete")
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// A file name from a subject: lowercase words joined by dashes.
pub fn slug(subject: &str) -> String {
    let s: String = subject
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let s: String = s.chars().take(60).collect();
    if s.is_empty() {
        "video".into()
    } else {
        s
    }
}

/// Where each stage sits on the overall bar, as fractions of the whole job, and what it is called
/// (the web page uses the same spans): the render is most of a job's time.
const STAGES: [(&str, f64, f64, &str); 8] = [
    ("script", 0.00, 0.08, "script"),
    ("footage", 0.08, 0.18, "footage"),
    ("voice", 0.18, 0.28, "voice"),
    ("music", 0.28, 0.30, "music"),
    ("subtitles", 0.30, 0.32, "subtitles"),
    ("render", 0.32, 0.96, "render"),
    ("metadata", 0.96, 0.99, "metadata"),
    ("upload", 0.99, 1.00, "upload"),
];

/// The job's fraction done: the start of the current stage, plus the render's own progress
/// inside its span.
fn overall(stage: Option<&str>, render: f64) -> f64 {
    match stage.and_then(|s| STAGES.iter().find(|(n, ..)| *n == s)) {
        Some(("render", from, to, _)) => from + (to - from) * render.clamp(0.0, 1.0),
        Some((_, from, ..)) => *from,
        None => 0.0,
    }
}

/// Time left by linear extrapolation of the fraction done; none until there is enough to go on.
fn eta(elapsed: Duration, fraction: f64) -> Option<Duration> {
    if !(0.03..1.0).contains(&fraction) || elapsed < Duration::from_secs(1) {
        return None;
    }
    Some(elapsed.mul_f64((1.0 - fraction) / fraction))
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// One line of the bar, at most `width` columns: the stage, the bar, the percentage, the time
/// spent and the time left.
fn bar_line(
    stage: &str,
    fraction: f64,
    elapsed: Duration,
    left: Option<Duration>,
    width: usize,
) -> String {
    let fraction = fraction.clamp(0.0, 1.0);
    let left = left.map_or_else(|| "--:--".to_string(), clock);
    let tail = format!(
        " {:>3}%  {} ETA {left}",
        (fraction * 100.0).floor(),
        clock(elapsed)
    );
    let head = format!("{stage:<9} ");
    let room = width.saturating_sub(head.chars().count() + tail.chars().count() + 2);
    let cells = room.min(40);
    if cells < 5 {
        let line = format!("{head}{}", tail.trim_start());
        return line.chars().take(width).collect();
    }
    let filled = ((fraction * cells as f64).round() as usize).min(cells);
    format!(
        "{head}[{}{}]{tail}",
        "█".repeat(filled),
        "░".repeat(cells - filled)
    )
}

/// The terminal's width in columns (stderr's), else `$COLUMNS`, else 80.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize we pass; a failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return ws.ws_col as usize;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(80)
}

/// Event lines, and on a terminal a progress bar (stage, percentage, time spent and left) kept on
/// the last line and redrawn in place; when not a terminal, plain lines only.
struct Bar {
    tty: bool,
    drawn: bool,
    last_pct: i64,
    stage: Option<String>,
    render: f64,
    /// When the job started running (the bar's clock; queueing does not count).
    started: Option<std::time::Instant>,
}

impl Bar {
    fn new(tty: bool) -> Bar {
        Bar {
            tty,
            drawn: false,
            last_pct: -1,
            stage: None,
            render: 0.0,
            started: None,
        }
    }

    fn fraction(&self) -> f64 {
        overall(self.stage.as_deref(), self.render)
    }

    /// Redraws the bar line (a terminal only).
    fn draw(&mut self) {
        if !self.tty || self.started.is_none() {
            return;
        }
        let elapsed = self.started.map(|t| t.elapsed()).unwrap_or_default();
        let f = self.fraction();
        let stage = self.stage.as_deref().unwrap_or("starting");
        let line = bar_line(
            stage,
            f,
            elapsed,
            eta(elapsed, f),
            terminal_width().saturating_sub(1),
        );
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn show(&mut self, ev: &Event) {
        let mut err = std::io::stderr();
        match ev.kind {
            Kind::Running => {
                self.started = Some(std::time::Instant::now());
                self.render = 0.0;
            }
            Kind::Queued => self.stage = None,
            _ => {}
        }
        if let Some(stage) = &ev.stage {
            if self.stage.as_deref() != Some(stage) {
                self.stage = Some(stage.clone());
            }
        }
        if ev.kind == Kind::Progress {
            let p = ev
                .payload
                .as_ref()
                .and_then(|p| p.get("progress"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            self.render = p;
            let pct = (p * 100.0).round() as i64;
            if self.tty {
                self.draw();
            } else if pct / 10 != self.last_pct / 10 {
                let _ = writeln!(err, "  rendering: {pct}%");
            }
            self.last_pct = pct;
            return;
        }
        self.clear();
        let tag = match ev.level {
            Level::Info => "INFO",
            Level::Success => "SUCCESS",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        };
        let _ = writeln!(err, "[{tag}] {}", ev.message);
        if ev.kind == Kind::Complete {
            self.render = 1.0;
            self.stage = Some("upload".into());
        }
        self.draw();
    }

    /// Leaves the finished bar (at 100% for a completed job) on its own line.
    fn finish(&mut self, state: JobState) {
        if !self.tty {
            return;
        }
        if state == JobState::Completed && self.started.is_some() {
            let elapsed = self.started.map(|t| t.elapsed()).unwrap_or_default();
            let line = bar_line(
                "done",
                1.0,
                elapsed,
                Some(Duration::ZERO),
                terminal_width().saturating_sub(1),
            );
            let _ = writeln!(std::io::stderr(), "\r\x1b[2K{line}");
            self.drawn = false;
        } else {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_stage_percentage_and_time_left_within_the_width() {
        let line = bar_line(
            "render",
            0.5,
            Duration::from_secs(30),
            eta(Duration::from_secs(30), 0.5),
            60,
        );
        assert!(line.starts_with("render    ["), "{line}");
        assert!(
            line.contains(" 50%") && line.contains("0:30 ETA 0:30"),
            "{line}"
        );
        assert!(line.chars().count() <= 60, "{line}");
        assert_eq!(
            line.matches('█').count(),
            line.matches('░').count(),
            "{line}"
        );
        // Narrow: no bar, the figures still there; never over the width.
        let narrow = bar_line("subtitles", 0.3, Duration::from_secs(5), None, 30);
        assert!(
            narrow.chars().count() <= 30 && narrow.contains("30%"),
            "{narrow}"
        );
        let wide = bar_line("voice", 0.2, Duration::from_secs(4000), None, 200);
        assert!(
            wide.contains("1:06:40 ETA --:--") && wide.matches('░').count() == 32,
            "{wide}"
        );
    }

    #[test]
    fn overall_progress_follows_the_stages_and_the_render() {
        assert_eq!(overall(None, 0.0), 0.0);
        assert_eq!(overall(Some("voice"), 0.9), 0.18);
        assert!((overall(Some("render"), 0.5) - 0.64).abs() < 1e-9);
        assert_eq!(overall(Some("upload"), 1.0), 0.99);
        let mut last = 0.0;
        for (name, from, to, _) in STAGES {
            assert!(from >= last && to > from, "{name}");
            last = to;
        }
        assert_eq!(last, 1.0);
        assert_eq!(
            eta(Duration::from_millis(500), 0.5),
            None,
            "too early to tell"
        );
        assert_eq!(eta(Duration::from_secs(10), 0.01), None);
        assert_eq!(
            eta(Duration::from_secs(10), 0.25),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            slug("Why octopuses have 3 hearts?"),
            "why-octopuses-have-3-hearts"
        );
        assert_eq!(slug("¿¡!"), "video");
    }
}
