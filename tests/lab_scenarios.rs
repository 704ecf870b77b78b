//! The fault matrix: every scenario once against a three-node lab with the
//! real kube-apiserver. Correctness only (zero overlap by the address meter
//! and by the answering meter, a leader again and answers again within
//! generous bounds); `make bench-failover` measures the timings. Once per
//! benchmark profile (tests/common/lab/profile.rs): the lifetime fence with
//! the default timings, and the precise fence with the fast ones.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::time::Duration;

use common::lab::cluster::{Cluster, Scenario};
use common::lab::profile::{self, Profile};

#[test]
fn serial_every_fault_keeps_one_holder_and_recovers_with_the_lifetime_fence() {
    every_fault(profile::LIFETIME);
}

#[test]
fn serial_every_fault_keeps_one_holder_and_recovers_with_the_precise_fence() {
    every_fault(profile::PRECISE);
}

fn every_fault(p: Profile) {
    let Some(mut cluster) = Cluster::start_with(3, p.fragment) else {
        return;
    };
    eprintln!("profile {}: {}", p.name, p.about);
    for scenario in Scenario::ALL {
        let outcome = cluster
            .run(scenario)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", scenario.name(), cluster.logs()));
        eprintln!(
            "{:<28} outage {:>6} ms  overlap {:>4} ms (answering {:>4} ms)  answer outage {:>6} ms  recovered {:>6} ms",
            scenario.name(),
            outcome.outage.as_millis(),
            outcome.overlap.as_millis(),
            outcome.answer_overlap.as_millis(),
            outcome.answer_outage.as_millis(),
            outcome.recovered.as_millis()
        );
        assert_eq!(
            outcome.overlap,
            Duration::ZERO,
            "{}: two nodes held the VIP\n{}",
            scenario.name(),
            cluster.logs()
        );
        assert_eq!(
            outcome.answer_overlap,
            Duration::ZERO,
            "{}: two MACs answered ARP for the VIP\n{}",
            scenario.name(),
            cluster.logs()
        );
        assert!(
            outcome.recovered < Duration::from_secs(30),
            "{}",
            scenario.name()
        );
        // Generous: the default timings need about 4 s for an unplanned
        // loss; the freeze keeps the old holder silent for 8 s at most.
        assert!(
            outcome.answer_outage < Duration::from_secs(15),
            "{}: nobody answered ARP for the VIP for {:?}\n{}",
            scenario.name(),
            outcome.answer_outage,
            cluster.logs()
        );
    }
}
