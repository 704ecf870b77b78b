//! `make bench-failover`: every scenario of the fault matrix N times (default
//! 5) against a three-node lab with the real kube-apiserver, measured by the
//! lab's own meters (client TCP connects, the address meter and the
//! answering meter); then one daemon's idle footprint and the API request
//! rate, read from /proc and from the API server's own metrics. Then every
//! scenario again with the .deb under a real systemd (systemd-nspawn
//! containers, `HAVIP_DEB` set by `make bench-failover`), driven with
//! systemctl. All of it once per profile (tests/common/lab/profile.rs): a
//! YAML fragment merged into every node's configuration; a profile this
//! ha-vip rejects (`ha-vip check-config`) is reported and skipped. Then,
//! once, the per-node topology's rows (one real kube-apiserver per node,
//! support/apiserver_rows.rs) with the default configuration.
//!
//! Usage: bench_failover [RUNS] [IDLE_SECONDS] [PROFILES]
//! (PROFILES: comma-separated names, default every profile)

#[path = "../tests/common/apiserver.rs"]
mod apiserver;
#[path = "support/apiserver_rows.rs"]
mod apiserver_rows;
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::lab::cluster::{Cluster, Outcome, Scenario};
use common::lab::profile::{self, Profile};
use common::lab::systemd_cluster::{SystemdCluster, deb_under_test};

/// Runs one row's scenario once against a cluster of type `C`.
type RunOnce<C> = Box<dyn Fn(&mut C) -> Result<Outcome, String>>;

/// One row of a table: a name, whether the VIP should move, and what runs
/// it once. Rows of other labs (e.g. per-node API servers) are added as
/// functions returning more of these.
struct Row<C> {
    name: String,
    moves: bool,
    run: RunOnce<C>,
}

/// The fault matrix against the plain lab.
fn lab_rows() -> Vec<Row<Cluster>> {
    Scenario::ALL
        .into_iter()
        .map(|s| Row {
            name: s.name().to_string(),
            moves: s.moves(),
            run: Box::new(move |c: &mut Cluster| c.run(s)),
        })
        .collect()
}

/// The fault matrix under a real systemd, driven with systemctl.
fn systemd_rows() -> Vec<Row<SystemdCluster>> {
    Scenario::ALL
        .into_iter()
        .map(|s| Row {
            name: match s {
                Scenario::Planned => "systemd: systemctl stop".to_string(),
                Scenario::Crash => "systemd: kill -s KILL, ExecStopPost, Restart=".to_string(),
                Scenario::Kill => "systemd: kill -s KILL, no ExecStopPost".to_string(),
                Scenario::Freeze => "systemd: kill -s STOP 8 s".to_string(),
                other => format!("systemd: {}", other.name()),
            },
            moves: s.moves(),
            run: Box::new(move |c: &mut SystemdCluster| c.run(s)),
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let idle: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    // HAVIP_BENCH_ONLY=apiservers: only the per-node topology's rows.
    if std::env::var("HAVIP_BENCH_ONLY").as_deref() == Ok("apiservers") {
        apiserver_rows::rows(runs);
        return;
    }
    let wanted: Option<Vec<String>> = args
        .next()
        .map(|a| a.split(',').map(|p| p.trim().to_string()).collect());
    let profiles: Vec<Profile> = profile::ALL
        .into_iter()
        .filter(|p| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| n == p.name))
        })
        .collect();
    if profiles.is_empty() {
        eprintln!(
            "no profile named {:?}; known: {}",
            wanted.unwrap_or_default(),
            profile::ALL.map(|p| p.name).join(", ")
        );
        std::process::exit(2);
    }
    // Checked first: the systemd rows need the .deb (make bench-failover).
    let Some(deb) = deb_under_test() else {
        std::process::exit(1)
    };
    let started = Instant::now();
    let mut skipped = Vec::new();
    for p in &profiles {
        let bench = Instant::now();
        println!("\n## profile {}: {}", p.name, p.about);
        let fragment = match p.resolve() {
            Ok((fragment, note)) => {
                if let Some(note) = note {
                    println!("note: {note}");
                }
                fragment
            }
            Err(rejected) => {
                println!("SKIPPED: this ha-vip rejects the profile's configuration:\n{rejected}");
                skipped.push(p.name);
                continue;
            }
        };
        println!("fragment merged into every node's config: {fragment:?}");
        in_lab(runs, idle, fragment);
        under_systemd(runs, &deb, fragment);
        eprintln!("profile {} took {} s", p.name, bench.elapsed().as_secs());
    }
    // The API server restarts test health and handover, not the fence:
    // once, with the default configuration.
    let rows = Instant::now();
    apiserver_rows::rows(runs);
    eprintln!("per-node topology rows took {} s", rows.elapsed().as_secs());
    eprintln!("bench-failover took {} s", started.elapsed().as_secs());
    if !skipped.is_empty() {
        eprintln!(
            "profiles skipped (rejected by this ha-vip): {}",
            skipped.join(", ")
        );
    }
}

