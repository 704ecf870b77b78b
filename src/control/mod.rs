//! Operator controls of a running daemon: `ha-vip drain`, `undrain` and
//! `handover`, over a unix socket in `run_dir` that only root may use.
//!
//! The socket is bound by the daemon only after it holds the single-instance
//! lock ([`crate::instance`]), so the one daemon allowed on the node is the
//! one that answers; a stale socket file of a killed daemon is removed by the
//! next one, never by anyone else. Two checks keep other users out: the
//! socket file is mode 0600 (connect needs write permission), and every
//! connection's peer credentials (`SO_PEERCRED`, set by the kernel at
//! connect) must be uid 0, so a socket file whose mode was loosened still
//! answers nobody else.
//!
//! One request per connection, one JSON line each way. A request is applied
//! whole or not at all: one that never fully arrived (client gone) changes
//! nothing, and a drain is written to `state_dir` before the daemon acts on
//! it, so a restart in the middle finds it drained, as the operator asked.

pub mod checks;
pub mod client;
pub mod preempt;
pub mod server;
pub mod state;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Stop campaigning; hand the VIP over if held; stay out until undrained.
    Drain {
        /// Drain even the last healthy node (or when the daemon cannot count).
        #[serde(default)]
        force: bool,
    },
    /// Campaign again (once healthy).
    Undrain,
    /// The holder hands over, to `to` or to any healthy standby.
    Handover {
        /// The node that should take over; any healthy standby when `None`.
        #[serde(default)]
        to: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Done (true) or refused/failed (false).
    pub ok: bool,
    /// What was done, or why not and what to do.
    pub message: String,
}

impl Reply {
    /// Done: `message` says what happened.
    pub fn done(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }

    /// Refused or failed: `message` says why and what to do.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }
}

/// Why a control could not be sent, served or kept.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon answers on the socket.
    #[error(
        "ha-vip is not running on this node (nothing answers on {}: {source}); start it (systemctl start ha-vip)",
        path.display()
    )]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// Why the connect failed.
        source: std::io::Error,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on {}: the control socket is for root only; run the command as root (sudo)",
        path.display()
    )]
    Denied {
        /// The socket.
        path: PathBuf,
    },
    /// Sending or receiving failed half-way.
    #[error(
        "the control request over {} failed: {source}; check `ha-vip status` for what the daemon did",
        path.display()
    )]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not what a daemon of this version sends.
    #[error(
        "the daemon's answer over {} is not valid: {source}; is the running daemon another ha-vip version? (systemctl restart ha-vip)",
        path.display()
    )]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The daemon could not bind the socket.
    #[error(
        "cannot serve the control socket {}: {source}; ha-vip drain/undrain/handover will not work until the daemon is restarted (check run_dir)",
        path.display()
    )]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The drained state could not be written or removed.
    #[error(
        "cannot record the drain in {}: {source}; nothing changed (check state_dir: it must be a directory root can write, systemd's StateDirectory=ha-vip)",
        path.display()
    )]
    State {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
