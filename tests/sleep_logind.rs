//! The logind sleep inhibitor against a real D-Bus: a private `dbus-daemon`
//! (the daemon finds it through DBUS_SYSTEM_BUS_ADDRESS) carrying a small
//! stand-in for systemd-logind's Manager object (Inhibit returns the write
//! end of a pipe, as logind does, and it emits PrepareForSleep), and the real
//! `ha-vip run` on two nodes against the real kube-apiserver.
//!
//! The real systemd-logind also runs on the private bus (it starts without
//! a booted systemd, only logging that org.freedesktop.systemd1 is absent):
//! the second test checks that the daemon holds a real sleep delay
//! inhibitor, and that it goes with the daemon. logind cannot announce a
//! suspend here (no sleep state in /sys/power/state, no systemd to start
//! suspend.target), so PrepareForSleep comes from the stand-in. The real
//! path end to end needs a booted systemd (the nspawn containers of issue
//! 12): with ha-vip the holder there and `systemctl mask
//! systemd-suspend.service` (the job runs, nothing sleeps),
//! `systemd-inhibit --list --mode=delay` lists ha-vip; `systemctl suspend`
//! (with a sleep state offered, e.g. SuspendState=freeze) must log
//! `the machine is about to sleep` and `handed over; letting the machine
//! sleep` in that order, with the VIP off the interface and the Lease on
//! another holder before the second line, then `the machine resumed` and a
//! new entry in `systemd-inhibit --list`.
//!
//! The order is checked by freezing the holder (SIGSTOP) the moment the
//! stand-in sees its inhibitor closed: whatever the daemon had done before
//! closing is visible then, nothing after.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lab::meter;
use common::lab::node::FAST_HEALTH;
use common::lab::testbed::Testbed;
use ha_vip::lease::{KubeLeaseStore, LeaseStore};
use ha_vip::sleep::logind::{INHIBIT, LOGIND, MANAGER_INTERFACE, MANAGER_PATH};
use nix::sys::signal::{Signal, kill};

