//! The control socket (placeholder until the control issue lands): returns the path it would use.

use std::path::PathBuf;

use crate::daemon::Core;

/// Starts the control socket server and returns its path.
pub async fn start(core: &Core) -> anyhow::Result<PathBuf> {
    Ok(core.config.socket_path())
}
pub mod client;
