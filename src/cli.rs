//! The command line: `serve` (the daemon), `generate` (one video, in-process, no daemon needed) and
//! `ctl` (admin commands over the control socket).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Talk to a running daemon over its control socket.
    Ctl(CtlArgs),
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
    /// Print events as JSON lines instead of a progress display.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    #[command(flatten)]
    pub common: Common,
    /// Control socket path (default: as the daemon computes it from the config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON replies instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command and its arguments, e.g. `status`, `jobs --state running`, `cancel ID`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}
