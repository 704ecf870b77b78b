//! Taking the Lease: create or update it as ours, and re-read after a lost
//! race instead of retrying blindly.

use std::time::SystemTime;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::{Elector, Leading, Step, emit};
use crate::kube::KubeError;
use crate::lease::event::LeaseEvent;
use crate::lease::record::{LeaseRecord, StoredLease, printable};
use crate::lease::store::{LeaseStore, WatchEvent};

impl<S: LeaseStore> Elector<S> {
    pub(super) async fn try_acquire(&mut self, events: &mpsc::Sender<LeaseEvent>) {
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
                        cur.record.next_transitions()
                    },
                };
                // A handover annotation has done its job once the Lease
                // is taken: the write drops it.
                self.store.update(&cur.with_handover(None), &record).await
            }
        };
        let e = match result {
            Ok(stored) => {
                if creating && !self.confirm_create(&stored, events).await {
                    return;
                }
                tracing::info!(identity = %self.identity, "acquired the lease");
                self.unanswered_create = None;
                // A handover asked for while we were not holding (the Lease
                // was lost meanwhile) named nobody; it must not name anyone
                // in a release of this new term.
                self.handover
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
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
            if creating {
                // No answer: the create may have been applied, even after
                // another node's create and a delete, and the Lease may
                // name us next time we look. Not at once, then (see
                // `confirm_create`).
                self.unanswered_create = Some(Instant::now());
            }
            self.report(Step::Acquire, e, events).await;
        }
        self.not_before = Instant::now() + self.timings.retry_period;
    }

    /// After our create of a Lease we had seen missing: true if no other
    /// node held it in between.
    ///
    /// A delete can let our create, in flight, succeed right after another
    /// node created the Lease and added its VIP; that node loses at its
    /// next renewal, but its VIP lives until its renew deadline. Neither
    /// the create's answer nor a re-read shows it; the open watch does, as
    /// a write by another holder before our own. Without a watch, or if it
    /// does not bring our write within a retry period, we cannot tell and
    /// assume the worst. Unconfirmed, the Lease is ours at the server but
    /// leadership is not reported: we take our own Lease again (no
    /// transition) a lease duration after the answer, when any holder whose
    /// write came before ours has lost its VIP (its last write was sent
    /// before ours was applied: its VIP is gone renew_deadline plus the
    /// kernel's fence latency later, less than a lease duration).
    async fn confirm_create(
        &mut self,
        stored: &StoredLease,
        events: &mpsc::Sender<LeaseEvent>,
    ) -> bool {
        let answered = Instant::now();
        let mut other = None;
        let mut confirmed = false;
        if let Some(watch) = self.watch.as_mut() {
            let until = answered + self.timings.retry_period;
            loop {
                match timeout_at(until, watch.next()).await {
                    Ok(Some(Ok(WatchEvent::Changed(l)))) => {
                        if l.resource_version == stored.resource_version {
                            confirmed = true;
                            break;
                        }
                        if let Some(h) = l.record.holder()
                            && h != self.identity
                        {
                            other = Some(printable(h));
                        }
                    }
                    Ok(Some(Ok(WatchEvent::Deleted))) => {}
                    Err(_) => break,
                    Ok(_) => {
                        // Ended or failed: reopened by the follower.
                        self.watch = None;
                        self.next_poll = Instant::now();
                        break;
                    }
                }
            }
        }
        if confirmed && other.is_none() {
            return true;
        }
        self.observe(Some(stored.clone()), events).await;
        self.not_before = answered + self.timings.duration;
        let why = match &other {
            Some(h) => format!("{h} created it while our create was in flight"),
            None => "the lease watch did not show what happened before our create".to_string(),
        };
        tracing::warn!(
            holder = other.as_deref().unwrap_or("<unknown>"),
            "created the lease after it was missing, but {why}; a node that held it may still have the VIP, \
             so this node takes the VIP only after a lease duration ({:?}); nothing to do unless this repeats \
             (then find what deletes the lease)",
            self.timings.duration
        );
        false
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
}
