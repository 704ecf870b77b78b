//! A small Kubernetes API client: credentials, TLS verified against a fixed
//! name, typed errors that say what to do.
//!
//! It speaks to `k8s.api_server` (the local API server, never the VIP) and
//! verifies the certificate as `k8s.tls_server_name`. Every request has a
//! timeout shorter than the lease's renew deadline ([`request_timeout`]).

mod body;
mod credential;
mod error;
mod peers;
mod rotation;
pub(crate) mod tls;
mod transport;
mod x509;
mod yaml;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use body::MAX_BODY;
pub(crate) use body::read_capped;
use body::{Lines, too_large};
pub use credential::IN_CLUSTER_DIR;
pub(crate) use credential::read_file;
pub use error::{KubeError, Operation};
pub use peers::{DISCOVERY_PERIOD, ENDPOINTS_PATH, Endpoints, Peers, worth_another_server};
pub use rotation::{CHECK_PERIOD, Credentials, EXPIRY_WARNING, describe_subject};
use transport::build_http;
pub(crate) use transport::{classify, error_chain, find_io_error, find_rustls_error, io_reason};
pub use x509::CertInfo;
pub(crate) use yaml::redact_quoted;

use crate::config::{Config, K8s};

/// Content type of a server-side apply PATCH.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
/// Content type of a JSON merge PATCH (RFC 7386).
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// Per-request timeout for a given renew deadline: half of it, so a renewal
/// that times out still leaves time for one more attempt before the deadline.
pub fn request_timeout(renew_deadline: Duration) -> Duration {
    renew_deadline / 2
}

