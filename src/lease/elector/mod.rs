//! The elector: competes for the Lease while asked to, holds it by renewing,
//! releases it when told, and reports everything as [`LeaseEvent`]s.
//!
//! Client-go's `leaderelection` semantics, with two sharpenings:
//! followers watch the Lease and act the moment it is released or expires
//! (not at the next poll), and the leader's loss is reported exactly at
//! `sent_at + renew_deadline` of its last successful renewal, even when a
//! request hangs.

mod acquire;
mod follow;
mod lead;

use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};

use super::event::{DURATION_CEILING, LeaseEvent, Timings};
use super::record::{INT32_MAX, StoredLease, printable};

/// Where the daemon leaves the node the next release hands over to
/// (`ha-vip handover --to`); the elector takes it out when it releases.
pub type HandoverSlot = std::sync::Arc<std::sync::Mutex<Option<String>>>;
use super::store::{LeaseStore, LeaseWatch};
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
    /// When our last create of the missing Lease went unanswered: it may
    /// have been applied after another node's create and a delete (see
    /// `confirm_create`), so a Lease naming us is not taken at once before
    /// a lease duration after it.
    unanswered_create: Option<Instant>,
    /// The last failure reported per follower step: a follower reports a
    /// repeated failure once, not on every attempt.
    failing: [Option<String>; 3],
    /// The longest `leaseDurationSeconds` of another holder that is honoured.
    duration_ceiling: Duration,
    /// The last (holder, leaseDurationSeconds) warned about as over the
    /// ceiling: one warning per writer and value, not one per renewal.
    warned_duration: Option<(String, u32)>,
    /// The node the next release names (see [`HandoverSlot`]).
    handover: HandoverSlot,
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
            unanswered_create: None,
            failing: Default::default(),
            duration_ceiling: timings.duration.max(DURATION_CEILING),
            warned_duration: None,
            handover: HandoverSlot::default(),
        }
    }

    /// Reads the node to hand over to from `slot` when it releases: that
    /// release names it in [`crate::lease::HANDOVER_ANNOTATION`].
    pub fn with_handover(mut self, slot: HandoverSlot) -> Self {
        self.handover = slot;
        self
    }

    /// Honours a `leaseDurationSeconds` written by another holder only up
    /// to `ceiling` (never less than our own lease duration) instead of
    /// [`DURATION_CEILING`]; for tests that cannot wait a minute.
    pub fn with_duration_ceiling(mut self, ceiling: Duration) -> Self {
        self.duration_ceiling = ceiling.max(self.timings.duration);
        self
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
            |l: &Option<StoredLease>| l.as_ref().and_then(|l| l.record.holder()).map(printable);
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
        if let Some(l) = &lease {
            self.check_duration(l);
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

    /// Warns, once per holder and value, of a `leaseDurationSeconds` over
    /// the ceiling: honoured in full, one write (`2147483647`) would keep
    /// every standby waiting for ever.
    fn check_duration(&mut self, lease: &StoredLease) {
        let r = &lease.record;
        let Some(holder) = r.holder() else { return };
        if holder == self.identity || r.duration() <= self.duration_ceiling {
            return;
        }
        let key = (holder.to_string(), r.duration_seconds);
        if self.warned_duration.as_ref() == Some(&key) {
            return;
        }
        self.warned_duration = Some(key);
        let holder = printable(holder);
        tracing::warn!(
            %holder,
            lease_duration_seconds = r.duration_seconds,
            ceiling = ?self.duration_ceiling,
            "lease holder {holder} wrote leaseDurationSeconds {}, more than the {}s this node honours: \
             it takes the lease over {}s after the holder's last change, not later; \
             if {holder} is an ha-vip node, set its lease.duration to at most {}s, \
             otherwise find what else writes this lease",
            r.duration_seconds,
            self.duration_ceiling.as_secs(),
            self.duration_ceiling.as_secs(),
            self.duration_ceiling.as_secs(),
        );
    }

    fn duration_seconds(&self) -> u32 {
        // The API server stores an int32; a longer duration could not be written.
        u32::try_from(self.timings.duration.as_secs()).map_or(INT32_MAX, |s| s.min(INT32_MAX))
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
