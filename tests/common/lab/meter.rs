//! Three meters that trust nothing ha-vip says about itself.
//!
//! * [`ClientMeter`]: from the client namespace, a TCP connect to VIP:6443
//!   every 20 ms; the outage is the longest run of failed connects.
//! * [`HolderMeter`]: every 10 ms, each node's addresses read over netlink
//!   in that node's namespace; the overlap is the total time two or more
//!   nodes had the VIP at once.
//! * [`AnsweringMeter`]: from the client namespace, an ARP request for the
//!   VIP every 10 ms; the overlap is the total time of the windows between
//!   two requests in which two or more MACs answered. With a fence in the
//!   data path an address may outlive its service (and, misconfigured, a
//!   service its address): this one measures what the network sees.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use rtnetlink::sys::AsyncSocket;

use super::Lab;
use super::arp::{self, ArpSocket, Frame, Mac};
use super::cluster::Outcome;
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

/// Period of the answering meter's requests, and so its resolution.
pub const ASK_EVERY: Duration = Duration::from_millis(10);

/// The answering meter's Ethernet address: locally administered, used by
/// nothing else in the lab. Its own address (not the client's) keeps the
/// meter from teaching the client's kernel the new holder's MAC, which
/// would shorten the client outage it measures beside it.
pub const METER_MAC: Mac = [0x02, 0x68, 0x76, 0x6d, 0x74, 0x72];

/// What the answering meter heard, in the order the kernel queued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Our request went out (the kernel's copy of it) at this time.
    Asked(Instant),
    /// An answer from this MAC arrived at this time.
    Answered(Instant, Mac),
}

/// Asks who has the VIP every [`ASK_EVERY`] from the client namespace, on
/// a raw socket, and records every answer until stopped.
pub struct AnsweringMeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Answers, String>>>,
}

impl AnsweringMeter {
    /// Starts asking for `vip` out of `interface` of namespace `ns`, as
    /// [`METER_MAC`] at `meter_ip` (an unused address of the subnet: the
    /// nodes learn it from the requests).
    pub fn start(ns: &str, interface: &str, vip: Ipv4Addr, meter_ip: Ipv4Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let interface = interface.to_string();
        let thread = netns::spawn_in(ns, move || ask(&interface, vip, meter_ip, &flag));
        AnsweringMeter {
            stop,
            thread: Some(thread),
        }
    }

    /// Starts the meter on `lab`'s client as the lab's meter address.
    pub fn on(lab: &Lab) -> Self {
        Self::start(&lab.client, "eth0", lab.vip(), lab.meter_addr())
    }

    /// Stops; panics (with `context`) if the meter failed, heard no answer
    /// at all (a broken meter, not a good result), or two MACs answered in
    /// one window.
    pub fn finish_one_answerer(self, context: &str) -> Answers {
        let answers = self
            .finish()
            .unwrap_or_else(|e| panic!("answering meter: {e}\n{context}"));
        assert!(
            answers.answers() > 0,
            "the answering meter heard no answer in {} requests\n{context}",
            answers.requests()
        );
        assert_eq!(
            answers.overlap(),
            Duration::ZERO,
            "two MACs answered ARP for the VIP in one window: {:02x?}\n{context}",
            answers.answerers()
        );
        answers
    }

    /// Stops and returns what was heard; an error if the socket failed.
    pub fn finish(mut self) -> Result<Answers, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("answering meter"))
            .unwrap_or_else(|| Err("answering meter not running".into()))
    }
}

impl Drop for AnsweringMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn ask(
    interface: &str,
    vip: Ipv4Addr,
    meter_ip: Ipv4Addr,
    stop: &AtomicBool,
) -> Result<Answers, String> {
    let socket =
        ArpSocket::open(interface).map_err(|e| format!("ARP socket on {interface}: {e}"))?;
    // Kernel timestamps are on the real-time clock; one anchor maps them
    // onto the Instants the other meters use.
    let (anchor, anchor_wall) = (Instant::now(), SystemTime::now());
    let to_instant = |wall: Option<SystemTime>| {
        let now = Instant::now();
        let at = wall.and_then(|w| match w.duration_since(anchor_wall) {
            Ok(d) => anchor.checked_add(d),
            Err(e) => anchor.checked_sub(e.duration()),
        });
        // A clock step while measuring: the receive time is the best left.
        at.filter(|t| now.saturating_duration_since(*t) < Duration::from_secs(1) && *t <= now)
            .unwrap_or(now)
    };
    let mut heard = Vec::new();
    let mut buf = [0u8; 1600];
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            socket
                .send(&arp::request(METER_MAC, meter_ip, vip, seq))
                .map_err(|e| format!("send ARP request: {e}"))?;
            seq += 1;
            next += ASK_EVERY;
            if next < now {
                // Fell behind (a loaded machine): do not burst to catch up.
                next = now + ASK_EVERY;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        let Some((n, wall)) = socket
            .recv(&mut buf, wait)
            .map_err(|e| format!("receive ARP: {e}"))?
        else {
            continue;
        };
        match arp::parse(&buf[..n], METER_MAC, vip) {
            Frame::Request(_) => heard.push(Heard::Asked(to_instant(wall))),
            Frame::Reply(mac) => heard.push(Heard::Answered(to_instant(wall), mac)),
            Frame::Other => {}
        }
    }
    Ok(Answers { heard })
}

