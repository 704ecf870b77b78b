//! One seed's run: the cluster it picks, the faults it injects and when,
//! and the liveness obligation a holder's failure creates.

use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant, sleep};

use super::Outcome;
use super::lease::Net;
use super::node::{self, Env, Instance};
use super::options::{Options, PROFILES, Stats};
use super::rng::Rng;
use super::world::Shared;
use crate::config::{Config, FenceMode, Vip};
use crate::health::FakeProbe;
use crate::lease::{FakeLeaseStore, LeaseRecord};

const TICK: Duration = Duration::from_millis(50);
const HORIZON: Duration = Duration::from_secs(40);

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

struct NodeState {
    identity: String,
    cfg: Config,
    probe: FakeProbe,
    instances: Vec<Instance>,
    healthy_since: Option<Instant>,
    /// Faulty (for the liveness check) until then.
    impaired_until: Instant,
    restart_at: Option<Instant>,
    healthy_at: Option<Instant>,
}

/// The holder failed at `from`; a standby must hold the Lease by `by`.
struct Obligation {
    failed: String,
    from: Instant,
    by: Instant,
}

struct Sim {
    opts: Options,
    rng: Rng,
    world: Shared,
    net: Arc<Mutex<Net>>,
    store: FakeLeaseStore,
    nodes: Vec<NodeState>,
    vips: Vec<Vip>,
    lease: (u64, u64, u64),
    obligation: Option<Obligation>,
    stats: Stats,
    last_holder: Option<String>,
    /// The Lease object's uid, and when it was created.
    created: Option<(String, Instant)>,
    /// A fault of the API server or of the Lease itself lasts until then:
    /// no standby can be expected to take over in the usual time before.
    global_until: Instant,
    /// Draws the clock and fence faults ([`Sim::clock_fault`]).
    clock_rng: Rng,
    /// Which planned stops are package upgrades: a stream of its own, so
    /// that adding them left every other draw of a seed as it was.
    upgrades: Rng,
}

/// Runs `seed` on a fresh paused runtime.
pub(in crate::daemon) fn run_seed(seed: u64, opts: &Options, log: bool) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    let run = || rt.block_on(run(seed, opts.clone()));
    if log {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_timer(SimTime(std::sync::OnceLock::from(Instant::now())))
            .with_ansi(false)
            .with_test_writer()
            .finish();
        tracing::subscriber::with_default(subscriber, run)
    } else {
        run()
    }
}

/// Log timestamps in simulated seconds.
struct SimTime(std::sync::OnceLock<Instant>);

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let start = *self.0.get_or_init(Instant::now);
        write!(
            w,
            "{:>8.3}",
            Instant::now().duration_since(start).as_secs_f64()
        )
    }
}

async fn run(seed: u64, opts: Options) -> Outcome {
    let mut rng = Rng::new(seed);
    let n = 2 + rng.below(2) as usize;
    let picked = match opts.profile {
        Some(p) => p,
        None => rng.below(PROFILES.len() as u64) as usize,
    };
    let lease = opts.lease_of(seed, picked);
    let fence = opts.fence_of(seed);
    let vips = if rng.percent(50) {
        "10.0.0.100"
    } else {
        "10.0.0.100, fd00::100"
    };
    // The status file is written at every probe: keep it off the disk.
    let run_dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    let world = Shared::new(n, rng.next(), Duration::from_millis(lease.1));
    world.lock().precise = fence == FenceMode::Precise;
    world.lock().outer_checked = !opts.late_apply;
    let net = Arc::new(Mutex::new(Net {
        rng: Rng::new(rng.next()),
        latency: Duration::from_millis(rng.below(30)),
        slow: None,
        lossy: None,
        cut: vec![None; n],
    }));
    let now = Instant::now();
    let nodes: Vec<NodeState> = (0..n)
        .map(|i| {
            let cfg = node::config(i, vips, lease, fence, run_dir.path());
            let probe = FakeProbe::new();
            probe.set(true, "ok");
            NodeState {
                identity: cfg.node_name.clone(),
                cfg,
                probe,
                instances: Vec::new(),
                healthy_since: Some(now),
                impaired_until: now,
                restart_at: None,
                healthy_at: None,
            }
        })
        .collect();
    let vips = nodes[0].cfg.vips.clone();
    world.lock().log(
        now,
        format!(
            "seed {seed}: {n} nodes, VIPs {vips:?}, lease (D, R, P) = {lease:?} ms, fence {fence}"
        ),
    );
    let mut sim = Sim {
        opts,
        rng,
        world,
        net,
        store: FakeLeaseStore::new(),
        nodes,
        vips,
        lease,
        obligation: None,
        stats: Stats {
            seeds: 1,
            precise_seeds: u64::from(fence == FenceMode::Precise),
            ..Stats::default()
        },
        // Apart from `rng`: a seed's other faults stay the same.
        clock_rng: Rng::new(seed ^ 0x0063_6c6f_636b),
        last_holder: None,
        created: None,
        global_until: now,
        upgrades: Rng::new(seed ^ 0x0075_7067_7261_6465),
    };
    for i in 0..n {
        sim.start(i).await;
    }
    let end = now + HORIZON;
    let mut next_fault = now + sim.rng.ms(3000, 8000);
    let mut next_clock = now + sim.clock_rng.ms(2000, 10_000);
    while Instant::now() < end {
        sleep(TICK).await;
        let now = Instant::now();
        sim.world.lock().links_back(now);
        sim.restarts(now).await;
        sim.watch_holder(now);
        // No new fault while a holder's failure is being checked for
        // liveness: a second fault would void the check.
        if now >= next_fault && sim.obligation.is_none() {
            sim.inject(now).await;
            next_fault = now + sim.rng.ms(500, 6000);
        }
        if now >= next_clock {
            // Not while a liveness check runs, and not just before a fault
            // that may freeze the node: a backward step while frozen is
            // the residual case the outer lifetime bounds (crate::fence).
            if sim.obligation.is_none() && next_fault > now + Duration::from_secs(1) {
                sim.clock_fault(now);
            }
            next_clock = now + sim.clock_rng.ms(1000, 8000);
        }
        if !sim.world.lock().violations.is_empty() {
            break;
        }
    }
    for s in &mut sim.nodes {
        for i in s.instances.drain(..) {
            i.process.kill();
            i.task.abort();
        }
    }
    let mut w = sim.world.lock();
    sim.stats.resumed = w
        .trace
        .iter()
        .filter(|l| l.contains("resumed healthy"))
        .count() as u64;
    Outcome {
        seed,
        violations: std::mem::take(&mut w.violations),
        trace: std::mem::take(&mut w.trace),
        stats: sim.stats,
    }
}

