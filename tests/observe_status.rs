//! The status file on a real filesystem and `ha-vip status`'s output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ha_vip::config::Vip;
use ha_vip::observe::{Role, Status, StatusError, StatusWriter, TransitionReason, write_status};

fn vip(s: &str) -> Vip {
    let (addr, len) = s.split_once('/').unwrap();
    Vip {
        addr: addr.parse().unwrap(),
        prefix_len: len.parse().unwrap(),
    }
}

fn t(secs: u64) -> SystemTime {
    // 2024-05-01T12:00:00Z plus `secs`.
    UNIX_EPOCH + Duration::from_secs(1_714_564_800 + secs)
}

/// A leader that took over at 12:03:04 and last probed at 12:06:03.6.
fn leader() -> Status {
    let mut s = Status::new("cp1", &[vip("10.0.0.100/32"), vip("fd00::100/128")], t(0));
    s.transition(Role::Follower, TransitionReason::Started, t(1));
    s.transition(Role::Leader, TransitionReason::AcquiredLease, t(184));
    s.holder = Some("cp1".into());
    s.healthy = true;
    s.record_probe(true, "ok", t(363) + Duration::from_millis(600));
    s.set_vip_present(&vip("10.0.0.100/32"), true);
    s
}

/// Runs the status command body; returns (exit code, stdout, stderr).
fn run(path: &Path, json: bool, now: SystemTime) -> Result<(i32, String, String), StatusError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = write_status(path, json, now, &mut out, &mut err)?;
    Ok((
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    ))
}

/// A pid that existed and no longer does.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn written_atomically_with_modes_and_only_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run/ha-vip");
    let path = run_dir.join("status.json");
    let mut w = StatusWriter::new(&path);
    let mut s = leader();

    assert!(w.write(&s).unwrap(), "first write");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run_dir), 0o755);
    assert_eq!(mode(&path), 0o644);
    let back: Status = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back, s);
    let names: Vec<_> = fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["status.json"], "temporary file left behind");

    let before = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(
        !w.write(&s).unwrap(),
        "an unchanged status must not be written"
    );
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);

    s.healthy = false;
    assert!(w.write(&s).unwrap());
    let back: Status = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert!(!back.healthy);
}

#[test]
fn the_file_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    StatusWriter::new(&path).write(&leader()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["node_name"], "cp1");
    assert_eq!(v["role"], "leader");
    assert_eq!(v["since"], "2024-05-01T12:03:04.000Z");
    assert_eq!(v["holder"], "cp1");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["last_probe"]["ok"], true);
    assert_eq!(v["last_probe"]["at"], "2024-05-01T12:06:03.600Z");
    assert_eq!(v["vips"][0]["vip"], "10.0.0.100/32");
    assert_eq!(v["vips"][0]["present"], true);
    assert_eq!(v["vips"][1]["present"], false);
    assert_eq!(v["last_transition"]["from"], "follower");
    assert_eq!(v["last_transition"]["to"], "leader");
    assert_eq!(v["last_transition"]["reason"], "acquired_lease");
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn readers_never_see_a_torn_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    let mut w = StatusWriter::new(&path);
    let mut s = leader();
    w.write(&s).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0u32;
            while !done.load(Ordering::Relaxed) {
                let text = fs::read_to_string(&path).expect("status file vanished");
                serde_json::from_str::<Status>(&text)
                    .unwrap_or_else(|e| panic!("torn read: {e}\n{text}"));
                reads += 1;
            }
            reads
        });
        for i in 0..500 {
            s.holder = Some(format!("node-with-a-long-name-{}", "x".repeat(i % 50)));
            w.write(&s).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
    });
}

