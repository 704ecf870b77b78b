//! The Kubernetes client against a broken or hostile HTTPS server on
//! loopback (self-signed certificate for `kubernetes`, made with rcgen):
//! endless answers and watch lines are cut at 1 MiB with a clear error,
//! without stalling the single thread, and redirects are not followed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ha_vip::config::{Credential, K8s};
use ha_vip::kube::{Credentials, KubeClient, KubeError, Operation};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// An HTTPS server whose answer depends on the request path.
struct Stub {
    port: u16,
    ca: PathBuf,
    /// Bytes of answer written so far, over all connections.
    sent: Arc<AtomicU64>,
    /// Request heads received.
    heads: mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

const CHUNK: usize = 64 * 1024;

async fn stub(redirect_to: Option<u16>) -> Stub {
    let certified = rcgen::generate_simple_self_signed(vec!["kubernetes".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, heads) = mpsc::unbounded_channel();
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let sent = counter.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let _ = tx.send(head);
                let chunked = |status: &str| {
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                };
                // Endless: a JSON string or line that never ends.
                let (start, filler): (String, u8) = match path.as_str() {
                    "/endless-body" => (chunked("200 OK"), b'x'),
                    "/endless-error" => (chunked("500 Internal Server Error"), b'x'),
                    "/endless-line" => (chunked("200 OK"), b'x'),
                    _ => {
                        let to = redirect_to.unwrap_or(1);
                        let a = format!(
                            "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://127.0.0.1:{to}/endless-body\r\nContent-Length: 0\r\n\r\n"
                        );
                        let _ = tls.write_all(a.as_bytes()).await;
                        let _ = tls.shutdown().await;
                        return;
                    }
                };
                if tls.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let first = match path.as_str() {
                    "/endless-line" => {
                        "{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":\"MODIFIED\",\"object\":\""
                    }
                    _ => "{\"kind\":\"Status\",\"message\":\"",
                };
                let mut body = first.as_bytes().to_vec();
                body.resize(CHUNK, filler);
                let mut chunk = format!("{:x}\r\n", body.len()).into_bytes();
                chunk.extend_from_slice(&body);
                chunk.extend_from_slice(b"\r\n");
                let mut rest = format!("{CHUNK:x}\r\n").into_bytes();
                rest.extend(std::iter::repeat_n(filler, CHUNK));
                rest.extend_from_slice(b"\r\n");
                let mut next = chunk;
                loop {
                    if tls.write_all(&next).await.is_err() {
                        return;
                    }
                    sent.fetch_add(next.len() as u64, Ordering::Relaxed);
                    next = rest.clone();
                }
            });
        }
    });
    Stub {
        port,
        ca,
        sent,
        heads,
        _dir: dir,
    }
}

impl Stub {
    fn client(&self) -> KubeClient {
        let k8s = K8s {
            enabled: true,
            api_server: format!("https://127.0.0.1:{}", self.port),
            credential: Credential::Token("sekret".into()),
            ca_cert: Some(self.ca.clone()),
            tls_server_name: "kubernetes".into(),
            insecure_skip_tls_verify: false,
        };
        KubeClient::new(
            &k8s,
            Credentials::load(&k8s).unwrap(),
            Duration::from_secs(20),
        )
        .unwrap()
    }
}

