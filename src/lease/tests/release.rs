//! Giving the Lease up: released at once, also from a stale version, never
//! over another holder, within bounds.

use super::*;

/// Waits (on the paused clock) until the stored Lease is free; panics after
/// `within`.
async fn released_within(store: &FakeLeaseStore, within: Duration) {
    timeout(within, async {
        while store
            .lease()
            .and_then(|l| l.record.holder().map(String::from))
            .is_some()
        {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("lease still held after {within:?}: {:?}", store.lease()));
}

#[tokio::test(start_paused = true)]
async fn a_release_after_a_renewal_whose_answer_was_lost_still_releases() {
    let store = FakeLeaseStore::new();
    store.set(Some(released()));
    let mut a = start(&store, "a", true);
    acquired(&mut a).await;
    // The next renewal takes effect but its answer is lost: the elector's
    // resourceVersion is now one behind the Lease, which still names "a".
    store.lose_answers(1);
    a.until(|e| matches!(e, LeaseEvent::RequestFailed { .. }))
        .await;
    a.campaign.send(false).unwrap();
    a.until(|e| {
        matches!(
            e,
            LeaseEvent::Lost {
                reason: LostReason::Released,
                ..
            }
        )
    })
    .await;
    // A planned stop must not cost the standbys a lease duration.
    released_within(&store, T.renew_deadline).await;
    assert_eq!(store.lease().unwrap().record.duration_seconds, 1);
    // Taken from a free Lease with 5 transitions: one more, kept on release.
    assert_eq!(store.lease().unwrap().record.transitions, 6);
}

#[tokio::test(start_paused = true)]
async fn a_release_after_our_lease_was_rewritten_as_ours_still_releases() {
    let store = FakeLeaseStore::new();
    store.set(Some(released()));
    let mut a = start(&store, "a", true);
    acquired(&mut a).await;
    // Someone (a label change, `kubectl edit`) rewrote our Lease.
    store.set(Some(held_by("a")));
    a.campaign.send(false).unwrap();
    released_within(&store, T.renew_deadline).await;
}

#[tokio::test(start_paused = true)]
async fn a_release_never_overwrites_another_holder() {
    let store = FakeLeaseStore::new();
    store.set(Some(released()));
    let mut a = start(&store, "a", true);
    acquired(&mut a).await;
    let theirs = store.set(Some(held_by("b"))).unwrap();
    a.campaign.send(false).unwrap();
    a.until(|e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == "b"))
        .await;
    sleep(T.duration).await;
    assert_eq!(store.lease(), Some(theirs));
}

#[tokio::test(start_paused = true)]
async fn a_release_whose_answer_was_lost_is_not_written_twice() {
    let store = FakeLeaseStore::new();
    store.set(Some(released()));
    let mut a = start(&store, "a", true);
    acquired(&mut a).await;
    store.lose_answers(1);
    a.campaign.send(false).unwrap();
    released_within(&store, T.renew_deadline).await;
    let free = store.lease().unwrap();
    sleep(T.duration).await;
    // The re-read showed the release took effect: nothing more was written.
    assert_eq!(store.lease(), Some(free));
}
/// A Lease someone keeps rewriting as ours just before each of our updates
/// (a second instance with our identity, say): every update conflicts and
/// every re-read names us again.
#[derive(Clone)]
struct Contested {
    store: FakeLeaseStore,
    on: Arc<std::sync::atomic::AtomicBool>,
    updates: Arc<AtomicU64>,
}

impl LeaseStore for Contested {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.store.get().await
    }
    async fn create(&self, r: &LeaseRecord) -> Result<StoredLease, KubeError> {
        self.store.create(r).await
    }
    async fn update(&self, cur: &StoredLease, r: &LeaseRecord) -> Result<StoredLease, KubeError> {
        if self.on.load(Ordering::Relaxed) {
            self.updates.fetch_add(1, Ordering::Relaxed);
            sleep(Duration::from_millis(100)).await;
            self.store.set(Some(held_by("a")));
        }
        self.store.update(cur, r).await
    }
    async fn watch(&self, rv: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.store.watch(rv).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_release_that_keeps_conflicting_gives_up_after_a_few_writes() {
    let store = FakeLeaseStore::new();
    store.set(Some(released()));
    let contested = Contested {
        store: store.clone(),
        on: Arc::default(),
        updates: Arc::default(),
    };
    let mut a = start_with(contested.clone(), "a", true);
    acquired(&mut a).await;
    contested.on.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    drop(a.campaign);
    timeout(T.duration, a.task)
        .await
        .expect("the release kept retrying")
        .unwrap();
    assert!(t0.elapsed() <= T.renew_deadline, "{:?}", t0.elapsed());
    assert_eq!(contested.updates.load(Ordering::Relaxed), 3);
    assert_eq!(store.lease().unwrap().record.holder, "a");
}

#[tokio::test(start_paused = true)]
async fn a_release_to_a_frozen_server_ends_within_the_renew_deadline() {
    let store = FakeLeaseStore::new();
    store.set(Some(released()));
    let mut a = start(&store, "a", true);
    acquired(&mut a).await;
    store.hang(true);
    let t0 = Instant::now();
    drop(a.campaign);
    timeout(T.duration, a.task)
        .await
        .expect("the release outlived the renew deadline")
        .unwrap();
    assert_eq!(t0.elapsed(), T.renew_deadline);
}
