//! The failover lab with a real systemd on every node: one
//! [`Container`] per node namespace, the .deb under test installed with
//! `dpkg -i`, `/etc/ha-vip/config.yaml` written, the credentials bound in
//! read-only; the real kube-apiserver behind each node's local forwarder;
//! and the scenarios of the fault matrix driven with `systemctl`.
//!
//! Needs `crate::apiserver` (tests/common/apiserver.rs) at the crate root.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::Lab;
use super::cluster::{Outcome, Scenario};
use super::meter::Meters;
use super::nspawn::Container;
use super::testbed::Testbed;
use crate::apiserver::ApiServer;

/// Where the nodes see the credentials (bound read-only): outside
/// /etc/ha-vip, which `apt-get purge` removes.
pub const CREDS: &str = "/etc/kubernetes/lab";
/// Where the nodes see the package under test.
pub const DEB_INSIDE: &str = "/lab/ha-vip.deb";

/// The .deb under test, from `HAVIP_DEB` (set by `make systemd-check`).
/// Fails loudly when it is missing; outside CI, `HAVIP_SKIP_SYSTEMD=1`
/// turns that into a loud skip (`None`).
pub fn deb_under_test() -> Option<PathBuf> {
    let problem = match std::env::var_os("HAVIP_DEB") {
        Some(p) if Path::new(&p).is_file() => return Some(PathBuf::from(p)),
        Some(p) => format!("HAVIP_DEB={} is not a file", Path::new(&p).display()),
        None => "HAVIP_DEB is not set".to_string(),
    };
    let hint = "run `make systemd-check` (or make demo, make bench-failover): it builds the .deb and passes its path";
    if std::env::var_os("CI").is_none() && std::env::var("HAVIP_SKIP_SYSTEMD").as_deref() == Ok("1")
    {
        eprintln!("SKIPPED (HAVIP_SKIP_SYSTEMD=1): {problem}; {hint}");
        return None;
    }
    panic!("{problem}: the systemd tests install the real package; {hint}");
}

/// A running systemd cluster.
pub struct SystemdCluster {
    /// The nodes' containers; dropped first, before their namespaces.
    pub nodes: Vec<Container>,
    /// Node names (`node_name` in each config): cp1, cp2, ...
    pub names: Vec<String>,
    /// How long each container took to boot.
    pub boot_times: Vec<Duration>,
    bed: Testbed,
    api: ApiServer,
    /// Runs the forwarders; dropped after them.
    _runtime: tokio::runtime::Runtime,
}

impl SystemdCluster {
    /// Starts the API server, `n` node namespaces with their containers
    /// booted and `deb` installed and configured (the service not started).
    /// `None` only when the API server harness was explicitly skipped.
    pub fn start(n: usize, deb: &Path) -> Option<Self> {
        Self::start_with(n, deb, "")
    }

