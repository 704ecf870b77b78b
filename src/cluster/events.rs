//! Events on the `VirtualIP` object for the role changes an operator cares
//! about, aggregated the way client-go's recorder does: a repeat of the same
//! reason by the same node bumps `count` and `lastTimestamp` of one Event
//! instead of creating another.
//!
//! The VirtualIP is cluster-scoped, and the API server accepts core/v1
//! Events about a cluster-scoped object only in the `default` namespace
//! (like the Events about Nodes), so that is where they go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;

use super::object::{API_VERSION, KIND, format_time};
use super::{Recorded, Settings};
use crate::kube::{KubeClient, KubeError, MERGE_PATCH, Operation};
use crate::role::{Role, TransitionReason};

/// The namespace of Events about cluster-scoped objects.
pub const EVENT_NAMESPACE: &str = "default";

/// The reason of the Event about another host claiming our VIP (see
/// `daemon::conflict`): a Warning, aggregated like every other reason.
pub const ADDRESS_CONFLICT: &str = "AddressConflict";

/// An Event to emit: reason (CamelCase), type and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// CamelCase reason (`Acquired`, `Released`, `LostRenewDeadline`, ...).
    pub reason: &'static str,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    /// Names the node, the VIPs and the cause.
    pub message: String,
}

/// The Event for a transition, if it is one operators need to see: taking
/// the VIP, giving it up on purpose, and losing it.
pub fn plan(t: &Recorded, node: &str, vips: &str) -> Option<Planned> {
    let lost = |reason, cause: &str| Planned {
        reason,
        kind: "Warning",
        message: format!("{node} lost {vips}: {cause}"),
    };
    let released = |cause: &str| Planned {
        reason: "Released",
        kind: "Normal",
        message: format!("{node} released {vips} and the lease (planned handover: {cause})"),
    };
    Some(match (t.from, t.to, t.reason) {
        // The operator's controls, recorded with the role unchanged.
        (from, to, TransitionReason::Drained) if from == to => Planned {
            reason: "Drained",
            kind: "Normal",
            message: format!("{node} drained: it does not take {vips} until `ha-vip undrain`"),
        },
        (from, to, TransitionReason::Undrained) if from == to => Planned {
            reason: "Undrained",
            kind: "Normal",
            message: format!("{node} undrained: it may take {vips} again"),
        },
        (_, Role::Leader, _) => Planned {
            reason: "Acquired",
            kind: "Normal",
            message: format!("{node} acquired the lease and holds {vips}"),
        },
        (Role::Leader, _, TransitionReason::Shutdown) => Planned {
            reason: "Released",
            kind: "Normal",
            message: format!(
                "{node} released {vips} and the lease (planned handover: shutting down)"
            ),
        },
        (Role::Leader, _, TransitionReason::Drained) => released("drained"),
        (Role::Leader, _, TransitionReason::HandedOver) => released("ha-vip handover"),
        // The machine slept holding the VIPs: the kernel's lifetime fence
        // (and our removal on waking) took them; the Lease is gone by now.
        (Role::Leader, _, TransitionReason::Suspended) => Planned {
            reason: "Fenced",
            kind: "Warning",
            message: format!(
                "{node} lost {vips}: the machine slept (freeze or suspend) holding them; the kernel fence removed them and the lease expired meanwhile"
            ),
        },
        (Role::Leader, _, TransitionReason::RenewDeadline) => {
            lost("LostRenewDeadline", t.reason.describe())
        }
        (Role::Leader, _, TransitionReason::Unhealthy) => {
            lost("LostUnhealthy", t.reason.describe())
        }
        (Role::Leader, _, TransitionReason::VipFailed) => {
            lost("LostVipFailed", t.reason.describe())
        }
        (Role::Leader, _, TransitionReason::LeaseLost) => lost("LostLease", t.reason.describe()),
        // Any other way out of leadership is still a loss operators must see.
        #[allow(unreachable_patterns)]
        (Role::Leader, _, _) => lost("Lost", t.reason.describe()),
        _ => return None,
    })
}

/// Creates and aggregates this node's Events.
pub(super) struct Recorder {
    client: KubeClient,
    node: String,
    object: String,
    /// Distinguishes this process's Events from those of an earlier run, so
    /// a create never collides with an old name.
    run_id: String,
    /// Event name -> count already written.
    counts: HashMap<String, u64>,
}

impl Recorder {
    pub(super) fn new(client: KubeClient, s: &Settings) -> Self {
        let run_id = format!(
            "{:x}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        Self {
            client,
            node: s.node.clone(),
            object: s.object.clone(),
            run_id,
            counts: HashMap::new(),
        }
    }

