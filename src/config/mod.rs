//! Typed, strict configuration: parse, apply defaults, validate.
//!
//! The file is read into [`file::File`] (every leaf with its location), then
//! resolved into [`Config`], which the rest of ha-vip uses. Every error names
//! the file, line and column and says what is expected.

pub mod defaults;
mod error;
mod file;
mod resolve;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;

/// The resolved configuration of one ha-vip instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Identity written into the Lease as holder.
    pub node_name: String,
    /// Interface that carries the VIPs.
    pub interface: String,
    /// The VIPs, at least one, no duplicates.
    pub vips: Vec<Vip>,
    /// Probe of the local API server.
    pub health: Health,
    /// The Lease that elects the holder.
    pub lease: Lease,
    /// How to reach the Kubernetes API.
    pub k8s: K8s,
    /// Other API servers for the release (`k8s.peers`, `k8s.discover_peers`).
    pub peers: Peers,
    /// Gratuitous ARP / unsolicited NA settings.
    pub announce: Announce,
    /// Prometheus endpoint; `None` when disabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Log level filter (`error` .. `trace`).
    pub log_level: String,
    /// Directory of the status file.
    pub run_dir: PathBuf,
    /// Which fence bounds a frozen or cut-off holder.
    pub fence: FenceMode,
    /// Directory of the state kept across restarts and reboots (a drain).
    pub state_dir: PathBuf,
    /// Election priority, published in the VirtualIP object (default 0).
    pub priority: i64,
    /// While holding: hand over to a node of higher priority that has been
    /// healthy this long. `None` (the default): never preempted.
    pub preempt_delay: Option<Duration>,
}

/// Which fence stops a holder that can no longer renew from serving the VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FenceMode {
    /// An nftables deadline in the kernel's data path (milliseconds), with
    /// the VIP's kernel lifetime as the outer bound: allows
    /// `lease.duration >= renew_deadline + 250ms`.
    #[default]
    Precise,
    /// The VIP's kernel lifetime alone (whole seconds, deleted up to ~1 s
    /// late): needs `lease.duration >= renew_deadline + 1.25s`.
    Lifetime,
}

impl FenceMode {
    /// How much the lease duration must exceed the renew deadline.
    pub fn margin(self) -> Duration {
        match self {
            Self::Precise => defaults::PRECISE_FENCE_MARGIN,
            Self::Lifetime => defaults::FENCE_MARGIN,
        }
    }

    /// The shortest renew deadline accepted.
    pub fn min_renew_deadline(self) -> Duration {
        match self {
            Self::Precise => defaults::PRECISE_MIN_RENEW_DEADLINE,
            Self::Lifetime => Duration::from_secs(2),
        }
    }

    /// How far past the fence deadline the VIP's kernel lifetime reaches:
    /// zero when the lifetime is the fence; [`defaults::PRECISE_OUTER_SLACK`]
    /// when it is only the outer bound behind the nftables deadline.
    pub fn outer_slack(self) -> Duration {
        match self {
            Self::Precise => defaults::PRECISE_OUTER_SLACK,
            Self::Lifetime => Duration::ZERO,
        }
    }
}

impl fmt::Display for FenceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Precise => "precise",
            Self::Lifetime => "lifetime",
        })
    }
}

impl Lease {
    /// The timing inequality `mode` needs, with the values and what is
    /// left to spare, for `ha-vip check-config`.
    pub fn inequality(&self, mode: FenceMode) -> String {
        let spare = self
            .duration
            .saturating_sub(self.renew_deadline + mode.margin());
        let why = match mode {
            FenceMode::Precise => "the nftables deadline fires under 20 ms late",
            FenceMode::Lifetime => "the kernel deletes an expired VIP up to ~1 s late",
        };
        format!(
            "duration {:?} >= renew_deadline {:?} + {:?} ({why}) holds with {:?} to spare",
            self.duration,
            self.renew_deadline,
            mode.margin(),
            spare
        )
    }
}

/// One virtual IP with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length: /32 and /128 unless the file says otherwise.
    pub prefix_len: u8,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Local API server probe settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// HTTPS readiness URL.
    pub endpoint: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time between probes while this node holds the VIP (at most `interval`).
    pub holding_interval: Duration,
    /// Time one probe may take (always shorter than `interval`).
    pub timeout: Duration,
    /// How long ambiguous failures (timeouts, a 500) must hold before a
    /// healthy API server counts as unhealthy: the anti-flapping buffer.
    pub stability_buffer: Duration,
    /// How long successes must hold before an unhealthy API server counts
    /// as healthy again (and this node campaigns).
    pub rise: Duration,
    /// Refused connections in a row that make a healthy API server
    /// unhealthy at once; a `/readyz` failing its shutdown check does so
    /// on the first probe.
    pub decisive_refusals: u32,
    /// CA bundle; `None` means the k8s CA (kubeconfig, `k8s.ca_cert`, in-cluster).
    pub ca_cert: Option<PathBuf>,
    /// Name the serving certificate is verified against.
    pub tls_server_name: String,
    /// Skip certificate verification.
    pub insecure_skip_tls_verify: bool,
    /// Send the k8s credential (token or client certificate) with the probe;
    /// off by default: `/readyz` is public, and whatever answers on the
    /// probed port must not collect the credential.
    pub authenticate: bool,
}

