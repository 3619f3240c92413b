//! The command line: `serve` (the daemon), `generate` (one video, in-process, no daemon needed),
//! `store check` (verify a log file), `ctl` (admin commands over the control socket), and
//! `completions` / `man`, which print shell completions and man pages generated from these very
//! definitions (so they cannot drift from the parser).

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
        /// Keep the queue and the history in this PostgreSQL store, shared with every daemon
        /// started with it (`postgres://user@host:port/database`; default: the redb log).
        #[arg(long, value_name = "URL")]
        store_url: Option<String>,
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
    /// Print a shell completion script (bash: `source <(reelsmith completions bash)`; zsh: save as
    /// `_reelsmith` on your fpath; fish: save as ~/.config/fish/completions/reelsmith.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff; `reelsmith man | man -l -`), or with --dir write reelsmith.1 and one
    /// page per command (reelsmith-generate.1, ...) into a directory.
    Man {
        /// Write every page into this directory instead of printing the main one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The shells `completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell` (built in memory: clap_complete panics on a failed write,
/// and the caller's stdout may be a closed pipe).
pub fn completions(shell: Shell) -> Vec<u8> {
    use clap_complete::shells;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => clap_complete::generate(shells::Bash, &mut cmd, "reelsmith", &mut out),
        Shell::Zsh => clap_complete::generate(shells::Zsh, &mut cmd, "reelsmith", &mut out),
        Shell::Fish => clap_complete::generate(shells::Fish, &mut cmd, "reelsmith", &mut out),
    }
    out
}

/// The main man page, `reelsmith(1)`, as roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}

/// Writes `reelsmith.1` and one page per command (`reelsmith-<command>.1`, nested commands joined
/// by dashes) into `dir`, creating it; returns the files written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, "reelsmith", dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = cmd.clone().bin_name(name.replace('-', " "));
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page).title(name).render(&mut out)?;
    std::fs::write(&path, out)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
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
    /// Verify a store: every record decodes, each job's history is legal and the job index (redb)
    /// or each job's stored head (PostgreSQL) agrees with the events; exits 1 naming the first
    /// problem. A redb log: stop the daemon first, or check a copy made with `reelsmith ctl
    /// backup`. A PostgreSQL store is checked read-only in one snapshot, daemons running or not.
    Check {
        /// The redb log file (default: the configured store: `[store] url` or
        /// `REELSMITH_STORE_URL` when set, else reelsmith.redb in the state directory).
        #[arg(value_name = "FILE")]
        path: Option<PathBuf>,
        /// Check this PostgreSQL store, `postgres://user@host:port/database`.
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        store_url: Option<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: Common,
    /// What the video is about.
    pub subject: String,
    /// Record the job in this PostgreSQL store instead of the state directory's redb log.
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
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
    fn completions_name_every_command_in_each_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(completions(shell)).unwrap();
            for word in [
                "serve",
                "generate",
                "ctl",
                "completions",
                "man",
                "subtitles-style",
            ] {
                assert!(text.contains(word), "{shell:?} lacks {word}");
            }
        }
    }

    #[test]
    fn man_pages_cover_the_commands_and_their_options() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH reelsmith 1"),
            "{page}"
        );
        assert!(page.contains(".TH reelsmith 1"), "{page}");
        for word in ["generate", "serve", "completions", "Turns a subject"] {
            assert!(page.contains(word), "{word}");
        }
        let dir = tempfile::tempdir().unwrap();
        let files = write_man_pages(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "reelsmith.1",
            "reelsmith-generate.1",
            "reelsmith-store-check.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
        }
        let generate = std::fs::read_to_string(dir.path().join("reelsmith-generate.1")).unwrap();
        assert!(
            generate.contains(r".TH reelsmith\-generate 1")
                || generate.contains(".TH reelsmith-generate 1"),
            "{generate}"
        );
        assert!(generate.contains("aspect"), "{generate}");
    }

    #[test]
    fn clap_messages_lose_their_usage_lines() {
        let err = Cli::try_parse_from(["reelsmith", "ctl", "concurrency", "many"]).unwrap_err();
        let msg = error_message(&err);
        assert!(msg.starts_with("invalid value 'many' for '<N>'"), "{msg}");
        assert!(!msg.contains("Usage") && !msg.contains("--help"), "{msg}");
    }
}
