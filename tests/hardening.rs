//! Process hardening of the real binary: no core dumps, no ptrace by
//! processes of the same user (issue: no key material in core dumps).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An unprivileged uid/gid (nobody) so that /proc/PID's owner tells whether
/// the process is dumpable: the kernel shows a non-dumpable process's
/// /proc/PID/* as owned by root.
const NOBODY: u32 = 65534;

#[test]
fn the_binary_makes_itself_non_dumpable_before_reading_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Reading the configuration blocks on the FIFO until we open it for
    // writing: the process is then past `main`'s start, before any parse.
    let child = Command::new(env!("CARGO_BIN_EXE_ha-vip"))
        .arg("check-config")
        .arg(&fifo)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let proc_dir = format!("/proc/{}", child.id());
    let start = Instant::now();
    loop {
        let wchan = std::fs::read_to_string(format!("{proc_dir}/wchan")).unwrap_or_default();
        if wchan.contains("fifo") || wchan.contains("partner") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ha-vip never blocked on the config FIFO (wchan {wchan:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The files under /proc/PID (not the directory itself) take the owner.
    let owner = std::fs::metadata(format!("{proc_dir}/status"))
        .unwrap()
        .uid();
    // Let it finish: an empty configuration is an error (exit 78).
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        owner, 0,
        "/proc/PID/status of ha-vip running as uid {NOBODY} is owned by {owner}: the process is dumpable"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("non-dumpable"), "prctl failed: {stderr}");
}
