//! Starting a real daemon over simulated I/O: the same [`Daemon`], built by
//! [`Daemon::assemble`] like `setup::start` builds it, the real elector
//! over a [`SimStore`], the real health monitor over a [`FakeProbe`], the
//! real drift guard, and the real main loop ([`serve`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use super::fence::{SimFence, SimWall};
use super::lease::{Net, SimStore};
use super::process::{Frozen, Process, ProcessEvents, SimTable};
use super::world::Shared;
use crate::announce::FakeAnnouncer;
use crate::config::{Config, FenceMode};
use crate::daemon::fence::FenceState;
use crate::daemon::setup::{Control, Io, Wiring, remove_leftovers, reset_fence};
use crate::daemon::{Daemon, DaemonError, Signals, serve};
use crate::fence::ModeFence;
use crate::health::{self, FakeProbe, StabilityFilter};
use crate::instance::InstanceLock;
use crate::lease::{Elector, FakeLeaseStore, Timings};
use crate::machine::Machine;
use crate::observe::{Metrics, StatusWriter};
use crate::sleep::{FakeBootClock, Sleep};
use crate::systemd::SdNotifier;
use crate::vip::{Guard, Tracked, WatchedVips};

/// The simulation's I/O.
pub(super) struct SimIo;

impl Io for SimIo {
    type Table = SimTable;
    type Announcer = FakeAnnouncer;
    type Fence = ModeFence<SimFence>;
    type Wall = SimWall;
}

/// One running `ha-vip run` process.
pub(super) struct Instance {
    pub(super) process: Process,
    pub(super) sigterm: mpsc::UnboundedSender<()>,
    /// SIGHUP: re-reads [`config_path`] of its run_dir.
    pub(super) sighup: mpsc::UnboundedSender<()>,
    pub(super) task: JoinHandle<Result<(), DaemonError>>,
}

/// What an instance is started with.
pub(super) struct Env<'a> {
    pub(super) world: &'a Shared,
    pub(super) net: &'a Arc<Mutex<Net>>,
    pub(super) store: &'a FakeLeaseStore,
    pub(super) probe: &'a FakeProbe,
    /// See [`ProcessEvents::compute_then_freeze`].
    pub(super) compute_then_freeze: bool,
}

