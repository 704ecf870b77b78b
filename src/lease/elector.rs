//! The elector: competes for the Lease while asked to, holds it by renewing,
//! releases it when told, and reports everything as [`LeaseEvent`]s.
//!
//! Client-go's `leaderelection` semantics, with two sharpenings:
//! followers watch the Lease and act the moment it is released or expires
//! (not at the next poll), and the leader's loss is reported exactly at
//! `sent_at + renew_deadline` of its last successful renewal, even when a
//! request hangs.

use std::time::SystemTime;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant, sleep_until};

use super::event::{LeaseEvent, LostReason, Timings};
use super::record::{LeaseRecord, StoredLease};
use super::store::{LeaseStore, LeaseWatch, WatchEvent};
use crate::kube::KubeError;

/// The last version of the Lease this node saw, and when it first saw it.
struct Observation {
    lease: Option<StoredLease>,
    at: Instant,
}

struct Leading {
    /// Our last successful write: the next update carries its resourceVersion.
    current: StoredLease,
    /// When that write was sent.
    last_sent: Instant,
    next_renew: Instant,
}

/// Competes for one Lease. Build it with [`Elector::new`], then drive it with
/// [`Elector::run`] in a task of its own.
pub struct Elector<S> {
    store: S,
    identity: String,
    timings: Timings,
    observed: Option<Observation>,
    leading: Option<Leading>,
    watch: Option<LeaseWatch>,
    watch_opened: Instant,
    /// When the open watch last delivered an event (or was opened).
    watch_active: Instant,
    next_poll: Instant,
    /// No acquire attempt before this (set after a failed attempt).
    not_before: Instant,
    /// Since when this node has seen no Lease it may take at once: the
    /// object missing, or created anew while free. Cleared by a live holder.
    absent_since: Option<Instant>,
    /// The last failure reported per follower step: a follower reports a
    /// repeated failure once, not on every attempt.
    failing: [Option<String>; 3],
}

/// The follower's kinds of request, for reporting failures once per change.
#[derive(Debug, Clone, Copy)]
enum Step {
    Read = 0,
    Watch = 1,
    Acquire = 2,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Read => "reading the lease",
            Self::Watch => "watching the lease",
            Self::Acquire => "acquiring the lease",
        }
    }
}

impl<S: LeaseStore> Elector<S> {
    /// An elector writing `identity` (the node name) as holder.
    ///
    /// `identity` must be unique among the nodes competing for the Lease:
    /// like client-go, an elector takes a Lease that names itself as holder
    /// at once (it is its own, e.g. from before a restart).
    pub fn new(store: S, identity: impl Into<String>, timings: Timings) -> Self {
        let now = Instant::now();
        Self {
            store,
            identity: identity.into(),
            timings,
            observed: None,
            leading: None,
            watch: None,
            watch_opened: now,
            watch_active: now,
            next_poll: now,
            not_before: now,
            absent_since: None,
            failing: Default::default(),
        }
    }

    /// Runs until the campaign sender is dropped.
    ///
    /// `campaign` true: compete for the Lease and keep it. False: release it
    /// if held, stop competing, keep observing. Set it to false (or drop the
    /// sender) only after the VIP is gone: a standby takes the released
    /// Lease within milliseconds. When the sender is dropped, the Lease is
    /// released if held and `run` returns.
    ///
    /// Events go to `events`; a slow receiver slows the elector down, so give
    /// the channel room (e.g. 64) and drain it promptly.
    pub async fn run(
        mut self,
        mut campaign: watch::Receiver<bool>,
        events: mpsc::Sender<LeaseEvent>,
    ) {
        let mut open = true;
        loop {
            let wanted = open && *campaign.borrow_and_update();
            if self.leading.is_some() {
                if wanted {
                    self.lead(&mut campaign, &mut open, &events).await;
                } else {
                    self.release(&events).await;
                }
            } else if !open {
                return;
            } else {
                self.follow(wanted, &mut campaign, &mut open, &events).await;
            }
        }
    }

