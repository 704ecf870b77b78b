//! A failover lab on the per-node topology ([`NodeApiServers`]): every
//! node's ha-vip probes and renews through its own real kube-apiserver,
//! and clients reach the VIP's kube-apiserver on VIP:6443. Its scenarios
//! restart those API servers the way kubeadm upgrades and the kubelet do.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Lab;
use super::apiservers::{NodeApiServers, Restart};
use super::meter::{self, ClientMeter, HolderMeter, Probe};
use super::node::{Access, Node};

/// Pause between one API server being ready again and the next one's
/// restart in a rolling restart: an operator (or `kubeadm upgrade node` on
/// the next node) moving on once the previous node looks fine.
pub const ROLLING_GAP: Duration = Duration::from_secs(5);

/// The scenarios of the per-node topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiScenario {
    /// SIGTERM the holder's kube-apiserver (its graceful shutdown runs),
    /// then start it again: a static-pod manifest change.
    Term,
    /// SIGKILL the holder's kube-apiserver, then start it again.
    Kill,
    /// Every node's kube-apiserver in turn: SIGTERM, start, ready, then
    /// [`ROLLING_GAP`] before the next.
    Rolling,
}

impl ApiScenario {
    /// Every scenario, in benchmark order.
    pub const ALL: [ApiScenario; 3] = [ApiScenario::Term, ApiScenario::Kill, ApiScenario::Rolling];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            ApiScenario::Term => "holder's kube-apiserver SIGTERM + restart",
            ApiScenario::Kill => "holder's kube-apiserver SIGKILL + restart",
            ApiScenario::Rolling => "rolling restart of 3 kube-apiservers",
        }
    }
}

/// What one scenario run measured.
#[derive(Debug, Clone)]
pub struct ApiOutcome {
    /// Longest client-visible outage after the fault.
    pub outage: Duration,
    /// All client-visible outages after the fault, added up (what a rolling
    /// restart costs in total).
    pub outage_total: Duration,
    /// Total time two nodes held the VIP at once (address meter).
    pub overlap: Duration,
    /// From the fault until another node first held the VIP; `None` if the
    /// VIP never left the holder.
    pub moved: Option<Duration>,
    /// Every API server restart of the run.
    pub restarts: Vec<Restart>,
}

/// The meters of one run. The answering meter (meter.rs, being added by the
/// precise-fence work) belongs here next to the address and client meters:
/// start it in [`Meters::start`], finish it in [`Meters::finish`] and add
/// its overlap to [`ApiOutcome`].
struct Meters {
    holders: HolderMeter,
    client: ClientMeter,
}

/// What the meters recorded.
struct Recorded {
    samples: Vec<Vec<(Instant, bool)>>,
    probes: Vec<Probe>,
}

impl Meters {
    fn start(lab: &Lab) -> Self {
        let vip = IpAddr::V4(lab.vip());
        Meters {
            holders: HolderMeter::start(&lab.nodes, vip),
            client: ClientMeter::start(&lab.client, vip, 6443),
        }
    }

    fn finish(self) -> Recorded {
        Recorded {
            samples: self.holders.finish(),
            probes: self.client.finish(),
        }
    }
}

/// A running lab cluster on the per-node topology.
pub struct ApiCluster {
    /// The node daemons; dropped (killed) first.
    pub nodes: Vec<Node>,
    /// etcd and the per-node kube-apiservers; stopped before the namespaces go.
    pub apis: NodeApiServers,
    /// The namespaces.
    pub lab: Lab,
    /// Configs, logs and the token file.
    _dir: tempfile::TempDir,
}

impl ApiCluster {
    /// Starts `n` nodes, their API servers and etcd, then the daemons with
    /// the default timings. `None` only when skipping was explicitly asked
    /// for (HAVIP_SKIP_APISERVER=1 outside CI), as for the shared harness.
    pub fn start(n: usize) -> Option<Self> {
        Self::start_with(n, Duration::ZERO)
    }

