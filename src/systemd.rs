//! The systemd notification protocol (`sd_notify(3)`): readiness, status,
//! reload, stop and watchdog keep-alives.
//!
//! [`SdNotifier`] reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`
//! once, at construction, and never changes the environment (unlike
//! `sd_notify`'s `*_and_unset_env` functions, which call `remove_var` and are
//! unsound once threads run). Without `NOTIFY_SOCKET` every call is a no-op.
//! Each message is one datagram, fields separated by `\n`, sent from a fresh
//! unbound socket like libsystemd does, so a restarted systemd (same socket
//! path, new socket) is reached without reconnecting.
//!
//! The watchdog is pinged from the daemon's main loop ([`WatchdogTimer`]), not
//! from a side thread: a loop that hangs stops pinging and systemd restarts it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither a path nor an abstract socket name.
    #[error(
        "NOTIFY_SOCKET={0:?} is not supported: expected an absolute path or an abstract socket name starting with '@'"
    )]
    UnsupportedAddress(OsString),
    /// The datagram could not be sent.
    #[error("failed to send {what} to systemd at NOTIFY_SOCKET={addr:?}: {source}")]
    Send {
        /// First field of the message, e.g. `READY=1`.
        what: String,
        /// The socket address as given in `NOTIFY_SOCKET`.
        addr: OsString,
        /// The underlying error.
        source: io::Error,
    },
    /// `CLOCK_MONOTONIC` could not be read for `MONOTONIC_USEC=`.
    #[error("failed to read CLOCK_MONOTONIC for the reload notification: {0}")]
    Clock(io::Error),
}

/// The service manager notification protocol, as the daemon uses it.
///
/// Implementors only provide [`Notifier::send`] and
/// [`Notifier::watchdog_timeout`]; the message forms live in the provided
/// methods so the real and the fake notifier send the same bytes.
pub trait Notifier: Send + Sync {
    /// Sends one datagram of `\n`-separated `KEY=VALUE` fields.
    fn send(&self, datagram: &str) -> Result<(), NotifyError>;

    /// The watchdog timeout systemd enforces (`WatchdogSec=`), if any.
    fn watchdog_timeout(&self) -> Option<Duration>;

    /// Start-up (or a reload) is complete: `READY=1`.
    fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1")
    }

    /// Free-form one-line status shown by `systemctl status`: `STATUS=...`.
    fn status(&self, text: &str) -> Result<(), NotifyError> {
        // A newline would start a new field; the status is one line.
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
    }

    /// The daemon is shutting down: `STOPPING=1`.
    fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// A reload began: `RELOADING=1` with `MONOTONIC_USEC=` (systemd >= 253
    /// requires both for `Type=notify-reload`); send [`Notifier::ready`] when
    /// the reload is done.
    fn reloading(&self) -> Result<(), NotifyError> {
        let now = monotonic_usec().map_err(NotifyError::Clock)?;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"))
    }

    /// Watchdog keep-alive: `WATCHDOG=1`.
    fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1")
    }

    /// How often to ping the watchdog: half its timeout, as sd_watchdog_enabled(3) advises.
    fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_timeout().map(|t| t / 2)
    }
}

/// Microseconds of `CLOCK_MONOTONIC`, the clock systemd compares reloads against.
fn monotonic_usec() -> io::Result<u128> {
    match sd_notify::NotifyState::monotonic_usec_now()? {
        sd_notify::NotifyState::MonotonicUsec(usec) => u128::try_from(usec)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative monotonic time")),
        // Invariant: monotonic_usec_now only returns MonotonicUsec.
        other => unreachable!("monotonic_usec_now returned {other:?}"),
    }
}

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
    Unsupported,
}

/// The real notifier, talking to the socket systemd passed in the environment.
#[derive(Debug, Clone)]
pub struct SdNotifier {
    /// `NOTIFY_SOCKET` as given, for messages; `None` makes every call a no-op.
    addr: Option<OsString>,
    target: Target,
    watchdog_timeout: Option<Duration>,
}

