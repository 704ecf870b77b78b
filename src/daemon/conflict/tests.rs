use super::*;
use crate::announce::conflict::ClaimKind;

const ME: &str = "cp-1";

#[test]
fn a_planned_handover_after_a_clean_start_needs_no_probe() {
    let mut n = Need::at_start(Some(Vec::new()));
    n.observed(Some("cp-2"), ME);
    // cp-2 releases (holderIdentity empty), then we acquire.
    n.observed(None, ME);
    n.observed(Some(ME), ME);
    assert_eq!(n.why(), None);
}

#[test]
fn taking_over_an_expired_lease_probes_once() {
    let mut n = Need::at_start(Some(Vec::new()));
    n.observed(Some("cp-2"), ME);
    // cp-2 stops renewing; we take the Lease as it is.
    n.observed(Some(ME), ME);
    assert_eq!(n.why(), Some("taking over a lease that expired"));
    n.probed(true);
    assert_eq!(n.why(), None, "a clean probe settles the term");
}

#[test]
fn our_own_lease_after_a_restart_needs_no_probe_after_a_clean_start() {
    let mut n = Need::at_start(Some(Vec::new()));
    n.observed(Some(ME), ME);
    assert_eq!(n.why(), None);
}

#[test]
fn a_failed_start_probe_makes_the_first_add_probe() {
    let mut n = Need::at_start(None);
    assert!(n.observed(Some("cp-2"), ME).is_empty());
    assert!(n.why().is_some());
    n.observed(None, ME);
    assert!(n.why().is_some());
}

/// A standby restarted while cp-2 holds the VIP (a rolling upgrade): the
/// holder answers its start probe. That is expected, and its planned
/// handover later must not probe.
#[test]
fn one_answer_at_start_while_another_node_holds_is_the_holder() {
    let mut n = Need::at_start(Some(vec![conflict(1)]));
    assert!(n.observed(Some("cp-2"), ME).is_empty(), "not a conflict");
    n.observed(None, ME);
    n.observed(Some(ME), ME);
    assert_eq!(n.why(), None, "a planned handover does not probe");
}

#[test]
fn two_answers_at_start_while_another_node_holds_are_a_conflict() {
    let mut n = Need::at_start(Some(vec![conflict(1), conflict(2)]));
    assert_eq!(n.observed(Some("cp-2"), ME).len(), 2);
    assert!(n.why().is_some());
}

#[test]
fn an_answer_at_start_while_the_lease_is_free_or_ours_is_a_conflict() {
    for holder in [None, Some(ME)] {
        let mut n = Need::at_start(Some(vec![conflict(1)]));
        assert_eq!(n.observed(holder, ME), vec![conflict(1)], "{holder:?}");
        assert!(n.observed(holder, ME).is_empty(), "decided once");
        assert_eq!(
            n.why(),
            Some("another host answered for the VIP before"),
            "{holder:?}"
        );
    }
}

#[test]
fn an_answer_at_the_probe_before_an_add_keeps_the_vips_suspect() {
    let mut n = Need::at_start(Some(vec![conflict(1)]));
    n.observed(None, ME);
    n.observed(None, ME);
    assert_eq!(n.why(), Some("another host answered for the VIP before"));
    // The probe before the add finds the other host again: still suspect.
    n.probed(false);
    assert!(n.why().is_some());
    // The rogue left.
    n.probed(true);
    assert_eq!(n.why(), None);
}

fn cfg() -> Config {
    let text = "node_name: cp-1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  enabled: false\nhealth:\n  insecure_skip_tls_verify: true\n";
    Config::parse(text, std::path::Path::new("/etc/ha-vip/config.yaml")).unwrap()
}

fn conflict(mac: u8) -> Conflict {
    Conflict {
        vip: cfg().vips[0],
        mac: [2, 0, 0, 0, 0, mac],
        kind: ClaimKind::ArpRequest,
    }
}

/// A flapping rogue: every frame counts in the metric, but the log and
/// the Event come once per VIP and MAC per REPORT_EVERY, the next one
/// saying how many were left out.
#[tokio::test(start_paused = true)]
async fn reports_are_rate_limited_but_every_conflict_counts() {
    let cfg = cfg();
    let metrics = Metrics::new(&cfg.vips);
    let (tx, rx) = watch::channel(crate::cluster::Snapshot::default());
    let r = Reporter::new(&cfg, &metrics, Notices::new(tx));
    for _ in 0..50 {
        r.report(conflict(1), Phase::Holding);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another MAC is news of its own.
    r.report(conflict(2), Phase::Holding);
    let events = rx.borrow().conflicts.clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].message.contains("02:00:00:00:00:01"));
    assert!(events[0].message.contains("10.0.0.100/32"));
    assert!(events[0].message.contains("eth0"));
    assert!(events[0].message.contains("keeps serving"));
    assert!(events[1].message.contains("02:00:00:00:00:02"));
    assert!(
        metrics
            .encode()
            .contains("ha_vip_address_conflicts_total{vip=\"10.0.0.100/32\"} 51\n"),
        "{}",
        metrics.encode()
    );
    // The same host before an add (a later term) is news too.
    r.report(conflict(1), Phase::BeforeAdd);
    assert_eq!(rx.borrow().conflicts.len(), 3);
    tokio::time::sleep(REPORT_EVERY).await;
    r.report(conflict(1), Phase::Holding);
    let events = rx.borrow().conflicts.clone();
    assert_eq!(events.len(), 4);
    assert!(
        events[3]
            .message
            .contains("(49 more since the last report)"),
        "{}",
        events[3].message
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn the_before_add_message_says_what_happens_and_what_to_do() {
    let cfg = cfg();
    let metrics = Metrics::new(&cfg.vips);
    let (tx, rx) = watch::channel(crate::cluster::Snapshot::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        Reporter::new(&cfg, &metrics, Notices::new(tx)).report(conflict(7), Phase::BeforeAdd)
    });
    let m = rx.borrow().conflicts[0].message.clone();
    assert!(m.contains("not adding it here"), "{m}");
    assert!(m.contains("remove 10.0.0.100/32 from it"), "{m}");
}
