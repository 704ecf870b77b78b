//! The operator's controls on real daemons (one per network namespace)
//! against the real kube-apiserver with the VirtualIP CRD installed:
//! `ha-vip drain` moves the VIP with zero overlap (the lab's netlink meter)
//! and survives a daemon restart; the last healthy node is not drained
//! without --force; `undrain`; `handover --to NODE` goes to that node, and
//! not by chance: three handovers in a row each reach the named one of two
//! candidates.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use common::lab::meter::{HolderMeter, overlap};
use common::lab::node::{FAST_HEALTH, Node, binary};
use common::lab::ns_exec;
use common::lab::testbed::Testbed;
use ha_vip::cluster::VirtualIp;
use ha_vip::cluster::events::EVENT_NAMESPACE;
use ha_vip::cluster::view::fetch;
use ha_vip::kube::Operation;
use nix::sys::signal::Signal;
use serde_json::Value;

fn op(verb: &'static str, resource: &'static str) -> Operation {
    Operation {
        verb,
        resource,
        namespace: None,
        name: None,
    }
}

async fn install_crd(api: &ApiServer) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/kubernetes/virtualip-crd.yaml");
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let admin = api.admin();
    let _: Value = admin
        .post(
            &op("create", "customresourcedefinitions.apiextensions.k8s.io"),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd,
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    while admin
        .get::<Value>(
            &op("list", "virtualips"),
            "/apis/ha-vip.io/v1alpha1/virtualips",
        )
        .await
        .is_err()
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "CRD not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_object(
    api: &ApiServer,
    name: &str,
    what: &str,
    cond: impl Fn(&VirtualIp) -> bool,
) -> VirtualIp {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(40) {
        if let Some(o) = fetch(&api.admin(), name).await.unwrap() {
            if cond(&o) {
                return o;
            }
            last = Some(o);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not within 40 s; last: {last:#?}");
}

/// Reasons of the Events about `object`, by node, with their counts.
async fn events(api: &ApiServer, object: &str) -> Vec<(String, String, u64)> {
    let list: Value = api
        .admin()
        .get(
            &op("list", "events"),
            &format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events"),
        )
        .await
        .unwrap();
    let mut out: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == object)
        .map(|e| {
            eprintln!(
                "event {} {} x{}: {}",
                e["type"], e["reason"], e["count"], e["message"]
            );
            (
                e["source"]["host"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

/// `ha-vip ARGS -c <node's config>` in the node's namespace, printed like
/// an operator's terminal.
fn ctl(node: &Node, args: &[&str]) -> Output {
    let bin = binary();
    let cfg = node.config.to_str().unwrap();
    let mut cmd = vec![bin.to_str().unwrap()];
    cmd.extend_from_slice(args);
    cmd.extend_from_slice(&["-c", cfg]);
    let out = ns_exec(&node.ns, &cmd);
    eprintln!(
        "[{}]$ ha-vip {}\n{}{}(exit {})",
        node.name,
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    );
    out
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.name, n.log_text()))
        .collect()
}

/// The one node with the VIP on its interface, if exactly one has it.
fn holder(bed: &Testbed) -> Option<usize> {
    let h: Vec<usize> = (0..bed.lab.nodes.len())
        .filter(|&i| bed.lab.has_vip(i))
        .collect();
    (h.len() == 1).then(|| h[0])
}

/// Waits until `i` alone has held the VIP for a second.
fn wait_for_holder(bed: &Testbed, i: usize, nodes: &[Node], what: &str) {
    let t0 = Instant::now();
    let mut since: Option<Instant> = None;
    while t0.elapsed() < Duration::from_secs(30) {
        if holder(bed) == Some(i) {
            if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
                return;
            }
        } else {
            since = None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{what}: {} does not hold the VIP alone; holder {:?}\n{}",
        nodes[i].name,
        holder(bed),
        logs(nodes)
    );
}

#[test]
fn serial_e2e_drain_undrain_and_handover_move_the_vip_without_overlap() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    rt.block_on(install_crd(&api));
    let bed = Testbed::new(&api, 3, "controls");
    let object = bed.access.lease.clone();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let name = format!("node{}", i + 1);
            let state = bed.dir.path().join(format!("state-{name}"));
            bed.node(
                i,
                &name,
                &format!("{FAST_HEALTH}state_dir: {}\n", state.display()),
            )
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let obj = rt.block_on(wait_object(&api, &object, "3 nodes and a holder", |o| {
        o.status.nodes.len() == 3
            && o.status.holder.is_some()
            && o.status.ready.as_deref() == Some("3/3")
    }));
    let h = nodes
        .iter()
        .position(|n| Some(&n.name) == obj.status.holder.as_ref())
        .unwrap();
    wait_for_holder(&bed, h, &nodes, "first holder");
    let vip: IpAddr = bed.lab.vip().into();
    let meter = HolderMeter::start(&bed.lab.nodes, vip);

    // Drain the holder: the VIP moves to another node at once.
    let t_drain = Instant::now();
    let out = ctl(&nodes[h], &["drain"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained"));
    let t0 = Instant::now();
    let h2 = loop {
        if let Some(x) = holder(&bed).filter(|&x| x != h) {
            break x;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no takeover after the drain\n{}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let moved = t_drain.elapsed();
    eprintln!(
        "drain of the holder: VIP on {} after {moved:?}",
        nodes[h2].name
    );
    let x = 3 - h - h2;
    let drained_name = nodes[h].name.clone();
    rt.block_on(wait_object(&api, &object, "the drained entry", |o| {
        o.status.node(&drained_name).is_some_and(|n| n.drained)
    }));

    // Restarted (and a second instance refused meanwhile), still drained.
    nodes[h].signal(Signal::SIGTERM);
    assert!(nodes[h].wait(Duration::from_secs(20)).is_some());
    nodes[h].start();
    let pid = nodes[h].pid().unwrap().as_raw();
    let t0 = Instant::now();
    loop {
        let out = ctl(&nodes[h], &["status", "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if s["pid"] == pid && s["drained"] == true && s["healthy"] == true {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "restarted node not drained and healthy\n{}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The restarted daemon holds the lock: a second one is refused and
    // leaves its socket alone (the undrain below goes through it).
    let second = ns_exec(
        &nodes[h].ns,
        &[
            "timeout",
            "20",
            binary().to_str().unwrap(),
            "run",
            "-c",
            nodes[h].config.to_str().unwrap(),
        ],
    );
    assert_eq!(
        second.status.code(),
        Some(1),
        "a second daemon must not start"
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another ha-vip is running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let out = ctl(&nodes[h], &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained"));
    assert!(nodes[h].log_text().contains("this node is drained"));
    assert_eq!(holder(&bed), Some(h2), "a drained node took the VIP");

    // Drain the other standby; then the holder is the last healthy node.
    assert!(ctl(&nodes[x], &["drain"]).status.success());
    let x_name = nodes[x].name.clone();
    rt.block_on(wait_object(&api, &object, "x drained", |o| {
        o.status.node(&x_name).is_some_and(|n| n.drained)
    }));
    let out = ctl(&nodes[h2], &["drain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last healthy node"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(holder(&bed), Some(h2), "a refused drain moved the VIP");
    // Nor a handover to a drained node, a stranger, or from a standby.
    let to = format!("--to={}", nodes[x].name);
    let out = ctl(&nodes[h2], &["handover", &to]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is drained"));
    let out = ctl(&nodes[h2], &["handover", "--to=nosuchnode"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such node"));
    let out = ctl(&nodes[x], &["handover"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not hold the VIP"));

    // Undrain both.
    for i in [h, x] {
        assert!(ctl(&nodes[i], &["undrain"]).status.success());
    }
    rt.block_on(wait_object(&api, &object, "all undrained and ready", |o| {
        o.status.nodes.iter().all(|n| !n.drained && n.healthy)
    }));
    assert_eq!(holder(&bed), Some(h2), "an undrain moved the VIP");

    // Handover to a named node, three times: each time the named one of
    // the two standbys takes it.
    let mut holder = h2;
    for target in [h, x, h2] {
        let name = nodes[target].name.clone();
        rt.block_on(wait_object(&api, &object, "target ready", |o| {
            o.status
                .node(&name)
                .is_some_and(|n| n.can_take_over(std::time::SystemTime::now()))
        }));
        let to = format!("--to={name}");
        let out = ctl(&nodes[holder], &["handover", &to]);
        assert!(out.status.success(), "{}", logs(&nodes));
        wait_for_holder(&bed, target, &nodes, "handover --to");
        holder = target;
    }
    let samples = meter.finish();
    let overlap = overlap(&samples);
    eprintln!("overlap over drain, restart, undrain and 3 handovers: {overlap:?}");
    assert_eq!(overlap, Duration::ZERO, "two nodes had the VIP at once");

    std::thread::sleep(Duration::from_secs(2));
    let seen = rt.block_on(events(&api, &object));
    let count = |node: &str, reason: &str| -> u64 {
        seen.iter()
            .filter(|(n, r, _)| n == node && r == reason)
            .map(|(_, _, c)| c)
            .sum()
    };
    for i in [h, x] {
        assert!(count(&nodes[i].name, "Drained") >= 1, "{seen:?}");
        assert!(count(&nodes[i].name, "Undrained") >= 1, "{seen:?}");
    }
    let released: u64 = nodes.iter().map(|n| count(&n.name, "Released")).sum();
    // The drained holder's, three handovers', and the restart of a
    // non-holder adds none.
    assert!(released >= 4, "{seen:?}");
}

/// A node of higher priority takes the VIP over from the holder once the
/// holder has seen it healthy for preempt_delay, and not before; the lower
/// one does not take it back.
#[test]
fn serial_e2e_a_higher_priority_node_takes_over_after_preempt_delay() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    rt.block_on(install_crd(&api));
    let bed = Testbed::new(&api, 2, "prio");
    let object = bed.access.lease.clone();
    let delay = Duration::from_secs(4);
    let mut nodes: Vec<Node> = [0i64, 10]
        .iter()
        .enumerate()
        .map(|(i, prio)| {
            let name = format!("node{}", i + 1);
            let state = bed.dir.path().join(format!("state-{name}"));
            bed.node(
                i,
                &name,
                &format!(
                    "{FAST_HEALTH}state_dir: {}\npriority: {prio}\npreempt_delay: {}s\n",
                    state.display(),
                    delay.as_secs()
                ),
            )
        })
        .collect();
    nodes[0].start();
    wait_for_holder(&bed, 0, &nodes, "the only node");
    let vip: IpAddr = bed.lab.vip().into();
    let meter = HolderMeter::start(&bed.lab.nodes, vip);
    nodes[1].start();
    let name = nodes[1].name.clone();
    rt.block_on(wait_object(&api, &object, "node2 healthy", |o| {
        o.status
            .node(&name)
            .is_some_and(|n| n.healthy && n.priority == 10)
    }));
    let ready = Instant::now();
    let t_take = loop {
        match holder(&bed) {
            Some(1) => break ready.elapsed(),
            Some(0) | None => {}
            other => panic!("unexpected holder {other:?}"),
        }
        assert!(
            ready.elapsed() < delay + Duration::from_secs(15),
            "no preemption\n{}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "node2 (priority 10) took the VIP {t_take:?} after it was healthy (preempt_delay {delay:?})"
    );
    assert!(
        t_take + Duration::from_millis(500) >= delay,
        "preempted before preempt_delay: {t_take:?}\n{}",
        logs(&nodes)
    );
    // The lower one does not take it back.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(holder(&bed), Some(1), "{}", logs(&nodes));
    let samples = meter.finish();
    assert_eq!(
        overlap(&samples),
        Duration::ZERO,
        "two nodes had the VIP at once"
    );
    let seen = rt.block_on(events(&api, &object));
    assert!(
        seen.iter().any(|(n, r, _)| n == "node1" && r == "Released"),
        "{seen:?}"
    );
}
