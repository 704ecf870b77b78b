//! Credentials that rotate, against the real kube-apiserver: the client
//! certificate and key of a Lease holder are replaced at the same paths;
//! the holder keeps the Lease, and its renewals go on with the new
//! certificate even once the old identity has lost its RBAC grant.

#[path = "common/apiserver.rs"]
mod apiserver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apiserver::ApiServer;
use ha_vip::config::Credential;
use ha_vip::kube::{Credentials, KubeClient, Operation, request_timeout};
use ha_vip::lease::{Elector, KubeLeaseStore, LeaseEvent, Timings};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout};

const T: Timings = Timings {
    duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(500),
};

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A client certificate (v3, clientAuth) for `subject` from the harness'
/// client CA, as `name.crt` and `name.key` in `dir`.
fn issue(api: &ApiServer, dir: &Path, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let (ca, ca_key) = (api.var("KUBE_CLIENT_CA"), api.var("KUBE_CLIENT_CA_KEY"));
    let (crt, key, csr) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    std::fs::write(
        dir.join("ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext",
            "-out",
            &crt,
        ],
    );
    (dir.join(crt), dir.join(key))
}

/// Replaces `to` by `from` atomically, as renewal tools do.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn binding(name: &str, subject: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "kube-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ha-vip"},
        "subjects": [subject],
    })
}

fn op(verb: &'static str, resource: &'static str) -> Operation {
    Operation {
        verb,
        resource,
        namespace: Some("kube-system".into()),
        name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_in_place_is_used_without_losing_the_lease() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Role ha-vip, bound to user ha-vip-node (the new certificate's user).
    api.apply(&root.join("packaging/kubernetes/rbac.yaml"))
        .await;
    // The old certificate's group gets the same Role through its own binding.
    let admin = api.admin();
    let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings";
    let old_subject = serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ha-vip:old"});
    let _: serde_json::Value = admin
        .post(
            &op("create", "rolebindings"),
            bindings,
            &binding("ha-vip-old", old_subject),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_crt, old_key) = issue(&api, d, "old", "/O=ha-vip:old/CN=ha-vip-old");
    let (new_crt, new_key) = issue(&api, d, "new", "/CN=ha-vip-node");
    let (crt, key) = (d.join("client.crt"), d.join("client.key"));
    replace(&old_crt, &crt);
    replace(&old_key, &key);
    let kc = d.join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    client-certificate: client.crt\n    client-key: client.key\n",
            api.server(),
            api.ca().display()
        ),
    )
    .unwrap();
    let k8s = api.k8s(Credential::Kubeconfig(kc));
    let creds = Credentials::load(&k8s).unwrap();
    let cn = |c: &Credentials| c.client_certificate().and_then(|i| i.common_name);
    assert_eq!(cn(&creds).as_deref(), Some("ha-vip-old"));
    let client = KubeClient::new(&k8s, creds.clone(), request_timeout(T.renew_deadline)).unwrap();
    let store = KubeLeaseStore::new(client, "kube-system", "ha-vip");
    let (_campaign, crx) = watch::channel(true);
    let (etx, mut events) = mpsc::channel(1024);
    let _elector = tokio::spawn(Elector::new(store, "node-a", T).run(crx, etx));
    timeout(Duration::from_secs(15), async {
        while !matches!(events.recv().await, Some(LeaseEvent::Acquired { .. })) {}
    })
    .await
    .expect("node-a acquires the Lease with the old certificate");

    // Renewal: key and certificate replaced at the same paths, one after
    // the other (a moment of mismatch the reload must ride out).
    replace(&new_key, &key);
    sleep(Duration::from_millis(200)).await;
    replace(&new_crt, &crt);
    let started = Instant::now();
    while cn(&creds).as_deref() != Some("ha-vip-node") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the new certificate was not loaded"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let picked_up = started.elapsed();
    eprintln!(
        "the new certificate was in use {} ms after it was written",
        picked_up.as_millis()
    );

    // Revoke the old identity: renewals made with it now get 403.
    let path = format!("{bindings}/ha-vip-old");
    let mut rb: serde_json::Value = admin.get(&op("get", "rolebindings"), &path).await.unwrap();
    rb["subjects"] = serde_json::json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}]);
    let _: serde_json::Value = admin
        .put(&op("update", "rolebindings"), &path, &rb)
        .await
        .unwrap();
    while events.try_recv().is_ok() {}

    // Longer than the lease duration: the holder keeps renewing.
    let watch_for = T.duration + Duration::from_secs(2);
    let mut renewed = 0;
    let until = Instant::now() + watch_for;
    while let Ok(Some(ev)) = timeout(
        until.saturating_duration_since(Instant::now()),
        events.recv(),
    )
    .await
    {
        match ev {
            LeaseEvent::Renewed { .. } => renewed += 1,
            LeaseEvent::Lost { reason, .. } => {
                panic!("lost the Lease after the rotation: {reason:?}")
            }
            LeaseEvent::RequestFailed { error, .. } => {
                panic!("a request failed after the rotation: {error}")
            }
            _ => {}
        }
    }
    assert!(renewed >= 8, "only {renewed} renewals in {watch_for:?}");
    let lease: serde_json::Value = admin
        .get(
            &op("get", "leases.coordination.k8s.io"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ha-vip",
        )
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "node-a");
    assert_eq!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
        0,
        "{lease}"
    );
}
