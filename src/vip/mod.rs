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
//! That is the whole argument in `fence.mode: lifetime`. In the default
//! `fence.mode: precise` an nftables deadline at the fence itself stops the
//! VIP serving first, armed before every add or refresh, and the lifetime
//! becomes the outer bound, reaching one second past the fence so that a
//! 1 s renew deadline still gives whole seconds; the inequality is then
//! `D >= R + 250 ms`. The argument, clock steps and the residual case are
//! in `daemon/fence.rs`.
//!
//! # A request that lands late
//!
//! The lifetime counts from when the kernel *applies* the request, not from
//! when ha-vip computed it. The kernel handles an `RTM_NEWADDR` inside the
//! `sendmsg` that carries it, once it holds RTNL, one lock for every
//! namespace on the host; another process can hold it for seconds (deleting
//! a namespace with many links does: 1.2 s for 160 veth pairs of 1024
//! queues here, `tests/dataplane_late.rs`). The kernel's own expiry workers
//! (IPv4 `check_lifetime`, IPv6 `addrconf_verify_work`) take RTNL to delete
//! an address too, so while someone holds it nothing is deleted either;
//! ARP and neighbour replies do not need it, so a VIP that is still there
//! keeps answering. What ha-vip does about it:
//!
//! * requests run on a netlink thread of their own ([`connect`]), so the
//!   daemon's timers and lease renewals go on while one waits;
//! * the lifetime is computed after the link lookup, right before the
//!   request that carries it ([`AddressTable::add_until`]): a request that
//!   waited in the lookup finds the fence passed and sends nothing;
//! * a request answered so late that `answer + lifetime` passes the fence
//!   is corrected at once ([`set_until`]: shortened, or the VIP removed,
//!   removal retried), and [`Tracked`] records for every request
//!   `answer + lifetime` (unknown while unanswered), which the daemon waits
//!   out before it releases the lease when a removal fails.
//!
//! The bound: a VIP of ours is gone by `fence + F` or by `end of the RTNL
//! hold + C`, whichever is later, where C is the correction latency
//! (`cargo nextest run --test dataplane_late --no-capture`, three runs on a
//! busy 2-core host: the VIP stopped answering a peer between 2 ms before
//! and 33 ms after the hold's end as an independent probe saw it; the
//! correction itself, from the late answer to the VIP removed, took 0 to
//! 13 ms). The tests allow C = 0.5 s. Both terms assume the correction's
//! removal works: if it fails too (a broken driver during the hold), the
//! late request keeps the VIP for its whole lifetime from the hold's end,
//! up to `renew_deadline`; the daemon then holds its release back that
//! long ([`Tracked`]), but a Lease lost by expiry meanwhile is not held
//! back (seed 258 of `HA_VIP_SIM_FAULTS=late-apply`). The second term is the residual that the
//! kernel lifetime alone cannot remove: a hold still running when the
//! fence passes delays the kernel's own deletion just as much, and a
//! process stopped between computing and sending (SIGSTOP) re-adds the VIP
//! for C when it continues. An absolute-time fence in nftables removes it
//! (`fence.mode: precise`): a late request lands behind a deadline that
//! has passed.
//!
//! # Which addresses are ha-vip's
//!
//! A VIP is created exclusively (`NLM_F_EXCL`); ha-vip replaces, removes
//! (also `ha-vip release`) or counts as present only an address that carries
//! its marks (see `netlink.rs`: the configured prefix, a finite valid
//! lifetime with preferred 0, plus the label `<dev>:vip` for IPv4 or
//! `nodad` for IPv6). A VIP that is already one of the node's own addresses
//! is refused at start ([`refuse_foreign`]).
//!
//! # Drift repair
//!
//! [`Watcher`] turns netlink address and link notifications into
//! [`NetEvent`]s. [`Guard`] consumes them and, while the daemon tells it that
//! it holds VIPs until a given instant, re-adds a VIP someone else removed
//! (with the lifetime that remains, never more) and re-announces after link
//! up. The daemon stays in charge of *whether* the VIP should be present.

mod error;
mod exposure;
mod fake;
mod guard;
mod netlink;
mod watch;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Vip;

