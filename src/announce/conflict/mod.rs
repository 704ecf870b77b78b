//! Address conflicts: another host answering for, or announcing, our VIP.
//!
//! Two tools, both over raw `AF_PACKET` sockets on the VIP interface:
//!
//! * [`probe`]: one quick RFC 5227 ARP probe (IPv4) or DAD neighbour
//!   solicitation (IPv6) per VIP, then a short wait for answers. A host
//!   that has the VIP answers in well under a millisecond on a LAN; the
//!   wait ([`PROBE_WAIT`]) is generous for a loaded one.
//! * [`Listener`]: every ARP frame and neighbour advertisement on the
//!   interface, parsed into [`Claim`]s, for the watch while holding.
//!
//! Frames from our own MAC never count (our own announcements, and our
//! own probes, which a capture socket sees as outgoing). The policy (what
//! a conflict means, logs, metrics, Events) lives in the daemon.

pub mod frames;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

pub use frames::{Claim, ClaimKind};

use super::packet::Mac;
use super::socket::{CaptureSocket, PacketSocket};
use crate::config::Vip;

/// How long [`probe`] waits for answers. The probe is sent twice within
/// it (a lost frame does not hide a conflict).
pub const PROBE_WAIT: Duration = Duration::from_millis(100);

/// A host other than us claiming one of our VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// Our VIP.
    pub vip: Vip,
    /// The other host's MAC.
    pub mac: Mac,
    /// How it claimed the VIP.
    pub kind: ClaimKind,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A failed step of probing or listening for conflicts.
#[derive(Debug, thiserror::Error)]
pub enum ConflictError {
    /// The interface is missing or has no Ethernet address.
    #[error("cannot check {interface} for address conflicts: {why}")]
    Interface {
        /// The interface.
        interface: String,
        /// What is wrong with it.
        why: String,
    },
    /// A raw socket could not be opened or used.
    #[error("cannot check {interface} for address conflicts: {cause} (needs CAP_NET_RAW)")]
    Socket {
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: io::Error,
    },
}

/// The index and MAC of `interface` in the calling thread's namespace.
fn link(interface: &str) -> Result<(u32, Mac), ConflictError> {
    let err = |why: String| ConflictError::Interface {
        interface: interface.to_owned(),
        why,
    };
    let index = nix::net::if_::if_nametoindex(interface)
        .map_err(|e| err(format!("no such interface ({e})")))?;
    let mac = nix::ifaddrs::getifaddrs()
        .map_err(|e| err(format!("cannot list interfaces ({e})")))?
        .filter(|a| a.interface_name == interface)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .ok_or_else(|| err("it has no Ethernet address".to_owned()))?;
    Ok((index, mac))
}

/// Claims seen on one interface: ARP frames and neighbour advertisements
/// from MACs other than the interface's own.
#[derive(Debug)]
pub struct Listener {
    interface: String,
    index: u32,
    mac: Mac,
    arp: Option<AsyncFd<CaptureSocket>>,
    nd: Option<AsyncFd<CaptureSocket>>,
}

impl Listener {
    /// Starts listening on `interface` for the families of `vips` (needs
    /// CAP_NET_RAW); frames are queued from now on. Must run inside a
    /// tokio runtime, on a thread in the interface's network namespace.
    pub fn open(interface: &str, vips: &[Vip]) -> Result<Self, ConflictError> {
        let (index, mac) = link(interface)?;
        let sock = |ethertype, filter: Vec<socket2::SockFilter>| {
            // `AsyncFd::new` is deprecated because an `AsRawFd` type could
            // hand out an fd it closes or swaps while registered (tokio
            // #8587). `CaptureSocket` owns its socket, returns the same fd
            // every time and closes it only when dropped with the
            // `AsyncFd`: the contract of the unsafe `register`, kept
            // without new `unsafe` (as in `sleep::boottime`).
            #[allow(deprecated)]
            CaptureSocket::open(index, ethertype, &filter)
                .and_then(AsyncFd::new)
                .map_err(|cause| ConflictError::Socket {
                    interface: interface.to_owned(),
                    cause,
                })
        };
        let arp = vips
            .iter()
            .any(|v| v.addr.is_ipv4())
            .then(|| sock(frames::ETHERTYPE_ARP, frames::arp_filter()))
            .transpose()?;
        let nd = vips
            .iter()
            .any(|v| v.addr.is_ipv6())
            .then(|| sock(frames::ETHERTYPE_IPV6, frames::na_filter()))
            .transpose()?;
        Ok(Self {
            interface: interface.to_owned(),
            index,
            mac,
            arp,
            nd,
        })
    }

    /// The interface's MAC when the listener was opened: never a conflict.
    pub fn own_mac(&self) -> Mac {
        self.mac
    }

