//! What a control must not do, judged from the `VirtualIP` object: drain
//! the last node that could hold the VIP, or hand over to a node that
//! cannot take it.
//!
//! The object is each node's own report (healthy, drained, heartbeat), so a
//! node counts as able to take over only while its entry is fresh
//! ([`NodeEntry::can_take_over`]). Without the object (CRD not installed,
//! API unreachable, single-node mode) the daemon cannot count, and says so.

use std::time::SystemTime;

use super::Request;
use crate::cluster::object::CRD_HINT;
use crate::cluster::view::fetch;
use crate::cluster::{NodeEntry, VirtualIp};
use crate::config::Config;
use crate::kube::KubeClient;

/// Reads the object and judges requests; runs on the control socket's
/// task, never on the daemon's main loop.
#[derive(Debug, Clone)]
pub struct Checks {
    client: Option<KubeClient>,
    object: String,
    node: String,
}

/// What the checks could learn of the cluster.
#[derive(Debug)]
pub enum Seen {
    /// The object as read.
    Object(Box<VirtualIp>),
    /// Why there is none to judge from (a sentence).
    Unknown(String),
}

impl Checks {
    /// Checks for the daemon configured by `cfg`, reading with its own
    /// client (none in single-node mode, or when one cannot be built).
    pub fn new(cfg: &Config) -> Self {
        let client = if cfg.k8s.enabled {
            KubeClient::from_config(cfg)
                .map_err(|e| tracing::warn!(error = %e, "the control socket cannot read the VirtualIP object; drain needs --force and handover is refused"))
                .ok()
        } else {
            None
        };
        Self {
            client,
            object: cfg.lease.name.clone(),
            node: cfg.node_name.clone(),
        }
    }

    /// `Ok` when `request` may go ahead; otherwise why not, for the operator.
    pub async fn check(&self, request: &Request) -> Result<(), String> {
        match request {
            Request::Undrain | Request::Drain { force: true } => Ok(()),
            Request::Drain { force: false } => {
                drain(&self.seen().await, &self.node, SystemTime::now())
            }
            Request::Handover { to } => handover(
                &self.seen().await,
                &self.node,
                to.as_deref(),
                SystemTime::now(),
            ),
        }
    }

    async fn seen(&self) -> Seen {
        let Some(client) = &self.client else {
            return Seen::Unknown(
                "this node runs in single-node mode (k8s.enabled: false), so no other node can take the VIP".into(),
            );
        };
        match fetch(client, &self.object).await {
            Ok(Some(obj)) => Seen::Object(Box::new(obj)),
            Ok(None) => Seen::Unknown(format!(
                "the VirtualIP object {} does not exist, so the daemon cannot see the other nodes' health (is its CRD installed? {CRD_HINT})",
                self.object
            )),
            Err(e) => Seen::Unknown(format!(
                "the VirtualIP object {} cannot be read ({e}), so the daemon cannot see the other nodes' health",
                self.object
            )),
        }
    }
}

/// The other nodes that could take the VIP over now.
fn standbys<'a>(obj: &'a VirtualIp, me: &str, now: SystemTime) -> Vec<&'a NodeEntry> {
    obj.status
        .nodes
        .iter()
        .filter(|n| n.name != me && n.can_take_over(now))
        .collect()
}

/// Whether `me` may be drained without `--force`.
pub fn drain(seen: &Seen, me: &str, now: SystemTime) -> Result<(), String> {
    let obj = match seen {
        Seen::Object(o) => o,
        Seen::Unknown(why) => {
            return Err(format!(
                "refusing to drain {me}: {why}; drain anyway with --force"
            ));
        }
    };
    let me_ready = obj.status.node(me).is_some_and(|n| n.can_take_over(now));
    if me_ready && standbys(obj, me, now).is_empty() {
        return Err(format!(
            "refusing to drain {me}: it is the last healthy node of VirtualIP {} (the other {} are unhealthy, drained or not reporting), so nobody would hold {}; bring another node back first (ha-vip status --cluster), or drain anyway with --force",
            obj.metadata.name,
            obj.status.nodes.len().saturating_sub(1),
            obj.spec.vips.join(", "),
        ));
    }
    Ok(())
}

