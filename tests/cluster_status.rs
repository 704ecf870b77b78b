//! The VirtualIP object against a real kube-apiserver (1.20): the CRD, the
//! writer task of src/cluster/ with the node credential and rbac.yaml,
//! concurrent server-side apply by three nodes, stale entries, Events, and
//! a missing CRD.

#[path = "common/apiserver.rs"]
mod apiserver;
#[path = "cluster_status/failover.rs"]
mod failover;
#[path = "cluster_status/rbac.rs"]
mod rbac;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apiserver::ApiServer;
use ha_vip::cluster::events::EVENT_NAMESPACE;
use ha_vip::cluster::object::{RESOURCE, object_path};
use ha_vip::cluster::view::{ClusterView, fetch};
use ha_vip::cluster::{Cluster, Settings, VirtualIp};
use ha_vip::config::{Credential, Vip};
use ha_vip::kube::{KubeClient, KubeError, Operation};
use ha_vip::observe::{Metrics, Status};
use ha_vip::role::{Role, TransitionReason};
use serde_json::Value;
use tokio::time::timeout;

pub(crate) const OBJECT: &str = "ha-vip";

fn root(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The writer's WARNs in the test output.
pub(crate) fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("ha_vip=debug")
        .try_init();
}

pub(crate) fn vips() -> Vec<Vip> {
    vec![Vip {
        addr: "10.0.0.100".parse().unwrap(),
        prefix_len: 32,
    }]
}

pub(crate) fn settings(node: &str) -> Settings {
    Settings {
        node: node.into(),
        object: OBJECT.into(),
        lease_namespace: "kube-system".into(),
        vips: vips().iter().map(ToString::to_string).collect(),
        priority: 0,
        heartbeat: Duration::from_millis(500),
        min_gap: Duration::from_millis(50),
        stale_after: Duration::from_secs(2),
        retry: Duration::from_millis(200),
    }
}

pub(crate) fn op(verb: &'static str, resource: &'static str) -> Operation {
    Operation {
        verb,
        resource,
        namespace: None,
        name: None,
    }
}