/// Lease lock settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Object name.
    pub name: String,
    /// Object namespace.
    pub namespace: String,
    /// leaseDurationSeconds (whole seconds).
    pub duration: Duration,
    /// Holder's deadline without a successful renewal.
    pub renew_deadline: Duration,
    /// Renew / retry period.
    pub retry_period: Duration,
}

/// Kubernetes API access settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8s {
    /// Use a Lease; `false` is single-node mode.
    pub enabled: bool,
    /// The API server ha-vip talks to.
    pub api_server: String,
    /// Where the credential comes from.
    pub credential: Credential,
    /// CA bundle for the API server (for token credentials).
    pub ca_cert: Option<PathBuf>,
    /// Name the serving certificate is verified against.
    pub tls_server_name: String,
    /// Skip certificate verification.
    pub insecure_skip_tls_verify: bool,
}

/// The other control-plane nodes' API servers: when the local one cannot
/// take the Lease's release, it goes through one of these, so standbys do
/// not wait out the whole lease duration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peers {
    /// `k8s.peers`: https URLs, none of them a VIP or `k8s.api_server`.
    pub servers: Vec<String>,
    /// `k8s.discover_peers`: add the addresses of `endpoints/kubernetes` in
    /// `default`, read while the local API server answers.
    pub discover: bool,
}

/// The single source of the Kubernetes credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credential (only useful when `k8s.enabled` is false).
    None,
    /// An inline bearer token.
    Token(String),
    /// A bearer token read from this file before each request.
    TokenFile(PathBuf),
    /// A kubeconfig file (its `server` is replaced by `k8s.api_server`).
    Kubeconfig(PathBuf),
    /// The pod's service account.
    InCluster,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            // Never print a secret, not even in debug output.
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Self::Kubeconfig(p) => f.debug_tuple("Kubeconfig").field(p).finish(),
            Self::InCluster => f.write_str("InCluster"),
        }
    }
}

impl Credential {
    /// True when the credential brings the CA that verifies the API server.
    pub fn carries_ca(&self) -> bool {
        matches!(self, Self::Kubeconfig(_) | Self::InCluster)
    }
}

/// Where the credential comes from, for humans: never the token itself.
impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none (k8s disabled)"),
            Self::Token(_) => f.write_str("inline token (k8s.token)"),
            Self::TokenFile(p) => write!(f, "token file {}", p.display()),
            Self::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            Self::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// Announcement settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Packets per burst.
    pub count: u32,
    /// Spacing within a burst.
    pub spacing: Duration,
    /// Delay of the second burst.
    pub second_burst_delay: Duration,
    /// Refresh period while holding; `None` when disabled.
    pub refresh_interval: Option<Duration>,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        resolve::resolve(text, path)
    }

    /// Files the configuration names, with the key that names them; the
    /// daemon reads them at run time, so they may legitimately not exist yet
    /// when the configuration is checked.
    pub fn referenced_files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut files = Vec::new();
        match &self.k8s.credential {
            Credential::Kubeconfig(p) => files.push(("k8s.kubeconfig", p.clone())),
            Credential::TokenFile(p) => files.push(("k8s.token_file", p.clone())),
            Credential::InCluster => {
                files.push(("k8s.in_cluster", PathBuf::from(defaults::IN_CLUSTER_TOKEN)));
                files.push(("k8s.in_cluster", PathBuf::from(defaults::IN_CLUSTER_CA)));
            }
            Credential::None | Credential::Token(_) => {}
        }
        if let Some(p) = &self.k8s.ca_cert {
            files.push(("k8s.ca_cert", p.clone()));
        }
        if let Some(p) = &self.health.ca_cert {
            files.push(("health.ca_cert", p.clone()));
        }
        files
    }

    /// Path of the control socket (`ha-vip drain`, `undrain`, `handover`).
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }

    /// Path of the status file `ha-vip status` reads.
    pub fn status_file(&self) -> PathBuf {
        self.run_dir.join("status.json")
    }
}

#[cfg(test)]
mod tests;
