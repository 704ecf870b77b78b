//! The fence deadline on CLOCK_BOOTTIME.
//!
//! The daemon's timers (tokio's `Instant`, CLOCK_MONOTONIC) and the kernel's
//! address lifetimes (jiffies) both stand still while the machine is
//! suspended, so after a 10 s sleep a holder would find its fence still
//! ahead and its VIP still valid, although a standby took the Lease in the
//! meantime. CLOCK_BOOTTIME counts the sleep. [`SleepWatch`] keeps the fence
//! on it as well: armed as an absolute one-shot timer, and compared with the
//! monotonic clock on every pass of the main loop, where a difference in
//! progress means the machine slept.

use std::future::poll_fn;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{ClockId as Clock, clock_gettime};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// How much more CLOCK_BOOTTIME may advance than CLOCK_MONOTONIC between two
/// loop passes before we call it a sleep. The two clocks are slewed alike
/// and differ only by time spent suspended; the slack covers reading them
/// one after the other on a loaded machine.
pub const SLEEP_TOLERANCE: Duration = Duration::from_millis(100);

/// How far apart the two clock reads of one check may be.
const READ_SKEW: Duration = Duration::from_millis(5);

/// Why the boot-time clock could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BootClockError {
    /// timerfd_create(CLOCK_BOOTTIME) failed.
    #[error(
        "failed to create a CLOCK_BOOTTIME timer: {0} (needs Linux >= 3.15; without it a suspended holder may keep its VIP after resume)"
    )]
    Create(nix::errno::Errno),
    /// The timer could not be registered with the tokio reactor.
    #[error("failed to register the CLOCK_BOOTTIME timer with the event loop: {0}")]
    Register(std::io::Error),
    /// timerfd_settime failed.
    #[error("failed to arm the CLOCK_BOOTTIME timer: {0}")]
    Arm(nix::errno::Errno),
}

/// A clock that keeps counting while the machine sleeps, with one absolute
/// one-shot timer on it. Real: [`TimerFdClock`]; fake: [`FakeBootClock`].
pub trait BootClock: Send {
    /// Time since boot, including time spent suspended.
    fn now(&self) -> Duration;
    /// Arms the timer at the absolute boot time `at` (replacing any earlier
    /// one), or disarms it.
    fn arm(&mut self, at: Option<Duration>) -> Result<(), BootClockError>;
    /// Ready once the armed timer has fired since the last ready. May be
    /// ready spuriously; the caller decides by reading [`BootClock::now`].
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// The kernel's CLOCK_BOOTTIME and a timerfd on it, armed with
/// `TFD_TIMER_ABSTIME`: the kernel fires it on resume if the deadline passed
/// during the sleep.
#[derive(Debug)]
pub struct TimerFdClock {
    fd: AsyncFd<Timer>,
}

/// `AsyncFd` wants `AsRawFd`; nix's `TimerFd` offers `AsFd`.
#[derive(Debug)]
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl TimerFdClock {
    /// Creates the timer (non-blocking, close-on-exec), unarmed. Must be
    /// called inside a tokio runtime.
    pub fn new() -> Result<Self, BootClockError> {
        let timer = TimerFd::new(
            ClockId::CLOCK_BOOTTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(BootClockError::Create)?;
        // `AsyncFd::new` is deprecated because an `AsRawFd` type could hand
        // out an fd it closes or swaps while registered (tokio #8587). Ours
        // owns its fd (`TimerFd` holds an `OwnedFd`), returns the same one
        // every time and closes it only when dropped with the `AsyncFd`: the
        // contract of the unsafe `register`, kept without new `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Timer(timer)).map_err(BootClockError::Register)?;
        Ok(Self { fd })
    }
}

/// CLOCK_BOOTTIME now.
pub fn boottime_now() -> Duration {
    // CLOCK_BOOTTIME exists on every kernel that has timerfd on it; reading
    // it cannot fail for a valid clock id.
    clock_gettime(Clock::CLOCK_BOOTTIME).map_or(Duration::ZERO, Duration::from)
}

impl BootClock for TimerFdClock {
    fn now(&self) -> Duration {
        boottime_now()
    }

    fn arm(&mut self, at: Option<Duration>) -> Result<(), BootClockError> {
        let timer = &self.fd.get_ref().0;
        match at {
            // A zero it_value would disarm: the earliest real deadline is 1 ns.
            Some(at) => timer.set(
                Expiration::OneShot(TimeSpec::from(at.max(Duration::from_nanos(1)))),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            ),
            None => timer.unset(),
        }
        .map_err(BootClockError::Arm)
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut guard = match ready!(self.fd.poll_read_ready(cx)) {
                Ok(guard) => guard,
                Err(e) => {
                    // The reactor is shutting down. Not Ready: that would
                    // spin the caller. The per-pass clock check still runs.
                    tracing::warn!(error = %e, "CLOCK_BOOTTIME timer failed");
                    return Poll::Pending;
                }
            };
            match guard.try_io(|t| t.get_ref().0.wait().map_err(std::io::Error::from)) {
                Ok(Ok(())) => return Poll::Ready(()),
                Ok(Err(e)) => {
                    // Cannot happen for a valid timerfd; do not spin on it.
                    tracing::warn!(error = %e, "failed to read the CLOCK_BOOTTIME timer");
                    return Poll::Pending;
                }
                // Not expired after all: readiness was cleared, poll again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// What [`SleepWatch::woke`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The fence deadline passed on CLOCK_BOOTTIME (typically: during a
    /// suspend), while the monotonic fence may still be ahead.
    FencePassed,
    /// CLOCK_BOOTTIME advanced by `gap` more than CLOCK_MONOTONIC since the
    /// last pass: the machine slept, and every monotonic deadline and kernel
    /// lifetime is `gap` too late.
    Slept {
        /// Time spent suspended, as far as this pass can tell.
        gap: Duration,
    },
}

impl std::fmt::Display for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FencePassed => f.write_str("the fence deadline passed on CLOCK_BOOTTIME"),
            Self::Slept { gap } => write!(f, "CLOCK_BOOTTIME ran {gap:?} ahead of CLOCK_MONOTONIC"),
        }
    }
}

/// The fence deadline on CLOCK_BOOTTIME plus sleep detection, for the main
/// loop: [`SleepWatch::arm`] whenever the fence may have changed, and await
/// [`SleepWatch::woke`] as the first arm of a biased `select!`.
#[derive(Debug)]
pub struct SleepWatch<C> {
    clock: C,
    /// The monotonic fence the boot-time timer was last armed for.
    fence: Option<Instant>,
    /// The same deadline on CLOCK_BOOTTIME.
    boot_fence: Option<Duration>,
    /// Both clocks at the last check.
    last: (Instant, Duration),
    tolerance: Duration,
}

impl<C: BootClock> SleepWatch<C> {
    /// A watch with no fence armed.
    pub fn new(clock: C) -> Self {
        let last = (Instant::now(), clock.now());
        Self {
            clock,
            fence: None,
            boot_fence: None,
            last,
            tolerance: SLEEP_TOLERANCE,
        }
    }

