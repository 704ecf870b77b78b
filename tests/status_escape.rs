//! `ha-vip status` cannot be made to lie to a terminal: the Lease holder
//! and the probe's failure reason come from other machines (a Lease any
//! RBAC-allowed writer can set, an HTTP body from whatever listens on the
//! probe port), and reach the operator's terminal through the status file.

use std::time::{Duration, SystemTime};

use ha_vip::config::Vip;
use ha_vip::observe::{Role, Status, StatusWriter, TransitionReason};

/// A holder that would retitle the terminal, clear the screen, forge a
/// "health: healthy" line and reverse the text after it.
const HOSTILE_HOLDER: &str =
    "cp9\u{1b}]0;owned\u{7}\u{1b}[2J\r\nhealth:          healthy\u{202e}txt";
const HOSTILE_REASON: &str = "HTTP 503: \u{1b}[31mred\u{1b}[0m\u{9b}1m\nforged line";

#[test]
fn status_escapes_control_characters_from_the_lease_and_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nrun_dir: {}\nk8s:\n  enabled: false\nhealth:\n  insecure_skip_tls_verify: true\n",
            run_dir.display()
        ),
    )
    .unwrap();
    let vip = Vip {
        addr: "10.0.0.100".parse().unwrap(),
        prefix_len: 32,
    };
    let now = SystemTime::now();
    let mut s = Status::new("cp1", &[vip], now - Duration::from_secs(60));
    s.transition(
        Role::Follower,
        TransitionReason::Started,
        now - Duration::from_secs(59),
    );
    s.holder = Some(HOSTILE_HOLDER.into());
    s.record_probe(false, HOSTILE_REASON, now - Duration::from_secs(1));
    // The status file names this (live) process as the daemon.
    StatusWriter::new(run_dir.join("status.json"))
        .write(&s)
        .unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-vip"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bad: Vec<char> = stdout
        .chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect();
    assert!(
        bad.is_empty(),
        "raw control characters {bad:?} in:\n{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("health:")).count(),
        1,
        "a forged line:\n{stdout}"
    );
    assert!(stdout.contains(r"cp9\u{1b}]0;owned\u{7}"), "{stdout}");
    assert!(stdout.contains(r"\u{1b}[31mred"), "{stdout}");
}