impl Sim {
    fn env(&self, i: usize) -> Env<'_> {
        Env {
            world: &self.world,
            net: &self.net,
            store: &self.store,
            probe: &self.nodes[i].probe,
            compute_then_freeze: self.opts.late_apply,
        }
    }

    async fn start(&mut self, i: usize) {
        let cfg = self.nodes[i].cfg.clone();
        let inst = node::start(self.env(i), i, cfg).await;
        self.nodes[i].instances.push(inst);
        let now = Instant::now();
        self.world
            .lock()
            .log(now, format!("node {i}: ha-vip started"));
        // A new process proves health only after the stability buffer.
        self.nodes[i].impaired_until = self.nodes[i]
            .impaired_until
            .max(now + node::health_lag(&self.nodes[i].cfg));
    }

    /// Restarts and health recoveries that are due; reaps ended instances.
    async fn restarts(&mut self, now: Instant) {
        for i in 0..self.nodes.len() {
            let s = &mut self.nodes[i];
            s.instances.retain(|inst| !inst.task.is_finished());
            if s.healthy_at.is_some_and(|t| t <= now) {
                s.healthy_at = None;
                s.probe.set(true, "ok");
                s.healthy_since = Some(now);
                let lag = node::health_lag(&s.cfg);
                s.impaired_until = s.impaired_until.max(now + lag);
                self.world
                    .lock()
                    .log(now, format!("node {i}: API server healthy again"));
            }
            if self.nodes[i].restart_at.is_some_and(|t| t <= now)
                && self.nodes[i].instances.is_empty()
            {
                self.nodes[i].restart_at = None;
                self.start(i).await;
            }
        }
    }

    fn holder(&self) -> Option<String> {
        self.store
            .lease()
            .and_then(|l| l.record.holder().map(String::from))
    }

    /// Counts handovers and checks the open liveness obligation.
    fn watch_holder(&mut self, now: Instant) {
        let uid = self.store.lease().and_then(|l| l.uid().map(String::from));
        if uid.is_some() && uid != self.created.as_ref().map(|c| c.0.clone()) {
            self.created = uid.map(|u| (u, now));
        }
        let holder = self.holder();
        if holder != self.last_holder {
            if holder.is_some() {
                self.stats.handovers += 1;
            }
            self.last_holder = holder.clone();
        }
        let Some(o) = &self.obligation else { return };
        let taken = holder
            .as_ref()
            .is_some_and(|h| *h != o.failed && self.nodes.iter().any(|s| s.identity == *h));
        if taken {
            let after = now.duration_since(o.from).as_secs_f64();
            let line = format!(
                "liveness: a standby holds the lease {after:.3}s after {} failed",
                o.failed
            );
            self.world.lock().log(now, line);
            self.obligation = None;
        } else if now > o.by {
            let (failed, from) = (o.failed.clone(), o.from);
            let mut w = self.world.lock();
            let what = format!(
                "liveness: {failed} failed at {}s and no healthy standby held the lease by {}s (holder: {})",
                w.t(from).trim(),
                w.t(o.by).trim(),
                holder.as_deref().unwrap_or("nobody")
            );
            w.log(now, format!("VIOLATION: {what}"));
            w.violations.push(what);
            drop(w);
            self.obligation = None;
        }
    }

    /// Whether node `i` could take over now and for `window`.
    fn eligible(&self, i: usize, now: Instant) -> bool {
        let s = &self.nodes[i];
        !s.instances.is_empty()
            && s.healthy_at.is_none()
            && s.healthy_since.is_some()
            && s.impaired_until <= now
    }

    /// A real-time clock step on a running node, or (precise fence only)
    /// a fence that fails to arm or applies its requests late.
    fn clock_fault(&mut self, now: Instant) {
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
    async fn inject(&mut self, now: Instant) {
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