/// Installs the CRD as admin and waits until the resource is served.
pub(crate) async fn install_crd(api: &ApiServer) {
    let text = std::fs::read_to_string(root("packaging/kubernetes/virtualip-crd.yaml")).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let admin = api.admin();
    let _: Value = admin
        .post(
            &op("create", "customresourcedefinitions.apiextensions.k8s.io"),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd,
        )
        .await
        .expect("the v1 CRD is accepted");
    timeout(Duration::from_secs(20), async {
        loop {
            let r: Result<Value, _> = admin
                .get(&op("list", RESOURCE), "/apis/ha-vip.io/v1alpha1/virtualips")
                .await;
            if r.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the CRD was not served within 20 s");
}

/// rbac.yaml applied, and the node credential allowed by it (RBAC reaches
/// the authorizer through an informer).
pub(crate) async fn node_client(api: &ApiServer) -> KubeClient {
    api.apply(&root("packaging/kubernetes/rbac.yaml")).await;
    let node = api.client(
        Credential::Kubeconfig(api.var("KUBECONFIG_NODE").into()),
        Duration::from_secs(5),
    );
    let probe = Operation {
        verb: "get",
        resource: "leases.coordination.k8s.io",
        namespace: Some(Arc::from("kube-system")),
        name: Some(Arc::from("ha-vip")),
    };
    timeout(Duration::from_secs(10), async {
        loop {
            let r: Result<Value, _> = node
                .get(
                    &probe,
                    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ha-vip",
                )
                .await;
            if !matches!(r, Err(KubeError::Forbidden { .. })) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("rbac.yaml did not take effect within 10 s");
    node
}

/// A daemon status: `role`, healthy or not, holder as seen.
pub(crate) fn status(node: &str, role: Role, healthy: bool, holder: Option<&str>) -> Status {
    let now = SystemTime::now();
    let mut s = Status::new(node, &vips(), now);
    s.transition(Role::Follower, TransitionReason::Started, now);
    if matches!(role, Role::Leader | Role::Stopping) {
        s.transition(Role::Leader, TransitionReason::AcquiredLease, now);
    }
    if role == Role::Stopping {
        s.transition(Role::Stopping, TransitionReason::Shutdown, now);
    }
    s.healthy = healthy;
    s.holder = holder.map(String::from);
    s.record_probe(healthy, if healthy { "ok" } else { "HTTP 500" }, now);
    s
}

pub(crate) async fn read(api: &ApiServer) -> Option<VirtualIp> {
    fetch(&api.admin(), OBJECT).await.unwrap()
}

/// Polls the object until `cond` holds; panics with the last object.
pub(crate) async fn wait_object(
    api: &ApiServer,
    what: &str,
    cond: impl Fn(&VirtualIp) -> bool,
) -> VirtualIp {
    let mut last = None;
    let r = timeout(Duration::from_secs(15), async {
        loop {
            if let Some(o) = read(api).await {
                if cond(&o) {
                    return o;
                }
                last = Some(o);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("{what}: not within 15 s; last object: {last:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_their_own_entries_concurrently_and_a_silent_one_turns_stale() {
    logs();
    let Some(api) = ApiServer::start() else {
        return;
    };
    install_crd(&api).await;
    let node = node_client(&api).await;
    let metrics = Metrics::new(&vips());
    let mut a = Cluster::start(node.clone(), settings("node-a"), &metrics);
    let mut b = Cluster::start(node.clone(), settings("node-b"), &metrics);
    let c = Cluster::start(node.clone(), settings("node-c"), &metrics);
    // All three publish at once and keep changing their own entries (every
    // change is written at once), so the applies race at the API server.
    for i in 0..10 {
        let h = i % 2 == 0;
        a.publish(&status("node-a", Role::Follower, h, None));
        b.publish(&status("node-b", Role::Follower, !h, None));
        c.publish(&status("node-c", Role::Follower, h, None));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let at = SystemTime::now();
    a.record(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
        at,
    );
    a.publish(&status("node-a", Role::Leader, true, Some("node-a")));
    b.publish(&status("node-b", Role::Follower, true, Some("node-a")));
    c.publish(&status("node-c", Role::Follower, false, Some("node-a")));
    let obj = wait_object(&api, "three entries and the holder", |o| {
        let st = &o.status;
        st.holder.as_deref() == Some("node-a")
            && st
                .node("node-a")
                .is_some_and(|e| e.role == "leader" && e.healthy)
            && st
                .node("node-b")
                .is_some_and(|e| e.role == "follower" && e.healthy)
            && st
                .node("node-c")
                .is_some_and(|e| e.role == "follower" && !e.healthy)
    })
    .await;
    assert_eq!(obj.status.nodes.len(), 3, "{obj:#?}");
    assert_eq!(obj.spec.vips, vec!["10.0.0.100/32".to_string()]);
    assert_eq!(obj.status.vips.as_deref(), Some("10.0.0.100/32"));
    assert_eq!(
        obj.status.failovers,
        Some(0),
        "a first holder is no failover"
    );
    let e = obj.status.node("node-c").unwrap();
    assert_eq!(e.last_probe.as_deref(), Some("HTTP 500"));
    assert!(e.last_probe_time.is_some() && e.heartbeat_time.is_some());
    assert_eq!(e.version, env!("CARGO_PKG_VERSION"));

    // Each entry is owned by its node's field manager only.
    let raw: Value = api
        .admin()
        .get(&op("get", RESOURCE), &object_path(OBJECT))
        .await
        .unwrap();
    let managers: Vec<&str> = raw["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    for m in [
        "ha-vip-node-a",
        "ha-vip-node-b",
        "ha-vip-node-c",
        "ha-vip-holder",
        "ha-vip",
    ] {
        assert!(managers.contains(&m), "manager {m} missing: {managers:?}");
    }

    // READY counts the healthy, fresh nodes: a and b.
    let obj = wait_object(&api, "ready 2/3", |o| {
        o.status.ready.as_deref() == Some("2/3")
    })
    .await;
    let view = ClusterView::new(&obj, SystemTime::now());
    eprintln!("{}", view.table(SystemTime::now()));

    // node-c stops writing (its daemon is gone): within its stale limit
    // (2 s) plus a heartbeat it shows as stale, the others do not.
    drop(c);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let obj = read(&api).await.unwrap();
    let view = ClusterView::new(&obj, SystemTime::now());
    let stale: Vec<(&str, bool)> = view
        .nodes
        .iter()
        .map(|n| (n.entry.name.as_str(), n.stale))
        .collect();
    assert_eq!(
        stale,
        [("node-a", false), ("node-b", false), ("node-c", true)]
    );
    let table = view.table(SystemTime::now());
    eprintln!("{table}");
    assert!(table.contains("follower (stale)"), "{table}");
    a.finish(Duration::from_secs(2)).await;
    b.finish(Duration::from_secs(2)).await;
}

/// The Events about the object, as (node, reason, count), sorted.
pub(crate) async fn events(api: &ApiServer) -> Vec<(String, String, u64, String)> {
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
        .filter(|e| e["involvedObject"]["kind"] == "VirtualIP")
        .map(|e| {
            (
                e["source"]["host"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap_or(0),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_the_writer_retries_slowly_and_publishing_never_waits() {
    logs();
    let Some(api) = ApiServer::start() else {
        return;
    };
    let node = node_client(&api).await;
    let metrics = Metrics::new(&vips());
    let mut a = Cluster::start(node, settings("node-a"), &metrics);
    // Publishing is a channel send: it never waits for the API server.
    let t0 = std::time::Instant::now();
    for i in 0..1000 {
        a.publish(&status("node-a", Role::Follower, i % 2 == 0, None));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // retry 200 ms, a missing CRD waits 10 times that: about 2 attempts in 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = metrics.encode();
    let errors: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ha_vip_cluster_write_errors_total "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1..=3).contains(&errors),
        "slow retry, not a busy loop: {errors} failed writes"
    );
    assert!(read(&api).await.is_none());
    // Installing the CRD later is picked up without a restart.
    install_crd(&api).await;
    wait_object(&api, "the entry once the CRD exists", |o| {
        o.status.node("node-a").is_some()
    })
    .await;
    a.finish(Duration::from_secs(2)).await;
}
