//! ha-vip as operators run it: the real .deb (`HAVIP_DEB`, set by
//! `make systemd-check`) installed with `dpkg -i` in three containers that
//! boot a real systemd (systemd-nspawn) inside the lab's node namespaces,
//! driven with `systemctl`, read with `journalctl`, and judged by the lab's
//! meters, which trust nothing ha-vip says.
//!
//! One test boots the containers once and runs the checks in sequence
//! (about two minutes); each step leaves three running services and one
//! stable holder behind for the next.
//!
//! Needs root, systemd-container and the kube-apiserver harness
//! (`make deps`); run alone with `make systemd-check`.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::lab::meter::{self, AnsweringMeter, ClientMeter, HolderMeter};
use common::lab::systemd_cluster::{SystemdCluster, deb_under_test};

/// Generous bound for anything the lab waits for.
const BOUND: Duration = Duration::from_secs(40);
/// A stable holder: the same node alone for this long.
const STABLE: Duration = Duration::from_secs(1);

/// Meters running while a step acts on the cluster.
struct Watch {
    holders: HolderMeter,
    client: ClientMeter,
    answering: AnsweringMeter,
    from: Instant,
}

impl Watch {
    fn start(c: &SystemdCluster) -> Self {
        let vip = IpAddr::V4(c.lab().vip());
        let holders = HolderMeter::start(&c.lab().nodes, vip);
        let client = ClientMeter::start(&c.lab().client, vip, 6443);
        let answering = AnsweringMeter::on(c.lab());
        std::thread::sleep(Duration::from_millis(300));
        Watch {
            holders,
            client,
            answering,
            from: Instant::now(),
        }
    }

    /// Stops the meters; asserts that no two nodes ever held the VIP at
    /// once, nor two MACs answered ARP for it in one 10 ms window; returns
    /// the longest client-visible outage.
    fn finish(self, c: &SystemdCluster, what: &str) -> Duration {
        let samples = self.holders.finish();
        let probes = self.client.finish();
        let overlap = meter::overlap(&samples);
        assert_eq!(
            overlap,
            Duration::ZERO,
            "{what}: two nodes held the VIP at once\n{}",
            c.logs()
        );
        self.answering
            .finish_one_answerer(&format!("{what}\n{}", c.logs()));
        meter::longest_outage(&probes, self.from)
    }
}

fn holder(c: &SystemdCluster) -> usize {
    c.wait_holder(BOUND, STABLE)
        .unwrap_or_else(|| panic!("no stable VIP holder\n{}", c.logs()))
}

