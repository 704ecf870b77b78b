//! Netlink address and link notifications, turned into [`NetEvent`]s.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{Stream, StreamExt};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, sleep_until};

use super::netlink::{LinkInfo, lookup_link, message_vip};
use super::{Cause, VipError};
use crate::config::Vip;

/// A change on the watched interface that the daemon may have to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetEvent {
    /// A watched VIP left the interface: removed by someone, or expired.
    VipRemoved(Vip),
    /// The interface can no longer carry the VIP: it lost its carrier
    /// (`IFF_LOWER_UP` cleared), went dormant (`IFF_DORMANT`, e.g. 802.1X
    /// not authorised), was set down (`IFF_UP` cleared), was deleted, or was
    /// renamed so that no link of the configured name is left.
    LinkDown,
    /// The interface is administratively up, has a carrier and is not dormant again.
    LinkUp,
    /// Notifications were lost (ENOBUFS): re-read the addresses.
    Overrun,
}

/// Whether a link with these flags can carry the VIP: administratively up
/// (`IFF_UP`), carrier (`IFF_LOWER_UP`, which a VLAN or macvlan inherits
/// from its lower device) and not dormant. `IFF_RUNNING` says nearly the
/// same but is the RFC 2863 operstate, which the kernel updates after the
/// carrier bit, so a notification in between could show a stale value.
pub(crate) fn carrier(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up)
        && flags.contains(LinkFlags::LowerUp)
        && !flags.contains(LinkFlags::Dormant)
}

/// The VIPs a [`Watcher`] reports removals of; the daemon updates it when
/// a reload changes the list.
#[derive(Debug, Clone, Default)]
pub struct WatchedVips(Arc<RwLock<Vec<Vip>>>);

impl WatchedVips {
    /// Replaces the watched list.
    pub fn set(&self, vips: &[Vip]) {
        // Never held across an await; a poisoned lock still holds a valid list.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = vips.to_vec();
    }

    fn contains(&self, vip: &Vip) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(vip)
    }
}

/// What the watcher knows of the interface; turns messages into events.
#[derive(Debug)]
pub(crate) struct Tracker {
    interface: String,
    vips: WatchedVips,
    index: Option<u32>,
    up: Option<bool>,
}

impl Tracker {
    pub(crate) fn new(interface: &str, vips: &[Vip], index: Option<u32>, up: Option<bool>) -> Self {
        let watched = WatchedVips::default();
        watched.set(vips);
        Self {
            interface: interface.to_owned(),
            vips: watched,
            index,
            up,
        }
    }

    fn set_up(&mut self, up: bool) -> Option<NetEvent> {
        let changed = self.up != Some(up);
        self.up = Some(up);
        changed.then_some(if up {
            NetEvent::LinkUp
        } else {
            NetEvent::LinkDown
        })
    }

    fn is_ours(&self, link: &LinkMessage) -> bool {
        Some(link.header.index) == self.index || link_name(link) == Some(self.interface.as_str())
    }

