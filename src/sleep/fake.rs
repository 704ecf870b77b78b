//! A boot-time clock for tests and the simulation: it follows tokio's
//! (possibly paused) clock, and [`FakeBootHandle::suspend`] makes it jump
//! ahead the way CLOCK_BOOTTIME does across a suspend, while tokio's clock
//! (the monotonic one) stands still.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

use super::boottime::{BootClock, BootClockError};

#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// Boot time at `origin`.
    base: Duration,
    /// Total time "suspended" so far.
    slept: Duration,
    armed: Option<Duration>,
    /// Every value passed to `arm`, in order.
    arms: Vec<Option<Duration>>,
    waker: Option<Waker>,
}

impl Shared {
    fn now(&self) -> Duration {
        self.base + self.origin.elapsed() + self.slept
    }
}

/// A fake CLOCK_BOOTTIME with a one-shot absolute timer.
#[derive(Debug)]
pub struct FakeBootClock {
    shared: Arc<Mutex<Shared>>,
    /// The tokio timer standing in for the timerfd, and its instant.
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

/// Controls a [`FakeBootClock`] from a test.
#[derive(Debug, Clone)]
pub struct FakeBootHandle {
    shared: Arc<Mutex<Shared>>,
}

impl FakeBootClock {
    /// A clock that reads `base` now; and its handle.
    pub fn new(base: Duration) -> (Self, FakeBootHandle) {
        let shared = Arc::new(Mutex::new(Shared {
            origin: Instant::now(),
            base,
            slept: Duration::ZERO,
            armed: None,
            arms: Vec::new(),
            waker: None,
        }));
        let handle = FakeBootHandle {
            shared: shared.clone(),
        };
        (
            Self {
                shared,
                timer: None,
            },
            handle,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeBootHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The machine was suspended for `d`: boot time jumps ahead, tokio's
    /// clock does not; the task waiting on the timer is woken as the kernel
    /// wakes it on resume.
    pub fn suspend(&self, d: Duration) {
        let mut s = self.lock();
        s.slept += d;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// The fake boot time now.
    pub fn now(&self) -> Duration {
        self.lock().now()
    }

    /// The absolute boot time the timer is armed at, if any.
    pub fn armed(&self) -> Option<Duration> {
        self.lock().armed
    }

    /// Every value the timer was armed with, in order.
    pub fn arms(&self) -> Vec<Option<Duration>> {
        self.lock().arms.clone()
    }
}

impl BootClock for FakeBootClock {
    fn now(&self) -> Duration {
        self.lock().now()
    }

    fn arm(&mut self, at: Option<Duration>) -> Result<(), BootClockError> {
        let mut s = self.lock();
        s.armed = at;
        s.arms.push(at);
        Ok(())
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let due = {
            let mut s = self.lock();
            s.waker = Some(cx.waker().clone());
            match s.armed {
                None => return Poll::Pending,
                Some(at) if s.now() >= at => {
                    s.armed = None;
                    return Poll::Ready(());
                }
                // When tokio's clock gets there, unless a suspend comes first.
                Some(at) => Instant::now() + (at - s.now()),
            }
        };
        if self.timer.as_ref().is_none_or(|(t, _)| *t != due) {
            self.timer = Some((due, Box::pin(sleep_until(due))));
        }
        let Some((_, sleep)) = &mut self.timer else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                self.lock().armed = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
