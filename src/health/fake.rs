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
}
