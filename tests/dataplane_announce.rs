//! Announcements on a real wire: namespace A announces over a veth, namespace
//! B captures the frames (AF_PACKET) and its neighbour table must follow.

#[path = "common/netns.rs"]
mod netns;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ha_vip::announce::{AnnounceStats, Announcer, RawAnnouncer, Schedule};
use ha_vip::config::Vip;
use ha_vip::vip::{AddressTable, Lifetime, NetlinkAddressTable};
use netns::{Netns, veth};
use socket2::{Domain, Protocol, Socket, Type};

const V4: &str = "192.0.2.100";
const V6: &str = "2001:db8::100";
const DUMMY_MAC: &str = "02:00:00:00:00:99";

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

/// A (announcer, `a0`) <-> B (receiver, `b0`), addressed in 192.0.2.0/24
/// and 2001:db8::/64.
fn two_hosts(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    veth(&a, "a0", &b, "b0");
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "a0"]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "b0"]);
    a.ip(&["addr", "add", "2001:db8::1/64", "dev", "a0", "nodad"]);
    b.ip(&["addr", "add", "2001:db8::2/64", "dev", "b0", "nodad"]);
    (a, b)
}

/// A frame seen by B's capture, and when.
struct Captured {
    at: Instant,
    frame: Vec<u8>,
}

/// Captures, inside `ns`, every frame from `src_mac` until `stop` says so.
fn capture(
    ns: &Netns,
    src_mac: [u8; 6],
    ready: mpsc::Sender<()>,
    stop: mpsc::Receiver<()>,
) -> Vec<Captured> {
    ns.enter();
    const ETH_P_ALL: u16 = 0x0003;
    let sock = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    ready.send(()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while stop.try_recv().is_err() {
        match (&sock).read(&mut buf) {
            Ok(n) if n >= 14 && buf[6..12] == src_mac => out.push(Captured {
                at: Instant::now(),
                frame: buf[..n].to_vec(),
            }),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("capture: {e}"),
        }
    }
    out
}

fn is_arp(f: &[u8]) -> bool {
    f[12..14] == [0x08, 0x06]
}

fn is_na(f: &[u8]) -> bool {
    f.len() >= 78 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 136
}

/// Checks every field of a gratuitous ARP frame.
fn check_arp(f: &[u8], mac: [u8; 6], ip: Ipv4Addr, op: u16) {
    assert_eq!(f.len(), 42, "ARP frame length");
    assert_eq!(f[0..6], [0xff; 6], "Ethernet broadcast");
    assert_eq!(f[6..12], mac, "Ethernet source = announcer's MAC");
    assert_eq!(f[14..16], [0, 1], "htype Ethernet");
    assert_eq!(f[16..18], [0x08, 0], "ptype IPv4");
    assert_eq!((f[18], f[19]), (6, 4), "hlen, plen");
    assert_eq!(u16::from_be_bytes([f[20], f[21]]), op, "op");
    assert_eq!(f[22..28], mac, "sender MAC");
    assert_eq!(f[28..32], ip.octets(), "sender IP = VIP");
    let tha: [u8; 6] = if op == 1 { [0; 6] } else { mac };
    assert_eq!(
        f[32..38],
        tha,
        "target MAC (zero for the request, own for the reply)"
    );
    assert_eq!(f[38..42], ip.octets(), "target IP = VIP");
}

/// Checks every field of an unsolicited NA frame, checksum included.
fn check_na(f: &[u8], mac: [u8; 6], ip: Ipv6Addr) {
    assert_eq!(f.len(), 86, "NA frame length");
    assert_eq!(
        f[0..6],
        [0x33, 0x33, 0, 0, 0, 1],
        "Ethernet dst for ff02::1"
    );
    assert_eq!(f[6..12], mac);
    assert_eq!(f[14] >> 4, 6, "IP version");
    assert_eq!(u16::from_be_bytes([f[18], f[19]]), 32, "payload length");
    assert_eq!(f[21], 255, "hop limit");
    assert_eq!(f[22..38], ip.octets(), "source = VIP");
    assert_eq!(
        Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
        "ff02::1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!((f[54], f[55]), (136, 0), "type NA, code 0");
    assert_eq!(f[58..62], [0x20, 0, 0, 0], "R=0 S=0 O=1, reserved zero");
    assert_eq!(f[62..78], ip.octets(), "target = VIP");
    assert_eq!(
        (f[78], f[79]),
        (2, 1),
        "Target Link-Layer Address option, 8 bytes"
    );
    assert_eq!(f[80..86], mac);
    // RFC 1071: the one's-complement sum over pseudo-header and message,
    // checksum included, is 0xffff.
    let mut sum: u32 = 0;
    let mut words = |b: &[u8]| {
        b.chunks(2)
            .for_each(|w| sum += u32::from(u16::from_be_bytes([w[0], w[1]])))
    };
    words(&f[22..54]);
    words(&[0, 0, 0, 32, 0, 0, 0, 58]);
    words(&f[54..86]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff, "ICMPv6 checksum");
}

fn neighbour_mac(ns: &Netns, ip: &str) -> Option<String> {
    let neigh = ns.ip_json(&["neigh", "show", "dev", "b0"]);
    neigh
        .as_array()?
        .iter()
        .find(|n| n["dst"] == ip)
        .and_then(|n| n["lladdr"].as_str().map(str::to_owned))
}

/// Runs `body` in A while B captures; returns (body's result, frames from A).
fn with_capture<T: Send>(
    a: &Netns,
    b: &Netns,
    body: impl FnOnce() -> T + Send,
) -> (T, Vec<Captured>) {
    let mac = parse_mac(&a.mac("a0"));
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let cap = s.spawn(move || capture(b, mac, ready_tx, stop_rx));
        ready_rx.recv().unwrap();
        let out = body();
        // Let the last frames cross the veth.
        std::thread::sleep(Duration::from_millis(100));
        stop_tx.send(()).unwrap();
        (out, cap.join().unwrap())
    })
}

