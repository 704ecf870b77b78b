//! Where the Lease lives: the [`LeaseStore`] trait and its HTTP implementation.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::record::{LeaseObject, LeaseRecord, StoredLease, lease_json};
use crate::kube::{KubeClient, KubeError, Operation};

/// A change seen on a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The Lease was created or written.
    Changed(StoredLease),
    /// The Lease was deleted.
    Deleted,
}

/// A stream of changes; it ends (or yields an error) when the watch breaks.
pub type LeaseWatch = BoxStream<'static, Result<WatchEvent, KubeError>>;

/// Reads and writes the one Lease object an elector competes for.
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads the Lease; `Ok(None)` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<StoredLease>, KubeError>> + Send;
    /// Creates the Lease; a 409 means it already exists.
    fn create(
        &self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<StoredLease, KubeError>> + Send;
    /// Replaces the record if the stored resourceVersion is still
    /// `current.resource_version`; a 409 means someone else wrote first.
    fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<StoredLease, KubeError>> + Send;
    /// Watches changes after `resource_version` (`None`: from now on, the
    /// current object first).
    fn watch(
        &self,
        resource_version: Option<&str>,
    ) -> impl Future<Output = Result<LeaseWatch, KubeError>> + Send;
}

/// The Lease in a real API server.
#[derive(Debug, Clone)]
pub struct KubeLeaseStore {
    client: KubeClient,
    namespace: String,
    name: String,
    watch_timeout: Duration,
    requests: Arc<AtomicU64>,
}

const RESOURCE: &str = "leases.coordination.k8s.io";

/// The `timeoutSeconds` of a watch: the API server ends it after this and
/// the elector opens a new one, so no watch connection lives for ever.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

impl KubeLeaseStore {
    /// The Lease `config.lease` names, reached with `config.k8s` (request
    /// timeout: half the renew deadline).
    pub fn from_config(config: &crate::config::Config) -> Result<Self, KubeError> {
        let client = KubeClient::from_config(config)?;
        Ok(Self::new(
            client,
            config.lease.namespace.clone(),
            config.lease.name.clone(),
        ))
    }

    /// The Lease `namespace/name` reached through `client`.
    pub fn new(client: KubeClient, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: name.into(),
            watch_timeout: WATCH_TIMEOUT,
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same store, with watches ended by the server after `timeout`
    /// (whole seconds, at least 1) instead of [`WATCH_TIMEOUT`].
    pub fn with_watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = timeout;
        self
    }

    /// Number of API requests sent so far (a watch counts once, when opened).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn op(&self, verb: &'static str, named: bool) -> Operation {
        Operation {
            verb,
            resource: RESOURCE,
            namespace: Some(self.namespace.as_str().into()),
            name: named.then(|| self.name.as_str().into()),
        }
    }

    fn collection(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }

    fn object(&self) -> String {
        format!("{}/{}", self.collection(), self.name)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

fn stored(op: &Operation, obj: LeaseObject) -> Result<StoredLease, KubeError> {
    obj.into_stored().ok_or_else(|| KubeError::InvalidJson {
        op: op.clone(),
        reason: "Lease without metadata.resourceVersion".into(),
    })
}

impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.count();
        let op = self.op("get", true);
        match self.client.get::<LeaseObject>(&op, &self.object()).await {
            Ok(obj) => stored(&op, obj).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
        self.count();
        let op = self.op("create", false);
        let mut meta = Map::new();
        meta.insert("name".into(), Value::String(self.name.clone()));
        meta.insert("namespace".into(), Value::String(self.namespace.clone()));
        let body = lease_json(meta, record);
        let obj: LeaseObject = self.client.post(&op, &self.collection(), &body).await?;
        stored(&op, obj)
    }

    async fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        self.count();
        let op = self.op("update", true);
        let mut meta = current.metadata.clone();
        meta.insert("name".into(), Value::String(self.name.clone()));
        meta.insert("namespace".into(), Value::String(self.namespace.clone()));
        meta.insert(
            "resourceVersion".into(),
            Value::String(current.resource_version.clone()),
        );
        // managedFields are the server's bookkeeping; sending them back is noise.
        meta.remove("managedFields");
        let body = lease_json(meta, record);
        let obj: LeaseObject = self.client.put(&op, &self.object(), &body).await?;
        stored(&op, obj)
    }

    async fn watch(&self, resource_version: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.count();
        let op = self.op("watch", false);
        let mut path = format!(
            "{}?watch=1&fieldSelector=metadata.name%3D{}&timeoutSeconds={}",
            self.collection(),
            self.name,
            self.watch_timeout.as_secs().max(1)
        );
        if let Some(rv) = resource_version {
            path.push_str("&resourceVersion=");
            path.push_str(rv);
        }
        let lines = self.client.watch::<RawEvent>(&op, &path).await?;
        let stream = lines.filter_map(move |line| {
            let op = op.clone();
            async move {
                match line {
                    Err(e) => Some(Err(e)),
                    Ok(ev) => ev.decode(&op).transpose(),
                }
            }
        });
        Ok(stream.boxed())
    }
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
}

impl RawEvent {
    fn decode(self, op: &Operation) -> Result<Option<WatchEvent>, KubeError> {
        let invalid = |reason: String| KubeError::InvalidJson {
            op: op.clone(),
            reason,
        };
        match self.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                let obj: LeaseObject =
                    serde_json::from_value(self.object).map_err(|e| invalid(e.to_string()))?;
                Ok(Some(WatchEvent::Changed(stored(op, obj)?)))
            }
            "DELETED" => Ok(Some(WatchEvent::Deleted)),
            "BOOKMARK" => Ok(None),
            "ERROR" => {
                // e.g. 410 Gone: the resourceVersion is too old; the caller re-reads.
                let status = self
                    .object
                    .get("code")
                    .and_then(Value::as_u64)
                    .unwrap_or(500);
                let message = self
                    .object
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("watch error")
                    .to_string();
                Err(KubeError::Status {
                    op: op.clone(),
                    status: u16::try_from(status).unwrap_or(500),
                    message,
                })
            }
            other => Err(invalid(format!("unknown watch event type {other:?}"))),
        }
    }
}
