//! The precise fence (nftables) against the real kernel, with a packet
//! oracle: host A holds the VIPs and a listener, peer B on a veth sends ARP
//! requests, neighbour solicitations and TCP SYNs every few ms and captures
//! what A answers. Prints how many ms after the deadline the last answer of
//! each kind came (run with `--no-capture` to see the numbers).

#[path = "common/netns.rs"]
mod netns;
#[path = "common/oracle.rs"]
mod oracle;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ha_vip::fence::PreciseFence;
use netns::Netns;
use oracle::{
    BOUND, KINDS, VIP4, VIP6, answers, at_ns, check_deadline, hosts, ms, ns_of, open_fence, oracle,
    runtime,
};

fn answers_stop_at_the_deadline(tag: &str, churn: bool) {
    let h = hosts(tag);
    let fence = open_fence(&h);
    let rt = runtime();
    let (deadline, seen) = oracle(&h, churn, Duration::from_millis(400), || {
        std::thread::sleep(Duration::from_millis(150));
        let deadline = SystemTime::now() + Duration::from_millis(300);
        rt.block_on(fence.arm(&[IpAddr::V4(VIP4), IpAddr::V6(VIP6)], deadline))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        deadline
    });
    let label = if churn { "churn" } else { "quiet" };
    check_deadline(label, &seen, deadline);
    rt.block_on(fence.clear()).unwrap();
}

#[test]
fn answers_stop_within_ms_of_the_deadline() {
    answers_stop_at_the_deadline("pq", false);
}

#[test]
fn answers_stop_within_ms_of_the_deadline_under_address_churn() {
    answers_stop_at_the_deadline("pc", true);
}

#[test]
fn rearming_forward_keeps_the_vips_answered_without_a_gap() {
    let h = hosts("pr");
    let fence = open_fence(&h);
    let rt = runtime();
    let vips = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];
    let ((first, deadline, mut arms), seen) = oracle(&h, false, Duration::from_millis(600), || {
        let first = SystemTime::now();
        let mut deadline = first;
        let mut arms = Vec::new();
        // Renewals every 50 ms, each moving a 150 ms deadline forward.
        while first.elapsed().unwrap() < Duration::from_secs(1) {
            deadline = SystemTime::now() + Duration::from_millis(150);
            let t = std::time::Instant::now();
            rt.block_on(fence.arm(&vips, deadline)).unwrap();
            arms.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        (first, deadline, arms)
    });
    arms.sort();
    println!(
        "  {} arms, each took median {:?}, max {:?}",
        arms.len(),
        arms[arms.len() / 2],
        arms[arms.len() - 1]
    );
    for kind in KINDS {
        let mut times: Vec<SystemTime> = seen
            .answers
            .iter()
            .filter(|a| a.kind == kind && a.at >= first && a.at <= deadline)
            .map(|a| a.at)
            .collect();
        times.sort();
        let gap = times.windows(2).map(|w| ms(w[1], w[0])).fold(0.0, f64::max);
        println!(
            "  {kind:?}: {} answers, longest gap {gap:.1} ms",
            times.len()
        );
        assert!(
            times.len() > 100,
            "{kind:?}: only {} answers while re-armed",
            times.len()
        );
        // Probes every 3 ms: a gap of 100 ms is the fence, not the prober.
        assert!(
            gap < 100.0,
            "{kind:?}: {gap:.1} ms without an answer while re-armed"
        );
    }
    check_deadline("re-armed", &seen, deadline);
}

#[test]
fn an_arm_whose_deadline_has_passed_stops_answers_at_once() {
    let h = hosts("pp");
    let fence = open_fence(&h);
    let rt = runtime();
    let (armed, seen) = oracle(&h, false, Duration::from_millis(400), || {
        std::thread::sleep(Duration::from_millis(200));
        let before = SystemTime::now();
        rt.block_on(fence.arm(
            &[IpAddr::V4(VIP4), IpAddr::V6(VIP6)],
            before - Duration::from_secs(1),
        ))
        .unwrap();
        let armed = SystemTime::now();
        println!("  arm took {:.2} ms", ms(armed, before));
        armed
    });
    for kind in KINDS {
        let last = seen
            .answers
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.at)
            .max()
            .unwrap_or_else(|| panic!("no {kind:?} before the arm"));
        let after = ms(last, armed);
        println!("  past deadline {kind:?}: last answer {after:+.2} ms after the arm returned");
        assert!(
            after < BOUND.as_secs_f64() * 1e3,
            "{kind:?} {after:.1} ms after the arm"
        );
    }
}

// ---------------------------------------------------- deadline encoding

