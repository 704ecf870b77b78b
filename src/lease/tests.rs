//! Elector semantics on a paused clock against the in-memory store.

use std::time::SystemTime;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, sleep, timeout};

use super::*;
use crate::kube::{KubeError, Operation};

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
    start_with(store.clone(), id, campaign)
}

fn start_with<S: LeaseStore>(store: S, id: &str, campaign: bool) -> Running {
    let (ctx, crx) = watch::channel(campaign);
    let (etx, erx) = mpsc::channel(1024);
    let task = tokio::spawn(Elector::new(store, id, T).run(crx, etx));
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
    held_for(holder, 4)
}

fn held_for(holder: &str, secs: u32) -> LeaseRecord {
    LeaseRecord {
        holder: holder.into(),
        duration_seconds: secs,
        acquire_time: Some(SystemTime::now()),
        renew_time: Some(SystemTime::now()),
        transitions: 5,
    }
}

fn released() -> LeaseRecord {
    let mut r = held_by("");
    r.duration_seconds = 1;
    r
}

async fn acquired(r: &mut Running) -> Instant {
    let LeaseEvent::Acquired { sent_at } = r.until(is_acquired).await else {
        unreachable!()
    };
    sent_at
}

fn is_acquired(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Acquired { .. })
}

fn is_lost(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Lost { .. })
}

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

/// Log lines written while the returned guard lives (this thread only: the
/// paused-clock runtime runs the elector on it too).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self, containing: &str) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains(containing))
            .map(String::from)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// The largest leaseDurationSeconds the API server accepts (int32).
const HUGE: u32 = i32::MAX as u32;

#[tokio::test(start_paused = true)]
async fn a_huge_lease_duration_of_another_holder_is_honoured_only_up_to_the_ceiling() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_for("rogue", HUGE)));
    let mut b = start(&store, "b", true);
    let t0 = Instant::now();
    let sent_at = timeout(DURATION_CEILING * 2, acquired(&mut b))
        .await
        .expect("a lease with leaseDurationSeconds 2147483647 kept the standby out");
    assert_eq!(sent_at, t0 + DURATION_CEILING);
    assert_eq!(store.lease().unwrap().record.holder, "b");
}

#[tokio::test(start_paused = true)]
async fn a_lease_duration_up_to_the_ceiling_is_honoured_in_full() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_for("other", 60)));
    let mut b = start(&store, "b", true);
    let t0 = Instant::now();
    assert_eq!(acquired(&mut b).await, t0 + Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn an_elector_with_a_longer_duration_than_the_ceiling_honours_its_own() {
    let store = FakeLeaseStore::new();
    store.set(Some(held_for("other", HUGE)));
    let long = Timings {
        duration: Duration::from_secs(90),
        ..T
    };
    let (_campaign, crx) = watch::channel(true);
    let (etx, mut erx) = mpsc::channel(1024);
    let t0 = Instant::now();
    tokio::spawn(Elector::new(store.clone(), "b", long).run(crx, etx));
    let sent_at = timeout(Duration::from_secs(180), async {
        loop {
            if let LeaseEvent::Acquired { sent_at } = erx.recv().await.unwrap() {
                break sent_at;
            }
        }
    })
    .await
    .expect("kept out past our own duration");
    assert_eq!(sent_at, t0 + Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn an_over_long_duration_is_warned_about_once_per_writer_and_value() {
    let (logs, _guard) = Logs::capture();
    let store = FakeLeaseStore::new();
    store.set(Some(held_for("rogue", HUGE)));
    let mut b = start(&store, "b", false);
    b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await;
    // Renewals with the same value: no new warning.
    for _ in 0..10 {
        sleep(T.retry_period).await;
        store.set(Some(held_for("rogue", HUGE)));
    }
    sleep(T.retry_period).await;
    let warned = logs.lines("wrote leaseDurationSeconds");
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(
        warned[0].contains("rogue"),
        "names the writer: {}",
        warned[0]
    );
    assert!(
        warned[0].contains("2147483647"),
        "names the value: {}",
        warned[0]
    );
    // A new value, then a new writer: one warning each. Durations within
    // the ceiling and our own Lease are never warned about.
    store.set(Some(held_for("rogue", 3600)));
    sleep(T.retry_period).await;
    store.set(Some(held_for("other", HUGE)));
    sleep(T.retry_period).await;
    store.set(Some(held_for("third", 60)));
    sleep(T.retry_period).await;
    store.set(Some(held_for("b", HUGE)));
    sleep(T.retry_period).await;
    let warned = logs.lines("wrote leaseDurationSeconds");
    assert_eq!(warned.len(), 3, "{warned:#?}");
    assert!(warned[1].contains("3600") && warned[1].contains("rogue"));
    assert!(warned[2].contains("2147483647") && warned[2].contains("other"));
}

#[tokio::test(start_paused = true)]
async fn a_takeover_never_writes_transitions_past_int32() {
    let store = FakeLeaseStore::new();
    let mut r = released();
    r.transitions = i32::MAX as u32;
    store.set(Some(r));
    let mut b = start(&store, "b", true);
    acquired(&mut b).await;
    // The API server's field is an int32: 2147483648 would be refused (400).
    assert_eq!(store.lease().unwrap().record.transitions, i32::MAX as u32);
}

#[tokio::test(start_paused = true)]
async fn a_holder_is_reported_and_logged_escaped_and_capped() {
    let (logs, _guard) = Logs::capture();
    let store = FakeLeaseStore::new();
    let forged = format!("x\nERROR forged line\u{1b}[2J{}", "y".repeat(100_000));
    store.set(Some(held_by(&forged)));
    let mut b = start(&store, "b", false);
    let LeaseEvent::Observed {
        holder: Some(h), ..
    } = b.until(|e| matches!(e, LeaseEvent::Observed { .. })).await
    else {
        panic!("no holder observed")
    };
    assert!(h.starts_with("x\\nERROR forged line\\u{1b}[2Jyyy"), "{h}");
    let tail = format!("... ({} bytes)", forged.len());
    assert!(h.ends_with(&tail), "{}", &h[h.len() - 40..]);
    assert!(h.len() < 300, "{} bytes", h.len());
    sleep(T.retry_period).await;
    let lines = logs.lines("ERROR forged");
    // Printed with the newline escaped, never as a line of its own.
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| !l.starts_with("ERROR")), "{lines:#?}");
    assert!(logs.lines("yyy").iter().all(|l| l.len() < 1000));
    assert!(!logs.lines("yyy").is_empty());
}

#[tokio::test(start_paused = true)]
async fn times_in_the_lease_in_the_future_change_nothing() {
    let store = FakeLeaseStore::new();
    let mut r = held_by("other");
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    r.renew_time = Some(SystemTime::now() + year);
    r.acquire_time = Some(SystemTime::now() + year);
    store.set(Some(r));
    let mut b = start(&store, "b", true);
    let t0 = Instant::now();
    // Expiry counts on our monotonic clock from when we saw the change.
    assert_eq!(acquired(&mut b).await, t0 + T.duration);
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
