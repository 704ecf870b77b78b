//! The fence of announcements: no frame for a VIP after its fence deadline.
//!
//! A process stopped (SIGSTOP, a long GC-like stall, a frozen VM) and
//! continued after its fence has lost the VIP to the kernel and maybe the
//! lease to a standby; a second burst or refresh round that was due while
//! it was stopped must not point the neighbours back at it. The daemon sets
//! each VIP's deadline whenever it refreshes the VIP ([`super::Announcer::fence`]),
//! and every frame is checked against it right before it is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::Schedule;
use crate::config::Vip;

/// Each VIP's fence deadline, shared by an announcer's tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deadlines(Arc<Mutex<HashMap<Vip, Instant>>>);

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, HashMap<Vip, Instant>> {
        // Never held across a panic-prone call; recover anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `vip`'s deadline (a later refresh moves it).
    pub(crate) fn set(&self, vip: Vip, until: Instant) {
        self.lock().insert(vip, until);
    }

    /// Forgets `vip`: nothing may be sent for it until the next [`Self::set`].
    pub(crate) fn clear(&self, vip: Vip) {
        self.lock().remove(&vip);
    }

    /// Whether a frame for `vip` may go out now: only before its deadline,
    /// and never without one.
    pub(crate) fn allows(&self, vip: Vip) -> bool {
        self.lock()
            .get(&vip)
            .is_some_and(|until| Instant::now() < *until)
    }
}

/// Sends `count` rounds `spacing` apart; `round` returns false when the
/// fence refused a frame, which ends the burst. Returns false then.
pub(crate) async fn rounds(count: u32, spacing: Duration, mut round: impl FnMut() -> bool) -> bool {
    for i in 0..count.max(1) {
        if i > 0 {
            tokio::time::sleep(spacing).await;
        }
        if !round() {
            return false;
        }
    }
    true
}

/// The schedule of one VIP: a burst, the second burst, then the refresh
/// rounds. `burst(count, why)` sends one burst and returns false once the
/// fence refused a frame, which ends the schedule: nothing after the fence
/// until the daemon starts it again.
pub(crate) async fn run_schedule<F: Future<Output = bool>>(
    s: Schedule,
    burst: impl Fn(u32, &'static str) -> F,
) {
    if !burst(s.count, "acquire").await {
        return;
    }
    tokio::time::sleep(s.second_burst_delay).await;
    if !burst(s.count, "second burst").await {
        return;
    }
    if let Some(every) = s.refresh_interval {
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        // After a stall, one round is enough; no catch-up storm.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !burst(1, "refresh").await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn vip() -> Vip {
        Vip {
            addr: "10.0.0.1".parse().unwrap(),
            prefix_len: 32,
        }
    }

    /// Issue 10, item 9: the real schedule, with a sender that records when
    /// each frame went out; the fence passes during the second burst.
    #[tokio::test(start_paused = true)]
    async fn no_frame_after_the_fence_and_the_schedule_ends_there() {
        let schedule = Schedule {
            count: 3,
            spacing: Duration::from_millis(150),
            second_burst_delay: Duration::from_secs(2),
            refresh_interval: Some(Duration::from_millis(500)),
        };
        let deadlines = Deadlines::default();
        let t0 = Instant::now();
        let fence = t0 + Duration::from_millis(2400);
        deadlines.set(vip(), fence);
        let sent = Mutex::new(Vec::new());
        let send = || {
            if !deadlines.allows(vip()) {
                return false;
            }
            sent.lock().unwrap().push(Instant::now());
            true
        };
        // Without a fence the refresh rounds would run for ever.
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            run_schedule(schedule, |count, _why| {
                rounds(count, schedule.spacing, send)
            }),
        )
        .await;
        let sent = sent.into_inner().unwrap();
        let late: Vec<_> = sent
            .iter()
            .filter(|t| **t >= fence)
            .map(|t| *t - fence)
            .collect();
        assert!(late.is_empty(), "frames after the fence: {late:?}");
        // Acquire burst (0, 0.15, 0.3 s), then one round of the second (2.3 s).
        assert_eq!(
            sent.len(),
            4,
            "{:?}",
            sent.iter().map(|t| *t - t0).collect::<Vec<_>>()
        );
        assert!(ended.is_ok(), "the schedule ended at the fence");
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_or_a_cleared_one_allows_nothing() {
        let deadlines = Deadlines::default();
        assert!(!deadlines.allows(vip()), "never without a deadline");
        deadlines.set(vip(), Instant::now() + Duration::from_secs(1));
        assert!(deadlines.allows(vip()));
        deadlines.clear(vip());
        assert!(!deadlines.allows(vip()));
        deadlines.set(vip(), Instant::now() + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!deadlines.allows(vip()), "not at the deadline itself");
    }
}
