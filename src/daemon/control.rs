//! The operator's controls in the main loop: `ha-vip drain`, `undrain` and
//! `handover` arrive as [`Pending`] requests from the control socket
//! ([`crate::control`]), already checked against the cluster, and are
//! carried out through the machine, the same way as a health loss or a
//! shutdown: the VIPs go first, then the Lease is released.

use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Daemon;
use super::setup::Io;
use crate::config::Config;
use crate::control::server::{Pending, Server};
use crate::control::state::DrainState;
use crate::control::{Reply, Request, checks::Checks};
use crate::lease::{HANDOVER_HOLD, HandoverSlot, printable};
use crate::machine::{Event, Reason, Role};

/// The daemon's end of the control socket.
pub(crate) struct Controls {
    rx: Option<mpsc::Receiver<Pending>>,
    task: Option<JoinHandle<()>>,
    /// Preemption by priority (only with `preempt_delay`).
    preempt: Option<JoinHandle<()>>,
    /// Whether we hold the VIP, for the preemption task.
    leading: watch::Sender<bool>,
    /// Where a drain is kept across restarts.
    pub(crate) state: DrainState,
    /// Where the elector finds the node its next release hands over to.
    pub(crate) handover: HandoverSlot,
}

impl Controls {
    /// Not listening yet (see [`Controls::listen`]).
    pub(crate) fn new(cfg: &Config, handover: HandoverSlot) -> Self {
        Self {
            rx: None,
            task: None,
            preempt: None,
            leading: watch::channel(false).0,
            state: DrainState::new(&cfg.state_dir),
            handover,
        }
    }

    /// Binds the control socket of `cfg` and serves it. The caller holds
    /// the single-instance lock (`ha-vip run` takes it first). A socket
    /// that cannot be bound costs the controls, never the failover: an
    /// ERROR says so.
    pub(crate) fn listen(&mut self, cfg: &Config) {
        let (tx, rx) = mpsc::channel(4);
        self.preempt = crate::control::preempt::spawn(cfg, self.leading.subscribe(), tx.clone());
        match Server::bind(&cfg.control_socket()) {
            Ok(server) => {
                tracing::debug!(socket = %server.path().display(), "serving the control socket");
                self.task = Some(server.spawn(Checks::new(cfg), tx));
            }
            Err(e) => tracing::error!(error = %e, "operator controls unavailable"),
        }
        self.rx = Some(rx);
    }

    /// Tells the preemption task whether we hold the VIP now.
    pub(crate) fn set_leading(&self, leading: bool) {
        self.leading
            .send_if_modified(|l| std::mem::replace(l, leading) != leading);
    }

    /// The next checked request; never, while not listening.
    pub(crate) async fn next(&mut self) -> Option<Pending> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Controls {
    fn drop(&mut self) {
        for t in [&self.task, &self.preempt].into_iter().flatten() {
            t.abort();
        }
    }
}

/// Whether `cfg`'s node was left drained (by `ha-vip drain`) before this
/// start; an unreadable state is reported and counts as not drained.
pub(crate) fn drained_at_start(cfg: &Config) -> bool {
    match DrainState::new(&cfg.state_dir).drained() {
        Ok(true) => {
            tracing::warn!(
                state_dir = %cfg.state_dir.display(),
                "this node is drained (ha-vip drain): not taking the VIP until `ha-vip undrain`"
            );
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::error!(error = %e, "cannot tell whether this node was drained; starting undrained");
            false
        }
    }
}

impl<I: Io> Daemon<I> {
    /// Carries out one operator request and answers it.
    pub(super) async fn on_control(&mut self, p: Pending) {
        let reply = match p.request.clone() {
            Request::Drain { .. } => self.drain().await,
            Request::Undrain => self.undrain().await,
            Request::Handover { to } => self.handover(to).await,
        };
        tracing::info!(request = ?p.request, ok = reply.ok, "{}", reply.message);
        p.answer(reply);
    }

    async fn drain(&mut self) -> Reply {
        let node = self.cfg.node_name.clone();
        if self.machine.drained() {
            return Reply::done(format!("{node} is drained already"));
        }
        // Recorded before anything is done: a restart from here on finds
        // the node drained, which is what the operator asked for.
        if let Err(e) = self.controls.state.set() {
            return Reply::refused(e.to_string());
        }
        let held = self.machine.role() == Role::Leader;
        self.step(Event::Drain).await;
        let role = self.machine.role();
        self.cluster
            .record(role, role, Reason::Drained, SystemTime::now());
        Reply::done(if held {
            format!(
                "{node} drained: removed {} and released the lease for a standby; it stays out, also across restarts, until `ha-vip undrain`",
                super::list(&self.cfg.vips)
            )
        } else {
            format!(
                "{node} drained: it does not take {}, also across restarts, until `ha-vip undrain`",
                super::list(&self.cfg.vips)
            )
        })
    }

    async fn undrain(&mut self) -> Reply {
        let node = self.cfg.node_name.clone();
        if !self.machine.drained() {
            return Reply::done(format!("{node} is not drained"));
        }
        if let Err(e) = self.controls.state.clear() {
            return Reply::refused(e.to_string());
        }
        self.step(Event::Undrain).await;
        let role = self.machine.role();
        self.cluster
            .record(role, role, Reason::Undrained, SystemTime::now());
        let when = if self.machine.healthy() {
            "now"
        } else {
            "once its local API server is healthy"
        };
        Reply::done(format!("{node} undrained: it competes for the VIP {when}"))
    }

    async fn handover(&mut self, to: Option<String>) -> Reply {
        let node = self.cfg.node_name.clone();
        if self.machine.role() != Role::Leader {
            let holder = self.holder.as_deref().map_or("nobody".into(), printable);
            return Reply::refused(format!(
                "{node} does not hold the VIP (the lease holder is {holder}); run ha-vip handover on the holder"
            ));
        }
        // Taken by the elector in the write that releases the Lease.
        *self
            .controls
            .handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to.clone();
        self.step(Event::Handover {
            hold: HANDOVER_HOLD,
        })
        .await;
        let hold = HANDOVER_HOLD.as_secs();
        Reply::done(match to {
            Some(to) => format!(
                "{node} removed {} and released the lease to {to}; the other nodes keep out for {hold} s so that {to} takes it",
                super::list(&self.cfg.vips)
            ),
            None => format!(
                "{node} removed {} and released the lease; a healthy standby takes it, and {node} keeps out for {hold} s",
                super::list(&self.cfg.vips)
            ),
        })
    }
}
