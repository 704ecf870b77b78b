use super::*;

const R: Duration = Duration::from_secs(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A healthy follower at `t0`.
fn healthy(t0: Instant) -> Machine {
    let mut m = Machine::new(R);
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0),
        vec![Action::Campaign(true)]
    );
    m
}

/// A leader that acquired with a write sent at `t0`, answered 10 ms later.
fn leader(t0: Instant) -> Machine {
    let mut m = healthy(t0);
    m.step(Event::Acquired { sent_at: t0 }, t0 + ms(10));
    assert_eq!(m.role(), Role::Leader);
    m
}

#[test]
fn starts_unhealthy_and_does_not_campaign() {
    let t0 = Instant::now();
    let mut m = Machine::new(R);
    assert_eq!(m.role(), Role::Follower);
    assert!(!m.healthy());
    assert_eq!(
        m.step(Event::Health { healthy: false }, t0),
        vec![Action::Campaign(false)]
    );
    // A lease handed to an unhealthy node is given back at once.
    assert_eq!(
        m.step(Event::Acquired { sent_at: t0 }, t0),
        vec![Action::Campaign(false)]
    );
    assert_eq!(m.role(), Role::Follower);
}

#[test]
fn acquire_adds_vips_with_the_fence_lifetime_then_announces() {
    let t0 = Instant::now();
    let mut m = healthy(t0);
    let actions = m.step(Event::Acquired { sent_at: t0 }, t0 + ms(10));
    assert_eq!(
        actions,
        vec![
            Action::Transition {
                from: Role::Follower,
                to: Role::Leader,
                reason: Reason::AcquiredLease
            },
            // 2 s deadline, 10 ms spent: floor(1.99 s) = 1 s.
            Action::SetVips {
                lifetime: Duration::from_secs(1)
            },
            Action::Announce,
        ]
    );
    assert_eq!(m.next_deadline(), Some(t0 + R));
}

#[test]
fn renew_refreshes_without_announcing_and_moves_the_deadline() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let actions = m.step(
        Event::Renewed {
            sent_at: t0 + ms(500),
        },
        t0 + ms(520),
    );
    assert_eq!(
        actions,
        vec![Action::SetVips {
            lifetime: Duration::from_secs(1)
        }]
    );
    assert_eq!(m.next_deadline(), Some(t0 + ms(2500)));
    // An older renew answered late never moves the deadline back.
    m.step(
        Event::Renewed {
            sent_at: t0 + ms(100),
        },
        t0 + ms(600),
    );
    assert_eq!(m.next_deadline(), Some(t0 + ms(2500)));
}

#[test]
fn lifetime_never_reaches_past_the_deadline() {
    let t0 = Instant::now();
    let mut m = healthy(t0);
    // The acquiring write took 1.2 s to answer: only 0.8 s left, which
    // rounds down to zero seconds, so the VIP is not added yet.
    let actions = m.step(Event::Acquired { sent_at: t0 }, t0 + ms(1200));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::SetVips { .. })),
        "{actions:?}"
    );
    assert!(!m.vips_set());
    // The next quick renew adds it and announces.
    let actions = m.step(
        Event::Renewed {
            sent_at: t0 + ms(1300),
        },
        t0 + ms(1310),
    );
    assert_eq!(
        actions,
        vec![
            Action::SetVips {
                lifetime: Duration::from_secs(1)
            },
            Action::Announce
        ]
    );
    for now_ms in [1310, 1500, 2000, 3000, 3299] {
        let now = t0 + ms(now_ms);
        if let Some(l) = m.lifetime(now) {
            assert!(
                now + l <= m.next_deadline().unwrap_or(now),
                "lifetime {l:?} at {now_ms} ms"
            );
        }
    }
}

#[test]
fn deadline_removes_vips_first() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    assert_eq!(m.step(Event::Deadline, t0 + ms(1999)), vec![]);
    let actions = m.step(Event::Deadline, t0 + R);
    assert_eq!(
        actions,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::RenewDeadline
            },
        ]
    );
    assert_eq!(m.next_deadline(), None);
    // Any later event sees a follower.
    assert_eq!(m.step(Event::Lost, t0 + ms(2100)), vec![]);
}

