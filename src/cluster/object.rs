//! The `VirtualIP` object: its wire types, its URLs, and how a reader judges
//! a node's entry (stale or not).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The API group of the CRD.
pub const GROUP: &str = "ha-vip.io";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the objects.
pub const API_VERSION: &str = "ha-vip.io/v1alpha1";
/// `kind` of the objects.
pub const KIND: &str = "VirtualIP";
/// The resource with its group, as RBAC and error messages name it.
pub const RESOURCE: &str = "virtualips.ha-vip.io";
/// The status subresource, as RBAC names it.
pub const STATUS_RESOURCE: &str = "virtualips.ha-vip.io/status";
/// Where the CRD is installed from, for the message when it is missing.
pub const CRD_HINT: &str = "kubectl apply -f /usr/share/doc/ha-vip/virtualip-crd.yaml (packaging/kubernetes/virtualip-crd.yaml in the source)";

/// Path of the object `name` (cluster-scoped).
pub fn object_path(name: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/virtualips/{name}")
}

/// Path of the status subresource of `name`.
pub fn status_path(name: &str) -> String {
    format!("{}/status", object_path(name))
}

/// A `VirtualIP` as read back (only what ha-vip looks at).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    /// Name, uid, creation time.
    #[serde(default)]
    pub metadata: Metadata,
    /// What the object is about.
    #[serde(default)]
    pub spec: Spec,
    /// What the nodes report.
    #[serde(default)]
    pub status: ClusterStatus,
}

/// The few metadata fields ha-vip uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Object name (the Lease's name).
    #[serde(default)]
    pub name: String,
    /// Object uid (Events refer to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// When the object was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// `spec`: which Lease and which VIPs the object describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Namespace of the Lease.
    #[serde(default)]
    pub lease_namespace: String,
    /// Name of the Lease.
    #[serde(default)]
    pub lease_name: String,
    /// The VIPs (`10.0.0.100/32`).
    #[serde(default)]
    pub vips: Vec<String>,
}

/// `status`: the holder fields (written by the holder) and one entry per node
/// (each written by its node only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The VIPs as one string, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vips: Option<String>,
    /// The node holding the Lease and the VIPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Since when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_since: Option<String>,
    /// How many times the VIP moved from one node to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failovers: Option<u64>,
    /// Why it last moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_reason: Option<String>,
    /// Who held it before the current holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_holder: Option<String>,
    /// Healthy, fresh nodes / nodes, as the holder last counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// One entry per node, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeEntry>,
}

/// One node's own entry in `status.nodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    /// The node (the list-map key).
    pub name: String,
    /// `leader`, `follower`, `starting`, `stopping`.
    #[serde(default)]
    pub role: String,
    /// Whether the local API server is healthy (after the stability buffer).
    #[serde(default)]
    pub healthy: bool,
    /// The last probe's result ("ok", "HTTP 500", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    /// When the last probe completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// Election priority (all equal by default).
    #[serde(default)]
    pub priority: i64,
    /// Drained by the operator (`ha-vip drain`): not taking the VIP.
    #[serde(default)]
    pub drained: bool,
    /// ha-vip version on the node.
    #[serde(default)]
    pub version: String,
    /// When the node last changed role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Why (`acquired_lease`, `renew_deadline`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_reason: Option<String>,
    /// When the node last wrote this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<String>,
    /// A reader shows the entry as stale once its heartbeat is older than
    /// this; the node states it because only it knows its own period.
    #[serde(default)]
    pub stale_after_seconds: u64,
}

impl NodeEntry {
    /// Whether the heartbeat is older than the node's own stale limit (or
    /// missing or unreadable) at `now`.
    pub fn stale(&self, now: SystemTime) -> bool {
        let Some(beat) = self.heartbeat_time.as_deref().and_then(parse_time) else {
            return true;
        };
        let age = now.duration_since(beat).unwrap_or(Duration::ZERO);
        age > Duration::from_secs(self.stale_after_seconds.max(1))
    }

    /// Healthy and not stale: what READY counts.
    pub fn ready(&self, now: SystemTime) -> bool {
        self.healthy && !self.stale(now)
    }

    /// Ready and not drained: a node that would take the VIP over.
    pub fn can_take_over(&self, now: SystemTime) -> bool {
        self.ready(now) && !self.drained
    }
}

impl ClusterStatus {
    /// `ready/total` at `now`.
    pub fn ready_text(&self, now: SystemTime) -> String {
        let ready = self.nodes.iter().filter(|n| n.ready(now)).count();
        format!("{ready}/{}", self.nodes.len())
    }

    /// The entry of `node`.
    pub fn node(&self, node: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == node)
    }
}

/// RFC 3339 UTC with seconds, as Kubernetes writes times.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses a time written by [`format_time`] or by Kubernetes.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(healthy: bool, beat: Option<SystemTime>) -> NodeEntry {
        NodeEntry {
            name: "n".into(),
            healthy,
            heartbeat_time: beat.map(format_time),
            stale_after_seconds: 45,
            ..NodeEntry::default()
        }
    }

    #[test]
    fn an_old_heartbeat_is_stale_and_not_ready() {
        let now = SystemTime::now();
        let fresh = entry(true, Some(now - Duration::from_secs(10)));
        let old = entry(true, Some(now - Duration::from_secs(60)));
        assert!(!fresh.stale(now) && fresh.ready(now));
        assert!(old.stale(now) && !old.ready(now));
        assert!(entry(true, None).stale(now), "no heartbeat at all is stale");
        assert!(
            !entry(false, Some(now)).ready(now),
            "unhealthy is not ready"
        );
        let status = ClusterStatus {
            nodes: vec![fresh, old, entry(false, Some(now))],
            ..ClusterStatus::default()
        };
        assert_eq!(status.ready_text(now), "1/3");
    }

    #[test]
    fn times_round_trip_at_second_precision() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(format_time(t), "2027-01-15T08:00:00Z");
    }
}