/// The rows against the plain lab (`ha-vip run` per node namespace), after
/// the idle footprint.
fn in_lab(runs: usize, idle: u64, fragment: &str) {
    let Some(mut cluster) = Cluster::start_with(3, fragment) else {
        std::process::exit(1)
    };
    cluster
        .wait_holder(Duration::from_secs(40), Duration::from_secs(1))
        .expect("a first holder");
    idle_footprint(&cluster, Duration::from_secs(idle));
    table(&mut cluster, &lab_rows(), runs);
}

/// The same scenarios with the .deb under a real systemd in three booted
/// containers, driven with systemctl: the crash row includes systemd
/// running ExecStopPost=ha-vip release and restarting the service.
fn under_systemd(runs: usize, deb: &Path, fragment: &str) {
    let Some(mut c) = SystemdCluster::start_with(3, deb, fragment) else {
        std::process::exit(1)
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for i in 0..3 {
            let c = &c;
            s.spawn(move || c.systemctl(i, &["start", "ha-vip"]));
        }
    });
    let ready = t0.elapsed();
    c.wait_holder(Duration::from_secs(40), Duration::from_secs(1))
        .expect("a first holder under systemd");
    eprintln!(
        "under systemd: systemctl start on 3 nodes returned (READY=1) after {} ms, first stable holder after {} ms",
        ready.as_millis(),
        t0.elapsed().as_millis()
    );
    table(&mut c, &systemd_rows(), runs);
    for i in 0..3 {
        let pid = c.prop(i, "MainPID");
        let rss = c.nodes[i].sh(&format!("grep VmRSS /proc/{pid}/status"));
        eprintln!("under systemd: {} ha-vip {}", c.names[i], rss.trim());
    }
}

/// Runs every row `runs` times against `cluster` and prints the table.
fn table<C>(cluster: &mut C, rows: &[Row<C>], runs: usize) {
    println!(
        "\n| scenario | runs | median outage | max outage | max overlap (address) | max overlap (answering) | median answer outage | median VIP moved |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let results: Vec<Outcome> = (0..runs)
            .filter_map(|_| {
                (r.run)(cluster)
                    .map_err(|e| eprintln!("{}: {e}", r.name))
                    .ok()
            })
            .collect();
        row(&r.name, r.moves, runs, &results);
    }
}

/// One table row from `results` of `runs` attempts.
fn row(name: &str, moves: bool, runs: usize, results: &[Outcome]) {
    let ms = |d: Duration| d.as_millis();
    let sorted = |f: fn(&Outcome) -> Duration| {
        let mut v: Vec<Duration> = results.iter().map(f).collect();
        v.sort();
        v
    };
    let median = |v: &[Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
    let outages = sorted(|o| o.outage);
    let answer_outages = sorted(|o| o.answer_outage);
    let moved = sorted(|o| o.recovered);
    let max = |f: fn(&Outcome) -> Duration| results.iter().map(f).max().unwrap_or_default();
    println!(
        "| {} | {}/{} | {} ms | {} ms | {} ms | {} ms | {} ms | {} |",
        name,
        results.len(),
        runs,
        ms(median(&outages)),
        ms(outages.last().copied().unwrap_or_default()),
        ms(max(|o| o.overlap)),
        ms(max(|o| o.answer_overlap)),
        ms(median(&answer_outages)),
        if moves {
            format!("{} ms", ms(median(&moved)))
        } else {
            "stays".to_string()
        }
    );
}

/// RSS and CPU of one daemon, and lease requests per second per node, over
/// `span` of steady state.
fn idle_footprint(cluster: &Cluster, span: Duration) {
    if span.is_zero() {
        // IDLE=0: no footprint rather than rates divided by zero.
        return;
    }
    let pids: Vec<i32> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid())
        .map(|p| p.as_raw())
        .collect();
    let requests_before = lease_requests(cluster);
    let cpu_before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    std::thread::sleep(span);
    let requests = lease_requests(cluster).saturating_sub(requests_before);
    let ticks = sysconf_ticks();
    println!(
        "idle footprint over {} s (3 nodes, the profile's timings):",
        span.as_secs()
    );
    for (i, &pid) in pids.iter().enumerate() {
        let cpu = (cpu_ticks(pid) - cpu_before[i]) as f64 / ticks;
        println!(
            "  {} (pid {pid}): RSS {} KiB, CPU {:.2} s = {:.2} % of one core",
            cluster.nodes[i].name,
            rss_kib(pid),
            cpu,
            100.0 * cpu / span.as_secs_f64()
        );
    }
    println!(
        "  lease requests to the API server: {requests} in {} s = {:.2}/s for the cluster, {:.2}/s per node",
        span.as_secs(),
        requests as f64 / span.as_secs_f64(),
        requests as f64 / span.as_secs_f64() / pids.len() as f64
    );
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after ')'.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn sysconf_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Lease requests the API server has served, from its own /metrics.
fn lease_requests(cluster: &Cluster) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            cluster.api().var("KUBE_ADMIN_TOKEN")
        ))
        .arg(format!("{}/metrics", cluster.api().server()))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("resource=\"leases\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}
