//! A scripted probe for unit tests of code that consumes health.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::{Failure, Probe, ProbeResult};

/// Returns whatever it was last told; clones share the script.
#[derive(Debug, Clone)]
pub struct FakeProbe {
    state: Arc<Mutex<(bool, String, u64, Failure)>>,
}

impl Default for FakeProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeProbe {
    /// A probe that fails with "fake: not set" until told otherwise.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new((
                false,
                "fake: not set".into(),
                0,
                Failure::Ambiguous,
            ))),
        }
    }

    /// Sets the result of the following probes.
    pub fn set(&self, healthy: bool, reason: &str) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 = healthy;
        s.1 = reason.to_string();
        s.3 = Failure::Ambiguous;
    }

    /// Makes the following probes fail with a `failure` of this kind.
    pub fn fail(&self, failure: Failure, reason: &str) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 = false;
        s.1 = reason.to_string();
        s.3 = failure;
    }

    /// Number of probes run so far.
    pub fn probes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .2
    }
}

impl Probe for FakeProbe {
    async fn probe(&self) -> ProbeResult {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.2 += 1;
        ProbeResult {
            healthy: s.0,
            failure: (!s.0).then_some(s.3),
            reason: s.1.clone(),
            at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use tokio::time::Duration;

    use super::*;
    use crate::health::{StabilityFilter, monitor};

    #[tokio::test(start_paused = true)]
    async fn monitor_flips_after_the_buffer_and_reports_reasons() {
        let probe = FakeProbe::new();
        probe.set(true, "ok");
        let (tx, mut rx) = mpsc::channel(64);
        let t0 = Instant::now();
        tokio::spawn(monitor(
            probe.clone(),
            Duration::from_secs(2),
            StabilityFilter::new(Duration::from_secs(5)),
            tx,
        ));
        let flipped = loop {
            let r = rx.recv().await.unwrap();
            if r.changed {
                break r;
            }
            assert!(!r.healthy);
        };
        assert!(flipped.healthy);
        assert_eq!(
            flipped.result.at - t0,
            Duration::from_secs(6),
            "probes at 0,2,4,6 s"
        );
        probe.set(false, "connection refused");
        let r = rx.recv().await.unwrap();
        assert_eq!(
            (r.healthy, r.result.reason.as_str()),
            (true, "connection refused")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_probes_at_the_holding_interval() {
        use tokio::sync::watch;
        let probe = FakeProbe::new();
        probe.set(true, "ok");
        let (holding, holding_rx) = watch::channel(false);
        let pace = crate::health::Pace {
            interval: Duration::from_secs(2),
            holding_interval: Duration::from_millis(500),
            holding: holding_rx,
        };
        let (tx, mut rx) = mpsc::channel(64);
        let t0 = Instant::now();
        tokio::spawn(crate::health::monitor_paced(
            probe.clone(),
            pace,
            StabilityFilter::new(Duration::from_secs(1)),
            tx,
        ));
        let mut at = Vec::new();
        for _ in 0..3 {
            at.push(rx.recv().await.unwrap().result.at - t0);
        }
        assert_eq!(at, [0, 2000, 4000].map(Duration::from_millis));
        // Becoming the holder at 4.1 s: the pending probe (due at 6 s)
        // moves to 4.6 s, then one every 500 ms.
        tokio::time::sleep_until(t0 + Duration::from_millis(4100)).await;
        holding.send_replace(true);
        let mut at = Vec::new();
        for _ in 0..3 {
            at.push(rx.recv().await.unwrap().result.at - t0);
        }
        assert_eq!(at, [4600, 5100, 5600].map(Duration::from_millis));
        // And back: the probe already due stays, then every 2 s.
        holding.send_replace(false);
        let mut at = Vec::new();
        for _ in 0..2 {
            at.push(rx.recv().await.unwrap().result.at - t0);
        }
        assert_eq!(at, [6100, 8100].map(Duration::from_millis));
    }
}
