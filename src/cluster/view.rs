//! Reading the `VirtualIP` object back: what `ha-vip status --cluster`
//! prints, with each entry judged stale or not at the time of reading.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::object::{NodeEntry, RESOURCE, VirtualIp, object_path, parse_time};
use crate::kube::{KubeClient, KubeError, Operation};

/// Reads the object `name`; `Ok(None)` when it (or the CRD) does not exist.
pub async fn fetch(client: &KubeClient, name: &str) -> Result<Option<VirtualIp>, KubeError> {
    let op = Operation {
        verb: "get",
        resource: RESOURCE,
        namespace: None,
        name: Some(Arc::from(name)),
    };
    match client.get(&op, &object_path(name)).await {
        Ok(v) => Ok(Some(v)),
        Err(KubeError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One node as shown: its entry and whether it is stale now.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// What the node wrote.
    #[serde(flatten)]
    pub entry: NodeEntry,
    /// Heartbeat older than the node's stale limit.
    pub stale: bool,
}

/// The object as shown, judged at one instant.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Object (and Lease) name.
    pub name: String,
    /// The VIPs.
    pub vips: Vec<String>,
    /// The holder as the holder last wrote it.
    pub holder: Option<String>,
    /// Since when.
    pub holder_since: Option<String>,
    /// Moves of the VIP between nodes.
    pub failovers: u64,
    /// Why it last moved.
    pub last_failover_reason: Option<String>,
    /// Healthy, fresh nodes / nodes, counted now.
    pub ready: String,
    /// Every node, by name.
    pub nodes: Vec<NodeView>,
}

impl ClusterView {
    /// `obj` as seen at `now`.
    pub fn new(obj: &VirtualIp, now: SystemTime) -> Self {
        let mut nodes: Vec<NodeView> = obj
            .status
            .nodes
            .iter()
            .map(|e| NodeView {
                entry: e.clone(),
                stale: e.stale(now),
            })
            .collect();
        nodes.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        Self {
            name: obj.metadata.name.clone(),
            vips: obj.spec.vips.clone(),
            holder: obj.status.holder.clone(),
            holder_since: obj.status.holder_since.clone(),
            failovers: obj.status.failovers.unwrap_or(0),
            last_failover_reason: obj.status.last_failover_reason.clone(),
            ready: obj.status.ready_text(now),
            nodes,
        }
    }

    /// The human-readable table.
    pub fn table(&self, now: SystemTime) -> String {
        let ago = |t: &Option<String>| -> String {
            t.as_deref()
                .and_then(parse_time)
                .map_or_else(|| "-".into(), |t| format!("{} ago", short(now, t)))
        };
        let mut out = format!(
            "VirtualIP {}: {}\nholder: {} since {}, failovers: {}{}\nready: {} (healthy and reporting / nodes)\n\n",
            self.name,
            self.vips.join(", "),
            self.holder.as_deref().unwrap_or("none"),
            self.holder_since.as_deref().unwrap_or("-"),
            self.failovers,
            self.last_failover_reason
                .as_deref()
                .map(|r| format!(" (last: {r})"))
                .unwrap_or_default(),
            self.ready,
        );
        let mut rows = vec![[
            "NODE".to_string(),
            "ROLE".into(),
            "HEALTHY".into(),
            "LAST PROBE".into(),
            "LAST TRANSITION".into(),
            "HEARTBEAT".into(),
            "PRIORITY".into(),
            "VERSION".into(),
        ]];
        for n in &self.nodes {
            let e = &n.entry;
            let role = if n.stale {
                format!("{} (stale)", e.role)
            } else {
                e.role.clone()
            };
            rows.push([
                e.name.clone(),
                role,
                if e.healthy { "yes" } else { "no" }.into(),
                e.last_probe.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{} {}",
                    e.last_transition_reason.as_deref().unwrap_or("-"),
                    ago(&e.last_transition_time)
                ),
                ago(&e.heartbeat_time),
                e.priority.to_string(),
                e.version.clone(),
            ]);
        }
        let widths: Vec<usize> = (0..8)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// `12s`, `5m`, `3h`, `2d`.
fn short(now: SystemTime, t: SystemTime) -> String {
    let s = now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
