//! Until when the kernel may keep our VIPs, given every request sent.
//!
//! The daemon must not let the lease go while a VIP of ours may still be on
//! the interface. The fence it computed is not enough for that: a request
//! that waited for the RTNL lock started its lifetime late, and a request
//! whose answer is lost may or may not have been applied. [`Tracked`] wraps
//! the address table and keeps, per VIP, the latest expiry any request can
//! have produced: the instant its call returned plus the lifetime it
//! carried (the kernel applies a request inside the `sendmsg` that carries
//! it, before the answer), and "unknown" while a request is with the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use super::{AddressTable, Cause, Lifetime, VipError};
use crate::config::Vip;

/// Until when our VIPs may be on the interface, as far as requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpUntil {
    /// No request of ours can have left a VIP there.
    Gone,
    /// Every VIP is gone by then (plus the kernel's deletion latency, and not
    /// before an RTNL hold in progress at that instant ends).
    Until(Instant),
    /// A request that adds a VIP has not been answered: its lifetime starts
    /// whenever the kernel gets to it, so no bound is known yet.
    InFlight,
}

#[derive(Debug, Default)]
struct PerVip {
    /// Add requests sent and not yet answered.
    in_flight: BTreeSet<u64>,
    /// The latest expiry of an answered add request.
    bound: Option<Instant>,
    /// When the last add request was answered.
    last_add_done: Option<Instant>,
}

#[derive(Debug, Default)]
struct Ledger {
    next: u64,
    vips: BTreeMap<Vip, PerVip>,
}

/// An [`AddressTable`] that records what every request can have left behind.
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    ledger: Mutex<Ledger>,
}

impl<T: AddressTable> Tracked<T> {
    /// Wraps `inner`; every call must go through the wrapper.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            ledger: Mutex::default(),
        }
    }

    /// The wrapped table.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Never held across a panic-prone call; recover anyway.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until when any of our VIPs may be on the interface.
    pub fn up_until(&self) -> UpUntil {
        let ledger = self.ledger();
        if ledger.vips.values().any(|v| !v.in_flight.is_empty()) {
            return UpUntil::InFlight;
        }
        ledger
            .vips
            .values()
            .filter_map(|v| v.bound)
            .max()
            .map_or(UpUntil::Gone, UpUntil::Until)
    }

    fn begin_add(&self, vip: Vip) -> u64 {
        let mut ledger = self.ledger();
        ledger.next += 1;
        let seq = ledger.next;
        ledger.vips.entry(vip).or_default().in_flight.insert(seq);
        seq
    }

    /// Records the answer to add request `seq`: `expiry` is the latest the
    /// kernel may keep what it applied, `None` when it applied nothing.
    fn end_add(&self, vip: Vip, seq: u64, expiry: Option<Instant>) {
        let mut ledger = self.ledger();
        let v = ledger.vips.entry(vip).or_default();
        v.in_flight.remove(&seq);
        v.last_add_done = Some(Instant::now());
        v.bound = v.bound.max(expiry);
    }
}

/// Whether a failed request may still have been applied: only when the
/// exchange broke; an errno is the kernel's refusal.
fn maybe_applied(e: &VipError) -> bool {
    matches!(e.cause(), Cause::Protocol(_))
}

impl<T: AddressTable> AddressTable for Tracked<T> {
    fn interface(&self) -> &str {
        self.inner.interface()
    }

    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        let seq = self.begin_add(vip);
        let result = self.inner.add_or_refresh(vip, lifetime).await;
        let applied = match &result {
            Ok(()) => true,
            Err(e) => maybe_applied(e),
        };
        let expiry = applied.then(|| Instant::now() + lifetime.as_duration());
        self.end_add(vip, seq, expiry);
        result
    }

    async fn add_until(&self, vip: Vip, until: Instant) -> Result<Option<Lifetime>, VipError> {
        let seq = self.begin_add(vip);
        let start = Instant::now();
        let result = self.inner.add_until(vip, until).await;
        let expiry = match &result {
            Ok(l) => l.map(|l| Instant::now() + l.as_duration()),
            // Whatever lifetime it carried was at most what was left at the start.
            Err(e) if maybe_applied(e) => {
                Some(Instant::now() + until.saturating_duration_since(start))
            }
            Err(_) => None,
        };
        self.end_add(vip, seq, expiry);
        result
    }

    async fn remove(&self, vip: Vip) -> Result<bool, VipError> {
        let start = Instant::now();
        let result = self.inner.remove(vip).await;
        if result.is_ok() {
            let mut ledger = self.ledger();
            let v = ledger.vips.entry(vip).or_default();
            // Only requests answered before this one was sent are certainly
            // undone by it (requests on one socket are applied in order).
            if v.in_flight.is_empty() && v.last_add_done.is_none_or(|t| t <= start) {
                v.bound = None;
            }
        }
        result
    }

    async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        self.inner.present(vips).await
    }
}
