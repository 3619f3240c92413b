//! The command line: `serve` (the daemon), `generate` (one video, in-process, no daemon needed),
//! `store check` (verify a log file) and `ctl` (admin commands over the control socket).

use std::io::Write;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

pub use crate::control::cli::CtlArgs;

#[derive(Parser, Debug)]
#[command(
    name = "reelsmith",
    version,
    about = "Turns a subject into a finished vertical short video"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Config file (TOML); see config/reelsmith.toml for every key.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// State directory (event log, job folders, outputs, songs).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: HTTP API, control socket, job queue.
    Serve {
        #[command(flatten)]
        common: Common,
        /// HTTP listen address (default 127.0.0.1:8080; port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Control socket path.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Start with the queue paused: jobs queue up, none starts until `reelsmith ctl resume`.
        #[arg(long)]
        paused: bool,
    },
    /// Make one video now, in this process, and write the MP4.
    Generate(GenerateArgs),
    /// Work on an event store directly (no daemon needed).
    Store {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Create or upgrade the PostgreSQL store's schema (embedded, versioned migrations).
    Migrate {
        /// The store, `postgres://user@host:port/database`.
        #[arg(long, value_name = "URL", env = "REELSMITH_STORE_URL")]
        store_url: String,
    },
    /// Talk to a running daemon over its control socket.
    #[command(help_template = crate::control::cli::HELP_TEMPLATE)]
    Ctl {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        ctl: CtlArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a whole redb history (ids, jobs, admin events) into an empty PostgreSQL store and
    /// verify the counts: the way from one machine to several. Stop the daemon first.
    Copy {
        /// The redb log file (a daemon's `reelsmith.redb`, or a `ctl backup` copy).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The PostgreSQL store, `postgres://user@host:port/database` (empty).
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Verify a log: every record decodes, each job's history is legal and the job index agrees
    /// with the events; exits 1 naming the first bad record. Stop the daemon first, or check a copy
    /// made with `reelsmith ctl backup`.
    Check {
        /// The log file (default: reelsmith.redb in the state directory).
        #[arg(value_name = "FILE")]
        path: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: Common,
    /// What the video is about.
    pub subject: String,
    /// Use this script (plain text file) instead of writing one.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Where to write the MP4 (default: ./<subject>.mp4).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Mix a random song from the library under the voice.
    #[arg(long)]
    pub music: bool,
    /// Voice id (MoneyPrinter's: en_us_001, fr_001, de_001, ...).
    #[arg(long)]
    pub voice: Option<String>,
    /// Paragraphs of script to write.
    #[arg(long, value_name = "N")]
    pub paragraphs: Option<u32>,
    /// LLM model to ask for the script.
    #[arg(long)]
    pub model: Option<String>,
    /// Subtitle colour (CSS hex or name).
    #[arg(long)]
    pub color: Option<String>,
    /// Subtitle position, "horizontal,vertical" (e.g. center,bottom).
    #[arg(long)]
    pub position: Option<String>,
    /// Caption style: classic, word or karaoke.
    #[arg(long, value_name = "STYLE")]
    pub subtitles_style: Option<String>,
    /// Aspect ratio of the video: 9:16, 16:9, 1:1 or 4:5.
    #[arg(long, value_name = "W:H")]
    pub aspect: Option<String>,
    /// Print events as JSON lines instead of a progress display.
    #[arg(long)]
    pub json: bool,
}

/// Parses the process's arguments; on a bad command line prints why and exits (2). A `ctl` error
/// is followed by the `ctl` usage (its commands and options), as an admin at a shell needs it.
pub fn parse() -> Cli {
    let err = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    // `ctl` is the first word whenever it is the command: the top level has no options of its own
    // but --help and --version.
    let in_ctl = std::env::args_os().nth(1).is_some_and(|a| a == "ctl");
    if !in_ctl
        || matches!(
            err.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        )
    {
        err.exit();
    }
    let problem = match err.kind() {
        // clap's text for these lists hidden commands or is the whole help.
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "missing command".to_string()
        }
        _ => error_message(&err),
    };
    // Nothing to do if stderr is gone.
    let _ = writeln!(
        std::io::stderr(),
        "reelsmith ctl: {problem}\n\n{}",
        ctl_usage()
    );
    std::process::exit(2);
}

/// clap's message without its own usage and "try --help" lines.
fn error_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let text = text.split("\nUsage:").next().unwrap_or(&text);
    let text = text
        .split("\nFor more information")
        .next()
        .unwrap_or(text)
        .trim();
    text.strip_prefix("error: ").unwrap_or(text).to_string()
}

/// The help of `reelsmith ctl` (the `ctl` help template: it starts `usage: reelsmith ctl`).
pub fn ctl_usage() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    match cmd.find_subcommand_mut("ctl") {
        Some(ctl) => ctl.render_help().to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_usage_lists_every_command() {
        let u = ctl_usage();
        assert!(u.starts_with("usage: reelsmith ctl"), "{u}");
        for cmd in [
            "status", "jobs", "show", "events", "cancel", "retry", "pause", "resume",
        ] {
            assert!(u.contains(&format!("\n  {cmd} ")), "{cmd}: {u}");
        }
        for flag in ["--socket", "--json", "--config"] {
            assert!(u.contains(flag), "{flag}: {u}");
        }
        assert!(!u.contains("ping"), "{u}");
    }

    #[test]
    fn clap_messages_lose_their_usage_lines() {
        let err = Cli::try_parse_from(["reelsmith", "ctl", "concurrency", "many"]).unwrap_err();
        let msg = error_message(&err);
        assert!(msg.starts_with("invalid value 'many' for '<N>'"), "{msg}");
        assert!(!msg.contains("Usage") && !msg.contains("--help"), "{msg}");
    }
}
