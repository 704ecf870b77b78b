//! The newcomer's demo (`make demo`, as root): three control-plane nodes in
//! network namespaces, the real kube-apiserver, ha-vip on every node; shows
//! who holds the VIP, stops the leader and shows the VIP move with the
//! outage a client saw, then cleans everything up.

#[path = "../tests/common/apiserver.rs"]
mod apiserver;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::lab::cluster::{Cluster, Scenario};

fn main() {
    println!(
        "== starting etcd + kube-apiserver, 3 node namespaces and ha-vip on each (about 10 s)"
    );
    let Some(mut cluster) = Cluster::start(3) else {
        eprintln!("the kube-apiserver harness was skipped (HAVIP_SKIP_APISERVER=1)");
        std::process::exit(1);
    };
    let vip = cluster.lab.vip();
    let Some(leader) = cluster.wait_holder(Duration::from_secs(40), Duration::from_secs(1)) else {
        eprintln!("no node took the VIP; logs:\n{}", cluster.logs());
        std::process::exit(1);
    };
    println!(
        "== {} holds the VIP {vip} (addresses seen by ip(8)):",
        cluster.nodes[leader].name
    );
    println!("{}", cluster.addresses());
    println!(
        "== stopping {} with SIGTERM (what `systemctl stop ha-vip` does); a client connects to {vip}:6443 every 20 ms",
        cluster.nodes[leader].name
    );
    let outcome = match cluster.run(Scenario::Planned) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("the handover failed: {e}\nlogs:\n{}", cluster.logs());
            std::process::exit(1);
        }
    };
    let new = cluster
        .holder()
        .map_or("nobody".to_string(), |h| cluster.nodes[h].name.clone());
    println!("== the VIP moved to {new}:");
    println!("{}", cluster.addresses());
    println!(
        "== client-visible outage {} ms, time two nodes held the VIP {} ms; {} restarted as a standby",
        outcome.outage.as_millis(),
        outcome.overlap.as_millis(),
        cluster.nodes[leader].name
    );
    let log = cluster.nodes[leader].log_text();
    println!(
        "== what {} logged (journalctl -u ha-vip on a real node):",
        cluster.nodes[leader].name
    );
    for line in log
        .lines()
        .filter(|l| l.contains("transition") || l.contains("shutting down"))
    {
        println!("  {line}");
    }
    println!("== cleaning up");
}
