//! The precise fence in the main loop: armed before every add or refresh
//! of a VIP, re-armed when the real-time clock steps, cleared only after
//! the VIPs are gone.
//!
//! # The safety argument with the precise fence (`fence.mode: precise`)
//!
//! A holder whose last successful renewal was sent at `t` has the machine's
//! fence `f = t + R` (monotonic). Before any add or refresh it arms the
//! kernel's deadline `f` converted to CLOCK_REALTIME at that moment
//! ([`realtime_of`]); the add goes out only once the kernel acknowledged
//! the deadline, and the deadline moves forward only with a renewal, so a
//! VIP of ours never serves past `f` plus the fence's own lateness (under
//! 20 ms), whatever happens to the process after the arm: frozen, killed,
//! or a refresh that reaches the kernel seconds late (it lands behind a
//! deadline that has passed). A standby takes the Lease only `D` after it
//! saw the renewal sent at `t`. Hence `D >= R + PRECISE_FENCE_MARGIN`
//! (250 ms: the 20 ms, clock-rate drift over one `D`, and the 100 ms
//! within which a clock step is re-armed, see below).
//!
//! The VIP's kernel lifetime stays as the outer bound: the whole seconds
//! left until `f + 1 s` ([`crate::config::defaults::PRECISE_OUTER_SLACK`]),
//! at least 1 s since no VIP is added at or past `f`, so even `R = 1 s`
//! always sends a valid lifetime. The address is gone by
//! `f + 1 s + 1.25 s` unless a request waits for RTNL (issue 10's residual,
//! bounded as in [`crate::vip`]); that bound matters only if the nftables
//! rules are gone (an operator flushed the ruleset).
//!
//! On release and loss the VIPs are removed first, then the table cleared,
//! and only if no request that may still put a VIP on is unanswered. A
//! removal that fails is answered by arming [`FENCED_OUT`], a deadline long
//! past: once acknowledged the VIPs serve nobody, and the Lease may go
//! without waiting for their lifetime (this removes issue 10's double fault
//! of a late refresh whose correction fails; simulation seed 258 of
//! `HA_VIP_SIM_FAULTS=late-apply`). At start the table is cleared only when
//! no leftover VIP of ours is on the interface; otherwise it is fenced out.
//!
//! # Clock steps, and the residual case
//!
//! The deadline is absolute real time; `f` is monotonic. A suspend moves
//! both together as far as the deadline is concerned: the real-time clock
//! runs on while the machine sleeps, so the deadline fires when a standby
//! (whose clocks ran) may take over. A *step* of the real-time clock moves
//! it: forward, the deadline fires early (an outage, never an overlap);
//! backward by `s`, it fires `s` late. While armed the daemon compares the
//! two clocks' progress every [`STEP_CHECK`] ([`StepDetector`]) and re-arms
//! `f` at its new real-time value, with a WARN naming the step; a step that
//! hits within 100 ms of `f` is covered by the margin. What it cannot cover
//! is a backward step while ha-vip is frozen or dead: nobody re-arms, the
//! deadline fires `s` late, and only the outer lifetime, on the kernel's
//! monotonic clock, still removes the address by `f + 2.25 s`. Steps
//! smaller than [`crate::fence::STEP_THRESHOLD`] (10 ms) per check are not
//! re-armed; they are inside the margin.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Daemon;
use super::setup::Io;
use crate::config::FenceMode;
#[cfg(doc)]
use crate::config::defaults::PRECISE_FENCE_MARGIN;
use crate::fence::{FenceError, PreciseFence, StepDetector, WallClock, realtime_of};
use crate::vip;

/// How often the real-time clock is compared with the monotonic one while
/// a deadline is armed: a backward step makes the kernel's fence fire late
/// by the step until it is re-armed, so this bounds that delay (with the
/// re-arm's own latency) well inside the precise margin.
pub(crate) const STEP_CHECK: Duration = Duration::from_millis(100);

/// The deadline that stops the VIPs serving at once: long past, not "now",
/// which a backward step of the real-time clock would make a deadline in
/// the future again (simulation seed 109 found it: a removal that failed,
/// the VIPs fenced out at "now", the clock stepped back 6.7 s, and they
/// served again beside the new holder's).
pub(crate) const FENCED_OUT: SystemTime = SystemTime::UNIX_EPOCH;

/// The precise fence's state in the daemon.
pub(crate) struct FenceState<F, W> {
    /// The fence itself (none in `fence.mode: lifetime`).
    pub(crate) fence: F,
    /// The real-time clock the deadline is written on.
    pub(crate) wall: W,
    /// The monotonic fence instant the armed deadline stands for, and the
    /// real-time deadline it was armed with (acknowledged by the kernel).
    armed: Option<(Instant, SystemTime)>,
    /// Compares real-time and monotonic progress between two checks.
    detector: StepDetector,
    /// When the clocks are compared next (while armed).
    next_check: Option<Instant>,
}

impl<F: PreciseFence, W: WallClock> FenceState<F, W> {
    /// A fence with nothing armed.
    pub(crate) fn new(fence: F, wall: W) -> Self {
        let detector = StepDetector::new(&wall);
        Self {
            fence,
            wall,
            armed: None,
            detector,
            next_check: None,
        }
    }

