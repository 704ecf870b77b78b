//! Files ha-vip writes as root or reads secrets from: the status file never
//! follows a planted link, an unsafe run_dir stops `run` with the fix, and
//! a credential file open to other users is a warning in `run` and
//! `check-config`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use ha_vip::observe::{Status, StatusWriter};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn ha_vip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ha-vip"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run ha-vip")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A config that cannot touch the host: no such interface, metrics off.
fn config(dir: &Path, k8s: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    fs::write(
        &path,
        format!(
            "node_name: cp1\ninterface: hvnone0\nvips: [10.0.0.100]\nmetrics:\n  enabled: false\nk8s:\n{k8s}{extra}"
        ),
    )
    .unwrap();
    chmod(&path, 0o600);
    path
}

/// A valid kubeconfig with a client certificate and key in files beside it,
/// all 0600; returns (kubeconfig, key).
fn kubeconfig(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "test-ca");
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, "ha-vip-node");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let files = [
        ("ca.crt", ca_cert.pem()),
        ("client.crt", cert.pem()),
        ("client.key", key.serialize_pem()),
        (
            "kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    client-certificate: client.crt\n    client-key: client.key\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n".to_string(),
        ),
    ];
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
        chmod(&dir.join(name), 0o600);
    }
    (dir.join("kubeconfig"), dir.join("client.key"))
}

#[test]
fn a_link_planted_at_the_old_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    // The name the writer used to use: predictable from the pid.
    let planted = dir
        .path()
        .join(format!(".status.json.{}.tmp", std::process::id()));
    symlink(&victim, &planted).unwrap();
    let path = dir.path().join("status.json");
    let mut w = StatusWriter::new(&path);
    assert!(
        w.write(&Status::new("cp1", &[], SystemTime::now()))
            .unwrap()
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("\"node_name\": \"cp1\"")
    );
    // Nothing but the link, the victim and the status file is left.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn a_world_writable_run_dir_stops_run_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    fs::create_dir(&run_dir).unwrap();
    chmod(&run_dir, 0o777);
    let cfg = config(
        dir.path(),
        "  kubeconfig: /nonexistent/admin.conf\n",
        &format!("run_dir: {}\n", run_dir.display()),
    );
    let o = ha_vip(&["run", "-c", cfg.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "run_dir {} is writable by group or others",
            run_dir.display()
        )) && err.contains("mode 0777")
            && err.contains(&format!("chmod 0755 {}", run_dir.display())),
        "{err}"
    );
    assert!(!run_dir.join("status.json").exists());

    // Fixed as told, it gets past the check (and stops at the missing credential).
    chmod(&run_dir, 0o755);
    let o = ha_vip(&["run", "-c", cfg.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert!(!err.contains("run_dir"), "{err}");
    assert!(err.contains("/nonexistent/admin.conf"), "{err}");
}

#[test]
fn a_0644_client_key_warns_in_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let (kc, key) = kubeconfig(dir.path());
    let run_dir = dir.path().join("run");
    let cfg = config(
        dir.path(),
        &format!("  kubeconfig: {}\n", kc.display()),
        &format!("run_dir: {}\n", run_dir.display()),
    );
    let cfg = cfg.to_str().unwrap();

    let o = ha_vip(&["check-config", cfg]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));

    chmod(&key, 0o644);
    let want = format!(
        "client-key of kubeconfig {}: {} has mode 0644: group or others can read it, and it holds the cluster credential; fix: chmod 0600 {}",
        kc.display(),
        key.display(),
        key.display()
    );
    let o = ha_vip(&["check-config", cfg]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("warning: {want}")),
        "{}",
        text(&o.stderr)
    );

    // `run` says the same in its log; an unsafe run_dir then stops it
    // before it does anything.
    fs::create_dir(&run_dir).unwrap();
    chmod(&run_dir, 0o777);
    let o = ha_vip(&["run", "-c", cfg]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("WARN") && log.contains(&want), "{log}");

    // The kubeconfig itself, and a key owned by another user, warn too.
    chmod(&key, 0o600);
    chmod(&kc, 0o604);
    nix::unistd::chown(&key, Some(nix::unistd::Uid::from_raw(4242)), None)
        .expect("tests run as root");
    let o = ha_vip(&["check-config", cfg]);
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "warning: k8s.kubeconfig: {} has mode 0604",
            kc.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} is owned by uid 4242, not root", key.display())),
        "{err}"
    );
}
