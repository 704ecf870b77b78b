//! Fuzzing the kubeconfig loader on stable: random edits of a valid
//! kubeconfig (client certificate, key and CA inline and in files),
//! arbitrary text and bytes, loaded the way `ha-vip run` loads them. It must
//! never panic, and every error must name the kubeconfig or the file it
//! points at.
//!
//! Cases per property: HAVIP_FUZZ_CASES (default 256).

use std::fs;
use std::path::Path;

use base64::Engine;
use ha_vip::config::{Credential, K8s};
use ha_vip::kube::Credentials;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rcgen::{CertificateParams, DnType, KeyPair};

fn cases() -> u32 {
    std::env::var("HAVIP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// A valid kubeconfig text with everything inline, written once.
fn valid() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "ha-vip-node");
        let cert = p.self_signed(&key).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
            ca = b64(&cert.pem()),
            cert = b64(&cert.pem()),
            key = b64(&key.serialize_pem()),
        )
    })
}

fn load(dir: &Path, text: &[u8]) {
    let path = dir.join("kubeconfig");
    fs::write(&path, text).unwrap();
    let k8s = K8s {
        enabled: true,
        api_server: "https://127.0.0.1:6443".into(),
        credential: Credential::Kubeconfig(path.clone()),
        ca_cert: None,
        tls_server_name: "kubernetes".into(),
        insecure_skip_tls_verify: false,
    };
    if let Err(e) = Credentials::load(&k8s) {
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()) || msg.contains("kubeconfig"),
            "error names neither the kubeconfig nor its files: {msg:?}"
        );
    }
}

/// Replaces `len` bytes at `at` (both wrapped into range) with `with`.
fn splice(text: &str, at: usize, len: usize, with: &str) -> String {
    let mut s = text.to_string();
    let mut p = at % (s.len() + 1);
    while !s.is_char_boundary(p) {
        p -= 1;
    }
    let mut end = (p + len).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.replace_range(p..end.max(p), with);
    s
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Integration tests have no lib.rs beside them for proptest's default.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz_kubeconfig.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn edited_kubeconfigs_never_panic(
        edits in proptest::collection::vec(
            (any::<usize>(), 0usize..40, prop_oneof![
                "[ -~]{0,6}",
                Just("\n".to_string()),
                Just(": ".to_string()),
                Just("client-key: /nonexistent".to_string()),
                Just("tokenFile: ../../etc/shadow".to_string()),
                Just("=".to_string()),
                Just("current-context: \"\"".to_string()),
                Just("\n- name: u\n  user: {}\n".to_string()),
            ]),
            1..6,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = valid().to_string();
        for (at, len, with) in &edits {
            text = splice(&text, *at, *len, with);
        }
        load(dir.path(), text.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path(), &bytes);
    }

    #[test]
    fn yaml_noise_never_panics(text in "[ -~\n]{0,400}") {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path(), text.as_bytes());
    }
}

#[test]
fn the_valid_kubeconfig_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fs::write(&path, valid()).unwrap();
    let k8s = K8s {
        enabled: true,
        api_server: "https://127.0.0.1:6443".into(),
        credential: Credential::Kubeconfig(path),
        ca_cert: None,
        tls_server_name: "kubernetes".into(),
        insecure_skip_tls_verify: false,
    };
    Credentials::load(&k8s).unwrap();
}