    /// The clock, for tests and the simulation.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The fence deadline on CLOCK_BOOTTIME, if armed.
    pub fn boot_fence(&self) -> Option<Duration> {
        self.boot_fence
    }

    /// Arms the boot-time timer for the machine's `fence` (a monotonic
    /// instant): at `boottime_now + (fence - Instant::now())`. Does nothing
    /// if the fence did not change, so it can be called after every step.
    pub fn arm(&mut self, fence: Option<Instant>) -> Result<(), BootClockError> {
        if fence == self.fence {
            return Ok(());
        }
        let boot_fence = fence.map(|f| {
            // Read the monotonic clock first: a sleep between the two reads
            // then makes the boot fence earlier, never later.
            let left = f.saturating_duration_since(Instant::now());
            self.clock.now() + left
        });
        self.clock.arm(boot_fence)?;
        self.fence = fence;
        self.boot_fence = boot_fence;
        Ok(())
    }

    /// Checks both clocks now: the boot-time fence first, then the gap
    /// between the clocks' progress since the last check.
    pub fn check(&mut self) -> Option<Wake> {
        let now = self.read_both();
        let boot_passed = now.1.saturating_sub(self.last.1);
        let mono_passed = now.0.saturating_duration_since(self.last.0);
        self.last = now;
        if self.boot_fence.is_some_and(|f| now.1 >= f) {
            self.boot_fence = None;
            // Both clocks past the fence: the ordinary deadline, which the
            // monotonic timer reports (reason renew_deadline). Only a
            // monotonic fence still ahead means the machine slept.
            if self.fence.is_some_and(|m| now.0 < m) {
                return Some(Wake::FencePassed);
            }
        }
        let gap = boot_passed.saturating_sub(mono_passed);
        (gap > self.tolerance).then_some(Wake::Slept { gap })
    }

    /// Both clocks at (nearly) one instant: a read pair that took longer
    /// than [`READ_SKEW`] (the thread was preempted between the reads) is
    /// taken again, so a busy machine does not look like one that slept.
    fn read_both(&self) -> (Instant, Duration) {
        let mut pair = (Instant::now(), self.clock.now());
        for _ in 0..3 {
            let after = Instant::now();
            if after.saturating_duration_since(pair.0) <= READ_SKEW {
                break;
            }
            pair = (after, self.clock.now());
        }
        pair
    }

    /// Checks the clocks on every poll (that is, on every wake-up of the
    /// task that awaits it, before anything else in a biased `select!`),
    /// and waits for the boot-time timer. Cancel-safe.
    pub fn poll_woke(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        loop {
            if let Some(w) = self.check() {
                return Poll::Ready(w);
            }
            // A fire whose deadline has not come (re-armed meanwhile) is
            // spurious: check again and wait for the next.
            ready!(self.clock.poll_fired(cx));
        }
    }

    /// See [`SleepWatch::poll_woke`].
    pub async fn woke(&mut self) -> Wake {
        poll_fn(|cx| self.poll_woke(cx)).await
    }
}