    fn name(&self, reason: &str) -> String {
        let clean = |s: &str| -> String {
            s.to_ascii_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        let name = format!(
            "{}.{}.{}.{}",
            clean(&self.object),
            clean(&self.node),
            clean(reason),
            self.run_id
        );
        name.chars().take(253).collect()
    }

    fn op(verb: &'static str, name: Option<&str>) -> Operation {
        Operation {
            verb,
            resource: "events",
            namespace: Some(Arc::from(EVENT_NAMESPACE)),
            name: name.map(Arc::from),
        }
    }

    /// Writes `ev` (about the object with `uid`) at `at`: a new Event, or
    /// the count of the existing one bumped.
    pub(super) async fn emit(
        &mut self,
        uid: Option<&str>,
        ev: &Planned,
        at: SystemTime,
    ) -> Result<(), KubeError> {
        let name = self.name(ev.reason);
        let time = format_time(at);
        if let Some(&count) = self.counts.get(&name) {
            let path = format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events/{name}");
            let patch = json!({
                "count": count + 1,
                "lastTimestamp": time,
                "message": ev.message,
            });
            match self
                .client
                .patch::<_, serde_json::Value>(
                    &Self::op("patch", Some(&name)),
                    &path,
                    MERGE_PATCH,
                    &patch,
                )
                .await
            {
                Ok(_) => {
                    self.counts.insert(name, count + 1);
                    return Ok(());
                }
                // Expired (the API server keeps Events for an hour): start over.
                Err(KubeError::NotFound { .. }) => {
                    self.counts.remove(&name);
                }
                Err(e) => return Err(e),
            }
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": name, "namespace": EVENT_NAMESPACE },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": self.object,
                "uid": uid.unwrap_or_default(),
            },
            "reason": ev.reason,
            "message": ev.message,
            "type": ev.kind,
            "count": 1,
            "firstTimestamp": time,
            "lastTimestamp": time,
            "source": { "component": "ha-vip", "host": self.node },
            "reportingComponent": "ha-vip",
            "reportingInstance": self.node,
        });
        let path = format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events");
        let _: serde_json::Value = self
            .client
            .post(&Self::op("create", None), &path, &body)
            .await?;
        self.counts.insert(name, 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(from: Role, to: Role, reason: TransitionReason) -> Recorded {
        Recorded {
            seq: 1,
            from,
            to,
            reason,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_taking_giving_up_and_losing_the_vip_make_events() {
        use Role::*;
        use TransitionReason as R;
        let p = |tr| plan(&tr, "cp-1", "10.0.0.100/32").map(|p| (p.reason, p.kind));
        assert_eq!(
            p(t(Follower, Leader, R::AcquiredLease)),
            Some(("Acquired", "Normal"))
        );
        assert_eq!(
            p(t(Leader, Stopping, R::Shutdown)),
            Some(("Released", "Normal"))
        );
        assert_eq!(
            p(t(Leader, Follower, R::RenewDeadline)),
            Some(("LostRenewDeadline", "Warning"))
        );
        assert_eq!(
            p(t(Leader, Follower, R::Unhealthy)),
            Some(("LostUnhealthy", "Warning"))
        );
        assert_eq!(
            p(t(Leader, Follower, R::VipFailed)),
            Some(("LostVipFailed", "Warning"))
        );
        assert_eq!(
            p(t(Leader, Follower, R::LeaseLost)),
            Some(("LostLease", "Warning"))
        );
        assert_eq!(p(t(Starting, Follower, R::Started)), None);
        assert_eq!(
            p(t(Leader, Follower, R::Drained)),
            Some(("Released", "Normal"))
        );
        assert_eq!(
            p(t(Leader, Follower, R::HandedOver)),
            Some(("Released", "Normal"))
        );
        assert_eq!(
            p(t(Leader, Follower, R::Suspended)),
            Some(("Fenced", "Warning"))
        );
        assert_eq!(
            p(t(Follower, Follower, R::Drained)),
            Some(("Drained", "Normal"))
        );
        assert_eq!(
            p(t(Leader, Leader, R::Undrained)),
            Some(("Undrained", "Normal"))
        );
        assert_eq!(p(t(Follower, Stopping, R::Shutdown)), None);
        let msg = plan(&t(Leader, Follower, R::Unhealthy), "cp-1", "10.0.0.100/32")
            .unwrap()
            .message;
        assert_eq!(msg, "cp-1 lost 10.0.0.100/32: local API server unhealthy");
    }
}
