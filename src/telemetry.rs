//! Logging: `tracing` to stderr (journald picks it up under systemd), `RUST_LOG` or the default
//! filter, colours only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `default` is the filter used when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // journald stamps every line itself.
        .with_timer(tracing_subscriber::fmt::time::SystemTime)
        .with_level(true)
        .compact()
        .try_init()
        .map(|_| under_journald);
}
