//! The `reelsmith` binary: parse the command line, start logging, dispatch.

use std::process::ExitCode;

use reelsmith::cli::{Cli, Command, Common, StoreCommand};
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
            store_url,
        } => {
            reelsmith::telemetry::init("info");
            let source = reelsmith::config::ConfigSource {
                path: common.config.clone(),
                overrides: reelsmith::config::Overrides {
                    state_dir: common.state_dir.clone(),
                    listen,
                    socket,
                    store_url,
                },
            };
            let cfg = source.load()?;
            let opts = reelsmith::daemon::ServeOptions { paused, source };
            reelsmith::daemon::run_server(cfg, opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            common: _,
            command: StoreCommand::Copy { from, to },
        } => {
            reelsmith::telemetry::init("warn");
            let (events, jobs) = reelsmith::store::copy_to_postgres(&from, &to)?;
            println!(
                "copied {events} events of {jobs} jobs from {} and verified the counts",
                from.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { store_url } => {
            reelsmith::telemetry::init("warn");
            let version = reelsmith::store::migrate_postgres(&store_url)?;
            println!("store schema at version {version}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            reelsmith::telemetry::init("warn");
            let mut cfg = load_config(&args.common)?;
            if let Some(url) = &args.store_url {
                cfg.store.url = url.clone();
                cfg.validate()?;
            }
            reelsmith::generate::run(cfg, args)
        }
        Command::Store {
            common,
            command: StoreCommand::Check { path, store_url },
        } => {
            reelsmith::telemetry::init("warn");
            // A FILE is always a redb log; without one, the configured store.
            let target = match (path, store_url) {
                (Some(p), _) => Ok(p),
                (None, Some(url)) => Err(url),
                (None, None) => {
                    let cfg = load_config(&common)?;
                    if cfg.store.url.is_empty() {
                        Ok(cfg.state_dir().join(reelsmith::store::FILE_NAME))
                    } else {
                        Err(cfg.store.url)
                    }
                }
            };
            let path = match target {
                Ok(path) => path,
                Err(url) => {
                    return match reelsmith::store::check::check_postgres(&url) {
                        Ok(r) => {
                            println!(
                                "ok: {}: {} events of {} jobs ({} bytes of records); every record decodes, every history is legal, every stored head equals the fold of its events",
                                reelsmith::store::check::redacted(&url),
                                r.events,
                                r.jobs,
                                r.bytes
                            );
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(e) => {
                            eprintln!("reelsmith store check: {e}");
                            Ok(ExitCode::from(1))
                        }
                    };
                }
            };
            match reelsmith::store::check::check(&path) {
                Ok(r) => {
                    println!(
                        "ok: {}: {} events of {} jobs ({} bytes); every record decodes, every history is legal, the job index agrees",
                        path.display(),
                        r.events,
                        r.jobs,
                        r.bytes
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("reelsmith store check: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Completions { shell } => {
            use std::io::Write as _;
            std::io::stdout().write_all(&reelsmith::cli::completions(shell))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            use std::io::Write as _;
            let page = reelsmith::cli::man_page()?;
            std::io::stdout().write_all(&page)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            let files = reelsmith::cli::write_man_pages(&dir).map_err(|e| {
                anyhow::anyhow!("cannot write the man pages to {}: {e}", dir.display())
            })?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl { common, ctl } => {
            reelsmith::telemetry::init("warn");
            // The config only tells where the socket is: a broken file must not stop an admin
            // from reaching the daemon (for instance to `reload` a fixed one) with `--socket`.
            let cfg = load_config(&common);
            reelsmith::control::client::run(cfg, ctl)
        }
    }
}

/// The error and its causes, each cause once (many messages already quote their source).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = reelsmith::cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reelsmith: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}