pub use error::{Cause, CleanupError, VipError};
pub use exposure::{Tracked, UpUntil};
pub use fake::{FakeAddressTable, FakeOp};
pub use guard::{Guard, GuardError};
pub(crate) use netlink::{Driver, connect, lookup_link};
pub use netlink::{Foreign, NetlinkAddressTable};
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

    /// Adds or refreshes `vip` with the whole seconds left until `until`,
    /// computed as late as the table can, right before the request that
    /// carries it; `Ok(None)`, and nothing sent, when under a second is left.
    ///
    /// Returns the lifetime sent. The kernel started it somewhere between
    /// the call and its return, so the VIP is gone by the return instant
    /// plus that lifetime (plus the kernel's deletion latency).
    fn add_until(
        &self,
        vip: Vip,
        until: Instant,
    ) -> impl Future<Output = Result<Option<Lifetime>, VipError>> + Send {
        async move {
            match Lifetime::floor(until.saturating_duration_since(Instant::now())) {
                Some(l) => self.add_or_refresh(vip, l).await.map(|()| Some(l)),
                None => Ok(None),
            }
        }
    }

    /// Removes `vip`; `Ok(false)` when it was not there.
    fn remove(&self, vip: Vip) -> impl Future<Output = Result<bool, VipError>> + Send;

    /// Which of `vips` are on the interface now (same address and prefix).
    fn present(&self, vips: &[Vip]) -> impl Future<Output = Result<Vec<Vip>, VipError>> + Send;
}

/// How often a removal that corrects a late request is tried at once.
const CORRECTION_ATTEMPTS: u32 = 3;

/// Adds or refreshes `vip` so that the kernel deletes it by `until` at the
/// latest, and returns the lifetime it got; `Ok(None)` (and the VIP removed)
/// when less than a second is left.
///
/// The lifetime is computed right before the request ([`AddressTable::add_until`])
/// and checked once it is acknowledged: if the request waited (a frozen
/// process, the RTNL lock held by someone else, a slow round trip), the
/// kernel may have started the lifetime late, so it is corrected at once,
/// shortened, or the VIP removed. A failed correction falls back to
/// removal, tried [`CORRECTION_ATTEMPTS`] times; if even that fails the
/// error is returned and the VIP may live until the late acknowledgement
/// plus its lifetime, which [`Tracked::up_until`] reports. See the module
/// docs for the bound this gives.
pub async fn set_until<T: AddressTable>(
    table: &T,
    vip: Vip,
    until: Instant,
) -> Result<Option<Lifetime>, VipError> {
    let mut late = false;
    loop {
        match table.add_until(vip, until).await {
            Ok(None) => {
                remove_now(table, vip).await?;
                return Ok(None);
            }
            // Acknowledged now: the kernel started it no later than now.
            Ok(Some(l)) if Instant::now() + l.as_duration() <= until => return Ok(Some(l)),
            Ok(Some(l)) => {
                tracing::warn!(
                    %vip,
                    interface = table.interface(),
                    lifetime_secs = l.secs(),
                    "netlink request acknowledged late (RTNL busy or process stalled); correcting the VIP's lifetime"
                );
                late = true;
            }
            Err(e) if late => {
                // The late request may outlive the fence: take the VIP off.
                remove_now(table, vip).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes `vip`, retrying at once a few times: it corrects a request
/// that may outlive the fence.
async fn remove_now<T: AddressTable>(table: &T, vip: Vip) -> Result<(), VipError> {
    let mut attempt = 1;
    loop {
        match table.remove(vip).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt >= CORRECTION_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(%vip, interface = table.interface(), error = %e, attempt, "removing the VIP failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Refuses VIPs that are already the node's own addresses (on any
/// interface, any prefix) and were not added by ha-vip: replacing or
/// removing them would break the node. Call at start, before anything else
/// touches the VIPs; a leftover of ha-vip's own passes and is cleaned up.
pub async fn refuse_foreign(table: &NetlinkAddressTable, vips: &[Vip]) -> Result<(), VipError> {
    match table.foreign(vips).await?.into_iter().next() {
        Some(f) => Err(VipError::Foreign {
            vip: f.vip,
            interface: f.interface,
            address: f.address,
        }),
        None => Ok(()),
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
