//! Failovers as the object and its Events show them: exactly the expected
//! Events, counted once, and the failover reason.

use std::time::{Duration, SystemTime};

use ha_vip::cluster::Cluster;
use ha_vip::observe::Metrics;
use ha_vip::role::{Role, TransitionReason};

use super::apiserver::ApiServer;
use super::{events, install_crd, logs, node_client, settings, status, vips, wait_object};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_produces_exactly_the_expected_events_and_counts_once() {
    logs();
    let Some(api) = ApiServer::start() else {
        return;
    };
    install_crd(&api).await;
    let node = node_client(&api).await;
    let metrics = Metrics::new(&vips());
    let mut a = Cluster::start(node.clone(), settings("node-a"), &metrics);
    let mut b = Cluster::start(node.clone(), settings("node-b"), &metrics);

    // node-a acquires, b follows.
    a.record(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    a.publish(&status("node-a", Role::Leader, true, Some("node-a")));
    b.publish(&status("node-b", Role::Follower, true, Some("node-a")));
    wait_object(&api, "node-a holds", |o| {
        o.status.holder.as_deref() == Some("node-a")
    })
    .await;

    // node-a's API server fails: it gives up, node-b takes over.
    a.record(
        Role::Leader,
        Role::Follower,
        TransitionReason::Unhealthy,
        SystemTime::now(),
    );
    let mut st = status("node-a", Role::Follower, false, Some("node-b"));
    st.transition(
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    st.transition(
        Role::Follower,
        TransitionReason::Unhealthy,
        SystemTime::now(),
    );
    a.publish(&st);
    wait_object(&api, "node-a reports the loss", |o| {
        o.status
            .node("node-a")
            .is_some_and(|e| e.last_transition_reason.as_deref() == Some("unhealthy"))
    })
    .await;
    b.record(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    b.publish(&status("node-b", Role::Leader, true, Some("node-b")));
    let obj = wait_object(&api, "node-b holds", |o| {
        o.status.holder.as_deref() == Some("node-b")
    })
    .await;
    assert_eq!(obj.status.failovers, Some(1), "{obj:#?}");
    assert_eq!(
        obj.status.last_failover_reason.as_deref(),
        Some("node-a: local API server unhealthy")
    );

    // node-b shuts down (planned handover), node-a takes the VIP back.
    b.record(
        Role::Leader,
        Role::Stopping,
        TransitionReason::Shutdown,
        SystemTime::now(),
    );
    b.publish(&status("node-b", Role::Stopping, true, Some("node-b")));
    b.finish(Duration::from_secs(5)).await;
    a.record(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    a.publish(&status("node-a", Role::Leader, true, Some("node-a")));
    let obj = wait_object(&api, "node-a holds again", |o| {
        o.status.holder.as_deref() == Some("node-a") && o.status.failovers == Some(2)
    })
    .await;
    assert_eq!(
        obj.status.last_failover_reason.as_deref(),
        Some("node-b: shutting down")
    );
    // Heartbeats and renewals add no Events: wait a few heartbeats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.finish(Duration::from_secs(5)).await;

    let seen = events(&api).await;
    for e in &seen {
        eprintln!("{e:?}");
    }
    let summary: Vec<(&str, &str, u64)> = seen
        .iter()
        .map(|(n, r, c, _)| (n.as_str(), r.as_str(), *c))
        .collect();
    assert_eq!(
        summary,
        [
            ("node-a", "Acquired", 2),
            ("node-a", "LostUnhealthy", 1),
            ("node-b", "Acquired", 1),
            ("node-b", "Released", 1),
        ],
        "one Event per node and reason, repeats counted"
    );
    let lost = &seen[1].3;
    assert_eq!(
        lost,
        "node-a lost 10.0.0.100/32: local API server unhealthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_holders_late_report_corrects_the_failover_reason() {
    logs();
    let Some(api) = ApiServer::start() else {
        return;
    };
    install_crd(&api).await;
    let node = node_client(&api).await;
    let metrics = Metrics::new(&vips());
    let mut a = Cluster::start(node.clone(), settings("node-a"), &metrics);
    let mut b = Cluster::start(node.clone(), settings("node-b"), &metrics);
    a.publish(&status("node-a", Role::Leader, true, Some("node-a")));
    b.publish(&status("node-b", Role::Follower, true, Some("node-a")));
    wait_object(&api, "node-a holds", |o| {
        o.status.holder.as_deref() == Some("node-a") && o.status.nodes.len() == 2
    })
    .await;
    // node-b takes over while node-a's entry still says leader: the reason
    // can only be a guess.
    b.record(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    b.publish(&status("node-b", Role::Leader, true, Some("node-b")));
    let obj = wait_object(&api, "node-b holds", |o| {
        o.status.holder.as_deref() == Some("node-b")
    })
    .await;
    assert_eq!(
        obj.status.last_failover_reason.as_deref(),
        Some("node-a stopped renewing the lease")
    );
    assert_eq!(obj.status.previous_holder.as_deref(), Some("node-a"));
    // node-a's own report arrives later; the holder rechecks its guess and
    // corrects it (without the recheck the guess would stay for good).
    let mut st = status("node-a", Role::Follower, true, Some("node-b"));
    st.transition(
        Role::Leader,
        TransitionReason::AcquiredLease,
        SystemTime::now(),
    );
    st.transition(
        Role::Follower,
        TransitionReason::RenewDeadline,
        SystemTime::now(),
    );
    a.publish(&st);
    let obj = wait_object(&api, "the corrected reason", |o| {
        o.status.last_failover_reason.as_deref()
            == Some("node-a: lease not renewed within the renew deadline")
    })
    .await;
    assert_eq!(
        obj.status.failovers,
        Some(1),
        "corrected, not counted twice"
    );
    a.finish(Duration::from_secs(2)).await;
    b.finish(Duration::from_secs(2)).await;
}
