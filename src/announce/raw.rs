//! The real [`Announcer`]: frames from [`super::packet`] through a raw socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rtnetlink::Handle;
use tokio::task::JoinHandle;

use super::fence::{Deadlines, rounds, run_schedule};
use super::socket::PacketSocket;
use super::{AnnounceError, AnnounceStats, Announcer, Counters, Schedule, packet};
use crate::config::Vip;
use crate::vip::{Driver, lookup_link};

#[derive(Debug)]
struct Inner {
    interface: String,
    schedule: Schedule,
    netlink: Handle,
    _netlink_driver: Driver,
    socket: PacketSocket,
    counters: Counters,
    deadlines: Deadlines,
}

/// The tasks sending for one VIP; aborting them stops its announcements.
#[derive(Debug, Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn abort(&self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Gratuitous ARP / unsolicited NA over an `AF_PACKET` socket.
///
/// The interface's index and MAC are read over netlink at the start of
/// every burst, so a changed MAC (bond failover) or a recreated link is
/// announced correctly.
#[derive(Debug)]
pub struct RawAnnouncer {
    inner: Arc<Inner>,
    tasks: Mutex<HashMap<Vip, Tasks>>,
    /// The runtime `new` ran on; the trait's methods may be called from anywhere.
    runtime: tokio::runtime::Handle,
}

impl RawAnnouncer {
    /// Opens the sockets for `interface` (needs CAP_NET_RAW).
    ///
    /// Must run inside a tokio runtime; the sockets belong to the calling
    /// thread's network namespace.
    pub fn new(interface: &str, schedule: Schedule) -> Result<Self, AnnounceError> {
        let socket = PacketSocket::open().map_err(|cause| AnnounceError::Socket {
            interface: interface.to_owned(),
            cause,
        })?;
        let (netlink, netlink_driver) =
            crate::vip::connect(interface).map_err(|cause| AnnounceError::Netlink {
                interface: interface.to_owned(),
                cause,
            })?;
        let inner = Inner {
            interface: interface.to_owned(),
            schedule,
            netlink,
            _netlink_driver: netlink_driver,
            socket,
            counters: Counters::default(),
            deadlines: Deadlines::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
            tasks: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<Vip, Tasks>> {
        // The lock is never held across a panic-prone call; recover anyway.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RawAnnouncer {
    fn drop(&mut self) {
        for tasks in self.tasks().values() {
            tasks.abort();
        }
    }
}

impl Announcer for RawAnnouncer {
    fn fence(&self, vip: Vip, until: tokio::time::Instant) {
        self.inner.deadlines.set(vip, until);
    }

    fn start(&self, vip: Vip) {
        let inner = Arc::clone(&self.inner);
        let task = self.runtime.spawn(async move {
            run_schedule(inner.schedule, |count, why| {
                let inner = Arc::clone(&inner);
                async move { inner.burst(vip, count, why).await }
            })
            .await;
        });
        if let Some(old) = self.tasks().insert(vip, Tasks(vec![task])) {
            old.abort();
        }
    }

    fn burst(&self, vip: Vip) {
        let mut tasks = self.tasks();
        let Some(running) = tasks.get_mut(&vip) else {
            return;
        };
        running.0.retain(|t| !t.is_finished());
        let inner = Arc::clone(&self.inner);
        let count = inner.schedule.count;
        running.0.push(self.runtime.spawn(async move {
            inner.burst(vip, count, "on demand").await;
        }));
    }

    fn stop(&self, vip: Vip) {
        if let Some(tasks) = self.tasks().remove(&vip) {
            tasks.abort();
        }
        self.inner.deadlines.clear(vip);
    }

    fn stats(&self) -> AnnounceStats {
        self.inner.counters.snapshot()
    }
}

impl Inner {
    /// One burst; false once the fence refused a frame (the schedule ends).
    async fn burst(&self, vip: Vip, count: u32, why: &'static str) -> bool {
        let interface = self.interface.as_str();
        let link = match lookup_link(&self.netlink, interface).await {
            Ok(link) => link,
            Err(cause) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%vip, interface, %cause, "cannot announce VIP");
                return true;
            }
        };
        let Some(mac) = link.mac else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%vip, interface, "cannot announce VIP: interface has no Ethernet address");
            return true;
        };
        tracing::debug!(%vip, interface, count, why, "announcing VIP");
        let sent = rounds(count, self.schedule.spacing, || {
            self.round(link.index, mac, vip)
        })
        .await;
        if !sent {
            tracing::debug!(%vip, interface, why, "fence deadline passed; no more announcements until the VIP is refreshed");
        }
        sent
    }

    /// One round; false (and nothing more sent) once the fence has passed.
    fn round(&self, ifindex: u32, mac: packet::Mac, vip: Vip) -> bool {
        match vip.addr {
            IpAddr::V4(a) => {
                // Both forms: some devices only honour the reply.
                self.send(
                    ifindex,
                    &packet::garp_request(mac, a),
                    &self.counters.garp,
                    vip,
                ) && self.send(
                    ifindex,
                    &packet::garp_reply(mac, a),
                    &self.counters.garp,
                    vip,
                )
            }
            IpAddr::V6(a) => self.send(
                ifindex,
                &packet::unsolicited_na(mac, a),
                &self.counters.na,
                vip,
            ),
        }
    }

    /// Sends one frame unless the fence has passed (checked right before
    /// the send: a stall can come anywhere); false when it has.
    fn send(&self, ifindex: u32, frame: &[u8], counter: &AtomicU64, vip: Vip) -> bool {
        if !self.deadlines.allows(vip) {
            return false;
        }
        match self.socket.send(ifindex, frame) {
            Ok(()) => {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%vip, interface = self.interface, error = %e, "failed to send announcement");
            }
        }
        true
    }
}
