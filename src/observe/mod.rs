//! What ha-vip tells the operator: the status file `ha-vip status` reads and
//! the Prometheus metrics.
//!
//! The daemon keeps one [`Status`] and one [`Metrics`], updates them as events
//! arrive and calls [`StatusWriter::write`] after each change; it starts
//! [`spawn_metrics_endpoint`] once at start, which never fails the daemon.

mod endpoint;
mod http;
mod metrics;
mod run_dir;
mod status;

pub use crate::role::{Role, TransitionReason};
pub use endpoint::spawn_metrics_endpoint;
pub use http::{MetricsError, MetricsServer};
pub use metrics::{AnnounceFamily, LeaseOp, Metrics};
pub use run_dir::check_run_dir;
pub use status::{
    ClientCertificate, MetricsStatus, Probe, Status, StatusError, StatusWriter, Timestamp,
    Transition, VipStatus, print_status, render_status, running_daemon, write_status,
};
