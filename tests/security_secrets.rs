//! No secret in any output: a recognisable secret is planted next to an
//! error in each kind of file ha-vip parses (config, kubeconfig, token file,
//! PEM key) and the real binary's `run`, `check-config` and `status` must
//! not print it, in any encoding a parser error could use.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ha-vip");

fn secret() -> String {
    format!("HAVIP-PLANTED-SECRET-{}", std::process::id())
}

/// The forms a parser could print the secret in: as text, and as the
/// decimal byte list of a `Vec<u8>`'s Debug (rustls-pki-types' PEM errors).
fn forms(secret: &str) -> Vec<String> {
    let bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
    vec![secret.to_string(), bytes.join(", ")]
}

fn output(mut child: Child, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().expect("wait").is_none() {
        // Still running (the credential loaded): stop it as systemd would.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let o = child.wait_with_output().expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "trace")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ha-vip starts")
}

/// Runs `run` (for up to 4 s), then `status` while it may still run, and
/// `check-config`; returns each command's output.
fn outputs(config: &Path) -> Vec<(&'static str, String)> {
    let c = config.display().to_string();
    let run = spawn(&["run", "-c", &c]);
    std::thread::sleep(Duration::from_millis(2500));
    let status = output(spawn(&["status", "-c", &c]), Duration::from_secs(5));
    let status_json = output(
        spawn(&["status", "--json", "-c", &c]),
        Duration::from_secs(5),
    );
    let run = output(run, Duration::from_millis(1500));
    let check = output(spawn(&["check-config", &c]), Duration::from_secs(5));
    vec![
        ("run", run),
        ("status", status),
        ("status --json", status_json),
        ("check-config", check),
    ]
}

fn assert_no_secret(case: &str, config: &Path, expect_in_some: &str) {
    let secret = secret();
    let outs = outputs(config);
    for (cmd, out) in &outs {
        for form in forms(&secret) {
            assert!(
                !out.contains(&form),
                "{case}: `ha-vip {cmd}` printed the secret ({form}):\n{out}"
            );
        }
    }
    // The commands did report the problem (the test is not vacuous).
    assert!(
        outs.iter().any(|(_, o)| o.contains(expect_in_some)),
        "{case}: no output names {expect_in_some:?}: {outs:#?}"
    );
}

/// A config around `k8s` lines, with a run dir, a closed API port and no
/// metrics listener, so that `run` touches nothing of the host's.
fn config(dir: &Path, k8s: &str) -> std::path::PathBuf {
    let run_dir = dir.join("run");
    fs::create_dir_all(&run_dir).unwrap();
    let p = dir.join("config.yaml");
    fs::write(
        &p,
        format!(
            "node_name: cp1\ninterface: hvnone0\nvips: [10.0.0.100]\nmetrics:\n  enabled: false\nrun_dir: {}\nhealth:\n  endpoint: https://127.0.0.1:1/readyz\nk8s:\n  api_server: https://127.0.0.1:1\n{k8s}",
            run_dir.display()
        ),
    )
    .unwrap();
    p
}

fn ca(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("ca.crt");
    let c = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap();
    fs::write(&p, c.cert.pem()).unwrap();
    p
}

#[test]
fn a_config_error_next_to_an_inline_token_does_not_print_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = secret();
    let cfg = config(
        dir.path(),
        &format!(
            "  token: {s}\n  token: {s}-2\n  ca_cert: {}\n",
            ca(dir.path()).display()
        ),
    );
    assert_no_secret("config", &cfg, "token is set twice");
}

#[test]
fn a_kubeconfig_error_next_to_a_token_does_not_print_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = secret();
    let kc = dir.path().join("kubeconfig");
    fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    token: {s}\n    token: {s}-2\n",
            ca(dir.path()).display()
        ),
    )
    .unwrap();
    let cfg = config(dir.path(), &format!("  kubeconfig: {}\n", kc.display()));
    assert_no_secret("kubeconfig", &cfg, "token is set twice");
    // And a kubeconfig whose user is written on one line with the token.
    fs::write(
        &kc,
        format!(
            "current-context: x\nclusters:\n- name: c\n  cluster: {{server: s}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: token:{s}\n"
        ),
    )
    .unwrap();
    assert_no_secret("kubeconfig, flat user", &cfg, "kubeconfig");
}

#[test]
fn a_token_file_error_does_not_print_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = secret();
    let tok = dir.path().join("token");
    // Two lines: no valid bearer token.
    fs::write(&tok, format!("{s}\n{s}-2\n")).unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "  token_file: {}\n  ca_cert: {}\n",
            tok.display(),
            ca(dir.path()).display()
        ),
    );
    assert_no_secret("token file", &cfg, "line breaks");
}

#[test]
fn a_pem_error_does_not_print_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = secret();
    let cert = rcgen::generate_simple_self_signed(vec!["ha-vip-node".into()]).unwrap();
    let crt = dir.path().join("client.crt");
    fs::write(&crt, cert.cert.pem()).unwrap();
    let key = dir.path().join("client.key");
    // A malformed BEGIN line (no closing dashes) holding the secret.
    fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY {s}\nAAAA\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let kc = dir.path().join("kubeconfig");
    fs::write(
        &kc,
        format!(
            "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            ca(dir.path()).display(),
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    let cfg = config(dir.path(), &format!("  kubeconfig: {}\n", kc.display()));
    assert_no_secret("PEM key", &cfg, "client key");
}
