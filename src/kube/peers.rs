//! The other control-plane nodes' API servers, for the one request that
//! must get through when the local API server is gone: the Lease's release.
//!
//! They come from `k8s.peers` and, with `k8s.discover_peers`, from the
//! addresses of `endpoints/kubernetes` in `default` (kept up to date by
//! every kube-apiserver's endpoint reconciler), read through the local API
//! server while it answers. A VIP is never used: through the VIP a request
//! could land on this node's own API server, or on nobody. Every client
//! uses the local one's credential, CA and `k8s.tls_server_name`, so the
//! same verification rules apply (kubeadm's serving certificates all carry
//! the name `kubernetes`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::{Credentials, KubeClient, KubeError, Operation};
use crate::config::{Config, K8s};

/// How often the discovered list is read again (only after a request to
/// the local API server succeeded).
pub const DISCOVERY_PERIOD: Duration = Duration::from_secs(60);

/// Where the other API servers are listed, in every cluster.
pub const ENDPOINTS_PATH: &str = "/api/v1/namespaces/default/endpoints/kubernetes";

/// The other API servers; cheap to clone (shared state).
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    k8s: K8s,
    creds: Credentials,
    timeout: Duration,
    vips: Vec<IpAddr>,
    configured: Vec<KubeClient>,
    discover: bool,
    discovered: Mutex<Vec<KubeClient>>,
    /// When discovery last started; `None` before the first.
    last_discovery: Mutex<Option<Instant>>,
    /// A failed discovery is logged as a warning once, then at debug.
    warned: AtomicBool,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("servers", &self.servers())
            .field("discover", &self.inner.discover)
            .finish()
    }
}

impl Peers {
    /// The peers `config` names (`k8s.peers`, `k8s.discover_peers`),
    /// reached with `creds` and requests bounded by `timeout`.
    pub fn new(config: &Config, creds: Credentials, timeout: Duration) -> Result<Self, KubeError> {
        let configured = config
            .peers
            .servers
            .iter()
            .map(|url| client(&config.k8s, &creds, timeout, url))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                k8s: config.k8s.clone(),
                creds,
                timeout,
                vips: config.vips.iter().map(|v| v.addr).collect(),
                configured,
                discover: config.peers.discover,
                discovered: Mutex::new(Vec::new()),
                last_discovery: Mutex::new(None),
                warned: AtomicBool::new(false),
            }),
        })
    }

    /// Clients of every known peer: the configured ones, then the
    /// discovered ones, each server once.
    pub fn clients(&self) -> Vec<KubeClient> {
        let mut all = self.inner.configured.clone();
        let discovered = self
            .inner
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for c in discovered.iter() {
            if !all.iter().any(|a| a.server() == c.server()) {
                all.push(c.clone());
            }
        }
        all
    }

    /// The URLs of [`Peers::clients`].
    pub fn servers(&self) -> Vec<String> {
        self.clients()
            .iter()
            .map(|c| c.server().trim_end_matches('/').to_string())
            .collect()
    }

    /// Reads `endpoints/kubernetes` through `local` and makes its addresses
    /// (minus VIPs and `local` itself) the discovered peers; returns their
    /// URLs. On failure the previous list stays.
    pub async fn discover(&self, local: &KubeClient) -> Result<Vec<String>, KubeError> {
        let op = Operation {
            verb: "get",
            resource: "endpoints",
            namespace: Some("default".into()),
            name: Some("kubernetes".into()),
        };
        let endpoints: Endpoints = local.get(&op, ENDPOINTS_PATH).await?;
        let urls = endpoints.urls(&self.inner.vips, local.server());
        let clients = {
            let old = self
                .inner
                .discovered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let mut clients = Vec::with_capacity(urls.len());
            for url in &urls {
                // Keep the client (and its connections) of a known server.
                match old.iter().find(|c| c.server().trim_end_matches('/') == url) {
                    Some(c) => clients.push(c.clone()),
                    None => clients.push(client(
                        &self.inner.k8s,
                        &self.inner.creds,
                        self.inner.timeout,
                        url,
                    )?),
                }
            }
            clients
        };
        *self
            .inner
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = clients;
        Ok(urls)
    }

    /// Starts a discovery in the background if it is enabled and due
    /// ([`DISCOVERY_PERIOD`] since the last one); called after a request
    /// to `local` succeeded, so it runs only while the local one answers.
    pub fn refresh_if_due(&self, local: &KubeClient) {
        if !self.inner.discover {
            return;
        }
        {
            let mut last = self
                .inner
                .last_discovery
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if last.is_some_and(|t| now < t + DISCOVERY_PERIOD) {
                return;
            }
            *last = Some(now);
        }
        let this = self.clone();
        let local = local.clone();
        tokio::spawn(async move {
            match this.discover(&local).await {
                Ok(urls) => {
                    tracing::debug!(peers = %urls.join(", "), "discovered the other API servers")
                }
                // A cluster whose API servers run without the endpoint
                // reconciler (--endpoint-reconciler-type=none) publishes no
                // list: nothing is wrong, there is just nothing to learn.
                Err(e) if e.is_not_found() && !this.inner.warned.swap(true, Ordering::Relaxed) => {
                    tracing::info!(
                        "no endpoints/kubernetes in default (kube-apiserver --endpoint-reconciler-type=none?): no other API servers to discover; list them in k8s.peers for the release to reach them when this node's API server is gone"
                    )
                }
                Err(e) if !this.inner.warned.swap(true, Ordering::Relaxed) => tracing::warn!(
                    error = %e,
                    "cannot read the other API servers from endpoints/kubernetes; a holder whose API server dies then cannot release the lease and standbys wait the lease duration: grant get on endpoints/kubernetes in default (packaging/kubernetes/rbac.yaml), list them in k8s.peers, or set k8s.discover_peers: false"
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "discovering the other API servers failed again")
                }
            }
        });
    }
}

