//! End to end: the real `ha-vip run` on two nodes (network namespaces) against
//! the real kube-apiserver. One holds the VIP and the Lease; SIGTERM moves
//! both to the other; a SIGKILLed holder loses the VIP to the kernel fence.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::lab::meter;
use common::lab::node::FAST_HEALTH;
use common::lab::testbed::Testbed;
use ha_vip::lease::{KubeLeaseStore, LeaseStore};
use nix::sys::signal::Signal;

/// Polls `cond` every 20 ms for up to `bound`; returns how long it took.
fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {bound:?}");
}

async fn holder(store: &KubeLeaseStore) -> Option<String> {
    store
        .get()
        .await
        .expect("GET lease")
        .map(|l| l.record.holder)
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_two_nodes_sigterm_hands_over_and_sigkill_is_fenced() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 2, "e2e");
    let lab = &bed.lab;
    let mut nodes = bed.nodes("n", FAST_HEALTH);
    let lease = bed.access.lease.clone();
    let store = KubeLeaseStore::new(api.admin(), "kube-system", lease);
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));
    let answering = meter::AnsweringMeter::on(lab);

    for n in &mut nodes {
        n.start();
    }
    // One node gets the VIP; the Lease names it.
    let took = wait_for("a VIP holder", Duration::from_secs(40), || {
        lab.has_vip(0) || lab.has_vip(1)
    });
    eprintln!("first VIP holder after {took:?}");
    let first = if lab.has_vip(0) { 0 } else { 1 };
    let other = 1 - first;
    assert_eq!(
        holder(&store).await.as_deref(),
        Some(nodes[first].name.as_str())
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        lab.has_vip(first) && !lab.has_vip(other),
        "exactly one holder"
    );

    // The status command reads the running daemon's status file.
    let status = std::process::Command::new(common::lab::node::binary())
        .args(["status", "--json", "--config"])
        .arg(&nodes[first].config)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(status["role"], "leader", "{status}");
    assert_eq!(status["vips"][0]["present"], true, "{status}");

    // SIGTERM: graceful handover to the other node.
    let t = Instant::now();
    nodes[first].signal(Signal::SIGTERM);
    let code = nodes[first].wait(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "SIGTERM exit; log:\n{}",
        nodes[first].log_text()
    );
    assert!(!lab.has_vip(first), "VIP left behind after SIGTERM");
    wait_for("handover after SIGTERM", Duration::from_secs(10), || {
        lab.has_vip(other)
    });
    eprintln!(
        "SIGTERM handover: VIP on the other node {:?} after the signal",
        t.elapsed()
    );
    assert_eq!(
        holder(&store).await.as_deref(),
        Some(nodes[other].name.as_str())
    );

    // The stopped node comes back as a standby.
    nodes[first].start();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!lab.has_vip(first) && lab.has_vip(other));

    // SIGKILL of the holder: nobody removes its VIP but the kernel fence.
    let t = Instant::now();
    nodes[other].signal(Signal::SIGKILL);
    nodes[other].wait(Duration::from_secs(5));
    let gone = wait_for(
        "kernel fence removes the killed holder's VIP",
        Duration::from_secs(6),
        || !lab.has_vip(other),
    );
    eprintln!("SIGKILL: VIP gone from the killed node after {gone:?} (no ExecStopPost)");
    wait_for("takeover after SIGKILL", Duration::from_secs(20), || {
        lab.has_vip(first)
    });
    eprintln!(
        "SIGKILL: VIP on the standby {:?} after the kill",
        t.elapsed()
    );
    assert_eq!(
        holder(&store).await.as_deref(),
        Some(nodes[first].name.as_str())
    );

    let samples = holders.finish();
    let overlap = meter::overlap(&samples);
    assert_eq!(overlap, Duration::ZERO, "two nodes held the VIP at once");
    answering.finish_one_answerer("SIGTERM handover, SIGKILL fence");
    for n in &nodes {
        assert!(!n.log_text().contains("panicked"), "{}", n.log_text());
    }
}

/// The holder's interface is renamed under it, so it can neither refresh
/// nor remove its VIP by name (the address stays on the renamed link). It
/// must give up the lease, but must not release it while its VIP may still
/// be up: the standby takes over only once the kernel fence has removed it
/// (`fence.mode: lifetime`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_a_vip_that_cannot_be_removed_blocks_the_release() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 2, "stuck");
    let lab = &bed.lab;
    // The lifetime fence's path: with the precise fence the VIP would be
    // fenced out and the Lease released at once (e2e_fence.rs covers that).
    let mut nodes = bed.nodes("n", &format!("{FAST_HEALTH}fence:\n  mode: lifetime\n"));
    for n in &mut nodes {
        n.start();
    }
    wait_for("a VIP holder", Duration::from_secs(40), || {
        lab.has_vip(0) || lab.has_vip(1)
    });
    let holder_i = if lab.has_vip(0) { 0 } else { 1 };
    let other = 1 - holder_i;
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));
    let answering = meter::AnsweringMeter::on(lab);
    let ns = &lab.nodes[holder_i];
    // Frozen while the link goes down and is renamed: awake, it would react
    // to the carrier loss and remove the VIP before the rename.
    nodes[holder_i].signal(Signal::SIGSTOP);
    for args in [
        ["link", "set", "eth0", "down"],
        ["link", "set", "eth0", "name"],
        ["link", "set", "eth9", "up"],
    ] {
        let mut cmd = vec!["-n", ns.as_str()];
        cmd.extend_from_slice(&args);
        if args[3] == "name" {
            cmd.push("eth9");
        }
        common::lab::ip(&cmd);
    }
    nodes[holder_i].signal(Signal::SIGCONT);
    let t = Instant::now();
    wait_for("takeover by the standby", Duration::from_secs(20), || {
        lab.has_vip(other)
    });
    eprintln!(
        "standby holds the VIP {:?} after the holder lost its interface",
        t.elapsed()
    );
    let samples = holders.finish();
    assert_eq!(
        meter::overlap(&samples),
        Duration::ZERO,
        "{}",
        nodes[holder_i].log_text()
    );
    answering.finish_one_answerer(&nodes[holder_i].log_text());
    let log = nodes[holder_i].log_text();
    assert!(
        log.contains("not releasing the lease while our VIPs may still be on the interface"),
        "{log}"
    );
}
