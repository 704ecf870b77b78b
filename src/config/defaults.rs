//! Every default of the configuration, in one place.

use std::time::Duration;

/// Where `ha-vip run` and `ha-vip release` read their configuration.
pub const CONFIG_PATH: &str = "/etc/ha-vip/config.yaml";
/// Local API server readiness endpoint; `/readyz` is authoritative.
pub const HEALTH_ENDPOINT: &str = "https://127.0.0.1:6443/readyz";
/// Time between two health probes.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Time one probe (TCP connect plus HTTPS GET) may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the opposite probe result must hold before the health state flips.
pub const HEALTH_STABILITY_BUFFER: Duration = Duration::from_secs(5);
/// Whether the probe sends the k8s credential: no, `/readyz` is readable
/// anonymously (system:public-info-viewer) on kubeadm clusters.
pub const HEALTH_AUTHENTICATE: bool = false;
/// Name of the Lease object.
pub const LEASE_NAME: &str = "ha-vip";
/// Namespace of the Lease object.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// How long a standby waits after it last saw the Lease change before taking it.
pub const LEASE_DURATION: Duration = Duration::from_secs(4);
/// How long the holder keeps the VIP without a successful renewal.
pub const LEASE_RENEW_DEADLINE: Duration = Duration::from_secs(2);
/// Time between two renewals (holder) or two acquire attempts (standby).
pub const LEASE_RETRY_PERIOD: Duration = Duration::from_millis(500);
/// The API server ha-vip talks to: the local one, never the VIP itself.
pub const K8S_API_SERVER: &str = "https://127.0.0.1:6443";
/// Name the API server's certificate is verified against (kubeadm's SAN).
pub const K8S_TLS_SERVER_NAME: &str = "kubernetes";
/// Shortest retry period accepted: each period costs one API request per node.
pub const MIN_RETRY_PERIOD: Duration = Duration::from_millis(100);
/// Gratuitous ARP / unsolicited NA packets per burst.
pub const ANNOUNCE_COUNT: u32 = 3;
/// Spacing of the packets within one burst.
pub const ANNOUNCE_SPACING: Duration = Duration::from_millis(150);
/// Delay between the first and the second burst after an acquire.
pub const ANNOUNCE_SECOND_BURST_DELAY: Duration = Duration::from_secs(2);
/// Period of the keepalived-style refresh announcements (zero disables them).
pub const ANNOUNCE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Prometheus listen address.
pub const METRICS_LISTEN: &str = "127.0.0.1:9405";
/// Log level.
pub const LOG_LEVEL: &str = "info";
/// Directory of the status file read by `ha-vip status`.
pub const RUN_DIR: &str = "/run/ha-vip";
/// Directory of the state kept across reboots (systemd's StateDirectory=).
pub const STATE_DIR: &str = "/var/lib/ha-vip";
/// IPv4 VIP prefix length when none is given.
pub const IPV4_PREFIX: u8 = 32;
/// IPv6 VIP prefix length when none is given.
pub const IPV6_PREFIX: u8 = 128;

/// Upper bound of the time between the end of a VIP's lifetime and the kernel
/// deleting it. Measured (`cargo nextest run --test dataplane_fence`): 0.02 to
/// 0.13 s on a quiet host, but up to 0.93 s when another address changed just
/// before, because the kernel's expiry worker runs at most once a second.
/// The lease duration must exceed the renew deadline by at least this much
/// (ARCHITECTURE.md's timing argument with F = 1.25 s).
pub const FENCE_MARGIN: Duration = Duration::from_millis(1250);

/// Service-account token of a pod (`k8s.in_cluster: true`).
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Service-account CA bundle of a pod (`k8s.in_cluster: true`).
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
