//! One `ha-vip run` per node: the real binary in a node namespace against
//! the real kube-apiserver. A second `run` with the same configuration exits
//! 1 naming the first one's pid and leaves its VIP alone; `release` refuses
//! while the daemon runs; a SIGKILLed daemon's lock file does not block the
//! restart.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::node::{FAST_HEALTH, binary};
use common::lab::testbed::Testbed;
use nix::sys::signal::Signal;

fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {bound:?}");
}

/// `ha-vip run` in `ns`; waits up to `bound` for it to exit. Returns the exit
/// code (`None`: still running after `bound`, then killed) and stderr.
fn second_run(ns: &str, config: &std::path::Path, bound: Duration) -> (Option<i32>, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(binary())
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second ha-vip run");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (code, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_second_run_exits_1_and_release_refuses_while_the_lock_is_held() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 1, "lock");
    let lab = &bed.lab;
    let ns = lab.nodes[0].clone();
    let mut node = bed.node(0, "n1", FAST_HEALTH);
    node.start();
    wait_for("the VIP on the only node", Duration::from_secs(40), || {
        lab.has_vip(0)
    });
    let pid = node.pid().expect("running").as_raw();

    // Every address deletion in the namespace, from the kernel's own
    // notifications: a delete-and-re-add by the first daemon's guard is too
    // quick for sampling to see.
    let mut monitor = Command::new("ip")
        .args(["-n", &ns, "-4", "monitor", "address"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip monitor");
    std::thread::sleep(Duration::from_millis(300));

    let (code, err) = second_run(&ns, &node.config, Duration::from_secs(10));
    assert_eq!(
        code,
        Some(1),
        "a second run on the node must exit 1 at once; its stderr:\n{err}"
    );
    assert!(
        err.contains(&format!(
            "another ha-vip is running on this node (pid {pid}"
        )),
        "{err}"
    );

    // release (ExecStopPost) refuses while the daemon holds the lock.
    let out = node.release();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "release while running: {stderr}"
    );
    assert!(
        stderr.contains(&format!("ha-vip is running (pid {pid})")),
        "{stderr}"
    );

    std::thread::sleep(Duration::from_millis(500));
    let _ = monitor.kill();
    let mut events = String::new();
    let _ = monitor
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut events);
    let _ = monitor.wait();
    let vip = format!(" {}/", lab.vip());
    assert!(
        !events
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains(&vip)),
        "the first daemon's VIP was deleted:\n{events}"
    );
    assert!(lab.has_vip(0), "the first daemon's VIP is gone");
    assert!(
        node.running(),
        "the first daemon died:\n{}",
        node.log_text()
    );

    // SIGKILL leaves the lock file behind; the kernel dropped the lock.
    node.signal(Signal::SIGKILL);
    node.wait(Duration::from_secs(5));
    let lock = std::path::Path::new(bed.dir.path())
        .join("run-n1")
        .join(ha_vip::instance::LOCK_FILE);
    assert!(lock.exists(), "lock file {}", lock.display());
    node.start();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        node.running(),
        "restart after SIGKILL was blocked:\n{}",
        node.log_text()
    );
    wait_for("the VIP after the restart", Duration::from_secs(40), || {
        lab.has_vip(0)
    });

    // Stopped, release does its work.
    node.signal(Signal::SIGTERM);
    assert_eq!(node.wait(Duration::from_secs(10)), Some(0));
    let out = node.release();
    assert!(
        out.status.success(),
        "release after stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lab.has_vip(0));
}
