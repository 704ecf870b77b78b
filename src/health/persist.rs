//! The last stable health, kept in `run_dir/health.json` so that a daemon
//! restarted within the stability buffer (a package upgrade restarts every
//! node's daemon within seconds) resumes healthy instead of waiting a whole
//! buffer before it may campaign again.
//!
//! Sound because it claims no more than the running daemon would have: the
//! file holds the time of the last successful probe while stable-healthy,
//! and a resumed filter counts the whole time since then as failing
//! ([`StabilityFilter::resumed_since`]). So a node whose API server died
//! during the restart turns unhealthy at that success plus the buffer,
//! exactly when a daemon that never restarted would have.
//!
//! Times are CLOCK_BOOTTIME, which neither a wall-clock step nor a suspend
//! fools, and which only means something within one boot: the record
//! carries the boot id, and a record from another boot is ignored. Where
//! `/proc/sys` is hidden (the shipped unit's `ProcSubset=pid`) the boot id
//! is unknown; then a record written at a later boot time than now is
//! ignored, and the default `run_dir` is a tmpfs that a reboot empties.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{HealthReport, Probe, StabilityFilter};

/// Name of the record inside `run_dir`.
pub const HEALTH_FILE: &str = "health.json";

/// While healthy, the record is refreshed at most this often. Far below
/// the smallest sensible stability buffer, so a restart rarely loses more
/// than this of the buffer it may resume within.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The stable health.
    pub healthy: bool,
    /// `/proc/sys/kernel/random/boot_id` of the boot that wrote it; empty
    /// when it could not be read.
    pub boot_id: String,
    /// CLOCK_BOOTTIME in ms: when healthy, of the last successful probe;
    /// when unhealthy, of the flip.
    pub boottime_ms: u64,
}

/// Whether a daemon starting at boot time `now` may resume healthy from
/// `record`: returns how long ago the last success was, if so.
fn resumable(record: &Record, boot_id: &str, now: Duration, buffer: Duration) -> Option<Duration> {
    let known = !record.boot_id.is_empty() && !boot_id.is_empty();
    if !record.healthy || (known && record.boot_id != boot_id) {
        return None;
    }
    let age = now.checked_sub(Duration::from_millis(record.boottime_ms))?;
    (age < buffer).then_some(age)
}

/// Whether `report` must be written, given what was last written (stable
/// state and when): on a change of state, and while healthy at most every
/// [`HEARTBEAT`]. A failed probe while still stable-healthy is never
/// written: the record must keep the time of the last success.
fn due(last: Option<(bool, Instant)>, report: &HealthReport, now: Instant) -> bool {
    if report.healthy && !report.result.healthy {
        return false;
    }
    match last {
        None => true,
        Some((state, _)) if state != report.healthy => true,
        Some((_, at)) => report.healthy && now.saturating_duration_since(at) >= HEARTBEAT,
    }
}

/// Reads CLOCK_BOOTTIME, or in the simulation a boot time that follows
/// tokio's paused clock (the real one would see a 40 s run pass in 0.1 s).
type BootTime = Box<dyn Fn() -> Option<Duration> + Send>;

/// The record file of one daemon.
pub struct HealthFile {
    path: PathBuf,
    /// Empty when `/proc/sys` is not readable.
    boot_id: String,
    last: Option<(bool, Instant)>,
    boottime: BootTime,
}

impl std::fmt::Debug for HealthFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthFile")
            .field("path", &self.path)
            .field("boot_id", &self.boot_id)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl HealthFile {
    /// The record in `run_dir`.
    pub fn new(run_dir: &Path) -> Self {
        let boot_id = fs::read_to_string(BOOT_ID)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            path: run_dir.join(HEALTH_FILE),
            boot_id,
            last: None,
            boottime: Box::new(boottime),
        }
    }

    /// The same file, with boot times read from `clock` instead of
    /// CLOCK_BOOTTIME: for the simulation, whose clock is tokio's.
    pub fn with_boot_clock(
        mut self,
        clock: impl Fn() -> Option<Duration> + Send + 'static,
    ) -> Self {
        self.boottime = Box::new(clock);
        self
    }

    /// The instant of the last successful probe a filter may resume from
    /// (see [`StabilityFilter::resumed_since`]), if the record is from this
    /// boot, healthy and younger than `buffer`. Logs the decision.
    pub fn resume(&self, buffer: Duration) -> Option<Instant> {
        let text = fs::read_to_string(&self.path).ok()?;
        let record: Record = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring an unreadable health record; starting unhealthy");
                return None;
            }
        };
        let now = (self.boottime)()?;
        let Some(age) = resumable(&record, &self.boot_id, now, buffer) else {
            tracing::info!(path = %self.path.display(), "the last health record is not recent and healthy; starting unhealthy (campaigning after the stability buffer)");
            return None;
        };
        let last_ok = Instant::now().checked_sub(age)?;
        tracing::info!(
            path = %self.path.display(),
            age_ms = age.as_millis() as u64,
            "resuming healthy: the local API server was healthy {age:?} ago, within the stability buffer"
        );
        Some(last_ok)
    }

    /// Writes `report` when [`due`]; a failure is logged, never fatal.
    pub fn record(&mut self, report: &HealthReport) {
        let now = Instant::now();
        if !due(self.last, report, now) {
            return;
        }
        let Some(boottime) = (self.boottime)() else {
            return;
        };
        // The probe finished a moment before we got its report.
        let at = boottime.saturating_sub(now.saturating_duration_since(report.result.at));
        let record = Record {
            healthy: report.healthy,
            boot_id: self.boot_id.clone(),
            boottime_ms: at.as_millis() as u64,
        };
        match write_atomically(&self.path, &record) {
            Ok(()) => self.last = Some((report.healthy, now)),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the health record; a restart will wait the full stability buffer (check run_dir)")
            }
        }
    }
}

