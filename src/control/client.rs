//! `reelsmith ctl` (placeholder until the control issue lands).

use std::process::ExitCode;

use crate::cli::CtlArgs;
use crate::config::Config;

pub fn run(_cfg: Config, _args: CtlArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the control socket is not available in this build")
}
