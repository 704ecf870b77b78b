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
