//! An in-memory [`AddressTable`] for unit tests of code that drives VIPs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::{AddressTable, Cause, Lifetime, VipError};
use crate::config::Vip;

/// One call made on a [`FakeAddressTable`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeOp {
    /// `add_or_refresh(vip, lifetime)`.
    AddOrRefresh(Vip, Lifetime),
    /// `remove(vip)`.
    Remove(Vip),
}

#[derive(Debug, Default)]
struct State {
    /// Present VIPs and when the "kernel" deletes them.
    addrs: BTreeMap<Vip, Instant>,
    ops: Vec<FakeOp>,
    fail: Option<Cause>,
}

/// In-memory address table that expires VIPs on tokio's clock.
///
/// Clones share state, so a test keeps one clone to inspect what the code
/// under test did. Works with `#[tokio::test(start_paused = true)]`.
#[derive(Debug, Clone)]
pub struct FakeAddressTable {
    interface: String,
    state: Arc<Mutex<State>>,
}

impl FakeAddressTable {
    /// An empty table for `interface`.
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock already fails the test; keep going.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.addrs.retain(|_, expiry| *expiry > now);
        state
    }

    /// Makes every following call fail with `cause` (`None`: succeed again).
    pub fn set_failure(&self, cause: Option<Cause>) {
        self.lock().fail = cause;
    }

    /// Puts `vip` on the interface as someone else would, expiring after `lifetime`.
    pub fn insert(&self, vip: Vip, lifetime: Lifetime) {
        self.lock()
            .addrs
            .insert(vip, Instant::now() + lifetime.as_duration());
    }

    /// Takes `vip` off the interface behind the code's back (drift).
    pub fn remove_externally(&self, vip: Vip) {
        self.lock().addrs.remove(&vip);
    }

    /// When the VIP expires, if present.
    pub fn expiry(&self, vip: Vip) -> Option<Instant> {
        self.lock().addrs.get(&vip).copied()
    }

    /// Every VIP present now.
    pub fn addresses(&self) -> Vec<Vip> {
        self.lock().addrs.keys().copied().collect()
    }

    /// The calls made so far.
    pub fn ops(&self) -> Vec<FakeOp> {
        self.lock().ops.clone()
    }
}

impl AddressTable for FakeAddressTable {
    fn interface(&self) -> &str {
        &self.interface
    }

    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        let mut state = self.lock();
        state.ops.push(FakeOp::AddOrRefresh(vip, lifetime));
        if let Some(cause) = state.fail.clone() {
            return Err(VipError::Add {
                vip,
                interface: self.interface.clone(),
                cause,
            });
        }
        state
            .addrs
            .insert(vip, Instant::now() + lifetime.as_duration());
        Ok(())
    }

    async fn remove(&self, vip: Vip) -> Result<bool, VipError> {
        let mut state = self.lock();
        state.ops.push(FakeOp::Remove(vip));
        if let Some(cause) = state.fail.clone() {
            return Err(VipError::Remove {
                vip,
                interface: self.interface.clone(),
                cause,
            });
        }
        Ok(state.addrs.remove(&vip).is_some())
    }

    async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let state = self.lock();
        if let Some(cause) = state.fail.clone() {
            return Err(VipError::List {
                interface: self.interface.clone(),
                cause,
            });
        }
        Ok(state
            .addrs
            .keys()
            .filter(|v| vips.contains(v))
            .copied()
            .collect())
    }
}
