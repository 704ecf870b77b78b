//! The faults a seed injects: what each one does to a node, the network,
//! the kernel or the Lease, and how long it takes the node out.

use tokio::time::{Duration, Instant};

use super::Sim;
use super::liveness::Obligation;
use crate::daemon::sim::node;
use crate::daemon::sim::rng::Rng;
use crate::lease::LeaseRecord;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Shutdown,
    Freeze(Duration),
    Partition(Duration),
    Unhealthy(Duration),
    RemoveFail(Duration),
    /// Adding the last VIP and removing any fail (a broken driver).
    NicBroken(Duration),
    LinkLoss(Duration),
    KernelSlow(Duration, Duration),
    LeaseSlow(Duration, Duration),
    Lossy(Duration, u64),
    ExternalWrite,
    /// `kubectl delete lease`. Unless `early_delete`, only once every node
    /// has seen the current Lease (2 s after its creation, no node frozen
    /// or cut off since): a node that saw it missing for a lease duration
    /// and whose create is in flight (or was held back by a freeze)
    /// creates it anew right after the delete while the holder still has
    /// its VIP. The elector now tells from its watch and waits a lease
    /// duration before leading (seeds 97 and 375 with
    /// `HA_VIP_SIM_FAULTS=early-delete` in the regression seeds).
    DeleteLease,
    SecondInstance,
}

impl Sim {
    /// A real-time clock step on a running node, or (precise fence only)
    /// a fence that fails to arm or applies its requests late.
    pub(super) fn clock_fault(&mut self, now: Instant) {
        let r = &mut self.clock_rng;
        let i = r.below(self.nodes.len() as u64) as usize;
        let kind = r.below(4);
        let t = r.ms(300, 6000);
        let precise = self.world.lock().precise;
        let s = &mut self.nodes[i];
        // Only while ha-vip runs there: a frozen or killed one cannot
        // re-arm, which is the residual case (see above).
        if s.instances.is_empty()
            || s.instances
                .iter()
                .any(|inst| inst.process.is_frozen() || inst.process.dead())
        {
            return;
        }
        let mut w = self.world.lock();
        match kind {
            2 if precise => {
                w.log(now, format!("FAULT node {i}: fence arming fails for {t:?}"));
                w.fences[i].fail = Some(now + t);
                s.impaired_until = s.impaired_until.max(now + t + node::health_lag(&s.cfg));
            }
            3 if precise => {
                let max = r.ms(20, 3000);
                w.log(
                    now,
                    format!("FAULT node {i}: fence requests wait up to {max:?} for {t:?}"),
                );
                w.fences[i].slow = Some((now + t, max));
                s.impaired_until = s.impaired_until.max(now + t + node::health_lag(&s.cfg));
            }
            _ => {
                let by = r.ms(20, 30_000);
                let back = r.percent(50);
                w.step_clock(i, back, by);
                self.stats.clock_steps += 1;
            }
        }
    }

    fn pick(&mut self) -> Fault {
        let d = |rng: &mut Rng| rng.ms(300, 12_000);
        let r = &mut self.rng;
        match r.below(if self.opts.two_instances { 15 } else { 14 }) {
            0 => Fault::Kill,
            1 => Fault::Shutdown,
            2 => Fault::Freeze(d(r)),
            3 => Fault::Partition(d(r)),
            4 | 5 => Fault::Unhealthy(d(r)),
            6 => Fault::RemoveFail(d(r)),
            7 | 8 => Fault::NicBroken(d(r)),
            9 => Fault::LinkLoss(d(r)),
            10 => {
                let max = if self.opts.late_apply {
                    r.ms(100, 4000)
                } else {
                    r.ms(20, 300)
                };
                Fault::KernelSlow(d(r), max)
            }
            11 => match r.below(3) {
                0 => Fault::LeaseSlow(d(r), r.ms(100, 900)),
                1 => Fault::Lossy(d(r), 10 + r.below(60)),
                _ => Fault::ExternalWrite,
            },
            12 => Fault::DeleteLease,
            13 => Fault::Unhealthy(d(r)),
            _ => Fault::SecondInstance,
        }
    }

