//! The Lease object as client-go writes it (coordination.k8s.io/v1).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The leader-election fields of a Lease's spec.
///
/// Times are wall-clock times written for people reading
/// `kubectl get lease -o yaml`; ha-vip never compares them with its own
/// clock (expiry is judged on the local monotonic clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Node holding the lease; empty when released or never held.
    pub holder: String,
    /// `leaseDurationSeconds`; 0 when the field is absent (an elector
    /// never waits less than its own lease duration anyway).
    pub duration_seconds: u32,
    /// `acquireTime`.
    pub acquire_time: Option<SystemTime>,
    /// `renewTime`.
    pub renew_time: Option<SystemTime>,
    /// `leaseTransitions`: how often the holder changed.
    pub transitions: u32,
}

impl LeaseRecord {
    /// What a holder writes to give the Lease up, as client-go's
    /// ReleaseOnCancel does: no holder, a 1 s duration, transitions kept.
    pub fn released(transitions: u32) -> Self {
        let now = SystemTime::now();
        Self {
            holder: String::new(),
            duration_seconds: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions,
        }
    }

    /// The holder, `None` when the lease is free.
    pub fn holder(&self) -> Option<&str> {
        (!self.holder.is_empty()).then_some(self.holder.as_str())
    }

    /// `leaseTransitions` after a takeover: one more, but never past the
    /// largest int32, which is what the API server stores. Anyone may write
    /// 2147483647 there; one more would be refused (400) on every attempt
    /// and no standby could ever take the Lease.
    pub fn next_transitions(&self) -> u32 {
        self.transitions.saturating_add(1).min(INT32_MAX)
    }

    /// `leaseDurationSeconds` as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.duration_seconds))
    }
}

/// A Lease as stored by the API server: the record plus the
/// `resourceVersion` an update must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLease {
    /// The leader-election fields.
    pub record: LeaseRecord,
    /// `metadata.resourceVersion`; changes with every write.
    pub resource_version: String,
    /// The object's metadata, sent back unchanged on update so that labels
    /// and annotations survive (client-go does the same).
    pub(crate) metadata: Map<String, Value>,
}

impl StoredLease {
    /// A stored lease without extra metadata (for fakes and tests).
    pub fn new(record: LeaseRecord, resource_version: impl Into<String>) -> Self {
        Self {
            record,
            resource_version: resource_version.into(),
            metadata: Map::new(),
        }
    }

    /// `metadata.uid`: a Lease deleted and created again has a new one.
    pub(crate) fn uid(&self) -> Option<&str> {
        self.metadata.get("uid").and_then(Value::as_str)
    }

    /// The node a planned handover is meant for: the
    /// [`HANDOVER_ANNOTATION`] of a *free* Lease (a held one is nobody's to
    /// hand over, whatever an old annotation says).
    pub fn handover_to(&self) -> Option<&str> {
        if self.record.holder().is_some() {
            return None;
        }
        self.metadata
            .get("annotations")?
            .get(HANDOVER_ANNOTATION)?
            .as_str()
            .filter(|s| !s.is_empty())
    }

    /// This lease with the [`HANDOVER_ANNOTATION`] set to `to`, or removed
    /// (`None`): what the next write sends back. Every other annotation is
    /// kept.
    pub(crate) fn with_handover(&self, to: Option<&str>) -> Self {
        let mut out = self.clone();
        let annotations = out
            .metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(a) = annotations {
            match to {
                Some(node) => {
                    a.insert(HANDOVER_ANNOTATION.into(), Value::String(node.into()));
                }
                None => {
                    a.remove(HANDOVER_ANNOTATION);
                }
            }
            if a.is_empty() {
                out.metadata.remove("annotations");
            }
        }
        out
    }
}

/// The annotation a holder writes on the Lease in the same update that
/// releases it, naming the node it hands over to (`ha-vip handover --to`).
/// Every other ha-vip elector then keeps out of the free Lease for
/// [`HANDOVER_HOLD`] after it saw that release, so the named node wins; an
/// elector that does not know the annotation just competes as without it,
/// and any write of the Lease by ha-vip removes it again.
pub const HANDOVER_ANNOTATION: &str = "ha-vip.io/handover-to";

/// How long the other nodes keep out of a Lease handed over to a named
/// node, counted from when each saw the release. Past it, they compete as
/// for any free Lease: a named node that did not take it in time (down,
/// or unhealthy since) costs the cluster this much, no more.
pub const HANDOVER_HOLD: Duration = Duration::from_secs(5);

/// The largest value of the Lease's int32 fields.
pub(crate) const INT32_MAX: u32 = i32::MAX as u32;

/// The most characters of a holder identity that ha-vip prints: a node
/// name has at most 253.
const PRINTED_HOLDER_CHARS: usize = 253;