/// Client of the Kubernetes API. Cheap to clone (shared connection pool).
#[derive(Clone)]
pub struct KubeClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HTTP client and the credential generation it was built for.
    http: std::sync::Mutex<(u64, reqwest::Client)>,
    base: reqwest::Url,
    creds: Credentials,
    timeout: Duration,
    tls_server_name: String,
    insecure: bool,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.inner.base.as_str())
            .field("credential", &self.inner.creds.source())
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl KubeClient {
    /// Client for `config.k8s`, with the credential loaded from its source and
    /// the request timeout derived from `config.lease.renew_deadline`.
    pub fn from_config(config: &Config) -> Result<Self, KubeError> {
        let creds = Credentials::load(&config.k8s)?;
        Self::new(
            &config.k8s,
            creds,
            request_timeout(config.lease.renew_deadline),
        )
    }

    /// Client for `k8s` with already loaded credentials; `timeout` bounds
    /// every request except the body of a watch.
    pub fn new(k8s: &K8s, creds: Credentials, timeout: Duration) -> Result<Self, KubeError> {
        let base = reqwest::Url::parse(&k8s.api_server).map_err(|e| KubeError::InvalidUrl {
            url: k8s.api_server.clone(),
            reason: e.to_string(),
        })?;
        if base.scheme() != "https" {
            return Err(KubeError::InvalidUrl {
                url: k8s.api_server.clone(),
                reason: "only https is supported".into(),
            });
        }
        if k8s.insecure_skip_tls_verify {
            tracing::warn!(
                server = %base,
                "k8s.insecure_skip_tls_verify is set: the API server's certificate is NOT verified; anyone on the path can impersonate it"
            );
        }
        let generation = creds.generation();
        let http = build_http(
            &creds.current(),
            k8s.insecure_skip_tls_verify,
            &k8s.tls_server_name,
            timeout,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                http: std::sync::Mutex::new((generation, http)),
                base,
                creds,
                timeout,
                tls_server_name: k8s.tls_server_name.clone(),
                insecure: k8s.insecure_skip_tls_verify,
            }),
        })
    }

    /// The HTTP client for the current credential: the credential's files
    /// are checked (at most every few seconds) and, when they changed, the
    /// next requests use a client with the new certificate, key and CA.
    /// Open connections (a watch) keep the old one until they close.
    fn http(&self) -> reqwest::Client {
        let creds = &self.inner.creds;
        creds.refresh();
        let generation = creds.generation();
        let mut http = self
            .inner
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if http.0 != generation {
            match build_http(
                &creds.current(),
                self.inner.insecure,
                &self.inner.tls_server_name,
                self.inner.timeout,
            ) {
                Ok(client) => *http = (generation, client),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot use the reloaded credential; still using the previous one");
                    http.0 = generation;
                }
            }
        }
        http.1.clone()
    }

    /// The timeout of each request.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The loaded credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.creds
    }

    /// `GET path` and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        op: &Operation,
        path: &str,
    ) -> Result<T, KubeError> {
        self.call(op, reqwest::Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body and decode the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &Operation,
        path: &str,
        body: &B,
    ) -> Result<T, KubeError> {
        self.call(op, reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body and decode the JSON answer.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &Operation,
        path: &str,
        body: &B,
    ) -> Result<T, KubeError> {
        self.call(op, reqwest::Method::PUT, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body sent as `content_type` (e.g.
    /// [`APPLY_PATCH`] for server-side apply, [`MERGE_PATCH`]) and decode
    /// the JSON answer. JSON is valid YAML, so an apply body is JSON too.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &Operation,
        path: &str,
        content_type: &'static str,
        body: &B,
    ) -> Result<T, KubeError> {
        let timeout = self.inner.timeout;
        let body = serde_json::to_vec(body).map_err(|e| KubeError::InvalidJson {
            op: op.clone(),
            reason: e.to_string(),
        })?;
        let fut = async {
            let req = self
                .request(op, reqwest::Method::PATCH, path)
                .await?
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
            let resp = req.send().await.map_err(|e| self.transport_error(op, &e))?;
            let resp = self.check_status(op, resp).await?;
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| self.transport_error(op, &e))?;
            serde_json::from_slice(&bytes).map_err(|e| KubeError::InvalidJson {
                op: op.clone(),
                reason: e.to_string(),
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(KubeError::Timeout {
                    op: op.clone(),
                    after: timeout,
                })
            })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &Operation,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, KubeError> {
        let timeout = self.inner.timeout;
        let fut = async {
            let mut req = self.request(op, method, path).await?;
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.map_err(|e| self.transport_error(op, &e))?;
            let mut resp = self.check_status(op, resp).await?;
            let bytes = read_capped(&mut resp, MAX_BODY)
                .await
                .map_err(|e| self.transport_error(op, &e))?
                .map_err(|_| too_large(op, "the answer"))?;
            serde_json::from_slice(&bytes).map_err(|e| KubeError::InvalidJson {
                op: op.clone(),
                reason: e.to_string(),
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(KubeError::Timeout {
                    op: op.clone(),
                    after: timeout,
                })
            })
    }

    /// Opens a watch (`path` must carry `watch=1`): the answer must start
    /// within the request timeout, then the stream yields one decoded JSON
    /// line per event until the server or the connection closes it.
    pub async fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        op: &Operation,
        path: &str,
    ) -> Result<BoxStream<'static, Result<T, KubeError>>, KubeError> {
        let timeout = self.inner.timeout;
        let open = async {
            let req = self.request(op, reqwest::Method::GET, path).await?;
            let resp = req.send().await.map_err(|e| self.transport_error(op, &e))?;
            self.check_status(op, resp).await
        };
        let resp = tokio::time::timeout(timeout, open)
            .await
            .unwrap_or_else(|_| {
                Err(KubeError::Timeout {
                    op: op.clone(),
                    after: timeout,
                })
            })?;
        let this = self.clone();
        let op = op.clone();
        let lines = Lines::default();
        let stream =
            futures::stream::unfold((resp, lines, false), move |(mut resp, mut lines, done)| {
                let this = this.clone();
                let op = op.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        match lines.next_line() {
                            Some(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                            Some(line) => {
                                let item = serde_json::from_slice(&line).map_err(|e| {
                                    KubeError::InvalidJson {
                                        op: op.clone(),
                                        reason: e.to_string(),
                                    }
                                });
                                return Some((item, (resp, lines, false)));
                            }
                            None if lines.pending() > MAX_BODY => {
                                // Ends the watch: the caller opens a new one.
                                let e = too_large(&op, "a watch event line");
                                return Some((Err(e), (resp, lines, true)));
                            }
                            None => {}
                        }
                        match resp.chunk().await {
                            Ok(Some(chunk)) => lines.push(&chunk),
                            Err(e) => {
                                return Some((
                                    Err(this.transport_error(&op, &e)),
                                    (resp, lines, true),
                                ));
                            }
                            Ok(None) => return None,
                        }
                    }
                }
            });
        Ok(stream.boxed())
    }

    async fn request(
        &self,
        op: &Operation,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, KubeError> {
        let url = self
            .inner
            .base
            .join(path)
            .map_err(|e| KubeError::Transport {
                op: op.clone(),
                reason: format!("cannot build the URL for {path}: {e}"),
            })?;
        let mut req = self
            .http()
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = self.inner.creds.token().await? {
            req = req.bearer_auth(token);
        }
        Ok(req)
    }

    async fn check_status(
        &self,
        op: &Operation,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, KubeError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let mut resp = resp;
        // Only the first MAX_BODY bytes of an error answer are read.
        let body = match read_capped(&mut resp, MAX_BODY).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => b"(error answer larger than 1 MiB, not read)".to_vec(),
            Err(_) => Vec::new(),
        };
        let message = status_message(&body);
        let credential = self.inner.creds.source();
        let op = op.clone();
        Err(match status.as_u16() {
            401 => KubeError::Unauthorized {
                op,
                credential,
                message,
            },
            403 => KubeError::Forbidden {
                op,
                credential,
                message,
            },
            404 => KubeError::NotFound { op, message },
            409 => KubeError::Conflict { op, message },
            status => KubeError::Status {
                op,
                status,
                message,
            },
        })
    }

    fn transport_error(&self, op: &Operation, e: &reqwest::Error) -> KubeError {
        classify(self.server(), op, e)
    }
}

/// The `message` of a Kubernetes `Status` body, or the body itself.
fn status_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Status {
        message: Option<String>,
    }
    match serde_json::from_slice::<Status>(body) {
        Ok(Status { message: Some(m) }) => m,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "empty body".into()
            } else {
                text.chars().take(200).collect()
            }
        }
    }
}
