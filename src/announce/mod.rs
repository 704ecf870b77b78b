//! Tells the LAN where the VIP lives: gratuitous ARP and unsolicited NA.
//!
//! On acquire the daemon calls [`Announcer::start`]: a burst at once
//! (`count` rounds, `spacing` apart), a second burst after
//! `second_burst_delay`, then optionally one round every `refresh_interval`.
//! A round is, for IPv4, an ARP announcement in both forms (request and
//! reply); for IPv6, one unsolicited neighbour advertisement.
//! [`Announcer::burst`] re-announces on demand (link up, drift repair) and
//! [`Announcer::stop`] ends every announcement of the VIP at once. Nothing is
//! ever sent for a VIP between `stop` and the next `start`, nor after the
//! fence deadline the daemon last gave with [`Announcer::fence`] (see
//! [`fence`](self::fence) for why).

pub mod conflict;
mod fake;
mod fence;
pub mod packet;
mod raw;
mod socket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Vip;
use crate::vip::Cause;

pub use fake::{AnnounceCall, FakeAnnouncer};
pub use raw::RawAnnouncer;

/// When announcements are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Rounds per burst (at least 1).
    pub count: u32,
    /// Time between the rounds of a burst.
    pub spacing: Duration,
    /// Delay from the first burst to the second.
    pub second_burst_delay: Duration,
    /// One round every this long while held; `None` for no refresh.
    pub refresh_interval: Option<Duration>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            count: 3,
            spacing: Duration::from_millis(150),
            second_burst_delay: Duration::from_secs(2),
            refresh_interval: None,
        }
    }
}

/// What has been sent so far, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnnounceStats {
    /// Gratuitous ARP frames sent (requests and replies).
    pub garp: u64,
    /// Unsolicited neighbour advertisements sent.
    pub na: u64,
    /// Frames that could not be sent (and bursts that found no link).
    pub errors: u64,
}

/// Lock-free counters behind [`AnnounceStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    garp: AtomicU64,
    na: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> AnnounceStats {
        AnnounceStats {
            garp: self.garp.load(Ordering::Relaxed),
            na: self.na.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Sends the announcements of held VIPs.
///
/// Methods return at once; the sending happens on tokio tasks.
pub trait Announcer: Send + Sync {
    /// Sets the fence deadline of `vip`: nothing is sent for it at or after
    /// `until`. The daemon calls it on every refresh of the VIP, before
    /// [`Self::start`]; without a deadline nothing is sent at all.
    fn fence(&self, vip: Vip, until: tokio::time::Instant);
    /// Starts the schedule for `vip` (restarting it if already running).
    fn start(&self, vip: Vip);
    /// Sends one extra burst for `vip` if it is started; otherwise nothing.
    fn burst(&self, vip: Vip);
    /// Stops every announcement of `vip` at once.
    fn stop(&self, vip: Vip);
    /// Counters of what was sent.
    fn stats(&self) -> AnnounceStats;
}

/// A failed step of setting up the announcer.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The raw packet socket could not be opened.
    #[error("failed to open a raw packet socket for announcements on {interface}: {cause}")]
    Socket {
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: std::io::Error,
    },
    /// The netlink socket (to read the interface's MAC) could not be opened.
    #[error("failed to open a netlink socket for announcements on {interface}: {cause}")]
    Netlink {
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: Cause,
    },
}
