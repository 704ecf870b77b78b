//! Client certificates as openssl makes them, against the real
//! kube-apiserver: an X.509 v1 certificate (`openssl x509 -req` without
//! `-extfile` on OpenSSL 3) is used as kubectl uses it; a key that does not
//! match or cannot sign is refused with what to do.

#[path = "common/apiserver.rs"]
mod apiserver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apiserver::ApiServer;
use ha_vip::config::Credential;
use ha_vip::kube::{Credentials, KubeClient, Operation};

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

/// A client certificate for `cn` signed by the harness' client CA, with
/// no extensions: X.509 v1.
fn v1_cert(api: &ApiServer, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (ca, ca_key) = (api.var("KUBE_CLIENT_CA"), api.var("KUBE_CLIENT_CA_KEY"));
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "v1.key",
        ],
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-new", "-key", "v1.key", "-subj", &subj, "-out", "v1.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "v1.csr",
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "v1.crt",
        ],
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "v1.crt"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Version: 1 (0x0)"),
        "not a v1 certificate:\n{text}"
    );
    (dir.join("v1.crt"), dir.join("v1.key"))
}

fn kubeconfig(api: &ApiServer, dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let kc = dir.join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            api.server(),
            api.ca().display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    kc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_client_certificate_authenticates_like_with_kubectl() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = v1_cert(&api, dir.path(), "ha-vip-v1");

    // rustls itself refuses it: the reason ha-vip reads the certificate itself.
    let der = rustls_pki_types::pem::PemObject::from_pem_file(&cert).unwrap();
    let key_der = rustls_pki_types::pem::PemObject::from_pem_file(&key).unwrap();
    let refused = rustls::sign::CertifiedKey::from_der(
        vec![der],
        key_der,
        &rustls::crypto::ring::default_provider(),
    );
    assert!(
        format!("{:?}", refused.err()).contains("UnsupportedCertVersion"),
        "rustls now accepts v1 certificates; the workaround in src/kube/tls.rs may go"
    );

    let kc = kubeconfig(&api, dir.path(), &cert, &key);
    let k8s = api.k8s(Credential::Kubeconfig(kc));
    let creds = Credentials::load(&k8s).expect("a v1 certificate loads");
    let info = creds.client_certificate().expect("a client certificate");
    assert_eq!(info.version, 1);
    assert_eq!(info.common_name.as_deref(), Some("ha-vip-v1"));
    let client = KubeClient::new(&k8s, creds, Duration::from_secs(5)).expect("client");
    let op = Operation {
        verb: "get",
        resource: "leases.coordination.k8s.io",
        namespace: Some("kube-system".into()),
        name: Some("ha-vip".into()),
    };
    // Authenticated as ha-vip-v1 (not 401, not a TLS error); RBAC grants
    // this new user nothing, so the API server answers 403 naming it.
    let e = client
        .get::<serde_json::Value>(
            &op,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ha-vip",
        )
        .await
        .expect_err("no RBAC for this user");
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("User \"ha-vip-v1\""), "{e}");
}

#[test]
fn a_key_of_another_certificate_or_a_type_ring_cannot_sign_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "a.key",
            "-out",
            "a.crt",
            "-subj",
            "/CN=a",
            "-days",
            "1",
        ],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "b.key",
        ],
    );
    openssl(d, &["genpkey", "-algorithm", "ED448", "-out", "ed.key"]);
    openssl(
        d,
        &[
            "req", "-x509", "-key", "ed.key", "-out", "ed.crt", "-subj", "/CN=ed", "-days", "1",
        ],
    );
    let load = |crt: &str, key: &str| {
        let kc = d.join(format!("{crt}.kubeconfig"));
        std::fs::write(
            &kc,
            format!(
                "current-context: x\nclusters:\n- name: c\n  cluster: {{server: s}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n"
            ),
        )
        .unwrap();
        let k8s = ha_vip::config::K8s {
            enabled: true,
            api_server: "https://127.0.0.1:6443".into(),
            credential: Credential::Kubeconfig(kc),
            ca_cert: None,
            tls_server_name: "kubernetes".into(),
            insecure_skip_tls_verify: false,
        };
        Credentials::load(&k8s).map(|_| ()).unwrap_err().to_string()
    };
    let e = load("a.crt", "b.key");
    assert!(
        e.contains("does not belong to the client certificate"),
        "{e}"
    );
    let e = load("ed.crt", "ed.key");
    assert!(e.contains("cannot sign with this key"), "{e}");
    assert!(e.contains("ECDSA P-256"), "{e}");
}