    /// Injects one fault, mostly on the holder (where the bugs live).
    pub(super) async fn inject(&mut self, now: Instant) {
        let fault = self.pick();
        let holder = self.holder();
        let holder_node = self
            .nodes
            .iter()
            .position(|s| Some(&s.identity) == holder.as_ref());
        let i = match holder_node {
            Some(h) if self.rng.percent(70) => h,
            _ => self.rng.below(self.nodes.len() as u64) as usize,
        };
        self.stats.faults += 1;
        self.world
            .lock()
            .log(now, format!("FAULT node {i}: {fault:?}"));
        // The claim is about one failure: any further fault voids it (a
        // second one on the failed node can legitimately delay the
        // handover, e.g. a partition that loses its release: seed 224).
        if self.obligation.is_some() {
            self.world
                .lock()
                .log(now, "liveness: check voided by the new fault");
            self.obligation = None;
        }
        let d = self.lease.0;
        let r = self.lease.1;
        let bound = Duration::from_millis(d + r + 1000);
        let s = &mut self.nodes[i];
        // How long the node is out, if the fault takes it out.
        let mut out: Option<Duration> = None;
        match fault {
            Fault::Kill | Fault::Shutdown => {
                for inst in &s.instances {
                    if matches!(fault, Fault::Kill) {
                        inst.process.kill();
                        inst.task.abort();
                    } else {
                        let _ = inst.sigterm.send(());
                    }
                }
                if matches!(fault, Fault::Kill) {
                    s.instances.clear();
                }
                let mut down = if self.rng.percent(60) {
                    self.rng.ms(500, 12_000)
                } else {
                    Duration::from_secs(3600)
                };
                // Half the planned stops are a package upgrade's restart:
                // back within the stability buffer, resuming its health
                // from run_dir/health.json.
                if matches!(fault, Fault::Shutdown) && self.upgrades.percent(50) {
                    down = self.upgrades.ms(50, 800);
                    let line = format!("node {i}: upgrade, back in {} ms", down.as_millis());
                    self.world.lock().log(now, line);
                }
                s.restart_at = Some(now + down);
                out = Some(down);
            }
            Fault::Freeze(t) => {
                for inst in &s.instances {
                    inst.process.freeze(now + t);
                }
                // Freezing no process (killed, its restart pending) takes
                // nothing out: the restart comes as scheduled (seed 705
                // of two-instances blamed the restarted node for leading).
                if !s.instances.is_empty() {
                    out = Some(t);
                }
            }
            Fault::Partition(t) => {
                self.net.lock().unwrap_or_else(|p| p.into_inner()).cut[i] = Some(now + t);
                out = Some(t);
            }
            Fault::Unhealthy(t) => {
                // Half of them decisive (a holder steps down at the second
                // probe, not after the buffer), chosen without drawing from
                // the generator so every seed's schedule stays as it was.
                if t.as_millis() % 2 == 0 {
                    s.probe
                        .fail(crate::health::Failure::Refused, "connection refused");
                } else {
                    s.probe.set(false, "timeout after 1s");
                }
                s.healthy_since = None;
                s.healthy_at = Some(now + t);
                // The daemon sees it only once the stability filter flips
                // (the obligation starts then, see `lag` below).
                out = Some(t);
            }
            Fault::RemoveFail(t) => {
                self.world.lock().faults(i).remove_fail = Some(now + t);
                s.impaired_until = s.impaired_until.max(now + t);
            }
            Fault::NicBroken(t) => {
                let last = *self.vips.last().expect("at least one VIP");
                let mut w = self.world.lock();
                w.faults(i).add_fail = Some((now + t, vec![last]));
                w.faults(i).remove_fail = Some(now + t);
                out = Some(t);
            }
            Fault::LinkLoss(t) => {
                self.world.lock().lose_link(i, now + t);
                out = Some(t);
            }
            Fault::KernelSlow(t, max) => {
                self.world.lock().faults(i).slow = Some((now + t, max));
                s.impaired_until = s.impaired_until.max(now + t);
            }
            Fault::LeaseSlow(t, max) => {
                self.net.lock().unwrap_or_else(|p| p.into_inner()).slow = Some((now + t, max));
                self.global_until = self.global_until.max(now + t);
            }
            Fault::Lossy(t, p) => {
                self.net.lock().unwrap_or_else(|p| p.into_inner()).lossy = Some((now + t, p));
                self.global_until = self.global_until.max(now + t);
            }
            Fault::ExternalWrite => {
                // Standbys wait a lease duration after seeing it.
                let wait = Duration::from_millis(d + 1000);
                self.global_until = self.global_until.max(now + wait);
                let t = std::time::SystemTime::now();
                self.store.set(Some(LeaseRecord {
                    holder: "intruder".into(),
                    duration_seconds: u32::try_from(d / 1000).unwrap_or(4),
                    acquire_time: Some(t),
                    renew_time: Some(t),
                    transitions: 7,
                }));
            }
            Fault::DeleteLease => {
                let created = self.created.as_ref().map(|c| c.1);
                let young = created.is_none_or(|c| now.duration_since(c) < Duration::from_secs(2));
                // A node frozen or cut off since the creation may still act
                // on having seen the Lease missing (seed 375).
                let stale = self
                    .nodes
                    .iter()
                    .any(|n| created.is_none_or(|c| n.impaired_until > c));
                if self.opts.early_delete || !(young || stale) {
                    // Standbys wait a lease duration after seeing it missing.
                    let wait = Duration::from_millis(d + 1000);
                    self.global_until = self.global_until.max(now + wait);
                    self.store.set(None);
                } else {
                    let why =
                        "(not deleting: the Lease is under 2 s old or a node may not have seen it)";
                    self.world.lock().log(now, why);
                }
            }
            Fault::SecondInstance => {
                let cfg = s.cfg.clone();
                let inst = node::start(self.env(i), i, cfg).await;
                self.nodes[i].instances.push(inst);
            }
        }
        let s = &mut self.nodes[i];
        if let Some(t) = out {
            s.impaired_until = s.impaired_until.max(now + t + node::health_lag(&s.cfg));
        }
        // A holder out for longer than the bound must be replaced in time.
        let lag = match fault {
            Fault::Unhealthy(_) => node::health_lag(&s.cfg),
            _ => Duration::ZERO,
        };
        let failed = self.nodes[i].identity.clone();
        let standby = (0..self.nodes.len()).any(|j| j != i && self.eligible(j, now));
        if holder.as_ref() == Some(&failed)
            && self.obligation.is_none()
            && now >= self.global_until
            && out.is_some_and(|t| t > bound + lag)
            && standby
        {
            self.stats.liveness_checked += 1;
            self.obligation = Some(Obligation {
                failed,
                from: now + lag,
                by: now + lag + bound,
            });
        }
    }
}
