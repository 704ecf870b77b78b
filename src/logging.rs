//! Where log lines go: journald under systemd, stderr otherwise.
//!
//! Under systemd, structured fields (`vip`, `interface`, `role`, `reason`,
//! ...) become journal fields of their own (`VIP=`, `INTERFACE=`, ...), so
//! `journalctl -u ha-vip ROLE=holder` works. The level comes from the
//! configuration; `RUST_LOG` overrides it with full `EnvFilter` syntax.

use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where [`init`] sent the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, with structured fields.
    Journald,
    /// Human-readable lines on stderr.
    Stderr,
}

/// Sets up logging at `level` (`error` .. `trace`), overridden by
/// `RUST_LOG`: to journald when systemd connected stderr to the journal,
/// else to stderr. Falls back to stderr, with a warning, when journald
/// cannot be reached. Only the first call in a process takes effect.
pub fn init(level: &str) -> Sink {
    let (filter, bad_env) = filter(level);
    let journal = stderr_is_journal().then(|| {
        tracing_journald::layer().map(|l| {
            // Plain upper-case names (VIP=, ROLE=), not the crate's F_ prefix.
            l.with_field_prefix(None)
                .with_syslog_identifier("ha-vip".to_string())
        })
    });
    let sink = match journal {
        Some(Ok(layer)) => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            Sink::Journald
        }
        Some(Err(e)) => {
            install_stderr(filter);
            tracing::warn!(error = %e, "journald is unreachable; logging to stderr");
            Sink::Stderr
        }
        None => {
            install_stderr(filter);
            Sink::Stderr
        }
    };
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, level, "RUST_LOG is not a valid filter; using the configured level");
    }
    sink
}

/// Sets up human-readable logging to stderr at `level` (`RUST_LOG` still
/// overrides), whoever started the process: for short commands such as
/// `check-config` whose output a person reads.
pub fn init_stderr(level: &str) {
    let (filter, bad_env) = filter(level);
    install_stderr(filter);
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, level, "RUST_LOG is not a valid filter; using the configured level");
    }
}

fn install_stderr(filter: EnvFilter) {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// The filter from `RUST_LOG` when it is set and valid, else from `level`;
/// with the reason `RUST_LOG` was ignored, if it was.
fn filter(level: &str) -> (EnvFilter, Option<String>) {
    let configured = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (configured(), Some(e.to_string())),
        },
        _ => (configured(), None),
    }
}

/// True when stderr is the stream systemd connected to the journal.
///
/// `JOURNAL_STREAM` is inherited by children whose stderr was redirected,
/// so systemd.exec(5) asks to compare it with stderr's device and inode.
fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(var) = var.to_str() else {
        return false;
    };
    let meta = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match meta {
        Ok(m) => journal_stream_matches(var, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Whether a `JOURNAL_STREAM` value (`DEVICE:INODE`, decimal) names the
/// file with this device and inode number.
fn journal_stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::journal_stream_matches;

    #[test]
    fn journal_stream_must_name_this_stderr() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 1235));
        assert!(!journal_stream_matches("9:1234", 8, 1234));
        assert!(!journal_stream_matches("garbage", 8, 1234));
        assert!(!journal_stream_matches("", 0, 0));
    }
}
