//! The daemon's side of the control socket: accept, check the peer, read
//! one request, check it against the cluster, hand it to the main loop, and
//! write back its answer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::checks::Checks;
use super::{ControlError, Reply, Request};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked request for the main loop, and where its answer goes.
#[derive(Debug)]
pub struct Pending {
    /// What the operator asked for.
    pub request: Request,
    reply: oneshot::Sender<Reply>,
}

impl Pending {
    /// A request from inside the daemon (preemption), and its answer.
    pub(crate) fn new(request: Request) -> (Self, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        (Self { request, reply }, rx)
    }

    /// Sends the answer; a client that went away meanwhile misses it, and
    /// what was done stays done.
    pub fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// The bound control socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` (mode 0600). The caller must hold the single-instance
    /// lock: a file left there by a killed daemon is removed first, which
    /// only the one daemon of the node may do. Needs a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        // The peer check below holds even if this mode is loosened later.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the daemon drops its receiver of `tx`;
    /// `checks` judge each request before the main loop sees it.
    pub fn spawn(self, checks: Checks, tx: mpsc::Sender<Pending>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = self.listener.accept() => r,
                    () = tx.closed() => break,
                };
                match stream {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, checks.clone(), tx.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, socket = %self.path.display(), "accepting a control connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            let _ = std::fs::remove_file(&self.path);
        })
    }
}

/// One connection: root only, one request, one answer.
async fn serve(stream: UnixStream, checks: Checks, tx: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let peer = write.as_ref().peer_cred();
    let reply = match peer {
        Ok(c) if c.uid() == 0 => handle(read, &checks, &tx).await,
        Ok(c) => {
            tracing::warn!(
                uid = c.uid(),
                pid = c.pid(),
                "refused a control request from a process not running as root"
            );
            Some(Reply::refused(format!(
                "refused: the ha-vip control socket is for root only (you are uid {}); run the command as root (sudo)",
                c.uid()
            )))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a control client's credentials; refused");
            Some(Reply::refused(
                "refused: the daemon cannot tell who you are",
            ))
        }
    };
    let Some(reply) = reply else { return };
    let mut line = serde_json::to_string(&reply).unwrap_or_default();
    line.push('\n');
    let _ = write.write_all(line.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// Reads, checks and forwards one request; `None` when there is nobody to
/// answer (the client sent nothing whole).
async fn handle(
    read: tokio::net::unix::OwnedReadHalf,
    checks: &Checks,
    tx: &mpsc::Sender<Pending>,
) -> Option<Reply> {
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        // Gone, silent or cut off: nothing was asked, nothing changes.
        Err(_) | Ok(Err(_)) => return None,
        Ok(Ok(_)) if !line.ends_with('\n') => return None,
        Ok(Ok(_)) => {}
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            return Some(Reply::refused(format!(
                "not a request this daemon understands ({e}); are `ha-vip` and the running daemon the same version?"
            )));
        }
    };
    if let Err(why) = checks.check(&request).await {
        tracing::info!(?request, "control request refused: {why}");
        return Some(Reply::refused(why));
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    let pending = Pending {
        request,
        reply: reply_tx,
    };
    if tx.send(pending).await.is_err() {
        return Some(Reply::refused("the daemon is shutting down"));
    }
    Some(
        reply_rx
            .await
            .unwrap_or_else(|_| Reply::refused("the daemon is shutting down")),
    )
}
