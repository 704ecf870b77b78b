//! The real CLOCK_BOOTTIME timerfd: it fires at the absolute boot time it was
//! armed for (read independently with clock_gettime), fires at once for a
//! deadline already passed (what the kernel does on resume when the fence
//! passed during the suspend), and a re-arm or disarm replaces the old one.
//!
//! On a machine that never slept CLOCK_BOOTTIME equals CLOCK_MONOTONIC, so
//! the same checks also run in a time namespace whose CLOCK_BOOTTIME is
//! 1000 s ahead (`unshare --time --boottime 1000`, what a machine that slept
//! 1000 s looks like): a timer or a conversion on the wrong clock is off by
//! 1000 s there.

use std::future::poll_fn;
use std::process::Command;
use std::time::Duration;

use ha_vip::sleep::{BootClock, SleepWatch, TimerFdClock};
use nix::time::{ClockId, clock_gettime};

fn boottime() -> Duration {
    Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME"))
}

/// Generous: the machine is shared by many builds.
const LATE: Duration = Duration::from_millis(250);

async fn fired(clock: &mut TimerFdClock) {
    poll_fn(|cx| clock.poll_fired(cx)).await;
}

#[tokio::test]
async fn timerfd_fires_at_the_absolute_boot_time() {
    let mut clock = TimerFdClock::new().expect("timerfd on CLOCK_BOOTTIME");
    let at = boottime() + Duration::from_millis(400);
    clock.arm(Some(at)).unwrap();
    fired(&mut clock).await;
    let now = boottime();
    assert!(now >= at, "fired {:?} early", at - now);
    assert!(now < at + LATE, "fired {:?} late", now - at);
    assert!((clock.now().as_nanos() as i128 - now.as_nanos() as i128).abs() < 50_000_000);
}

#[tokio::test]
async fn a_deadline_already_passed_fires_at_once() {
    let mut clock = TimerFdClock::new().unwrap();
    let t = std::time::Instant::now();
    clock
        .arm(Some(boottime() - Duration::from_secs(10)))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), fired(&mut clock))
        .await
        .expect("a passed absolute deadline fires at once");
    assert!(t.elapsed() < LATE, "{:?}", t.elapsed());
}

#[tokio::test]
async fn rearming_replaces_and_disarming_cancels() {
    let mut clock = TimerFdClock::new().unwrap();
    clock
        .arm(Some(boottime() + Duration::from_millis(200)))
        .unwrap();
    let later = boottime() + Duration::from_millis(700);
    clock.arm(Some(later)).unwrap();
    fired(&mut clock).await;
    assert!(boottime() >= later, "the first deadline still fired");
    clock
        .arm(Some(boottime() + Duration::from_millis(200)))
        .unwrap();
    clock.arm(None).unwrap();
    let r = tokio::time::timeout(Duration::from_millis(600), fired(&mut clock)).await;
    assert!(r.is_err(), "a disarmed timer fired");
}

/// The daemon's use of it: a monotonic fence 500 ms ahead becomes a boot-time
/// deadline 500 ms ahead; when both clocks pass it together (no sleep) the
/// watch stays quiet and leaves it to the monotonic deadline.
#[tokio::test]
async fn the_watch_arms_the_fence_on_the_real_boot_clock() {
    let mut watch = SleepWatch::new(TimerFdClock::new().unwrap());
    let start = boottime();
    watch
        .arm(Some(
            tokio::time::Instant::now() + Duration::from_millis(500),
        ))
        .unwrap();
    let at = watch.boot_fence().expect("armed");
    assert!(
        at >= start + Duration::from_millis(490) && at <= boottime() + Duration::from_millis(500),
        "{at:?} vs {start:?}"
    );
    let r = tokio::time::timeout(Duration::from_millis(1500), watch.woke()).await;
    assert!(r.is_err(), "no sleep, yet {r:?}");
    assert_eq!(watch.boot_fence(), None, "the timer fired and was checked");
}

/// Both clocks' offset, then the fire-time checks, in whatever time
/// namespace this process runs in. Run on its own by the test below.
#[tokio::test]
async fn boot_clock_checks_in_this_time_namespace() {
    let mono = Duration::from(clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap());
    let offset = boottime().saturating_sub(mono);
    println!("boottime-monotonic={}", offset.as_secs());
    let t = std::time::Instant::now();
    let mut clock = TimerFdClock::new().unwrap();
    clock
        .arm(Some(boottime() + Duration::from_millis(400)))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), fired(&mut clock))
        .await
        .expect("the timer runs on CLOCK_BOOTTIME");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(400) + LATE,
        "{took:?}"
    );
    // The fence converted onto CLOCK_BOOTTIME lands 500 ms ahead on it.
    let mut watch = SleepWatch::new(TimerFdClock::new().unwrap());
    let start = boottime();
    watch
        .arm(Some(
            tokio::time::Instant::now() + Duration::from_millis(500),
        ))
        .unwrap();
    let at = watch.boot_fence().expect("armed");
    assert!(
        at >= start + Duration::from_millis(490) && at <= boottime() + Duration::from_millis(500),
        "{at:?} vs {start:?}"
    );
    // A constant offset between the clocks is not a sleep.
    let r = tokio::time::timeout(Duration::from_millis(1500), watch.woke()).await;
    assert!(r.is_err(), "no sleep, yet {r:?}");
    assert_eq!(watch.boot_fence(), None, "the boot-time timer did not fire");
}

#[test]
fn in_a_time_namespace_with_boottime_1000s_ahead_the_timer_still_fires_on_time() {
    let out = Command::new("unshare")
        .args(["--time", "--boottime", "1000"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "boot_clock_checks_in_this_time_namespace",
            "--nocapture",
        ])
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("boottime-monotonic=1000") && stdout.contains("1 passed"),
        "{stdout}\n{stderr}"
    );
}
