//! `ha-vip credential issue` against the real kube-apiserver: the issued
//! credential takes the Lease (with rbac.yaml applied) and is refused
//! everything else; the real daemon runs on it and takes the VIP; a
//! system:masters credential is a WARN at start naming the command.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use common::lab::node::{Node, binary};
use common::lab::testbed::Testbed;
use ha_vip::config::Credential;
use ha_vip::kube::{KubeError, Operation, request_timeout};
use ha_vip::lease::{Elector, KubeLeaseStore, LeaseEvent, LeaseStore, Timings};
use tokio::sync::{mpsc, watch};

const T: Timings = Timings {
    duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(500),
};

fn issue(api: &ApiServer, out_dir: &Path, extra: &[&str]) -> Output {
    Command::new(binary())
        .args(["credential", "issue", "--ca-cert"])
        .arg(api.var("KUBE_CLIENT_CA"))
        .arg("--ca-key")
        .arg(api.var("KUBE_CLIENT_CA_KEY"))
        .arg("--server-ca")
        .arg(api.ca())
        .args(["--server", &api.server(), "--out-dir"])
        .arg(out_dir)
        .args(extra)
        .output()
        .expect("ha-vip credential issue")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn forbidden(r: Result<serde_json::Value, KubeError>, what: &str) {
    match r {
        Err(e @ KubeError::Forbidden { .. }) => eprintln!("{what}: refused as expected: {e}"),
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

fn op(verb: &'static str, resource: &'static str) -> Operation {
    Operation {
        verb,
        resource,
        namespace: Some("kube-system".into()),
        name: None,
    }
}

/// Waits up to `bound` for the node's log to contain `needle`.
fn log_contains(node: &Node, needle: &str, bound: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < bound {
        if node.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_issued_credential_takes_the_lease_and_nothing_else() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("etc-ha-vip");

    // Issue: the files, their modes, and what to put in config.yaml.
    let o = issue(&api, &out_dir, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let kc: PathBuf = out_dir.join("kubeconfig");
    let key = out_dir.join("client.key");
    assert!(
        stdout.contains(&format!("kubeconfig: {}", kc.display()))
            && stdout.contains("kubectl apply -f /usr/share/doc/ha-vip/rbac.yaml")
            && stdout.contains("user ha-vip-node"),
        "{stdout}"
    );
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&kc), 0o600);
    let cert_pem = fs::read(out_dir.join("client.crt")).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&cert_pem)
        .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
        .unwrap();
    assert!(ha_vip::credential::admin_groups(&der).is_empty());

    // No overwrite without --force; nothing changes.
    let before = fs::read(&key).unwrap();
    let o = issue(&api, &out_dir, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("refusing to overwrite") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(&key).unwrap(), before);
    // A cluster-admin group is refused outright.
    let o = issue(
        &api,
        &dir.path().join("other"),
        &["--group", "system:masters"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cluster-admin"),
        "{}",
        text(&o.stderr)
    );
    // --force replaces the pair.
    let o = issue(&api, &out_dir, &["--force"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_ne!(fs::read(&key).unwrap(), before);
    assert_eq!(mode(&key), 0o600);

    // Authenticated as ha-vip-node, denied until rbac.yaml exists.
    let node = Credential::Kubeconfig(kc.clone());
    let client = api.client(node.clone(), request_timeout(T.renew_deadline));
    let lease = KubeLeaseStore::new(client.clone(), "kube-system", "ha-vip");
    let e = lease.get().await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    api.apply(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/rbac.yaml"))
        .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while lease.get().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("rbac.yaml did not take effect within 10 s");

    // It takes and renews the Lease.
    let (campaign, crx) = watch::channel(true);
    let (etx, mut events) = mpsc::channel(1024);
    tokio::spawn(Elector::new(lease.clone(), "cred-node", T).run(crx, etx));
    let acquired = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await.unwrap() {
                LeaseEvent::Acquired { .. } => return,
                LeaseEvent::RequestFailed { error, .. } => panic!("refused: {error}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(acquired.is_ok(), "no Acquired within 15 s");
    campaign.send(false).unwrap();

    // And nothing else: other Leases, listing, Secrets, ConfigMaps, Pods.
    let other = KubeLeaseStore::new(client.clone(), "kube-system", "someone-elses-lease");
    let e = other.get().await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    forbidden(
        client.get(&op("list", "leases"), leases).await,
        "list leases",
    );
    for (resource, path) in [
        ("secrets", "/api/v1/namespaces/kube-system/secrets"),
        ("secrets", "/api/v1/namespaces/kube-system/secrets/anything"),
        ("configmaps", "/api/v1/namespaces/kube-system/configmaps"),
        ("pods", "/api/v1/namespaces/kube-system/pods"),
        ("nodes", "/api/v1/nodes"),
    ] {
        forbidden(client.get(&op("get", resource), path).await, path);
    }
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "kube-system"},
    });
    forbidden(
        client
            .post(
                &op("create", "configmaps"),
                "/api/v1/namespaces/kube-system/configmaps",
                &body,
            )
            .await,
        "create configmap",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_the_daemon_runs_on_the_issued_credential_and_warns_on_masters() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    // The whole documented setup: the RBAC and the cluster view's CRD.
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes");
    api.apply(&packaging.join("virtualip-crd.yaml")).await;
    api.apply(&packaging.join("rbac.yaml")).await;
    let bed = Testbed::new(&api, 1, "cred");
    let out_dir = bed.dir.path().join("etc-ha-vip");
    let o = issue(&api, &out_dir, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The same node config twice: the issued kubeconfig, then the admin one.
    let config = |name: &str, kubeconfig: &Path| {
        let run_dir = bed.dir.path().join(format!("run-{name}"));
        fs::create_dir_all(&run_dir).unwrap();
        let path = bed.dir.path().join(format!("{name}.yaml"));
        fs::write(
            &path,
            format!(
                "node_name: {name}\ninterface: eth0\nvips: [{vip}]\nrun_dir: {run}\nlease:\n  name: ha-vip\nk8s:\n  kubeconfig: {kc}\nhealth:\n  interval: 500ms\n  timeout: 400ms\n  stability_buffer: 1s\n",
                vip = bed.lab.vip(),
                run = run_dir.display(),
                kc = kubeconfig.display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    };

    let cfg = config("least", &out_dir.join("kubeconfig"));
    let mut node = Node::from_config(&bed.lab.nodes[0], "least", &cfg, bed.dir.path());
    node.start();
    let start = Instant::now();
    while !bed.lab.has_vip(0) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        bed.lab.has_vip(0),
        "no VIP with the issued credential:\n{}",
        node.log_text()
    );
    let log = node.log_text();
    assert!(!log.contains("system:masters"), "{log}");
    assert!(
        !log.contains("WARN"),
        "a least-privilege setup warns of nothing:\n{log}"
    );
    node.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        node.wait(Duration::from_secs(10)),
        Some(0),
        "{}",
        node.log_text()
    );

    // The harness's admin certificate is in system:masters (as kubeadm's admin.conf).
    let admin = PathBuf::from(api.var("KUBECONFIG_ADMIN_CERT"));
    let cfg = config("admin", &admin);
    let mut node = Node::from_config(&bed.lab.nodes[0], "admin", &cfg, bed.dir.path());
    node.start();
    assert!(
        log_contains(&node, "ha-vip credential issue", Duration::from_secs(10)),
        "{}",
        node.log_text()
    );
    let log = node.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ha-vip credential issue"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("system:masters") && line.contains("rbac.yaml"),
        "{line}"
    );
}