/// Whether `me` may hand over, to `to` or to any standby.
pub fn handover(seen: &Seen, me: &str, to: Option<&str>, now: SystemTime) -> Result<(), String> {
    if to == Some(me) {
        return Err(format!(
            "{me} cannot hand over to itself; name another node, or leave out --to"
        ));
    }
    let obj = match seen {
        Seen::Object(o) => o,
        Seen::Unknown(why) => {
            return Err(format!(
                "refusing to hand over: {why}; to move the VIP anyway, drain this node (ha-vip drain --force) and undrain it afterwards"
            ));
        }
    };
    let Some(to) = to else {
        return if standbys(obj, me, now).is_empty() {
            Err(format!(
                "refusing to hand over: none of the other {} nodes of VirtualIP {} is healthy, undrained and reporting; see ha-vip status --cluster",
                obj.status.nodes.len().saturating_sub(1),
                obj.metadata.name
            ))
        } else {
            Ok(())
        };
    };
    let Some(target) = obj.status.node(to) else {
        let known: Vec<&str> = obj.status.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(format!(
            "refusing to hand over to {}: no such node in VirtualIP {} (known: {})",
            crate::lease::printable(to),
            obj.metadata.name,
            known.join(", ")
        ));
    };
    if !target.can_take_over(now) {
        let why = if target.stale(now) {
            "has not reported for longer than its stale limit"
        } else if target.drained {
            "is drained (ha-vip undrain on it first)"
        } else {
            "is not healthy"
        };
        return Err(format!(
            "refusing to hand over to {to}: it {why}; see ha-vip status --cluster"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::ClusterStatus;
    use crate::cluster::object::format_time;

    fn node(name: &str, healthy: bool, drained: bool, age: u64, now: SystemTime) -> NodeEntry {
        NodeEntry {
            name: name.into(),
            healthy,
            drained,
            heartbeat_time: Some(format_time(now - Duration::from_secs(age))),
            stale_after_seconds: 60,
            ..NodeEntry::default()
        }
    }

    fn seen(nodes: Vec<NodeEntry>) -> Seen {
        let mut obj = VirtualIp {
            status: ClusterStatus {
                nodes,
                ..ClusterStatus::default()
            },
            ..VirtualIp::default()
        };
        obj.metadata.name = "vip".into();
        Seen::Object(Box::new(obj))
    }

    #[test]
    fn the_last_healthy_node_is_not_drained_without_force() {
        let now = SystemTime::now();
        let last = seen(vec![
            node("a", true, false, 1, now),
            node("b", false, false, 1, now),
            node("c", true, false, 600, now),
            node("d", true, true, 1, now),
        ]);
        let err = drain(&last, "a", now).expect_err("a is the last that can hold it");
        assert!(
            err.contains("last healthy node") && err.contains("--force"),
            "{err}"
        );
        // Another node that could take over: fine.
        let two = seen(vec![
            node("a", true, false, 1, now),
            node("b", true, false, 1, now),
        ]);
        assert_eq!(drain(&two, "a", now), Ok(()));
        // A node that could not hold the VIP anyway is not "the last".
        assert_eq!(drain(&last, "b", now), Ok(()));
        let err = drain(&Seen::Unknown("no object".into()), "a", now).unwrap_err();
        assert!(
            err.contains("no object") && err.contains("--force"),
            "{err}"
        );
    }

    #[test]
    fn handover_goes_only_to_a_known_healthy_reporting_undrained_node() {
        let now = SystemTime::now();
        let s = seen(vec![
            node("a", true, false, 1, now),
            node("b", true, false, 1, now),
            node("c", false, false, 1, now),
            node("d", true, true, 1, now),
            node("e", true, false, 600, now),
        ]);
        assert_eq!(handover(&s, "a", Some("b"), now), Ok(()));
        assert_eq!(handover(&s, "a", None, now), Ok(()));
        for (to, why) in [
            ("c", "not healthy"),
            ("d", "drained"),
            ("e", "has not reported"),
            ("x", "no such node"),
            ("a", "itself"),
        ] {
            let err = handover(&s, "a", Some(to), now).expect_err(to);
            assert!(err.contains(why), "{to}: {err}");
        }
        let alone = seen(vec![
            node("a", true, false, 1, now),
            node("c", false, false, 1, now),
        ]);
        let err = handover(&alone, "a", None, now).unwrap_err();
        assert!(err.contains("none of the other 1 nodes"), "{err}");
        assert!(handover(&Seen::Unknown("x".into()), "a", None, now).is_err());
    }
}
