//! Prometheus metrics: one registry, typed methods the daemon calls.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Vip;
use crate::role::{Role, TransitionReason};

/// Bucket bounds (seconds) for probes and API requests: both are bounded by
/// timeouts of about a second, and the interesting changes are in 1-500 ms.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Lease API operation, the `op` label of `ha_vip_lease_request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseOp {
    /// GET of the Lease.
    Get,
    /// POST creating the Lease.
    Create,
    /// PUT updating (acquire, renew, release) the Lease.
    Update,
    /// A watch request.
    Watch,
}

impl LeaseOp {
    const ALL: [Self; 4] = [Self::Get, Self::Create, Self::Update, Self::Watch];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Watch => "watch",
        }
    }
}

/// Kind of announcement packet, the `family` label of `ha_vip_announcements_sent_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceFamily {
    /// IPv4 gratuitous ARP.
    Ipv4Garp,
    /// IPv6 unsolicited neighbour advertisement.
    Ipv6Na,
}

impl AnnounceFamily {
    const ALL: [Self; 2] = [Self::Ipv4Garp, Self::Ipv6Na];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4Garp => "ipv4_garp",
            Self::Ipv6Na => "ipv6_na",
        }
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}
label_value!(LeaseOp, AnnounceFamily);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VipLabels {
    vip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    from: Role,
    to: Role,
    reason: TransitionReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: LeaseOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FamilyLabels {
    family: AnnounceFamily,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Reads the announcer's shared counters at scrape time.
#[derive(Debug)]
struct AnnouncementCollector {
    counters: [(AnnounceFamily, Arc<AtomicU64>); 2],
}

impl Collector for AnnouncementCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "ha_vip_announcements_sent",
            "Gratuitous ARP and unsolicited NA packets sent.",
            None,
            MetricType::Counter,
        )?;
        for (family, count) in &self.counters {
            let labels = FamilyLabels { family: *family };
            let value = ConstCounter::new(count.load(Ordering::Relaxed));
            value.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The daemon's metrics. Cheap to clone; clones share the values.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    is_leader: Gauge,
    healthy: Gauge,
    vip_present: Family<VipLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    probes: Family<ResultLabels, Counter>,
    probe_duration: Histogram,
    lease_request_duration: Family<OpLabels, Histogram>,
    renew_failures: Counter,
    cluster_write_errors: Counter,
    address_conflicts: Family<VipLabels, Counter>,
    announcements: [Arc<AtomicU64>; 2],
    client_cert_expiry: Gauge,
    fence_arm_failures: Counter,
    fence_deadline: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// Registers every metric; each of `vips` starts out absent.
    pub fn new(vips: &[Vip]) -> Self {
        let mut registry = Registry::default();
        let is_leader = Gauge::default();
        let healthy = Gauge::default();
        let vip_present = Family::<VipLabels, Gauge>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let probes = Family::<ResultLabels, Counter>::default();
        let probe_duration = Histogram::new(LATENCY_BUCKETS);
        let lease_request_duration =
            Family::<OpLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let renew_failures = Counter::default();
        let cluster_write_errors = Counter::default();
        let address_conflicts = Family::<VipLabels, Counter>::default();
        let announcements = [Arc::default(), Arc::default()];
        let client_cert_expiry = Gauge::default();
        let fence_arm_failures = Counter::default();
        let fence_deadline = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "ha_vip_fence_arm_failures",
            "Times the precise fence (nftables) could not be armed; each keeps the VIPs off this node",
            fence_arm_failures.clone(),
        );
        registry.register(
            "ha_vip_fence_deadline_timestamp_seconds",
            "The precise fence's armed deadline (Unix time, CLOCK_REALTIME): the VIPs stop serving here after it; 0 when none is armed",
            fence_deadline.clone(),
        );
        registry.register(
            "ha_vip_client_certificate_expiry_timestamp_seconds",
            "End of validity (notAfter, Unix time) of the client certificate in use; 0 without one",
            client_cert_expiry.clone(),
        );

        registry.register(
            "ha_vip_is_leader",
            "1 while this node holds the lease and the VIP",
            is_leader.clone(),
        );
        registry.register(
            "ha_vip_healthy",
            "1 while the local API server is healthy (after the stability buffer)",
            healthy.clone(),
        );
        registry.register(
            "ha_vip_vip_present",
            "1 while the VIP is on the interface",
            vip_present.clone(),
        );
        registry.register(
            "ha_vip_transitions",
            "Role changes by from, to and reason",
            transitions.clone(),
        );
        registry.register(
            "ha_vip_probes",
            "Probes of the local API server by result (ok, fail)",
            probes.clone(),
        );
        registry.register(
            "ha_vip_probe_duration_seconds",
            "Duration of probes of the local API server",
            probe_duration.clone(),
        );
        registry.register(
            "ha_vip_lease_request_duration_seconds",
            "Duration of Lease API requests by operation",
            lease_request_duration.clone(),
        );
        registry.register(
            "ha_vip_renew_failures",
            "Lease renewals that failed",
            renew_failures.clone(),
        );
        registry.register(
            "ha_vip_cluster_write_errors",
            "VirtualIP status writes and Events that failed (never a role change)",
            cluster_write_errors.clone(),
        );
        registry.register(
            "ha_vip_address_conflicts",
            "Frames in which another MAC claimed one of our VIPs: answers to the probe before adding it, ARP or neighbour advertisements while holding it",
            address_conflicts.clone(),
        );
        registry.register_collector(Box::new(AnnouncementCollector {
            counters: [
                (AnnounceFamily::Ipv4Garp, Arc::clone(&announcements[0])),
                (AnnounceFamily::Ipv6Na, Arc::clone(&announcements[1])),
            ],
        }));
        registry.register(
            "ha_vip_build",
            "ha-vip build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );

        // Series that exist from the start, so dashboards see 0 rather than nothing.
        for vip in vips {
            let labels = VipLabels {
                vip: vip.to_string(),
            };
            let _ = vip_present.get_or_create_owned(&labels);
            let _ = address_conflicts.get_or_create_owned(&labels);
        }
        for op in LeaseOp::ALL {
            let _ = lease_request_duration.get_or_create_owned(&OpLabels { op });
        }
        for result in ["ok", "fail"] {
            let _ = probes.get_or_create_owned(&ResultLabels { result });
        }

        Self {
            registry: Arc::new(registry),
            is_leader,
            healthy,
            vip_present,
            transitions,
            probes,
            probe_duration,
            lease_request_duration,
            renew_failures,
            cluster_write_errors,
            address_conflicts,
            announcements,
            client_cert_expiry,
            fence_arm_failures,
            fence_deadline,
        }
    }

    /// Counts a failure to arm the precise fence.
    pub fn fence_arm_failed(&self) {
        self.fence_arm_failures.inc();
    }

    /// Sets `ha_vip_fence_deadline_timestamp_seconds` (`None`: none armed).
    pub fn set_fence_deadline(&self, deadline: Option<std::time::SystemTime>) {
        let secs = deadline
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.fence_deadline.set(secs);
    }

    /// Sets `ha_vip_client_certificate_expiry_timestamp_seconds` (`None`:
    /// no client certificate).
    pub fn set_client_cert_expiry(&self, not_after: Option<std::time::SystemTime>) {
        let secs = not_after
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.client_cert_expiry.set(secs);
    }

    /// Sets `ha_vip_is_leader`.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }

    /// Sets `ha_vip_healthy`.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    /// Sets `ha_vip_vip_present{vip}`.
    pub fn set_vip_present(&self, vip: &Vip, present: bool) {
        self.vip_present
            .get_or_create(&VipLabels {
                vip: vip.to_string(),
            })
            .set(i64::from(present));
    }

    /// Counts a role change and sets `ha_vip_is_leader` to `to == Leader`.
    pub fn record_transition(&self, from: Role, to: Role, reason: TransitionReason) {
        self.transitions
            .get_or_create(&TransitionLabels { from, to, reason })
            .inc();
        self.set_leader(to == Role::Leader);
    }

    /// Records one probe: its duration and whether it succeeded.
    pub fn observe_probe(&self, duration: Duration, ok: bool) {
        self.probe_duration.observe(duration.as_secs_f64());
        let result = if ok { "ok" } else { "fail" };
        self.probes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records the duration of one Lease API request.
    pub fn observe_lease_request(&self, op: LeaseOp, duration: Duration) {
        self.lease_request_duration
            .get_or_create(&OpLabels { op })
            .observe(duration.as_secs_f64());
    }

    /// Counts a failed VirtualIP status write or Event.
    pub fn cluster_write_failed(&self) {
        self.cluster_write_errors.inc();
    }

    /// Counts one frame in which another MAC claimed `vip`
    /// (`ha_vip_address_conflicts_total{vip}`).
    pub fn address_conflict(&self, vip: &Vip) {
        self.address_conflicts
            .get_or_create(&VipLabels {
                vip: vip.to_string(),
            })
            .inc();
    }

    /// Counts a failed renewal.
    pub fn renew_failed(&self) {
        self.renew_failures.inc();
    }

    /// Counts `n` announcement packets sent.
    pub fn add_announcements(&self, family: AnnounceFamily, n: u64) {
        self.announcement_counter(family)
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The counter behind `ha_vip_announcements_sent_total{family}`, for an
    /// announcer that counts packets itself (`fetch_add`, never decrease).
    pub fn announcement_counter(&self, family: AnnounceFamily) -> Arc<AtomicU64> {
        let i = AnnounceFamily::ALL
            .iter()
            .position(|f| *f == family)
            .unwrap_or_default();
        Arc::clone(&self.announcements[i])
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Invariant: writing to a String cannot fail and every label value is
        // plain text, so the encoder has no error to report.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::Metrics;

    #[test]
    fn client_certificate_expiry_is_a_unix_time_and_0_without_one() {
        let m = Metrics::new(&[]);
        let name = "ha_vip_client_certificate_expiry_timestamp_seconds";
        assert!(m.encode().contains(&format!("\n{name} 0\n")));
        m.set_client_cert_expiry(Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)));
        assert!(
            m.encode().contains(&format!("\n{name} 1900000000\n")),
            "{}",
            m.encode()
        );
        m.set_client_cert_expiry(None);
        assert!(m.encode().contains(&format!("\n{name} 0\n")));
    }

    #[test]
    fn the_fence_deadline_has_milliseconds_and_arm_failures_count() {
        let m = Metrics::new(&[]);
        let name = "ha_vip_fence_deadline_timestamp_seconds";
        m.set_fence_deadline(Some(UNIX_EPOCH + Duration::from_millis(1_900_000_000_250)));
        assert!(
            m.encode().contains(&format!("\n{name} 1900000000.25\n")),
            "{}",
            m.encode()
        );
        m.set_fence_deadline(None);
        assert!(
            m.encode().contains(&format!("\n{name} 0.0\n")),
            "{}",
            m.encode()
        );
        m.fence_arm_failed();
        assert!(
            m.encode().contains("\nha_vip_fence_arm_failures_total 1\n"),
            "{}",
            m.encode()
        );
    }

    #[test]
    fn address_conflicts_start_at_zero_per_vip_and_count() {
        let vip = crate::config::Vip {
            addr: "10.0.0.100".parse().unwrap(),
            prefix_len: 32,
        };
        let m = Metrics::new(&[vip]);
        let series = "ha_vip_address_conflicts_total{vip=\"10.0.0.100/32\"}";
        assert!(
            m.encode().contains(&format!("\n{series} 0\n")),
            "{}",
            m.encode()
        );
        m.address_conflict(&vip);
        m.address_conflict(&vip);
        assert!(
            m.encode().contains(&format!("\n{series} 2\n")),
            "{}",
            m.encode()
        );
    }
}
