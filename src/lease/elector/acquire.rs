//! Taking the Lease: create or update it as ours, and re-read after a lost
//! race instead of retrying blindly.

use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Elector, Leading, Step, emit};
use crate::kube::KubeError;
use crate::lease::event::LeaseEvent;
use crate::lease::record::LeaseRecord;
use crate::lease::store::LeaseStore;

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
                tracing::info!(identity = %self.identity, "acquired the lease");
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
}
