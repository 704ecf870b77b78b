//! The liveness obligation: once the holder fails, a healthy standby must
//! hold the Lease within a bound, or the seed fails.

use tokio::time::Instant;

use super::Sim;

/// The holder failed at `from`; a standby must hold the Lease by `by`.
pub(super) struct Obligation {
    pub(super) failed: String,
    pub(super) from: Instant,
    pub(super) by: Instant,
}

impl Sim {
    /// Counts handovers and checks the open liveness obligation.
    pub(super) fn watch_holder(&mut self, now: Instant) {
        let uid = self.store.lease().and_then(|l| l.uid().map(String::from));
        if uid.is_some() && uid != self.created.as_ref().map(|c| c.0.clone()) {
            self.created = uid.map(|u| (u, now));
        }
        let holder = self.holder();
        if holder != self.last_holder {
            if holder.is_some() {
                self.stats.handovers += 1;
            }
            self.last_holder = holder.clone();
        }
        let Some(o) = &self.obligation else { return };
        let taken = holder
            .as_ref()
            .is_some_and(|h| *h != o.failed && self.nodes.iter().any(|s| s.identity == *h));
        if taken {
            let after = now.duration_since(o.from).as_secs_f64();
            let line = format!(
                "liveness: a standby holds the lease {after:.3}s after {} failed",
                o.failed
            );
            self.world.lock().log(now, line);
            self.obligation = None;
        } else if now > o.by {
            let (failed, from) = (o.failed.clone(), o.from);
            let mut w = self.world.lock();
            let what = format!(
                "liveness: {failed} failed at {}s and no healthy standby held the lease by {}s (holder: {})",
                w.t(from).trim(),
                w.t(o.by).trim(),
                holder.as_deref().unwrap_or("nobody")
            );
            w.log(now, format!("VIOLATION: {what}"));
            w.violations.push(what);
            drop(w);
            self.obligation = None;
        }
    }

    /// Whether node `i` could take over now and for `window`.
    pub(super) fn eligible(&self, i: usize, now: Instant) -> bool {
        let s = &self.nodes[i];
        !s.instances.is_empty()
            && s.healthy_at.is_none()
            && s.healthy_since.is_some()
            && s.impaired_until <= now
    }
}
