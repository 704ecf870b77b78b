//! Where the Lease lives: the [`LeaseStore`] trait and its HTTP implementation.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::record::{LeaseObject, LeaseRecord, StoredLease, lease_json};
use crate::kube::{KubeClient, KubeError, Operation, Peers, worth_another_server};

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

    /// Writes a release: [`LeaseStore::update`], except that a store that
    /// knows other API servers tries them when this one cannot answer. The
    /// write is conditional on `current`'s resourceVersion wherever it goes,
    /// so at most one of them takes effect.
    fn release(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<StoredLease, KubeError>> + Send {
        self.update(current, record)
    }

    /// Reads the Lease during a release: [`LeaseStore::get`], through the
    /// other API servers when this one cannot answer.
    fn get_for_release(
        &self,
    ) -> impl Future<Output = Result<Option<StoredLease>, KubeError>> + Send {
        self.get()
    }
}

/// The Lease in a real API server.
#[derive(Debug, Clone)]
pub struct KubeLeaseStore {
    client: KubeClient,
    namespace: String,
    name: String,
    watch_timeout: Duration,
    requests: Arc<AtomicU64>,
    /// The other API servers a release may go through.
    peers: Option<Peers>,
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
            peers: None,
        }
    }

    /// The same store, releasing through `peers` when its own API server
    /// cannot answer (see [`Peers`]); a successful write through its own
    /// keeps the discovered list fresh.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// The same Lease through each peer's API server.
    fn via_peers(&self) -> Vec<KubeLeaseStore> {
        self.peers.as_ref().map_or_else(Vec::new, |p| {
            p.clients()
                .into_iter()
                .map(|c| KubeLeaseStore {
                    client: c,
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    watch_timeout: self.watch_timeout,
                    requests: self.requests.clone(),
                    peers: None,
                })
                .collect()
        })
    }

    /// `local` unless it failed in a way another API server might not: then
    /// the first success among the peers (all asked at once: a peer that
    /// hangs must not use up the release's time), else a conflict if one
    /// answered so (the caller re-reads), else the local error.
    async fn or_peers<T, F, Fut>(
        &self,
        what: &str,
        local: Result<T, KubeError>,
        call: F,
    ) -> Result<T, KubeError>
    where
        F: Fn(KubeLeaseStore) -> Fut,
        Fut: Future<Output = Result<T, KubeError>> + Send,
    {
        let e = match local {
            Err(e) if worth_another_server(&e) => e,
            other => return other,
        };
        let peers = self.via_peers();
        if peers.is_empty() {
            return Err(e);
        }
        let tries = peers.into_iter().map(|p| {
            let server = p.client.server().to_string();
            let fut = call(p);
            Box::pin(async move {
                fut.await
                    .map(|v| (server.clone(), v))
                    .map_err(|e| (server, e))
            })
        });
        let mut pending: Vec<_> = tries.collect();
        let mut conflict = None;
        while !pending.is_empty() {
            let (done, _, rest) = futures::future::select_all(pending).await;
            pending = rest;
            match done {
                Ok((server, v)) => {
                    tracing::info!(%server, local_error = %e, "{what} went through another API server");
                    return Ok(v);
                }
                Err((server, pe)) => {
                    tracing::warn!(%server, error = %pe, "{what} through another API server failed");
                    if pe.is_conflict() || pe.is_not_found() {
                        conflict.get_or_insert(pe);
                    }
                }
            }
        }
        Err(conflict.unwrap_or(e))
    }

    /// The same store, with watches ended by the server after `timeout`
    /// (whole seconds, at least 1) instead of [`WATCH_TIMEOUT`].
    pub fn with_watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = timeout;
        self
    }

    /// The client of this store's API server.
    pub fn client(&self) -> &KubeClient {
        &self.client
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
        if let Some(p) = &self.peers {
            p.refresh_if_due(&self.client);
        }
        stored(&op, obj)
    }

    async fn release(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        let local = self.update(current, record).await;
        self.or_peers("the lease release", local, |p| async move {
            p.update(current, record).await
        })
        .await
    }

    async fn get_for_release(&self) -> Result<Option<StoredLease>, KubeError> {
        let local = self.get().await;
        self.or_peers("reading the lease for its release", local, |p| async move {
            p.get().await
        })
        .await
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