/// Deadlines in the past and the future, chosen so that a comparison of
/// the wrong byte order (low byte first) gets some of them wrong: low
/// bytes 0x00 and 0xff, both sides of a 2^32 ns (4.29 s) boundary.
#[test]
fn deadlines_compare_as_time_in_the_past_and_the_future() {
    let h = hosts("pb");
    let fence = open_fence(&h);
    let rt = runtime();
    let vips = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];
    const S: u64 = 1_000_000_000;
    const B32: u64 = 1 << 32;
    // Each deadline is computed from the time it is armed at.
    fn next_boundary(now: u64) -> u64 {
        let b = (now / B32 + 1) * B32;
        if b - now < S / 2 { b + B32 } else { b }
    }
    /// What the deadline is, how to compute it from now, whether A answers.
    type Case = (&'static str, fn(u64) -> u64, bool);
    let cases: [Case; 14] = [
        ("the epoch", |_| 0, false),
        ("10 s ago", |now| now - 10 * S, false),
        ("1 s ago", |now| now - S, false),
        ("1 s ago, low byte 0xff", |now| (now - S) | 0xff, false),
        (
            "1 ms ago, low byte 0xff",
            |now| (now - S / 1000) | 0xff,
            false,
        ),
        (
            "just before the last 2^32 ns boundary",
            |now| (now / B32) * B32 - 1,
            false,
        ),
        ("2^32 ns ago", |now| now - B32, false),
        ("in 1 s", |now| now + S, true),
        ("in 1 s, low byte 0x00", |now| (now + S) & !0xff, true),
        ("in 10 s", |now| now + 10 * S, true),
        ("in 10 s, low byte 0x00", |now| (now + 10 * S) & !0xff, true),
        (
            "just after the next 2^32 ns boundary",
            |now| next_boundary(now) + 1,
            true,
        ),
        ("in an hour", |now| now + 3600 * S, true),
        ("in a year", |now| now + 365 * 86400 * S, true),
    ];
    for (what, at, expect) in cases {
        let deadline = at(ns_of(SystemTime::now()));
        rt.block_on(fence.arm(&vips, at_ns(deadline))).unwrap();
        for vip in vips {
            let got = answers(&h, vip);
            assert_eq!(
                got,
                expect,
                "deadline {what} ({deadline} ns, now {} ns): {vip} answered {got}",
                ns_of(SystemTime::now())
            );
        }
    }
    // A near deadline: answered before it, silent after it.
    for attempt in 1.. {
        let deadline = SystemTime::now() + Duration::from_millis(50);
        rt.block_on(fence.arm(&vips, deadline)).unwrap();
        let got = answers(&h, IpAddr::V4(VIP4));
        if SystemTime::now() >= deadline {
            // The host was too slow to judge the answer; try again.
            assert!(attempt < 5, "the host is too slow for a 50 ms deadline");
            continue;
        }
        assert!(got, "not answered before a deadline 50 ms ahead");
        std::thread::sleep(Duration::from_millis(60));
        for vip in vips {
            assert!(
                !answers(&h, vip),
                "{vip} answered after a deadline 50 ms ahead passed"
            );
        }
        // The node's own addresses on the same link are not fenced.
        for own in ["192.0.2.1", "2001:db8::1"] {
            let own: IpAddr = own.parse().unwrap();
            assert!(
                answers(&h, own),
                "{own} not answered while the VIPs are fenced"
            );
        }
        break;
    }
    rt.block_on(fence.clear()).unwrap();
    for vip in vips {
        assert!(answers(&h, vip), "{vip} not answered after clear");
    }
}

// ---------------------------------------------------------------- tables

/// `nft list tables` in `ns`, sorted.
fn tables(ns: &Netns) -> Vec<String> {
    let mut t: Vec<String> = ns
        .exec(&["nft", "list", "tables"])
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    t.sort();
    t
}