#[test]
fn announcements_update_the_neighbours_and_carry_every_field() {
    let (a, b) = two_hosts("ann");
    // B first knows the VIPs at a dummy MAC (the previous holder). Linux only
    // updates an *existing* entry from a gratuitous ARP unless arp_accept is
    // set, and an existing entry is exactly the failover case; so no
    // arp_accept here. An unsolicited NA with O=1 likewise overrides it.
    b.ip(&[
        "neigh", "replace", V4, "lladdr", DUMMY_MAC, "dev", "b0", "nud", "stale",
    ]);
    b.ip(&[
        "neigh", "replace", V6, "lladdr", DUMMY_MAC, "dev", "b0", "nud", "stale",
    ]);
    assert_eq!(neighbour_mac(&b, V4).as_deref(), Some(DUMMY_MAC));

    let mac_str = a.mac("a0");
    let mac = parse_mac(&mac_str);
    let schedule = Schedule {
        count: 3,
        spacing: Duration::from_millis(150),
        second_burst_delay: Duration::from_secs(1),
        refresh_interval: None,
    };
    let ((t_start, stats), frames) = with_capture(&a, &b, || {
        a.run(|| async {
            let table = NetlinkAddressTable::connect("a0").unwrap();
            let announcer = RawAnnouncer::new("a0", schedule).unwrap();
            for v in [vip(V4), vip(V6)] {
                table
                    .add_or_refresh(v, Lifetime::from_secs(30).unwrap())
                    .await
                    .unwrap();
            }
            let t_start = Instant::now();
            let fence = tokio::time::Instant::now() + Duration::from_secs(30);
            for v in [vip(V4), vip(V6)] {
                announcer.fence(v, fence);
                announcer.start(v);
            }
            tokio::time::sleep(Duration::from_millis(1700)).await;
            (t_start, announcer.stats())
        })
    });
    assert_eq!(
        stats,
        AnnounceStats {
            garp: 12,
            na: 6,
            errors: 0
        },
        "2 bursts x 3 rounds"
    );

    let v4: Ipv4Addr = V4.parse().unwrap();
    let arps: Vec<&Captured> = frames
        .iter()
        .filter(|c| is_arp(&c.frame) && c.frame[28..32] == v4.octets())
        .collect();
    let nas: Vec<&Captured> = frames
        .iter()
        .filter(|c| is_na(&c.frame) && c.frame[62..78] == vip_v6().octets())
        .collect();
    assert_eq!(arps.len(), 12, "ARP frames on the wire");
    assert_eq!(nas.len(), 6, "NA frames on the wire");
    for (i, c) in arps.iter().enumerate() {
        // Each round: the request form, then the reply form.
        check_arp(
            &c.frame,
            mac,
            V4.parse().unwrap(),
            if i % 2 == 0 { 1 } else { 2 },
        );
    }
    for c in &nas {
        check_na(&c.frame, mac, vip_v6());
    }

    // Timing as seen on the wire.
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rounds: Vec<Instant> = arps.iter().step_by(2).map(|c| c.at).collect();
    let first = frames.iter().map(|c| c.at).min().unwrap();
    println!(
        "announce: acquire -> first frame on the wire: {:.2} ms",
        ms(first - t_start)
    );
    let gaps: Vec<String> = rounds
        .windows(2)
        .map(|w| format!("{:.1}", ms(w[1] - w[0])))
        .collect();
    println!("announce: IPv4 round gaps (ms): {}", gaps.join(", "));
    let na_gaps: Vec<String> = nas
        .windows(2)
        .map(|w| format!("{:.1}", ms(w[1].at - w[0].at)))
        .collect();
    println!("announce: IPv6 NA gaps (ms): {}", na_gaps.join(", "));
    assert!(
        first - t_start < Duration::from_millis(100),
        "first frame late: {:?}",
        first - t_start
    );
    for (i, w) in rounds.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let want = if i == 2 {
            Duration::from_millis(1000)
        } else {
            Duration::from_millis(150)
        };
        assert!(
            gap >= want - Duration::from_millis(5) && gap < want + Duration::from_millis(150),
            "gap {i}: {gap:?}"
        );
    }

    // B's neighbour table now points at the announcer.
    assert_eq!(
        neighbour_mac(&b, V4).as_deref(),
        Some(mac_str.as_str()),
        "IPv4 neighbour after GARP"
    );
    assert_eq!(
        neighbour_mac(&b, V6).as_deref(),
        Some(mac_str.as_str()),
        "IPv6 neighbour after NA"
    );
}

