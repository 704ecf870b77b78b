//! What an address conflict means for the daemon, and when to probe.
//!
//! Mechanism in [`crate::announce::conflict`]; the policy here:
//!
//! * **At start**, before the elector may campaign, one probe for every
//!   VIP. An answer is not yet a conflict (another node may hold the Lease
//!   and the VIP right now), but it makes the VIPs *suspect*: this node
//!   probes again before it ever adds them.
//! * **Before the first add of a term**, a probe only when the VIPs are
//!   suspect or the Lease was taken over from another holder (it expired:
//!   an unplanned failover, where ~100 ms is cheap against the seconds
//!   already spent, and a holder that should be fenced but still answers
//!   is exactly the split-brain this catches). Never after a clean release
//!   (holder empty): the peer removed its VIPs before releasing, and a
//!   planned handover must stay as fast as it is. An answer then is a
//!   conflict: the VIPs are not added, the Lease is released (the
//!   machine's VIP-failure back-off, [`crate::machine::VIP_FAILURE_BACKOFF`],
//!   is the retry), and the VIPs stay suspect until a probe finds nobody.
//! * **While holding**, every ARP frame or neighbour advertisement from
//!   another MAC that claims a VIP is a conflict. The holder keeps the VIPs:
//!   it holds the Lease, so it is the node that should serve; dropping them
//!   would hand the address to the rogue (or to a second node that is not
//!   fenced) and take the control plane down with it, which is worse than
//!   two answering hosts. DAD semantics (give the address up) protect a
//!   host's own unicast address; keepalived likewise keeps a VIP it owns.
//!   It shouts instead.
//!
//! Each conflict counts in `ha_vip_address_conflicts_total{vip}`; the ERROR
//! log and the `AddressConflict` Event are limited to one per VIP, MAC and
//! phase (before the add, while holding) per [`REPORT_EVERY`], with the number left out, so a flapping rogue host
//! cannot flood the journal or the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::announce::conflict::{self, Conflict, PROBE_WAIT, format_mac};
use crate::cluster::Notices;
use crate::config::{Config, Vip};
use crate::observe::Metrics;

/// Shortest time between two ERROR lines (and Events) about the same VIP
/// and MAC.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(60);

/// When a conflict was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Phase {
    /// The probe at start, once the Lease showed that nobody else may
    /// answer (it is free), or a second host answers besides the holder.
    Start,
    /// The probe before adding the VIP.
    BeforeAdd,
    /// While holding the VIP.
    Holding,
}

#[derive(Debug, Default)]
struct Limit {
    /// (VIP, MAC, phase) -> when it was last reported, and conflicts
    /// since. The phase is part of it: a host seen before the add that
    /// then claims the VIP while we hold it is news.
    last: HashMap<(Vip, [u8; 6], Phase), (Instant, u64)>,
}

/// Counts conflicts and reports them, rate-limited. Clones share state.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    node: String,
    interface: String,
    metrics: Metrics,
    notices: Arc<Mutex<Notices>>,
    limit: Arc<Mutex<Limit>>,
}

impl Reporter {
    pub(crate) fn new(cfg: &Config, metrics: &Metrics, notices: Notices) -> Self {
        Self {
            node: cfg.node_name.clone(),
            interface: cfg.interface.clone(),
            metrics: metrics.clone(),
            notices: Arc::new(Mutex::new(notices)),
            limit: Arc::default(),
        }
    }

    /// The writer of Events was replaced (new Kubernetes settings).
    pub(crate) fn set_notices(&self, notices: Notices) {
        *self.notices.lock().unwrap_or_else(|p| p.into_inner()) = notices;
    }