/// Everything the answering meter heard, and what follows from it.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Requests and answers in the kernel's order.
    pub heard: Vec<Heard>,
}

impl Answers {
    /// Requests that went out.
    pub fn requests(&self) -> usize {
        self.heard
            .iter()
            .filter(|h| matches!(h, Heard::Asked(_)))
            .count()
    }

    /// Answers received.
    pub fn answers(&self) -> usize {
        self.heard.len() - self.requests()
    }

    /// Every MAC that answered, in the order it first did.
    pub fn answerers(&self) -> Vec<Mac> {
        let mut macs = Vec::new();
        for h in &self.heard {
            if let Heard::Answered(_, mac) = h
                && !macs.contains(mac)
            {
                macs.push(*mac);
            }
        }
        macs
    }

    /// The MAC of the last answer.
    pub fn last_answerer(&self) -> Option<Mac> {
        self.heard.iter().rev().find_map(|h| match h {
            Heard::Answered(_, mac) => Some(*mac),
            Heard::Asked(_) => None,
        })
    }

    /// Total time of the windows (from one request to the next) in which
    /// two or more distinct MACs answered. An answer belongs to the window
    /// it was queued in, after the request it answers: the kernel's queue
    /// order, not a clock, so a slow reader cannot merge two windows.
    pub fn overlap(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut window: Option<Instant> = None;
        let mut macs: Vec<Mac> = Vec::new();
        for h in &self.heard {
            match *h {
                Heard::Asked(at) => {
                    if let Some(start) = window
                        && macs.len() >= 2
                    {
                        total += at.saturating_duration_since(start);
                    }
                    window = Some(at);
                    macs.clear();
                }
                Heard::Answered(_, mac) => {
                    if window.is_some() && !macs.contains(&mac) {
                        macs.push(mac);
                    }
                }
            }
        }
        if macs.len() >= 2 {
            total += ASK_EVERY;
        }
        total
    }

    /// Longest time after `from` in which no answer arrived (the "answer
    /// outage"): up to the first answer, between answers, and from the
    /// last answer to the last request.
    pub fn outage(&self, from: Instant) -> Duration {
        let mut worst = Duration::ZERO;
        let mut last = from;
        let mut end = from;
        for h in &self.heard {
            match *h {
                Heard::Asked(at) => end = end.max(at),
                Heard::Answered(at, _) if at >= from => {
                    worst = worst.max(at - last);
                    last = at;
                }
                Heard::Answered(..) => {}
            }
        }
        worst.max(end.saturating_duration_since(last))
    }
}

/// The Ethernet address of `dev` in namespace `ns`, asked of `ip`.
pub fn mac_of(ns: &str, dev: &str) -> Mac {
    let out = super::ns_exec(ns, &["ip", "-o", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether on {dev} in {ns}: {text}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

/// The three meters of one scenario run, started and read together.
pub struct Meters {
    holders: HolderMeter,
    client: ClientMeter,
    answering: AnsweringMeter,
}

impl Meters {
    /// Starts every meter on `lab`: addresses on the nodes, TCP connects to
    /// VIP:6443 and ARP requests from the client.
    pub fn start(lab: &Lab) -> Self {
        let vip = lab.vip();
        Meters {
            holders: HolderMeter::start(&lab.nodes, IpAddr::V4(vip)),
            client: ClientMeter::start(&lab.client, IpAddr::V4(vip), 6443),
            answering: AnsweringMeter::start(&lab.client, "eth0", vip, lab.meter_addr()),
        }
    }

    /// Stops the meters and measures the run of a fault at `fault`. An
    /// error when the answering meter failed or never heard an answer (a
    /// holder was stable before every fault: silence means a broken meter,
    /// not zero overlap).
    pub fn finish(self, fault: Instant, recovered: Duration) -> Result<Outcome, String> {
        let samples = self.holders.finish();
        let probes = self.client.finish();
        let answers = self.answering.finish()?;
        let before = answers
            .heard
            .iter()
            .filter(|h| matches!(h, Heard::Answered(at, _) if *at < fault))
            .count();
        if before == 0 {
            return Err(format!(
                "the answering meter heard no answer before the fault ({} requests, {} answers)",
                answers.requests(),
                answers.answers()
            ));
        }
        Ok(Outcome {
            outage: longest_outage(&probes, fault),
            overlap: overlap(&samples),
            answer_overlap: answers.overlap(),
            answer_outage: answers.outage(fault),
            recovered,
        })
    }
}
