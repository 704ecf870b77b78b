//! `ha-vip run`: the only place that owns tasks and timers. It turns the
//! world into [`Event`]s for the [`Machine`] and its [`Action`]s into calls.
//!
//! Tasks: the health monitor, the lease elector, the VIP guard (drift repair)
//! and the metrics server. The main loop itself pings the systemd watchdog,
//! so a hung loop gets the daemon restarted.

mod conflict;
mod control;
mod effects;
mod fence;
mod metered;
pub use effects::list;
mod setup;
#[cfg(test)]
mod sim;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until, timeout};

use crate::config::{Config, ConfigError};
use crate::health::HealthReport;
use crate::lease::LeaseEvent;
use crate::machine::{Event, Machine, Role};
use crate::systemd::{Notifier, WatchdogTimer};
use crate::vip::NetEvent;

pub use setup::SetupError;
pub(crate) use setup::{Io, Real};

/// Why `ha-vip run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid (exit code 78).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A component could not be set up; the message says how to fix it.
    #[error(transparent)]
    Setup(Box<SetupError>),
    /// A task the daemon cannot work without ended.
    #[error("the {0} task ended unexpectedly")]
    TaskEnded(&'static str),
    /// A signal handler could not be installed.
    #[error("failed to install the {signal} handler: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl From<SetupError> for DaemonError {
    fn from(e: SetupError) -> Self {
        Self::Setup(Box::new(e))
    }
}

/// How often a failed VIP removal is retried.
const REMOVAL_RETRY: Duration = Duration::from_millis(200);

/// Runs the daemon until SIGTERM or SIGINT, then hands over and returns.
pub async fn run(config_path: &Path, config: Config) -> Result<(), DaemonError> {
    let signals = Signals {
        term: signal_stream(SignalKind::terminate(), "SIGTERM")?,
        int: signal_stream(SignalKind::interrupt(), "SIGINT")?,
        hup: signal_stream(SignalKind::hangup(), "SIGHUP")?,
    };
    let mut d = setup::start(config).await?;
    // `ha-vip run` holds the single-instance lock by now.
    d.controls.listen(&d.cfg);
    serve(d, signals, config_path).await
}

/// The signals the main loop reacts to: the process's own in [`run`],
/// channels in the simulation.
pub(crate) struct Signals<S> {
    pub(crate) term: S,
    pub(crate) int: S,
    pub(crate) hup: S,
}

/// A stream of one kind of signal.
pub(crate) trait SignalStream: Send {
    /// The next delivery; `None` when no more can come.
    fn recv(&mut self) -> impl Future<Output = Option<()>> + Send;
}

impl SignalStream for tokio::signal::unix::Signal {
    fn recv(&mut self) -> impl Future<Output = Option<()>> + Send {
        tokio::signal::unix::Signal::recv(self)
    }
}

impl SignalStream for tokio::sync::mpsc::UnboundedReceiver<()> {
    async fn recv(&mut self) -> Option<()> {
        match tokio::sync::mpsc::UnboundedReceiver::recv(self).await {
            Some(()) => Some(()),
            // A dropped sender is no signal: wait for ever, like a process
            // nobody signals.
            None => std::future::pending().await,
        }
    }
}