/// `holder` as ha-vip prints it (logs, events, status): control and
/// bidirectional-override characters escaped (`\n`, `\u{1b}`, ...), and cut
/// after 253 characters with the full length said. Anyone allowed to update
/// the Lease chooses its holder; this keeps that string from forging log
/// lines or flooding the journal with every change it makes.
pub fn printable(holder: &str) -> String {
    let mut out = String::with_capacity(holder.len().min(PRINTED_HOLDER_CHARS + 32));
    for (i, c) in holder.chars().enumerate() {
        if i == PRINTED_HOLDER_CHARS {
            out.push_str(&format!("... ({} bytes)", holder.len()));
            break;
        }
        if crate::text::steers_terminal(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// RFC 3339 with exactly six fractional digits, as Kubernetes' MicroTime.
pub fn format_micro_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn parse_micro_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    holder_identity: Option<String>,
    #[serde(default)]
    lease_duration_seconds: Option<u32>,
    #[serde(default)]
    acquire_time: Option<String>,
    #[serde(default)]
    renew_time: Option<String>,
    #[serde(default)]
    lease_transitions: Option<u32>,
}

/// The JSON of a Lease object, as far as ha-vip reads it.
#[derive(Deserialize)]
pub(crate) struct LeaseObject {
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    spec: Spec,
}

impl LeaseObject {
    /// Converts into a stored lease; `None` without a resourceVersion.
    pub(crate) fn into_stored(self) -> Option<StoredLease> {
        let rv = self.metadata.get("resourceVersion")?.as_str()?.to_string();
        let s = self.spec;
        Some(StoredLease {
            record: LeaseRecord {
                holder: s.holder_identity.unwrap_or_default(),
                duration_seconds: s.lease_duration_seconds.unwrap_or(0),
                acquire_time: s.acquire_time.as_deref().and_then(parse_micro_time),
                renew_time: s.renew_time.as_deref().and_then(parse_micro_time),
                transitions: s.lease_transitions.unwrap_or(0),
            },
            resource_version: rv,
            metadata: self.metadata,
        })
    }
}

/// The JSON body of a create (`metadata` = name + namespace) or an update
/// (`metadata` = the stored metadata, which carries the resourceVersion).
pub(crate) fn lease_json(metadata: Map<String, Value>, r: &LeaseRecord) -> Value {
    // client-go writes every field, the empty holder included.
    let spec = Spec {
        holder_identity: Some(r.holder.clone()),
        lease_duration_seconds: Some(r.duration_seconds),
        acquire_time: r.acquire_time.map(format_micro_time),
        renew_time: r.renew_time.map(format_micro_time),
        lease_transitions: Some(r.transitions),
    };
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_annotation_is_set_removed_and_only_read_on_a_free_lease() {
        let free = StoredLease::new(LeaseRecord::released(3), "7");
        assert_eq!(free.handover_to(), None);
        let to_b = free.with_handover(Some("node-b"));
        assert_eq!(to_b.handover_to(), Some("node-b"));
        assert_eq!(to_b.with_handover(None).handover_to(), None);
        assert!(
            !to_b
                .with_handover(None)
                .metadata
                .contains_key("annotations"),
            "an empty annotations map is not sent"
        );
        let mut held = to_b.clone();
        held.record.holder = "node-c".into();
        assert_eq!(held.handover_to(), None, "a held Lease is handed to nobody");
    }

    #[test]
    fn micro_time_has_six_digits() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_316_645_123_456);
        assert_eq!(format_micro_time(t), "2026-11-22T03:04:05.123456Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_316_645);
        assert_eq!(format_micro_time(t), "2026-11-22T03:04:05.000000Z");
    }

    #[test]
    fn round_trip_keeps_metadata_and_fields() {
        let json = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ha-vip", "namespace": "kube-system", "resourceVersion": "42", "labels": {"a": "b"}},
            "spec": {"holderIdentity": "cp1", "leaseDurationSeconds": 4,
                     "acquireTime": "2026-11-22T03:04:05.123456Z", "renewTime": "2026-11-22T03:04:06.000001Z",
                     "leaseTransitions": 3}
        });
        let obj: LeaseObject = serde_json::from_value(json).unwrap();
        let stored = obj.into_stored().unwrap();
        assert_eq!(stored.resource_version, "42");
        assert_eq!(stored.record.holder(), Some("cp1"));
        assert_eq!(stored.record.transitions, 3);
        let out = lease_json(stored.metadata.clone(), &stored.record);
        assert_eq!(out["metadata"]["labels"]["a"], "b");
        assert_eq!(out["metadata"]["resourceVersion"], "42");
        assert_eq!(out["spec"]["renewTime"], "2026-11-22T03:04:06.000001Z");
        assert_eq!(out["spec"]["acquireTime"], "2026-11-22T03:04:05.123456Z");
        assert_eq!(out["spec"]["leaseDurationSeconds"], 4);
    }

    #[test]
    fn printable_escapes_control_characters_and_caps_the_length() {
        assert_eq!(printable("cp1"), "cp1");
        assert_eq!(
            printable("cp1\nERROR forged line"),
            "cp1\\nERROR forged line"
        );
        assert_eq!(printable("a\u{1b}[31mb\u{202e}"), "a\\u{1b}[31mb\\u{202e}");
        let huge = "x".repeat(1 << 20);
        let p = printable(&huge);
        assert_eq!(p, format!("{}... (1048576 bytes)", "x".repeat(253)));
        assert_eq!(printable(&"é".repeat(253)), "é".repeat(253));
    }

    #[test]
    fn released_lease_reads_as_free() {
        let json = serde_json::json!({"metadata": {"resourceVersion": "7"}, "spec": {"holderIdentity": ""}});
        let stored = serde_json::from_value::<LeaseObject>(json)
            .unwrap()
            .into_stored()
            .unwrap();
        assert_eq!(stored.record.holder(), None);
        let out = lease_json(Map::new(), &stored.record);
        assert_eq!(out["spec"]["holderIdentity"], "");
    }
}
