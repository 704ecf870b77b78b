//! docs/operations.md followed as written, as far as a machine without
//! systemd allows: section 3a's `ha-vip credential issue` (and its openssl
//! recipe) make a dedicated client certificate and kubeconfig (paths moved into a temporary directory, the
//! harness's client CA standing in for /etc/kubernetes/pki/ca.crt), the
//! shipped packaging/kubernetes/rbac.yaml is applied, section 2's
//! configuration passes `ha-vip check-config`, and `ha-vip run` (what
//! `systemctl enable --now ha-vip` starts) takes the Lease and the VIP with
//! nothing but that least-privilege credential.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::node::{Node, binary};
use common::lab::{Lab, forward::Forwarder};
use ha_vip::lease::{KubeLeaseStore, LeaseStore};

/// The first ```sh block after `marker` in the guide.
fn guide_block(marker: &str) -> String {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let from = guide
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in docs/operations.md"));
    let rest = &guide[from..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = rest[start..].find("\n```").expect("end of the block");
    rest[start..start + len].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_the_operations_guide_credential_path_works() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let pki = root.path().join("etc/kubernetes/pki");
    let etc = root.path().join("etc/ha-vip");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::create_dir_all(&etc).unwrap();
    // kubeadm's ca.crt signs client certificates and the serving
    // certificate; the harness has one CA for each, so the stand-in bundle
    // holds both (the client CA first: it is the one that signs).
    let bundle = [api.var("KUBE_CLIENT_CA"), api.var("KUBE_CA")]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    std::fs::write(pki.join("ca.crt"), bundle).unwrap();
    std::fs::copy(api.var("KUBE_CLIENT_CA_KEY"), pki.join("ca.key")).unwrap();

    // Section 3a, as written, with the paths moved: the one command, and
    // the by-hand openssl recipe after it.
    let bin_dir = binary().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for marker in [
        "**a) A dedicated client certificate",
        "By hand, or with a CA that is not on the node",
    ] {
        let script = guide_block(marker)
            .replace("/etc/kubernetes/pki/", &format!("{}/", pki.display()))
            .replace("/etc/ha-vip", &etc.display().to_string());
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "guide 3a failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        etc.join("ha-vip.kubeconfig").exists(),
        "the openssl recipe's kubeconfig"
    );
    let kubeconfig = etc.join("kubeconfig");
    assert!(kubeconfig.exists());

    // The shipped RBAC, applied as the guide says (kubectl apply -f rbac.yaml).
    api.apply(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/rbac.yaml"))
        .await;

    // Section 2's configuration, in a lab node.
    let lab = Lab::new(1);
    let target = api.server().trim_start_matches("https://").parse().unwrap();
    let _fwd = Forwarder::start(&lab.nodes[0], "0.0.0.0:6443".parse().unwrap(), target);
    let config = etc.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "node_name: cp1\ninterface: eth0\nvips: [{vip}]\nrun_dir: {run}\n\
             k8s:\n  api_server: https://127.0.0.1:6443\n  tls_server_name: kubernetes\n  kubeconfig: {kc}\n",
            vip = lab.vip(),
            run = root.path().join("run").display(),
            kc = kubeconfig.display(),
        ),
    )
    .unwrap();
    let check = Command::new(binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.starts_with("OK: "),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // `systemctl enable --now ha-vip` starts `ha-vip run --config ...`.
    let mut node = Node::from_config(&lab.nodes[0], "cp1", &config, root.path());
    node.start();
    let start = Instant::now();
    while !lab.has_vip(0) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lab.has_vip(0),
        "no VIP with the guide's credential\n{}",
        node.log_text()
    );
    let lease = KubeLeaseStore::new(api.admin(), "kube-system", "ha-vip")
        .get()
        .await
        .unwrap()
        .expect("lease");
    assert_eq!(lease.record.holder, "cp1");
    // `ip addr` shows the fence: a finite valid_lft and preferred_lft 0.
    let out = common::lab::ns_exec(&lab.nodes[0], &["ip", "addr", "show", "dev", "eth0"]);
    let addr = String::from_utf8_lossy(&out.stdout);
    assert!(
        addr.contains("eth0:vip") && addr.contains("preferred_lft 0sec"),
        "{addr}"
    );
    assert!(
        !addr.contains(&format!(
            "{}/32 scope global eth0:vip\n       valid_lft forever",
            lab.vip()
        )),
        "{addr}"
    );
}