#[test]
fn a_passed_deadline_is_applied_before_the_event_that_reveals_it() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    // The loop was stuck (frozen) and the first thing it sees is a health report.
    let actions = m.step(Event::Health { healthy: true }, t0 + ms(5000));
    assert_eq!(actions.first(), Some(&Action::RemoveVips));
    assert_eq!(m.role(), Role::Follower);
}

#[test]
fn losing_health_removes_vips_then_releases() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let actions = m.step(Event::Health { healthy: false }, t0 + ms(100));
    assert_eq!(
        actions,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::Unhealthy
            },
            Action::Campaign(false),
        ]
    );
}

#[test]
fn lost_lease_removes_vips_first() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let actions = m.step(Event::Lost, t0 + ms(100));
    assert_eq!(actions[0], Action::RemoveVips);
    assert_eq!(m.role(), Role::Follower);
    // Still healthy: the elector keeps campaigning on its own.
    assert!(!actions.contains(&Action::Campaign(false)));
}

#[test]
fn shutdown_hands_over() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let actions = m.step(Event::Shutdown, t0 + ms(100));
    assert_eq!(
        actions,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Stopping,
                reason: Reason::Shutdown
            },
            Action::Campaign(false),
        ]
    );
    // Nothing brings the VIPs back while stopping.
    assert_eq!(
        m.step(
            Event::Renewed {
                sent_at: t0 + ms(150)
            },
            t0 + ms(160)
        ),
        vec![]
    );
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(170)),
        vec![]
    );
    assert_eq!(m.step(Event::Shutdown, t0 + ms(180)), vec![]);
}

#[test]
fn vip_failure_hands_the_lease_over_and_retries_later() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let actions = m.step(Event::VipFailed, t0 + ms(100));
    assert_eq!(
        actions,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::VipFailed
            },
            Action::Campaign(false),
        ]
    );
    let retry = t0 + ms(100) + VIP_FAILURE_BACKOFF;
    assert_eq!(m.next_deadline(), Some(retry));
    // No campaign during the backoff, even on a fresh healthy report.
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(200)),
        vec![]
    );
    assert_eq!(m.step(Event::Deadline, retry - ms(1)), vec![]);
    assert_eq!(m.step(Event::Deadline, retry), vec![Action::Campaign(true)]);
    assert_eq!(m.next_deadline(), None);
    // A follower's VIP failure changes nothing.
    assert_eq!(m.step(Event::VipFailed, retry + ms(1)), vec![]);
}

#[test]
fn late_renew_after_own_deadline_takes_back_only_a_live_lease() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.step(Event::Deadline, t0 + R);
    assert_eq!(m.role(), Role::Follower);
    // A renew sent at 1.9 s answered at 2.1 s: good until 3.9 s.
    let actions = m.step(
        Event::Renewed {
            sent_at: t0 + ms(1900),
        },
        t0 + ms(2100),
    );
    assert_eq!(
        actions[0],
        Action::Transition {
            from: Role::Follower,
            to: Role::Leader,
            reason: Reason::AcquiredLease
        }
    );
    assert_eq!(m.next_deadline(), Some(t0 + ms(3900)));
    // One whose fence already passed is ignored.
    let mut m = leader(t0);
    m.step(Event::Deadline, t0 + R);
    assert_eq!(
        m.step(
            Event::Renewed {
                sent_at: t0 + ms(100)
            },
            t0 + ms(2200)
        ),
        vec![]
    );
    assert_eq!(m.role(), Role::Follower);
}

