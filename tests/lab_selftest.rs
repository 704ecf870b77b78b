//! The lab's own instruments, checked against the kernel before any
//! failover scenario relies on them.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::lab::{self, Lab, forward::Forwarder, meter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_see_what_ip_does() {
    let lab = Lab::new(2);
    let vip = IpAddr::V4(lab.vip());
    // A plain TCP echo target on the host's loopback stands in for the API server.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = target.accept().await else {
                return;
            };
            drop(s);
        }
    });
    let fwd: Vec<Forwarder> = lab
        .nodes
        .iter()
        .map(|ns| Forwarder::start(ns, SocketAddr::from(([0, 0, 0, 0], 6443)), target_addr))
        .collect();

    let holders = meter::HolderMeter::start(&lab.nodes, vip);
    let client = meter::ClientMeter::start(&lab.client, vip, 6443);
    let vip_cidr = format!("{}/32", lab.vip());
    tokio::time::sleep(Duration::from_millis(200)).await;
    lab::ip(&["-n", &lab.nodes[0], "addr", "add", &vip_cidr, "dev", "eth0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(lab.has_vip(0));
    let gap_start = Instant::now();
    lab::ip(&["-n", &lab.nodes[0], "addr", "del", &vip_cidr, "dev", "eth0"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab::ip(&["-n", &lab.nodes[1], "addr", "add", &vip_cidr, "dev", "eth0"]);
    // Make the client forget the old MAC (ha-vip's announcement does this in the real scenarios).
    lab::ip(&["-n", &lab.client, "neigh", "flush", "dev", "eth0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Deliberate overlap of ~300 ms.
    lab::ip(&["-n", &lab.nodes[0], "addr", "add", &vip_cidr, "dev", "eth0"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab::ip(&["-n", &lab.nodes[0], "addr", "del", &vip_cidr, "dev", "eth0"]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let samples = holders.finish();
    let probes = client.finish();
    let overlap = meter::overlap(&samples);
    assert!(
        overlap >= Duration::from_millis(250) && overlap <= Duration::from_millis(450),
        "overlap {overlap:?}"
    );
    assert_eq!(meter::holders_at_end(&samples), vec![1]);
    assert!(
        probes.iter().filter(|p| p.1).count() > 10,
        "client never reached the VIP"
    );
    let outage = meter::longest_outage(&probes, gap_start);
    assert!(outage >= Duration::from_millis(250), "outage {outage:?}");
    drop(fwd);
}

/// The answering meter against the kernel: who answers ARP for the VIP,
/// including an address that stays but no longer answers (the address
/// meter's blind spot once a fence sits in the data path).
#[test]
fn answering_meter_sees_who_answers() {
    let lab = Lab::new(2);
    let vip = lab.vip();
    let vip_cidr = format!("{vip}/32");
    let macs = [
        meter::mac_of(&lab.nodes[0], "eth0"),
        meter::mac_of(&lab.nodes[1], "eth0"),
    ];
    let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(vip));
    let answering = meter::AnsweringMeter::start(&lab.client, "eth0", vip, lab.meter_addr());
    pause(200);
    lab::ip(&["-n", &lab.nodes[0], "addr", "add", &vip_cidr, "dev", "eth0"]);
    pause(300);
    let gap_start = Instant::now();
    lab::ip(&["-n", &lab.nodes[0], "addr", "del", &vip_cidr, "dev", "eth0"]);
    pause(300);
    lab::ip(&["-n", &lab.nodes[1], "addr", "add", &vip_cidr, "dev", "eth0"]);
    pause(300);
    // Both answer for ~300 ms.
    lab::ip(&["-n", &lab.nodes[0], "addr", "add", &vip_cidr, "dev", "eth0"]);
    pause(300);
    // Node 0 keeps the address ~300 ms more but stops answering ARP for it.
    let out = lab::ns_exec(
        &lab.nodes[0],
        &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=8"],
    );
    assert!(out.status.success(), "sysctl arp_ignore: {out:?}");
    pause(300);
    lab::ip(&["-n", &lab.nodes[0], "addr", "del", &vip_cidr, "dev", "eth0"]);
    pause(200);

    let address_overlap = meter::overlap(&holders.finish());
    let answers = answering.finish().expect("answering meter");
    eprintln!(
        "answering meter: {} requests, {} answers, overlap {:?} (address meter {:?}), outage {:?}",
        answers.requests(),
        answers.answers(),
        answers.overlap(),
        address_overlap,
        answers.outage(gap_start)
    );
    // 10 ms requests over ~1.9 s, each answered while someone holds.
    assert!(answers.requests() > 100, "{} requests", answers.requests());
    assert!(answers.answers() > 80, "{} answers", answers.answers());
    assert_eq!(answers.answerers(), macs.to_vec(), "node 0 first, then 1");
    assert_eq!(answers.last_answerer(), Some(macs[1]));
    let overlap = answers.overlap();
    assert!(
        overlap >= Duration::from_millis(250) && overlap <= Duration::from_millis(400),
        "answering overlap {overlap:?}"
    );
    assert!(
        address_overlap >= Duration::from_millis(550)
            && address_overlap <= Duration::from_millis(750),
        "address overlap {address_overlap:?} (the silent address counts there)"
    );
    let outage = answers.outage(gap_start);
    assert!(
        outage >= Duration::from_millis(250) && outage <= Duration::from_millis(450),
        "answer outage {outage:?}"
    );
}

#[test]
fn answering_meter_frames() {
    use common::lab::arp::{Frame, parse, request};
    use std::net::Ipv4Addr;
    let me = meter::METER_MAC;
    let ip = Ipv4Addr::new(10, 0, 0, 254);
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let f = request(me, ip, vip, 7);
    assert_eq!(parse(&f, me, vip), Frame::Request(7));
    // Another host's request, or one without the marker, is not ours.
    assert_eq!(parse(&f, [2, 0, 0, 0, 0, 9], vip), Frame::Other);
    assert_eq!(parse(&f[..42], me, vip), Frame::Other);
    // A reply for the VIP to us is an answer from its sender MAC ...
    let node = [2, 1, 2, 3, 4, 5];
    let mut reply = request(node, vip, ip, 0);
    reply[20..22].copy_from_slice(&2u16.to_be_bytes());
    reply[32..38].copy_from_slice(&me);
    assert_eq!(parse(&reply, me, vip), Frame::Reply(node));
    // ... a gratuitous reply (target = the announcer itself) is not.
    reply[32..38].copy_from_slice(&node);
    assert_eq!(parse(&reply, me, vip), Frame::Other);
}

/// A benchmark profile merges key by key into a node's configuration, and
/// the lifetime profile runs with this ha-vip (with `fence.mode` once the
/// precise fence exists, without it before).
#[test]
fn profiles_merge_and_the_lifetime_profile_is_accepted() {
    use common::lab::profile::{self, LIFETIME, PRECISE};
    let base = "node_name: n1\nlease:\n  name: lab-x\n  duration: 4s\nvips: [10.0.0.1]\n";
    let merged = profile::merge(base, PRECISE.fragment).expect("merge");
    let value: serde_json::Value = serde_saphyr::from_str(&merged).expect("merged YAML");
    assert_eq!(value["lease"]["name"], "lab-x", "{merged}");
    assert_eq!(value["lease"]["duration"], "2s", "{merged}");
    assert_eq!(value["lease"]["renew_deadline"], "1s", "{merged}");
    assert_eq!(value["fence"]["mode"], "precise", "{merged}");
    assert_eq!(value["node_name"], "n1", "{merged}");
    assert_eq!(
        profile::merge(base, "").unwrap(),
        base,
        "no profile, no change"
    );
    let (fragment, note) = LIFETIME.resolve().expect("the lifetime profile runs");
    eprintln!("lifetime profile: {fragment:?} {note:?}");
    // The precise profile is either accepted or rejected by check-config
    // with its own words (until the precise fence is merged).
    if let Err(rejected) = PRECISE.resolve() {
        assert!(!rejected.is_empty());
        eprintln!("precise profile rejected: {rejected}");
    }
}
