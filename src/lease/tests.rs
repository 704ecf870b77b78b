//! Elector semantics on a paused clock against the in-memory store.

use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, sleep};

use super::*;
use crate::kube::KubeError;

const T: Timings = Timings {
    duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(500),
};

struct Running {
    campaign: watch::Sender<bool>,
    events: mpsc::Receiver<LeaseEvent>,
    task: JoinHandle<()>,
}

fn start(store: &FakeLeaseStore, id: &str, campaign: bool) -> Running {
    let (ctx, crx) = watch::channel(campaign);
    let (etx, erx) = mpsc::channel(1024);
    let task = tokio::spawn(Elector::new(store.clone(), id, T).run(crx, etx));
    Running {
        campaign: ctx,
        events: erx,
        task,
    }
}

impl Running {
    /// The next event matching `f`, skipping others.
    async fn until(&mut self, f: impl Fn(&LeaseEvent) -> bool) -> LeaseEvent {
        loop {
            let ev = self.events.recv().await.expect("elector stopped");
            if f(&ev) {
                return ev;
            }
        }
    }
}

fn held_by(holder: &str) -> LeaseRecord {
    LeaseRecord {
        holder: holder.into(),
        duration_seconds: 4,
        acquire_time: Some(SystemTime::now()),
        renew_time: Some(SystemTime::now()),
        transitions: 5,
    }
}

fn is_acquired(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Acquired { .. })
}

fn is_lost(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Lost { .. })
}

#[tokio::test(start_paused = true)]
async fn acquires_an_absent_lease_and_renews_every_retry_period() {
    let store = FakeLeaseStore::new();
    let mut a = start(&store, "a", true);
    let t0 = Instant::now();
    assert_eq!(
        a.until(|_| true).await,
        LeaseEvent::Observed {
            holder: None,
            at: t0
        }
    );
    let LeaseEvent::Acquired { sent_at } = a.until(is_acquired).await else {
        unreachable!()
    };
    assert_eq!(sent_at, t0);
    let l = store.lease().unwrap();
    assert_eq!(l.record.holder, "a");
    assert_eq!(l.record.duration_seconds, 4);
    assert_eq!(l.record.transitions, 0);
    let mut last = sent_at;
    for _ in 0..4 {
        let LeaseEvent::Renewed { sent_at } =
            a.until(|e| matches!(e, LeaseEvent::Renewed { .. })).await
        else {
            unreachable!()
        };
        assert_eq!(sent_at - last, T.retry_period);
        last = sent_at;
    }
    assert_eq!(store.lease().unwrap().record.holder, "a");
    assert_eq!(
        store.lease().unwrap().record.acquire_time,
        l.record.acquire_time
    );
}

#[tokio::test(start_paused = true)]
async fn takes_a_live_lease_only_after_the_observed_duration() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    let t0 = Instant::now();
    assert_eq!(
        b.until(|_| true).await,
        LeaseEvent::Observed {
            holder: Some("other".into()),
            at: t0
        }
    );
    // The other node renews for 3 s; each change restarts the wait.
    for _ in 0..6 {
        sleep(T.retry_period).await;
        store.set(Some(held_by("other")));
    }
    let last_change = Instant::now();
    let LeaseEvent::Acquired { sent_at } = b.until(is_acquired).await else {
        unreachable!()
    };
    assert_eq!(
        sent_at - last_change,
        T.duration,
        "acquired at the exact observed expiry"
    );
    let l = store.lease().unwrap();
    assert_eq!((l.record.holder.as_str(), l.record.transitions), ("b", 6));
    // Steady state of a follower is quiet: one get + one watch, then nothing.
    assert!(store.requests() <= 4, "{} requests", store.requests());
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_once() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await;
    sleep(Duration::from_millis(700)).await;
    let mut released = held_by("");
    released.duration_seconds = 1;
    store.set(Some(released));
    let t_release = Instant::now();
    let LeaseEvent::Acquired { sent_at } = b.until(is_acquired).await else {
        unreachable!()
    };
    assert_eq!(sent_at, t_release);
}

