//! The cluster credential as a security matter: warning, at start and in
//! `check-config`, when its files are open to other users.
//!
//! Loading the credential for use is `crate::kube`'s business; this module
//! only inspects it.

mod audit;

pub use audit::{FileWarning, file_warnings, log_file_warnings, write_file_warnings};
