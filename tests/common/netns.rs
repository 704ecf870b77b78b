//! Network namespaces and veth pairs for tests that need a real kernel.
//!
//! Self-contained (std, nix, serde_json, tokio); include it from a test with
//!
//! ```ignore
//! #[path = "common/netns.rs"]
//! mod netns;
//! ```
//!
//! * [`Netns::new`] creates a named namespace (`ip netns add`) with a unique
//!   name (tag, pid, counter) and `lo` up; dropping it deletes the namespace
//!   and every link in it, also when the test panics.
//! * [`Netns::ip`] / [`Netns::ip_json`] run `ip -n NAME ...`: an independent
//!   oracle for what the code under test did.
//! * [`Netns::run`] runs an async closure on a new thread that has entered
//!   the namespace, on a current-thread tokio runtime. `setns` moves only
//!   the calling thread, so sockets must be opened on that thread; a
//!   multi-threaded runtime would run tasks in the wrong namespace.
//! * [`veth`] joins two namespaces (or one namespace to itself) with a
//!   veth pair, both ends up.
//!
//! Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN). Failures panic with the
//! command and its stderr: a missing prerequisite fails the test, it never
//! skips.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    /// Creates `hv-<tag>-<pid>-<n>` and brings its loopback up.
    pub(crate) fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("hv-{tag}-{}-{n}", std::process::id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns` knows it).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args...`; panics on failure; returns stdout.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        run_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `ip -n NAME args...`; returns stdout or stderr.
    pub(crate) fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        try_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `ip -j -n NAME args...` and parses the JSON.
    pub(crate) fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = run_cmd(
            Command::new("ip")
                .arg("-j")
                .arg("-n")
                .arg(&self.name)
                .args(args),
        );
        // `ip -j` prints nothing at all for some empty results.
        if out.trim().is_empty() {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// The `addr_info` entries of `dev` (`ip -j addr show dev DEV`).
    pub(crate) fn addrs(&self, dev: &str) -> Vec<serde_json::Value> {
        let links = self.ip_json(&["addr", "show", "dev", dev]);
        links[0]["addr_info"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `addr_info` entry of `local` on `dev`, if present.
    pub(crate) fn addr(&self, dev: &str, local: &str) -> Option<serde_json::Value> {
        self.addrs(dev).into_iter().find(|a| a["local"] == local)
    }

    /// The MAC address of `dev`, as `ip` prints it (`aa:bb:...`).
    pub(crate) fn mac(&self, dev: &str) -> String {
        let links = self.ip_json(&["link", "show", "dev", dev]);
        links[0]["address"]
            .as_str()
            .expect("link has an address")
            .to_owned()
    }

    /// Runs a command inside the namespace (`ip netns exec NAME ...`).
    pub(crate) fn exec(&self, cmd: &[&str]) -> String {
        run_cmd(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(cmd),
        )
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv4.conf.eth0.arp_accept`.
    pub(crate) fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec(&["sh", "-c", &format!("echo {value} > {path}")]);
    }

    /// Moves the *calling thread* into the namespace.
    pub(crate) fn enter(&self) {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
    }

    /// Runs `f` on a new thread inside the namespace, on a current-thread
    /// tokio runtime, and returns its result (a panic in it is re-raised).
    pub(crate) fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                self.enter();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(f())
            });
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = try_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!(
                "warning: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// Creates a veth pair `a_dev` (in `a`) <-> `b_dev` (in `b`), both up.
///
/// `a` and `b` may be the same namespace.
pub(crate) fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    a.ip(&[
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

fn try_cmd(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_cmd(cmd: &mut Command) -> String {
    try_cmd(cmd).unwrap_or_else(|e| panic!("{e} (these tests need root)"))
}
