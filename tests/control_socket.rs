//! The control socket is root only: a client running as `nobody` (the real
//! `ha-vip` binary under setuid) cannot connect to it (mode 0600), and even
//! when the socket's mode is loosened, the daemon's SO_PEERCRED check
//! refuses it before the request reaches the main loop. Root's request
//! goes through and is answered.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lab::node::binary;
use ha_vip::config::Config;
use ha_vip::control::checks::Checks;
use ha_vip::control::server::Server;
use ha_vip::control::{Reply, Request, client};

const NOBODY: u32 = 65534;

/// A config readable by `nobody`, in a directory it may enter.
fn config(dir: &Path) -> (std::path::PathBuf, Config) {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    for d in [dir, &run] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nrun_dir: {}\nstate_dir: {}\nk8s:\n  enabled: false\nhealth:\n  insecure_skip_tls_verify: true\n",
            run.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = Config::load(&path).unwrap();
    (path, cfg)
}

/// `ha-vip undrain -c config` as `nobody`.
fn undrain_as_nobody(config: &Path) -> std::process::Output {
    Command::new(binary())
        .args(["undrain", "-c"])
        .arg(config)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run ha-vip as nobody")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_peers_reach_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cfg) = config(dir.path());
    let socket = cfg.control_socket();
    // A stale socket file of a killed daemon is replaced.
    std::fs::write(&socket, "stale").unwrap();
    let server = Server::bind(&socket).expect("bind");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is root only");
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let _task = server.spawn(Checks::new(&cfg), tx);
    // The main loop's stand-in: answers and counts what reached it.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let _ = seen_tx.send(p.request.clone());
            p.answer(Reply::done("cp1 is not drained"));
        }
    });

    // Root: through, answered.
    let s = socket.clone();
    let reply = tokio::task::spawn_blocking(move || client::send(&s, &Request::Undrain))
        .await
        .unwrap()
        .expect("root's request is answered");
    assert_eq!(reply, Reply::done("cp1 is not drained"));
    assert_eq!(seen.recv().await, Some(Request::Undrain));

    // nobody, mode 0600: the kernel refuses the connect.
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || undrain_as_nobody(&p))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("$ ha-vip undrain (as nobody, socket 0600)\n{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("root only"),
        "{err}"
    );

    // nobody, mode loosened to 0666: the daemon refuses by SO_PEERCRED.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || undrain_as_nobody(&p))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("$ ha-vip undrain (as nobody, socket 0666)\n{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused") && err.contains("you are uid 65534"),
        "{err}"
    );
    // Nothing from nobody reached the main loop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        seen.try_recv().is_err(),
        "a non-root request reached the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_changes_nothing_and_drain_without_the_object_needs_force() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = config(dir.path());
    let socket = cfg.control_socket();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let _task = Server::bind(&socket).unwrap().spawn(Checks::new(&cfg), tx);
    // Half a request, then gone: nothing reaches the main loop.
    let mut c = tokio::net::UnixStream::connect(&socket).await.unwrap();
    c.write_all(br#"{"command":"drain","force":tr"#)
        .await
        .unwrap();
    drop(c);
    // Single-node mode: the daemon cannot count the healthy nodes.
    let s = socket.clone();
    let reply =
        tokio::task::spawn_blocking(move || client::send(&s, &Request::Drain { force: false }))
            .await
            .unwrap()
            .unwrap();
    assert!(!reply.ok, "{reply:?}");
    assert!(
        reply.message.contains("single-node mode") && reply.message.contains("--force"),
        "{reply:?}"
    );
    // Garbage is answered with what to check, not applied.
    let mut c = tokio::net::UnixStream::connect(&socket).await.unwrap();
    c.write_all(b"{\"command\":\"reboot\"}\n").await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.contains("not a request this daemon understands"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "a refused or partial request reached the daemon"
    );
}