    /// One step of the holder: renew when due, lose at the deadline.
    async fn lead(
        &mut self,
        campaign: &mut watch::Receiver<bool>,
        open: &mut bool,
        events: &mpsc::Sender<LeaseEvent>,
    ) {
        let Some(l) = &self.leading else { return };
        let deadline = l.last_sent + self.timings.renew_deadline;
        let next_renew = l.next_renew;
        tokio::select! {
            biased;
            r = campaign.changed() => if r.is_err() { *open = false },
            () = sleep_until(deadline) => self.lose(LostReason::DeadlinePassed, events).await,
            () = sleep_until(next_renew) => self.renew(deadline, events).await,
        }
    }

    async fn renew(&mut self, deadline: Instant, events: &mpsc::Sender<LeaseEvent>) {
        let Some(l) = &self.leading else { return };
        let current = l.current.clone();
        let record = LeaseRecord {
            holder: self.identity.clone(),
            duration_seconds: self.duration_seconds(),
            acquire_time: current.record.acquire_time,
            renew_time: Some(SystemTime::now()),
            transitions: current.record.transitions,
        };
        let sent_at = Instant::now();
        let result = tokio::select! {
            r = self.store.update(&current, &record) => r,
            () = sleep_until(deadline) => return self.lose(LostReason::DeadlinePassed, events).await,
        };
        match result {
            Ok(stored) => {
                self.observe(Some(stored.clone()), events).await;
                self.leading = Some(Leading {
                    current: stored,
                    last_sent: sent_at,
                    next_renew: sent_at + self.timings.retry_period,
                });
                emit(events, LeaseEvent::Renewed { sent_at }).await;
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                tracing::warn!(error = %e, "lease renewal conflicted; re-reading the lease");
                emit_failed(events, e).await;
                let got = tokio::select! {
                    r = self.store.get() => r,
                    () = sleep_until(deadline) => return self.lose(LostReason::DeadlinePassed, events).await,
                };
                match got {
                    Ok(lease) => {
                        self.observe(lease.clone(), events).await;
                        match lease {
                            Some(l) if l.record.holder == self.identity => {
                                // Someone touched our Lease (labels?) but we
                                // still hold it: renew from the new version.
                                if let Some(lead) = &mut self.leading {
                                    lead.current = l;
                                    lead.next_renew = Instant::now();
                                }
                            }
                            Some(l) => {
                                let holder = l.record.holder().map(String::from);
                                self.lose(LostReason::HeldBy(holder), events).await;
                            }
                            None => self.lose(LostReason::Deleted, events).await,
                        }
                    }
                    Err(e) => {
                        emit_failed(events, e).await;
                        self.retry_renew_after(sent_at);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                emit_failed(events, e).await;
                self.retry_renew_after(sent_at);
            }
        }
    }

    fn retry_renew_after(&mut self, sent_at: Instant) {
        let next = (sent_at + self.timings.retry_period).max(Instant::now());
        if let Some(l) = &mut self.leading {
            l.next_renew = next;
        }
    }

    async fn lose(&mut self, reason: LostReason, events: &mpsc::Sender<LeaseEvent>) {
        if self.leading.take().is_some() {
            tracing::warn!(%reason, "lost the lease");
            self.next_poll = Instant::now();
            emit(
                events,
                LeaseEvent::Lost {
                    reason,
                    at: Instant::now(),
                },
            )
            .await;
        }
    }

    /// Gives the Lease up like client-go's ReleaseOnCancel: holder "",
    /// duration 1 s, transitions kept; only if our write is still the latest.
    async fn release(&mut self, events: &mpsc::Sender<LeaseEvent>) {
        let Some(l) = self.leading.take() else { return };
        tracing::info!("releasing the lease");
        self.next_poll = Instant::now();
        emit(
            events,
            LeaseEvent::Lost {
                reason: LostReason::Released,
                at: Instant::now(),
            },
        )
        .await;
        let record = LeaseRecord::released(l.current.record.transitions);
        match self.store.update(&l.current, &record).await {
            Ok(stored) => {
                self.observe(Some(stored), events).await;
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                tracing::info!(error = %e, "lease not released: someone else wrote it since our last renewal");
            }
            Err(e) => emit_failed(events, e).await,
        }
    }

    /// One step of a follower: know the Lease, try to take it when it is
    /// free or expired (if `wanted`), otherwise wait for the next change.
    async fn follow(
        &mut self,
        wanted: bool,
        campaign: &mut watch::Receiver<bool>,
        open: &mut bool,
        events: &mpsc::Sender<LeaseEvent>,
    ) {
        let now = Instant::now();
        if self.watch.is_none() && now >= self.next_poll {
            return self.refresh(events).await;
        }
        let acquire_at = if wanted { self.acquire_at() } else { None };
        if acquire_at.is_some_and(|at| at <= now) {
            return self.try_acquire(events).await;
        }
        // A live holder writes every retry_period, so a watch silent for a
        // whole lease duration is either watching a Lease nobody renews (then
        // a re-read costs little) or dead without the connection noticing.
        let idle_at = self
            .watch
            .as_ref()
            .map(|_| self.watch_active + self.timings.duration);
        if idle_at.is_some_and(|at| at <= now) {
            tracing::debug!(
                idle = ?self.timings.duration,
                "no event on the lease watch for a lease duration; re-reading the lease and reopening the watch"
            );
            self.watch = None;
            self.next_poll = now;
            return;
        }
        let far = now + Duration::from_secs(3600);
        let polling = self.watch.is_none();
        let next_poll = self.next_poll;
        let watch = &mut self.watch;
        let next_event = async {
            match watch.as_mut() {
                Some(w) => w.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = campaign.changed() => if r.is_err() { *open = false },
            ev = next_event => self.on_watch(ev, events).await,
            () = sleep_until(acquire_at.unwrap_or(far)), if acquire_at.is_some() => {}
            () = sleep_until(idle_at.unwrap_or(far)), if idle_at.is_some() => {}
            () = sleep_until(next_poll), if polling => {}
        }
    }

    /// When to try to acquire, given what we saw; `None` before the first read.
    ///
    /// Only a free Lease (empty holder: a release, which a holder writes
    /// once its VIPs are gone) or our own is taken at once. A Lease held by
    /// another node is taken `max(leaseDurationSeconds, our duration)` after
    /// we saw its last change: a record without (or with a short)
    /// `leaseDurationSeconds`, written by another tool, gets no less.
    fn acquire_at(&self) -> Option<Instant> {
        let obs = self.observed.as_ref()?;
        let d = self.timings.duration;
        let at = match &obs.lease {
            // Missing: perhaps deleted (`kubectl delete`, a GitOps prune)
            // under a holder that still has its VIP until its next renewal
            // fails. Create it only a lease duration after first seeing it
            // missing. A cluster's very first start waits this once, too.
            None => self.absent_since.unwrap_or(obs.at) + d,
            Some(l) => match l.record.holder() {
                Some(h) if h == self.identity => obs.at,
                Some(_) => obs.at + l.record.duration().max(d),
                // Free, but created anew after it went missing: that was no
                // release, so the wait for a missing Lease goes on.
                None => self.absent_since.map_or(obs.at, |t| (t + d).max(obs.at)),
            },
        };
        Some(at.max(self.not_before))
    }

    /// Reads the Lease, then watches it from the version read.
    async fn refresh(&mut self, events: &mpsc::Sender<LeaseEvent>) {
        self.next_poll = Instant::now() + self.timings.retry_period;
        let lease = match self.store.get().await {
            Ok(l) => {
                self.recovered(Step::Read);
                l
            }
            Err(e) => {
                self.report(Step::Read, e, events).await;
                return;
            }
        };
        let rv = lease.as_ref().map(|l| l.resource_version.clone());
        self.observe(lease, events).await;
        self.open_watch(rv.as_deref(), events).await;
    }

    /// (Re)opens the watch after `rv`; on failure, polls every retry_period.
    async fn open_watch(&mut self, rv: Option<&str>, events: &mpsc::Sender<LeaseEvent>) {
        self.watch = None;
        match self.store.watch(rv).await {
            Ok(w) => {
                self.recovered(Step::Watch);
                let now = Instant::now();
                self.watch = Some(w);
                self.watch_opened = now;
                self.watch_active = now;
            }
            Err(e) => {
                tracing::debug!(error = %e, "watching the lease failed; polling every retry_period");
                self.next_poll = Instant::now() + self.timings.retry_period;
                self.report(Step::Watch, e, events).await;
            }
        }
    }

    async fn on_watch(
        &mut self,
        ev: Option<Result<WatchEvent, KubeError>>,
        events: &mpsc::Sender<LeaseEvent>,
    ) {
        match ev {
            Some(Ok(WatchEvent::Changed(l))) => {
                self.watch_active = Instant::now();
                self.observe(Some(l), events).await;
            }
            Some(Ok(WatchEvent::Deleted)) => {
                self.watch_active = Instant::now();
                self.observe(None, events).await;
            }
            other => {
                if let Some(Err(e)) = other {
                    if e.status() == Some(410) {
                        tracing::debug!(error = %e, "lease watch expired; re-reading");
                    } else {
                        tracing::debug!(error = %e, "lease watch failed");
                        self.report(Step::Watch, e, events).await;
                    }
                }
                // Re-read at once (the server ends every watch after its
                // timeout), but not in a tight loop if watches keep breaking
                // right after they open.
                self.watch = None;
                self.next_poll =
                    (self.watch_opened + self.timings.retry_period).max(Instant::now());
            }
        }
    }

    async fn try_acquire(&mut self, events: &mpsc::Sender<LeaseEvent>) {
        let Some(obs) = &self.observed else { return };
        let creating = obs.lease.is_none();
        let now = SystemTime::now();
        let sent_at = Instant::now();
        let result = match &obs.lease {
            None => {
                let record = LeaseRecord {
                    holder: self.identity.clone(),
                    duration_seconds: self.duration_seconds(),
                    acquire_time: Some(now),
                    renew_time: Some(now),
                    transitions: 0,
                };
                self.store.create(&record).await
            }
            Some(cur) => {
                // Like client-go: re-taking our own Lease (after a restart or
                // a missed deadline) is not a transition.
                let ours = cur.record.holder == self.identity;
                let record = LeaseRecord {
                    holder: self.identity.clone(),
                    duration_seconds: self.duration_seconds(),
                    acquire_time: if ours {
                        cur.record.acquire_time
                    } else {
                        Some(now)
                    },
                    renew_time: Some(now),
                    transitions: if ours {
                        cur.record.transitions
                    } else {
                        cur.record.transitions.saturating_add(1)
                    },
                };
                self.store.update(cur, &record).await
            }
        };
        let e = match result {
            Ok(stored) => {
                tracing::info!(identity = %self.identity, "acquired the lease");
                self.recovered(Step::Acquire);
                self.observe(Some(stored.clone()), events).await;
                self.watch = None;
                self.leading = Some(Leading {
                    current: stored,
                    last_sent: sent_at,
                    next_renew: sent_at + self.timings.retry_period,
                });
                emit(events, LeaseEvent::Acquired { sent_at }).await;
                return;
            }
            Err(e) => e,
        };
        if creating && e.is_not_found() {
            // A create answers 404 only when the namespace (or the
            // coordination.k8s.io/v1 API) is missing: no race, nothing new
            // to read; retry every retry_period, say so once.
            let namespace = match &e {
                KubeError::NotFound { op, .. } => op.namespace.clone(),
                _ => None,
            };
            let namespace = namespace.as_deref().unwrap_or("<none>").to_string();
            if self.report(Step::Acquire, e, events).await {
                tracing::warn!(
                    %namespace,
                    "cannot create the lease: namespace {namespace} does not exist; create namespace {namespace} or set lease.namespace"
                );
            }
        } else if e.is_conflict() || e.is_not_found() {
            // Someone else wrote first: re-read, never retry blindly. A newer
            // version lets us decide at once (e.g. it was a release).
            tracing::debug!(error = %e, "lost the race for the lease; re-reading");
            if self.reread(events).await {
                return;
            }
        } else {
            tracing::debug!(error = %e, "acquiring the lease failed");
            self.report(Step::Acquire, e, events).await;
        }
        self.not_before = Instant::now() + self.timings.retry_period;
    }

    /// Re-reads the Lease after a lost race; true if it showed a version we
    /// had not seen. Then the watch had not delivered it (it lags, or it is
    /// dead without knowing), so it is reopened from the version read.
    async fn reread(&mut self, events: &mpsc::Sender<LeaseEvent>) -> bool {
        match self.store.get().await {
            Ok(lease) => {
                self.recovered(Step::Read);
                let rv = lease.as_ref().map(|l| l.resource_version.clone());
                let newer = self.observe(lease, events).await;
                if newer && self.watch.is_some() {
                    self.open_watch(rv.as_deref(), events).await;
                }
                newer
            }
            Err(e) => {
                self.report(Step::Read, e, events).await;
                false
            }
        }
    }

    /// Reports a follower's failure unless it is the same as the last one
    /// of this step; true if it was reported.
    async fn report(
        &mut self,
        step: Step,
        error: KubeError,
        events: &mpsc::Sender<LeaseEvent>,
    ) -> bool {
        let text = error.to_string();
        let last = &mut self.failing[step as usize];
        if last.as_deref() == Some(text.as_str()) {
            tracing::debug!(error = %text, "{} failed again", step.name());
            return false;
        }
        *last = Some(text);
        emit_failed(events, error).await;
        true
    }

    /// A follower's request of this step succeeded.
    fn recovered(&mut self, step: Step) {
        if self.failing[step as usize].take().is_some() {
            tracing::info!("{} works again", step.name());
        }
    }

    /// Records what we saw; true if it was a version we had not seen. The
    /// observation time only moves when the Lease changed (a new
    /// resourceVersion), which is what expiry counts from.
    async fn observe(
        &mut self,
        lease: Option<StoredLease>,
        events: &mpsc::Sender<LeaseEvent>,
    ) -> bool {
        let rv = |l: &Option<StoredLease>| l.as_ref().map(|l| l.resource_version.clone());
        let holder =
            |l: &Option<StoredLease>| l.as_ref().and_then(|l| l.record.holder()).map(String::from);
        let before = self
            .observed
            .as_ref()
            .map(|o| (rv(&o.lease), holder(&o.lease)));
        if before.as_ref().is_some_and(|(v, _)| *v == rv(&lease)) {
            return false;
        }
        let now = Instant::now();
        let old_uid = self
            .observed
            .as_ref()
            .and_then(|o| o.lease.as_ref())
            .and_then(StoredLease::uid);
        let recreated = match (old_uid, lease.as_ref().and_then(StoredLease::uid)) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        };
        match &lease {
            None => {
                self.absent_since.get_or_insert(now);
            }
            Some(l) if l.record.holder().is_some() => self.absent_since = None,
            Some(_) if recreated => {
                self.absent_since.get_or_insert(now);
            }
            Some(_) => {}
        }
        let new_holder = holder(&lease);
        self.observed = Some(Observation { lease, at: now });
        if before.is_none_or(|(_, h)| h != new_holder) {
            tracing::info!(
                holder = new_holder.as_deref().unwrap_or("<none>"),
                "lease holder observed"
            );
            emit(
                events,
                LeaseEvent::Observed {
                    holder: new_holder,
                    at: now,
                },
            )
            .await;
        }
        true
    }

    fn duration_seconds(&self) -> u32 {
        u32::try_from(self.timings.duration.as_secs()).unwrap_or(u32::MAX)
    }
}

async fn emit(events: &mpsc::Sender<LeaseEvent>, event: LeaseEvent) {
    // A closed receiver means the daemon is shutting down; keep going until
    // the campaign ends so the Lease is still released.
    let _ = events.send(event).await;
}

async fn emit_failed(events: &mpsc::Sender<LeaseEvent>, error: KubeError) {
    emit(
        events,
        LeaseEvent::RequestFailed {
            error,
            at: Instant::now(),
        },
    )
    .await;
}
