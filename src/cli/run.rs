//! `ha-vip run`: the daemon.

use std::path::Path;

use super::CliError;
use crate::config::Config;
use crate::daemon;

/// Runs the daemon with `config` (read from `path`, re-read on SIGHUP) until
/// SIGTERM or SIGINT.
pub fn run(path: &Path, config: Config) -> Result<(), CliError> {
    crate::credential::log_file_warnings(path, &config);
    // One thread is plenty: every task waits on the network or a timer, and
    // a single thread keeps the daemon's footprint small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(daemon::run(path, config))?;
    Ok(())
}
