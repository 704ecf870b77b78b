//! Building the daemon's parts, and tearing them down.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Daemon;
use crate::announce::{AnnounceError, Announcer, RawAnnouncer, Schedule};
use crate::config::{Config, Vip};
use crate::health::{self, HealthError, HealthReport, HttpProbe, StabilityFilter};
use crate::kube::{Credentials, KubeClient, KubeError};
use crate::lease::{Elector, KubeLeaseStore, LeaseEvent, Timings};
use crate::machine::Machine;
use crate::observe::{Metrics, MetricsError, MetricsServer, Status, StatusWriter};
use crate::systemd::SdNotifier;
use crate::vip::{self, Cause, CleanupError, Guard, NetlinkAddressTable, VipError, Watcher};

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
    /// The metrics endpoint could not listen.
    #[error("{0}")]
    Metrics(#[from] MetricsError),
}

/// The tasks and handles the daemon owns.
pub(crate) struct Parts {
    pub(crate) table: Arc<NetlinkAddressTable>,
    pub(crate) announcer: Arc<RawAnnouncer>,
    pub(crate) guard: Guard,
    /// Which VIPs the netlink watcher reports removals of.
    pub(crate) watched: vip::WatchedVips,
    pub(crate) campaign: Option<watch::Sender<bool>>,
    pub(crate) elector: Option<JoinHandle<()>>,
    pub(crate) health: JoinHandle<()>,
    metrics_server: Option<JoinHandle<()>>,
}

impl Parts {
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

impl Drop for Parts {
    fn drop(&mut self) {
        self.health.abort();
        if let Some(m) = &self.metrics_server {
            m.abort();
        }
    }
}

/// Opens everything, removes leftover VIPs, and starts the tasks.
pub(super) async fn start(cfg: Config) -> Result<Daemon, SetupError> {
    let notifier = SdNotifier::from_env();
    let table = Arc::new(NetlinkAddressTable::connect(&cfg.interface)?);
    // We hold no lease yet, so any VIP of ours on the interface is a leftover.
    match vip::remove_all(table.as_ref(), &cfg.vips).await {
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
        Err(e) => tracing::error!(error = %e, "startup cleanup failed"),
    }
    let schedule = Schedule {
        count: cfg.announce.count,
        spacing: cfg.announce.spacing,
        second_burst_delay: cfg.announce.second_burst_delay,
        refresh_interval: cfg.announce.refresh_interval,
    };
    let announcer = Arc::new(RawAnnouncer::new(&cfg.interface, schedule)?);
    let watcher = Watcher::start(&cfg.interface, &cfg.vips).await?;
    let watched = watcher.watched();
    let (guard, net_events) = Guard::spawn(table.clone(), announcer.clone(), watcher);

    let metrics = Metrics::new(&cfg.vips);
    let metrics_server = match cfg.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::bind(addr).await?;
            Some(tokio::spawn(server.run(metrics.clone())))
        }
        None => None,
    };

    let control = spawn_control(&cfg, &metrics, false)?;
    let (health, health_reports) = spawn_health(&cfg, control.creds.as_ref(), false)?;

    let status = Status::new(&cfg.node_name, &cfg.vips, SystemTime::now());
    let status_writer = StatusWriter::new(cfg.status_file());
    let cluster = crate::cluster::spawn(&cfg, &metrics);
    Ok(Daemon {
        machine: Machine::new(cfg.lease.renew_deadline),
        parts: Parts {
            table,
            announcer,
            guard,
            watched,
            campaign: Some(control.campaign),
            elector: Some(control.elector),
            health,
            metrics_server,
        },
        creds: control.creds,
        lease_events: control.events,
        health_reports,
        net_events,
        notifier,
        status,
        status_writer,
        metrics,
        holder: None,
        last_probe: String::from("no probe yet"),
        leader_since: None,
        last_sd_status: String::new(),
        announced: Default::default(),
        vips_up: false,
        announcing: false,
        vip_until: None,
        release_blocked: None,
        cluster,
        cfg,
    })
}

