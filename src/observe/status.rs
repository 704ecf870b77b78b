//! The status file: what the daemon is doing, written atomically to
//! `<run_dir>/status.json` and read by `ha-vip status`.
//!
//! This file holds the file's content (the [`Status`] types and their
//! updates) and the module's errors; [`writer`] writes the file and
//! [`reader`] reads it back and renders it for the operator.

mod reader;
mod writer;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Vip;
use crate::role::{Role, TransitionReason};

pub use reader::{print_status, render_status, running_daemon, write_status};
pub use writer::StatusWriter;

/// The status file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The directory of the status file could not be created.
    #[error(
        "failed to create status directory {path}: {source} (check run_dir and the service's RuntimeDirectory=)"
    )]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The temporary file could not be written.
    #[error("failed to write status file {path}: {source}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The temporary file could not be renamed over the status file.
    #[error("failed to replace status file {path}: {source}")]
    Rename {
        /// The status file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The status file could not be read.
    #[error("failed to read status file {path}: {source}")]
    Read {
        /// The status file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The status file is not what `ha-vip run` writes.
    #[error(
        "status file {path} is not valid: {source} (was it written by another ha-vip version?)"
    )]
    Parse {
        /// The status file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The status could not be printed.
    #[error("failed to print status: {0}")]
    Print(io::Error),
    /// The run directory could let another user replace the status file.
    #[error(
        "run_dir {path} is {problem} (owner uid {uid}, mode {mode:04o}): another local user could plant links where ha-vip writes as root or replace the status that `ha-vip status` and `ha-vip release` trust; fix it with `chown root:root {path} && chmod 0755 {path}`, or set run_dir to a directory only root can write (default /run/ha-vip)",
        path = path.display()
    )]
    UnsafeRunDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
}

/// A wall-clock time, stored as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// `t`, truncated to whole milliseconds (what the file can hold).
    pub fn new(t: SystemTime) -> Self {
        let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let millis = Duration::from_millis(since_epoch.as_millis() as u64);
        Self(UNIX_EPOCH + millis)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::new(SystemTime::now())
    }

    /// The time as a `SystemTime`.
    pub fn system_time(self) -> SystemTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s)
            .map(Self::new)
            .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 time {s:?}: {e}")))
    }
}

/// The most recent probe of the local API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Whether it succeeded.
    pub ok: bool,
    /// What it found ("ok", "HTTP 500", "connection refused", ...).
    pub reason: String,
    /// When it completed.
    pub at: Timestamp,
}

/// One VIP and whether it is on the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStatus {
    /// The VIP with its prefix (`10.0.0.100/32`).
    pub vip: String,
    /// Whether the address is currently on the interface.
    pub present: bool,
}

/// The last role change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The role left.
    pub from: Role,
    /// The role entered.
    pub to: Role,
    /// Why.
    pub reason: TransitionReason,
    /// When.
    pub at: Timestamp,
}

/// Everything `ha-vip status` shows: the content of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node's name (the Lease holder identity).
    pub node_name: String,
    /// Current role.
    pub role: Role,
    /// When the current role began.
    pub since: Timestamp,
    /// Holder of the Lease as last observed; `None` when free or unknown.
    pub holder: Option<String>,
    /// Health of the local API server (after the stability buffer).
    pub healthy: bool,
    /// The most recent probe; `None` before the first.
    pub last_probe: Option<Probe>,
    /// The configured VIPs.
    pub vips: Vec<VipStatus>,
    /// The last role change; `None` before the first.
    pub last_transition: Option<Transition>,
    /// Process id of the daemon, to tell a stale file.
    pub pid: u32,
    /// ha-vip version.
    pub version: String,
    /// The client certificate in use, if the credential has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// The metrics endpoint, when enabled: filled in by [`StatusWriter`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsStatus>,
    /// The fence mode and the precise fence's armed deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceStatus>,
    /// `ha-vip drain`: out of the election until `ha-vip undrain`.
    #[serde(default)]
    pub drained: bool,
}

/// Which fence runs, and until when the VIPs may serve here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceStatus {
    /// `precise` or `lifetime`.
    pub mode: String,
    /// The precise fence's armed deadline: the VIPs stop serving here after
    /// it. `None` when none is armed (or in lifetime mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

/// The client certificate the daemon presents to the API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertificate {
    /// Subject, e.g. `CN=ha-vip-node`.
    pub subject: String,
    /// End of validity.
    pub not_after: Timestamp,
}

/// Whether the metrics endpoint serves, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsStatus {
    /// The address it listens on (or tries to).
    pub listen: String,
    /// Whether it is serving.
    pub serving: bool,
    /// Why the last bind failed, with what to do; `None` while serving.
    pub error: Option<String>,
    /// Binds that failed so far.
    pub failed_binds: u32,
    /// When it started serving, or first failed.
    pub since: Timestamp,
}

impl Status {
    /// The status of a daemon that is starting, with every VIP absent.
    pub fn new(node_name: &str, vips: &[Vip], now: SystemTime) -> Self {
        Self {
            node_name: node_name.to_owned(),
            role: Role::Starting,
            since: Timestamp::new(now),
            holder: None,
            healthy: false,
            last_probe: None,
            vips: vips
                .iter()
                .map(|v| VipStatus {
                    vip: v.to_string(),
                    present: false,
                })
                .collect(),
            last_transition: None,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            client_certificate: None,
            metrics: None,
            fence: None,
            drained: false,
        }
    }

    /// Records the fence mode and the armed deadline.
    pub fn set_fence(&mut self, mode: crate::config::FenceMode, deadline: Option<SystemTime>) {
        self.fence = Some(FenceStatus {
            mode: mode.to_string(),
            deadline: deadline.map(Timestamp::new),
        });
    }

    /// Enters role `to`; returns false (and changes nothing) if already in it.
    pub fn transition(&mut self, to: Role, reason: TransitionReason, now: SystemTime) -> bool {
        if self.role == to {
            return false;
        }
        let at = Timestamp::new(now);
        self.last_transition = Some(Transition {
            from: self.role,
            to,
            reason,
            at,
        });
        self.role = to;
        self.since = at;
        true
    }

    /// Records a probe result.
    pub fn record_probe(&mut self, ok: bool, reason: impl Into<String>, now: SystemTime) {
        self.last_probe = Some(Probe {
            ok,
            reason: reason.into(),
            at: Timestamp::new(now),
        });
    }

    /// Records whether `vip` is on the interface (ignores VIPs not configured).
    pub fn set_vip_present(&mut self, vip: &Vip, present: bool) {
        let name = vip.to_string();
        for v in self.vips.iter_mut().filter(|v| v.vip == name) {
            v.present = present;
        }
    }
}

#[cfg(test)]
mod tests;