    /// Counts `c`, and logs it (ERROR) and queues an Event unless the same
    /// VIP and MAC were reported in the same phase less than
    /// [`REPORT_EVERY`] ago.
    pub(crate) fn report(&self, c: Conflict, phase: Phase) {
        self.metrics.address_conflict(&c.vip);
        let now = Instant::now();
        let suppressed = {
            let mut limit = self.limit.lock().unwrap_or_else(|p| p.into_inner());
            let entry = limit.last.entry((c.vip, c.mac, phase)).or_insert((now, 0));
            if entry.1 > 0 && now.duration_since(entry.0) < REPORT_EVERY {
                entry.1 += 1;
                return;
            }
            // entry.1 counts this one too: the first report starts at 1.
            let suppressed = entry.1.saturating_sub(1);
            *entry = (now, 1);
            suppressed
        };
        let mac = format_mac(&c.mac);
        let (vip, interface, node) = (c.vip, &self.interface, &self.node);
        let more = if suppressed > 0 {
            format!(" ({suppressed} more since the last report)")
        } else {
            String::new()
        };
        let message = match phase {
            Phase::Start => format!(
                "{node}: {mac} answers for VIP {vip} on {interface} ({}) where no host but the lease holder may; this node does not add the VIP while another host answers. Find the host with MAC {mac} (router or switch MAC table) and remove {vip} from it{more}",
                c.kind.describe()
            ),
            Phase::BeforeAdd => format!(
                "{node}: {mac} answers for VIP {vip} on {interface} ({}); not adding it here, releasing the lease and probing again after the back-off. Find the host with MAC {mac} (router or switch MAC table) and remove {vip} from it{more}",
                c.kind.describe()
            ),
            Phase::Holding => format!(
                "{node}: {mac} also claims VIP {vip} on {interface} ({}) while this node holds it; clients may reach the wrong host. This node keeps serving the VIP (it holds the lease). Find the host with MAC {mac} (router or switch MAC table) and remove {vip} from it{more}",
                c.kind.describe()
            ),
        };
        tracing::error!(%vip, mac = %mac, interface, kind = c.kind.describe(), "address conflict: {message}");
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .address_conflict(message, SystemTime::now());
    }
}

/// The daemon's end of conflict detection.
pub(crate) struct Conflicts {
    active: Option<Active>,
}

struct Active {
    interface: String,
    reporter: Reporter,
    /// The VIPs held, for the watch task.
    held: watch::Sender<Vec<Vip>>,
    task: JoinHandle<()>,
    need: Need,
}

/// Whether the next add needs a probe first; pure, so the decision is
/// unit-tested on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Need {
    /// Another host answered (at start, or at the last probe), or the
    /// start probe failed: probe before the next add.
    suspect: bool,
    /// The last holder seen other than us was another node: if we acquire
    /// now, we take over a Lease that expired.
    other_holder: bool,
    /// What the start probe found, until the first sight of the Lease
    /// tells whether it was expected.
    start: Option<Vec<Conflict>>,
}

impl Need {
    /// After the start probe: what it found (`None`: it failed). Answers
    /// stay undecided until the first sight of the Lease.
    pub(crate) fn at_start(found: Option<Vec<Conflict>>) -> Self {
        match found {
            Some(found) if found.is_empty() => Self::default(),
            Some(found) => Self {
                suspect: true,
                other_holder: false,
                start: Some(found),
            },
            None => Self {
                suspect: true,
                ..Self::default()
            },
        }
    }