    /// The event `msg` means for the watched interface, if any.
    pub(crate) fn on_message(
        &mut self,
        msg: &NetlinkMessage<RouteNetlinkMessage>,
    ) -> Option<NetEvent> {
        match &msg.payload {
            NetlinkPayload::Overrun(_) => Some(NetEvent::Overrun),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                if self.is_ours(link) =>
            {
                match link_name(link) {
                    // Renamed away: the VIPs are set on the interface by
                    // name, so for us it has vanished.
                    Some(name) if name != self.interface => {
                        self.index = None;
                        self.set_up(false)
                    }
                    _ => {
                        self.index = Some(link.header.index);
                        self.set_up(carrier(link.header.flags))
                    }
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                if self.is_ours(link) =>
            {
                self.index = None;
                self.set_up(false)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(addr))
                if Some(addr.header.index) == self.index =>
            {
                message_vip(addr)
                    .filter(|v| self.vips.contains(v))
                    .map(NetEvent::VipRemoved)
            }
            _ => None,
        }
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Reads the current state of a link: the kernel for the [`Watcher`], a
/// fake in tests.
pub(crate) trait LinkLookup: Send + Sync {
    /// The link called `interface`.
    fn lookup(&self, interface: &str) -> impl Future<Output = Result<LinkInfo, Cause>> + Send;
}

impl LinkLookup for Handle {
    async fn lookup(&self, interface: &str) -> Result<LinkInfo, Cause> {
        lookup_link(self, interface).await
    }
}

/// How long to wait before re-reading the link again after a re-read failed.
const RELOOKUP_RETRY: Duration = Duration::from_millis(250);

/// Notifications in, events out: the part of the [`Watcher`] that does not
/// own the socket, generic so that tests can drive it.
#[derive(Debug)]
pub(crate) struct Events<M, L> {
    tracker: Tracker,
    lookup: L,
    messages: M,
    pending: VecDeque<NetEvent>,
    /// An overrun may have hidden a link change, so the link must be read
    /// again. Set before the read and cleared only once its result is in
    /// `pending`: a `next` dropped during the read (the guard's `select!`
    /// drops it whenever a command arrives) reads again on the next call
    /// instead of losing a carrier loss for good.
    relookup: bool,
    /// After a failed re-read: not again before then.
    retry_at: Option<Instant>,
}

impl<M, L> Events<M, L>
where
    M: Stream<
            Item = (
                NetlinkMessage<RouteNetlinkMessage>,
                rtnetlink::sys::SocketAddr,
            ),
        > + Unpin,
    L: LinkLookup,
{
    pub(crate) fn new(tracker: Tracker, lookup: L, messages: M) -> Self {
        Self {
            tracker,
            lookup,
            messages,
            pending: VecDeque::new(),
            relookup: false,
            retry_at: None,
        }
    }

    /// The next event; `None` when the message stream has ended.
    ///
    /// Cancel-safe: an event is never lost when the future is dropped, and
    /// neither is a pending re-read of the link.
    pub(crate) async fn next(&mut self) -> Option<NetEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let due = self.retry_at.is_none_or(|at| Instant::now() >= at);
            if self.relookup && due {
                self.relookup_link().await;
                continue;
            }
            let waiting = self.retry_at.filter(|_| self.relookup);
            let received = match waiting {
                Some(at) => tokio::select! {
                    m = self.messages.next() => m,
                    () = sleep_until(at) => continue,
                },
                None => self.messages.next().await,
            };
            let (msg, _) = received?;
            let Some(event) = self.tracker.on_message(&msg) else {
                continue;
            };
            if event == NetEvent::Overrun {
                // A link change may be among the lost notifications.
                self.relookup = true;
                self.retry_at = None;
            }
            self.pending.push_back(event);
        }
    }

    /// Reads the link and queues the change it shows, if any; clears the
    /// re-read flag only then (nothing awaits after the read).
    async fn relookup_link(&mut self) {
        let result = self.lookup.lookup(&self.tracker.interface).await;
        match result {
            Ok(link) => {
                self.tracker.index = Some(link.index);
                self.pending.extend(self.tracker.set_up(link.up));
            }
            Err(Cause::NoInterface(_)) => {
                // Deleted (or renamed away) during the overrun.
                self.tracker.index = None;
                self.pending.extend(self.tracker.set_up(false));
            }
            Err(cause) => {
                tracing::warn!(
                    interface = self.tracker.interface,
                    error = %cause,
                    "cannot re-read the interface after lost netlink notifications; retrying (a carrier change may go unnoticed until it succeeds; check that the daemon keeps CAP_NET_ADMIN)"
                );
                self.retry_at = Some(Instant::now() + RELOOKUP_RETRY);
                return;
            }
        }
        self.relookup = false;
        self.retry_at = None;
    }
}

type Messages = UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// A subscription to address and link changes of one interface.
///
/// Subscribes to RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR
/// on the calling thread's network namespace. The interface need not exist
/// yet: it is recognised by name when it appears.
#[derive(Debug)]
pub struct Watcher {
    events: Events<Messages, Handle>,
    driver: JoinHandle<()>,
}

impl Watcher {
    /// Subscribes, then reads the link's current state.
    ///
    /// Must run inside a tokio runtime. Subscribing first means no change is
    /// lost between the read and the first notification.
    pub async fn start(interface: &str, vips: &[Vip]) -> Result<Self, VipError> {
        let err = |cause| VipError::Watch {
            interface: interface.to_owned(),
            cause,
        };
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ];
        let (conn, handle, messages) = rtnetlink::new_multicast_connection(&groups)
            .map_err(|e| err(Cause::from_io(&e, interface)))?;
        let driver = tokio::spawn(conn);
        let (index, up) = match lookup_link(&handle, interface).await {
            Ok(link) => (Some(link.index), Some(link.up)),
            Err(Cause::NoInterface(_)) => (None, None),
            Err(cause) => {
                driver.abort();
                return Err(err(cause));
            }
        };
        let tracker = Tracker::new(interface, vips, index, up);
        Ok(Self {
            events: Events::new(tracker, handle, messages),
            driver,
        })
    }

    /// A handle to change which VIPs are watched, also after the watcher
    /// has moved into a [`super::Guard`].
    pub fn watched(&self) -> WatchedVips {
        self.events.tracker.vips.clone()
    }

    /// Whether the link could carry the VIP at the last notification
    /// ([`carrier`]; `None`: no such link yet).
    pub fn link_up(&self) -> Option<bool> {
        self.events.tracker.up
    }

    /// The next event; `None` when the netlink socket has closed for good.
    ///
    /// Cancel-safe: an event is never lost when the future is dropped.
    pub async fn next(&mut self) -> Option<NetEvent> {
        self.events.next().await
    }
}

/// A source of [`NetEvent`]s: the real [`Watcher`], or a channel in tests.
pub trait NetEvents: Send {
    /// The next event; `None` when the source has closed.
    fn next_event(&mut self) -> impl std::future::Future<Output = Option<NetEvent>> + Send;
}

impl NetEvents for Watcher {
    async fn next_event(&mut self) -> Option<NetEvent> {
        self.next().await
    }
}

impl NetEvents for tokio::sync::mpsc::UnboundedReceiver<NetEvent> {
    async fn next_event(&mut self) -> Option<NetEvent> {
        self.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newlink(index: u32, name: &str, flags: LinkFlags) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.header.flags = flags;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        NetlinkMessage::from(RouteNetlinkMessage::NewLink(l))
    }