/// A private message bus, killed when dropped.
struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&socket)).expect("bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (Debian package dbus; make deps installs it)");
        // It prints its address once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("dbus-daemon address");
        assert!(line.starts_with("unix:path="), "dbus-daemon said {line:?}");
        Bus {
            child,
            address: format!("unix:path={}", socket.display()),
            _dir: dir,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bus like the system bus in what matters here (EXTERNAL auth, unix fd
/// passing), open to everyone.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// The real systemd-logind on `bus`, killed when dropped.
struct RealLogind(Child);

impl RealLogind {
    async fn start(bus: &Bus) -> (Self, zbus::Proxy<'static>) {
        let child = Command::new("/usr/lib/systemd/systemd-logind")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-logind (Debian package systemd)");
        let me = RealLogind(child);
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build()
            .await
            .expect("connect to the private bus");
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
        let name = zbus::names::BusName::try_from(LOGIND).unwrap();
        let t = Instant::now();
        while !dbus.name_has_owner(name.clone()).await.unwrap() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "systemd-logind did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let proxy = zbus::Proxy::new_owned(conn, LOGIND, MANAGER_PATH, MANAGER_INTERFACE)
            .await
            .unwrap();
        (me, proxy)
    }
}

impl Drop for RealLogind {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Inhibitor = (String, String, String, String, u32, u32);

async fn inhibitors(logind: &zbus::Proxy<'_>) -> Vec<Inhibitor> {
    logind
        .call("ListInhibitors", &())
        .await
        .expect("ListInhibitors")
}

/// One Inhibit call the stand-in answered.
struct Taken {
    args: (String, String, String, String),
    /// The read end; EOF once every copy of the write end is closed.
    read: Option<OwnedFd>,
}

/// The part of org.freedesktop.login1.Manager that ha-vip uses.
#[derive(Clone, Default)]
struct StandIn {
    taken: Arc<Mutex<Vec<Taken>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl StandIn {
    /// Like logind: a pipe whose write end goes to the caller; the lock is
    /// held until the caller closes it.
    fn inhibit(
        &self,
        what: String,
        who: String,
        why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let (read, write) =
            nix::unistd::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        self.taken.lock().unwrap().push(Taken {
            args: (what, who, why, mode),
            read: Some(read),
        });
        Ok(write.into())
    }
}

impl StandIn {
    fn count(&self) -> usize {
        self.taken.lock().unwrap().len()
    }

    fn take_read_end(&self, i: usize) -> OwnedFd {
        self.taken.lock().unwrap()[i].read.take().expect("read end")
    }
}

async fn prepare_for_sleep(conn: &zbus::Connection, start: bool) {
    conn.emit_signal(
        None::<&str>,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        "PrepareForSleep",
        &start,
    )
    .await
    .expect("emit PrepareForSleep");
}

/// Polls `cond` every 20 ms for up to `bound`; returns how long it took.
async fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {bound:?}");
}

async fn holder(store: &KubeLeaseStore) -> Option<String> {
    store
        .get()
        .await
        .expect("GET lease")
        .map(|l| l.record.holder)
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_sleep_logind_hands_over_before_the_inhibitor_is_closed() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bus = Bus::start();
    let logind = StandIn::default();
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .expect("bus address")
        .name(LOGIND)
        .expect("name")
        .serve_at(MANAGER_PATH, logind.clone())
        .expect("serve")
        .build()
        .await
        .expect("stand-in logind on the private bus");

    let bed = Testbed::new(&api, 2, "sleep");
    let lab = &bed.lab;
    let store = KubeLeaseStore::new(api.admin(), "kube-system", bed.access.lease.clone());
    let mut sleeper = bed.node(0, "s1", FAST_HEALTH);
    sleeper
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    let mut standby = bed.node(1, "s2", FAST_HEALTH);
    // A host without a system bus: one INFO line, nothing else.
    standby.env.push((
        "DBUS_SYSTEM_BUS_ADDRESS".into(),
        format!("unix:path={}/no-bus", bed.dir.path().display()),
    ));

    sleeper.start();
    wait_for("the sleep inhibitor", Duration::from_secs(15), || {
        logind.count() == 1
    })
    .await;
    let (what, who, why, mode) = logind.taken.lock().unwrap()[0].args.clone();
    assert_eq!(
        (what.as_str(), who.as_str(), why.as_str(), mode.as_str()),
        INHIBIT
    );
    assert_eq!(mode, "delay");
    wait_for("s1 holds the VIP", Duration::from_secs(40), || {
        lab.has_vip(0)
    })
    .await;
    assert_eq!(holder(&store).await.as_deref(), Some("s1"));
    standby.start();
    // Let the standby become healthy and see the Lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lab.has_vip(0) && !lab.has_vip(1));
    let holders = meter::HolderMeter::start(&lab.nodes, IpAddr::V4(lab.vip()));
    let answering = meter::AnsweringMeter::on(lab);

    // The moment the inhibitor is closed, freeze s1 and look.
    let read = logind.take_read_end(0);
    let pid = sleeper.pid().expect("s1 pid");
    let closed = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        loop {
            match nix::unistd::read(&read, &mut buf) {
                Ok(0) => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("read inhibitor pipe: {e}"),
            }
        }
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP s1");
        Instant::now()
    });
    let t = Instant::now();
    prepare_for_sleep(&conn, true).await;
    wait_for("the inhibitor closed", Duration::from_secs(10), || {
        closed.is_finished()
    })
    .await;
    let closed_at = closed.join().expect("pipe watcher");
    eprintln!(
        "inhibitor closed {:?} after PrepareForSleep(true)",
        closed_at - t
    );
    // s1 is frozen: this is the state it closed the inhibitor in.
    let vip_gone = !lab.has_vip(0);
    let lease_holder = holder(&store).await;
    kill(pid, Signal::SIGCONT).expect("SIGCONT s1");
    assert!(
        vip_gone,
        "inhibitor closed while the VIP was still on s1; log:\n{}",
        sleeper.log_text()
    );
    assert_ne!(
        lease_holder.as_deref(),
        Some("s1"),
        "inhibitor closed while s1 still held the Lease; log:\n{}",
        sleeper.log_text()
    );
    // A planned handover: the standby takes over at once, not after expiry.
    wait_for("s2 takes over", Duration::from_secs(10), || lab.has_vip(1)).await;
    eprintln!(
        "s2 holds the VIP {:?} after the inhibitor closed",
        closed_at.elapsed()
    );

    // Resume: a new inhibitor, and s1 is a standby again (not the holder).
    prepare_for_sleep(&conn, false).await;
    wait_for(
        "a new inhibitor after resume",
        Duration::from_secs(10),
        || logind.count() == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!lab.has_vip(0) && lab.has_vip(1));
    assert_eq!(holder(&store).await.as_deref(), Some("s2"));
    let samples = holders.finish();
    assert_eq!(
        meter::overlap(&samples),
        Duration::ZERO,
        "two nodes held the VIP at once"
    );
    answering.finish_one_answerer(&sleeper.log_text());

    let log = sleeper.log_text();
    assert!(
        log.contains("holding a systemd-logind sleep delay inhibitor"),
        "{log}"
    );
    assert!(log.contains("the machine resumed"), "{log}");
    let log = standby.log_text();
    assert_eq!(log.matches("no sleep inhibitor").count(), 1, "{log}");
    for log in [sleeper.log_text(), standby.log_text()] {
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_sleep_real_logind_grants_the_delay_inhibitor_for_the_daemon_s_life() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bus = Bus::start();
    let (_logind, logind) = RealLogind::start(&bus).await;
    assert_eq!(inhibitors(&logind).await, vec![]);
    let bed = Testbed::new(&api, 1, "realsleep");
    let mut node = bed.node(0, "r1", FAST_HEALTH);
    node.env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    node.start();
    let pid = node.pid().expect("pid").as_raw() as u32;
    let t = Instant::now();
    let held = loop {
        let list = inhibitors(&logind).await;
        if !list.is_empty() || t.elapsed() > Duration::from_secs(15) {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (what, who, why, mode) = INHIBIT;
    assert_eq!(
        held,
        vec![(what.into(), who.into(), why.into(), mode.into(), 0, pid)],
        "log:\n{}",
        node.log_text()
    );
    // It is the daemon's, not a copy that outlives it.
    node.signal(Signal::SIGTERM);
    assert_eq!(
        node.wait(Duration::from_secs(10)),
        Some(0),
        "{}",
        node.log_text()
    );
    let t = Instant::now();
    while !inhibitors(&logind).await.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "inhibitor outlived the daemon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node.log_text()
            .contains("holding a systemd-logind sleep delay inhibitor")
    );
}