    /// When the main loop must call [`Daemon::check_clock`].
    pub(crate) fn next_check(&self) -> Option<Instant> {
        self.next_check
    }
}

impl<I: Io> Daemon<I> {
    /// Every VIP of ours that may be on the interface: the configured
    /// ones and those a reload dropped but could not remove yet (without
    /// them in the rules, such a VIP would serve unfenced until its
    /// lifetime ends, beside a standby that took over).
    fn fence_addrs(&self) -> Vec<IpAddr> {
        self.cfg
            .vips
            .iter()
            .chain(&self.retired)
            .map(|v| v.addr)
            .collect()
    }

    fn precise(&self) -> bool {
        self.cfg.fence == FenceMode::Precise
    }

    /// Arms the precise fence for the monotonic instant `until`, converted
    /// to CLOCK_REALTIME now. Called before every add or refresh: a VIP is
    /// never put on without a deadline behind it. A failure leaves the
    /// previous deadline in place (the kernel applies all or nothing).
    pub(super) async fn arm_fence(&mut self, until: Instant) -> Result<(), FenceError> {
        if !self.precise() {
            return Ok(());
        }
        // Measured from the reading the deadline is computed from, not
        // from the acknowledgement: a step while the request is on its way
        // (seconds, under nftables contention) moves the deadline the
        // kernel got, and the next check must see it to re-arm.
        let detector = StepDetector::new(&self.fence.wall);
        let deadline = realtime_of(&self.fence.wall, until);
        let addrs = self.fence_addrs();
        match self.fence.fence.arm(&addrs, deadline).await {
            Ok(()) => {
                self.fence.armed = Some((until, deadline));
                self.fence.detector = detector;
                self.fence.next_check = Some(Instant::now() + STEP_CHECK);
                self.metrics.set_fence_deadline(Some(deadline));
                self.status.set_fence(self.cfg.fence, Some(deadline));
                Ok(())
            }
            Err(e) => {
                self.metrics.fence_arm_failed();
                Err(e)
            }
        }
    }

    /// After a failed removal: makes the kernel stop serving the VIPs at
    /// once ([`FENCED_OUT`]). True once the kernel acknowledged it: the
    /// VIPs may stay on the interface until their lifetime ends, but
    /// nothing reaches them, so the Lease may go.
    pub(super) async fn fence_out(&mut self) -> bool {
        if !self.precise() {
            return false;
        }
        let now = FENCED_OUT;
        let addrs = self.fence_addrs();
        match self.fence.fence.arm(&addrs, now).await {
            Ok(()) => {
                self.fence.armed = None;
                self.fence.next_check = None;
                self.metrics.set_fence_deadline(Some(now));
                self.status.set_fence(self.cfg.fence, Some(now));
                tracing::warn!(
                    interface = %self.cfg.interface,
                    "our VIPs could not be removed; the precise fence stopped them serving at once, and the kernel deletes them when their lifetime ends"
                );
                true
            }
            Err(e) => {
                self.metrics.fence_arm_failed();
                tracing::error!(
                    error = %e,
                    "cannot stop the VIPs serving with the precise fence either; holding the lease back until their kernel lifetime ends (check nftables: nft list tables)"
                );
                false
            }
        }
    }

    /// After every VIP was removed: removes ha-vip's table, unless a request
    /// that may still put a VIP on is unanswered (then the VIPs are fenced
    /// out instead, and the table stays until the next term arms it anew).
    pub(super) async fn clear_fence(&mut self) {
        if !self.precise() {
            return;
        }
        if !matches!(self.parts.table.up_until(), vip::UpUntil::Gone) {
            self.fence_out().await;
            return;
        }
        self.fence.armed = None;
        self.fence.next_check = None;
        match self.fence.fence.clear().await {
            Ok(()) => {
                self.metrics.set_fence_deadline(None);
                self.status.set_fence(self.cfg.fence, None);
            }
            // Harmless: no VIP of ours is on the interface for its rules
            // to let through, and the next term replaces them.
            Err(e) => tracing::warn!(
                error = %e,
                "failed to remove the precise fence's table after the VIPs; the next term replaces it (nft list table to inspect)"
            ),
        }
    }

    /// While a deadline is armed: compares the real-time clock's progress
    /// with the monotonic one and, after a step, re-arms the same monotonic
    /// instant at its new real-time value.
    pub(super) async fn check_clock(&mut self) {
        let step = self.fence.detector.check(&self.fence.wall);
        let Some((until, old)) = self.fence.armed else {
            self.fence.next_check = None;
            return;
        };
        self.fence.next_check = Some(Instant::now() + STEP_CHECK);
        let Some(step) = step else { return };
        tracing::warn!(
            step = %step,
            "the real-time clock was stepped {step} while the precise fence was armed; re-arming its deadline (check the time synchronisation: steps mean a clock far off)"
        );
        if let Err(e) = self.arm_fence(until).await {
            tracing::error!(
                error = %e,
                "cannot re-arm the precise fence after the clock step; removing the VIPs and releasing the lease"
            );
            if step.forward {
                // The old deadline now fires early: safe, only an outage.
                self.fence.armed = Some((until, old));
            }
            self.step(crate::machine::Event::VipFailed).await;
        }
    }
}
