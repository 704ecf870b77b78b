//! The preferred holder: a holder configured with `preempt_delay` hands the
//! VIP over to a node of higher `priority` once it has seen that node able
//! to take over (healthy, undrained, reporting in the VirtualIP object)
//! for the whole delay, by the same planned handover as `ha-vip handover
//! --to` (VIPs removed, then the Lease released naming that node).
//!
//! Only the holder reads the object for this, and only with `preempt_delay`
//! set: without it (the default) nothing here runs, and the election is
//! exactly what it was. The delay counts from the holder's own reads, so a
//! node that flaps keeps restarting it.

use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Request;
use super::server::Pending;
use crate::cluster::VirtualIp;
use crate::cluster::object::CRD_HINT;
use crate::cluster::view::fetch;
use crate::config::Config;
use crate::kube::KubeClient;

/// What the preemption task needs to know of its node.
#[derive(Debug, Clone)]
struct Settings {
    node: String,
    object: String,
    priority: i64,
    delay: Duration,
}

/// The node the holder `me` (of `priority`) should hand over to, if any:
/// of all the others that can take over now, the one of highest priority
/// above ours (ties broken by name, so every read picks the same one).
pub fn preferred(obj: &VirtualIp, me: &str, priority: i64, now: SystemTime) -> Option<String> {
    obj.status
        .nodes
        .iter()
        .filter(|n| n.name != me && n.priority > priority && n.can_take_over(now))
        .max_by(|a, b| a.priority.cmp(&b.priority).then(b.name.cmp(&a.name)))
        .map(|n| n.name.clone())
}

/// Starts the preemption task of the daemon configured by `cfg`, if it has
/// a `preempt_delay` and a cluster to read; `leading` says whether we hold
/// the VIP, and handovers go to the main loop through `tx`.
pub(crate) fn spawn(
    cfg: &Config,
    leading: watch::Receiver<bool>,
    tx: mpsc::Sender<Pending>,
) -> Option<JoinHandle<()>> {
    let delay = cfg.preempt_delay?;
    if !cfg.k8s.enabled {
        tracing::warn!(
            "preempt_delay is set, but single-node mode has no other node to prefer; ignored"
        );
        return None;
    }
    let client = match KubeClient::from_config(cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no preemption by priority: cannot build the API client to read the VirtualIP object");
            return None;
        }
    };
    let s = Settings {
        node: cfg.node_name.clone(),
        object: cfg.lease.name.clone(),
        priority: cfg.priority,
        delay,
    };
    Some(tokio::spawn(run(client, s, leading, tx)))
}

async fn run(
    client: KubeClient,
    s: Settings,
    mut leading: watch::Receiver<bool>,
    tx: mpsc::Sender<Pending>,
) {
    // Often enough to keep the delay within a quarter of itself, but at
    // most every 250 ms and at least every 2 s: one GET each, holder only.
    let poll = (s.delay / 4).clamp(Duration::from_millis(250), Duration::from_secs(2));
    let mut seen: Option<(String, Instant)> = None;
    let mut warned: Option<String> = None;
    loop {
        if !*leading.borrow_and_update() {
            seen = None;
            if leading.changed().await.is_err() {
                return;
            }
            continue;
        }
        match fetch(&client, &s.object).await {
            Ok(Some(obj)) => {
                warned = None;
                match preferred(&obj, &s.node, s.priority, SystemTime::now()) {
                    None => seen = None,
                    Some(to) => {
                        let since = match &seen {
                            Some((n, t)) if *n == to => *t,
                            _ => {
                                tracing::info!(
                                    to = %to,
                                    "{to} has a higher priority and can take the VIP; handing over to it if that lasts {:?}",
                                    s.delay
                                );
                                let now = Instant::now();
                                seen = Some((to.clone(), now));
                                now
                            }
                        };
                        if since.elapsed() >= s.delay {
                            seen = None;
                            let (pending, reply) = Pending::new(Request::Handover {
                                to: Some(to.clone()),
                            });
                            if tx.send(pending).await.is_err() {
                                return;
                            }
                            if let Ok(r) = reply.await
                                && !r.ok
                            {
                                tracing::warn!("preemption by {to} did not happen: {}", r.message);
                            }
                        }
                    }
                }
            }
            Ok(None) => {
                seen = None;
                let text = format!(
                    "the VirtualIP object {} does not exist, so no node's priority is known; install its CRD: {CRD_HINT}",
                    s.object
                );
                if warned.as_deref() != Some(text.as_str()) {
                    tracing::warn!("no preemption by priority: {text}");
                    warned = Some(text);
                }
            }
            Err(e) => {
                // A read that fails restarts the count: the delay is of
                // continuous evidence only.
                seen = None;
                let text = e.to_string();
                if warned.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot read the VirtualIP object for preemption by priority; retrying (the failover is not affected)");
                    warned = Some(text);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            r = leading.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeEntry;
    use crate::cluster::object::format_time;

    fn node(name: &str, priority: i64, healthy: bool, drained: bool) -> NodeEntry {
        NodeEntry {
            name: name.into(),
            priority,
            healthy,
            drained,
            heartbeat_time: Some(format_time(SystemTime::now())),
            stale_after_seconds: 60,
            ..NodeEntry::default()
        }
    }

    #[test]
    fn the_highest_priority_node_that_can_take_over_is_preferred() {
        let mut obj = VirtualIp::default();
        let now = SystemTime::now();
        obj.status.nodes = vec![node("a", 5, true, false), node("b", 5, true, false)];
        assert_eq!(
            preferred(&obj, "a", 5, now),
            None,
            "equal priority: no preemption"
        );
        obj.status.nodes = vec![
            node("a", 0, true, false),
            node("b", 10, true, false),
            node("c", 20, false, false),
            node("d", 30, true, true),
            node("e", 10, true, false),
        ];
        // c unhealthy, d drained: b and e tie at 10, b by name.
        assert_eq!(preferred(&obj, "a", 0, now), Some("b".into()));
        assert_eq!(
            preferred(&obj, "b", 10, now),
            None,
            "nobody above b can take it"
        );
    }
}
