//! Scripted runs of the real daemon reloading its configuration (SIGHUP)
//! while it holds the VIPs.

use tokio::time::{Duration, Instant};

use super::Cluster;
use crate::config::FenceMode;
use crate::daemon::sim::node;

/// The fast timing the precise fence allows.
const FAST: (u64, u64, u64) = (2000, 1000, 250);

/// Review finding: a VIP dropped from the holder's configuration whose
/// removal fails stays on the interface until its lifetime ends, but the
/// daemon forgot it at the reload. The precise fence no longer covered it
/// (the reload re-armed the new list only), and the release at the next
/// loss did not wait for it (only the new list was removed), so a standby
/// that still has the VIP in its configuration added it at once, and both
/// served it.
async fn a_dropped_vip_that_cannot_be_removed_is_not_served_twice(
    fence: FenceMode,
    lease: (u64, u64, u64),
) {
    let mut c = Cluster::start_fenced(2, "10.0.0.100, 10.0.0.101", lease, fence).await;
    let h = c.settled_holder().await;
    let standby = 1 - h;
    let dropped = c.vips()[1];
    // The holder's operator drops 10.0.0.101; its removal fails for a
    // moment (a busy kernel, a broken driver).
    c.world.lock().faults(h).remove_fail = Some(Instant::now() + Duration::from_millis(300));
    let run_dir = c.cfgs[h]
        .run_dir
        .parent()
        .expect("run_dir is in the temp dir");
    let yaml = node::config_yaml(h, "10.0.0.100", lease, fence, run_dir);
    std::fs::write(node::config_path(&c.cfgs[h]), yaml).expect("write the new config");
    c.instances[h].sighup.send(()).expect("the holder runs");
    c.until(Duration::from_millis(400), |_| false).await;
    assert!(
        c.world.lock().present(h, dropped),
        "the failed removal left {dropped} on node {h}:\n{}",
        c.trace()
    );
    c.cfgs[h].vips.retain(|v| *v != dropped);
    // Then the holder fails: the standby takes over with both VIPs.
    c.probes[h].set(false, "connection refused");
    let moved = c
        .until(Duration::from_secs(6), |c| {
            c.holder() == Some(standby) && c.world.lock().serving(standby, dropped, Instant::now())
        })
        .await;
    c.until(Duration::from_secs(4), |_| false).await;
    assert_eq!(c.violations(), Vec::<String>::new(), "{}", c.trace());
    assert!(
        moved,
        "node {standby} never served {dropped}:\n{}",
        c.trace()
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_vip_that_cannot_be_removed_is_not_served_twice_precise() {
    a_dropped_vip_that_cannot_be_removed_is_not_served_twice(FenceMode::Precise, FAST).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_vip_that_cannot_be_removed_is_not_served_twice_lifetime() {
    a_dropped_vip_that_cannot_be_removed_is_not_served_twice(
        FenceMode::Lifetime,
        (4000, 2000, 500),
    )
    .await;
}
