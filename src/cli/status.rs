//! `ha-vip status`: what the daemon on this node is doing.

use super::CliError;
use crate::config::Config;

/// Prints the daemon's state from `config.status_file()`, as JSON when
/// `json` is set.
///
/// This build has no status file yet: it reports [`CliError::Unavailable`]
/// (exit 69) after the configuration was validated.
pub fn status(config: &Config, json: bool) -> Result<(), CliError> {
    let _ = (config, json);
    Err(CliError::Unavailable { command: "status" })
}
