//! Reading the status file back for `ha-vip status` and `ha-vip release`,
//! and rendering it for a terminal.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use super::{Status, StatusError, Timestamp};

/// Exit code of `ha-vip status` when the daemon is not running (systemctl's "inactive").
const EXIT_NOT_RUNNING: i32 = 3;

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
pub(super) fn process_alive(pid: u32) -> bool {
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
pub(super) fn printable(s: &str) -> String {
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
pub(super) fn clock(t: Timestamp) -> String {
    let s = humantime::format_rfc3339_seconds(t.system_time()).to_string();
    format!("{} UTC", s.replace('T', " ").trim_end_matches('Z'))
}

/// `0.4s ago`, `12s ago`, `3m ago`, `2h 5m ago`, `3d 4h ago`.
pub(super) fn ago(t: Timestamp, now: SystemTime) -> String {
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
