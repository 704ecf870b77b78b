//! Address conflicts with the real daemon against the real kube-apiserver
//! (VirtualIP CRD installed, so Events are written): node 1 runs
//! `ha-vip run`, node 2's namespace plays a rogue host.
//!
//! 1. The rogue has the VIP when the daemon starts: the VIP is not added,
//!    the log and `ha_vip_address_conflicts_total` say why, an
//!    AddressConflict Event names the rogue's MAC. The rogue drops the VIP:
//!    the daemon adds it after its back-off.
//! 2. While the daemon holds the VIP, the rogue announces it: ERROR,
//!    metric, and the holder keeps serving.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::lab::netns;
use common::lab::node::FAST_HEALTH;
use common::lab::ns_exec;
use common::lab::testbed::Testbed;
use ha_vip::announce::{Announcer, RawAnnouncer, Schedule};
use ha_vip::cluster::events::EVENT_NAMESPACE;
use ha_vip::config::Vip;
use ha_vip::kube::Operation;
use serde_json::Value;

fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {bound:?}");
}

fn scrape(ns: &str) -> String {
    netns::run_in(ns, || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:9405") else {
            return String::new();
        };
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
}

fn conflicts(body: &str, vip: &str) -> f64 {
    let series = format!("ha_vip_address_conflicts_total{{vip=\"{vip}/32\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

fn mac(ns: &str) -> String {
    let out = ns_exec(ns, &["cat", "/sys/class/net/eth0/address"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn conflict_events(api: &apiserver::ApiServer, object: &str) -> Vec<(u64, String)> {
    let list: Value = api
        .admin()
        .get(
            &Operation {
                verb: "list",
                resource: "events",
                namespace: None,
                name: None,
            },
            &format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events"),
        )
        .await
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == object && e["reason"] == "AddressConflict")
        .map(|e| {
            assert_eq!(e["type"], "Warning");
            (
                e["count"].as_u64().unwrap_or(0),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_a_rogue_host_with_the_vip_keeps_it_from_being_added_until_it_leaves() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    api.apply(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging/kubernetes/virtualip-crd.yaml"),
    )
    .await;
    let bed = Testbed::new(&api, 2, "conflict");
    let lab = &bed.lab;
    let vip = lab.vip().to_string();
    let (ns, rogue_ns) = (lab.nodes[0].clone(), lab.nodes[1].clone());
    let rogue_mac = mac(&rogue_ns);
    ns_exec(
        &rogue_ns,
        &["ip", "addr", "add", &format!("{vip}/32"), "dev", "eth0"],
    );

    let mut node = bed.node(0, "n1", FAST_HEALTH);
    node.start();
    // The daemon takes the Lease (nobody else competes), probes, finds the
    // rogue, and does not add the VIP.
    wait_for("a conflict in the log", Duration::from_secs(30), || {
        node.log_text().contains("not adding it here")
    });
    let log = node.log_text();
    assert!(
        log.contains(&rogue_mac),
        "the log names the rogue's MAC:\n{log}"
    );
    assert!(log.contains("answers for VIP"), "{log}");
    assert!(!lab.has_vip(0), "VIP added although another host answers");
    let body = scrape(&ns);
    assert!(conflicts(&body, &vip) >= 1.0, "{body}");
    // Still not added while the rogue stays (the back-off retries, each
    // probe finds it again).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(7) {
        assert!(!lab.has_vip(0), "VIP added while the rogue answers");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = scrape(&ns);
    assert!(
        conflicts(&body, &vip) >= 2.0,
        "probed again after the back-off:\n{body}"
    );
    // One Event (rate-limited: one report per VIP and MAC per minute).
    let object = bed.access.lease.clone();
    let mut events = Vec::new();
    for _ in 0..50 {
        events = conflict_events(&api, &object).await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].1.contains(&rogue_mac), "{events:?}");
    assert!(events[0].1.contains(&vip), "{events:?}");

    // The rogue leaves: the VIP comes up after the back-off (5 s).
    let gone = Instant::now();
    ns_exec(
        &rogue_ns,
        &["ip", "addr", "del", &format!("{vip}/32"), "dev", "eth0"],
    );
    let took = wait_for(
        "the VIP after the rogue left",
        Duration::from_secs(20),
        || lab.has_vip(0),
    );
    eprintln!(
        "VIP added {took:?} after the rogue left ({:?})",
        gone.elapsed()
    );
    assert!(
        node.log_text()
            .contains("no other host answers for the VIPs any more"),
        "{}",
        node.log_text()
    );

    // While holding: the rogue announces the VIP. The holder shouts and
    // keeps the VIP.
    let before = conflicts(&scrape(&ns), &vip);
    let events_before = conflict_events(&api, &object).await[0].0;
    let v: Vip = Vip {
        addr: IpAddr::V4(lab.vip()),
        prefix_len: 32,
    };
    netns::run_in(&rogue_ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = RawAnnouncer::new(
                "eth0",
                Schedule {
                    count: 3,
                    spacing: Duration::from_millis(20),
                    second_burst_delay: Duration::from_secs(60),
                    refresh_interval: None,
                },
            )
            .unwrap();
            a.fence(v, tokio::time::Instant::now() + Duration::from_secs(30));
            a.start(v);
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
    });
    wait_for(
        "the holder's conflict report",
        Duration::from_secs(5),
        || node.log_text().contains("while this node holds it"),
    );
    let after = conflicts(&scrape(&ns), &vip);
    assert_eq!(
        after - before,
        6.0,
        "3 rounds of request + reply, each counted"
    );
    assert!(lab.has_vip(0), "the holder keeps serving the VIP");
    // The same Event, its count bumped (aggregated by reason), now saying
    // the holder keeps serving.
    let mut events = Vec::new();
    for _ in 0..50 {
        events = conflict_events(&api, &object).await;
        if events.first().is_some_and(|e| e.0 > events_before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, events_before + 1, "{events:?}");
    assert!(events[0].1.contains("keeps serving"), "{events:?}");
    let log = node.log_text();
    assert!(!log.contains("panicked"), "{log}");

    // A standby started while n1 holds the VIP (a rolling upgrade) hears
    // n1 answer its start probe: expected, so its planned handover does
    // not probe and is as fast as without conflict detection.
    let mut standby = bed.node(1, "n2", FAST_HEALTH);
    standby.start();
    wait_for("the standby's start probe", Duration::from_secs(10), || {
        standby
            .log_text()
            .contains("at start: expected if another node holds the lease")
    });
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    node.signal(nix::sys::signal::Signal::SIGTERM);
    let took = wait_for("the planned handover", Duration::from_secs(10), || {
        lab.has_vip(1)
    });
    eprintln!("planned handover to the restarted standby: VIP there {took:?} after SIGTERM");
    let log = standby.log_text();
    assert!(
        !log.contains("probed the VIPs before adding them"),
        "a planned handover probed:\n{log}"
    );
    assert!(!log.contains("address conflict"), "{log}");
    let _ = t;
    drop(standby);
    drop(node);
}
