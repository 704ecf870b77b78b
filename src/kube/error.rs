//! Typed API errors, each saying what to do about it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a request was for: the RBAC verb and resource, so that errors can
/// name the exact rule that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// RBAC verb: `get`, `list`, `watch`, `create`, `update`.
    pub verb: &'static str,
    /// Resource with its API group, e.g. `leases.coordination.k8s.io`.
    pub resource: &'static str,
    /// Namespace, `None` for cluster-scoped requests.
    pub namespace: Option<Arc<str>>,
    /// Object name, if the request names one.
    pub name: Option<Arc<str>>,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace {ns}")?;
        }
        Ok(())
    }
}

impl Operation {
    fn namespace_text(&self) -> String {
        self.namespace
            .as_deref()
            .map_or_else(|| "the cluster".to_string(), |ns| format!("namespace {ns}"))
    }
}

/// A failure to reach or use the Kubernetes API. Cloneable (it holds only
/// text) so it can travel in events and be produced by fakes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// A credential or CA file could not be read.
    #[error("failed to read {what} {}: {reason}", path.display())]
    ReadFile {
        /// What the file is (token file, CA bundle...).
        what: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The kubeconfig is unusable.
    #[error("kubeconfig {}{at}: {reason}", path.display())]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// `:LINE:COLUMN` of the problem, or empty.
        at: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A PEM certificate or key is malformed.
    #[error("invalid {what}: {reason}; expected PEM (-----BEGIN ...-----)")]
    Pem {
        /// Which certificate or key.
        what: String,
        /// Parser message.
        reason: String,
    },
    /// A certificate or key is well-formed PEM but cannot be used.
    #[error("invalid {what}: {reason}")]
    Certificate {
        /// Which certificate or key.
        what: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client: {0}")]
    BuildClient(String),
    /// `k8s.api_server` is not a usable URL.
    #[error("invalid API server URL {url:?}: {reason}; expected e.g. https://127.0.0.1:6443")]
    InvalidUrl {
        /// The configured URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// TCP connection failed.
    #[error(
        "cannot connect to the API server at {server}: {reason} (is kube-apiserver running and listening there? check k8s.api_server)"
    )]
    Connect {
        /// The API server URL.
        server: String,
        /// e.g. "connection refused".
        reason: String,
    },
    /// The TLS handshake failed, usually certificate verification.
    #[error(
        "TLS handshake with {server} failed: {reason} (check k8s.ca_cert / the kubeconfig CA and k8s.tls_server_name)"
    )]
    Tls {
        /// The API server URL or name.
        server: String,
        /// rustls' message.
        reason: String,
    },
    /// No answer within the request timeout.
    #[error("{op}: no answer within {}ms (API server overloaded or etcd slow?)", .after.as_millis())]
    Timeout {
        /// The request.
        op: Operation,
        /// The timeout that expired.
        after: Duration,
    },
    /// 401: the credential was rejected.
    #[error(
        "{op}: 401 Unauthorized: the API server rejected the credential from {credential} ({message}); check that it is valid, not expired, and issued by this cluster"
    )]
    Unauthorized {
        /// The request.
        op: Operation,
        /// Where the credential came from.
        credential: String,
        /// The server's message.
        message: String,
    },
    /// 403: RBAC denies the request.
    #[error("{op}: 403 Forbidden ({message}): the credential from {credential} needs {} on {} in {}; apply packaging/kubernetes/rbac.yaml", .op.verb, .op.resource, .op.namespace_text())]
    Forbidden {
        /// The request.
        op: Operation,
        /// Where the credential came from.
        credential: String,
        /// The server's message.
        message: String,
    },
    /// 404: the object or its namespace does not exist.
    #[error("{op}: 404 Not Found ({message}); does {} exist?", .op.namespace_text())]
    NotFound {
        /// The request.
        op: Operation,
        /// The server's message.
        message: String,
    },
    /// 409: someone else wrote first (Conflict or AlreadyExists).
    #[error("{op}: 409 Conflict ({message}): another writer changed the object first")]
    Conflict {
        /// The request.
        op: Operation,
        /// The server's message.
        message: String,
    },
    /// 5xx or another unexpected status.
    #[error("{op}: HTTP {status} ({message})")]
    Status {
        /// The request.
        op: Operation,
        /// HTTP status code.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The body was not the JSON expected.
    #[error("{op}: invalid JSON in the answer: {reason}")]
    InvalidJson {
        /// The request.
        op: Operation,
        /// Parser message.
        reason: String,
    },
    /// Any other transport failure (connection reset mid-request...).
    #[error("{op}: {reason}")]
    Transport {
        /// The request.
        op: Operation,
        /// What failed.
        reason: String,
    },
}

impl KubeError {
    /// True for 409 Conflict / AlreadyExists.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True for 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::Conflict { .. } => Some(409),
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
