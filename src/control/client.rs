//! The command-line side: send one request, read one reply.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{ControlError, Reply, Request};

/// How long the client waits for the daemon's answer: a handover removes
/// the VIPs first, which takes well under a second.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `request` to the daemon listening on `socket` and returns its reply.
pub fn send(socket: &Path, request: &Request) -> Result<Reply, ControlError> {
    let path = socket.to_path_buf();
    let mut stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        ErrorKind::PermissionDenied => ControlError::Denied { path: path.clone() },
        _ => ControlError::NotRunning {
            path: path.clone(),
            source,
        },
    })?;
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|source| ControlError::Protocol {
        path: path.clone(),
        source,
    })?;
    line.push('\n');
    // A daemon that refuses us (not root) answers before it reads: its
    // answer is what to show, not the broken pipe of our write.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    if answer.is_empty() {
        sent.map_err(io)?;
        read.map_err(io)?;
        return Err(io(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the daemon closed the connection without an answer",
        )));
    }
    serde_json::from_str(&answer).map_err(|source| ControlError::Protocol { path, source })
}
