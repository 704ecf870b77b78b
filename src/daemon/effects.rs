//! Carrying out the machine's actions, and telling the world about them.

use std::time::SystemTime;

use tokio::time::Instant;

use super::setup::{Io, dropped};
use super::{Daemon, REMOVAL_RETRY};
use crate::announce::Announcer;
use crate::config::{Config, Vip, defaults};
use crate::machine::{Action, Event, Reason, Role};
use crate::observe;
use crate::systemd::Notifier;
use crate::vip;

/// VIPs as `10.0.0.100/32, fd00::100/128`.
pub fn list(vips: &[Vip]) -> String {
    vips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl<I: Io> Daemon<I> {
    /// Feeds one event to the machine and carries out its actions, and those
    /// of any event an action gives rise to.
    pub(super) async fn step(&mut self, event: Event) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            let actions = self.machine.step(event, Instant::now());
            for action in actions {
                if let Some(follow) = self.apply(action).await {
                    next = Some(follow);
                }
            }
        }
    }

    async fn apply(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::RemoveVips => {
                self.remove_vips().await;
                None
            }
            Action::SetVips { .. } => self.set_vips().await,
            // Only when the VIPs really went on: with under a second left
            // `set_vips` adds nothing, and neighbours must not be pointed at
            // a node that does not answer for the VIP.
            Action::Announce => {
                self.announce();
                None
            }
            Action::Campaign(false) if self.release_blocked.is_some() => {
                // Our VIPs may still be on the interface: releasing now would
                // let a standby add them at once. Stop competing only once
                // they are gone (see `retry_removal`; `remove_vips` said so).
                tracing::debug!(
                    "not releasing the lease while our VIPs may still be on the interface"
                );
                None
            }
            Action::Campaign(on) => {
                self.parts.campaign(on);
                None
            }
            Action::Transition { from, to, reason } => {
                self.transition(from, to, reason);
                None
            }
        }
    }

    /// Starts the announcements once per time the VIPs are up, and only
    /// while they are: neighbours must never be pointed at a node that does
    /// not answer for the VIP.
    fn announce(&mut self) {
        if self.vips_up && !self.announcing {
            self.announcing = true;
            for &v in &self.cfg.vips {
                self.parts.announcer.start(v);
            }
        }
    }

    /// Removes every VIP. If that fails, blocks the lease release until a
    /// retry succeeds or the kernel fence has certainly removed them.
    async fn remove_vips(&mut self) {
        let removed = self.remove_ours().await;
        self.vips_up = false;
        self.announcing = false;
        self.conflicts.holding(&[]);
        for v in &self.cfg.vips {
            self.status.set_vip_present(v, false);
            self.metrics.set_vip_present(v, false);
        }
        if removed {
            self.vip_until = None;
            self.clear_fence().await;
        } else if self.release_blocked.is_none() && self.fence_out().await {
            // Fenced out: they may stay on until their lifetime ends, but
            // serve nobody; the lease may go now.
        } else {
            if self.release_blocked.is_none() {
                tracing::warn!(
                    "not releasing the lease while our VIPs may still be on the interface; at the latest when the kernel has removed them"
                );
            }
            self.release_blocked = Some(self.vips_gone_by().unwrap_or_else(Instant::now));
            self.removal_retry = Some(Instant::now() + REMOVAL_RETRY);
        }
    }

    /// Removes every configured VIP and every one a reload dropped but
    /// could not remove ([`Daemon::retired`]); true when none of them is
    /// left on the interface.
    pub(super) async fn remove_ours(&mut self) -> bool {
        let mut removed = self.parts.remove_all(&self.cfg).await;
        if !self.retired.is_empty() {
            match vip::remove_all(self.parts.table.as_ref(), &self.retired).await {
                Ok(_) => self.retired.clear(),
                Err(e) => {
                    tracing::error!(error = %e, "failed to remove VIPs dropped from the configuration; retrying, and the kernel deletes them when their lifetime ends");
                    removed = false;
                }
            }
        }
        removed
    }

    /// When our VIPs are certainly gone, from every add request sent (see
    /// [`vip::Tracked`], and `vip_until`, which covers every add's fence)
    /// plus the kernel's deletion latency; `None` while a request is
    /// unanswered (its lifetime has not started yet).
    fn vips_gone_by(&self) -> Option<Instant> {
        match self.parts.table.up_until() {
            vip::UpUntil::Gone => Some(Instant::now()),
            vip::UpUntil::Until(t) => {
                Some(t.max(self.vip_until.unwrap_or(t)) + defaults::FENCE_MARGIN)
            }
            vip::UpUntil::InFlight => None,
        }
    }

    /// Called by the main loop while a release is blocked: tries the removal
    /// again, and lets the release through once the VIPs are gone.
    pub(super) async fn retry_removal(&mut self) {
        // Leading again (the held-back release kept the Lease ours): the
        // VIPs are wanted, and removing them would leave the holder
        // without them. A later loss removes them, and blocks, anew.
        if self.release_blocked.is_none() || self.machine.vips_set() {
            self.release_blocked = None;
            self.removal_retry = None;
            return;
        }
        let removed = self.remove_ours().await;
        if removed {
            self.vip_until = None;
            self.clear_fence().await;
        }
        let gone_by = self.vips_gone_by();
        if removed || gone_by.is_some_and(|t| Instant::now() >= t) {
            if !removed {
                tracing::info!("the kernel fence has removed our VIPs by now; releasing the lease");
            }
            self.release_blocked = None;
            self.removal_retry = None;
            if !self.machine.campaigning() {
                self.parts.campaign(false);
            }
        } else {
            // The next try, never later than the instant the fence has
            // certainly removed them.
            let next = Instant::now() + REMOVAL_RETRY;
            self.removal_retry = Some(gone_by.map_or(next, |t| next.min(t)));
        }
    }

    /// Arms the precise fence for the fence deadline, then adds or
    /// refreshes every VIP so that the kernel deletes it by the deadline
    /// (`fence.mode: lifetime`) or by the outer bound one second later
    /// (`precise`); each lifetime is computed right before its netlink
    /// call and checked after it ([`vip::set_until`]).
    async fn set_vips(&mut self) -> Option<Event> {
        let until = self.machine.fence()?;
        // Another host answering for a VIP we are about to add: not here
        // (see `conflict`); the machine's VIP-failure back-off retries.
        if !self.vips_up && !self.conflicts.before_add(&self.cfg.vips).await {
            return Some(Event::VipFailed);
        }
        // No VIP goes on without a deadline behind it.
        if let Err(e) = self.arm_fence(until).await {
            tracing::error!(
                error = %e,
                interface = %self.cfg.interface,
                "cannot arm the precise fence, so the VIPs are not added or refreshed here; releasing the lease so a standby takes over"
            );
            return Some(Event::VipFailed);
        }
        let outer = until + self.cfg.fence.outer_slack();
        // Before any request: an add that fails half-way (or whose answer
        // we never see) may still have put a VIP on with this bound.
        self.vip_until = Some(self.vip_until.map_or(outer, |u| u.max(outer)));
        let mut up = true;
        for &v in &self.cfg.vips {
            match vip::set_until(self.parts.table.as_ref(), v, outer).await {
                Ok(Some(_)) => {}
                // Under a second left: the next renewal adds it.
                Ok(None) => up = false,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        interface = %self.cfg.interface,
                        "cannot serve the VIP here; releasing the lease so a standby takes over"
                    );
                    return Some(Event::VipFailed);
                }
            }
        }
        for &v in &self.cfg.vips {
            self.parts.announcer.fence(v, until);
        }
        if !up {
            return None;
        }
        self.vips_up = true;
        self.conflicts.holding(&self.cfg.vips);
        // The VIPs may come up only at a renewal after the acquire (the
        // acquire left under a second): announce whenever they come up.
        self.announce();
        if let Err(e) = self.parts.guard.hold(&self.cfg.vips, outer).await {
            tracing::error!(error = %e, "VIP guard stopped");
        }
        for v in &self.cfg.vips {
            self.status.set_vip_present(v, true);
            self.metrics.set_vip_present(v, true);
        }
        None
    }

    fn transition(&mut self, from: Role, to: Role, reason: Reason) {
        let now = SystemTime::now();
        self.parts.holding.send_replace(to == Role::Leader);
        self.leader_since = (to == Role::Leader).then_some(now);
        let holder = if to == Role::Leader {
            Some(self.cfg.node_name.clone())
        } else {
            self.holder.clone()
        };
        if to == Role::Leader {
            self.holder = holder.clone();
        }
        tracing::info!(
            vip = %list(&self.cfg.vips),
            interface = %self.cfg.interface,
            from = %from,
            to = %to,
            reason = %reason,
            holder = holder.as_deref().unwrap_or(""),
            "transition {from} -> {to}: {reason}"
        );
        self.metrics.record_transition(from, to, reason);
        self.status.transition(to, reason, now);
        self.cluster.record(from, to, reason, now);
        self.controls.set_leading(to == Role::Leader);
    }

    /// Writes the status file and sends STATUS= when something changed, and
    /// brings the announcement counters up to date.
    pub(super) fn publish(&mut self) {
        let sent = self.parts.announcer.stats();
        let seen = std::mem::replace(&mut self.announced, sent);
        self.metrics
            .add_announcements(observe::AnnounceFamily::Ipv4Garp, sent.garp - seen.garp);
        self.metrics
            .add_announcements(observe::AnnounceFamily::Ipv6Na, sent.na - seen.na);
        self.status.holder = self.holder.clone();
        self.status.healthy = self.machine.healthy();
        self.status.drained = self.machine.drained();
        // The credential reloads itself when its files change (kube::Credentials).
        let cert = self.creds.as_ref().and_then(|c| c.client_certificate());
        self.metrics
            .set_client_cert_expiry(cert.as_ref().map(|c| c.not_after));
        self.status.client_certificate = cert.map(|c| observe::ClientCertificate {
            subject: crate::kube::describe_subject(&c),
            not_after: observe::Timestamp::new(c.not_after),
        });
        if let Err(e) = self.status_writer.write(&self.status) {
            tracing::warn!(error = %e, "failed to write the status file");
        }
        self.cluster.publish(&self.status);
        let line = self.status_line();
        if line != self.last_sd_status {
            let _ = self.notifier.status(&line);
            self.last_sd_status = line;
        }
    }

    fn status_line(&self) -> String {
        match self.machine.role() {
            Role::Leader => {
                // "2026-11-22T12:03:04Z" -> "12:03:04"
                let since = self
                    .leader_since
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .and_then(|s| s.get(11..19).map(str::to_string))
                    .unwrap_or_default();
                format!("leader for {} since {since}", list(&self.cfg.vips))
            }
            Role::Stopping => "stopping: VIPs removed, releasing the lease".to_string(),
            Role::Starting => "starting".to_string(),
            // Before health: a node without carrier does not campaign,
            // healthy or not, and the operator's fix is on the link.
            Role::Follower if !self.machine.carrier() => {
                let mut line = format!("no carrier on {}: not campaigning", self.cfg.interface);
                if !self.machine.healthy() {
                    line.push_str(&format!("; unhealthy: {}", self.last_probe));
                }
                line
            }
            Role::Follower if !self.machine.healthy() => format!("unhealthy: {}", self.last_probe),
            Role::Follower => match &self.holder {
                Some(h) => format!("standby; leader is {h}"),
                None => "standby; no leader".to_string(),
            },
        }
    }

    /// Applies a valid new configuration: VIPs, the health probe and the
    /// Kubernetes credential at once, without dropping a VIP that stays;
    /// other changes need a restart and keep their running values.
    pub(super) async fn apply_config(&mut self, new: Config) {
        let old = &self.cfg;
        let restart: Vec<&str> = [
            ("node_name", old.node_name != new.node_name),
            ("interface", old.interface != new.interface),
            ("lease", old.lease != new.lease),
            ("announce", old.announce != new.announce),
            ("metrics", old.metrics_listen != new.metrics_listen),
            ("log", old.log_level != new.log_level),
            ("run_dir", old.run_dir != new.run_dir),
            ("fence", old.fence != new.fence),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "changes to {} need a restart (systemctl restart ha-vip); still running with the old values",
                restart.join(", ")
            );
        }
        let k8s_changed = old.k8s != new.k8s;
        if k8s_changed {
            self.reload_k8s(&new);
        } else if let Some(creds) = &self.creds {
            // Same settings: still re-read the files (a renewed certificate);
            // the running elector and probe pick the new reading up.
            if let Err(e) = creds.reload() {
                tracing::error!(error = %e, "cannot reload the credential from disk; keeping the running one");
            }
        }
        if k8s_changed || self.cfg.health != new.health {
            self.reload_health(&new);
        }
        self.reload_vips(new).await;
    }

    /// A new credential (rotated certificate or token source, CA, server):
    /// a new elector for the same Lease replaces the old one without
    /// releasing it, so a held lease and its VIPs carry on.
    fn reload_k8s(&mut self, new: &Config) {
        let mut cfg = self.cfg.clone();
        cfg.k8s = new.k8s.clone();
        match super::setup::spawn_control(&cfg, &self.metrics, self.parts.campaigning()) {
            Ok(control) => {
                self.creds = control.creds.clone();
                self.controls.handover = control.handover.clone();
                // The status writer follows the new credential too.
                self.cluster = crate::cluster::spawn(&cfg, &self.metrics);
                self.conflicts.set_notices(self.cluster.notices());
                self.lease_events = self.parts.replace_control(control);
                self.cfg.k8s = cfg.k8s;
                tracing::info!("reloaded the Kubernetes API settings");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot use the new k8s settings; keeping the running ones")
            }
        }
    }

    /// New probe settings; the stable health state carries over.
    fn reload_health(&mut self, new: &Config) {
        let mut cfg = self.cfg.clone();
        cfg.health = new.health.clone();
        match super::setup::spawn_health(
            &cfg,
            self.creds.as_ref(),
            self.machine.healthy(),
            self.parts.holding.subscribe(),
        ) {
            Ok((task, reports)) => {
                self.parts.health.abort();
                self.parts.health = task;
                self.health_reports = reports;
                self.cfg.health = cfg.health;
                tracing::info!("reloaded the health probe settings");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot use the new health settings; keeping the running ones")
            }
        }
    }

    async fn reload_vips(&mut self, new: Config) {
        let old_vips = self.cfg.vips.clone();
        let gone = dropped(&old_vips, &new.vips);
        let added = dropped(&new.vips, &old_vips);
        if gone.is_empty() && added.is_empty() {
            tracing::info!("configuration reloaded; nothing to apply");
            return;
        }
        // Until their removal below succeeds, the dropped VIPs stay ours:
        // fenced by the re-arm in `set_vips`, removed with ours at a loss,
        // and the release waits for them.
        self.retired.retain(|v| !new.vips.contains(v));
        for &v in &gone {
            if !self.retired.contains(&v) {
                self.retired.push(v);
            }
        }
        self.cfg.vips = new.vips;
        self.parts.watched.set(&self.cfg.vips);
        if self.vips_up {
            // The new list first (guard included), so the guard no longer
            // puts back a VIP we are about to remove.
            if let Some(Event::VipFailed) = self.set_vips().await {
                self.step(Event::VipFailed).await;
            }
            if self.vips_up {
                for &v in &added {
                    self.parts.announcer.start(v);
                }
            }
        }
        for &v in &gone {
            self.parts.announcer.stop(v);
            self.metrics.set_vip_present(&v, false);
        }
        match vip::remove_all(self.parts.table.as_ref(), &gone).await {
            Ok(_) => self.retired.retain(|v| !gone.contains(v)),
            // Still in `retired`: removed again with ours at the latest.
            Err(e) => tracing::error!(
                error = %e,
                "failed to remove VIPs dropped from the configuration; they stay fenced and are removed again when this node stops holding (ip addr show to inspect)"
            ),
        }
        self.status.vips = self
            .cfg
            .vips
            .iter()
            .map(|v| observe::VipStatus {
                vip: v.to_string(),
                present: self.vips_up,
            })
            .collect();
        tracing::info!(added = %list(&added), removed = %list(&gone), "configuration reloaded");
    }
}
