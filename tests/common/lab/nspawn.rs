//! A real systemd as PID 1 for one lab node: `systemd-nspawn --boot` of a
//! copy-on-write overlay of the host's root, joined to the node's network
//! namespace, so `systemctl`, `journalctl`, `dpkg` and the unit's sandbox
//! are the real ones and the lab's meters still see the node's addresses.
//!
//! Needs root, `systemd-nspawn` (Debian package systemd-container, installed
//! by `make deps`) and a host root with systemd installed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Units of the host that must not start in a lab node: databases and
/// servers the host happens to run, consoles, and periodic jobs that would
/// compete for the two CI cores. Every service and timer the host enables
/// is masked as well (see [`Container::create`]).
const MASKED: &[&str] = &[
    "etcd.service",
    "postgresql.service",
    "postgresql@.service",
    "getty@.service",
    "getty@tty1.service",
    "console-getty.service",
    "serial-getty@.service",
    "container-getty@.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "logrotate.timer",
];

/// How long a boot (to `running` or `degraded`) may take on a loaded
/// 2-core machine; one takes about 3 s on an idle one.
const BOOT_BOUND: Duration = Duration::from_secs(90);

/// One booted (or bootable) container. Dropping it kills the container and
/// removes its overlay.
pub struct Container {
    /// Machine name and hostname (need not be unique: the container is
    /// not registered with systemd-machined).
    pub name: String,
    /// The node's network namespace (under /run/netns) the container joins.
    pub netns: String,
    dir: PathBuf,
    binds: Vec<(PathBuf, String)>,
    nspawn: Option<Child>,
    init: Option<i32>,
}

