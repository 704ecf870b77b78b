//! End to end: the holder's VIP interface loses its carrier while its API
//! server is still reached over another link. Two links per node namespace:
//! `eth0` on the VIP network (the lab's bridge, with the client) and `eth1`
//! on an API network of its own, where the kube-apiserver answers; the
//! health probe goes to the node's local API server on loopback. The holder
//! must drop the VIP and release at once so the standby takes over in well
//! under a lease duration, never overlapping; a carrier that comes back makes
//! the node eligible again after the stability buffer.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::forward::Forwarder;
use common::lab::meter;
use common::lab::node::Node;
use common::lab::testbed::Testbed;
use common::lab::{Lab, ip};

fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{what}: not within {bound:?}");
}

/// The API network: a namespace with a bridge at 10.78.K.1/24 where the
/// kube-apiserver is forwarded, and an `eth1` in every node namespace on it.
struct ApiNet {
    ns: String,
    addr: Ipv4Addr,
    _forwarder: Forwarder,
}

impl ApiNet {
    fn new(lab: &Lab, target: SocketAddr) -> Self {
        let ns = format!("{}a", lab.prefix);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let addr = Ipv4Addr::new(10, 78, lab.k, 1);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "add", "br1", "type", "bridge"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "br1",
        ]);
        ip(&["-n", &ns, "link", "set", "br1", "up"]);
        for (i, node) in lab.nodes.iter().enumerate() {
            let port = format!("q{i}");
            let link = [
                "-n", &ns, "link", "add", &port, "type", "veth", "peer", "name", "eth1", "netns",
                node,
            ];
            ip(&link);
            ip(&["-n", &ns, "link", "set", &port, "master", "br1", "up"]);
            let a = format!("10.78.{}.{}/24", lab.k, 11 + i);
            ip(&["-n", node, "addr", "add", &a, "dev", "eth1"]);
            ip(&["-n", node, "link", "set", "eth1", "up"]);
        }
        let forwarder = Forwarder::start(&ns, SocketAddr::from((addr, 6443)), target);
        ApiNet {
            ns,
            addr,
            _forwarder: forwarder,
        }
    }
}

impl Drop for ApiNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Node `i`'s daemon, talking to the Lease over the API network.
fn node(bed: &Testbed, api: &ApiNet, i: usize) -> Node {
    let name = format!("c{}", i + 1);
    let dir = bed.dir.path();
    let run_dir = dir.join(format!("run-{name}"));
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let config = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "node_name: {name}\n\
         interface: eth0\n\
         vips: [{vip}]\n\
         run_dir: {run}\n\
         lease:\n  name: {lease}\n\
         k8s:\n  api_server: https://{api}:6443\n  tls_server_name: localhost\n  token_file: {token}\n  ca_cert: {ca}\n\
         health:\n  interval: 500ms\n  timeout: 400ms\n  stability_buffer: 1s\n\
         announce:\n  spacing: 50ms\n  second_burst_delay: 1s\n",
        vip = bed.lab.vip(),
        run = run_dir.display(),
        lease = bed.access.lease,
        api = api.addr,
        token = bed.access.token_file.display(),
        ca = bed.access.ca.display(),
    );
    std::fs::write(&config, yaml).expect("config");
    Node::from_config(&bed.lab.nodes[i], &name, &config, dir)
}

fn log_of(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("---- {}:\n{}", n.name, n.log_text()))
        .collect()
}

