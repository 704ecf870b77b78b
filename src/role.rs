//! The daemon's roles and the reasons it moves between them: the vocabulary
//! of the state machine, the status file and the metrics (where they are
//! label values, so the set is small and fixed).

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::{Deserialize, Serialize};

/// The role of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Started, not yet following or leading.
    Starting,
    /// Not holding the VIP.
    Follower,
    /// Holding the lease and the VIP.
    Leader,
    /// Shutting down (releasing the lease and the VIP).
    Stopping,
}

impl Role {
    /// The lowercase name used in the status file and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Follower => "follower",
            Self::Leader => "leader",
            Self::Stopping => "stopping",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Role {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why the role changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// The daemon started (starting → follower).
    Started,
    /// This node acquired the lease.
    AcquiredLease,
    /// The local API server became unhealthy; the lease was given up.
    Unhealthy,
    /// No renewal succeeded within the renew deadline.
    RenewDeadline,
    /// Another node holds the lease.
    LeaseLost,
    /// The VIP could not be added or kept on the interface.
    VipFailed,
    /// SIGTERM / SIGINT: graceful shutdown.
    Shutdown,
    /// The VIP interface lost its carrier or vanished; the lease was given up.
    CarrierLost,
    /// The machine slept while holding the VIP: on waking, the VIPs were
    /// removed because the fence's clock had stood still.
    Suspended,
    /// logind announced a suspend: VIPs removed and Lease released first.
    Suspending,
    /// `ha-vip drain`: VIPs removed and Lease released; out of the
    /// election until `ha-vip undrain`.
    Drained,
    /// `ha-vip handover`: VIPs removed and Lease released for a standby.
    HandedOver,
    /// `ha-vip undrain`. Not a role change: recorded (role unchanged) for
    /// its Event only, like a drain of a node that does not hold the VIP.
    Undrained,
}

impl TransitionReason {
    /// The snake_case name used in the status file and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::AcquiredLease => "acquired_lease",
            Self::Unhealthy => "unhealthy",
            Self::RenewDeadline => "renew_deadline",
            Self::LeaseLost => "lease_lost",
            Self::VipFailed => "vip_failed",
            Self::Shutdown => "shutdown",
            Self::CarrierLost => "carrier_lost",
            Self::Suspended => "suspended",
            Self::Suspending => "suspending",
            Self::Drained => "drained",
            Self::HandedOver => "handed_over",
            Self::Undrained => "undrained",
        }
    }

    /// A short phrase for humans (`ha-vip status`, logs).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::AcquiredLease => "acquired lease",
            Self::Unhealthy => "local API server unhealthy",
            Self::RenewDeadline => "lease not renewed within the renew deadline",
            Self::LeaseLost => "lease held by another node",
            Self::VipFailed => "VIP could not be held on the interface",
            Self::Shutdown => "shutting down",
            Self::CarrierLost => "VIP interface lost carrier",
            Self::Suspended => "the machine slept; VIPs removed on waking",
            Self::Suspending => "the machine is about to sleep; handed over",
            Self::Drained => "drained by the operator (ha-vip drain)",
            Self::HandedOver => "handed over by the operator (ha-vip handover)",
            Self::Undrained => "undrained by the operator (ha-vip undrain)",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl EncodeLabelValue for TransitionReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}