fn ok(c: &SystemdCluster, i: usize, args: &[&str]) {
    let out = c.systemctl(i, args);
    assert!(
        out.status.success(),
        "{}: systemctl {} failed: {}\n{}",
        c.names[i],
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

/// How many lines of node `i`'s ha-vip journal contain `text`.
fn count(c: &SystemdCluster, i: usize, text: &str) -> usize {
    c.journal(i, &["-o", "cat"])
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// Any node other than `not`.
fn other(c: &SystemdCluster, not: usize) -> usize {
    (0..c.nodes.len()).find(|&i| i != not).expect("two nodes")
}

#[test]
fn serial_ha_vip_under_systemd() {
    let Some(deb) = deb_under_test() else {
        return;
    };
    let t0 = Instant::now();
    let Some(mut c) = SystemdCluster::start(3, &deb) else {
        return;
    };
    eprintln!(
        "booted 3 containers (systemd {:?}) and installed {} in {} ms",
        c.boot_times,
        deb.display(),
        t0.elapsed().as_millis()
    );

    start_gives_one_holder(&c);
    stop_hands_over(&c);
    kill_releases_and_restarts(&c);
    freeze_is_fenced_then_watchdog_restarts(&c);
    invalid_reload_keeps_running_config(&c);
    config_error_does_not_restart_loop(&c);
    let enabled = enable_and_reboot(&mut c);
    journal_has_transition_fields(&c);
    purge_leaves_nothing(&c, enabled);
    eprintln!("systemd suite: {} ms", t0.elapsed().as_millis());
}

/// `systemctl start ha-vip` on all three at once: each start returns after
/// READY=1, and exactly one node takes the VIP.
fn start_gives_one_holder(c: &SystemdCluster) {
    let vip = IpAddr::V4(c.lab().vip());
    let holders = HolderMeter::start(&c.lab().nodes, vip);
    let t0 = Instant::now();
    let took: Vec<Duration> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || {
                    let t = Instant::now();
                    ok(c, i, &["start", "ha-vip"]);
                    t.elapsed()
                })
            })
            .collect();
        starts.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first_vip = c.wait_for(BOUND, |c| (0..3).any(|i| c.lab().has_vip(i)));
    let first_vip_at = t0.elapsed();
    assert!(first_vip, "no node took the VIP\n{}", c.logs());
    let h = holder(c);
    std::thread::sleep(Duration::from_secs(2));
    let samples = holders.finish();
    assert_eq!(meter::overlap(&samples), Duration::ZERO, "{}", c.logs());
    assert_eq!(meter::holders_at_end(&samples), vec![h]);
    for (i, took) in took.iter().enumerate() {
        assert!(c.active(i), "{} not active\n{}", c.names[i], c.logs());
        // READY=1 came from the daemon: Type=notify reached "running".
        let ready_us = c
            .prop(i, "ActiveEnterTimestampMonotonic")
            .parse::<u64>()
            .unwrap()
            - c.prop(i, "ExecMainStartTimestampMonotonic")
                .parse::<u64>()
                .unwrap();
        eprintln!(
            "{}: systemctl start returned in {} ms, exec to READY=1 {} ms",
            c.names[i],
            took.as_millis(),
            ready_us / 1000
        );
    }
    eprintln!(
        "first VIP {} ms after systemctl start (on {}); holder {}",
        first_vip_at.as_millis(),
        c.names[h],
        c.names[h]
    );
    // STATUS= reaches systemctl status; ha-vip status reads the status file.
    let status =
        String::from_utf8_lossy(&c.systemctl(h, &["status", "ha-vip"]).stdout).into_owned();
    assert!(
        status.contains("Status: \"leader"),
        "systemctl status shows no STATUS= line of the leader:\n{status}"
    );
    let own = c.nodes[h].ok(&["ha-vip", "status"]);
    assert!(
        own.contains("leader"),
        "ha-vip status on the holder:\n{own}"
    );
}

/// `systemctl stop` on the holder: a graceful handover, never two holders.
fn stop_hands_over(c: &SystemdCluster) {
    let h = holder(c);
    std::thread::sleep(Duration::from_millis(1500));
    let w = Watch::start(c);
    let t = Instant::now();
    ok(c, h, &["stop", "ha-vip"]);
    let stopped = t.elapsed();
    assert!(!c.lab().has_vip(h), "the VIP stayed on the stopped node");
    let moved = c.wait_for(BOUND, |c| c.holder().is_some_and(|n| n != h));
    assert!(moved, "the VIP did not move\n{}", c.logs());
    let moved_at = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let outage = w.finish(c, "systemctl stop");
    assert_eq!(c.prop(h, "ActiveState"), "inactive");
    eprintln!(
        "systemctl stop on {}: returned in {} ms, VIP moved in {} ms, client outage {} ms",
        c.names[h],
        stopped.as_millis(),
        moved_at.as_millis(),
        outage.as_millis()
    );
    ok(c, h, &["start", "ha-vip"]);
    let new = holder(c);
    assert_ne!(new, h, "the restarted node took the VIP back");
}

