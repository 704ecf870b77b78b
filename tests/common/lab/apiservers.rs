//! The per-node topology: one real kube-apiserver in every node namespace,
//! listening on the node's `0.0.0.0:6443` (so on `127.0.0.1`, the node
//! address and the VIP, as kubeadm's static pod does), all on one etcd in a
//! namespace of its own on the lab bridge. Started and stopped by
//! tests/support/kube-apiserver.sh (`lab-etcd`, `lab-apiserver`,
//! `lab-stop`); signals go straight to the apiserver's pid, so a test can
//! time a SIGTERM the way the kubelet sends it.
//!
//! ```text
//!   etcd ns   (10.77.K.3:2379) ─┐
//!   node1 ns  (10.77.K.11) ─────┼─ bridge; each node: kube-apiserver *:6443
//!   node2 ns  (10.77.K.12) ─────┤           + ha-vip on 127.0.0.1:6443
//!   node3 ns  (10.77.K.13) ─────┘
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Lab;

/// Where the lab's etcd lives on the bridge (client .2, nodes .11.., VIP .100).
const ETCD_HOST: u8 = 3;

/// How long the kubelet lets a static pod's container shut down before it
/// sends SIGKILL (terminationGracePeriodSeconds, kubeadm leaves the default).
pub const KUBELET_GRACE: Duration = Duration::from_secs(30);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kube-apiserver.sh")
}

/// Runs `kube-apiserver.sh ARGS...`; its stderr on failure.
fn run(args: &[&str]) -> Result<String, String> {
    run_env(args, &[])
}

