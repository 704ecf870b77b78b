//! The fence the daemon runs with, and the real-time clock its deadline is
//! written on.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{FenceError, PreciseFence};

/// The precise fence in `fence.mode: precise`, none in `lifetime` (the
/// VIP's kernel lifetime alone then fences): arming and clearing succeed
/// at once and change nothing.
#[derive(Debug)]
pub enum ModeFence<F> {
    /// Rules in the kernel's data path ([`super::NftFence`] in production).
    Precise(F),
    /// No precise fence.
    Lifetime,
}

impl<F> ModeFence<F> {
    /// Whether a precise fence stands in front of the lifetime.
    pub fn is_precise(&self) -> bool {
        matches!(self, Self::Precise(_))
    }
}

impl<F: PreciseFence> PreciseFence for ModeFence<F> {
    async fn arm(&self, vips: &[IpAddr], deadline: SystemTime) -> Result<(), FenceError> {
        match self {
            Self::Precise(f) => f.arm(vips, deadline).await,
            Self::Lifetime => Ok(()),
        }
    }

    async fn clear(&self) -> Result<(), FenceError> {
        match self {
            Self::Precise(f) => f.clear().await,
            Self::Lifetime => Ok(()),
        }
    }
}

/// CLOCK_REALTIME, as the precise fence's rules compare against it.
pub trait WallClock: Send + Sync {
    /// The real time now.
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real-time instant that corresponds to the monotonic `at`, read on
/// both clocks now: `wall now + (at - monotonic now)`. Correct at the
/// moment of the call; a real-time step afterwards moves it (see
/// [`StepDetector`]).
pub fn realtime_of(wall: &dyn WallClock, at: Instant) -> SystemTime {
    let mono = Instant::now();
    let wall = wall.now();
    if at >= mono {
        wall + (at - mono)
    } else {
        wall.checked_sub(mono - at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Notices steps of the real-time clock against the monotonic one: the
/// difference of the two moves only when someone sets the time (or the
/// machine slept, which the sleep module handles first).
#[derive(Debug, Clone, Copy)]
pub struct StepDetector {
    wall: SystemTime,
    mono: Instant,
}

/// A real-time step smaller than this is rate adjustment or the time
/// between the two clock reads, not a step worth re-arming for.
pub const STEP_THRESHOLD: Duration = Duration::from_millis(10);

/// A real-time clock step: how far, and which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How far the real-time clock moved beyond the monotonic one.
    pub by: Duration,
    /// True for a step forward (the fence fires early: an outage, not an
    /// overlap), false for a step backward (the fence fires late).
    pub forward: bool,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.forward { "forward" } else { "backward" };
        write!(f, "{:?} {dir}", self.by)
    }
}

impl StepDetector {
    /// Starts measuring from now.
    pub fn new(wall: &dyn WallClock) -> Self {
        Self {
            wall: wall.now(),
            mono: Instant::now(),
        }
    }

    /// The step since the last call (or [`Self::new`]), if over
    /// [`STEP_THRESHOLD`]; restarts measuring from now either way.
    pub fn check(&mut self, wall: &dyn WallClock) -> Option<Step> {
        let now = Self::new(wall);
        let mono = now.mono - self.mono;
        let step = match now.wall.duration_since(self.wall) {
            Ok(w) if w >= mono => Step {
                by: w - mono,
                forward: true,
            },
            Ok(w) => Step {
                by: mono - w,
                forward: false,
            },
            Err(e) => Step {
                by: mono + e.duration(),
                forward: false,
            },
        };
        *self = now;
        (step.by >= STEP_THRESHOLD).then_some(step)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A real-time clock that follows tokio's (paused) clock plus an offset.
    struct Stepped {
        base: SystemTime,
        start: Instant,
        offset: Mutex<i64>,
    }

    impl WallClock for Stepped {
        fn now(&self) -> SystemTime {
            let t = self.base + (Instant::now() - self.start);
            let off = *self.offset.lock().unwrap();
            if off >= 0 {
                t + Duration::from_millis(off as u64)
            } else {
                t - Duration::from_millis((-off) as u64)
            }
        }
    }

    fn stepped() -> Stepped {
        Stepped {
            base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: Instant::now(),
            offset: Mutex::new(0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_monotonic_instant_maps_onto_the_real_time_clock() {
        let c = stepped();
        let at = Instant::now() + Duration::from_millis(1500);
        assert_eq!(realtime_of(&c, at), c.now() + Duration::from_millis(1500));
        let past = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(realtime_of(&c, past), c.now() - Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn steps_are_seen_with_their_size_and_direction() {
        let c = stepped();
        let mut d = StepDetector::new(&c);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(d.check(&c), None, "no step: both clocks moved 300 ms");
        *c.offset.lock().unwrap() = -5000;
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            d.check(&c),
            Some(Step {
                by: Duration::from_secs(5),
                forward: false
            })
        );
        *c.offset.lock().unwrap() = -4000;
        assert_eq!(
            d.check(&c),
            Some(Step {
                by: Duration::from_secs(1),
                forward: true
            })
        );
        *c.offset.lock().unwrap() = -3995;
        assert_eq!(d.check(&c), None, "5 ms is below the threshold");
    }
}
