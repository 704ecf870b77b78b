//! `ha-vip status`: what the daemon on this node is doing.

use super::CliError;
use crate::config::Config;
use crate::observe;

/// Prints the daemon's state from `config.status_file()`, as JSON when
/// `json` is set. Exits 3 (like `systemctl status`) when no daemon runs.
pub fn status(config: &Config, json: bool) -> Result<(), CliError> {
    match observe::print_status(&config.status_file(), json)? {
        0 => Ok(()),
        code => Err(CliError::Exit(u8::try_from(code).unwrap_or(1))),
    }
}
