//! The other API servers (src/kube/peers.rs) against real kube-apiservers:
//! discovery from `endpoints/kubernetes` with exactly the rights of
//! rbac.yaml, never the VIP, the TLS name rules, and a release that goes
//! through a second kube-apiserver on the same etcd when the holder's own
//! is gone.

#[path = "common/apiserver.rs"]
mod apiserver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver::ApiServer;
use ha_vip::config::Config;
use ha_vip::kube::{ENDPOINTS_PATH, KubeClient, KubeError, Operation, Peers};
use ha_vip::lease::{Elector, KubeLeaseStore, LeaseEvent, LeaseStore, Timings};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

const VIP: &str = "10.0.0.100";

fn config(dir: &Path, api_server: &str, k8s_extra: &str, credential: &str) -> Config {
    let path = dir.join("config.yaml");
    let yaml = format!(
        "node_name: cp1\ninterface: eth0\nvips: [{VIP}]\nk8s:\n  api_server: {api_server}\n{credential}{k8s_extra}"
    );
    std::fs::write(&path, &yaml).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn node_credential(api: &ApiServer) -> String {
    format!("  kubeconfig: {}\n", api.var("KUBECONFIG_NODE"))
}

fn admin_credential(dir: &Path, api: &ApiServer) -> String {
    let token = dir.join("token");
    std::fs::write(&token, api.var("KUBE_ADMIN_TOKEN")).unwrap();
    format!(
        "  token_file: {}\n  ca_cert: {}\n",
        token.display(),
        api.ca().display()
    )
}

fn op(verb: &'static str, resource: &'static str) -> Operation {
    Operation {
        verb,
        resource,
        namespace: Some("default".into()),
        name: None,
    }
}

/// Writes `endpoints/kubernetes` as kube-apiserver's endpoint reconciler
/// would (the harness runs with --endpoint-reconciler-type=none).
async fn write_endpoints(api: &ApiServer, addresses: &[&str]) {
    let addresses: Vec<serde_json::Value> = addresses
        .iter()
        .map(|ip| serde_json::json!({ "ip": ip }))
        .collect();
    let port: u16 = api.var("KUBE_PORT").parse().unwrap();
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default" },
        "subsets": [{
            "addresses": addresses,
            "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
        }],
    });
    let _: serde_json::Value = api
        .admin()
        .post(
            &op("create", "endpoints"),
            "/api/v1/namespaces/default/endpoints",
            &body,
        )
        .await
        .expect("create endpoints/kubernetes");
}

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_uses_endpoints_kubernetes_with_rbac_yaml_and_never_the_vip() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Two nodes and the VIP, as a misconfigured cluster might list it. (The
    // API server refuses loopback addresses in Endpoints, so these are not
    // the harness's; dropping this node's own URL is a unit test in
    // src/kube/peers.rs.)
    write_endpoints(&api, &["10.0.0.11", VIP, "10.0.0.12"]).await;
    let cfg = config(dir.path(), &api.server(), "", &node_credential(&api));
    assert!(cfg.peers.discover, "discovery is on by default");
    let local = KubeClient::from_config(&cfg).unwrap();
    let peers = Peers::new(&cfg, local.credentials().clone(), local.timeout()).unwrap();

    // Without the Role of rbac.yaml the node certificate may not read it.
    let e = peers.discover(&local).await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("needs get on endpoints in namespace default"),
        "{e}"
    );

    api.apply(&root("packaging/kubernetes/rbac.yaml")).await;
    let urls = timeout(Duration::from_secs(10), async {
        loop {
            match peers.discover(&local).await {
                Ok(urls) => return urls,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("rbac.yaml did not allow reading endpoints/kubernetes within 10 s");
    let port = api.var("KUBE_PORT");
    let expected = [
        format!("https://10.0.0.11:{port}"),
        format!("https://10.0.0.12:{port}"),
    ];
    assert_eq!(urls, expected, "never the VIP");
    assert_eq!(peers.servers(), expected);

    // Least privilege: that one object, only get.
    let e = local
        .get::<serde_json::Value>(
            &op("list", "endpoints"),
            "/api/v1/namespaces/default/endpoints",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "list: {e}");
    let e = local
        .get::<serde_json::Value>(
            &op("get", "endpoints"),
            "/api/v1/namespaces/kube-system/endpoints/kube-dns",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, KubeError::Forbidden { .. }),
        "other object: {e}"
    );
    let e = local
        .get::<serde_json::Value>(
            &op("get", "services"),
            "/api/v1/namespaces/default/services/kubernetes",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "service: {e}");
    assert!(ENDPOINTS_PATH.ends_with("/default/endpoints/kubernetes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_verified_like_the_local_api_server() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cred = admin_credential(dir.path(), &api);
    // The peer's address is an IP its certificate does not name (127.0.0.3
    // is not in the SANs): verified as k8s.tls_server_name, it is accepted.
    let peer = api.start_peer("peer", "127.0.0.3", &[]).await;
    let peers_yaml = format!("  peers: [{}]\n", peer.server);
    let cfg = config(dir.path(), &api.server(), &peers_yaml, &cred);
    let local = KubeClient::from_config(&cfg).unwrap();
    let peers = Peers::new(&cfg, local.credentials().clone(), local.timeout()).unwrap();
    let readyz = Operation {
        verb: "get",
        resource: "namespaces",
        namespace: None,
        name: Some("default".into()),
    };
    let client = &peers.clients()[0];
    let _: serde_json::Value = client
        .get(&readyz, "/api/v1/namespaces/default")
        .await
        .expect("a peer verified as `kubernetes`");
    // Another name: the same certificate is refused, as for the local one.
    let wrong = config(
        dir.path(),
        &api.server(),
        &format!("{peers_yaml}  tls_server_name: not-the-apiserver\n"),
        &cred,
    );
    let peers = Peers::new(&wrong, local.credentials().clone(), local.timeout()).unwrap();
    let e = peers.clients()[0]
        .get::<serde_json::Value>(&readyz, "/api/v1/namespaces/default")
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Tls { .. }), "{e}");
}

async fn holder(store: &KubeLeaseStore) -> Option<String> {
    store
        .get()
        .await
        .expect("GET lease")
        .map(|l| l.record.holder)
        .filter(|h| !h.is_empty())
}

/// Two kube-apiservers on one etcd: the holder's own (127.0.0.2) is
/// SIGKILLed; its release goes through the other and a standby sees the
/// Lease free at once instead of after the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_goes_through_another_api_server_when_the_local_one_is_gone() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cred = admin_credential(dir.path(), &api);
    let local_api = api.start_peer("local", "127.0.0.2", &[]).await;
    let cfg = config(
        dir.path(),
        &local_api.server,
        &format!("  peers: [{}]\n  discover_peers: false\n", api.server()),
        &cred,
    );
    let client = KubeClient::from_config(&cfg).unwrap();
    let peers = Peers::new(&cfg, client.credentials().clone(), client.timeout()).unwrap();
    let store = KubeLeaseStore::new(client, "kube-system", "peers-release").with_peers(peers);
    let observer = KubeLeaseStore::new(api.admin(), "kube-system", "peers-release");

    let (campaign, campaign_rx) = watch::channel(true);
    let (tx, mut events) = mpsc::channel(64);
    let elector = Elector::new(store, "cp1", Timings::from(&cfg.lease));
    let task = tokio::spawn(elector.run(campaign_rx, tx));
    timeout(Duration::from_secs(15), async {
        loop {
            if let Some(LeaseEvent::Acquired { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("no acquire through the local API server");
    assert_eq!(holder(&observer).await.as_deref(), Some("cp1"));

    // The local API server dies with all its connections.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-local_api.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    local_api.stop();
    let t0 = Instant::now();
    campaign.send(false).unwrap();
    let freed = timeout(Duration::from_secs(3), async {
        while holder(&observer).await.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t0.elapsed()
    })
    .await
    .expect("the Lease still names cp1 3 s after the release");
    eprintln!("released through the other API server {freed:?} after the release began");
    assert!(freed < Duration::from_secs(1), "{freed:?}");
    drop(campaign);
    timeout(Duration::from_secs(5), task)
        .await
        .expect("elector ended")
        .unwrap();
}

/// `ha-vip release` (systemd's ExecStopPost, after a crash) goes through
/// `k8s.peers` too when this node's API server is what is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_vip_release_goes_through_a_peer() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cred = admin_credential(dir.path(), &api);
    let local_api = api.start_peer("local", "127.0.0.2", &[]).await;
    let cfg = config(
        dir.path(),
        &local_api.server,
        &format!("  peers: [{}]\n  discover_peers: false\n", api.server()),
        &cred,
    );
    let lease = cfg.lease.name.clone();
    let store = KubeLeaseStore::from_config(&cfg).unwrap();
    let observer = KubeLeaseStore::new(api.admin(), "kube-system", lease);
    // The daemon held the Lease and crashed (its elector is gone).
    let (campaign, campaign_rx) = watch::channel(true);
    let (tx, mut events) = mpsc::channel(64);
    let task =
        tokio::spawn(Elector::new(store, "cp1", Timings::from(&cfg.lease)).run(campaign_rx, tx));
    timeout(Duration::from_secs(15), async {
        while !matches!(events.recv().await, Some(LeaseEvent::Acquired { .. })) {}
    })
    .await
    .expect("no acquire");
    task.abort();
    drop(campaign);
    assert_eq!(holder(&observer).await.as_deref(), Some("cp1"));
    // And this node's API server died too.
    local_api.stop();
    let released = ha_vip::lease::release_if_held(&cfg)
        .await
        .expect("release through the peer");
    assert!(released);
    assert_eq!(holder(&observer).await, None);
}
