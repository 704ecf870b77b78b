//! The real probe: TCP connect, then HTTPS `GET /readyz` expecting 200 `ok`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Failure, HealthError, Probe, ProbeResult};
use crate::config::Health;
use crate::kube::tls::{self, TlsSettings};
use crate::kube::{
    Credentials, MAX_BODY, find_io_error, find_rustls_error, io_reason, read_capped, read_file,
};

/// Probes the local API server's readiness endpoint.
pub struct HttpProbe {
    /// The client and the credential generation it was built for.
    http: Mutex<(u64, reqwest::Client)>,
    url: reqwest::Url,
    host: String,
    port: u16,
    timeout: Duration,
    health: Health,
    ca_file: Option<(Vec<u8>, String)>,
    /// The k8s credential: its CA (unless health.ca_cert), and what is sent
    /// with health.authenticate.
    shared: Option<Credentials>,
}

impl std::fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProbe")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpProbe {
    /// The probe `config` describes: `config.health`, with the k8s
    /// credential (and its CA) when one is configured.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, HealthError> {
        let creds = match config.k8s.credential {
            crate::config::Credential::None => None,
            _ => Some(Credentials::load(&config.k8s)?),
        };
        Self::new(&config.health, creds.as_ref())
    }

    /// A probe of `health.endpoint`. The CA is `health.ca_cert`, else the
    /// one of `creds` (the k8s credential). The credential's token or client
    /// certificate is sent only with `health.authenticate`: `/readyz` is
    /// public, and a process that took the port must not collect it.
    pub fn new(health: &Health, creds: Option<&Credentials>) -> Result<Self, HealthError> {
        let bad = |reason: String| HealthError::InvalidEndpoint {
            url: health.endpoint.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&health.endpoint).map_err(|e| bad(e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("only https is supported".into()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let ca_file = match &health.ca_cert {
            Some(p) => Some((
                read_file("CA bundle (health.ca_cert)", p)?,
                p.display().to_string(),
            )),
            None => None,
        };
        if health.insecure_skip_tls_verify {
            tracing::warn!(
                endpoint = %url,
                "health.insecure_skip_tls_verify is set: the local API server's certificate is NOT verified"
            );
        }
        let generation = creds.map_or(0, Credentials::generation);
        let http = build(health, ca_file.as_ref(), creds)?;
        Ok(Self {
            http: Mutex::new((generation, http)),
            url,
            host,
            port,
            timeout: health.timeout,
            health: health.clone(),
            ca_file,
            shared: creds.cloned(),
        })
    }

    /// The HTTP client for the credential's current reading (its CA, and
    /// with `health.authenticate` its certificate), rebuilt after a rotation.
    fn http(&self) -> reqwest::Client {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(creds) = &self.shared {
            creds.refresh();
            let generation = creds.generation();
            if http.0 != generation {
                match build(&self.health, self.ca_file.as_ref(), Some(creds)) {
                    Ok(client) => *http = (generation, client),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use the reloaded credential for the probe; still using the previous one");
                        http.0 = generation;
                    }
                }
            }
        }
        http.1.clone()
    }

    /// The credential to send: only with `health.authenticate`.
    fn sent(&self) -> Option<&Credentials> {
        self.shared.as_ref().filter(|_| self.health.authenticate)
    }

    async fn attempt(&self) -> Result<(), (Failure, String)> {
        let doubt = |reason: String| (Failure::Ambiguous, reason);
        TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| (io_failure(&e), io_reason(&e)))?;
        let mut req = self.http().get(self.url.clone());
        if let Some(creds) = self.sent() {
            match creds.token().await {
                Ok(Some(token)) => req = req.bearer_auth(token),
                Ok(None) => {}
                Err(e) => return Err(doubt(e.to_string())),
            }
        }
        let mut resp = req.send().await.map_err(|e| transport_failure(&e))?;
        let status = resp.status().as_u16();
        let body = read_capped(&mut resp, MAX_BODY)
            .await
            .map_err(|e| transport_failure(&e))?
            .map_err(|_| {
                doubt(format!(
                    "{} {status}: answer larger than {} MiB, not read (is health.endpoint a kube-apiserver?)",
                    self.url.path(),
                    MAX_BODY >> 20
                ))
            })?;
        let body = String::from_utf8_lossy(&body);
        let path = self.url.path();
        let who = self
            .sent()
            .map_or_else(|| "anonymous requests".to_string(), Credentials::source);
        match decisive(status, &body) {
            Some(Failure::ShuttingDown) => {
                return Err((
                    Failure::ShuttingDown,
                    format!(
                        "{path} {status}: the API server is shutting down{}",
                        failed_checks(&body)
                    ),
                ));
            }
            Some(Failure::Starting) => {
                return Err((
                    Failure::Starting,
                    format!(
                        "{path} {status}: the API server is starting (post-start hooks not done){}",
                        failed_checks(&body)
                    ),
                ));
            }
            _ => {}
        }
        let reason = match status {
            200 if body.trim() == "ok" => return Ok(()),
            200 => format!("body {:?}", short(&body)),
            401 if self.sent().is_none() => format!(
                "{path} 401: the API server refuses anonymous requests (--anonymous-auth=false); set health.authenticate: true to send the k8s credential"
            ),
            401 => format!("{path} 401: the API server rejected the credential from {who}"),
            403 => format!(
                "{path} 403: the credential from {who} lacks RBAC get on nonResourceURLs [\"{path}\"] (system:public-info-viewer grants it to everyone by default; was that binding removed?)"
            ),
            300..=399 => format!(
                "{path} {status}: a redirect, not followed; health.endpoint must be the API server's own /readyz"
            ),
            _ => format!("{path} {status}{}", failed_checks(&body)),
        };
        Err(doubt(reason))
    }
}

