//! Credentials, TLS and RBAC against a real kube-apiserver.

#[path = "common/apiserver.rs"]
mod apiserver;

use std::path::Path;
use std::time::Duration;

use apiserver::ApiServer;
use ha_vip::config::Credential;
use ha_vip::kube::{Credentials, KubeClient, KubeError, request_timeout};
use ha_vip::lease::{Elector, KubeLeaseStore, LeaseEvent, LeaseStore, Timings};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const T: Timings = Timings {
    duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(500),
};

fn store(api: &ApiServer, credential: Credential, name: &str) -> KubeLeaseStore {
    let client = api.client(credential, request_timeout(T.renew_deadline));
    KubeLeaseStore::new(client, "kube-system", name)
}

fn spawn(store: &KubeLeaseStore, id: &str) -> (watch::Sender<bool>, mpsc::Receiver<LeaseEvent>) {
    let (ctx, crx) = watch::channel(true);
    let (etx, erx) = mpsc::channel(1024);
    tokio::spawn(Elector::new(store.clone(), id, T).run(crx, etx));
    (ctx, erx)
}

async fn next_acquired_or_failure(events: &mut mpsc::Receiver<LeaseEvent>) -> LeaseEvent {
    timeout(Duration::from_secs(15), async {
        loop {
            let ev = events.recv().await.unwrap();
            if matches!(
                ev,
                LeaseEvent::Acquired { .. } | LeaseEvent::RequestFailed { .. }
            ) {
                return ev;
            }
        }
    })
    .await
    .expect("neither Acquired nor RequestFailed within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_yaml_is_enough_for_the_node_certificate_and_no_more() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let node = Credential::Kubeconfig(api.var("KUBECONFIG_NODE").into());

    // Before the RBAC objects exist, the node certificate is authenticated but denied.
    let e = store(&api, node.clone(), "ha-vip").get().await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");

    api.apply(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/rbac.yaml"))
        .await;
    // RBAC changes reach the authorizer through an informer: give it a moment.
    let a_store = store(&api, node.clone(), "ha-vip");
    timeout(Duration::from_secs(10), async {
        while a_store.get().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("rbac.yaml did not take effect within 10 s");

    // Create, get, update (renew) and watch all work with exactly these rules.
    let (a_campaign, mut a_events) = spawn(&a_store, "node-a");
    let ev = next_acquired_or_failure(&mut a_events).await;
    assert!(matches!(ev, LeaseEvent::Acquired { .. }), "{ev:?}");
    let b_store = store(&api, node.clone(), "ha-vip");
    let (_b_campaign, mut b_events) = spawn(&b_store, "node-b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_seen: Vec<LeaseEvent> = std::iter::from_fn(|| b_events.try_recv().ok()).collect();
    assert!(
        b_seen
            .iter()
            .all(|e| !matches!(e, LeaseEvent::RequestFailed { .. })),
        "the standby's get/watch were refused: {b_seen:?}"
    );
    assert!(
        b_store.requests() <= 3,
        "the standby is watching, not polling: {}",
        b_store.requests()
    );
    a_campaign.send(false).unwrap();
    let ev = next_acquired_or_failure(&mut b_events).await;
    assert!(matches!(ev, LeaseEvent::Acquired { .. }), "{ev:?}");

    // Least privilege: another Lease in the same namespace is out of reach.
    let e = store(&api, node, "someone-elses-lease")
        .get()
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_token_gets_403_with_the_fix_and_no_leadership() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let s = store(
        &api,
        Credential::Token(api.var("KUBE_USER_TOKEN")),
        "ha-vip",
    );
    let (_campaign, mut events) = spawn(&s, "node-a");
    let ev = next_acquired_or_failure(&mut events).await;
    let LeaseEvent::RequestFailed { error, .. } = ev else {
        panic!("acquired without rights: {ev:?}")
    };
    let msg = error.to_string();
    eprintln!("403 message: {msg}");
    assert!(matches!(error, KubeError::Forbidden { .. }), "{msg}");
    assert!(
        msg.contains("needs get on leases.coordination.k8s.io in namespace kube-system; apply packaging/kubernetes/rbac.yaml"),
        "{msg}"
    );
    assert!(
        msg.contains("k8s.token"),
        "names the credential source: {msg}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(ev) = events.try_recv() {
        assert!(!matches!(ev, LeaseEvent::Acquired { .. }), "{ev:?}");
    }
    // A bogus token is a 401 naming its source.
    let e = store(&api, Credential::Token("not-a-token".into()), "ha-vip")
        .get()
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Unauthorized { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("rejected the credential from k8s.token"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_or_name_is_a_tls_error_and_kubeconfig_server_is_ignored() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let token = Credential::Token(api.var("KUBE_ADMIN_TOKEN"));
    // The client CA did not sign the serving certificate.
    let mut k8s = api.k8s(token.clone());
    k8s.ca_cert = Some(api.var("KUBE_CLIENT_CA").into());
    let client = KubeClient::new(
        &k8s,
        Credentials::load(&k8s).unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    let e = KubeLeaseStore::new(client, "kube-system", "x")
        .get()
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // Right CA, but the certificate is not valid for this name.
    let mut k8s = api.k8s(token.clone());
    k8s.tls_server_name = "not-kubernetes.example".into();
    let client = KubeClient::new(
        &k8s,
        Credentials::load(&k8s).unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    let e = KubeLeaseStore::new(client, "kube-system", "x")
        .get()
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Tls { .. }), "{e}");

    // insecure_skip_tls_verify accepts it (and warns).
    let mut k8s = api.k8s(token);
    k8s.ca_cert = None;
    k8s.insecure_skip_tls_verify = true;
    let client = KubeClient::new(
        &k8s,
        Credentials::load(&k8s).unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(
        KubeLeaseStore::new(client, "kube-system", "x")
            .get()
            .await
            .unwrap(),
        None
    );

    // The admin kubeconfig works although its server would be ignored anyway:
    // point it at a dead port to prove k8s.api_server is what is used.
    let text = std::fs::read_to_string(api.var("KUBECONFIG_ADMIN")).unwrap();
    let kc = api.dir().join("vip.kubeconfig");
    std::fs::write(&kc, text.replace(&api.server(), "https://127.0.0.1:1")).unwrap();
    let s = store(&api, Credential::Kubeconfig(kc), "x");
    assert_eq!(s.get().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_used_on_the_next_request() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let file = api.dir().join("rotating-token");
    std::fs::write(&file, api.var("KUBE_USER_TOKEN")).unwrap();
    let s = store(&api, Credential::TokenFile(file.clone()), "ha-vip");
    let e = s.get().await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    assert!(
        e.to_string().contains("rotating-token"),
        "names the token file: {e}"
    );
    std::fs::write(&file, format!("{}\n", api.var("KUBE_ADMIN_TOKEN"))).unwrap();
    assert_eq!(s.get().await.unwrap(), None);
    std::fs::remove_file(&file).unwrap();
    let e = s.get().await.unwrap_err();
    assert!(matches!(e, KubeError::ReadFile { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_config_file_builds_a_working_store_and_probe() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    api.apply(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/rbac.yaml"))
        .await;
    let path = api.dir().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "node_name: cp1\ninterface: eth0\nvip: 10.0.0.100\nhealth:\n  endpoint: {server}/readyz\nk8s:\n  api_server: {server}\n  kubeconfig: {kc}\n",
            server = api.server(),
            kc = api.var("KUBECONFIG_NODE"),
        ),
    )
    .unwrap();
    let config = ha_vip::config::Config::load(&path).unwrap();
    let probe = ha_vip::health::HttpProbe::from_config(&config).unwrap();
    use ha_vip::health::Probe as _;
    let r = probe.probe().await;
    assert!(r.healthy, "{r:?}");
    let store = KubeLeaseStore::from_config(&config).unwrap();
    let (_campaign, mut events) = spawn(&store, &config.node_name);
    // RBAC reaches the authorizer through an informer: allow a few refusals.
    let acquired = timeout(Duration::from_secs(15), async {
        loop {
            if let LeaseEvent::Acquired { .. } = events.recv().await.unwrap() {
                return;
            }
        }
    })
    .await;
    assert!(acquired.is_ok(), "no Acquired with the node's config");
}
