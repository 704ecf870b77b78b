//! The fault matrix: every scenario once against a three-node lab with the
//! real kube-apiserver. Correctness only (zero overlap, a leader again within
//! a generous bound); `make bench-failover` measures the timings.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::time::Duration;

use common::lab::cluster::{Cluster, Scenario};

#[test]
fn serial_every_fault_keeps_one_holder_and_recovers() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    for scenario in Scenario::ALL {
        let outcome = cluster
            .run(scenario)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", scenario.name(), cluster.logs()));
        eprintln!(
            "{:<28} outage {:>6} ms  overlap {:>4} ms  recovered {:>6} ms",
            scenario.name(),
            outcome.outage.as_millis(),
            outcome.overlap.as_millis(),
            outcome.recovered.as_millis()
        );
        assert_eq!(
            outcome.overlap,
            Duration::ZERO,
            "{}: two nodes held the VIP\n{}",
            scenario.name(),
            cluster.logs()
        );
        assert!(
            outcome.recovered < Duration::from_secs(30),
            "{}",
            scenario.name()
        );
    }
}