#[test]
fn clear_removes_only_our_tables() {
    let h = hosts("pt");
    let a = &h.a;
    // Foreign tables: another family with our name, and another name in
    // each of our families.
    a.exec(&[
        "nft",
        "add table ip ha_vip; add table inet other; add chain inet other c { type filter hook input priority 0; }; add table arp other",
    ]);
    let foreign = vec![
        "table arp other".to_owned(),
        "table inet other".to_owned(),
        "table ip ha_vip".to_owned(),
    ];
    let fence = open_fence(&h);
    assert_eq!(tables(a), foreign, "open touches no table");
    let rt = runtime();
    rt.block_on(fence.arm(
        &[IpAddr::V4(VIP4), IpAddr::V6(VIP6)],
        SystemTime::now() + Duration::from_secs(60),
    ))
    .unwrap();
    let mut armed = foreign.clone();
    armed.extend([
        "table arp ha_vip".to_owned(),
        "table inet ha_vip".to_owned(),
    ]);
    armed.sort();
    assert_eq!(tables(a), armed);
    let rules = a.exec(&["nft", "list", "table", "inet", "ha_vip"]);
    println!("{rules}");
    assert!(rules.contains("hook prerouting priority raw"), "{rules}");
    assert!(
        rules.contains("ip daddr 192.0.2.100 meta time >"),
        "{rules}"
    );
    assert!(
        rules.contains("ip6 saddr 2001:db8::100 meta time >"),
        "{rules}"
    );
    let arp = a.exec(&["nft", "list", "table", "arp", "ha_vip"]);
    println!("{arp}");
    assert!(arp.contains("192.0.2.100"), "{arp}");
    // A second arm replaces the rules, it does not add to them.
    rt.block_on(fence.arm(
        &[IpAddr::V4(VIP4)],
        SystemTime::now() + Duration::from_secs(60),
    ))
    .unwrap();
    let rules = a.exec(&["nft", "list", "table", "inet", "ha_vip"]);
    assert_eq!(rules.matches("meta time").count(), 2, "{rules}");
    assert!(!rules.contains("2001:db8::100"), "{rules}");

    rt.block_on(fence.clear()).unwrap();
    assert_eq!(tables(a), foreign);
    rt.block_on(fence.clear()).expect("clear twice is Ok");
    assert_eq!(tables(a), foreign);
    assert!(
        a.exec(&["nft", "list", "chain", "inet", "other", "c"])
            .contains("hook input"),
        "the foreign chain survives"
    );
}

/// A transaction the kernel refuses leaves the previous rules in force:
/// another process owns (`flags owner`) the `arp` table, so the arm fails
/// at its `arp` messages, after its `inet` messages were accepted one by
/// one; they are undone with it.
#[test]
fn a_refused_arm_keeps_the_previous_rules() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let h = hosts("pf");
    let a = &h.a;
    let fence = open_fence(&h);
    let rt = runtime();
    let vips = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];
    rt.block_on(fence.arm(&vips, SystemTime::now() + Duration::from_secs(60)))
        .unwrap();
    let before = a.exec(&["nft", "list", "table", "inet", "ha_vip"]);

    a.exec(&["nft", "delete", "table", "arp", "ha_vip"]);
    // An owner table lives as long as the nft process that made it.
    let mut owner = Command::new("ip")
        .args(["netns", "exec", a.name(), "nft", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = owner.stdin.take().unwrap();
    writeln!(stdin, "add table arp ha_vip {{ flags owner; }}").unwrap();
    stdin.flush().unwrap();
    let start = std::time::Instant::now();
    while !tables(a).contains(&"table arp ha_vip".to_owned()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nft -i made no table"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let err = rt
        .block_on(fence.arm(&vips, SystemTime::now() + Duration::from_secs(3600)))
        .expect_err("the arp table is another process's");
    println!("{err}");
    let msg = err.to_string();
    assert!(msg.contains("arp ha_vip"), "{msg}");
    assert!(msg.contains("Operation not permitted"), "{msg}");
    assert_eq!(
        a.exec(&["nft", "list", "table", "inet", "ha_vip"]),
        before,
        "the refused arm changed the inet table"
    );

    drop(stdin);
    owner.wait().unwrap();
    rt.block_on(fence.clear()).unwrap();
    assert!(
        !tables(a).iter().any(|t| t.ends_with(" ha_vip")),
        "{:?}",
        tables(a)
    );
}

/// A transaction is one datagram of about 2 KB per VIP: 200 VIPs need
/// twice the kernel's default send buffer.
#[test]
fn two_hundred_vips_fit_one_arm() {
    let h = hosts("pm");
    let fence = open_fence(&h);
    let rt = runtime();
    let vips: Vec<IpAddr> = (0..100u16)
        .flat_map(|i| {
            [
                IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
                IpAddr::from([0x2001, 0xdb8, 0xff, 0, 0, 0, 0, i]),
            ]
        })
        .collect();
    rt.block_on(fence.arm(&vips, SystemTime::now() + Duration::from_secs(60)))
        .unwrap();
    let inet = h.a.exec(&["nft", "list", "table", "inet", "ha_vip"]);
    let arp = h.a.exec(&["nft", "list", "table", "arp", "ha_vip"]);
    // Per IPv4 VIP 2 inet + 2 arp rules, per IPv6 VIP 4 inet rules.
    assert_eq!(inet.matches("meta time").count(), 600);
    assert_eq!(arp.matches("meta time").count(), 200);
    rt.block_on(fence.clear()).unwrap();
}
