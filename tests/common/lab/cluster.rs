//! A whole failover lab: the real kube-apiserver, N node namespaces each with
//! its "local API server" forwarder and its `ha-vip run`, a client, and the
//! two meters; plus the fault scenarios of the benchmark.
//!
//! Needs `crate::apiserver` (tests/common/apiserver.rs) at the crate root.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::forward::Forwarder;
use super::meter::Meters;
use super::node::Node;
use super::testbed::Testbed;
use super::{Lab, ns_exec};
use crate::apiserver::ApiServer;

/// Latency the slow-API-server scenario adds to every exchange: slow, but
/// within the default 1 s probe timeout.
pub const SLOW_API: Duration = Duration::from_millis(150);

/// The scenarios of the fault matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// SIGTERM the leader (systemctl stop / restart).
    Planned,
    /// SIGKILL the leader, then `ha-vip release` and a restart, as systemd does.
    Crash,
    /// SIGKILL the leader and nothing else (no ExecStopPost release): a
    /// purely unplanned loss; the daemon restarts only after the takeover.
    Kill,
    /// SIGSTOP the leader longer than the lease, then SIGCONT.
    Freeze,
    /// The leader's link goes down and its local API server loses the cluster.
    CutOff,
    /// The leader's local API server dies (connection refused).
    ApiDeath,
    /// The leader's local API server answers [`SLOW_API`] slower per exchange.
    ApiSlow,
    /// The leader's local API server resets every connection.
    ApiErroring,
}

impl Scenario {
    /// Every scenario, in benchmark order.
    pub const ALL: [Scenario; 8] = [
        Scenario::Planned,
        Scenario::Crash,
        Scenario::Kill,
        Scenario::Freeze,
        Scenario::CutOff,
        Scenario::ApiDeath,
        Scenario::ApiSlow,
        Scenario::ApiErroring,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Planned => "planned stop (SIGTERM)",
            Scenario::Crash => "crash (SIGKILL + release)",
            Scenario::Kill => "SIGKILL without release",
            Scenario::Freeze => "freeze (SIGSTOP 8 s)",
            Scenario::CutOff => "node cut off",
            Scenario::ApiDeath => "local API server dies",
            Scenario::ApiSlow => "API server slow (+150 ms)",
            Scenario::ApiErroring => "API server resets",
        }
    }

    /// Whether the VIP is expected to move to another node.
    pub fn moves(self) -> bool {
        self != Scenario::ApiSlow
    }
}

/// What one scenario run measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Longest client-visible outage after the fault.
    pub outage: Duration,
    /// Total time two nodes held the VIP at once (address meter).
    pub overlap: Duration,
    /// Total time of 10 ms windows in which two or more MACs answered ARP
    /// for the VIP (answering meter).
    pub answer_overlap: Duration,
    /// Longest time after the fault in which nobody answered ARP for the VIP.
    pub answer_outage: Duration,
    /// From the fault until a node (again) held the VIP stably.
    pub recovered: Duration,
}

/// A running lab cluster.
pub struct Cluster {
    /// The namespaces.
    pub lab: Lab,
    /// The node daemons.
    pub nodes: Vec<Node>,
    /// The per-node local API servers.
    pub forwarders: Vec<Forwarder>,
    api: ApiServer,
    _dir: tempfile::TempDir,
    /// Runs the forwarders; dropped after them (fields drop in order).
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    /// Starts the API server harness, `n` nodes and their
    /// daemons. Returns `None` only when the harness was explicitly skipped.
    pub fn start(n: usize) -> Option<Self> {
        Self::start_with(n, "")
    }

    /// [`Cluster::start`] with `profile` (YAML, see [`super::profile`])
    /// merged into every node's configuration.
    pub fn start_with(n: usize, profile: &str) -> Option<Self> {
        let api = ApiServer::start()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let _enter = runtime.enter();
        // The daemons run with the default timings: what operators run.
        let bed = Testbed::new(&api, n, "lab");
        let mut nodes = bed.nodes("node", "");
        for node in &mut nodes {
            super::profile::apply(&node.config, profile)
                .unwrap_or_else(|e| panic!("profile for {}: {e}", node.name));
            node.start();
        }
        drop(_enter);
        let Testbed {
            lab,
            forwarders,
            dir,
            ..
        } = bed;
        Some(Cluster {
            lab,
            nodes,
            forwarders,
            api,
            _dir: dir,
            _runtime: runtime,
        })
    }

