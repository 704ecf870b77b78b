//! `ha-vip drain`, `undrain` and `handover`: one request to the running
//! daemon over its control socket ([`crate::control`]).

use std::io::Write;

use super::CliError;
use crate::config::Config;
use crate::control::{Reply, Request, client};

/// Sends `request` to the daemon configured by `config`, prints its answer
/// to `out`; a refusal is exit code 1 with the reason on stderr.
pub fn control(config: &Config, request: &Request, out: &mut dyn Write) -> Result<(), CliError> {
    let Reply { ok, message } = client::send(&config.control_socket(), request)?;
    if !ok {
        return Err(CliError::Refused(message));
    }
    writeln!(out, "{message}").map_err(CliError::Output)
}
