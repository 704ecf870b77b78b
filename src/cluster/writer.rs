//! The writer task: this node's entry, the holder fields, and Events.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::events::{Recorder, plan};
use super::object::{
    API_VERSION, CRD_HINT, KIND, RESOURCE, STATUS_RESOURCE, VirtualIp, format_time, object_path,
    status_path,
};
use super::{Settings, Snapshot};
use crate::kube::{APPLY_PATCH, KubeClient, KubeError, Operation};
use crate::observe::{Metrics, Status};
use crate::role::{Role, TransitionReason};

/// Field manager of the holder fields (whoever holds takes them over).
pub const HOLDER_MANAGER: &str = "ha-vip-holder";
/// Field manager of the spec (written when the object is created).
pub const SPEC_MANAGER: &str = "ha-vip";

/// How soon a provisional failover reason is rechecked.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a write failed.
#[derive(Debug)]
enum WriteError {
    /// The CRD is not installed.
    NoCrd,
    /// Any API error.
    Api(KubeError),
}

/// What decides an immediate write; the rest waits for the heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    role: Role,
    healthy: bool,
    drained: bool,
    holder: Option<String>,
    transition: Option<(TransitionReason, SystemTime)>,
}

fn key(s: &Status) -> Key {
    Key {
        role: s.role,
        healthy: s.healthy,
        drained: s.drained,
        holder: s.holder.clone(),
        transition: s
            .last_transition
            .as_ref()
            .map(|t| (t.reason, t.at.system_time())),
    }
}

struct Writer {
    client: KubeClient,
    s: Settings,
    metrics: Metrics,
    events: Recorder,
    /// The object's uid, for Events.
    uid: Option<String>,
    /// Highest transition seq whose Event was handled.
    emitted: u64,
    /// Highest address conflict seq whose Event was handled.
    emitted_conflicts: u64,
    written: Option<Key>,
    last_write: Option<Instant>,
    /// When the last attempt failed, and whether for a missing CRD.
    failed: Option<(Instant, bool)>,
    warned_no_crd: bool,
    last_error: Option<String>,
    /// The last failover reason written is a guess to recheck soon.
    provisional: bool,
}

/// Runs until the daemon drops its end of `rx`, then makes a last write of
/// anything not yet written (the final role, a Released Event) and returns.
pub async fn run(
    client: KubeClient,
    s: Settings,
    mut rx: watch::Receiver<Snapshot>,
    metrics: Metrics,
) {
    let mut w = Writer {
        events: Recorder::new(client.clone(), &s),
        client,
        s,
        metrics,
        uid: None,
        emitted: 0,
        emitted_conflicts: 0,
        written: None,
        last_write: None,
        failed: None,
        warned_no_crd: false,
        last_error: None,
        provisional: false,
    };
    let mut open = true;
    loop {
        let snap = rx.borrow_and_update().clone();
        let now = Instant::now();
        let next = w.next_write(&snap, now);
        if next.is_some_and(|at| at <= now || !open) {
            w.write(&snap).await;
            if !open {
                return;
            }
            continue;
        }
        if !open {
            return;
        }
        tokio::select! {
            r = rx.changed() => open = r.is_ok(),
            () = sleep_until(next.unwrap_or_else(|| now + w.s.heartbeat)) => {}
        }
    }
}

impl Writer {
    /// When the next write is due; `None` before the daemon's first status.
    fn next_write(&self, snap: &Snapshot, now: Instant) -> Option<Instant> {
        let status = snap.status.as_ref()?;
        if let Some((at, no_crd)) = self.failed {
            let wait = if no_crd {
                self.s.retry * 10
            } else {
                self.s.retry
            };
            return Some(at + wait);
        }
        let Some(last) = self.last_write else {
            return Some(now);
        };
        let pending_event = snap.transitions.iter().any(|t| t.seq > self.emitted)
            || snap
                .conflicts
                .iter()
                .any(|c| c.seq > self.emitted_conflicts);
        if self.written.as_ref() != Some(&key(status)) || pending_event {
            Some(last + self.s.min_gap)
        } else if self.provisional {
            Some(last + self.s.heartbeat.min(RECHECK))
        } else {
            Some(last + self.s.heartbeat)
        }
    }

