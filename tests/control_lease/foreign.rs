//! What other writers put into the Lease, against the real kube-apiserver:
//! a duration past the ceiling, the largest transition count, values the
//! API server refuses.

use super::*;

/// The largest value an int32 field of the Lease takes.
const INT32_MAX: u32 = i32::MAX as u32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_lease_duration_of_another_holder_is_honoured_only_up_to_the_ceiling() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    // A holder string that would forge a log line if printed raw.
    let rogue = "rogue\nERROR forged";
    write_as(&api, "huge", rogue, INT32_MAX, 0).await;
    assert_eq!(
        raw_lease(&api, "huge").await["spec"]["leaseDurationSeconds"],
        2_147_483_647
    );
    let ceiling = Duration::from_secs(6);
    let store = store(&api, "huge");
    let (campaign, crx) = watch::channel(true);
    let (etx, events) = mpsc::channel(1024);
    let elector = Elector::new(store.clone(), "node-b", T).with_duration_ceiling(ceiling);
    let task = tokio::spawn(elector.run(crx, etx));
    let mut b = Node {
        store,
        campaign,
        events,
        task,
    };
    let seen = match b
        .until("Observed", |e| matches!(e, LeaseEvent::Observed { .. }))
        .await
    {
        LeaseEvent::Observed { holder, at } => {
            assert_eq!(holder.as_deref(), Some("rogue\\nERROR forged"));
            at
        }
        _ => unreachable!(),
    };
    let sent_at = b.acquired().await;
    let waited = sent_at - seen;
    eprintln!(
        "MEASURE takeover of a lease written with leaseDurationSeconds 2147483647: {} ms (ceiling {ceiling:?})",
        waited.as_millis()
    );
    assert!(waited >= ceiling, "took over after only {waited:?}");
    assert!(
        waited <= ceiling + Duration::from_secs(3),
        "took over late: {waited:?}"
    );
    let spec = raw_lease(&api, "huge").await["spec"].clone();
    assert_eq!(spec["holderIdentity"], "node-b");
    assert_eq!(spec["leaseDurationSeconds"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_with_the_largest_transition_count_can_still_be_taken() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    write_as(&api, "transitions", "other", 1, INT32_MAX).await;
    let mut b = node(&api, "transitions", "node-b");
    // The takeover writes leaseTransitions; one more than int32 allows
    // would be refused on every attempt.
    b.acquired().await;
    let spec = raw_lease(&api, "transitions").await["spec"].clone();
    assert_eq!(spec["holderIdentity"], "node-b", "{spec}");
    assert_eq!(spec["leaseTransitions"], 2_147_483_647, "{spec}");
}

/// The elector reads leaseDurationSeconds and leaseTransitions as unsigned
/// and treats an absent duration as its own: that relies on the API server
/// refusing a zero or negative duration and a negative transition count,
/// whoever writes the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_refuses_non_positive_durations_and_negative_transitions() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let op = Operation {
        verb: "create",
        resource: "leases.coordination.k8s.io",
        namespace: Some("kube-system".into()),
        name: None,
    };
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    for (name, spec) in [
        (
            "zero",
            serde_json::json!({"holderIdentity": "x", "leaseDurationSeconds": 0}),
        ),
        (
            "negative",
            serde_json::json!({"holderIdentity": "x", "leaseDurationSeconds": -1}),
        ),
        (
            "transitions",
            serde_json::json!({"holderIdentity": "x", "leaseTransitions": -1}),
        ),
    ] {
        let body = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": spec,
        });
        let r = api
            .admin()
            .post::<_, serde_json::Value>(&op, path, &body)
            .await;
        let e = r.expect_err(&format!("the API server accepted {body}"));
        assert_eq!(e.status(), Some(422), "{name}: {e}");
    }
}
