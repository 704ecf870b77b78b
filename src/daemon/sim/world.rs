//! The simulated world all nodes share: one kernel address table per node,
//! the writes the Lease store applied, the event trace, and the safety
//! invariants, checked exactly at every instant an address comes or goes.
//!
//! A kernel here behaves like Linux's as far as the fence is concerned: a
//! request is applied when it gets the RTNL lock (`apply_at`, in send
//! order), its lifetime starts then, and an expired address is deleted only
//! when the expiry worker runs (up to [`FENCE_MARGIN`] later).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::fence::NodeFence;
use super::rng::Rng;
use crate::config::Vip;
use crate::config::defaults::FENCE_MARGIN;
use crate::vip::{Cause, Lifetime, NetEvent, VipError};

/// One request a node's daemon sent to its kernel.
#[derive(Debug, Clone, Copy)]
pub(super) enum Request {
    Add(Vip, Lifetime),
    Remove(Vip),
}

/// Every kernel request, as the invariant and the trace see it.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) node: usize,
    pub(super) request: Request,
    pub(super) sent: Instant,
    pub(super) apply_at: Instant,
    /// Set when applied: the result (and for an add, the resulting expiry).
    pub(super) result: Option<Result<Option<Instant>, Cause>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The lifetime ends here.
    expires: Instant,
    /// The expiry worker deletes it here (expires + the deletion latency).
    deleted_at: Instant,
    /// Up since.
    since: Instant,
}

/// Faults of one kernel, as windows of simulated time.
#[derive(Debug, Clone, Default)]
pub(super) struct KernelFaults {
    /// Adds of these VIPs (all when the list is empty) fail until then.
    pub(super) add_fail: Option<(Instant, Vec<Vip>)>,
    /// Removals fail until then.
    pub(super) remove_fail: Option<Instant>,
    /// The interface is gone until then: its addresses went with it, and
    /// every request fails with "no interface".
    pub(super) no_link: Option<Instant>,
    /// Requests wait up to this long for the RTNL lock until the instant.
    pub(super) slow: Option<(Instant, Duration)>,
}

#[derive(Debug, Default)]
struct Kernel {
    addrs: BTreeMap<Vip, Entry>,
    /// Request ids in send order, not applied yet.
    pending: VecDeque<usize>,
    last_apply: Option<Instant>,
    faults: KernelFaults,
    /// The guards of the daemon instances on this node.
    watchers: Vec<mpsc::UnboundedSender<NetEvent>>,
    link_was_down: bool,
}

/// The shared state; see the module doc.
pub(super) struct World {
    pub(super) now_settled: Instant,
    kernels: Vec<Kernel>,
    pub(super) sent: Vec<Sent>,
    rng: Rng,
    /// Per node: the latest `sent_at` of a write naming it holder that the
    /// Lease store applied (its fence is that plus the renew deadline).
    pub(super) fence_sent: Vec<Option<Instant>>,
    pub(super) renew_deadline: Duration,
    /// Longest wait for the RTNL lock on a quiet kernel.
    pub(super) base_delay: Duration,
    /// Every expired address is deleted this long after its lifetime
    /// (tests pin the worst case); otherwise a random latency up to
    /// [`FENCE_MARGIN`].
    pub(super) deletion_latency: Option<Duration>,
    pub(super) trace: Vec<String>,
    pub(super) violations: Vec<String>,
    pub(super) start: Instant,
    /// Whether the daemons run the precise fence: the invariants then
    /// concern serving VIPs (present and not fenced), see [`super::fence`].
    pub(super) precise: bool,
    /// Each node's precise fence and real-time clock.
    pub(super) fences: Vec<NodeFence>,
    /// The fence's request latencies (apart, so that a seed's address
    /// table behaves the same in both modes).
    pub(super) fence_rng: Rng,
    /// Fence requests sent so far.
    pub(super) fence_ops: usize,
    /// Whether an address outliving the precise fence's outer lifetime
    /// bound is a violation (not with late-apply, see `check_precise`).
    pub(super) outer_checked: bool,
}

