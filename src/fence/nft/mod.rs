//! The precise fence on nftables: [`NftFence`].
//!
//! # The rules
//!
//! Two tables named `ha_vip`, one `inet` (IPv4 and IPv6 packets) and one
//! `arp`, each rule ending in `meta time > DEADLINE drop`:
//!
//! | table, chain (hook) | drops, for each VIP | why |
//! |---|---|---|
//! | `inet` `prerouting` | `ip daddr VIP`, `ip6 daddr VIP` | no packet to the VIP is accepted: new connections and established ones |
//! | `inet` `prerouting` | ICMPv6 neighbour solicitation with target VIP | solicitations go to the solicited-node group, not to the VIP |
//! | `inet` `output` | `ip saddr VIP`, `ip6 saddr VIP` | nothing leaves from the VIP: SYN-ACKs, RSTs, data |
//! | `inet` `output` | ICMPv6 neighbour advertisement with target VIP | advertisements may leave from a link-local address |
//! | `arp` `input` | ARP request with target IP VIP | the ARP code never sees it, so no reply is made |
//! | `arp` `output` | ARP with sender IP VIP | no reply (or request) claims the VIP |
//!
//! Every chain is a `filter` base chain at priority -300 (`raw`), before
//! connection tracking (-200): a dropped packet makes no conntrack entry
//! and an established flow dies with the fence as a new one does; an
//! `accept` in another table's chain cannot undo a drop.
//!
//! Announcements ha-vip itself sends over a packet socket bypass the `arp`
//! hooks; the daemon stops them at the deadline by its own timer
//! ([`crate::announce`]).
//!
//! # Atomicity
//!
//! [`NftFence::arm`] sends one nf_tables transaction: per family, add the
//! table, delete it, add it again with its chains and rules. The kernel
//! applies a transaction at once or not at all, so there is no moment
//! without a rule and a refused transaction leaves the previous deadline
//! in force. [`NftFence::clear`] deletes the two tables (add, then delete,
//! so a missing table is not an error) and nothing else.
//!
//! # The clock
//!
//! `meta time` is `ktime_get_real_ns()`: CLOCK_REALTIME in nanoseconds. A
//! backward step of the clock delays the fence by the step, a forward step
//! fires it early; the daemon detects steps and re-arms. The kernel keeps
//! the register in host byte order and `cmp` compares bytes big-endian, so
//! the rules convert it (see `rules.rs`).
//!
//! # Encoding
//!
//! The messages are encoded here (`wire.rs`), over a plain netlink socket
//! from `nix`: `rustables` cannot express `meta time` nor `byteorder` and
//! is GPL-3.0, `nftnl` binds the C libnftnl, and the `nft` binary is not a
//! runtime dependency.
//!
//! # Precision
//!
//! The kernel reads the clock for each packet, so the cut is exact to the
//! packet; what is left is how late a rule update lands, which does not
//! matter (a late update carries a deadline that has passed) and the
//! clock itself. Measured with a packet oracle (a peer namespace sends an
//! ARP request, a neighbour solicitation and a TCP SYN to each VIP every
//! 3 ms and captures the answers), 25 runs on a shared 2-core host (10
//! quiet, 10 with address churn on the fenced host, 5 re-armed every
//! 50 ms):
//!
//! ```text
//! cargo nextest run --test dataplane_precise --no-capture -E 'test(/answers_stop|rearm|passed/)'
//! ```
//!
//! no answer of any kind (ARP reply, NA, SYN-ACK over IPv4 and IPv6) came
//! after the deadline; the last came 0.2-7.2 ms before it and the first
//! probe after it (sent 0.03-6.9 ms after) was not answered: the cut lies
//! within one probe interval of the deadline, the interval being stretched
//! by the busy host. An arm takes about 0.5 ms (median of 20 per run, max
//! 5.5 ms, debug build), and an arm whose deadline has passed silences the
//! VIPs before it returns (last answer 0.1-3.4 ms before that).

mod conn;
mod rules;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

use super::{FenceError, PreciseFence};
use conn::{Conn, TxError};

/// The name of ha-vip's tables (one `inet`, one `arp`).
pub const TABLE: &str = "ha_vip";

/// The precise fence as ha-vip's nftables tables, in the network namespace
/// of the thread that called [`NftFence::open`].
#[derive(Debug, Clone)]
pub struct NftFence {
    conn: Arc<Mutex<Conn>>,
}

