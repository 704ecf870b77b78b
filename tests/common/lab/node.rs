//! One `ha-vip run` per node namespace, as systemd would run it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where a node's daemon gets its API access.
#[derive(Clone)]
pub struct Access {
    /// CA of the API server's serving certificate.
    pub ca: PathBuf,
    /// Bearer token file.
    pub token_file: PathBuf,
    /// Lease name (unique per lab).
    pub lease: String,
}

/// Faster health settings for tests that only need some leader quickly.
pub const FAST_HEALTH: &str =
    "health:\n  interval: 500ms\n  timeout: 400ms\n  stability_buffer: 1s\n";

/// The `ha-vip` binary under test.
pub fn binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ha-vip") {
        return PathBuf::from(p);
    }
    // Examples live in target/<profile>/examples/, the binary one level up.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ha-vip")
}

/// A node's daemon; killed (SIGKILL) when dropped if still running.
pub struct Node {
    /// Namespace.
    pub ns: String,
    /// Node name (holder identity).
    pub name: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    /// Extra environment for the daemon (e.g. NOTIFY_SOCKET).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    /// Writes the node's config into `dir`. `extra` is appended YAML (whole
    /// sections, e.g. [`FAST_HEALTH`]); everything else is the default.
    pub fn new(dir: &Path, ns: &str, name: &str, vip: &str, access: &Access, extra: &str) -> Self {
        let run_dir = dir.join(format!("run-{name}"));
        fs::create_dir_all(&run_dir).expect("run dir");
        let config = dir.join(format!("{name}.yaml"));
        let yaml = format!(
            "node_name: {name}\n\
             interface: eth0\n\
             vips: [{vip}]\n\
             run_dir: {run}\n\
             lease:\n  name: {lease}\n\
             k8s:\n  token_file: {token}\n  ca_cert: {ca}\n\
             announce:\n  spacing: 50ms\n  second_burst_delay: 1s\n\
             {extra}",
            run = run_dir.display(),
            lease = access.lease,
            token = access.token_file.display(),
            ca = access.ca.display(),
        );
        fs::write(&config, yaml).expect("write config");
        Node {
            ns: ns.to_string(),
            name: name.to_string(),
            config,
            log: dir.join(format!("{name}.log")),
            env: Vec::new(),
            child: None,
        }
    }

    /// A node that runs an existing config file; its log goes to `dir`.
    pub fn from_config(ns: &str, name: &str, config: &Path, dir: &Path) -> Self {
        Node {
            ns: ns.to_string(),
            name: name.to_string(),
            config: config.to_path_buf(),
            log: dir.join(format!("{name}.log")),
            env: Vec::new(),
            child: None,
        }
    }

    /// Starts `ha-vip run` in the node's namespace.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(binary())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ha-vip");
        self.child = Some(child);
    }

    /// Runs `ha-vip release` in the namespace, as systemd's ExecStopPost.
    pub fn release(&self) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(binary())
            .args(["release", "--config"])
            .arg(&self.config)
            .output()
            .expect("ha-vip release")
    }

    /// Process id of the running daemon.
    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, sig);
        }
    }

    /// Waits up to `bound` for the daemon to exit; returns its exit code.
    pub fn wait(&mut self, bound: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let start = std::time::Instant::now();
        while start.elapsed() < bound {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILLs the daemon and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the daemon process is running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
