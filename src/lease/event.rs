//! What the elector is configured with and what it reports.

use tokio::time::{Duration, Instant};

use crate::kube::KubeError;

/// The longest `leaseDurationSeconds` written by another holder that an
/// elector honours, unless its own lease duration is longer. A holder that
/// stops renewing is replaced at most this long after its last change,
/// whatever it wrote; ha-vip nodes with `lease.duration` up to this value
/// are honoured in full, so rolling changes of the duration stay safe.
pub const DURATION_CEILING: Duration = Duration::from_secs(60);

/// The three timings of leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `leaseDurationSeconds`: how long a standby waits after it last saw
    /// the Lease change (at least; longer if the holder wrote a longer one),
    /// and after it first saw the Lease missing before it creates it (whole
    /// seconds; the fraction is dropped).
    pub duration: Duration,
    /// The holder has lost once this has passed since it sent its last
    /// successful renewal.
    pub renew_deadline: Duration,
    /// Period of renewals, and of polls while no watch is open.
    pub retry_period: Duration,
}

impl From<&crate::config::Lease> for Timings {
    fn from(l: &crate::config::Lease) -> Self {
        Self {
            duration: l.duration,
            renew_deadline: l.renew_deadline,
            retry_period: l.retry_period,
        }
    }
}

/// Why leadership ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// No renewal succeeded within the renew deadline.
    DeadlinePassed,
    /// Another node wrote the Lease (it holds it now, or released it); the
    /// holder as [`printable`](super::printable) text.
    HeldBy(Option<String>),
    /// The Lease object was deleted.
    Deleted,
    /// We gave it up: the campaign was stopped or ended.
    Released,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DeadlinePassed => f.write_str("no successful renewal within the renew deadline"),
            Self::HeldBy(Some(h)) => write!(f, "the lease is now held by {h}"),
            Self::HeldBy(None) => f.write_str("someone else released the lease"),
            Self::Deleted => f.write_str("the lease object was deleted"),
            Self::Released => f.write_str("released"),
        }
    }
}

/// What the elector reports, each stamped with the local monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// We hold the Lease; the winning write was sent at `sent_at`.
    Acquired {
        /// When the successful write was sent: the renew deadline counts from here.
        sent_at: Instant,
    },
    /// A renewal succeeded; it was sent at `sent_at`.
    Renewed {
        /// When the successful write was sent: the renew deadline counts from here.
        sent_at: Instant,
    },
    /// We no longer hold the Lease.
    Lost {
        /// Why.
        reason: LostReason,
        /// When the elector decided so.
        at: Instant,
    },
    /// The Lease's holder changed (or was seen for the first time).
    Observed {
        /// The holder as [`printable`](super::printable) text (control
        /// characters escaped, at most 253 characters), `None` when the Lease
        /// is free or absent.
        holder: Option<String>,
        /// When it was seen.
        at: Instant,
    },
    /// A request failed. 409s of a lost race are not reported; a follower
    /// reports a failure once, not again while the same request keeps
    /// failing the same way (the holder reports every failure).
    RequestFailed {
        /// What failed.
        error: KubeError,
        /// When it failed.
        at: Instant,
    },
}
