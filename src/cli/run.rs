//! `ha-vip run`: the daemon.

use super::CliError;
use crate::config::Config;

/// Runs the daemon with `config` until it is told to stop.
///
/// This build has no daemon yet: it reports [`CliError::Unavailable`]
/// (exit 69) after the configuration was validated.
pub fn run(config: Config) -> Result<(), CliError> {
    let _ = config;
    Err(CliError::Unavailable { command: "run" })
}