    /// The elector saw `holder`; `me` is this node. Our own name tells
    /// nothing about who held it before us, so it changes nothing.
    ///
    /// The first sight decides the start probe's answers: one MAC per VIP
    /// while another node holds the Lease is that holder (expected: not
    /// suspect, so a later planned handover does not probe). A second
    /// MAC, or any answer while the Lease is free or ours (we removed our
    /// leftovers), is a conflict: returned to be reported, and suspect.
    pub(crate) fn observed(&mut self, holder: Option<&str>, me: &str) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        if let Some(found) = self.start.take() {
            let held_by_other = holder.is_some_and(|h| h != me);
            let macs = |c: &Conflict| found.iter().filter(|o| o.vip == c.vip).count();
            conflicts = found
                .iter()
                .filter(|c| !held_by_other || macs(c) > 1)
                .copied()
                .collect();
            self.suspect = !conflicts.is_empty();
        }
        if holder != Some(me) {
            self.other_holder = holder.is_some();
        }
        conflicts
    }

    /// Why the next add must probe first; `None`: add at once.
    pub(crate) fn why(&self) -> Option<&'static str> {
        if self.suspect {
            Some("another host answered for the VIP before")
        } else if self.other_holder {
            Some("taking over a lease that expired")
        } else {
            None
        }
    }

    /// A probe ran: nobody answered (`clean`), or someone did.
    pub(crate) fn probed(&mut self, clean: bool) {
        self.suspect = !clean;
        self.start = None;
        if clean {
            self.other_holder = false;
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conflicts {
    /// No detection (the simulation, tests of the main loop).
    pub(crate) fn disabled() -> Self {
        Self { active: None }
    }

    /// Detection on `cfg.interface`, with the start probe's result, and
    /// the watch task (idle until VIPs are held).
    pub(crate) fn start(
        cfg: &Config,
        metrics: &Metrics,
        notices: Notices,
        start_probe: Result<Vec<Conflict>, conflict::ConflictError>,
    ) -> Self {
        let found = match start_probe {
            Ok(found) => {
                for c in &found {
                    tracing::info!(
                        vip = %c.vip,
                        mac = %format_mac(&c.mac),
                        interface = %cfg.interface,
                        "{} answers for VIP {} on {} at start: expected if another node holds the lease (decided at the first sight of it)",
                        format_mac(&c.mac), c.vip, cfg.interface
                    );
                }
                Some(found)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot probe the VIPs for address conflicts at start; probing again before the first add");
                None
            }
        };
        let reporter = Reporter::new(cfg, metrics, notices);
        let (held, rx) = watch::channel(Vec::new());
        let r = reporter.clone();
        let task = tokio::spawn(conflict::watch(cfg.interface.clone(), rx, move |c| {
            r.report(c, Phase::Holding)
        }));
        Self {
            active: Some(Active {
                interface: cfg.interface.clone(),
                reporter,
                held,
                task,
                need: Need::at_start(found),
            }),
        }
    }

    /// The elector saw `holder` (`me` is this node): remembers whether the
    /// last holder before us was another node.
    pub(crate) fn observed(&mut self, holder: Option<&str>, me: &str) {
        if let Some(a) = &mut self.active {
            for c in a.need.observed(holder, me) {
                a.reporter.report(c, Phase::Start);
            }
        }
    }

    /// The Events' writer was replaced.
    pub(crate) fn set_notices(&self, notices: Notices) {
        if let Some(a) = &self.active {
            a.reporter.set_notices(notices);
        }
    }

    /// Before the first add of a term: whether `vips` may be added. Probes
    /// only when the VIPs are suspect or the Lease was taken over from
    /// another holder; an answer is reported and means no.
    pub(crate) async fn before_add(&mut self, vips: &[Vip]) -> bool {
        let Some(a) = &mut self.active else {
            return true;
        };
        let Some(why) = a.need.why() else {
            return true;
        };
        let was_suspect = a.need.suspect;
        let t = Instant::now();
        let found = conflict::probe(&a.interface, vips, PROBE_WAIT).await;
        // Once per unplanned takeover at most: worth a line, with its cost.
        tracing::info!(
            why,
            took_ms = t.elapsed().as_millis() as u64,
            "probed the VIPs before adding them ({why})"
        );
        match found {
            Ok(found) if found.is_empty() => {
                if was_suspect {
                    tracing::info!(interface = %a.interface, "no other host answers for the VIPs any more; adding them");
                }
                a.need.probed(true);
                true
            }
            Ok(found) => {
                for c in found {
                    a.reporter.report(c, Phase::BeforeAdd);
                }
                a.need.probed(false);
                false
            }
            Err(e) => {
                // A broken probe must not keep the VIP down: the kernel
                // fence and the Lease are the safety; this is a warning.
                tracing::warn!(error = %e, "cannot probe the VIPs for address conflicts; adding them without");
                true
            }
        }
    }

    /// The VIPs now held (empty: none): what the watch listens for.
    pub(crate) fn holding(&self, vips: &[Vip]) {
        if let Some(a) = &self.active {
            a.held.send_if_modified(|h| {
                if h.as_slice() == vips {
                    return false;
                }
                *h = vips.to_vec();
                true
            });
        }
    }
}

#[cfg(test)]
mod tests;