    /// The next claim by another MAC. Errors of the sockets are returned
    /// (the caller decides whether to reopen).
    pub async fn next(&self) -> Result<Claim, ConflictError> {
        loop {
            let frame = tokio::select! {
                r = recv(self.arp.as_ref()) => r,
                r = recv(self.nd.as_ref()) => r,
            }
            .map_err(|cause| ConflictError::Socket {
                interface: self.interface.clone(),
                cause,
            })?;
            if let Some(claim) = frames::parse(&frame)
                && claim.mac != self.mac
                && frame.get(6..12) != Some(&self.mac[..])
            {
                return Ok(claim);
            }
        }
    }

    /// Sends one probe for each of `vips` (ARP probe or DAD solicitation).
    fn send_probes(&self, out: &PacketSocket, vips: &[Vip]) -> io::Result<()> {
        for v in vips {
            match v.addr {
                IpAddr::V4(a) => out.send(self.index, &frames::arp_probe(self.mac, a))?,
                IpAddr::V6(a) => out.send(self.index, &frames::dad_ns(self.mac, a))?,
            }
        }
        Ok(())
    }
}

/// The next frame from `sock`; pending for ever without a socket.
async fn recv(sock: Option<&AsyncFd<CaptureSocket>>) -> io::Result<Vec<u8>> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 2048];
    loop {
        let mut ready = sock.readable().await?;
        match ready.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(Ok(n)) => return Ok(buf[..n].to_vec()),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Probes `interface` for `vips`: sends a probe for each, again after half
/// of `wait`, and returns every (VIP, other MAC) that answered or
/// announced the VIP within `wait`, each once.
pub async fn probe(
    interface: &str,
    vips: &[Vip],
    wait: Duration,
) -> Result<Vec<Conflict>, ConflictError> {
    let listener = Listener::open(interface, vips)?;
    let out = PacketSocket::open().map_err(|cause| ConflictError::Socket {
        interface: interface.to_owned(),
        cause,
    })?;
    let send = |l: &Listener| {
        l.send_probes(&out, vips)
            .map_err(|cause| ConflictError::Socket {
                interface: interface.to_owned(),
                cause,
            })
    };
    send(&listener)?;
    let end = Instant::now() + wait;
    let mut again = Some(Instant::now() + wait / 2);
    let mut found: Vec<Conflict> = Vec::new();
    loop {
        let wake = again.map_or(end, |a| a.min(end));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if again.take().is_some() && Instant::now() < end {
                    send(&listener)?;
                    continue;
                }
                return Ok(found);
            }
            claim = listener.next() => {
                let claim = claim?;
                if let Some(&vip) = vips.iter().find(|v| v.addr == claim.addr)
                    && !found.iter().any(|c| c.vip == vip && c.mac == claim.mac)
                {
                    found.push(Conflict { vip, mac: claim.mac, kind: claim.kind });
                }
            }
        }
    }
}

/// How long the watch waits before it tries again to listen after a
/// failure (a missing interface, a socket error).
pub const WATCH_RETRY: Duration = Duration::from_secs(5);

/// Watches `interface` for claims on the VIPs in `held` while it is not
/// empty, and calls `report` for each claim by another MAC; listens to
/// nothing while `held` is empty (a standby pays nothing). Returns when
/// the sender of `held` is dropped.
///
/// A failure to listen is logged once per kind and retried every
/// [`WATCH_RETRY`]: detection is a warning system, never a reason to stop.
pub async fn watch(
    interface: String,
    mut held: tokio::sync::watch::Receiver<Vec<Vip>>,
    mut report: impl FnMut(Conflict) + Send,
) {
    let mut last_error: Option<String> = None;
    loop {
        let vips = held.borrow_and_update().clone();
        if vips.is_empty() {
            if held.changed().await.is_err() {
                return;
            }
            continue;
        }
        let listener = match Listener::open(&interface, &vips) {
            Ok(l) => l,
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "not watching the VIPs for address conflicts; retrying every {WATCH_RETRY:?}");
                    last_error = Some(text);
                }
                tokio::select! {
                    r = held.changed() => if r.is_err() { return },
                    () = tokio::time::sleep(WATCH_RETRY) => {}
                }
                continue;
            }
        };
        if last_error.take().is_some() {
            tracing::info!(interface, "watching the VIPs for address conflicts again");
        }
        loop {
            tokio::select! {
                r = held.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // A new set: reopen (the families may differ, and the
                    // interface's MAC may have changed meanwhile).
                    break;
                }
                claim = listener.next() => match claim {
                    Ok(c) => {
                        if let Some(&vip) = vips.iter().find(|v| v.addr == c.addr) {
                            report(Conflict { vip, mac: c.mac, kind: c.kind });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "address conflict watch failed; reopening in {WATCH_RETRY:?}");
                        tokio::time::sleep(WATCH_RETRY).await;
                        break;
                    }
                }
            }
        }
    }
}
