//! Health of the local API server: a [`Probe`] (TCP connect + HTTPS
//! `GET /readyz` expecting 200 `ok`) and the [`StabilityFilter`] that keeps a
//! flapping API server from flapping the VIP.

mod fake;
mod http;
mod persist;
mod stability;

use std::future::Future;

use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant, sleep_until};

pub use fake::FakeProbe;
pub use http::HttpProbe;
pub use persist::{HEALTH_FILE, HEARTBEAT, HealthFile, monitor_recorded};
pub use stability::{DECISIVE_REFUSALS, StabilityFilter};

use crate::kube::KubeError;

/// How sure a failed probe is that the API server is gone.
///
/// A holder hands over at once on a decisive failure and waits out the
/// stability buffer on an ambiguous one: a timeout or a single 500 is what
/// a busy but working API server also produces, while an API server that
/// says it is shutting down, or whose port is closed, will not serve
/// through the VIP either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Timeouts, 5xx without the shutdown check, TLS trouble, a wrong body:
    /// the stability buffer decides.
    Ambiguous,
    /// The TCP connection was refused: nothing listens on the port. Decisive
    /// after `health.decisive_refusals` in a row (a single refusal can be a
    /// restart of the listener).
    Refused,
    /// `/readyz` fails its `shutdown` check (or, on newer API servers, a
    /// 429 "shutting down" answer): the API server says it is going away.
    /// Decisive at once.
    ShuttingDown,
    /// `/readyz` fails a post-start hook: the API server process has just
    /// started and is not serving yet. Decisive at once.
    Starting,
}

/// The raw outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// TCP connect, TLS and `200 ok` all succeeded.
    pub healthy: bool,
    /// How decisive the failure is; `None` when healthy.
    pub failure: Option<Failure>,
    /// Short human reason: "ok", "connection refused", "/readyz 500: [-]etcd
    /// failed: reason withheld", "body \"nope\"", "timeout after 1s", "TLS: ...".
    pub reason: String,
    /// When the probe finished.
    pub at: Instant,
}

/// One health check of the local API server.
pub trait Probe: Send + Sync + 'static {
    /// Runs one probe; never takes longer than its configured timeout.
    fn probe(&self) -> impl Future<Output = ProbeResult> + Send;
}

/// A probe's setup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HealthError {
    /// `health.endpoint` is not a usable URL.
    #[error(
        "invalid health.endpoint {url:?}: {reason}; expected e.g. https://127.0.0.1:6443/readyz"
    )]
    InvalidEndpoint {
        /// The configured URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Loading the CA or client certificate, or building TLS, failed.
    #[error("health probe: {0}")]
    Setup(#[from] KubeError),
}

/// One probe result together with the filtered state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The raw result.
    pub result: ProbeResult,
    /// The state after the stability filter.
    pub healthy: bool,
    /// True when this result flipped the state.
    pub changed: bool,
    /// How long the probe took.
    pub took: Duration,
}

/// How often the monitor probes.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Between probes while this node does not hold the VIP.
    pub interval: Duration,
    /// Between probes while it does: a dead API server behind the VIP is an
    /// outage for every client, and two refused probes must fit well within
    /// the renew deadline so the release still happens (see
    /// docs/operations.md).
    pub holding_interval: Duration,
    /// Whether this node holds the VIP now (the daemon sets it).
    pub holding: watch::Receiver<bool>,
}

impl Pace {
    /// Every `interval`, whatever the role.
    pub fn fixed(interval: Duration) -> Self {
        Self {
            interval,
            holding_interval: interval,
            holding: watch::channel(false).1,
        }
    }

    fn period(&self) -> Duration {
        if *self.holding.borrow() {
            self.holding_interval
        } else {
            self.interval
        }
    }
}

/// Probes every `interval` and reports each result with the filtered state;
/// returns when the receiver is dropped.
pub async fn monitor<P: Probe>(
    probe: P,
    interval: Duration,
    filter: StabilityFilter,
    reports: mpsc::Sender<HealthReport>,
) {
    monitor_paced(probe, Pace::fixed(interval), filter, reports).await;
}

/// Probes at `pace` and reports each result with the filtered state;
/// returns when the receiver is dropped.
pub async fn monitor_paced<P: Probe>(
    probe: P,
    mut pace: Pace,
    mut filter: StabilityFilter,
    reports: mpsc::Sender<HealthReport>,
) {
    let mut next = Instant::now();
    loop {
        // A change of role re-times the pending probe at once: the new
        // holder speeds up without waiting out the slow period.
        loop {
            tokio::select! {
                () = sleep_until(next) => break,
                r = pace.holding.changed() => {
                    if r.is_err() {
                        // Nobody will change it any more: keep the last pace.
                        sleep_until(next).await;
                        break;
                    }
                    let _ = pace.holding.borrow_and_update();
                    next = next.min(Instant::now() + pace.period());
                }
            }
        }
        let start = Instant::now();
        let result = probe.probe().await;
        let took = start.elapsed();
        // A slow probe must not cause a burst of catch-up probes.
        next = (start + pace.period()).max(Instant::now());
        let before = filter.is_healthy();
        let healthy = filter.observe_result(&result);
        if healthy != before {
            tracing::info!(healthy, reason = %result.reason, failure = ?result.failure, "local API server health changed");
        }
        let report = HealthReport {
            result,
            healthy,
            changed: healthy != before,
            took,
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}
