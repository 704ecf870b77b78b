//! RBAC: what rbac.yaml grants the node credential for the cluster view,
//! and what a node without those rules still does.

use std::time::{Duration, SystemTime};

use ha_vip::cluster::object::{RESOURCE, object_path};
use ha_vip::cluster::{Cluster, VirtualIp};
use ha_vip::config::Credential;
use ha_vip::kube::KubeError;
use ha_vip::observe::Metrics;
use ha_vip::role::{Role, TransitionReason};
use serde_json::Value;

use super::apiserver::ApiServer;
use super::{
    OBJECT, events, install_crd, logs, node_client, op, read, settings, status, vips, wait_object,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_credential_can_write_this_object_and_events_and_nothing_more() {
    logs();
    let Some(api) = ApiServer::start() else {
        return;
    };
    install_crd(&api).await;
    let node = node_client(&api).await;
    let metrics = Metrics::new(&vips());
    // The writer, with only rbac.yaml's rules, creates the object and writes.
    let mut a = Cluster::start(node.clone(), settings("node-a"), &metrics);
    a.record(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    a.publish(&status("node-a", Role::Leader, true, Some("node-a")));
    wait_object(&api, "holder written by the node", |o| {
        o.status.holder.as_deref() == Some("node-a")
    })
    .await;
    a.finish(Duration::from_secs(5)).await;
    assert!(
        metrics
            .encode()
            .contains("ha_vip_cluster_write_errors_total 0")
    );
    assert_eq!(events(&api).await.len(), 1);
    // get works; another VirtualIP is out of reach; no list, no delete.
    let _: VirtualIp = node
        .get(&op("get", RESOURCE), &object_path(OBJECT))
        .await
        .unwrap();
    let forbidden = |r: Result<Value, KubeError>| {
        assert!(matches!(r, Err(KubeError::Forbidden { .. })), "{r:?}")
    };
    forbidden(node.get(&op("get", RESOURCE), &object_path("other")).await);
    forbidden(
        node.get(&op("list", RESOURCE), "/apis/ha-vip.io/v1alpha1/virtualips")
            .await,
    );
    let other = serde_json::json!({
        "apiVersion": "ha-vip.io/v1alpha1", "kind": "VirtualIP", "metadata": {"name": "other"}
    });
    forbidden(
        node.patch(
            &op("patch", RESOURCE),
            &format!("{}?fieldManager=x", object_path("other")),
            ha_vip::kube::APPLY_PATCH,
            &other,
        )
        .await,
    );
    forbidden(
        node.get(&op("list", "events"), "/api/v1/namespaces/default/events")
            .await,
    );
    forbidden(
        node.post(
            &op("create", "events"),
            "/api/v1/namespaces/kube-system/events",
            &serde_json::json!({"metadata": {"name": "x"}}),
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extra_rules_writes_fail_as_a_metric_and_publishing_never_waits() {
    logs();
    let Some(api) = ApiServer::start() else {
        return;
    };
    install_crd(&api).await;
    // Authenticated, but no RBAC at all for the cluster view.
    let user = api.client(
        Credential::Token(api.var("KUBE_USER_TOKEN")),
        Duration::from_secs(5),
    );
    let metrics = Metrics::new(&vips());
    let mut a = Cluster::start(user, settings("node-a"), &metrics);
    let t0 = std::time::Instant::now();
    for i in 0..1000 {
        a.publish(&status("node-a", Role::Leader, i % 2 == 0, Some("node-a")));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let errors: u64 = metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("ha_vip_cluster_write_errors_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // retry 200 ms: a few failures in 2 s, each counted, none of them fatal.
    assert!((2..=15).contains(&errors), "{errors} failed writes");
    assert!(read(&api).await.is_none());
    a.finish(Duration::from_secs(2)).await;
}
