//! Real daemons (one per network namespace) against the real kube-apiserver
//! with the VirtualIP CRD installed: the object shows every node and the
//! holder, `ha-vip status --cluster` prints it, a SIGTERM of the holder
//! makes exactly a Released and an Acquired Event, and an idle cluster's
//! status writes stay at a heartbeat's rate.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::time::{Duration, Instant};

use apiserver::ApiServer;
use common::lab::node::{FAST_HEALTH, binary};
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

/// Requests the API server has served, by resource, from its own /metrics.
async fn requests(api: &ApiServer, resource: &str) -> f64 {
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            api.var("KUBE_ADMIN_TOKEN")
        ))
        .arg(format!("{}/metrics", api.server()))
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(&format!("resource=\"{resource}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The server-side Table of the VirtualIPs (what kubectl prints), every
/// column (`-o wide`), cells joined by two spaces, dates as they come.
async fn server_table(api: &ApiServer) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            api.var("KUBE_ADMIN_TOKEN")
        ))
        .args(["-H", "Accept: application/json;as=Table;v=v1;g=meta.k8s.io"])
        .arg(format!(
            "{}/apis/ha-vip.io/v1alpha1/virtualips",
            api.server()
        ))
        .output()
        .await
        .expect("curl");
    let t: Value = serde_json::from_slice(&out.stdout).expect("a Table");
    let mut rows: Vec<Vec<String>> = vec![
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect(),
    ];
    for r in t["rows"].as_array().unwrap() {
        rows.push(
            r["cells"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| match c {
                    Value::String(s) => s.clone(),
                    Value::Null => "<none>".into(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("   ").trim_end().to_string() + "\n"
        })
        .collect()
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

#[test]
fn serial_e2e_three_daemons_report_into_one_virtualip_with_events() {
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
    let bed = Testbed::new(&api, 3, "vipobj");
    let object = bed.access.lease.clone();
    let mut nodes = bed.nodes("node", FAST_HEALTH);
    for n in &mut nodes {
        n.start();
    }
    let logs = |nodes: &[common::lab::node::Node]| -> String {
        nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.name, n.log_text()))
            .collect()
    };

    // Every node's entry, the holder, READY 3/3.
    let obj = rt.block_on(wait_object(&api, &object, "3 nodes and a holder", |o| {
        o.status.nodes.len() == 3
            && o.status.holder.is_some()
            && o.status.ready.as_deref() == Some("3/3")
    }));
    let holder = obj.status.holder.clone().unwrap();
    let h = nodes.iter().position(|n| n.name == holder).unwrap();
    assert!(
        bed.lab.has_vip(h),
        "the object's holder has the VIP\n{}",
        logs(&nodes)
    );
    for n in &obj.status.nodes {
        let role = if n.name == holder {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(n.role, role, "{obj:#?}");
        assert!(n.healthy, "{obj:#?}");
    }

    // ha-vip status --cluster, run on a node like an operator would.
    let other = (h + 1) % 3;
    let cfg = nodes[other].config.to_str().unwrap().to_string();
    let bin = binary();
    let out = ns_exec(
        &nodes[other].ns,
        &[bin.to_str().unwrap(), "status", "--cluster", "-c", &cfg],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "$ ha-vip status --cluster\n{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert!(
        table.contains(&format!("holder: {holder} since")),
        "{table}"
    );
    assert!(table.contains("ready: 3/3"), "{table}");
    let out = ns_exec(
        &nodes[other].ns,
        &[
            bin.to_str().unwrap(),
            "status",
            "--cluster",
            "--json",
            "-c",
            &cfg,
        ],
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    assert_eq!(json["holder"], holder.as_str());
    assert_eq!(json["nodes"].as_array().unwrap().len(), 3);

    // What `kubectl get virtualips -o wide` shows: the server-side Table
    // of the CRD's printer columns.
    let wide = rt.block_on(server_table(&api));
    eprintln!("$ kubectl get virtualips -o wide\n{wide}");
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "VIPS",
            "HOLDER",
            "READY",
            "SINCE",
            "FAILOVERS",
            "AGE",
            "LAST-FAILOVER"
        ]
    );
    let row = wide.lines().nth(1).unwrap();
    assert!(row.contains(&holder) && row.contains("3/3"), "{wide}");

    // Idle: status writes at a heartbeat's rate, next to the Lease's.
    let idle = Duration::from_secs(60);
    let before: Vec<f64> = ["leases", "virtualips", "events"]
        .iter()
        .map(|r| rt.block_on(requests(&api, r)))
        .collect();
    std::thread::sleep(idle);
    let rates: Vec<f64> = ["leases", "virtualips", "events"]
        .iter()
        .zip(&before)
        .map(|(r, b)| (rt.block_on(requests(&api, r)) - b) / idle.as_secs_f64())
        .collect();
    eprintln!(
        "idle 3-node request rate over {} s: leases {:.2}/s, virtualips {:.2}/s, events {:.2}/s, total {:.2}/s",
        idle.as_secs(),
        rates[0],
        rates[1],
        rates[2],
        rates.iter().sum::<f64>()
    );
    // 3 heartbeats per 30 s plus the holder's READY refresh: ~0.1-0.2/s.
    assert!(
        rates[1] < 0.5,
        "status writes are rate-limited: {:.2}/s",
        rates[1]
    );
    assert!(rates[2] == 0.0, "no Event while idle: {:.2}/s", rates[2]);

    // SIGTERM the holder: a planned handover.
    nodes[h].signal(Signal::SIGTERM);
    assert!(
        nodes[h].wait(Duration::from_secs(20)).is_some(),
        "{}",
        logs(&nodes)
    );
    let obj = rt.block_on(wait_object(&api, &object, "a new holder", |o| {
        o.status.holder.as_deref().is_some_and(|x| x != holder)
            && o.status.failovers == Some(1)
            && o.status.last_failover_reason.as_deref()
                == Some(format!("{holder}: shutting down").as_str())
    }));
    let new = obj.status.holder.clone().unwrap();
    assert_eq!(
        obj.status.last_failover_reason.as_deref(),
        Some(format!("{holder}: shutting down").as_str()),
        "{obj:#?}"
    );
    let wide = rt.block_on(server_table(&api));
    eprintln!("$ kubectl get virtualips -o wide\n{wide}");
    assert!(wide.contains(&format!("{holder}: shutting down")), "{wide}");
    let old = obj.status.node(&holder).unwrap();
    assert_eq!(
        old.role, "stopping",
        "the stopped node's last write: {obj:#?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let seen = rt.block_on(events(&api, &object));
    let mut want = vec![
        (holder.clone(), "Acquired".to_string(), 1),
        (holder.clone(), "Released".to_string(), 1),
        (new.clone(), "Acquired".to_string(), 1),
    ];
    want.sort();
    assert_eq!(seen, want, "{}", logs(&nodes));
    let log = logs(&nodes);
    assert!(!log.contains("VirtualIP CRD is not installed"), "{log}");
    assert!(
        !log.contains("cannot write this node's VirtualIP status"),
        "{log}"
    );
}

#[test]
fn serial_e2e_without_the_crd_daemons_fail_over_as_before_with_one_warn() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let bed = Testbed::new(&api, 2, "nocrd");
    let mut nodes = bed.nodes("node", FAST_HEALTH);
    for n in &mut nodes {
        n.start();
    }
    let holder = |bed: &Testbed| -> Option<usize> {
        let h: Vec<usize> = (0..2).filter(|&i| bed.lab.has_vip(i)).collect();
        (h.len() == 1).then(|| h[0])
    };
    let t0 = Instant::now();
    let h = loop {
        if let Some(h) = holder(&bed) {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no holder");
        std::thread::sleep(Duration::from_millis(50));
    };
    nodes[h].signal(Signal::SIGTERM);
    assert!(nodes[h].wait(Duration::from_secs(20)).is_some());
    let t0 = Instant::now();
    while holder(&bed) != Some(1 - h) {
        assert!(t0.elapsed() < Duration::from_secs(30), "no failover");
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in &nodes {
        let log = n.log_text();
        assert_eq!(
            log.matches("VirtualIP CRD is not installed").count(),
            1,
            "exactly one WARN per daemon: {log}"
        );
        assert!(log.contains("kubectl apply -f /usr/share/doc/ha-vip/virtualip-crd.yaml"));
    }
    assert!(
        rt.block_on(fetch(&api.admin(), &bed.access.lease))
            .unwrap()
            .is_none()
    );

    // ha-vip status --cluster falls back to the Lease holder and says why.
    let survivor = &nodes[1 - h];
    let bin = binary();
    let out = ns_exec(
        &survivor.ns,
        &[
            bin.to_str().unwrap(),
            "status",
            "--cluster",
            "-c",
            survivor.config.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "$ ha-vip status --cluster\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert!(text.contains("no VirtualIP object"), "{text}");
    assert!(
        text.contains("kubectl apply -f /usr/share/doc/ha-vip/virtualip-crd.yaml"),
        "{text}"
    );
    assert!(
        text.contains(&format!("holder: {}", survivor.name)),
        "{text}"
    );
}