#[test]
fn carrier_loss_removes_vips_and_releases_at_once() {
    let t0 = Instant::now();
    let mut m = leader(t0).with_carrier_buffer(Duration::from_secs(3));
    assert_eq!(
        m.step(Event::Carrier { up: false }, t0 + ms(100)),
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::CarrierLost
            },
            Action::Campaign(false),
        ]
    );
    assert!(!m.vips_set() && !m.carrier() && m.fence().is_none());
    assert_eq!(m.next_deadline(), None);
    // A write that was in flight is given back, health or not.
    assert_eq!(
        m.step(
            Event::Renewed {
                sent_at: t0 + ms(90)
            },
            t0 + ms(120)
        ),
        vec![Action::Campaign(false)]
    );
    assert_eq!(m.role(), Role::Follower);
    assert!(
        m.step(Event::Health { healthy: true }, t0 + ms(200))
            .is_empty()
    );
}

#[test]
fn carrier_back_counts_only_after_the_buffer() {
    let t0 = Instant::now();
    let buffer = Duration::from_secs(3);
    let mut m = healthy(t0).with_carrier_buffer(buffer);
    assert_eq!(
        m.step(Event::Carrier { up: false }, t0),
        vec![Action::Campaign(false)]
    );
    // Back, but flapping: each loss restarts the count.
    assert!(m.step(Event::Carrier { up: true }, t0 + ms(100)).is_empty());
    assert_eq!(m.next_deadline(), Some(t0 + ms(100) + buffer));
    m.step(Event::Carrier { up: false }, t0 + ms(200));
    assert_eq!(m.next_deadline(), None);
    let back = t0 + ms(300);
    assert!(m.step(Event::Carrier { up: true }, back).is_empty());
    // A repeated "up" does not restart it.
    assert!(
        m.step(Event::Carrier { up: true }, back + ms(500))
            .is_empty()
    );
    assert!(m.step(Event::Deadline, back + buffer - ms(1)).is_empty());
    assert!(!m.carrier());
    assert_eq!(
        m.step(Event::Deadline, back + buffer),
        vec![Action::Campaign(true)]
    );
    assert!(m.carrier() && m.campaigning());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn an_unhealthy_node_whose_carrier_returns_does_not_campaign() {
    let t0 = Instant::now();
    let mut m = Machine::new(R).with_carrier_buffer(ms(500));
    m.step(Event::Carrier { up: false }, t0);
    // Healthy without a carrier: no campaign.
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(10)),
        Vec::new()
    );
    m.step(Event::Health { healthy: false }, t0 + ms(20));
    m.step(Event::Carrier { up: true }, t0 + ms(30));
    assert!(m.step(Event::Deadline, t0 + ms(530)).is_empty());
    assert!(m.carrier());
    // Health back with the carrier back: campaign.
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(600)),
        vec![Action::Campaign(true)]
    );
}

#[test]
fn a_zero_buffer_carrier_counts_at_once_and_shutdown_ignores_it() {
    let t0 = Instant::now();
    let mut m = healthy(t0);
    m.step(Event::Carrier { up: false }, t0);
    assert_eq!(
        m.step(Event::Carrier { up: true }, t0 + ms(1)),
        vec![Action::Campaign(true)]
    );
    m.step(Event::Shutdown, t0 + ms(2));
    assert!(m.step(Event::Carrier { up: false }, t0 + ms(3)).is_empty());
    assert_eq!(m.role(), Role::Stopping);
}

/// Suspended 10 s as leader: the monotonic fence (t0 + 2 s) still looks a
/// second ahead on waking, but the boot-time clock says the machine slept.
#[test]
fn slept_removes_vips_first_although_the_monotonic_fence_is_ahead() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    // What the daemon did before: nothing, the monotonic fence is ahead.
    assert_eq!(m.step(Event::Deadline, t0 + ms(1000)), vec![]);
    assert!(m.vips_set());
    let actions = m.step(Event::Slept, t0 + ms(1000));
    assert_eq!(
        actions,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::Suspended
            },
        ]
    );
    assert!(!m.vips_set());
    assert_eq!(m.fence(), None);
}

