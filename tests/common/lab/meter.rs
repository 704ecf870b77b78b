//! Two meters that trust nothing ha-vip says about itself.
//!
//! * [`ClientMeter`]: from the client namespace, a TCP connect to VIP:6443
//!   every 20 ms; the outage is the longest run of failed connects.
//! * [`HolderMeter`]: every 10 ms, each node's addresses read over netlink
//!   in that node's namespace; the overlap is the total time two or more
//!   nodes had the VIP at once.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use rtnetlink::sys::AsyncSocket;

use super::netns;

/// One connect attempt: when, and whether it succeeded.
pub type Probe = (Instant, bool);

/// Connects to the VIP from the client namespace until stopped.
pub struct ClientMeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Probe>>>,
}

impl ClientMeter {
    /// Starts probing `vip:port` from namespace `ns`.
    pub fn start(ns: &str, vip: IpAddr, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let target = SocketAddr::new(vip, port);
        let thread = netns::spawn_in(ns, move || {
            let mut probes = Vec::new();
            let period = Duration::from_millis(20);
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let ok = TcpStream::connect_timeout(&target, Duration::from_millis(15)).is_ok();
                probes.push((at, ok));
                next += period;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                } else {
                    next = Instant::now();
                }
            }
            probes
        });
        ClientMeter {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns every probe.
    pub fn finish(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("client meter"))
            .unwrap_or_default()
    }
}

impl Drop for ClientMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Longest client-visible outage in `probes` after `from`: from the first
/// failed probe of a run to the next successful one (or the last probe).
pub fn longest_outage(probes: &[Probe], from: Instant) -> Duration {
    let mut worst = Duration::ZERO;
    let mut start: Option<Instant> = None;
    for &(at, ok) in probes.iter().filter(|(at, _)| *at >= from) {
        match (ok, start) {
            (false, None) => start = Some(at),
            (true, Some(s)) => {
                worst = worst.max(at - s);
                start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&(last, _))) = (start, probes.last()) {
        worst = worst.max(last - s);
    }
    worst
}

/// Samples which nodes hold the VIP until stopped.
pub struct HolderMeter {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<(Instant, bool)>>>,
}

impl HolderMeter {
    /// Starts sampling `vip` on every namespace of `nodes`.
    pub fn start(nodes: &[String], vip: IpAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = nodes
            .iter()
            .map(|ns| {
                let flag = stop.clone();
                netns::spawn_in(ns, move || sample(vip, &flag))
            })
            .collect();
        HolderMeter { stop, threads }
    }

    /// Stops and returns, per node, its samples.
    pub fn finish(mut self) -> Vec<Vec<(Instant, bool)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("holder meter"))
            .collect()
    }
}

impl Drop for HolderMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Polls every 10 ms and also listens to address events, so a change is
/// timed to within scheduling jitter rather than the poll period.
fn sample(vip: IpAddr, stop: &AtomicBool) -> Vec<(Instant, bool)> {
    use futures::StreamExt;
    use netlink_packet_route::RouteNetlinkMessage;
    use rtnetlink::packet_core::NetlinkPayload;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut conn, handle, mut events) = rtnetlink::new_connection().expect("netlink socket");
        let groups = rtnetlink::constants::RTMGRP_IPV4_IFADDR | rtnetlink::constants::RTMGRP_IPV6_IFADDR;
        conn.socket_mut()
            .socket_mut()
            .bind(&rtnetlink::sys::SocketAddr::new(0, groups))
            .expect("bind netlink groups");
        tokio::spawn(conn);
        let has_vip = |attrs: &[AddressAttribute]| {
            attrs.iter().any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == vip))
        };
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                _ = tick.tick() => {
                    let at = Instant::now();
                    let msgs: Vec<_> = handle.address().get().execute().try_collect().await.unwrap_or_default();
                    out.push((at, msgs.iter().any(|m| has_vip(&m.attributes))));
                }
                Some((msg, _)) = events.next() => {
                    let at = Instant::now();
                    match msg.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) if has_vip(&m.attributes) => out.push((at, true)),
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) if has_vip(&m.attributes) => out.push((at, false)),
                        _ => {}
                    }
                }
            }
        }
        out
    })
}

/// Which node held the VIP at each sample of node 0's timeline, and the
/// total time two or more held it at once.
pub fn overlap(samples: &[Vec<(Instant, bool)>]) -> Duration {
    // Merge all samples into one timeline of (time, node, present) and
    // integrate the time during which two or more nodes were present.
    let mut events: Vec<(Instant, usize, bool)> = samples
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().map(move |&(t, p)| (t, i, p)))
        .collect();
    events.sort_by_key(|e| e.0);
    let mut state = vec![false; samples.len()];
    let mut total = Duration::ZERO;
    let mut last: Option<Instant> = None;
    for (t, i, p) in events {
        if let Some(l) = last
            && state.iter().filter(|s| **s).count() >= 2
        {
            total += t - l;
        }
        state[i] = p;
        last = Some(t);
    }
    total
}

/// Nodes that had the VIP in their last sample.
pub fn holders_at_end(samples: &[Vec<(Instant, bool)>]) -> Vec<usize> {
    samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.last().is_some_and(|(_, p)| *p))
        .map(|(i, _)| i)
        .collect()
}
