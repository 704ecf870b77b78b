//! The cluster credential as a security matter: issuing a least-privilege
//! one (`ha-vip credential issue`), and warning, at start and in
//! `check-config`, when the configured one is more powerful than ha-vip
//! needs or its files are open to other users.
//!
//! Loading the credential for use is `crate::kube`'s business; this module
//! only inspects it.

mod audit;
mod issue;
mod masters;

pub use audit::{FileWarning, file_warnings, log_file_warnings, write_file_warnings};
pub use issue::{IssueError, IssueRequest, Issued, issue};
pub use masters::{admin_groups, warn_if_cluster_admin};

/// The RBAC user of `packaging/kubernetes/rbac.yaml`: the certificate's CN.
pub const RBAC_USER: &str = "ha-vip-node";
