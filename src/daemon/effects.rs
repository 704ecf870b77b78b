//! Carrying out the machine's actions, and telling the world about them.

use std::time::SystemTime;

use tokio::time::Instant;

use super::Daemon;
use super::setup::{dropped, set_all};
use crate::announce::Announcer;
use crate::config::{Config, Vip};
use crate::machine::{Action, Event, Reason, Role};
use crate::observe;
use crate::systemd::Notifier;
use crate::vip::{self, AddressTable, Lifetime};

/// VIPs as `10.0.0.100/32, fd00::100/128`.
pub fn list(vips: &[Vip]) -> String {
    vips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Daemon {
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
                self.parts.remove_all(&self.cfg).await;
                for v in &self.cfg.vips {
                    self.status.set_vip_present(v, false);
                    self.metrics.set_vip_present(v, false);
                }
                None
            }
            Action::SetVips { .. } => self.set_vips().await,
            Action::Announce => {
                for &v in &self.cfg.vips {
                    self.parts.announcer.start(v);
                }
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

    /// Adds or refreshes every VIP with the lifetime the fence allows *now*
    /// (not when the machine decided: the netlink call comes later).
    async fn set_vips(&mut self) -> Option<Event> {
        let before = Instant::now();
        let lifetime = self.machine.lifetime(before).and_then(Lifetime::floor)?;
        if let Err(e) = set_all(&self.parts.table, &self.cfg.vips, lifetime).await {
            tracing::error!(
                error = %e,
                interface = %self.cfg.interface,
                "cannot serve the VIP here; releasing the lease so a standby takes over"
            );
            return Some(Event::VipFailed);
        }
        if let Err(e) = self
            .parts
            .guard
            .hold(&self.cfg.vips, before + lifetime.as_duration())
            .await
        {
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
        if let Err(e) = self.status_writer.write(&self.status) {
            tracing::warn!(error = %e, "failed to write the status file");
        }
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
            Role::Follower if !self.machine.healthy() => format!("unhealthy: {}", self.last_probe),
            Role::Follower => match &self.holder {
                Some(h) => format!("standby; leader is {h}"),
                None => "standby; no leader".to_string(),
            },
        }
    }

    /// Applies a valid new configuration: VIP changes at once, without
    /// dropping a VIP that stays; other changes need a restart.
    pub(super) async fn apply_config(&mut self, new: Config) {
        let old_vips = self.cfg.vips.clone();
        let gone = dropped(&old_vips, &new.vips);
        let added = dropped(&new.vips, &old_vips);
        let mut rest = new.clone();
        rest.vips = old_vips.clone();
        if rest != self.cfg {
            tracing::warn!(
                "configuration changes other than vips need a restart (systemctl restart ha-vip); still running with the old ones"
            );
        }
        if gone.is_empty() && added.is_empty() {
            tracing::info!("configuration reloaded; nothing to apply");
            return;
        }
        self.cfg.vips = new.vips;
        for &v in &gone {
            self.parts.announcer.stop(v);
            if let Err(e) = self.parts.table.remove(v).await {
                tracing::error!(error = %e, "failed to remove a VIP dropped from the configuration");
            }
        }
        for v in &gone {
            self.metrics.set_vip_present(v, false);
        }
        let present = self.machine.vips_set();
        self.status.vips = self
            .cfg
            .vips
            .iter()
            .map(|v| observe::VipStatus {
                vip: v.to_string(),
                present,
            })
            .collect();
        if self.machine.vips_set() {
            if let Some(Event::VipFailed) = self.set_vips().await {
                self.step(Event::VipFailed).await;
            }
            for &v in &added {
                self.parts.announcer.start(v);
            }
        } else if let Err(e) = vip::remove_all(self.parts.table.as_ref(), &gone).await {
            tracing::error!(error = %e, "failed to remove dropped VIPs");
        }
        tracing::info!(added = %list(&added), removed = %list(&gone), "configuration reloaded");
    }
}