    async fn write(&mut self, snap: &Snapshot) {
        let Some(status) = &snap.status else { return };
        let now = Instant::now();
        match self.write_all(snap, status).await {
            Ok(()) => {
                if self.failed.take().is_some() {
                    tracing::info!(object = %self.s.object, "VirtualIP status written again");
                }
                self.last_error = None;
                self.written = Some(key(status));
                self.last_write = Some(now);
            }
            Err(WriteError::NoCrd) => {
                self.metrics.cluster_write_failed();
                self.failed = Some((now, true));
                if !self.warned_no_crd {
                    self.warned_no_crd = true;
                    tracing::warn!(
                        object = %self.s.object,
                        "the VirtualIP CRD is not installed, so this node's state is not shown in the cluster (the VIP failover works as before); to show it: {CRD_HINT}"
                    );
                }
            }
            Err(WriteError::Api(e)) => {
                self.metrics.cluster_write_failed();
                self.failed = Some((now, false));
                let text = e.to_string();
                if self.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, object = %self.s.object, "cannot write this node's VirtualIP status; retrying (the VIP failover is not affected)");
                    self.last_error = Some(text);
                }
            }
        }
    }

    async fn write_all(&mut self, snap: &Snapshot, status: &Status) -> Result<(), WriteError> {
        let obj = self.apply_entry(status).await?;
        self.uid = obj.metadata.uid.clone();
        if status.role == Role::Leader {
            self.apply_holder(&obj, status).await?;
        } else {
            self.provisional = false;
        }
        let vips = self.s.vips.join(", ");
        let done = self.emitted;
        for t in snap.transitions.iter().filter(|t| t.seq > done) {
            if let Some(ev) = plan(t, &self.s.node, &vips) {
                self.events
                    .emit(self.uid.as_deref(), &ev, t.at)
                    .await
                    .map_err(WriteError::Api)?;
            }
            self.emitted = t.seq;
        }
        let done = self.emitted_conflicts;
        for c in snap.conflicts.iter().filter(|c| c.seq > done) {
            let ev = super::events::Planned {
                reason: super::events::ADDRESS_CONFLICT,
                kind: "Warning",
                message: c.message.clone(),
            };
            self.events
                .emit(self.uid.as_deref(), &ev, c.at)
                .await
                .map_err(WriteError::Api)?;
            self.emitted_conflicts = c.seq;
        }
        Ok(())
    }

    fn op(&self, verb: &'static str, resource: &'static str) -> Operation {
        Operation {
            verb,
            resource,
            namespace: None,
            name: Some(Arc::from(self.s.object.as_str())),
        }
    }

    /// Server-side applies this node's entry, creating the object first if
    /// it is missing (an apply to the status subresource cannot create).
    async fn apply_entry(&self, status: &Status) -> Result<VirtualIp, WriteError> {
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": { "name": self.s.object },
            "status": { "nodes": [self.entry(status)] },
        });
        let manager = format!("ha-vip-{}", self.s.node);
        match self
            .apply(&status_path(&self.s.object), &manager, &body, true)
            .await
        {
            Err(KubeError::NotFound { .. }) => {}
            other => return other.map_err(WriteError::Api),
        }
        self.create().await?;
        self.apply(&status_path(&self.s.object), &manager, &body, true)
            .await
            .map_err(WriteError::Api)
    }

    /// Creates the object with its spec (server-side apply to the main
    /// resource does create). A 404 here means the CRD is missing.
    async fn create(&self) -> Result<(), WriteError> {
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": { "name": self.s.object },
            "spec": {
                "leaseNamespace": self.s.lease_namespace,
                "leaseName": self.s.object,
                "vips": self.s.vips,
            },
        });
        match self
            .apply(&object_path(&self.s.object), SPEC_MANAGER, &body, false)
            .await
        {
            Ok(_) => {
                tracing::info!(object = %self.s.object, "created the VirtualIP object");
                Ok(())
            }
            Err(KubeError::NotFound { .. }) => Err(WriteError::NoCrd),
            Err(e) => Err(WriteError::Api(e)),
        }
    }

    async fn apply(
        &self,
        path: &str,
        manager: &str,
        body: &serde_json::Value,
        status: bool,
    ) -> Result<VirtualIp, KubeError> {
        let resource = if status { STATUS_RESOURCE } else { RESOURCE };
        let path = format!("{path}?fieldManager={manager}&force=true");
        self.client
            .patch(&self.op("patch", resource), &path, APPLY_PATCH, body)
            .await
    }

    fn entry(&self, st: &Status) -> serde_json::Value {
        let mut e = json!({
            "name": self.s.node,
            "role": st.role.as_str(),
            "healthy": st.healthy,
            "priority": self.s.priority,
            "drained": st.drained,
            "version": st.version,
            "heartbeatTime": format_time(SystemTime::now()),
            "staleAfterSeconds": self.s.stale_after.as_secs().max(1),
        });
        if let Some(p) = &st.last_probe {
            e["lastProbe"] = json!(p.reason);
            e["lastProbeTime"] = json!(format_time(p.at.system_time()));
        }
        if let Some(t) = &st.last_transition {
            e["lastTransitionTime"] = json!(format_time(t.at.system_time()));
            e["lastTransitionReason"] = json!(t.reason.as_str());
        }
        e
    }

    /// Writes the holder fields when they differ from what `obj` shows: a
    /// new holder bumps the failover count and says why the VIP moved. The
    /// previous holder's own last write (why it let go) may land after ours:
    /// until it does, the reason is provisional and rechecked soon.
    async fn apply_holder(&mut self, obj: &VirtualIp, st: &Status) -> Result<(), WriteError> {
        let me = self.s.node.clone();
        let now = SystemTime::now();
        let cur = &obj.status;
        let mut prev_holder = cur.previous_holder.clone();
        let (failovers, reason, since) = match cur.holder.as_deref() {
            Some(h) if h == me => {
                let mut reason = cur.last_failover_reason.clone();
                if self.provisional
                    && let Some(p) = &prev_holder
                {
                    let (r, provisional) = failover_reason(p, cur, now);
                    reason = Some(r);
                    self.provisional = provisional;
                }
                let since = cur
                    .holder_since
                    .clone()
                    .unwrap_or_else(|| format_time(st.since.system_time()));
                (cur.failovers.unwrap_or(0), reason, since)
            }
            Some(prev) => {
                let (r, provisional) = failover_reason(prev, cur, now);
                self.provisional = provisional;
                prev_holder = Some(prev.to_string());
                let since = format_time(st.since.system_time());
                (cur.failovers.unwrap_or(0) + 1, Some(r), since)
            }
            None => (
                cur.failovers.unwrap_or(0),
                cur.last_failover_reason.clone(),
                format_time(st.since.system_time()),
            ),
        };
        let vips = self.s.vips.join(",");
        let ready = cur.ready_text(now);
        let unchanged = cur.holder.as_deref() == Some(me.as_str())
            && cur.vips.as_deref() == Some(vips.as_str())
            && cur.ready.as_deref() == Some(ready.as_str())
            && cur.last_failover_reason == reason
            && cur.failovers.is_some();
        if unchanged {
            return Ok(());
        }
        let mut fields = json!({
            "vips": vips,
            "holder": me,
            "holderSince": since,
            "failovers": failovers,
            "ready": ready,
        });
        if let Some(r) = reason {
            fields["lastFailoverReason"] = json!(r);
        }
        if let Some(p) = prev_holder {
            fields["previousHolder"] = json!(p);
        }
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": { "name": self.s.object },
            "status": fields,
        });
        self.apply(&status_path(&self.s.object), HOLDER_MANAGER, &body, true)
            .await
            .map(|_| ())
            .map_err(WriteError::Api)
    }
}

/// Why the VIP left `prev`, from what `prev` last reported, and whether
/// that is provisional (its entry still says leader and is fresh: its own
/// last write may be on the way).
fn failover_reason(prev: &str, st: &super::ClusterStatus, now: SystemTime) -> (String, bool) {
    let Some(e) = st.node(prev) else {
        return (format!("{prev} stopped renewing the lease"), false);
    };
    if e.role != Role::Leader.as_str() {
        let reason = e
            .last_transition_reason
            .as_deref()
            .and_then(|r| serde_json::from_value::<TransitionReason>(json!(r)).ok());
        if let Some(r) = reason {
            return (format!("{prev}: {}", r.describe()), false);
        }
    }
    if e.stale(now) {
        return (format!("{prev} stopped reporting"), false);
    }
    (format!("{prev} stopped renewing the lease"), true)
}