fn op() -> Operation {
    Operation {
        verb: "get",
        resource: "leases.coordination.k8s.io",
        namespace: Some("kube-system".into()),
        name: Some("ha-vip".into()),
    }
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// The longest pause of a 10 ms ticker while `fut` runs on this thread.
async fn longest_stall<F: std::future::Future>(fut: F) -> (F::Output, Duration) {
    let longest = std::cell::Cell::new(Duration::ZERO);
    let ticker = async {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = Instant::now();
            longest.set(longest.get().max(now - last));
            last = now;
        }
    };
    let out = tokio::select! {
        out = fut => out,
        () = ticker => unreachable!(),
    };
    (out, longest.get())
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_answer_is_cut_at_1_mib() {
    let s = stub(None).await;
    let client = s.client();
    let before = rss();
    let started = Instant::now();
    let r = client
        .get::<serde_json::Value>(&op(), "/endless-body")
        .await;
    let took = started.elapsed();
    let e = r.expect_err("an endless answer cannot succeed");
    assert!(
        matches!(&e, KubeError::Transport { .. }) && e.to_string().contains("larger than 1 MiB"),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("endless answer refused after {} ms", took.as_millis());
    let grew = rss().saturating_sub(before);
    assert!(grew < 64 << 20, "memory grew by {grew} bytes");
    // The connection was dropped: the server cannot push much more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = s.sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.sent.load(Ordering::Relaxed), sent, "still reading");
    assert!(sent < 32 << 20, "sent {sent}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_error_answer_is_cut_at_1_mib() {
    let s = stub(None).await;
    let started = Instant::now();
    let e = s
        .client()
        .get::<serde_json::Value>(&op(), "/endless-error")
        .await
        .expect_err("500");
    assert_eq!(e.status(), Some(500), "{e}");
    assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_watch_line_ends_the_watch_without_stalling_the_thread() {
    let s = stub(None).await;
    let client = s.client();
    let before = rss();
    let (events, stall) = longest_stall(async {
        let stream = client
            .watch::<serde_json::Value>(&op(), "/endless-line")
            .await
            .expect("the watch opens");
        stream.collect::<Vec<_>>().await
    })
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].as_ref().unwrap()["type"], "ADDED");
    let e = events[1].as_ref().expect_err("the endless line");
    assert!(
        e.to_string()
            .contains("a watch event line is larger than 1 MiB"),
        "{e}"
    );
    assert!(
        stall < Duration::from_millis(500),
        "thread stalled {stall:?}"
    );
    eprintln!("longest pause of a 10 ms ticker: {} ms", stall.as_millis());
    let grew = rss().saturating_sub(before);
    assert!(grew < 64 << 20, "memory grew by {grew} bytes");
    eprintln!("resident memory grew by {} KiB", grew >> 10);
}

#[tokio::test(flavor = "current_thread")]
async fn a_redirect_is_not_followed() {
    let mut target = stub(None).await;
    let s = stub(Some(target.port)).await;
    let e = s
        .client()
        .get::<serde_json::Value>(&op(), "/apis/coordination.k8s.io/v1/leases")
        .await
        .expect_err("a redirect is an error");
    assert_eq!(e.status(), Some(307), "{e}");
    let followed = tokio::time::timeout(Duration::from_millis(500), target.heads.recv()).await;
    assert!(followed.is_err(), "the redirect was followed: {followed:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_v1_serving_certificate_is_refused_with_how_to_reissue_it() {
    // openssl x509 -req without -extfile: X.509 v1, no subjectAltName.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=ca",
        "-days",
        "1",
    ]);
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "srv.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "srv.key",
        "-subj",
        "/CN=kubernetes",
        "-out",
        "srv.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "srv.crt",
    ]);
    use rustls_pki_types::pem::PemObject;
    let chain = vec![CertificateDer::from_pem_file(d.join("srv.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(d.join("srv.key")).unwrap();
    // rustls' own with_single_cert refuses a v1 certificate too: serve it
    // through a resolver, as a Go API server would serve it.
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider.key_provider.load_private_key(key).unwrap();
    let certified = rustls::sign::CertifiedKey::new(chain, signer);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let k8s = K8s {
        enabled: true,
        api_server: format!("https://127.0.0.1:{port}"),
        credential: Credential::Token("t".into()),
        ca_cert: Some(d.join("ca.crt")),
        tls_server_name: "kubernetes".into(),
        insecure_skip_tls_verify: false,
    };
    let client = KubeClient::new(
        &k8s,
        Credentials::load(&k8s).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = client
        .get::<serde_json::Value>(&op(), "/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("X.509 v1") && e.contains("-extfile"), "{e}");
}
