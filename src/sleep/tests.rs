//! The boot-time fence and sleep detection on a fake clock that jumps ahead
//! of tokio's (paused) clock the way CLOCK_BOOTTIME does across a suspend.

use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use super::*;
use crate::machine::{Action, Event, Machine, Reason, Role};

const BOOT: Duration = Duration::from_secs(1000);
const R: Duration = Duration::from_secs(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn watch() -> (SleepWatch<FakeBootClock>, FakeBootHandle) {
    let (clock, handle) = FakeBootClock::new(BOOT);
    (SleepWatch::new(clock), handle)
}

fn sleep_with(clock: FakeBootClock) -> Sleep {
    Sleep::new(Box::new(clock), None, R + Duration::from_secs(1))
}

/// A leader whose lease write went out at `t0` and was answered 10 ms later.
fn leader(t0: Instant) -> Machine {
    let mut m = Machine::new(R);
    m.step(Event::Health { healthy: true }, t0);
    m.step(Event::Acquired { sent_at: t0 }, t0 + ms(10));
    assert_eq!(m.role(), Role::Leader);
    m
}

#[tokio::test(start_paused = true)]
async fn boot_fence_is_boottime_now_plus_what_is_left_of_the_fence() {
    let (mut w, h) = watch();
    let fence = Instant::now() + ms(1500);
    w.arm(Some(fence)).unwrap();
    assert_eq!(h.armed(), Some(BOOT + ms(1500)));
    // Unchanged fence: not re-armed (the daemon calls this every pass).
    tokio::time::advance(ms(200)).await;
    w.arm(Some(fence)).unwrap();
    assert_eq!(h.arms().len(), 1);
    // A renewal moves it; losing the lease disarms it.
    w.arm(Some(fence + ms(500))).unwrap();
    assert_eq!(h.armed(), Some(BOOT + ms(200) + ms(1800)));
    w.arm(None).unwrap();
    assert_eq!(h.armed(), None);
}

/// Without a sleep both clocks pass the fence together: that is the
/// ordinary renew deadline, left to the monotonic timer (reason
/// renew_deadline), not reported as a sleep.
#[tokio::test(start_paused = true)]
async fn without_a_sleep_the_fence_is_left_to_the_monotonic_deadline() {
    let (mut w, h) = watch();
    let t0 = Instant::now();
    w.arm(Some(t0 + R)).unwrap();
    let r = tokio::time::timeout(R + Duration::from_secs(5), w.woke()).await;
    assert!(r.is_err(), "{r:?}");
    // The timer did fire at the fence; the watch found no sleep behind it.
    assert_eq!(h.armed(), None);
    assert_eq!(w.boot_fence(), None);
}

#[tokio::test(start_paused = true)]
async fn a_suspend_past_the_fence_wakes_at_once_with_fence_passed() {
    let (mut w, h) = watch();
    let t0 = Instant::now();
    w.arm(Some(t0 + R)).unwrap();
    tokio::time::advance(ms(500)).await;
    assert!(w.woke().now_or_never().is_none());
    // 10 s suspended: tokio's clock (monotonic) did not move.
    h.suspend(Duration::from_secs(10));
    assert_eq!(w.woke().now_or_never(), Some(Wake::FencePassed));
    assert_eq!(Instant::now() - t0, ms(500));
}

#[tokio::test(start_paused = true)]
async fn a_short_suspend_inside_the_fence_is_seen_as_a_gap() {
    let (mut w, h) = watch();
    w.arm(Some(Instant::now() + R)).unwrap();
    tokio::time::advance(ms(300)).await;
    h.suspend(ms(700));
    assert_eq!(w.woke().now_or_never(), Some(Wake::Slept { gap: ms(700) }));
    // Reported once; the clocks run alike again afterwards.
    tokio::time::advance(ms(300)).await;
    assert!(w.woke().now_or_never().is_none());
    // A gap within the tolerance (clock reads on a busy machine) is not a sleep.
    h.suspend(boottime::SLEEP_TOLERANCE);
    assert!(w.woke().now_or_never().is_none());
}

/// The wake-up path end to end, as the daemon wires it: the machine's fence
/// armed on boot time, a 10 s suspend, and the first thing the main loop
/// sees is the sleep, whose first action removes the VIPs, while the
/// monotonic deadline timer would still be a second and a half away.
#[tokio::test(start_paused = true)]
async fn on_waking_past_the_fence_the_vips_go_before_anything_else() {
    let (clock, h) = FakeBootClock::new(BOOT);
    let mut sleep = sleep_with(clock);
    let t0 = Instant::now();
    let mut m = leader(t0);
    sleep.arm(m.fence());
    assert_eq!(h.armed(), Some(BOOT + R));
    tokio::time::advance(ms(500)).await;
    h.suspend(Duration::from_secs(10));
    let now = Instant::now();
    assert!(
        m.next_deadline().is_some_and(|d| d > now),
        "monotonic fence still ahead"
    );
    let ev = sleep
        .next()
        .now_or_never()
        .expect("the sleep is seen at once");
    assert!(matches!(ev, SleepEvent::Woke(Wake::FencePassed)), "{ev:?}");
    let actions = m.step(Event::Slept, now);
    assert_eq!(actions[0], Action::RemoveVips);
    assert_eq!(
        actions[1],
        Action::Transition {
            from: Role::Leader,
            to: Role::Follower,
            reason: Reason::Suspended
        }
    );
    sleep.arm(m.fence());
    assert_eq!(h.armed(), None);
}

/// logind's PrepareForSleep reaches the loop as `Suspending`; the go-ahead
/// is given only by `handed_over` (or after the bound), and a resume comes
/// through as `Resumed`.
#[tokio::test(start_paused = true)]
async fn a_suspend_waits_for_the_handover_within_its_bound() {
    let (clock, _h) = FakeBootClock::new(BOOT);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut sleep = Sleep::new(Box::new(clock), Some(rx), R + Duration::from_secs(1));
    let (done, mut gone) = tokio::sync::oneshot::channel();
    tx.send(LogindEvent::PrepareForSleep { done })
        .await
        .unwrap();
    assert!(matches!(sleep.next().await, SleepEvent::Suspending));
    assert!(sleep.suspending());
    assert!(gone.try_recv().is_err(), "no go-ahead before the handover");
    sleep.handed_over();
    assert!(gone.try_recv().is_ok());
    // Not handed over in time: let go after the bound.
    let (done, mut gone) = tokio::sync::oneshot::channel();
    tx.send(LogindEvent::PrepareForSleep { done })
        .await
        .unwrap();
    assert!(matches!(sleep.next().await, SleepEvent::Suspending));
    let t = Instant::now();
    assert!(matches!(sleep.next().await, SleepEvent::HandoverTimedOut));
    assert_eq!(Instant::now() - t, R + Duration::from_secs(1));
    assert!(gone.try_recv().is_ok());
    tx.send(LogindEvent::Resumed).await.unwrap();
    assert!(matches!(sleep.next().await, SleepEvent::Resumed));
    // logind gone: the channel closes, the loop just waits on the clock.
    drop(tx);
    assert!(sleep.next().now_or_never().is_none());
}
