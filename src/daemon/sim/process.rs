//! One daemon process of the simulation: whether it is frozen (SIGSTOP, a
//! stalled VM) or dead (SIGKILL), its address table over the simulated
//! kernel, and the wrapper that stops polling its main loop while frozen.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep, sleep_until};

use super::world::{Request, Shared};
use crate::config::Vip;
use crate::vip::{AddressTable, Lifetime, VipError};

#[derive(Debug, Default)]
struct State {
    frozen_until: Option<Instant>,
    dead: bool,
}

/// Whether the process runs; clones share it.
#[derive(Debug, Clone, Default)]
pub(super) struct Process(Arc<Mutex<State>>);

impl Process {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn freeze(&self, until: Instant) {
        self.state().frozen_until = Some(until);
    }

    pub(super) fn kill(&self) {
        self.state().dead = true;
    }

    pub(super) fn dead(&self) -> bool {
        self.state().dead
    }

    /// Whether the process is frozen now.
    pub(super) fn is_frozen(&self) -> bool {
        self.frozen().is_some()
    }

    /// Frozen until this instant, if frozen now.
    fn frozen(&self) -> Option<Instant> {
        self.state().frozen_until.filter(|u| *u > Instant::now())
    }

    /// Returns once the process runs: at once, after a freeze, or never
    /// (dead). Every I/O of the process passes here, before the request
    /// leaves and before the answer is seen.
    pub(super) async fn running(&self) {
        loop {
            if self.dead() {
                std::future::pending::<()>().await;
            }
            match self.frozen() {
                Some(until) => sleep_until(until).await,
                None => return,
            }
        }
    }
}

/// Polls `fut` only while the process runs: a frozen daemon's main loop
/// takes no step.
pub(super) struct Frozen<F> {
    pub(super) process: Process,
    pub(super) fut: Pin<Box<F>>,
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Future for Frozen<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        loop {
            if self.process.dead() {
                return Poll::Pending;
            }
            let Some(until) = self.process.frozen() else {
                self.sleep = None;
                return self.fut.as_mut().poll(cx);
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(sleep_until(until)));
            if sleep.deadline() != until {
                sleep.as_mut().reset(until);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => self.sleep = None,
            }
        }
    }
}

/// The kernel's notifications as the process's guard reads them: not while
/// the process is frozen, unless `compute_then_freeze` (then the guard
/// may compute a lifetime during the freeze and send it after: the stop
/// "between `Instant::now()` and `sendmsg`" of issue 10 item 1).
pub(super) struct ProcessEvents {
    pub(super) rx: tokio::sync::mpsc::UnboundedReceiver<crate::vip::NetEvent>,
    pub(super) process: Process,
    pub(super) compute_then_freeze: bool,
    /// An event received and not yet handed out: the guard drops this
    /// future whenever a command comes first, so an event must not live
    /// only in it while it waits out a freeze.
    pub(super) pending: Option<Option<crate::vip::NetEvent>>,
}

impl crate::vip::NetEvents for ProcessEvents {
    async fn next_event(&mut self) -> Option<crate::vip::NetEvent> {
        if !self.compute_then_freeze {
            self.process.running().await;
        }
        if self.pending.is_none() {
            self.pending = Some(self.rx.recv().await);
        }
        if !self.compute_then_freeze {
            self.process.running().await;
        }
        self.pending.take().flatten()
    }
}

/// A daemon process's view of its node's kernel.
pub(super) struct SimTable {
    pub(super) world: Shared,
    pub(super) node: usize,
    pub(super) process: Process,
    pub(super) interface: String,
}

impl SimTable {
    async fn request(&self, request: Request) -> Result<Option<Instant>, VipError> {
        self.process.running().await;
        let sent = self.world.lock().send(self.node, request, &self.interface);
        let (id, apply_at) = sent?;
        // The ack comes once the kernel applied it.
        sleep_until(apply_at).await;
        let result = self.world.lock().result(id);
        self.process.running().await;
        let vip = match request {
            Request::Add(v, _) | Request::Remove(v) => v,
        };
        match result {
            Some(Ok(r)) => Ok(r),
            Some(Err(cause)) => Err(VipError::Add {
                vip,
                interface: self.interface.clone(),
                cause,
            }),
            None => unreachable!("the world settles every request due by now"),
        }
    }
}

impl AddressTable for SimTable {
    fn interface(&self) -> &str {
        &self.interface
    }

    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        self.request(Request::Add(vip, lifetime)).await.map(|_| ())
    }

    async fn remove(&self, vip: Vip) -> Result<bool, VipError> {
        self.request(Request::Remove(vip))
            .await
            .map(|r| r.is_some())
    }

    async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        self.process.running().await;
        let w = self.world.lock();
        Ok(vips
            .iter()
            .copied()
            .filter(|&v| w.present(self.node, v))
            .collect())
    }
}
