//! The daemon's background tasks: the lease elector (or the single-node
//! stand-in) with the credential it loads, and the health monitor.

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SetupError;
use crate::config::Config;
use crate::health::{self, HealthReport, HttpProbe, StabilityFilter};
use crate::kube::{Credentials, KubeClient, Peers};
use crate::lease::{Elector, KubeLeaseStore, LeaseEvent, Timings};
use crate::observe::Metrics;

/// A running elector and what the daemon needs of it.
pub(crate) struct Control {
    /// The loaded credential (the health probe reuses its CA and identity).
    pub(crate) creds: Option<Credentials>,
    pub(crate) campaign: watch::Sender<bool>,
    pub(crate) elector: JoinHandle<()>,
    pub(crate) events: mpsc::Receiver<LeaseEvent>,
    /// The node the elector's next release hands over to.
    pub(crate) handover: crate::lease::HandoverSlot,
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
            handover: Default::default(),
        });
    }
    let client = KubeClient::from_config(cfg)?;
    let creds = client.credentials().clone();
    crate::credential::warn_if_cluster_admin(&creds);
    if cfg.k8s.insecure_skip_tls_verify {
        tracing::warn!(
            server = %cfg.k8s.api_server,
            "k8s.insecure_skip_tls_verify is set: the API server's certificate is NOT verified"
        );
    }
    let peers = Peers::new(cfg, creds.clone(), client.timeout())?;
    let store = crate::daemon::metered::Metered {
        inner: KubeLeaseStore::new(client, &cfg.lease.namespace, &cfg.lease.name).with_peers(peers),
        metrics: metrics.clone(),
    };
    let handover = crate::lease::HandoverSlot::default();
    let elector = Elector::new(store, &cfg.node_name, Timings::from(&cfg.lease))
        .with_handover(handover.clone());
    let elector = tokio::spawn(elector.run(campaign_rx, lease_tx));
    Ok(Control {
        creds: Some(creds),
        campaign: campaign_tx,
        elector,
        events,
        handover,
    })
}

/// Starts the health monitor, its stability filter starting at `healthy`,
/// its pace following `holding`.
pub(crate) fn spawn_health(
    cfg: &Config,
    creds: Option<&Credentials>,
    healthy: bool,
    holding: watch::Receiver<bool>,
) -> Result<(JoinHandle<()>, mpsc::Receiver<HealthReport>), SetupError> {
    let filter =
        StabilityFilter::resumed(cfg.health.stability_buffer, healthy).configured(&cfg.health);
    spawn_filtered(cfg, creds, filter, holding)
}

/// Starts the health monitor with `filter`, recording the stable health in
/// `run_dir` for a restart to resume from.
pub(super) fn spawn_filtered(
    cfg: &Config,
    creds: Option<&Credentials>,
    filter: StabilityFilter,
    holding: watch::Receiver<bool>,
) -> Result<(JoinHandle<()>, mpsc::Receiver<HealthReport>), SetupError> {
    let probe = HttpProbe::new(&cfg.health, creds)?;
    let (tx, reports) = mpsc::channel(16);
    let file = health::HealthFile::new(&cfg.run_dir);
    let pace = health::Pace {
        interval: cfg.health.interval,
        holding_interval: cfg.health.holding_interval,
        holding,
    };
    let task = tokio::spawn(health::monitor_recorded(probe, pace, filter, file, tx));
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
