//! Errors of the address manager.

use std::fmt;
use std::io;

use crate::config::Vip;

/// Why a netlink request failed, worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// EPERM / EACCES: the process lacks CAP_NET_ADMIN.
    NotPermitted,
    /// The interface does not exist (ENODEV, or no link of that name).
    NoInterface(String),
    /// Any other errno the kernel returned.
    Errno(i32),
    /// The netlink exchange itself failed (socket closed, unexpected reply).
    Protocol(String),
    /// The address is on the interface but ha-vip did not add it (it lacks
    /// ha-vip's marks), so ha-vip will not replace or remove it.
    NotOurs,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPermitted => f.write_str("Operation not permitted (needs CAP_NET_ADMIN)"),
            Self::NoInterface(name) => write!(f, "no interface {name}"),
            Self::Errno(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            Self::Protocol(what) => write!(f, "netlink: {what}"),
            Self::NotOurs => f.write_str(
                "the address is already there and ha-vip did not add it; ha-vip never takes over an address of the node (take it out of `vips`, or delete it with `ip addr del` if it is a stray copy of the VIP)",
            ),
        }
    }
}

impl Cause {
    /// Classifies an rtnetlink error; `interface` names the link for ENODEV.
    pub(crate) fn from_rtnetlink(e: &rtnetlink::Error, interface: &str) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(msg) => match msg.code.map(|c| -c.get()) {
                Some(errno) => Self::from_errno(errno, interface),
                None => Self::Protocol(e.to_string()),
            },
            other => Self::Protocol(other.to_string()),
        }
    }

    /// Classifies a positive errno.
    pub(crate) fn from_errno(errno: i32, interface: &str) -> Self {
        match errno {
            nix::libc::EPERM | nix::libc::EACCES => Self::NotPermitted,
            nix::libc::ENODEV => Self::NoInterface(interface.to_owned()),
            n => Self::Errno(n),
        }
    }

    /// Classifies an I/O error (socket creation).
    pub(crate) fn from_io(e: &io::Error, interface: &str) -> Self {
        match e.raw_os_error() {
            Some(errno) => Self::from_errno(errno, interface),
            None => Self::Protocol(e.to_string()),
        }
    }
}

/// A failed step of the address manager; each names the VIP and interface.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// Opening the netlink socket failed.
    #[error("failed to open a netlink socket for {interface}: {cause}")]
    Connect {
        /// Interface the table was for.
        interface: String,
        /// What went wrong.
        cause: Cause,
    },
    /// Adding or refreshing a VIP failed.
    #[error("failed to add VIP {vip} on {interface}: {cause}")]
    Add {
        /// The VIP.
        vip: Vip,
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: Cause,
    },
    /// Removing a VIP failed.
    #[error("failed to remove VIP {vip} from {interface}: {cause}")]
    Remove {
        /// The VIP.
        vip: Vip,
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: Cause,
    },
    /// Listing the interface's addresses failed.
    #[error("failed to list the addresses of {interface}: {cause}")]
    List {
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: Cause,
    },
    /// A VIP is already one of the node's addresses, not added by ha-vip.
    #[error(
        "VIP {vip} is already on {interface} as {address}, an address ha-vip did not add; serving it would turn the node's own address into an expiring VIP. Fix: take {vip} out of `vips` in the configuration (a VIP must be an address no node owns), or, if it is a stray copy of the VIP, delete it: ip addr del {address} dev {interface}"
    )]
    Foreign {
        /// The configured VIP.
        vip: Vip,
        /// Where the address was found.
        interface: String,
        /// The address with its own prefix.
        address: Vip,
    },
    /// Subscribing to netlink notifications failed.
    #[error("failed to watch {interface} for address and link changes: {cause}")]
    Watch {
        /// The interface.
        interface: String,
        /// What went wrong.
        cause: Cause,
    },
}

static NOT_OURS: Cause = Cause::NotOurs;

impl VipError {
    /// The underlying cause, for callers that branch on it.
    pub fn cause(&self) -> &Cause {
        match self {
            Self::Connect { cause, .. }
            | Self::Add { cause, .. }
            | Self::Remove { cause, .. }
            | Self::List { cause, .. }
            | Self::Watch { cause, .. } => cause,
            Self::Foreign { .. } => &NOT_OURS,
        }
    }
}

/// Every failure of a [`super::remove_all`] run, with what did succeed.
#[derive(Debug, thiserror::Error)]
pub struct CleanupError {
    /// VIPs that were removed despite the failures.
    pub removed: Vec<Vip>,
    /// One error per VIP that could not be removed.
    pub errors: Vec<VipError>,
}

impl fmt::Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} VIP(s) could not be removed", self.errors.len())?;
        for e in &self.errors {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}
