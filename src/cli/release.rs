//! `ha-vip release`: clean up after the daemon (systemd's ExecStopPost).

use super::CliError;
use crate::config::Config;

/// Removes this node's VIPs from `config.interface` and gives up the Lease
/// if this node holds it.
///
/// This build cannot do that yet: it reports [`CliError::Unavailable`]
/// (exit 69) after the configuration was validated.
pub fn release(config: Config) -> Result<(), CliError> {
    let _ = config;
    Err(CliError::Unavailable { command: "release" })
}
