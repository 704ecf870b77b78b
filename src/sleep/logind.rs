//! A systemd-logind *delay* inhibitor for sleep.
//!
//! logind announces a suspend with `PrepareForSleep(true)` and then waits,
//! up to its `InhibitDelayMaxSec` (5 s by default), until every delay
//! inhibitor's file descriptor is closed. We hold one, so the daemon can
//! remove its VIPs and release the Lease (a planned handover: a standby
//! takes over in milliseconds) before the machine stops; on
//! `PrepareForSleep(false)` we take a new one and campaign again.
//!
//! Without a system bus or without logind (containers, minimal hosts) this
//! logs one line and does nothing: the CLOCK_BOOTTIME fence
//! ([`super::boottime`]) still removes the VIPs on resume.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedFd;

/// logind's well-known bus name.
pub const LOGIND: &str = "org.freedesktop.login1";
/// logind's manager object.
pub const MANAGER_PATH: &str = "/org/freedesktop/login1";
/// logind's manager interface.
pub const MANAGER_INTERFACE: &str = "org.freedesktop.login1.Manager";

/// The arguments of our `Inhibit` call: what, who, why, mode.
pub const INHIBIT: (&str, &str, &str, &str) = (
    "sleep",
    "ha-vip",
    "remove the VIP and release the Lease before sleep",
    "delay",
);

/// How long a call to logind may take before we give up on it: the
/// inhibitor is an improvement, never a reason to stall the daemon.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What logind told us, for the main loop.
#[derive(Debug)]
pub enum LogindEvent {
    /// `PrepareForSleep(true)`: hand over now. The inhibitor is closed (and
    /// the machine sleeps) when `done` is sent or dropped.
    PrepareForSleep {
        /// Send (or drop) once the VIPs are gone and the Lease released.
        done: oneshot::Sender<()>,
    },
    /// `PrepareForSleep(false)`: the machine resumed; a new inhibitor is
    /// already held.
    Resumed,
}

/// Why the inhibitor could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LogindError {
    /// No system bus to connect to.
    #[error("no D-Bus system bus ({0})")]
    Bus(zbus::Error),
    /// logind is not on the bus.
    #[error("systemd-logind is not on the system bus ({0})")]
    NoLogind(zbus::Error),
    /// The Inhibit call failed (not permitted, ...).
    #[error(
        "systemd-logind refused the sleep delay inhibitor ({0}); run ha-vip as root or allow org.freedesktop.login1.inhibit-delay-sleep in polkit"
    )]
    Inhibit(zbus::Error),
    /// logind did not answer in time.
    #[error("systemd-logind did not answer within {0:?}")]
    Timeout(Duration),
}

/// Starts a task that connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`
/// or the default socket), takes the inhibitor and forwards logind's
/// signals until the bus goes away. Where there is no logind the task logs
/// one INFO line and ends, closing the channel.
pub fn spawn() -> mpsc::Receiver<LogindEvent> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        match Inhibitor::connect().await {
            Ok(inhibitor) => {
                tracing::info!(
                    "holding a systemd-logind sleep delay inhibitor: before a suspend the VIPs are removed and the Lease released"
                );
                inhibitor.run(tx).await;
            }
            Err(e) => tracing::info!(
                error = %e,
                "no sleep inhibitor: {e}; should this machine suspend, its VIPs are removed on resume (CLOCK_BOOTTIME fence), not before"
            ),
        }
    });
    rx
}

/// A connection to logind, subscribed to `PrepareForSleep`, with the
/// current inhibitor.
struct Inhibitor {
    proxy: zbus::Proxy<'static>,
    signals: zbus::proxy::SignalStream<'static>,
    fd: Option<OwnedFd>,
}

impl Inhibitor {
    async fn connect() -> Result<Self, LogindError> {
        let conn = timed(zbus::Connection::system())
            .await?
            .map_err(LogindError::Bus)?;
        let proxy = zbus::proxy::Builder::<zbus::Proxy<'static>>::new(&conn)
            .destination(LOGIND)
            .and_then(|b| b.path(MANAGER_PATH))
            .and_then(|b| b.interface(MANAGER_INTERFACE))
            .map(|b| b.cache_properties(CacheProperties::No))
            .map_err(LogindError::NoLogind)?
            .build()
            .await
            .map_err(LogindError::NoLogind)?;
        // Subscribe before inhibiting, so no PrepareForSleep is missed.
        // Fails when nobody owns org.freedesktop.login1.
        let signals = timed(proxy.receive_signal("PrepareForSleep"))
            .await?
            .map_err(LogindError::NoLogind)?;
        let mut me = Self {
            proxy,
            signals,
            fd: None,
        };
        me.fd = Some(me.inhibit().await?);
        Ok(me)
    }

    async fn inhibit(&self) -> Result<OwnedFd, LogindError> {
        timed(self.proxy.call("Inhibit", &INHIBIT))
            .await?
            .map_err(LogindError::Inhibit)
    }

    async fn run(mut self, events: mpsc::Sender<LogindEvent>) {
        while let Some(msg) = self.signals.next().await {
            let start: bool = match msg.body().deserialize() {
                Ok(start) => start,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed PrepareForSleep signal");
                    continue;
                }
            };
            if start {
                tracing::info!(
                    "the machine is about to sleep: removing the VIPs and releasing the Lease"
                );
                let (done, handed_over) = oneshot::channel();
                if events
                    .send(LogindEvent::PrepareForSleep { done })
                    .await
                    .is_err()
                {
                    return;
                }
                // Sent or dropped: either way the daemon is done with it.
                let _ = handed_over.await;
                if self.fd.take().is_some() {
                    tracing::info!("handed over; letting the machine sleep");
                }
            } else {
                match self.inhibit().await {
                    Ok(fd) => self.fd = Some(fd),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not take a new sleep inhibitor after resume: {e}; the next suspend is caught on resume only"
                    ),
                }
                if events.send(LogindEvent::Resumed).await.is_err() {
                    return;
                }
            }
        }
        tracing::warn!(
            "the system bus connection to systemd-logind ended; the next suspend is caught on resume only"
        );
    }
}

async fn timed<T>(f: impl Future<Output = T>) -> Result<T, LogindError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| LogindError::Timeout(CALL_TIMEOUT))
}
