//! The follower's side: read the Lease, watch it, and decide when it may be
//! taken.

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant, sleep_until};

use super::{Elector, Step};
use crate::kube::KubeError;
use crate::lease::event::LeaseEvent;
use crate::lease::record::HANDOVER_HOLD;
use crate::lease::store::{LeaseStore, WatchEvent};

impl<S: LeaseStore> Elector<S> {
    /// One step of a follower: know the Lease, try to take it when it is
    /// free or expired (if `wanted`), otherwise wait for the next change.
    pub(super) async fn follow(
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
    /// once its VIPs are gone) or our own is taken at once (our own not
    /// within a lease duration of an unanswered create). A Lease held by
    /// another node is taken `max(leaseDurationSeconds, our duration)` after
    /// we saw its last change: a record without (or with a short)
    /// `leaseDurationSeconds`, written by another tool, gets no less; one
    /// with a longer one gets no more than the ceiling
    /// (`max(our duration, DURATION_CEILING)`).
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
                // Ours: from before a restart, or a create whose answer
                // was lost (then a lease duration after it).
                Some(h) if h == self.identity => self
                    .unanswered_create
                    .map_or(obs.at, |t| (t + d).max(obs.at)),
                // Never longer than the ceiling: a record written with a
                // huge duration must not keep us out for ever.
                Some(_) => obs.at + l.record.duration().max(d).min(self.duration_ceiling),
                // Free, but created anew after it went missing: that was no
                // release, so the wait for a missing Lease goes on. Released
                // to another node by name: keep out for the handover window
                // so that node wins (it takes it at once).
                None => {
                    let at = self.absent_since.map_or(obs.at, |t| (t + d).max(obs.at));
                    match l.handover_to() {
                        Some(to) if to != self.identity => at.max(obs.at + HANDOVER_HOLD),
                        _ => at,
                    }
                }
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
    pub(super) async fn open_watch(&mut self, rv: Option<&str>, events: &mpsc::Sender<LeaseEvent>) {
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
}
