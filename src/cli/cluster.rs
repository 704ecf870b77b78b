//! `ha-vip status --cluster`: every node's state from the VirtualIP object,
//! or the Lease holder alone when the CRD (or the object) is missing.

use std::time::SystemTime;

use super::CliError;
use crate::cluster::object::CRD_HINT;
use crate::cluster::view::{ClusterView, fetch};
use crate::config::Config;
use crate::kube::KubeClient;
use crate::lease::{KubeLeaseStore, LeaseStore, printable};

/// Prints the cluster table (or JSON) for the Lease of `config`.
pub fn status_cluster(config: &Config, json: bool) -> Result<(), CliError> {
    if !config.k8s.enabled {
        return Err(CliError::Cluster(
            "k8s.enabled is false (single-node mode): there is no cluster view".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let text = runtime.block_on(async {
        let client =
            KubeClient::from_config(config).map_err(|e| CliError::Cluster(e.to_string()))?;
        let now = SystemTime::now();
        match fetch(&client, &config.lease.name).await {
            Ok(Some(obj)) => {
                let view = ClusterView::new(&obj, now);
                if json {
                    serde_json::to_string_pretty(&view)
                        .map(|s| s + "\n")
                        .map_err(|e| CliError::Cluster(e.to_string()))
                } else {
                    Ok(view.table(now))
                }
            }
            Ok(None) => lease_only(client, config, json).await,
            Err(e) => Err(CliError::Cluster(e.to_string())),
        }
    })?;
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)
}

/// Without the object: who holds the Lease, and how to get the full view.
async fn lease_only(client: KubeClient, config: &Config, json: bool) -> Result<String, CliError> {
    let store = KubeLeaseStore::new(client, &config.lease.namespace, &config.lease.name);
    let lease = store
        .get()
        .await
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let holder = lease
        .as_ref()
        .and_then(|l| l.record.holder().map(String::from));
    let note = format!(
        "no VirtualIP object {:?}: the per-node view needs the CRD ({CRD_HINT})",
        config.lease.name
    );
    if json {
        let v = serde_json::json!({
            "name": config.lease.name,
            "holder": holder,
            "nodes": [],
            "note": note,
        });
        return Ok(format!("{v:#}\n"));
    }
    Ok(format!(
        "{note}\nLease {}/{} holder: {}\n",
        config.lease.namespace,
        config.lease.name,
        holder.as_deref().map_or_else(|| "none".into(), printable)
    ))
}
