//! The failover decisions, and nothing else.
//!
//! [`Machine::step`] takes one [`Event`] with the time it happened and returns
//! the [`Action`]s the daemon must carry out, in order. It performs no I/O and
//! reads no clock, so the safety argument can be checked here alone:
//!
//! * Only a node whose health is stable-healthy campaigns for the lease.
//! * The VIPs are present only while we hold the lease, and never past the
//!   *fence deadline*: the moment the last successful renew was **sent** plus
//!   `renew_deadline`. Every VIP lifetime handed to the kernel is the whole
//!   seconds left until that deadline, rounded down, so even a frozen or
//!   killed daemon loses its VIPs by the deadline plus the kernel's deletion
//!   latency. A standby takes the lease only `lease_duration` after it saw the
//!   last renew, which it cannot see before it was sent; with
//!   `lease_duration > renew_deadline + fence latency` the two never overlap.
//! * Whenever the VIPs must go, removing them is the first action returned.
//! * A node whose VIP interface has no carrier serves nobody: losing it makes
//!   the holder remove its VIPs and release at once, and a carrier that comes
//!   back counts only after the stability buffer, like a probe result.

use std::time::Duration;

use tokio::time::Instant;

pub use crate::role::{Role, TransitionReason as Reason};

/// Something that happened, as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The stability-filtered health of the local API server changed.
    Health {
        /// Healthy or not.
        healthy: bool,
    },
    /// We now hold the lease; the write that took it was sent at `sent_at`.
    Acquired {
        /// When the successful create/update was sent.
        sent_at: Instant,
    },
    /// A renew sent at `sent_at` succeeded.
    Renewed {
        /// When the successful update was sent.
        sent_at: Instant,
    },
    /// The lease store reports we no longer hold the lease.
    Lost,
    /// The fence deadline timer ([`Machine::next_deadline`]) fired.
    Deadline,
    /// Adding a VIP failed (no interface, no permission, ...): a node that
    /// cannot serve the VIP must not keep the lease.
    VipFailed,
    /// SIGTERM or SIGINT: hand over and stop.
    Shutdown,
    /// The VIP interface lost its carrier or vanished (`up: false`), or is
    /// up with a carrier again (`up: true`).
    Carrier {
        /// Carrier present (and the link administratively up).
        up: bool,
    },
    /// The machine slept: CLOCK_BOOTTIME passed the fence, or ran ahead of
    /// the monotonic clock. Our fence and the kernel's VIP lifetimes stood
    /// still meanwhile, so neither can be trusted: the VIPs go first, and no
    /// lease write sent before now counts.
    Slept,
    /// logind announced a suspend: hand over (VIPs, then Lease) and stay
    /// out of the election until [`Event::Resumed`].
    Suspending,
    /// logind announced the resume: campaign again once healthy.
    Resumed,
    /// `ha-vip drain` (or a drained state found at start): hand over
    /// (VIPs, then Lease) and stay out of the election until
    /// [`Event::Undrain`].
    Drain,
    /// `ha-vip undrain`: campaign again once healthy.
    Undrain,
    /// `ha-vip handover`: the holder hands over (VIPs, then Lease) and
    /// stays out of the election for `hold`, so a standby takes the Lease.
    Handover {
        /// How long this node keeps out after releasing.
        hold: Duration,
    },
}

/// Something the daemon must do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove every VIP from the interface and stop announcing.
    RemoveVips,
    /// Add every VIP (or refresh it) with this kernel lifetime (whole seconds, at least 1).
    SetVips {
        /// `valid_lft` for every VIP.
        lifetime: Duration,
    },
    /// Start the announcement schedule (burst now, second burst, refresh).
    Announce,
    /// Tell the lease elector whether to compete for / keep the lease.
    /// `false` releases a held lease.
    Campaign(bool),
    /// One INFO line and a metric: the role changed.
    Transition {
        /// Old role.
        from: Role,
        /// New role.
        to: Role,
        /// Why.
        reason: Reason,
    },
}

/// The failover state of one node.
#[derive(Debug, Clone)]
pub struct Machine {
    renew_deadline: Duration,
    role: Role,
    healthy: bool,
    /// While leader: the instant after which our VIPs must be gone.
    fence: Option<Instant>,
    /// Whether we asked for the VIPs to be on the interface.
    vips_set: bool,
    /// After a VIP failure or a handover: campaign again (if healthy) at
    /// this instant.
    retry_at: Option<Instant>,
    /// The last campaign wish sent to the elector.
    campaigning: bool,
    /// Whether the VIP interface has had a carrier for the buffer.
    carrier: bool,
    /// After the carrier came back: it counts from this instant on.
    carrier_back_at: Option<Instant>,
    /// How long a carrier that came back must stay before it counts.
    carrier_buffer: Duration,
    /// How far past the fence the VIPs' kernel lifetime may reach: zero
    /// when the lifetime is the fence, one second when a precise fence
    /// stands in front of it (see `config::defaults::PRECISE_OUTER_SLACK`).
    outer_slack: Duration,
    /// Between [`Event::Suspending`] and [`Event::Resumed`]: do not campaign.
    suspended: bool,
    /// When a sleep was last noticed: a lease write sent before it may be
    /// older than the monotonic clock says, so it grants nothing.
    slept_at: Option<Instant>,
    /// Between [`Event::Drain`] and [`Event::Undrain`]: do not campaign.
    drained: bool,
}

