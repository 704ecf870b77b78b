//! One `ha-vip run` per node: an exclusive `flock(2)` on `run_dir/ha-vip.lock`.
//!
//! Two daemons on one node break every promise at once: the second one's
//! startup cleanup deletes the first one's live VIPs, both renew "our own"
//! Lease, and the second one's release lets a standby in while the first
//! still holds the VIP. So `run` takes this lock before it touches the
//! interface or the Lease and keeps it for its whole life, and `release`
//! (systemd's ExecStopPost) refuses while anyone holds it.
//!
//! Why `flock` and not a pid file alone: the kernel drops the lock when the
//! holder dies, however it dies (SIGKILL, OOM), so a stale file never blocks
//! a restart, and a recycled pid never fakes a running daemon. The file is
//! opened close-on-exec (std's default), so no child inherits the lock, and
//! it is held through the descriptor, so a `chdir` or a deleted `run_dir`
//! entry changes nothing for the holder. The pid written into the file is
//! only for the message.
//!
//! A lock on a file excludes nobody once the file is unlinked, and systemd
//! removes `RuntimeDirectory=` (`/run/ha-vip`) when the unit stops, also
//! while an `ha-vip run` started by hand holds the lock in it. So the lock
//! also binds an abstract unix socket named after `run_dir`: the name
//! lives in the kernel, not in a directory anyone can delete, and is freed
//! when its holder dies, however it dies.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Name of the lock file inside `run_dir`.
pub const LOCK_FILE: &str = "ha-vip.lock";

/// Why the single-instance lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another process holds the lock: a daemon runs on this node.
    #[error(
        "another ha-vip is running on this node (pid {}, holding {}); only one may run, stop it first (systemctl stop ha-vip)",
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        path.display()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The pid the holder wrote into it, if it did yet.
        pid: Option<u32>,
    },
    /// The lock file (or `run_dir`) could not be created or opened.
    #[error(
        "cannot open the lock file {}: {source} (run_dir must be a writable directory; ha-vip runs as root)",
        path.display()
    )]
    Open {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `flock` itself failed (not "held by another").
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    /// Kept open: the lock lives as long as this descriptor.
    _file: Flock<File>,
    /// Kept bound: the abstract name is ours as long as this socket.
    _name: UnixListener,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock in `run_dir` (created if missing) without waiting and
    /// writes our pid into it; fails with [`InstanceError::Held`] naming the
    /// holder's pid when another process has it.
    pub fn acquire(run_dir: &Path) -> Result<Self, InstanceError> {
        let path = run_dir.join(LOCK_FILE);
        let open_err = |source| InstanceError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(run_dir).map_err(open_err)?;
        // Not truncated on open: the holder's pid must survive our attempt.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(open_err)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(InstanceError::Held {
                    pid: read_pid(&mut file),
                    path,
                });
            }
            Err((_, errno)) => {
                return Err(InstanceError::Lock {
                    path,
                    source: errno.into(),
                });
            }
        };
        let name = match bind_name(run_dir) {
            Ok(name) => name,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(InstanceError::Held {
                    pid: read_pid(&mut file),
                    path,
                });
            }
            Err(source) => return Err(InstanceError::Lock { path, source }),
        };
        // Best effort: the pid is only for the message of a second instance.
        let pid = std::process::id();
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"));
        Ok(Self {
            _file: file,
            _name: name,
            path,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the abstract unix socket `ha-vip:<run_dir>` (made absolute; its
/// last 100 bytes, the limit being 107), close-on-exec like every socket
/// std opens.
fn bind_name(run_dir: &Path) -> std::io::Result<UnixListener> {
    let dir = std::path::absolute(run_dir)?;
    let dir: PathBuf = dir.components().collect();
    let mut name = b"ha-vip:".to_vec();
    name.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    let name = &name[name.len().saturating_sub(100)..];
    UnixListener::bind_addr(&SocketAddr::from_abstract_name(name)?)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_and_a_dropped_one_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let first = InstanceLock::acquire(&run_dir).expect("first lock");
        assert_eq!(first.path(), run_dir.join(LOCK_FILE));
        // A second open file description conflicts even within one process.
        let err = InstanceLock::acquire(&run_dir).expect_err("second lock");
        let me = std::process::id();
        assert!(
            matches!(&err, InstanceError::Held { pid: Some(p), .. } if *p == me),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        drop(first);
        // A stale file with a pid in it does not block.
        assert!(run_dir.join(LOCK_FILE).exists());
        InstanceLock::acquire(&run_dir).expect("lock after the holder dropped it");
    }

    /// systemd removes `RuntimeDirectory=` (/run/ha-vip) when the unit
    /// stops, also while an `ha-vip run` started by hand holds the lock in
    /// it: `systemctl start ha-vip` after that (the unit's own start having
    /// failed at the lock, then `systemctl stop`) creates a new lock file
    /// and runs a second daemon beside the first. Fails today: the lock of
    /// a deleted file excludes nobody.
    #[test]
    fn a_lock_whose_run_dir_was_removed_still_excludes_a_second_instance() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let _first = InstanceLock::acquire(&run_dir).expect("first lock");
        std::fs::remove_dir_all(&run_dir).unwrap();
        let second = InstanceLock::acquire(&run_dir);
        assert!(
            matches!(second, Err(InstanceError::Held { .. })),
            "a second instance got the lock while the first still holds it: {second:?}"
        );
    }

    #[test]
    fn an_unwritable_run_dir_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let err = InstanceLock::acquire(&file).expect_err("run_dir is a file");
        assert!(matches!(err, InstanceError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