/// A running elector and what the daemon needs of it.
pub(crate) struct Control {
    /// The loaded credential (the health probe reuses its CA and identity).
    pub(crate) creds: Option<Credentials>,
    pub(crate) campaign: watch::Sender<bool>,
    pub(crate) elector: JoinHandle<()>,
    pub(crate) events: mpsc::Receiver<LeaseEvent>,
}

/// Loads the credential and starts the lease elector (or the single-node
/// stand-in), campaigning from the start if `campaign`.
pub(crate) fn spawn_control(
    cfg: &Config,
    metrics: &Metrics,
    campaign: bool,
) -> Result<Control, SetupError> {
    let (campaign_tx, campaign_rx) = watch::channel(campaign);
    let (lease_tx, events) = mpsc::channel(64);
    if !cfg.k8s.enabled {
        tracing::warn!(
            "k8s.enabled is false: single-node mode, the VIP is held whenever the local API server is healthy; never run two nodes like this"
        );
        let elector = tokio::spawn(solo(campaign_rx, lease_tx, cfg.lease.retry_period));
        return Ok(Control {
            creds: None,
            campaign: campaign_tx,
            elector,
            events,
        });
    }
    let client = KubeClient::from_config(cfg)?;
    let creds = client.credentials().clone();
    if cfg.k8s.insecure_skip_tls_verify {
        tracing::warn!(
            server = %cfg.k8s.api_server,
            "k8s.insecure_skip_tls_verify is set: the API server's certificate is NOT verified"
        );
    }
    let store = super::metered::Metered {
        inner: KubeLeaseStore::new(client, &cfg.lease.namespace, &cfg.lease.name),
        metrics: metrics.clone(),
    };
    let elector = Elector::new(store, &cfg.node_name, Timings::from(&cfg.lease));
    let elector = tokio::spawn(elector.run(campaign_rx, lease_tx));
    Ok(Control {
        creds: Some(creds),
        campaign: campaign_tx,
        elector,
        events,
    })
}

/// Starts the health monitor, its stability filter starting at `healthy`.
pub(crate) fn spawn_health(
    cfg: &Config,
    creds: Option<&Credentials>,
    healthy: bool,
) -> Result<(JoinHandle<()>, mpsc::Receiver<HealthReport>), SetupError> {
    let probe = HttpProbe::new(&cfg.health, creds)?;
    let (tx, reports) = mpsc::channel(16);
    let filter = StabilityFilter::resumed(cfg.health.stability_buffer, healthy);
    let task = tokio::spawn(health::monitor(probe, cfg.health.interval, filter, tx));
    Ok((task, reports))
}

/// Single-node mode: "the lease" is granted whenever we campaign, renewed
/// every `period`, so the VIP keeps the same kernel fence as with a Lease.
async fn solo(
    mut campaign: watch::Receiver<bool>,
    events: mpsc::Sender<LeaseEvent>,
    period: std::time::Duration,
) {
    let mut held = false;
    loop {
        let wanted = *campaign.borrow_and_update();
        let now = Instant::now();
        let event = match (wanted, held) {
            (true, false) => Some(LeaseEvent::Acquired { sent_at: now }),
            (true, true) => Some(LeaseEvent::Renewed { sent_at: now }),
            (false, true) => Some(LeaseEvent::Lost {
                reason: crate::lease::LostReason::Released,
                at: now,
            }),
            (false, false) => None,
        };
        held = wanted;
        if let Some(e) = event
            && events.send(e).await.is_err()
        {
            return;
        }
        tokio::select! {
            r = campaign.changed() => if r.is_err() { return },
            () = tokio::time::sleep(period), if held => {}
        }
    }
}

/// The VIPs of `cfg` that are not in `keep`.
pub(super) fn dropped(cfg: &[Vip], keep: &[Vip]) -> Vec<Vip> {
    cfg.iter().filter(|v| !keep.contains(v)).copied().collect()
}