/// `systemctl kill -s KILL` on the holder: ExecStopPost=ha-vip release
/// removes the VIP and releases the Lease, Restart= brings the daemon back
/// as a standby.
fn kill_releases_and_restarts(c: &SystemdCluster) {
    let h = holder(c);
    std::thread::sleep(Duration::from_millis(1500));
    let restarts: u32 = c.prop(h, "NRestarts").parse().unwrap();
    let released = count(c, h, "released the lease");
    let w = Watch::start(c);
    let t = Instant::now();
    ok(c, h, &["kill", "-s", "KILL", "ha-vip"]);
    let moved = c.wait_for(BOUND, |c| c.holder().is_some_and(|n| n != h));
    assert!(moved, "the VIP did not move after SIGKILL\n{}", c.logs());
    let moved_at = t.elapsed();
    let back = c.wait_for(BOUND, |c| {
        c.prop(h, "NRestarts").parse::<u32>().unwrap() > restarts && c.active(h)
    });
    assert!(back, "Restart= did not bring ha-vip back\n{}", c.logs());
    let back_at = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let outage = w.finish(c, "systemctl kill -s KILL");
    assert_eq!(
        count(c, h, "released the lease"),
        released + 1,
        "ExecStopPost did not release the Lease; journal:\n{}",
        c.journal(h, &[])
    );
    assert_ne!(c.holder(), Some(h), "the restarted node took the VIP back");
    eprintln!(
        "systemctl kill -s KILL on {}: VIP moved in {} ms, restarted (READY=1) in {} ms, client outage {} ms",
        c.names[h],
        moved_at.as_millis(),
        back_at.as_millis(),
        outage.as_millis()
    );
}

/// The main process's state letter (R, S, T, ...) inside node `i`.
fn main_state(c: &SystemdCluster, i: usize) -> String {
    let pid = c.prop(i, "MainPID");
    let stat = c.nodes[i].sh(&format!("cat /proc/{pid}/stat"));
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    rest.split_whitespace().next().unwrap_or("").to_string()
}

/// SIGSTOP on the holder: the kernel removes the VIP when its lifetime
/// runs out (the process is still stopped), a standby takes over, and the
/// watchdog (WatchdogSec=10s) kills and restarts the frozen daemon.
fn freeze_is_fenced_then_watchdog_restarts(c: &SystemdCluster) {
    let h = holder(c);
    std::thread::sleep(Duration::from_millis(1500));
    let restarts: u32 = c.prop(h, "NRestarts").parse().unwrap();
    let timeouts = count(c, h, "Watchdog timeout");
    let w = Watch::start(c);
    let t = Instant::now();
    ok(c, h, &["kill", "-s", "STOP", "ha-vip"]);
    let fenced = c.wait_for(BOUND, |c| !c.lab().has_vip(h));
    let fenced_at = t.elapsed();
    assert!(fenced, "the frozen holder kept the VIP\n{}", c.logs());
    assert_eq!(
        main_state(c, h),
        "T",
        "the VIP went, but not while the process was stopped"
    );
    let moved = c.wait_for(BOUND, |c| c.holder().is_some_and(|n| n != h));
    assert!(moved, "no standby took over\n{}", c.logs());
    let moved_at = t.elapsed();
    let back = c.wait_for(Duration::from_secs(60), |c| {
        c.prop(h, "NRestarts").parse::<u32>().unwrap() > restarts && c.active(h)
    });
    assert!(back, "the watchdog did not restart ha-vip\n{}", c.logs());
    let back_at = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let outage = w.finish(c, "SIGSTOP");
    assert_eq!(
        count(c, h, "Watchdog timeout"),
        timeouts + 1,
        "no watchdog timeout in the journal:\n{}",
        c.journal(h, &[])
    );
    assert_ne!(c.holder(), Some(h));
    eprintln!(
        "SIGSTOP on {}: VIP fenced by the kernel after {} ms, taken over after {} ms, watchdog restart done after {} ms, client outage {} ms",
        c.names[h],
        fenced_at.as_millis(),
        moved_at.as_millis(),
        back_at.as_millis(),
        outage.as_millis()
    );
}

