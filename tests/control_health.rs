//! The health probe against a real kube-apiserver and against local HTTPS
//! stubs (self-signed certificate for `kubernetes`, made here with rcgen).

#[path = "common/apiserver.rs"]
mod apiserver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiserver::ApiServer;
use ha_vip::config::{Credential, Health, K8s};
use ha_vip::health::{Failure, HttpProbe, Probe};
use ha_vip::kube::Credentials;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn health(endpoint: String, ca: Option<PathBuf>, timeout: Duration) -> Health {
    Health {
        endpoint,
        interval: Duration::from_secs(2),
        holding_interval: Duration::from_millis(500),
        timeout,
        stability_buffer: Duration::from_secs(5),
        rise: Duration::from_secs(5),
        decisive_refusals: 2,
        ca_cert: ca,
        tls_server_name: "kubernetes".into(),
        insecure_skip_tls_verify: false,
        authenticate: false,
    }
}

/// `h` with `health.authenticate: true`.
fn authenticated(mut h: Health) -> Health {
    h.authenticate = true;
    h
}

/// A self-signed client certificate (CN ha-vip-node) the stubs trust, and
/// a kubeconfig naming it; the stubs record whether it was presented.
struct ClientCert {
    cert: rcgen::CertifiedKey<rcgen::KeyPair>,
}

fn client_cert() -> &'static ClientCert {
    static CERT: std::sync::OnceLock<ClientCert> = std::sync::OnceLock::new();
    CERT.get_or_init(|| ClientCert {
        cert: rcgen::generate_simple_self_signed(vec!["ha-vip-node".to_string()]).unwrap(),
    })
}

/// Credentials from a kubeconfig with the client certificate and a token.
fn cert_and_token_creds(dir: &std::path::Path) -> Credentials {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let c = &client_cert().cert;
    let kc = dir.join("kc.yaml");
    std::fs::write(
        &kc,
        format!(
            "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n    token: sekret-from-kubeconfig\n",
            b64(&c.cert.pem()),
            b64(&c.cert.pem()),
            b64(&c.signing_key.serialize_pem()),
        ),
    )
    .unwrap();
    let k8s = K8s {
        enabled: true,
        api_server: "https://127.0.0.1:6443".into(),
        credential: Credential::Kubeconfig(kc),
        ca_cert: None,
        tls_server_name: "kubernetes".into(),
        insecure_skip_tls_verify: false,
    };
    Credentials::load(&k8s).unwrap()
}