    /// [`SystemdCluster::start`] with `profile` (YAML, see
    /// [`super::profile`]) merged into every node's configuration.
    pub fn start_with(n: usize, deb: &Path, profile: &str) -> Option<Self> {
        let api = ApiServer::start()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let bed = {
            let _enter = runtime.enter();
            Testbed::new(&api, n, "sysd")
        };
        let creds = bed.dir.path().join("creds");
        let pkg = bed.dir.path().join("pkg");
        for d in [&creds, &pkg] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::copy(&bed.access.token_file, creds.join("token")).expect("token");
        std::fs::copy(&bed.access.ca, creds.join("ca.crt")).expect("CA");
        std::fs::copy(deb, pkg.join("ha-vip.deb")).expect("copy the .deb");
        let binds = [(creds, CREDS), (pkg, "/lab")];
        let names: Vec<String> = (1..=n).map(|i| format!("cp{i}")).collect();
        let mut nodes: Vec<Container> = bed
            .lab
            .nodes
            .iter()
            .zip(&names)
            .map(|(ns, name)| {
                Container::create(name, ns, &binds).unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect();
        // Boot and install on every node at once.
        let boot_times = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter_mut()
                .map(|c| {
                    s.spawn(move || {
                        let took = c.boot().unwrap_or_else(|e| panic!("boot: {e}"));
                        c.ok(&["dpkg", "-i", DEB_INSIDE]);
                        took
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("boot thread"))
                .collect()
        });
        let cluster = SystemdCluster {
            nodes,
            names,
            boot_times,
            bed,
            api,
            _runtime: runtime,
        };
        for i in 0..n {
            let config = super::profile::merge(&cluster.config(i), profile)
                .unwrap_or_else(|e| panic!("profile for {}: {e}", cluster.names[i]));
            cluster.nodes[i].write("/etc/ha-vip/config.yaml", &config);
        }
        Some(cluster)
    }

    /// Node `i`'s configuration: the lab's VIP on eth0, everything else the
    /// package's defaults (timings, /run/ha-vip, https://127.0.0.1:6443).
    pub fn config(&self, i: usize) -> String {
        format!(
            "# written by the systemd lab\n\
             node_name: {name}\n\
             interface: eth0\n\
             vips: [{vip}]\n\
             lease:\n  name: {lease}\n\
             k8s:\n  token_file: {CREDS}/token\n  ca_cert: {CREDS}/ca.crt\n\
             announce:\n  spacing: 50ms\n  second_burst_delay: 1s\n",
            name = self.names[i],
            vip = self.lab().vip(),
            lease = self.bed.access.lease,
        )
    }

    /// The namespaces.
    pub fn lab(&self) -> &Lab {
        &self.bed.lab
    }

    /// The API server harness.
    pub fn api(&self) -> &ApiServer {
        &self.api
    }

    /// `systemctl ARGS...` on node `i`, whatever its outcome.
    pub fn systemctl(&self, i: usize, args: &[&str]) -> Output {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        self.nodes[i].exec(&all)
    }

    /// A property of ha-vip.service on node `i` (`systemctl show -p`).
    pub fn prop(&self, i: usize, name: &str) -> String {
        self.nodes[i]
            .ok(&["systemctl", "show", "-p", name, "--value", "ha-vip.service"])
            .trim()
            .to_string()
    }

    /// `journalctl -u ha-vip ARGS...` on node `i` (stdout, may be empty).
    pub fn journal(&self, i: usize, args: &[&str]) -> String {
        let mut all = vec!["journalctl", "--no-pager", "-q", "-u", "ha-vip"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&self.nodes[i].exec(&all).stdout).into_owned()
    }

    /// The node that has the VIP now, if exactly one does (asked of `ip`).
    pub fn holder(&self) -> Option<usize> {
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.lab().has_vip(i))
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

    /// Waits up to `bound` for `f` to hold, polling every 50 ms.
    pub fn wait_for(&self, bound: Duration, mut f: impl FnMut(&Self) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < bound {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        f(self)
    }

    /// Whether ha-vip.service on node `i` is active and has said READY=1.
    pub fn active(&self, i: usize) -> bool {
        self.prop(i, "ActiveState") == "active" && self.prop(i, "SubState") == "running"
    }

    /// Starts the meters, applies `fault` to the current holder, waits for
    /// the VIP to move (or, for [`Scenario::ApiSlow`], to stay), undoes the
    /// fault and measures. The cluster is back to every service running and
    /// a stable holder afterwards.
    pub fn run(&self, scenario: Scenario) -> Result<Outcome, String> {
        let leader = self
            .wait_holder(Duration::from_secs(40), Duration::from_secs(1))
            .ok_or("no stable VIP holder before the fault")?;
        // Let the second announcement burst pass so the client knows the MAC.
        std::thread::sleep(Duration::from_millis(1500));
        let restarts = self.prop(leader, "NRestarts");
        if scenario == Scenario::Kill {
            self.set_release_on_stop(leader, false)?;
        }
        let meters = Meters::start(self.lab());
        std::thread::sleep(Duration::from_millis(300));
        let fault = Instant::now();
        let recovered = std::thread::scope(|s| {
            // systemctl stop returns only once the handover is done: measure
            // the VIP's move meanwhile.
            let injected = s.spawn(|| self.inject(scenario, leader));
            let recovered = self.wait_recovery(scenario, leader, fault);
            injected.join().expect("inject")?;
            recovered
        })?;
        self.heal(scenario, leader, &restarts)?;
        std::thread::sleep(Duration::from_secs(2));
        let outcome = meters.finish(fault, recovered)?;
        self.wait_holder(Duration::from_secs(40), Duration::from_secs(1))
            .ok_or("no stable holder after healing")?;
        Ok(outcome)
    }

    fn inject(&self, scenario: Scenario, leader: usize) -> Result<(), String> {
        let forwarder = &self.bed.forwarders[leader];
        let out = match scenario {
            Scenario::Planned => self.systemctl(leader, &["stop", "ha-vip"]),
            // ExecStopPost=ha-vip release, then Restart=always: systemd's own.
            Scenario::Crash => self.systemctl(leader, &["kill", "-s", "KILL", "ha-vip"]),
            // The same with ExecStopPost= and Restart= off (set before).
            Scenario::Kill => self.systemctl(leader, &["kill", "-s", "KILL", "ha-vip"]),
            Scenario::Freeze => self.systemctl(leader, &["kill", "-s", "STOP", "ha-vip"]),
            Scenario::CutOff => {
                self.lab().set_link(leader, false);
                forwarder.set_delay(Duration::from_secs(3600));
                return Ok(());
            }
            Scenario::ApiDeath => {
                forwarder.set_down(true);
                return Ok(());
            }
            Scenario::ApiSlow => {
                forwarder.set_delay(super::cluster::SLOW_API);
                return Ok(());
            }
            Scenario::ApiErroring => {
                forwarder.set_reset(true);
                return Ok(());
            }
        };
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}: systemctl failed: {}",
                scenario.name(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn wait_recovery(
        &self,
        scenario: Scenario,
        leader: usize,
        fault: Instant,
    ) -> Result<Duration, String> {
        let bound = Duration::from_secs(30);
        if !scenario.moves() {
            // Slow API server: the VIP should stay put; watch for 6 s.
            std::thread::sleep(Duration::from_secs(6));
            return self
                .holder()
                .map(|_| fault.elapsed())
                .ok_or_else(|| "no VIP holder under a slow API server".into());
        }
        loop {
            if self.holder().is_some_and(|h| h != leader) {
                let took = fault.elapsed();
                if scenario == Scenario::Freeze {
                    // Frozen for 8 s (longer than the 4 s lease, shorter
                    // than WatchdogSec=10s), then woken.
                    std::thread::sleep(Duration::from_secs(8).saturating_sub(took));
                    let out = self.systemctl(leader, &["kill", "-s", "CONT", "ha-vip"]);
                    if !out.status.success() {
                        return Err("systemctl kill -s CONT failed".into());
                    }
                }
                return Ok(took);
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

    fn heal(&self, scenario: Scenario, leader: usize, restarts: &str) -> Result<(), String> {
        let forwarder = &self.bed.forwarders[leader];
        match scenario {
            Scenario::Planned => {
                let out = self.systemctl(leader, &["start", "ha-vip"]);
                if !out.status.success() {
                    return Err(format!(
                        "systemctl start: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Scenario::Crash => {
                // Restart= brings it back: a new start, READY=1 again.
                let back = self.wait_for(Duration::from_secs(30), |c| {
                    c.prop(leader, "NRestarts") != restarts && c.active(leader)
                });
                if !back {
                    return Err("Restart= did not bring ha-vip back within 30 s".into());
                }
            }
            Scenario::Kill => {
                self.set_release_on_stop(leader, true)?;
                // The killed service is failed (Restart=no): start it anew.
                self.systemctl(leader, &["reset-failed", "ha-vip"]);
                let out = self.systemctl(leader, &["start", "ha-vip"]);
                if !out.status.success() {
                    return Err(format!(
                        "systemctl start after the kill: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Scenario::Freeze => {}
            Scenario::CutOff => {
                forwarder.set_delay(Duration::ZERO);
                self.lab().set_link(leader, true);
            }
            Scenario::ApiDeath => forwarder.set_down(false),
            Scenario::ApiSlow => forwarder.set_delay(Duration::ZERO),
            Scenario::ApiErroring => forwarder.set_reset(false),
        }
        Ok(())
    }

    /// Turns the unit's ExecStopPost=ha-vip release and Restart= off (a
    /// drop-in, `on` false) or back on, on node `i`: a SIGKILL then
    /// leaves the VIP to the kernel's fence and the Lease's expiry alone.
    pub fn set_release_on_stop(&self, i: usize, on: bool) -> Result<(), String> {
        const DIR: &str = "/etc/systemd/system/ha-vip.service.d";
        const DROP_IN: &str = "/etc/systemd/system/ha-vip.service.d/lab-no-release.conf";
        if on {
            self.nodes[i].ok(&["rm", "-f", DROP_IN]);
        } else {
            self.nodes[i].ok(&["mkdir", "-p", DIR]);
            self.nodes[i].write(
                DROP_IN,
                "# written by the systemd lab: SIGKILL without release\n\
                 [Service]\nExecStopPost=\nRestart=no\n",
            );
        }
        let out = self.systemctl(i, &["daemon-reload"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "systemctl daemon-reload: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Every node's ha-vip journal, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("==== {}\n{}", self.names[i], self.journal(i, &[])))
            .collect()
    }
}