/// Cuts `holder`'s VIP carrier; returns (VIP gone from it, VIP on `other`).
fn cut_carrier(lab: &Lab, nodes: &[Node], holder: usize, other: usize) -> (Duration, Duration) {
    let t = Instant::now();
    // The switch side of the holder's eth0: eth0 stays up, without carrier.
    lab.set_link(holder, false);
    let bound = Duration::from_secs(3);
    let mut gone = None;
    let mut taken = None;
    while t.elapsed() < bound && (gone.is_none() || taken.is_none()) {
        if gone.is_none() && !lab.has_vip(holder) {
            gone = Some(t.elapsed());
        }
        if taken.is_none() && lab.has_vip(other) {
            taken = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (Some(gone), Some(taken)) = (gone, taken) else {
        panic!(
            "after the holder's carrier loss within {bound:?}: VIP gone from it {gone:?}, on the standby {taken:?}\n{}",
            log_of(nodes)
        );
    };
    (gone, taken)
}

/// The STATUS= lines received on `sock` since the last call.
fn statuses(sock: &UnixDatagram) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        out.extend(
            msg.lines()
                .filter(|l| l.starts_with("STATUS="))
                .map(str::to_owned),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_carrier_loss_on_the_vip_link_hands_over_at_once() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 2, "carrier");
    let lab = &bed.lab;
    let target: SocketAddr = api
        .server()
        .trim_start_matches("https://")
        .parse()
        .expect("server addr");
    let apinet = ApiNet::new(lab, target);
    let mut nodes: Vec<Node> = (0..2).map(|i| node(&bed, &apinet, i)).collect();
    // systemd's side of sd_notify, one socket per node.
    let notify: Vec<UnixDatagram> = nodes
        .iter_mut()
        .map(|n| {
            let path = bed.dir.path().join(format!("notify-{}.sock", n.name));
            let sock = UnixDatagram::bind(&path).expect("notify socket");
            sock.set_nonblocking(true).expect("nonblocking");
            n.env
                .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
            sock
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    wait_for("a VIP holder", Duration::from_secs(40), || {
        lab.has_vip(0) || lab.has_vip(1)
    });
    let first = if lab.has_vip(0) { 0 } else { 1 };
    let other = 1 - first;
    // Let the standby settle (healthy, campaigning) and the ARP caches fill.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        lab.has_vip(first) && !lab.has_vip(other),
        "{}",
        log_of(&nodes)
    );

    let vip = IpAddr::V4(lab.vip());
    let holders = meter::HolderMeter::start(&lab.nodes, vip);
    let client = meter::ClientMeter::start(&lab.client, vip, 6443);
    let answering = meter::AnsweringMeter::on(lab);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let (gone, taken) = cut_carrier(lab, &nodes, first, other);
    eprintln!(
        "carrier loss on {}: VIP gone from it after {gone:?}, on the standby after {taken:?}",
        nodes[first].name
    );
    // Without the carrier check nothing moves at all; a takeover by lease
    // expiry would take the lease duration (4 s).
    assert!(taken < Duration::from_secs(2), "handover took {taken:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let probes = client.finish();
    let outage = meter::longest_outage(&probes, t0);
    eprintln!("client-visible outage: {outage:?}");
    assert!(
        outage < Duration::from_secs(3),
        "clients lost the VIP for {outage:?}"
    );
    let log = nodes[first].log_text();
    assert!(
        log.contains("VIP interface lost carrier"),
        "{}",
        log_of(&nodes)
    );
    // `systemctl status` says why the node stands by.
    let status = statuses(&notify[first]);
    assert_eq!(
        status.last().map(String::as_str),
        Some("STATUS=no carrier on eth0: not campaigning"),
        "{status:?}"
    );

    // The carrier comes back: after the stability buffer the node may hold
    // the VIP again, which it shows by taking over when the other one's
    // carrier goes.
    lab.set_link(first, true);
    wait_for("carrier back in the log", Duration::from_secs(3), || {
        nodes[first]
            .log_text()
            .contains("VIP interface has carrier again")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !lab.has_vip(first) && lab.has_vip(other),
        "{}",
        log_of(&nodes)
    );
    let status = statuses(&notify[first]);
    assert_eq!(
        status.last(),
        Some(&format!("STATUS=standby; leader is {}", nodes[other].name)),
        "{status:?}"
    );
    let (gone2, taken2) = cut_carrier(lab, &nodes, other, first);
    eprintln!(
        "carrier loss on the second holder: gone after {gone2:?}, back on the first after {taken2:?}"
    );
    assert!(taken2 < Duration::from_secs(2), "handover took {taken2:?}");

    let samples = holders.finish();
    assert_eq!(
        meter::overlap(&samples),
        Duration::ZERO,
        "two nodes held the VIP at once\n{}",
        log_of(&nodes)
    );
    answering.finish_one_answerer(&log_of(&nodes));
    for n in &nodes {
        assert!(!n.log_text().contains("panicked"), "{}", n.log_text());
    }
}