/// An HTTPS server on loopback answering every request with `answer`, or
/// never answering when it is `None`. Requests' heads go to the channel.
struct Stub {
    port: u16,
    ca: PathBuf,
    heads: mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

fn http(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn stub(answer: Option<String>) -> Stub {
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
    .with_client_cert_verifier(client_verifier())
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            let tx = tx.clone();
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
                let presented = tls.get_ref().1.peer_certificates().is_some();
                let _ = tx.send(format!(
                    "client-certificate: {}\r\n{}",
                    if presented { "presented" } else { "none" },
                    String::from_utf8_lossy(&head)
                ));
                match answer {
                    Some(a) => {
                        let _ = tls.write_all(a.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                    // Accept, read, never answer.
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    Stub {
        port,
        ca,
        heads,
        _dir: dir,
    }
}

/// Client certificates are optional and, when sent, must be [`client_cert`].
fn client_verifier() -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(client_cert().cert.cert.der().to_vec()))
        .unwrap();
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .unwrap()
}

impl Stub {
    /// A probe with `health.authenticate: true` (the credential is sent).
    fn probe(&self, timeout: Duration, creds: Option<&Credentials>) -> HttpProbe {
        self.probe_with(timeout, creds, true)
    }

    fn probe_with(
        &self,
        timeout: Duration,
        creds: Option<&Credentials>,
        authenticate: bool,
    ) -> HttpProbe {
        let mut h = health(
            format!("https://127.0.0.1:{}/readyz", self.port),
            Some(self.ca.clone()),
            timeout,
        );
        h.authenticate = authenticate;
        HttpProbe::new(&h, creds).unwrap()
    }
}

fn token_creds(token: &str) -> Credentials {
    let k8s = K8s {
        enabled: true,
        api_server: "https://127.0.0.1:6443".into(),
        credential: Credential::Token(token.into()),
        ca_cert: None,
        tls_server_name: "kubernetes".into(),
        insecure_skip_tls_verify: false,
    };
    Credentials::load(&k8s).unwrap()
}

#[tokio::test]
async fn the_probe_is_anonymous_by_default() {
    let mut s = stub(Some(http("200 OK", "ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = cert_and_token_creds(dir.path());
    let r = s
        .probe_with(Duration::from_secs(1), Some(&creds), false)
        .probe()
        .await;
    assert!(r.healthy, "{r:?}");
    let head = s.heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("client-certificate: none\r\nget /readyz http/1.1"),
        "{head}"
    );
    assert!(!head.contains("authorization"), "{head}");
    // An API server that refuses anonymous requests says what to set.
    let s = stub(Some(http("401 Unauthorized", ""))).await;
    let r = s
        .probe_with(Duration::from_secs(1), Some(&creds), false)
        .probe()
        .await;
    assert!(
        r.reason.contains("set health.authenticate: true"),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn authenticate_sends_the_token_and_the_client_certificate() {
    let mut s = stub(Some(http("200 OK", "ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = cert_and_token_creds(dir.path());
    let r = s.probe(Duration::from_secs(1), Some(&creds)).probe().await;
    assert!(r.healthy, "{r:?}");
    assert_eq!(r.reason, "ok");
    let head = s.heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("client-certificate: presented\r\nget /readyz http/1.1"),
        "{head}"
    );
    assert!(
        head.contains("authorization: bearer sekret-from-kubeconfig"),
        "{head}"
    );
}

#[tokio::test]
async fn an_answer_over_1_mib_is_not_read() {
    let s = stub(Some(http("200 OK", &"x".repeat(2 << 20)))).await;
    let r = s.probe(Duration::from_secs(1), None).probe().await;
    assert!(!r.healthy);
    assert!(r.reason.contains("larger than 1 MiB"), "{}", r.reason);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let mut target = stub(Some(http("200 OK", "ok"))).await;
    let location = format!("https://127.0.0.1:{}/readyz", target.port);
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut s = stub(Some(redirect)).await;
    let r = s
        .probe(Duration::from_secs(1), Some(&token_creds("sekret")))
        .probe()
        .await;
    assert!(!r.healthy, "{r:?}");
    assert!(
        r.reason.contains("302") && r.reason.contains("not followed"),
        "{}",
        r.reason
    );
    assert!(s.heads.recv().await.is_some());
    let followed = tokio::time::timeout(Duration::from_millis(500), target.heads.recv()).await;
    assert!(followed.is_err(), "the redirect was followed: {followed:?}");
}

#[tokio::test]
async fn a_failing_readyz_names_the_failed_checks() {
    let body = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]poststarthook/start-kube-apiserver-admission-initializer ok\nreadyz check failed\n";
    let s = stub(Some(http("500 Internal Server Error", body))).await;
    let r = s.probe(Duration::from_secs(1), None).probe().await;
    assert!(!r.healthy);
    assert_eq!(r.reason, "/readyz 500: [-]etcd failed: reason withheld");
}

#[tokio::test]
async fn a_failing_shutdown_check_is_decisive_and_other_failures_are_not() {
    // What kube-apiserver 1.20 answers from its SIGTERM on (body of a real
    // answer, see the_real_sigterm_is_decisive_within_one_probe).
    let shutting = "[+]ping ok\n[+]log ok\n[+]etcd ok\n[-]shutdown failed: reason withheld\n[+]informer-sync ok\nreadyz check failed\n";
    let s = stub(Some(http("500 Internal Server Error", shutting))).await;
    let r = s.probe(Duration::from_secs(1), None).probe().await;
    assert_eq!(r.failure, Some(Failure::ShuttingDown), "{r:?}");
    assert_eq!(
        r.reason,
        "/readyz 500: the API server is shutting down: [-]shutdown failed: reason withheld"
    );
    // Newer API servers with --shutdown-send-retry-after, after the delay.
    let s = stub(Some(http(
        "429 Too Many Requests",
        "The apiserver is shutting down, please try again later.",
    )))
    .await;
    let r = s.probe(Duration::from_secs(1), None).probe().await;
    assert_eq!(r.failure, Some(Failure::ShuttingDown), "{r:?}");
    // A 500 on another check (etcd), a 503, a wrong body: ambiguous.
    let etcd = "[+]ping ok\n[-]etcd failed: reason withheld\n[+]shutdown ok\nreadyz check failed\n";
    for answer in [
        http("500 Internal Server Error", etcd),
        http("503 Service Unavailable", ""),
        http("200 OK", "nope"),
    ] {
        let s = stub(Some(answer)).await;
        let r = s.probe(Duration::from_secs(1), None).probe().await;
        assert_eq!(r.failure, Some(Failure::Ambiguous), "{r:?}");
    }
    let s = stub(Some(http("200 OK", "ok"))).await;
    let r = s.probe(Duration::from_secs(1), None).probe().await;
    assert_eq!((r.healthy, r.failure), (true, None));
}

#[tokio::test]
async fn a_wrong_body_is_unhealthy() {
    let s = stub(Some(http("200 OK", "[-]etcd failed"))).await;
    let r = s.probe(Duration::from_secs(1), None).probe().await;
    assert!(!r.healthy);
    assert_eq!(r.reason, "body \"[-]etcd failed\"");
}

#[tokio::test]
async fn forbidden_names_the_missing_rbac_rule() {
    let s = stub(Some(http("403 Forbidden", "{\"kind\":\"Status\"}"))).await;
    let r = s
        .probe(Duration::from_secs(1), Some(&token_creds("t")))
        .probe()
        .await;
    assert!(!r.healthy);
    assert!(r.reason.starts_with("/readyz 403"), "{}", r.reason);
    assert!(
        r.reason.contains("nonResourceURLs [\"/readyz\"]"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("system:public-info-viewer"),
        "{}",
        r.reason
    );
    let s = stub(Some(http("401 Unauthorized", ""))).await;
    let r = s
        .probe(Duration::from_secs(1), Some(&token_creds("t")))
        .probe()
        .await;
    assert!(
        r.reason.contains("rejected the credential from k8s.token"),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let mut s = stub(None).await;
    let t0 = Instant::now();
    let r = s.probe(Duration::from_millis(300), None).probe().await;
    let took = t0.elapsed();
    assert!(!r.healthy);
    assert_eq!(r.reason, "timeout after 300ms");
    assert_eq!(r.failure, Some(Failure::Ambiguous), "a timeout is doubtful");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        s.heads.recv().await.is_some(),
        "the request was sent before the timeout"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_tls_failure() {
    let s = stub(Some(http("200 OK", "ok"))).await;
    let mut h = health(
        format!("https://127.0.0.1:{}/readyz", s.port),
        Some(s.ca.clone()),
        Duration::from_secs(1),
    );
    h.tls_server_name = "other-name".into();
    let r = HttpProbe::new(&h, None).unwrap().probe().await;
    assert!(!r.healthy);
    assert!(r.reason.starts_with("TLS: "), "{}", r.reason);
    assert!(
        r.reason.contains("not valid for name \"other-name\""),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let ca = tempfile::NamedTempFile::new().unwrap();
    let s = stub(Some(http("200 OK", "ok"))).await;
    std::fs::copy(&s.ca, ca.path()).unwrap();
    let h = health(
        format!("https://127.0.0.1:{port}/readyz"),
        Some(ca.path().into()),
        Duration::from_secs(1),
    );
    let r = HttpProbe::new(&h, None).unwrap().probe().await;
    assert_eq!(
        (r.healthy, r.reason.as_str()),
        (false, "connection refused")
    );
    assert_eq!(r.failure, Some(Failure::Refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_readyz_is_healthy_until_the_apiserver_stops() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let endpoint = format!("{}/readyz", api.server());
    // Anonymous, as most nodes run it: system:public-info-viewer allows /readyz.
    let anonymous = HttpProbe::new(
        &health(endpoint.clone(), Some(api.ca()), Duration::from_secs(1)),
        None,
    )
    .unwrap();
    let r = anonymous.probe().await;
    assert!(r.healthy, "{r:?}");
    // With the node's kubeconfig: its client certificate, and its CA (no health.ca_cert).
    let node =
        Credentials::load(&api.k8s(Credential::Kubeconfig(api.var("KUBECONFIG_NODE").into())))
            .unwrap();
    let with_cert = HttpProbe::new(
        &authenticated(health(endpoint.clone(), None, Duration::from_secs(1))),
        Some(&node),
    )
    .unwrap();
    assert!(with_cert.probe().await.healthy);
    // With the admin token.
    let admin =
        Credentials::load(&api.k8s(Credential::Token(api.var("KUBE_ADMIN_TOKEN")))).unwrap();
    let with_token = HttpProbe::new(
        &authenticated(health(endpoint.clone(), None, Duration::from_secs(1))),
        Some(&admin),
    )
    .unwrap();
    assert!(with_token.probe().await.healthy);
    // The client CA did not sign the serving certificate.
    let wrong_ca = HttpProbe::new(
        &health(
            endpoint,
            Some(api.var("KUBE_CLIENT_CA").into()),
            Duration::from_secs(1),
        ),
        None,
    )
    .unwrap();
    let r = wrong_ca.probe().await;
    assert!(!r.healthy && r.reason.starts_with("TLS: "), "{r:?}");

    api.stop_apiserver().await;
    let r = anonymous.probe().await;
    assert_eq!(
        (r.healthy, r.reason.as_str()),
        (false, "connection refused")
    );
    api.start_apiserver().await;
    assert!(anonymous.probe().await.healthy);
}

/// A kube-apiserver that just started accepts connections before it is
/// ready (RBAC bootstrap, post-start hooks): /readyz fails meanwhile, so a
/// standby whose API server restarted does not count as healthy, let alone
/// campaign, before it is ready and has stayed ready for `health.rise`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_apiserver_is_not_healthy_while_it_warms_up() {
    use ha_vip::health::StabilityFilter;
    let Some(api) = ApiServer::start() else {
        return;
    };
    let endpoint = format!("https://127.0.0.2:{}/readyz", api.var("KUBE_PORT"));
    let probe = HttpProbe::new(
        &health(endpoint, Some(api.ca()), Duration::from_millis(500)),
        None,
    )
    .unwrap();
    let rise = Duration::from_secs(1);
    let mut h = health(String::new(), None, Duration::from_secs(1));
    h.rise = rise;
    let mut filter = StabilityFilter::new(Duration::from_secs(5)).configured(&h);
    let start = tokio::spawn(async move {
        let peer = api.start_peer("warm", "127.0.0.2", &[]).await;
        (api, peer)
    });
    let t0 = Instant::now();
    let mut first_answer = None;
    let mut first_ok = None;
    let mut failing_answers = Vec::new();
    let flipped = loop {
        let r = probe.probe().await;
        let at = r.at - t0;
        if r.reason != "connection refused" && first_answer.is_none() {
            first_answer = Some(at);
        }
        if r.healthy {
            first_ok.get_or_insert(at);
        } else if first_answer.is_some() {
            assert_eq!(first_ok, None, "failed again after its first ok: {r:?}");
            failing_answers.push(r.reason.clone());
        }
        if filter.observe_result(&r) {
            break at;
        }
        assert!(at < Duration::from_secs(90), "never healthy: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (first_answer, first_ok) = (first_answer.unwrap(), first_ok.unwrap());
    eprintln!(
        "restart: first answer other than refused after {first_answer:?}, /readyz failing for {:?} ({} answers: {:?}), ok after {first_ok:?}, healthy (rise {rise:?}) after {flipped:?}",
        first_ok - first_answer,
        failing_answers.len(),
        failing_answers
            .iter()
            .collect::<std::collections::BTreeSet<_>>(),
    );
    assert!(
        !failing_answers.is_empty(),
        "no failing /readyz between the port opening and ready"
    );
    assert!(flipped >= first_ok + rise, "healthy before rise had passed");
    let (_api, _peer) = start.await.unwrap();
}

/// CPU time of process `pid` (user + system) from /proc, in clock ticks
/// converted to a Duration (USER_HZ is 100 on Linux).
fn proc_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// What one probe costs, on both ends: it decides whether probing every
/// 500 ms while holding (health.holding_interval) is cheap enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_probe_costs_little_cpu_on_either_end() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let probe = HttpProbe::new(
        &health(
            format!("{}/readyz", api.server()),
            Some(api.ca()),
            Duration::from_secs(2),
        ),
        None,
    )
    .unwrap();
    assert!(probe.probe().await.healthy);
    let n = 200u32;
    let server_pid = api.var("KUBE_APISERVER_PID");
    let (server0, self0, t0) = (proc_cpu(&server_pid), proc_cpu("self"), Instant::now());
    for _ in 0..n {
        let r = probe.probe().await;
        assert!(r.healthy, "{r:?}");
    }
    let wall = t0.elapsed() / n;
    let client = (proc_cpu("self") - self0) / n;
    let server = (proc_cpu(&server_pid) - server0) / n;
    eprintln!(
        "one probe: {wall:?} wall, ha-vip {client:?} CPU, kube-apiserver {server:?} CPU ({n} probes); at one probe per 500 ms: {:.2}% of a core here, {:.2}% in kube-apiserver",
        client.as_secs_f64() * 2.0 * 100.0,
        server.as_secs_f64() * 2.0 * 100.0
    );
    // Generous: a TLS handshake and one GET, on a loaded shared machine.
    assert!(client < Duration::from_millis(20), "{client:?}");
    assert!(server < Duration::from_millis(50), "{server:?}");
}

/// kube-apiserver's own graceful shutdown, as the probe sees it: with
/// --shutdown-delay-duration it keeps serving but fails /readyz on its
/// `shutdown` check (decisive at the first probe), then closes its port
/// (refused, decisive after health.decisive_refusals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_sigterm_is_decisive_within_one_probe() {
    let Some(api) = ApiServer::start() else {
        return;
    };
    let peer = api
        .start_peer("term", "127.0.0.2", &["--shutdown-delay-duration=2s"])
        .await;
    let probe = HttpProbe::new(
        &health(
            format!("{}/readyz", peer.server),
            Some(api.ca()),
            Duration::from_secs(1),
        ),
        None,
    )
    .unwrap();
    assert!(probe.probe().await.healthy);
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(peer.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = probe.probe().await;
    eprintln!("{:?} after SIGTERM: {r:?}", r.at - t0);
    assert_eq!(r.failure, Some(Failure::ShuttingDown), "{r:?}");
    assert!(
        r.reason.contains("[-]shutdown failed"),
        "the 1.20 answer: {}",
        r.reason
    );
    let refused = loop {
        let r = probe.probe().await;
        if r.failure == Some(Failure::Refused) {
            break r.at - t0;
        }
        assert_eq!(r.failure, Some(Failure::ShuttingDown), "{r:?}");
        assert!(r.at - t0 < Duration::from_secs(10), "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("shutdown answers until the port closed {refused:?} after SIGTERM");
    assert!(refused >= Duration::from_secs(2), "{refused:?}");
}