impl NftFence {
    /// Checks that the kernel has nf_tables (FenceError::Unsupported if
    /// not) and returns a fence; touches no table yet.
    ///
    /// The check is a dry run of an arm (every message sent and checked by
    /// the kernel, then the transaction aborted), so a kernel that lacks
    /// the `arp` family, `meta time` or `byteorder` is refused here, at
    /// start, rather than at the first arm. It runs on the calling thread
    /// and takes a few milliseconds.
    pub fn open() -> Result<NftFence, FenceError> {
        let mut conn = Conn::open().map_err(|e| fence_error("check", e))?;
        let probe = [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ];
        conn.run(false, |b| rules::arm(b, &probe, 0))
            .map_err(|e| fence_error("check", e))?;
        Ok(NftFence {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs one transaction on a blocking thread: the kernel handles it
    /// inside `sendmsg`, which may wait on nf_tables' commit lock.
    async fn transact(
        &self,
        action: &'static str,
        build: impl FnOnce(&mut wire::Batch) + Send + 'static,
    ) -> Result<(), FenceError> {
        let conn = Arc::clone(&self.conn);
        let run = tokio::task::spawn_blocking(move || lock(&conn).run(true, build));
        match run.await {
            Ok(result) => result.map_err(|e| fence_error(action, e)),
            Err(e) => Err(FenceError::Kernel {
                action,
                table: TABLE,
                detail: format!("the request thread failed: {e}"),
            }),
        }
    }
}

/// The socket stays usable after a panic elsewhere: each transaction
/// starts by discarding stale answers.
fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PreciseFence for NftFence {
    fn arm(
        &self,
        vips: &[IpAddr],
        deadline: SystemTime,
    ) -> impl Future<Output = Result<(), FenceError>> + Send {
        let vips = vips.to_vec();
        let deadline_ns = epoch_ns(deadline);
        async move {
            self.transact("arm", move |b| rules::arm(b, &vips, deadline_ns))
                .await
        }
    }

    fn clear(&self) -> impl Future<Output = Result<(), FenceError>> + Send {
        self.transact("clear", rules::clear)
    }
}

/// Nanoseconds since the epoch, as `meta time` counts; a time before the
/// epoch is 0 (already past), one beyond 2554 saturates.
fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Maps a failed transaction to the error the daemon reports.
fn fence_error(action: &'static str, e: TxError) -> FenceError {
    let kernel = |detail: String| FenceError::Kernel {
        action,
        table: TABLE,
        detail,
    };
    match e {
        TxError::Socket { op, errno } if unsupported(errno) => FenceError::Unsupported {
            detail: format!("{op} on an nfnetlink socket: {}", desc(errno)),
        },
        TxError::Refused { about, errno } if unsupported(errno) => FenceError::Unsupported {
            detail: format!(
                "{about}: {}; the kernel lacks part of nf_tables the fence needs (the inet and arp families, meta time from Linux 5.4, byteorder, payload)",
                desc(errno)
            ),
        },
        TxError::Socket { op, errno } => kernel(format!("{op}: {}{}", desc(errno), advice(errno))),
        TxError::Refused { about, errno } => {
            kernel(format!("{about}: {}{}", desc(errno), advice(errno)))
        }
        TxError::NoAnswer => kernel(format!(
            "no answer from the kernel within {} s; the previous rules stay in force",
            conn::ANSWER_TIMEOUT.as_secs()
        )),
        TxError::Malformed(m) => kernel(m),
    }
}

/// Errors that mean the kernel lacks nf_tables or a part of it: the
/// netlink family or subsystem, the table family, an expression or key.
fn unsupported(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::ENOENT | Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT | Errno::EOPNOTSUPP
    )
}

fn desc(errno: Errno) -> String {
    format!("{} ({})", errno.desc(), errno as i32)
}

/// What to do about an errno, when there is something to say.
fn advice(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM | Errno::EACCES => {
            "; ha-vip needs CAP_NET_ADMIN in the node's network namespace for nftables (check the unit's CapabilityBoundingSet and AmbientCapabilities, or run it as root), and no other process may own a table named ha_vip (nft list tables)"
        }
        Errno::ENOBUFS | Errno::ENOMEM => {
            "; the kernel is short of memory; the previous rules stay in force and the next renewal retries"
        }
        Errno::EBUSY => {
            "; another process changed ha-vip's table at the same moment; the next renewal retries"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests;
