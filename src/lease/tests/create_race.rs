//! A create of a missing Lease that lands after another node created it
//! and someone deleted it again (seeds 97 and 375 of the simulation with
//! `HA_VIP_SIM_FAULTS=early-delete`).

use std::sync::atomic::AtomicBool;

use super::*;

/// The API server as the racing create meets it: the first create arrives
/// just after "other" created the Lease and a `kubectl delete` removed it.
struct Racing {
    inner: FakeLeaseStore,
    /// Race the first create (true) or none.
    race: AtomicBool,
    /// The racing create's answer is lost (it is applied all the same).
    lose_answer: bool,
}

impl LeaseStore for Racing {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.inner.get().await
    }
    async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
        if self.race.swap(false, Ordering::SeqCst) {
            self.inner.set(Some(held_by("other")));
            self.inner.set(None);
            if self.lose_answer {
                self.inner.lose_answers(1);
            }
        }
        self.inner.create(record).await
    }
    async fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        self.inner.update(current, record).await
    }
    async fn watch(&self, rv: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.inner.watch(rv).await
    }
}

fn racing(store: &FakeLeaseStore, race: bool) -> Racing {
    Racing {
        inner: store.clone(),
        race: AtomicBool::new(race),
        lose_answer: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_after_another_holders_create_and_a_delete_is_not_leadership_for_a_duration() {
    let store = FakeLeaseStore::new();
    let t0 = Instant::now();
    let mut b = start_with(racing(&store, true), "b", true);
    // "other" may hold its VIP until its renew deadline: nothing may be
    // reported that adds ours before a lease duration after our create.
    let sent_at = acquired(&mut b).await;
    let created = t0 + T.duration;
    assert!(
        sent_at >= created + T.duration,
        "leadership reported {:?} after the racing create",
        sent_at - created
    );
    // Then it is ours: re-taken without a transition, and renewed.
    let l = store.lease().unwrap();
    assert_eq!(l.record.holder, "b");
    assert_eq!(l.record.transitions, 0);
    b.until(|e| matches!(e, LeaseEvent::Renewed { .. })).await;
}

/// The same with the create's answer lost: the watch then shows our own
/// Lease after the other holder's, and our own Lease is taken at once only
/// when no other holder was seen within a lease duration.
#[tokio::test(start_paused = true)]
async fn a_racing_create_whose_answer_is_lost_is_not_leadership_for_a_duration() {
    let store = FakeLeaseStore::new();
    let t0 = Instant::now();
    let mut store_b = racing(&store, true);
    store_b.lose_answer = true;
    let mut b = start_with(store_b, "b", true);
    let sent_at = acquired(&mut b).await;
    let created = t0 + T.duration;
    assert!(
        sent_at >= created + T.duration,
        "leadership reported {:?} after the racing create",
        sent_at - created
    );
    assert_eq!(store.lease().unwrap().record.holder, "b");
}

#[tokio::test(start_paused = true)]
async fn a_create_the_watch_confirms_is_leadership_at_once() {
    let store = FakeLeaseStore::new();
    let t0 = Instant::now();
    let mut b = start_with(racing(&store, false), "b", true);
    assert_eq!(acquired(&mut b).await, t0 + T.duration);
}

/// Without a watch (it keeps failing, the follower polls) the create
/// cannot be confirmed: the same wait.
#[tokio::test(start_paused = true)]
async fn a_create_without_a_watch_waits_a_duration() {
    struct NoWatch(FakeLeaseStore);
    impl LeaseStore for NoWatch {
        async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
            self.0.get().await
        }
        async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
            self.0.create(record).await
        }
        async fn update(
            &self,
            current: &StoredLease,
            record: &LeaseRecord,
        ) -> Result<StoredLease, KubeError> {
            self.0.update(current, record).await
        }
        async fn watch(&self, _: Option<&str>) -> Result<LeaseWatch, KubeError> {
            Err(KubeError::Transport {
                op: Operation {
                    verb: "watch",
                    resource: "leases.coordination.k8s.io",
                    namespace: None,
                    name: None,
                },
                reason: "connection refused".into(),
            })
        }
    }
    let store = FakeLeaseStore::new();
    let t0 = Instant::now();
    let mut b = start_with(NoWatch(store.clone()), "b", true);
    let sent_at = acquired(&mut b).await;
    assert!(sent_at >= t0 + T.duration * 2, "{:?}", sent_at - t0);
    assert_eq!(store.lease().unwrap().record.holder, "b");
}
