//! `reelsmith generate "<subject>"`: one video, now, in this process. It runs the same actors as the
//! daemon (journal, scheduler, job) on the same state directory, follows the job's events as they
//! commit, draws a progress bar, and copies the MP4 to `--out`. Ctrl-C cancels the job cleanly.
//! It runs only its own job (`service::Scope::Own`): the directory's queued jobs stay queued and
//! jobs a dead daemon left running stay as they are, for the daemon to run or recover.

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
use crate::service::{self, open_log, prepare_state_dir};

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
    let (store, views) = open_log(&state_dir)?;
    let system = service::system();
    let json_out = args.json;
    let result = system.block_on(async move {
        let (core, tasks) =
            service::start(config, state_dir, store, views, false, service::Scope::Own).await?;
        let job = core.submit(&request).await?;
        if !json_out {
            eprintln!("Job {job} queued (state: {})", core.state_dir().display());
        }
        let mut rx = core.subscribe(job).context("job vanished")?;
        let mut after = 0;
        let mut bar = Bar::new(!json_out && std::io::stderr().is_terminal());
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut interrupted = false;
        loop {
            let view = core.job(job).context("job vanished")?;
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
                bar.finish();
                break;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = sigint.recv(), if !interrupted => {
                    interrupted = true;
                    eprintln!("\nCancelling...");
                    let _ = core.cancel(job, None).await;
                }
            }
        }
        let view = core.job(job).context("job vanished")?;
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

/// Event lines, and on a terminal a progress bar redrawn in place.
struct Bar {
    tty: bool,
    drawn: bool,
    last_pct: i64,
}

impl Bar {
    fn new(tty: bool) -> Bar {
        Bar {
            tty,
            drawn: false,
            last_pct: -1,
        }
    }

    fn show(&mut self, ev: &Event) {
        let mut err = std::io::stderr();
        if ev.kind == Kind::Progress {
            let p = ev
                .payload
                .as_ref()
                .and_then(|p| p.get("progress"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let pct = (p * 100.0).round() as i64;
            if self.tty {
                let filled = (p * 30.0).round() as usize;
                let _ = write!(
                    err,
                    "\r  [{}{}] {pct:>3}%",
                    "#".repeat(filled),
                    ".".repeat(30 - filled.min(30))
                );
                let _ = err.flush();
                self.drawn = true;
            } else if pct / 10 != self.last_pct / 10 {
                let _ = writeln!(err, "  rendering: {pct}%");
            }
            self.last_pct = pct;
            return;
        }
        if self.drawn {
            let _ = writeln!(err);
            self.drawn = false;
        }
        let tag = match ev.level {
            Level::Info => "INFO",
            Level::Success => "SUCCESS",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        };
        let _ = writeln!(err, "[{tag}] {}", ev.message);
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            super::slug("Why octopuses have 3 hearts?"),
            "why-octopuses-have-3-hearts"
        );
        assert_eq!(super::slug("¿¡!"), "video");
    }
}
