//! The raw packet sockets announcements leave through and conflict
//! detection listens on.
//!
//! The only module of ha-vip with `unsafe`: building a `sockaddr_ll`.
#![allow(unsafe_code)]

use std::io::{self, Read};
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};

use nix::libc;
use socket2::{Domain, SockAddr, SockFilter, Socket, Type};

/// A send-only `AF_PACKET`/`SOCK_RAW` socket that sends whole Ethernet frames.
#[derive(Debug)]
pub(crate) struct PacketSocket(Socket);

impl PacketSocket {
    /// Opens the socket (needs CAP_NET_RAW) in the calling thread's network
    /// namespace. Protocol 0: it receives nothing.
    pub(crate) fn open() -> io::Result<Self> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        // A full transmit queue must not stall the runtime; the frame is
        // dropped and counted as an error instead.
        socket.set_nonblocking(true)?;
        Ok(Self(socket))
    }

    /// Sends `frame` (Ethernet header included) out of interface `ifindex`.
    pub(crate) fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `try_init` hands us a zeroed `sockaddr_storage`, which is
        // larger than and suitably aligned for `sockaddr_ll`; we write only
        // the fields of a `sockaddr_ll` through a properly typed pointer and
        // report its exact size, so the returned `SockAddr` is initialised up
        // to its length.
        let ((), addr) = unsafe {
            SockAddr::try_init(|storage, len| {
                let ll = storage.cast::<libc::sockaddr_ll>();
                (*ll).sll_family = libc::AF_PACKET as libc::sa_family_t;
                (*ll).sll_ifindex = ifindex;
                (*ll).sll_halen = 6;
                *len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                Ok(())
            })
        }?;
        let sent = self.0.send_to(frame, &addr)?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write of an Ethernet frame",
            ))
        }
    }
}

/// A receive-only `AF_PACKET`/`SOCK_RAW` socket on one interface, for one
/// ethertype, behind a classic BPF filter: conflict detection reads the
/// ARP and neighbour-advertisement frames other hosts send.
#[derive(Debug)]
pub(crate) struct CaptureSocket(Socket);

impl CaptureSocket {
    /// Opens the socket (needs CAP_NET_RAW) on interface `ifindex` of the
    /// calling thread's network namespace, receiving frames of `ethertype`
    /// that `filter` accepts. Non-blocking.
    pub(crate) fn open(ifindex: u32, ethertype: u16, filter: &[SockFilter]) -> io::Result<Self> {
        // Protocol 0 receives nothing until the bind below: no frame slips
        // in before the filter is attached.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        socket.attach_filter(filter)?;
        socket.set_nonblocking(true)?;
        socket.bind(&link_addr(ifindex, ethertype)?)?;
        Ok(Self(socket))
    }

    /// The next frame (Ethernet header included) into `buf`; its length.
    /// `WouldBlock` when none is queued.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }
}

impl AsRawFd for CaptureSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A `sockaddr_ll` for interface `ifindex` and `protocol` (host order; 0
/// for none).
fn link_addr(ifindex: u32, protocol: u16) -> io::Result<SockAddr> {
    let ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: as in `PacketSocket::send`: a zeroed `sockaddr_storage` is
    // larger than and aligned for `sockaddr_ll`; only its fields are written,
    // through a properly typed pointer, and its exact size is reported.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = storage.cast::<libc::sockaddr_ll>();
            (*ll).sll_family = libc::AF_PACKET as libc::sa_family_t;
            (*ll).sll_protocol = protocol.to_be();
            (*ll).sll_ifindex = ifindex;
            *len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(addr)
}
