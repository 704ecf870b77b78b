//! The sd_notify protocol against real Unix datagram sockets, as systemd
//! would receive it: a socket path and an abstract-namespace name.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::time::Duration;

use ha_vip::systemd::{Notifier, SdNotifier};

/// Receives one datagram (with a timeout, so a missing one fails instead of hanging).
fn recv(sock: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("expected a datagram from the notifier");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn listener_at_path() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (dir, sock, path)
}

fn monotonic_usec_now() -> u128 {
    match sd_notify::NotifyState::monotonic_usec_now().unwrap() {
        sd_notify::NotifyState::MonotonicUsec(u) => u as u128,
        other => panic!("{other:?}"),
    }
}

/// Sends every message kind and checks the exact datagrams.
fn exercise(n: &SdNotifier, sock: &UnixDatagram) {
    n.ready().unwrap();
    assert_eq!(recv(sock), "READY=1");

    n.status("leader: holding 10.0.0.100/32").unwrap();
    assert_eq!(recv(sock), "STATUS=leader: holding 10.0.0.100/32");

    n.status("two\nlines").unwrap();
    assert_eq!(
        recv(sock),
        "STATUS=two lines",
        "a status must stay one field"
    );

    let before = monotonic_usec_now();
    n.reloading().unwrap();
    let after = monotonic_usec_now();
    let msg = recv(sock);
    let usec: u128 = msg
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("unexpected reload datagram {msg:?}"))
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC now ({before}..={after})"
    );

    n.watchdog().unwrap();
    assert_eq!(recv(sock), "WATCHDOG=1");

    n.stopping().unwrap();
    assert_eq!(recv(sock), "STOPPING=1");
}

#[test]
fn datagrams_reach_a_socket_path() {
    let (_dir, sock, path) = listener_at_path();
    let n = SdNotifier::new(Some(path.as_os_str()), None);
    assert!(n.enabled());
    exercise(&n, &sock);
}

#[test]
fn datagrams_reach_an_abstract_socket() {
    let name = format!("ha-vip-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = SdNotifier::new(Some(OsStr::new(&format!("@{name}"))), None);
    exercise(&n, &sock);
}

#[test]
fn a_missing_socket_is_an_error_that_names_it() {
    let n = SdNotifier::new(Some(OsStr::new("/nonexistent/ha-vip-notify.sock")), None);
    let err = n.ready().unwrap_err().to_string();
    assert!(err.contains("READY=1"), "{err}");
    assert!(err.contains("/nonexistent/ha-vip-notify.sock"), "{err}");
}

/// Child half of [`from_env_reads_the_environment_and_leaves_it_set`] when
/// `EXPECT_WATCHDOG_USEC` is set (its own process, so its environment cannot
/// race other tests); on its own, the test runner's environment has no
/// NOTIFY_SOCKET and every notification is a successful no-op.
#[test]
fn child_from_env() {
    let n = SdNotifier::from_env();
    let Ok(expected) = std::env::var("EXPECT_WATCHDOG_USEC") else {
        assert!(std::env::var_os("NOTIFY_SOCKET").is_none() || n.enabled());
        if !n.enabled() {
            assert!(n.ready().is_ok() && n.watchdog().is_ok() && n.status("x").is_ok());
        }
        return;
    };
    let expected = (!expected.is_empty()).then(|| Duration::from_micros(expected.parse().unwrap()));
    assert_eq!(n.watchdog_timeout(), expected);
    n.ready().unwrap();
    n.watchdog().unwrap();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        assert!(std::env::var_os(var).is_some(), "{var} was unset");
    }
}

fn run_child(notify_socket: &OsStr, watchdog_pid: Option<&str>, expect_usec: &str) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_from_env", "--exact", "--nocapture"])
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "10000000")
        .env("EXPECT_WATCHDOG_USEC", expect_usec)
        .env_remove("WATCHDOG_PID");
    if let Some(pid) = watchdog_pid {
        cmd.env("WATCHDOG_PID", pid);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn from_env_reads_the_environment_and_leaves_it_set() {
    let (_dir, sock, path) = listener_at_path();
    run_child(path.as_os_str(), None, "10000000");
    assert_eq!(recv(&sock), "READY=1");
    assert_eq!(recv(&sock), "WATCHDOG=1");

    // WATCHDOG_PID of another process: the watchdog belongs to it, not us.
    run_child(path.as_os_str(), Some("1"), "");
    assert_eq!(recv(&sock), "READY=1");
    assert_eq!(recv(&sock), "WATCHDOG=1");
}

/// A listener that stops reading (a wedged systemd) must never stall the
/// daemon's main loop: once its queue is full, notifications fail at once.
#[test]
fn a_wedged_listener_never_blocks_the_sender() {
    let (_dir, sock, path) = listener_at_path();
    let n = SdNotifier::new(Some(path.as_os_str()), None);
    let start = std::time::Instant::now();
    let results: Vec<bool> = (0..200).map(|_| n.watchdog().is_ok()).collect();
    let took = start.elapsed();
    assert!(results[0], "the first notification fits in the queue");
    assert!(
        results.iter().any(|ok| !ok),
        "a full queue must be reported, not waited on"
    );
    assert!(
        took < Duration::from_secs(1),
        "200 notifications took {took:?}"
    );
    // What was queued is intact.
    assert_eq!(recv(&sock), "WATCHDOG=1");
}
