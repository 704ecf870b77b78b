//! A create of a missing Lease that lands after another node created it
//! and `kubectl delete lease` removed it again, against the real
//! kube-apiserver: the create succeeds, the real watch shows the other
//! holder before it, and leadership waits a lease duration.

use std::sync::{Arc, Mutex};

use ha_vip::kube::KubeError;
use ha_vip::lease::{LeaseWatch, StoredLease};

use super::*;

/// Node b's way to the API server; its first create is preceded by
/// node-a's create and a delete, as when b's create was in flight.
struct Racing {
    inner: KubeLeaseStore,
    other: KubeLeaseStore,
    delete: Vec<String>,
    /// When the racing create was answered.
    created: Arc<Mutex<Option<Instant>>>,
}

impl LeaseStore for Racing {
    async fn get(&self) -> Result<Option<StoredLease>, KubeError> {
        self.inner.get().await
    }
    async fn create(&self, record: &LeaseRecord) -> Result<StoredLease, KubeError> {
        let first = self.created.lock().unwrap().is_none();
        if first {
            let mut a = record.clone();
            a.holder = "node-a".into();
            self.other.create(&a).await.unwrap();
            let out = tokio::process::Command::new("curl")
                .args(&self.delete)
                .output()
                .await
                .expect("curl runs");
            assert!(out.status.success(), "DELETE: {out:?}");
        }
        let r = self.inner.create(record).await;
        if first {
            *self.created.lock().unwrap() = Some(Instant::now());
        }
        r
    }
    async fn update(
        &self,
        current: &StoredLease,
        record: &LeaseRecord,
    ) -> Result<StoredLease, KubeError> {
        self.inner.update(current, record).await
    }
    async fn watch(&self, rv: Option<&str>) -> Result<LeaseWatch, KubeError> {
        self.inner.watch(rv).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_after_another_holders_create_and_a_delete_waits_a_duration() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let name = "create-race";
    let url = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}",
        api.server()
    );
    let created = Arc::new(Mutex::new(None));
    let racing = Racing {
        inner: store(&api, name),
        other: store(&api, name),
        delete: vec![
            "-sS".into(),
            "--fail".into(),
            "-X".into(),
            "DELETE".into(),
            "--cacert".into(),
            api.ca().to_string_lossy().into_owned(),
            "-H".into(),
            format!("Authorization: Bearer {}", api.var("KUBE_ADMIN_TOKEN")),
            url,
        ],
        created: Arc::clone(&created),
    };
    let (campaign, crx) = watch::channel(true);
    let (etx, mut events) = mpsc::channel(1024);
    let task = tokio::spawn(Elector::new(racing, "node-b", T).run(crx, etx));
    let sent_at = timeout(PATIENCE + T.duration * 2, async {
        loop {
            if let LeaseEvent::Acquired { sent_at } = events.recv().await.expect("elector runs") {
                return sent_at;
            }
        }
    })
    .await
    .expect("node-b acquires the lease");
    let created = created.lock().unwrap().expect("the racing create was sent");
    eprintln!(
        "MEASURE create after a create and a delete: leadership {} ms after the create's answer (lease duration 4 s)",
        (sent_at - created).as_millis()
    );
    // node-a may hold its VIP until its renew deadline (plus the kernel's
    // fence latency): no VIP of node-b's before a lease duration.
    assert!(
        sent_at >= created + T.duration - Duration::from_millis(50),
        "leadership reported {:?} after the racing create",
        sent_at.saturating_duration_since(created)
    );
    assert_eq!(
        raw_lease(&api, name).await["spec"]["holderIdentity"],
        "node-b"
    );
    drop(campaign);
    task.await.unwrap();
}