/// A shared handle on the [`World`].
#[derive(Clone)]
pub(super) struct Shared(Arc<Mutex<World>>);

impl Shared {
    pub(super) fn new(nodes: usize, seed: u64, renew_deadline: Duration) -> Self {
        let now = Instant::now();
        Self(Arc::new(Mutex::new(World {
            now_settled: now,
            kernels: (0..nodes).map(|_| Kernel::default()).collect(),
            sent: Vec::new(),
            rng: Rng::new(seed ^ 0x6b65_726e_656c),
            fence_sent: vec![None; nodes],
            renew_deadline,
            base_delay: Duration::from_millis(20),
            deletion_latency: None,
            trace: Vec::new(),
            violations: Vec::new(),
            start: now,
            precise: false,
            fences: (0..nodes).map(|_| NodeFence::default()).collect(),
            fence_rng: Rng::new(seed ^ 0x6e66_7466),
            fence_ops: 0,
            outer_checked: true,
        })))
    }

    /// The world, brought up to now.
    pub(super) fn lock(&self) -> MutexGuard<'_, World> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.settle(Instant::now());
        w
    }
}

impl World {
    /// When the world began: the simulated machines' boot.
    pub(super) fn started(&self) -> Instant {
        self.start
    }

    /// Simulated seconds since the start, for the trace.
    pub(super) fn t(&self, at: Instant) -> String {
        format!("{:>8.3}", at.duration_since(self.start).as_secs_f64())
    }

    pub(super) fn log(&mut self, at: Instant, line: impl AsRef<str>) {
        let line = format!("{} {}", self.t(at), line.as_ref());
        self.trace.push(line);
    }

    pub(super) fn violation(&mut self, at: Instant, what: String) {
        let line = format!("at {}s: {what}", self.t(at).trim());
        if !self.violations.contains(&line) {
            self.log(at, format!("VIOLATION: {what}"));
            self.violations.push(line);
        }
    }

    pub(super) fn faults(&mut self, node: usize) -> &mut KernelFaults {
        &mut self.kernels[node].faults
    }

