//! `ha-vip release`: clean up after the daemon (systemd's ExecStopPost).

use super::CliError;
use crate::config::Config;
use crate::instance::{InstanceError, InstanceLock};
use crate::vip::{self, NetlinkAddressTable};

/// Removes this node's VIPs from `config.interface`, then gives up the Lease
/// if this node still holds it, so a standby need not wait for it to expire.
///
/// Refuses while the daemon runs: it would put the VIPs back, and releasing
/// its lease under it could let a standby add the VIP before it notices.
pub fn release(config: Config) -> Result<(), CliError> {
    // The daemon's own lock, not its status file: a recycled pid cannot fake
    // a running daemon, and a daemon that has not written its status yet
    // still counts. Held while we work, so no daemon starts under us.
    let _lock = match InstanceLock::acquire(&config.run_dir) {
        Ok(lock) => lock,
        Err(InstanceError::Held { pid: Some(pid), .. }) => {
            return Err(CliError::DaemonRunning { pid });
        }
        Err(e) => return Err(e.into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let table = NetlinkAddressTable::connect(&config.interface)
            .map_err(|e| CliError::Release(e.to_string()))?;
        match vip::remove_all(&table, &config.vips).await {
            Ok(r) if r.is_empty() => println!("no VIP of this node was on {}", config.interface),
            Ok(r) => println!(
                "removed {} from {}",
                crate::daemon::list(&r),
                config.interface
            ),
            // Keep the lease: a standby must not add the VIP while ours may
            // still be here (the kernel fence removes it in time).
            Err(e) => return Err(CliError::Release(e.to_string())),
        }
        match crate::lease::release_if_held(&config).await {
            Ok(true) => println!(
                "released the lease {}/{}",
                config.lease.namespace, config.lease.name
            ),
            Ok(false) => {}
            // The VIPs are gone, which is what matters; the lease expires by itself.
            Err(e) => eprintln!(
                "warning: could not release the lease ({e}); standbys take over when it expires"
            ),
        }
        Ok(())
    })
}
