//! The holder's side: renew every retry_period, lose at the renew deadline,
//! release when the campaign ends.

use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::{Elector, Leading, emit, emit_failed};
use crate::lease::event::{LeaseEvent, LostReason};
use crate::lease::record::{LeaseRecord, printable};
use crate::lease::store::LeaseStore;

/// How often a release is written at most: the first write, and one after
/// each re-read that still names us.
const RELEASE_WRITES: usize = 3;

const NOT_RELEASED: &str = "the lease was not released; standbys take over once it expires (lease.duration after our last renewal); check the API server";

impl<S: LeaseStore> Elector<S> {
    /// One step of the holder: renew when due, lose at the deadline.
    pub(super) async fn lead(
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
        // Our writes never carry a handover of the past.
        let current = l.current.with_handover(None);
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
                                let holder = l.record.holder().map(printable);
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
    /// duration 1 s, transitions kept; only while the Lease names us.
    ///
    /// A 409 (or any failed write) is not the end: a renewal that took
    /// effect but whose answer was lost, or a rewrite of our Lease by
    /// someone else, leaves our resourceVersion stale while we still hold
    /// it, and giving up would cost the standbys a whole lease duration. So
    /// the Lease is re-read and the release written again from the version
    /// read, while the re-read still names us, at most [`RELEASE_WRITES`]
    /// times and within one renew deadline (client-go's bound for a
    /// release). A re-read naming another holder, or none, ends it.
    pub(super) async fn release(&mut self, events: &mpsc::Sender<LeaseEvent>) {
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
        let deadline = Instant::now() + self.timings.renew_deadline;
        // A planned handover to a named node: the same write that frees the
        // Lease names it, so no reader ever sees the one without the other.
        let to = self
            .handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(to) = &to {
            tracing::info!(to = %printable(to), "releasing the lease to {}", printable(to));
        }
        let mut current = l.current;
        for _ in 0..RELEASE_WRITES {
            let record = LeaseRecord::released(current.record.transitions);
            let sent = current.with_handover(to.as_deref());
            let e = match timeout_at(deadline, self.store.release(&sent, &record)).await {
                Ok(Ok(stored)) => {
                    self.observe(Some(stored), events).await;
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => break,
            };
            if e.is_conflict() || e.is_not_found() {
                tracing::info!(error = %e, "lease release conflicted; re-reading the lease");
            } else {
                // Perhaps it took effect and only the answer was lost.
                tracing::warn!(error = %e, "lease release failed; re-reading the lease");
                emit_failed(events, e).await;
            }
            let lease = match timeout_at(deadline, self.store.get_for_release()).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "{NOT_RELEASED}");
                    emit_failed(events, e).await;
                    return;
                }
                Err(_) => break,
            };
            self.observe(lease.clone(), events).await;
            match lease {
                Some(l) if l.record.holder == self.identity => current = l,
                Some(l) if l.record.holder().is_none() => {
                    tracing::info!(
                        "lease is free: our release took effect though its answer was lost, or someone else freed it"
                    );
                    return;
                }
                Some(l) => {
                    let holder = l.record.holder().map(printable);
                    tracing::info!(
                        holder = holder.as_deref().unwrap_or("<none>"),
                        "lease not released: it is no longer ours"
                    );
                    return;
                }
                None => {
                    tracing::info!("lease not released: it was deleted");
                    return;
                }
            }
        }
        tracing::warn!(
            renew_deadline = ?self.timings.renew_deadline,
            "{NOT_RELEASED}"
        );
    }
}
