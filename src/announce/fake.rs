//! An [`Announcer`] that records calls, for unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AnnounceStats, Announcer};
use crate::config::Vip;

/// One call made on a [`FakeAnnouncer`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceCall {
    /// `start(vip)`.
    Start(Vip),
    /// `burst(vip)` (recorded even when the VIP is not started).
    Burst(Vip),
    /// `stop(vip)`.
    Stop(Vip),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<AnnounceCall>,
    active: BTreeSet<Vip>,
    deadlines: BTreeMap<Vip, tokio::time::Instant>,
    stats: AnnounceStats,
}

/// Records calls; clones share state. Counts one frame per start or
/// accepted burst (garp for IPv4, na for IPv6).
#[derive(Debug, Clone, Default)]
pub struct FakeAnnouncer(Arc<Mutex<State>>);

impl FakeAnnouncer {
    /// A fake with nothing started.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<AnnounceCall> {
        self.lock().calls.clone()
    }

    /// The fence deadline last set for `vip`.
    pub fn deadline(&self, vip: Vip) -> Option<tokio::time::Instant> {
        self.lock().deadlines.get(&vip).copied()
    }

    /// VIPs started and not stopped.
    pub fn active(&self) -> Vec<Vip> {
        self.lock().active.iter().copied().collect()
    }
}

fn count(stats: &mut AnnounceStats, vip: Vip) {
    if vip.addr.is_ipv4() {
        stats.garp += 1;
    } else {
        stats.na += 1;
    }
}

impl Announcer for FakeAnnouncer {
    fn fence(&self, vip: Vip, until: tokio::time::Instant) {
        self.lock().deadlines.insert(vip, until);
    }

    fn start(&self, vip: Vip) {
        let mut s = self.lock();
        s.calls.push(AnnounceCall::Start(vip));
        s.active.insert(vip);
        count(&mut s.stats, vip);
    }

    fn burst(&self, vip: Vip) {
        let mut s = self.lock();
        s.calls.push(AnnounceCall::Burst(vip));
        if s.active.contains(&vip) {
            count(&mut s.stats, vip);
        }
    }

    fn stop(&self, vip: Vip) {
        let mut s = self.lock();
        s.calls.push(AnnounceCall::Stop(vip));
        s.active.remove(&vip);
        s.deadlines.remove(&vip);
    }

    fn stats(&self) -> AnnounceStats {
        self.lock().stats
    }
}
