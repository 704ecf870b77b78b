//! The simulated precise fence: per node, the deadline its kernel's
//! nftables rules hold (requests applied in order after a latency, like
//! the address table's), the node's real-time clock (which a fault may
//! step), and the predicate the overlap checker uses: a VIP *serves* on a
//! node while its address is present and the node's real-time clock has
//! not passed the armed deadline.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::SystemTime;

use tokio::time::{Duration, Instant, sleep_until};

use super::process::Process;
use super::world::{Shared, World};
use crate::config::Vip;
use crate::config::defaults::{FENCE_MARGIN, PRECISE_FENCE_MARGIN, PRECISE_OUTER_SLACK};
use crate::fence::{FenceError, PreciseFence, WallClock};

/// One request to a node's fence.
#[derive(Debug, Clone)]
pub(super) enum FenceOp {
    Arm(Vec<IpAddr>, SystemTime),
    Clear,
}

/// A node's fence: what the kernel holds, what is queued, its faults.
#[derive(Debug, Default)]
pub(super) struct NodeFence {
    /// The rules in force: these VIPs stop serving after the deadline.
    armed: Option<(Vec<IpAddr>, SystemTime)>,
    /// Requests not applied yet, in send order: (apply at, op, id).
    pending: VecDeque<(Instant, FenceOp, usize)>,
    last_apply: Option<Instant>,
    /// Arming fails until then (nftables refusing the transaction).
    pub(super) fail: Option<Instant>,
    /// Requests wait up to this long until the instant (a late apply).
    pub(super) slow: Option<(Instant, Duration)>,
    /// The real-time clock's offset from true time: (behind, by).
    offset: (bool, Duration),
}

/// The real-time clock of every node starts here (any fixed date will do).
const WALL_BASE: Duration = Duration::from_secs(1_800_000_000);

impl World {
    /// `node`'s real-time clock at `at`.
    pub(super) fn wall(&self, node: usize, at: Instant) -> SystemTime {
        let t = SystemTime::UNIX_EPOCH + WALL_BASE + at.duration_since(self.start);
        match self.fences[node].offset {
            (false, by) => t + by,
            (true, by) => t - by,
        }
    }

    /// Steps `node`'s real-time clock by `by`, backward if `back`.
    pub(super) fn step_clock(&mut self, node: usize, back: bool, by: Duration) {
        let now = self.now_settled;
        let (was_back, was) = self.fences[node].offset;
        let signed = |b: bool, d: Duration| {
            if b {
                -(d.as_nanos() as i128)
            } else {
                d.as_nanos() as i128
            }
        };
        let new = signed(was_back, was) + signed(back, by);
        self.fences[node].offset = (new < 0, Duration::from_nanos(new.unsigned_abs() as u64));
        let dir = if back { "backward" } else { "forward" };
        self.log(now, format!("clock {node}: real time stepped {by:?} {dir}"));
        // A backward step may let a fenced VIP serve again.
        self.check_serving(now);
    }

    /// Whether `node` has a fence request sent and not yet applied.
    pub(super) fn fence_pending(&self, node: usize) -> bool {
        !self.fences[node].pending.is_empty()
    }

    /// Whether `vip` serves on `node` at `at`.
    pub(super) fn serving(&self, node: usize, vip: Vip, at: Instant) -> bool {
        self.present(node, vip) && !self.fenced(node, vip, at)
    }

    fn fenced(&self, node: usize, vip: Vip, at: Instant) -> bool {
        match &self.fences[node].armed {
            Some((addrs, deadline)) => addrs.contains(&vip.addr) && self.wall(node, at) > *deadline,
            None => false,
        }
    }

    /// Queues a fence request; returns when it is applied, or the error
    /// the kernel answers at once.
    pub(super) fn send_fence(&mut self, node: usize, op: FenceOp) -> Result<Instant, FenceError> {
        let now = self.now_settled;
        let f = &self.fences[node];
        if matches!(op, FenceOp::Arm(..)) && f.fail.is_some_and(|u| now < u) {
            return Err(FenceError::Kernel {
                action: "arm",
                table: "ha_vip",
                detail: "simulated failure".into(),
            });
        }
        let max = match f.slow {
            Some((until, d)) if now < until => d,
            _ => Duration::from_millis(5),
        };
        let delay = Duration::from_micros(self.fence_rng.below(max.as_micros() as u64 + 1));
        let f = &mut self.fences[node];
        let apply_at = f.last_apply.map_or(now + delay, |l| l.max(now + delay));
        f.last_apply = Some(apply_at);
        self.fence_ops += 1;
        let id = self.fence_ops;
        self.fences[node].pending.push_back((apply_at, op, id));
        Ok(apply_at)
    }