/// Starts a daemon for `cfg` on `node`, as `setup::start` does: startup
/// cleanup first, then the guard, the elector and the health monitor.
pub(super) async fn start(env: Env<'_>, node: usize, cfg: Config) -> Instance {
    let process = Process::default();
    // As `ha-vip run` does before it touches anything (cli/run.rs): a
    // second instance on the node exits at once. The lock lives in the
    // main loop's future, so a killed (aborted) or stopped process frees it.
    let lock = match InstanceLock::acquire(&cfg.run_dir) {
        Ok(lock) => lock,
        Err(e) => {
            let line = format!("node {node}: ha-vip refused to start: {e}");
            env.world.lock().log(tokio::time::Instant::now(), line);
            let (sigterm, _) = mpsc::unbounded_channel();
            return Instance {
                process,
                sigterm,
                sighup: mpsc::unbounded_channel().0,
                task: tokio::spawn(async { Ok(()) }),
            };
        }
    };
    let table = Arc::new(Tracked::new(SimTable {
        world: env.world.clone(),
        node,
        process: process.clone(),
        interface: cfg.interface.clone(),
    }));
    let clean = match remove_leftovers(table.as_ref(), &cfg).await {
        Ok(clean) => clean,
        Err(e) => {
            tracing::error!(error = %e, "startup cleanup failed");
            false
        }
    };
    let fence = match cfg.fence {
        FenceMode::Precise => ModeFence::Precise(SimFence {
            world: env.world.clone(),
            node,
            process: process.clone(),
        }),
        FenceMode::Lifetime => ModeFence::Lifetime,
    };
    let wall = SimWall {
        world: env.world.clone(),
        node,
    };
    if let Err(e) = reset_fence(&fence, &cfg, clean).await {
        // `ha-vip run` exits 1 here; the simulated one stops the same way.
        let line = format!("node {node}: ha-vip refused to start: {e}");
        env.world.lock().log(tokio::time::Instant::now(), line);
        let (sigterm, _) = mpsc::unbounded_channel();
        return Instance {
            process,
            sigterm,
            sighup: mpsc::unbounded_channel().0,
            task: tokio::spawn(async { Ok(()) }),
        };
    }
    let announcer = Arc::new(FakeAnnouncer::new());
    let events = ProcessEvents {
        rx: env.world.lock().watch(node),
        process: process.clone(),
        compute_then_freeze: env.compute_then_freeze,
        pending: None,
    };
    let (guard, net_events) = Guard::spawn(table.clone(), announcer.clone(), events);

    let store = SimStore {
        inner: env.store.clone(),
        net: env.net.clone(),
        world: env.world.clone(),
        node,
        identity: cfg.node_name.clone(),
        process: process.clone(),
        timeout: cfg.lease.renew_deadline / 2,
    };
    // As `setup::start` does: a daemon restarted within the stability
    // buffer resumes healthy from run_dir/health.json. Boot time is the
    // simulated time since the world began (plus a base, as after a boot).
    let epoch = env.world.lock().started();
    let boot = move || Some(Duration::from_secs(100) + Instant::now().duration_since(epoch));
    let health_file = health::HealthFile::new(&cfg.run_dir).with_boot_clock(boot);
    let mut machine = Machine::new(cfg.lease.renew_deadline)
        .with_carrier_buffer(cfg.health.stability_buffer)
        .with_outer_slack(cfg.fence.outer_slack());
    let resumed = health_file.resume(cfg.health.stability_buffer);
    if let Some(last_ok) = resumed {
        let now = Instant::now();
        let line = format!(
            "node {node}: resumed healthy from health.json (last success {:?} ago)",
            now - last_ok
        );
        env.world.lock().log(now, line);
        // Its only action, Campaign, is what the elector starts with below.
        let _ = machine.step(crate::machine::Event::Health { healthy: true }, now);
    }
    let (campaign, campaign_rx) = watch::channel(machine.campaigning());
    let (lease_tx, lease_events) = mpsc::channel(64);
    let elector = Elector::new(store, &cfg.node_name, Timings::from(&cfg.lease));
    let elector = tokio::spawn(elector.run(campaign_rx, lease_tx));

    let (health_tx, health_rx) = mpsc::channel(16);
    let filter = match resumed {
        Some(last_ok) => StabilityFilter::resumed_since(cfg.health.stability_buffer, last_ok),
        None => StabilityFilter::new(cfg.health.stability_buffer),
    }
    .configured(&cfg.health);
    // The real pace: faster while holding, as `ha-vip run` probes.
    let (holding, holding_rx) = watch::channel(false);
    let pace = health::Pace {
        interval: cfg.health.interval,
        holding_interval: cfg.health.holding_interval,
        holding: holding_rx,
    };
    let monitor = health::monitor_recorded(env.probe.clone(), pace, filter, health_file, health_tx);
    let health = (tokio::spawn(monitor), health_rx);

    let d = Daemon::<SimIo>::assemble(
        cfg.clone(),
        Wiring {
            table,
            announcer,
            guard,
            net_events,
            watched: WatchedVips::default(),
            control: Control {
                creds: None,
                campaign,
                elector,
                events: lease_events,
                handover: Default::default(),
            },
            health,
            holding,
            notifier: SdNotifier::new(None, None),
            metrics: Metrics::new(&cfg.vips),
            metrics_server: None,
            status_writer: StatusWriter::new(cfg.status_file()),
            machine,
            // A boot-time clock that never jumps: the simulation does not
            // suspend machines.
            sleep: Sleep::new(
                Box::new(FakeBootClock::new(Duration::ZERO).0),
                None,
                cfg.lease.renew_deadline + Duration::from_secs(1),
            ),
            cluster: crate::cluster::Cluster::disabled(),
            fence: FenceState::new(fence, wall),
        },
    );
    let (sigterm, term) = mpsc::unbounded_channel();
    let (sighup, hup) = mpsc::unbounded_channel();
    // SIGINT never comes: its sender is dropped.
    let signals = Signals {
        term,
        int: mpsc::unbounded_channel().1,
        hup,
    };
    let path = config_path(&cfg);
    let main = async move {
        let _lock = lock;
        serve(d, signals, &path).await
    };
    let task = tokio::spawn(Frozen {
        process: process.clone(),
        fut: Box::pin(main),
        sleep: None,
    });
    Instance {
        process,
        sigterm,
        sighup,
        task,
    }
}

/// Where the instance of `cfg` reads its configuration on SIGHUP (a test
/// writes it there first, see [`config_yaml`]).
pub(super) fn config_path(cfg: &Config) -> std::path::PathBuf {
    cfg.run_dir.join("ha-vip.yaml")
}

/// The configuration of node `i`.
pub(super) fn config(
    i: usize,
    vips: &str,
    lease: (u64, u64, u64),
    fence: FenceMode,
    run_dir: &Path,
) -> Config {
    let yaml = config_yaml(i, vips, lease, fence, run_dir);
    Config::parse(&yaml, Path::new("sim.yaml")).unwrap_or_else(|e| panic!("sim config: {e}"))
}

/// The YAML of [`config`].
pub(super) fn config_yaml(
    i: usize,
    vips: &str,
    lease: (u64, u64, u64),
    fence: FenceMode,
    run_dir: &Path,
) -> String {
    let (d, r, p) = lease;
    format!(
        "node_name: node-{i}\ninterface: sim0\nvips: [{vips}]\nfence:\n  mode: {fence}\n\
         k8s:\n  kubeconfig: /nonexistent/admin.conf\n\
         lease:\n  duration: {d}ms\n  renew_deadline: {r}ms\n  retry_period: {p}ms\n\
         health:\n  interval: 200ms\n  timeout: 100ms\n  stability_buffer: 1s\n\
         metrics:\n  enabled: false\n\
         run_dir: {}\n",
        run_dir.join(format!("node-{i}")).display()
    )
}

/// How long after a health change the daemon has seen it (probe interval
/// plus the stability buffer, with slack).
pub(super) fn health_lag(cfg: &Config) -> Duration {
    cfg.health.interval + cfg.health.stability_buffer + Duration::from_millis(100)
}