fn run_ok(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Container {
    /// Prepares the overlay of the host's root for machine `name` in
    /// network namespace `netns`; `binds` are read-only bind mounts (host
    /// path, path in the container). Does not boot it.
    pub fn create(name: &str, netns: &str, binds: &[(PathBuf, &str)]) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("systemd-nspawn needs root".into());
        }
        if Command::new("systemd-nspawn")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err(
                "systemd-nspawn is missing: `make deps` installs it (package systemd-container)"
                    .into(),
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("havip-nspawn-{name}-"))
            .tempdir_in("/var/tmp")
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let c = Container {
            name: name.to_string(),
            netns: netns.to_string(),
            dir,
            binds: binds
                .iter()
                .map(|(h, c)| (h.clone(), c.to_string()))
                .collect(),
            nspawn: None,
            init: None,
        };
        for d in ["upper", "work", "root"] {
            fs::create_dir_all(c.dir.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let opts = format!(
            "lowerdir=/,upperdir={},workdir={}",
            c.dir.join("upper").display(),
            c.dir.join("work").display()
        );
        run_ok(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(c.root()),
        )?;
        c.prepare_root()?;
        Ok(c)
    }

    /// A fresh machine id and the masks; nothing of the host's identity.
    fn prepare_root(&self) -> Result<(), String> {
        let root = self.root();
        let id = format!("{:032x}\n", rand_u128());
        fs::write(root.join("etc/machine-id"), id).map_err(|e| format!("machine-id: {e}"))?;
        // systemd sets the hostname from this file: journal lines say "cp1".
        fs::write(root.join("etc/hostname"), format!("{}\n", self.name))
            .map_err(|e| format!("hostname: {e}"))?;
        let units = root.join("etc/systemd/system");
        fs::create_dir_all(&units).map_err(|e| format!("{}: {e}", units.display()))?;
        let mut masked: Vec<String> = MASKED.iter().map(|s| s.to_string()).collect();
        // Whatever this host enables (its .wants/ symlinks): a lab node boots
        // systemd, journald, dbus and ha-vip, nothing else of the host's.
        for wants in fs::read_dir("/etc/systemd/system")
            .into_iter()
            .flatten()
            .flatten()
        {
            if !wants.file_name().to_string_lossy().ends_with(".wants") {
                continue;
            }
            for unit in fs::read_dir(wants.path()).into_iter().flatten().flatten() {
                let unit = unit.file_name().to_string_lossy().into_owned();
                if [".service", ".timer", ".socket", ".path"]
                    .iter()
                    .any(|s| unit.ends_with(s))
                    && !unit.starts_with("ha-vip")
                {
                    masked.push(unit);
                }
            }
        }
        for unit in masked {
            let link = units.join(&unit);
            let _ = fs::remove_file(&link);
            symlink("/dev/null", &link).map_err(|e| format!("mask {unit}: {e}"))?;
        }
        // Container images (this host's root among them) ship a
        // policy-rc.d that forbids maintainer scripts to start or stop
        // services; a node does not, and the package's prerm must stop
        // ha-vip on removal.
        let _ = fs::remove_file(root.join("usr/sbin/policy-rc.d"));
        // The host may be configured to forward the journal to a console.
        let _ = fs::remove_dir_all(root.join("etc/systemd/journald.conf.d"));
        Ok(())
    }

    /// The container's root as the host sees it (writes show up inside).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Boots systemd and waits until the system is up (`running`, or
    /// `degraded` when some unit of the host's failed).
    pub fn boot(&mut self) -> Result<Duration, String> {
        assert!(self.nspawn.is_none(), "{} is running", self.name);
        let t0 = Instant::now();
        let log = fs::File::create(self.dir.join("console.log")).map_err(|e| e.to_string())?;
        // With --keep-unit (no systemd on the host to ask for a scope),
        // systemd-nspawn puts the container's cgroups under its own cgroup:
        // containers started from one cgroup would share
        // .../payload/system.slice/ha-vip.service, and each systemd would
        // see the others' processes in its units (and fail to kill them
        // with EIO). So each systemd-nspawn starts in a cgroup of its own.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"for g in $CGROUPS; do echo $$ > "$g/cgroup.procs" || exit 1; done; exec "$@""#)
            .arg("sh")
            .env("CGROUPS", self.make_cgroups()?.join(" "));
        cmd.arg("systemd-nspawn")
            .arg("-D")
            .arg(self.root())
            .arg(format!("--machine={}", self.name))
            .args([
                "--boot",
                "--register=no",
                "--link-journal=no",
                "--keep-unit",
                "--quiet",
            ])
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.netns
            ))
            // systemd-nspawn keeps CAP_NET_ADMIN out of the container's
            // bounding set unless asked (it grants it with --private-network
            // only): a node's ha-vip needs it to add and remove the VIP.
            .arg("--capability=CAP_NET_ADMIN");
        for (host, inside) in &self.binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("systemd-nspawn: {e}"))?;
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        // The container's PID 1 is the child of systemd-nspawn whose pid is 1
        // in its own PID namespace.
        while self.init.is_none() {
            self.check_alive()?;
            self.init = children(nspawn_pid).into_iter().find(|&p| is_ns_init(p));
            if t0.elapsed() > BOOT_BOUND {
                return Err(format!(
                    "{}: no container init after {BOOT_BOUND:?}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            self.check_alive()?;
            let out = self.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > BOOT_BOUND {
                let failed = self.exec(&["systemctl", "list-jobs", "--no-pager"]);
                return Err(format!(
                    "{}: system still {state:?} after {BOOT_BOUND:?}; jobs:\n{}",
                    self.name,
                    String::from_utf8_lossy(&failed.stdout)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// This container's cgroup in every hierarchy that tracks processes:
    /// the unified one, and on a hybrid or legacy host the named systemd
    /// one.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let leaf = self.dir.file_name().expect("temp dir name");
        let base = Path::new("/sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            return vec![base.join(leaf)];
        }
        ["systemd", "unified"]
            .iter()
            .map(|h| base.join(h))
            .filter(|h| h.join("cgroup.procs").exists())
            .map(|h| h.join(leaf))
            .collect()
    }

    fn make_cgroups(&self) -> Result<Vec<String>, String> {
        let dirs = self.cgroup_dirs();
        if dirs.is_empty() {
            return Err("no cgroup hierarchy under /sys/fs/cgroup to put the container in".into());
        }
        dirs.iter()
            .map(|d| {
                fs::create_dir_all(d).map_err(|e| format!("cgroup {}: {e}", d.display()))?;
                Ok(d.display().to_string())
            })
            .collect()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(Ok(Some(status))) = self.nspawn.as_mut().map(Child::try_wait) {
            self.nspawn = None;
            self.init = None;
            return Err(format!(
                "{}: systemd-nspawn exited ({status}); console:\n{}",
                self.name,
                self.console()
            ));
        }
        Ok(())
    }

    /// What systemd-nspawn and the container's console printed.
    pub fn console(&self) -> String {
        fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// Runs `args` inside the container (all its namespaces), with a clean
    /// environment, and returns what it did.
    pub fn exec(&self, args: &[&str]) -> Output {
        let init = self
            .init
            .unwrap_or_else(|| panic!("{} is not booted", self.name));
        Command::new("nsenter")
            .arg("-t")
            .arg(init.to_string())
            .args(["-m", "-u", "-i", "-p", "-n", "--"])
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Runs `args` inside and returns stdout; panics with both outputs if it
    /// fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{}: `{}` failed ({}):\n{}{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a shell command line inside; stdout, panicking on failure.
    pub fn sh(&self, script: &str) -> String {
        self.ok(&["sh", "-c", script])
    }

    /// Writes `contents` to `path` (absolute, in the container).
    pub fn write(&self, path: &str, contents: &str) {
        let p = self.root().join(path.trim_start_matches('/'));
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// `systemctl reboot` inside, then boots the same root again (as the
    /// systemd-nspawn@.service unit does on exit status 133).
    pub fn reboot(&mut self) -> Result<Duration, String> {
        let t0 = Instant::now();
        // systemctl may lose its connection as PID 1 goes down.
        let _ = self.exec(&["systemctl", "reboot"]);
        let mut child = self.nspawn.take().expect("booted");
        self.init = None;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                if status.code() != Some(133) {
                    return Err(format!(
                        "{}: systemd-nspawn exited {status} on reboot, not 133",
                        self.name
                    ));
                }
                break;
            }
            if t0.elapsed() > BOOT_BOUND {
                let _ = child.kill();
                return Err(format!("{}: no reboot within {BOOT_BOUND:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.boot().map(|_| t0.elapsed())
    }

    /// Kills the container at once (SIGKILL to its PID 1 ends the whole
    /// PID namespace) and reaps systemd-nspawn.
    pub fn kill(&mut self) {
        if let Some(init) = self.init.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.nspawn.take() {
            let t0 = Instant::now();
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
        for d in self.cgroup_dirs() {
            rmdir_tree(&d);
        }
        let _ = Command::new("umount").arg("-l").arg(self.root()).output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes a cgroup and the ones below it (deepest first); cgroup
/// directories go with rmdir, never with their files.
fn rmdir_tree(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` is PID 1 of a PID namespace of its own.
fn is_ns_init(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() >= 2 && ids.last() == Some(&"1")
        })
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("/dev/urandom");
    u128::from_le_bytes(b)
}

/// The path as a `&str` (the lab's paths are ASCII).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
