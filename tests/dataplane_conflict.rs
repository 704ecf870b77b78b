//! Address conflicts on a real wire: namespace A is ha-vip's node (`a0`),
//! namespace R a rogue host (`r0`) on the same veth. R's own kernel answers
//! for a VIP it has, and R sends gratuitous ARP / unsolicited NA with the
//! same announcer ha-vip uses.

#[path = "common/netns.rs"]
mod netns;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_vip::announce::conflict::{self, ClaimKind, Conflict, PROBE_WAIT};
use ha_vip::announce::{Announcer, RawAnnouncer, Schedule};
use ha_vip::config::Vip;
use netns::{Netns, veth};

const V4: &str = "192.0.2.100";
const V6: &str = "2001:db8::100";

fn vip(s: &str) -> Vip {
    let addr: IpAddr = s.parse().unwrap();
    Vip {
        addr,
        prefix_len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// A (ha-vip, `a0`) <-> R (rogue, `r0`).
fn two_hosts(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a"));
    let r = Netns::new(&format!("{tag}r"));
    veth(&a, "a0", &r, "r0");
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "a0"]);
    r.ip(&["addr", "add", "192.0.2.2/24", "dev", "r0"]);
    a.ip(&["addr", "add", "2001:db8::1/64", "dev", "a0", "nodad"]);
    r.ip(&["addr", "add", "2001:db8::2/64", "dev", "r0", "nodad"]);
    (a, r)
}

fn give_vips(ns: &Netns, dev: &str) {
    ns.ip(&["addr", "add", &format!("{V4}/32"), "dev", dev]);
    ns.ip(&["addr", "add", &format!("{V6}/128"), "dev", dev, "nodad"]);
}

#[test]
fn the_probe_names_the_mac_of_a_host_that_has_the_vip() {
    let (a, r) = two_hosts("cprobe");
    give_vips(&r, "r0");
    let rogue = parse_mac(&r.mac("r0"));
    let vips = [vip(V4), vip(V6)];
    let (found, took) = a.run(|| async {
        let t = Instant::now();
        let found = conflict::probe("a0", &vips, PROBE_WAIT).await.unwrap();
        (found, t.elapsed())
    });
    println!(
        "conflict probe: {:.1} ms for 2 VIPs, wait {PROBE_WAIT:?} (found {})",
        took.as_secs_f64() * 1000.0,
        found.len()
    );
    let mut got: Vec<(IpAddr, [u8; 6], ClaimKind)> =
        found.iter().map(|c| (c.vip.addr, c.mac, c.kind)).collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        vec![
            (V4.parse().unwrap(), rogue, ClaimKind::ArpReply),
            (V6.parse().unwrap(), rogue, ClaimKind::NeighbourAdvert),
        ],
        "each VIP once, with the rogue's MAC"
    );
    assert!(
        took < PROBE_WAIT + Duration::from_millis(200),
        "probe took {took:?}"
    );
}

#[test]
fn the_probe_finds_nothing_on_a_quiet_wire_and_never_counts_our_own_mac() {
    let (a, r) = two_hosts("cquiet");
    // Our own node has the VIPs (its kernel would answer others' probes):
    // its own probe must not see itself.
    give_vips(&a, "a0");
    let _ = &r;
    let vips = [vip(V4), vip(V6)];
    let found = a.run(|| async { conflict::probe("a0", &vips, PROBE_WAIT).await.unwrap() });
    assert_eq!(found, Vec::<Conflict>::new());
}

#[test]
fn the_probe_for_a_missing_interface_names_it() {
    let (a, _r) = two_hosts("cmiss");
    let err = a
        .run(|| async { conflict::probe("nope0", &[vip(V4)], PROBE_WAIT).await })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope0") && err.contains("no such interface"),
        "{err}"
    );
}