/// A renew sent before the suspend, answered after it: its fence is on the
/// clock that stood still, so it must not bring the VIPs back. A renew sent
/// after waking does.
#[test]
fn a_renew_sent_before_the_sleep_grants_nothing() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.step(Event::Slept, t0 + ms(800));
    let actions = m.step(
        Event::Renewed {
            sent_at: t0 + ms(500),
        },
        t0 + ms(900),
    );
    assert_eq!(actions, vec![]);
    assert_eq!(m.role(), Role::Follower);
    assert!(!m.vips_set());
    // Still campaigning: a fresh write may win the lease back.
    assert!(m.campaigning());
    let actions = m.step(
        Event::Renewed {
            sent_at: t0 + ms(950),
        },
        t0 + ms(960),
    );
    assert_eq!(
        actions[0].clone(),
        Action::Transition {
            from: Role::Follower,
            to: Role::Leader,
            reason: Reason::AcquiredLease
        }
    );
    assert!(m.vips_set());
}

/// logind announces a suspend: VIPs first, then the lease; no campaign while
/// asleep even if health reports come in; campaign again on resume.
#[test]
fn suspending_hands_over_and_campaigns_again_only_after_resume() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let actions = m.step(Event::Suspending, t0 + ms(100));
    assert_eq!(
        actions,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::Suspending
            },
            Action::Campaign(false),
        ]
    );
    assert_eq!(
        m.step(Event::Health { healthy: false }, t0 + ms(200)),
        vec![Action::Campaign(false)]
    );
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(300)),
        vec![]
    );
    // A write that was in flight is handed back, not used.
    assert_eq!(
        m.step(
            Event::Renewed {
                sent_at: t0 + ms(90)
            },
            t0 + ms(310)
        ),
        vec![Action::Campaign(false)]
    );
    assert_eq!(m.role(), Role::Follower);
    assert_eq!(
        m.step(Event::Resumed, t0 + ms(400)),
        vec![Action::Campaign(true)]
    );
    // Unhealthy on resume: no campaign until healthy.
    let mut m = leader(t0);
    m.step(Event::Suspending, t0 + ms(100));
    m.step(Event::Health { healthy: false }, t0 + ms(200));
    assert_eq!(m.step(Event::Resumed, t0 + ms(400)), vec![]);
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(500)),
        vec![Action::Campaign(true)]
    );
}

/// A suspend and resume inside the back-off after a VIP failure do not cut
/// it short: a node whose VIP could not be added stays out for the whole
/// back-off, asleep or not.
#[test]
fn a_suspend_keeps_the_vip_failure_backoff() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.step(Event::VipFailed, t0 + ms(100));
    let retry = t0 + ms(100) + VIP_FAILURE_BACKOFF;
    m.step(Event::Suspending, t0 + ms(200));
    assert_eq!(m.step(Event::Resumed, t0 + ms(1200)), vec![]);
    assert_eq!(m.next_deadline(), Some(retry));
    assert_eq!(m.step(Event::Deadline, retry), vec![Action::Campaign(true)]);
}

/// With the precise fence in front, the lifetime is the outer bound: one
/// second past the fence, so a 1 s renew deadline with a renewal answered
/// 999 ms late still gets a whole second (and the VIP is added), while
/// the fence itself does not move.
#[test]
fn the_outer_slack_keeps_a_short_renew_deadline_above_one_second() {
    let t0 = Instant::now();
    let mut m = Machine::new(Duration::from_secs(1)).with_outer_slack(Duration::from_secs(1));
    m.step(Event::Health { healthy: true }, t0);
    let actions = m.step(Event::Acquired { sent_at: t0 }, t0 + ms(999));
    assert!(
        actions.contains(&Action::SetVips {
            lifetime: Duration::from_secs(1)
        }),
        "{actions:?}"
    );
    assert_eq!(m.fence(), Some(t0 + Duration::from_secs(1)));
    // Past the fence nothing is added, slack or not.
    assert_eq!(m.lifetime(t0 + Duration::from_secs(1)), None);
    // Without the slack (the lifetime fence) under a second is left.
    let mut m = Machine::new(Duration::from_secs(1));
    m.step(Event::Health { healthy: true }, t0);
    let actions = m.step(Event::Acquired { sent_at: t0 }, t0 + ms(10));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::SetVips { .. })),
        "{actions:?}"
    );
}
