//! The status file: what the daemon is doing, written atomically to
//! `<run_dir>/status.json` and read by `ha-vip status`.

use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::watch;

use crate::config::Vip;
use crate::role::{Role, TransitionReason};

/// Exit code of `ha-vip status` when the daemon is not running (systemctl's "inactive").
const EXIT_NOT_RUNNING: i32 = 3;

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

/// Writes the status file atomically, skipping writes that change nothing.
#[derive(Debug)]
pub struct StatusWriter {
    path: PathBuf,
    last: Option<Vec<u8>>,
    metrics: Option<watch::Receiver<MetricsStatus>>,
}

impl StatusWriter {
    /// A writer for `path` (usually `Config::status_file()`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            last: None,
            metrics: None,
        }
    }

    /// Also records the metrics endpoint's state (from
    /// [`super::spawn_metrics_endpoint`]) in every status written.
    pub fn with_metrics_endpoint(mut self, state: watch::Receiver<MetricsStatus>) -> Self {
        self.metrics = Some(state);
        self
    }

    /// The status file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `status` unless it equals the last one written; returns whether
    /// it wrote. Readers see the old file or the new one, never a torn one.
    pub fn write(&mut self, status: &Status) -> Result<bool, StatusError> {
        // The endpoint runs in its own task; its state joins the daemon's here.
        let merged;
        let status = match &self.metrics {
            Some(state) => {
                merged = Status {
                    metrics: Some(state.borrow().clone()),
                    ..status.clone()
                };
                &merged
            }
            None => status,
        };
        // Invariant: Status has string keys and no maps; serializing cannot fail.
        let mut bytes = serde_json::to_vec_pretty(status).expect("Status serializes");
        bytes.push(b'\n');
        if self.last.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        super::run_dir::write_atomically(&self.path, &bytes)?;
        self.last = Some(bytes);
        Ok(true)
    }
}

/// `ha-vip status`: prints the status file to stdout and returns the exit
/// code: 0 when the daemon runs, 3 when it does not (no file, or a stale one).
pub fn print_status(path: &Path, json: bool) -> Result<i32, StatusError> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    write_status(
        path,
        json,
        SystemTime::now(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    )
}

/// The body of [`print_status`], writing to `out` (the status) and `err`
/// (notes that must not corrupt `--json` output).
pub fn write_status(
    path: &Path,
    json: bool,
    now: SystemTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, StatusError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let msg = format!(
                "ha-vip is not running (no status file at {})",
                path.display()
            );
            if json {
                writeln!(err, "{msg}")
            } else {
                writeln!(out, "{msg}")
            }
            .map_err(StatusError::Print)?;
            return Ok(EXIT_NOT_RUNNING);
        }
        Err(source) => {
            return Err(StatusError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let status: Status = serde_json::from_str(&text).map_err(|source| StatusError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let running = process_alive(status.pid);
    if json {
        out.write_all(text.as_bytes()).map_err(StatusError::Print)?;
        if !running {
            writeln!(
                err,
                "ha-vip is not running (stale status from pid {})",
                status.pid
            )
            .map_err(StatusError::Print)?;
        }
    } else {
        let mut report = String::new();
        if !running {
            let _ = writeln!(
                report,
                "ha-vip is not running (stale status from pid {}); last known state:",
                status.pid
            );
        }
        report.push_str(&render_status(&status, now));
        out.write_all(report.as_bytes())
            .map_err(StatusError::Print)?;
    }
    Ok(if running { 0 } else { EXIT_NOT_RUNNING })
}

/// The pid of the daemon that wrote `path`, if that process is still alive.
pub fn running_daemon(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    let status: Status = serde_json::from_str(&text).ok()?;
    (status.pid != std::process::id() && process_alive(status.pid)).then_some(status.pid)
}

/// Whether a process with this pid exists (EPERM means it does, owned by someone else).
fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// The human form of `status`, a few aligned lines, times relative to `now`.
pub fn render_status(status: &Status, now: SystemTime) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        (
            "node",
            format!(
                "{} (pid {}, ha-vip {})",
                status.node_name, status.pid, status.version
            ),
        ),
        (
            "role",
            format!(
                "{} since {} ({})",
                status.role,
                clock(status.since),
                ago(status.since, now)
            ),
        ),
        (
            "lease holder",
            status.holder.clone().unwrap_or_else(|| "none".to_owned()),
        ),
    ];
    let health = if status.healthy {
        "healthy"
    } else {
        "unhealthy"
    };
    let probe = match &status.last_probe {
        None => "no probe yet".to_owned(),
        Some(p) if p.ok => format!("last probe ok {}", ago(p.at, now)),
        Some(p) => format!("last probe failed {}: {}", ago(p.at, now), p.reason),
    };
    lines.push(("health", format!("{health} ({probe})")));
    if status.drained {
        lines.push((
            "drained",
            "yes: not taking the VIP until `ha-vip undrain`".to_owned(),
        ));
    }
    if status.vips.is_empty() {
        lines.push(("VIPs", "none".to_owned()));
    }
    for (i, v) in status.vips.iter().enumerate() {
        let state = if v.present { "present" } else { "absent" };
        lines.push((
            if i == 0 { "VIPs" } else { "" },
            format!("{} {state}", v.vip),
        ));
    }
    let last = match &status.last_transition {
        None => "none".to_owned(),
        Some(t) => format!(
            "{} \u{2192} {}: {} ({})",
            t.from,
            t.to,
            t.reason,
            ago(t.at, now)
        ),
    };
    lines.push(("last transition", last));
    if let Some(c) = &status.client_certificate {
        let left = match c.not_after.system_time().duration_since(now) {
            Ok(d) if d.as_secs() >= 86_400 => format!("in {} days", d.as_secs() / 86_400),
            Ok(d) => format!("in {}h", d.as_secs() / 3600),
            Err(_) => "EXPIRED".to_owned(),
        };
        lines.push((
            "client certificate",
            format!("{}, expires {} ({left})", c.subject, clock(c.not_after)),
        ));
    }
    if let Some(m) = &status.metrics {
        let state = match &m.error {
            None => format!("serving on {}", m.listen),
            Some(e) => format!(
                "NOT serving on {}: {e} (retrying; first failure {}, {} failed binds)",
                m.listen,
                ago(m.since, now),
                m.failed_binds
            ),
        };
        lines.push(("metrics", state));
    }

    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        let label = if key.is_empty() {
            String::new()
        } else {
            format!("{key}:")
        };
        let _ = writeln!(out, "{label:<width$} {}", printable(&value));
    }
    out
}

/// `s` with every character that could steer a terminal escaped as
/// `\u{..}` ([`crate::text::steers_terminal`]). The Lease holder and the
/// probe's failure reason come from other machines.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if crate::text::steers_terminal(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// `2024-05-01 12:03:04 UTC`.
fn clock(t: Timestamp) -> String {
    let s = humantime::format_rfc3339_seconds(t.system_time()).to_string();
    format!("{} UTC", s.replace('T', " ").trim_end_matches('Z'))
}

/// `0.4s ago`, `12s ago`, `3m ago`, `2h 5m ago`, `3d 4h ago`.
fn ago(t: Timestamp, now: SystemTime) -> String {
    let Ok(d) = now.duration_since(t.system_time()) else {
        return "just now".to_owned();
    };
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1}s ago", d.as_secs_f64()),
        10..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h {}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h ago", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests;