    /// The node that has the VIP now, if exactly one does.
    pub fn holder(&self) -> Option<usize> {
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.lab.has_vip(i))
            .collect();
        (holders.len() == 1).then(|| holders[0])
    }

    /// Waits up to `bound` for one node to hold the VIP for `stable`.
    pub fn wait_holder(&self, bound: Duration, stable: Duration) -> Option<usize> {
        let start = Instant::now();
        let mut since: Option<(usize, Instant)> = None;
        while start.elapsed() < bound {
            match (self.holder(), since) {
                (Some(h), Some((s, t))) if h == s => {
                    if t.elapsed() >= stable {
                        return Some(h);
                    }
                }
                (Some(h), _) => since = Some((h, Instant::now())),
                (None, _) => since = None,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The API server harness.
    pub fn api(&self) -> &ApiServer {
        &self.api
    }

    /// Runs one scenario against the current holder and measures it. The
    /// cluster is back to N running daemons and a stable holder afterwards.
    pub fn run(&mut self, scenario: Scenario) -> Result<Outcome, String> {
        let leader = self
            .wait_holder(Duration::from_secs(40), Duration::from_secs(1))
            .ok_or("no stable VIP holder before the fault")?;
        // Let the second announcement burst pass so the client knows the MAC.
        std::thread::sleep(Duration::from_millis(1500));
        let meters = Meters::start(&self.lab);
        std::thread::sleep(Duration::from_millis(300));
        let fault = Instant::now();
        self.inject(scenario, leader);
        let recovered = self.wait_recovery(scenario, leader, fault)?;
        // Watch a little longer for late overlaps (e.g. a frozen node waking).
        self.heal(scenario, leader);
        std::thread::sleep(Duration::from_secs(2));
        let outcome = meters.finish(fault, recovered)?;
        self.wait_holder(Duration::from_secs(40), Duration::from_secs(1))
            .ok_or("no stable holder after healing")?;
        Ok(outcome)
    }

    fn inject(&mut self, scenario: Scenario, leader: usize) {
        match scenario {
            Scenario::Planned => self.nodes[leader].signal(Signal::SIGTERM),
            Scenario::Crash => {
                self.nodes[leader].kill();
                // systemd: ExecStopPost=ha-vip release, then Restart=always.
                let out = self.nodes[leader].release();
                assert!(
                    out.status.success(),
                    "release: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Scenario::Kill => self.nodes[leader].kill(),
            Scenario::Freeze => self.nodes[leader].signal(Signal::SIGSTOP),
            Scenario::CutOff => {
                self.lab.set_link(leader, false);
                // Its local API server loses etcd: requests hang.
                self.forwarders[leader].set_delay(Duration::from_secs(3600));
            }
            Scenario::ApiDeath => self.forwarders[leader].set_down(true),
            Scenario::ApiSlow => self.forwarders[leader].set_delay(SLOW_API),
            Scenario::ApiErroring => self.forwarders[leader].set_reset(true),
        }
    }

    fn wait_recovery(
        &mut self,
        scenario: Scenario,
        leader: usize,
        fault: Instant,
    ) -> Result<Duration, String> {
        let bound = Duration::from_secs(30);
        if scenario == Scenario::Freeze {
            // Frozen for 8 s (longer than the 4 s lease), then woken.
            while self.holder().is_none_or(|h| h == leader) {
                if fault.elapsed() > bound {
                    return Err("no takeover while the leader was frozen".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let took = fault.elapsed();
            std::thread::sleep(Duration::from_secs(8).saturating_sub(took));
            self.nodes[leader].signal(Signal::SIGCONT);
            return Ok(took);
        }
        if scenario.moves() {
            loop {
                if self.holder().is_some_and(|h| h != leader) {
                    return Ok(fault.elapsed());
                }
                if fault.elapsed() > bound {
                    return Err(format!(
                        "{}: the VIP did not move within {bound:?}",
                        scenario.name()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Slow API server: the VIP should stay put; watch for 6 s.
        std::thread::sleep(Duration::from_secs(6));
        self.holder()
            .map(|_| fault.elapsed())
            .ok_or_else(|| "no VIP holder under a slow API server".into())
    }

    fn heal(&mut self, scenario: Scenario, leader: usize) {
        match scenario {
            Scenario::Planned => {
                let _ = self.nodes[leader].wait(Duration::from_secs(10));
                self.nodes[leader].start();
            }
            Scenario::Crash | Scenario::Kill => self.nodes[leader].start(),
            Scenario::Freeze => {}
            Scenario::CutOff => {
                self.forwarders[leader].set_delay(Duration::ZERO);
                self.lab.set_link(leader, true);
            }
            Scenario::ApiDeath => self.forwarders[leader].set_down(false),
            Scenario::ApiSlow => self.forwarders[leader].set_delay(Duration::ZERO),
            Scenario::ApiErroring => self.forwarders[leader].set_reset(false),
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("==== {}\n{}", n.name, n.log_text()))
            .collect()
    }

    /// `ip -br addr` of every node, for the demo.
    pub fn addresses(&self) -> String {
        self.lab
            .nodes
            .iter()
            .zip(&self.nodes)
            .map(|(ns, n)| {
                let out = ns_exec(ns, &["ip", "-4", "-br", "addr", "show", "dev", "eth0"]);
                format!(
                    "  {}: {}",
                    n.name,
                    String::from_utf8_lossy(&out.stdout).trim()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