#[tokio::test(start_paused = true)]
async fn campaign_false_releases_like_client_go_and_keeps_transitions() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("a")));
    let mut a = start(&store, "a", true);
    a.until(is_acquired).await;
    // Re-taking our own lease is not a transition.
    assert_eq!(store.lease().unwrap().record.transitions, 5);
    a.campaign.send(false).unwrap();
    assert!(matches!(
        a.until(is_lost).await,
        LeaseEvent::Lost {
            reason: LostReason::Released,
            ..
        }
    ));
    a.until(|e| matches!(e, LeaseEvent::Observed { holder: None, .. }))
        .await;
    let l = store.lease().unwrap();
    assert_eq!(
        (
            l.record.holder.as_str(),
            l.record.duration_seconds,
            l.record.transitions
        ),
        ("", 1, 5)
    );
    // Not campaigning: it stays out even though the lease is free.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(store.lease().unwrap().record.holder, "");
    a.campaign.send(true).unwrap();
    a.until(is_acquired).await;
    assert_eq!(store.lease().unwrap().record.transitions, 6);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_campaign_releases_and_ends_the_run() {
    let store = FakeLeaseStore::new();
    let mut a = start(&store, "a", true);
    a.until(is_acquired).await;
    drop(a.campaign);
    a.task.await.unwrap();
    assert_eq!(store.lease().unwrap().record.holder, "");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_request_cannot_delay_the_loss_past_the_deadline() {
    let store = FakeLeaseStore::new();
    let mut a = start(&store, "a", true);
    a.until(is_acquired).await;
    let LeaseEvent::Renewed { sent_at } =
        a.until(|e| matches!(e, LeaseEvent::Renewed { .. })).await
    else {
        unreachable!()
    };
    store.hang(true);
    let LeaseEvent::Lost { reason, at } = a.until(is_lost).await else {
        unreachable!()
    };
    assert_eq!(reason, LostReason::DeadlinePassed);
    assert_eq!(at, sent_at + T.renew_deadline);
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_lose_at_the_deadline_then_recover() {
    let store = FakeLeaseStore::new();
    let mut a = start(&store, "a", true);
    let LeaseEvent::Acquired { sent_at } = a.until(is_acquired).await else {
        unreachable!()
    };
    store.fail_with(Some(KubeError::Connect {
        server: "fake".into(),
        reason: "connection refused".into(),
    }));
    let mut failures = 0;
    let lost_at = loop {
        match a.events.recv().await.unwrap() {
            LeaseEvent::RequestFailed { .. } => failures += 1,
            LeaseEvent::Lost { reason, at } => {
                assert_eq!(reason, LostReason::DeadlinePassed);
                break at;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(lost_at, sent_at + T.renew_deadline);
    assert!(
        failures >= 3,
        "renewals retried every retry_period: {failures}"
    );
    store.fail_with(None);
    a.until(is_acquired).await;
    assert_eq!(store.lease().unwrap().record.holder, "a");
}

#[tokio::test(start_paused = true)]
async fn a_conflicting_writer_ends_leadership() {
    let store = FakeLeaseStore::new();
    let mut a = start(&store, "a", true);
    a.until(is_acquired).await;
    store.set(Some(held_by("intruder")));
    assert!(matches!(
        a.until(is_lost).await,
        LeaseEvent::Lost { reason: LostReason::HeldBy(Some(ref h)), .. } if h == "intruder"
    ));
    a.campaign.send(false).unwrap();
    // Not ours any more: no release is written.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(store.lease().unwrap().record.holder, "intruder");
}

#[tokio::test(start_paused = true)]
async fn two_contenders_get_exactly_one_holder() {
    let store = FakeLeaseStore::new();
    let mut a = start(&store, "a", true);
    let mut b = start(&store, "b", true);
    sleep(Duration::from_secs(3)).await;
    let holder = store.lease().unwrap().record.holder;
    let (winner, loser) = if holder == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    winner.until(is_acquired).await;
    while let Ok(ev) = loser.events.try_recv() {
        assert!(!is_acquired(&ev), "both acquired: {ev:?}");
    }
    // The winner stops: the loser takes over at once (release + watch).
    winner.campaign.send(false).unwrap();
    loser.until(is_acquired).await;
}
