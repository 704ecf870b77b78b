//! The YAML schema as written in the file: every key optional, every leaf
//! remembering where it was written so validation can point at it.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A leaf value together with its location in the file.
pub(super) type Leaf<T> = Option<Spanned<T>>;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// Identity written into the Lease as holder; default: the host name.
    pub node_name: Leaf<String>,
    /// Interface that carries the VIPs, e.g. `eth0`. Required.
    pub interface: Leaf<String>,
    /// One or more VIPs, `10.0.0.100`, `10.0.0.100/32`, `fd00::100/128`. Required.
    pub vips: Option<Spanned<Vec<Spanned<String>>>>,
    /// The old single-VIP key of the seed; use `vips` instead.
    pub vip: Leaf<String>,
    /// Probe of the local API server.
    #[serde(default)]
    pub health: Health,
    /// The Lease that elects the VIP holder.
    #[serde(default)]
    pub lease: Lease,
    /// How ha-vip reaches the Kubernetes API.
    #[serde(default)]
    pub k8s: K8s,
    /// Gratuitous ARP / unsolicited neighbour advertisement.
    #[serde(default)]
    pub announce: Announce,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// Which fence bounds a frozen or cut-off holder.
    #[serde(default)]
    pub fence: Fence,
    /// Directory of the status file that `ha-vip status` reads.
    pub run_dir: Leaf<String>,
    /// Directory of state kept across reboots (`ha-vip drain`).
    pub state_dir: Leaf<String>,
    /// This node's election priority; a higher one is the preferred holder.
    pub priority: Leaf<i64>,
    /// On the holder: hand over to a node of higher priority once it has
    /// been healthy this long; absent: never preempted.
    pub preempt_delay: Leaf<String>,
}

/// `health:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Health {
    /// HTTPS readiness URL of the local API server.
    pub endpoint: Leaf<String>,
    /// Time between probes.
    pub interval: Leaf<String>,
    /// Time between probes while this node holds the VIP.
    pub holding_interval: Leaf<String>,
    /// Time one probe may take; shorter than `interval`.
    pub timeout: Leaf<String>,
    /// How long ambiguous failures must hold before the state flips to
    /// unhealthy.
    pub stability_buffer: Leaf<String>,
    /// How long successes must hold before the state flips to healthy;
    /// default `stability_buffer`.
    pub rise: Leaf<String>,
    /// Refused connections in a row that flip the state to unhealthy at once.
    pub decisive_refusals: Leaf<u32>,
    /// CA bundle that signed the API server's serving certificate.
    pub ca_cert: Leaf<String>,
    /// Name the serving certificate is verified against; default `k8s.tls_server_name`.
    pub tls_server_name: Leaf<String>,
    /// Skip certificate verification of the probe (logged as a warning).
    pub insecure_skip_tls_verify: Leaf<bool>,
    /// Send the k8s credential with the probe (clusters without anonymous auth).
    pub authenticate: Leaf<bool>,
}

/// `lease:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Lease {
    /// Lease object name.
    pub name: Leaf<String>,
    /// Lease object namespace.
    pub namespace: Leaf<String>,
    /// leaseDurationSeconds: whole seconds.
    pub duration: Leaf<String>,
    /// How long the holder keeps the VIP without a successful renewal.
    pub renew_deadline: Leaf<String>,
    /// Time between renewals and between acquire attempts.
    pub retry_period: Leaf<String>,
}

/// `k8s:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct K8s {
    /// Use a Lease at all; `false` means single-node mode (no election).
    pub enabled: Leaf<bool>,
    /// Use the pod's service account token and CA.
    pub in_cluster: Leaf<bool>,
    /// URL of the API server ha-vip talks to (the local one); alias `server`.
    #[serde(alias = "server")]
    pub api_server: Leaf<String>,
    /// Bearer token, inline.
    pub token: Leaf<String>,
    /// File holding a bearer token, re-read so rotation works.
    pub token_file: Leaf<String>,
    /// CA bundle for the API server's certificate.
    pub ca_cert: Leaf<String>,
    /// kubeconfig with the credential, e.g. `/etc/kubernetes/admin.conf`.
    pub kubeconfig: Leaf<String>,
    /// Name the API server's certificate is verified against.
    pub tls_server_name: Leaf<String>,
    /// Skip certificate verification (logged as a warning at every start).
    pub insecure_skip_tls_verify: Leaf<bool>,
    /// The other control-plane nodes' API servers (https URLs, never the
    /// VIP), used to release the Lease when the local one cannot.
    pub peers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Also learn them from `endpoints/kubernetes` in `default`.
    pub discover_peers: Leaf<bool>,
}

/// `announce:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Announce {
    /// Packets per burst.
    pub count: Leaf<u32>,
    /// Spacing of the packets in a burst.
    pub spacing: Leaf<String>,
    /// Delay of the second burst after acquiring.
    pub second_burst_delay: Leaf<String>,
    /// Period of refresh announcements while holding; `0s` disables.
    pub refresh_interval: Leaf<String>,
}

/// `metrics:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metrics {
    /// Serve Prometheus metrics at all.
    pub enabled: Leaf<bool>,
    /// Listen address, `host:port`.
    pub listen: Leaf<String>,
}

/// `log:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Log {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: Leaf<String>,
}

/// `fence:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fence {
    /// `precise` (nftables deadline, default) or `lifetime` (the VIP's kernel lifetime alone).
    pub mode: Leaf<String>,
}
