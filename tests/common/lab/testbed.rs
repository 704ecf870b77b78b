//! What every lab test sets up first: the namespaces, a "local API server"
//! forwarder in each node to the real kube-apiserver, and an admin token
//! file the daemons use. Call it inside a tokio runtime (the forwarders are
//! tasks).

use std::net::SocketAddr;

use super::Lab;
use super::forward::Forwarder;
use super::node::{Access, Node};
use crate::apiserver::ApiServer;

/// Namespaces, forwarders and credentials of one test.
pub struct Testbed {
    /// The namespaces.
    pub lab: Lab,
    /// Node i's local API server.
    pub forwarders: Vec<Forwarder>,
    /// What the daemons' configs point at.
    pub access: Access,
    /// Configs, logs, token file; removed with the testbed.
    pub dir: tempfile::TempDir,
}

impl Testbed {
    /// `n` nodes against `api`; the Lease is named `<tag>-<lab prefix>`.
    pub fn new(api: &ApiServer, n: usize, tag: &str) -> Self {
        let lab = Lab::new(n);
        let target: SocketAddr = api
            .server()
            .trim_start_matches("https://")
            .parse()
            .expect("server addr");
        let forwarders = lab
            .nodes
            .iter()
            .map(|ns| Forwarder::start(ns, SocketAddr::from(([0, 0, 0, 0], 6443)), target))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, api.var("KUBE_ADMIN_TOKEN")).expect("token file");
        let access = Access {
            ca: api.ca(),
            token_file,
            lease: format!("{tag}-{}", lab.prefix),
        };
        Testbed {
            lab,
            forwarders,
            access,
            dir,
        }
    }

    /// Node i's daemon (not started) named `name`, with `extra` YAML.
    pub fn node(&self, i: usize, name: &str, extra: &str) -> Node {
        let vip = self.lab.vip().to_string();
        Node::new(
            self.dir.path(),
            &self.lab.nodes[i],
            name,
            &vip,
            &self.access,
            extra,
        )
    }

    /// Every node's daemon (not started), named `{prefix}1`, `{prefix}2`, ...
    pub fn nodes(&self, prefix: &str, extra: &str) -> Vec<Node> {
        (0..self.lab.nodes.len())
            .map(|i| self.node(i, &format!("{prefix}{}", i + 1), extra))
            .collect()
    }
}
