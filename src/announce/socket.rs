//! The raw packet socket announcements leave through.
//!
//! The only module of ha-vip with `unsafe`: building a `sockaddr_ll`.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;

use nix::libc;
use socket2::{Domain, SockAddr, Socket, Type};

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