/// The main loop of a started daemon, over whatever I/O it was built with.
pub(crate) async fn serve<I: Io, S: SignalStream>(
    mut d: Daemon<I>,
    signals: Signals<S>,
    config_path: &Path,
) -> Result<(), DaemonError> {
    let Signals {
        term: mut sigterm,
        int: mut sigint,
        hup: mut sighup,
    } = signals;
    let mut watchdog = WatchdogTimer::new(&d.notifier);
    d.notifier_ready();
    tracing::info!(
        node = %d.cfg.node_name,
        interface = %d.cfg.interface,
        vips = %effects::list(&d.cfg.vips),
        lease = %format!("{}/{}", d.cfg.lease.namespace, d.cfg.lease.name),
        "ha-vip started as follower; campaigning once the local API server is healthy"
    );

    let ended = loop {
        let deadline = d.machine.next_deadline();
        d.sleep_pass();
        tokio::select! {
            // The fence deadline comes first: removing the VIP in time is the
            // whole point. A sleep first of all: it means our fence's clock
            // stood still, so the deadline below may long have passed.
            biased;
            ev = d.sleep.next() => d.on_sleep(ev).await,
            () = sleep_until_opt(deadline) => d.step(Event::Deadline).await,
            // A fixed instant, not "200 ms after this pass": events come
            // more often than that (renewals, probes) and would starve it.
            () = sleep_until_opt(d.removal_retry) => d.retry_removal().await,
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            // Operator controls: rare, and each ends in a machine step.
            Some(p) = d.controls.next() => d.on_control(p).await,
            // Everything else in turn, not in a fixed order: renewals come
            // every retry_period, and when a slow kernel makes refreshing
            // the VIPs take longer than that, a fixed order would never get
            // to a health report (the VIPs would stay on an unhealthy node)
            // or to the watchdog.
            input = next_input(
                &mut d.lease_events,
                &mut d.health_reports,
                &mut d.net_events,
                &mut sighup,
                &mut watchdog,
                d.fence.next_check(),
            ) => match input {
                Input::Lease(Some(first)) => {
                    // A backlog of renewals is one refresh, to the newest
                    // fence: each subsumes the ones before it.
                    let mut batch = vec![first];
                    while let Ok(ev) = d.lease_events.try_recv() {
                        batch.push(ev);
                    }
                    for ev in coalesce_renewals(batch) {
                        d.on_lease(ev).await;
                    }
                }
                Input::Lease(None) => break Some("lease elector"),
                Input::Health(Some(report)) => d.on_health(report).await,
                Input::Health(None) => break Some("health monitor"),
                Input::Net(Some(ev)) => d.on_net(ev).await,
                Input::Net(None) => break Some("netlink watcher"),
                Input::Reload => d.reload(config_path).await,
                Input::Watchdog => d.ping_watchdog(),
                Input::ClockCheck => d.check_clock().await,
            },
        }
        d.publish();
    };
    if let Some(task) = ended {
        // Without it this node cannot take part safely: hand over and let
        // systemd restart us.
        tracing::error!(
            task,
            "the {task} task ended unexpectedly; handing over and exiting so systemd restarts ha-vip"
        );
    }
    d.shutdown().await;
    match ended {
        Some(task) => Err(DaemonError::TaskEnded(task)),
        None => Ok(()),
    }
}

/// One input of the main loop other than the timers and SIGTERM/SIGINT.
enum Input {
    Lease(Option<LeaseEvent>),
    Health(Option<HealthReport>),
    Net(Option<NetEvent>),
    Reload,
    Watchdog,
    /// Time to compare the real-time clock with the monotonic one (a step
    /// moves the precise fence's deadline).
    ClockCheck,
}

/// The next of the main loop's ordinary inputs; when several are ready,
/// tokio picks one at random, so none can starve the others.
async fn next_input<S: SignalStream>(
    lease: &mut tokio::sync::mpsc::Receiver<LeaseEvent>,
    health: &mut tokio::sync::mpsc::Receiver<HealthReport>,
    net: &mut tokio::sync::mpsc::UnboundedReceiver<NetEvent>,
    sighup: &mut S,
    watchdog: &mut WatchdogTimer,
    clock_check: Option<Instant>,
) -> Input {
    tokio::select! {
        ev = lease.recv() => Input::Lease(ev),
        report = health.recv() => Input::Health(report),
        ev = net.recv() => Input::Net(ev),
        _ = sighup.recv() => Input::Reload,
        () = watchdog.tick() => Input::Watchdog,
        () = sleep_until_opt(clock_check) => Input::ClockCheck,
    }
}

/// `events` with each run of consecutive renewals cut to its newest one.
fn coalesce_renewals(events: Vec<LeaseEvent>) -> Vec<LeaseEvent> {
    let mut out: Vec<LeaseEvent> = Vec::with_capacity(events.len());
    for ev in events {
        if let (Some(LeaseEvent::Renewed { sent_at: last }), LeaseEvent::Renewed { sent_at }) =
            (out.last_mut(), &ev)
        {
            *last = (*last).max(*sent_at);
            continue;
        }
        out.push(ev);
    }
    out
}

