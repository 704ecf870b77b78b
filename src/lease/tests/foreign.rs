//! What other writers put into the Lease: durations past the ceiling,
//! int32 limits, holder strings made to forge log lines, future times.

use super::*;

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
