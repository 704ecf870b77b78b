//! The anti-flapping buffer between raw probe results and the health state.

use tokio::time::{Duration, Instant};

/// Turns raw probe results into a stable health state: the state flips only
/// after the opposite result has held continuously for the buffer.
///
/// It starts *unhealthy*: a node that just started has not shown that its
/// API server works, and claiming health early would let it compete for the
/// VIP with an API server that may still be loading. So the first flip to
/// healthy comes after `buffer` of uninterrupted successes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StabilityFilter {
    buffer: Duration,
    healthy: bool,
    /// First observation of the current run of results opposite to `healthy`.
    opposite_since: Option<Instant>,
    /// After a restart: the last success before it. If the first result
    /// fails, the failures count from here, as if every probe in the gap
    /// had failed.
    unobserved_since: Option<Instant>,
}

impl StabilityFilter {
    /// A filter with the given buffer, starting unhealthy.
    pub fn new(buffer: Duration) -> Self {
        Self {
            buffer,
            healthy: false,
            opposite_since: None,
            unobserved_since: None,
        }
    }

    /// A filter that resumes at a known state (a reload of the probe
    /// settings must not make a healthy node look unhealthy).
    pub fn resumed(buffer: Duration, healthy: bool) -> Self {
        Self {
            buffer,
            healthy,
            opposite_since: None,
            unobserved_since: None,
        }
    }

    /// A filter that resumes healthy after a restart, the last successful
    /// probe having been at `last_ok`: it flips to unhealthy no later than
    /// a filter that had been running (and failing) all along would have,
    /// at `last_ok + buffer`.
    pub fn resumed_since(buffer: Duration, last_ok: Instant) -> Self {
        Self {
            buffer,
            healthy: true,
            opposite_since: None,
            unobserved_since: Some(last_ok),
        }
    }

    /// Feeds one raw result seen at `at`; returns the (possibly new) state.
    pub fn observe(&mut self, raw_healthy: bool, at: Instant) -> bool {
        let gap = self.unobserved_since.take();
        if raw_healthy == self.healthy {
            self.opposite_since = None;
            return self.healthy;
        }
        let since = *self.opposite_since.get_or_insert(gap.unwrap_or(at).min(at));
        if at.saturating_duration_since(since) >= self.buffer {
            self.healthy = raw_healthy;
            self.opposite_since = None;
        }
        self.healthy
    }

    /// The current stable state.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// When the state would flip if the opposite result keeps holding;
    /// `None` while results agree with the state.
    pub fn flips_at(&self) -> Option<Instant> {
        self.opposite_since.map(|s| s + self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn starts_unhealthy_and_needs_the_full_buffer_of_success() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::new(5 * S);
        assert!(!f.is_healthy());
        for i in 0..5 {
            assert!(!f.observe(true, t0 + i * S), "flipped early at {i}s");
        }
        assert_eq!(f.flips_at(), Some(t0 + 5 * S));
        assert!(f.observe(true, t0 + 5 * S));
        assert_eq!(f.flips_at(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_opposite_result_restarts_the_count() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::new(2 * S);
        f.observe(true, t0);
        assert!(f.observe(true, t0 + 2 * S));
        // Flapping failures never flip it.
        for i in 0..10 {
            let t = t0 + (3 + i) * S;
            assert!(f.observe(i % 2 == 1, t), "flipped at {i}");
        }
        // Continuous failure does, after the buffer.
        let t = t0 + 20 * S;
        assert!(f.observe(false, t));
        assert!(f.observe(false, t + S));
        assert!(!f.observe(false, t + 2 * S));
        // And back: success must hold the whole buffer again.
        assert!(!f.observe(true, t + 3 * S));
        assert!(!f.observe(false, t + 4 * S));
        assert!(!f.observe(true, t + 5 * S));
        assert!(f.observe(true, t + 7 * S));
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_filter_counts_the_restart_gap_as_failing() {
        let t0 = Instant::now();
        // Last success at t0, restarted at t0 + 3 s: still healthy.
        let mut f = StabilityFilter::resumed_since(5 * S, t0);
        assert!(f.is_healthy());
        // The API server died meanwhile: unhealthy at t0 + 5 s, not 3 + 5.
        assert!(f.observe(false, t0 + 3 * S));
        assert_eq!(f.flips_at(), Some(t0 + 5 * S));
        assert!(!f.observe(false, t0 + 5 * S));

        // A success after the restart forgets the gap.
        let mut f = StabilityFilter::resumed_since(5 * S, t0);
        assert!(f.observe(true, t0 + 3 * S));
        assert!(f.observe(false, t0 + 4 * S));
        assert_eq!(f.flips_at(), Some(t0 + 9 * S));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_buffer_follows_every_result() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::new(Duration::ZERO);
        assert!(f.observe(true, t0));
        assert!(!f.observe(false, t0));
        assert!(f.observe(true, t0));
    }
}
