//! The drained state, kept in `state_dir` across restarts and reboots.
//!
//! The file's presence is the state: written (and synced) before the daemon
//! acts on a drain, removed before it acts on an undrain. A failure to write
//! or remove it refuses the command, so what the daemon does and what a
//! restart would find never disagree.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ControlError;

/// Name of the file whose presence means "drained".
pub const DRAINED_FILE: &str = "drained";

/// The drained state of one node, in `state_dir`.
#[derive(Debug, Clone)]
pub struct DrainState {
    dir: PathBuf,
}

impl DrainState {
    /// The state kept in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(DRAINED_FILE)
    }

    /// Whether the node is drained. An unreadable state directory is an
    /// error for the caller to report (the daemon then starts undrained and
    /// says so).
    pub fn drained(&self) -> Result<bool, ControlError> {
        match fs::symlink_metadata(self.path()) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ControlError::State {
                path: self.path(),
                source,
            }),
        }
    }

    /// Records the drain durably (the directory is created 0700 if
    /// missing): a new file written, synced, then renamed into place and
    /// the directory synced.
    pub fn set(&self) -> Result<(), ControlError> {
        let path = self.path();
        let err = |source| ControlError::State {
            path: path.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(err)?;
        let tmp = self
            .dir
            .join(format!(".{DRAINED_FILE}.{}", std::process::id()));
        let text = format!(
            "drained at {} by `ha-vip drain`; `ha-vip undrain` removes this file\n",
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            err(e)
        })
    }

    /// Removes the drain durably; nothing to do when not drained.
    pub fn clear(&self) -> Result<(), ControlError> {
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| ControlError::State { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ControlError::State { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_kept_until_cleared_and_a_missing_dir_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = DrainState::new(&dir.path().join("state"));
        assert!(!state.drained().unwrap());
        state.set().unwrap();
        assert!(state.drained().unwrap());
        // Another handle (a restarted daemon) sees it.
        assert!(
            DrainState::new(&dir.path().join("state"))
                .drained()
                .unwrap()
        );
        state.clear().unwrap();
        assert!(!state.drained().unwrap());
        state.clear().unwrap();
    }

    #[test]
    fn an_unwritable_state_dir_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let err = DrainState::new(&file)
            .set()
            .expect_err("state_dir is a file");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
        assert!(err.to_string().contains("nothing changed"), "{err}");
    }
}
