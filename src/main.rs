//! The `reelsmith` binary: parse the command line, start logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use reelsmith::cli::{Cli, Command, Common};
use reelsmith::config::Config;

fn load_config(common: &Common) -> anyhow::Result<Config> {
    let mut cfg = Config::load(common.config.as_deref())?;
    if let Some(dir) = &common.state_dir {
        cfg.daemon.state_dir = dir.display().to_string();
    }
    Ok(cfg)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            socket,
            paused,
        } => {
            reelsmith::telemetry::init("info");
            let mut cfg = load_config(&common)?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(s) = socket {
                cfg.daemon.socket = s.display().to_string();
            }
            cfg.validate()?;
            reelsmith::daemon::run_server(cfg, reelsmith::daemon::ServeOptions { paused })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            reelsmith::telemetry::init("warn");
            let cfg = load_config(&args.common)?;
            reelsmith::generate::run(cfg, args)
        }
        Command::Ctl(args) => {
            reelsmith::telemetry::init("warn");
            let cfg = load_config(&args.common)?;
            reelsmith::control::client::run(cfg, args)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reelsmith: {e:#}");
            ExitCode::from(1)
        }
    }
}