/// Whether a failed request may succeed through another API server: the
/// local one did not answer, or answered that it cannot serve. A 4xx is
/// the cluster's answer and would be the same anywhere.
pub fn worth_another_server(e: &KubeError) -> bool {
    match e {
        KubeError::Connect { .. }
        | KubeError::Tls { .. }
        | KubeError::Timeout { .. }
        | KubeError::Transport { .. } => true,
        KubeError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

fn client(
    k8s: &K8s,
    creds: &Credentials,
    timeout: Duration,
    url: &str,
) -> Result<KubeClient, KubeError> {
    let k8s = K8s {
        api_server: url.to_string(),
        ..k8s.clone()
    };
    KubeClient::new(&k8s, creds.clone(), timeout)
}

/// The parts of a `v1.Endpoints` that name the API servers.
#[derive(Debug, Default, Deserialize)]
pub struct Endpoints {
    #[serde(default)]
    subsets: Vec<Subset>,
}

#[derive(Debug, Default, Deserialize)]
struct Subset {
    #[serde(default)]
    addresses: Vec<Address>,
    #[serde(default)]
    ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
struct Address {
    ip: String,
}

#[derive(Debug, Deserialize)]
struct Port {
    #[serde(default)]
    name: Option<String>,
    port: u16,
}

impl Endpoints {
    /// `https://ADDRESS:PORT` of every ready address, without `vips` and
    /// without `local` (the URL of this node's own API server). The port is
    /// the one named `https` (the name the reconciler gives it), else the
    /// subset's only port.
    pub fn urls(&self, vips: &[IpAddr], local: &str) -> Vec<String> {
        let local = reqwest::Url::parse(local).ok();
        let mut urls: Vec<String> = Vec::new();
        for s in &self.subsets {
            let port = s
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some("https"))
                .or_else(|| (s.ports.len() == 1).then(|| &s.ports[0]))
                .map(|p| p.port);
            let Some(port) = port else { continue };
            for a in &s.addresses {
                let Ok(ip) = a.ip.parse::<IpAddr>() else {
                    continue;
                };
                if vips.contains(&ip) {
                    continue;
                }
                let url = match ip {
                    IpAddr::V4(v4) => format!("https://{v4}:{port}"),
                    IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
                };
                let is_local = local.as_ref().is_some_and(|l| {
                    reqwest::Url::parse(&url).is_ok_and(|u| {
                        u.host_str() == l.host_str()
                            && u.port_or_known_default() == l.port_or_known_default()
                    })
                });
                if !is_local && !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        urls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_skip_vips_the_local_server_and_unnamed_ports() {
        let e: Endpoints = serde_json::from_str(
            r#"{"subsets":[
                {"addresses":[{"ip":"10.0.0.11"},{"ip":"10.0.0.100"},{"ip":"10.0.0.12"},{"ip":"fd00::13"}],
                 "ports":[{"name":"https","port":6443,"protocol":"TCP"}]},
                {"addresses":[{"ip":"10.0.0.14"}],"ports":[{"name":"a","port":1},{"name":"b","port":2}]},
                {"addresses":[{"ip":"not-an-ip"},{"ip":"10.0.0.11"}],"ports":[{"port":6443}]}
            ]}"#,
        )
        .unwrap();
        let vip: IpAddr = "10.0.0.100".parse().unwrap();
        assert_eq!(
            e.urls(&[vip], "https://10.0.0.12:6443"),
            ["https://10.0.0.11:6443", "https://[fd00::13]:6443"]
        );
        let none: Endpoints = serde_json::from_str("{}").unwrap();
        assert!(none.urls(&[], "https://127.0.0.1:6443").is_empty());
    }

    #[test]
    fn only_failures_of_the_server_are_worth_another_one() {
        let op = Operation {
            verb: "update",
            resource: "leases",
            namespace: None,
            name: None,
        };
        let status = |status| KubeError::Status {
            op: op.clone(),
            status,
            message: String::new(),
        };
        assert!(worth_another_server(&KubeError::Connect {
            server: "s".into(),
            reason: "connection refused".into()
        }));
        assert!(worth_another_server(&status(503)));
        assert!(worth_another_server(&status(429)));
        assert!(!worth_another_server(&KubeError::Conflict {
            op: op.clone(),
            message: String::new()
        }));
        assert!(!worth_another_server(&KubeError::Forbidden {
            op,
            credential: String::new(),
            message: String::new()
        }));
    }
}
