//! The Lease elector against a real kube-apiserver + etcd.

#[path = "common/apiserver.rs"]
mod apiserver;
#[path = "control_lease/create_race.rs"]
mod create_race;
#[path = "control_lease/foreign.rs"]
mod foreign;

use std::time::Duration;

use apiserver::ApiServer;
use futures::StreamExt;
use ha_vip::config::Credential;
use ha_vip::kube::{Credentials, KubeClient, Operation, request_timeout};
use ha_vip::lease::{
    Elector, KubeLeaseStore, LeaseEvent, LeaseRecord, LeaseStore, LostReason, Timings,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const T: Timings = Timings {
    duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(500),
};

/// Generous bound for things that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(15);

struct Node {
    store: KubeLeaseStore,
    campaign: watch::Sender<bool>,
    events: mpsc::Receiver<LeaseEvent>,
    task: JoinHandle<()>,
}

fn store(api: &ApiServer, name: &str) -> KubeLeaseStore {
    let credential = Credential::Token(api.var("KUBE_ADMIN_TOKEN"));
    let client = api.client(credential, request_timeout(T.renew_deadline));
    KubeLeaseStore::new(client, "kube-system", name)
}

fn node(api: &ApiServer, lease: &str, id: &str) -> Node {
    node_with(store(api, lease), id)
}

fn node_with(store: KubeLeaseStore, id: &str) -> Node {
    let (campaign, crx) = watch::channel(true);
    let (etx, events) = mpsc::channel(1024);
    let task = tokio::spawn(Elector::new(store.clone(), id, T).run(crx, etx));
    Node {
        store,
        campaign,
        events,
        task,
    }
}

impl Node {
    async fn until(&mut self, what: &str, f: impl Fn(&LeaseEvent) -> bool) -> LeaseEvent {
        timeout(PATIENCE, async {
            loop {
                let ev = self.events.recv().await.expect("elector stopped");
                if f(&ev) {
                    return ev;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
    }

    async fn acquired(&mut self) -> Instant {
        match self
            .until("Acquired", |e| matches!(e, LeaseEvent::Acquired { .. }))
            .await
        {
            LeaseEvent::Acquired { sent_at } => sent_at,
            _ => unreachable!(),
        }
    }

    fn drain(&mut self) -> Vec<LeaseEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

fn is_acquired(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Acquired { .. })
}

async fn raw_lease(api: &ApiServer, name: &str) -> serde_json::Value {
    let op = Operation {
        verb: "get",
        resource: "leases.coordination.k8s.io",
        namespace: Some("kube-system".into()),
        name: Some(name.into()),
    };
    api.admin()
        .get(
            &op,
            &format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"),
        )
        .await
        .unwrap()
}

/// `kubectl delete lease NAME -n kube-system`, with curl (a runtime
/// dependency of the harness) as admin.
async fn delete_lease(api: &ApiServer, name: &str) {
    let url = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}",
        api.server()
    );
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "-X", "DELETE", "--cacert"])
        .arg(api.ca())
        .arg("-H")
        .arg(format!(
            "Authorization: Bearer {}",
            api.var("KUBE_ADMIN_TOKEN")
        ))
        .arg(&url)
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "DELETE {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_micro_time(s: &str) -> bool {
    // 2026-11-22T03:04:05.123456Z
    s.len() == 27
        && s.as_bytes()[19] == b'.'
        && s.ends_with('Z')
        && s[20..26].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_renew_watch_and_release_to_the_standby() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let mut a = node(&api, "ha-vip", "node-a");
    a.acquired().await;
    let first = raw_lease(&api, "ha-vip").await;
    let spec = &first["spec"];
    assert_eq!(spec["holderIdentity"], "node-a");
    assert_eq!(spec["leaseDurationSeconds"], 4);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(is_micro_time(spec["renewTime"].as_str().unwrap()), "{spec}");
    assert!(
        is_micro_time(spec["acquireTime"].as_str().unwrap()),
        "{spec}"
    );

    // Renewals advance renewTime and keep holder and acquireTime.
    sleep(Duration::from_millis(1200)).await;
    let later = raw_lease(&api, "ha-vip").await;
    assert_eq!(later["spec"]["holderIdentity"], "node-a");
    assert_eq!(later["spec"]["acquireTime"], spec["acquireTime"]);
    assert!(
        later["spec"]["renewTime"].as_str() > spec["renewTime"].as_str(),
        "{later}"
    );
    assert_ne!(
        later["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );

    // A standby observes the holder and waits while it renews.
    let mut b = node(&api, "ha-vip", "node-b");
    b.until(
        "Observed node-a",
        |e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == "node-a"),
    )
    .await;

    // Steady state (the standby's get + watch are sent right after it
    // observes): count requests of both nodes over a window.
    sleep(Duration::from_millis(500)).await;
    let window = Duration::from_secs(6);
    let (ra, rb) = (a.store.requests(), b.store.requests());
    sleep(window).await;
    let (ra, rb) = (a.store.requests() - ra, b.store.requests() - rb);
    let secs = window.as_secs_f64();
    eprintln!(
        "MEASURE steady state: leader {:.2} req/s, follower {:.2} req/s (over {secs} s)",
        ra as f64 / secs,
        rb as f64 / secs
    );
    assert!(
        b.drain().iter().all(|e| !is_acquired(e)),
        "standby took a live lease"
    );
    assert!(
        (6..=18).contains(&ra),
        "leader renews every 500 ms: {ra} requests in {secs} s"
    );
    assert!(
        rb <= 2,
        "a watching follower is quiet: {rb} requests in {secs} s"
    );

    // Release: the standby holds the lease at once (it watches).
    a.campaign.send(false).unwrap();
    let released_at = match a
        .until("Lost", |e| matches!(e, LeaseEvent::Lost { .. }))
        .await
    {
        LeaseEvent::Lost { reason, at } => {
            assert_eq!(reason, LostReason::Released);
            at
        }
        _ => unreachable!(),
    };
    b.acquired().await;
    let took = released_at.elapsed();
    eprintln!(
        "MEASURE release-to-acquire: {} ms (from the releaser's decision to the standby's successful write)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_millis(1500),
        "standby took {took:?} after the release"
    );
    let spec = raw_lease(&api, "ha-vip").await["spec"].clone();
    assert_eq!(spec["holderIdentity"], "node-b");
    assert_eq!(spec["leaseTransitions"], 1);

    // Not campaigning, `a` stays out while `b` holds it; ending b's campaign
    // releases, and a run that was told to stop returns.
    drop(b.campaign);
    timeout(PATIENCE, b.task).await.unwrap().unwrap();
    let spec = raw_lease(&api, "ha-vip").await["spec"].clone();
    assert_eq!(
        (
            spec["holderIdentity"].as_str(),
            spec["leaseDurationSeconds"].as_i64()
        ),
        (Some(""), Some(1))
    );
    assert_eq!(
        spec["leaseTransitions"], 1,
        "release keeps leaseTransitions"
    );
    drop(a.campaign);
    timeout(PATIENCE, a.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_started_together_get_one_holder() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let mut a = node(&api, "race", "node-a");
    let mut b = node(&api, "race", "node-b");
    // A missing Lease is created one lease duration after it was seen missing.
    sleep(T.duration + Duration::from_secs(3)).await;
    let (ea, eb) = (a.drain(), b.drain());
    let wins =
        ea.iter().filter(|e| is_acquired(e)).count() + eb.iter().filter(|e| is_acquired(e)).count();
    assert_eq!(wins, 1, "exactly one acquire:\na: {ea:?}\nb: {eb:?}");
    let holder = raw_lease(&api, "race").await["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let (winner, loser) = if ea.iter().any(is_acquired) {
        ("node-a", &eb)
    } else {
        ("node-b", &ea)
    };
    assert_eq!(holder, winner);
    assert!(
        loser
            .iter()
            .any(|e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == winner)),
        "the loser knows who won: {loser:?}"
    );
    assert!(loser.iter().all(|e| !matches!(e, LeaseEvent::Lost { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_is_replaced_only_after_the_observed_duration() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let mut a = node(&api, "crash", "node-a");
    a.acquired().await;
    let mut b = node(&api, "crash", "node-b");
    b.until("Observed node-a", |e| {
        matches!(
            e,
            LeaseEvent::Observed {
                holder: Some(_),
                ..
            }
        )
    })
    .await;
    sleep(Duration::from_secs(1)).await;
    // SIGKILL-like: the task stops without releasing.
    a.task.abort();
    let killed = Instant::now();
    let sent_at = b.acquired().await;
    let waited = sent_at - killed;
    eprintln!(
        "MEASURE takeover after a crash: {} ms (lease duration 4 s)",
        waited.as_millis()
    );
    // b saw a's last renewal at most one retry period (plus latency) before the kill.
    assert!(
        waited >= T.duration - T.retry_period - Duration::from_millis(200),
        "took over after only {waited:?}"
    );
    assert!(
        waited <= T.duration + Duration::from_secs(3),
        "took over late: {waited:?}"
    );
    let spec = raw_lease(&api, "crash").await["spec"].clone();
    assert_eq!(
        (
            spec["holderIdentity"].as_str(),
            spec["leaseTransitions"].as_i64()
        ),
        (Some("node-b"), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_apiserver_costs_the_lease_by_the_deadline_and_a_restart_recovers() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let mut a = node(&api, "outage", "node-a");
    a.acquired().await;
    sleep(Duration::from_secs(1)).await;
    let stop_began = Instant::now();
    // The last successful renewal before the outage, then the loss.
    let mut last_sent = None;
    let ((), lost) = tokio::join!(
        api.stop_apiserver(),
        timeout(PATIENCE, async {
            loop {
                match a.events.recv().await.unwrap() {
                    LeaseEvent::Renewed { sent_at } | LeaseEvent::Acquired { sent_at } => {
                        last_sent = Some(sent_at)
                    }
                    LeaseEvent::Lost { reason, at } => return (reason, at),
                    _ => {}
                }
            }
        })
    );
    let (reason, lost_at) = lost.expect("no Lost after stopping kube-apiserver");
    assert_eq!(reason, LostReason::DeadlinePassed);
    let last_sent = last_sent.expect("at least one renewal after the acquire");
    let after = lost_at - last_sent;
    eprintln!(
        "MEASURE loss after kube-apiserver stop: Lost {} ms after the last successful renewal was sent ({} ms after the stop began)",
        after.as_millis(),
        lost_at.saturating_duration_since(stop_began).as_millis()
    );
    assert!(
        after <= T.renew_deadline + Duration::from_millis(100),
        "Lost {after:?} after the last renewal"
    );
    assert!(
        after >= T.renew_deadline,
        "lost before the deadline: {after:?}"
    );

    let restart_began = Instant::now();
    api.start_apiserver().await;
    let ready = restart_began.elapsed();
    let sent_at = a.acquired().await;
    eprintln!(
        "MEASURE re-acquire after kube-apiserver restart: acquire sent {} ms after the restart began (start-apiserver took {} ms)",
        (sent_at - restart_began).as_millis(),
        ready.as_millis()
    );
    assert_eq!(
        raw_lease(&api, "outage").await["spec"]["holderIdentity"],
        "node-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_costs_the_holder_and_is_recreated_only_after_a_duration() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let mut a = node(&api, "deleted", "node-a");
    a.acquired().await;
    let mut b = node(&api, "deleted", "node-b");
    b.until(
        "Observed node-a",
        |e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == "node-a"),
    )
    .await;
    sleep(Duration::from_millis(700)).await;
    let deleting = Instant::now();
    delete_lease(&api, "deleted").await;
    // The holder's next renewal gets 404: it loses (and drops its VIP).
    let lost_at = match a
        .until("Lost", |e| matches!(e, LeaseEvent::Lost { .. }))
        .await
    {
        LeaseEvent::Lost { reason, at } => {
            assert_eq!(reason, LostReason::Deleted);
            at
        }
        _ => unreachable!(),
    };
    // Nobody creates it again before a lease duration has passed.
    let first = tokio::select! {
        t = a.acquired() => t,
        t = b.acquired() => t,
    };
    eprintln!(
        "MEASURE kubectl delete lease: holder lost it {} ms after the DELETE was sent, the lease was held again {} ms after it (lease duration 4 s)",
        (lost_at - deleting).as_millis(),
        (first - deleting).as_millis()
    );
    assert!(
        lost_at - deleting <= T.retry_period + Duration::from_millis(500),
        "the holder noticed the deletion late: {:?}",
        lost_at - deleting
    );
    assert!(
        first - deleting >= T.duration,
        "recreated {:?} after the deletion",
        first - deleting
    );
    assert!(
        first - deleting <= T.duration + Duration::from_secs(2),
        "recreated late: {:?}",
        first - deleting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_reported_once_and_retried_every_retry_period() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let k8s = api.k8s(Credential::Token(api.var("KUBE_ADMIN_TOKEN")));
    let client = KubeClient::new(
        &k8s,
        Credentials::load(&k8s).unwrap(),
        request_timeout(T.renew_deadline),
    )
    .unwrap();
    let s = KubeLeaseStore::new(client, "no-such-namespace", "ha-vip");
    let mut n = node_with(s, "node-a");
    // Past the wait for a missing Lease, then a window of retries.
    sleep(T.duration + Duration::from_secs(1)).await;
    let before = n.store.requests();
    let window = Duration::from_secs(5);
    sleep(window).await;
    let requests = n.store.requests() - before;
    let events = n.drain();
    eprintln!(
        "MEASURE missing namespace: {requests} requests in {} s",
        window.as_secs()
    );
    let failures: Vec<&LeaseEvent> = events
        .iter()
        .filter(|e| matches!(e, LeaseEvent::RequestFailed { .. }))
        .collect();
    assert_eq!(failures.len(), 1, "reported once: {events:?}");
    let LeaseEvent::RequestFailed { error, .. } = failures[0] else {
        unreachable!()
    };
    assert!(error.is_not_found(), "{error}");
    assert!(
        error.to_string().contains("no-such-namespace"),
        "names the namespace: {error}"
    );
    // One create per retry_period, plus a get + watch per lease duration.
    assert!(
        (5..=16).contains(&requests),
        "{requests} requests in {window:?}"
    );
    assert!(events.iter().all(|e| !is_acquired(e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_after_timeout_seconds_and_the_follower_reopens_them() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let short = Duration::from_secs(1);
    // The server ends a watch by itself after timeoutSeconds.
    let raw = store(&api, "timeout").with_watch_timeout(short);
    let opened = Instant::now();
    let mut w = raw.watch(None).await.unwrap();
    while let Some(ev) = timeout(PATIENCE, w.next())
        .await
        .expect("the server did not end the watch")
    {
        ev.unwrap();
    }
    let ended = opened.elapsed();
    eprintln!(
        "MEASURE watch with timeoutSeconds=1 ended after {} ms",
        ended.as_millis()
    );
    assert!(
        (short..short + Duration::from_secs(3)).contains(&ended),
        "{ended:?}"
    );

    // A follower whose watches keep ending still follows, quietly, and
    // takes a release at once.
    let mut a = node(&api, "timeout", "node-a");
    a.acquired().await;
    let mut b = node_with(store(&api, "timeout").with_watch_timeout(short), "node-b");
    b.until(
        "Observed node-a",
        |e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == "node-a"),
    )
    .await;
    let before = b.store.requests();
    sleep(Duration::from_secs(4)).await;
    let reopened = b.store.requests() - before;
    assert!(
        (2..=12).contains(&reopened),
        "a get + watch per ended watch: {reopened} requests in 4 s"
    );
    assert!(b.drain().iter().all(|e| !is_acquired(e)));
    a.campaign.send(false).unwrap();
    let released_at = match a
        .until("Lost", |e| matches!(e, LeaseEvent::Lost { .. }))
        .await
    {
        LeaseEvent::Lost { at, .. } => at,
        _ => unreachable!(),
    };
    let sent_at = b.acquired().await;
    assert!(
        sent_at - released_at < Duration::from_millis(1500),
        "took {:?} after the release",
        sent_at - released_at
    );
}

/// Writes the Lease `name` as another node would: `holder` with `duration`
/// seconds and `transitions`.
async fn write_as(api: &ApiServer, name: &str, holder: &str, duration: u32, transitions: u32) {
    let now = std::time::SystemTime::now();
    let record = LeaseRecord {
        holder: holder.into(),
        duration_seconds: duration,
        acquire_time: Some(now),
        renew_time: Some(now),
        transitions,
    };
    let writer = store(api, name);
    match writer.get().await.unwrap() {
        Some(cur) => writer.update(&cur, &record).await.unwrap(),
        None => writer.create(&record).await.unwrap(),
    };
}

fn is_released(e: &LeaseEvent) -> bool {
    matches!(
        e,
        LeaseEvent::Lost {
            reason: LostReason::Released,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_from_a_stale_version_of_our_own_lease_still_releases() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let mut a = node(&api, "stale", "node-a");
    a.acquired().await;
    let mut b = node(&api, "stale", "node-b");
    b.until(
        "Observed node-a",
        |e| matches!(e, LeaseEvent::Observed { holder: Some(h), .. } if h == "node-a"),
    )
    .await;
    // Right after a renewal (the next is a retry period away), the Lease is
    // written as node-a's: what a renewal that took effect but whose answer
    // was lost leaves behind. node-a's resourceVersion is now stale.
    a.until("Renewed", |e| matches!(e, LeaseEvent::Renewed { .. }))
        .await;
    write_as(&api, "stale", "node-a", 4, 0).await;
    a.campaign.send(false).unwrap();
    let released_at = match a.until("Released", is_released).await {
        LeaseEvent::Lost { at, .. } => at,
        _ => unreachable!(),
    };
    b.acquired().await;
    let took = released_at.elapsed();
    eprintln!(
        "MEASURE release-to-acquire from a stale version: {} ms (lease duration {:?})",
        took.as_millis(),
        T.duration
    );
    // Without the re-read the release is refused (409) and the standby
    // waits a whole lease duration.
    assert!(
        took < Duration::from_millis(1500),
        "standby took {took:?} after a planned stop"
    );
    assert_eq!(
        raw_lease(&api, "stale").await["spec"]["holderIdentity"],
        "node-b"
    );
}
