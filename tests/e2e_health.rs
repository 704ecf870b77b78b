//! End to end: the real `ha-vip run` on two nodes (network namespaces),
//! where node 1's local API server is a kube-apiserver of its own (a second
//! one on the harness's etcd, reached through a forwarder on the node's
//! 127.0.0.1:6444) and node 2's is the harness's main one.
//!
//! * SIGTERM of node 1's kube-apiserver (its graceful shutdown: /readyz
//!   fails its `shutdown` check while it still serves) is decisive: the
//!   holder removes the VIP and releases at once, not after the stability
//!   buffer (10 s here).
//! * SIGKILL of it (its port closes): two refused probes are decisive, and
//!   the release goes through the other API server (`k8s.peers`), so the
//!   standby does not wait out the lease duration.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::lab::forward::Forwarder;
use common::lab::meter;
use common::lab::node::{FAST_HEALTH, Node};
use common::lab::testbed::Testbed;
use ha_vip::lease::{KubeLeaseStore, LeaseStore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Polls `cond` every 10 ms for up to `bound`; returns how long it took.
fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// The port node 1's own kube-apiserver is forwarded to, in its namespace.
const LOCAL_PORT: u16 = 6444;

/// Node 1 ("h1") with its own API server on 127.0.0.1:6444, the default
/// probe pace (2 s, 500 ms while holding), ambiguous failures buffered for
/// 10 s, and the other API server (the harness's,
/// forwarded on 127.0.0.1:6443) as its peer.
fn node1(bed: &Testbed) -> Node {
    let node = bed.node(0, "h1", "");
    let a = &bed.access;
    let yaml = format!(
        "node_name: h1\n\
         interface: eth0\n\
         vips: [{vip}]\n\
         run_dir: {run}\n\
         lease:\n  name: {lease}\n\
         k8s:\n  api_server: https://127.0.0.1:{LOCAL_PORT}\n  token_file: {token}\n  ca_cert: {ca}\n  peers: [https://127.0.0.1:6443]\n  discover_peers: false\n\
         health:\n  endpoint: https://127.0.0.1:{LOCAL_PORT}/readyz\n  stability_buffer: 10s\n  rise: 1s\n\
         announce:\n  spacing: 50ms\n  second_burst_delay: 1s\n",
        vip = bed.lab.vip(),
        run = bed.dir.path().join("run-h1").display(),
        lease = a.lease,
        token = a.token_file.display(),
        ca = a.ca.display(),
    );
    std::fs::write(&node.config, yaml).expect("write h1 config");
    node
}

struct Setup {
    bed: Testbed,
    local_api: apiserver::PeerApiServer,
    local_fwd: Forwarder,
    nodes: Vec<Node>,
    store: KubeLeaseStore,
}

/// Starts both daemons; h1 holds the VIP, h2 is a healthy standby.
async fn setup(api: &apiserver::ApiServer, tag: &str, apiserver_args: &[&str]) -> Setup {
    let local_api = api
        .start_peer("local-h1", "127.0.0.2", apiserver_args)
        .await;
    let bed = Testbed::new(api, 2, tag);
    let port: u16 = api.var("KUBE_PORT").parse().unwrap();
    let local_fwd = Forwarder::start(
        &bed.lab.nodes[0],
        SocketAddr::from(([0, 0, 0, 0], LOCAL_PORT)),
        SocketAddr::from(([127, 0, 0, 2], port)),
    );
    let mut nodes = vec![node1(&bed), bed.node(1, "h2", FAST_HEALTH)];
    let store = KubeLeaseStore::new(api.admin(), "kube-system", bed.access.lease.clone());
    nodes[0].start();
    wait_for("h1 holds the VIP", Duration::from_secs(40), || {
        bed.lab.has_vip(0)
    });
    nodes[1].start();
    // h2 healthy (1 s buffer) and watching the Lease.
    std::thread::sleep(Duration::from_secs(3));
    assert!(bed.lab.has_vip(0) && !bed.lab.has_vip(1));
    assert_eq!(holder(&store).await.as_deref(), Some("h1"));
    Setup {
        bed,
        local_api,
        local_fwd,
        nodes,
        store,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_sigterm_of_the_local_apiserver_hands_over_at_once() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    // As kubeadm clusters are advised to run it: it keeps serving (and
    // failing /readyz on `shutdown`) for 3 s after SIGTERM.
    let s = setup(&api, "hterm", &["--shutdown-delay-duration=3s"]).await;
    let lab = &s.bed.lab;
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));

    let t0 = Instant::now();
    kill(Pid::from_raw(s.local_api.pid()), Signal::SIGTERM).unwrap();
    let removed = wait_for(
        "h1 removes the VIP after its API server's SIGTERM",
        Duration::from_secs(20),
        || !lab.has_vip(0),
    );
    wait_for("h2 takes the VIP", Duration::from_secs(20), || {
        lab.has_vip(1)
    });
    let moved = t0.elapsed();
    eprintln!(
        "SIGTERM of the holder's kube-apiserver: VIP removed after {removed:?}, on the standby after {moved:?}"
    );
    let log = s.nodes[0].log_text();
    assert!(
        removed < Duration::from_secs(2),
        "the VIP stayed {removed:?}: decisive, not the 10 s buffer; log:\n{log}"
    );
    assert!(
        moved < Duration::from_secs(3),
        "the standby took {moved:?}: the release did not happen at once; log:\n{log}"
    );
    assert!(log.contains("shutting down"), "{log}");
    assert_eq!(holder(&s.store).await.as_deref(), Some("h2"));
    let samples = holders.finish();
    assert_eq!(
        meter::overlap(&samples),
        Duration::ZERO,
        "two nodes held the VIP at once"
    );
    drop(s.local_fwd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_a_dead_local_apiserver_releases_through_another() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let s = setup(&api, "hkill", &[]).await;
    let lab = &s.bed.lab;
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));

    // It dies with all its connections; its port is closed.
    let t0 = Instant::now();
    s.local_fwd.set_down(true);
    kill(Pid::from_raw(-s.local_api.pid()), Signal::SIGKILL).unwrap();
    let removed = wait_for(
        "h1 removes the VIP after its API server died",
        Duration::from_secs(20),
        || !lab.has_vip(0),
    );
    // The Lease, read through the surviving API server.
    let t_removed = Instant::now();
    let mut freed = None;
    while t_removed.elapsed() < Duration::from_secs(5) {
        if holder(&s.store).await.as_deref() != Some("h1") {
            freed = Some(t_removed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for("h2 takes the VIP", Duration::from_secs(20), || {
        lab.has_vip(1)
    });
    let moved = t0.elapsed();
    let log = s.nodes[0].log_text();
    eprintln!(
        "SIGKILL of the holder's kube-apiserver: VIP removed after {removed:?}, Lease no longer h1's {freed:?} after that, VIP on the standby {moved:?} after the kill"
    );
    let freed = freed
        .unwrap_or_else(|| panic!("the Lease still names h1 5 s after the VIP went; log:\n{log}"));
    assert!(
        removed < Duration::from_secs(2),
        "two refusals are decisive; the VIP stayed {removed:?}; log:\n{log}"
    );
    assert!(
        freed < Duration::from_secs(1),
        "the release through the other API server took {freed:?}; log:\n{log}"
    );
    assert!(log.contains("went through another API server"), "{log}");
    assert!(moved < Duration::from_secs(3), "{moved:?}");
    let samples = holders.finish();
    assert_eq!(
        meter::overlap(&samples),
        Duration::ZERO,
        "two nodes held the VIP at once"
    );
}
