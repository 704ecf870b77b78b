//! One seed's run: the cluster it picks, the faults it injects and when,
//! and the liveness obligation a holder's failure creates.
//!
//! This file holds the run itself (the cluster, its main loop, starts and
//! restarts); [`inject`] draws and injects the faults and [`liveness`]
//! keeps the obligation a holder's failure creates.

mod inject;
mod liveness;

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
use crate::lease::FakeLeaseStore;
use liveness::Obligation;

const TICK: Duration = Duration::from_millis(50);
const HORIZON: Duration = Duration::from_secs(40);

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
}
