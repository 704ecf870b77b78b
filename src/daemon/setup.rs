//! Building the daemon's parts, and tearing them down.
//!
//! The background tasks it starts (the elector, the health monitor) are
//! spawned in [`tasks`].

mod tasks;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Daemon;
use crate::announce::{AnnounceError, Announcer, RawAnnouncer, Schedule};
use crate::config::{Config, FenceMode, Vip};
use crate::fence::{FenceError, ModeFence, NftFence, PreciseFence, SystemClock, WallClock};
use crate::health::{self, HealthError, HealthReport, StabilityFilter};
use crate::kube::KubeError;
use crate::lease::LeaseEvent;
use crate::machine::Machine;
use crate::observe::{Metrics, Status, StatusError, StatusWriter, spawn_metrics_endpoint};
use crate::systemd::SdNotifier;
use crate::vip::{
    self, AddressTable, Cause, CleanupError, Guard, NetEvent, NetlinkAddressTable, Tracked,
    VipError, Watcher,
};

use tasks::spawn_filtered;
pub(crate) use tasks::{Control, spawn_control, spawn_health};

/// A part of the daemon that could not start; each says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The netlink address table or watcher could not be opened.
    #[error("{0}")]
    Vip(#[from] VipError),
    /// Leftover VIPs could not be removed at start.
    #[error("failed to remove leftover VIPs at start: {0}")]
    Cleanup(#[from] CleanupError),
    /// The raw socket for announcements could not be opened.
    #[error("{0} (needs CAP_NET_RAW)")]
    Announce(#[from] AnnounceError),
    /// The Kubernetes client could not be built (credential, CA, URL).
    #[error("{0}")]
    Kube(#[from] KubeError),
    /// The health probe could not be built.
    #[error("{0}")]
    Health(#[from] HealthError),
    /// The run directory is unsafe (another user could write in it).
    #[error("{0}")]
    RunDir(#[from] StatusError),
    /// The CLOCK_BOOTTIME timer could not be created.
    #[error("{0}")]
    Sleep(#[from] crate::sleep::BootClockError),
    /// The precise fence (nftables) could not be opened or reset.
    #[error("{0}")]
    Fence(#[from] FenceError),
}

/// The data-plane I/O a daemon is built over: the kernel's address table
/// and the announcer. [`Real`] is the production one; the simulation plugs
/// in a simulated kernel. The lease store and the health probe need no
/// parameter: they live in tasks of their own (the elector, the health
/// monitor, built generically over them) and reach the daemon as channels.
pub(crate) trait Io: 'static {
    /// Where the VIPs go.
    type Table: AddressTable + 'static;
    /// Who tells the neighbours.
    type Announcer: Announcer + 'static;
    /// The precise fence in the kernel's data path (or none).
    type Fence: PreciseFence + 'static;
    /// The real-time clock the precise fence's deadline is written on.
    type Wall: WallClock + 'static;
}

/// Netlink and raw sockets: what `ha-vip run` uses.
pub(crate) struct Real;

impl Io for Real {
    type Table = NetlinkAddressTable;
    type Announcer = RawAnnouncer;
    type Fence = ModeFence<NftFence>;
    type Wall = SystemClock;
}

/// The tasks and handles the daemon owns.
pub(crate) struct Parts<I: Io = Real> {
    /// The address table, with what every request sent may leave behind.
    pub(crate) table: Arc<Tracked<I::Table>>,
    pub(crate) announcer: Arc<I::Announcer>,
    pub(crate) guard: Guard,
    /// Which VIPs the netlink watcher reports removals of.
    pub(crate) watched: vip::WatchedVips,
    pub(crate) campaign: Option<watch::Sender<bool>>,
    pub(crate) elector: Option<JoinHandle<()>>,
    pub(crate) health: JoinHandle<()>,
    /// Tells the health monitor whether this node holds the VIP (it probes
    /// faster then: `health.holding_interval`).
    pub(crate) holding: watch::Sender<bool>,
    metrics_server: Option<JoinHandle<()>>,
}

impl<I: Io> Parts<I> {
    /// Tells the elector whether to compete for (and keep) the lease.
    pub(crate) fn campaign(&self, on: bool) {
        if let Some(c) = &self.campaign {
            c.send_replace(on);
        }
    }

    /// What the elector was last told: compete (true) or not.
    pub(crate) fn campaigning(&self) -> bool {
        self.campaign.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Swaps in a new elector. The old one is aborted, not stopped: it must
    /// not release a lease the new one (same identity, same Lease) keeps.
    pub(crate) fn replace_control(&mut self, control: Control) -> mpsc::Receiver<LeaseEvent> {
        if let Some(old) = self.elector.replace(control.elector) {
            old.abort();
        }
        self.campaign = Some(control.campaign);
        control.events
    }

    /// Drops the campaign sender, which makes the elector release the lease
    /// (if held) and end; returns the elector's task to wait for.
    pub(crate) fn stop_campaign(&mut self) -> JoinHandle<()> {
        self.campaign = None;
        self.elector
            .take()
            .unwrap_or_else(|| tokio::spawn(async {}))
    }

    /// Removes every configured VIP, logging what fails; true when none is
    /// left on the interface.
    pub(crate) async fn remove_all(&self, cfg: &Config) -> bool {
        if let Err(e) = self.guard.release().await {
            tracing::error!(error = %e, "VIP guard stopped");
        }
        for &v in &cfg.vips {
            self.announcer.stop(v);
        }
        match vip::remove_all(self.table.as_ref(), &cfg.vips).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "failed to remove VIPs; retrying, and the kernel deletes them when their lifetime ends"
                );
                false
            }
        }
    }
}

impl<I: Io> Drop for Parts<I> {
    fn drop(&mut self) {
        self.health.abort();
        if let Some(m) = &self.metrics_server {
            m.abort();
        }
    }
}

/// Opens everything, removes leftover VIPs, and starts the tasks.
pub(super) async fn start(cfg: Config) -> Result<Daemon, SetupError> {
    crate::observe::check_run_dir(&cfg.run_dir)?;
    let notifier = SdNotifier::from_env();
    // First: a kernel without nf_tables is a configuration choice to make
    // (fence.mode: lifetime), before anything is touched.
    let fence = match cfg.fence {
        FenceMode::Precise => ModeFence::Precise(NftFence::open()?),
        FenceMode::Lifetime => ModeFence::Lifetime,
    };
    let table = Arc::new(Tracked::new(NetlinkAddressTable::connect(&cfg.interface)?));
    vip::refuse_foreign(table.inner(), &cfg.vips).await?;
    let clean = remove_leftovers(table.as_ref(), &cfg).await?;
    reset_fence(&fence, &cfg, clean).await?;
    let schedule = Schedule {
        count: cfg.announce.count,
        spacing: cfg.announce.spacing,
        second_burst_delay: cfg.announce.second_burst_delay,
        refresh_interval: cfg.announce.refresh_interval,
    };
    let announcer = Arc::new(RawAnnouncer::new(&cfg.interface, schedule)?);
    let watcher = Watcher::start(&cfg.interface, &cfg.vips).await?;
    let mut machine = Machine::new(cfg.lease.renew_deadline)
        .with_carrier_buffer(cfg.health.stability_buffer)
        .with_outer_slack(cfg.fence.outer_slack());
    if watcher.link_up() != Some(true) {
        tracing::warn!(
            interface = %cfg.interface,
            "the VIP interface is missing, down or without carrier; not campaigning until it has one"
        );
        // Nothing to undo: the elector starts without campaigning.
        let _ = machine.step(crate::machine::Event::Carrier { up: false }, Instant::now());
    }
    // Restarted within the stability buffer (a package upgrade): resume
    // healthy instead of waiting a whole buffer to campaign again.
    let health_file = health::HealthFile::new(&cfg.run_dir);
    let resumed = health_file.resume(cfg.health.stability_buffer);
    if resumed.is_some() {
        // Its only action, Campaign, is what the elector starts with below.
        let _ = machine.step(
            crate::machine::Event::Health { healthy: true },
            Instant::now(),
        );
    }
    let watched = watcher.watched();
    let (guard, net_events) = Guard::spawn(table.clone(), announcer.clone(), watcher);

    let metrics = Metrics::new(&cfg.vips);
    let status_writer = StatusWriter::new(cfg.status_file());
    // Never fatal: a local user holding the port must not keep the VIP down.
    let (metrics_server, status_writer) = match cfg.metrics_listen {
        Some(addr) => {
            let (task, state) = spawn_metrics_endpoint(addr, metrics.clone());
            (Some(task), status_writer.with_metrics_endpoint(state))
        }
        None => (None, status_writer),
    };

    // Drained before this start (ha-vip drain): out from the first moment.
    if super::control::drained_at_start(&cfg) {
        // Its only action, Campaign(false), is what the elector starts with.
        let _ = machine.step(crate::machine::Event::Drain, Instant::now());
    }
    metrics.set_healthy(machine.healthy());
    // Before the elector may campaign (see `conflict`).
    let start_probe = crate::announce::conflict::probe(
        &cfg.interface,
        &cfg.vips,
        crate::announce::conflict::PROBE_WAIT,
    )
    .await;
    let control = spawn_control(&cfg, &metrics, machine.campaigning())?;
    let filter = match resumed {
        Some(last_ok) => StabilityFilter::resumed_since(cfg.health.stability_buffer, last_ok),
        None => StabilityFilter::new(cfg.health.stability_buffer),
    }
    .configured(&cfg.health);
    let (holding, holding_rx) = watch::channel(false);
    let health = spawn_filtered(&cfg, control.creds.as_ref(), filter, holding_rx)?;

    let cluster = crate::cluster::spawn(&cfg, &metrics);
    // A suspend waits for the handover at most as long as shutdown does.
    let sleep = crate::sleep::Sleep::system(cfg.lease.renew_deadline + Duration::from_secs(1))?;
    let conflicts =
        super::conflict::Conflicts::start(&cfg, &metrics, cluster.notices(), start_probe);
    let mut d = Daemon::assemble(
        cfg,
        Wiring {
            table,
            announcer,
            guard,
            net_events,
            watched,
            control,
            health,
            holding,
            notifier,
            metrics,
            metrics_server,
            status_writer,
            machine,
            sleep,
            cluster,
            fence: super::fence::FenceState::new(fence, SystemClock),
        },
    );
    d.conflicts = conflicts;
    Ok(d)
}

/// At start, after the leftover VIPs: removes the precise fence's table a
/// previous run left (`clean`: no VIP of ours is left on the interface), or
/// else keeps those leftovers from serving with a deadline long past (the
/// first term arms its own deadline anyway).
pub(crate) async fn reset_fence<F: PreciseFence>(
    fence: &F,
    cfg: &Config,
    clean: bool,
) -> Result<(), FenceError> {
    if clean {
        fence.clear().await
    } else {
        let addrs: Vec<_> = cfg.vips.iter().map(|v| v.addr).collect();
        fence.arm(&addrs, super::fence::FENCED_OUT).await
    }
}

/// We hold no lease yet, so any VIP of ours on the interface is a leftover.
/// True when none is left.
pub(crate) async fn remove_leftovers<T: AddressTable>(
    table: &T,
    cfg: &Config,
) -> Result<bool, SetupError> {
    match vip::remove_all(table, &cfg.vips).await {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(
                interface = %cfg.interface,
                vips = %super::effects::list(&removed),
                "removed leftover VIPs at start"
            );
        }
        Ok(_) => {}
        Err(e)
            if e.errors
                .iter()
                .any(|e| matches!(e.cause(), Cause::NotPermitted)) =>
        {
            return Err(e.into());
        }
        // A missing interface is not fatal: adding the VIP will fail and
        // hand the lease to a node that can serve it.
        Err(e) => {
            tracing::error!(error = %e, "startup cleanup failed");
            return Ok(false);
        }
    }
    Ok(true)
}

/// The running parts a daemon is assembled from: the real ones from
/// [`start`], simulated ones in the simulation.
pub(crate) struct Wiring<I: Io> {
    pub(crate) table: Arc<Tracked<I::Table>>,
    pub(crate) announcer: Arc<I::Announcer>,
    /// The drift guard over `table` and `announcer`, and its forwarded events.
    pub(crate) guard: Guard,
    pub(crate) net_events: mpsc::UnboundedReceiver<NetEvent>,
    pub(crate) watched: vip::WatchedVips,
    pub(crate) control: Control,
    pub(crate) health: (JoinHandle<()>, mpsc::Receiver<HealthReport>),
    /// What the health monitor's pace follows (see [`Parts::holding`]).
    pub(crate) holding: watch::Sender<bool>,
    pub(crate) notifier: SdNotifier,
    pub(crate) metrics: Metrics,
    pub(crate) metrics_server: Option<JoinHandle<()>>,
    /// Writes the status file (with the metrics endpoint's state, if any).
    pub(crate) status_writer: StatusWriter,
    /// The machine as the start found it (carrier, resumed health).
    pub(crate) machine: Machine,
    /// The fence on CLOCK_BOOTTIME and the logind sleep inhibitor.
    pub(crate) sleep: crate::sleep::Sleep,
    /// Feeds this node's entry of the VirtualIP object.
    pub(crate) cluster: crate::cluster::Cluster,
    /// The precise fence, reset at start.
    pub(crate) fence: super::fence::FenceState<I::Fence, I::Wall>,
}

impl<I: Io> Daemon<I> {
    /// A follower over `w`, campaigning if `w.machine` does.
    pub(crate) fn assemble(cfg: Config, w: Wiring<I>) -> Self {
        let mut status = Status::new(&cfg.node_name, &cfg.vips, SystemTime::now());
        status.set_fence(cfg.fence, None);
        let (health, health_reports) = w.health;
        Daemon {
            machine: w.machine,
            parts: Parts {
                table: w.table,
                announcer: w.announcer,
                guard: w.guard,
                watched: w.watched,
                campaign: Some(w.control.campaign),
                elector: Some(w.control.elector),
                health,
                holding: w.holding,
                metrics_server: w.metrics_server,
            },
            creds: w.control.creds,
            lease_events: w.control.events,
            health_reports,
            net_events: w.net_events,
            notifier: w.notifier,
            status,
            status_writer: w.status_writer,
            metrics: w.metrics,
            holder: None,
            last_probe: String::from("no probe yet"),
            leader_since: None,
            last_sd_status: String::new(),
            announced: Default::default(),
            vips_up: false,
            announcing: false,
            vip_until: None,
            retired: Vec::new(),
            release_blocked: None,
            removal_retry: None,
            sleep: w.sleep,
            cluster: w.cluster,
            fence: w.fence,
            conflicts: super::conflict::Conflicts::disabled(),
            controls: super::control::Controls::new(&cfg, w.control.handover),
            cfg,
        }
    }
}

/// The VIPs of `cfg` that are not in `keep`.
pub(super) fn dropped(cfg: &[Vip], keep: &[Vip]) -> Vec<Vip> {
    cfg.iter().filter(|v| !keep.contains(v)).copied().collect()
}
