//! The rows of `make bench-failover` for the per-node topology (issue #15):
//! one real kube-apiserver per node on one etcd, restarted as kubeadm and
//! the kubelet restart them. Included by examples/bench_failover.rs.

use std::time::{Duration, Instant};

use crate::common::lab::apiserver_cluster::{ApiCluster, ApiOutcome, ApiScenario, ROLLING_GAP};
use crate::common::lab::apiservers::KUBELET_GRACE;

/// Starts the per-node topology, reports what it costs (start time, RSS of
/// etcd and the three kube-apiservers) on stderr, and prints one table row
/// per scenario of `runs` runs each.
pub(crate) fn rows(runs: usize) {
    let t0 = Instant::now();
    let Some(mut cluster) = ApiCluster::start(3) else {
        std::process::exit(1)
    };
    let started = cluster.apis.startup;
    cluster
        .wait_holder(Duration::from_secs(40), Duration::from_secs(1))
        .expect("a first holder on the per-node topology");
    eprintln!(
        "per-node topology: etcd + 3 kube-apiservers ready in {} ms, first stable VIP holder {} ms after the start",
        started.as_millis(),
        t0.elapsed().as_millis()
    );
    footprint(&cluster, "idle");
    eprintln!(
        "per-node rows: outage = all client-visible outages of a run added up; \
         kubelet grace {} s (SIGKILL after), rolling gap {} s after each is ready",
        KUBELET_GRACE.as_secs(),
        ROLLING_GAP.as_secs()
    );
    for scenario in ApiScenario::ALL {
        let results: Vec<ApiOutcome> = (0..runs)
            .filter_map(|_| {
                cluster
                    .run(scenario)
                    .map_err(|e| eprintln!("{}: {e}\n{}", scenario.name(), cluster.logs()))
                    .ok()
            })
            .collect();
        row(&scenario_name(scenario), runs, &results);
        restart_times(scenario, &results);
    }
    footprint(&cluster, "after the scenarios");
    drop(cluster);
    with_shutdown_delay(runs);
}

/// The SIGTERM row again on apiservers with `--shutdown-delay-duration`
/// (what managed control planes set, kubeadm does not): `/readyz` fails on
/// its `shutdown` check for that long while the listener still serves,
/// the signal a holder can hand over on before clients see a refusal.
fn with_shutdown_delay(runs: usize) {
    let delay = Duration::from_secs(3);
    let Some(mut cluster) = ApiCluster::start_with(3, delay) else {
        std::process::exit(1)
    };
    // What the delay buys: the holder's restart, and the rolling restart
    // of all three (each restart a planned handover inside the delay).
    for scenario in [ApiScenario::Term, ApiScenario::Rolling] {
        let results: Vec<ApiOutcome> = (0..runs)
            .filter_map(|_| {
                cluster
                    .run(scenario)
                    .map_err(|e| eprintln!("shutdown delay: {e}\n{}", cluster.logs()))
                    .ok()
            })
            .collect();
        let name = format!(
            "{}, --shutdown-delay-duration={}s",
            scenario_name(scenario),
            delay.as_secs()
        );
        row(&name, runs, &results);
        restart_times(scenario, &results);
    }
}

fn scenario_name(scenario: ApiScenario) -> String {
    format!("per-node API servers: {}", scenario.name())
}

/// RSS of the three kube-apiservers and etcd.
fn footprint(cluster: &ApiCluster, when: &str) {
    let (apis, etcd) = cluster.apis.rss_kib();
    let sum: u64 = apis.iter().sum();
    eprintln!(
        "per-node topology RSS ({when}): kube-apiservers {} MiB ({} KiB), etcd {} MiB, total {} MiB",
        sum / 1024,
        apis.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        etcd / 1024,
        (sum + etcd) / 1024
    );
}

/// One row of the benchmark table (same columns as the other rows).
fn row(name: &str, runs: usize, results: &[ApiOutcome]) {
    let ms = |d: Duration| d.as_millis();
    let mut outages: Vec<Duration> = results.iter().map(|o| o.outage_total).collect();
    outages.sort();
    let mut moved: Vec<Duration> = results.iter().filter_map(|o| o.moved).collect();
    moved.sort();
    let median = |v: &[Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
    let max_overlap = results.iter().map(|o| o.overlap).max().unwrap_or_default();
    let moved_cell = match moved.len() {
        0 => "stays".to_string(),
        n if n == results.len() => format!("{} ms", ms(median(&moved))),
        n => format!("{} ms ({n}/{} moved)", ms(median(&moved)), results.len()),
    };
    println!(
        "| {} | {}/{} | {} ms | {} ms | {} ms | {} |",
        name,
        results.len(),
        runs,
        ms(median(&outages)),
        ms(outages.last().copied().unwrap_or_default()),
        ms(max_overlap),
        moved_cell
    );
}

/// How long the restarted kube-apiservers took to exit and to be ready
/// again (medians over the runs), on stderr.
fn restart_times(scenario: ApiScenario, results: &[ApiOutcome]) {
    let mut exited: Vec<u128> = Vec::new();
    let mut ready: Vec<u128> = Vec::new();
    for r in results.iter().flat_map(|o| &o.restarts) {
        exited.push(r.exited.as_millis());
        ready.push(r.ready.as_millis());
    }
    exited.sort();
    ready.sort();
    let median = |v: &[u128]| v.get(v.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "  {}: {} restarts, signal to exit median {} ms (max {} ms), signal to ready again median {} ms (max {} ms)",
        scenario.name(),
        exited.len(),
        median(&exited),
        exited.last().copied().unwrap_or_default(),
        median(&ready),
        ready.last().copied().unwrap_or_default()
    );
}
