//! An in-memory [`LeaseStore`] for unit tests of code that drives an elector.
//!
//! It has the semantics of the API server that matter here: resourceVersions
//! change with every write, stale updates get 409, watches see every change.
//! Tests play "another node" with [`FakeLeaseStore::set`] and inject failures
//! with [`FakeLeaseStore::fail_with`], [`FakeLeaseStore::hang`],
//! [`FakeLeaseStore::lose_answers`] and [`FakeLeaseStore::stall_watches`].

use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::StreamExt;
use tokio::sync::mpsc;

use super::record::{LeaseRecord, StoredLease};
use super::store::{LeaseStore, LeaseWatch, WatchEvent};
use crate::kube::{KubeError, Operation};

/// In-memory Lease store; clones share the same Lease.
#[derive(Debug, Clone, Default)]
pub struct FakeLeaseStore {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    lease: Option<StoredLease>,
    next_rv: u64,
    watchers: Vec<mpsc::UnboundedSender<Result<WatchEvent, KubeError>>>,
    /// Watches that silently stopped delivering (kept open, never fed).
    stalled: Vec<mpsc::UnboundedSender<Result<WatchEvent, KubeError>>>,
    fail: Option<KubeError>,
    hang: bool,
    /// Writes still to apply whose answer is then lost.
    lose_answers: u32,
    requests: u64,
}

impl State {
    fn write(&mut self, record: Option<LeaseRecord>) -> Option<StoredLease> {
        self.next_rv += 1;
        // Like the API server: an object created anew gets a new uid.
        let uid = match &self.lease {
            Some(l) => l.metadata.get("uid").cloned(),
            None => Some(format!("uid-{}", self.next_rv).into()),
        };
        self.lease = record.map(|r| {
            let mut l = StoredLease::new(r, self.next_rv.to_string());
            if let Some(uid) = uid {
                l.metadata.insert("uid".into(), uid);
            }
            l
        });
        let event = match &self.lease {
            Some(l) => WatchEvent::Changed(l.clone()),
            None => WatchEvent::Deleted,
        };
        self.watchers.retain(|w| w.send(Ok(event.clone())).is_ok());
        self.lease.clone()
    }

    /// The answer to a write that took effect: `stored`, unless it is to be
    /// lost.
    fn answer(
        &mut self,
        verb: &'static str,
        stored: StoredLease,
    ) -> Result<StoredLease, KubeError> {
        if self.lose_answers == 0 {
            return Ok(stored);
        }
        self.lose_answers -= 1;
        Err(KubeError::Timeout {
            op: op(verb),
            after: std::time::Duration::from_secs(1),
        })
    }
}

fn op(verb: &'static str) -> Operation {
    Operation {
        verb,
        resource: "leases.coordination.k8s.io",
        namespace: Some("fake".into()),
        name: Some("fake".into()),
    }
}

impl FakeLeaseStore {
    /// An empty store (no Lease).
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a test failure already.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored Lease.
    pub fn lease(&self) -> Option<StoredLease> {
        self.state().lease.clone()
    }

    /// Writes (or with `None` deletes) the Lease as another node would,
    /// bypassing failure injection; watchers see it.
    pub fn set(&self, record: Option<LeaseRecord>) -> Option<StoredLease> {
        self.state().write(record)
    }

    /// Makes every request fail with `error` until called with `None`; open
    /// watches break at once.
    pub fn fail_with(&self, error: Option<KubeError>) {
        let mut s = self.state();
        if let Some(e) = &error {
            for w in s.watchers.drain(..) {
                let _ = w.send(Err(e.clone()));
            }
        }
        s.fail = error;
    }

    /// Makes every request hang forever (a frozen API server) until called
    /// with `false`.
    pub fn hang(&self, on: bool) {
        self.state().hang = on;
    }

    /// Makes the next `n` successful writes (create or update) take effect,
    /// watchers included, and then answer with a timeout, as when the
    /// server applied a request whose answer never reached the client.
    pub fn lose_answers(&self, n: u32) {
        self.state().lose_answers = n;
    }

    /// Makes the open watches go silent without ending, like a connection
    /// that died unnoticed; watches opened later work.
    pub fn stall_watches(&self) {
        let mut s = self.state();
        let open = std::mem::take(&mut s.watchers);
        s.stalled.extend(open);
    }

    /// Watches open and delivering.
    pub fn open_watches(&self) -> usize {
        let mut s = self.state();
        s.watchers.retain(|w| !w.is_closed());
        s.watchers.len()
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    async fn begin(&self, verb: &'static str) -> Result<(), KubeError> {
        let hang = {
            let mut s = self.state();
            s.requests += 1;
            if let Some(e) = &s.fail {
                let mut e = e.clone();
                set_op(&mut e, op(verb));
                return Err(e);
            }
            s.hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn set_op(e: &mut KubeError, new: Operation) {
    match e {
        KubeError::Timeout { op, .. }
        | KubeError::Unauthorized { op, .. }
        | KubeError::Forbidden { op, .. }
        | KubeError::NotFound { op, .. }
        | KubeError::Conflict { op, .. }
        | KubeError::Status { op, .. }
        | KubeError::InvalidJson { op, .. }
        | KubeError::Transport { op, .. } => *op = new,
        _ => {}
    }
}

impl LeaseStore for FakeLeaseStore {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.begin("get").await?;
        Ok(self.lease())
    }

    async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
        self.begin("create").await?;
        let mut s = self.state();
        if s.lease.is_some() {
            return Err(KubeError::Conflict {
                op: op("create"),
                message: "leases.coordination.k8s.io \"fake\" already exists".into(),
            });
        }
        let stored = s
            .write(Some(record.clone()))
            .unwrap_or_else(|| unreachable!("a write of Some stores Some"));
        s.answer("create", stored)
    }

    async fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        self.begin("update").await?;
        let mut s = self.state();
        match &s.lease {
            None => Err(KubeError::NotFound {
                op: op("update"),
                message: "leases.coordination.k8s.io \"fake\" not found".into(),
            }),
            Some(l) if l.resource_version != current.resource_version => Err(KubeError::Conflict {
                op: op("update"),
                message: "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            }),
            Some(_) => {
                let stored = s.write(Some(record.clone())).unwrap_or_else(|| unreachable!("a write of Some stores Some"));
                s.answer("update", stored)
            }
        }
    }

    async fn watch(&self, resource_version: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.begin("watch").await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.state();
        // Like the API server: without a version, or if the object changed
        // since it, the current state comes first.
        if let Some(l) = &s.lease
            && resource_version != Some(l.resource_version.as_str())
        {
            let _ = tx.send(Ok(WatchEvent::Changed(l.clone())));
        }
        s.watchers.push(tx);
        Ok(tokio_stream_from(rx).boxed())
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
