use std::sync::Arc;
use std::time::Duration;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::netlink::label_for;
use super::watch::Tracker;
use super::*;
use crate::announce::{AnnounceCall, Announcer, FakeAnnouncer};

fn vip(s: &str) -> Vip {
    let addr: std::net::IpAddr = s.parse().unwrap();
    Vip {
        addr,
        prefix_len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

fn secs(n: u32) -> Lifetime {
    Lifetime::from_secs(n).unwrap()
}

#[test]
fn lifetime_is_whole_seconds_rounded_down_and_finite() {
    assert_eq!(Lifetime::floor(Duration::from_millis(999)), None);
    assert_eq!(Lifetime::floor(Duration::from_millis(2999)), Some(secs(2)));
    assert_eq!(Lifetime::from_secs(0), None);
    assert_eq!(
        Lifetime::from_secs(u32::MAX),
        None,
        "u32::MAX means forever to the kernel"
    );
    assert_eq!(
        Lifetime::floor(Duration::from_secs(u64::MAX)).map(Lifetime::secs),
        Some(Lifetime::MAX_SECS)
    );
}

#[test]
fn label_only_when_it_fits_15_bytes() {
    assert_eq!(label_for("eth0").as_deref(), Some("eth0:vip"));
    assert_eq!(label_for("enp0s31f6xx").as_deref(), Some("enp0s31f6xx:vip"));
    assert_eq!(label_for("enp0s31f6xyz"), None);
}

#[test]
fn errors_name_vip_interface_and_remedy() {
    let e = VipError::Add {
        vip: vip("10.0.0.100"),
        interface: "eth0".into(),
        cause: Cause::from_errno(1, "eth0"),
    };
    assert_eq!(
        e.to_string(),
        "failed to add VIP 10.0.0.100/32 on eth0: Operation not permitted (needs CAP_NET_ADMIN)"
    );
    let e = VipError::Add {
        vip: vip("10.0.0.100"),
        interface: "eth0".into(),
        cause: Cause::from_errno(19, "eth0"),
    };
    assert_eq!(
        e.to_string(),
        "failed to add VIP 10.0.0.100/32 on eth0: no interface eth0"
    );
}

#[tokio::test(start_paused = true)]
async fn remove_all_attempts_every_vip_and_collects_errors() {
    let table = FakeAddressTable::new("eth0");
    let (a, b) = (vip("10.0.0.1"), vip("fd00::1"));
    table.insert(a, secs(5));
    assert_eq!(remove_all(&table, &[a, b]).await.unwrap(), vec![a]);
    assert!(table.addresses().is_empty());

    table.insert(a, secs(5));
    table.set_failure(Some(Cause::NotPermitted));
    let err = remove_all(&table, &[a, b]).await.unwrap_err();
    assert_eq!(err.errors.len(), 2, "both VIPs attempted");
    assert!(err.to_string().contains("fd00::1/128"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn fake_expires_vips_on_tokio_clock() {
    let table = FakeAddressTable::new("eth0");
    let a = vip("10.0.0.1");
    table.add_or_refresh(a, secs(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert_eq!(table.present(&[a]).await.unwrap(), vec![a]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(table.present(&[a]).await.unwrap().is_empty());
}

fn link(index: u32, name: &str, up: bool) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut l = LinkMessage::default();
    l.header.index = index;
    l.header.flags = if up {
        LinkFlags::Up | LinkFlags::LowerUp
    } else {
        LinkFlags::Up
    };
    l.attributes.push(LinkAttribute::IfName(name.into()));
    NetlinkMessage::from(RouteNetlinkMessage::NewLink(l))
}

fn deladdr(index: u32, v: Vip) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = rtnetlink::AddressMessageBuilder::<std::net::Ipv4Addr>::new().index(index);
    if let std::net::IpAddr::V4(a) = v.addr {
        msg = msg.address(a, v.prefix_len);
    }
    NetlinkMessage::from(RouteNetlinkMessage::DelAddress(msg.build()))
}

#[test]
fn tracker_turns_messages_into_events() {
    let a = vip("10.0.0.1");
    let mut t = Tracker::new("eth0", &[a], Some(7), Some(true));
    assert_eq!(
        t.on_message(&link(7, "eth0", true)),
        None,
        "no change, no event"
    );
    assert_eq!(
        t.on_message(&link(7, "eth0", false)),
        Some(NetEvent::LinkDown)
    );
    assert_eq!(t.on_message(&link(8, "eth1", true)), None, "other link");
    assert_eq!(t.on_message(&link(7, "eth0", true)), Some(NetEvent::LinkUp));
    assert_eq!(t.on_message(&deladdr(7, a)), Some(NetEvent::VipRemoved(a)));
    assert_eq!(
        t.on_message(&deladdr(8, a)),
        None,
        "same address on another link"
    );
    assert_eq!(
        t.on_message(&deladdr(7, vip("10.0.0.2"))),
        None,
        "not a VIP"
    );
    let overrun = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::Overrun(Vec::new()),
    );
    assert_eq!(t.on_message(&overrun), Some(NetEvent::Overrun));
    // A recreated link is recognised by name and its new index used.
    assert_eq!(t.on_message(&link(9, "eth0", true)), None);
    assert_eq!(t.on_message(&deladdr(9, a)), Some(NetEvent::VipRemoved(a)));
}

struct Rig {
    table: FakeAddressTable,
    announcer: FakeAnnouncer,
    events: mpsc::UnboundedSender<NetEvent>,
    guard: Guard,
    seen: mpsc::UnboundedReceiver<NetEvent>,
}

fn rig() -> Rig {
    let table = FakeAddressTable::new("eth0");
    let announcer = FakeAnnouncer::new();
    let (events, rx) = mpsc::unbounded_channel();
    let (guard, seen) = Guard::spawn(Arc::new(table.clone()), Arc::new(announcer.clone()), rx);
    Rig {
        table,
        announcer,
        events,
        guard,
        seen,
    }
}

impl Rig {
    /// Sends an event and waits until the guard has handled it.
    async fn event(&mut self, e: NetEvent) {
        self.events.send(e).unwrap();
        assert_eq!(self.seen.recv().await, Some(e));
        // The guard handles an event right after forwarding it; a command
        // round trip proves it is done.
        self.guard.release().await.ok();
    }
}

#[tokio::test(start_paused = true)]
async fn guard_readds_with_remaining_lifetime_only() {
    let mut r = rig();
    let a = vip("10.0.0.1");
    let t0 = Instant::now();
    r.table.add_or_refresh(a, secs(3)).await.unwrap();
    r.announcer.start(a);
    r.guard
        .hold(&[a], t0 + Duration::from_secs(3))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(800)).await;
    r.table.remove_externally(a);
    r.events.send(NetEvent::VipRemoved(a)).unwrap();
    assert_eq!(r.seen.recv().await, Some(NetEvent::VipRemoved(a)));
    r.guard
        .hold(&[a], t0 + Duration::from_secs(3))
        .await
        .unwrap();
    // 2.2 s were left: re-added with 2 s, never more than the daemon set.
    assert_eq!(
        r.table.ops().last(),
        Some(&FakeOp::AddOrRefresh(a, secs(2)))
    );
    assert!(r.table.expiry(a).unwrap() <= t0 + Duration::from_secs(3));
    assert_eq!(r.announcer.calls().last(), Some(&AnnounceCall::Burst(a)));
}

#[tokio::test(start_paused = true)]
async fn guard_never_readds_after_release_or_expiry() {
    let mut r = rig();
    let a = vip("fd00::1");
    r.guard
        .hold(&[a], Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    r.guard.release().await.unwrap();
    r.event(NetEvent::VipRemoved(a)).await;
    assert!(r.table.ops().is_empty(), "released: {:?}", r.table.ops());

    r.guard
        .hold(&[a], Instant::now() + Duration::from_millis(900))
        .await
        .unwrap();
    r.events.send(NetEvent::VipRemoved(a)).unwrap();
    assert_eq!(r.seen.recv().await, Some(NetEvent::VipRemoved(a)));
    r.guard.hold(&[a], Instant::now()).await.unwrap();
    assert!(
        r.table.ops().is_empty(),
        "under a second left: {:?}",
        r.table.ops()
    );

    r.guard
        .hold(&[vip("fd00::2")], Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    r.event(NetEvent::VipRemoved(a)).await;
    assert!(
        r.table.ops().is_empty(),
        "not a held VIP: {:?}",
        r.table.ops()
    );
}

#[tokio::test(start_paused = true)]
async fn guard_reannounces_on_link_up_and_repairs_after_overrun() {
    let mut r = rig();
    let (a, b) = (vip("10.0.0.1"), vip("fd00::1"));
    let expiry = Instant::now() + Duration::from_secs(4);
    r.table.add_or_refresh(a, secs(4)).await.unwrap();
    r.table.add_or_refresh(b, secs(4)).await.unwrap();
    r.guard.hold(&[a, b], expiry).await.unwrap();

    r.events.send(NetEvent::LinkUp).unwrap();
    assert_eq!(r.seen.recv().await, Some(NetEvent::LinkUp));
    r.guard.hold(&[a, b], expiry).await.unwrap();
    assert_eq!(
        r.announcer.calls(),
        vec![AnnounceCall::Burst(a), AnnounceCall::Burst(b)]
    );

    r.table.remove_externally(b);
    r.events.send(NetEvent::Overrun).unwrap();
    assert_eq!(r.seen.recv().await, Some(NetEvent::Overrun));
    r.guard.hold(&[a, b], expiry).await.unwrap();
    assert_eq!(r.table.addresses(), vec![a, b]);
    assert_eq!(r.announcer.calls().last(), Some(&AnnounceCall::Burst(b)));
}

/// Like the real table, where `add_or_refresh` first looks the link up: a
/// round trip, a busy thread or a SIGSTOP can come between computing a
/// lifetime and the kernel starting it. Stalls once.
#[derive(Clone)]
struct Stalling(
    FakeAddressTable,
    std::time::Duration,
    Arc<std::sync::atomic::AtomicBool>,
);

fn stalling(table: &FakeAddressTable, ms: u64) -> Stalling {
    Stalling(
        table.clone(),
        std::time::Duration::from_millis(ms),
        Arc::default(),
    )
}

impl AddressTable for Stalling {
    fn interface(&self) -> &str {
        self.0.interface()
    }
    async fn add_or_refresh(&self, v: Vip, l: Lifetime) -> Result<(), VipError> {
        if !self.2.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(self.1).await;
        }
        self.0.add_or_refresh(v, l).await
    }
    async fn remove(&self, v: Vip) -> Result<bool, VipError> {
        self.0.remove(v).await
    }
    async fn present(&self, v: &[Vip]) -> Result<Vec<Vip>, VipError> {
        self.0.present(v).await
    }
}

#[tokio::test(start_paused = true)]
async fn set_until_never_outlives_the_deadline_after_a_stall() {
    let table = FakeAddressTable::new("eth0");
    let a = vip("10.0.0.1");
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(2900);
    // 2 s would be computed up front; the stall makes it land 1.5 s later.
    let slow = stalling(&table, 1500);
    let got = set_until(&slow, a, until).await.unwrap();
    let expiry = table.expiry(a).expect("present");
    assert!(
        expiry <= until,
        "VIP lives {:?} past the deadline",
        expiry - until
    );
    assert_eq!(got, Some(Lifetime::from_secs(1).unwrap()));
    // With under a second left, it is removed rather than added.
    let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(900);
    let got = set_until(&slow, a, soon).await.unwrap();
    assert_eq!(got, None);
    assert!(table.addresses().is_empty());
}

#[tokio::test(start_paused = true)]
async fn guard_readd_after_a_stall_stays_inside_the_fence() {
    use std::sync::Arc;
    let table = FakeAddressTable::new("eth0");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let slow = stalling(&table, 1500);
    let (guard, mut seen) = Guard::spawn(
        Arc::new(slow),
        Arc::new(crate::announce::FakeAnnouncer::new()),
        rx,
    );
    let a = vip("10.0.0.1");
    let fence = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    guard.hold(&[a], fence).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tx.send(NetEvent::VipRemoved(a)).unwrap();
    seen.recv().await;
    // Waits for the repair in flight.
    guard.release().await.unwrap();
    let expiry = table.expiry(a).expect("re-added");
    assert!(
        expiry <= fence,
        "VIP lives {:?} past the fence",
        expiry - fence
    );
}

/// The marks that tell ha-vip's addresses from the node's own (issue 10, item 5).
#[test]
fn only_addresses_with_every_mark_are_ours() {
    use netlink_packet_route::address::AddressFlags;
    let ours4 = super::netlink::Entry {
        vip: vip("10.0.0.1"),
        index: 2,
        label: Some("eth0:vip".into()),
        valid: Some(3),
        preferred: Some(0),
        flags: AddressFlags::empty(),
    };
    assert!(ours4.is_ours("eth0"));
    let not = |e: &super::netlink::Entry, why: &str| assert!(!e.is_ours("eth0"), "{why}: {e:?}");
    not(
        &super::netlink::Entry {
            label: Some("eth0".into()),
            ..ours4.clone()
        },
        "no label",
    );
    not(
        &super::netlink::Entry {
            valid: Some(u32::MAX),
            ..ours4.clone()
        },
        "forever",
    );
    not(
        &super::netlink::Entry {
            flags: AddressFlags::Permanent,
            ..ours4.clone()
        },
        "permanent",
    );
    not(
        &super::netlink::Entry {
            preferred: Some(100),
            ..ours4.clone()
        },
        "preferred",
    );
    // Without a label that fits, the lifetime marks decide.
    let long = super::netlink::Entry {
        label: None,
        ..ours4.clone()
    };
    assert!(long.is_ours("enp0s31f6xyz"));
    let ours6 = super::netlink::Entry {
        vip: vip("fd00::1"),
        label: None,
        flags: AddressFlags::Nodad,
        ..ours4.clone()
    };
    assert!(ours6.is_ours("eth0"));
    // A deprecated SLAAC/DHCPv6 address has preferred 0 too, but no nodad.
    not(
        &super::netlink::Entry {
            flags: AddressFlags::empty(),
            ..ours6.clone()
        },
        "no nodad",
    );
}

mod late;

mod overrun;
