//! Drift repair: puts back a held VIP that someone else removed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::watch::NetEvents;
use super::{AddressTable, Lifetime, NetEvent};
use crate::announce::Announcer;
use crate::config::Vip;

/// The guard's task has ended (its event source closed or it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the VIP guard has stopped; drift on the interface is no longer repaired")]
pub struct GuardError;

enum Command {
    Hold {
        vips: Vec<Vip>,
        expiry: Instant,
        done: oneshot::Sender<()>,
    },
    Release {
        done: oneshot::Sender<()>,
    },
}

/// What the daemon last told the guard.
#[derive(Debug, Default)]
struct Holding {
    vips: Vec<Vip>,
    /// When the daemon's fence ends; nothing is re-added at or after it.
    expiry: Option<Instant>,
}

impl Holding {
    /// The instant a re-added VIP must be gone by, if the daemon still holds
    /// it and at least a second is left.
    fn remaining(&self, vip: Option<Vip>) -> Option<Instant> {
        let expiry = self.expiry?;
        if vip.is_some_and(|v| !self.vips.contains(&v)) {
            return None;
        }
        Lifetime::floor(expiry.saturating_duration_since(Instant::now())).map(|_| expiry)
    }
}

/// A task that keeps held VIPs on the interface between the daemon's refreshes.
///
/// The daemon stays in charge: the guard acts only between [`Guard::hold`]
/// and [`Guard::release`], re-adds a removed VIP with the lifetime that
/// remains until the expiry the daemon gave (rounded down, so never beyond
/// it; nothing when under a second is left), and re-announces after link up.
/// Every event is also forwarded to the daemon on the channel `spawn` returns.
#[derive(Debug)]
pub struct Guard {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Guard {
    /// Starts the guard on the current tokio runtime.
    pub fn spawn<T, A, E>(
        table: Arc<T>,
        announcer: Arc<A>,
        events: E,
    ) -> (Self, mpsc::UnboundedReceiver<NetEvent>)
    where
        T: AddressTable + 'static,
        A: Announcer + 'static,
        E: NetEvents + 'static,
    {
        let (commands, rx) = mpsc::channel(8);
        let (forward, forwarded) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(table, announcer, events, rx, forward));
        (Self { commands, task }, forwarded)
    }

    async fn send(
        &self,
        make: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<(), GuardError> {
        let (done, ack) = oneshot::channel();
        self.commands
            .send(make(done))
            .await
            .map_err(|_| GuardError)?;
        ack.await.map_err(|_| GuardError)
    }

    /// Tells the guard that `vips` are held until `expiry`.
    ///
    /// Call after every successful refresh with the fence: the instant by
    /// which the VIPs must be gone. A re-added VIP gets the whole seconds
    /// left until then (see [`super::set_until`]). Returns once the guard has
    /// taken it in.
    pub async fn hold(&self, vips: &[Vip], expiry: Instant) -> Result<(), GuardError> {
        self.send(|done| Command::Hold {
            vips: vips.to_vec(),
            expiry,
            done,
        })
        .await
    }

    /// Tells the guard that nothing is held any more.
    ///
    /// Returns only once no repair is in flight, so a VIP the caller removes
    /// afterwards stays removed. Call it *before* removing the VIPs.
    pub async fn release(&self) -> Result<(), GuardError> {
        self.send(|done| Command::Release { done }).await
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<T: AddressTable, A: Announcer, E: NetEvents>(
    table: Arc<T>,
    announcer: Arc<A>,
    mut events: E,
    mut commands: mpsc::Receiver<Command>,
    forward: mpsc::UnboundedSender<NetEvent>,
) {
    let mut holding = Holding::default();
    loop {
        tokio::select! {
            // Commands first: a release must win over a pending repair.
            biased;
            cmd = commands.recv() => match cmd {
                Some(Command::Hold { vips, expiry, done }) => {
                    holding = Holding { vips, expiry: Some(expiry) };
                    let _ = done.send(());
                }
                Some(Command::Release { done }) => {
                    holding = Holding::default();
                    let _ = done.send(());
                }
                None => return,
            },
            event = events.next_event() => {
                let Some(event) = event else {
                    tracing::error!(interface = table.interface(), "netlink event stream closed; VIP drift is no longer repaired");
                    return;
                };
                let _ = forward.send(event);
                handle(&*table, &*announcer, &holding, event).await;
            }
        }
    }
}

async fn handle<T: AddressTable, A: Announcer>(
    table: &T,
    announcer: &A,
    holding: &Holding,
    event: NetEvent,
) {
    let interface = table.interface();
    match event {
        NetEvent::VipRemoved(vip) => {
            if let Some(until) = holding.remaining(Some(vip)) {
                readd(table, announcer, vip, until, "removed from outside").await;
            }
        }
        NetEvent::LinkDown => {
            if holding.remaining(None).is_some() {
                tracing::warn!(interface, "link down while holding the VIPs");
            }
        }
        NetEvent::LinkUp | NetEvent::Overrun => {
            if holding.remaining(None).is_none() {
                return;
            }
            let reason = if event == NetEvent::LinkUp {
                "link up"
            } else {
                "netlink overrun"
            };
            let present = match table.present(&holding.vips).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(interface, reason, error = %e, "cannot check the VIPs");
                    return;
                }
            };
            for &vip in &holding.vips {
                if present.contains(&vip) {
                    if event == NetEvent::LinkUp {
                        tracing::info!(%vip, interface, reason, "re-announcing VIP");
                        announcer.burst(vip);
                    }
                } else if let Some(until) = holding.remaining(Some(vip)) {
                    readd(table, announcer, vip, until, reason).await;
                }
            }
        }
    }
}

async fn readd<T: AddressTable, A: Announcer>(
    table: &T,
    announcer: &A,
    vip: Vip,
    until: Instant,
    reason: &str,
) {
    let interface = table.interface();
    match super::set_until(table, vip, until).await {
        Ok(Some(lifetime)) => {
            tracing::info!(%vip, interface, reason, lifetime_secs = lifetime.secs(), "re-added VIP");
            announcer.burst(vip);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(%vip, interface, reason, error = %e, "failed to re-add VIP"),
    }
}