    /// A new event stream for a daemon instance's guard on `node`.
    pub(super) fn watch(&mut self, node: usize) -> mpsc::UnboundedReceiver<NetEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.kernels[node].watchers.push(tx);
        rx
    }

    fn notify(&mut self, node: usize, event: NetEvent) {
        self.kernels[node]
            .watchers
            .retain(|w| w.send(event).is_ok());
    }

    /// Queues `request`; returns its id and when it is applied, or the
    /// error the kernel answers at once.
    pub(super) fn send(
        &mut self,
        node: usize,
        request: Request,
        interface: &str,
    ) -> Result<(usize, Instant), VipError> {
        let now = self.now_settled;
        let k = &self.kernels[node];
        let vip = match request {
            Request::Add(v, _) | Request::Remove(v) => v,
        };
        let no_link = k.faults.no_link.is_some_and(|u| now < u);
        let failed = match request {
            _ if no_link => Some(Cause::NoInterface(interface.to_string())),
            Request::Add(v, _) => k
                .faults
                .add_fail
                .as_ref()
                .filter(|(u, vips)| now < *u && (vips.is_empty() || vips.contains(&v)))
                .map(|_| Cause::Errno(libc_eio())),
            Request::Remove(_) => k
                .faults
                .remove_fail
                .filter(|u| now < *u)
                .map(|_| Cause::Errno(libc_eio())),
        };
        if let Some(cause) = failed {
            let interface = interface.to_string();
            return Err(match request {
                Request::Add(..) => VipError::Add {
                    vip,
                    interface,
                    cause,
                },
                Request::Remove(_) => VipError::Remove {
                    vip,
                    interface,
                    cause,
                },
            });
        }
        let max = match k.faults.slow {
            Some((until, d)) if now < until => d,
            _ => self.base_delay,
        };
        let delay = Duration::from_micros(self.rng.below(max.as_micros() as u64 + 1));
        let k = &mut self.kernels[node];
        // RTNL serves one socket's requests in order.
        let apply_at = k.last_apply.map_or(now + delay, |l| l.max(now + delay));
        k.last_apply = Some(apply_at);
        let id = self.sent.len();
        self.kernels[node].pending.push_back(id);
        self.sent.push(Sent {
            node,
            request,
            sent: now,
            apply_at,
            result: None,
        });
        Ok((id, apply_at))
    }

    /// Whether `vip` is on `node`'s interface now.
    pub(super) fn present(&self, node: usize, vip: Vip) -> bool {
        self.kernels[node].addrs.contains_key(&vip)
    }

    /// Every (node, vip) up now.
    pub(super) fn up(&self) -> Vec<(usize, Vip)> {
        self.kernels
            .iter()
            .enumerate()
            .flat_map(|(n, k)| k.addrs.keys().map(move |v| (n, *v)))
            .collect()
    }

    /// Applies every request and deletion due by `now`, in time order.
    fn settle(&mut self, now: Instant) {
        loop {
            // Deletions before applications at the same instant: an address
            // is up on [since, deleted_at).
            let deletion = self
                .kernels
                .iter()
                .enumerate()
                .flat_map(|(n, k)| k.addrs.iter().map(move |(v, e)| (e.deleted_at, n, *v)))
                .filter(|(at, ..)| *at <= now)
                .min();
            let apply = self
                .kernels
                .iter()
                .filter_map(|k| k.pending.front())
                .map(|&id| (self.sent[id].apply_at, id))
                .filter(|(at, _)| *at <= now)
                .min();
            // A fence request before an address request at the same
            // instant: the daemon arms before it adds.
            if let Some((at, n)) = self.due_fence(now)
                && deletion.is_none_or(|(d, ..)| at < d)
                && apply.is_none_or(|(a, _)| at <= a)
            {
                self.apply_fence(n, at);
                continue;
            }
            match (deletion, apply) {
                (Some((d, n, v)), a) if a.is_none_or(|(at, _)| d <= at) => {
                    self.delete(n, v, d, "expired");
                }
                (_, Some((at, id))) => self.apply(id, at),
                (None, None) => break,
                // The guard above takes every (Some, _) where apply is None.
                (Some(_), None) => unreachable!("handled by the first arm"),
            }
        }
        self.now_settled = self.now_settled.max(now);
        self.check_fences(now);
    }

    fn delete(&mut self, node: usize, vip: Vip, at: Instant, how: &str) {
        if self.precise && self.present(node, vip) {
            self.check_precise(node, vip, at);
        }
        if let Some(e) = self.kernels[node].addrs.remove(&vip) {
            if !self.precise {
                self.check_fence(node, vip, at);
            }
            let up = at.duration_since(e.since).as_secs_f64();
            self.log(
                at,
                format!("kernel {node}: {vip} down ({how}, was up {up:.3}s)"),
            );
            self.notify(node, NetEvent::VipRemoved(vip));
        }
    }

    fn apply(&mut self, id: usize, at: Instant) {
        let node = self.sent[id].node;
        self.kernels[node].pending.pop_front();
        let waited = at.duration_since(self.sent[id].sent);
        if waited > Duration::from_millis(100) {
            let line = format!(
                "kernel {node}: {:?} applied {:.3}s after it was sent",
                self.sent[id].request,
                waited.as_secs_f64()
            );
            self.log(at, line);
        }
        let result = match self.sent[id].request {
            Request::Add(vip, lifetime) => {
                let expires = at + lifetime.as_duration();
                // The expiry worker runs at most FENCE_MARGIN late.
                let late = self.rng.below(FENCE_MARGIN.as_millis() as u64 + 1);
                let late = self.deletion_latency.unwrap_or(Duration::from_millis(late));
                let deleted_at = expires + late;
                let since = match self.kernels[node].addrs.get(&vip) {
                    Some(e) => e.since,
                    None => {
                        self.log(
                            at,
                            format!("kernel {node}: {vip} up (lifetime {}s)", lifetime.secs()),
                        );
                        if !self.precise {
                            self.check_overlap(node, vip, at);
                        }
                        at
                    }
                };
                self.kernels[node].addrs.insert(
                    vip,
                    Entry {
                        expires,
                        deleted_at,
                        since,
                    },
                );
                if self.precise {
                    self.check_serving(at);
                }
                Ok(Some(expires))
            }
            Request::Remove(vip) => {
                let was = self.kernels[node].addrs.contains_key(&vip);
                self.delete(node, vip, at, "removed");
                Ok(was.then_some(at))
            }
        };
        self.sent[id].result = Some(result);
    }

    /// The result of an applied request: `Some(expiry)` for an add, and for
    /// a removal `Some(_)` when the address was there.
    pub(super) fn result(&self, id: usize) -> Option<Result<Option<Instant>, Cause>> {
        self.sent[id].result.clone()
    }

    fn check_overlap(&mut self, node: usize, vip: Vip, at: Instant) {
        let others: Vec<usize> = (0..self.kernels.len())
            .filter(|&n| n != node && self.kernels[n].addrs.contains_key(&vip))
            .collect();
        for other in others {
            self.violation(
                at,
                format!(
                    "split brain: {vip} came up on node {node} while node {other} still has it"
                ),
            );
        }
    }

    /// The latest instant `node` may still have a VIP on its kernel.
    pub(super) fn bound(&self, node: usize) -> Option<Instant> {
        self.fence_sent[node].map(|s| s + self.renew_deadline + FENCE_MARGIN)
    }

    fn check_fence(&mut self, node: usize, vip: Vip, at: Instant) {
        if self.bound(node).is_none_or(|b| at > b) {
            let fence = self.bound(node).map(|b| self.t(b - FENCE_MARGIN));
            self.violation(
                at,
                format!(
                    "{vip} still on node {node}'s kernel past its fence ({}) plus {FENCE_MARGIN:?}",
                    fence.as_deref().unwrap_or("never held").trim()
                ),
            );
        }
    }

    fn check_fences(&mut self, now: Instant) {
        if self.precise {
            for (node, vip) in self.up() {
                self.check_precise(node, vip, now);
            }
            return;
        }
        let late: Vec<(usize, Vip)> = self
            .up()
            .into_iter()
            .filter(|&(n, _)| self.bound(n).is_none_or(|b| now > b))
            .collect();
        // The run stops at the first violation, so this reports once.
        for (node, vip) in late {
            self.check_fence(node, vip, now);
        }
    }

    /// The interface of `node` vanishes (until `until`): its addresses go.
    pub(super) fn lose_link(&mut self, node: usize, until: Instant) {
        let now = self.now_settled;
        self.kernels[node].faults.no_link = Some(until);
        self.kernels[node].link_was_down = true;
        let vips: Vec<Vip> = self.kernels[node].addrs.keys().copied().collect();
        for v in vips {
            self.delete(node, v, now, "interface gone");
        }
        self.notify(node, NetEvent::LinkDown);
    }

    /// Reports link up on nodes whose interface came back.
    pub(super) fn links_back(&mut self, now: Instant) {
        for n in 0..self.kernels.len() {
            let k = &self.kernels[n];
            if k.link_was_down && k.faults.no_link.is_none_or(|u| now >= u) {
                self.kernels[n].link_was_down = false;
                self.notify(n, NetEvent::LinkUp);
            }
        }
    }

    /// The expiry of `vip` on `node`, if up.
    pub(super) fn expiry(&self, node: usize, vip: Vip) -> Option<Instant> {
        self.kernels[node].addrs.get(&vip).map(|e| e.expires)
    }
}

/// EIO: what a failing driver answers.
fn libc_eio() -> i32 {
    5
}
