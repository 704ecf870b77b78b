//! Fuzzing the Lease JSON decoder and the watch-line decoder on stable, the
//! way they meet the network: a small HTTPS stub on loopback answers
//! `KubeLeaseStore::get` and `KubeLeaseStore::watch` with generated Lease
//! objects, watch event lines and garbage, sent in random chunk sizes. The
//! client must never panic or hang; well-formed input must decode exactly
//! (holder, duration, transitions, event order across any chunking).
//!
//! Cases per property: HAVIP_FUZZ_CASES (default 256). One TLS connection
//! per case, so this is the slowest of the fuzz targets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use ha_vip::config::{Credential, K8s};
use ha_vip::kube::{Credentials, KubeClient};
use ha_vip::lease::{KubeLeaseStore, LeaseStore, WatchEvent};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

fn cases() -> u32 {
    std::env::var("HAVIP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// What the stub sends next: the body, cut into chunks of these sizes.
#[derive(Default)]
struct Script {
    body: Vec<u8>,
    chunks: Vec<usize>,
}

struct Stub {
    rt: Runtime,
    store: KubeLeaseStore,
    script: Arc<Mutex<Script>>,
    _dir: tempfile::TempDir,
}

fn stub() -> &'static Stub {
    static STUB: OnceLock<Stub> = OnceLock::new();
    STUB.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["kubernetes".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "fuzz-apiserver");
        let cert = p.self_signed(&key).unwrap();
        let ca: PathBuf = dir.path().join("ca.crt");
        std::fs::write(&ca, cert.pem()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let served = script.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (body, chunks) = {
                        let sc = served.lock().unwrap();
                        (sc.body.clone(), sc.chunks.clone())
                    };
                    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
                    let mut rest: &[u8] = &body;
                    let mut sizes = chunks.iter().cycle();
                    while !rest.is_empty() {
                        let n = sizes.next().copied().unwrap_or(rest.len()).clamp(1, rest.len());
                        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        out.extend_from_slice(&rest[..n]);
                        out.extend_from_slice(b"\r\n");
                        // Each chunk its own write: the client sees the splits.
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                        let _ = s.flush().await;
                        out.clear();
                        rest = &rest[n..];
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let k8s = K8s {
            enabled: true,
            api_server: format!("https://{addr}"),
            credential: Credential::Token("fuzz-token".into()),
            ca_cert: Some(ca),
            tls_server_name: "kubernetes".into(),
            insecure_skip_tls_verify: false,
        };
        let client = KubeClient::new(
            &k8s,
            Credentials::load(&k8s).unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        Stub {
            rt,
            store: KubeLeaseStore::new(client, "kube-system", "ha-vip"),
            script,
            _dir: dir,
        }
    })
}

/// The whole exchange of one case must end within this.
const BOUND: Duration = Duration::from_secs(20);

fn set(body: Vec<u8>, chunks: Vec<usize>) -> &'static Stub {
    let s = stub();
    *s.script.lock().unwrap() = Script { body, chunks };
    s
}

/// A well-formed Lease: (JSON, holder, duration, transitions).
fn good_lease() -> impl Strategy<Value = (Value, String, u32, u32)> {
    (
        "[a-z0-9.-]{0,40}",
        any::<u32>(),
        any::<u32>(),
        "[0-9]{1,12}",
    )
        .prop_map(|(holder, duration, transitions, rv)| {
            let v = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "ha-vip", "namespace": "kube-system",
                             "resourceVersion": rv, "uid": "u1"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                         "acquireTime": "2024-05-01T12:03:04.000000Z",
                         "renewTime": "2024-05-01T12:03:05.123456Z",
                         "leaseTransitions": transitions},
            });
            (v, holder, duration, transitions)
        })
}

/// Any JSON value, a few levels deep (wrong types in every field).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::from),
        Just(Value::from("2024-13-45T25:61:61.9999999999Z")),
        Just(Value::from(u64::MAX)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("spec".to_string()),
                    Just("resourceVersion".to_string()),
                    Just("holderIdentity".to_string()),
                    Just("leaseDurationSeconds".to_string()),
                    Just("renewTime".to_string()),
                    Just("leaseTransitions".to_string()),
                    Just("type".to_string()),
                    Just("object".to_string()),
                    Just("code".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Lease-shaped object with any value in any field.
fn odd_lease() -> impl Strategy<Value = Value> {
    (any_json(), any_json(), any_json(), any_json(), any_json()).prop_map(|(rv, h, d, t, n)| {
        json!({"metadata": {"resourceVersion": rv},
               "spec": {"holderIdentity": h, "leaseDurationSeconds": d,
                        "renewTime": t, "leaseTransitions": n}})
    })
}

/// Bytes of `v`, then cut at `cut` (if any) and with `flip` XORed in.
fn damaged(v: &Value, cut: Option<usize>, flip: Option<(usize, u8)>) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).unwrap();
    if let Some((i, x)) = flip
        && !b.is_empty()
    {
        let i = i % b.len();
        b[i] ^= x;
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..64, 1..8)
}