/// How long a node whose VIP could not be added stays out of the election.
pub const VIP_FAILURE_BACKOFF: Duration = Duration::from_secs(5);

impl Machine {
    /// A follower that starts unhealthy: it campaigns only once the local API
    /// server has proven healthy for the whole stability buffer.
    pub fn new(renew_deadline: Duration) -> Self {
        Self {
            renew_deadline,
            role: Role::Follower,
            healthy: false,
            fence: None,
            vips_set: false,
            retry_at: None,
            campaigning: false,
            carrier: true,
            carrier_back_at: None,
            carrier_buffer: Duration::ZERO,
            outer_slack: Duration::ZERO,
            suspended: false,
            slept_at: None,
            drained: false,
        }
    }

    /// Whether the operator drained this node.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// The same machine, whose VIP interface's carrier counts again only
    /// after it has been back for `buffer` (the health stability buffer: a
    /// flapping link must not flap the VIP).
    pub fn with_carrier_buffer(mut self, buffer: Duration) -> Self {
        self.carrier_buffer = buffer;
        self
    }

    /// Lets the VIPs' kernel lifetime reach `slack` past the fence deadline:
    /// for a precise fence that stops them serving at the deadline itself.
    pub fn with_outer_slack(mut self, slack: Duration) -> Self {
        self.outer_slack = slack;
        self
    }

    /// Whether the VIP interface counts as having a carrier.
    pub fn carrier(&self) -> bool {
        self.carrier
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current stable health.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Whether the VIPs should be on the interface now.
    pub fn vips_set(&self) -> bool {
        self.vips_set
    }

    /// While leader: the instant by which our VIPs must be gone.
    pub fn fence(&self) -> Option<Instant> {
        self.fence
    }

    /// Whether the machine last asked the elector to compete.
    pub fn campaigning(&self) -> bool {
        self.campaigning
    }

    /// When the daemon must deliver [`Event::Deadline`], if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.fence, self.retry_at, self.carrier_back_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The kernel lifetime a VIP added at `now` may have: the whole seconds
    /// left before the fence deadline (plus the outer slack), or `None` when
    /// the deadline has passed or less than one second is left (then the
    /// VIP must not be (re)added at all).
    pub fn lifetime(&self, now: Instant) -> Option<Duration> {
        let fence = self.fence.filter(|&f| f > now)?;
        let left = (fence + self.outer_slack).checked_duration_since(now)?;
        let secs = left.as_secs();
        (secs >= 1).then(|| Duration::from_secs(secs))
    }

    /// Applies `event` that happened at `now`.
    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // A deadline that has passed takes effect before anything else.
        if self.fence.is_some_and(|f| now >= f) && self.role == Role::Leader {
            self.lose(Reason::RenewDeadline, &mut out);
        }
        match event {
            Event::Health { healthy } => {
                self.healthy = healthy;
                if healthy {
                    if self.may_campaign() {
                        self.campaign(true, &mut out);
                    }
                } else {
                    if self.role == Role::Leader {
                        self.lose(Reason::Unhealthy, &mut out);
                    }
                    if self.role != Role::Stopping {
                        self.campaign(false, &mut out);
                    }
                }
            }
            Event::Acquired { sent_at } | Event::Renewed { sent_at } => {
                self.held(sent_at, now, &mut out);
            }
            Event::Lost => {
                if self.role == Role::Leader {
                    self.lose(Reason::LeaseLost, &mut out);
                }
            }
            Event::Deadline => {
                if self.retry_at.is_some_and(|r| now >= r) {
                    self.retry_at = None;
                    if self.may_campaign() {
                        self.campaign(true, &mut out);
                    }
                }
                self.carrier_settled(now, &mut out);
            }
            Event::Carrier { up: false } => {
                self.carrier = false;
                self.carrier_back_at = None;
                if self.role == Role::Leader {
                    self.lose(Reason::CarrierLost, &mut out);
                }
                if self.role != Role::Stopping {
                    self.campaign(false, &mut out);
                }
            }
            Event::Carrier { up: true } => {
                if !self.carrier && self.carrier_back_at.is_none() {
                    self.carrier_back_at = Some(now + self.carrier_buffer);
                    self.carrier_settled(now, &mut out);
                }
            }
            Event::VipFailed => {
                if self.role == Role::Leader {
                    self.lose(Reason::VipFailed, &mut out);
                    self.campaign(false, &mut out);
                    self.retry_at = Some(now + VIP_FAILURE_BACKOFF);
                }
            }
            Event::Shutdown => {
                if self.role != Role::Stopping {
                    if self.vips_set || self.role == Role::Leader {
                        self.vips_set = false;
                        out.push(Action::RemoveVips);
                    }
                    self.fence = None;
                    self.retry_at = None;
                    self.carrier_back_at = None;
                    self.transition(Role::Stopping, Reason::Shutdown, &mut out);
                    self.campaign(false, &mut out);
                }
            }
            Event::Slept => {
                self.slept_at = Some(now);
                if self.role == Role::Leader {
                    self.lose(Reason::Suspended, &mut out);
                }
            }
            Event::Suspending => {
                if self.role != Role::Stopping {
                    if self.role == Role::Leader {
                        self.lose(Reason::Suspending, &mut out);
                    }
                    // A VIP-failure back-off still runs: asleep or not,
                    // that node stays out for all of it.
                    self.suspended = true;
                    self.campaign(false, &mut out);
                }
            }
            Event::Resumed => {
                // Whatever was sent before the suspend is stale.
                self.slept_at = Some(now);
                if self.suspended {
                    self.suspended = false;
                    if self.may_campaign() {
                        self.campaign(true, &mut out);
                    }
                }
            }
            Event::Drain => {
                if self.role != Role::Stopping {
                    if self.role == Role::Leader {
                        self.lose(Reason::Drained, &mut out);
                    }
                    self.drained = true;
                    self.campaign(false, &mut out);
                }
            }
            Event::Undrain => {
                if self.drained {
                    self.drained = false;
                    if self.may_campaign() {
                        self.campaign(true, &mut out);
                    }
                }
            }
            Event::Handover { hold } => {
                if self.role == Role::Leader {
                    self.lose(Reason::HandedOver, &mut out);
                    self.campaign(false, &mut out);
                    // Like the VIP-failure back-off: a later one keeps the
                    // longer wait.
                    let until = now + hold;
                    self.retry_at = Some(self.retry_at.map_or(until, |r| r.max(until)));
                }
            }
        }
        out
    }

