//! The VIP on the interface: add, refresh, remove and watch it over netlink.
//!
//! # The kernel fence
//!
//! Every VIP is added with a finite `valid_lft` ([`Lifetime`], whole seconds)
//! and `preferred_lft 0`, so it is never picked as a source address. The
//! daemon calls [`AddressTable::add_or_refresh`] after each successful lease
//! renewal; that replaces the address (`RTM_NEWADDR` with `NLM_F_REPLACE`) and
//! restarts its lifetime. If ha-vip freezes, crashes or is SIGKILLed, nobody
//! refreshes the address and the kernel deletes it by itself.
//!
//! The kernel deletes an expired address from a worker (IPv4
//! `check_lifetime`, IPv6 `addrconf_verify`), not at the exact instant. The
//! worker runs at the earliest expiry (rounded up to a whole second when
//! that costs under 250 ms), but never sooner than 1 s after its previous
//! run, and every address added or replaced anywhere makes it run at once.
//! Measured on Linux 6.18 in a network namespace, polling every 10 ms
//! (`cargo nextest run --test dataplane_fence --no-capture`):
//!
//! * quiet (no other address change): +0.015 to +0.13 s past the lifetime,
//!   IPv4 and IPv6 alike;
//! * another address changed 0.1 s before the expiry: +0.93 s.
//!
//! The kernel may also delete up to 20 ms *before* the lifetime ends (timer
//! fuzz), which is on the safe side.
//!
//! The margin this forces on lease timing: take the fence latency as
//! `F = 1.25 s` (the 1 s worker interval plus slack), not the quiet 0.1 s.
//! A holder whose last successful renewal was sent at `t` sets the lifetime
//! to `floor(R - (now - t))`, so its VIP is gone by `t + R + F`; a standby
//! may take the lease only at `t + D`. Hence `R + 1.25 s < D` (plus
//! clock-rate drift): D = 4 s, R = 2 s leaves 0.75 s.
//!
//! # Drift repair
//!
//! [`Watcher`] turns netlink address and link notifications into
//! [`NetEvent`]s. [`Guard`] consumes them and, while the daemon tells it that
//! it holds VIPs until a given instant, re-adds a VIP someone else removed
//! (with the lifetime that remains, never more) and re-announces after link
//! up. The daemon stays in charge of *whether* the VIP should be present.

mod error;
mod fake;
mod guard;
mod netlink;
mod watch;

use std::future::Future;
use std::time::Duration;

use crate::config::Vip;

pub use error::{Cause, CleanupError, VipError};
pub use fake::{FakeAddressTable, FakeOp};
pub use guard::{Guard, GuardError};
pub use netlink::NetlinkAddressTable;
pub(crate) use netlink::{connect, lookup_link};
pub use watch::{NetEvent, NetEvents, WatchedVips, Watcher};

/// A VIP's valid lifetime: whole seconds, at least 1, never infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lifetime(u32);

impl Lifetime {
    /// The longest lifetime accepted; `u32::MAX` would mean "forever" to the kernel.
    pub const MAX_SECS: u32 = u32::MAX - 1;

    /// A lifetime of `secs` seconds; `None` for 0 or more than [`Self::MAX_SECS`].
    pub fn from_secs(secs: u32) -> Option<Self> {
        (1..=Self::MAX_SECS).contains(&secs).then_some(Self(secs))
    }

    /// The whole seconds of `d`, rounded down; `None` below one second.
    ///
    /// Rounding down keeps the fence on the safe side: the kernel never keeps
    /// the VIP longer than the time the caller had left.
    pub fn floor(d: Duration) -> Option<Self> {
        Self::from_secs(u32::try_from(d.as_secs()).unwrap_or(Self::MAX_SECS))
    }

    /// The lifetime in seconds.
    pub fn secs(self) -> u32 {
        self.0
    }

    /// The lifetime as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }
}

/// The addresses of one interface, as far as ha-vip's VIPs are concerned.
///
/// [`NetlinkAddressTable`] is the real one; [`FakeAddressTable`] keeps them
/// in memory for unit tests (and honours lifetimes on tokio's clock).
pub trait AddressTable: Send + Sync {
    /// Name of the interface this table manages.
    fn interface(&self) -> &str;

    /// Adds `vip` if absent and (re)sets its valid lifetime to `lifetime`.
    ///
    /// Idempotent: a present VIP only gets its lifetime replaced.
    fn add_or_refresh(
        &self,
        vip: Vip,
        lifetime: Lifetime,
    ) -> impl Future<Output = Result<(), VipError>> + Send;

    /// Removes `vip`; `Ok(false)` when it was not there.
    fn remove(&self, vip: Vip) -> impl Future<Output = Result<bool, VipError>> + Send;

    /// Which of `vips` are on the interface now (same address and prefix).
    fn present(&self, vips: &[Vip]) -> impl Future<Output = Result<Vec<Vip>, VipError>> + Send;
}

/// Adds or refreshes `vip` so that the kernel deletes it by `until` at the
/// latest, and returns the lifetime it got; `Ok(None)` (and the VIP removed)
/// when less than a second is left.
///
/// The lifetime is computed right before the request, and checked again
/// once it is acknowledged: if the task stalled in between (a frozen
/// process, a busy thread, a slow netlink round trip), the kernel may have
/// started the lifetime late, so it is shortened, or the VIP removed. This
/// is what keeps the kernel fence inside the lease's renew deadline.
pub async fn set_until<T: AddressTable>(
    table: &T,
    vip: Vip,
    until: tokio::time::Instant,
) -> Result<Option<Lifetime>, VipError> {
    loop {
        let Some(lifetime) =
            Lifetime::floor(until.saturating_duration_since(tokio::time::Instant::now()))
        else {
            table.remove(vip).await?;
            return Ok(None);
        };
        table.add_or_refresh(vip, lifetime).await?;
        // The kernel applied it no later than now: its expiry is at most now + lifetime.
        if tokio::time::Instant::now() + lifetime.as_duration() <= until {
            return Ok(Some(lifetime));
        }
    }
}

/// Removes every VIP of `vips` from the interface, attempting all of them.
///
/// For `ha-vip release` and daemon start (a leftover of a crash). Returns the
/// VIPs that were present and removed; every failure is collected.
pub async fn remove_all<T: AddressTable>(
    table: &T,
    vips: &[Vip],
) -> Result<Vec<Vip>, CleanupError> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for &vip in vips {
        match table.remove(vip).await {
            Ok(true) => {
                tracing::info!(%vip, interface = table.interface(), "removed VIP");
                removed.push(vip);
            }
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(CleanupError { removed, errors })
    }
}

#[cfg(test)]
mod tests;
