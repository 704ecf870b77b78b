//! Keeping the metrics endpoint up without ever holding up the VIP work.
//!
//! Any local user can bind the metrics port before ha-vip starts. A failed
//! bind is therefore never fatal: it is logged with what to do, retried with
//! backoff, and reported in the status file until the port is free.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::http::MetricsServer;
use super::metrics::Metrics;
use super::status::{MetricsStatus, Timestamp};

/// Wait after the first failed bind; doubled after each failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two binds: a freed port is picked up within this.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Starts serving `metrics` on `addr`, binding again with backoff for as
/// long as the bind fails. Returns the task (abort it to stop) and the
/// endpoint's state, which [`super::StatusWriter`] puts in the status file.
pub fn spawn_metrics_endpoint(
    addr: SocketAddr,
    metrics: Metrics,
) -> (JoinHandle<()>, watch::Receiver<MetricsStatus>) {
    let (tx, rx) = watch::channel(MetricsStatus {
        listen: addr.to_string(),
        serving: false,
        error: None,
        failed_binds: 0,
        since: Timestamp::now(),
    });
    (tokio::spawn(supervise(addr, metrics, tx)), rx)
}

async fn supervise(addr: SocketAddr, metrics: Metrics, state: watch::Sender<MetricsStatus>) {
    let mut delay = FIRST_RETRY;
    let mut failed_binds: u32 = 0;
    let mut last_error = String::new();
    loop {
        match MetricsServer::bind(addr).await {
            Ok(server) => {
                if failed_binds > 0 {
                    tracing::info!(listen = %addr, failed_binds, "metrics endpoint is serving now");
                }
                state.send_replace(MetricsStatus {
                    listen: server.local_addr().to_string(),
                    serving: true,
                    error: None,
                    failed_binds,
                    since: Timestamp::now(),
                });
                // Serves until the task is aborted.
                server.run(metrics).await;
                return;
            }
            Err(e) => {
                failed_binds = failed_binds.saturating_add(1);
                let error = e.to_string();
                // Once per distinct error: a port held for days must not
                // fill the journal.
                if error != last_error {
                    tracing::warn!(
                        error = %error,
                        "metrics endpoint not serving; ha-vip keeps managing the VIP and retries the bind every {}s at most",
                        MAX_RETRY.as_secs()
                    );
                } else {
                    tracing::debug!(error = %error, failed_binds, "metrics bind failed again");
                }
                state.send_modify(|s| {
                    if s.error.is_none() {
                        s.since = Timestamp::now();
                    }
                    s.serving = false;
                    s.error = Some(error.clone());
                    s.failed_binds = failed_binds;
                });
                last_error = error;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_retried_until_it_is_free() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let (task, mut state) = spawn_metrics_endpoint(addr, Metrics::new(&[]));
        let failing = state.wait_for(|s| s.error.is_some()).await.unwrap().clone();
        assert!(!failing.serving);
        assert!(
            failing.error.as_deref().unwrap().contains("address in use"),
            "{failing:?}"
        );
        drop(taken);
        let up = tokio::time::timeout(MAX_RETRY * 2, state.wait_for(|s| s.serving))
            .await
            .expect("the endpoint came up once the port was free")
            .unwrap()
            .clone();
        assert_eq!(up.error, None);
        assert!(up.failed_binds >= 1, "{up:?}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        task.abort();
    }
}
