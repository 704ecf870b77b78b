//! The Kubernetes Lease lock, client-go compatible, written for ha-vip.
//!
//! [`Elector`] competes for one `coordination.k8s.io/v1` Lease through a
//! [`LeaseStore`] ([`KubeLeaseStore`] for the API server, [`FakeLeaseStore`]
//! in memory) and reports [`LeaseEvent`]s. Expiry is judged on the local
//! monotonic clock only: a Lease held by another node expires
//! `max(leaseDurationSeconds, our lease duration)` (at most
//! `max(DURATION_CEILING, our lease duration)`) after this node saw it
//! change; a missing Lease may be created one lease duration after this node
//! first saw it missing; only a released Lease (empty holder) is taken at
//! once.

mod elector;
mod event;
mod fake;
mod record;
mod release;
mod store;

pub use elector::{Elector, HandoverSlot};
pub use event::{DURATION_CEILING, LeaseEvent, LostReason, Timings};
pub use fake::FakeLeaseStore;
pub use record::{
    HANDOVER_ANNOTATION, HANDOVER_HOLD, LeaseRecord, StoredLease, format_micro_time, printable,
};
pub use release::release_if_held;
pub use store::{KubeLeaseStore, LeaseStore, LeaseWatch, WATCH_TIMEOUT, WatchEvent};

#[cfg(test)]
mod tests;
