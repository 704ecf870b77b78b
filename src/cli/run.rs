//! `ha-vip run`: the daemon.

use std::path::Path;

use super::CliError;
use crate::config::Config;
use crate::daemon;
use crate::instance::InstanceLock;

/// Runs the daemon with `config` (read from `path`, re-read on SIGHUP) until
/// SIGTERM or SIGINT.
pub fn run(path: &Path, config: Config) -> Result<(), CliError> {
    crate::credential::log_file_warnings(path, &config);
    // The lock file lives in run_dir: refuse a run_dir others could plant
    // a link in before opening anything there.
    crate::observe::check_run_dir(&config.run_dir)?;
    // Before anything touches the interface or the Lease, and held until
    // we return: a second daemon would delete our VIPs and release our Lease.
    let lock = InstanceLock::acquire(&config.run_dir)?;
    tracing::debug!(lock = %lock.path().display(), "holding the single-instance lock");
    // One thread is plenty: every task waits on the network or a timer, and
    // a single thread keeps the daemon's footprint small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(daemon::run(path, config))?;
    drop(lock);
    Ok(())
}