/// [`run`] with extra environment variables.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    } else {
        Err(format!(
            "`kube-apiserver.sh {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One restart of a node's kube-apiserver, timed from the signal.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// Node index.
    pub node: usize,
    /// From the signal until the old process was gone.
    pub exited: Duration,
    /// From the signal until the new process answered `/readyz` with 200.
    pub ready: Duration,
}

/// etcd and one kube-apiserver per node; everything stopped on drop.
pub struct NodeApiServers {
    dir: tempfile::TempDir,
    etcd_ns: String,
    /// Per node: (name, namespace, address).
    nodes: Vec<(String, String, Ipv4Addr)>,
    vip: Ipv4Addr,
    shutdown_delay: Duration,
    env: HashMap<String, String>,
    /// From the start of etcd until every apiserver answered `/readyz`.
    pub startup: Duration,
}

impl NodeApiServers {
    /// Starts etcd in a new namespace on `lab`'s bridge and one apiserver
    /// per node namespace (in parallel, as the nodes of a cluster boot),
    /// with kubeadm's settings.
    pub fn start(lab: &Lab) -> Result<Self, String> {
        Self::start_with(lab, Duration::ZERO)
    }

    /// [`Self::start`] with `--shutdown-delay-duration`: on SIGTERM the
    /// apiservers keep serving for `shutdown_delay` while `/readyz` fails
    /// on its `shutdown` check (kubeadm sets none: they stop listening at
    /// once).
    pub fn start_with(lab: &Lab, shutdown_delay: Duration) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("havip-apiservers-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let etcd_ns = format!("{}e", lab.prefix);
        let etcd_addr = Ipv4Addr::new(10, 77, lab.k, ETCD_HOST);
        let _ = Command::new("ip").args(["netns", "del", &etcd_ns]).output();
        lab.attach(&etcd_ns, "pe", etcd_addr);
        let mut s = NodeApiServers {
            dir,
            etcd_ns,
            nodes: (0..lab.nodes.len())
                .map(|i| {
                    (
                        format!("node{}", i + 1),
                        lab.nodes[i].clone(),
                        lab.node_addr(i),
                    )
                })
                .collect(),
            vip: lab.vip(),
            shutdown_delay,
            env: HashMap::new(),
            startup: Duration::ZERO,
        };
        // On an error `s` drops and stops whatever did start.
        let t0 = Instant::now();
        let dir_s = s.dir_str();
        run(&["lab-etcd", &dir_s, &s.etcd_ns, &etcd_addr.to_string()])?;
        let text = std::fs::read_to_string(s.dir.path().join("env"))
            .map_err(|e| format!("reading the lab env: {e}"))?;
        s.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let started: Vec<Result<(), String>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..s.nodes.len())
                .map(|i| {
                    let s = &s;
                    sc.spawn(move || s.start_node(i))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("start thread"))
                .collect()
        });
        started.into_iter().collect::<Result<Vec<()>, String>>()?;
        s.startup = t0.elapsed();
        Ok(s)
    }

    fn dir_str(&self) -> String {
        self.dir
            .path()
            .to_str()
            .expect("UTF-8 temp dir")
            .to_string()
    }

    /// A value of the harness's env file (KUBE_CA, KUBE_ADMIN_TOKEN, ...).
    pub fn var(&self, key: &str) -> String {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the lab env"))
            .clone()
    }

    /// The CA of every node's serving certificate.
    pub fn ca(&self) -> PathBuf {
        self.var("KUBE_CA").into()
    }

    /// Node `i`'s API server as other nodes reach it: `https://ADDR:6443`.
    pub fn server(&self, i: usize) -> String {
        format!("https://{}:6443", self.nodes[i].2)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Starts node `i`'s kube-apiserver (again) and waits until it is ready.
    pub fn start_node(&self, i: usize) -> Result<(), String> {
        let (name, ns, addr) = &self.nodes[i];
        let delay = format!("{}ms", self.shutdown_delay.as_millis());
        run_env(
            &[
                "lab-apiserver",
                &self.dir_str(),
                name,
                ns,
                &addr.to_string(),
                &self.vip.to_string(),
            ],
            &[("HAVIP_SHUTDOWN_DELAY", &delay)],
        )
        .map(drop)
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.nodes[i].0)
    }

    /// The pid of node `i`'s kube-apiserver if it is running.
    pub fn pid(&self, i: usize) -> Option<Pid> {
        let text = std::fs::read_to_string(self.node_dir(i).join("kube-apiserver.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then(|| Pid::from_raw(pid))
    }

    /// The pid of etcd if it is running.
    pub fn etcd_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then(|| Pid::from_raw(pid))
    }

    /// Sends `sig` to node `i`'s kube-apiserver; false if it was not running.
    pub fn signal(&self, i: usize, sig: Signal) -> bool {
        self.pid(i).is_some_and(|p| kill(p, sig).is_ok())
    }

    /// Waits up to `bound` for node `i`'s kube-apiserver to be gone.
    pub fn wait_exit(&self, i: usize, bound: Duration) -> bool {
        let start = Instant::now();
        while self.pid(i).is_some() {
            if start.elapsed() > bound {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// What the kubelet does to a static pod whose container stops or whose
    /// manifest changed: `sig` to the apiserver, SIGKILL if it is still
    /// there after [`KUBELET_GRACE`], then the same apiserver started again.
    pub fn restart(&self, i: usize, sig: Signal) -> Result<Restart, String> {
        let t0 = Instant::now();
        if !self.signal(i, sig) {
            return Err(format!(
                "the kube-apiserver of node {} is not running",
                i + 1
            ));
        }
        if !self.wait_exit(i, KUBELET_GRACE) {
            self.signal(i, Signal::SIGKILL);
            if !self.wait_exit(i, Duration::from_secs(10)) {
                return Err(format!(
                    "the kube-apiserver of node {} survived SIGKILL",
                    i + 1
                ));
            }
        }
        let exited = t0.elapsed();
        self.start_node(i)?;
        Ok(Restart {
            node: i,
            exited,
            ready: t0.elapsed(),
        })
    }

    /// RSS in KiB of every running kube-apiserver (by node) and of etcd.
    pub fn rss_kib(&self) -> (Vec<u64>, u64) {
        let apis = (0..self.nodes.len())
            .map(|i| self.pid(i).map_or(0, |p| rss_kib(p.as_raw())))
            .collect();
        (apis, self.etcd_pid().map_or(0, |p| rss_kib(p.as_raw())))
    }

    /// GET `path` from node `i`'s API server at its node address, as admin,
    /// with curl run in namespace `from_ns`; verifies the serving
    /// certificate against the IP address (not the name `kubernetes`).
    pub fn get(&self, from_ns: &str, i: usize, path: &str) -> Result<String, String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", from_ns, "curl", "-sS", "-f", "-m", "5", "--cacert",
            ])
            .arg(self.ca())
            .arg("-H")
            .arg(format!(
                "Authorization: Bearer {}",
                self.var("KUBE_ADMIN_TOKEN")
            ))
            .arg(format!("{}{path}", self.server(i)))
            .output()
            .map_err(|e| format!("run curl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "GET {}{path} from {from_ns}: {}",
                self.server(i),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The last `n` lines of node `i`'s kube-apiserver log.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let text = std::fs::read_to_string(self.node_dir(i).join("kube-apiserver.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NodeApiServers {
    fn drop(&mut self) {
        if let Err(e) = run(&["lab-stop", &self.dir_str()]) {
            eprintln!("stopping the per-node API servers: {e}");
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.etcd_ns])
            .output();
    }
}

/// Whether `pid` is a process that has not exited (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// VmRSS of `pid` in KiB (0 if gone).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
