//! The network between a node and the API server: a [`LeaseStore`] around
//! the shared [`FakeLeaseStore`] that adds latency, loses requests and
//! answers (a write applied but never answered), cuts the node off, and
//! stops while the process is frozen or dead. Every write the server
//! applies is recorded in the world: the fence invariant counts from it.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::time::{Duration, Instant, sleep, timeout};

use super::process::Process;
use super::rng::Rng;
use super::world::Shared;
use crate::kube::{KubeError, Operation};
use crate::lease::{FakeLeaseStore, LeaseRecord, LeaseStore, LeaseWatch, StoredLease};

/// The network's state, shared by every node's store (the driver changes it).
#[derive(Debug)]
pub(super) struct Net {
    pub(super) rng: Rng,
    /// Usual one-way latency, and a window of slow ones.
    pub(super) latency: Duration,
    pub(super) slow: Option<(Instant, Duration)>,
    /// Percent of requests, and of answers, lost until the instant.
    pub(super) lossy: Option<(Instant, u64)>,
    /// Per node: cut off from the API server until then.
    pub(super) cut: Vec<Option<Instant>>,
}

impl Net {
    fn one_way(&mut self) -> Duration {
        let max = match self.slow {
            Some((until, d)) if Instant::now() < until => d,
            _ => self.latency,
        };
        Duration::from_micros(self.rng.below(max.as_micros() as u64 + 1))
    }

    fn lost(&mut self) -> bool {
        match self.lossy {
            Some((until, p)) if Instant::now() < until => self.rng.percent(p),
            _ => false,
        }
    }

    fn cut(&self, node: usize) -> bool {
        self.cut[node].is_some_and(|u| Instant::now() < u)
    }
}

/// One node's way to the Lease.
pub(super) struct SimStore {
    pub(super) inner: FakeLeaseStore,
    pub(super) net: Arc<Mutex<Net>>,
    pub(super) world: Shared,
    pub(super) node: usize,
    pub(super) identity: String,
    pub(super) process: Process,
    /// The client's request timeout (the real one: half the renew deadline).
    pub(super) timeout: Duration,
}

fn op(verb: &'static str) -> Operation {
    Operation {
        verb,
        resource: "leases.coordination.k8s.io",
        namespace: Some("sim".into()),
        name: Some("sim".into()),
    }
}

impl SimStore {
    fn net(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request: `call` runs on the server if the request gets
    /// there; its answer may still be lost.
    async fn exchange<T>(
        &self,
        verb: &'static str,
        call: impl Future<Output = Result<T, KubeError>>,
    ) -> Result<T, KubeError> {
        self.process.running().await;
        let start = Instant::now();
        let body = async {
            let (up, lost_request) = {
                let mut n = self.net();
                (n.one_way(), n.lost() || n.cut(self.node))
            };
            sleep(up).await;
            if lost_request || self.net().cut(self.node) {
                return None;
            }
            let answer = call.await;
            let (down, lost_answer) = {
                let mut n = self.net();
                (n.one_way(), n.lost())
            };
            sleep(down).await;
            (!lost_answer && !self.net().cut(self.node)).then_some(answer)
        };
        let answer = match timeout(self.timeout, body).await {
            Ok(Some(a)) => a,
            // Lost either way: the client waits out its timeout.
            Ok(None) | Err(_) => {
                tokio::time::sleep_until(start + self.timeout).await;
                Err(KubeError::Timeout {
                    op: op(verb),
                    after: self.timeout,
                })
            }
        };
        self.process.running().await;
        answer
    }

    fn record(&self, sent: Instant, record: &LeaseRecord, stored: &StoredLease) {
        let mut w = self.world.lock();
        let line = format!(
            "lease: rv {} written by node {}: holder {:?}",
            stored.resource_version, self.node, record.holder
        );
        w.log(Instant::now(), line);
        if record.holder == self.identity {
            let f = &mut w.fence_sent[self.node];
            *f = Some(f.map_or(sent, |s| s.max(sent)));
        }
    }
}

impl LeaseStore for SimStore {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.exchange("get", self.inner.get()).await
    }

    async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
        let sent = Instant::now();
        let call = async {
            let r = self.inner.create(record).await;
            if let Ok(stored) = &r {
                self.record(sent, record, stored);
            }
            r
        };
        self.exchange("create", call).await
    }

    async fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        let sent = Instant::now();
        let call = async {
            let r = self.inner.update(current, record).await;
            if let Ok(stored) = &r {
                self.record(sent, record, stored);
            }
            r
        };
        self.exchange("update", call).await
    }

    async fn watch(&self, resource_version: Option<&str>) -> Result<LeaseWatch, KubeError> {
        let w = self
            .exchange("watch", self.inner.watch(resource_version))
            .await?;
        let net = self.net.clone();
        let node = self.node;
        let process = self.process.clone();
        // Each event travels with latency; a cut breaks the watch.
        let stream = w
            .then(move |ev| {
                let net = net.clone();
                let process = process.clone();
                async move {
                    let d = net.lock().unwrap_or_else(|p| p.into_inner()).one_way();
                    sleep(d).await;
                    process.running().await;
                    let cut = net.lock().unwrap_or_else(|p| p.into_inner()).cut(node);
                    if cut {
                        Err(KubeError::Transport {
                            op: op("watch"),
                            reason: "connection reset (simulated partition)".into(),
                        })
                    } else {
                        ev
                    }
                }
            })
            .scan(false, |broken, ev| {
                let out = if *broken { None } else { Some(ev) };
                if let Some(Err(_)) = &out {
                    *broken = true;
                }
                futures::future::ready(out)
            });
        Ok(stream.boxed())
    }
}