    fn dellink(index: u32, name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        NetlinkMessage::from(RouteNetlinkMessage::DelLink(l))
    }

    const UP: LinkFlags = LinkFlags::Up.union(LinkFlags::LowerUp);

    #[test]
    fn carrier_needs_admin_up_lower_up_and_not_dormant() {
        assert!(carrier(UP));
        assert!(carrier(UP | LinkFlags::Running | LinkFlags::Broadcast));
        assert!(!carrier(LinkFlags::Up), "no carrier");
        assert!(!carrier(LinkFlags::LowerUp), "administratively down");
        assert!(!carrier(UP | LinkFlags::Dormant), "dormant (802.1X)");
    }

    #[test]
    fn carrier_loss_dormancy_deletion_and_rename_are_link_down() {
        let mut t = Tracker::new("eth0", &[], Some(7), Some(true));
        assert_eq!(
            t.on_message(&newlink(7, "eth0", LinkFlags::Up)),
            Some(NetEvent::LinkDown)
        );
        assert_eq!(
            t.on_message(&newlink(7, "eth0", UP)),
            Some(NetEvent::LinkUp)
        );
        assert_eq!(
            t.on_message(&newlink(7, "eth0", UP | LinkFlags::Dormant)),
            Some(NetEvent::LinkDown)
        );
        assert_eq!(
            t.on_message(&newlink(7, "eth0", UP)),
            Some(NetEvent::LinkUp)
        );
        // Renamed away (it must be down to be renamed; say it was not, as
        // some drivers allow): the name is gone, so is the interface.
        assert_eq!(
            t.on_message(&newlink(7, "eth9", UP)),
            Some(NetEvent::LinkDown)
        );
        assert_eq!(
            t.on_message(&newlink(7, "eth9", UP)),
            None,
            "no longer ours"
        );
        assert_eq!(t.on_message(&dellink(7, "eth9")), None, "no longer ours");
        // A link that takes the name is ours, with its own state.
        assert_eq!(
            t.on_message(&newlink(8, "eth0", UP)),
            Some(NetEvent::LinkUp)
        );
        assert_eq!(t.on_message(&dellink(8, "eth0")), Some(NetEvent::LinkDown));
        assert_eq!(t.index, None);
    }
}
