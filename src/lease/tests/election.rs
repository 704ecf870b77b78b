//! Taking, holding and following the Lease: timings, watches, lost races.

use super::*;

#[tokio::test(start_paused = true)]
async fn creates_an_absent_lease_after_one_duration_and_renews_every_retry_period() {
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
    // Nobody may hold a VIP for a Lease that was deleted under it: a missing
    // Lease is created one duration after it was first seen missing.
    assert_eq!(sent_at, t0 + T.duration);
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
    sleep(T.duration + Duration::from_secs(3)).await;
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

/// `kubectl delete lease` (or a GitOps prune) while "other" holds it: its VIP
/// stays until its next renewal fails, so the standby still waits a duration.
#[tokio::test(start_paused = true)]
async fn a_deleted_lease_is_recreated_only_a_duration_after_it_went_missing() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    sleep(Duration::from_millis(300)).await;
    let deleted = Instant::now();
    store.set(None);
    let sent_at = acquired(&mut b).await;
    assert_eq!(sent_at - deleted, T.duration);
}

/// Deleted, then created again free (a GitOps re-apply): that is no
/// release, the wait for the missing Lease goes on.
#[tokio::test(start_paused = true)]
async fn a_lease_recreated_free_after_a_deletion_is_not_a_release() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    sleep(Duration::from_millis(300)).await;
    let deleted = Instant::now();
    store.set(None);
    sleep(Duration::from_secs(1)).await;
    store.set(Some(held_by("")));
    let sent_at = acquired(&mut b).await;
    assert_eq!(sent_at - deleted, T.duration);
}

/// The same, unseen (the watch was dead): the re-read shows a free Lease
/// with a new uid, and the standby waits a duration from then.
#[tokio::test(start_paused = true)]
async fn a_lease_recreated_free_unseen_is_not_a_release() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    let LeaseEvent::Observed { at: seen, .. } =
        b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await
    else {
        unreachable!()
    };
    store.stall_watches();
    sleep(Duration::from_millis(300)).await;
    store.set(None);
    store.set(Some(held_by("")));
    // b's stale view of "other" expires after a duration: its update gets a
    // 409, the re-read shows the new object, and b waits a duration more.
    let sent_at = acquired(&mut b).await;
    assert_eq!(sent_at - seen, T.duration * 2);
}

/// A live Lease written without leaseDurationSeconds reads as duration 0: it
/// is still held for our own duration.
#[tokio::test(start_paused = true)]
async fn a_live_lease_without_a_duration_is_held_for_our_duration() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_for("other", 0)));
    let t0 = Instant::now();
    let mut b = start(&store, "b", true);
    assert_eq!(acquired(&mut b).await - t0, T.duration);
}

/// A holder that announces a longer duration than ours is given it.
#[tokio::test(start_paused = true)]
async fn a_live_lease_with_a_longer_duration_is_held_for_that_duration() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_for("other", 10)));
    let t0 = Instant::now();
    let mut b = start(&store, "b", true);
    assert_eq!(acquired(&mut b).await - t0, Duration::from_secs(10));
}

/// lease.namespace does not exist: GET answers 404 (no Lease), POST 404.
struct NoNamespace(Arc<AtomicU64>);

impl NoNamespace {
    async fn round_trip(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
        sleep(Duration::from_millis(1)).await;
    }
}

fn namespace_not_found(verb: &'static str) -> KubeError {
    KubeError::NotFound {
        op: Operation {
            verb,
            resource: "leases.coordination.k8s.io",
            namespace: Some("typo".into()),
            name: None,
        },
        message: "namespaces \"typo\" not found".into(),
    }
}

impl LeaseStore for NoNamespace {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.round_trip().await;
        Ok(None)
    }
    async fn create(&self, _: &LeaseRecord) -> Result<StoredLease, KubeError> {
        self.round_trip().await;
        Err(namespace_not_found("create"))
    }
    async fn update(&self, _: &StoredLease, _: &LeaseRecord) -> Result<StoredLease, KubeError> {
        self.round_trip().await;
        Err(namespace_not_found("update"))
    }
    async fn watch(&self, _: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.round_trip().await;
        Ok(futures::stream::pending().boxed())
    }
}

#[tokio::test(start_paused = true)]
async fn a_missing_namespace_is_retried_every_retry_period_and_reported_once() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut b = start_with(NoNamespace(calls.clone()), "b", true);
    sleep(Duration::from_secs(1)).await;
    let n = calls.load(Ordering::Relaxed);
    assert!(n < 20, "{n} API requests in 1 s (retry_period 500 ms)");
    // Past the wait for a missing Lease, creates are retried every
    // retry_period (plus a get + watch per lease duration of silence).
    sleep(T.duration).await;
    let before = calls.load(Ordering::Relaxed);
    let window = Duration::from_secs(10);
    sleep(window).await;
    let n = calls.load(Ordering::Relaxed) - before;
    let creates = window.as_millis() / T.retry_period.as_millis();
    assert!(
        (creates as u64 / 2..=creates as u64 + 10).contains(&n),
        "{n} requests in {window:?}"
    );
    let failures: Vec<LeaseEvent> = std::iter::from_fn(|| b.events.try_recv().ok())
        .filter(|e| matches!(e, LeaseEvent::RequestFailed { .. }))
        .collect();
    assert_eq!(failures.len(), 1, "reported once: {failures:?}");
}

/// A watch that died without the connection noticing: the follower reopens
/// it after a lease duration without events and sees what it missed.
#[tokio::test(start_paused = true)]
async fn a_silent_watch_is_replaced_after_a_lease_duration() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", false);
    b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await;
    let opened = Instant::now();
    store.stall_watches();
    sleep(Duration::from_millis(100)).await;
    store.set(Some(held_by("c")));
    let seen = timeout(
        Duration::from_secs(60),
        b.until(|e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == "c")),
    )
    .await
    .expect("the change behind a dead watch was never seen");
    let LeaseEvent::Observed { at, .. } = seen else {
        unreachable!()
    };
    assert_eq!(at - opened, T.duration);
    assert_eq!(store.open_watches(), 1);
}

/// The watch stalls while "other" keeps renewing: b's stale view expires, its
/// update gets 409, the re-read is newer than anything the watch delivered,
/// so the watch is reopened at once (update + get + watch) and b keeps
/// following the renewals instead of trying again.
#[tokio::test(start_paused = true)]
async fn a_conflict_newer_than_the_watch_reopens_the_watch() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await;
    store.stall_watches();
    let before = store.requests();
    for _ in 0..20 {
        sleep(T.retry_period).await;
        store.set(Some(held_by("other")));
    }
    assert_eq!(
        store.requests() - before,
        3,
        "one update (409), one get, one watch"
    );
    assert_eq!(store.open_watches(), 1);
    assert!(std::iter::from_fn(|| b.events.try_recv().ok()).all(|e| !is_acquired(&e)));
    assert_eq!(store.lease().unwrap().record.holder, "other");
}

/// A release is still taken at once, also right after a deletion was seen
/// and followed by a live holder.
#[tokio::test(start_paused = true)]
async fn a_release_after_a_recreate_by_a_live_holder_is_taken_at_once() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_by("other")));
    let mut b = start(&store, "b", true);
    b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await;
    store.set(None);
    sleep(Duration::from_millis(100)).await;
    store.set(Some(held_by("c")));
    sleep(Duration::from_millis(700)).await;
    store.set(Some(released()));
    let t_release = Instant::now();
    assert_eq!(acquired(&mut b).await, t_release);
}
