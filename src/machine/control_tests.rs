//! The operator's controls in the machine: drain, undrain, handover.

use super::*;

const R: Duration = Duration::from_secs(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn leader(t0: Instant) -> Machine {
    let mut m = Machine::new(R);
    m.step(Event::Health { healthy: true }, t0);
    m.step(Event::Acquired { sent_at: t0 }, t0 + ms(10));
    assert_eq!(m.role(), Role::Leader);
    m
}

/// A drained holder hands over like a planned handover (VIPs first, then
/// the release) and takes no lease until undrained, whatever else happens.
#[test]
fn drain_hands_over_vips_first_and_keeps_out_until_undrain() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    assert_eq!(
        m.step(Event::Drain, t0 + ms(100)),
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::Drained
            },
            Action::Campaign(false),
        ]
    );
    assert!(m.drained() && !m.vips_set() && m.fence().is_none());
    // Health flapping back, a carrier coming back, a renewal that was in
    // flight: none of them brings it back.
    m.step(Event::Health { healthy: false }, t0 + ms(200));
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(300)),
        vec![]
    );
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
    assert_eq!(m.step(Event::Resumed, t0 + ms(400)), vec![]);
    assert_eq!(
        m.step(Event::Undrain, t0 + ms(500)),
        vec![Action::Campaign(true)]
    );
    assert!(!m.drained());
    // A second undrain changes nothing.
    assert_eq!(m.step(Event::Undrain, t0 + ms(600)), vec![]);
}

/// Undrained while unhealthy: campaigns only once healthy again.
#[test]
fn undrain_of_an_unhealthy_node_waits_for_health() {
    let t0 = Instant::now();
    let mut m = Machine::new(R);
    assert_eq!(m.step(Event::Drain, t0), vec![Action::Campaign(false)]);
    assert_eq!(m.step(Event::Undrain, t0 + ms(100)), vec![]);
    assert_eq!(
        m.step(Event::Health { healthy: true }, t0 + ms(200)),
        vec![Action::Campaign(true)]
    );
}

/// A handover releases (VIPs first) and keeps out for the hold only; a
/// follower's handover does nothing.
#[test]
fn handover_releases_and_keeps_out_for_the_hold() {
    let t0 = Instant::now();
    let hold = Duration::from_secs(5);
    let mut m = leader(t0);
    assert_eq!(
        m.step(Event::Handover { hold }, t0 + ms(100)),
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: Role::Leader,
                to: Role::Follower,
                reason: Reason::HandedOver
            },
            Action::Campaign(false),
        ]
    );
    let back = t0 + ms(100) + hold;
    assert_eq!(m.next_deadline(), Some(back));
    assert_eq!(
        m.step(Event::Health { healthy: true }, back - ms(1)),
        vec![]
    );
    assert_eq!(m.step(Event::Deadline, back), vec![Action::Campaign(true)]);
    // Not the holder: nothing to hand over.
    assert_eq!(m.step(Event::Handover { hold }, back + ms(1)), vec![]);
    // Drained during the hold: the hold's end does not bring it back.
    let mut m = leader(t0);
    m.step(Event::Handover { hold }, t0 + ms(100));
    m.step(Event::Drain, t0 + ms(200));
    assert_eq!(m.step(Event::Deadline, back), vec![]);
}

/// Shutting down is final: a drain then changes nothing.
#[test]
fn a_stopping_node_ignores_controls() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.step(Event::Shutdown, t0 + ms(100));
    assert_eq!(m.step(Event::Drain, t0 + ms(200)), vec![]);
    assert_eq!(
        m.step(
            Event::Handover {
                hold: Duration::from_secs(5)
            },
            t0 + ms(300)
        ),
        vec![]
    );
    assert_eq!(m.role(), Role::Stopping);
}
