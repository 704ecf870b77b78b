//! A [`LeaseStore`] that times every request into the metrics.

use std::time::Instant;

use crate::kube::KubeError;
use crate::lease::{LeaseRecord, LeaseStore, LeaseWatch, StoredLease};
use crate::observe::{LeaseOp, Metrics};

/// Wraps a store; each call is observed in
/// `ha_vip_lease_request_duration_seconds{op}`.
pub(crate) struct Metered<S> {
    pub(crate) inner: S,
    pub(crate) metrics: Metrics,
}

impl<S: LeaseStore> Metered<S> {
    async fn timed<T>(&self, op: LeaseOp, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        self.metrics.observe_lease_request(op, start.elapsed());
        out
    }
}

impl<S: LeaseStore> LeaseStore for Metered<S> {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.timed(LeaseOp::Get, self.inner.get()).await
    }

    async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
        self.timed(LeaseOp::Create, self.inner.create(record)).await
    }

    async fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        self.timed(LeaseOp::Update, self.inner.update(current, record))
            .await
    }

    async fn release(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        self.timed(LeaseOp::Update, self.inner.release(current, record))
            .await
    }

    async fn get_for_release(&self) -> Result<Option<StoredLease>, KubeError> {
        self.timed(LeaseOp::Get, self.inner.get_for_release()).await
    }

    // Only the opening of the watch: the stream itself lives for minutes.
    async fn watch(&self, resource_version: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.timed(LeaseOp::Watch, self.inner.watch(resource_version))
            .await
    }
}