/// While A holds the VIPs and announces them, R announces them too: the
/// watch reports R's frames, each with R's MAC, and none of A's own.
#[test]
fn the_watch_reports_a_rogue_announcing_our_vip_but_never_our_own_announcements() {
    let (a, r) = two_hosts("cwatch");
    give_vips(&a, "a0");
    let rogue = parse_mac(&r.mac("r0"));
    let ours = parse_mac(&a.mac("a0"));
    let schedule = Schedule {
        count: 3,
        spacing: Duration::from_millis(30),
        second_burst_delay: Duration::from_secs(10),
        refresh_interval: None,
    };
    let seen = Arc::new(Mutex::new(Vec::<Conflict>::new()));
    let (held_tx, held_rx) = tokio::sync::watch::channel(Vec::new());
    std::thread::scope(|s| {
        let seen2 = Arc::clone(&seen);
        let watcher = s.spawn(|| {
            a.run(|| async move {
                let announcer = RawAnnouncer::new("a0", schedule).unwrap();
                let task = tokio::spawn(conflict::watch("a0".into(), held_rx, move |c| {
                    seen2.lock().unwrap().push(c)
                }));
                held_tx.send_replace(vec![vip(V4), vip(V6)]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Our own announcements, while watching: never counted.
                let fence = tokio::time::Instant::now() + Duration::from_secs(30);
                for v in [vip(V4), vip(V6)] {
                    announcer.fence(v, fence);
                    announcer.start(v);
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
                // Not holding: nothing is listened to.
                held_tx.send_replace(Vec::new());
                tokio::time::sleep(Duration::from_millis(700)).await;
                drop(held_tx);
                task.await.unwrap();
                announcer.stats()
            })
        });
        // The rogue announces from 300 ms on, and again at 1.1 s (when A
        // no longer holds the VIPs).
        std::thread::sleep(Duration::from_millis(300));
        r.run(|| async {
            let announcer = RawAnnouncer::new("r0", schedule).unwrap();
            let fence = tokio::time::Instant::now() + Duration::from_secs(30);
            for v in [vip(V4), vip(V6)] {
                announcer.fence(v, fence);
                announcer.start(v);
            }
            tokio::time::sleep(Duration::from_millis(800)).await;
            for v in [vip(V4), vip(V6)] {
                announcer.burst(v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let ours_sent = watcher.join().unwrap();
        assert!(ours_sent.garp >= 6 && ours_sent.na >= 3, "{ours_sent:?}");
    });
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|c| c.mac == rogue && c.mac != ours),
        "only the rogue's MAC: {seen:?}"
    );
    let v4 = seen.iter().filter(|c| c.vip == vip(V4)).count();
    let v6 = seen.iter().filter(|c| c.vip == vip(V6)).count();
    // The first burst only (3 rounds: request + reply for IPv4, one NA for
    // IPv6); the second burst came after A stopped holding.
    assert_eq!((v4, v6), (6, 3), "{seen:?}");
}

/// A frame with our own MAC that comes back from the wire (a switching
/// loop, a hairpinning bridge) is ours, not a conflict. The kernel never
/// hands a protocol socket our own outgoing frames, so this is the only
/// way our own announcements could reach the watch: R sends them with A's
/// MAC (as a loop would return them), then its own.
#[test]
fn frames_with_our_own_mac_coming_back_from_the_wire_never_count() {
    let (a, r) = two_hosts("cloop");
    give_vips(&a, "a0");
    let ours = a.mac("a0");
    let rogue_str = r.mac("r0");
    let rogue = parse_mac(&rogue_str);
    let schedule = Schedule {
        count: 2,
        spacing: Duration::from_millis(30),
        second_burst_delay: Duration::from_secs(10),
        refresh_interval: None,
    };
    let seen = Arc::new(Mutex::new(Vec::<Conflict>::new()));
    let (held_tx, held_rx) = tokio::sync::watch::channel(Vec::new());
    let announce_from_r = |r: &Netns| {
        r.run(|| async {
            let announcer = RawAnnouncer::new("r0", schedule).unwrap();
            let fence = tokio::time::Instant::now() + Duration::from_secs(30);
            for v in [vip(V4), vip(V6)] {
                announcer.fence(v, fence);
                announcer.start(v);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        })
    };
    std::thread::scope(|s| {
        let seen2 = Arc::clone(&seen);
        let watcher = s.spawn(|| {
            a.run(|| async move {
                let task = tokio::spawn(conflict::watch("a0".into(), held_rx, move |c| {
                    seen2.lock().unwrap().push(c)
                }));
                held_tx.send_replace(vec![vip(V4), vip(V6)]);
                tokio::time::sleep(Duration::from_millis(1200)).await;
                drop(held_tx);
                task.await.unwrap();
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        // Our frames, returned by a loop.
        r.ip(&["link", "set", "r0", "address", &ours]);
        announce_from_r(&r);
        // The rogue's own.
        r.ip(&["link", "set", "r0", "address", &rogue_str]);
        announce_from_r(&r);
        watcher.join().unwrap();
    });
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|c| c.mac == rogue), "{seen:?}");
    let v4 = seen.iter().filter(|c| c.vip == vip(V4)).count();
    let v6 = seen.iter().filter(|c| c.vip == vip(V6)).count();
    assert_eq!((v4, v6), (4, 2), "the rogue's burst only: {seen:?}");
}
