//! The cluster view: one `VirtualIP` object per Lease (same name) in which
//! every node reports its own state, plus Events for failovers.
//!
//! Each daemon writes only its own entry of `status.nodes` with server-side
//! apply under its own field manager (`ha-vip-<node>`), so concurrent
//! writers never overwrite each other and no read-modify-write is needed;
//! the holder also writes the holder fields under `ha-vip-holder`.
//!
//! The writes run on a task of their own fed by a `watch` channel of
//! [`Snapshot`]s: level-triggered (the task always writes the latest state,
//! never a backlog), rate-limited (at once on a change of role, health or
//! holder, at most every [`MIN_GAP`], otherwise a heartbeat), and never in
//! the Lease path: a failure is a WARN and a metric, never a role change.

pub mod events;
pub mod object;
pub mod view;
pub mod writer;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::kube::KubeClient;
use crate::observe::{Metrics, Status};
use crate::role::{Role, TransitionReason};

pub use object::{ClusterStatus, NodeEntry, VirtualIp};
pub use writer::run;

/// Shortest time between two writes of a node's entry.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// How often a node rewrites its entry when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long the last write may take at shutdown.
pub const FINISH_BOUND: Duration = Duration::from_secs(2);
/// How many recent transitions a snapshot carries (for Events).
const RECENT: usize = 16;

/// What the writer task needs besides the snapshots.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node (its entry's key and field manager).
    pub node: String,
    /// The object's name (the Lease's name).
    pub object: String,
    /// The Lease's namespace; Events go there.
    pub lease_namespace: String,
    /// The VIPs, as `10.0.0.100/32`.
    pub vips: Vec<String>,
    /// This node's election priority.
    pub priority: i64,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Shortest time between two writes.
    pub min_gap: Duration,
    /// Readers call the entry stale after this long without a heartbeat.
    pub stale_after: Duration,
    /// Wait after a failed write (a missing CRD waits 10 times longer).
    pub retry: Duration,
}

impl Settings {
    /// The settings of the daemon configured by `cfg`: stale after two
    /// missed heartbeats plus a lease duration.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            node: cfg.node_name.clone(),
            object: cfg.lease.name.clone(),
            lease_namespace: cfg.lease.namespace.clone(),
            vips: cfg.vips.iter().map(ToString::to_string).collect(),
            priority: cfg.priority,
            heartbeat: HEARTBEAT,
            min_gap: MIN_GAP,
            stale_after: 2 * HEARTBEAT + cfg.lease.duration,
            retry: Duration::from_secs(6),
        }
    }
}

/// One role change, numbered so the writer emits each Event once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// 1, 2, 3... in the order they happened.
    pub seq: u64,
    /// The role left.
    pub from: Role,
    /// The role entered.
    pub to: Role,
    /// Why.
    pub reason: TransitionReason,
    /// When.
    pub at: SystemTime,
}

/// An address conflict to report as an Event, numbered like [`Recorded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictNotice {
    /// 1, 2, 3... in the order they were reported.
    pub seq: u64,
    /// Names the node, the VIP, the other MAC and what to do.
    pub message: String,
    /// When.
    pub at: SystemTime,
}

/// What the daemon publishes: its status and its recent transitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The daemon's status (`None` until the first publish).
    pub status: Option<Status>,
    /// The last few transitions, oldest first.
    pub transitions: Vec<Recorded>,
    /// The last few address conflicts (already rate-limited), oldest first.
    pub conflicts: Vec<ConflictNotice>,
}

/// A cheap handle that queues `AddressConflict` Events for the writer,
/// usable from any task; a no-op without a writer.
#[derive(Debug, Clone, Default)]
pub struct Notices(Option<watch::Sender<Snapshot>>);

impl Notices {
    /// A handle feeding `tx` (the writer's channel; tests read it directly).
    pub fn new(tx: watch::Sender<Snapshot>) -> Self {
        Self(Some(tx))
    }

    /// Queues an `AddressConflict` Event (Warning) with `message`.
    pub fn address_conflict(&self, message: String, at: SystemTime) {
        let Some(tx) = &self.0 else { return };
        tx.send_modify(|s| {
            // Trimming keeps the newest, so the numbering never restarts.
            let seq = s.conflicts.last().map_or(0, |c| c.seq) + 1;
            s.conflicts.push(ConflictNotice { seq, message, at });
            if s.conflicts.len() > RECENT {
                s.conflicts.remove(0);
            }
        });
    }
}

/// The daemon's end: publishing never blocks and never fails.
#[derive(Debug)]
pub struct Cluster {
    tx: Option<watch::Sender<Snapshot>>,
    seq: u64,
    task: Option<JoinHandle<()>>,
}

impl Cluster {
    /// A handle without a writer (single-node mode, tests): publishing is a no-op.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            seq: 0,
            task: None,
        }
    }

    /// Starts a writer with `client` and `settings`; the handle feeds it.
    pub fn start(client: KubeClient, settings: Settings, metrics: &Metrics) -> Self {
        let (tx, rx) = watch::channel(Snapshot::default());
        let task = tokio::spawn(run(client, settings, rx, metrics.clone()));
        Self {
            tx: Some(tx),
            seq: 0,
            task: Some(task),
        }
    }

    /// Records a role change (for its Event).
    pub fn record(&mut self, from: Role, to: Role, reason: TransitionReason, at: SystemTime) {
        let Some(tx) = &self.tx else { return };
        self.seq += 1;
        let seq = self.seq;
        tx.send_modify(|s| {
            s.transitions.push(Recorded {
                seq,
                from,
                to,
                reason,
                at,
            });
            if s.transitions.len() > RECENT {
                s.transitions.remove(0);
            }
        });
    }

    /// A handle for Events about address conflicts, fed by other tasks.
    pub fn notices(&self) -> Notices {
        Notices(self.tx.clone())
    }

    /// Publishes the daemon's current status; wakes the writer only when it
    /// differs from the last one.
    pub fn publish(&self, status: &Status) {
        let Some(tx) = &self.tx else { return };
        tx.send_if_modified(|s| {
            if s.status.as_ref() == Some(status) {
                return false;
            }
            s.status = Some(status.clone());
            true
        });
    }

    /// At shutdown: lets the writer make its last write (the final role, a
    /// Released Event), waiting at most `bound`.
    pub async fn finish(&mut self, bound: Duration) {
        self.tx = None;
        if let Some(task) = self.task.take()
            && tokio::time::timeout(bound, task).await.is_err()
        {
            tracing::warn!("the last VirtualIP status write did not finish within {bound:?}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts the writer for the daemon configured by `cfg` with its own client
/// (its requests never queue behind the Lease's). Disabled in single-node
/// mode or when no client can be built (then a WARN says why).
pub fn spawn(cfg: &Config, metrics: &Metrics) -> Cluster {
    if !cfg.k8s.enabled {
        return Cluster::disabled();
    }
    match KubeClient::from_config(cfg) {
        Ok(client) => Cluster::start(client, Settings::from_config(cfg), metrics),
        Err(e) => {
            tracing::warn!(error = %e, "no VirtualIP status for this node: cannot build its API client; the VIP failover works as before");
            Cluster::disabled()
        }
    }
}
