//! Suspend and resume.
//!
//! Two defences, because the fence (tokio's `Instant`, CLOCK_MONOTONIC) and
//! the kernel's VIP lifetime (jiffies) both stand still while the machine
//! sleeps:
//!
//! * before a suspend that systemd-logind announces, a planned handover
//!   ([`logind`]): VIPs removed, Lease released, then the machine may sleep;
//! * after any sleep, announced or not, the fence on CLOCK_BOOTTIME
//!   ([`boottime`]): on the first wake-up that finds the boot-time fence
//!   passed, or the boot-time clock ahead of the monotonic one, the VIPs go
//!   before anything else.
//!
//! [`Sleep`] bundles both for the daemon's main loop: one `select!` arm.

pub mod boottime;
mod fake;
pub mod logind;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

pub use boottime::{BootClock, BootClockError, SleepWatch, TimerFdClock, Wake};
pub use fake::{FakeBootClock, FakeBootHandle};
pub use logind::LogindEvent;

impl<C: BootClock + ?Sized> BootClock for Box<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn arm(&mut self, at: Option<Duration>) -> Result<(), BootClockError> {
        (**self).arm(at)
    }

    fn poll_fired(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        (**self).poll_fired(cx)
    }
}

/// What the main loop must handle, most urgent first.
#[derive(Debug)]
pub enum SleepEvent {
    /// The machine slept (or the boot-time fence passed): remove the VIPs
    /// now, whatever the monotonic fence says.
    Woke(Wake),
    /// logind announced a suspend: hand over, then call
    /// [`Sleep::handed_over`].
    Suspending,
    /// logind announced the resume; a new inhibitor is held.
    Resumed,
    /// A suspend's handover did not finish in time; the machine is let sleep
    /// anyway (the boot-time fence covers the rest).
    HandoverTimedOut,
}

/// The daemon's part in suspend and resume.
pub struct Sleep {
    watch: SleepWatch<Box<dyn BootClock>>,
    logind: Option<mpsc::Receiver<LogindEvent>>,
    /// While a suspend waits for our handover: logind's go-ahead and the
    /// latest instant to give it.
    pending: Option<(oneshot::Sender<()>, Instant)>,
    handover_bound: Duration,
}

impl Sleep {
    /// `clock` keeps the fence on boot time; `logind` forwards logind's
    /// signals (`None`: no inhibitor); a suspend waits at most
    /// `handover_bound` for the handover.
    pub fn new(
        clock: Box<dyn BootClock>,
        logind: Option<mpsc::Receiver<LogindEvent>>,
        handover_bound: Duration,
    ) -> Self {
        Self {
            watch: SleepWatch::new(clock),
            logind,
            pending: None,
            handover_bound,
        }
    }

    /// The real one: a timerfd on CLOCK_BOOTTIME and the logind inhibitor.
    pub fn system(handover_bound: Duration) -> Result<Self, BootClockError> {
        let clock = Box::new(TimerFdClock::new()?);
        Ok(Self::new(clock, Some(logind::spawn()), handover_bound))
    }

    /// Keeps the boot-time timer on the machine's fence (call after every
    /// step; it only re-arms when the fence changed).
    pub fn arm(&mut self, fence: Option<Instant>) {
        if let Err(e) = self.watch.arm(fence) {
            // The per-pass clock comparison still catches a sleep.
            tracing::warn!(error = %e, "{e}");
        }
    }

    /// Whether a suspend is waiting for our handover.
    pub fn suspending(&self) -> bool {
        self.pending.is_some()
    }

    /// The handover is done (VIPs gone, Lease released): let the machine
    /// sleep.
    pub fn handed_over(&mut self) {
        if let Some((done, _)) = self.pending.take() {
            let _ = done.send(());
        }
    }

    /// The next thing to handle. Checks the clocks on every poll, first.
    /// Cancel-safe.
    pub async fn next(&mut self) -> SleepEvent {
        loop {
            let due = self.pending.as_ref().map(|(_, at)| *at);
            tokio::select! {
                biased;
                w = self.watch.woke() => return SleepEvent::Woke(w),
                () = sleep_until_opt(due) => {
                    self.handed_over();
                    return SleepEvent::HandoverTimedOut;
                }
                ev = recv_opt(&mut self.logind) => match ev {
                    Some(LogindEvent::PrepareForSleep { done }) => {
                        self.pending = Some((done, Instant::now() + self.handover_bound));
                        return SleepEvent::Suspending;
                    }
                    Some(LogindEvent::Resumed) => return SleepEvent::Resumed,
                    // No logind (logged by its task) or the bus went away.
                    None => self.logind = None,
                },
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
