//! A packet oracle for the precise fence: host A holds the VIPs and a
//! listener, peer B on a veth sends ARP requests, neighbour solicitations
//! and TCP SYNs to them every few ms and captures what A answers, with
//! when. Include it after `netns.rs`:
//!
//! ```ignore
//! #[path = "common/netns.rs"]
//! mod netns;
//! #[path = "common/oracle.rs"]
//! mod oracle;
//! ```
#![allow(dead_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ha_vip::fence::nft::NftFence;
use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, sendto, socket};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{Netns, veth};

pub(crate) const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub(crate) const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
pub(crate) const B4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub(crate) const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub(crate) const PORT: u16 = 6443;
/// How often B probes.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(3);
/// The assertion's bound; the goal (printed) is under 20 ms.
pub(crate) const BOUND: Duration = Duration::from_millis(200);

pub(crate) fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Runs `f` on a thread inside `ns`; sockets it opens stay in `ns`.
pub(crate) fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            f()
        })
        .join()
        .unwrap()
    })
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A (fenced, with the VIPs and a listener on both) and B (the peer).
pub(crate) struct Hosts {
    pub(crate) a: Netns,
    pub(crate) b: Netns,
    pub(crate) a_mac: [u8; 6],
    pub(crate) b_mac: [u8; 6],
    pub(crate) _listeners: Vec<Socket>,
}

pub(crate) fn hosts(tag: &str) -> Hosts {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    veth(&a, "a0", &b, "b0");
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "a0"]);
    a.ip(&["addr", "add", "192.0.2.100/32", "dev", "a0"]);
    a.ip(&["addr", "add", "2001:db8::1/64", "dev", "a0", "nodad"]);
    a.ip(&["addr", "add", "2001:db8::100/128", "dev", "a0", "nodad"]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "b0"]);
    b.ip(&["addr", "add", "2001:db8::2/64", "dev", "b0", "nodad"]);
    let a_mac = a.mac("a0");
    let b_mac = b.mac("b0");
    // Fixed neighbours: the SYNs keep going to A after the fence stops its
    // ARP and NA answers, and A's SYN-ACKs need no resolution of their own.
    for (ip, mac) in [("192.0.2.100", &a_mac), ("2001:db8::100", &a_mac)] {
        b.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            "b0",
            "nud",
            "permanent",
        ]);
    }
    for (ip, mac) in [("192.0.2.2", &b_mac), ("2001:db8::2", &b_mac)] {
        a.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            "a0",
            "nud",
            "permanent",
        ]);
    }
    let listeners = in_ns(&a, || {
        [IpAddr::V4(VIP4), IpAddr::V6(VIP6)]
            .into_iter()
            .map(|ip| {
                let addr = SocketAddr::new(ip, PORT);
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
                s.set_reuse_address(true).unwrap();
                s.bind(&addr.into()).unwrap();
                s.listen(1024).unwrap();
                s
            })
            .collect()
    });
    Hosts {
        a_mac: parse_mac(&a_mac),
        b_mac: parse_mac(&b_mac),
        a,
        b,
        _listeners: listeners,
    }
}

pub(crate) fn open_fence(h: &Hosts) -> NftFence {
    in_ns(&h.a, || {
        NftFence::open().expect("nf_tables in the test namespace")
    })
}

/// Nanoseconds since the epoch.
pub(crate) fn ns_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

pub(crate) fn at_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

// ---------------------------------------------------------------- frames

pub(crate) fn arp_request(b_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&b_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&b_mac);
    f.extend_from_slice(&B4.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&VIP4.octets());
    f
}

/// A neighbour solicitation from B for the VIP, to its solicited-node group.
pub(crate) fn neighbour_solicitation(b_mac: [u8; 6]) -> Vec<u8> {
    let v = VIP6.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, v[13], v[14], v[15],
    ]);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&v);
    icmp.extend_from_slice(&[1, 1]); // source link-layer address option
    icmp.extend_from_slice(&b_mac);
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        b.chunks(2)
            .for_each(|w| sum += u32::from(u16::from_be_bytes([w[0], w[1]])))
    };
    add(&B6.octets());
    add(&group.octets());
    add(&[0, 0, 0, icmp.len() as u8, 0, 0, 0, 58]);
    add(&icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());

    let mut f = vec![0x33, 0x33, 0xff, v[13], v[14], v[15]];
    f.extend_from_slice(&b_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, icmp.len() as u8, 58, 255]);
    f.extend_from_slice(&B6.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&icmp);
    f
}