fn signal_stream(
    kind: SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, DaemonError> {
    signal(kind).map_err(|source| DaemonError::Signal {
        signal: name,
        source,
    })
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Everything the running daemon owns.
pub(crate) struct Daemon<I: Io = Real> {
    pub(crate) cfg: Config,
    pub(crate) machine: Machine,
    pub(crate) parts: setup::Parts<I>,
    pub(crate) lease_events: tokio::sync::mpsc::Receiver<LeaseEvent>,
    pub(crate) health_reports: tokio::sync::mpsc::Receiver<HealthReport>,
    pub(crate) net_events: tokio::sync::mpsc::UnboundedReceiver<NetEvent>,
    pub(crate) notifier: crate::systemd::SdNotifier,
    pub(crate) status: crate::observe::Status,
    pub(crate) status_writer: crate::observe::StatusWriter,
    pub(crate) metrics: crate::observe::Metrics,
    /// The loaded Kubernetes credential, shared with the health probe.
    pub(crate) creds: Option<crate::kube::Credentials>,
    /// Who holds the lease, as last observed.
    pub(crate) holder: Option<String>,
    /// The last probe's reason, for STATUS= while unhealthy.
    pub(crate) last_probe: String,
    pub(crate) leader_since: Option<SystemTime>,
    /// The last STATUS= sent to systemd.
    pub(crate) last_sd_status: String,
    /// Announcement counts already added to the metrics.
    pub(crate) announced: crate::announce::AnnounceStats,
    /// Whether every VIP went onto the interface at the last refresh.
    pub(crate) vips_up: bool,
    /// Whether the announcements run for the VIPs that are up.
    pub(crate) announcing: bool,
    /// The latest fence of any add or refresh request sent (in any term,
    /// recorded before sending): every VIP of ours is gone by then (plus
    /// the kernel's deletion latency) whatever happens to this process.
    /// Cleared only when a removal of every VIP succeeded.
    pub(crate) vip_until: Option<Instant>,
    /// VIPs a reload dropped from the configuration whose removal has not
    /// succeeded yet: they may still be on the interface, so they stay
    /// under the precise fence and are removed (and waited for) with ours.
    pub(crate) retired: Vec<crate::config::Vip>,
    /// Set when removing the VIPs failed: the lease is not released before
    /// this instant unless a retried removal succeeds.
    pub(crate) release_blocked: Option<Instant>,
    /// The fence on CLOCK_BOOTTIME and the logind sleep inhibitor.
    pub(crate) sleep: crate::sleep::Sleep,
    /// When the failed removal is tried again (while `release_blocked`).
    pub(crate) removal_retry: Option<Instant>,
    /// Feeds this node's entry of the VirtualIP object (never blocks).
    pub(crate) cluster: crate::cluster::Cluster,
    /// The precise fence: armed before every add or refresh.
    pub(crate) fence: fence::FenceState<I::Fence, I::Wall>,
    /// Address-conflict detection: the probe before an add, the watch
    /// while holding (see [`conflict`]).
    pub(crate) conflicts: conflict::Conflicts,
    /// The operator's controls (drain, undrain, handover).
    pub(crate) controls: control::Controls,
}

impl<I: Io> Daemon<I> {
    fn notifier_ready(&mut self) {
        self.status.transition(
            crate::observe::Role::Follower,
            crate::observe::TransitionReason::Started,
            SystemTime::now(),
        );
        if let Err(e) = self.notifier.ready() {
            tracing::warn!(error = %e, "failed to notify systemd of readiness");
        }
        self.publish();
    }

    fn ping_watchdog(&self) {
        if let Err(e) = self.notifier.watchdog() {
            tracing::warn!(error = %e, "failed to ping the systemd watchdog");
        }
    }

    async fn on_lease(&mut self, ev: LeaseEvent) {
        match ev {
            LeaseEvent::Acquired { sent_at } => self.step(Event::Acquired { sent_at }).await,
            LeaseEvent::Renewed { sent_at } => self.step(Event::Renewed { sent_at }).await,
            LeaseEvent::Lost { reason, .. } => {
                if self.machine.role() == Role::Leader {
                    tracing::warn!(interface = %self.cfg.interface, %reason, "lost the lease");
                }
                self.step(Event::Lost).await;
            }
            LeaseEvent::Observed { holder, .. } => {
                self.conflicts
                    .observed(holder.as_deref(), &self.cfg.node_name);
                if holder != self.holder {
                    tracing::info!(
                        holder = holder.as_deref().unwrap_or(""),
                        "lease holder is now {}",
                        holder.as_deref().unwrap_or("nobody")
                    );
                }
                self.holder = holder;
            }
            LeaseEvent::RequestFailed { error, .. } => {
                if self.machine.role() == Role::Leader {
                    self.metrics.renew_failed();
                }
                tracing::warn!(error = %error, role = %self.machine.role(), "lease request failed");
            }
        }
    }

    async fn on_health(&mut self, report: HealthReport) {
        let r = &report.result;
        self.metrics.observe_probe(report.took, r.healthy);
        self.status
            .record_probe(r.healthy, r.reason.clone(), SystemTime::now());
        self.last_probe = r.reason.clone();
        if report.changed {
            self.metrics.set_healthy(report.healthy);
            self.step(Event::Health {
                healthy: report.healthy,
            })
            .await;
        }
    }

    async fn on_net(&mut self, ev: NetEvent) {
        // The guard repairs drift on its own; the rest is for the record,
        // except the carrier: a holder without one serves nobody.
        match ev {
            NetEvent::VipRemoved(vip) if self.machine.vips_set() => {
                tracing::info!(%vip, interface = %self.cfg.interface, "VIP left the interface while held; the guard re-adds it");
            }
            NetEvent::LinkDown => {
                tracing::warn!(interface = %self.cfg.interface, "VIP interface lost carrier (or is down or gone); not holding the VIP here until it is back for the stability buffer");
                self.step(Event::Carrier { up: false }).await;
            }
            NetEvent::LinkUp => {
                tracing::info!(interface = %self.cfg.interface, "VIP interface has carrier again");
                self.step(Event::Carrier { up: true }).await;
            }
            NetEvent::Overrun => {
                tracing::warn!(interface = %self.cfg.interface, "netlink notifications overran; re-reading the interface");
            }
            NetEvent::VipRemoved(_) => {}
        }
    }

    /// Suspend and resume: see [`crate::sleep`].
    async fn on_sleep(&mut self, ev: crate::sleep::SleepEvent) {
        use crate::sleep::SleepEvent;
        match ev {
            SleepEvent::Woke(w) if self.machine.role() == Role::Leader => {
                tracing::warn!(interface = %self.cfg.interface, "the machine slept while holding the VIPs ({w}); removing them before anything else");
                self.step(Event::Slept).await;
            }
            SleepEvent::Woke(w) => {
                tracing::info!("the machine slept ({w})");
                self.step(Event::Slept).await;
            }
            SleepEvent::Suspending => self.step(Event::Suspending).await,
            SleepEvent::Resumed => {
                tracing::info!("the machine resumed; campaigning again once healthy");
                self.step(Event::Resumed).await;
            }
            SleepEvent::HandoverTimedOut => tracing::warn!(
                "the handover before sleep did not finish in time; letting the machine sleep (standbys take over when the Lease expires)"
            ),
        }
    }

    /// On every loop pass: keep the boot-time fence on the machine's fence,
    /// and let a waiting suspend go once the VIPs are gone and the Lease is
    /// no longer ours.
    fn sleep_pass(&mut self) {
        self.sleep.arm(self.machine.fence());
        if self.sleep.suspending()
            && !self.machine.vips_set()
            && self.release_blocked.is_none()
            && self.holder.as_deref() != Some(self.cfg.node_name.as_str())
        {
            self.sleep.handed_over();
        }
    }

    /// SIGHUP: re-read the config; keep the running one if it is invalid.
    async fn reload(&mut self, path: &Path) {
        let _ = self.notifier.reloading();
        match Config::load(path) {
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the running configuration")
            }
            Ok(new) => self.apply_config(new).await,
        }
        let _ = self.notifier.ready();
    }

    /// Graceful handover: the VIPs go, then the lease is released.
    async fn shutdown(mut self) {
        let _ = self.notifier.stopping();
        tracing::info!(interface = %self.cfg.interface, "shutting down: removing VIPs and releasing the lease");
        self.step(Event::Shutdown).await;
        // Never release while our VIPs may still be up (a failed removal).
        while self.release_blocked.is_some() {
            sleep_until_opt(self.removal_retry).await;
            self.retry_removal().await;
        }
        self.publish();
        // Dropping the campaign sender makes the elector release and return.
        let elector = self.parts.stop_campaign();
        let bound = self.cfg.lease.renew_deadline + Duration::from_secs(1);
        if timeout(bound, elector).await.is_err() {
            tracing::warn!(
                "the lease was not released within {bound:?}; standbys take over when it expires"
            );
        }
        // Whatever happened above, leave no VIP behind, and no fence table
        // unless a VIP is left for it to stop.
        if self.remove_ours().await {
            self.clear_fence().await;
        } else {
            self.fence_out().await;
        }
        self.cluster.finish(crate::cluster::FINISH_BOUND).await;
        tracing::info!("stopped");
    }
}

/// Default path of the configuration.
pub fn default_config_path() -> PathBuf {
    PathBuf::from(crate::config::defaults::CONFIG_PATH)
}
