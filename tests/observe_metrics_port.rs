//! Any local user can bind the metrics port before ha-vip starts. The real
//! `ha-vip run` in a node namespace, against the real kube-apiserver: with
//! 127.0.0.1:9405 taken it still takes the Lease and the VIP, says so in the
//! log and in `ha-vip status`, and serves metrics once the port is free.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::lab::netns;
use common::lab::node::{FAST_HEALTH, Node, binary};
use common::lab::testbed::Testbed;

/// Polls `cond` every 50 ms for up to `bound`; panics with `what` and the log.
fn wait_for(what: &str, bound: Duration, node: &Node, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {bound:?}\n{}", node.log_text());
}

/// `GET /metrics` on 127.0.0.1:9405 in `ns`; `None` when nothing answers.
fn scrape(ns: &str) -> Option<String> {
    netns::run_in(ns, || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9405").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        Some(resp)
    })
}

fn status(node: &Node, json: bool) -> String {
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["status", "--config"]).arg(&node.config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("ha-vip status");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_a_taken_metrics_port_never_keeps_the_vip_down() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 1, "mport");
    let lab = &bed.lab;
    let mut node = bed.node(0, "n1", FAST_HEALTH);
    // Another local process holds the default metrics port before ha-vip starts.
    let squatter = netns::run_in(&lab.nodes[0], || {
        std::net::TcpListener::bind("127.0.0.1:9405").expect("bind the metrics port first")
    });
    node.start();

    wait_for(
        "the VIP with the metrics port taken",
        Duration::from_secs(30),
        &node,
        || lab.has_vip(0),
    );
    assert!(node.running(), "{}", node.log_text());
    let log = node.log_text();
    assert!(
        log.contains("WARN")
            && log.contains("metrics endpoint not serving")
            && log.contains("address in use")
            && log.contains("metrics.listen"),
        "the log says the endpoint is down and what to do:\n{log}"
    );

    // `ha-vip status` shows it, human and JSON.
    wait_for(
        "status shows the failure",
        Duration::from_secs(10),
        &node,
        || status(&node, false).contains("NOT serving on 127.0.0.1:9405"),
    );
    let text = status(&node, false);
    assert!(
        text.contains("leader") && text.contains("address in use"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&status(&node, true)).unwrap();
    assert_eq!(json["metrics"]["serving"], false, "{json}");
    assert_eq!(json["metrics"]["listen"], "127.0.0.1:9405", "{json}");

    // The port is freed: metrics come up within the retry period, the VIP stays.
    drop(squatter);
    let freed = Instant::now();
    let mut body = None;
    wait_for(
        "metrics after the port was freed",
        Duration::from_secs(30),
        &node,
        || {
            body = scrape(&lab.nodes[0]);
            body.is_some()
        },
    );
    eprintln!(
        "metrics served {:?} after the port was freed",
        freed.elapsed()
    );
    let body = body.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("ha_vip_is_leader 1"), "{body}");
    assert!(lab.has_vip(0), "the VIP stayed");
    wait_for(
        "status shows serving",
        Duration::from_secs(10),
        &node,
        || {
            status(&node, false).contains("serving on 127.0.0.1:9405")
                && !status(&node, false).contains("NOT serving")
        },
    );
    let json: serde_json::Value = serde_json::from_str(&status(&node, true)).unwrap();
    assert_eq!(json["metrics"]["serving"], true, "{json}");
    assert!(
        node.log_text().contains("metrics endpoint is serving now"),
        "{}",
        node.log_text()
    );
}