/// Whether an answer says, without doubt, that the API server is not
/// serving: going away or (re)starting.
///
/// * Going away: kube-apiserver (1.20 measured, newer alike) fails
///   `/readyz` with `[-]shutdown failed` from its SIGTERM on, for the whole
///   `--shutdown-delay-duration` while it still serves; newer ones with
///   `--shutdown-send-retry-after` answer new requests after that delay
///   with 429 "The apiserver is shutting down".
/// * Starting: a post-start hook (`[-]poststarthook/...`) runs once, when
///   the process starts, and `/readyz` fails on it only until it is done.
///   An API server killed and started again (a static pod's container
///   restarted) opens its port within a second and then answers 500 on its
///   hooks for seconds (1.1 s idle, 8 s loaded, measured on 1.20): without
///   this the holder's refusals stop before they are decisive and the
///   stability buffer keeps the VIP on a warming API server.
fn decisive(status: u16, body: &str) -> Option<Failure> {
    match status {
        500..=599 if body.lines().any(|l| l.starts_with("[-]shutdown ")) => {
            Some(Failure::ShuttingDown)
        }
        429 if body.contains("is shutting down") => Some(Failure::ShuttingDown),
        500..=599 if body.lines().any(|l| l.starts_with("[-]poststarthook/")) => {
            Some(Failure::Starting)
        }
        _ => None,
    }
}

/// A refused connection is decisive (counted); every other I/O failure is
/// ambiguous.
fn io_failure(e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::Refused
    } else {
        Failure::Ambiguous
    }
}

/// The failing checks of a /readyz answer (`[-]etcd failed: ...`).
fn failed_checks(body: &str) -> String {
    let failed: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
    if failed.is_empty() {
        String::new()
    } else {
        format!(": {}", short(&failed.join("; ")))
    }
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 120 {
        format!("{}...", s.chars().take(120).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The probe's HTTP client: CA from `health.ca_cert`, else the credential's;
/// the credential's certificate only with `health.authenticate`.
fn build(
    health: &Health,
    ca_file: Option<&(Vec<u8>, String)>,
    creds: Option<&Credentials>,
) -> Result<reqwest::Client, HealthError> {
    let loaded = creds.map(Credentials::current);
    let (ca_pem, ca_origin) = match (ca_file, &loaded) {
        (Some((pem, origin)), _) => (Some(pem.as_slice()), origin.clone()),
        (None, Some(c)) => (c.ca_pem.as_deref(), c.ca_origin.clone()),
        (None, None) => (None, "none".to_string()),
    };
    let config = tls::client_config(TlsSettings {
        ca_pem,
        ca_origin: &ca_origin,
        server_name: &health.tls_server_name,
        insecure: health.insecure_skip_tls_verify,
        identity: loaded
            .as_ref()
            .filter(|_| health.authenticate)
            .and_then(|c| c.identity.clone()),
    })?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .http1_only()
        // A fresh connection per probe: each probe proves the server
        // still accepts TCP and completes a TLS handshake.
        .pool_max_idle_per_host(0)
        // A redirect would send the probe (and, with health.authenticate,
        // the token) somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| HealthError::Setup(crate::kube::KubeError::BuildClient(e.to_string())))
}

fn transport_failure(e: &reqwest::Error) -> (Failure, String) {
    if let Some(t) = find_rustls_error(e) {
        return (Failure::Ambiguous, format!("TLS: {}", tls::explain(t)));
    }
    match find_io_error(e) {
        Some(io) => (io_failure(io), io_reason(io)),
        None => (Failure::Ambiguous, crate::kube::error_chain(e)),
    }
}

impl Probe for HttpProbe {
    async fn probe(&self) -> ProbeResult {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.attempt()).await;
        let at = Instant::now();
        let (failure, reason) = match outcome {
            Ok(Ok(())) => (None, "ok".to_string()),
            Ok(Err((failure, reason))) => (Some(failure), reason),
            Err(_) => (
                Some(Failure::Ambiguous),
                format!("timeout after {}", humantime::format_duration(self.timeout)),
            ),
        };
        let healthy = failure.is_none();
        tracing::trace!(healthy, ?failure, %reason, took_ms = (at - started).as_millis() as u64, "health probe");
        ProbeResult {
            healthy,
            failure,
            reason,
            at,
        }
    }
}

#[cfg(test)]
mod decisive_tests {
    use super::{Failure, decisive};

    #[test]
    fn a_readyz_failing_a_post_start_hook_is_decisive() {
        let warming = "[+]ping ok\n[+]etcd ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n[-]poststarthook/crd-informer-synced failed: reason withheld\nreadyz check failed\n";
        assert_eq!(decisive(500, warming), Some(Failure::Starting));
    }

    #[test]
    fn shutdown_answers_are_decisive_and_other_failures_are_not() {
        let shutdown = "[+]ping ok\n[-]shutdown failed: reason withheld\nreadyz check failed\n";
        assert_eq!(decisive(500, shutdown), Some(Failure::ShuttingDown));
        assert_eq!(
            decisive(
                429,
                "The apiserver is shutting down, please try again later."
            ),
            Some(Failure::ShuttingDown)
        );
        let etcd = "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n";
        assert_eq!(decisive(500, etcd), None);
        assert_eq!(decisive(200, "ok"), None);
        assert_eq!(decisive(403, "forbidden"), None);
    }
}
