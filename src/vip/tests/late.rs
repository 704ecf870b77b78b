//! A kernel that applies requests late: the RTNL lock is held by someone
//! else for a while, requests wait for it, and nothing expires meanwhile
//! (the kernel's expiry worker needs the lock too). Every applied request
//! is recorded with the instant it was applied.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use super::vip;
use crate::config::Vip;
use crate::vip::{AddressTable, Cause, Lifetime, Tracked, UpUntil, VipError, set_until};

/// One request as the double applied it.
#[derive(Debug, Clone, Copy)]
struct Applied {
    at: Instant,
    /// The expiry it set; `None` for a removal.
    expiry: Option<Instant>,
}

#[derive(Debug, Default)]
struct Kernel {
    /// RTNL held by someone else over `[start, end)`.
    hog: Option<(Instant, Instant)>,
    /// Requests to refuse once a request was applied late (the corrections).
    fail_after_late: u32,
    failing: u32,
    expiry: Option<Instant>,
    applied: Vec<Applied>,
}

#[derive(Debug, Clone, Default)]
struct LateKernel(Arc<Mutex<Kernel>>);

impl LateKernel {
    fn lock(&self) -> MutexGuard<'_, Kernel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the lock like a request in `sendmsg`; returns whether it
    /// had to, or the refusal armed after a late request.
    async fn rtnl(&self) -> Result<(), Cause> {
        let hog = self.lock().hog;
        let now = Instant::now();
        let waited = match hog {
            Some((start, end)) if (start..end).contains(&now) => {
                sleep_until(end).await;
                true
            }
            _ => false,
        };
        let mut k = self.lock();
        if waited {
            k.failing = k.fail_after_late;
            return Ok(());
        }
        if k.failing > 0 {
            k.failing -= 1;
            return Err(Cause::Errno(nix::libc::ENOBUFS));
        }
        Ok(())
    }

    /// When the kernel deletes an address expiring at `e`: not while the
    /// lock is held (the expiry worker waits for it too).
    fn deleted_at(&self, e: Instant) -> Instant {
        match self.lock().hog {
            Some((start, end)) if (start..end).contains(&e) => end,
            _ => e,
        }
    }

    /// The last instant the VIP was on the interface.
    fn last_present(&self) -> Option<Instant> {
        let applied = self.lock().applied.clone();
        let mut last = None;
        let mut current: Option<Instant> = None;
        for op in applied {
            if let Some(e) = current {
                let gone = self.deleted_at(e);
                if gone <= op.at {
                    last = last.max(Some(gone));
                    current = None;
                }
            }
            match op.expiry {
                Some(e) => {
                    last = last.max(Some(op.at));
                    current = Some(e);
                }
                None => {
                    if current.take().is_some() {
                        last = last.max(Some(op.at));
                    }
                }
            }
        }
        last.max(current.map(|e| self.deleted_at(e)))
    }
}

impl AddressTable for LateKernel {
    fn interface(&self) -> &str {
        "eth0"
    }

    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        self.rtnl().await.map_err(|cause| VipError::Add {
            vip,
            interface: "eth0".into(),
            cause,
        })?;
        let mut k = self.lock();
        let at = Instant::now();
        let expiry = at + lifetime.as_duration();
        k.expiry = Some(expiry);
        k.applied.push(Applied {
            at,
            expiry: Some(expiry),
        });
        Ok(())
    }

    async fn remove(&self, vip: Vip) -> Result<bool, VipError> {
        self.rtnl().await.map_err(|cause| VipError::Remove {
            vip,
            interface: "eth0".into(),
            cause,
        })?;
        let mut k = self.lock();
        let at = Instant::now();
        k.applied.push(Applied { at, expiry: None });
        Ok(k.expiry.take().is_some_and(|e| e > at))
    }

    async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let k = self.lock();
        Ok(vips
            .iter()
            .copied()
            .filter(|_| k.expiry.is_some_and(|e| e > Instant::now()))
            .collect())
    }
}

/// How long a correction may take on the paused clock: the retries' pauses.
const CORRECTION: Duration = Duration::from_millis(100);

/// A held VIP is refreshed at t0 + 1.5 s with `left` to its new fence,
/// while RTNL is held from t0 + 1 s for `hog`; the first `fail`
/// corrections are refused. Returns (fence, hog end, last instant present,
/// what the ledger said during the hog, what it says at the end).
async fn refresh_during_hog(
    hog: Duration,
    left: Duration,
    fail: u32,
) -> (Instant, Instant, Instant, UpUntil, UpUntil) {
    let kernel = LateKernel::default();
    let table = Arc::new(Tracked::new(kernel.clone()));
    let a = vip("10.0.0.1");
    let t0 = Instant::now();
    set_until(&*table, a, t0 + Duration::from_millis(2900))
        .await
        .unwrap();
    let hog_end = t0 + Duration::from_secs(1) + hog;
    {
        let mut k = kernel.lock();
        k.hog = Some((t0 + Duration::from_secs(1), hog_end));
        k.fail_after_late = fail;
    }
    sleep(Duration::from_millis(1500)).await;
    let fence = Instant::now() + left;
    let refresh = tokio::spawn({
        let table = table.clone();
        async move { set_until(&*table, a, fence).await }
    });
    sleep_until(t0 + Duration::from_secs(1) + hog / 2).await;
    let during = table.up_until();
    let _ = refresh.await.unwrap();
    // Long enough for anything left to expire.
    sleep(Duration::from_secs(30)).await;
    let last = kernel.last_present().expect("the VIP was up");
    (fence, hog_end, last, during, table.up_until())
}

/// Issue 10, item 1: the latest expiry any request can produce is bounded
/// by the fence, or the end of the RTNL hold plus the correction latency,
/// whichever is later; and the ledger the daemon's release waits on covers
/// whatever the kernel kept.
#[tokio::test(start_paused = true)]
async fn a_refresh_applied_late_is_corrected_and_the_ledger_covers_it() {
    for hog in [Duration::from_secs(8), Duration::from_millis(1500)] {
        for left in [Duration::from_millis(2900), Duration::from_millis(5900)] {
            for fail in [0, 1, 2] {
                let (fence, hog_end, last, during, after) =
                    refresh_during_hog(hog, left, fail).await;
                let bound = fence.max(hog_end) + CORRECTION;
                assert!(
                    last <= bound,
                    "hog {hog:?}, {left:?} left, {fail} failed corrections: the VIP stayed {:?} past fence/hog end + correction",
                    last - bound
                );
                assert_eq!(during, UpUntil::InFlight, "the request is waiting for RTNL");
                match after {
                    UpUntil::Until(t) => assert!(t >= last, "ledger {t:?} < last {last:?}"),
                    UpUntil::Gone => {}
                    UpUntil::InFlight => panic!("nothing in flight at the end"),
                }
            }
        }
    }
}

/// When every correction fails, the VIP lives until the late answer plus
/// its lifetime; the ledger says so, so the daemon does not release before.
#[tokio::test(start_paused = true)]
async fn when_corrections_fail_the_ledger_still_covers_the_late_expiry() {
    let (fence, _, last, _, after) =
        refresh_during_hog(Duration::from_secs(8), Duration::from_millis(2900), 100).await;
    assert!(last > fence, "the late request outlives the fence here");
    match after {
        UpUntil::Until(t) => assert!(t >= last, "ledger {t:?} < last present {last:?}"),
        other => panic!("the ledger must hold a bound, got {other:?}"),
    }
}
