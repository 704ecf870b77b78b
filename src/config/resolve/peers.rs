//! `k8s.peers` and `k8s.discover_peers`: the other API servers a holder
//! releases the Lease through when its own is gone.

use std::net::IpAddr;

use super::{Resolver, at, d};
use crate::config::{ConfigError, K8s, Peers, Vip, file};

impl Resolver<'_> {
    pub(super) fn peers(
        &self,
        k: &file::K8s,
        k8s: &K8s,
        vips: &[Vip],
    ) -> Result<Peers, ConfigError> {
        let discover = k
            .discover_peers
            .as_ref()
            .map_or(d::K8S_DISCOVER_PEERS, |s| s.value);
        let mut servers: Vec<String> = Vec::new();
        for s in k.peers.iter().flat_map(|list| list.value.iter()) {
            let v = s.value.trim();
            let url = reqwest::Url::parse(v)
                .ok()
                .filter(|u| u.scheme() == "https" && u.host().is_some())
                .ok_or_else(|| {
                    self.err(
                        at(s),
                        format!("k8s.peers: {v:?} is not an https URL; expected another control-plane node's API server, e.g. https://10.0.0.12:6443"),
                    )
                })?;
            let host = url.host_str().unwrap_or_default();
            let ip: Option<IpAddr> = host.trim_matches(['[', ']']).parse().ok();
            if let Some(ip) = ip
                && vips.iter().any(|vip| vip.addr == ip)
            {
                return Err(self.err(
                    at(s),
                    format!("k8s.peers: {v:?} is a VIP; expected the other control-plane nodes' own addresses: through the VIP a release could reach this node's own, dead API server"),
                ));
            }
            if same_server(&url, &k8s.api_server) {
                return Err(self.err(
                    at(s),
                    format!("k8s.peers: {v:?} is k8s.api_server itself; expected the other control-plane nodes' API servers"),
                ));
            }
            let text = url.as_str().trim_end_matches('/').to_string();
            if servers.contains(&text) {
                return Err(self.err(
                    at(s),
                    format!("k8s.peers: {v:?} is listed twice; expected each API server once"),
                ));
            }
            servers.push(text);
        }
        Ok(Peers { servers, discover })
    }
}

/// Whether `url` names the same host and port as `api_server`.
fn same_server(url: &reqwest::Url, api_server: &str) -> bool {
    reqwest::Url::parse(api_server).is_ok_and(|a| {
        a.host_str() == url.host_str() && a.port_or_known_default() == url.port_or_known_default()
    })
}
