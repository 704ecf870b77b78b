//! End to end: a daemon restarted within the stability buffer resumes the
//! stable health it recorded in `run_dir`, so it may campaign at once. The
//! real `ha-vip run` in node namespaces against the real kube-apiserver.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::lab::meter;
use common::lab::node::{Node, binary};
use common::lab::testbed::Testbed;
use nix::sys::signal::Signal;

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

/// The stable health in the node's status file (`ha-vip status --json`).
fn healthy(n: &Node) -> bool {
    let out = std::process::Command::new(binary())
        .args(["status", "--json", "--config"])
        .arg(&n.config)
        .output()
        .expect("ha-vip status");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map(|s| s["healthy"] == true)
        .unwrap_or(false)
}

fn holder_of(bed: &Testbed) -> Option<usize> {
    (0..bed.lab.nodes.len()).find(|&i| bed.lab.has_vip(i))
}

fn restart(n: &mut Node) {
    n.signal(Signal::SIGTERM);
    assert_eq!(n.wait(Duration::from_secs(10)), Some(0), "{}", n.log_text());
    n.start();
}

/// Stability buffer 10 s: without the record, a restarted standby could
/// take over a stopped holder only 10 s after its own restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_a_restarted_standby_takes_over_without_waiting_the_buffer() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 2, "resume");
    let lab = &bed.lab;
    let mut nodes = bed.nodes(
        "r",
        "health:\n  interval: 500ms\n  timeout: 400ms\n  stability_buffer: 10s\n",
    );
    for n in &mut nodes {
        n.start();
    }
    wait_for("a VIP holder", Duration::from_secs(60), || {
        holder_of(&bed).is_some()
    });
    let first = holder_of(&bed).expect("holder");
    let other = 1 - first;
    wait_for("the standby healthy", Duration::from_secs(20), || {
        healthy(&nodes[other])
    });
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));
    let answering = meter::AnsweringMeter::on(lab);

    let restarted = Instant::now();
    restart(&mut nodes[other]);
    // Up and probing again, well within its 10 s buffer.
    std::thread::sleep(Duration::from_secs(2));
    nodes[first].signal(Signal::SIGTERM);
    let took = wait_for(
        "the restarted standby takes over",
        Duration::from_secs(5),
        || lab.has_vip(other),
    );
    eprintln!(
        "restarted standby (buffer 10 s) holds the VIP {took:?} after the holder's SIGTERM, {:?} after its own restart",
        restarted.elapsed()
    );
    assert_eq!(nodes[first].wait(Duration::from_secs(10)), Some(0));
    let log = nodes[other].log_text();
    assert!(log.contains("resuming healthy"), "{log}");
    let samples = holders.finish();
    assert_eq!(meter::overlap(&samples), Duration::ZERO);
    answering.finish_one_answerer("restarted standby takes over");
}

/// The measurement behind docs/operations.md "Rolling upgrades": three
/// nodes with the default health settings (probe every 2 s, buffer 5 s),
/// every daemon restarted one after another 1 s apart, the holder last, as
/// a package upgrade of the whole fleet does; the client-visible outage at
/// the VIP with the health record, and with it deleted before each start
/// (which is how every start behaved before the record existed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_fleet_upgrade_outage_with_and_without_the_health_record() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 3, "fleet");
    let lab = &bed.lab;
    let mut nodes = bed.nodes("f", "");
    for n in &mut nodes {
        n.start();
    }
    let mut outages = Vec::new();
    for keep_record in [true, false] {
        wait_for("a VIP holder", Duration::from_secs(60), || {
            holder_of(&bed).is_some()
        });
        wait_for("every node healthy", Duration::from_secs(30), || {
            nodes.iter().all(healthy)
        });
        let holder = holder_of(&bed).expect("holder");
        let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));
        let client = meter::ClientMeter::start(&lab.client, IpAddr::V4(lab.vip()), 6443);
        let answering = meter::AnsweringMeter::on(lab);
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        let order: Vec<usize> = (0..nodes.len())
            .filter(|&i| i != holder)
            .chain([holder])
            .collect();
        for &i in &order {
            let n = &mut nodes[i];
            n.signal(Signal::SIGTERM);
            assert_eq!(n.wait(Duration::from_secs(10)), Some(0), "{}", n.log_text());
            if !keep_record {
                let record = bed
                    .dir
                    .path()
                    .join(format!("run-{}", n.name))
                    .join(ha_vip::health::HEALTH_FILE);
                std::fs::remove_file(&record).expect("health record");
            }
            n.start();
            std::thread::sleep(Duration::from_secs(1));
        }
        wait_for("the VIP back", Duration::from_secs(30), || {
            holder_of(&bed).is_some()
        });
        std::thread::sleep(Duration::from_secs(1));
        let probes = client.finish();
        let outage = meter::longest_outage(&probes, t0);
        let overlap = meter::overlap(&holders.finish());
        eprintln!(
            "fleet upgrade (3 nodes, restarts 1 s apart, holder last), health record {}: longest client outage {outage:?}, overlap {overlap:?}",
            if keep_record { "kept" } else { "deleted" }
        );
        assert_eq!(overlap, Duration::ZERO);
        answering.finish_one_answerer("fleet upgrade");
        outages.push(outage);
    }
    assert!(
        outages[0] < Duration::from_millis(1500),
        "with the record: {:?}",
        outages[0]
    );
    assert!(
        outages[1] > outages[0] + Duration::from_secs(1),
        "without the record the upgrade should cost seconds: {outages:?}"
    );
}
