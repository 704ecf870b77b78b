//! `ha-vip run`: the only place that owns tasks and timers. It turns the
//! world into [`Event`]s for the [`Machine`] and its [`Action`]s into calls.
//!
//! Tasks: the health monitor, the lease elector, the VIP guard (drift repair)
//! and the metrics server. The main loop itself pings the systemd watchdog,
//! so a hung loop gets the daemon restarted.

mod effects;
mod metered;
pub use effects::list;
mod setup;

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
    let mut sigterm = signal_stream(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = signal_stream(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = signal_stream(SignalKind::hangup(), "SIGHUP")?;

    let mut d = setup::start(config).await?;
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
        tokio::select! {
            // The fence deadline comes first: removing the VIP in time is the
            // whole point.
            biased;
            () = sleep_until_opt(deadline) => d.step(Event::Deadline).await,
            () = sleep_until_opt(d.release_blocked.map(|_| Instant::now() + REMOVAL_RETRY)) => d.retry_removal().await,
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            ev = d.lease_events.recv() => match ev {
                Some(ev) => d.on_lease(ev).await,
                None => break Some("lease elector"),
            },
            report = d.health_reports.recv() => match report {
                Some(report) => d.on_health(report).await,
                None => break Some("health monitor"),
            },
            ev = d.net_events.recv() => match ev {
                Some(ev) => d.on_net(ev),
                None => break Some("netlink watcher"),
            },
            _ = sighup.recv() => d.reload(config_path).await,
            () = watchdog.tick() => d.ping_watchdog(),
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
pub(crate) struct Daemon {
    pub(crate) cfg: Config,
    pub(crate) machine: Machine,
    pub(crate) parts: setup::Parts,
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
    /// The fence of the last refresh: our VIPs are gone by then (plus the
    /// kernel's deletion latency) whatever happens to this process.
    pub(crate) vip_until: Option<Instant>,
    /// Set when removing the VIPs failed: the lease is not released before
    /// this instant unless a retried removal succeeds.
    pub(crate) release_blocked: Option<Instant>,
    /// Feeds this node's entry of the VirtualIP object (never blocks).
    pub(crate) cluster: crate::cluster::Cluster,
}

impl Daemon {
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

    fn on_net(&mut self, ev: NetEvent) {
        // The guard repairs drift on its own; this is for the record.
        match ev {
            NetEvent::VipRemoved(vip) if self.machine.vips_set() => {
                tracing::info!(%vip, interface = %self.cfg.interface, "VIP left the interface while held; the guard re-adds it");
            }
            NetEvent::LinkDown => {
                tracing::warn!(interface = %self.cfg.interface, "link down");
            }
            NetEvent::LinkUp => tracing::info!(interface = %self.cfg.interface, "link up"),
            NetEvent::Overrun => {
                tracing::warn!(interface = %self.cfg.interface, "netlink notifications overran; re-reading the interface");
            }
            NetEvent::VipRemoved(_) => {}
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
            tokio::time::sleep(REMOVAL_RETRY).await;
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
        // Whatever happened above, leave no VIP behind.
        self.parts.remove_all(&self.cfg).await;
        self.cluster.finish(crate::cluster::FINISH_BOUND).await;
        tracing::info!("stopped");
    }
}

/// Default path of the configuration.
pub fn default_config_path() -> PathBuf {
    PathBuf::from(crate::config::defaults::CONFIG_PATH)
}