/// `systemctl reload` of the holder with an invalid file: same process,
/// still the holder, and the journal says the old configuration is kept.
fn invalid_reload_keeps_running_config(c: &SystemdCluster) {
    let h = holder(c);
    let pid = c.prop(h, "MainPID");
    let w = Watch::start(c);
    c.nodes[h].write("/etc/ha-vip/config.yaml", "node_name: [unterminated\n");
    ok(c, h, &["reload", "ha-vip"]);
    let said = c.wait_for(Duration::from_secs(10), |c| {
        c.journal(h, &["-o", "cat"])
            .contains("reload failed; keeping the running configuration")
    });
    assert!(
        said,
        "the journal does not say the reload failed\n{}",
        c.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    let outage = w.finish(c, "invalid reload");
    assert_eq!(c.prop(h, "MainPID"), pid, "the daemon was restarted");
    assert!(c.active(h));
    assert_eq!(c.holder(), Some(h), "the holder lost the VIP on reload");
    assert_eq!(outage, Duration::ZERO, "clients saw an outage on reload");
    c.nodes[h].write("/etc/ha-vip/config.yaml", &c.config(h));
    ok(c, h, &["reload", "ha-vip"]);
    eprintln!("invalid reload on {}: kept running, no outage", c.names[h]);
}

/// An invalid configuration at start: exit 78 (EX_CONFIG), and
/// RestartPreventExitStatus=78 keeps systemd from restarting it in a loop.
fn config_error_does_not_restart_loop(c: &SystemdCluster) {
    let h = holder(c);
    let s = other(c, h);
    c.nodes[s].write("/etc/ha-vip/config.yaml", "vips: [300.1.2.3]\n");
    let out = c.systemctl(s, &["restart", "ha-vip"]);
    assert!(
        !out.status.success(),
        "a start with an invalid config succeeded"
    );
    let restarts = c.prop(s, "NRestarts");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.prop(s, "ActiveState"), "failed");
    assert_eq!(c.prop(s, "ExecMainStatus"), "78");
    assert_eq!(c.prop(s, "NRestarts"), restarts, "systemd restarted it");
    let journal = c.journal(s, &["-o", "cat", "-n", "30"]);
    assert!(
        journal.contains("config.yaml"),
        "the error does not name the file:\n{journal}"
    );
    c.nodes[s].write("/etc/ha-vip/config.yaml", &c.config(s));
    ok(c, s, &["start", "ha-vip"]);
    assert_eq!(holder(c), h);
    eprintln!(
        "config error on {}: exit 78, failed, not restarted",
        c.names[s]
    );
}

/// `systemctl enable` and a reboot of the container: ha-vip comes up at
/// boot, as a standby. Returns the node.
fn enable_and_reboot(c: &mut SystemdCluster) -> usize {
    let h = holder(c);
    let s = other(c, h);
    ok(c, s, &["enable", "ha-vip"]);
    let took = c.nodes[s]
        .reboot()
        .unwrap_or_else(|e| panic!("reboot: {e}"));
    let up = c.wait_for(BOUND, |c| c.active(s));
    assert!(up, "ha-vip did not start at boot\n{}", c.logs());
    assert_eq!(c.prop(s, "UnitFileState"), "enabled");
    let status = c.nodes[s].ok(&["ha-vip", "status"]);
    assert!(status.contains("follower"), "after the reboot:\n{status}");
    assert_eq!(holder(c), h, "the reboot moved the VIP");
    eprintln!(
        "enable + reboot of {}: back and active in {} ms",
        c.names[s],
        took.as_millis()
    );
    s
}