/// What A answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ArpReply,
    NeighbourAdvert,
    SynAck4,
    SynAck6,
}

pub(crate) const KINDS: [Kind; 4] = [
    Kind::ArpReply,
    Kind::NeighbourAdvert,
    Kind::SynAck4,
    Kind::SynAck6,
];

pub(crate) fn classify(f: &[u8]) -> Option<Kind> {
    match (f.get(12)?, f.get(13)?) {
        (0x08, 0x06) if f.len() >= 42 && f[20..22] == [0, 2] && f[28..32] == VIP4.octets() => {
            Some(Kind::ArpReply)
        }
        (0x08, 0x00) if f.len() >= 34 && f[23] == 6 && f[26..30] == VIP4.octets() => {
            let tcp = 14 + usize::from(f[14] & 0x0f) * 4;
            (f.get(tcp + 13)? & 0x12 == 0x12).then_some(Kind::SynAck4)
        }
        (0x86, 0xdd) if f.len() >= 54 => match f[20] {
            58 if f.len() >= 78 && f[54] == 136 && f[62..78] == VIP6.octets() => {
                Some(Kind::NeighbourAdvert)
            }
            6 if f[22..38] == VIP6.octets() => {
                (f.get(54 + 13)? & 0x12 == 0x12).then_some(Kind::SynAck6)
            }
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------- oracle

/// An answer from A as B captured it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub(crate) at: SystemTime,
    pub(crate) kind: Kind,
}

/// What B saw while `body` ran.
pub(crate) struct Seen {
    pub(crate) answers: Vec<Answer>,
    /// When B sent each round of probes.
    pub(crate) probes: Vec<SystemTime>,
}

/// B's address of `dev` for sending frames (from getifaddrs: no unsafe).
pub(crate) fn link_addr(dev: &str) -> LinkAddr {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .find_map(|i| {
            (i.interface_name == dev)
                .then(|| i.address.and_then(|a| a.as_link_addr().copied()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no link address for {dev}"))
}

/// B probes every [`PROBE_EVERY`] and captures A's answers while `body`
/// runs (and `tail` longer), optionally with address churn on A.
pub(crate) fn oracle<T: Send>(
    h: &Hosts,
    churn: bool,
    tail: Duration,
    body: impl FnOnce() -> T + Send,
) -> (T, Seen) {
    let stop_probe = AtomicBool::new(false);
    let stop_capture = AtomicBool::new(false);
    let (stop_probe, stop_capture) = (&stop_probe, &stop_capture);
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let a_mac = h.a_mac;
        let capture = s.spawn(move || {
            h.b.enter();
            const ETH_P_ALL: u16 = 0x0003;
            let sock = Socket::new(
                Domain::PACKET,
                Type::RAW,
                Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
            )
            .unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop_capture.load(Ordering::Relaxed) {
                match (&sock).read(&mut buf) {
                    Ok(n) if n >= 14 && buf[6..12] == a_mac => {
                        let at = SystemTime::now();
                        if let Some(kind) = classify(&buf[..n]) {
                            out.push(Answer { at, kind });
                        }
                    }
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
        });
        ready_rx.recv().unwrap();
        let prober = s.spawn(|| {
            h.b.enter();
            let raw = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            let to = link_addr("b0");
            let arp = arp_request(h.b_mac);
            let ns = neighbour_solicitation(h.b_mac);
            let targets: [SockAddr; 2] = [
                SocketAddr::new(IpAddr::V4(VIP4), PORT).into(),
                SocketAddr::new(IpAddr::V6(VIP6), PORT).into(),
            ];
            let mut sent = Vec::new();
            while !stop_probe.load(Ordering::Relaxed) {
                use std::os::fd::AsRawFd;
                sent.push(SystemTime::now());
                for frame in [&arp, &ns] {
                    sendto(raw.as_raw_fd(), frame, &to, MsgFlags::empty()).unwrap();
                }
                for t in &targets {
                    // A non-blocking connect sends its SYN before it
                    // returns; closing the socket right away makes B
                    // answer A's SYN-ACK with a RST, so A's queue stays
                    // empty.
                    let s =
                        Socket::new(Domain::from(t.family() as i32), Type::STREAM, None).unwrap();
                    s.set_nonblocking(true).unwrap();
                    let _ = s.connect(t);
                }
                std::thread::sleep(PROBE_EVERY);
            }
            sent
        });
        let churner = churn.then(|| {
            s.spawn(|| {
                let mut i = 0u32;
                let mut n = 0u32;
                while !stop_probe.load(Ordering::Relaxed) {
                    let v4 = format!("198.51.100.{}/32", i % 200 + 1);
                    let v6 = format!("2001:db8:1::{:x}/128", i % 200 + 1);
                    for (verb, extra) in [("add", Some("nodad")), ("del", None)] {
                        let _ = h.a.try_ip(&["addr", verb, &v4, "dev", "a0"]);
                        let mut args = vec!["addr", verb, v6.as_str(), "dev", "a0"];
                        args.extend(extra);
                        let _ = h.a.try_ip(&args);
                        n += 2;
                    }
                    i += 1;
                }
                n
            })
        });
        let out = body();
        std::thread::sleep(tail);
        stop_probe.store(true, Ordering::Relaxed);
        let probes = prober.join().unwrap();
        if let Some(c) = churner {
            let n = c.join().unwrap();
            println!("  churn: {n} address changes on A");
        }
        // Let the last answers cross the veth.
        std::thread::sleep(Duration::from_millis(50));
        stop_capture.store(true, Ordering::Relaxed);
        let answers = capture.join().unwrap();
        (out, Seen { answers, probes })
    })
}

/// Signed ms from `from` to `t`.
pub(crate) fn ms(t: SystemTime, from: SystemTime) -> f64 {
    match t.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// Checks and prints, per kind, that answers came up to the deadline and
/// none later than [`BOUND`] after it; returns the last answer's ms after
/// the deadline per kind.
pub(crate) fn check_deadline(label: &str, seen: &Seen, deadline: SystemTime) -> Vec<f64> {
    let last_probe = *seen.probes.last().expect("B probed");
    assert!(
        ms(last_probe, deadline) > 300.0,
        "{label}: B stopped probing {:.1} ms after the deadline, too early to judge",
        ms(last_probe, deadline)
    );
    let after: Vec<f64> = seen
        .probes
        .iter()
        .map(|p| ms(*p, deadline))
        .filter(|m| *m > 0.0)
        .collect();
    println!(
        "  {label}: {} probe rounds after the deadline, the first at {:+.2} ms",
        after.len(),
        after[0]
    );
    KINDS
        .iter()
        .map(|&kind| {
            let times: Vec<SystemTime> = seen
                .answers
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.at)
                .collect();
            let last = *times
                .iter()
                .max()
                .unwrap_or_else(|| panic!("{label}: no {kind:?} at all"));
            let last_ms = ms(last, deadline);
            let before = times
                .iter()
                .filter(|t| (-100.0..=0.0).contains(&ms(**t, deadline)))
                .count();
            println!(
                "  {label} {kind:?}: last answer {last_ms:+.2} ms after the deadline ({before} in the 100 ms before it, {} in all)",
                times.len()
            );
            assert!(
                before > 0,
                "{label}: no {kind:?} in the 100 ms before the deadline: the fence fired early"
            );
            assert!(
                last_ms < BOUND.as_secs_f64() * 1e3,
                "{label}: {kind:?} {last_ms:.1} ms after the deadline"
            );
            last_ms
        })
        .collect()
}

/// Whether A answers a TCP connect from B to `vip` within 150 ms (a
/// connection or a refusal both answer).
pub(crate) fn answers(h: &Hosts, vip: IpAddr) -> bool {
    let addr: SockAddr = SocketAddr::new(vip, PORT).into();
    let s = in_ns(&h.b, || {
        Socket::new(Domain::from(addr.family() as i32), Type::STREAM, None).unwrap()
    });
    match s.connect_timeout(&addr, Duration::from_millis(150)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            false
        }
        Err(e) => panic!("connect {vip}: {e}"),
    }
}
