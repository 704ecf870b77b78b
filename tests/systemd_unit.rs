//! systemd/ha-vip.service passes `systemd-analyze verify` and keeps its
//! `systemd-analyze security` exposure at the measured level.
//!
//! Needs `systemd-analyze` (Debian package `systemd`); without it the tests
//! fail when `CI` is set and are skipped with a note otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../systemd/ha-vip.service");

/// Measured 1.9 with systemd 252 (Debian bookworm) since the loopback-only
/// IP allow list (2.1 before it); a loosened sandbox raises it by at least
/// 0.1 per lost setting.
const MAX_EXPOSURE: f64 = 1.9;

/// What remains exposed, each for a reason given in the unit's comments:
/// the job (host network, netlink, packet and IP sockets, the two network
/// capabilities), reading root-only credentials (root, no user namespace),
/// ProtectClock's implicit read access to /dev/rtc, and an IP allow list
/// (localhost only) that the analyzer still scores 0.1.
const ACCEPTED: &[&str] = &[
    "RootDirectory=/RootImage=",
    "User=/DynamicUser=",
    "RestrictAddressFamilies=~AF_PACKET",
    "RestrictAddressFamilies=~AF_NETLINK",
    "RestrictAddressFamilies=~AF_UNIX",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "CapabilityBoundingSet=~CAP_NET_ADMIN",
    "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
    "PrivateNetwork=",
    "PrivateUsers=",
    "DeviceAllow=",
    "IPAddressDeny=",
];

/// `systemd-analyze`, or `None` (a failure under CI) when it is not installed.
fn analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing: install the Debian package `systemd`"
        );
        eprintln!("SKIPPED: systemd-analyze not installed (apt-get install systemd)");
    }
    found
}

/// The unit with its binary pointed at the one cargo built (verify checks
/// that ExecStart= and ExecStopPost= exist), in a directory of its own.
fn unit_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha-vip.service");
    let unit = UNIT.replace("/usr/bin/ha-vip", env!("CARGO_BIN_EXE_ha-vip"));
    assert_ne!(unit, UNIT, "the unit no longer runs /usr/bin/ha-vip");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

fn run(analyze: &Path, args: &[&str]) -> (Output, String, String) {
    let out = Command::new(analyze).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn unit_verifies_clean() {
    let Some(analyze) = analyze() else { return };
    let (_dir, unit) = unit_copy();
    let (out, stdout, stderr) = run(&analyze, &["verify", unit.to_str().unwrap()]);
    assert!(
        out.status.success() && stdout.is_empty() && stderr.is_empty(),
        "systemd-analyze verify: {}\n{stdout}{stderr}",
        out.status
    );
}

#[test]
fn unit_keeps_its_security_exposure() {
    let Some(analyze) = analyze() else { return };
    let (_dir, unit) = unit_copy();
    let (out, stdout, stderr) = run(
        &analyze,
        &["security", "--offline=true", unit.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}\n{stdout}{stderr}", out.status);

    let overall = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for ha-vip.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{stdout}"));
    eprintln!("systemd-analyze security: overall exposure {overall}");

    let failed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('✗'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let unexpected: Vec<&&str> = failed.iter().filter(|f| !ACCEPTED.contains(f)).collect();
    assert!(
        unexpected.is_empty(),
        "newly exposed: {unexpected:?} (harden the unit, or justify and add to ACCEPTED)\n{stdout}"
    );
    assert!(
        overall <= MAX_EXPOSURE,
        "exposure {overall} > {MAX_EXPOSURE}\n{stdout}"
    );
}

/// The settings whose loss `systemd-analyze security` does not score but
/// that keep secrets out of reach: no core dumps (key material), and IP
/// traffic only on loopback.
#[test]
fn unit_forbids_core_dumps_and_non_local_ip() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for wanted in [
        "LimitCORE=0",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    ] {
        assert!(lines.contains(&wanted), "the unit lacks {wanted}");
    }
}