/// `journalctl -u ha-vip -g transition`: one line per transition, each with
/// VIP=, FROM=, TO=, REASON=, HOLDER= fields.
fn journal_has_transition_fields(c: &SystemdCluster) {
    let vip = c.lab().vip().to_string();
    let mut leader_seen = false;
    for i in 0..3 {
        // systemd applied every line of the unit: no setting it ignored or
        // could not apply on this kernel.
        let pid1 = String::from_utf8_lossy(
            &c.nodes[i]
                .exec(&["journalctl", "--no-pager", "-q", "-o", "cat", "_PID=1"])
                .stdout,
        )
        .into_owned();
        let complaints: Vec<&str> = pid1
            .lines()
            .filter(|l| l.contains("ha-vip.service") && l.to_lowercase().contains("ignor"))
            .collect();
        assert!(
            complaints.is_empty(),
            "{}: systemd ignored part of the unit:\n{}",
            c.names[i],
            complaints.join("\n")
        );
        let pid = c.prop(i, "MainPID");
        let rss = c.nodes[i].sh(&format!("grep VmRSS /proc/{pid}/status"));
        eprintln!("{}: ha-vip under systemd, {}", c.names[i], rss.trim());
        let lines = c.journal(i, &["-g", "transition", "-o", "cat"]);
        let verbose = c.journal(i, &["-g", "transition", "-o", "verbose"]);
        let n = lines.lines().count();
        assert!(n >= 1, "{}: no transition in the journal", c.names[i]);
        for field in ["VIP=", "FROM=", "TO=", "REASON=", "HOLDER="] {
            let count = verbose
                .lines()
                .filter(|l| l.trim_start().starts_with(field))
                .count();
            assert_eq!(
                count, n,
                "{}: {n} transitions but {count} {field} fields:\n{verbose}",
                c.names[i]
            );
        }
        assert!(verbose.contains(&format!("VIP={vip}")), "{verbose}");
        if verbose.contains("TO=leader") {
            leader_seen = true;
            assert!(
                verbose.contains(&format!("HOLDER={}", c.names[i])),
                "{}: became leader without HOLDER= naming it:\n{verbose}",
                c.names[i]
            );
        }
    }
    assert!(leader_seen, "no node logged becoming the leader");
}

/// `apt-get purge` node by node, the holder first: each purge hands over,
/// leaves no VIP, no unit and no /etc/ha-vip; the node enabled and
/// rebooted before takes the VIP when it is the last one left.
fn purge_leaves_nothing(c: &SystemdCluster, enabled: usize) {
    let h = holder(c);
    let middle = (0..3)
        .find(|&i| i != h && i != enabled)
        .expect("three nodes");
    for (k, i) in [h, middle, enabled].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(1500));
        let w = Watch::start(c);
        let apt = c.nodes[i].ok(&["apt-get", "purge", "-y", "-q", "ha-vip"]);
        assert!(
            !c.lab().has_vip(i),
            "{}: VIP left after purge; apt-get said:\n{apt}\n{}",
            c.names[i],
            c.logs()
        );
        let left = c.nodes[i].sh(
            "ls /lib/systemd/system/ha-vip.service /etc/systemd/system/multi-user.target.wants/ha-vip.service /etc/ha-vip /usr/bin/ha-vip 2>/dev/null || true",
        );
        assert!(
            left.trim().is_empty(),
            "{}: left behind:\n{left}",
            c.names[i]
        );
        let unit = c.systemctl(i, &["cat", "ha-vip.service"]);
        assert!(
            !unit.status.success(),
            "{}: systemd still knows the unit",
            c.names[i]
        );
        if k < 2 {
            let next = holder(c);
            assert_ne!(next, i);
            if k == 1 {
                assert_eq!(next, enabled, "the rebooted node did not take part");
            }
        } else {
            assert!(
                c.wait_for(Duration::from_secs(5), |c| (0..3)
                    .all(|n| !c.lab().has_vip(n))),
                "a VIP is left after purging every node"
            );
        }
        let outage = w.finish(c, "apt-get purge");
        eprintln!(
            "apt-get purge on {}: nothing left, client outage {} ms",
            c.names[i],
            outage.as_millis()
        );
    }
}
