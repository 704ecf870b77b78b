//! The nfnetlink socket: one transaction at a time, blocking (callers run
//! it on a blocking thread), answered by an error per failed message and
//! an acknowledgement of the last one.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use super::wire::{Batch, Transaction, parse_acks};

/// How long to wait for the kernel's answer. The kernel handles a batch
/// inside the `sendmsg` that carries it, so the answers are normally
/// queued before `send` returns; this bounds the abnormal case.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The send buffer asked for: a transaction is one datagram, about 2 KB
/// per VIP, and the kernel refuses one larger than the buffer
/// (`EMSGSIZE`); the default (net.core.wmem_default, 208 KiB) would end
/// near 100 VIPs.
pub(super) const SEND_BUFFER: usize = 4 << 20;

/// Why a transaction failed.
#[derive(Debug)]
pub(super) enum TxError {
    /// The socket itself failed (`op` is the system call).
    Socket {
        /// The system call.
        op: &'static str,
        /// Its error.
        errno: Errno,
    },
    /// The kernel refused a message; the whole transaction was undone.
    Refused {
        /// Which message (e.g. "add rule inet ha_vip output for 192.0.2.7").
        about: String,
        /// The kernel's error.
        errno: Errno,
    },
    /// No (complete) answer within [`ANSWER_TIMEOUT`].
    NoAnswer,
    /// The answer was not valid netlink.
    Malformed(String),
}

/// An nfnetlink socket in the network namespace of the thread that opened
/// it; it stays there whichever thread uses it later.
#[derive(Debug)]
pub(super) struct Conn {
    fd: OwnedFd,
    next_seq: u32,
}

impl Conn {
    /// Opens and binds the socket.
    pub(super) fn open() -> Result<Self, TxError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|errno| TxError::Socket {
            op: "socket",
            errno,
        })?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|errno| TxError::Socket { op: "bind", errno })?;
        let timeout = TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(|errno| TxError::Socket {
            op: "setsockopt(SO_RCVTIMEO)",
            errno,
        })?;
        // Room for an error per message if a whole transaction fails (each
        // carries its message back).
        if setsockopt(&fd, sockopt::RcvBufForce, &SEND_BUFFER).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &SEND_BUFFER);
        }
        // SO_SNDBUFFORCE passes net.core.wmem_max with CAP_NET_ADMIN, which
        // every arm needs anyway; without it, SO_SNDBUF up to wmem_max.
        if setsockopt(&fd, sockopt::SndBufForce, &SEND_BUFFER).is_err() {
            let _ = setsockopt(&fd, sockopt::SndBuf, &SEND_BUFFER);
        }
        // Sequence numbers only need to differ from the previous
        // transaction's; start from the clock so two sockets differ too.
        let next_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ok(Self { fd, next_seq })
    }

    /// Builds a transaction with `build`, sends it (`commit` false: a dry
    /// run the kernel checks and aborts) and waits for every answer.
    pub(super) fn run(
        &mut self,
        commit: bool,
        build: impl FnOnce(&mut Batch),
    ) -> Result<(), TxError> {
        let mut batch = Batch::new(self.next_seq);
        build(&mut batch);
        let tx = batch.finish(commit);
        self.next_seq = tx.next_seq;
        self.transact(tx)
    }

    fn transact(&mut self, tx: Transaction) -> Result<(), TxError> {
        let fd = self.fd.as_raw_fd();
        let mut buf = vec![0u8; 64 * 1024];
        // Answers left from an earlier transaction that timed out.
        while recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}

        send(fd, &tx.datagram, MsgFlags::empty())
            .map_err(|errno| TxError::Socket { op: "send", errno })?;
        let about: HashMap<u32, String> = tx.messages.into_iter().collect();
        let Some(last_seq) = tx.last_seq else {
            return Ok(());
        };
        let mut done = false;
        let mut refused: Option<TxError> = None;
        while !done {
            // Once one message failed the kernel has undone the batch and
            // queued every answer already: do not wait for more.
            let flags = if refused.is_some() {
                MsgFlags::MSG_DONTWAIT
            } else {
                MsgFlags::empty()
            };
            let n = match recv(fd, &mut buf, flags) {
                Ok(n) => n,
                // ENOBUFS: answers were lost; the first error is known.
                Err(Errno::EAGAIN | Errno::ENOBUFS) if refused.is_some() => break,
                Err(Errno::EAGAIN) => return Err(TxError::NoAnswer),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(TxError::Socket { op: "recv", errno }),
            };
            let acks = parse_acks(&buf[..n]).map_err(|e| TxError::Malformed(e.to_string()))?;
            for ack in acks {
                done |= ack.seq == last_seq;
                if ack.errno != 0 && refused.is_none() {
                    refused = Some(TxError::Refused {
                        // An error on a message of no description (a batch
                        // delimiter) concerns the whole batch.
                        about: about
                            .get(&ack.seq)
                            .cloned()
                            .unwrap_or_else(|| "apply the nf_tables transaction".into()),
                        errno: Errno::from_raw(ack.errno),
                    });
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }
}