    /// [`Self::start`] with the apiservers' `--shutdown-delay-duration` set
    /// to `shutdown_delay` (see [`NodeApiServers::start_with`]).
    pub fn start_with(n: usize, shutdown_delay: Duration) -> Option<Self> {
        match Self::try_start(n, shutdown_delay) {
            Ok(c) => Some(c),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("CI: the per-node API servers must start: {e}")
            }
            Err(e) if std::env::var("HAVIP_SKIP_APISERVER").as_deref() == Ok("1") => {
                eprintln!(
                    "SKIPPED (HAVIP_SKIP_APISERVER=1): the per-node API servers did not start: {e}"
                );
                None
            }
            Err(e) => panic!(
                "the per-node API servers did not start: {e}\n(set HAVIP_SKIP_APISERVER=1 to skip tests that need them)"
            ),
        }
    }

    fn try_start(n: usize, shutdown_delay: Duration) -> Result<Self, String> {
        let lab = Lab::new(n);
        let apis = NodeApiServers::start_with(&lab, shutdown_delay)?;
        let (rss, etcd) = apis.rss_kib();
        eprintln!(
            "per-node topology ready in {} ms: kube-apiserver RSS {:?} KiB, etcd {} KiB",
            apis.startup.as_millis(),
            rss,
            etcd
        );
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, apis.var("KUBE_ADMIN_TOKEN")).map_err(|e| e.to_string())?;
        let access = Access {
            ca: apis.ca(),
            token_file,
            lease: format!("apis-{}", lab.prefix),
        };
        let vip = lab.vip().to_string();
        // Default timings and endpoints: https://127.0.0.1:6443 is the
        // node's own kube-apiserver, as on a kubeadm control-plane node.
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| {
                Node::new(
                    dir.path(),
                    &lab.nodes[i],
                    &format!("node{}", i + 1),
                    &vip,
                    &access,
                    "",
                )
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        Ok(ApiCluster {
            nodes,
            apis,
            lab,
            _dir: dir,
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

    /// Runs one scenario against the current holder and measures it. Every
    /// API server is running and one node holds the VIP afterwards.
    pub fn run(&mut self, scenario: ApiScenario) -> Result<ApiOutcome, String> {
        let leader = self
            .wait_holder(Duration::from_secs(40), Duration::from_secs(1))
            .ok_or("no stable VIP holder before the fault")?;
        // Let the second announcement burst pass so the client knows the MAC.
        std::thread::sleep(Duration::from_millis(1500));
        let meters = Meters::start(&self.lab);
        std::thread::sleep(Duration::from_millis(300));
        let fault = Instant::now();
        let restarts = match scenario {
            ApiScenario::Term => vec![self.apis.restart(leader, Signal::SIGTERM)?],
            ApiScenario::Kill => vec![self.apis.restart(leader, Signal::SIGKILL)?],
            ApiScenario::Rolling => {
                let mut all = Vec::new();
                for i in 0..self.apis.len() {
                    all.push(self.apis.restart(i, Signal::SIGTERM)?);
                    std::thread::sleep(ROLLING_GAP);
                }
                all
            }
        };
        let settled = self.wait_holder(Duration::from_secs(30), Duration::from_secs(1));
        // Watch a little longer for late overlaps: a node whose API server
        // just came back must not take the VIP while another holds it.
        std::thread::sleep(Duration::from_secs(2));
        let rec = meters.finish();
        settled.ok_or("no stable VIP holder after the restarts")?;
        Ok(ApiOutcome {
            outage: meter::longest_outage(&rec.probes, fault),
            outage_total: total_outage(&rec.probes, fault),
            overlap: meter::overlap(&rec.samples),
            moved: first_move(&rec.samples, leader, fault),
            restarts,
        })
    }

    /// Every node's daemon log and the end of its kube-apiserver log, for
    /// failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "==== {}\n{}---- kube-apiserver (last lines)\n{}\n",
                    n.name,
                    n.log_text(),
                    self.apis.log_tail(i, 15)
                )
            })
            .collect()
    }
}

/// All failed runs of `probes` after `from`, added up: each from its first
/// failed probe to the next successful one (or the last probe).
pub fn total_outage(probes: &[Probe], from: Instant) -> Duration {
    let mut total = Duration::ZERO;
    let mut start: Option<Instant> = None;
    for &(at, ok) in probes.iter().filter(|(at, _)| *at >= from) {
        match (ok, start) {
            (false, None) => start = Some(at),
            (true, Some(s)) => {
                total += at - s;
                start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&(last, _))) = (start, probes.last()) {
        total += last - s;
    }
    total
}

/// When (after `fault`) a node other than `leader` first held the VIP.
pub fn first_move(
    samples: &[Vec<(Instant, bool)>],
    leader: usize,
    fault: Instant,
) -> Option<Duration> {
    samples
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .filter_map(|(_, s)| s.iter().find(|(t, p)| *p && *t >= fault).map(|(t, _)| *t))
        .min()
        .map(|t| t - fault)
}