    /// A lease write sent at `sent_at` succeeded: we hold the lease until
    /// `sent_at + renew_deadline` at the latest.
    fn held(&mut self, sent_at: Instant, now: Instant, out: &mut Vec<Action>) {
        let fence = sent_at + self.renew_deadline;
        match self.role {
            // The elector is releasing; nothing to hold. (The machine is
            // never Starting: that role is only the status file's.)
            Role::Stopping | Role::Starting => {}
            // Raced with a health loss or a VIP failure (a write that was in
            // flight when we gave up): give the lease back.
            Role::Follower if !self.campaigning => self.campaign(false, out),
            // Sent before a sleep we noticed since: its fence is on a clock
            // that stood still, so it may have passed already.
            _ if self.slept_at.is_some_and(|s| sent_at < s) => {}
            Role::Leader => {
                self.fence = Some(self.fence.map_or(fence, |f| f.max(fence)));
                self.set_vips(now, out);
            }
            // Also covers a renew answered after our own deadline demoted us:
            // the write still entitles us up to its fence, if that is ahead.
            Role::Follower if fence > now => {
                self.fence = Some(fence);
                self.transition(Role::Leader, Reason::AcquiredLease, out);
                self.set_vips(now, out);
            }
            // Too late to use; the next renew decides.
            Role::Follower => {}
        }
    }

    /// A carrier back for the whole buffer counts again: campaign if
    /// nothing else holds us back.
    fn carrier_settled(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.carrier_back_at.is_some_and(|t| now >= t) {
            self.carrier_back_at = None;
            self.carrier = true;
            if self.may_campaign() {
                self.campaign(true, out);
            }
        }
    }

    /// Whether a follower may compete for the lease now: stable-healthy, a
    /// VIP interface with a carrier, not backing off after a VIP failure or
    /// a handover, not suspended, not drained.
    fn may_campaign(&self) -> bool {
        self.role == Role::Follower
            && self.healthy
            && self.carrier
            && self.retry_at.is_none()
            && !self.suspended
            && !self.drained
    }

    /// Leaves leadership: the VIPs go first.
    fn lose(&mut self, reason: Reason, out: &mut Vec<Action>) {
        self.vips_set = false;
        self.fence = None;
        out.push(Action::RemoveVips);
        self.transition(Role::Follower, reason, out);
    }

    /// Adds or refreshes the VIPs with the lifetime the fence allows; announces
    /// when they were not there before.
    fn set_vips(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(lifetime) = self.lifetime(now) else {
            // Under a second left: adding now could outlive the fence. The
            // next renew (or the deadline) decides.
            return;
        };
        out.push(Action::SetVips { lifetime });
        if !self.vips_set {
            self.vips_set = true;
            out.push(Action::Announce);
        }
    }

    fn campaign(&mut self, on: bool, out: &mut Vec<Action>) {
        self.campaigning = on;
        out.push(Action::Campaign(on));
    }

    fn transition(&mut self, to: Role, reason: Reason, out: &mut Vec<Action>) {
        let from = self.role;
        self.role = to;
        out.push(Action::Transition { from, to, reason });
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod control_tests;

#[cfg(test)]
mod sim;
