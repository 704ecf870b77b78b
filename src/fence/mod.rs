//! The precise fence: the kernel's data path stops serving the VIPs at an
//! absolute instant, whether or not ha-vip is still running.
//!
//! The VIP's `valid_lft` (see [`crate::vip`]) is the outer fence: whole
//! seconds, counted from when the kernel applied the request, enforced by a
//! worker up to ~1 s late. The precise fence sits in front of it: rules in
//! ha-vip's own nftables table that, after an absolute CLOCK_REALTIME
//! deadline, drop packets addressed to a VIP and the node's ARP and
//! neighbour-discovery answers for it. A rule update that lands late carries
//! a deadline that has already passed, so it is harmless.
//!
//! The daemon moves the deadline forward only after a successful renewal,
//! exactly like the lifetime, arms it *before* it adds or refreshes a VIP,
//! and clears the table only after the VIPs are gone.

pub mod nft;

use std::future::Future;
use std::net::IpAddr;
use std::time::SystemTime;

/// Why the precise fence could not be set or cleared.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The kernel has no nf_tables (module missing or not allowed).
    #[error(
        "the kernel does not support nftables ({detail}): load the nf_tables module (modprobe nf_tables), or set fence.mode: lifetime to fence with the VIP's kernel lifetime alone (slower failover)"
    )]
    Unsupported {
        /// What the kernel answered.
        detail: String,
    },
    /// A request to the kernel failed.
    #[error("failed to {action} the precise fence (nftables table {table}): {detail}")]
    Kernel {
        /// What was being done: "arm", "clear".
        action: &'static str,
        /// The table's name.
        table: &'static str,
        /// The kernel's or the socket's error.
        detail: String,
    },
}

/// A fence in the kernel's data path with an absolute deadline.
pub trait PreciseFence: Send + Sync {
    /// Makes the kernel stop serving `vips` after `deadline` (CLOCK_REALTIME,
    /// nanosecond precision): no packet addressed to them is accepted, no ARP
    /// reply or neighbour advertisement for them leaves. Replaces any earlier
    /// deadline and VIP set atomically (one transaction).
    fn arm(
        &self,
        vips: &[IpAddr],
        deadline: SystemTime,
    ) -> impl Future<Output = Result<(), FenceError>> + Send;

    /// Removes ha-vip's table; `Ok` when it was not there. Called at start
    /// and after the VIPs are removed on release.
    fn clear(&self) -> impl Future<Output = Result<(), FenceError>> + Send;
}

pub use nft::NftFence;
mod mode;
pub use mode::{
    ModeFence, STEP_THRESHOLD, Step, StepDetector, SystemClock, WallClock, realtime_of,
};