/// Reads the watch to its end (or `max` items); the events or errors seen.
fn drain(s: &Stub, max: usize) -> Vec<Result<WatchEvent, String>> {
    s.rt.block_on(async {
        tokio::time::timeout(BOUND, async {
            let mut w = s.store.watch(None).await.map_err(|e| e.to_string())?;
            let mut seen = Vec::new();
            while let Some(item) = w.next().await {
                seen.push(item.map_err(|e| e.to_string()));
                if seen.len() >= max {
                    break;
                }
            }
            Ok::<_, String>(seen)
        })
        .await
        .expect("the watch neither ended nor failed within 20 s")
        .unwrap_or_else(|e| vec![Err(e)])
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Integration tests have no lib.rs beside them for proptest's default.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz_lease_wire.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn good_leases_decode_exactly((v, holder, duration, transitions) in good_lease(), ch in chunks()) {
        let s = set(serde_json::to_vec(&v).unwrap(), ch);
        let got = s.rt.block_on(async { tokio::time::timeout(BOUND, s.store.get()).await })
            .expect("get hung")
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("a lease");
        prop_assert_eq!(got.record.holder.as_str(), holder.as_str());
        prop_assert_eq!(got.record.duration_seconds, duration);
        prop_assert_eq!(got.record.transitions, transitions);
    }

    #[test]
    fn odd_and_damaged_leases_never_panic(
        v in prop_oneof![odd_lease(), any_json(), good_lease().prop_map(|g| g.0)],
        cut in proptest::option::of(any::<usize>()),
        flip in proptest::option::of((any::<usize>(), 1u8..=255)),
        ch in chunks(),
    ) {
        let s = set(damaged(&v, cut, flip), ch);
        // Ok or a decoding error: both fine; a panic or a hang is the finding.
        let _ = s.rt.block_on(async { tokio::time::timeout(BOUND, s.store.get()).await }).expect("get hung");
    }

    #[test]
    fn watch_lines_decode_in_order_across_any_chunking(
        leases in proptest::collection::vec(good_lease(), 1..6),
        blank in proptest::collection::vec(prop_oneof![Just(""), Just("\n"), Just(" \r\n")], 1..6),
        ch in chunks(),
    ) {
        let mut body = Vec::new();
        for (i, (v, ..)) in leases.iter().enumerate() {
            let kind = if i == 0 { "ADDED" } else { "MODIFIED" };
            body.extend_from_slice(serde_json::to_string(&json!({"type": kind, "object": v})).unwrap().as_bytes());
            body.push(b'\n');
            body.extend_from_slice(blank[i % blank.len()].as_bytes());
        }
        let s = set(body, ch);
        let got = drain(s, 100);
        let holders: Vec<String> = got.iter().map(|e| match e {
            Ok(WatchEvent::Changed(l)) => l.record.holder.clone(),
            other => panic!("unexpected {other:?}"),
        }).collect();
        let want: Vec<String> = leases.iter().map(|l| l.1.clone()).collect();
        prop_assert_eq!(holders, want);
    }

    #[test]
    fn garbage_watch_lines_never_panic_or_hang(
        lines in proptest::collection::vec(
            prop_oneof![
                (prop_oneof![Just("ADDED".to_string()), Just("MODIFIED".to_string()), Just("DELETED".to_string()), Just("BOOKMARK".to_string()), Just("ERROR".to_string()), ".{0,8}"], prop_oneof![odd_lease(), any_json()])
                    .prop_map(|(t, o)| serde_json::to_vec(&json!({"type": t, "object": o})).unwrap()),
                any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                proptest::collection::vec(any::<u8>(), 0..64),
            ],
            0..8,
        ),
        cut in proptest::option::of(any::<usize>()),
        ch in chunks(),
    ) {
        let mut body = lines.join(&b'\n');
        if let Some(c) = cut {
            body.truncate(c % (body.len() + 1));
        }
        let _ = drain(set(body, ch), 100);
    }
}
