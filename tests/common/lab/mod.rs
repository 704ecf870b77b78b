//! The failover lab: N node namespaces and a client namespace on one bridge
//! (in a switch namespace of its own, so the host is untouched), a per-node
//! `127.0.0.1:6443` forwarder to the real kube-apiserver, and three meters that
//! do not trust ha-vip's own logs.
//!
//! ```text
//!   client ns (10.77.K.2) ─┐
//!   node1 ns  (10.77.K.11) ─┼─ bridge in switch ns
//!   node2 ns  (10.77.K.12) ─┤
//!   node3 ns  (10.77.K.13) ─┘      VIP 10.77.K.100/32
//! ```
//!
//! The answering meter asks from the client namespace as 10.77.K.254.
#![allow(dead_code)]

pub mod apiserver_cluster;
pub mod apiservers;
pub mod arp;
pub mod cluster;
pub mod forward;
pub mod meter;
pub mod netns;
pub mod node;
pub mod nspawn;
pub mod profile;
pub mod systemd_cluster;
pub mod testbed;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One lab: namespaces and addresses. Dropping it deletes every namespace.
pub struct Lab {
    /// Short unique prefix of every namespace name.
    pub prefix: String,
    /// Third octet of the lab subnet 10.77.K.0/24.
    pub k: u8,
    /// Node namespace names, node i is `nodes[i]`.
    pub nodes: Vec<String>,
    /// Client namespace name.
    pub client: String,
    switch: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS...`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip netns exec NS CMD...`.
pub fn ns_exec(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("run ip netns exec")
}

impl Lab {
    /// Creates the switch, `n` nodes and the client.
    pub fn new(n: usize) -> Self {
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // 10.77.K.0/24 with K unique per process and lab; names stay < 15 bytes.
        let k = ((pid as u8).wrapping_mul(7)).wrapping_add(seq as u8 * 31) % 250 + 1;
        let prefix = format!("hv{:x}{}", pid % 0xffff, seq);
        let switch = format!("{prefix}s");
        let lab = Lab {
            nodes: (1..=n).map(|i| format!("{prefix}n{i}")).collect(),
            client: format!("{prefix}c"),
            switch,
            prefix,
            k,
        };
        lab.cleanup();
        ip(&["netns", "add", &lab.switch]);
        ip(&["-n", &lab.switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.switch, "link", "set", "br0", "up"]);
        ip(&["-n", &lab.switch, "link", "set", "lo", "up"]);
        for (i, ns) in lab.nodes.iter().enumerate() {
            lab.attach(ns, &format!("p{i}"), lab.node_addr(i));
        }
        lab.attach(&lab.client.clone(), "pc", lab.client_addr());
        lab
    }

    /// Creates namespace `ns` and plugs it into the lab bridge as switch
    /// port `port` with `addr`/24 on its `eth0`. Namespaces made here for
    /// extra hosts (e.g. the per-node topology's etcd) are the caller's to
    /// delete.
    pub fn attach(&self, ns: &str, port: &str, addr: Ipv4Addr) {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Address of node `i` (0-based).
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.k, 11 + i as u8)
    }

    /// Address of the client.
    pub fn client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.k, 2)
    }

    /// The answering meter's address in the client namespace: unused by
    /// anything else (the nodes learn it from the meter's requests).
    pub fn meter_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.k, 254)
    }

    /// The lab's VIP.
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.k, 100)
    }

    /// Takes node `i`'s link down (cut off from everyone) or up.
    pub fn set_link(&self, i: usize, up: bool) {
        let port = format!("p{i}");
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }

    /// Whether node `i` has the VIP, asked of `ip` (independent of ha-vip).
    pub fn has_vip(&self, i: usize) -> bool {
        let out = ns_exec(
            &self.nodes[i],
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        );
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {}/", self.vip()))
    }

    fn cleanup(&self) {
        for ns in self.nodes.iter().chain([&self.client, &self.switch]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}