#[test]
fn human_output_of_a_running_leader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    StatusWriter::new(&path).write(&leader()).unwrap();
    let now = t(364);
    let (code, out, err) = run(&path, false, now).unwrap();
    assert_eq!(code, 0);
    assert_eq!(err, "");
    let pid = std::process::id();
    let version = env!("CARGO_PKG_VERSION");
    let expected = format!(
        "\
node:            cp1 (pid {pid}, ha-vip {version})
role:            leader since 2024-05-01 12:03:04 UTC (3m ago)
lease holder:    cp1
health:          healthy (last probe ok 0.4s ago)
VIPs:            10.0.0.100/32 present
                 fd00::100/128 absent
last transition: follower \u{2192} leader: acquired lease (3m ago)
"
    );
    assert_eq!(out, expected);
}

#[test]
fn human_output_of_a_failing_probe_and_no_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    let mut s = Status::new("cp2", &[vip("10.0.0.100/32")], t(0));
    s.transition(Role::Follower, TransitionReason::Started, t(0));
    s.record_probe(false, "connection refused", t(10));
    StatusWriter::new(&path).write(&s).unwrap();
    let (code, out, _) = run(&path, false, t(12)).unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("lease holder:    none\n"), "{out}");
    assert!(
        out.contains(
            "health:          unhealthy (last probe failed 2.0s ago: connection refused)\n"
        ),
        "{out}"
    );
    assert!(out.contains("starting \u{2192} follower: started"), "{out}");
}

#[test]
fn json_output_is_the_file_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    StatusWriter::new(&path).write(&leader()).unwrap();
    let (code, out, err) = run(&path, true, t(364)).unwrap();
    assert_eq!(code, 0);
    assert_eq!(err, "");
    assert_eq!(out, fs::read_to_string(&path).unwrap());
}

#[test]
fn a_stale_file_says_not_running_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    let mut s = leader();
    s.pid = dead_pid();
    StatusWriter::new(&path).write(&s).unwrap();

    let (code, out, _) = run(&path, false, t(364)).unwrap();
    assert_eq!(code, 3);
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "ha-vip is not running (stale status from pid {}); last known state:",
            s.pid
        )
    );
    assert!(out.contains("role:            leader"), "{out}");

    let (code, out, err) = run(&path, true, t(364)).unwrap();
    assert_eq!(code, 3);
    assert_eq!(
        out,
        fs::read_to_string(&path).unwrap(),
        "JSON stays parseable"
    );
    assert!(
        err.contains(&format!("stale status from pid {}", s.pid)),
        "{err}"
    );
}

#[test]
fn a_missing_file_says_not_running_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    let (code, out, err) = run(&path, false, t(0)).unwrap();
    assert_eq!(code, 3);
    assert_eq!(err, "");
    assert!(
        out.starts_with("ha-vip is not running (no status file at "),
        "{out}"
    );

    let (code, out, err) = run(&path, true, t(0)).unwrap();
    assert_eq!((code, out.as_str()), (3, ""));
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn a_corrupt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    fs::write(&path, "{\"role\": \"leader\"").unwrap();
    let err = run(&path, false, t(0)).unwrap_err();
    assert!(matches!(err, StatusError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn an_unwritable_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    let err = StatusWriter::new(blocker.join("status.json"))
        .write(&leader())
        .unwrap_err();
    assert!(matches!(err, StatusError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// Child half of [`modes_hold_under_a_strict_umask`] when `STATUS_DIR` is
/// set (it writes there under umask 077); on its own, the same write into a
/// fresh directory under this process's umask.
#[test]
fn child_write_status() {
    let own = tempfile::tempdir().unwrap();
    let dir =
        std::env::var_os("STATUS_DIR").map_or_else(|| own.path().to_path_buf(), PathBuf::from);
    let path = dir.join("run/ha-vip/status.json");
    StatusWriter::new(&path).write(&leader()).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn modes_hold_under_a_strict_umask() {
    // The unit sets UMask=0077; `ha-vip status` must still read the file as any user.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", "umask 077 && exec \"$0\" child_write_status --exact"])
        .arg(std::env::current_exe().unwrap())
        .env("STATUS_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{out:?}"
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("run/ha-vip")), 0o755);
    assert_eq!(mode(&dir.path().join("run/ha-vip/status.json")), 0o644);
}
