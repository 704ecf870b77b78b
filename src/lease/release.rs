//! Giving up the Lease from outside the elector: `ha-vip release` after the
//! daemon has gone (systemd's ExecStopPost, also after a crash).

use super::{KubeLeaseStore, LeaseRecord, LeaseStore};
use crate::config::Config;
use crate::kube::KubeError;

/// Releases the Lease as client-go's ReleaseOnCancel does (holder "",
/// duration 1 s, transitions kept) if this node still holds it. Returns
/// whether it did. Call it only once this node's VIPs are gone: a standby
/// takes the released Lease, and the VIP, within milliseconds.
pub async fn release_if_held(config: &Config) -> Result<bool, KubeError> {
    if !config.k8s.enabled {
        return Ok(false);
    }
    // Through k8s.peers too: after a crash the local API server may be
    // what is gone. (Discovered peers are the running daemon's only.)
    let store = KubeLeaseStore::from_config(config)?;
    let peers = crate::kube::Peers::new(
        config,
        store.client().credentials().clone(),
        store.client().timeout(),
    )?;
    let store = store.with_peers(peers);
    let Some(current) = store.get_for_release().await? else {
        return Ok(false);
    };
    if current.record.holder != config.node_name {
        return Ok(false);
    }
    let record = LeaseRecord::released(current.record.transitions);
    match store.release(&current, &record).await {
        Ok(_) => Ok(true),
        // Someone wrote it since we read it: it is not ours to release.
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