    /// The earliest fence request due by `now`: (when, node).
    pub(super) fn due_fence(&self, now: Instant) -> Option<(Instant, usize)> {
        self.fences
            .iter()
            .enumerate()
            .filter_map(|(n, f)| f.pending.front().map(|p| (p.0, n)))
            .filter(|(at, _)| *at <= now)
            .min()
    }

    /// Applies `node`'s oldest fence request at `at`.
    pub(super) fn apply_fence(&mut self, node: usize, at: Instant) {
        let Some((_, op, _)) = self.fences[node].pending.pop_front() else {
            return;
        };
        let line = match &op {
            FenceOp::Arm(_, d) => {
                let left = d.duration_since(self.wall(node, at));
                format!(
                    "fence {node}: armed, {}",
                    match left {
                        Ok(l) => format!("{:.3}s ahead", l.as_secs_f64()),
                        Err(e) => format!("{:.3}s past", e.duration().as_secs_f64()),
                    }
                )
            }
            FenceOp::Clear => format!("fence {node}: cleared"),
        };
        self.fences[node].armed = match op {
            FenceOp::Arm(addrs, d) => Some((addrs, d)),
            FenceOp::Clear => None,
        };
        self.log(at, line);
        // A later deadline (or none) may let a present VIP serve again.
        self.check_serving(at);
    }

    /// Never two nodes serving one VIP.
    pub(super) fn check_serving(&mut self, at: Instant) {
        let mut found = Vec::new();
        for (n, v) in self.up() {
            if self.serving(n, v, at) {
                let others: Vec<usize> = (0..self.fences.len())
                    .filter(|&o| o > n && self.serving(o, v, at))
                    .collect();
                for o in others {
                    found.push(format!(
                        "split brain: {v} served by node {n} and node {o} at once"
                    ));
                }
            }
        }
        for what in found {
            self.violation(at, what);
        }
    }

    /// With the precise fence: the latest instant `node` may still serve a
    /// VIP (fence plus the precise margin), and have it on its kernel at
    /// all (the outer lifetime bound).
    pub(super) fn precise_bounds(&self, node: usize) -> Option<(Instant, Instant)> {
        self.fence_sent[node].map(|s| {
            let fence = s + self.renew_deadline;
            (
                fence + PRECISE_FENCE_MARGIN,
                fence + PRECISE_OUTER_SLACK + FENCE_MARGIN,
            )
        })
    }

    /// The precise fence's bounds for `vip` on `node` at `at`.
    pub(super) fn check_precise(&mut self, node: usize, vip: Vip, at: Instant) {
        let bounds = self.precise_bounds(node);
        let (serve_by, gone_by) = match bounds {
            Some(b) => b,
            None => (at - Duration::from_nanos(1), at - Duration::from_nanos(1)),
        };
        if at > serve_by && self.serving(node, vip, at) {
            let fence = bounds.map(|b| self.t(b.0 - PRECISE_FENCE_MARGIN));
            self.violation(
                at,
                format!(
                    "{vip} still served by node {node} past its fence ({}) plus {PRECISE_FENCE_MARGIN:?}",
                    fence.as_deref().unwrap_or("never held").trim()
                ),
            );
        }
        // A request that waits seconds for RTNL (late-apply) starts its
        // lifetime that much later: the address outlives the outer bound
        // as it outlives the lifetime fence (crate::vip's residual), but
        // fenced, it serves nobody; only serving is the invariant then.
        if at > gone_by && self.outer_checked {
            let fence = bounds.map(|b| self.t(b.0 - PRECISE_FENCE_MARGIN));
            self.violation(
                at,
                format!(
                    "{vip} still on node {node}'s kernel past its fence ({}) plus the outer lifetime bound",
                    fence.as_deref().unwrap_or("never held").trim()
                ),
            );
        }
    }
}

/// A daemon process's view of its node's fence.
pub(super) struct SimFence {
    pub(super) world: Shared,
    pub(super) node: usize,
    pub(super) process: Process,
}

impl SimFence {
    async fn request(&self, op: FenceOp) -> Result<(), FenceError> {
        self.process.running().await;
        let apply_at = self.world.lock().send_fence(self.node, op)?;
        sleep_until(apply_at).await;
        self.process.running().await;
        Ok(())
    }
}

impl PreciseFence for SimFence {
    async fn arm(&self, vips: &[IpAddr], deadline: SystemTime) -> Result<(), FenceError> {
        self.request(FenceOp::Arm(vips.to_vec(), deadline)).await
    }

    async fn clear(&self) -> Result<(), FenceError> {
        self.request(FenceOp::Clear).await
    }
}

/// A node's real-time clock, as its daemon reads it.
pub(super) struct SimWall {
    pub(super) world: Shared,
    pub(super) node: usize,
}

impl WallClock for SimWall {
    fn now(&self) -> SystemTime {
        self.world.lock().wall(self.node, Instant::now())
    }
}
