//! Drift: netlink events and the guard's repairs against a real kernel.

#[path = "common/netns.rs"]
mod netns;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ha_vip::announce::{Announcer, RawAnnouncer, Schedule};
use ha_vip::config::Vip;
use ha_vip::vip::{AddressTable, Guard, Lifetime, NetEvent, NetlinkAddressTable, Watcher};
use netns::{Netns, veth};
use tokio::time::{Instant, sleep, timeout};

fn vip(s: &str) -> Vip {
    let addr: IpAddr = s.parse().unwrap();
    Vip {
        addr,
        prefix_len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

async fn next_event(w: &mut Watcher) -> NetEvent {
    timeout(Duration::from_secs(2), w.next())
        .await
        .expect("an event within 2 s")
        .expect("watcher open")
}

#[test]
fn watcher_reports_removed_vips_and_link_changes() {
    let ns = Netns::new("watch");
    veth(&ns, "hv0", &ns, "hv0p");
    let (v4, v6) = (vip("192.0.2.100"), vip("2001:db8::100"));
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        let mut w = Watcher::start("hv0", &[v4, v6]).await.unwrap();
        assert_eq!(w.link_up(), Some(true));
        table
            .add_or_refresh(v4, Lifetime::from_secs(30).unwrap())
            .await
            .unwrap();
        table
            .add_or_refresh(v6, Lifetime::from_secs(30).unwrap())
            .await
            .unwrap();
        // Not a VIP: no event.
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "hv0"]);
        ns.ip(&["addr", "del", "192.0.2.1/24", "dev", "hv0"]);

        ns.ip(&["addr", "del", "192.0.2.100/32", "dev", "hv0"]);
        assert_eq!(next_event(&mut w).await, NetEvent::VipRemoved(v4));
        ns.ip(&["addr", "del", "2001:db8::100/128", "dev", "hv0"]);
        assert_eq!(next_event(&mut w).await, NetEvent::VipRemoved(v6));

        // Carrier loss: the peer goes down.
        ns.ip(&["link", "set", "hv0p", "down"]);
        assert_eq!(next_event(&mut w).await, NetEvent::LinkDown);
        ns.ip(&["link", "set", "hv0p", "up"]);
        assert_eq!(next_event(&mut w).await, NetEvent::LinkUp);
        ns.ip(&["link", "del", "hv0"]);
        assert_eq!(next_event(&mut w).await, NetEvent::LinkDown);
    });
}

/// Notifications lost to a full socket buffer (ENOBUFS) hide a carrier
/// loss: the watcher re-reads the link after the overrun, also when its
/// future is dropped in the middle of that re-read, as the guard's
/// `select!` does whenever a command arrives.
#[test]
fn watcher_reports_a_carrier_loss_hidden_in_an_overrun() {
    let ns = Netns::new("overrun");
    veth(&ns, "hv0", &ns, "hv0p");
    veth(&ns, "fl0", &ns, "fl0p");
    // Far more notifications than the watcher's socket buffer holds.
    let batch: String = (0..3000)
        .map(|i| format!("addr add 198.18.{}.{}/32 dev fl0\n", i / 250, i % 250 + 1))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.batch", ns.name()));
    std::fs::write(&path, batch).unwrap();
    ns.run(|| async {
        let mut w = Watcher::start("hv0", &[]).await.unwrap();
        assert_eq!(w.link_up(), Some(true));
        // Blocking commands: the runtime, and with it the reader of the
        // watcher's socket, is stopped until they are done, so the buffer
        // fills and the carrier loss is dropped by the kernel.
        ns.ip(&["-batch", path.to_str().unwrap()]);
        ns.ip(&["link", "set", "hv0p", "down"]);
        // The kernel's link watch work announces the carrier loss a moment
        // later, after it set the operstate: wait for it, still blocking.
        let changed = std::time::Instant::now();
        while ns.ip_json(&["link", "show", "dev", "hv0"])[0]["operstate"] == "UP" {
            assert!(changed.elapsed() < Duration::from_secs(5), "hv0 still up");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut seen = Vec::new();
        // Poll once and drop, again and again, until the overrun is out and
        // three more polls were dropped (the re-read is one of them).
        let start = Instant::now();
        let mut dropped = 0;
        while dropped < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no overrun within 10 s: {} events",
                seen.len()
            );
            match w.next().now_or_never() {
                Some(e) => seen.push(e.expect("watcher open")),
                None if seen.contains(&NetEvent::Overrun) => dropped += 1,
                None => {}
            }
            tokio::task::yield_now().await;
        }
        while let Ok(e) = timeout(Duration::from_secs(2), w.next()).await {
            seen.push(e.expect("watcher open"));
        }
        assert_eq!(
            seen,
            [NetEvent::Overrun, NetEvent::LinkDown],
            "the carrier loss hidden in the overrun must be reported"
        );
    });
    let _ = std::fs::remove_file(path);
}

#[test]
fn guard_puts_back_a_vip_removed_from_outside() {
    let ns = Netns::new("drift");
    veth(&ns, "hv0", &ns, "hv0p");
    let vips = [vip("192.0.2.100"), vip("2001:db8::100")];
    ns.run(|| async {
        let table = Arc::new(NetlinkAddressTable::connect("hv0").unwrap());
        let announcer = Arc::new(RawAnnouncer::new("hv0", Schedule::default()).unwrap());
        let watcher = Watcher::start("hv0", &vips).await.unwrap();
        let (guard, _events) = Guard::spawn(Arc::clone(&table), Arc::clone(&announcer), watcher);

        let t0 = Instant::now();
        let lifetime = Lifetime::from_secs(20).unwrap();
        for v in vips {
            table.add_or_refresh(v, lifetime).await.unwrap();
            announcer.fence(v, t0 + lifetime.as_duration());
            announcer.start(v);
        }
        guard
            .hold(&vips, t0 + lifetime.as_duration())
            .await
            .unwrap();

        for (local, plen) in [("192.0.2.100", "32"), ("2001:db8::100", "128")] {
            sleep(Duration::from_millis(1100)).await;
            ns.ip(&["addr", "del", &format!("{local}/{plen}"), "dev", "hv0"]);
            let removed = Instant::now();
            let back = loop {
                if let Some(a) = ns.addr("hv0", local) {
                    break (removed.elapsed(), a);
                }
                assert!(
                    removed.elapsed() < Duration::from_secs(1),
                    "{local} not back within 1 s"
                );
                sleep(Duration::from_millis(5)).await;
            };
            println!("drift repair {local}: back after {:?}", back.0);
            // Re-added with what was left, never more.
            let valid = back.1["valid_life_time"].as_u64().unwrap();
            let left = (t0 + lifetime.as_duration())
                .saturating_duration_since(Instant::now())
                .as_secs();
            assert!(
                valid <= left + 1 && valid >= left.saturating_sub(1),
                "valid {valid}, {left} s left: {}",
                back.1
            );
            assert_eq!(back.1["preferred_life_time"], 0);
        }

        // After release, a removal stays a removal.
        guard.release().await.unwrap();
        for v in vips {
            announcer.stop(v);
            table.remove(v).await.unwrap();
        }
        sleep(Duration::from_millis(500)).await;
        assert_eq!(
            table.present(&vips).await.unwrap(),
            vec![],
            "guard re-added after release"
        );
        assert!(
            announcer.stats().garp >= 6,
            "re-announced: {:?}",
            announcer.stats()
        );
    });
}
