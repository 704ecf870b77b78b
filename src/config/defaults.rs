//! Every default of the configuration, in one place.

use std::time::Duration;

/// Where `ha-vip run` and `ha-vip release` read their configuration.
pub const CONFIG_PATH: &str = "/etc/ha-vip/config.yaml";
/// Local API server readiness endpoint; `/readyz` is authoritative.
pub const HEALTH_ENDPOINT: &str = "https://127.0.0.1:6443/readyz";
/// Time between two health probes.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Time between two health probes while this node holds the VIP (never more
/// than `health.interval`): two refused probes then fit in one second, well
/// within the renew deadline, so a holder whose API server died still
/// releases the Lease (docs/operations.md has the measured cost).
pub const HEALTH_HOLDING_INTERVAL: Duration = Duration::from_millis(500);
/// Time one probe (TCP connect plus HTTPS GET) may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long ambiguous probe failures (timeouts, a 500) must hold before the
/// health state flips to unhealthy; also the default of `health.rise`.
pub const HEALTH_STABILITY_BUFFER: Duration = Duration::from_secs(5);
/// Refused connections in a row that flip the health state to unhealthy at
/// once. Two, not one: measured on kube-apiserver 1.20, a restart's port is
/// closed for seconds, while a single refusal can be a listener being
/// re-opened (see docs/operations.md, "Decisive and ambiguous failures").
pub const HEALTH_DECISIVE_REFUSALS: u32 = crate::health::DECISIVE_REFUSALS;
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
/// Whether the other API servers are learnt from `endpoints/kubernetes`.
pub const K8S_DISCOVER_PEERS: bool = true;
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

/// How much the lease duration must exceed the renew deadline with the
/// precise (nftables) fence. The rule's deadline is absolute, in
/// nanoseconds, and checked per packet, so the fence itself is late by at
/// most the time to the next packet's verdict (assumed under 20 ms; the nft
/// helper measures it). The rest covers what the lifetime fence's 1.25 s
/// covered beside the kernel's worker: the clock-rate drift between holder
/// and standby over one lease duration (NTP keeps it under 500 ppm, 2 ms
/// over 4 s), the standby's scheduling delay between reading the Lease and
/// adding the VIP (that only helps), and the conversion of the monotonic
/// fence to CLOCK_REALTIME at arming (microseconds, re-armed on a clock
/// step). 250 ms is ten times the sum: generous, yet a quarter of a second
/// of a failover instead of one and a quarter.
pub const PRECISE_FENCE_MARGIN: Duration = Duration::from_millis(250);
/// The shortest renew deadline accepted with the precise fence: a renewal
/// may take up to half of it (the request timeout), and 500 ms is the
/// least a loaded API server round trip should be given. (The lifetime
/// fence needs 2 s: a whole second of lifetime must be left after the
/// request.)
pub const PRECISE_MIN_RENEW_DEADLINE: Duration = Duration::from_secs(1);
/// With the precise fence, how far past the fence deadline the VIP's
/// kernel lifetime (now only the outer bound) may reach. The lifetime is the
/// whole seconds left until `fence + slack`, rounded down; the daemon adds
/// or refreshes a VIP only before the fence, so with a slack of one second
/// every lifetime sent is at least 1 s (the kernel's minimum) whatever the
/// renew deadline, even 1 s with a renewal that took 999 ms. The address
/// itself is then gone by `fence + 1 s + FENCE_MARGIN` at the latest, which
/// may be later than the lease duration: the nftables deadline stops it
/// serving long before.
pub const PRECISE_OUTER_SLACK: Duration = Duration::from_secs(1);

/// Service-account token of a pod (`k8s.in_cluster: true`).
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Service-account CA bundle of a pod (`k8s.in_cluster: true`).
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