fn vip_v6() -> Ipv6Addr {
    V6.parse().unwrap()
}

#[test]
fn stop_ends_announcements_at_once_and_bursts_need_a_start() {
    let (a, b) = two_hosts("stop");
    let schedule = Schedule {
        count: 2,
        spacing: Duration::from_millis(50),
        second_burst_delay: Duration::from_millis(200),
        refresh_interval: Some(Duration::from_millis(100)),
    };
    let ((t_stop, before, after), frames) = with_capture(&a, &b, || {
        a.run(|| async {
            let announcer = RawAnnouncer::new("a0", schedule).unwrap();
            let v = vip(V4);
            announcer.burst(v);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                announcer.stats().garp,
                0,
                "burst before start sends nothing"
            );
            announcer.fence(v, tokio::time::Instant::now() + Duration::from_secs(30));
            announcer.start(v);
            tokio::time::sleep(Duration::from_millis(650)).await;
            announcer.burst(v);
            announcer.stop(v);
            let t_stop = Instant::now();
            let before = announcer.stats();
            announcer.burst(v);
            tokio::time::sleep(Duration::from_millis(400)).await;
            (t_stop, before, announcer.stats())
        })
    });
    assert_eq!(before, after, "nothing sent after stop");
    // 2 bursts of 2 rounds, then refresh rounds every 100 ms: at least 2.
    assert!(before.garp >= 2 * (4 + 2), "{before:?}");
    // A's kernel sends frames of its own (MLD, router solicitations): look
    // only at announcements of the VIP.
    let v4: Ipv4Addr = V4.parse().unwrap();
    let ours: Vec<&Captured> = frames
        .iter()
        .filter(|c| is_arp(&c.frame) && c.frame[28..32] == v4.octets())
        .collect();
    let late: Vec<Duration> = ours
        .iter()
        .filter(|c| c.at > t_stop + Duration::from_millis(20))
        .map(|c| c.at - t_stop)
        .collect();
    assert!(late.is_empty(), "announcements after stop: {late:?}");
    assert_eq!(ours.len() as u64, before.garp);
}

/// Issue 10, item 9: a process stalled past its fence (SIGSTOP, here a
/// blocked runtime thread) sends none of the rounds that fell due meanwhile.
#[test]
fn no_announcement_after_the_fence_even_after_a_stall() {
    let (a, b) = two_hosts("fence");
    let schedule = Schedule {
        count: 3,
        spacing: Duration::from_millis(100),
        second_burst_delay: Duration::from_millis(500),
        refresh_interval: Some(Duration::from_millis(100)),
    };
    let ((fence, stats), frames) = with_capture(&a, &b, || {
        a.run(|| async {
            let announcer = RawAnnouncer::new("a0", schedule).unwrap();
            let v = vip(V4);
            let fence = tokio::time::Instant::now() + Duration::from_millis(1000);
            announcer.fence(v, fence);
            announcer.start(v);
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The whole thread stops over the second burst and the fence,
            // as under SIGSTOP; the rounds due meanwhile run after it.
            std::thread::sleep(Duration::from_millis(1200));
            tokio::time::sleep(Duration::from_millis(500)).await;
            (fence.into_std(), announcer.stats())
        })
    });
    let v4: Ipv4Addr = V4.parse().unwrap();
    let ours: Vec<&Captured> = frames
        .iter()
        .filter(|c| is_arp(&c.frame) && c.frame[28..32] == v4.octets())
        .collect();
    let late: Vec<Duration> = ours
        .iter()
        .filter(|c| c.at > fence)
        .map(|c| c.at - fence)
        .collect();
    assert!(late.is_empty(), "announcements after the fence: {late:?}");
    // Only the first burst: 3 rounds of request + reply.
    assert_eq!(ours.len(), 6, "{stats:?}");
    assert_eq!(stats.garp, 6);
}
