//! The hysteresis between raw probe results and the health state: decisive
//! failures act at once, ambiguous ones wait out the stability buffer, and
//! the way back to healthy has a threshold of its own.

use tokio::time::{Duration, Instant};

use super::{Failure, ProbeResult};

/// Consecutive refused connections that make a healthy API server
/// unhealthy at once (the default of `health.decisive_refusals`).
pub const DECISIVE_REFUSALS: u32 = 2;

/// Turns raw probe results into a stable health state.
///
/// * Healthy to unhealthy, ambiguous failures (timeouts, a 500): only after
///   failures have held continuously for the `fall` buffer (the stability
///   buffer), so one slow answer does not move the VIP.
/// * Healthy to unhealthy, decisive failures: at once when the API server
///   says it is shutting down; after `refusals` refused connections in a
///   row. Either way a refusal or a shutdown answer also counts toward the
///   `fall` buffer, so it is never slower than an ambiguous failure.
/// * Unhealthy to healthy: after successes have held for the `rise` buffer.
///
/// It starts *unhealthy*: a node that just started has not shown that its
/// API server works, and claiming health early would let it compete for the
/// VIP with an API server that may still be loading. So the first flip to
/// healthy comes after `rise` of uninterrupted successes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StabilityFilter {
    fall: Duration,
    rise: Duration,
    refusals: u32,
    healthy: bool,
    /// First observation of the current run of results opposite to `healthy`.
    opposite_since: Option<Instant>,
    /// Refused connections in a row, while healthy.
    refused_run: u32,
    /// After a restart: the last success before it. If the first result
    /// fails, the failures count from here, as if every probe in the gap
    /// had failed.
    unobserved_since: Option<Instant>,
}

impl StabilityFilter {
    /// A filter with the given buffer both ways and the default decisive
    /// threshold, starting unhealthy.
    pub fn new(buffer: Duration) -> Self {
        Self {
            fall: buffer,
            rise: buffer,
            refusals: DECISIVE_REFUSALS,
            healthy: false,
            opposite_since: None,
            refused_run: 0,
            unobserved_since: None,
        }
    }

    /// A filter that resumes at a known state (a reload of the probe
    /// settings must not make a healthy node look unhealthy).
    pub fn resumed(buffer: Duration, healthy: bool) -> Self {
        Self {
            healthy,
            ..Self::new(buffer)
        }
    }

    /// A filter that resumes healthy after a restart, the last successful
    /// probe having been at `last_ok`: it flips to unhealthy no later than
    /// a filter that had been running (and failing) all along would have,
    /// at `last_ok + buffer`.
    pub fn resumed_since(buffer: Duration, last_ok: Instant) -> Self {
        Self {
            healthy: true,
            unobserved_since: Some(last_ok),
            ..Self::new(buffer)
        }
    }

    /// The same filter with the thresholds of `health`: `stability_buffer`
    /// for ambiguous failures, `rise` for the way back, and
    /// `decisive_refusals`.
    pub fn configured(self, health: &crate::config::Health) -> Self {
        Self {
            fall: health.stability_buffer,
            rise: health.rise,
            refusals: health.decisive_refusals.max(1),
            ..self
        }
    }

    /// Feeds one raw result; returns the (possibly new) state.
    pub fn observe_result(&mut self, result: &ProbeResult) -> bool {
        let failure = if result.healthy {
            None
        } else {
            Some(result.failure.unwrap_or(Failure::Ambiguous))
        };
        self.observe_failure(failure, result.at)
    }

    /// Feeds one raw result seen at `at`, a failure counting as ambiguous;
    /// returns the (possibly new) state.
    pub fn observe(&mut self, raw_healthy: bool, at: Instant) -> bool {
        self.observe_failure((!raw_healthy).then_some(Failure::Ambiguous), at)
    }

    /// Feeds one result seen at `at`: `None` for a success, else how
    /// decisive the failure is; returns the (possibly new) state.
    pub fn observe_failure(&mut self, failure: Option<Failure>, at: Instant) -> bool {
        let gap = self.unobserved_since.take();
        let raw_healthy = failure.is_none();
        self.refused_run = match failure {
            Some(Failure::Refused) => self.refused_run.saturating_add(1),
            _ => 0,
        };
        if raw_healthy == self.healthy {
            self.opposite_since = None;
            return self.healthy;
        }
        let since = *self.opposite_since.get_or_insert(gap.unwrap_or(at).min(at));
        let decisive = match failure {
            Some(Failure::ShuttingDown | Failure::Starting) => true,
            Some(Failure::Refused) => self.refused_run >= self.refusals,
            _ => false,
        };
        let buffer = if self.healthy { self.fall } else { self.rise };
        if decisive || at.saturating_duration_since(since) >= buffer {
            self.healthy = raw_healthy;
            self.opposite_since = None;
            self.refused_run = 0;
        }
        self.healthy
    }

    /// The current stable state.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// When the state would flip if the opposite result keeps holding (an
    /// upper bound: a decisive failure flips it sooner); `None` while
    /// results agree with the state.
    pub fn flips_at(&self) -> Option<Instant> {
        let buffer = if self.healthy { self.fall } else { self.rise };
        self.opposite_since.map(|s| s + buffer)
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

    fn at(failure: Option<Failure>, t: Instant) -> ProbeResult {
        ProbeResult {
            healthy: failure.is_none(),
            failure,
            reason: String::new(),
            at: t,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_answer_flips_at_once() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::resumed(5 * S, true);
        assert!(!f.observe_result(&at(Some(Failure::ShuttingDown), t0)));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_flip_after_the_decisive_count_in_a_row() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::resumed(5 * S, true);
        let refused = Some(Failure::Refused);
        assert!(f.observe_result(&at(refused, t0)), "one refusal waits");
        assert!(!f.observe_result(&at(refused, t0 + S)), "two in a row flip");

        // A success or an ambiguous failure in between restarts the count.
        let mut f = StabilityFilter::resumed(5 * S, true);
        assert!(f.observe_result(&at(refused, t0)));
        assert!(f.observe_result(&at(Some(Failure::Ambiguous), t0 + S)));
        assert!(f.observe_result(&at(refused, t0 + 2 * S)));
        assert!(f.observe_result(&at(None, t0 + 3 * S)));
        assert!(f.observe_result(&at(refused, t0 + 4 * S)));
        assert!(!f.observe_result(&at(refused, t0 + 5 * S)));
    }

    #[tokio::test(start_paused = true)]
    async fn ambiguous_failures_keep_the_buffer() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::resumed(5 * S, true);
        let doubt = Some(Failure::Ambiguous);
        for i in 0..5 {
            assert!(f.observe_result(&at(doubt, t0 + i * S)), "flipped at {i}s");
        }
        assert!(!f.observe_result(&at(doubt, t0 + 5 * S)));
    }

    #[tokio::test(start_paused = true)]
    async fn rise_has_its_own_threshold() {
        let t0 = Instant::now();
        let mut f = StabilityFilter::new(5 * S);
        f.rise = 2 * S;
        f.observe_result(&at(None, t0));
        assert!(!f.observe_result(&at(None, t0 + S)));
        assert!(f.observe_result(&at(None, t0 + 2 * S)));
        // A decisive refusal is not needed to fall, but the way in never
        // skips the rise buffer: a shutdown answer never makes it healthy.
        assert!(!f.observe_result(&at(Some(Failure::ShuttingDown), t0 + 3 * S)));
        assert_eq!(f.flips_at(), None);
        f.observe_result(&at(None, t0 + 4 * S));
        assert_eq!(f.flips_at(), Some(t0 + 6 * S));
    }
}
