//! Logging: `tracing` to stderr (journald picks it up under systemd), `RUST_LOG` or the default
//! filter, colours only on a terminal. Every line is scrubbed of the installed secrets
//! (`secret::install`; the daemon installs its config's at start) before it is written.

use std::io::{IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::secret;

/// stderr, through [`Scrubbed`].
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = Scrubbed;

    fn make_writer(&'a self) -> Scrubbed {
        Scrubbed
    }
}

/// Writes to stderr with the installed secrets hidden. The formatter hands over each event whole
/// in one write, so a secret is never split between two.
struct Scrubbed;

impl Write for Scrubbed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let redactor = secret::installed();
        match std::str::from_utf8(buf) {
            Ok(text) if !redactor.is_empty() => {
                std::io::stderr().write_all(redactor.scrub(text).as_bytes())?;
                Ok(buf.len())
            }
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the subscriber. `default` is the filter used when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // journald stamps every line itself.
        .with_timer(tracing_subscriber::fmt::time::SystemTime)
        .with_level(true)
        .compact()
        .try_init()
        .map(|_| under_journald);
}
