//! The answering meter's raw ARP socket and frames.
//!
//! The lab's one `unsafe`: sending a frame out of a chosen interface needs a
//! `sockaddr_ll`, which neither socket2 nor nix can build safely. ha-vip's
//! own block (src/announce/socket.rs) is private to the daemon, and a test
//! instrument must not depend on the code it measures anyway.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// An Ethernet (EUI-48) address.
pub type Mac = [u8; 6];

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_ALL: u16 = 0x0003;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
/// Our requests carry this in the Ethernet padding (after the 28-byte ARP
/// body, which receivers ignore), then a sequence number: so the meter
/// tells its own requests from the kernel's neighbour resolution.
const MARKER: &[u8; 8] = b"hvmeter\0";
/// Minimum Ethernet frame without FCS: an ARP frame padded to it.
pub const REQUEST_LEN: usize = 60;

/// What one frame on the socket was, for the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The outgoing copy of our own request number `seq`.
    Request(u64),
    /// A reply for the VIP to our requester address, from `Mac` (the ARP
    /// sender hardware address: what a client would learn).
    Reply(Mac),
    /// Anything else (other hosts' ARP, gratuitous announcements).
    Other,
}

/// "Who has `vip`? Tell `ip` at `mac`", broadcast, padded with the marker
/// and `seq`.
pub fn request(mac: Mac, ip: Ipv4Addr, vip: Ipv4Addr, seq: u64) -> [u8; REQUEST_LEN] {
    let mut f = [0u8; REQUEST_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    let a = &mut f[14..42];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&ARP_OP_REQUEST.to_be_bytes());
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&ip.octets());
    // Target hardware address stays zero: unknown, that is the question.
    a[24..28].copy_from_slice(&vip.octets());
    f[42..50].copy_from_slice(MARKER);
    f[50..58].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Classifies `f` for a meter that asks as `mac` about `vip`.
pub fn parse(f: &[u8], mac: Mac, vip: Ipv4Addr) -> Frame {
    if f.len() < 42 || f[12..14] != ETH_P_ARP.to_be_bytes() {
        return Frame::Other;
    }
    let a = &f[14..42];
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sender_ip = &a[14..18];
    let target_mac = &a[18..24];
    let target_ip = &a[24..28];
    if op == ARP_OP_REQUEST
        && a[8..14] == mac
        && target_ip == vip.octets()
        && f.len() >= 58
        && &f[42..50] == MARKER
    {
        let seq = u64::from_be_bytes(f[50..58].try_into().expect("8 bytes"));
        return Frame::Request(seq);
    }
    // A gratuitous reply names the announcer itself as target: only an
    // answer to us names our MAC.
    if op == ARP_OP_REPLY && sender_ip == vip.octets() && target_mac == mac {
        let mut sender = [0u8; 6];
        sender.copy_from_slice(&a[8..14]);
        return Frame::Reply(sender);
    }
    Frame::Other
}

/// `AF_PACKET`/`SOCK_RAW` sockets for ARP in the calling thread's
/// namespace: one sends whole frames out of one interface, the other
/// receives every frame (incoming, and the outgoing copies of the first
/// one's requests: the kernel copies an outgoing packet only to `ETH_P_ALL`
/// sockets other than its sender), each with the kernel's receive
/// timestamp. The meter keeps the ARP frames.
pub struct ArpSocket {
    tx: Socket,
    rx: Socket,
    ifindex: i32,
}

impl ArpSocket {
    /// Opens the socket for `interface` (needs CAP_NET_RAW).
    pub fn open(interface: &str) -> io::Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)?;
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Protocol 0: receives nothing.
        let tx = Socket::new(Domain::PACKET, Type::RAW, None)?;
        let rx = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
        )?;
        // Kernel timestamps: the meter's windows must not stretch with the
        // scheduling delays of a loaded 2-core machine.
        setsockopt(&rx, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        Ok(ArpSocket { tx, rx, ifindex })
    }

    /// Sends `frame` (Ethernet header included) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let ifindex = self.ifindex;
        // SAFETY: `try_init` hands us a zeroed `sockaddr_storage`, which is
        // larger than and suitably aligned for `sockaddr_ll`; we write only
        // the fields of a `sockaddr_ll` through a properly typed pointer and
        // report its exact size, so the returned `SockAddr` is initialised up
        // to its length.
        let ((), addr) = unsafe {
            SockAddr::try_init(|storage, len| {
                let ll = storage.cast::<libc::sockaddr_ll>();
                (*ll).sll_family = libc::AF_PACKET as libc::sa_family_t;
                (*ll).sll_protocol = ETH_P_ARP.to_be();
                (*ll).sll_ifindex = ifindex;
                (*ll).sll_halen = 6;
                *len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                Ok(())
            })
        }?;
        let sent = self.tx.send_to(frame, &addr)?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short write"))
        }
    }

    /// Waits up to `timeout` for one frame; returns its length and the
    /// kernel's receive time, or `None` on timeout.
    pub fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, Option<SystemTime>)>> {
        self.rx
            .set_read_timeout(Some(timeout.max(Duration::from_micros(100))))?;
        let mut cmsg = nix::cmsg_space!(TimeSpec);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            self.rx.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(msg) => msg,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut at = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let since = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
                at = UNIX_EPOCH.checked_add(since);
            }
        }
        Ok(Some((msg.bytes, at)))
    }
}