/// Runs [`super::monitor_paced`] and records its reports in `file` on
/// their way to `reports`.
pub async fn monitor_recorded<P: Probe>(
    probe: P,
    pace: super::Pace,
    filter: StabilityFilter,
    mut file: HealthFile,
    reports: mpsc::Sender<HealthReport>,
) {
    let (tx, mut rx) = mpsc::channel(16);
    let forward = async {
        while let Some(report) = rx.recv().await {
            file.record(&report);
            if reports.send(report).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = super::monitor_paced(probe, pace, filter, tx) => {}
        () = forward => {}
    }
}

/// CLOCK_BOOTTIME: a system call, since `ProcSubset=pid` hides `/proc/uptime`.
fn boottime() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::from(t))
}

/// Temp file and rename: a daemon killed mid-write leaves the old record.
fn write_atomically(path: &Path, record: &Record) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{HEALTH_FILE}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    // Invariant: Record has only plain fields; serializing cannot fail.
    f.write_all(&serde_json::to_vec(record).expect("Record serializes"))?;
    drop(f);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProbeResult;

    const S: Duration = Duration::from_secs(1);

    fn record(healthy: bool, boot: &str, at: Duration) -> Record {
        Record {
            healthy,
            boot_id: boot.into(),
            boottime_ms: at.as_millis() as u64,
        }
    }

    fn report(stable: bool, raw: bool, at: Instant) -> HealthReport {
        HealthReport {
            result: ProbeResult {
                healthy: raw,
                failure: None,
                reason: "test".into(),
                at,
            },
            healthy: stable,
            changed: false,
            took: Duration::ZERO,
        }
    }

    #[test]
    fn resumes_only_a_healthy_record_of_this_boot_within_the_buffer() {
        let b = 5 * S;
        let r = record(true, "boot-a", 100 * S);
        assert_eq!(resumable(&r, "boot-a", 103 * S, b), Some(3 * S));
        assert_eq!(
            resumable(&r, "boot-a", 105 * S, b),
            None,
            "a whole buffer ago"
        );
        assert_eq!(resumable(&r, "boot-b", 101 * S, b), None, "another boot");
        assert_eq!(resumable(&r, "boot-a", 99 * S, b), None, "from the future");
        let unhealthy = record(false, "boot-a", 100 * S);
        assert_eq!(resumable(&unhealthy, "boot-a", 100 * S, b), None);
        // Without /proc/sys on either side, boot time alone decides.
        assert_eq!(resumable(&r, "", 101 * S, b), Some(S));
        let unknown = record(true, "", 100 * S);
        assert_eq!(resumable(&unknown, "boot-b", 104 * S, b), Some(4 * S));
        assert_eq!(
            resumable(&unknown, "boot-b", 50 * S, b),
            None,
            "a later boot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_on_change_and_a_heartbeat_only_after_successes() {
        let t = Instant::now();
        assert!(due(None, &report(false, false, t), t), "first report");
        let last = Some((false, t));
        assert!(!due(last, &report(false, true, t + S), t + S), "no change");
        assert!(
            !due(last, &report(false, false, t + 9 * S), t + 9 * S),
            "no heartbeat while unhealthy"
        );
        assert!(
            due(last, &report(true, true, t + S), t + S),
            "flip to healthy"
        );
        let last = Some((true, t + S));
        assert!(!due(
            last,
            &report(true, true, t + 1500 * Duration::from_millis(1)),
            t + 1500 * Duration::from_millis(1)
        ));
        assert!(
            due(last, &report(true, true, t + 2 * S), t + 2 * S),
            "heartbeat"
        );
        assert!(
            !due(last, &report(true, false, t + 3 * S), t + 3 * S),
            "a failure keeps the last success"
        );
        assert!(
            !due(None, &report(true, false, t), t),
            "not even as the first record"
        );
        assert!(
            due(last, &report(false, false, t + 3 * S), t + 3 * S),
            "flip to unhealthy"
        );
    }

    #[tokio::test]
    async fn a_written_record_resumes_within_the_buffer_and_not_after_a_flip() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = HealthFile::new(dir.path());
        assert!(!file.boot_id.is_empty(), "this kernel has {BOOT_ID}");
        assert_eq!(file.resume(5 * S), None, "no record yet");
        file.record(&report(true, true, Instant::now()));
        let text = fs::read_to_string(dir.path().join(HEALTH_FILE)).unwrap();
        let r: Record = serde_json::from_str(&text).unwrap();
        assert!(r.healthy);
        assert_eq!(r.boot_id, file.boot_id);
        let last_ok = HealthFile::new(dir.path()).resume(5 * S).expect("resumes");
        assert!(last_ok <= Instant::now());
        assert!(
            Instant::now() - last_ok < S,
            "{:?}",
            Instant::now() - last_ok
        );
        // The daemon saw its API server fail for the buffer: no resume.
        file.record(&report(false, false, Instant::now()));
        assert_eq!(HealthFile::new(dir.path()).resume(5 * S), None);
        // A torn or foreign file is ignored, not fatal.
        fs::write(dir.path().join(HEALTH_FILE), "{").unwrap();
        assert_eq!(HealthFile::new(dir.path()).resume(5 * S), None);
    }
}