impl SdNotifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, leaving them set.
    pub fn from_env() -> Self {
        let watchdog = watchdog_from(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        Self::new(std::env::var_os("NOTIFY_SOCKET").as_deref(), watchdog)
    }

    /// A notifier for `socket` (`NOTIFY_SOCKET` syntax: a path or `@abstract`).
    pub fn new(socket: Option<&OsStr>, watchdog_timeout: Option<Duration>) -> Self {
        let target = match socket.map(OsStr::as_bytes) {
            Some([b'@', name @ ..]) => Target::Abstract(name.to_vec()),
            Some(path @ [b'/', ..]) => Target::Path(PathBuf::from(OsStr::from_bytes(path))),
            _ => Target::Unsupported,
        };
        Self {
            addr: socket.filter(|s| !s.is_empty()).map(OsStr::to_os_string),
            target,
            watchdog_timeout,
        }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` was set).
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }
}

/// Parses `WATCHDOG_USEC`; a `WATCHDOG_PID` naming another process (we are
/// a child of the service's main process) means the watchdog is not ours.
fn watchdog_from(usec: Option<&OsStr>, pid: Option<&OsStr>, own_pid: u32) -> Option<Duration> {
    let parse = |s: &OsStr| s.to_str()?.trim().parse::<u64>().ok();
    let usec = usec.and_then(parse).filter(|&u| u > 0)?;
    match pid {
        Some(pid) if parse(pid) != Some(u64::from(own_pid)) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

impl Notifier for SdNotifier {
    fn send(&self, datagram: &str) -> Result<(), NotifyError> {
        let Some(addr) = &self.addr else {
            return Ok(());
        };
        let what = datagram.lines().next().unwrap_or_default().to_owned();
        let send_err = |source| NotifyError::Send {
            what: what.clone(),
            addr: addr.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(send_err)?;
        // Never wait: the main loop sends these, and a wedged systemd (or a
        // full queue) must not stall lease renewals or the fence deadline.
        // A notification that does not fit is dropped and reported.
        sock.set_nonblocking(true).map_err(send_err)?;
        let sent = match &self.target {
            Target::Path(path) => sock.send_to(datagram.as_bytes(), path),
            Target::Abstract(name) => SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(datagram.as_bytes(), &a)),
            Target::Unsupported => return Err(NotifyError::UnsupportedAddress(addr.clone())),
        }
        .map_err(send_err)?;
        if sent != datagram.len() {
            return Err(send_err(io::Error::new(
                io::ErrorKind::WriteZero,
                "datagram truncated",
            )));
        }
        Ok(())
    }

    fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog_timeout
    }
}

/// A notifier that records every datagram, for tests of the daemon.
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier {
    sent: Arc<Mutex<Vec<String>>>,
    watchdog_timeout: Option<Duration>,
}

impl RecordingNotifier {
    /// A recorder that reports `watchdog_timeout` as the configured watchdog.
    pub fn new(watchdog_timeout: Option<Duration>) -> Self {
        Self {
            sent: Arc::default(),
            watchdog_timeout,
        }
    }

    /// Every datagram sent so far, oldest first (shared by all clones).
    pub fn sent(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Notifier for RecordingNotifier {
    fn send(&self, datagram: &str) -> Result<(), NotifyError> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(datagram.to_owned());
        Ok(())
    }

    fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog_timeout
    }
}

/// Ticks when the watchdog is due; never, when systemd set no watchdog.
///
/// Meant for a `tokio::select!` branch of the main loop:
/// `_ = watchdog.tick() => notifier.watchdog()?`. The first tick is immediate.
#[derive(Debug)]
pub struct WatchdogTimer {
    interval: Option<tokio::time::Interval>,
}

impl WatchdogTimer {
    /// A timer for `notifier`'s ping interval (half the watchdog timeout).
    pub fn new(notifier: &dyn Notifier) -> Self {
        Self::with_period(notifier.watchdog_interval())
    }

    /// A timer ticking every `period`; `None` never ticks.
    pub fn with_period(period: Option<Duration>) -> Self {
        let interval = period.filter(|p| !p.is_zero()).map(|p| {
            let mut interval = tokio::time::interval(p);
            // After a stall, ping once and resume the rhythm: a burst of
            // catch-up pings would hide how late the loop was.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Self { interval }
    }

    /// Waits for the next ping; cancel-safe.
    pub async fn tick(&mut self) {
        match &mut self.interval {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn watchdog_usec_is_parsed_and_pid_must_match() {
        let two_s = Some(Duration::from_secs(2));
        assert_eq!(watchdog_from(os("2000000"), None, 42), two_s);
        assert_eq!(watchdog_from(os("2000000"), os("42"), 42), two_s);
        assert_eq!(watchdog_from(os("2000000"), os("41"), 42), None);
        assert_eq!(watchdog_from(os("2000000"), os("junk"), 42), None);
        assert_eq!(watchdog_from(os("0"), None, 42), None);
        assert_eq!(watchdog_from(os("ten"), None, 42), None);
        assert_eq!(watchdog_from(None, os("42"), 42), None);
    }

    #[test]
    fn ping_interval_is_half_the_timeout() {
        let n = RecordingNotifier::new(Some(Duration::from_secs(10)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        assert_eq!(RecordingNotifier::default().watchdog_interval(), None);
    }

    #[test]
    fn without_notify_socket_every_call_is_a_no_op() {
        let n = SdNotifier::new(None, None);
        assert!(!n.enabled());
        n.ready().unwrap();
        n.status("x").unwrap();
        n.watchdog().unwrap();
    }

    #[test]
    fn an_unsupported_address_is_reported() {
        let n = SdNotifier::new(os("vsock:2:1234"), None);
        let err = n.ready().unwrap_err();
        assert!(matches!(err, NotifyError::UnsupportedAddress(_)), "{err}");
    }

    #[test]
    fn the_recorder_keeps_what_was_sent_across_clones() {
        let n = RecordingNotifier::default();
        let clone = n.clone();
        clone.ready().unwrap();
        clone.status("leader\nholding").unwrap();
        assert_eq!(n.sent(), ["READY=1", "STATUS=leader holding"]);
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_timer_ticks_at_the_period_or_never() {
        let start = tokio::time::Instant::now();
        let mut t = WatchdogTimer::with_period(Some(Duration::from_secs(5)));
        t.tick().await;
        t.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let mut never = WatchdogTimer::with_period(None);
        let r = tokio::time::timeout(Duration::from_secs(3600), never.tick()).await;
        assert!(r.is_err(), "a disabled watchdog must never tick");
    }
}
