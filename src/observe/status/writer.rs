//! Writing the status file: atomically, and only when it changed.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::{MetricsStatus, Status, StatusError};

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
    /// [`crate::observe::spawn_metrics_endpoint`]) in every status written.
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
        crate::observe::run_dir::write_atomically(&self.path, &bytes)?;
        self.last = Some(bytes);
        Ok(true)
    }
}
